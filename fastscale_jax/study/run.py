"""run_study: expand the grid, run what is not finished, collect, tabulate and plot.

    from fastscale_jax.study import run_study
    out = run_study(config, "runs/study")    # what `launch.py --mode study` calls

This process never starts JAX: each run trains in its own process (or submitit job), so a
crash, an out-of-memory kill or a hung accelerator stays inside one run.
"""

from __future__ import annotations

import os
import time

from fastscale_jax.errors import ConfigError, TrainingError
from fastscale_jax.study import collect, executors, grid, plots, runner

METRICS = ("top1", "ema_top1")


class StudyFailedError(TrainingError):
    """Every run of the study failed."""


def _progress(total, counter, log):
    def on_done(member_dir):
        counter[0] += 1
        st = runner.read_status(member_dir) or {}
        final = collect._read_json(os.path.join(member_dir, "final_metrics.json")) or {}
        what = st.get("status", "no status")
        if what == "done" and final.get("top1") is not None:
            what += f", top-1 {100 * final['top1']:.2f}%"
        if st.get("error"):
            what += f": {st['error']}"
        log(f"[{counter[0]}/{total}] {os.path.basename(member_dir)}: {what} "
            f"({st.get('wall_s', '?')} s)")
    return on_done


def _validate(config) -> str:
    metric = str(config.study.get("metric") or "top1")
    if metric not in METRICS:
        raise ConfigError(f"study.metric={metric!r}: valid {', '.join(METRICS)}")
    if metric == "ema_top1" and not float(config.train.get("ema_decay") or 0) > 0:
        raise ConfigError("study.metric='ema_top1' needs train.ema_decay > 0")
    return metric


def _case_insensitive(workdir: str) -> bool:
    """True when the filesystem that holds workdir folds case (macOS / Windows defaults)."""
    path = os.path.abspath(workdir)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    probe = os.path.join(path, f".fastscale_case_probe_{os.getpid()}")
    try:
        open(probe, "w").close()
        return os.path.exists(os.path.join(path, os.path.basename(probe).upper()))
    except OSError:
        return False
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def _check_names(members, workdir: str) -> None:
    folded = {}
    for m in members:
        folded.setdefault(m.name.casefold(), []).append(m.name)
    clash = next((v for v in folded.values() if len(v) > 1), None)
    if clash and _case_insensitive(workdir):
        raise ConfigError(f"family.kinds: runs {clash[0]!r} and {clash[1]!r} would share one folder "
                         f"on this case-insensitive filesystem ({workdir}); use a --workdir on "
                         "a case-sensitive filesystem, or strategies whose names differ in more "
                         "than case (dWr is family.alphas=(0.8,))")


def time_selection(config, workdir: str, log=print) -> dict | None:
    """A grid of time budgets (family.times): the models that meet them on this machine, as
    WORKDIR/select.json recorded them, measured first (in a process of its own: this one never
    starts JAX) when it holds no selection of this grid. None for other grids."""
    if not config.family.get("times"):
        return None
    import pickle
    import subprocess
    import sys

    from fastscale_jax.timing import select

    select.sweep_request(config)  # a bad grid fails here, before anything runs
    found = select.recorded_sweep(workdir, config)
    if found is not None:
        log(f"study: the models for the time budgets, as recorded in {workdir}/select.json")
        return found
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, select.REQUEST_FILE), "wb") as f:
        pickle.dump(config, f)
    log("study: choosing the models for the time budgets on this machine (--mode select)...")
    p = subprocess.run([sys.executable, "-m", "fastscale_jax.timing.select", workdir])
    found = select.recorded_sweep(workdir, config)
    if p.returncode != 0 or found is None:
        raise ConfigError(f"selecting the models for family.times failed (exit {p.returncode}; "
                          f"its output is above); rerun after fixing it, or run --mode select "
                          f"--workdir {workdir} to see the search")
    return found


