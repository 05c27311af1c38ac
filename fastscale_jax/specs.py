"""Model specs: networks as plain, frozen data (no jax import).

A spec is a short list of per-stage numbers (pycls's "architecture as data"). `block_plan(spec)`
lists its blocks; `fastscale_jax.plan.layer_plan(spec)` expands them into every layer, the one
plan the Flax modules, the analytic complexity and the checkpoint converter all derive from.

Two families:
- `AnyNetSpec`: RegNetX/Y/Z, ResNet, ResNeXt (pycls AnyNet).
- `EffNetSpec`: EfficientNet (pycls EffNet).

Specs are immutable; use `spec.replace(field=value)` (validated) to derive new ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

STEM_TYPES = ("simple_stem_in", "res_stem_in", "res_stem_cifar")
BLOCK_TYPES = ("vanilla_block", "res_basic_block", "res_bottleneck_block",
               "res_bottleneck_linear_block")
ACTIVATIONS = ("relu", "silu", "swish", "gelu")
MIN_RESOLUTION = 32


def _err(spec_name: str, field: str, msg: str) -> ValueError:
    return ValueError(f"{spec_name}: invalid '{field}': {msg}")


def _as_tuple(x, cast):
    return tuple(cast(v) for v in x)


class _SpecBase:
    """Shared validation and helpers of both spec families."""

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

    def _check_common(self):
        n = self.name or type(self).__name__
        if self.activation not in ACTIVATIONS:
            raise _err(n, "activation", f"{self.activation!r}; valid: {ACTIVATIONS}")
        for f in ("resolution", "test_resolution"):
            v = getattr(self, f)
            if int(v) != v or v < MIN_RESOLUTION:
                raise _err(n, f, f"{v} (must be an integer >= {MIN_RESOLUTION})")
        if int(self.num_classes) != self.num_classes or self.num_classes < 1:
            raise _err(n, "num_classes", f"{self.num_classes} (must be a positive integer)")
        lens = {f: len(getattr(self, f)) for f in self._stage_fields}
        if len(set(lens.values())) != 1 or not self.depths:
            raise _err(n, "stages", f"per-stage lists must be non-empty and of equal length, got {lens}")
        for f in ("depths", "widths", "strides"):
            for v in getattr(self, f):
                if int(v) != v or v < 1:
                    raise _err(n, f, f"{list(getattr(self, f))} (entries must be positive integers)")
        if self.stem_w < 1:
            raise _err(n, "stem_w", f"{self.stem_w} (must be a positive integer)")
        if self.head_w < 0:
            raise _err(n, "head_w", f"{self.head_w} (must be >= 0; 0 = no head conv)")
        if not 0.0 <= self.se_r < 1.0:
            raise _err(n, "se_r", f"{self.se_r} (must be in [0, 1); 0 = no SE)")


@dataclasses.dataclass(frozen=True)
class AnyNetSpec(_SpecBase):
    """pycls AnyNet: stem, stages of identical blocks, head (RegNet, ResNet, ResNeXt).

    widths are stage output widths; bot_muls the bottleneck multipliers (bottleneck width =
    round(width * bot_mul); > 1 is an inverted bottleneck, as in RegNetZ); group_widths the
    channels per group of the 3x3 conv; se_r the SE ratio w.r.t. the block's *input* width
    (0 = no SE); head_w > 0 adds a 1x1 conv before pooling. resolution / test_resolution
    are pycls's TRAIN.IM_SIZE / TEST.IM_SIZE in pixels.
    """

    name: str
    stem_type: str
    stem_w: int
    block_type: str
    depths: tuple
    widths: tuple
    strides: tuple
    bot_muls: tuple
    group_widths: tuple
    head_w: int = 0
    se_r: float = 0.0
    activation: str = "relu"
    num_classes: int = 1000
    resolution: int = 224
    test_resolution: int = 256
    zero_init_last_bn: bool = False
    drop_path_rate: float = 0.0

    family = "anynet"
    _stage_fields = ("depths", "widths", "strides", "bot_muls", "group_widths")

    def __post_init__(self):
        for f, cast in (("depths", int), ("widths", int), ("strides", int),
                        ("bot_muls", float), ("group_widths", int)):
            object.__setattr__(self, f, _as_tuple(getattr(self, f), cast))
        self._check_common()
        n = self.name or "AnyNetSpec"
        if self.stem_type not in STEM_TYPES:
            raise _err(n, "stem_type", f"{self.stem_type!r}; valid: {STEM_TYPES}")
        if self.block_type not in BLOCK_TYPES:
            raise _err(n, "block_type", f"{self.block_type!r}; valid: {BLOCK_TYPES}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise _err(n, "drop_path_rate", f"{self.drop_path_rate} (must be in [0, 1))")
        bottleneck = self.block_type.startswith("res_bottleneck")
        for i, (w, b, g) in enumerate(zip(self.widths, self.bot_muls, self.group_widths)):
            if b <= 0 or (b > 1 and b % 1 != 0):
                raise _err(n, "bot_muls", f"stage {i + 1}: {b} (must be > 0, and an integer when > 1)")
            if g < 1:
                raise _err(n, "group_widths", f"stage {i + 1}: {g} (must be a positive integer)")
            if bottleneck:
                w_b = int(round(w * b))
                if w_b % g:
                    raise _err(n, "group_widths", f"stage {i + 1}: group width {g} does not divide the "
                                                  f"bottleneck width {w_b} (= round({w} * {b})); use "
                                                  "adjust_block_compatibility() to fix widths")
        if self.se_r and not bottleneck:
            raise _err(n, "se_r", f"SE is only supported by bottleneck blocks, not {self.block_type!r}")


@dataclasses.dataclass(frozen=True)
class EffNetSpec(_SpecBase):
    """pycls EfficientNet: stem, stages of MBConv blocks, head (1x1 conv, pool, dropout, fc).

    exp_ratios are the MBConv expansion ratios; kernels the depthwise kernel sizes; se_r the
    SE ratio w.r.t. the block input width; dropout the head dropout rate; dc_ratio the
    drop-connect (stochastic depth) rate of residual blocks.
    """

    name: str
    stem_w: int
    depths: tuple
    widths: tuple
    strides: tuple
    exp_ratios: tuple
    kernels: tuple
    se_r: float = 0.25
    head_w: int = 1280
    dropout: float = 0.0
    dc_ratio: float = 0.0
    activation: str = "silu"
    num_classes: int = 1000
    resolution: int = 224
    test_resolution: int = 256

    family = "effnet"
    _stage_fields = ("depths", "widths", "strides", "exp_ratios", "kernels")

    def __post_init__(self):
        for f, cast in (("depths", int), ("widths", int), ("strides", int),
                        ("exp_ratios", float), ("kernels", int)):
            object.__setattr__(self, f, _as_tuple(getattr(self, f), cast))
        self._check_common()
        n = self.name or "EffNetSpec"
        for f in ("dropout", "dc_ratio"):
            if not 0.0 <= getattr(self, f) < 1.0:
                raise _err(n, f, f"{getattr(self, f)} (must be in [0, 1))")
        for k in self.kernels:
            if k < 1 or k % 2 == 0:
                raise _err(n, "kernels", f"{list(self.kernels)} (kernel sizes must be odd)")
        for e in self.exp_ratios:
            if e <= 0:
                raise _err(n, "exp_ratios", f"{list(self.exp_ratios)} (must be > 0)")

    @property
    def group_widths(self) -> tuple:
        """Depthwise convs: one channel per group in every stage."""
        return tuple(1 for _ in self.depths)


Spec = AnyNetSpec | EffNetSpec


# ------------------------------------------------------------------------------------
# RegNet generation (Radosavovic et al. 2020), computed exactly as pycls computes it:
# numpy round-half-to-even everywhere.


def generate_regnet(w_a: float, w_0: int, w_m: float, depth: int, q: int = 8):
    """Per-stage (widths, depths) of the RegNet with parameters (w_a, w_0, w_m, depth).

    Block j has continuous width u_j = w_0 + w_a * j, quantised to w_0 * w_m^round(log_wm(u_j / w_0)),
    then rounded to a multiple of q; consecutive blocks of equal width form a stage.
    """
    if not (w_a >= 0 and w_0 > 0 and w_m > 1 and w_0 % q == 0 and depth >= 1):
        raise ValueError(f"invalid RegNet parameters: need w_a >= 0, w_0 > 0 and divisible by "
                         f"q={q}, w_m > 1, depth >= 1; got w_a={w_a}, w_0={w_0}, w_m={w_m}, depth={depth}")
    ws_cont = np.arange(depth) * w_a + w_0
    ks = np.round(np.log(ws_cont / w_0) / np.log(w_m))
    ws_all = np.round(w_0 * np.power(w_m, ks) / q).astype(int) * q
    ws, ds = np.unique(ws_all, return_counts=True)
    return [int(w) for w in ws], [int(d) for d in ds]


def adjust_block_compatibility(ws, bs, gs):
    """Make widths, bottleneck multipliers and group widths compatible (as pycls does).

    Group widths are capped at the bottleneck width; bottleneck widths are rounded
    (half-to-even) to a multiple of the group width (of lcm(g, b) for inverted bottlenecks);
    widths are recomputed from the adjusted bottleneck widths.
    """
    ws, bs, gs = list(ws), list(bs), list(gs)
    if not (len(ws) == len(bs) == len(gs)):
        raise ValueError(f"widths, bot_muls and group_widths differ in length: {ws}, {bs}, {gs}")
    if not all(w > 0 and b > 0 and g > 0 for w, b, g in zip(ws, bs, gs)):
        raise ValueError(f"widths, bot_muls and group_widths must be positive: {ws}, {bs}, {gs}")
    if not all(b < 1 or b % 1 == 0 for b in bs):
        raise ValueError(f"bot_muls greater than 1 must be integers: {bs}")
    vs = [int(max(1, w * b)) for w, b in zip(ws, bs)]
    gs = [int(min(g, v)) for g, v in zip(gs, vs)]
    ms = [math.lcm(g, int(b)) if b > 1 else g for g, b in zip(gs, bs)]
    vs = [max(m, int(round(v / m) * m)) for v, m in zip(vs, ms)]
    ws = [int(v / b) for v, b in zip(vs, bs)]
    return ws, bs, gs


def regnet_spec(name: str, *, w_a: float, w_0: int, w_m: float, depth: int, group_w: int,
                bot_mul: float = 1.0, se_r: float = 0.0, stride: int = 2,
                block_type: str = "res_bottleneck_block", stem_type: str = "simple_stem_in",
                stem_w: int = 32, head_w: int = 0, activation: str = "relu",
                resolution: int = 224, test_resolution: int = 256, num_classes: int = 1000) -> AnyNetSpec:
    """An AnyNetSpec from RegNet parameters (pycls REGNET.* config keys)."""
    ws, ds = generate_regnet(w_a, w_0, w_m, depth)
    n = len(ws)
    ws, bs, gs = adjust_block_compatibility(ws, [bot_mul] * n, [group_w] * n)
    return AnyNetSpec(name=name, stem_type=stem_type, stem_w=stem_w, block_type=block_type,
                      depths=ds, widths=ws, strides=[stride] * n, bot_muls=bs, group_widths=gs,
                      head_w=head_w, se_r=se_r, activation=activation, num_classes=num_classes,
                      resolution=resolution, test_resolution=test_resolution)


# ------------------------------------------------------------------------------------
# The per-block plan, expanded layer by layer by fastscale_jax.plan.


class Block(NamedTuple):
    """One block of a network (its layers: `fastscale_jax.plan`)."""

    stage: int          # 1-based stage index
    index: int          # 1-based block index within the stage
    w_in: int
    w_out: int
    stride: int
    w_b: int            # AnyNet: bottleneck width; EffNet: expanded width
    groups: int         # groups of the kxk conv (EffNet: w_b, depthwise)
    w_se: int           # SE hidden width (0 = no SE)
    kernel: int
    residual: bool      # the block adds its input (identity shortcut)
    proj: bool          # the block has a 1x1 projection shortcut
    drop_rate: float    # stochastic depth / drop-connect rate of this block


def block_plan(spec: Spec) -> list[Block]:
    """Every block of `spec`, in order, with its widths, stride, groups and shortcut type."""
    blocks = []
    if spec.family == "anynet":
        prev = spec.stem_w
        n_total = sum(spec.depths)
        j = 0
        for s, (d, w, st, b, g) in enumerate(zip(spec.depths, spec.widths, spec.strides,
                                                 spec.bot_muls, spec.group_widths), 1):
            for i in range(d):
                stride = st if i == 0 else 1
                w_b = int(round(w * b))
                w_se = int(round(prev * spec.se_r))
                same = prev == w and stride == 1
                bt = spec.block_type
                residual = bt in ("res_basic_block", "res_bottleneck_block") or (
                    bt == "res_bottleneck_linear_block" and same)
                proj = bt in ("res_basic_block", "res_bottleneck_block") and not same
                rate = spec.drop_path_rate * j / max(1, n_total - 1) if residual else 0.0
                groups = w_b // g if bt.startswith("res_bottleneck") else 1
                blocks.append(Block(s, i + 1, prev, w, stride, w_b, groups, w_se, 3,
                                    residual, proj, rate))
                prev, j = w, j + 1
    else:
        prev = spec.stem_w
        for s, (d, w, st, e, k) in enumerate(zip(spec.depths, spec.widths, spec.strides,
                                                 spec.exp_ratios, spec.kernels), 1):
            for i in range(d):
                stride = st if i == 0 else 1
                w_exp = int(prev * e)
                w_se = int(prev * spec.se_r)
                residual = stride == 1 and prev == w
                blocks.append(Block(s, i + 1, prev, w, stride, w_exp, w_exp, w_se, k,
                                    residual, False, spec.dc_ratio if residual else 0.0))
                prev = w
    return blocks
