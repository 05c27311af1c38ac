"""pycls / timm PyTorch weights -> Flax variables for `fastscale_jax.build_model(spec)`.

    import fastscale_jax as fs
    spec = fs.get_model_spec("RegNetY-800MF")
    sd = fs.convert.read_checkpoint("RegNetY-800MF_dds_8gpu.pyth")   # name -> numpy array
    variables = fs.convert.from_pycls(sd, spec)                       # {'params', 'batch_stats'}
    logits = fs.build_model(spec).apply(variables, images_bgr_nhwc)   # see preprocessing_for

    fs.convert.save_converted("out/regnety_800mf", variables, spec, source="pycls")
    name, variables, prep = fs.convert.load_converted("out/regnety_800mf")

Command line (see `python -m fastscale_jax.convert --help`):

    python -m fastscale_jax.convert --source pycls --model RegNetY-800MF CKPT.pyth OUT_DIR

Every tensor of the state dict must be used exactly once (`num_batches_tracked` is ignored) and
every shape must match the Flax model's; otherwise a ConfigError names the offending tensors.
Conv kernels are transposed OIHW -> HWIO, linear weights [out, in] -> [in, out].

Inputs differ by source: pycls networks were trained on BGR images, timm networks on RGB
(`preprocessing_for`). Importing this module does not import torch; reading a pickled
checkpoint (.pyth / .pth) does.
"""

from __future__ import annotations

import numpy as np

from fastscale_jax.convert.arrays import as_numpy, expected_shapes
from fastscale_jax.convert.checkpoint_io import (FORMAT, load_converted, read_checkpoint,
                                                 read_converted_meta, save_converted,
                                                 spec_from_dict)
from fastscale_jax.convert.mapping import SOURCES, layer_table, tensor_table, to_flax, to_torch_shape
from fastscale_jax.convert.preprocessing import preprocessing_for
from fastscale_jax.errors import ConfigError

__all__ = ["FORMAT", "SOURCES", "expected_shapes", "from_pycls", "from_state_dict", "from_timm",
           "layer_table", "load_converted", "preprocessing_for", "read_checkpoint",
           "read_converted_meta", "save_converted", "spec_from_dict"]

IGNORED_SUFFIXES = ("num_batches_tracked",)
_MAX_LISTED = 25


def _listing(names):
    names = list(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _strip_prefix(names):
    """Drop a 'module.' (DataParallel) or 'model.' wrapper prefix common to every name."""
    for prefix in ("module.", "model."):
        if names and all(n.startswith(prefix) for n in names):
            return {n: n[len(prefix):] for n in names}
    return {n: n for n in names}


def from_state_dict(state_dict, spec, source: str) -> dict:
    """Flax variables {'params', 'batch_stats'} of build_model(spec) from a `source` state dict.

    state_dict: mapping name -> torch.Tensor or numpy array (a pycls 'model_state' or a timm
    state dict). Raises ConfigError naming the first tensor whose shape differs from the model's
    (with both shapes), or listing the tensors the model lacks and the ones nobody used.
    """
    if not hasattr(state_dict, "items"):
        raise ConfigError(f"expected a state dict (name -> tensor), got {type(state_dict).__name__}")
    renamed = _strip_prefix([k for k in state_dict])
    sd = {renamed[k]: v for k, v in state_dict.items()
          if not str(k).endswith(IGNORED_SUFFIXES)}
    table = tensor_table(layer_table(spec, source))
    shapes = expected_shapes(spec)
    paths = [p for _, p, _ in table]
    if set(paths) != set(shapes) or len(paths) != len(set(paths)):  # a bug in mapping.py
        raise RuntimeError(f"internal: the {source} name table of {spec.name} does not cover the "
                           f"Flax model: {sorted(set(shapes) ^ set(paths))[:10]}")
    names = [n for n, _, _ in table]
    known = set(names)
    missing = [n for n in names if n not in sd]
    unused = [n for n in sd if n not in known]
    what = f"{source} state dict for {spec.name}"
    hint = ("; is the checkpoint for another model or source? (a different number of classes "
            "needs spec.replace(num_classes=...))")
    variables = {"params": {}, "batch_stats": {}}
    for name, path, tr in table:
        if name not in sd:
            continue
        arr = as_numpy(sd[name], name)
        want = shapes[path]
        got = to_flax(arr, tr)
        if tuple(got.shape) != want:
            extra = ""
            if missing or unused:
                extra = f" ({len(missing)} tensors missing, {len(unused)} unused as well)"
            raise ConfigError(
                f"{what}: shape mismatch at {name!r}: checkpoint {tuple(arr.shape)}, model expects "
                f"{to_torch_shape(want, tr)} (Flax {'/'.join(path)} {want}){extra}{hint}")
        node = variables
        for k in path[:-1]:
            node = node.setdefault(k, {})
        # A copy: torch's .numpy() shares memory with the module, which may keep training.
        node[path[-1]] = np.array(got, dtype=np.float32, order="C", copy=True)
    if missing or unused:
        raise ConfigError(f"{what}: tensors do not match the model{hint}\n"
                         f"  missing from the checkpoint ({len(missing)}): {_listing(missing)}\n"
                         f"  in the checkpoint but unused ({len(unused)}): {_listing(unused)}")
    return variables


def from_pycls(state_dict, spec) -> dict:
    """Flax variables for build_model(spec) from a pycls state dict (a .pyth 'model_state').

    Names are the same in pycls 0.1.1 and pycls master (stem.conv, s1.b1.f.a, f.se.f_ex.0,
    proj/bn shortcut, head.conv/head.bn/head.fc, EffNet exp/dwise/lin_proj). Inputs: BGR,
    see preprocessing_for('pycls').
    """
    return from_state_dict(state_dict, spec, "pycls")


def from_timm(state_dict, spec) -> dict:
    """Flax variables for build_model(spec) from a timm state dict.

    timm.models.regnet (regnetx_*, regnety_*, regnetz_005/040 style: stem.conv, s1.b1.conv1.conv,
    se.fc1, downsample.conv, final_conv, head.fc), timm.models.resnet (resnet50, resnext50_32x4d:
    conv1, layer1.0.conv1, downsample.0, fc) and timm.models.efficientnet (efficientnet_b0..:
    conv_stem, blocks.i.j.conv_dw, conv_head, classifier). The 'tf_' EfficientNets use 'same'
    padding and BN eps 1e-3, which these models do not; their weights load but compute a
    different function. Inputs: RGB, see preprocessing_for('timm').
    """
    return from_state_dict(state_dict, spec, "timm")
