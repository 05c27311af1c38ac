"""End to end through the command line: the :demo config (shortened) trains on the embedded
CIFAR-10 subset, writes its outputs, and --mode eval evaluates the checkpoint it left; a typo
in a config value or a bad name gives a one-line error."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _launch(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_config_short_run_and_eval(tmp_path):
    wd = str(tmp_path / "demo")
    short = ["--config.train.num_train_steps=2", "--config.train.global_batch_size=16",
             "--config.train.eval_batch_size=1000", "--config.train.progress=False"]
    p = _launch("--config", "configs/regnetz_dWr.py:demo", "--workdir", wd, *short)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    final = json.loads((tmp_path / "demo" / "final_metrics.json").read_text())
    assert final["step"] == 2 and final["count"] == 2000   # the whole demo test split, once
    assert 0.0 <= final["top1"] <= 1.0 and "ema_top1" not in final   # the demo keeps no EMA
    assert final["compile_s"] > 0 and final["train_images_per_s"] > 0
    for f in ("config.json", "complexity.txt", "metrics.jsonl", "curves.png"):
        assert (tmp_path / "demo" / f).exists(), f
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "demo" / "tb"))
    p = _launch("--config", "configs/regnetz_dWr.py:demo", "--workdir", wd, "--mode", "eval",
                "--config.train.eval_batch_size=1000")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ev = json.loads((tmp_path / "demo" / "eval_results.json").read_text())
    assert ev["step"] == 2 and ev["top1"] == pytest.approx(final["top1"])


def test_bad_optimizer_is_one_line_error(tmp_path):
    p = _launch("--config", "configs/regnetz_dWr.py:demo", "--workdir", str(tmp_path),
                "--config.optim.name=adam")
    assert p.returncode == 2
    assert "optim.name='adam'" in p.stderr and "Traceback" not in p.stderr


def test_eval_without_checkpoint_is_one_line_error(tmp_path):
    p = _launch("--config", "configs/regnetz_dWr.py:demo", "--workdir", str(tmp_path),
                "--mode", "eval")
    assert p.returncode == 2
    assert "no checkpoint" in p.stderr and "Traceback" not in p.stderr
