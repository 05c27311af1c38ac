"""Model specs: networks as plain, frozen data (no jax import) -- what every family shares.

A spec is a short list of per-stage numbers (pycls's "architecture as data"). Each model family
(`fastscale_jax/families/`: AnyNet, EfficientNet, EfficientNetV2) defines its spec type on top
of `SpecBase`, and `fastscale_jax.families.layer_plan(spec)` expands a spec into every layer:
the one plan the Flax modules, the analytic complexity and the checkpoint converter derive from.

Specs are immutable; use `spec.replace(field=value)` (validated) to derive new ones. This module
also holds pycls's rounding rules that the RegNet generator, the families and the scaler share
(numpy / Python round-half-to-even, as pycls).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import NamedTuple

from fastscale_jax.errors import ConfigError

ACTIVATIONS = ("relu", "silu", "swish", "gelu")
MIN_RESOLUTION = 32


def spec_error(spec_name: str, field: str, msg: str) -> ConfigError:
    return ConfigError(f"{spec_name}: invalid '{field}': {msg}")


def as_tuple(name: str, field: str, values, cast) -> tuple:
    """`values` as a tuple of `cast` (int or float), refusing what the cast would change
    (32.5 as an int width, True as a number, a string)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise spec_error(name, field, f"{values!r} (expected a list of numbers, one per stage)")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise spec_error(name, field, f"{list(values)} (entries must be numbers)")
        if cast is int and (not math.isfinite(float(v)) or float(v) != int(v)):
            raise spec_error(name, field, f"{list(values)} (entries must be integers)")
        out.append(cast(v))
    return tuple(out)


class SpecBase:
    """What every family's spec has: per-stage lists (`_stage_fields`), stem_w, head_w, se_r,
    activation, num_classes, resolution / test_resolution; the family's name in `family`."""

    family = ""
    _stage_fields: tuple = ()
    _stage_casts: dict = {}

    def replace(self, **changes):
        """A copy with some fields changed (validated like a new spec)."""
        return dataclasses.replace(self, **changes)

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["family"] = self.family
        return d

    def _normalise_stages(self):
        n = self.name or type(self).__name__
        for f, cast in self._stage_casts.items():  # numeric per-stage lists
            object.__setattr__(self, f, as_tuple(n, f, getattr(self, f), cast))

    def _check_common(self):
        n = self.name or type(self).__name__
        if not isinstance(self.name, str):
            raise spec_error(type(self).__name__, "name", f"{self.name!r} (expected a string)")
        if self.activation not in ACTIVATIONS:
            raise spec_error(n, "activation", f"{self.activation!r}; valid: {ACTIVATIONS}")
        for f in ("resolution", "test_resolution", "num_classes", "stem_w", "head_w"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or int(v) != v:
                raise spec_error(n, f, f"{v!r} (must be an integer)")
            object.__setattr__(self, f, int(v))
        for f in ("resolution", "test_resolution"):
            if getattr(self, f) < MIN_RESOLUTION:
                raise spec_error(n, f, f"{getattr(self, f)} (must be an integer >= {MIN_RESOLUTION})")
        if self.num_classes < 1:
            raise spec_error(n, "num_classes", f"{self.num_classes} (must be a positive integer)")
        lens = {f: len(getattr(self, f)) for f in self._stage_fields}
        if len(set(lens.values())) != 1 or not self.depths:
            raise spec_error(n, "stages", f"per-stage lists must be non-empty and of equal length, "
                                          f"got {lens}")
        for f in ("depths", "widths", "strides"):
            for v in getattr(self, f):
                if v < 1:
                    raise spec_error(n, f, f"{list(getattr(self, f))} (entries must be positive integers)")
        if self.stem_w < 1:
            raise spec_error(n, "stem_w", f"{self.stem_w} (must be a positive integer)")
        if self.head_w < 0:
            raise spec_error(n, "head_w", f"{self.head_w} (must be >= 0; 0 = no head conv)")


def is_spec(obj) -> bool:
    return isinstance(obj, SpecBase)


Spec = SpecBase


class Block(NamedTuple):
    """One block of a network (its layers: the family's part builder)."""

    stage: int          # 1-based stage index
    index: int          # 1-based block index within the stage
    w_in: int
    w_out: int
    stride: int
    w_b: int            # AnyNet: bottleneck width; EfficientNets: expanded width
    groups: int         # groups of the kxk conv (MBConv: w_b, depthwise)
    w_se: int           # SE hidden width (0 = no SE)
    kernel: int
    residual: bool      # the block adds its input (identity shortcut)
    proj: bool          # the block has a 1x1 projection shortcut
    drop_rate: float    # stochastic depth / drop-connect rate of this block
    kind: str = ""      # the family's block type where a family has several (EfficientNetV2)


# ------------------------------------------------------------------------------------
# pycls's rounding rules (shared by the RegNet generator, the families and the scaler).


def adjust_block_compatibility(ws, bs, gs):
    """Make widths, bottleneck multipliers and group widths compatible (as pycls does).

    Group widths are capped at the bottleneck width; bottleneck widths are rounded
    (half-to-even) to a multiple of the group width (of lcm(g, b) for inverted bottlenecks);
    widths are recomputed from the adjusted bottleneck widths.
    """
    ws, bs, gs = list(ws), list(bs), list(gs)
    if not (len(ws) == len(bs) == len(gs)):
        raise ConfigError(f"widths, bot_muls and group_widths differ in length: {ws}, {bs}, {gs}")
    if not all(w > 0 and b > 0 and g > 0 for w, b, g in zip(ws, bs, gs)):
        raise ConfigError(f"widths, bot_muls and group_widths must be positive: {ws}, {bs}, {gs}")
    if not all(b < 1 or b % 1 == 0 for b in bs):
        raise ConfigError(f"bot_muls greater than 1 must be integers: {bs}")
    vs = [int(max(1, w * b)) for w, b in zip(ws, bs)]
    gs = [int(min(g, v)) for g, v in zip(gs, vs)]
    ms = [math.lcm(g, int(b)) if b > 1 else g for g, b in zip(gs, bs)]
    vs = [max(m, int(round(v / m) * m)) for v, m in zip(vs, ms)]
    ws = [int(v / b) for v, b in zip(vs, bs)]
    return ws, bs, gs


def scale_width(w: int, s: float, q: int = 8) -> int:
    """The scaler's width rule: w * s rounded (half-to-even) to a multiple of q, at least q."""
    return max(1, round(w * s / q)) * q


def snap_group_width(g: int) -> int:
    """The scaler's group-width rule: 1, 2, 4, or a multiple of 8."""
    return g if g <= 2 else 4 if g <= 5 else round(g / 8) * 8
