"""`--mode select`: choose models by their measured runtime on this machine.

    fastscale --config regnetz_dWr --config.scaling.time=40ms --mode select --workdir DIR
    fastscale --config budget_sweep --mode select --workdir DIR       # strategies x budgets

One model (config.scaling.time, with scaling.kind / scaling.alpha): the base (model.name with
the model.* fields) scaled by the strategy to the budget with `timing.budget.scale_to_time`,
timing the config's own train / eval step at timing.batch_size (timing.modes[0] is the step
timed: 'train_step' by default in budget configs). Writes DIR/select.json: the chosen spec,
factor, measured times, every measurement and the machine it was measured on.

A sweep (config.family.times with family.kinds / family.alphas): every strategy scaled to every
budget (a spec met by one budget's search is reused by the next, never timed twice); writes
select.csv / select.json (one row per strategy and budget: flops, params, acts reached, the
measured time and its ratio to the budget) and flops_vs_budget.png (more flops at equal time
= more model for the money).

Training from a time budget is reproducible: a training run with scaling.time reads the model
from its workdir's select.json (resolving it there first when there is none), so resuming or
rerunning it on another machine trains the same model; it says so when the machine differs.
"""

from __future__ import annotations

import csv
import json
import os

from fastscale_jax import config as config_lib
from fastscale_jax.errors import ConfigError, WorkdirError
from fastscale_jax.timing.budget import MODES, scale_to_time
from fastscale_jax.workdir import append_record, json_safe, read_records

SELECT_FILE = "select.json"


def _strategy(config) -> tuple[str | None, float | None, str]:
    kind, alpha = config.scaling.get("kind"), config.scaling.get("alpha")
    if alpha is not None:
        kind = None
    if kind is None and alpha is None:
        raise ConfigError("scaling.time needs scaling.kind (e.g. 'dWr') or scaling.alpha")
    return kind, alpha, kind if kind is not None else f"alpha={alpha:g}"


def _timed_mode(config) -> str:
    mode = config.scaling.get("time_mode") or "train_step"
    if mode not in MODES:
        raise ConfigError(f"scaling.time_mode={mode!r}: valid {', '.join(MODES)}")
    return mode


def base_spec(config):
    """The model a time budget scales: model.name with the model.* fields applied (they
    describe the base, as in a sweep)."""
    from fastscale_jax.zoo import get_model_spec

    return config_lib.apply_overrides(get_model_spec(config.model.name),
                                      config_lib.spec_overrides(config))


def _progress(label):
    def show(m, n):
        more = f", +{m.settled} round(s) of windows" if m.settled else ""
        t = (f"{m.time_s * 1e3:.4g} ms (spread {m.spread_pct:.0f}%{more})" if m.ok
             else f"failed: {m.error}")
        print(f"  {label} [{n}] {m.name}: {m.flops / 1e6:.4g} MF, {t}", flush=True)
    return show


def _environment() -> dict:
    import jax

    from fastscale_jax.timing.measure import environment

    return environment(jax.local_devices()[:1])


def request(config) -> dict:
    """What a single-model selection is (compared with a recorded one before reusing it)."""
    kind, alpha, label = _strategy(config)
    return {"base": config.model.name, "overrides": config_lib.spec_overrides(config),
            "strategy": label, "budget": str(config.scaling.time),
            "batch_size": int(config.timing.batch_size), "timing_mode": _timed_mode(config)}


