"""Experiment configs, one per file: `get_config(arg)` returns an ml_collections.ConfigDict.

This folder is installed as the package `fastscale_jax.configs`, so a config can be named by
file (`--config configs/regnetz_dWr.py:demo`) or, from any directory and from an installed
wheel, by its packaged name (`--config regnetz_dWr:demo`):

    from fastscale_jax import configs
    configs.names()                      # ['alpha_sweep', 'cifar10', ..., 'rsb']
    config = configs.load("regnetz_dWr:demo")
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """The packaged configs' names (file names without .py)."""
    return sorted(f[:-3] for f in os.listdir(_HERE) if f.endswith(".py") and not f.startswith("_"))


def resolve(config: str) -> str:
    """'FILE.py[:arg]' (an existing file) or 'NAME[:arg]' (a packaged config) -> 'FILE.py[:arg]'.

    Raises FileNotFoundError naming both ways when it is neither.
    """
    path, sep, arg = config.partition(":")
    if os.path.isfile(path):
        return config
    name = os.path.basename(path)[:-3] if path.endswith(".py") else path
    if name in names() and (path == name or not os.path.dirname(path)
                            or os.path.basename(os.path.dirname(path)) == "configs"):
        return os.path.join(_HERE, name + ".py") + sep + arg
    from fastscale_jax.errors import MissingPathError

    known = names()
    folded = [n for n in known if n.lower() == name.lower()]
    close = folded or [n for n in known if n.lower().startswith(name.lower())] or \
        difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise MissingPathError(f"config {path!r} is neither a file nor a packaged config.{hint} "
                           f"Packaged: {', '.join(known)}")


def load(config: str):
    """The ConfigDict of 'NAME[:arg]' or 'FILE.py[:arg]' (what `--config` takes)."""
    path, _, arg = resolve(config).partition(":")
    if os.path.dirname(os.path.abspath(path)) == _HERE:
        module = importlib.import_module(f"{__name__}.{os.path.basename(path)[:-3]}")
    else:
        spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
