"""Time one model's XLA-compiled steps: the trainer's own eval step, forward+backward and
train step, built from a config's recipe.

    res = time_model(spec, batch_size=32, modes=("inference", "fwd_bwd", "train_step"))
    res["train_step"].time_s, res["train_step"].images_per_s, res["train_step"].compile_s
    res = time_model(spec, config)          # config.timing settings, config's train recipe

Method (the same for every mode):
  1. the step is compiled ahead of time (.lower(*args).compile()); lowering and compilation
     are timed separately from execution (`lower_s`, `compile_s`);
  2. `warmup` calls are run and discarded;
  3. `windows` timed windows of `iters` calls each; the device is synchronised
     (block_until_ready) only at the edges of a window, so dispatch overlaps execution as in
     a real training loop. One window gives one per-step time (window time / iters);
  4. reported: median / min / max / IQR over windows, spread = (max - min) / median in %,
     images/s (global batch / median), per-device images/s, and an epoch-time estimate
     (dataset_size / images/s).

Modes (the functions fastscale_jax.train.setup.build_steps compiles for training, with the
config's model.dtype / conv_impl, train.* (loss, mixup, EMA, sync BN) and optim.*, run
data-parallel by config.parallel over `num_devices` devices):
  inference   the eval step: eval-mode forward, top-1 / top-5 / cross-entropy sums.
  fwd_bwd     the train step's forward and backward pass (loss, gradients, BN statistics,
              averaged over devices), without the optimizer update.
  train_step  the train step itself: fwd_bwd + optimizer update + EMA; the state is donated
              and threaded from one call to the next.

XLA's view of each compiled step is recorded: `xla_flops` is cost_analysis()['flops'], which
counts 2 flops per multiply-add (plus elementwise ops such as BN and activations), so compare
it with 2 x analytic `flops` (multiply-adds) x per-device batch; convolutions run through FFI
custom calls (oneDNN on CPU) are invisible to it, and `ffi_convs` counts them. `mem_*_bytes`
come from memory_analysis() (None where the backend does not report them); with
num_devices > 1 cost and memory figures are those of the per-device program.

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

from fastscale_jax.timing.programs import MODES, host_batch, host_state, timed_steps


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
    windows: int                     # timed windows (settle: including the added ones)
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
    optimizer: str | None = None     # train_step only: config.optim.name
    ffi_convs: int | None = None     # convs run as FFI custom calls (invisible to xla_flops)
    finite_outputs: bool | None = None  # logits / loss of the last call finite (information)
    error: str | None = None         # compile / run failure (then the times are nan)
    settled: int = 0                 # rounds of windows added to a too-wide spread (settle)
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
    """Device kind, backend, device count, the host allocator setting and library versions
    (stamped on every result)."""
    import jax

    from fastscale_jax.cpu import hostmem

    devices = list(devices) if devices is not None else jax.local_devices()
    d = devices[0]
    return {"backend": jax.default_backend(), "platform": d.platform,
            "device_kind": getattr(d, "device_kind", "unknown"), "num_devices": len(devices),
            "local_device_count": jax.local_device_count(), "host": platform.node(),
            "host_malloc": hostmem.status(), **_versions()}


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


def _stats(res: TimingResult, window_times: list[float]):
    t = np.asarray(window_times, float)
    res.window_times_s = [float(v) for v in t]
    res.time_s = float(np.median(t))
    res.min_s, res.max_s = float(t.min()), float(t.max())
    q1, q3 = np.percentile(t, [25, 75])
    res.iqr_s = float(q3 - q1)
    res.spread_pct = _spread_pct(t)
    res.images_per_s = res.batch_size / res.time_s
    res.images_per_s_per_device = res.images_per_s / res.num_devices
    res.epoch_s = res.dataset_size / res.images_per_s




def _compile(res: TimingResult, fn, args):
    """Ahead-of-time compile `fn` for `args`, recording times, XLA's cost and memory."""
    from fastscale_jax.ops.conv import ffi_convs_in

    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    res.lower_s, res.compile_s = t1 - t0, time.perf_counter() - t1
    res.xla_flops, res.xla_bytes_accessed = _cost(compiled)
    for k, v in _memory(compiled).items():
        setattr(res, k, v)
    try:
        res.ffi_convs = ffi_convs_in(compiled)
    except Exception:  # noqa: BLE001 - information only; a backend without HLO text
        res.ffi_convs = None
    return compiled