def prepare(config, workdir: str, resolved: dict | None = None) -> tuple[list, list[tuple]]:
    """(members of the grid, [(sub-workdir, training config, spec)] of those not finished with
    this config). Validates the whole grid first; writes nothing (a time-budget grid's
    selection comes in `resolved`: time_selection)."""
    members = grid.expand(config, resolved=resolved)
    _check_names(members, workdir)
    configs = [grid.member_config(config, m) for m in members]
    todo = []
    for m, mc in zip(members, configs):
        d = os.path.join(workdir, m.name)
        if not collect.is_finished(d, mc):
            todo.append((d, mc, m.spec))
    return members, todo


def run_study(config, workdir: str, *, log=print) -> dict:
    """Run (or, with study.collect_only, only collect) the study of `config` in workdir.

    Returns {'rows', 'aggregates', 'fit', 'table', 'plots'}. Raises ValueError on a bad grid
    (before any run starts) and StudyFailedError when every run failed.
    """
    metric = _validate(config)
    collect_only = bool(config.study.get("collect_only"))
    members, todo = prepare(config, workdir, time_selection(config, workdir, log))
    executor = None if collect_only else executors.make_executor(config.study, workdir, log)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "study_config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2) + "\n")
    if collect_only:  # whatever config trained them: collect what is there
        n_done = sum(collect.is_finished(os.path.join(workdir, m.name)) for m in members)
        log(f"study (collect only): {len(members)} runs, {n_done} finished, in {workdir}")
    else:
        log(f"study: {len(members)} runs ({len(members) - len(todo)} finished, {len(todo)} "
            f"to run) in {workdir}")
    t0 = time.time()
    if todo and not collect_only:
        for d, mc, spec in todo:
            runner.write_run(d, mc, spec)
        executor.run([d for d, _, _ in todo], on_done=_progress(len(todo), [0], log))
        log(f"study: ran {len(todo)} run(s) in {time.time() - t0:.0f} s")
    if not collect_only:
        fair_timing(config, workdir, members, log)
    return summarize(config, workdir, members, metric, log=log,
                     require_success=not collect_only)


def fair_timing(config, workdir: str, members, log=print) -> None:
    """Time the finished members' train steps in one interleaved run (study.timing, in a
    process of its own) unless study_timing.json already covers every one of them, or
    study.timed is False."""
    import subprocess
    import sys

    from fastscale_jax.study import timing

    if not config.study.get("timed", True):
        return
    done = [m.name for m in members if collect.is_finished(os.path.join(workdir, m.name))]
    have = timing.read(workdir)
    if not done or all(have.get(r, {}).get("time_s") for r in done):
        return
    p = subprocess.run([sys.executable, "-m", "fastscale_jax.study.timing", workdir, *done])
    if p.returncode != 0:
        log(f"warning: the interleaved timing of the members failed (exit {p.returncode}; see "
            "above): epoch times are missing from the table")


def summarize(config, workdir, members, metric="top1", *, log=print,
              require_success=False) -> dict:
    """Collect the rows, write study.csv / study.json / study_table.txt and the four PNGs."""
    rows = collect.collect(workdir, members)
    paths = collect.write_rows(workdir, rows)
    aggs = collect.aggregate(rows, metric)
    fit = collect.fit_epoch_time(aggs)
    table = collect.format_table(aggs, fit, rows)
    with open(os.path.join(workdir, "study_table.txt"), "w") as f:
        f.write(table + "\n")
    log(table)
    base = members[0].base if members else ""
    bk = config.family.get("base_kind")
    title = base + (f" x{config.family.base_factor:g} {bk}" if bk else "")
    done = [r for r in rows if r["status"] == "done"]
    pngs = (plots.plot_study(workdir, aggs, rows, title=f"{title} ({config.data.name})")
            if done else [])  # no finished run: nothing to plot
    log("wrote " + ", ".join(os.path.basename(p) for p in (*paths, "study_table.txt", *pngs)))
    if require_success and rows and not done:
        raise StudyFailedError(f"all {len(rows)} runs of the study failed:\n" + "\n".join(
            f"  {r['run']}: {r['error'] or r['status']}" for r in rows))
    return {"rows": rows, "aggregates": aggs, "fit": fit, "table": table, "plots": pngs}
