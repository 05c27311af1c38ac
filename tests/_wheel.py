"""The project's wheel, built once per test process, and fresh venvs that install it.

Two kinds of venv (`python -m venv`, no system site-packages):
  * `core_venv`: the wheel with its core dependencies only, installed by pip (from its cache or
    the index) -- a venv without the train, cpu and torch extras;
  * `wheel_venv`: the wheel installed (not editable) into the venv's own site-packages, its
    dependencies visible through a .pth file that lists this test environment's site-packages.
    A .pth line only appends a directory to sys.path (the .pth files inside it, e.g. the
    editable install's finder, are not run), so `import fastscale_jax` finds the wheel's copy;
    the notebook test asserts it.
"""

from __future__ import annotations

import atexit
import functools
import os
import pathlib
import shutil
import site
import subprocess
import sys
import tempfile

from conftest import ROOT


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _tmpdir(prefix: str) -> pathlib.Path:
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# What the build reads; copied so that no stale build/ folder of the tree reaches the wheel.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "fastscale_jax", "configs")


@functools.lru_cache(maxsize=None)
def build_wheel() -> pathlib.Path:
    """pip wheel --no-deps of a clean copy of the source tree; the .whl's path."""
    src, out = _tmpdir("fastscale_src_"), _tmpdir("fastscale_wheel_")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, src], timeout=600)
    (whl,) = out.glob("fastscale_jax-*.whl")
    return whl


def venv_python(venv: pathlib.Path) -> pathlib.Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _site_packages(python) -> pathlib.Path:
    out = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    return pathlib.Path(out.stdout.strip())


def _pip(python, *args, timeout=900):
    # this environment's pip, installing into the venv's interpreter (pip --python)
    return _run([sys.executable, "-m", "pip", "--python", python, *args], timeout=timeout)


@functools.lru_cache(maxsize=None)
def core_venv() -> pathlib.Path:
    """A fresh venv with the wheel and its core dependencies only; returns its python."""
    venv = _tmpdir("fastscale_core_venv_")
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv_python(venv)
    _pip(python, "install", "-q", build_wheel())
    return python


@functools.lru_cache(maxsize=None)
def wheel_venv(extras: str = "train,cpu,torch") -> pathlib.Path:
    """A fresh venv with the wheel installed and this environment's packages as its
    dependencies (which must satisfy `extras`: pip resolves them, offline); returns its python."""
    venv = _tmpdir("fastscale_wheel_venv_")
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv_python(venv)
    deps = [p for p in site.getsitepackages() if os.path.isdir(p)]
    (_site_packages(python) / "_test_dependencies.pth").write_text("\n".join(deps) + "\n")
    _pip(python, "install", "-q", "--no-index", "--no-deps", "--ignore-installed", build_wheel())
    _pip(python, "install", "-q", "--no-index", f"{build_wheel()}[{extras}]")
    return python
