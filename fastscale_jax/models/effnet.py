"""EfficientNet in Flax Linen from an `EffNetSpec` (pycls EffNet).

Names mirror pycls (stem/conv, s1_b1/dwise, s1_b1/lin_proj_bn, head/conv_bn, head/fc).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fastscale_jax.models.anynet import Head, Stem
from fastscale_jax.models.layers import SE, Conv, batch_norm, check_input, drop_path
from fastscale_jax.specs import Block, EffNetSpec, block_plan


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [1x1 expand], kxk depthwise, SE, 1x1 linear projection,
    identity shortcut with drop-connect when stride 1 and widths match."""

    block: Block
    act: str
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        b, dt, ci, ax, act = self.block, self.dtype, self.conv_impl, self.bn_axis_name, self.act
        f = x
        if b.w_b != b.w_in:
            f = batch_norm(train, dt, act=act, axis_name=ax, name="exp_bn")(
                Conv(b.w_b, 1, dtype=dt, conv_impl=ci, name="exp")(f))
        f = batch_norm(train, dt, act=act, axis_name=ax, name="dwise_bn")(
            Conv(b.w_b, b.kernel, b.stride, groups=b.w_b, dtype=dt, conv_impl=ci, name="dwise")(f))
        if b.w_se:
            f = SE(b.w_se, self.act, dtype=dt, conv_impl=ci, name="se")(f)
        f = batch_norm(train, dt, axis_name=ax, name="lin_proj_bn")(
            Conv(b.w_out, 1, dtype=dt, conv_impl=ci, name="lin_proj")(f))
        if b.residual:
            f = x + drop_path(self, f, b.drop_rate, train)
        return f


class EffNet(nn.Module):
    """EfficientNet: 3x3/2 stem, stages of MBConv, head (1x1 conv, pool, dropout, fc).

    Call as model.apply(variables, images_nhwc, train=False); returns float32 logits. In train
    mode pass mutable=['batch_stats'] and, when dropout/dc_ratio > 0, rngs={'dropout': key}.
    """

    spec: EffNetSpec
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        sp, dt, ci, ax = self.spec, self.dtype, self.conv_impl, self.bn_axis_name
        check_input(sp.name, x)
        x = Stem("simple_stem_in", sp.stem_w, sp.activation, dt, ci, ax, name="stem")(x, train)
        for b in block_plan(sp):
            x = MBConv(b, sp.activation, dt, ci, ax, name=f"s{b.stage}_b{b.index}")(x, train)
        return Head(sp.head_w, sp.num_classes, sp.activation, sp.dropout, dt, ci, ax,
                    conv_bn_name="conv_bn", name="head")(x, train)
