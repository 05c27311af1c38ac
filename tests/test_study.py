"""Scaling studies (`--mode study`, fastscale_jax.study): a tiny 2 strategies x 2 factors x
1 seed study through the local executor (killed mid-way, then rerun) and through submitit's
LocalExecutor; reruns skip finished runs; collect-only on a partial study; a crashed run is
recorded and does not stop the others; bad grids fail before any run starts."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

# tiny members: RegNetZ-500MF shrunk x1/64 by 'dw' at 32 px, then x2 / x4; 3 steps of batch 8
TINY = ["--config.family.base_factor=0.015625", "--config.train.num_train_steps=3",
        "--config.train.global_batch_size=8", "--config.train.eval_batch_size=1000",
        "--config.train.log_every_steps=1", "--config.train.ema_decay=0",
        "--config.train.tensorboard=False", "--config.train.plot=False",
        "--config.optim.warmup_epochs=0", "--config.checkpoint.every_steps=3"]
RUNS = ["dwr_x2_s0", "dwr_x4_s0", "dWr_x2_s0", "dWr_x4_s0"]
PNGS = ["error_vs_flops.png", "error_vs_acts.png", "error_vs_epoch_time.png",
        "epoch_time_vs_flops.png"]


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """The runs here compile the same few models again and again (rerun, submitit): their
    processes share XLA executables through JAX's persistent compilation cache."""
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("xla_cache")),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _cmd(workdir, *extra):
    return [sys.executable, str(ROOT / "launch.py"), "--config", "configs/study.py:demo",
            "--workdir", str(workdir), "--mode", "study", *TINY, *extra]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")


