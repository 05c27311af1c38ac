"""The EfficientNetV2 family (Tan & Le 2021): EfficientNetV2-S / M / L as timm defines them.

A 3x3 stride-2 stem, stages of three block types, a head (1x1 conv, pool, dropout, fc):
- 'conv':   kxk conv + BN + act, identity shortcut when the shape is kept (timm 'cn ... skip');
- 'fused':  Fused-MBConv: kxk conv expanding to w_in * e + BN + act, [SE], 1x1 projection +
            BN (timm EdgeResidual, 'er');
- 'mbconv': MBConv as in EfficientNet: 1x1 expand, kxk depthwise, SE, 1x1 projection
            (timm InvertedResidual, 'ir').
SE widths follow timm: round(expanded width * se_r / e), i.e. se_r of the block's input width.
Stochastic depth grows linearly with the block index, to dc_ratio at the last block (timm's
drop_path_rate), on residual blocks only.

Zoo source: timm.models.efficientnet `_gen_efficientnetv2_s/m/l` (the arch_def strings, stem
and head widths) and their default configs' train / test resolutions (S 288 / 384, M 320 / 416,
L 384 / 480). These are timm's non-'tf_' EfficientNetV2s: PyTorch padding and BN eps 1e-5, as
every model here; timm's 'tf_efficientnetv2_*' use 'same' padding and eps 1e-3 (their weights
load but compute a different function). Weights: timm only (pycls has no EfficientNetV2).
"""

from __future__ import annotations

import dataclasses

from fastscale_jax.families.base import Family
from fastscale_jax.families.effnet import (TIMM_ENDS, check_effnet_fields, mbconv_part,
                                           scale_effnet_fields, timm_block_name)
from fastscale_jax.plan import BNOp, ConvOp, Part, head_part, se_op, stem_part
from fastscale_jax.specs import Block, SpecBase, spec_error

BLOCK_TYPES = ("conv", "fused", "mbconv")


@dataclasses.dataclass(frozen=True)
class EffNetV2Spec(SpecBase):
    """EfficientNetV2: per stage a block type ('conv' | 'fused' | 'mbconv'), depth, output
    width, stride, expansion ratio, kernel and SE ratio (0 = no SE); dropout is the head's,
    dc_ratio the stochastic-depth rate of the last block."""

    name: str
    stem_w: int
    depths: tuple
    widths: tuple
    strides: tuple
    exp_ratios: tuple
    kernels: tuple
    block_types: tuple
    se_rs: tuple
    head_w: int = 1280
    dropout: float = 0.0
    dc_ratio: float = 0.0
    activation: str = "silu"
    num_classes: int = 1000
    resolution: int = 288
    test_resolution: int = 384

    family = "effnetv2"
    _stage_fields = ("depths", "widths", "strides", "exp_ratios", "kernels", "block_types", "se_rs")
    _stage_casts = {"depths": int, "widths": int, "strides": int, "exp_ratios": float,
                    "kernels": int, "se_rs": float}

    def __post_init__(self):
        n = self.name or "EffNetV2Spec"
        types = self.block_types
        if isinstance(types, str) or not all(t in BLOCK_TYPES for t in types):
            raise spec_error(n, "block_types", f"{types!r} (one of {BLOCK_TYPES} per stage)")
        object.__setattr__(self, "block_types", tuple(types))
        self._normalise_stages()
        self._check_common()
        check_effnet_fields(self)
        for t, e, se in zip(self.block_types, self.exp_ratios, self.se_rs):
            if t == "conv" and e != 1:
                raise spec_error(n, "exp_ratios", f"{list(self.exp_ratios)}: 'conv' stages do not "
                                                  "expand (ratio 1)")
            if not 0.0 <= se < 1.0:
                raise spec_error(n, "se_rs", f"{list(self.se_rs)} (each in [0, 1); 0 = no SE)")

    @property
    def group_widths(self) -> tuple:
        """Channels per group of each stage's kxk conv: 1 (depthwise) for MBConv stages, the
        conv's input width for the dense 'conv' / 'fused' stages (of their later blocks)."""
        return tuple(1 if t == "mbconv" else w for t, w in zip(self.block_types, self.widths))


