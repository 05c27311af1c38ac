"""Run one study member as the ordinary training run, in its own process.

    python -m fastscale_jax.study.runner DIR/<run>     # what the local executor starts

The study writes `DIR/<run>/study_run.pkl` (the member's training config and model spec);
this trains it with `fastscale_jax.train.train_and_evaluate` in DIR/<run> (resuming from its
checkpoints) and records the outcome in `DIR/<run>/study_status.json`:
{'status': 'done' | 'failed' | 'interrupted' | 'running', 'error', 'step', 'wall_s',
'attempt'}. A training error is recorded, not raised (exit code 1), so that one
crashed run never stops the study. submitit jobs call `run_member` in the job's process.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import traceback

RUN_FILE = "study_run.pkl"
STATUS_FILE = "study_status.json"


def write_run(member_dir: str, config, spec) -> None:
    """Store what `run_member` needs: the member's training config and spec."""
    os.makedirs(member_dir, exist_ok=True)
    tmp = os.path.join(member_dir, RUN_FILE + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"config": config, "spec": spec}, f)
    os.replace(tmp, os.path.join(member_dir, RUN_FILE))


def read_status(member_dir: str) -> dict | None:
    try:
        with open(os.path.join(member_dir, STATUS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_status(member_dir: str, status: dict) -> None:
    tmp = os.path.join(member_dir, STATUS_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(status, f, indent=2)
    os.replace(tmp, os.path.join(member_dir, STATUS_FILE))


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}"[:500]


def _is_main_task() -> bool:
    """False on the non-zero ranks of a multi-task submitit job (only rank 0 writes status)."""
    for var in ("SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if os.environ.get(var, "0") not in ("", "0"):
            return False
    return True


def run_member(member_dir: str, *, auto_distributed: bool = False) -> dict:
    """Train the member stored in member_dir (in this process); returns and writes its status.
    auto_distributed: a multi-task job (SLURM) trains with config.distributed.auto=True."""
    with open(os.path.join(member_dir, RUN_FILE), "rb") as f:
        run = pickle.load(f)
    config, spec = run["config"], run["spec"]
    if auto_distributed:
        with config.unlocked():
            config.distributed.auto = True
    prev = read_status(member_dir) or {}
    status = {"status": "running", "error": "", "attempt": int(prev.get("attempt", 0)) + 1,
              "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    main = _is_main_task()
    if main:
        write_status(member_dir, status)
    t0 = time.time()
    try:
        from fastscale_jax import memory

        print(memory.tune_host_malloc(config, "train"), flush=True)  # before JAX starts
        from fastscale_jax.train import train_and_evaluate

        result = train_and_evaluate(config, member_dir, spec=spec)
        status.update(status="interrupted" if result.get("interrupted") else "done",
                      step=int(result["step"]))
    except BaseException as e:  # noqa: BLE001 -- recorded for the study table, then reported
        traceback.print_exc()
        status.update(status="failed", error=_one_line(e))
        if isinstance(e, KeyboardInterrupt):
            status.update(status="interrupted")
    status["wall_s"] = round(time.time() - t0, 2)
    if main:
        write_status(member_dir, status)
    print(f"study member {os.path.basename(os.path.normpath(member_dir))}: {status['status']}"
          + (f" ({status['error']})" if status["error"] else ""), flush=True)
    return status


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m fastscale_jax.study.runner MEMBER_DIR", file=sys.stderr)
        return 2
    return 0 if run_member(argv[0])["status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
