"""Time one model's XLA-compiled functions: inference, forward+backward, full train step.

    res = time_model(spec, batch_size=32, modes=("inference", "fwd_bwd", "train_step"))
    res["train_step"].time_s, res["train_step"].images_per_s, res["train_step"].compile_s

Method (the same for every mode):
  1. the function is compiled ahead of time, jax.jit(f).lower(*args).compile(); lowering and
     compilation are timed separately from execution (`lower_s`, `compile_s`);
  2. `warmup` calls are run and discarded;
  3. `windows` timed windows of `iters` calls each; the device is synchronised
     (block_until_ready) only at the edges of a window, so dispatch overlaps execution as in
     a real training loop. One window gives one per-step time (window time / iters);
  4. reported: median / min / max / IQR over windows, spread = (max - min) / median in %,
     images/s (global batch / median), per-device images/s, and an epoch-time estimate
     (dataset_size / images/s).

Modes:
  inference   model.apply(variables, x, train=False) (eval-mode BN), f32 logits.
  fwd_bwd     softmax cross-entropy on random labels, train-mode BN, value_and_grad w.r.t.
              params; returns loss, grads and new BN statistics.
  train_step  fwd_bwd + optax update (default SGD lr 0.1, momentum 0.9, Nesterov) + BN stat
              update; the (params, batch_stats, opt_state) state is donated (donate_argnums=0)
              and threaded from one call to the next.

XLA's view of each compiled function is recorded: `xla_flops` is cost_analysis()['flops'],
which counts 2 flops per multiply-add (plus elementwise ops such as BN and activations), so
compare it with 2 x analytic `flops` (multiply-adds) x batch; `xla_bytes_accessed` is its
'bytes accessed'; `mem_*_bytes` come from memory_analysis() (None where the backend does not
report them). With num_devices > 1 the batch is sharded over jax.local_devices()[:n] (params
replicated; jit/GSPMD), and cost / memory figures are those of the per-device program.

Inputs are random (normal images, uniform labels), never zeros.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
import time
from typing import Any, Callable

import numpy as np

MODES = ("inference", "fwd_bwd", "train_step")
DTYPE_NAMES = {"float32": "float32", "f32": "float32", "bfloat16": "bfloat16",
               "bf16": "bfloat16", "float16": "float16", "f16": "float16"}
MIN_RESOLUTION = 32


@dataclasses.dataclass
class TimingResult:
    """One (model, mode) measurement. Times in seconds per step (one global batch)."""
    model: str
    mode: str
    batch_size: int                  # global batch (all devices)
    resolution: int
    dtype: str
    num_devices: int
    warmup: int
    iters: int                       # calls per timed window
    windows: int                     # timed windows
    dataset_size: int
    lower_s: float = math.nan        # tracing + lowering to StableHLO
    compile_s: float = math.nan      # XLA compilation
    time_s: float = math.nan         # median over windows of the per-step time
    min_s: float = math.nan
    max_s: float = math.nan
    iqr_s: float = math.nan
    spread_pct: float = math.nan     # (max - min) / median * 100
    window_times_s: list = dataclasses.field(default_factory=list)
    images_per_s: float = math.nan   # batch_size / time_s
    images_per_s_per_device: float = math.nan
    epoch_s: float = math.nan        # dataset_size / images_per_s
    xla_flops: float | None = None   # cost_analysis()['flops']: 2 per multiply-add
    xla_bytes_accessed: float | None = None
    mem_argument_bytes: int | None = None
    mem_output_bytes: int | None = None
    mem_temp_bytes: int | None = None
    mem_alias_bytes: int | None = None
    mem_peak_bytes: int | None = None
    optimizer: str | None = None     # train_step only
    finite_outputs: bool | None = None  # logits / loss of the last call finite (information)
    error: str | None = None         # compile / run failure (then the times are nan)
    env: dict = dataclasses.field(default_factory=dict)  # device kind, backend, versions

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=None)
def _versions() -> dict:
    import flax
    import jax
    import jaxlib
    import optax

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "python": platform.python_version()}


def environment(devices=None) -> dict:
    """Device kind, backend, device count and library versions (stamped on every result)."""
    import jax

    devices = list(devices) if devices is not None else jax.local_devices()
    d = devices[0]
    return {"backend": jax.default_backend(), "platform": d.platform,
            "device_kind": getattr(d, "device_kind", "unknown"), "num_devices": len(devices),
            "local_device_count": jax.local_device_count(), "host": platform.node(),
            **_versions()}


def _total_stride(spec) -> int:
    if spec.family == "effnet" or spec.stem_type == "simple_stem_in":
        stem = 2
    elif spec.stem_type == "res_stem_in":
        stem = 4
    else:
        stem = 1
    return stem * int(np.prod(spec.strides))


def check_resolution(spec, resolution: int) -> int:
    """`resolution` if the model can take it, else ValueError (< 32 px, or so small that the
    network's total downsampling leaves less than 1 px in the last stage)."""
    if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool):
        raise ValueError(f"resolution must be an int, got {resolution!r}")
    stride = _total_stride(spec)
    if resolution < MIN_RESOLUTION:
        raise ValueError(f"{spec.name}: resolution {resolution} is below the minimum "
                         f"{MIN_RESOLUTION} px")
    if resolution < stride:
        raise ValueError(f"{spec.name}: resolution {resolution} is too small: the network "
                         f"downsamples by {stride}, leaving {resolution / stride:.2g} px in its "
                         f"last stage (need >= {stride})")
    return int(resolution)


