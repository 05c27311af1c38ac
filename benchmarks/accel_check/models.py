"""Checks on the models: environment, forward/backward per family, CPU parity, alpha family.

Units: flops are multiply-adds per image (pycls), acts output elements per image; times in
seconds unless a key says `_ms`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import time

import numpy as np

from accel_check.common import (
    FAIL,
    OK,
    compile_all,
    finite_tree,
    lower_like_time_model,
    one_line,
    result,
    timing_config,
)

PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu", "flax", "optax",
            "orbax-checkpoint", "chex", "numpy", "torch", "timm", "torchvision", "pillow",
            "tqdm", "tensorflow", "tensorflow-cpu", "tensorflow-datasets", "ml-collections")
ENV_VARS = ("XLA_FLAGS", "LIBTPU_INIT_ARGS", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_MEM_FRACTION",
            "XLA_PYTHON_CLIENT_PREALLOCATE", "CUDA_VISIBLE_DEVICES", "FASTSCALE_CONV_IMPL")


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_environment(plan) -> dict:
    """Devices, installed versions, XLA / JAX settings."""
    import jax

    devs = jax.devices()
    d = devs[0]
    info = {"backend": jax.default_backend(), "device_kind": getattr(d, "device_kind", "?"),
            "device_count": len(devs), "local_device_count": jax.local_device_count(),
            "process_count": jax.process_count(), "host": platform.node(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "compute_capability": getattr(d, "compute_capability", None),
            "versions": {p: v for p in PACKAGES if (v := _version(p))},
            "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "jax_enable_x64": bool(jax.config.jax_enable_x64)}
    try:
        stats = d.memory_stats() or {}
        info["device_memory_gib"] = round(stats.get("bytes_limit", 0) / 2**30, 1) or None
    except Exception:  # noqa: BLE001 - CPU devices do not report memory
        info["device_memory_gib"] = None
    summary = (f"{info['device_count']} x {info['device_kind']} ({info['backend']}), jax "
               f"{info['versions'].get('jax')}, XLA_FLAGS={info['env'].get('XLA_FLAGS', '')!r}")
    return result(OK, summary, **info)


# ----------------------------------------------------------------- forward + backward
def _init(spec, resolution):
    from fastscale_jax.models.host_init import host_variables

    return host_variables(spec, seed=0)


def _inputs(p, seed):
    """(family, spec at the plan's resolution, host variables, images, labels) per model."""
    rng = np.random.default_rng(seed)
    for fam, spec in p["models"]:
        res = p["resolution"] or spec.resolution
        spec = spec.replace(resolution=res)
        x = rng.standard_normal((p["batch"], res, res, 3), dtype=np.float32)
        y = rng.integers(0, spec.num_classes, (p["batch"],), dtype=np.int32)
        yield fam, spec, _init(spec, res), x, y


def _fwd_bwd_fn(model):
    import jax
    import optax

    def loss_fn(params, stats, x, y):
        logits, new = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                  mutable=["batch_stats"])
        logits = logits.astype(np.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

    def fwd_bwd(params, stats, x, y):
        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        return loss, grads, new["batch_stats"]

    return jax.jit(fwd_bwd)


def _cosine(a, b) -> float:
    import jax

    va = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree_util.tree_leaves(a)])
    vb = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree_util.tree_leaves(b)])
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb) + 1e-30))