class _Runner:
    """One compiled step and its arguments: warm-up calls, timed windows (the train step's
    donated state is threaded from call to call), and the outcome recorded in `res`."""

    def __init__(self, res: TimingResult, compiled, args, mode: str):
        self.res, self.compiled, self.args, self.mode = res, compiled, args, mode
        self.out, self.times = None, []

    def _call(self):
        out = self.compiled(*self.args)
        self.args = (out[0], self.args[1]) if self.mode == "train_step" else self.args
        self.out = out

    def warm_up(self):
        import jax

        for _ in range(self.res.warmup):
            self._call()
        jax.block_until_ready((self.out, self.args))

    def window(self):
        import jax

        t0 = time.perf_counter()
        for _ in range(self.res.iters):
            self._call()
        jax.block_until_ready(self.out)
        self.times.append((time.perf_counter() - t0) / self.res.iters)

    def finish(self):
        import jax

        _stats(self.res, self.times)
        loss = {"inference": lambda o: o["loss"], "fwd_bwd": lambda o: o[0],
                "train_step": lambda o: o[1]["loss"]}[self.mode](self.out)
        # information only: a train step on random labels may legitimately diverge
        self.res.finite_outputs = bool(np.all(np.isfinite(
            np.asarray(jax.device_get(loss), np.float32))))
        self.compiled = self.args = self.out = None


def _spread_pct(times) -> float:
    return float((max(times) - min(times)) / np.median(times) * 100.0)


def _run_windows(res: TimingResult, compiled, args, mode: str, settle=None):
    """Warm-up calls, then the timed windows (one model alone). settle=(max_spread_pct,
    rounds): when the windows spread more than max_spread_pct, `rounds` more rounds of
    `windows` windows on the same compiled program; the median is over them all. (The
    spread is a range, so more windows never narrow it: the rounds are a fixed extra.)"""
    r = _Runner(res, compiled, args, mode)
    r.warm_up()
    for _ in range(res.windows):
        r.window()
    max_spread, rounds = settle or (math.inf, 0)
    if _spread_pct(r.times) > max_spread:
        for _ in range(rounds * res.windows):
            r.window()
        res.settled = rounds
    res.windows = len(r.times)
    r.finish()


def _prepare(spec, config, mode: str, overrides: dict, stage):
    """(TimingResult, _Runner or None) for one model's `mode` step, compiled and ready; a
    failure is recorded in the result."""
    s, spec, cfg, par, steps = timed_steps(spec, config, modes=(mode,), **overrides)
    res = TimingResult(model=spec.name, mode=mode, batch_size=s["batch_size"],
                       resolution=spec.resolution, dtype=s["dtype"],
                       num_devices=s["num_devices"], warmup=s["warmup"], iters=s["iters"],
                       windows=s["windows"], dataset_size=s["dataset_size"],
                       env=dict(environment(par.local_devices)),
                       optimizer=cfg.optim.name if mode == "train_step" else None)
    fns = {"inference": steps.eval, "fwd_bwd": steps.grads, "train_step": steps.train}
    try:
        stage(f"{spec.name}: compiling {mode}")
        args = (par.put_state(host_state(steps, spec, s["seed"])),
                par.put_batch(host_batch(s, spec.resolution, spec.num_classes)))
        compiled = _compile(res, fns[mode], args)
        runner = _Runner(res, compiled, args, mode)
        runner.warm_up()
    except Exception as e:  # noqa: BLE001 - recorded, the others go on
        res.error = _short_error(e, f"compile {mode}")
        return res, None
    return res, runner


