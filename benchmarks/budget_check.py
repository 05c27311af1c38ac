"""Does scale_to_time hit its budgets? Search, then re-measure in a fresh process.

    python benchmarks/budget_check.py                       # RegNetZ-500MF at 64 px, CPU
    python benchmarks/budget_check.py --budgets 0.5s 1s 2s --kinds dWr dwr --batch 32

Phase 1 (this process): for every strategy and budget, `fastscale_jax.scale_to_time` on the
train step (batch --batch) records the chosen model, the neighbour above it and how many
models the search timed (= compiles). Phase 2 (one fresh process per target): the chosen
model and its neighbour above, timed in one interleaved run (timing.time_interleaved), so
that the check does not reuse the search's own numbers. A target passes when the re-measured time of the
chosen model is within +-10% of the budget, or when the chosen model (re-measured) is under
it and its neighbour above is over it (the bracket straddles the budget: no model of the
strategy lies closer). Prints one table; writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="RegNetZ-500MF")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--kinds", nargs="+", default=["dWr", "dwr"])
    p.add_argument("--budgets", nargs="+", default=["400ms", "800ms", "1600ms"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "budget_check.json"))
    p.add_argument("--remeasure", metavar="JSON", help=argparse.SUPPRESS)  # phase 2 (internal)
    p.add_argument("--target", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _settings(args):
    return dict(warmup=1, iters=args.iters, windows=args.windows)


def search(args) -> dict:
    import fastscale_jax as fs

    base = fs.get_model_spec(args.model, resolution=args.resolution,
                             test_resolution=args.resolution)
    targets, cache = [], {}
    for kind in args.kinds:
        for budget in args.budgets:
            before = len(cache)
            t0 = time.time()
            res = fs.scale_to_time(base, budget, kind, batch_size=args.batch,
                                   tolerance=args.tolerance, cache=cache, **_settings(args))
            targets.append({
                "kind": kind, "budget": budget, "budget_s": res.budget_s,
                "chosen": res.spec.to_dict(), "name": res.spec.name, "flops": res.flops,
                "search_time_s": res.time_s, "status": res.status, "note": res.note,
                "above": None if res.above is None else res.above.name,
                "above_spec": _above_spec(base, kind, res),
                "compiles": len(cache) - before, "measured": len(res.measurements),
                "seconds": time.time() - t0})
            print(f"{kind} {budget}: {res.spec.name} {res.flops / 1e6:.4g} MF, searched "
                  f"{res.time_s * 1e3:.4g} ms ({res.status}, {len(cache) - before} new compiles)",
                  flush=True)
    return {"base": base.name, "targets": targets}


def _above_spec(base, kind, res):
    """The spec of the neighbour above the chosen model (by name among the candidates)."""
    if res.above is None:
        return None
    from fastscale_jax.timing.budget import budget_candidates

    for _, spec, _, _ in budget_candidates(base, kind):
        if spec.name == res.above.name:
            return spec.to_dict()
    return None


def remeasure(path: str, args) -> None:
    """Phase 2, in a fresh process: target --target's chosen model and its neighbour above,
    interleaved (time_interleaved); the times go into the target's entry of `path`."""
    from fastscale_jax.families import spec_from_dict
    from fastscale_jax.timing import time_interleaved

    with open(path) as f:
        doc = json.load(f)
    t = doc["targets"][args.target]
    specs = [spec_from_dict(t[k]) for k in ("chosen", "above_spec") if t[k] is not None]
    results = time_interleaved(specs, None, "train_step", batch_size=args.batch,
                               **_settings(args))
    got = [(r.time_s, r.spread_pct) if r.ok else (None, None) for r in results]
    t["remeasured_s"], t["remeasured_spread_pct"] = got[0]
    t["above_remeasured_s"] = got[1][0] if len(got) > 1 else None
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def report(doc) -> bool:
    rows, ok_all = [], True
    for t in doc["targets"]:
        ratio = t["remeasured_s"] / t["budget_s"] if t["remeasured_s"] else None
        straddles = (t["remeasured_s"] is not None and t["above_remeasured_s"] is not None
                     and t["remeasured_s"] <= t["budget_s"] < t["above_remeasured_s"])
        passed = ratio is not None and (abs(ratio - 1) <= 0.10 or straddles)
        ok_all &= passed
        t.update(ratio=ratio, straddles=straddles, passed=passed)
        rows.append((t["kind"], t["budget"], f"{t['flops'] / 1e6:.4g}", t["status"],
                     f"{t['search_time_s'] * 1e3:.4g}",
                     f"{t['remeasured_s'] * 1e3:.4g}" if t["remeasured_s"] else "-",
                     f"{ratio:.3f}" if ratio else "-",
                     f"{t['above_remeasured_s'] * 1e3:.4g}" if t["above_remeasured_s"] else "-",
                     "yes" if straddles else "no", str(t["compiles"]),
                     "pass" if passed else "FAIL"))
    head = ("kind", "budget", "MF", "search", "searched ms", "re-measured ms", "ratio",
            "above ms", "bracket", "compiles", "")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for r in (head, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(r, widths)))
    compiles = [t["compiles"] for t in doc["targets"]]
    print(f"median compiles per target: {statistics.median(compiles):g} (max {max(compiles)})")
    return ok_all


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.remeasure:
        remeasure(args.remeasure, args)
        return 0
    t0, c0 = time.time(), os.times()
    load0 = os.getloadavg()
    from fastscale_jax.errors import UserError

    try:
        doc = search(args)
    except UserError as e:  # e.g. a budget below the smallest reachable model: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc.update(machine=f"{platform.machine()} {platform.platform()}", batch=args.batch,
               resolution=args.resolution, tolerance=args.tolerance, iters=args.iters,
               windows=args.windows, command=" ".join(sys.argv))
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    rest = [a for a in (argv if argv is not None else sys.argv[1:])]
    for k, t in enumerate(doc["targets"]):   # one fresh process per target
        print(f"re-measuring {t['kind']} {t['budget']} in a fresh process", flush=True)
        p = subprocess.run([sys.executable, os.path.abspath(__file__), *rest,
                            "--remeasure", args.out, "--target", str(k)])
        if p.returncode != 0:
            print(f"the re-measurement of target {k} failed", file=sys.stderr)
            return 1
    with open(args.out) as f:
        doc = json.load(f)
    ok = report(doc)
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) \
        + (c1.children_system - c0.children_system)
    doc.update(wall_s=time.time() - t0, cpu_s=cpu, load_start=load0, load_end=os.getloadavg())
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"{'all targets pass' if ok else 'some targets FAIL'}; wall {doc['wall_s']:.0f} s, CPU "
          f"{cpu:.0f} s; load {load0[0]:.1f} -> {doc['load_end'][0]:.1f}; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
