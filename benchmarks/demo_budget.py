"""Cost and accuracy of README command 1 (the `:demo` config) against the earlier demo recipe.

    python benchmarks/demo_budget.py              # ~4-6 min on an idle 2-core machine
    python benchmarks/demo_budget.py --repeats 2  # each recipe twice, alternating

Runs `launch.py --config configs/regnetz_dWr.py:demo` as a user would (a fresh process per run,
a fresh workdir), once with today's recipe and once with the recipe it replaced (LAMB at lr
2.5e-3, 150 steps, EMA 0.99 evaluated too: set through --config overrides), alternating, and
prints wall-clock and CPU seconds (user + system of the child), top-1 and the ratio of the
costs. The budget: today's recipe may cost at most 1.2 x the earlier one, measured in the same
run. The machine's load is printed with the table: other work on it slows both alike, but
makes the ratio noisier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/regnetz_dWr.py:demo"
# the :demo recipe before it was changed for accuracy (2026-11-23 .. 2026-11-29)
EARLIER = ["--config.train.num_train_steps=150", "--config.scaling.factor=0.25",
           "--config.optim.name=lamb",
           "--config.optim.base_lr=5e-3", "--config.optim.base_batch_size=128",
           "--config.optim.weight_decay=0.02", "--config.optim.warmup_epochs=0.5",
           "--config.train.ema_decay=0.99",
           "--config.checkpoint.every_steps=200"]


def run_once(extra: list[str], workdir: str) -> dict:
    cmd = [sys.executable, "launch.py", "--config", CONFIG, "--workdir", workdir,
           "--config.train.progress=False", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        final = json.load(f)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "top1": final["top1"], "steps": final["step"],
            "images_per_s": final.get("train_images_per_s")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1, help="runs of each recipe (alternating)")
    args = p.parse_args(argv)
    rows = {"today": [], "earlier": []}
    with tempfile.TemporaryDirectory(prefix="demo_budget_") as tmp:
        for i in range(args.repeats):
            for name, extra in (("earlier", EARLIER), ("today", [])):
                res = run_once(extra, os.path.join(tmp, f"{name}{i}"))
                rows[name].append(res)
                print(f"{name:8s} run {i + 1}: {res['wall_s']:6.1f} s wall, {res['cpu_s']:6.1f} s "
                      f"CPU, {res['steps']} steps, top-1 {100 * res['top1']:.2f}%", flush=True)
    load = os.getloadavg()[0]
    print(f"\nhost: {platform.machine()}, {os.cpu_count()} cores, load average {load:.2f} at the "
          f"end; python {platform.python_version()}")
    print(f"{'recipe':8s} {'wall s':>8s} {'CPU s':>8s} {'top-1 %':>8s} {'train img/s':>12s}")
    mean = {}
    for name, rs in rows.items():
        mean[name] = {k: sum(r[k] or 0 for r in rs) / len(rs) for k in rs[0] if k != "steps"}
        m = mean[name]
        print(f"{name:8s} {m['wall_s']:8.1f} {m['cpu_s']:8.1f} {100 * m['top1']:8.2f} "
              f"{m['images_per_s']:12.0f}")
    print(f"cost ratio today / earlier: wall {mean['today']['wall_s'] / mean['earlier']['wall_s']:.2f}"
          f", CPU {mean['today']['cpu_s'] / mean['earlier']['cpu_s']:.2f} (budget: <= 1.20)")


if __name__ == "__main__":
    main()
