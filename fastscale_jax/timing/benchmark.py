"""`--mode benchmark`: time a model or a family of models and write tables, plots and fits.

    python launch.py --config configs/alpha_sweep.py --mode benchmark --workdir runs/sweep \
        --config.timing.batch_size=2 --config.model.resolution=64 --config.timing.iters=3

Writes to workdir:
  benchmark.csv / benchmark.json   one row per model: labels, analytic flops (multiply-adds) /
                                   params / acts at the timed resolution, and per mode
                                   <mode>_time_ms (median per batch), _min_ms, _spread_pct,
                                   _images_per_s, _compile_s, _xla_flops (2 per multiply-add),
                                   _xla_flops_ratio (xla_flops / (2 * flops * batch)),
                                   _xla_bytes, _mem_*_bytes, _epoch_h, _error; `error` (any);
                                   device kind, backend and versions. The JSON also holds the
                                   full per-mode TimingResults and the environment.
  benchmark_<mode>.png             runtime vs flops / params / acts, Pearson r in the titles
  family_acts_vs_flops.png,        (families) one line per scaling kind, log-log
  family_runtime_vs_flops_<mode>.png
  fit.json                         per mode: time per image ~ a*flops + b*acts + c (and flops
                                   only, acts only): coefficients, R^2, leave-one-out error
  benchmark_rows.jsonl             one line per model, appended as soon as it is measured: a
                                   sweep stopped (Ctrl-C, kill -9) and rerun with the same
                                   settings times only the models not in it
A model that fails (bad resolution, OOM, XLA error) keeps its row, with the error, and the
sweep goes on; when every model fails, the files are still written and run_benchmark raises
AllModelsFailedError (one `error:` line, exit status 2). Identical specs are timed once; a
cell whose windows spread over timing.max_spread_pct (20%) is timed again up to
timing.remeasure (2) times and flagged (<mode>_noisy, '!' in the table) if it stays noisy;
the fit warns of negative coefficients and a low R^2.
"""

from __future__ import annotations

import csv
import json
import math
import os

from fastscale_jax.complexity import complexity
from fastscale_jax.errors import TrainingError
from fastscale_jax.timing.fit import fit_all, format_fit
from fastscale_jax.timing.measure import environment, time_model
from fastscale_jax.timing.programs import timing_settings
from fastscale_jax.workdir import append_record, json_safe, read_records

_ENV_KEYS = ("device_kind", "backend", "jax", "jaxlib", "flax")


class AllModelsFailedError(TrainingError):
    """No model of the benchmark could be timed."""


