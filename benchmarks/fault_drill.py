"""Fault drill: kill a short training run at random points, resume it each time, and compare
its per-step losses with an uninterrupted run.

    python benchmarks/fault_drill.py --points 8 --steps 60 --every 5 --seed 0

Each point sends kill -9 or SIGTERM to the training process, either at a random step or while
an asynchronous checkpoint save is being written (a '*.orbax-checkpoint-tmp' folder exists).
The run is then restarted with the same command and resumes from its latest checkpoint.
After the last point the run finishes; its per-step training losses (metrics.jsonl, the last
row of each step) are compared with those of an uninterrupted run of the same config.

Per point the table shows the step the run had logged when signalled, the step it resumed
from, the steps redone, and the checkpoints lost: 1 when the newest checkpoint committed on
disk before the signal was not the one resumed from, plus any checkpoint the resumed run
reported as broken.
The summary gives points, steps redone, max |dloss| over all steps and checkpoints lost.

The training process is this file with --worker: the tiny AnyNet of the tests on the
synthetic data set of the tests (tests/synthetic_data.py), with a short sleep per batch (--delay)
so that the drill can hit chosen steps. CPU only; about 1-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_spec():
    from fastscale_jax import AnyNetSpec

    return AnyNetSpec(name="drill-tiny", stem_type="res_stem_cifar", stem_w=8,
                      block_type="res_bottleneck_block", depths=(1, 1), widths=(16, 32),
                      strides=(1, 2), bot_muls=(1, 1), group_widths=(16, 32), num_classes=4,
                      resolution=32)


def worker(args):
    """One training invocation (resumes from the workdir's checkpoint)."""
    import jax

    from fastscale_jax.config import base_config
    from fastscale_jax.train import train_and_evaluate

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from synthetic_data import SyntheticData

    jax.config.update("jax_compilation_cache_dir", args.cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    progress = os.path.join(args.workdir, "drill_progress")

    class SlowData(SyntheticData):
        served = 0

        def train_iterator(self, *a, **kw):
            for batch in super().train_iterator(*a, **kw):
                time.sleep(args.delay)
                self.served += 1
                with open(progress + ".tmp", "w") as f:  # batches served by this invocation
                    f.write(str(self.served))
                os.replace(progress + ".tmp", progress)
                yield batch

    c = base_config()
    c.train.update(global_batch_size=16, num_train_steps=args.steps, log_every_steps=1,
                   eval_every_epochs=0.0, progress=False, tensorboard=False, plot=False)
    c.optim.update(base_lr=0.5, warmup_steps=5)
    c.checkpoint.update(every_steps=args.every, keep=3, async_save=True)
    c.data.deterministic = True
    train_and_evaluate(c, args.workdir, data=SlowData(num_train=96), spec=tiny_spec())


def _losses(workdir: str) -> dict:
    """{step: loss} from metrics.jsonl, the last row of each step (replays overwrite)."""
    out = {}
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        for line in open(path):
            if line.strip():
                try:
                    rec = json.loads(line)
                except ValueError:  # a line being written right now
                    continue
                if rec.get("split") == "train":
                    out[int(rec["step"])] = float(rec["loss"])
    return out


def _committed(workdir: str) -> set:
    d = os.path.join(workdir, "checkpoints")
    return {int(n) for n in os.listdir(d) if n.isdigit()} if os.path.isdir(d) else set()


def _saving(workdir: str, since: float) -> bool:
    """Whether a save started after `since` is being written (not a leftover of a kill)."""
    d = os.path.join(workdir, "checkpoints")
    try:
        return any("orbax-checkpoint-tmp" in n and os.path.getmtime(os.path.join(d, n)) > since
                   for n in os.listdir(d))
    except OSError:  # the folder or a tmp entry went away while listing
        return False


def _reached(workdir: str, log_path: str, offset: int) -> int | None:
    """The step this invocation is at (resumed step + batches served), None before its first
    batch."""
    try:
        with open(os.path.join(workdir, "drill_progress")) as f:
            served = int(f.read() or 0)
    except (OSError, ValueError):
        return None
    return _resume_info(log_path, offset)[0] + served


def _start(args, workdir: str, log):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--workdir", workdir,
           "--steps", str(args.steps), "--every", str(args.every), "--delay", str(args.delay),
           "--cache", args.cache]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))


def _run_to_end(args, workdir: str, log_path: str) -> int:
    with open(log_path, "a") as log:
        return _start(args, workdir, log).wait()


def _interrupt(args, workdir, log_path, sig, during_save, target, timeout=300.0):
    """Start a run, signal it once it is at step `target` (at least 2 steps after where it
    resumed), or during the first async save after that; returns (step at the signal,
    committed steps before, whether a save was being written, the run's exit code)."""
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(workdir, "drill_progress"))
    t0 = time.time()
    with open(log_path, "a") as log:
        proc = _start(args, workdir, log)
        reached = None
        while proc.poll() is None and time.time() - t0 < timeout:
            reached = _reached(workdir, log_path, offset)
            start = _resume_info(log_path, offset)[0]
            if reached is not None and reached >= max(target, start + 2) and (
                    not during_save or _saving(workdir, t0)):
                break
            time.sleep(0.002 if during_save and reached is not None else 0.02)
        before = _committed(workdir)
        in_save = _saving(workdir, t0)
        reached = _reached(workdir, log_path, offset)
        if proc.poll() is None:
            proc.send_signal(sig)
        rc = proc.wait()
    return reached, before, in_save, rc


