"""Shared pieces of the accelerator check: results, small specs, parallel compilation.

Compilation dominates a short accelerator session (tens of seconds per model on a GPU, one at
a time), so the check compiles ahead of time in a thread pool (XLA compiles outside the GIL)
and only then runs and times, one program at a time. Timing through
fastscale_jax.timing.time_model compiles again inside; `lower_like_time_model` lowers the very
program time_model will build, so with the persistent compilation cache on
(`enable_compile_cache`) that second compile is a cache hit.
"""

from __future__ import annotations

import concurrent.futures
import time

import numpy as np

OK, FAIL, SKIP = "ok", "fail", "skip"


def result(status: str, summary: str, **data) -> dict:
    """One check's outcome: status ('ok' | 'fail' | 'skip'), a one-line summary, numbers."""
    return {"status": status, "summary": summary, **data}


def one_line(e: BaseException, limit: int = 300) -> str:
    """'TypeName: first line of the message' (at most `limit` characters)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:limit] if lines else ''}"


def shallow(spec, name_suffix: str = " (1 block/stage)"):
    """`spec` with one block per stage: the same layer types, a fraction of the compile time."""
    return spec.replace(depths=tuple(1 for _ in spec.depths), name=spec.name + name_suffix)


def enable_compile_cache(path: str) -> None:
    """Persistent compilation cache in `path` for every compile of this process (set before
    the first compile)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def compile_all(jobs: dict, threads: int) -> dict:
    """{key: lower_fn} -> {key: (compiled or None, error or None, lower_s, compile_s)}.

    lower_fn() returns a jax `Lowered`; lowering (Python tracing, holds the GIL) runs here one
    job after another while XLA compiles the jobs already lowered in `threads` threads. A
    failing job is recorded, the others go on.
    """
    out = {}

    def comp(key, low, lower_s):
        t0 = time.perf_counter()
        try:
            return low.compile(), None, lower_s, time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            return None, f"compile: {one_line(e)}", lower_s, time.perf_counter() - t0

    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        futures = {}
        for key, lower_fn in jobs.items():
            t0 = time.perf_counter()
            try:
                low = lower_fn()
            except Exception as e:  # noqa: BLE001 - recorded per job
                out[key] = (None, f"lower: {one_line(e)}", time.perf_counter() - t0, 0.0)
                continue
            futures[key] = pool.submit(comp, key, low, time.perf_counter() - t0)
        for key, fut in futures.items():
            out[key] = fut.result()
    return {key: out[key] for key in jobs}


class Cfg(dict):
    """A dict with attribute access: the fields train.step / train.optim read."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def train_cfg(**kw) -> Cfg:
    c = Cfg(loss="ce", label_smoothing=0.0, bce_target_thresh=None, mixup_alpha=0.0,
            cutmix_alpha=0.0, mix_prob=1.0, mix_switch_prob=0.5, ema_decay=0.0,
            ema_warmup=True, sync_bn=False, global_batch_size=128, eval_batch_size=None,
            epochs=1.0, num_train_steps=None, eval_every_epochs=1.0, log_every_steps=50)
    c.update(kw)
    return c


def optim_cfg(**kw) -> Cfg:
    c = Cfg(name="sgd", base_lr=0.1, base_batch_size=128, momentum=0.9, nesterov=True, b1=0.9,
            b2=0.999, eps=1e-6, weight_decay=5e-4, wd_mask="kernels", schedule="cosine",
            warmup_epochs=0.0, warmup_steps=None, warmup_init_factor=0.0, min_lr_factor=0.0,
            clip_grad_norm=0.0)
    c.update(kw)
    return c


def timing_config(**timing) -> Cfg:
    """A config for fastscale_jax.timing.time_model / programs.lower without ml_collections
    (the GPU image lacks it): the sections of fastscale_jax.config.base_config the timed
    step reads, as attribute dicts with base_config's values (tests/test_accelerator_check
    checks they have its keys). `timing` overrides timing settings."""
    t = Cfg(batch_size=32, resolution=None, dtype=None, modes=("inference", "train_step"),
            warmup=2, iters=10, windows=5, dataset_size=1_281_167, num_devices=1,
            max_spread_pct=20.0, remeasure=2)
    t.update(timing)
    return Cfg(seed=0, parallel="pmap",
               model=Cfg(dtype="float32", conv_impl="auto", onednn_layout="nhwc"),
               train=train_cfg(), optim=optim_cfg(base_lr=0.1, base_batch_size=256,
                                                  weight_decay=5e-5),
               checkpoint=Cfg(every_steps=1000, keep=3, async_save=True, resume=True), timing=t)


def lower_like_time_model(spec, *, batch_size: int, resolution: int, dtype: str,
                          mode: str = "train_step", conv_impl: str = "auto"):
    """The Lowered program time_model(spec, timing_config(), ...) compiles for `mode` on one
    device (fastscale_jax.timing.programs.lower: same step, shapes, placement and donation),
    from abstract shapes: nothing is allocated or initialised."""
    from fastscale_jax.timing import programs

    return programs.lower(spec, mode, timing_config(), batch_size=batch_size,
                         resolution=resolution, dtype=dtype, conv_impl=conv_impl)


def finite_tree(tree) -> bool:
    import jax

    return all(bool(np.all(np.isfinite(np.asarray(v, np.float32))))
               for v in jax.tree_util.tree_leaves(jax.device_get(tree)))
