"""Executors: how a study's runs get run.

- `LocalExecutor`: each run in its own process (`python -m fastscale_jax.study.runner DIR`),
  output in DIR/train.log. One after another on a CPU host; on a host with several GPUs or
  TPU chips, runs in parallel, one per device group (CUDA_VISIBLE_DEVICES, or the TPU
  chip-bounds variables libtpu reads; the TPU path is untested here).
- `SubmititExecutor`: one submitit job per run (SLURM through `submitit.AutoExecutor`, or
  submitit's local / debug executors); the job calls `runner.run_member` in its process.
  Multi-host runs inside a job: set executor.submitit.nodes / tasks_per_node; a job of several
  tasks trains with config.distributed.auto=True, so the run calls jax.distributed.initialize(),
  which reads SLURM's variables.

A run that crashes or dies leaves `study_status.json` with status 'failed' and its error;
the study goes on with the next run.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

from fastscale_jax.errors import ConfigError
from fastscale_jax.study import runner

EXECUTORS = ("local", "submitit")
PLATFORMS = ("auto", "cpu", "gpu", "tpu")
# TPU_CHIPS_PER_PROCESS_BOUNDS for a process that owns n chips of one host
TPU_CHIP_BOUNDS = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1", 8: "2,4,1"}


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _died(member_dir: str, why: str) -> None:
    """Record a run that ended without writing its own final status."""
    st = runner.read_status(member_dir) or {}
    if st.get("status") in ("done", "failed", "interrupted"):
        return
    st.update(status="failed", error=why)
    runner.write_status(member_dir, st)


# -- devices ------------------------------------------------------------------------------
def detect_platform() -> tuple[str, list[str]]:
    """(platform, device ids) of this host without starting JAX: NVIDIA GPUs (nvidia-smi or
    CUDA_VISIBLE_DEVICES), TPU chips (/dev/accel*, /dev/vfio/<n>), else ('cpu', [])."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "-1"):
        return "gpu", [d.strip() for d in visible.split(",") if d.strip()]
    if visible is None and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=30).stdout
            n = sum(1 for ln in out.splitlines() if ln.startswith("GPU "))
            if n:
                return "gpu", [str(i) for i in range(n)]
        except (OSError, subprocess.SubprocessError):
            pass
    chips = glob.glob("/dev/accel*") or [p for p in glob.glob("/dev/vfio/*")
                                          if os.path.basename(p).isdigit()]
    if chips:
        return "tpu", [str(i) for i in range(len(chips))]
    return "cpu", []


def slot_envs(platform: str, devices: list[str], per_run: int, max_parallel: int) -> list[dict]:
    """The environment of each parallel slot: one dict per slot (one run at a time each)."""
    if platform not in PLATFORMS:
        raise ConfigError(f"study.executor.platform={platform!r}: valid {', '.join(PLATFORMS)}")
    if per_run < 1:
        raise ConfigError(f"study.executor.devices_per_run={per_run}: must be >= 1")
    if platform == "cpu" or not devices:
        return [{} for _ in range(max(1, max_parallel or 1))]
    groups = [devices[i:i + per_run] for i in range(0, len(devices) - per_run + 1, per_run)]
    if not groups:
        raise ConfigError(f"study.executor.devices_per_run={per_run} but this host has "
                         f"{len(devices)} {platform} device(s): {devices}")
    if max_parallel:
        groups = groups[:max_parallel]
    if platform == "gpu":
        return [{"CUDA_VISIBLE_DEVICES": ",".join(g)} for g in groups]
    if per_run not in TPU_CHIP_BOUNDS:
        raise ConfigError(f"study.executor.devices_per_run={per_run}: TPU runs take "
                         f"{sorted(TPU_CHIP_BOUNDS)} chips")
    return [{"TPU_VISIBLE_CHIPS": ",".join(g), "TPU_VISIBLE_DEVICES": ",".join(g),
             "TPU_CHIPS_PER_PROCESS_BOUNDS": TPU_CHIP_BOUNDS[per_run],
             "TPU_PROCESS_BOUNDS": "1,1,1", "TPU_MESH_CONTROLLER_PORT": str(8476 + i),
             "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{8476 + i}"}
            for i, g in enumerate(groups)]


