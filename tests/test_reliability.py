"""Runs that survive faults and bad settings (issue #17): every case ends in one clear error or
the right behaviour, and no checkpoint is lost.

Fast checks call the validating functions directly; the fault-injection ones train the tiny
model of test_train_loop on synthetic data (shared compile cache, a few steps each)."""

import errno
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

import fastscale_jax as fs
from fastscale_jax import main as fs_main
from fastscale_jax import sweep as sweep_lib
from fastscale_jax import workdir as workdir_lib
from fastscale_jax.config import base_config
from fastscale_jax.train import NonFiniteLossError, evaluate, train_and_evaluate
from fastscale_jax.train import checkpoint as ckpt_lib
from fastscale_jax.train import optim

from synthetic_data import SyntheticData
from test_train_loop import SPEC, compile_cache  # noqa: F401  (the tiny model, shared XLA cache)
from test_train_loop import make_config as loop_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(steps=8, every=4, **train):
    c = loop_config(**dict(train, num_train_steps=steps))
    c.checkpoint.every_steps = every
    return c


def _train(c, wd, data=None):
    return train_and_evaluate(c, str(wd), data=data or SyntheticData(), spec=SPEC)


# -- settings refused before any work (item 8) ---------------------------------------------

@pytest.mark.parametrize("section,key,value,match", [
    ("checkpoint", "keep", 0, r"checkpoint.keep=0 is out of range: must be an integer in \[1, inf\)"),
    ("checkpoint", "every_steps", 0, r"checkpoint.every_steps=0 is out of range: .*\[1, inf\)"),
    ("train", "num_train_steps", -5, r"train.num_train_steps=-5 is out of range: .*\[1, inf\)"),
    ("train", "ema_decay", 1.5, r"train.ema_decay=1.5 is out of range: .* in \[0, 1\)"),
    ("train", "global_batch_size", 0, r"train.global_batch_size=0 is out of range: .*\[1, inf\)"),
    ("optim", "base_lr", float("inf"), r"optim.base_lr=inf must be a number in \(0, inf\)"),
    ("optim", "base_lr", float("nan"), r"optim.base_lr=nan must be"),
    ("optim", "base_lr", 0.0, r"optim.base_lr=0.0 is out of range"),
    ("optim", "warmup_steps", -3, r"optim.warmup_steps=-3 is out of range: .*\[0, inf\)"),
])
def test_bad_settings_fail_before_any_work(tmp_path, section, key, value, match):
    c = make_config()
    c[section][key] = value
    with pytest.raises(ValueError, match=match):
        _train(c, tmp_path)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.json").exists()


def test_checkpointer_refuses_keep_zero(tmp_path):
    with pytest.raises(ValueError, match="keep=0 must be >= 1"):
        ckpt_lib.Checkpointer(str(tmp_path), keep=0)


def test_warmup_longer_than_run_is_clipped_with_warning(capsys):
    c = base_config().optim
    c.warmup_epochs = 5.0
    assert optim.warmup_steps(c, 62, total_steps=40) == 40
    out = capsys.readouterr().out
    assert "warmup_epochs=5.0 (310 steps) is longer than the run (40 steps)" in out
    assert optim.warmup_steps(c, 62, total_steps=400) == 310  # fits: unchanged, silent
    assert capsys.readouterr().out == ""


def test_scaling_kinds_and_flops_targets():
    spec = fs.get_model_spec("RegNetY-800MF")
    with pytest.raises(ValueError, match="'d0_w0_r0' scales nothing"):
        fs.scale(spec, 2, "d0_w0_r0")
    with pytest.raises(ValueError, match="flops target '-4GF' must be positive"):
        fs.scale_to(spec, "-4GF", "dWr")
    for absurd in ("1000TF", "1000000GF", "2PF", 1e15):
        with pytest.raises(ValueError, match="at or above 1 PF"):
            fs.scale_to(spec, absurd, "dWr")
    with pytest.raises(ValueError, match="cannot parse flops target '4XF'"):
        fs.scale_to(spec, "4XF", "dWr")
    from fastscale_jax.scaling import parse_flops
    assert parse_flops("1.5TF") == 1.5e12 and parse_flops("800mf") == 8e8


def test_convert_rejects_nan_weights():
    from fastscale_jax import convert
    from fastscale_jax.convert.mapping import layer_table, tensor_table, to_torch_shape

    shapes = convert.expected_shapes(SPEC)
    sd = {name: np.ones(to_torch_shape(shapes[path], tr), np.float32)
          for name, path, tr in tensor_table(layer_table(SPEC, "pycls"))}
    convert.from_pycls(sd, SPEC)  # the clean dict converts
    name = sorted(sd)[3]
    sd[name] = sd[name].copy()
    sd[name].flat[0] = np.nan
    with pytest.raises(ValueError, match=rf"'{re.escape(name)}' has 1 NaN / inf value"):
        convert.from_pycls(sd, SPEC)


