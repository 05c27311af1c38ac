"""PyTorch state-dict names -> Flax variable paths, for pycls and timm checkpoints.

A *layer table* lists, for one spec and one naming scheme, every layer that holds weights:
(torch module prefix, flax module path, kind). Kinds:

- 'conv':   weight [O, I/groups, kh, kw] -> params/<path>/kernel [kh, kw, I/groups, O]
- 'conv_b': a conv with a bias (SE layers): weight as 'conv', bias -> params/<path>/bias
- 'linear': weight [out, in] -> params/<path>/kernel [in, out]; bias -> params/<path>/bias
- 'bn':     weight -> params/<path>/scale, bias -> params/<path>/bias,
            running_mean -> batch_stats/<path>/mean, running_var -> batch_stats/<path>/var

The tables are the weight layers of `plan.layer_plan(spec)`, the plan the Flax modules are
built from, renamed by per-source rules, so a spec and its table cannot disagree on which
layers exist.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastscale_jax.plan import layer_plan, part_weights

SOURCES = ("pycls", "timm")


class Layer(NamedTuple):
    torch: str          # module prefix in the state dict, e.g. 's1.b1.f.a'
    flax: tuple         # module path in the Flax variables, e.g. ('s1_b1', 'f', 'a')
    kind: str           # 'conv' | 'conv_b' | 'linear' | 'bn'


# (torch parameter suffix, flax collection, flax leaf name, transform) per layer kind.
_TENSORS = {
    "conv": (("weight", "params", "kernel", "conv"),),
    "conv_b": (("weight", "params", "kernel", "conv"), ("bias", "params", "bias", None)),
    "linear": (("weight", "params", "kernel", "linear"), ("bias", "params", "bias", None)),
    "bn": (("weight", "params", "scale", None), ("bias", "params", "bias", None),
           ("running_mean", "batch_stats", "mean", None), ("running_var", "batch_stats", "var", None)),
}


def to_flax(array: np.ndarray, transform):
    """A torch tensor's values in the Flax layout (conv OIHW -> HWIO, linear [o,i] -> [i,o])."""
    if transform == "conv" and array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))
    if transform == "linear" and array.ndim == 2:
        return np.transpose(array, (1, 0))
    return array


def to_torch_shape(shape: tuple, transform) -> tuple:
    """The torch shape of a Flax leaf of `shape` (inverse of to_flax), for error messages."""
    if transform == "conv" and len(shape) == 4:
        kh, kw, i, o = shape
        return (o, i, kh, kw)
    if transform == "linear" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def tensor_table(layers):
    """[(torch name, (collection, *flax path, leaf), transform)] for every tensor of `layers`."""
    out = []
    for layer in layers:
        for suffix, coll, leaf, tr in _TENSORS[layer.kind]:
            out.append((f"{layer.torch}.{suffix}", (coll, *layer.flax, leaf), tr))
    return out


# ------------------------------------------------------------------------------------------
# Names come from the layer plan's Flax paths by per-source renaming rules.
#
# pycls (names are the same in pycls 0.1.1 and pycls master, whose model zoo .pyth files hold
# exactly these names): the Flax path with '.' for '/' and '_' in 's1_b1', SE convs as
# f_ex.0 / f_ex.2; the vanilla block holds a, a_bn, b, b_bn itself (no 'f').

_PYCLS_SE = {"reduce": "f_ex.0", "expand": "f_ex.2"}


def _pycls_name(spec, part, path) -> str:
    vanilla = getattr(spec, "block_type", None) == "vanilla_block"
    rest = [_PYCLS_SE.get(k, k) for k in path[1:] if not (vanilla and k == "f")]
    return ".".join([path[0].replace("_", "."), *rest])


# timm: RegNetX/Y/Z (timm.models.regnet), ResNet/ResNeXt (timm.models.resnet, res_stem_in
# specs), EfficientNet (timm.models.efficientnet, the non-'tf_' variants). Per scheme: stem and
# head names, the block prefix, and block layer names by the last element of the Flax path.

