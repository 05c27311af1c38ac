"""Optional dependencies ('extras' of the fastscale-jax package) and the one-line error that
names the extra to install when a feature needs a missing one.

    tf = require("tensorflow", "train", "the input pipeline (fastscale_jax.data)")

Extras (pyproject.toml): train (TensorFlow + TFDS: training input; tensorboard: its events),
cpu (oneDNN convolutions on Linux x86_64), torch (pycls / timm checkpoint conversion),
cuda12 / tpu (JAX for accelerators), all (train + cpu + torch).
"""

from __future__ import annotations

import importlib
import importlib.util

from fastscale_jax.errors import MissingExtraError


class MissingExtra(MissingExtraError):
    """A feature needs an optional dependency that is not installed; the message says which
    `pip install 'fastscale-jax[extra]'` brings it."""


def install_line(extra: str) -> str:
    """The pip command that installs `extra` ("pip install 'fastscale-jax[train]'")."""
    return f"pip install 'fastscale-jax[{extra}]'"


def _missing(module: str, extra: str, feature: str) -> MissingExtra:
    return MissingExtra(f"{feature} needs {module.split('.')[0]}, which is not installed: "
                        f"{install_line(extra)}")


def check(module: str, extra: str, feature: str) -> None:
    """Raise MissingExtra unless `module` is installed (found without importing it)."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise _missing(module, extra, feature)


def require(module: str, extra: str, feature: str):
    """Import and return `module`; raise MissingExtra (one line) if it is not installed.

    An ImportError from *inside* an installed module (a broken install, a missing system
    library) is re-raised as it is: installing the extra again would not fix it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if e.name is None or e.name.split(".")[0] != top:
            raise
        raise _missing(module, extra, feature) from None
