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
import functools
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


def _abstract(tree, sharding):
    import jax

    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def lower_like_time_model(spec, *, batch_size: int, resolution: int, dtype: str,
                          mode: str = "train_step", optimizer: str = "sgd",
                          conv_impl: str = "auto"):
    """The Lowered program fastscale_jax.timing.time_model(spec, ...) compiles for `mode` on
    one device (same model, functions, shapes, placement and donation), from abstract shapes:
    nothing is allocated or initialised."""
    import jax

    from fastscale_jax.models import build_model
    from fastscale_jax.timing import measure

    spec = spec.replace(resolution=resolution) if resolution != spec.resolution else spec
    model = build_model(spec, dtype=dtype, conv_impl=conv_impl)
    _, tx = measure.make_optimizer(optimizer)
    has_dropout = bool(getattr(spec, "drop_path_rate", 0.0) or getattr(spec, "dropout", 0.0)
                       or getattr(spec, "dc_ratio", 0.0))
    fn = measure._build_fns(model, tx, has_dropout)[mode]  # the function time_model compiles
    sh = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    x1 = jax.ShapeDtypeStruct((1, resolution, resolution, 3), np.float32)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), x1)
    params = _abstract(shapes["params"], sh)
    stats = _abstract(shapes.get("batch_stats", {}), sh)
    x = jax.ShapeDtypeStruct((batch_size, resolution, resolution, 3), np.float32, sharding=sh)
    y = jax.ShapeDtypeStruct((batch_size,), np.int32, sharding=sh)
    key = _abstract(jax.eval_shape(lambda: jax.random.PRNGKey(0)), sh)
    if mode == "train_step":
        opt = _abstract(jax.eval_shape(tx.init, shapes["params"]), sh)
        return fn.lower((params, stats, opt), x, y, key)
    if mode == "fwd_bwd":
        return fn.lower(params, stats, x, y, key)
    return fn.lower({"params": params, "batch_stats": stats}, x)


def finite_tree(tree) -> bool:
    import jax

    return all(bool(np.all(np.isfinite(np.asarray(v, np.float32))))
               for v in jax.tree_util.tree_leaves(jax.device_get(tree)))
