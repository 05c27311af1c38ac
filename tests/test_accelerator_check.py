"""benchmarks/accelerator_check.py --smoke in a subprocess (2 CPU devices), with tensorflow,
tensorflow_datasets and ml_collections made unimportable (as on the GPU image): every check
is present and ok, and its numbers are sane. One smoke run (~1.5-2 min on 2 idle cores) is
shared by the tests of this module."""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator_check.py"
FORBIDDEN = ("tensorflow", "tensorflow_datasets", "ml_collections")
CHECKS = ("environment", "families", "parity", "alpha", "budget", "timm", "cifar", "parallel",
          "no_tf")
HAVE_TORCH_TIMM = all(importlib.util.find_spec(m) for m in ("torch", "timm"))


def _stub_dir(tmp):
    """Packages that shadow the real ones and fail to import, like absent ones."""
    for name in FORBIDDEN:
        d = tmp / "stubs" / name
        d.mkdir(parents=True)
        (d / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the GPU image does not have it')\n")
    return tmp / "stubs"


def _env(stubs):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(stubs), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("accel")
    env = _env(_stub_dir(tmp))
    blocked = subprocess.run([sys.executable, "-c", "import ml_collections"], env=env,
                             check=False, capture_output=True, text=True)
    assert blocked.returncode != 0 and "blocked" in blocked.stderr  # the stubs do block
    out = tmp / "smoke.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], env=env,
                       cwd=tmp, check=False, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    return json.loads(out.read_text()), p.stdout


def _finite(*xs):
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


@pytest.mark.slow
def test_every_check_present_and_ok(smoke):
    doc, stdout = smoke
    assert doc["smoke"] is True and doc["failed"] == []
    assert list(doc["checks"]) == list(CHECKS)
    for name, r in doc["checks"].items():
        expected = "ok" if name != "timm" or HAVE_TORCH_TIMM else "skip"
        assert r["status"] == expected, (name, r["summary"])
        assert r["seconds"] >= 0 and r["summary"]
        assert name in stdout  # the printed table has a row per check
    assert "key numbers" in stdout


@pytest.mark.slow
def test_environment_and_imports(smoke):
    c = smoke[0]["checks"]
    env = c["environment"]
    assert env["backend"] == "cpu" and env["device_count"] == 2
    assert env["versions"]["jax"] and "xla_force_host_platform_device_count=2" in env["env"]["XLA_FLAGS"]
    assert c["no_tf"]["imported"] == []


@pytest.mark.slow
def test_families_forward_backward(smoke):
    r = smoke[0]["checks"]["families"]
    rows = r["rows"]
    assert {x["family"] for x in rows} == {"RegNetX", "RegNetY", "RegNetZ", "EfficientNet", "ResNet"}
    assert {x["family"] for x in rows if x["dtype"] == "float32"} == {x["family"] for x in rows}
    bf16 = [x for x in rows if x["dtype"] == "bfloat16"]
    assert bf16
    for x in rows:
        assert x["error"] is None and x["finite"] and _finite(x["loss"], x["compile_s"])
        assert 2.0 < x["loss"] < 20.0  # softmax CE over 1000 classes at init: ~ln(1000)
        assert x["bn_stats_dtypes"] == ["float32"]
    for x in bf16:
        assert x["grad_cosine_vs_float32"] >= r["tolerances"]["min_grad_cosine"]
        assert x["loss_rel_diff_vs_float32"] <= r["tolerances"]["loss_rtol"]


@pytest.mark.slow
def test_parity_with_reference(smoke):
    r = smoke[0]["checks"]["parity"]
    assert len(r["rows"]) == 5
    for x in r["rows"]:
        assert x["reference"] == "cpu conv_impl=lax" and x["tested"] == "cpu conv_impl=auto"
        assert 0 <= x["rel_err_highest"] <= r["rtol"] <= 1e-3
        assert x["max_abs_logit"] > 0


@pytest.mark.slow
def test_alpha_family_timing_and_fit(smoke):
    r = smoke[0]["checks"]["alpha"]
    rows = r["rows"]
    assert [(x["kind"], x["factor"]) for x in rows] == [("base", 1.0), ("dwr", 2.0), ("dWr", 2.0),
                                                        ("w", 2.0)]
    base = rows[0]
    for x in rows:
        assert x["error"] is None and x["train_step_time_ms"] > 0
        assert x["train_step_images_per_s"] == pytest.approx(2 / (x["train_step_time_ms"] / 1e3))
        # the AOT pre-compilation filled the persistent cache: timing did not compile again
        assert x["train_step_compile_s"] < 0.5 * x["prewarm_compile_s"]
    for x in rows[1:]:
        assert 1.4 * base["flops"] < x["flops"] < 2.6 * base["flops"]  # ~x2 flops
    assert -1 <= r["r_time_acts"] <= 1 and -1 <= r["r_time_flops"] <= 1
    fit = r["fits"]["flops+acts"]
    assert fit["n"] == 4 and set(fit["coef"]) == {"flops", "acts", "intercept"}


@pytest.mark.skipif(not HAVE_TORCH_TIMM, reason="torch and timm are not installed")
@pytest.mark.slow
def test_timm_comparison(smoke):
    r = smoke[0]["checks"]["timm"]
    assert [x["model"] for x in r["rows"]] == ["RegNetY-4GF", "RegNetZ-4GF dWr", "EfficientNet-B0"]
    for x in r["rows"]:
        assert x["params_ours"] == x["params_timm"]  # the same architecture on both sides
        assert x["ours_images_per_s"] > 0 and x["timm_images_per_s"] > 0
        assert x["ratio_ours_over_timm"] == pytest.approx(
            x["ours_images_per_s"] / x["timm_images_per_s"])


@pytest.mark.slow
def test_cifar_training_run(smoke):
    r = smoke[0]["checks"]["cifar"]
    assert r["train_images"] == 10000 and r["test_images"] == 2000
    assert r["steps"] == r["steps_planned"] > 0
    assert all(_finite(v) for v in r["losses"]) and r["losses"][-1] < r["losses"][0]
    assert r["top1"] >= r["target_top1"] >= 0.2  # chance is 0.1


@pytest.mark.slow
def test_pmap_and_shard_map_agree(smoke):
    r = smoke[0]["checks"]["parallel"]
    assert r["devices"] == 2 and len(r["losses_pmap"]) == r["steps"] == 3
    assert r["max_loss_rel_diff"] <= r["tol"] and r["max_param_abs_diff"] <= r["tol"] <= 1e-4


def test_bad_arguments_exit_2(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--only", "famlies"], check=False,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "unknown check 'famlies'" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "no" / "x.json")],
                       check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_timing_config_matches_base_config():
    """The ml_collections-free config the check times with (accel_check.common.timing_config)
    has base_config's values for every field it sets: the GPU numbers time the same step."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from accel_check.common import timing_config
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from fastscale_jax.config import base_config

    ours, base = timing_config(), base_config()
    assert (ours.seed, ours.parallel) == (base.seed, base.parallel)
    for section in ("model", "train", "optim", "checkpoint", "timing"):
        for key, value in ours[section].items():
            assert key in base[section], (section, key)
            want = base[section][key]
            assert (tuple(value) if isinstance(value, (list, tuple)) else value) == (
                tuple(want) if isinstance(want, (list, tuple)) else want), (section, key)


@pytest.mark.slow
def test_budget_check_scales_to_time_and_remeasures(smoke):
    r = smoke[0]["checks"]["budget"]
    assert r["status"] == "ok", r
    assert [x["kind"] for x in r["rows"]] == ["dWr", "dwr"] and r["base_ms"] > 0
    for x in r["rows"]:
        assert x["budget_ms"] == pytest.approx(2 * r["base_ms"])
        assert x["measured"] >= 1 and x["flops"] > 0 and x["remeasured_ratio"] > 0
