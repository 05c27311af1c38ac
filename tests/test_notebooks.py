"""Every notebook under colabs/ executes top to bottom (with its default small settings) from the
installed wheel: a fresh venv with the wheel (not an editable install, see _wheel.py), the
notebooks copied to a temporary directory outside the source tree, a kernel on that venv."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

import _wheel
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))
KERNEL = "fastscale-wheel"


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.fixture(scope="module")
def wheel_kernel(tmp_path_factory):
    """A Jupyter kernel spec (on JUPYTER_PATH) whose python is the wheel venv's."""
    python = _wheel.wheel_venv("train,cpu,torch")
    jupyter = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fastscale_jax wheel", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(jupyter)] + ([old] if old else []))
    yield python
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.slow
def test_notebook_executes_from_wheel(path: pathlib.Path, wheel_kernel, tmp_path):
    work = tmp_path / "colabs"  # a copy outside the source tree: nothing resolves against it
    shutil.copytree(ROOT / "colabs", work)
    nb = nbformat.read(work / path.name, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(work)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    # the install cell says where the package came from: the wheel venv, not the source tree
    first = "".join(o.get("text", "") for o in nb.cells[[c.cell_type for c in nb.cells].index("code")]
                    .get("outputs", []))
    venv = str(wheel_kernel.parent.parent)
    assert f"from {venv}" in first and "site-packages" in first, first
    assert str(ROOT) not in first
    assert any("image/png" in o.get("data", {}) for o in outputs), "every notebook shows a plot"


def test_install_cell_names_a_folder_that_shadows_the_package(tmp_path):
    """A folder named fastscale_jax in the working directory (not a clone: no pyproject.toml)
    is imported as an empty namespace package in front of an editable install; the install
    cell stops with what to do instead of failing later with an AttributeError."""
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code")
    (tmp_path / "fastscale_jax").mkdir()
    proc = subprocess.run([sys.executable, "-c", cell], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode == 0:  # a regular (non-editable) install wins over a namespace folder
        assert "fastscale_jax 0.1.0 from" in proc.stdout
        assert str(tmp_path / "fastscale_jax") not in proc.stdout, proc.stdout
        return
    last = proc.stderr.strip().splitlines()[-1]  # an editable install's finder comes too late
    assert "hides the installed fastscale_jax package" in last and "os.chdir(" in last, last