def make_optimizer(optimizer="sgd"):
    """(name, optax.GradientTransformation). Names: 'sgd' (lr 0.1, momentum 0.9, Nesterov;
    the default), 'momentum' (no Nesterov), 'adamw' (1e-3, wd 0.05), 'lamb' (1e-3, wd 0.05),
    'adam' (1e-3); or pass a GradientTransformation."""
    import optax

    if not isinstance(optimizer, str):
        if not hasattr(optimizer, "update"):
            raise ValueError(f"optimizer must be a name or an optax GradientTransformation, "
                             f"got {optimizer!r}")
        return type(optimizer).__name__, optimizer
    makers = {"sgd": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
              "momentum": lambda: optax.sgd(0.1, momentum=0.9),
              "adamw": lambda: optax.adamw(1e-3, weight_decay=0.05),
              "lamb": lambda: optax.lamb(1e-3, weight_decay=0.05),
              "adam": lambda: optax.adam(1e-3)}
    key = optimizer.strip().lower()
    if key not in makers:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {sorted(makers)}")
    return key, makers[key]()


def _cost(compiled) -> tuple:
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None, None
    if isinstance(ca, (list, tuple)):  # older jax: one dict per program
        ca = ca[0] if ca else None
    if not ca:
        return None, None

    def val(key):
        v = ca.get(key)
        return float(v) if v is not None and float(v) >= 0 else None

    return val("flops"), val("bytes accessed")


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        m = None
    out = {}
    for field, attr in (("mem_argument_bytes", "argument_size_in_bytes"),
                        ("mem_output_bytes", "output_size_in_bytes"),
                        ("mem_temp_bytes", "temp_size_in_bytes"),
                        ("mem_alias_bytes", "alias_size_in_bytes"),
                        ("mem_peak_bytes", "peak_memory_in_bytes")):
        v = getattr(m, attr, None) if m is not None else None
        out[field] = int(v) if v is not None else None
    return out


def _short_error(e: BaseException, stage: str) -> str:
    msg = str(e).strip().splitlines()
    first = msg[0] if msg else ""
    kind = "out of memory: " if ("RESOURCE_EXHAUSTED" in str(e) or "out of memory" in
                                 str(e).lower()) else ""
    return f"{stage}: {kind}{type(e).__name__}: {first[:300]}"


