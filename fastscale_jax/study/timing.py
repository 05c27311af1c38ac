"""A study's epoch times, measured fairly: every distinct member model's compiled train step
timed in one run, its windows interleaved across the members (timing.time_interleaved), so
the machine's load falls on all of them alike. The training runs' own throughput, measured
at different moments under different loads, stays a separate column (run_epoch_time_s).

    python -m fastscale_jax.study.timing DIR     # what run_study starts (this process has JAX)

Reads each finished member's DIR/<run>/study_run.pkl (its training config and spec), times
the train step at the training batch (train.global_batch_size) with config.timing's warmup,
iters and windows, and writes DIR/study_timing.json: {run: {time_s, spread_pct, epoch_s,
images_per_s, error}} plus the environment. epoch_s = train images / images per second, the
train images being what the run itself trained on (its own epoch time x its images/s).
"""

from __future__ import annotations

import json
import os
import pickle
import sys

from fastscale_jax.study import runner

TIMING_FILE = "study_timing.json"


def measure(workdir: str, runs: list[str], log=print) -> dict:
    """Time the members `runs` (sub-folders of workdir) interleaved; write TIMING_FILE."""
    from fastscale_jax.scaling import structure_key
    from fastscale_jax.timing import environment, time_interleaved

    loaded = []
    for run in runs:
        with open(os.path.join(workdir, run, runner.RUN_FILE), "rb") as f:
            rec = pickle.load(f)
        final = _read(os.path.join(workdir, run, "final_metrics.json")) or {}
        num_train = (final.get("epoch_time_s") or 0) * (final.get("train_images_per_s") or 0)
        loaded.append((run, rec["config"], rec["spec"], round(num_train)))
    config = loaded[0][1]
    distinct = {}
    for run, _, spec, _ in loaded:  # seeds of one model share its timing
        distinct.setdefault(structure_key(spec), spec)
    specs = list(distinct.values())
    batch = int(config.train.global_batch_size)
    log(f"study: timing {len(specs)} model(s)' train step interleaved, batch {batch}, "
        f"{config.timing.windows} windows x {config.timing.iters} iters")
    results = time_interleaved(specs, config, "train_step", batch_size=batch,
                               on_stage=lambda t: log(f"  {t}"))
    by_key = {structure_key(s): r for s, r in zip(specs, results)}
    out = {}
    for run, _, spec, num_train in loaded:
        r = by_key[structure_key(spec)]
        out[run] = {"time_s": r.time_s if r.ok else None, "spread_pct": r.spread_pct if r.ok else None,
                    "images_per_s": r.images_per_s if r.ok else None,
                    "epoch_s": num_train / r.images_per_s if r.ok and num_train else None,
                    "batch_size": batch, "windows": r.windows, "iters": r.iters, "error": r.error}
    payload = {"env": environment(), "runs": out}
    from fastscale_jax.workdir import json_safe

    with open(os.path.join(workdir, TIMING_FILE), "w") as f:
        json.dump(json_safe(payload), f, indent=1)
    return payload


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read(workdir: str) -> dict:
    """{run: timing} from TIMING_FILE ({} when there is none)."""
    return (_read(os.path.join(workdir, TIMING_FILE)) or {}).get("runs", {})


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m fastscale_jax.study.timing DIR RUN [RUN ...]", file=sys.stderr)
        return 2
    measure(argv[0], argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