def select_model(config, workdir: str | None = None, *, log=print):
    """Resolve config.scaling.time on this machine; write WORKDIR/select.json; the result."""
    kind, alpha, label = _strategy(config)
    req = request(config)
    log(f"select: {req['base']} scaled by {label} to {req['budget']} per {req['timing_mode']} "
        f"at batch {req['batch_size']} on this machine")
    res = scale_to_time(base_spec(config), config.scaling.time, kind, alpha=alpha,
                        batch_size=req["batch_size"], mode=req["timing_mode"], config=config,
                        tolerance=_tolerance(config),
                        on_measure=_progress(label))
    res.env = _environment()
    log(f"chose {res.spec.name}: {res.flops / 1e6:.4g} MF, {res.params / 1e6:.3g}M params, "
        f"measured {res.time_s * 1e3:.4g} ms = {res.ratio:.3f} x the budget ({res.status}; "
        f"{len(res.measurements)} models timed). {res.note}")
    if res.above is not None:
        log(f"the next model above it: {res.above.name}, "
            + (f"{res.above.time_s * 1e3:.4g} ms" if res.above.ok else f"failed: {res.above.error}"))
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, SELECT_FILE)
        with open(path, "w") as f:
            json.dump(json_safe({"request": req, "result": res.to_dict()}), f, indent=1)
        log(f"wrote {path}")
    return res


def recorded_spec(config, workdir: str, *, resolve: bool = True, log=print):
    """The spec a run with scaling.time trains or evaluates: the one WORKDIR/select.json
    recorded (the same model on every machine), else (resolve) resolved here now and recorded."""
    from fastscale_jax.families import spec_from_dict

    path = os.path.join(workdir, SELECT_FILE)
    if not os.path.exists(path):
        if not resolve:
            raise ConfigError(f"{workdir} has no {SELECT_FILE}: the model of scaling.time="
                              f"{config.scaling.time!r} was never resolved there (train or run "
                              "--mode select in it first)")
        return select_model(config, workdir, log=log).spec
    try:
        with open(path) as f:
            rec = json.load(f)
        spec = spec_from_dict(rec["result"]["spec"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} cannot be read ({e}); delete it to resolve the time budget "
                          "again on this machine") from None
    if rec.get("request") != _as_recorded(request(config)):
        raise ConfigError(f"{path} resolved another request ({rec.get('request')}) than this "
                          f"config's ({request(config)}); use a new --workdir, or delete it to "
                          "resolve the budget again")
    env, here = rec["result"].get("env") or {}, _environment()
    where = f"{env.get('device_kind')} on {env.get('host')}"
    if (env.get("device_kind"), env.get("host")) != (here.get("device_kind"), here.get("host")):
        log(f"note: the model for {rec['request']['budget']} was resolved on {where}, not on this "
            f"machine ({here.get('device_kind')} on {here.get('host')}); training that model, "
            "as recorded in select.json (delete it to resolve the budget here)")
    else:
        log(f"model for the time budget {rec['request']['budget']}: {spec.name}, as recorded "
            f"in {path}")
        if env.get("host_malloc") and env["host_malloc"] != here["host_malloc"]:
            log(f"note: that model was timed with {env['host_malloc']!r}, this run has "
                f"{here['host_malloc']!r}: its steps will not take the measured time (set "
                "host_malloc as the selection had it)")
    return spec


def _as_recorded(o):
    """`o` as it reads back from a JSON file (tuples become lists): what recorded requests are
    compared with."""
    return json.loads(json.dumps(json_safe(o)))


# ------------------------------------------------------------------------------------------
# budget sweeps (family.times)

ROW_KEYS = ("strategy", "budget", "budget_ms", "model", "factor", "resolution", "flops",
            "params", "acts", "time_ms", "spread_pct", "ratio", "status", "measured", "note")


def sweep_request(config) -> dict:
    """What a budget sweep is (a recorded one is reused only when it is the same request)."""
    from fastscale_jax import sweep

    fam = config.family
    times = sweep.as_list(fam, "times")
    if not times:
        raise ConfigError("family.times is empty: set budgets such as ('20ms', '40ms')")
    return {"base": sweep.base_spec(config).name, "overrides": config_lib.spec_overrides(config),
            "strategies": [s[0] for s in sweep.strategies(fam)], "budgets": [str(t) for t in times],
            "batch_size": int(config.timing.batch_size), "timing_mode": _timed_mode(config),
            "tolerance": _tolerance(config)}