def test_benchmark_fails_when_every_model_fails(tmp_path, monkeypatch):
    from fastscale_jax import config as config_lib
    from fastscale_jax.timing import benchmark

    fam = [({"model": n, "kind": "x", "factor": f}, SPEC.replace(name=n))
           for n, f in (("A", 1.0), ("B", 2.0))]
    monkeypatch.setattr(sweep_lib, "resolve_family", lambda cfg: fam)

    def boom(spec, config=None, **kw):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

    monkeypatch.setattr(benchmark, "time_model", boom)
    c = base_config()
    c.timing.update(batch_size=2, warmup=1, iters=1, windows=1, modes=("inference",))
    with pytest.raises(fs.errors.TrainingError, match=r"every model failed \(2 of 2\).*RESOURCE_EXHAUSTED"):
        benchmark.run_benchmark(c, str(tmp_path), progress=False)
    assert (tmp_path / "benchmark.csv").exists()  # the rows, with their errors, are kept


def test_impossible_resolution_is_refused_early(tmp_path):
    c = make_config()
    with pytest.raises(ValueError, match=r"at 10000 px cannot train here.*lower "
                                         r"model.resolution or train.global_batch_size"):
        train_and_evaluate(c, str(tmp_path), data=SyntheticData(),
                           spec=SPEC.replace(resolution=10000))
    assert not (tmp_path / "checkpoints").exists()


# -- workdir checks and lock (items 3, 8, 9) ------------------------------------------------