def check_families(plan, threads: int) -> dict:
    """Every family compiles and runs forward + backward (train-mode BN, softmax CE) in each
    dtype (the second dtype only for plan 'low_precision_families' when given: --smoke, where
    XLA:CPU takes ~15 s to compile one bf16 model); bfloat16 agrees with float32 on the same
    weights and batch (loss, gradient direction) and keeps BN running statistics in float32.
    Tiny batches at tiny resolutions make train-mode BN ill-conditioned (batch 2 at 32 px gave
    gradient cosines near 0 between dtypes), so even --smoke uses batch 8 at 64 px."""
    import jax

    from fastscale_jax.models import build_model

    p = plan["families"]
    jobs, inputs = {}, {}
    for fam, spec, variables, x, y in _inputs(p, seed=0):
        args = jax.device_put((variables["params"], variables["batch_stats"], x, y))
        low_families = p.get("low_precision_families") or [f for f, _ in p["models"]]
        for dt in (p["dtypes"] if fam in low_families else p["dtypes"][:1]):
            fn = _fwd_bwd_fn(build_model(spec, dtype=dt))
            jobs[(fam, dt)] = (lambda fn=fn, args=args: fn.lower(*args))
            inputs[(fam, dt)] = (spec, args)
    compiled = compile_all(jobs, threads)
    rows, grads, problems = [], {}, []
    for (fam, dt), (exe, err, lower_s, compile_s) in compiled.items():
        spec, args = inputs[(fam, dt)]
        row = {"family": fam, "model": spec.name, "dtype": dt, "resolution": spec.resolution,
               "batch": p["batch"], "lower_s": lower_s, "compile_s": compile_s, "error": err}
        if exe is not None:
            try:
                jax.block_until_ready(exe(*args))  # first call: allocation, autotuning
                t0 = time.perf_counter()
                loss, g, stats = jax.block_until_ready(exe(*args))
                row["run_s"] = time.perf_counter() - t0
                row["loss"] = float(loss)
                row["finite"] = bool(math.isfinite(row["loss"]) and finite_tree(g))
                row["bn_stats_dtypes"] = sorted({str(v.dtype) for v in
                                                 jax.tree_util.tree_leaves(stats)})
                grads[(fam, dt)] = jax.device_get(g)
            except Exception as e:  # noqa: BLE001
                row["error"] = f"run: {one_line(e)}"
        if row["error"]:
            problems.append(f"{fam} {dt}: {row['error']}")
        elif not row["finite"]:
            problems.append(f"{fam} {dt}: non-finite loss or gradient")
        elif row["bn_stats_dtypes"] != ["float32"]:
            problems.append(f"{fam} {dt}: BN running statistics are {row['bn_stats_dtypes']}")
        rows.append(row)
    lo, hi = p["dtypes"][0], p["dtypes"][-1]
    for fam, _ in p["models"]:
        a = next((r for r in rows if r["family"] == fam and r["dtype"] == lo), {})
        b = next((r for r in rows if r["family"] == fam and r["dtype"] == hi), {})
        if lo == hi or "loss" not in a or "loss" not in b:
            continue
        b["loss_rel_diff_vs_" + lo] = abs(b["loss"] - a["loss"]) / abs(a["loss"])
        b["grad_cosine_vs_" + lo] = _cosine(grads[(fam, lo)], grads[(fam, hi)])
        if b["loss_rel_diff_vs_" + lo] > p["loss_rtol"]:
            problems.append(f"{fam}: {hi} loss differs from {lo} by "
                            f"{b['loss_rel_diff_vs_' + lo]:.2%} (> {p['loss_rtol']:.0%})")
        if b["grad_cosine_vs_" + lo] < p["min_grad_cosine"]:
            problems.append(f"{fam}: {hi} gradient cosine to {lo} is "
                            f"{b['grad_cosine_vs_' + lo]:.3f} (< {p['min_grad_cosine']})")
    n_ok = sum(1 for r in rows if not r["error"] and r.get("finite"))
    cos = [r[k] for r in rows for k in r if k.startswith("grad_cosine")]
    summary = (f"{n_ok}/{len(rows)} ran; {hi} vs {lo}: grad cosine >= "
               f"{min(cos) if cos else float('nan'):.4f}; max compile "
               f"{max(r['compile_s'] for r in rows):.1f}s")
    return result(FAIL if problems else OK, problems[0] if problems else summary,
                  problems=problems, rows=rows,
                  tolerances={"loss_rtol": p["loss_rtol"],
                              "min_grad_cosine": p["min_grad_cosine"]})


# ----------------------------------------------------------------- parity with a CPU reference
def _logits_fn(model):
    import jax

    return jax.jit(lambda v, x: model.apply(v, x, train=False).astype(np.float32))


