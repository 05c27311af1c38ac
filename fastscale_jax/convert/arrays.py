"""Arrays of a conversion: state-dict entries as checked numpy arrays, and the Flax variable
shapes a spec's model expects."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fastscale_jax.errors import ConfigError


def expected_shapes(spec) -> dict:
    """{(collection, *module path, leaf): shape} of the Flax variables of build_model(spec)."""
    return dict(_expected_shapes(spec))


@functools.lru_cache(maxsize=32)
def _expected_shapes(spec) -> tuple:
    from fastscale_jax.models import build_model

    model = build_model(spec)
    r = int(spec.resolution)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, r, r, 3), jnp.float32), train=False))
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        flat[tuple(k.key for k in path)] = tuple(leaf.shape)
    return tuple(flat.items())


def as_numpy(value, name):
    if isinstance(value, np.ndarray):
        arr = value
    elif hasattr(value, "detach"):  # torch.Tensor, without importing torch
        t = value.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        arr = t.numpy()
    else:
        try:
            arr = np.asarray(value)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"state dict entry {name!r} is not an array ({type(value).__name__})") from e
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ConfigError(f"state dict entry {name!r} is not a numeric array (dtype {arr.dtype})")
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ConfigError(f"state dict entry {name!r} has {bad} NaN / inf value(s) of {arr.size}; "
                         "the checkpoint is corrupt or was saved from a diverged run: use another")
    return arr
