"""Flax Linen networks built from specs (no training logic)."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from fastscale_jax.errors import ConfigError
from fastscale_jax.families import family_of
from fastscale_jax.models.layers import BatchNorm, Conv, dense
from fastscale_jax.models.network import Network

DTYPES = {"float32": jnp.float32, "f32": jnp.float32, "bfloat16": jnp.bfloat16,
          "bf16": jnp.bfloat16, "float16": jnp.float16, "f16": jnp.float16}


def resolve_dtype(dtype):
    """jnp dtype from a name ('float32', 'bfloat16', 'float16') or a dtype."""
    if isinstance(dtype, str):
        try:
            return DTYPES[dtype.lower()]
        except KeyError:
            raise ConfigError(f"unknown dtype {dtype!r}; valid: {sorted(DTYPES)}") from None
    return jnp.dtype(dtype).type if dtype is not None else jnp.float32


def build_model(spec, *, dtype="float32", conv_impl: str = "auto", bn_axis_name=None):
    """The Flax module for `spec` (a spec of any family), built from its layer plan.

    dtype: computation dtype ('float32' or 'bfloat16'; params stay float32).
    conv_impl: convolution implementation ('auto' picks per backend; see fastscale_jax.ops.conv).
    bn_axis_name: a pmap/shard_map axis name for synchronised BatchNorm (None = per device).
    """
    family_of(spec)  # ConfigError naming the spec types for anything else
    dtype = resolve_dtype(dtype)
    return Network(conv=functools.partial(Conv, dtype=dtype, conv_impl=conv_impl),
                   norm=functools.partial(BatchNorm, dtype=dtype, axis_name=bn_axis_name),
                   dense=functools.partial(dense, dtype=dtype), spec=spec)
