"""launch.py: the complexity mode and user-facing errors."""

import subprocess
import sys

from conftest import ROOT


def _launch(*args):
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


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
