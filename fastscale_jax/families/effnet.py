"""The EfficientNet family (pycls EffNet): EfficientNet-B0..B5.

A 3x3 stride-2 stem, stages of MBConv blocks ([1x1 expand], kxk depthwise, SE, 1x1 linear
projection; identity shortcut when the shape is kept), a head (1x1 conv, pool, dropout, fc).

Zoo source: pycls configs/dds_baselines/effnet/EN-B*.yaml (with their resolutions).
Weights: pycls, and timm.models.efficientnet's non-'tf_' EfficientNets (conv_stem,
blocks.i.j.conv_dw, conv_head, classifier; the 'tf_' ones use 'same' padding and BN eps 1e-3,
which these models do not: their weights load but compute a different function).
"""

from __future__ import annotations

import dataclasses

from fastscale_jax.families.base import Family
from fastscale_jax.plan import BNOp, ConvOp, Part, head_part, se_op, stem_part
from fastscale_jax.specs import Block, SpecBase, adjust_block_compatibility, scale_width, spec_error


@dataclasses.dataclass(frozen=True)
class EffNetSpec(SpecBase):
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
    _stage_casts = {"depths": int, "widths": int, "strides": int, "exp_ratios": float,
                    "kernels": int}

    def __post_init__(self):
        self._normalise_stages()
        self._check_common()
        check_effnet_fields(self)
        if not 0.0 <= self.se_r < 1.0:
            raise spec_error(self.name, "se_r", f"{self.se_r} (must be in [0, 1); 0 = no SE)")

    @property
    def group_widths(self) -> tuple:
        """Depthwise convs: one channel per group in every stage."""
        return tuple(1 for _ in self.depths)


def check_effnet_fields(spec) -> None:
    """The checks both EfficientNet families share: dropout / dc_ratio, odd kernels, positive
    expansion ratios."""
    n = spec.name or type(spec).__name__
    for f in ("dropout", "dc_ratio"):
        if not 0.0 <= getattr(spec, f) < 1.0:
            raise spec_error(n, f, f"{getattr(spec, f)} (must be in [0, 1))")
    for k in spec.kernels:
        if k < 1 or k % 2 == 0:
            raise spec_error(n, "kernels", f"{list(spec.kernels)} (kernel sizes must be odd)")
    for e in spec.exp_ratios:
        if e <= 0:
            raise spec_error(n, "exp_ratios", f"{list(spec.exp_ratios)} (must be > 0)")


def mbconv_part(spec, b: Block) -> Part:
    """[1x1 expand], kxk depthwise, [SE], 1x1 linear projection; identity shortcut."""
    p, act = (f"s{b.stage}_b{b.index}",), spec.activation
    ops = []
    if b.w_b != b.w_in:
        ops += [ConvOp((*p, "exp"), b.w_in, b.w_b), BNOp((*p, "exp_bn"), b.w_b, act)]
    ops += [ConvOp((*p, "dwise"), b.w_b, b.w_b, b.kernel, b.stride, b.groups),
            BNOp((*p, "dwise_bn"), b.w_b, act)]
    if b.w_se:
        ops.append(se_op((*p, "se"), b.w_b, b.w_se, act))
    ops += [ConvOp((*p, "lin_proj"), b.w_b, b.w_out), BNOp((*p, "lin_proj_bn"), b.w_out)]
    return Part(p, tuple(ops), None, (), b.residual, None, b.drop_rate, b)


def scale_effnet_fields(spec, widths, width_factor) -> dict:
    """The EfficientNets' scaling: stage widths made compatible with the expansion ratios,
    stem and head widths scaled too (pycls's scaler); no group widths (depthwise)."""
    ws, _, _ = adjust_block_compatibility(widths, spec.exp_ratios, [1] * len(widths))
    return dict(widths=ws, stem_w=scale_width(spec.stem_w, width_factor),
                head_w=scale_width(spec.head_w, width_factor))


