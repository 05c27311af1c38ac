"""PyTorch state-dict names -> Flax variable paths, for pycls and timm checkpoints.

A *layer table* lists, for one spec and one naming scheme, every layer that holds weights:
(torch module prefix, flax module path, kind). Kinds:

- 'conv':   weight [O, I/groups, kh, kw] -> params/<path>/kernel [kh, kw, I/groups, O]
- 'conv_b': a conv with a bias (SE layers): weight as 'conv', bias -> params/<path>/bias
- 'linear': weight [out, in] -> params/<path>/kernel [in, out]; bias -> params/<path>/bias
- 'bn':     weight -> params/<path>/scale, bias -> params/<path>/bias,
            running_mean -> batch_stats/<path>/mean, running_var -> batch_stats/<path>/var

The tables are walked from `specs.block_plan`, the same plan the Flax modules are built from,
so a spec and its table cannot disagree on which layers exist.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastscale_jax.specs import block_plan

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
# pycls (names are the same in pycls 0.1.1 and pycls master, whose model zoo .pyth files
# hold exactly these names).


def _pycls_anynet(spec):
    L = [Layer("stem.conv", ("stem", "conv"), "conv"), Layer("stem.bn", ("stem", "bn"), "bn")]
    bt = spec.block_type
    for b in block_plan(spec):
        t, f = f"s{b.stage}.b{b.index}", (f"s{b.stage}_b{b.index}",)
        # pycls's vanilla block holds a, a_bn, b, b_bn itself; every other block under 'f'.
        tf = t if bt == "vanilla_block" else f"{t}.f"
        ff = (*f, "f")
        if b.proj:
            L += [Layer(f"{t}.proj", (*f, "proj"), "conv"), Layer(f"{t}.bn", (*f, "bn"), "bn")]
        L += [Layer(f"{tf}.a", (*ff, "a"), "conv"), Layer(f"{tf}.a_bn", (*ff, "a_bn"), "bn"),
              Layer(f"{tf}.b", (*ff, "b"), "conv"), Layer(f"{tf}.b_bn", (*ff, "b_bn"), "bn")]
        if bt.startswith("res_bottleneck"):
            if b.w_se:
                L += [Layer(f"{tf}.se.f_ex.0", (*ff, "se", "reduce"), "conv_b"),
                      Layer(f"{tf}.se.f_ex.2", (*ff, "se", "expand"), "conv_b")]
            L += [Layer(f"{tf}.c", (*ff, "c"), "conv"), Layer(f"{tf}.c_bn", (*ff, "c_bn"), "bn")]
    if spec.head_w:
        L += [Layer("head.conv", ("head", "conv"), "conv"), Layer("head.bn", ("head", "bn"), "bn")]
    return L + [Layer("head.fc", ("head", "fc"), "linear")]


def _pycls_effnet(spec):
    L = [Layer("stem.conv", ("stem", "conv"), "conv"), Layer("stem.bn", ("stem", "bn"), "bn")]
    for b in block_plan(spec):
        t, f = f"s{b.stage}.b{b.index}", (f"s{b.stage}_b{b.index}",)
        if b.w_b != b.w_in:
            L += [Layer(f"{t}.exp", (*f, "exp"), "conv"), Layer(f"{t}.exp_bn", (*f, "exp_bn"), "bn")]
        L += [Layer(f"{t}.dwise", (*f, "dwise"), "conv"), Layer(f"{t}.dwise_bn", (*f, "dwise_bn"), "bn")]
        if b.w_se:
            L += [Layer(f"{t}.se.f_ex.0", (*f, "se", "reduce"), "conv_b"),
                  Layer(f"{t}.se.f_ex.2", (*f, "se", "expand"), "conv_b")]
        L += [Layer(f"{t}.lin_proj", (*f, "lin_proj"), "conv"),
              Layer(f"{t}.lin_proj_bn", (*f, "lin_proj_bn"), "bn")]
    return L + [Layer("head.conv", ("head", "conv"), "conv"),
                Layer("head.conv_bn", ("head", "conv_bn"), "bn"),
                Layer("head.fc", ("head", "fc"), "linear")]


# ------------------------------------------------------------------------------------------
# timm: RegNetX/Y/Z (timm.models.regnet), ResNet/ResNeXt (timm.models.resnet, res_stem_in
# specs), EfficientNet (timm.models.efficientnet, the non-'tf_' variants).


def _timm_regnet(spec):
    L = [Layer("stem.conv", ("stem", "conv"), "conv"), Layer("stem.bn", ("stem", "bn"), "bn")]
    for b in block_plan(spec):
        t, f = f"s{b.stage}.b{b.index}", (f"s{b.stage}_b{b.index}",)
        ff = (*f, "f")
        L += [Layer(f"{t}.conv1.conv", (*ff, "a"), "conv"), Layer(f"{t}.conv1.bn", (*ff, "a_bn"), "bn"),
              Layer(f"{t}.conv2.conv", (*ff, "b"), "conv"), Layer(f"{t}.conv2.bn", (*ff, "b_bn"), "bn")]
        if b.w_se:
            L += [Layer(f"{t}.se.fc1", (*ff, "se", "reduce"), "conv_b"),
                  Layer(f"{t}.se.fc2", (*ff, "se", "expand"), "conv_b")]
        L += [Layer(f"{t}.conv3.conv", (*ff, "c"), "conv"), Layer(f"{t}.conv3.bn", (*ff, "c_bn"), "bn")]
        if b.proj:
            L += [Layer(f"{t}.downsample.conv", (*f, "proj"), "conv"),
                  Layer(f"{t}.downsample.bn", (*f, "bn"), "bn")]
    if spec.head_w:
        L += [Layer("final_conv.conv", ("head", "conv"), "conv"),
              Layer("final_conv.bn", ("head", "bn"), "bn")]
    return L + [Layer("head.fc", ("head", "fc"), "linear")]


def _timm_resnet(spec):
    L = [Layer("conv1", ("stem", "conv"), "conv"), Layer("bn1", ("stem", "bn"), "bn")]
    n = 3 if spec.block_type == "res_bottleneck_block" else 2
    names = "abc"
    for b in block_plan(spec):
        t, f = f"layer{b.stage}.{b.index - 1}", (f"s{b.stage}_b{b.index}",)
        for j in range(n):
            L += [Layer(f"{t}.conv{j + 1}", (*f, "f", names[j]), "conv"),
                  Layer(f"{t}.bn{j + 1}", (*f, "f", f"{names[j]}_bn"), "bn")]
        if b.proj:
            L += [Layer(f"{t}.downsample.0", (*f, "proj"), "conv"),
                  Layer(f"{t}.downsample.1", (*f, "bn"), "bn")]
    return L + [Layer("fc", ("head", "fc"), "linear")]


def _timm_effnet(spec):
    L = [Layer("conv_stem", ("stem", "conv"), "conv"), Layer("bn1", ("stem", "bn"), "bn")]
    for b in block_plan(spec):
        t, f = f"blocks.{b.stage - 1}.{b.index - 1}", (f"s{b.stage}_b{b.index}",)
        se = [Layer(f"{t}.se.conv_reduce", (*f, "se", "reduce"), "conv_b"),
              Layer(f"{t}.se.conv_expand", (*f, "se", "expand"), "conv_b")] if b.w_se else []
        if b.w_b == b.w_in:  # timm DepthwiseSeparableConv: dw, bn1, se, pw, bn2
            L += [Layer(f"{t}.conv_dw", (*f, "dwise"), "conv"), Layer(f"{t}.bn1", (*f, "dwise_bn"), "bn"),
                  *se, Layer(f"{t}.conv_pw", (*f, "lin_proj"), "conv"),
                  Layer(f"{t}.bn2", (*f, "lin_proj_bn"), "bn")]
        else:  # timm InvertedResidual: pw, bn1, dw, bn2, se, pwl, bn3
            L += [Layer(f"{t}.conv_pw", (*f, "exp"), "conv"), Layer(f"{t}.bn1", (*f, "exp_bn"), "bn"),
                  Layer(f"{t}.conv_dw", (*f, "dwise"), "conv"), Layer(f"{t}.bn2", (*f, "dwise_bn"), "bn"),
                  *se, Layer(f"{t}.conv_pwl", (*f, "lin_proj"), "conv"),
                  Layer(f"{t}.bn3", (*f, "lin_proj_bn"), "bn")]
    return L + [Layer("conv_head", ("head", "conv"), "conv"), Layer("bn2", ("head", "conv_bn"), "bn"),
                Layer("classifier", ("head", "fc"), "linear")]


def layer_table(spec, source: str) -> list[Layer]:
    """Every weight-holding layer of `spec` as named by `source` ('pycls' or 'timm')."""
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; valid: {SOURCES}")
    family = getattr(spec, "family", None)
    if family not in ("anynet", "effnet"):
        raise ValueError(f"expected an AnyNetSpec or EffNetSpec, got {type(spec).__name__}")
    if source == "pycls":
        return _pycls_anynet(spec) if family == "anynet" else _pycls_effnet(spec)
    if family == "effnet":
        return _timm_effnet(spec)
    if spec.stem_type == "res_stem_in":
        if spec.block_type not in ("res_basic_block", "res_bottleneck_block") or spec.head_w:
            raise ValueError(f"{spec.name}: timm ResNets have basic or bottleneck blocks and no "
                             f"head conv; cannot map block_type {spec.block_type!r}, head_w {spec.head_w}")
        return _timm_resnet(spec)
    if spec.stem_type != "simple_stem_in" or not spec.block_type.startswith("res_bottleneck"):
        raise ValueError(f"{spec.name}: timm RegNets have a simple stem and bottleneck blocks; "
                         f"cannot map stem {spec.stem_type!r} with {spec.block_type!r}")
    return _timm_regnet(spec)
