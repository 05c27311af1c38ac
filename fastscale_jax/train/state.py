"""The train state: everything a checkpoint holds and a resumed run needs.

Fields: step (int32), params and batch_stats (float32), opt_state (optax, float32), ema
({'params', 'batch_stats'} EMA copies, or {} when EMA is off), rng (uint32[2] raw key; per-step
and per-device keys are derived by folding in the step and the device index).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    step: Any
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any
    rng: Any


def create_state(model, tx, *, image_size: int, seed: int, ema: bool) -> TrainState:
    """A fresh state (host-side arrays; nothing replicated yet)."""
    init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)

    @jax.jit
    def init(key):
        variables = model.init({"params": key, "dropout": key}, x, train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        ema_vars = ({"params": params, "batch_stats": batch_stats} if ema else {})
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=batch_stats, opt_state=tx.init(params), ema=ema_vars,
                          rng=state_key)

    return jax.device_get(init(init_key))
