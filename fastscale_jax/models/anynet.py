"""AnyNet in Flax Linen: RegNetX/Y/Z, ResNet and ResNeXt from an `AnyNetSpec`.

Module and parameter names mirror pycls (stem/conv, s1/b1/f/a, s1/b1/proj, head/fc, ...) so
that pycls checkpoints map one-to-one. Blocks come from `specs.block_plan`, the plan the
complexity counter also walks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fastscale_jax.models.layers import SE, Conv, activation, batch_norm, check_input, dense, drop_path
from fastscale_jax.specs import AnyNetSpec, Block, block_plan


class Stem(nn.Module):
    """simple_stem_in: 3x3/2 conv; res_stem_in: 7x7/2 conv + 3x3/2 max-pool; res_stem_cifar: 3x3 conv."""

    stem_type: str
    width: int
    act: str
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        k, s = {"simple_stem_in": (3, 2), "res_stem_in": (7, 2), "res_stem_cifar": (3, 1)}[self.stem_type]
        x = Conv(self.width, k, s, dtype=self.dtype, conv_impl=self.conv_impl, name="conv")(x)
        x = batch_norm(train, self.dtype, act=self.act, axis_name=self.bn_axis_name, name="bn")(x)
        if self.stem_type == "res_stem_in":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return x


class Transform(nn.Module):
    """The residual branch f(x): basic (3x3, 3x3) or bottleneck (1x1, 3x3 grouped [+SE], 1x1)."""

    block: Block
    block_type: str
    act: str
    zero_init_last_bn: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        b, dt, ci, ax, act = self.block, self.dtype, self.conv_impl, self.bn_axis_name, self.act
        last_zero = self.zero_init_last_bn and self.block_type != "vanilla_block"
        if self.block_type in ("vanilla_block", "res_basic_block"):
            x = batch_norm(train, dt, act=act, axis_name=ax, name="a_bn")(
                Conv(b.w_out, 3, b.stride, dtype=dt, conv_impl=ci, name="a")(x))
            vanilla = self.block_type == "vanilla_block"
            return batch_norm(train, dt, act=act if vanilla else None, zero_init=last_zero,
                              axis_name=ax, name="b_bn")(Conv(b.w_out, 3, dtype=dt, conv_impl=ci, name="b")(x))
        x = batch_norm(train, dt, act=act, axis_name=ax, name="a_bn")(
            Conv(b.w_b, 1, dtype=dt, conv_impl=ci, name="a")(x))
        x = batch_norm(train, dt, act=act, axis_name=ax, name="b_bn")(
            Conv(b.w_b, 3, b.stride, b.groups, dtype=dt, conv_impl=ci, name="b")(x))
        if b.w_se:
            x = SE(b.w_se, self.act, dtype=dt, conv_impl=ci, name="se")(x)
        x = Conv(b.w_out, 1, dtype=dt, conv_impl=ci, name="c")(x)
        return batch_norm(train, dt, zero_init=last_zero, axis_name=ax, name="c_bn")(x)


class AnyBlock(nn.Module):
    """One block: f(x) with an identity or 1x1-projection shortcut (none for vanilla blocks
    and for RegNetZ blocks that change shape); ReLU-style activation after the add except for
    RegNetZ's linear blocks."""

    block: Block
    block_type: str
    act: str
    zero_init_last_bn: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        b = self.block
        fx = Transform(b, self.block_type, self.act, self.zero_init_last_bn, self.dtype,
                       self.conv_impl, self.bn_axis_name, name="f")(x, train)
        if self.block_type == "vanilla_block":
            return fx
        if b.proj:
            x = Conv(b.w_out, 1, b.stride, dtype=self.dtype, conv_impl=self.conv_impl, name="proj")(x)
            x = batch_norm(train, self.dtype, axis_name=self.bn_axis_name, name="bn")(x)
        if not b.residual:
            return fx
        out = x + drop_path(self, fx, b.drop_rate, train)
        return out if self.block_type == "res_bottleneck_linear_block" else activation(self.act)(out)


class AnyNet(nn.Module):
    """AnyNet: stem, stages s1..sN of blocks b1..bD, head (optional 1x1 conv, pool, fc).

    Call as model.apply(variables, images_nhwc, train=False); returns float32 logits.
    In train mode BN uses batch statistics (mutable=['batch_stats']) and stochastic depth
    needs rngs={'dropout': key} when spec.drop_path_rate > 0.
    """

    spec: AnyNetSpec
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        sp, dt, ci, ax = self.spec, self.dtype, self.conv_impl, self.bn_axis_name
        check_input(sp.name, x)
        x = Stem(sp.stem_type, sp.stem_w, sp.activation, dt, ci, ax, name="stem")(x, train)
        for b in block_plan(sp):
            x = AnyBlock(b, sp.block_type, sp.activation, sp.zero_init_last_bn, dt, ci, ax,
                         name=f"s{b.stage}_b{b.index}")(x, train)
        return Head(sp.head_w, sp.num_classes, sp.activation, 0.0, dt, ci, ax, name="head")(x, train)


class Head(nn.Module):
    """Optional 1x1 conv + BN + act, global average pool, optional dropout, fc (float32 logits)."""

    head_w: int
    num_classes: int
    act: str
    dropout: float = 0.0
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    bn_axis_name: Any = None
    conv_bn_name: str = "bn"

    @nn.compact
    def __call__(self, x, train: bool):
        if self.head_w > 0:
            x = Conv(self.head_w, 1, dtype=self.dtype, conv_impl=self.conv_impl, name="conv")(x)
            x = batch_norm(train, self.dtype, act=self.act, axis_name=self.bn_axis_name,
                           name=self.conv_bn_name)(x)
        x = jnp.mean(x, axis=(1, 2))
        if self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return dense(self.num_classes, self.dtype, name="fc")(x).astype(jnp.float32)