def check_parity(plan, threads: int) -> dict:
    """float32 inference logits on the default backend (conv_impl 'auto') against the same
    weights and images on the CPU backend with conv_impl 'lax' (XLA:CPU's own convolution).
    On a CPU-only machine this compares our CPU convolutions (oneDNN / shift / group_scan) with
    XLA's; on a GPU/TPU it compares the accelerator with the CPU. The accelerator runs at
    'highest' matmul precision (true float32); at the default precision (TF32 on recent
    NVIDIA GPUs, bf16 passes on TPU) the difference is reported too, without a tolerance.
    Metric: max |logits - reference| / max |reference|."""
    import jax

    from fastscale_jax.models import build_model

    p = plan["parity"]
    cpu = jax.devices("cpu")[0]
    dev = jax.devices()[0]
    precisions = list(p.get("precisions") or
                      ["highest"] + (["default"] if dev.platform != "cpu" else []))
    jobs, args = {}, {}
    for fam, spec, v, x, _ in _inputs(p, seed=1):
        args[(fam, "ref")] = jax.device_put((v, x), cpu)
        ref = _logits_fn(build_model(spec, conv_impl="lax"))
        jobs[(fam, "ref")] = (lambda f=ref, a=args[(fam, "ref")]: f.lower(*a))
        for prec in precisions:
            args[(fam, prec)] = jax.device_put((v, x), dev)
            f = _logits_fn(build_model(spec, conv_impl="auto"))

            def low(f=f, a=args[(fam, prec)], prec=prec):
                ctx = (contextlib.nullcontext() if prec == "default"
                       else jax.default_matmul_precision(prec))
                with ctx:
                    return f.lower(*a)
            jobs[(fam, prec)] = low
    compiled = compile_all(jobs, threads)
    rows, problems = [], []
    for fam, spec in p["models"]:
        row = {"family": fam, "model": spec.name, "tested": f"{dev.platform} conv_impl=auto",
               "reference": "cpu conv_impl=lax", "batch": p["batch"],
               "resolution": p["resolution"] or spec.resolution}
        try:
            outs = {}
            for key in ["ref"] + precisions:
                exe, err, _, _ = compiled[(fam, key)]
                if err:
                    raise RuntimeError(f"{key}: {err}")
                outs[key] = np.asarray(jax.device_get(exe(*args[(fam, key)])), np.float64)
            ref = outs["ref"]
            scale = float(np.max(np.abs(ref)))
            row["max_abs_logit"] = scale
            for prec in precisions:
                row[f"rel_err_{prec}"] = float(np.max(np.abs(outs[prec] - ref)) / scale)
            if not np.isfinite(row["rel_err_highest"]) or row["rel_err_highest"] > p["rtol"]:
                problems.append(f"{fam}: rel err {row['rel_err_highest']:.2e} > {p['rtol']:g}")
        except Exception as e:  # noqa: BLE001
            row["error"] = one_line(e)
            problems.append(f"{fam}: {row['error']}")
        rows.append(row)
    worst = max((r.get("rel_err_highest", math.inf) for r in rows), default=math.nan)
    summary = (f"{dev.platform} auto vs cpu lax: max rel err {worst:.1e} (tol {p['rtol']:g})"
               + (f"; default precision {max(r.get('rel_err_default', 0) for r in rows):.1e}"
                  if "default" in precisions else ""))
    return result(FAIL if problems else OK, problems[0] if problems else summary,
                  problems=problems, rows=rows, rtol=p["rtol"])


# ----------------------------------------------------------------- alpha family timing
def alpha_family(p) -> list:
    """[(labels, spec)]: the base once (x1), then every kind at every factor > 1."""
    import fastscale_jax as fs

    base = p["base"]
    fam = [({"kind": "base", "factor": 1.0}, base)]
    for kind in p["kinds"]:
        for f in p["factors"]:
            if f != 1:
                fam.append(({"kind": kind, "factor": float(f)}, fs.scale(base, f, kind)))
    return fam