def time_interleaved(specs, config=None, mode: str = "train_step", *,
                     on_stage: Callable[[str], Any] | None = None,
                     **overrides) -> list[TimingResult]:
    """Time several models' `mode` step fairly: every program is compiled and warmed up
    first, then each timed window runs every model in turn (the order rotating from window to
    window), so a change of machine load falls on all of them alike. One TimingResult per
    spec, in order (a model that fails to compile or run has its `error` set). Settings as
    time_model (config.timing, with overrides)."""
    stage = on_stage or (lambda text: None)
    prepared = [_prepare(spec, config, mode, overrides, stage) for spec in specs]
    live = [r for _, r in prepared if r is not None]
    n = live[0].res.windows if live else 0
    for w in range(n):
        stage(f"window {w + 1}/{n}")
        for k in range(len(live)):
            r = live[(k + w) % len(live)]
            if r.res.error is None:
                try:
                    r.window()
                except Exception as e:  # noqa: BLE001
                    r.res.error = _short_error(e, f"run {mode}")
    for r in live:
        if r.res.error is None:
            r.finish()
    return [res for res, _ in prepared]


def time_model(spec, config=None, *, on_stage: Callable[[str], Any] | None = None,
               settle: bool = False, **overrides) -> dict[str, TimingResult]:
    """Time `spec`'s compiled steps; {mode: TimingResult} in the order of the modes.

    config: an experiment config (default fastscale_jax.config.base_config()): its timing
    section gives the settings, its train / optim / model / parallel sections the step's
    recipe. overrides: timing settings by name (batch_size, resolution, dtype, modes, warmup,
    iters, windows, num_devices, dataset_size, conv_impl, seed), e.g. batch_size=8.
    batch_size is the global batch, split over num_devices local devices (must divide).
    Bad settings raise ValueError before anything is compiled; compile / run failures (OOM,
    XLA errors) are caught and recorded in that mode's `error` (its times stay nan).
    on_stage(text) is called before each compile / timing stage (progress display).
    settle: when a mode's windows spread more than timing.max_spread_pct, time
    timing.remeasure more rounds of `windows` windows on the same compiled program (the
    median is over all of them; `windows` and `settled` say how many ran): a burst of load
    that covers most of the first windows would otherwise move the median itself. Cheaper
    than --mode benchmark's re-measuring, which compiles again; scale_to_time uses it.
    """
    s, spec, cfg, par, steps = timed_steps(spec, config, **overrides)
    settling = (float(s["max_spread_pct"]), int(s["remeasure"])) if settle else None
    env = environment(par.local_devices)
    results = {m: TimingResult(
        model=spec.name, mode=m, batch_size=s["batch_size"], resolution=spec.resolution,
        dtype=s["dtype"], num_devices=s["num_devices"], warmup=s["warmup"], iters=s["iters"],
        windows=s["windows"], dataset_size=s["dataset_size"], env=dict(env),
        optimizer=cfg.optim.name if m == "train_step" else None) for m in s["modes"]}
    stage = on_stage or (lambda text: None)
    try:
        stage("init")
        state0 = host_state(steps, spec, s["seed"])
    except Exception as e:  # noqa: BLE001
        for r in results.values():
            r.error = _short_error(e, "init")
        return results
    batch = par.put_batch(host_batch(s, spec.resolution, spec.num_classes))
    fns = {"inference": steps.eval, "fwd_bwd": steps.grads, "train_step": steps.train}
    for mode, res in results.items():
        args = (par.put_state(state0), batch)  # fresh buffers: train_step donates them
        try:
            stage(f"compiling {mode}")
            compiled = _compile(res, fns[mode], args)
        except Exception as e:  # noqa: BLE001 - recorded per mode, the sweep goes on
            res.error = _short_error(e, f"compile {mode}")
            continue
        try:
            stage(f"timing {mode}")
            _run_windows(res, compiled, args, mode, settling)
        except Exception as e:  # noqa: BLE001
            res.error = _short_error(e, f"run {mode}")
        finally:
            del args, compiled
    return results
