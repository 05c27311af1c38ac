"""Replay a recorded budget sweep's measurements through the current search, with other
search settings, and count the models it would time (no model is compiled or run).

    python benchmarks/budget_replay.py benchmarks/budget_sweep_demo/select_*.json \
        --tolerance 0.05 0.10

A candidate the recorded run timed gets its recorded median; one it never timed gets a time
interpolated log-log in flops between the run's two measured neighbours of that strategy
(extrapolated from the nearest two at the ends): smoother than a real machine, so a replay
of settings that reach untimed candidates is a lower bound on their cost. With the recorded
run's own settings the replay times exactly the models the run timed. The sweep's config is
configs/budget_sweep.py's `demo` unless --config says otherwise; the file's request must
match it (base, strategies, budgets, batch).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import types
from typing import Callable

from fastscale_jax import configs, sweep
from fastscale_jax.timing import select
from fastscale_jax.timing.budget import budget_candidates, scale_to_time


def _timer(measured: dict, cands) -> Callable:
    """measure(spec): the recorded time of a timed candidate, else interpolated."""
    pts = sorted(measured.values())
    xs, ys = [math.log(f) for f, _ in pts], [math.log(t) for _, t in pts]
    flops = {c[1].name: c[2] for c in cands}

    def at(f):
        x = math.log(f)
        i = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
        if len(xs) < 2 or xs[i] == xs[i - 1]:
            return math.exp(ys[min(i, len(ys) - 1)])
        return math.exp(ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1]))

    def measure(spec):
        t = measured[spec.name][1] if spec.name in measured else at(flops[spec.name])
        return types.SimpleNamespace(time_s=t, spread_pct=0.0, compile_s=0.0, error=None)
    return measure


def replay(path: str, config, tolerance: float, max_measurements: int = 8) -> dict:
    """{'models': timed, 'within_10pct': targets within ±10%, 'targets': n} for the sweep of
    `path` searched again at `tolerance`."""
    with open(path) as f:
        rec = json.load(f)
    req = {k: v for k, v in select.sweep_request(config).items() if k != "tolerance"}
    got = {k: v for k, v in rec["request"].items() if k != "tolerance"}
    if json.loads(json.dumps(req)) != got:
        raise SystemExit(f"{path}: recorded with another sweep ({got}) than the config's ({req})")
    by_strategy: dict = {}
    for key, res in rec["results"].items():
        for m in res["measurements"]:
            by_strategy.setdefault(key.split("|")[0], {})[m["name"]] = (m["flops"], m["time_s"])
    base, cache, within, n = sweep.base_spec(config), {}, 0, 0
    for label, kind, alpha in sweep.strategies(config.family):
        cands = budget_candidates(base, kind, alpha=alpha)
        measure = _timer(by_strategy[label], cands)
        for t in sweep.as_list(config.family, "times"):
            r = scale_to_time(base, t, kind, alpha=alpha, batch_size=req["batch_size"],
                              measure=measure, cache=cache, tolerance=tolerance,
                              max_measurements=max_measurements)
            within += abs(r.ratio - 1) <= 0.10
            n += 1
    return {"models": len(cache), "within_10pct": within, "targets": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="select.json files of budget sweeps")
    p.add_argument("--config", default="budget_sweep:demo")
    p.add_argument("--tolerance", type=float, nargs="+", default=[0.05, 0.10])
    p.add_argument("--max-measurements", type=int, default=8)
    a = p.parse_args(argv)
    config = configs.load(a.config)
    print(f"{'file':48s} {'tolerance':>9s} {'models':>6s} {'within ±10%':>11s}")
    for path in a.files:
        for tol in a.tolerance:
            r = replay(path, config, tol, a.max_measurements)
            print(f"{path[-48:]:48s} {tol:9.2f} {r['models']:6d} "
                  f"{r['within_10pct']:>6d}/{r['targets']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