def check_alpha(plan, threads: int) -> dict:
    """Train-step time of a scaled family (fastscale_jax.timing.time_model, one device), then
    Pearson r of time per image with acts and with flops, and the runtime fit
    time ~ a*flops + b*acts + c (fastscale_jax.timing.fit) with leave-one-out error."""
    from fastscale_jax.timing import pearson_r, time_model
    from fastscale_jax.timing.benchmark import fits_by_mode, model_row

    p = plan["alpha"]
    family = alpha_family(p)
    settings = {"batch_size": p["batch"], "resolution": None, "dtype": p["dtype"],
                "modes": ("train_step",), "num_devices": 1}
    jobs = {i: (lambda s=s: lower_like_time_model(s, batch_size=p["batch"],
                                                  resolution=s.resolution, dtype=p["dtype"]))
            for i, (_, s) in enumerate(family)}
    t0 = time.perf_counter()
    pre = compile_all(jobs, threads)
    prewarm_s = time.perf_counter() - t0
    rows = []
    for i, (labels, spec) in enumerate(family):
        res = time_model(spec, timing_config(), batch_size=p["batch"], dtype=p["dtype"],
                         modes=("train_step",),
                         warmup=p["warmup"], iters=p["iters"], windows=p["windows"])
        row = model_row(labels, spec, res, settings)
        row["prewarm_compile_s"] = pre[i][3]
        rows.append(row)
    good = [r for r in rows if r.get("train_step_time_ms")]
    t = [r["train_step_time_ms"] / 1e3 / r["batch_size"] for r in good]
    r_acts = pearson_r([r["acts"] for r in good], t)
    r_flops = pearson_r([r["flops"] for r in good], t)
    fits = fits_by_mode(rows, ("train_step",))["train_step"]
    keep = ("name", "kind", "factor", "resolution", "flops", "params", "acts",
            "train_step_time_ms", "train_step_spread_pct", "train_step_images_per_s",
            "train_step_compile_s", "prewarm_compile_s", "error")
    rows = [{k: r.get(k) for k in keep} for r in rows]
    failed = [r for r in rows if r["error"]]
    fit = fits["flops+acts"]
    summary = (f"{len(good)}/{len(rows)} timed; r(t,acts)={r_acts:.3f} r(t,flops)={r_flops:.3f}"
               f"; fit R^2={fit['r2']:.3f} LOO err {fit['loo_rel_err_mean']:.1%}")
    ok = not failed and math.isfinite(r_acts) and math.isfinite(r_flops)
    return result(OK if ok else FAIL,
                  summary if ok else (failed[0]["error"] if failed else "r is not finite"),
                  r_time_acts=r_acts, r_time_flops=r_flops, fits=fits, rows=rows,
                  prewarm_s=prewarm_s, batch=p["batch"], dtype=p["dtype"],
                  time_unit="seconds per image (fit), ms per batch (rows)")



# ----------------------------------------------------------------- time budgets
def check_budget(plan, threads: int) -> dict:
    """fastscale_jax.scale_to_time on the device: RegNetZ-500MF scaled by dWr and by dwr to two
    train-step budgets (multiples of the base's own measured step time, so that they mean
    something on any device), then every chosen model re-measured in one interleaved timing run:
    the flops each strategy reached at equal time, and re-measured time / budget."""
    import fastscale_jax as fs
    from fastscale_jax.timing import time_interleaved, time_model

    p = plan["budget"]
    cfg = timing_config()
    kw = dict(warmup=p["warmup"], iters=p["iters"], windows=p["windows"], dtype=p["dtype"])
    base = p["base"]
    t0 = time_model(base, cfg, batch_size=p["batch"], modes=("train_step",), **kw)["train_step"]
    if not t0.ok:
        return result(FAIL, f"the base did not run: {t0.error}")
    rows, chosen = [], []
    for mult in p["multiples"]:
        budget = mult * t0.time_s
        for kind in ("dWr", "dwr"):
            res = fs.scale_to_time(base, budget, kind, batch_size=p["batch"], config=cfg,
                                   tolerance=p["tolerance"], **kw)
            chosen.append(res.spec)
            rows.append({"kind": kind, "budget_ms": budget * 1e3, "multiple": mult,
                         "model": res.spec.name, "flops": res.flops, "acts": res.acts,
                         "time_ms": res.time_s * 1e3, "status": res.status,
                         "measured": len(res.measurements),
                         "above_ms": (res.above.time_s * 1e3 if res.above and res.above.ok
                                      else None)})
    again = time_interleaved(chosen, cfg, "train_step", batch_size=p["batch"], **kw)
    for row, r in zip(rows, again):
        row["remeasured_ms"] = r.time_s * 1e3 if r.ok else None
        row["remeasured_ratio"] = r.time_s * 1e3 / row["budget_ms"] if r.ok else None
    ratios = [r["remeasured_ratio"] for r in rows if r["remeasured_ratio"]]
    summary = (f"base {t0.time_s * 1e3:.3g} ms; " + "; ".join(
        f"{r['kind']} x{r['multiple']:g}: {r['flops'] / 1e6:.4g} MF, re-measured "
        f"{r['remeasured_ratio']:.2f} x budget ({r['measured']} timed)" for r in rows
        if r["remeasured_ratio"]))
    ok = len(ratios) == len(rows)
    return result(OK if ok else FAIL, summary if ok else "a chosen model failed to re-run",
                  rows=rows, base_ms=t0.time_s * 1e3, batch=p["batch"], dtype=p["dtype"])
