"""The AnyNet family (pycls AnyNet): RegNetX / Y / Z, ResNet, ResNeXt.

A stem, stages of identical blocks (vanilla, residual basic, residual bottleneck, or RegNetZ's
linear inverted bottleneck), a head. RegNets come from pycls's generator (`generate_regnet`,
numpy round-half-to-even everywhere, as pycls).

Zoo sources:
- RegNetX/Y: pycls configs/dds_baselines/regnet{x,y}/*.yaml (w_a, w_0, w_m, depth, group width;
  RegNetY adds SE with ratio 0.25). Train/test resolution 224/256.
- ResNet-50/101/152 (1x64d) and ResNeXt-50/101/152 (32x4d): pycls AnyNet configs
  (configs/dds_baselines/res{net,next}/*.yaml).
- RegNetZ-500MF / RegNetZ-4GF: the inverted-bottleneck, linear-output RegNets of Dollar et al.
  2021, with the parameters published in ClassyVision and timm (`regnetz_005`: depth 21, w_0 16,
  w_a 10.7, w_m 2.51, group width 4; `regnetz_040_h`: depth 28, w_0 48, w_a 14.5, w_m 2.226,
  group width 8, head 1536), bottleneck multiplier 4, SE 0.25, SiLU, stem width 32.
  RegNetZ-500MF uses 224/256 px, RegNetZ-4GF timm's 256/320 px.

Weights: pycls (names as in pycls 0.1.1 and master) and timm (timm.models.regnet for RegNets,
timm.models.resnet for res_stem_in ResNets / ResNeXts).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fastscale_jax.errors import ConfigError
from fastscale_jax.families.base import Family
from fastscale_jax.plan import BNOp, ConvOp, Part, head_part, se_op, stem_part
from fastscale_jax.specs import (Block, SpecBase, adjust_block_compatibility, snap_group_width,
                                 spec_error)

STEM_TYPES = ("simple_stem_in", "res_stem_in", "res_stem_cifar")
BLOCK_TYPES = ("vanilla_block", "res_basic_block", "res_bottleneck_block",
               "res_bottleneck_linear_block")


@dataclasses.dataclass(frozen=True)
class AnyNetSpec(SpecBase):
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
    _stage_casts = {"depths": int, "widths": int, "strides": int, "bot_muls": float,
                    "group_widths": int}

    def __post_init__(self):
        self._normalise_stages()
        self._check_common()
        n = self.name or "AnyNetSpec"
        if self.stem_type not in STEM_TYPES:
            raise spec_error(n, "stem_type", f"{self.stem_type!r}; valid: {STEM_TYPES}")
        if self.block_type not in BLOCK_TYPES:
            raise spec_error(n, "block_type", f"{self.block_type!r}; valid: {BLOCK_TYPES}")
        for f in ("drop_path_rate", "se_r"):
            if not 0.0 <= getattr(self, f) < 1.0:
                raise spec_error(n, f, f"{getattr(self, f)} (must be in [0, 1)"
                                       + ("; 0 = no SE)" if f == "se_r" else ")"))
        bottleneck = self.block_type.startswith("res_bottleneck")
        for i, (w, b, g) in enumerate(zip(self.widths, self.bot_muls, self.group_widths)):
            if b <= 0 or (b > 1 and b % 1 != 0):
                raise spec_error(n, "bot_muls", f"stage {i + 1}: {b} (must be > 0, and an integer "
                                                "when > 1)")
            if g < 1:
                raise spec_error(n, "group_widths", f"stage {i + 1}: {g} (must be a positive integer)")
            if bottleneck:
                w_b = int(round(w * b))
                if w_b % g:
                    raise spec_error(n, "group_widths", f"stage {i + 1}: group width {g} does not "
                                     f"divide the bottleneck width {w_b} (= round({w} * {b})); use "
                                     "adjust_block_compatibility() to fix widths")
        if self.se_r and not bottleneck:
            raise spec_error(n, "se_r", f"SE is only supported by bottleneck blocks, not "
                                        f"{self.block_type!r}")


def generate_regnet(w_a: float, w_0: int, w_m: float, depth: int, q: int = 8):
    """Per-stage (widths, depths) of the RegNet with parameters (w_a, w_0, w_m, depth).

    Block j has continuous width u_j = w_0 + w_a * j, quantised to w_0 * w_m^round(log_wm(u_j / w_0)),
    then rounded to a multiple of q; consecutive blocks of equal width form a stage.
    """
    if not (w_a >= 0 and w_0 > 0 and w_m > 1 and w_0 % q == 0 and depth >= 1):
        raise ConfigError(f"invalid RegNet parameters: need w_a >= 0, w_0 > 0 and divisible by "
                          f"q={q}, w_m > 1, depth >= 1; got w_a={w_a}, w_0={w_0}, w_m={w_m}, "
                          f"depth={depth}")
    ws_cont = np.arange(depth) * w_a + w_0
    ks = np.round(np.log(ws_cont / w_0) / np.log(w_m))
    ws_all = np.round(w_0 * np.power(w_m, ks) / q).astype(int) * q
    ws, ds = np.unique(ws_all, return_counts=True)
    return [int(w) for w in ws], [int(d) for d in ds]


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


# name: (w_a, w_0, w_m, depth, group_w)
_REGNETX = {
    "200MF": (36.44, 24, 2.49, 13, 8), "400MF": (24.48, 24, 2.54, 22, 16),
    "600MF": (36.97, 48, 2.24, 16, 24), "800MF": (35.73, 56, 2.28, 16, 16),
    "1.6GF": (34.01, 80, 2.25, 18, 24), "3.2GF": (26.31, 88, 2.25, 25, 48),
    "4.0GF": (38.65, 96, 2.43, 23, 40), "6.4GF": (60.83, 184, 2.07, 17, 56),
    "8.0GF": (49.56, 80, 2.88, 23, 120), "12GF": (73.36, 168, 2.37, 19, 112),
    "16GF": (55.59, 216, 2.1, 22, 128), "32GF": (69.86, 320, 2.0, 23, 168),
}
_REGNETY = {
    "200MF": (36.44, 24, 2.49, 13, 8), "400MF": (27.89, 48, 2.09, 16, 8),
    "600MF": (32.54, 48, 2.32, 15, 16), "800MF": (38.84, 56, 2.4, 14, 16),
    "1.6GF": (20.71, 48, 2.65, 27, 24), "3.2GF": (42.63, 80, 2.66, 21, 24),
    "4.0GF": (31.41, 96, 2.24, 22, 64), "6.4GF": (33.22, 112, 2.27, 25, 72),
    "8.0GF": (76.82, 192, 2.19, 17, 56), "12GF": (73.36, 168, 2.37, 19, 112),
    "16GF": (106.23, 200, 2.48, 18, 112), "32GF": (115.89, 232, 2.53, 20, 232),
}
# name: (w_a, w_0, w_m, depth, group_w, head_w, resolution, test_resolution)
_REGNETZ = {
    "500MF": (10.7, 16, 2.51, 21, 4, 1024, 224, 256),
    "4GF": (14.5, 48, 2.226, 28, 8, 1536, 256, 320),
}
_RESNET_DEPTHS = {"50": [3, 4, 6, 3], "101": [3, 4, 23, 3], "152": [3, 8, 36, 3]}

# timm module names of a block's layers, by the last element of the Flax path
_TIMM_REGNET_BLOCK = {"a": "conv1.conv", "a_bn": "conv1.bn", "b": "conv2.conv", "b_bn": "conv2.bn",
                      "reduce": "se.fc1", "expand": "se.fc2", "c": "conv3.conv", "c_bn": "conv3.bn",
                      "proj": "downsample.conv", "bn": "downsample.bn"}
_TIMM_REGNET_ENDS = {"stem.conv": "stem.conv", "stem.bn": "stem.bn", "head.conv": "final_conv.conv",
                     "head.bn": "final_conv.bn", "head.fc": "head.fc"}
_TIMM_RESNET_BLOCK = {"a": "conv1", "a_bn": "bn1", "b": "conv2", "b_bn": "bn2", "c": "conv3",
                      "c_bn": "bn3", "proj": "downsample.0", "bn": "downsample.1"}
_TIMM_RESNET_ENDS = {"stem.conv": "conv1", "stem.bn": "bn1", "head.fc": "fc"}
_PYCLS_SE = {"reduce": "f_ex.0", "expand": "f_ex.2"}


class AnyNet(Family):
    name = "anynet"
    spec_type = AnyNetSpec
    scaled_dims = "dwgr"
    weight_sources = ("pycls", "timm")

    def zoo(self) -> dict:
        zoo = {}
        for kind, table, se_r in (("X", _REGNETX, 0.0), ("Y", _REGNETY, 0.25)):
            for size, (wa, w0, wm, d, g) in table.items():
                name = f"RegNet{kind}-{size}"
                zoo[name] = regnet_spec(name, w_a=wa, w_0=w0, w_m=wm, depth=d, group_w=g, se_r=se_r)
        for size, (wa, w0, wm, d, g, hw, r, tr) in _REGNETZ.items():
            name = f"RegNetZ-{size}"
            zoo[name] = regnet_spec(name, w_a=wa, w_0=w0, w_m=wm, depth=d, group_w=g, bot_mul=4.0,
                                    se_r=0.25, block_type="res_bottleneck_linear_block", head_w=hw,
                                    activation="silu", resolution=r, test_resolution=tr)
        for kind, bot, gws in (("ResNet", 0.25, [64, 128, 256, 512]),
                               ("ResNeXt", 0.5, [4, 8, 16, 32])):
            for depth, ds in _RESNET_DEPTHS.items():
                name = f"{kind}-{depth}"
                zoo[name] = AnyNetSpec(name=name, stem_type="res_stem_in", stem_w=64,
                                       block_type="res_bottleneck_block", depths=ds,
                                       widths=[256, 512, 1024, 2048], strides=[1, 2, 2, 2],
                                       bot_muls=[bot] * 4, group_widths=gws)
        return zoo

    def aliases(self) -> dict:
        return {"regnetz_005": "RegNetZ-500MF", "regnetz_040_h": "RegNetZ-4GF",
                "regnetz_4.0gf": "RegNetZ-4GF"}

    def blocks(self, spec) -> list:
        blocks, prev, j = [], spec.stem_w, 0
        n_total, bt = sum(spec.depths), spec.block_type
        for s, (d, w, st, b, g) in enumerate(zip(spec.depths, spec.widths, spec.strides,
                                                 spec.bot_muls, spec.group_widths), 1):
            for i in range(d):
                stride = st if i == 0 else 1
                w_b = int(round(w * b))
                w_se = int(round(prev * spec.se_r))
                same = prev == w and stride == 1
                residual = bt in ("res_basic_block", "res_bottleneck_block") or (
                    bt == "res_bottleneck_linear_block" and same)
                proj = bt in ("res_basic_block", "res_bottleneck_block") and not same
                rate = spec.drop_path_rate * j / max(1, n_total - 1) if residual else 0.0
                groups = w_b // g if bt.startswith("res_bottleneck") else 1
                blocks.append(Block(s, i + 1, prev, w, stride, w_b, groups, w_se, 3,
                                    residual, proj, rate, bt))
                prev, j = w, j + 1
        return blocks

    def stem(self, spec) -> Part:
        return stem_part(spec.stem_type, spec.stem_w, spec.activation)

    def block_part(self, spec, b: Block) -> Part:
        """Vanilla/basic: 3x3, 3x3; bottleneck: 1x1, kxk grouped [+SE], 1x1; shortcut 1x1 proj + BN."""
        p = (f"s{b.stage}_b{b.index}",)
        f, bt, act = (*p, "f"), spec.block_type, spec.activation
        zero = spec.zero_init_last_bn and bt != "vanilla_block"
        if bt in ("vanilla_block", "res_basic_block"):
            ops = [ConvOp((*f, "a"), b.w_in, b.w_out, b.kernel, b.stride),
                   BNOp((*f, "a_bn"), b.w_out, act), ConvOp((*f, "b"), b.w_out, b.w_out, b.kernel),
                   BNOp((*f, "b_bn"), b.w_out, act if bt == "vanilla_block" else None, zero)]
        else:
            ops = [ConvOp((*f, "a"), b.w_in, b.w_b), BNOp((*f, "a_bn"), b.w_b, act),
                   ConvOp((*f, "b"), b.w_b, b.w_b, b.kernel, b.stride, b.groups),
                   BNOp((*f, "b_bn"), b.w_b, act)]
            if b.w_se:
                ops.append(se_op((*f, "se"), b.w_b, b.w_se, act))
            ops += [ConvOp((*f, "c"), b.w_b, b.w_out), BNOp((*f, "c_bn"), b.w_out, None, zero)]
        shortcut = ((ConvOp((*p, "proj"), b.w_in, b.w_out, 1, b.stride), BNOp((*p, "bn"), b.w_out))
                    if b.proj else ())
        # RegNetZ's linear blocks have no activation after the add.
        post = act if b.residual and bt != "res_bottleneck_linear_block" else None
        return Part(p, tuple(ops), "f", shortcut, b.residual, post, b.drop_rate, b)

    def head(self, spec) -> Part:
        return head_part(spec.widths[-1], spec.head_w, spec.num_classes, spec.activation)

    def scale_fields(self, spec, widths, width_factor, group_factor) -> dict:
        """Group widths scale too (snapped to 1, 2, 4 or multiples of 8); stem and head widths
        stay (pycls's scaler); block compatibility is re-applied."""
        gs = [snap_group_width(max(1, round(g * group_factor))) for g in spec.group_widths]
        ws, bs, gs = adjust_block_compatibility(widths, spec.bot_muls, gs)
        return dict(widths=ws, bot_muls=bs, group_widths=gs)

    def stage_config(self, spec, i: int) -> str:
        return super().stage_config(spec, i) + f" b={spec.bot_muls[i]:g} g={spec.group_widths[i]}"

    def weight_names(self, spec, source: str):
        if source == "pycls":
            vanilla = spec.block_type == "vanilla_block"  # holds a, a_bn, b, b_bn itself (no 'f')

            def pycls(part, path):
                rest = [_PYCLS_SE.get(k, k) for k in path[1:] if not (vanilla and k == "f")]
                return ".".join([path[0].replace("_", "."), *rest])
            return pycls, True
        if source != "timm":
            return super().weight_names(spec, source)
        if spec.stem_type == "res_stem_in":
            if spec.block_type not in ("res_basic_block", "res_bottleneck_block") or spec.head_w:
                raise ConfigError(f"{spec.name}: timm ResNets have basic or bottleneck blocks and "
                                  f"no head conv; cannot map block_type {spec.block_type!r}, "
                                  f"head_w {spec.head_w}")
            ends, prefix, names = _TIMM_RESNET_ENDS, "layer{s}.{i0}", _TIMM_RESNET_BLOCK
        elif spec.stem_type != "simple_stem_in" or not spec.block_type.startswith("res_bottleneck"):
            raise ConfigError(f"{spec.name}: timm RegNets have a simple stem and bottleneck blocks; "
                              f"cannot map stem {spec.stem_type!r} with {spec.block_type!r}")
        else:
            ends, prefix, names = _TIMM_REGNET_ENDS, "s{s}.b{i}", _TIMM_REGNET_BLOCK

        def timm(part, path):
            b = part.block
            if b is None:
                return ends[".".join(path)]
            return f"{prefix.format(s=b.stage, i=b.index, i0=b.index - 1)}.{names[path[-1]]}"
        return timm, False


FAMILY = AnyNet()
