"""PyTorch state-dict names -> Flax variable paths, for pycls and timm checkpoints.

A *layer table* lists, for one spec and one naming scheme, every layer that holds weights:
(torch module prefix, flax module path, kind). Kinds:

- 'conv':   weight [O, I/groups, kh, kw] -> params/<path>/kernel [kh, kw, I/groups, O]
- 'conv_b': a conv with a bias (SE layers): weight as 'conv', bias -> params/<path>/bias
- 'linear': weight [out, in] -> params/<path>/kernel [in, out]; bias -> params/<path>/bias
- 'bn':     weight -> params/<path>/scale, bias -> params/<path>/bias,
            running_mean -> batch_stats/<path>/mean, running_var -> batch_stats/<path>/var

The tables are the weight layers of `families.layer_plan(spec)`, the plan the Flax modules
are built from, renamed by the spec's family module (its per-source rules), so a spec and its
table cannot disagree on which layers exist.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastscale_jax.errors import ConfigError
from fastscale_jax.families import family_of, layer_plan
from fastscale_jax.plan import part_weights

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


def layer_table(spec, source: str) -> list[Layer]:
    """Every weight-holding layer of `spec` as named by `source` ('pycls' or 'timm'), in the
    source's order (pycls: a block's shortcut before its branch; timm: after it). The names
    come from the spec's family module (`Family.weight_names`)."""
    if source not in SOURCES:
        raise ConfigError(f"unknown checkpoint source {source!r}; valid: {SOURCES}")
    name, shortcut_first = family_of(spec).weight_names(spec, source)
    return [Layer(name(part, path), path, kind) for part in layer_plan(spec)
            for path, kind in part_weights(part, shortcut_first)]
