"""Collect a study: one row per run (DIR/study.csv, DIR/study.json) and a table aggregated over
seeds (mean ± std; DIR/study_table.txt).

A row holds the member's labels (base, strategy, factor, seed, flops as multiply-adds, params,
acts at its train resolution), its status ('done', 'failed', 'interrupted', 'running',
'missing') and error, and what the run measured: top-1/top-5 (fractions), EMA top-1, training
images/s in steady state (the training loop's own measurement: its first, compiling step
excluded) and the epoch time that implies (train images / images per s), the seconds it waited
for input and its compile time, as the run wrote them to final_metrics.json (those of the run's
last invocation when it was resumed); wall_s is the whole run's process time.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from fastscale_jax.config import flat_dict
from fastscale_jax.study import runner

COLUMNS = ("run", "base", "strategy", "kind", "alpha", "factor", "target", "target_flops",
           "flops_err_pct", "scaled_by", "seed", "model", "resolution", "flops", "params", "acts",
           "status", "error", "step", "top1", "top5",
           "ema_top1", "ema_top5", "step_time_s", "timing_spread_pct", "timing_noisy",
           "epoch_time_s", "run_epoch_time_s", "train_images_per_s", "input_wait_s",
           "compile_s", "train_time_s", "wall_s")
# a member whose interleaved timing windows spread more than this (%) is flagged as noisy
NOISY_SPREAD_PCT = 20.0


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def same_config(member_dir: str, config) -> bool:
    """True when the run's config.json (what it last trained with) agrees with `config` on
    every key both have: a changed setting means retraining, a key added or removed by a newer
    version of the library does not."""
    old = _read_json(os.path.join(member_dir, "config.json"))
    if old is None:
        return False
    a, b = flat_dict(old), flat_dict(json.loads(config.to_json_best_effort()))
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def is_finished(member_dir: str, config=None) -> bool:
    """True when the run finished (status 'done', final_metrics.json at the status's step)
    and, when `config` is given, trained with the same settings (same_config)."""
    st = runner.read_status(member_dir)
    final = _read_json(os.path.join(member_dir, "final_metrics.json"))
    if not st or st.get("status") != "done" or not final:
        return False
    if config is not None and not same_config(member_dir, config):
        return False
    return int(final.get("step", -1)) == int(st.get("step", -2))


def member_row(workdir: str, member, timing: dict | None = None) -> dict:
    """The row of one member (labels + status + measurements; missing values are None).
    timing: the study's interleaved timing of this member (study.timing): its epoch time is
    the row's epoch_time_s; the run's own is run_epoch_time_s."""
    d = os.path.join(workdir, member.name)
    row = {c: None for c in COLUMNS}
    row.update(member.labels())
    st = runner.read_status(d)
    final = _read_json(os.path.join(d, "final_metrics.json")) if st else None
    row["status"] = st.get("status", "missing") if st else "missing"
    row["error"] = (st or {}).get("error") or ""
    row["wall_s"] = (st or {}).get("wall_s")
    if row["status"] == "done" and not is_finished(d):
        row.update(status="failed", error=row["error"] or "final_metrics.json does not match "
                                                          "the recorded final step")
    if row["status"] != "done" or not final:
        return row
    for k in ("step", "top1", "top5", "ema_top1", "ema_top5", "train_images_per_s",
              "input_wait_s", "compile_s", "train_time_s"):
        row[k] = final.get(k)
    row["run_epoch_time_s"] = final.get("epoch_time_s")
    if timing and timing.get("time_s"):
        row.update(step_time_s=timing["time_s"], timing_spread_pct=timing["spread_pct"],
                   epoch_time_s=timing["epoch_s"],
                   timing_noisy=bool(timing["spread_pct"] > NOISY_SPREAD_PCT))
    return row


def collect(workdir: str, members) -> list[dict]:
    from fastscale_jax.study import timing

    times = timing.read(workdir)
    return [member_row(workdir, m, times.get(m.name)) for m in members]


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_rows(workdir: str, rows: list[dict]) -> tuple[str, str]:
    """DIR/study.csv and DIR/study.json (same rows; JSON keeps None as null)."""
    csv_path, json_path = os.path.join(workdir, "study.csv"), os.path.join(workdir, "study.json")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in COLUMNS})
    with open(json_path, "w") as f:
        json.dump(rows, f, indent=1)
    return csv_path, json_path


def _mean_std(vals):
    vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def aggregate(rows: list[dict], metric: str = "top1") -> list[dict]:
    """One entry per (strategy, factor): mean/std over the finished seeds of the error (%) of
    `metric`, of the epoch time (the interleaved timing's) and of the runs' own images/s;
    n_done / n_runs; noisy: a member's timing spread over NOISY_SPREAD_PCT."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["target"] or r["factor"]), []).append(r)
    out = []
    for (strategy, _), rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        err = [100.0 * (1.0 - r[metric]) if r.get(metric) is not None else None for r in done]
        e_m, e_s, _ = _mean_std(err)
        t_m, t_s, _ = _mean_std([r["epoch_time_s"] for r in done])
        i_m, _, _ = _mean_std([r["train_images_per_s"] for r in done])
        r0 = rs[0]
        out.append(dict(strategy=strategy, factor=r0["factor"], target=r0["target"],
                        model=r0["model"], resolution=r0["resolution"], flops=r0["flops"],
                        params=r0["params"], acts=r0["acts"], n_done=len(done), n_runs=len(rs),
                        error_mean=e_m, error_std=e_s, epoch_time_mean=t_m, epoch_time_std=t_s,
                        images_per_s_mean=i_m, metric=metric,
                        noisy=any(r.get("timing_noisy") for r in done)))
    return out


def fit_epoch_time(aggs: list[dict]) -> dict | None:
    """Epoch time ~ a*flops + b*acts + c fitted on the study's own measured models
    (fastscale_jax.timing.fit); sets agg['epoch_time_fit'] (the fit's prediction) and
    agg['epoch_time_loo'] (predicted by a fit on the other models). None with < 4 models."""
    from fastscale_jax.timing.fit import fit_runtime

    pts = [a for a in aggs if a["epoch_time_mean"] is not None]
    if len(pts) < 4:
        return None
    fit = fit_runtime([a["flops"] for a in pts], [a["acts"] for a in pts],
                      [a["epoch_time_mean"] for a in pts])
    if fit["coef"] is None:
        return None
    for i, a in enumerate(pts):
        a["epoch_time_fit"] = fit["pred"][i]
        if fit["loo_rel_errs"]:
            e = fit["loo_rel_errs"][i]
            a["epoch_time_loo_rel_err"] = e
    return fit


def _pm(m, s, fmt):
    if m is None:
        return "-"
    return f"{m:{fmt}} ± {s:{fmt}}" if s else f"{m:{fmt}}"


def format_table(aggs: list[dict], fit: dict | None, rows: list[dict]) -> str:
    """The seed-aggregated table (mean ± std over finished seeds; std over >= 2 seeds), the
    epoch-time fit and one line per run that did not finish."""
    metric = aggs[0]["metric"] if aggs else "top1"
    head = ("strategy", "factor", "MF", "acts k", "params M", "res", "runs",
            f"{metric} err %", "epoch s", "fit epoch s", "run img/s")
    lines = []
    for a in aggs:
        fitcol = "-"
        if a.get("epoch_time_fit") is not None:
            fitcol = f"{a['epoch_time_fit']:.4g}"
            if a.get("epoch_time_loo_rel_err") is not None:
                fitcol += f" (LOO {a['epoch_time_loo_rel_err']:.0%})"
        noisy = "!" if a.get("noisy") else ""
        lines.append((a["strategy"], a["target"] or f"x{a['factor']:g}",
                      f"{a['flops'] / 1e6:.1f}", f"{a['acts'] / 1e3:.0f}",
                      f"{a['params'] / 1e6:.2f}", str(a["resolution"]),
                      f"{a['n_done']}/{a['n_runs']}", _pm(a["error_mean"], a["error_std"], ".2f"),
                      _pm(a["epoch_time_mean"], a["epoch_time_std"], ".4g") + noisy, fitcol,
                      "-" if a["images_per_s_mean"] is None else f"{a['images_per_s_mean']:.0f}"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = lambda r: "  ".join(str(x).rjust(w) for x, w in zip(r, widths))  # noqa: E731
    out = [fmt(head), "  ".join("-" * w for w in widths), *map(fmt, lines)]
    out.append("flops = multiply-adds per image at the model's train resolution; error = 100 - "
               f"{metric} (%); mean ± std over finished seeds; epoch s = train images / images "
               "per s of the members' train steps timed in one interleaved run (study_timing.json;"
               " '!' = its windows spread > "
               f"{NOISY_SPREAD_PCT:g}%); run img/s = the training runs' own throughput.")
    if fit is None:
        n = sum(a["epoch_time_mean"] is not None for a in aggs)
        out.append(f"epoch-time fit: not made (needs >= 4 measured models, have {n}).")
    else:
        terms = " + ".join(f"{v:.3g}*{k}" for k, v in fit["coef"].items() if k != "intercept")
        out.append(f"epoch-time fit on these models: epoch s ~ {terms} + "
                   f"{fit['coef']['intercept']:.3g}  R^2={fit['r2']:.3f}  leave-one-out rel "
                   f"err mean {fit['loo_rel_err_mean']:.0%} (n={fit['n']}; few points: a "
                   "description of these measurements, not a validated runtime model).")
    for r in rows:
        if r["status"] != "done":
            out.append(f"not finished: {r['run']}: {r['status']}"
                       + (f" -- {r['error']}" if r["error"] else ""))
    return "\n".join(out)