# name: (stem_w, depths, widths, head_w, resolution, test_resolution)
_EFFNET = {
    "B0": (32, [1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320], 1280, 224, 256),
    "B1": (32, [2, 3, 3, 4, 4, 5, 2], [16, 24, 40, 80, 112, 192, 320], 1280, 240, 274),
    "B2": (32, [2, 3, 3, 4, 4, 5, 2], [16, 24, 48, 88, 120, 208, 352], 1408, 260, 298),
    "B3": (40, [2, 3, 3, 5, 5, 6, 2], [24, 32, 48, 96, 136, 232, 384], 1536, 300, 342),
    "B4": (48, [2, 4, 4, 6, 6, 8, 2], [24, 32, 56, 112, 160, 272, 448], 1792, 380, 434),
    "B5": (48, [3, 5, 5, 7, 7, 9, 3], [24, 40, 64, 128, 176, 304, 512], 2048, 456, 522),
}
_TIMM_SE = {"reduce": "se.conv_reduce", "expand": "se.conv_expand"}
# timm DepthwiseSeparableConv (no expansion): dw, bn1, se, pw, bn2
_TIMM_DS = {"dwise": "conv_dw", "dwise_bn": "bn1", "lin_proj": "conv_pw", "lin_proj_bn": "bn2",
            **_TIMM_SE}
# timm InvertedResidual
_TIMM_IR = {"exp": "conv_pw", "exp_bn": "bn1", "dwise": "conv_dw", "dwise_bn": "bn2",
            "lin_proj": "conv_pwl", "lin_proj_bn": "bn3", **_TIMM_SE}
TIMM_ENDS = {"stem.conv": "conv_stem", "stem.bn": "bn1", "head.conv": "conv_head",
             "head.conv_bn": "bn2", "head.fc": "classifier"}


def timm_block_name(names: dict, part, path) -> str:
    """timm's name of a block layer of an EfficientNet: blocks.<stage - 1>.<index - 1>.<name>."""
    b = part.block
    if b is None:
        return TIMM_ENDS[".".join(path)]
    return f"blocks.{b.stage - 1}.{b.index - 1}.{names[path[-1]]}"


class EffNet(Family):
    name = "effnet"
    spec_type = EffNetSpec
    scaled_dims = "dwr"
    weight_sources = ("pycls", "timm")

    def zoo(self) -> dict:
        zoo = {}
        for b, (sw, ds, ws, hw, r, tr) in _EFFNET.items():
            name = f"EfficientNet-{b}"
            zoo[name] = EffNetSpec(name=name, stem_w=sw, depths=ds, widths=ws,
                                   strides=[1, 2, 2, 2, 1, 2, 1], exp_ratios=[1, 6, 6, 6, 6, 6, 6],
                                   kernels=[3, 3, 5, 3, 5, 5, 3], se_r=0.25, head_w=hw,
                                   resolution=r, test_resolution=tr)
        return zoo

    def blocks(self, spec) -> list:
        blocks, prev = [], spec.stem_w
        for s, (d, w, st, e, k) in enumerate(zip(spec.depths, spec.widths, spec.strides,
                                                 spec.exp_ratios, spec.kernels), 1):
            for i in range(d):
                stride = st if i == 0 else 1
                w_exp = int(prev * e)
                residual = stride == 1 and prev == w
                blocks.append(Block(s, i + 1, prev, w, stride, w_exp, w_exp, int(prev * spec.se_r),
                                    k, residual, False, spec.dc_ratio if residual else 0.0,
                                    "mbconv"))
                prev = w
        return blocks

    def stem(self, spec) -> Part:
        return stem_part("simple_stem_in", spec.stem_w, spec.activation)

    def block_part(self, spec, b: Block) -> Part:
        return mbconv_part(spec, b)

    def head(self, spec) -> Part:
        return head_part(spec.widths[-1], spec.head_w, spec.num_classes, spec.activation,
                         bn_name="conv_bn", dropout=spec.dropout)

    def scale_fields(self, spec, widths, width_factor, group_factor) -> dict:
        return scale_effnet_fields(spec, widths, width_factor)

    def stage_config(self, spec, i: int) -> str:
        return super().stage_config(spec, i) + f" e={spec.exp_ratios[i]:g} k={spec.kernels[i]}"

    def weight_names(self, spec, source: str):
        if source == "pycls":  # the Flax path with '.' for '/' and '_' in 's1_b1'; SE as f_ex
            se = {"reduce": "f_ex.0", "expand": "f_ex.2"}
            return (lambda part, path: ".".join([path[0].replace("_", "."),
                                                 *[se.get(k, k) for k in path[1:]]])), True
        if source != "timm":
            return super().weight_names(spec, source)

        def timm(part, path):
            b = part.block
            return timm_block_name(_TIMM_DS if b is not None and b.w_b == b.w_in else _TIMM_IR,
                                   part, path)
        return timm, False


FAMILY = EffNet()
