"""What timing compiles: the settings (config.timing), the trainer's steps built from the
config's recipe (fastscale_jax.train.setup.build_steps), and random inputs for them.

    settings, spec, recipe, par, steps = timed_steps(spec, config, batch_size=8)
    lowered = lower(spec, "train_step", config)   # abstract inputs: nothing allocated

fastscale_jax.timing.measure times these programs (time_model).
"""

from __future__ import annotations

import numpy as np

from fastscale_jax.data.batching import check_divisible
from fastscale_jax.errors import ConfigError

MODES = ("inference", "fwd_bwd", "train_step")


def check_resolution(spec, resolution: int) -> int:
    """`resolution` if the model can take it, else ValueError (below specs.MIN_RESOLUTION, or
    so small that the network's total downsampling leaves less than 1 px in its last stage)."""
    from fastscale_jax.families import total_stride
    from fastscale_jax.specs import MIN_RESOLUTION

    if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool):
        raise ConfigError(f"resolution must be an int, got {resolution!r}")
    stride = total_stride(spec)
    if resolution < MIN_RESOLUTION:
        raise ConfigError(f"{spec.name}: resolution {resolution} is below the minimum "
                         f"{MIN_RESOLUTION} px")
    if resolution < stride:
        raise ConfigError(f"{spec.name}: resolution {resolution} is too small: the network "
                         f"downsamples by {stride}, leaving {resolution / stride:.2g} px in its "
                         f"last stage (need >= {stride})")
    return int(resolution)


def _or_base(config):
    """`config`, or fastscale_jax.config.base_config() when None."""
    if config is not None:
        return config
    from fastscale_jax.config import base_config

    return base_config()


def timing_settings(config=None, **overrides) -> dict:
    """The timing settings, resolved and validated: every config.timing field (defaults:
    fastscale_jax.config.base_config, the one place they are written) replaced by keyword
    `overrides`; dtype defaults to model.dtype, conv_impl is model.conv_impl, seed is
    config.seed. ValueError for an unknown name or a bad value."""
    import jax

    from fastscale_jax.models import resolve_dtype

    config = _or_base(config)
    s = {"max_spread_pct": 20.0, "remeasure": 2,  # benchmark-only settings of older configs
         **{k: config.timing[k] for k in config.timing.keys()}}
    s.update(conv_impl=config.model.conv_impl, seed=int(config.seed))
    bad = sorted(set(overrides) - set(s))
    if bad:
        raise ConfigError(f"unknown timing setting {bad[0]!r}; valid: {', '.join(sorted(s))}")
    s.update(overrides)
    s["dtype"] = np.dtype(resolve_dtype(s["dtype"] or config.model.dtype)).name
    s["modes"] = (s["modes"],) if isinstance(s["modes"], str) else tuple(s["modes"])
    bad = [m for m in s["modes"] if m not in MODES]
    if bad or not s["modes"]:
        raise ConfigError(f"unknown timing mode {bad[0] if bad else None!r}; valid: {MODES}")
    s["num_devices"] = 1 if s["num_devices"] is None else s["num_devices"]
    for name, lo in (("batch_size", 1), ("iters", 1), ("windows", 1), ("warmup", 0),
                     ("num_devices", 1), ("dataset_size", 1), ("remeasure", 0)):
        v = s[name]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ConfigError(f"timing.{name} must be an int >= {lo}, got {v!r}")
    spread = s.get("max_spread_pct")
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread > 0:
        raise ConfigError(f"timing.max_spread_pct must be a number > 0 (percent), got {spread!r}")
    available = jax.local_devices()
    if s["num_devices"] > len(available):
        raise ConfigError(f"timing.num_devices={s['num_devices']} but only {len(available)} "
                         f"local {available[0].platform} device(s) are available")
    check_divisible("timing.batch_size", s["batch_size"], s["num_devices"], "timing.num_devices")
    return s


