"""Which packages the wheel holds (the rest of the metadata is in pyproject.toml): fastscale_jax
with its subpackages, and the top-level configs/ folder as fastscale_jax.configs, so that the
experiment configs have one source (configs/) and ship with the package."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["fastscale_jax", "fastscale_jax.*"]) + ["fastscale_jax.configs"],
      package_dir={"fastscale_jax.configs": "configs"})
