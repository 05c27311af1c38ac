"""fastscale_jax: Fast and Accurate Model Scaling (Dollar, Singh, Girshick, CVPR 2021) in JAX/Flax.

    import fastscale_jax as fs
    spec = fs.get_model_spec("RegNetZ-500MF")
    spec4 = fs.scale(spec, 4.0, "dWr")
    fs.scale_to_time(spec, "40ms", "dWr", batch_size=128)   # measured on this machine
    fs.complexity(spec4)            # flops (multiply-adds), params, acts
    model = fs.build_model(spec4)   # flax.linen.Module

Importing this package never imports tensorflow (only fastscale_jax.data does, lazily).
"""

from fastscale_jax.complexity import complexity
from fastscale_jax.scaling import (ScaleResult, scale, scale_to, scaling_exponents,
                                   theoretical_growth)
from fastscale_jax.families.anynet import AnyNetSpec, generate_regnet, regnet_spec
from fastscale_jax.families.effnet import EffNetSpec
from fastscale_jax.specs import adjust_block_compatibility
from fastscale_jax.zoo import canonical_name, get_model_spec, list_models

__version__ = "0.1.0"


def build_model(spec, **kwargs):
    """The Flax module for a spec; see fastscale_jax.models.build_model."""
    from fastscale_jax.models import build_model as _build

    return _build(spec, **kwargs)


def __getattr__(name):  # lazy submodules that import jax / flax / torch-free converters
    import importlib

    if name == "configs":
        return _configs()
    if name in ("scale_to_time", "predict_to_time", "parse_budget"):  # they import jax
        from fastscale_jax.timing import budget

        return getattr(budget, name)
    if name in ("models", "convert", "timing", "ops", "train", "data", "cpu", "families", "errors"):
        return importlib.import_module(f"fastscale_jax.{name}")
    raise AttributeError(f"module 'fastscale_jax' has no attribute {name!r}")


def _configs():
    """The experiment configs package: installed as fastscale_jax.configs (wheel, editable);
    in a source checkout imported without an install, the top-level configs/ folder."""
    import importlib
    import importlib.util
    import os
    import sys

    try:
        return importlib.import_module("fastscale_jax.configs")
    except ModuleNotFoundError:
        init = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "__init__.py")
        if not os.path.isfile(init):
            raise
    spec = importlib.util.spec_from_file_location(
        "fastscale_jax.configs", init, submodule_search_locations=[os.path.dirname(init)])
    module = sys.modules["fastscale_jax.configs"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


__all__ = ["AnyNetSpec", "EffNetSpec", "ScaleResult", "adjust_block_compatibility",
           "build_model", "canonical_name", "complexity", "generate_regnet", "get_model_spec",
           "list_models", "regnet_spec", "scale", "scale_to", "scaling_exponents",
           "theoretical_growth"]