def _tolerance(config) -> float:
    """scaling.time_tolerance: the relative distance to the budget that counts as a hit
    (None: 0.05); ConfigError unless a number in (0, 1)."""
    tol = config.scaling.get("time_tolerance")
    if tol is None:
        return 0.05
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ConfigError(f"scaling.time_tolerance={tol!r} must be a number in (0, 1), the "
                          "relative distance to the budget that counts as a hit (0.05 = 5%)")
    return float(tol)


SWEEP_ROWS_FILE = "select_rows.jsonl"  # one line per strategy and budget, appended when found


def _done_targets(workdir: str, req: dict, log) -> dict:
    """{'strategy|budget': (row, result)} already in WORKDIR/select_rows.jsonl for this same
    request (a stopped or crashed sweep resumes with the rest); a torn last line is dropped."""
    path = os.path.join(workdir, SWEEP_ROWS_FILE)
    records, done = read_records(path, log), {}
    if records and "request" not in records[0]:
        raise WorkdirError(f"{path} does not start with its sweep's request; delete it to "
                           "start the sweep afresh")
    if records and records[0]["request"] != _as_recorded(req):
        raise WorkdirError(
            f"{path} holds a budget sweep with other settings ({records[0]['request']}); "
            "use another --workdir, or delete that file to start this one afresh")
    for entry in records[1:]:
        if "row" in entry and "result" in entry:
            done[f"{entry['row']['strategy']}|{entry['row']['budget']}"] = (entry["row"],
                                                                           entry["result"])
    if done:
        log(f"select: {len(done)} target(s) already found in {path}: resuming with the rest")
    return done


def _append(workdir: str, entry: dict) -> None:
    append_record(os.path.join(workdir, SWEEP_ROWS_FILE), entry)


def select_sweep(config, workdir: str, *, log=print) -> dict:
    """Every strategy of config.family scaled to every budget of family.times (see module).
    Each strategy and budget's row is appended to WORKDIR/select_rows.jsonl when found, and a
    rerun of the same sweep skips those (a stopped or crashed sweep loses nothing)."""
    import jax

    from fastscale_jax import sweep

    req = sweep_request(config)
    times, strats = req["budgets"], sweep.strategies(config.family)
    base = sweep.base_spec(config)
    mode, batch = req["timing_mode"], req["batch_size"]
    tol = req["tolerance"]
    done = _done_targets(workdir, req, log)
    if not os.path.exists(os.path.join(workdir, SWEEP_ROWS_FILE)):
        _append(workdir, {"request": req})
    log(f"select: {base.name} scaled by {len(strats)} strategies to {len(times)} budgets per "
        f"{mode} at batch {batch} on this machine")
    rows, results = [], {}
    # one cache for the sweep: the base (and any spec two strategies share) is timed once, and
    # each search starts from what the others measured -- a resumed sweep's included
    cache = _cache_of(done, base, strats)
    for label, kind, alpha in strats:
        for t in times:
            if f"{label}|{t}" in done:
                row, result = done[f"{label}|{t}"]
            else:
                row, result = _sweep_target(base, t, label, kind, alpha, config, req, cache, tol,
                                            log)
                _append(workdir, {"row": row, "result": result})
                jax.clear_caches()  # the timed programs are done with: one process compiles
                #                     dozens of models, and XLA's caches would keep them all
            rows.append(row)
            if result is not None:
                results[f"{label}|{t}"] = result
    env = _environment()
    files = _write_sweep(workdir, rows, {"env": env, "request": req, "rows": rows,
                                         "results": results})
    log(sweep_table(rows))
    log(f"wrote {', '.join(files)}")
    return {"rows": rows, "results": results, "files": files, "env": env}


def _cache_of(done: dict, base, strats) -> dict:
    """The measurement cache ({structure_key(spec): Measurement}) of the targets a resumed
    sweep found done, so that it searches on as an uninterrupted one would."""
    from fastscale_jax.scaling import structure_key
    from fastscale_jax.timing.budget import Measurement, budget_candidates

    cache = {}
    for label, kind, alpha in strats:
        found = [r for key, (_, r) in done.items() if key.split("|")[0] == label and r]
        if not found:
            continue
        specs = {f: c for f, c, *_ in budget_candidates(base, kind, alpha=alpha)}
        for result in found:
            for m in result["measurements"]:
                if m["factor"] in specs:
                    cache[structure_key(specs[m["factor"]])] = Measurement(**m)
    return cache