def validate_settings(batch_size, dtype, modes, warmup=0, iters=1, windows=1, num_devices=1):
    """Check the model-independent settings; (dtype name, modes tuple, devices) or ValueError."""
    import jax

    if isinstance(dtype, str) and dtype.strip().lower() in DTYPE_NAMES:
        dtype = DTYPE_NAMES[dtype.strip().lower()]
    else:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {sorted(set(DTYPE_NAMES.values()))}")
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown timing mode {bad[0] if bad else None!r}; valid: {MODES}")
    for name, v, lo in (("batch_size", batch_size, 1), ("iters", iters, 1),
                        ("windows", windows, 1), ("warmup", warmup, 0),
                        ("num_devices", num_devices, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    available = jax.local_devices()
    if num_devices > len(available):
        raise ValueError(f"num_devices={num_devices} but only {len(available)} local "
                         f"{available[0].platform} device(s) are available")
    if batch_size % num_devices:
        raise ValueError(f"batch_size {batch_size} is not divisible by num_devices "
                         f"{num_devices}")
    return dtype, modes, available[:num_devices]


def _build_fns(model, tx, has_dropout):
    import jax
    import optax

    def infer(variables, x):
        return model.apply(variables, x, train=False)

    def loss_fn(params, batch_stats, x, y, rng):
        kw = {"rngs": {"dropout": rng}} if has_dropout else {}
        logits, new = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                  mutable=["batch_stats"], **kw)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, new.get("batch_stats", {})

    def fwd_bwd(params, batch_stats, x, y, rng):
        (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats,
                                                                     x, y, rng)
        return loss, grads, bs

    def train_step(state, x, y, rng):
        params, batch_stats, opt_state = state
        (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats,
                                                                     x, y, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, bs, opt_state), loss

    return {"inference": jax.jit(infer), "fwd_bwd": jax.jit(fwd_bwd),
            "train_step": jax.jit(train_step, donate_argnums=0)}


def host_init(model, resolution: int, seed: int = 0) -> dict:
    """Random variables for `model` built on the host with numpy: the tree structure and shapes
    come from jax.eval_shape(model.init) (nothing is compiled), kernels are He-normal
    (std sqrt(2 / fan_in)), BN scale / running var ones, biases / running means zeros.

    flax's own init traces every RNG op and takes tens of seconds per big model on a CPU;
    the values do not change the timing, so benchmarks use this instead.
    """
    import jax

    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), np.float32)
    shapes = jax.eval_shape(functools.partial(model.init, train=False),
                            jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)

    def fill(path, sd):
        last = path[-1]
        name = str(getattr(last, "key", getattr(last, "name", last)))
        shape, dt = tuple(sd.shape), np.dtype(sd.dtype)
        if name in ("scale", "var"):
            return np.ones(shape, dt)
        if name in ("bias", "mean") or len(shape) < 2:
            return np.zeros(shape, dt)
        fan_in = int(np.prod(shape[:-1])) or 1
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dt)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _stats(res: TimingResult, window_times: list[float]):
    t = np.asarray(window_times, float)
    res.window_times_s = [float(v) for v in t]
    res.time_s = float(np.median(t))
    res.min_s, res.max_s = float(t.min()), float(t.max())
    q1, q3 = np.percentile(t, [25, 75])
    res.iqr_s = float(q3 - q1)
    res.spread_pct = float((t.max() - t.min()) / res.time_s * 100.0)
    res.images_per_s = res.batch_size / res.time_s
    res.images_per_s_per_device = res.images_per_s / res.num_devices
    res.epoch_s = res.dataset_size / res.images_per_s