def _fmt_err(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def model_row(labels: dict, spec, results: dict | None, settings: dict,
              error: str | None = None) -> dict:
    """One flat benchmark row from a model's labels, spec and {mode: TimingResult}."""
    res = settings["resolution"] or spec.resolution
    row = {**labels, "name": spec.name, "resolution": res,
           "batch_size": settings["batch_size"], "dtype": settings["dtype"],
           "num_devices": settings["num_devices"]}
    try:
        cx = complexity(spec.replace(resolution=res) if res != spec.resolution else spec)
        row.update(flops=cx["flops"], params=cx["params"], acts=cx["acts"])
    except Exception as e:  # noqa: BLE001
        row.update(flops=None, params=None, acts=None)
        error = error or f"complexity: {_fmt_err(e)}"
    errors = [error] if error else []
    per_dev_batch = settings["batch_size"] // settings["num_devices"]
    for mode in settings["modes"]:
        r = (results or {}).get(mode)
        ms = (lambda v: v * 1e3 if r is not None and math.isfinite(v) else None)
        row[f"{mode}_time_ms"] = ms(r.time_s) if r else None
        row[f"{mode}_min_ms"] = ms(r.min_s) if r else None
        row[f"{mode}_spread_pct"] = r.spread_pct if r and r.ok else None
        row[f"{mode}_noisy"] = (bool(r.spread_pct > settings.get("max_spread_pct", 20.0))
                                if r and r.ok else None)
        row[f"{mode}_images_per_s"] = r.images_per_s if r and r.ok else None
        row[f"{mode}_images_per_s_per_device"] = r.images_per_s_per_device if r and r.ok else None
        row[f"{mode}_epoch_h"] = r.epoch_s / 3600 if r and r.ok else None
        row[f"{mode}_compile_s"] = r.compile_s if r and math.isfinite(r.compile_s) else None
        row[f"{mode}_xla_flops"] = r.xla_flops if r else None
        row[f"{mode}_xla_flops_ratio"] = (
            r.xla_flops / (2 * row["flops"] * per_dev_batch)
            if r and r.xla_flops and row.get("flops") else None)
        row[f"{mode}_xla_bytes"] = r.xla_bytes_accessed if r else None
        for k in ("argument", "output", "temp", "peak"):
            row[f"{mode}_mem_{k}_bytes"] = getattr(r, f"mem_{k}_bytes") if r else None
        row[f"{mode}_error"] = r.error if r else None
        if r and r.error:
            errors.append(r.error)
    row["error"] = "; ".join(errors) if errors else None
    return row


ROWS_FILE = "benchmark_rows.jsonl"   # one line per measured model, appended as it is measured


def _settings_key(settings: dict) -> str:
    """The timing settings a measurement depends on (a rerun reuses rows measured with them)."""
    keep = ("batch_size", "resolution", "dtype", "modes", "warmup", "iters", "windows",
            "num_devices", "conv_impl", "seed")
    return json.dumps({k: settings.get(k) for k in keep}, sort_keys=True, default=str)


def _model_key(spec, settings: dict) -> str:
    from fastscale_jax.scaling import structure_key

    return repr(structure_key(spec)) + "|" + _settings_key(settings)


def _load_done(path: str, log=print) -> dict:
    """{model key: {'row', 'results'}} of a previous (possibly interrupted) run."""
    return {rec["key"]: rec for rec in read_records(path, log) if "key" in rec}


def _time_with_retries(spec, config, settings, on_stage) -> tuple[dict, int]:
    """time_model, with a mode whose windows spread more than timing.max_spread_pct timed
    again (up to timing.remeasure times; the least spread measurement kept). ({mode:
    TimingResult}, retries made)."""
    results = time_model(spec, config, on_stage=on_stage, **settings)
    tries = 0
    while tries < int(settings["remeasure"]):
        noisy = [m for m, r in results.items() if r.ok and r.spread_pct > settings["max_spread_pct"]]
        if not noisy:
            break
        tries += 1
        on_stage(f"re-measuring {', '.join(noisy)} (spread over {settings['max_spread_pct']:g}%)")
        again = time_model(spec, config, on_stage=on_stage, **{**settings, "modes": tuple(noisy)})
        for m in noisy:
            if again[m].ok and again[m].spread_pct < results[m].spread_pct:
                results[m] = again[m]
    return results, tries


def benchmark_family(family: list[tuple[dict, object]], settings: dict, config=None,
                     progress: bool = True, workdir: str | None = None,
                     log=print) -> tuple[list[dict], list[dict]]:
    """Time every (labels, spec) of `family` with time_model(spec, config, **settings);
    (rows, results as dicts). Failures of one model (any Exception) are recorded in its row
    and the sweep continues. Identical specs are timed once; a noisy cell is re-measured
    (timing.max_spread_pct, timing.remeasure) and flagged (<mode>_noisy) if it stays noisy.
    With a workdir every model's row is appended to WORKDIR/benchmark_rows.jsonl as soon as it
    is measured, and models measured there before with the same settings are not timed again
    (a stopped sweep resumes where it was)."""
    from tqdm.auto import tqdm

    settings = timing_settings(config, **settings)  # complete and validated, for the rows
    path = os.path.join(workdir, ROWS_FILE) if workdir else None
    done = _load_done(path, log) if path else {}
    reused = sum(_model_key(spec, settings) in done for _, spec in family)
    if reused:
        log(f"benchmark: {reused} of {len(family)} model(s) already measured in {path}; "
            "timing the rest")
    rows, full, seen = [], [], {}
    bar = tqdm(family, desc="benchmark", unit="model", disable=not progress, dynamic_ncols=True)
    for labels, spec in bar:
        def on_stage(text, name=spec.name):
            bar.set_description(f"{name}: {text}")

        key = _model_key(spec, settings)
        if key in done or key in seen:  # measured before (this run or an earlier one)
            rec = done.get(key) or seen[key]
            row = {**rec["row"], **{k: v for k, v in labels.items()}, "name": spec.name}
            rows.append(row)
            full += [{**labels, **r} for r in rec["results"]]
            continue
        results, error, tries = None, None, 0
        try:
            results, tries = _time_with_retries(spec, config, settings, on_stage)
        except Exception as e:  # noqa: BLE001 - recorded in the row, the sweep goes on
            error = _fmt_err(e)
        row = model_row(labels, spec, results, settings, error)
        row["remeasured"] = tries
        res_dicts = [r.to_dict() for r in (results or {}).values()]
        rows.append(row)
        full += [{**labels, **r} for r in res_dicts]
        seen[key] = {"key": key, "row": row, "results": res_dicts}
        if path:
            append_record(path, seen[key])
            _write_csv(rows, os.path.join(workdir, "benchmark.csv"))  # what is measured so far
    bar.set_description("benchmark done")
    bar.close()
    return rows, full


def _write_csv(rows: list[dict], path: str):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})


