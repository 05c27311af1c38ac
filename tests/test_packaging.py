"""The wheel: what it contains, and the core install (no train / cpu / torch extra) at work."""

import json
import subprocess
import zipfile

import pytest

import _wheel
from conftest import DATA, ROOT, read_csv

# Run by the core venv's python from a temporary directory: imports, builds, scales, counts and
# runs a model; train mode and the data pipeline fail with the one line naming the extra.
CORE_SCRIPT = r'''
import importlib.util, json, os, sys
import jax, jax.numpy as jnp
import fastscale_jax as fs
from fastscale_jax import configs, main
from fastscale_jax._extras import MissingExtra

out = {"file": fs.__file__,
       "absent": [m for m in ("tensorflow", "tensorflow_datasets", "torch")
                  if importlib.util.find_spec(m) is None]}
out["counts"] = fs.complexity(fs.scale(fs.get_model_spec("RegNetZ-500MF"), 2.0, "dwr"))
spec = fs.scale(fs.get_model_spec("RegNetZ-500MF"), 0.25, "dWr").replace(
    resolution=32, test_resolution=32, num_classes=10)
model = fs.build_model(spec)
x = jnp.ones((2, 32, 32, 3))
variables = model.init(jax.random.PRNGKey(0), x)
out["logits"] = list(model.apply(variables, x).shape)
errors = {}
try:
    main.run(configs.load("regnetz_dWr:demo"), "wd_train", "train")
except MissingExtra as e:
    errors["train"] = str(e)
try:
    from fastscale_jax.data import config as data_config, pipeline
    next(iter(pipeline.eval_iterator(data_config.default_data_config(), global_batch_size=8,
                                     image_size=32, process_index=0, process_count=1,
                                     local_device_count=1)))
except MissingExtra as e:
    errors["data"] = str(e)
out["errors"] = errors
out["workdir_left"] = os.path.exists("wd_train")
out["loaded"] = sorted(m for m in ("tensorflow", "torch") if m in sys.modules)
print(json.dumps(out))
'''


def _names():
    with zipfile.ZipFile(_wheel.build_wheel()) as z:
        return set(z.namelist()), z.read(next(n for n in z.namelist()
                                              if n.endswith(".dist-info/METADATA"))).decode()


def test_wheel_contains_configs_demo_data_and_cpp_source():
    names, _ = _names()
    configs = {p.name for p in (ROOT / "configs").glob("*.py")}
    assert {f"fastscale_jax/configs/{c}" for c in configs} <= names
    assert "fastscale_jax/data/demo/cifar10_demo.npz" in names
    assert "fastscale_jax/cpu/csrc/onednn_conv.cc" in names
    assert not any(n.startswith(("tests/", "configs/", "colabs/")) for n in names)


def test_wheel_core_requirements_have_no_tensorflow_torch_or_onednn():
    _, meta = _names()
    reqs = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    core = [r for r in reqs if "extra ==" not in r]
    assert any(r.startswith("jax") for r in core)
    for heavy in ("tensorflow", "torch", "onednn"):
        assert not any(r.startswith(heavy) for r in core), core
        assert any(r.startswith(heavy) for r in reqs), f"{heavy} is in no extra"


@pytest.mark.slow
def test_core_venv_builds_scales_counts_and_runs_a_model(tmp_path):
    python = _wheel.core_venv()
    proc = subprocess.run([str(python), "-c", CORE_SCRIPT], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(python.parent.parent)), out["file"]  # the wheel's copy
    assert out["absent"] == ["tensorflow", "tensorflow_datasets", "torch"]
    ref = next(r for r in read_csv(DATA / "pycls_scaled.csv") if r["model"] == "RegNetZ-500MF"
               and r["scaling_type"] == "dwr" and float(r["scaling_factor"]) == 2.0)
    assert out["counts"] == {k: int(ref[k]) for k in ("flops", "params", "acts")}  # pycls's
    assert out["logits"] == [2, 10]
    install = "pip install 'fastscale-jax[train]'"
    assert set(out["errors"]) == {"train", "data"}
    for msg in out["errors"].values():
        assert msg.endswith(install) and "\n" not in msg, msg
    assert not out["workdir_left"] and out["loaded"] == []
    # the console command and python -m fastscale_jax: the same command line as launch.py
    for cmd in ([str(python.with_name("fastscale"))], [str(python), "-m", "fastscale_jax"]):
        r = subprocess.run(cmd + ["--config", "regnety:800MF", "--mode", "complexity"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and "797,183,328" in r.stdout, r.stderr[-2000:]
        r = subprocess.run(cmd + ["--config", "regnetz_dWr:demo", "--workdir", "w"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and "error: --mode train" in r.stderr and \
            "pip install 'fastscale-jax[train]'" in r.stderr, r.stderr[-2000:]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln for ln in readme.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(commands) == 2 and "launch.py --config configs/regnetz_dWr.py:demo" in commands[0]
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip()]
    assert ci[-1] == commands[1]