def _study(workdir, *extra, timeout=900, cwd=ROOT):
    return subprocess.run(_cmd(workdir, *extra), cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _rows(workdir):
    with open(os.path.join(workdir, "study.csv")) as f:
        return {r["run"]: r for r in csv.DictReader(f)}


def _status(workdir, run):
    with open(os.path.join(workdir, run, "study_status.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def killed_study(tmp_path_factory):
    """The tiny study started with a relative --workdir from another directory, SIGKILLed
    (with its running child) once the first run has finished, then rerun to the end with the
    same command."""
    here = tmp_path_factory.mktemp("study")
    wd = here / "local"
    first_final = wd / RUNS[0] / "final_metrics.json"
    proc = subprocess.Popen(_cmd("local"), cwd=here, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    first_done = lambda: (wd / RUNS[0] / "study_status.json").exists() and \
        _status(wd, RUNS[0])["status"] == "done"  # noqa: E731
    second_started = lambda: (wd / RUNS[1] / "study_status.json").exists()  # noqa: E731
    deadline = time.time() + 600
    while not (first_done() and second_started()) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.1)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0]
    assert alive and first_final.exists(), out[-3000:]
    unfinished = [r for r in RUNS if not (wd / r / "final_metrics.json").exists()]
    assert unfinished, "the kill came after the whole study had finished"
    before = first_final.stat().st_mtime_ns
    rerun = _study("local", cwd=here)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    return dict(wd=wd, first_mtime=before, unfinished=unfinished, rerun=rerun)


@pytest.mark.slow
def test_local_study_writes_rows_table_and_plots(killed_study):
    wd = killed_study["wd"]
    rows = _rows(wd)
    assert sorted(rows) == sorted(RUNS)
    for r in rows.values():
        assert r["status"] == "done" and r["error"] == "", r
        assert 0.0 <= float(r["top1"]) <= 1.0 and 0.0 <= float(r["top5"]) <= 1.0
        assert int(r["step"]) == 3
        assert float(r["train_images_per_s"]) > 0 and float(r["epoch_time_s"]) > 0
        assert float(r["run_epoch_time_s"]) > 0 and float(r["step_time_s"]) > 0
        assert r["timing_noisy"] in ("True", "False") and float(r["timing_spread_pct"]) >= 0
        # the epoch time comes from the interleaved timing: train images x step time / batch
        timing = json.load(open(wd / "study_timing.json"))["runs"][r["run"]]
        assert float(r["epoch_time_s"]) == pytest.approx(timing["epoch_s"], rel=1e-5)
        assert int(r["seed"]) == 0 and r["base"] == "RegNetZ-500MF"
        cfg = json.load(open(wd / r["run"] / "config.json"))
        assert cfg["seed"] == 0 and cfg["data"]["seed"] == 0 and "study" not in cfg
    for s in ("dwr", "dWr"):  # x4 members have more flops than x2 members
        assert int(rows[f"{s}_x4_s0"]["flops"]) > 1.5 * int(rows[f"{s}_x2_s0"]["flops"])
    # dWr grows activations slower than dwr at the same factor (the paper's point)
    assert int(rows["dWr_x4_s0"]["acts"]) < int(rows["dwr_x4_s0"]["acts"])
    table = (wd / "study_table.txt").read_text()
    assert "dwr" in table and "dWr" in table and "1/1" in table
    for p in PNGS:
        assert (wd / p).stat().st_size > 5000, p
    data = json.load(open(wd / "study.json"))
    assert len(data) == 4 and {d["run"] for d in data} == set(RUNS)


@pytest.mark.slow
def test_rerun_after_kill_did_not_retrain_finished_run(killed_study):
    wd = killed_study["wd"]
    assert (wd / RUNS[0] / "final_metrics.json").stat().st_mtime_ns == killed_study["first_mtime"]
    assert _status(wd, RUNS[0])["attempt"] == 1
    killed = killed_study["unfinished"][0]  # the run the kill interrupted was started again
    assert _status(wd, killed)["attempt"] == 2, _status(wd, killed)
    assert f"{4 - len(killed_study['unfinished'])} finished" in killed_study["rerun"].stdout


@pytest.mark.slow
def test_rerun_of_finished_study_only_collects(killed_study):
    wd = killed_study["wd"]
    mtimes = {r: (wd / r / "final_metrics.json").stat().st_mtime_ns for r in RUNS}
    t0 = time.time()
    p = _study(wd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "(4 finished, 0 to run)" in p.stdout
    assert mtimes == {r: (wd / r / "final_metrics.json").stat().st_mtime_ns for r in RUNS}
    assert time.time() - t0 < 60


@pytest.mark.slow
def test_collect_only_marks_missing_runs(killed_study, tmp_path):
    wd = tmp_path / "partial"
    shutil.copytree(killed_study["wd"], wd)
    shutil.rmtree(wd / "dWr_x4_s0")
    for p in PNGS:
        (wd / p).unlink()
    p = _study(wd, "--config.study.collect_only=True")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(wd)
    assert rows["dWr_x4_s0"]["status"] == "missing" and rows["dWr_x4_s0"]["top1"] == ""
    assert int(rows["dWr_x4_s0"]["flops"]) > 0      # labels are known without the run
    assert all(rows[r]["status"] == "done" for r in RUNS[:3])
    assert not (wd / "dWr_x4_s0").exists()          # collect-only starts nothing
    assert "not finished: dWr_x4_s0: missing" in (wd / "study_table.txt").read_text()
    assert all((wd / png).exists() for png in PNGS)


@pytest.mark.slow
def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    wd = tmp_path / "sub"
    p = _study(wd, "--config.study.executor.name=submitit",
               "--config.study.executor.submitit.cluster=local",
               "--config.study.executor.submitit.timeout_min=20")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "submitted 4 job(s) to submitit (local)" in p.stdout
    rows = _rows(wd)
    assert sorted(rows) == sorted(RUNS) and all(r["status"] == "done" for r in rows.values())
    assert any(f.endswith("_log.out") for f in os.listdir(wd / "submitit"))
    assert "submitit job" in (wd / RUNS[0] / "train.log").read_text()


@pytest.mark.slow
def test_crashed_run_is_recorded_and_the_next_one_runs(tmp_path):
    from fastscale_jax.study.executors import LocalExecutor

    crash, fails = tmp_path / "crash", tmp_path / "fails"
    crash.mkdir()
    (crash / "study_run.pkl").write_bytes(b"not a pickle")     # the process dies
    from fastscale_jax import configs
    from fastscale_jax.study import grid, runner
    config = configs.load("study:demo")
    member = grid.expand(config)[0]
    bad = grid.member_config(config, member)
    bad.optim.name = "adam"                                    # training refuses it
    runner.write_run(str(fails), bad, member.spec)
    done = []
    LocalExecutor([{}]).run([str(crash), str(fails)], on_done=done.append)
    assert done == [str(crash), str(fails)]
    st = runner.read_status(str(crash))
    assert st["status"] == "failed" and "exited with code 1" in st["error"]
    st = runner.read_status(str(fails))
    assert st["status"] == "failed" and "optim.name='adam'" in st["error"]


@pytest.mark.slow
def test_all_runs_failing_exits_nonzero_with_a_summary(tmp_path):
    p = _study(tmp_path / "s", "--config.optim.name=adam", "--config.family.kinds=('dWr',)")
    assert p.returncode == 2
    assert "all 2 runs of the study failed" in p.stderr
    assert "dWr_x2_s0: ConfigError" in p.stderr and "dWr_x4_s0: ConfigError" in p.stderr
    rows = _rows(tmp_path / "s")
    assert all(r["status"] == "failed" and "adam" in r["error"] for r in rows.values())


@pytest.mark.parametrize("override, field", [
    (("family.kinds", ("dxr",)), "family.kinds"),
    (("family.alphas", (1.5,)), "family.alphas"),
    (("family.factors", (2.0, 0.0)), "family.factors"),
    (("family.factors", (-1.0,)), "family.factors"),
    (("study.seeds", 0), "study.seeds"),
    (("family.kinds", ()), "family.kinds"),
    (("family.factors", ()), "family.factors"),
    (("family.base", "RegNetQ-1GF"), "family.base"),
    (("study.metric", "top5"), "study.metric"),
    (("study.executor.name", "ray"), "study.executor.name"),
])
def test_bad_grid_fails_before_any_run(tmp_path, override, field):
    from fastscale_jax import configs
    from fastscale_jax.study import run_study

    config = configs.load("study:demo")
    node, key = config, override[0].split(".")
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = override[1]
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        run_study(config, str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_bad_grid_on_the_command_line_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--config",
                        "configs/study.py:demo", "--workdir", str(tmp_path / "s"), "--mode",
                        "study", "--config.family.alphas=(0.8, 2.0)"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "family.alphas=2.0" in p.stderr and "[0, 1]" in p.stderr
    assert not (tmp_path / "s").exists()


def test_local_slots_one_run_per_device_group():
    from fastscale_jax.study.executors import slot_envs

    assert slot_envs("cpu", [], 1, 0) == [{}]
    gpus = slot_envs("gpu", ["0", "1", "2", "3"], 2, 0)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0,1", "2,3"]
    tpus = slot_envs("tpu", ["0", "1", "2", "3"], 1, 0)
    assert [s["TPU_VISIBLE_CHIPS"] for s in tpus] == ["0", "1", "2", "3"]
    assert len({s["TPU_MESH_CONTROLLER_PORT"] for s in tpus}) == 4
    with pytest.raises(ValueError, match="devices_per_run"):
        slot_envs("gpu", ["0"], 2, 0)


def test_study_configs_expand():
    from fastscale_jax import configs
    from fastscale_jax.study import grid

    sizes = {"demo": 4, "cifar10": 36, "imagenet": 16}
    for variant, n in sizes.items():
        config = configs.load(f"study:{variant}")
        members = grid.expand(config)
        assert len(members) == n
        assert len({m.name for m in members}) == n
    imagenet = grid.expand(configs.load("study:imagenet"))
    # without a pre-scaled base the member config alone describes the member's model
    from fastscale_jax.config import resolve_spec
    from fastscale_jax.scaling import structure_key
    m = imagenet[-1]
    got = resolve_spec(grid.member_config(configs.load("study:imagenet"), m))
    assert structure_key(got) == structure_key(m.spec)


def test_flops_targets_and_alphas_expand():
    from fastscale_jax import configs
    from fastscale_jax.study import grid

    config = configs.load("study:imagenet")        # RegNetY-800MF at 224 px
    config.family.kinds = ()
    config.family.alphas = (0.8, 1 / 3)
    config.family.factors = ()
    config.family.flops = ("1.6GF", "3.2GF")
    config.study.seeds = 2
    members = grid.expand(config)
    assert [m.name for m in members[:4]] == ["a0.8_1.6GF_s0", "a0.8_1.6GF_s1", "a0.8_3.2GF_s0",
                                             "a0.8_3.2GF_s1"]
    for m in members:
        target = 1.6e9 if m.target == "1.6GF" else 3.2e9
        assert abs(m.labels()["flops"] / target - 1) < 0.1
    assert {m.seed for m in members} == {0, 1} and len(members) == 8
    from fastscale_jax.config import resolve_spec   # the solved factor reproduces the model
    from fastscale_jax.scaling import structure_key
    got = resolve_spec(grid.member_config(config, members[-1]))
    assert structure_key(got) == structure_key(members[-1].spec)
    config.family.factors = (2.0,)
    with pytest.raises(ValueError, match="family.flops"):
        grid.expand(config)


def test_case_insensitive_filesystem_refuses_dwr_with_dWr(tmp_path, monkeypatch):
    from fastscale_jax import configs
    from fastscale_jax.study import run as study_run

    assert not study_run._case_insensitive(str(tmp_path))   # Linux tmp: case-sensitive
    monkeypatch.setattr(study_run, "_case_insensitive", lambda workdir: True)
    with pytest.raises(ValueError, match="family.kinds: runs 'dwr_x2_s0' and 'dWr_x2_s0'"):
        study_run.run_study(configs.load("study:demo"), str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_finished_means_done_at_its_step_with_the_same_settings(tmp_path):
    from fastscale_jax import configs
    from fastscale_jax.study import collect, grid, runner

    config = configs.load("study:demo")
    member = grid.expand(config)[0]
    mc = grid.member_config(config, member)
    d = tmp_path / member.name
    d.mkdir()
    (d / "config.json").write_text(mc.to_json_best_effort(indent=2))   # what the loop writes
    (d / "final_metrics.json").write_text(json.dumps({"step": 100, "top1": 0.3}))
    runner.write_status(str(d), {"status": "done", "step": 100})
    assert collect.is_finished(str(d), mc)
    mc.optim.base_lr = 1e-3                      # a changed setting: train again
    assert not collect.is_finished(str(d), mc)
    mc.optim.base_lr = config.optim.base_lr
    with mc.unlocked():
        mc.train.some_new_default = 1            # a key a newer library adds: still finished
    assert collect.is_finished(str(d), mc)
    runner.write_status(str(d), {"status": "done", "step": 50})   # stopped before its end
    assert not collect.is_finished(str(d), mc)