def fits_by_mode(rows: list[dict], modes) -> dict:
    """{mode: fit_all(...)} on time per image (s) vs per-image flops and acts (rows that ran)."""
    out = {}
    for mode in modes:
        good = [r for r in rows if r.get(f"{mode}_time_ms") and r.get("flops")]
        t = [r[f"{mode}_time_ms"] / 1e3 / r["batch_size"] for r in good]
        out[mode] = fit_all([r["flops"] for r in good], [r["acts"] for r in good], t)
    return out


def fit_warnings_of(fits: dict, min_r2: float = 0.9) -> list[str]:
    """What makes a runtime fit untrustworthy: a negative coefficient (more flops or acts
    predicted to be faster) or a low R^2."""
    out = []
    for name, f in fits.items():
        if not f.get("coef"):
            continue
        neg = [k for k, v in f["coef"].items() if k != "intercept" and v < 0]
        if neg:
            out.append(f"fit '{name}' has a negative {' and '.join(neg)} coefficient: more "
                       f"{' / '.join(neg)} predicted to run faster (noise, or too few / too "
                       "alike models): do not extrapolate with it")
        if f["r2"] == f["r2"] and f["r2"] < min_r2:
            out.append(f"fit '{name}' explains little: R^2 = {f['r2']:.3f} < {min_r2}")
    return out


def summary_table(rows: list[dict], modes) -> str:
    from fastscale_jax.report import format_table, human

    header = ["model", "kind", "factor", "res", "flops", "acts"]
    for m in modes:
        header += [f"{m} ms", f"{m} img/s", f"{m} compile s"]
    header.append("error")
    body = []
    for r in rows:
        line = [r.get("name", r.get("model")), r.get("kind", ""),
                f"{r['factor']:g}" if isinstance(r.get("factor"), (int, float)) else "",
                r.get("resolution"), human(r["flops"]) if r.get("flops") else "-",
                human(r["acts"]) if r.get("acts") else "-"]
        for m in modes:
            t, ips, c = (r.get(f"{m}_time_ms"), r.get(f"{m}_images_per_s"),
                         r.get(f"{m}_compile_s"))
            flag = "!" if r.get(f"{m}_noisy") else ""
            line += [f"{t:.1f}{flag}" if t else "-", f"{ips:.1f}" if ips else "-",
                     f"{c:.1f}" if c else "-"]
        err = r.get("error") or ""
        line.append(err[:60] + ("..." if len(err) > 60 else ""))
        body.append(line)
    return format_table(header, body)