_REGNET_BLOCK = {"a": "conv1.conv", "a_bn": "conv1.bn", "b": "conv2.conv", "b_bn": "conv2.bn",
                 "reduce": "se.fc1", "expand": "se.fc2", "c": "conv3.conv", "c_bn": "conv3.bn",
                 "proj": "downsample.conv", "bn": "downsample.bn"}
_RESNET_BLOCK = {"a": "conv1", "a_bn": "bn1", "b": "conv2", "b_bn": "bn2", "c": "conv3",
                 "c_bn": "bn3", "proj": "downsample.0", "bn": "downsample.1"}
_EFFNET_SE = {"reduce": "se.conv_reduce", "expand": "se.conv_expand"}
_EFFNET_DS = {"dwise": "conv_dw", "dwise_bn": "bn1", "lin_proj": "conv_pw", "lin_proj_bn": "bn2",
              **_EFFNET_SE}  # timm DepthwiseSeparableConv (no expansion): dw, bn1, se, pw, bn2
_EFFNET_IR = {"exp": "conv_pw", "exp_bn": "bn1", "dwise": "conv_dw", "dwise_bn": "bn2",
              "lin_proj": "conv_pwl", "lin_proj_bn": "bn3", **_EFFNET_SE}  # InvertedResidual

_TIMM = {  # scheme: (stem and head names, block prefix, block layer names)
    "regnet": ({"stem.conv": "stem.conv", "stem.bn": "stem.bn", "head.conv": "final_conv.conv",
                "head.bn": "final_conv.bn", "head.fc": "head.fc"},
               "s{s}.b{i}", lambda b: _REGNET_BLOCK),
    "resnet": ({"stem.conv": "conv1", "stem.bn": "bn1", "head.fc": "fc"},
               "layer{s}.{i0}", lambda b: _RESNET_BLOCK),
    "effnet": ({"stem.conv": "conv_stem", "stem.bn": "bn1", "head.conv": "conv_head",
                "head.conv_bn": "bn2", "head.fc": "classifier"},
               "blocks.{s0}.{i0}", lambda b: _EFFNET_DS if b.w_b == b.w_in else _EFFNET_IR),
}


def _timm_name(scheme, part, path) -> str:
    ends, prefix, block_names = _TIMM[scheme]
    b = part.block
    if b is None:
        return ends[".".join(path)]
    block = prefix.format(s=b.stage, i=b.index, s0=b.stage - 1, i0=b.index - 1)
    return f"{block}.{block_names(b)[path[-1]]}"


def _table(spec, name, shortcut_first: bool) -> list[Layer]:
    return [Layer(name(part, path), path, kind) for part in layer_plan(spec)
            for path, kind in part_weights(part, shortcut_first)]


def _timm_scheme(spec) -> str:
    """timm's model file for `spec`, or ValueError when timm has no such network."""
    if spec.family == "effnet":
        return "effnet"
    if spec.stem_type == "res_stem_in":
        if spec.block_type not in ("res_basic_block", "res_bottleneck_block") or spec.head_w:
            raise ValueError(f"{spec.name}: timm ResNets have basic or bottleneck blocks and no "
                             f"head conv; cannot map block_type {spec.block_type!r}, head_w {spec.head_w}")
        return "resnet"
    if spec.stem_type != "simple_stem_in" or not spec.block_type.startswith("res_bottleneck"):
        raise ValueError(f"{spec.name}: timm RegNets have a simple stem and bottleneck blocks; "
                         f"cannot map stem {spec.stem_type!r} with {spec.block_type!r}")
    return "regnet"


def layer_table(spec, source: str) -> list[Layer]:
    """Every weight-holding layer of `spec` as named by `source` ('pycls' or 'timm'), in the
    source's order (pycls: a block's shortcut before its branch; timm: after it)."""
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; valid: {SOURCES}")
    if getattr(spec, "family", None) not in ("anynet", "effnet"):
        raise ValueError(f"expected an AnyNetSpec or EffNetSpec, got {type(spec).__name__}")
    if source == "pycls":
        return _table(spec, lambda part, path: _pycls_name(spec, part, path), True)
    scheme = _timm_scheme(spec)
    return _table(spec, lambda part, path: _timm_name(scheme, part, path), False)
