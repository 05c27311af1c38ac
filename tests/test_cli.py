"""launch.py: the complexity mode and user-facing errors."""

import pathlib
import subprocess
import sys

import pytest

from conftest import ROOT


def _launch(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_complexity_mode_single_model():
    r = _launch("--config", "configs/regnety.py:800MF", "--mode", "complexity")
    assert r.returncode == 0, r.stderr
    assert "797,183,328" in r.stdout and "6,263,168" in r.stdout and "5,249,888" in r.stdout
    assert "multiply-adds" in r.stdout


def test_complexity_mode_family_with_growth_exponents(tmp_path):
    r = _launch("--config", "configs/alpha_sweep.py", "--mode", "complexity", "--workdir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "alpha=0.8" in r.stdout and "acts theory" in r.stdout
    assert r.stdout.count("RegNetZ-500MF x16") == 6
    assert (tmp_path / "complexity.txt").read_text().strip() == r.stdout.strip()


def test_scaling_override_from_command_line():
    r = _launch("--config", "configs/regnety.py:800MF", "--mode", "complexity",
                "--config.scaling.kind=d1_w8_g8_r1", "--config.scaling.factor=4")
    assert r.returncode == 0, r.stderr
    assert "3,181,172,472" in r.stdout  # pycls: RegNetY-800MF x4 d1_w8_g8_r1


def test_unknown_model_is_a_clear_error():
    r = _launch("--config", "configs/regnety.py:801MF", "--mode", "complexity")
    assert r.returncode != 0
    assert "Unknown model 'RegNetY-801MF'" in r.stderr and "Traceback" not in r.stderr.split("Unknown model")[-1]


def test_bad_alpha_from_command_line():
    r = _launch("--config", "configs/regnety.py:800MF", "--mode", "complexity",
                "--config.scaling.alpha=1.5", "--config.scaling.factor=2")
    assert r.returncode == 2
    assert "alpha must be in [0, 1]" in r.stderr


def test_config_key_typo_is_a_clear_error():
    for flag in ("--config.modle.name=x", "--config.train.epochz=1"):
        r = _launch("--config", "configs/regnety.py:800MF", "--mode", "complexity", flag)
        assert r.returncode == 2, (flag, r.stderr)
        assert "unknown config key" in r.stderr and "Did you mean" in r.stderr
        assert "Traceback" not in r.stderr


def test_unknown_key_at_any_level_names_it_and_suggests():
    for flag, key, hint in (("--config.trian.epochs=1", "'trian'", "'train'"),
                            ("--config.model.nmae=x", "'model.nmae'", "'model.name'")):
        r = _launch("--config", "configs/regnety.py:800MF", "--mode", "complexity", flag)
        assert r.returncode == 2, (flag, r.stderr)
        assert f"unknown config key {key}. Did you mean {hint}?" in r.stderr, r.stderr


def test_help_exits_zero():
    r = _launch("--help")
    assert r.returncode == 0 and "--config" in r.stdout and "model.resolution" in r.stdout


def test_helpshort_lists_the_flags_from_every_entry_point(tmp_path):
    for cmd in ([sys.executable, str(ROOT / "launch.py")], [sys.executable, "-m", "fastscale_jax"],
                [str(pathlib.Path(sys.executable).with_name("fastscale"))]):
        r = subprocess.run(cmd + ["--helpshort"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, (cmd, r.stderr)
        for flag in ("--config", "--workdir", "--mode: <train|eval|complexity"):
            assert flag in r.stdout, (cmd, flag, r.stdout)
        assert "--config.<key>" in r.stdout, r.stdout  # the usage text says how to override


def test_packaged_config_by_name_from_another_directory(tmp_path):
    r = _launch("--config", "regnety:800MF", "--mode", "complexity", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "797,183,328" in r.stdout  # pycls: RegNetY-800MF flops
    r = _launch("--config", "regnety_typo:800MF", "--mode", "complexity", cwd=tmp_path)
    assert r.returncode == 2 and "neither a file nor a packaged config" in r.stderr


def test_run_that_fails_at_start_up_leaves_no_workdir(tmp_path):
    wd = tmp_path / "new_run"
    r = _launch("--config", "regnetz_dWr:demo", "--workdir", str(wd),
                "--config.data.name=no_such_dataset")
    assert r.returncode == 2 and "no_such_dataset" in r.stderr
    assert not wd.exists()


_BUG = """
import sys
import jax.numpy as jnp
from fastscale_jax.train import step

real = step.make_train_body

def buggy(*args, **kwargs):  # a deliberate internal bug: a shape error inside the step
    body = real(*args, **kwargs)
    def train_body(state, batch):
        jnp.ones(3) + jnp.ones(4)
        return body(state, batch)
    return train_body

step.make_train_body = buggy
from fastscale_jax.cli import run
sys.argv = ["fastscale"] + sys.argv[1:]
run()
"""


def test_a_bug_keeps_its_traceback_and_says_it_is_a_bug(tmp_path):
    r = subprocess.run([sys.executable, "-c", _BUG, "--config", "regnetz_dWr:demo",
                        "--workdir", str(tmp_path / "w"), "--config.train.num_train_steps=2",
                        "--config.train.progress=False"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback (most recent call last)" in r.stderr and "incompatible shapes" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("fastscale_jax: the error above is a bug")
    assert not any(ln.startswith("error: ") for ln in r.stderr.splitlines())


def test_user_errors_are_one_line_from_every_entry_point(tmp_path):
    bad = ["--config", "regnety:800MF", "--mode", "complexity", "--config.scaling.kind=dWr",
           "--config.scaling.factor=1e-9"]
    for cmd in ([sys.executable, str(ROOT / "launch.py")], [sys.executable, "-m", "fastscale_jax"],
                [str(pathlib.Path(sys.executable).with_name("fastscale"))]):
        r = subprocess.run(cmd + bad, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert r.returncode == 2 and len(err) == 1 and "Traceback" not in r.stderr, (cmd, r.stderr)
        assert "rounding" in err[0] and "scale_to" in err[0]


def test_python_m_main_says_what_to_run():
    r = subprocess.run([sys.executable, "-m", "fastscale_jax.main"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "fastscale" in r.stderr and "python -m fastscale_jax" in r.stderr


def test_moved_sweep_keys_and_unset_with_none(tmp_path):
    r = _launch("--config", "study:demo", "--mode", "complexity", "--config.study.kinds=('w',)",
                cwd=tmp_path)
    assert r.returncode == 2 and "'study.kinds' is now family.kinds" in r.stderr
    r = _launch("--config", "regnety:800MF", "--mode", "config", "--config.model.conv_impl=lax",
                "--config.train.eval_batch_size=None", "--config.seed=None", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "conv_impl: lax" in r.stdout and "seed: null" in r.stdout
    assert "# model: RegNetY-800MF" in r.stdout


@pytest.mark.slow
def test_sigterm_stops_an_unfinished_run_with_exit_status_3(tmp_path):
    import signal
    import time

    wd = tmp_path / "w"
    p = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--config", "regnetz_dWr:demo",
                          "--workdir", str(wd), "--config.train.progress=False",
                          "--config.train.log_every_steps=1", "--config.train.num_train_steps=2000"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (wd / "metrics.jsonl").exists():
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 3, out[-2000:]
    assert "SIGTERM: saved a checkpoint at step" in out and (wd / "checkpoints").is_dir()


def test_convert_to_an_unwritable_folder_is_one_line(tmp_path):
    """An output folder that cannot be created (here: under a file, which fails for root too;
    a read-only folder fails the same way) is named before the checkpoint is read."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "-m", "fastscale_jax.convert", "--source", "pycls",
                        "--model", "RegNetX-200MF", str(tmp_path / "missing.pth"),
                        str(blocker / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot write the output directory" in r.stderr
