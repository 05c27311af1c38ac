"""Experiment configs, one per file (`get_config(arg)` returns an ml_collections.ConfigDict).

This folder is installed as the package `fastscale_jax.configs`: name a config by file
(`--config configs/regnetz_dWr.py:demo`) or, from any directory, by its packaged name
(`--config regnetz_dWr:demo`; `fastscale_jax.config.load_config("regnetz_dWr:demo")`).
"""