def run_benchmark(config, workdir: str, progress: bool = True) -> dict:
    """Benchmark config's model or family (fastscale_jax.sweep); write results to workdir.

    Returns {'rows', 'fits', 'files', 'env'}. Global settings (dtype, modes, batch size vs
    device count) are checked first and raise ValueError; per-model failures go in the rows.
    """
    from fastscale_jax import sweep
    from fastscale_jax.timing.plots import family_plots, runtime_vs_complexity

    import jax

    settings = timing_settings(config)
    dtype, modes = settings["dtype"], settings["modes"]
    family = sweep.resolve_family(config)
    env = environment(jax.local_devices()[:settings["num_devices"]])
    print(f"benchmark: {len(family)} model(s) on {env['num_devices']} x {env['device_kind']} "
          f"({env['backend']}), batch {settings['batch_size']}, {dtype}, modes {modes}, "
          f"{settings['windows']} windows x {settings['iters']} iters after "
          f"{settings['warmup']} warm-up; jax {env['jax']}, flax {env['flax']}")
    os.makedirs(workdir, exist_ok=True)
    rows, full = benchmark_family(family, settings, config, progress=progress, workdir=workdir)
    for r in rows:
        r.update({k: env.get(k) for k in _ENV_KEYS})

    files = {"csv": os.path.join(workdir, "benchmark.csv"),
             "json": os.path.join(workdir, "benchmark.json"),
             "fit": os.path.join(workdir, "fit.json")}
    _write_csv(rows, files["csv"])
    with open(files["json"], "w") as f:
        json.dump(json_safe({"env": env, "settings": settings, "rows": rows,
                              "results": full}), f, indent=1)
    fits = fits_by_mode(rows, modes)
    fit_warnings = {m: fit_warnings_of(fits[m]) for m in modes}
    with open(files["fit"], "w") as f:
        json.dump(json_safe({"unit": "seconds per image; flops = multiply-adds per image, "
                                      "acts per image", "env": env, "fits": fits,
                              "warnings": fit_warnings}), f, indent=1)
    plots = []
    for mode in modes:
        try:
            plots.append(runtime_vs_complexity(
                rows, mode, os.path.join(workdir, f"benchmark_{mode}.png"), env))
            if len(family) > 1:
                plots += family_plots(rows, mode, workdir)
        except Exception as e:  # noqa: BLE001 - a plotting problem must not lose the results
            print(f"warning: plotting {mode} failed: {_fmt_err(e)}")
    files["plots"] = sorted(set(plots))

    print(summary_table(rows, modes))
    if len(rows) < 3:
        print(f"runtime model fit (time ~ a*flops + b*acts + c) needs >= 3 models; "
              f"this run has {len(rows)}")
    else:
        for mode in modes:
            print(f"runtime model ({mode}), time per image:")
            print(format_fit(fits[mode]))
            for w in fit_warnings[mode]:
                print(f"  warning: {w}")
    noisy = [(r.get("name"), m, r[f"{m}_spread_pct"]) for r in rows for m in modes
             if r.get(f"{m}_noisy")]
    if noisy:
        print(f"{len(noisy)} noisy cell(s), spread over {settings['max_spread_pct']:g}% after "
              f"{settings['remeasure']} re-measurement(s) (a busy machine? see the "
              "_noisy columns): " + "; ".join(f"{n} {m} {s:.0f}%" for n, m, s in noisy))
    failed = [r for r in rows if r.get("error")]
    if failed:
        print(f"{len(failed)} of {len(rows)} model(s) failed; see the error column")
    print(f"wrote {files['csv']}, {files['json']}, {files['fit']} and "
          f"{len(files['plots'])} plot(s) to {workdir}")
    if rows and len(failed) == len(rows):
        raise AllModelsFailedError(
            f"every model failed ({len(rows)} of {len(rows)}); the first: "
            f"{failed[0]['name']}: {failed[0]['error'][:300]} (all errors: {files['csv']})")
    return {"rows": rows, "fits": fits, "files": files, "env": env}