def _resume_info(log_path: str, offset: int, end: int | None = None) -> tuple[int, int]:
    """(resumed step, broken-checkpoint warnings) of the invocation logged in [offset, end)."""
    with open(log_path) as f:
        f.seek(offset)
        text = f.read() if end is None else f.read(end - offset)
    step = 0
    for line in text.splitlines():
        if line.startswith("resuming from ") and " at step " in line:
            step = int(line.rsplit(" at step ", 1)[1].split()[0])
            break
    return step, text.count("is broken")


def drill(args) -> dict:
    rng = random.Random(args.seed)
    base = tempfile.mkdtemp(prefix="fault_drill_")
    args.cache = args.cache or os.path.join(base, "xla_cache")
    ref_dir, run_dir = os.path.join(base, "reference"), os.path.join(base, "drill")
    ref_log, run_log = ref_dir + ".log", run_dir + ".log"
    t0 = time.time()
    if _run_to_end(args, ref_dir, ref_log) != 0:
        raise SystemExit(f"the uninterrupted run failed; see {ref_log}")
    ref = _losses(ref_dir)

    # points: ascending target steps, alternating kill -9 / SIGTERM, every third during a save
    targets = sorted(rng.sample(range(3, args.steps - 2), args.points))
    rows = []
    for i, target in enumerate(targets):
        sig = signal.SIGKILL if i % 2 == 0 else signal.SIGTERM
        during_save = i % 3 == 1
        offset = os.path.getsize(run_log) if os.path.exists(run_log) else 0
        reached, before, in_save, rc = _interrupt(args, run_dir, run_log, sig, during_save,
                                                  target)
        rows.append({"point": i + 1, "signal": "kill -9" if sig == signal.SIGKILL else "SIGTERM",
                     "during_save": in_save, "at_step": reached, "exit": rc,
                     "before": before, "_offset": offset})
    offset = os.path.getsize(run_log)
    if _run_to_end(args, run_dir, run_log) != 0:
        raise SystemExit(f"the final resumed run failed; see {run_log}")
    # resume steps: each point's restart is the next invocation's 'resuming from' line
    offsets = [r["_offset"] for r in rows[1:]] + [offset, os.path.getsize(run_log)]
    for r, off, end in zip(rows, offsets, offsets[1:]):
        r["resumed_from"], broken = _resume_info(run_log, off, end)
        r["redone"] = max(0, (r["at_step"] or 0) - r["resumed_from"])
        # lost: the newest checkpoint committed before the signal was not resumed from
        r["lost"] = int(bool(r["before"]) and r["resumed_from"] < max(r["before"])) + broken
        del r["before"]
        del r["_offset"]
    got = _losses(run_dir)
    missing = sorted(set(ref) - set(got))
    dloss = max((abs(got[s] - ref[s]) for s in ref if s in got), default=float("nan"))
    worst = max(ref, key=lambda s: abs(got.get(s, ref[s]) - ref[s]))
    takeovers = open(run_log).read().count("taking over the stale lock")
    if args.keep:
        print(f"workdirs and logs kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return {"rows": rows, "max_dloss": dloss, "worst_step": worst, "missing_steps": missing,
            "redone": sum(r["redone"] for r in rows), "lost": sum(r["lost"] for r in rows),
            "takeovers": takeovers, "seconds": time.time() - t0,
            "kills": sum(r["signal"] == "kill -9" for r in rows)}


def report(res: dict, args) -> str:
    head = "| point | signal | during async save | at step | exit | resumed from | " \
           "steps redone | checkpoints lost |"
    lines = [head, "|" + "---|" * 8]
    for r in res["rows"]:
        lines.append(f"| {r['point']} | {r['signal']} | {'yes' if r['during_save'] else 'no'} "
                     f"| {r['at_step']} | {r['exit']} | {r['resumed_from']} | "
                     f"{r['redone']} | {r['lost']} |")
    lines += ["", "| points | steps redone | max abs dloss | checkpoints lost |",
              "|---|---|---|---|",
              f"| {len(res['rows'])} | {res['redone']} | {res['max_dloss']:.3g} "
              f"(step {res['worst_step']}) | {res['lost']} |", "",
              f"{args.steps}-step run, checkpoint every {args.every} steps (async, keep 3), "
              f"seed {args.seed}; stale-lock takeovers after kill -9: {res['takeovers']} of "
              f"{res['kills']}; steps missing from the resumed run: {res['missing_steps'] or 0}; "
              f"{res['seconds']:.0f} s wall."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.05, help="seconds of sleep per batch")
    p.add_argument("--cache", default=None, help="XLA compilation cache folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary workdirs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if not 1 <= args.points <= args.steps - 5:
        p.error(f"--points must be in [1, steps - 5], got {args.points}")
    print(report(drill(args), args))


if __name__ == "__main__":
    main()
