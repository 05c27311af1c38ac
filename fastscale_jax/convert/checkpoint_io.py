"""Reading PyTorch checkpoints (.pyth, .pth, .safetensors) and saving converted weights.

A converted model is a directory:

    OUT_DIR/
      fastscale_meta.json   {"format": "fastscale_jax.converted/1", "model": "RegNetY-800MF",
                             "spec": {...spec.to_dict()}, "source": "pycls" | "timm",
                             "source_file": "...", "preprocessing": {"channel_order", "mean",
                             "std", "crop_ratio"}}
      variables/            orbax StandardCheckpointer tree {'params': ..., 'batch_stats': ...}

`load_converted(OUT_DIR)` returns (model name, variables, preprocessing).
"""

from __future__ import annotations

import json
import os

import numpy as np

from fastscale_jax._extras import require
from fastscale_jax.convert.arrays import as_numpy, expected_shapes
from fastscale_jax.convert.preprocessing import preprocessing_for
from fastscale_jax.errors import ConfigError, MissingPathError, PathExistsError
from fastscale_jax.families import spec_from_dict

FORMAT = "fastscale_jax.converted/1"
META_FILE = "fastscale_meta.json"
VARIABLES_DIR = "variables"
# Where the weights sit inside a checkpoint dict, in order of preference.
STATE_KEYS = ("model_state", "state_dict", "model", "state_dict_ema", "model_ema")


def _sniff(path: str) -> str:
    """'safetensors', 'torch' (zip or legacy pickle) or 'unknown', from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 0 < n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _is_state_dict(d) -> bool:
    return isinstance(d, dict) and bool(d) and all(
        isinstance(k, str) and (hasattr(v, "shape") and hasattr(v, "dtype")) for k, v in d.items())


def read_checkpoint(path: str, key: str | None = None, *, trust_pickle: bool = False) -> dict:
    """The state dict (name -> numpy float array) stored in a checkpoint file.

    Formats: pycls .pyth (torch pickle of {'model_state': ..., 'cfg': ...}), timm / torch .pth
    (a state dict, or {'state_dict' | 'model' | 'state_dict_ema': ...}) and .safetensors.
    key: which entry of a checkpoint dict holds the weights (default: the first of
    'model_state', 'state_dict', 'model', 'state_dict_ema', 'model_ema' present).
    Pickled checkpoints are read with torch.load(weights_only=True), which runs no code from
    the file; trust_pickle=True allows any pickle (only for files from a source you trust).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingPathError(f"checkpoint {path!r} does not exist or is not a file")
    kind = _sniff(path)
    if kind == "safetensors":
        load_file = require("safetensors.numpy", "torch", "reading .safetensors").load_file
        try:
            obj = load_file(path)
        except Exception as e:  # noqa: BLE001  (safetensors raises its own error types)
            raise ConfigError(f"{path!r} is not a readable safetensors file: {e}") from e
    elif kind == "torch":
        torch = require("torch", "torch", f"reading the PyTorch checkpoint {path!r}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
        except Exception as e:  # noqa: BLE001
            hint = "" if trust_pickle else (" (read with torch.load(weights_only=True); if the file "
                                            "is from a source you trust, pass trust_pickle=True)")
            raise ConfigError(f"{path!r} could not be read as a PyTorch checkpoint{hint}: "
                             f"{type(e).__name__}: {e}") from e
    else:
        raise ConfigError(f"{path!r} is not a checkpoint: expected a PyTorch pickle (.pyth/.pth) "
                         "or a .safetensors file")
    if not isinstance(obj, dict):
        raise ConfigError(f"{path!r} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    if key is not None:
        if key not in obj:
            raise ConfigError(f"{path!r} has no entry {key!r}; entries: {sorted(map(str, obj))[:20]}")
        obj = obj[key]
    elif not _is_state_dict(obj):
        found = [k for k in STATE_KEYS if _is_state_dict(obj.get(k))]
        if not found:
            raise ConfigError(f"{path!r} holds a dict without weights: expected a state dict or one "
                             f"of the entries {STATE_KEYS}; found {sorted(map(str, obj))[:20]}")
        obj = obj[found[0]]
    if not _is_state_dict(obj):
        raise ConfigError(f"{path!r}: the selected entry is not a state dict (name -> tensor)")
    return {k: as_numpy(v, k) for k, v in obj.items()}


def check_writable(path: str) -> None:
    """ConfigError naming the folder when `path` cannot be created or written (before any
    conversion work)."""
    import tempfile

    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write the output directory {path!r} ({e.strerror}); choose "
                          "a folder you can write to") from None


def save_converted(path: str, variables: dict, spec, *, source: str, preprocessing: dict | None = None,
                   source_file: str | None = None) -> str:
    """Writes converted `variables` of `spec` to the directory `path` (see module docstring).

    preprocessing defaults to preprocessing_for(source, spec). Returns the absolute path.
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    vdir = os.path.join(path, VARIABLES_DIR)
    if os.path.exists(vdir):
        raise PathExistsError(f"{vdir!r} exists; choose a new output directory")
    check_writable(path)
    tree = {c: variables.get(c, {}) for c in ("params", "batch_stats")}
    tree = _map(lambda x: np.asarray(x, np.float32), tree)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(vdir, tree)
    ckptr.wait_until_finished()
    meta = {"format": FORMAT, "model": spec.name, "spec": spec.to_dict(), "source": source,
            "source_file": os.path.abspath(source_file) if source_file else None,
            "preprocessing": preprocessing or preprocessing_for(source, spec)}
    with open(os.path.join(path, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return path


def _map(fn, tree):
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    return fn(tree)


def read_converted_meta(path: str) -> dict:
    """The JSON sidecar of a converted model directory (model, spec, source, preprocessing)."""
    meta_path = os.path.join(os.fspath(path), META_FILE)
    if not os.path.isfile(meta_path):
        raise ConfigError(f"{os.fspath(path)!r} is not a converted model directory (no {META_FILE}; "
                         "create one with python -m fastscale_jax.convert)")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{meta_path!r}: unknown format {meta.get('format')!r} (expected {FORMAT!r})")
    return meta


def load_converted(path: str):
    """(model name, variables {'params', 'batch_stats'} as numpy, preprocessing dict).

    The full spec is read_converted_meta(path)['spec'] (spec_from_dict turns it into a spec),
    for models that are not in the zoo (e.g. a changed num_classes).
    """
    import jax
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    meta = read_converted_meta(path)
    spec = spec_from_dict(meta["spec"])
    abstract: dict = {}
    for p, shape in expected_shapes(spec).items():
        node = abstract
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = jax.ShapeDtypeStruct(shape, np.float32)
    restored = ocp.StandardCheckpointer().restore(os.path.join(path, VARIABLES_DIR), abstract)
    variables = _map(np.asarray, restored)
    prep = dict(meta["preprocessing"])
    prep["mean"], prep["std"] = tuple(prep["mean"]), tuple(prep["std"])
    return meta["model"], variables, prep