def _sweep_target(base, t, label, kind, alpha, config, req, cache, tol, log):
    """(row, result dict or None) of one strategy scaled to one budget (req: sweep_request)."""
    before = len(cache)
    try:
        res = scale_to_time(base, t, kind, alpha=alpha, batch_size=req["batch_size"],
                            mode=req["timing_mode"], config=config, tolerance=tol, cache=cache,
                            on_measure=_progress(f"{label} {t}"))
    except ConfigError as e:  # one unreachable budget: its row says why
        log(f"  {label} {t}: {e}")
        return dict.fromkeys(ROW_KEYS) | {"strategy": label, "budget": t,
                                          "status": "unreachable", "note": str(e)}, None
    row = {"strategy": label, "budget": t, "budget_ms": res.budget_s * 1e3,
           "model": res.spec.name, "factor": res.factor, "resolution": res.spec.resolution,
           "flops": res.flops, "params": res.params, "acts": res.acts,
           "time_ms": res.time_s * 1e3, "spread_pct": res.spread_pct, "ratio": res.ratio,
           "status": res.status, "measured": len(cache) - before, "note": res.note}
    return row, res.to_dict()


def _write_sweep(workdir, rows, payload) -> list[str]:
    os.makedirs(workdir, exist_ok=True)
    paths = [os.path.join(workdir, n) for n in ("select.csv", SELECT_FILE, "flops_vs_budget.png")]
    with open(paths[0], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROW_KEYS))
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in ROW_KEYS})
    with open(paths[1], "w") as f:
        json.dump(json_safe(payload), f, indent=1)
    from fastscale_jax.timing.plots import flops_vs_budget

    flops_vs_budget(rows, paths[2], payload["env"], payload["request"])
    return paths


def sweep_table(rows) -> str:
    from fastscale_jax.report import format_table, human

    body = [[r["strategy"], r["budget"], r.get("model") or "-",
             human(r["flops"]) if r.get("flops") else "-",
             human(r["params"]) if r.get("params") else "-",
             human(r["acts"]) if r.get("acts") else "-",
             f"{r['time_ms']:.4g}" if r.get("time_ms") else "-",
             f"{r['ratio']:.3f}" if r.get("ratio") else "-", r["status"],
             r.get("measured") if r.get("measured") is not None else "-"] for r in rows]
    return format_table(["strategy", "budget", "model", "flops", "params", "acts", "time ms",
                         "time/budget", "status", "new timings"], body,
                        "Models chosen by measured time (flops = multiply-adds per image)")


def run_select(config, workdir: str):
    """--mode select: a budget sweep when family.times is set, else one model."""
    if config.family.get("times"):
        return select_sweep(config, workdir)
    if not config.scaling.get("time"):
        raise ConfigError("--mode select needs a time budget: --config.scaling.time=40ms (with "
                          "scaling.kind or scaling.alpha), or family.times for a sweep "
                          "(configs/budget_sweep.py)")
    return select_model(config, workdir)


REQUEST_FILE = "select_request.pkl"


def recorded_sweep(workdir: str, config) -> dict | None:
    """The {'strategy|budget': result} of WORKDIR/select.json when it holds this config's
    budget sweep, else None."""
    path = os.path.join(workdir, SELECT_FILE)
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if rec.get("request") != json_safe(sweep_request(config)):
        return None
    return rec.get("results") or {}


def main(argv=None) -> int:
    """`python -m fastscale_jax.timing.select DIR`: the budget sweep of DIR/select_request.pkl
    (what a study with family.times runs in a process of its own)."""
    import pickle
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m fastscale_jax.timing.select DIR", file=sys.stderr)
        return 2
    with open(os.path.join(argv[0], REQUEST_FILE), "rb") as f:
        config = pickle.load(f)
    select_sweep(config, argv[0])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
