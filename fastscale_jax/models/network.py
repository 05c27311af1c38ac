"""The Flax network of a spec: its layer plan (`fastscale_jax.plan`) turned into modules.

One module class serves every family (fastscale_jax/families/): the plan
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
from fastscale_jax.families import layer_plan
from fastscale_jax.plan import BNOp, ConvOp, DropoutOp, LinearOp, MaxPoolOp, Part, PoolOp, SEOp


def _conv(m, op: ConvOp, x, train):
    return m.conv(op.w_out, op.kernel, op.stride, op.groups, use_bias=op.bias, name=op.path[-1])(x)


def _bn(m, op: BNOp, x, train):
    return m.norm(use_running_average=not train, act=op.act, zero_init=op.zero_init,
                  name=op.path[-1])(x)


def _max_pool(m, op: MaxPoolOp, x, train):
    pad = (op.kernel - 1) // 2
    return nn.max_pool(x, (op.kernel, op.kernel), strides=(op.stride, op.stride),
                       padding=((pad, pad), (pad, pad)))


def _se(m, op: SEOp, x, train):
    return SE(op.reduce.w_out, op.act, m.conv, name=op.path[-1])(x)


def _dropout(m, op: DropoutOp, x, train):
    return nn.Dropout(op.rate, deterministic=not train)(x)


def _linear(m, op: LinearOp, x, train):
    return m.dense(op.w_out, name=op.path[-1])(x).astype(jnp.float32)


# How each plan op kind runs (one entry per kind of fastscale_jax.plan.OP_KINDS).
APPLY = {ConvOp: _conv, BNOp: _bn, MaxPoolOp: _max_pool, SEOp: _se,
         PoolOp: lambda m, op, x, train: jnp.mean(x, axis=(1, 2)), DropoutOp: _dropout,
         LinearOp: _linear}


class _Layers(nn.Module):
    """A module that makes its layers with the `conv`, `norm` and `dense` callables."""

    conv: Callable = Conv
    norm: Callable = BatchNorm
    dense: Callable = make_dense

    def apply_ops(self, ops, x, train: bool):
        """Apply plan ops in order; their modules become children of this module."""
        for op in ops:
            try:
                run = APPLY[type(op)]
            except KeyError:
                raise TypeError(f"unknown plan op {op!r}") from None
            x = run(self, op, x, train)
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
    """The network of a spec of any family: stem, blocks s1_b1 ... sN_bD, head.

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
