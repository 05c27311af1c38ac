"""Data parallelism in subprocesses (the device count is fixed when jax starts):
pmap and jit(shard_map) agree on 8 fake CPU devices, with and without synchronised BN; a 2-process CPU run (jax.distributed,
gloo collectives) completes and both processes agree."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
WORKER = str(HERE / "_train_parallel_worker.py")


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_pmap_equals_shard_map_on_8_devices(tmp_path):
    out = tmp_path / "out.json"
    p = subprocess.run([sys.executable, WORKER, "equal", str(out)], env=_env(8),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    pm, sm = r["results"]["pmap"], r["results"]["shard_map"]
    assert len(pm["losses"]) == 3
    for a, b in zip(pm["losses"], sm["losses"]):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (pm["losses"], sm["losses"])
    assert r["max_param_diff"] < 1e-5, r["max_param_diff"]
    assert pm["count"] == sm["count"] == 21
    assert abs(pm["top1"] - sm["top1"]) < 1e-6
    assert "not divisible by the number of devices (8)" in r["bad_batch_error"]
    # train.sync_bn: BN statistics over the global batch (16) instead of each device's 2
    # images; pmap and shard_map agree, and the training differs from per-device BN.
    ps, ss = r["results"]["pmap_sync_bn"], r["results"]["shard_map_sync_bn"]
    for a, b in zip(ps["losses"], ss["losses"]):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (ps["losses"], ss["losses"])
    assert r["max_param_diff_sync_bn"] < 1e-5, r["max_param_diff_sync_bn"]
    assert r["sync_vs_local_param_diff"] > 1e-4, r["sync_vs_local_param_diff"]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(mode, workdir):
    """Run the worker's `mode` as processes 0 and 1 of a jax.distributed run; their RESULTs."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, WORKER, mode, str(port), str(i), str(workdir)],
                              env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-4000:]
    return [json.loads(line[7:]) for o in outs for line in o.splitlines()
            if line.startswith("RESULT ")]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_one_step(tmp_path):
    """JAX's preemption service: both processes save the same step and return."""
    res = _two_processes("multihost_term", tmp_path / "run")
    assert len(res) == 2 and all(r["interrupted"] for r in res)
    assert res[0]["step"] == res[1]["step"] < 40
    assert res[0]["losses"] == res[1]["losses"]
    assert os.listdir(tmp_path / "run" / "checkpoints") == [str(res[0]["step"])]


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path):
    res = _two_processes("multihost", tmp_path / "run")
    assert len(res) == 2
    assert all(r["process_count"] == 2 and r["devices"] == 4 for r in res)
    assert res[0]["losses"] == res[1]["losses"] and len(res[0]["losses"]) == 4
    assert res[0]["count"] == res[1]["count"] == 21
    assert res[0]["top1"] == res[1]["top1"]
    run = tmp_path / "run"
    assert (run / "metrics.jsonl").exists()          # process 0 writes the logs
    assert sorted(os.listdir(run / "checkpoints")) == ["2", "4"]