def time_model(spec, *, batch_size: int = 32, resolution: int | None = None,
               dtype: str = "float32", modes=("inference", "train_step"), warmup: int = 2,
               iters: int = 10, windows: int = 5, num_devices: int = 1, optimizer="sgd",
               conv_impl: str = "auto", dataset_size: int = 1_281_167, seed: int = 0,
               on_stage: Callable[[str], Any] | None = None) -> dict[str, TimingResult]:
    """Time `spec`'s compiled functions; {mode: TimingResult} in the order of `modes`.

    batch_size is the global batch, split over `num_devices` local devices (must divide).
    resolution defaults to spec.resolution (train resolution). dtype is the computation dtype
    ('float32' | 'bfloat16' | 'float16'; params stay float32). optimizer: see make_optimizer.
    Bad arguments raise ValueError before anything is compiled; compile / run failures (OOM,
    XLA errors) are caught and recorded in that mode's `error` (its times stay nan).
    on_stage(text) is called before each compile / timing stage (progress display).
    """
    import jax
    import jax.numpy as jnp

    from fastscale_jax.models import build_model

    dtype, modes, devices = validate_settings(batch_size, dtype, modes, warmup, iters, windows,
                                              num_devices)
    resolution = check_resolution(spec, spec.resolution if resolution is None else resolution)
    opt_name, tx = make_optimizer(optimizer)
    if resolution != spec.resolution:
        spec = spec.replace(resolution=resolution)
    env = environment(devices)
    model = build_model(spec, dtype=dtype, conv_impl=conv_impl)
    has_dropout = bool(getattr(spec, "drop_path_rate", 0.0) or getattr(spec, "dropout", 0.0)
                       or getattr(spec, "dc_ratio", 0.0))

    def new_result(mode):
        return TimingResult(model=spec.name, mode=mode, batch_size=batch_size,
                            resolution=resolution, dtype=dtype, num_devices=num_devices,
                            warmup=warmup, iters=iters, windows=windows,
                            dataset_size=dataset_size, env=dict(env),
                            optimizer=opt_name if mode == "train_step" else None)

    stage = on_stage or (lambda s: None)
    results = {m: new_result(m) for m in modes}
    # Placement: one device, or the batch sharded over a 1-D mesh (params replicated).
    if num_devices == 1:
        put_batch = put_rep = functools.partial(jax.device_put, device=devices[0])
    else:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        mesh = Mesh(np.asarray(devices), ("batch",))
        bsh, rsh = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
        put_batch = functools.partial(jax.device_put, device=bsh)
        put_rep = functools.partial(jax.device_put, device=rsh)

    rng = np.random.default_rng(seed)
    x_host = rng.standard_normal((batch_size, resolution, resolution, 3), dtype=np.float32)
    y_host = rng.integers(0, spec.num_classes, size=(batch_size,), dtype=np.int32)
    try:
        stage("init")
        variables = host_init(model, resolution, seed)  # host copy: fresh buffers per mode
    except Exception as e:  # noqa: BLE001
        for r in results.values():
            r.error = _short_error(e, "init")
        return results
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    fns = _build_fns(model, tx, has_dropout)
    x = put_batch(jnp.asarray(x_host, dtype=jnp.float32))
    y = put_batch(jnp.asarray(y_host))
    key = put_rep(jax.random.PRNGKey(seed + 1))

    for mode in modes:
        res = results[mode]
        # --- arguments (fresh device buffers; train_step donates its state) ---
        if mode == "inference":
            args = [put_rep(variables), x]
        elif mode == "fwd_bwd":
            args = [put_rep(params), put_rep(batch_stats), x, y, key]
        else:
            p = put_rep(params)
            args = [(p, put_rep(batch_stats), put_rep(jax.jit(tx.init)(params))), x, y, key]
        # --- ahead-of-time compilation ---
        try:
            stage(f"compiling {mode}")
            t0 = time.perf_counter()
            lowered = fns[mode].lower(*args)
            t1 = time.perf_counter()
            compiled = lowered.compile()
            t2 = time.perf_counter()
            res.lower_s, res.compile_s = t1 - t0, t2 - t1
            res.xla_flops, res.xla_bytes_accessed = _cost(compiled)
            for k, v in _memory(compiled).items():
                setattr(res, k, v)
        except Exception as e:  # noqa: BLE001 - recorded per mode, the sweep goes on
            res.error = _short_error(e, f"compile {mode}")
            continue
        # --- warm-up, then timed windows ---
        try:
            stage(f"timing {mode}")

            def call(args):
                out = compiled(*args)
                if mode == "train_step":  # thread the donated state through
                    args = [out[0]] + args[1:]
                return out, args

            out = None
            for _ in range(warmup):
                out, args = call(args)
            jax.block_until_ready((out, args))
            window_times = []
            for _ in range(windows):
                t0 = time.perf_counter()
                for _ in range(iters):
                    out, args = call(args)
                jax.block_until_ready(out)
                window_times.append((time.perf_counter() - t0) / iters)
            _stats(res, window_times)
            loss = out if mode == "inference" else (out[0] if mode == "fwd_bwd" else out[1])
            # informative only: a train step on random labels may legitimately diverge
            res.finite_outputs = bool(np.all(np.isfinite(
                np.asarray(jax.device_get(loss), np.float32))))
        except Exception as e:  # noqa: BLE001
            res.error = _short_error(e, f"run {mode}")
        finally:
            del args, compiled
            out = None
    return results