# -- local ---------------------------------------------------------------------------------
class LocalExecutor:
    """Runs each member in a subprocess; len(slots) at a time, each with its slot's env."""

    def __init__(self, slots: list[dict], log=print):
        self.slots, self.log = slots, log
        self._procs: set = set()
        self._stop = threading.Event()

    def _run_one(self, member_dir: str, env_extra: dict) -> None:
        if self._stop.is_set():
            return
        env = dict(os.environ, **env_extra)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(),
                                                        env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log_path = os.path.join(member_dir, "train.log")
        self.log(f"starting {os.path.basename(member_dir)}"
                 + (f" ({', '.join(f'{k}={v}' for k, v in env_extra.items())})"
                    if env_extra else "") + f"; output in {log_path}")
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "fastscale_jax.study.runner",
                                     member_dir], stdout=logf, stderr=subprocess.STDOUT,
                                    env=env, cwd=member_dir)
            self._procs.add(proc)
            try:
                rc = proc.wait()
            finally:
                self._procs.discard(proc)
        if rc != 0:
            _died(member_dir, f"the run's process exited with code {rc} before recording a "
                              f"result; see {os.path.join(member_dir, 'train.log')}")

    def run(self, member_dirs: list[str], on_done=None) -> None:
        slots: queue.Queue = queue.Queue()
        for s in self.slots:
            slots.put(s)

        def task(d):
            slot = slots.get()
            try:
                self._run_one(d, slot)
            finally:
                slots.put(slot)
            if on_done is not None and not self._stop.is_set():
                on_done(d)

        old = None
        if threading.current_thread() is threading.main_thread():
            old = signal.signal(signal.SIGTERM, _raise_interrupt)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.slots))
        try:
            for f in [pool.submit(task, d) for d in member_dirs]:
                while not f.done():  # short waits keep the main thread interruptible
                    concurrent.futures.wait([f], timeout=0.5)
                f.result()
        except KeyboardInterrupt:
            self._stop.set()
            for p in list(self._procs):  # SIGTERM: the training loop saves a checkpoint
                p.terminate()
            for p in list(self._procs):
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if old is not None:
                signal.signal(signal.SIGTERM, old)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# -- submitit ------------------------------------------------------------------------------
def _submitit_job(member_dir: str) -> dict:
    """What a submitit job runs (module-level so that it pickles by reference)."""
    multi_task = int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1
    return runner.run_member(member_dir, auto_distributed=multi_task)


class SubmititExecutor:
    """One submitit job per member; waits for all of them."""

    def __init__(self, folder: str, cluster: str | None, params: dict, log=print):
        try:
            import submitit
        except ImportError:
            raise ConfigError("study.executor.name='submitit' needs submitit: "
                             "pip install 'submitit>=1.5'") from None
        self.executor = submitit.AutoExecutor(folder=folder, cluster=cluster or None)
        self.executor.update_parameters(**params)
        self.log = log

    def run(self, member_dirs: list[str], on_done=None) -> None:
        jobs = [(d, self.executor.submit(_submitit_job, d)) for d in member_dirs]
        for d, job in jobs:  # the job's output is submitit's; say where from the run's folder
            with open(os.path.join(d, "train.log"), "a") as f:
                f.write(f"submitit job {job.job_id}: output in {job.paths.stdout}\n")
        self.log(f"submitted {len(jobs)} job(s) to submitit ({self.executor.cluster}): "
                 + ", ".join(str(j.job_id) for _, j in jobs))
        try:
            for d, job in jobs:
                try:
                    job.result()
                except Exception as e:  # noqa: BLE001 -- a failed job is one failed run
                    _died(d, f"submitit job {job.job_id} failed: "
                             + " ".join(str(e).split())[-400:])
                if on_done is not None:
                    on_done(d)
        except KeyboardInterrupt:
            for _, job in jobs:
                job.cancel(check=False)
            raise


def make_executor(study, workdir: str, log=print):
    """The executor that study.executor describes (validated)."""
    ex = study.executor
    name = str(ex.get("name", "local"))
    if name not in EXECUTORS:
        raise ConfigError(f"study.executor.name={name!r}: valid {', '.join(EXECUTORS)}")
    if name == "submitit":
        params = dict(ex.submitit.to_dict()) if ex.get("submitit") is not None else {}
        cluster = params.pop("cluster", None)
        params = {k: v for k, v in params.items() if v is not None}
        return SubmititExecutor(os.path.join(workdir, "submitit"), cluster, params, log=log)
    platform = str(ex.get("platform", "auto"))
    if platform == "auto":
        platform, devices = detect_platform()
    else:
        devices = []
        if platform != "cpu":
            found, devices = detect_platform()
            if found != platform:
                devices = []
    if ex.get("devices"):
        devices = [str(d) for d in ex.devices]
    slots = slot_envs(platform, devices, int(ex.get("devices_per_run") or 1),
                      int(ex.get("max_parallel") or 0))
    return LocalExecutor(slots, log=log)