def _recipe(config, s: dict):
    """A copy of `config` whose train / model sections describe the timed step: global batch
    timing.batch_size, model.dtype and conv_impl as resolved."""
    import copy

    cfg = copy.deepcopy(_or_base(config))
    cfg.train["global_batch_size"] = cfg.train["eval_batch_size"] = s["batch_size"]
    cfg.model["dtype"], cfg.model["conv_impl"] = s["dtype"], s["conv_impl"]
    return cfg


def host_state(steps, spec, seed: int):
    """A TrainState of random host values (models.host_init, the models' init rule) with the
    optimizer's initial state (train.state.new_state).

    The optimizer's init runs as one jitted program: eagerly, each of its zeros_like ops is a
    program of its own, compiled per parameter shape (about 2 CPU-s per model here, more than
    half of what tracing the whole train step costs)."""
    import jax

    from fastscale_jax.models.host_init import host_variables
    from fastscale_jax.train.state import new_state

    def build(variables, rng):
        return new_state(variables, steps.tx, rng=rng, ema=steps.ema)

    state = jax.jit(build)(host_variables(spec, seed), np.asarray(jax.random.PRNGKey(seed + 1)))
    return jax.device_get(state)


def host_batch(s: dict, resolution: int, num_classes: int) -> dict:
    """A random batch {image, label, mask} laid out [devices, per-device batch, ...]."""
    rng = np.random.default_rng(s["seed"])
    d, b = s["num_devices"], s["batch_size"] // s["num_devices"]
    return {"image": rng.standard_normal((d, b, resolution, resolution, 3), dtype=np.float32),
            "label": rng.integers(0, num_classes, size=(d, b), dtype=np.int32),
            "mask": np.ones((d, b), bool)}


def timed_steps(spec, config=None, **overrides):
    """(settings, spec at the timed resolution, recipe config, Parallel, setup.Steps): what
    time_model compiles, for callers that lower the same programs themselves."""
    import jax

    from fastscale_jax.train import setup
    from fastscale_jax.train.step import Parallel

    s = timing_settings(config, **overrides)
    cfg = _recipe(config, s)
    setup.validate_config(cfg, s["num_devices"])
    resolution = check_resolution(spec, spec.resolution if s["resolution"] is None
                                  else s["resolution"])
    if resolution != spec.resolution:
        spec = spec.replace(resolution=resolution)
    par = Parallel(cfg.parallel, devices=jax.local_devices()[:s["num_devices"]])
    sizes = setup.run_sizes(cfg, num_train=s["dataset_size"], for_eval=True)
    return s, spec, cfg, par, setup.build_steps(cfg, spec, sizes, par)


def lower(spec, mode: str = "train_step", config=None, **overrides):
    """The Lowered program time_model(spec, config, **overrides) compiles for `mode`, from
    abstract values with the same shapes and placement (nothing is allocated or initialised):
    compile it ahead of time, e.g. in threads into the persistent compilation cache."""
    import jax
    import jax.numpy as jnp

    from fastscale_jax.train.state import new_state

    s, spec, cfg, par, steps = timed_steps(spec, config, **overrides)
    if mode not in MODES:
        raise ConfigError(f"unknown timing mode {mode!r}; valid: {MODES}")
    r = spec.resolution

    def init():
        x = jnp.zeros((1, r, r, 3), jnp.float32)
        return new_state(steps.model.init(jax.random.PRNGKey(0), x, train=False), steps.tx,
                         rng=jax.random.PRNGKey(0), ema=steps.ema)

    d, b = s["num_devices"], s["batch_size"] // s["num_devices"]
    batch = {"image": jax.ShapeDtypeStruct((d, b, r, r, 3), np.float32),
             "label": jax.ShapeDtypeStruct((d, b), np.int32),
             "mask": jax.ShapeDtypeStruct((d, b), np.bool_)}
    state, batch = par.abstract(jax.eval_shape(init), batch)
    fn = {"inference": steps.eval, "fwd_bwd": steps.grads, "train_step": steps.train}[mode]
    return fn.lower(state, batch)
