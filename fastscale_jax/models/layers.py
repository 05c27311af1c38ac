"""Layers shared by the model families: conv, BN, activations, SE, stochastic depth.

Parameters are float32; computation runs in the module's `dtype` (e.g. bfloat16). Init follows
pycls: conv kernels ~ N(0, sqrt(2 / fan_out)) with fan_out = k * k * out_channels; linear
weights ~ N(0, 0.01) with zero bias; BN gamma 1 (0 for a residual branch's last BN when
zero-init is on), beta 0. BN uses eps 1e-5 and momentum 0.9 (= PyTorch momentum 0.1) and, like
PyTorch, keeps the unbiased variance as its running average.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fastscale_jax.errors import ConfigError
from fastscale_jax.ops.batchnorm import batch_norm_act, inference_bn_act, values_per_channel
from fastscale_jax.ops.conv import conv2d

BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # Flax convention: running = m * running + (1 - m) * batch

_ACTIVATIONS = {"relu": nn.relu, "silu": nn.silu, "swish": nn.silu,
                "gelu": lambda x: nn.gelu(x, approximate=False)}


def activation(name: str):
    """The activation function called `name` ('relu', 'silu'/'swish', 'gelu')."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; valid: {sorted(_ACTIVATIONS)}") from None


DENSE_INIT_STD = 0.01  # pycls: linear weights ~ N(0, 0.01), zero bias


def conv_kernel_std(shape) -> float:
    """pycls/ResNet init of a conv kernel of HWIO `shape`: std sqrt(2 / fan_out), fan_out =
    kh * kw * out_channels (the one rule: Flax's init here, timing's host init too)."""
    kh, kw, _, c_out = shape
    return (2.0 / (kh * kw * c_out)) ** 0.5


def conv_kernel_init(key, shape, dtype=jnp.float32):
    """pycls/ResNet init: N(0, conv_kernel_std(shape))."""
    return conv_kernel_std(shape) * jax.random.normal(key, shape, dtype)


class Conv(nn.Module):
    """kxk convolution with PyTorch-style symmetric padding (k - 1) // 2, NHWC.

    The kernel is HWIO with I = in_channels // groups whatever `conv_impl` computes it
    (see fastscale_jax.ops.conv), so checkpoints do not depend on the implementation.
    """

    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    use_bias: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        if c_in % self.groups or self.features % self.groups:
            raise ValueError(f"{self.name}: groups={self.groups} must divide in ({c_in}) and out "
                             f"({self.features}) channels")
        k = self.param("kernel", conv_kernel_init,
                       (self.kernel, self.kernel, c_in // self.groups, self.features), jnp.float32)
        y = conv2d(x.astype(self.dtype), k.astype(self.dtype), stride=self.stride,
                   groups=self.groups, impl=self.conv_impl)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


class BatchNorm(nn.Module):
    """BatchNorm over (N, H, W) with an optional activation fused into it, NHWC.

    Variables as Flax's nn.BatchNorm (params scale/bias, batch_stats mean/var), so checkpoints
    are interchangeable. Training uses the batch statistics through
    `fastscale_jax.ops.batchnorm.batch_norm_act` (a hand-written backward pass) and updates
    the running averages as PyTorch/pycls do: momentum 0.9 in Flax's convention, and the
    *unbiased* batch variance n / (n - 1) * var (n counted over all synchronised devices).
    """

    use_running_average: bool
    act: Optional[str] = None
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPS
    dtype: Any = jnp.float32
    axis_name: Any = None
    zero_init: bool = False

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.zeros if self.zero_init else nn.initializers.ones,
                           (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        act = activation(self.act) if self.act else None
        x = x.astype(self.dtype)
        if self.use_running_average:
            return inference_bn_act(x, ra_mean.value, ra_var.value, scale, bias, act, eps=self.epsilon)
        if self.is_initializing():  # as Flax: init may run outside the mapped axis
            return batch_norm_act(x, scale, bias, act, eps=self.epsilon)[0]
        y, mean, var = batch_norm_act(x, scale, bias, act, eps=self.epsilon, axis_name=self.axis_name)
        n = values_per_channel(x, self.axis_name)
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
        ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var * n / jnp.maximum(n - 1, 1))
        return y


def dense(features: int, dtype=jnp.float32, name=None):
    """Fully connected layer with pycls init (N(0, 0.01) weights, zero bias)."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=nn.initializers.normal(DENSE_INIT_STD), bias_init=nn.initializers.zeros,
                    name=name)


class SE(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(expand(act(reduce(mean_hw(x))))); `conv` makes the
    1x1 convolutions (with bias)."""

    w_se: int
    act: str
    conv: Callable = Conv

    @nn.compact
    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = activation(self.act)(self.conv(self.w_se, use_bias=True, name="reduce")(s))
        s = self.conv(x.shape[-1], use_bias=True, name="expand")(s)
        return x * nn.sigmoid(s)


def drop_path(module: nn.Module, x, rate: float, train: bool):
    """Stochastic depth / drop-connect: zero whole samples with prob. `rate`, rescale the rest.

    Needs a 'dropout' PRNG stream when train and rate > 0.
    """
    if not train or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, jnp.zeros((), x.dtype)).astype(x.dtype)


def check_input(spec_name: str, x):
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ConfigError(f"{spec_name}: expected NHWC images with 3 channels, got shape {x.shape}")
    if min(x.shape[1:3]) < 8:
        raise ConfigError(f"{spec_name}: input {x.shape[1]}x{x.shape[2]} is too small")
