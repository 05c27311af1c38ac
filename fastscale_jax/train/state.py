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


def new_state(variables, tx, *, rng, ema: bool) -> TrainState:
    """The state at step 0 from model variables {'params', 'batch_stats'}: the optimizer's
    initial state, EMA copies when `ema`. The one way a TrainState is built (the trainer from
    Flax's init, timing from host values or abstract shapes: jit, eval_shape or eagerly)."""
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params),
                      ema={"params": params, "batch_stats": batch_stats} if ema else {},
                      rng=rng)


def create_state(model, tx, *, image_size: int, seed: int, ema: bool) -> TrainState:
    """A fresh state (host-side arrays; nothing replicated yet): the model's own init
    (fastscale_jax.models.layers: the one initialisation rule) from `seed`."""
    init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)

    @jax.jit
    def init(key):
        variables = model.init({"params": key, "dropout": key}, x, train=False)
        return new_state(variables, tx, rng=state_key, ema=ema)

    return jax.device_get(init(init_key))