# name: (stem_w, head_w, resolution, test_resolution, stages as timm's arch_def:
#        (block type, depth, kernel, stride, expansion, width, SE ratio))
_ZOO = {
    "S": (24, 1280, 288, 384, [("conv", 2, 3, 1, 1, 24, 0), ("fused", 4, 3, 2, 4, 48, 0),
                               ("fused", 4, 3, 2, 4, 64, 0), ("mbconv", 6, 3, 2, 4, 128, 0.25),
                               ("mbconv", 9, 3, 1, 6, 160, 0.25),
                               ("mbconv", 15, 3, 2, 6, 256, 0.25)]),
    "M": (24, 1280, 320, 416, [("conv", 3, 3, 1, 1, 24, 0), ("fused", 5, 3, 2, 4, 48, 0),
                               ("fused", 5, 3, 2, 4, 80, 0), ("mbconv", 7, 3, 2, 4, 160, 0.25),
                               ("mbconv", 14, 3, 1, 6, 176, 0.25),
                               ("mbconv", 18, 3, 2, 6, 304, 0.25),
                               ("mbconv", 5, 3, 1, 6, 512, 0.25)]),
    "L": (32, 1280, 384, 480, [("conv", 4, 3, 1, 1, 32, 0), ("fused", 7, 3, 2, 4, 64, 0),
                               ("fused", 7, 3, 2, 4, 96, 0), ("mbconv", 10, 3, 2, 4, 192, 0.25),
                               ("mbconv", 19, 3, 1, 6, 224, 0.25),
                               ("mbconv", 25, 3, 2, 6, 384, 0.25),
                               ("mbconv", 7, 3, 1, 6, 640, 0.25)]),
}
_TIMM = {"conv": {"conv": "conv", "conv_bn": "bn1"},
         "fused": {"exp": "conv_exp", "exp_bn": "bn1", "reduce": "se.conv_reduce",
                   "expand": "se.conv_expand", "lin_proj": "conv_pwl", "lin_proj_bn": "bn2"},
         "mbconv": {"exp": "conv_pw", "exp_bn": "bn1", "dwise": "conv_dw", "dwise_bn": "bn2",
                    "reduce": "se.conv_reduce", "expand": "se.conv_expand",
                    "lin_proj": "conv_pwl", "lin_proj_bn": "bn3"}}


def _dense_part(spec, b: Block) -> Part:
    """'conv': kxk conv + BN + act; 'fused': kxk expanding conv + BN + act, [SE], 1x1 + BN."""
    p, act = (f"s{b.stage}_b{b.index}",), spec.activation
    if b.kind == "conv":
        ops = [ConvOp((*p, "conv"), b.w_in, b.w_out, b.kernel, b.stride),
               BNOp((*p, "conv_bn"), b.w_out, act)]
    else:
        ops = [ConvOp((*p, "exp"), b.w_in, b.w_b, b.kernel, b.stride),
               BNOp((*p, "exp_bn"), b.w_b, act)]
        if b.w_se:
            ops.append(se_op((*p, "se"), b.w_b, b.w_se, act))
        ops += [ConvOp((*p, "lin_proj"), b.w_b, b.w_out), BNOp((*p, "lin_proj_bn"), b.w_out)]
    return Part(p, tuple(ops), None, (), b.residual, None, b.drop_rate, b)


class EffNetV2(Family):
    name = "effnetv2"
    spec_type = EffNetV2Spec
    scaled_dims = "dwr"
    weight_sources = ("timm",)

    def zoo(self) -> dict:
        out = {}
        for size, (stem, head, r, tr, stages) in _ZOO.items():
            t, d, k, s, e, w, se = zip(*stages)
            name = f"EfficientNetV2-{size}"
            out[name] = EffNetV2Spec(name=name, stem_w=stem, depths=d, widths=w, strides=s,
                                     exp_ratios=e, kernels=k, block_types=t, se_rs=se,
                                     head_w=head, resolution=r, test_resolution=tr)
        return out

    def blocks(self, spec) -> list:
        blocks, prev, j, n_total = [], spec.stem_w, 0, sum(spec.depths)
        for s, (d, w, st, e, k, t, se) in enumerate(zip(
                spec.depths, spec.widths, spec.strides, spec.exp_ratios, spec.kernels,
                spec.block_types, spec.se_rs), 1):
            for i in range(d):
                stride = st if i == 0 else 1
                w_exp = prev if t == "conv" else int(prev * e)
                w_se = round(w_exp * (se / e)) if se else 0
                residual = stride == 1 and prev == w
                rate = spec.dc_ratio * j / n_total if residual else 0.0
                blocks.append(Block(s, i + 1, prev, w, stride, w_exp,
                                    w_exp if t == "mbconv" else 1, w_se, k, residual, False,
                                    rate, t))
                prev, j = w, j + 1
        return blocks

    def stem(self, spec) -> Part:
        return stem_part("simple_stem_in", spec.stem_w, spec.activation)

    def block_part(self, spec, b: Block) -> Part:
        return mbconv_part(spec, b) if b.kind == "mbconv" else _dense_part(spec, b)

    def head(self, spec) -> Part:
        return head_part(spec.widths[-1], spec.head_w, spec.num_classes, spec.activation,
                         bn_name="conv_bn", dropout=spec.dropout)

    def scale_fields(self, spec, widths, width_factor, group_factor) -> dict:
        return scale_effnet_fields(spec, widths, width_factor)

    def stage_config(self, spec, i: int) -> str:
        se = f" se={spec.se_rs[i]:g}" if spec.se_rs[i] else ""
        return (f"{spec.block_types[i]} " + super().stage_config(spec, i)
                + f" e={spec.exp_ratios[i]:g} k={spec.kernels[i]}{se}")

    def weight_names(self, spec, source: str):
        if source != "timm":
            return super().weight_names(spec, source)

        def timm(part, path):
            b = part.block
            return (TIMM_ENDS[".".join(path)] if b is None
                    else timm_block_name(_TIMM[b.kind], part, path))
        return timm, False


FAMILY = EffNetV2()
