"""The Flax network of a spec: its layer plan (`fastscale_jax.plan`) turned into modules.

One module class serves every family (RegNetX/Y/Z, ResNet, ResNeXt, EfficientNet): the plan
says which layers a part has; the modules only interpret it. Module and parameter names are
the plan's paths, which mirror pycls (stem/conv, s1_b1/f/a, s1_b1/proj, s1_b1/dwise,
head/fc, ...), so pycls checkpoints map one-to-one.

Layers come from callables, as in the Flax ImageNet example: `conv(features, kernel, stride,
groups, use_bias=..., name=...)`, `norm(use_running_average=..., act=..., zero_init=...,
name=...)` and `dense(features, name=...)`; `build_model` binds dtype, convolution
implementation and the BatchNorm axis name into them.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from fastscale_jax.models.layers import SE, BatchNorm, Conv, activation, check_input, drop_path
from fastscale_jax.models.layers import dense as make_dense
from fastscale_jax.plan import (BNOp, ConvOp, DropoutOp, LinearOp, MaxPoolOp, Part, PoolOp, SEOp,
                                layer_plan)


class _Layers(nn.Module):
    """A module that makes its layers with the `conv`, `norm` and `dense` callables."""

    conv: Callable = Conv
    norm: Callable = BatchNorm
    dense: Callable = make_dense

    def apply_ops(self, ops, x, train: bool):
        """Apply plan ops in order; their modules become children of this module."""
        for op in ops:
            if isinstance(op, ConvOp):
                x = self.conv(op.w_out, op.kernel, op.stride, op.groups, use_bias=op.bias,
                              name=op.path[-1])(x)
            elif isinstance(op, BNOp):
                x = self.norm(use_running_average=not train, act=op.act, zero_init=op.zero_init,
                              name=op.path[-1])(x)
            elif isinstance(op, MaxPoolOp):
                pad = (op.kernel - 1) // 2
                x = nn.max_pool(x, (op.kernel, op.kernel), strides=(op.stride, op.stride),
                                padding=((pad, pad), (pad, pad)))
            elif isinstance(op, SEOp):
                x = SE(op.reduce.w_out, op.act, self.conv, name=op.path[-1])(x)
            elif isinstance(op, PoolOp):
                x = jnp.mean(x, axis=(1, 2))
            elif isinstance(op, DropoutOp):
                x = nn.Dropout(op.rate, deterministic=not train)(x)
            elif isinstance(op, LinearOp):
                x = self.dense(op.w_out, name=op.path[-1])(x).astype(jnp.float32)
            else:
                raise TypeError(f"unknown plan op {op!r}")
        return x


class Chain(_Layers):
    """A sequence of plan ops in a module of its own (an AnyNet block's branch 'f')."""

    ops: tuple = ()

    @nn.compact
    def __call__(self, x, train: bool):
        return self.apply_ops(self.ops, x, train)


class PlanPart(_Layers):
    """One part of the plan (stem, block or head): ops [+ shortcut, add, post-activation]."""

    part: Part = None

    @nn.compact
    def __call__(self, x, train: bool):
        p = self.part
        if p.branch:
            fx = Chain(self.conv, self.norm, self.dense, p.ops, name=p.branch)(x, train)
        else:
            fx = self.apply_ops(p.ops, x, train)
        if not p.residual:
            return fx
        out = self.apply_ops(p.shortcut, x, train) + drop_path(self, fx, p.drop_rate, train)
        return activation(p.post_act)(out) if p.post_act else out


class Network(_Layers):
    """The network of an AnyNetSpec or EffNetSpec: stem, blocks s1_b1 ... sN_bD, head.

    Call as model.apply(variables, images_nhwc, train=False); returns float32 logits. In
    train mode BN uses batch statistics (pass mutable=['batch_stats']) and stochastic depth,
    drop-connect and head dropout need rngs={'dropout': key} when their rates are > 0.
    """

    spec: object = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        check_input(self.spec.name, x)
        for part in layer_plan(self.spec):
            x = PlanPart(self.conv, self.norm, self.dense, part, name=part.path[-1])(x, train)
        return x