def test_workdir_is_file_missing_or_read_only(tmp_path, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        workdir_lib.prepare(str(f))
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fs_main.run(make_config(), str(missing), mode="eval")
    assert not missing.exists()  # --mode eval never creates it

    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        with tempfile.NamedTemporaryFile(dir=ro):
            writable = True  # root ignores permissions: simulate a read-only file system
    except OSError:
        writable = False
    if writable:
        def erofs(*a, **kw):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(workdir_lib.tempfile, "NamedTemporaryFile", erofs)
    with pytest.raises(fs.errors.WorkdirError, match="is not writable"):
        evaluate(make_config(), str(ro), data=SyntheticData(), spec=SPEC)
    os.chmod(ro, 0o755)


def test_second_run_fails_at_once_and_kill9_lock_is_taken_over(tmp_path, capsys):
    wd = str(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
         "from fastscale_jax.workdir import acquire; acquire(sys.argv[2]); "
         "print('held', flush=True); time.sleep(120)", ROOT, wd],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.time()
        with pytest.raises(workdir_lib.WorkdirBusyError,
                           match=rf"in use by another run: pid {holder.pid} on host "):
            _train(make_config(), tmp_path)
        assert time.time() - t < 10 and not (tmp_path / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = workdir_lib.acquire(wd)  # kill -9 left the record: stale, taken over
    assert re.search(rf"taking over the stale lock of pid {holder.pid} .*no longer running",
                     capsys.readouterr().out)
    with pytest.raises(workdir_lib.WorkdirBusyError, match=f"pid {os.getpid()}"):
        workdir_lib.acquire(wd)
    lock.release()


def test_lock_of_another_host_needs_a_stale_heartbeat(tmp_path, capsys):
    path = tmp_path / workdir_lib.LOCK_NAME
    path.write_text(json.dumps({"pid": 4242, "host": socket.gethostname() + "-other"}))
    with pytest.raises(workdir_lib.WorkdirBusyError, match="may still be running"):
        workdir_lib.acquire(str(tmp_path))
    old = time.time() - 2 * workdir_lib.STALE_S
    os.utime(path, (old, old))
    workdir_lib.acquire(str(tmp_path)).release()
    assert "no heartbeat for" in capsys.readouterr().out


# -- NaN / divergence: only good states are checkpointed (item 2) -------------------------

def test_divergence_names_a_checkpoint_that_really_is_good(tmp_path):
    c = make_config(steps=8, every=1, log_every_steps=1)
    c.optim.update(base_lr=1e9, warmup_steps=6)  # step 0 runs at lr 0, then it explodes
    with pytest.raises(NonFiniteLossError) as err:
        _train(c, tmp_path)
    m = re.search(r"last good checkpoint is step (\d+)", str(err.value))
    assert m, str(err.value)
    good = int(m.group(1))
    assert ckpt_lib.Checkpointer(str(tmp_path)).all_steps()[-1] == good
    tree = ckpt_lib.Checkpointer(str(tmp_path)).read_state(good)
    assert max(float(np.abs(x).max()) for x in jax.tree_util.tree_leaves(tree["params"])) < 100
    c.optim.base_lr = 1.0  # the fix the error names: a lower learning rate, same workdir
    c.checkpoint.every_steps = 4
    res = _train(c, tmp_path)
    assert len(res["losses"]) == 8 - good and np.isfinite(res["losses"]).all()
    assert res["losses"][0] < 2 * np.log(4)


# -- corrupt checkpoints (item 4) and failed async saves (item 5) ---------------------------

def test_corrupt_latest_checkpoint_falls_back_or_names_the_steps(tmp_path, capsys):
    wd = tmp_path / "run"
    c = make_config(steps=8, every=4)
    c.optim.warmup_epochs = 100.0  # also: the start-up line shows the clipped warmup
    _train(c, wd)
    out = capsys.readouterr().out
    assert "warming up over all 8 steps" in out and "warmup 8 steps" in out
    spare = tmp_path / "spare"
    shutil.copytree(wd, spare)

    for f in glob.glob(str(wd / "checkpoints/8/state/ocdbt.process_0/d/*")):
        with open(f, "r+b") as fh:
            fh.truncate(10)  # a truncated data file
    c.train.num_train_steps = 12
    res = _train(c, wd)
    out = capsys.readouterr().out
    assert re.search(r"warning: checkpoint step 8 .* is broken .*moved to .*checkpoints_broken"
                     r".*using step 4", out), out
    assert "resuming from" in out and len(res["losses"]) == 8
    assert ckpt_lib.Checkpointer(str(wd)).all_steps() == [4, 8, 12]

    (spare / "checkpoints/8/state/_METADATA").write_text("{garbage")
    shutil.rmtree(spare / "checkpoints/4/meta")  # a missing item
    with pytest.raises(fs.errors.WorkdirError, match=r"no intact checkpoint .*step\(s\) 8, 4 cannot be read"
                                         r".*Delete the broken step folders"):
        _train(c, spare)


def test_failed_async_save_is_reported_at_once_and_keeps_the_previous(tmp_path, monkeypatch):
    from orbax.checkpoint._src.handlers import base_pytree_checkpoint_handler as handler

    real = handler.BasePyTreeCheckpointHandler.finalize

    def finalize(self, directory):  # step 8's background write hits a full disk
        if "/8." in str(directory):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, directory)

    monkeypatch.setattr(handler.BasePyTreeCheckpointHandler, "finalize", finalize)

    class Counting(SyntheticData):
        served = 0

        def train_iterator(self, *a, **kw):
            for b in super().train_iterator(*a, **kw):
                self.served += 1
                yield b

    data = Counting()
    c = make_config(steps=40, every=4)
    with pytest.raises(ckpt_lib.CheckpointSaveError,
                       match=r"saving checkpoint step 8 .* failed \(.*No space left on device"
                             r".*\); the previous checkpoint \(step 4\) is intact"):
        _train(c, tmp_path, data)
    assert data.served <= 13  # reported before the next save commits (step 12 + its check)
    monkeypatch.undo()
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    assert ck.all_steps() == [4] and ck.read_meta(4)["step"] == 4


# -- the command line: one line, exit status 2 ----------------------------------------------

def test_cli_one_line_errors(tmp_path):
    def launch(*args):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"),
                            "--config", "configs/regnety_dWr.py", *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert r.returncode == 2 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr
        return err[0]

    missing = tmp_path / "no_such_run"
    assert "does not exist" in launch("--mode", "eval", "--workdir", str(missing))
    assert not missing.exists()
    assert "at or above 1 PF" in launch("--mode", "complexity",
                                        "--config.scaling.flops=1000TF")


def test_config_argument_flops_targets_share_the_scalers_parser():
    from fastscale_jax.config import parse_flops_arg

    assert parse_flops_arg("1.5tf") == ("1.5TF", None) and parse_flops_arg("4") == (None, 4.0)
    with pytest.raises(ValueError, match="'2000PF' is neither.*did you mean GF or MF"):
        parse_flops_arg("2000PF")
    with pytest.raises(ValueError, match="factor must be positive"):
        parse_flops_arg("-4")


@pytest.mark.parametrize("key,value", [
    ("train.label_smoothing", 1.5), ("train.label_smoothing", -0.5), ("train.mixup_alpha", -1.0),
    ("train.mix_prob", 2.0), ("train.mix_switch_prob", 5.0), ("optim.weight_decay", -0.1),
    ("optim.b1", 1.5), ("optim.b2", 1.0), ("optim.min_lr_factor", 2.0),
    ("optim.clip_grad_norm", -1.0), ("optim.eps", 0.0), ("optim.momentum", -1.0),
    ("train.bce_target_thresh", 5.0), ("train.eval_every_epochs", -1.0),
    ("train.epochs", float("nan")), ("train.cutmix_alpha", -0.1),
    ("optim.warmup_init_factor", 1.5), ("train.log_every_steps", 0), ("optim.base_lr", float("inf")),
    ("train.global_batch_size", 0), ("train.ema_decay", 1.0)])
def test_every_numeric_setting_is_range_checked_before_any_work(tmp_path, key, value):
    from fastscale_jax.train import setup

    c = make_config()
    section, field = key.split(".")
    c[section][field] = value
    with pytest.raises(fs.errors.ConfigError) as e:
        setup.validate_config(c, 1)
    msg = str(e.value)
    assert msg.startswith(f"{key}={value!r}") and "\n" not in msg and ("[" in msg or "(" in msg)
    with pytest.raises(fs.errors.ConfigError):  # before the workdir is touched or data read
        train_and_evaluate(c, str(tmp_path / "w"), data=SyntheticData(), spec=SPEC)
    assert not (tmp_path / "w" / "config.json").exists()
