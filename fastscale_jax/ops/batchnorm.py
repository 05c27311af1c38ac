"""Training-mode batch normalisation (+ activation) with a hand-written backward pass.

`batch_norm_act(x, scale, bias, act)` normalises NHWC `x` over (N, H, W) with its batch
statistics, applies `scale`/`bias` per channel and then `act`. Its value and gradients are those
of the plain formula; what differs is the backward pass. Autodiff through the formula keeps the
centred activations `x - mean` and walks the mean and variance computations in several passes.
The rule here keeps only `x` (which the convolution producing it keeps anyway), recomputes the
normalised value and the activation's derivative in one reduction and one elementwise pass:

    dx = scale / sqrt(var + eps) * (gz - mean(gz) - xhat * mean(gz * xhat))

where `gz` is the gradient at the activation's input and `xhat` the normalised `x`. On the
2-core CPU, BN + activation fwd+bwd on large tensors ran 1.2-1.9x faster than Flax's
BatchNorm with glibc's default allocator (fewer temporaries to page-fault in) and on par with
it once `fastscale_jax.cpu.hostmem` keeps freed memory (`benchmarks/RESULTS.md` §4a).

With `axis_name` the statistics (and the two means in the backward pass) are averaged over that
pmap/shard_map/vmap axis: synchronised BN, with the same gradients as autodiff through
`lax.pmean`. Statistics are computed in float32 whatever `x.dtype`.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero


def _identity(z):
    return z


def _pmean(v, axis_name):
    return v if axis_name is None else lax.pmean(v, axis_name)


def values_per_channel(x, axis_name=None):
    """How many values each channel's statistics average over: N*H*W of `x`, times the size
    of `axis_name` when synchronised."""
    n = x.size // x.shape[-1]
    return n if axis_name is None else n * lax.psum(1, axis_name)


def _moments(x, axis_name):
    """Per-channel batch mean and biased variance (float32), averaged over `axis_name`."""
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean, mean_sq = _pmean((jnp.mean(xf, axes), jnp.mean(jnp.square(xf), axes)), axis_name)
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0)


def _normalise(x, mean, var, eps):
    inv = lax.rsqrt(var + eps)
    return (x.astype(jnp.float32) - mean) * inv, inv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _bn_act(x, scale, bias, act, eps, axis_name):
    out, _ = _forward(x, scale, bias, act, eps, axis_name)
    return out


def _bn_act_fwd(x, scale, bias, act, eps, axis_name):
    # symbolic_zeros=True: the arguments come wrapped (value, perturbed).
    return _forward(x.value, scale.value, bias.value, act, eps, axis_name)


def _forward(x, scale, bias, act, eps, axis_name):
    mean, var = _moments(x, axis_name)
    xhat, inv = _normalise(x, mean, var, eps)
    y = act(xhat * scale + bias).astype(x.dtype)
    return (y, mean, var), (x, scale, bias, mean, inv)


def _bn_act_bwd(act, eps, axis_name, res, cts):
    x, scale, bias, mean, inv = res
    g_y, g_mean, g_var = cts
    axes = tuple(range(x.ndim - 1))
    xc = x.astype(jnp.float32) - mean
    xhat = xc * inv
    _, act_vjp = jax.vjp(act, xhat * scale + bias)
    (gz,) = act_vjp(g_y.astype(jnp.float32))
    d_bias = jnp.sum(gz, axes)
    d_scale = jnp.sum(gz * xhat, axes)
    n_local = values_per_channel(x)
    m_gz, m_gzx = _pmean((d_bias / n_local, d_scale / n_local), axis_name)
    # The statistics are outputs too (for the running averages). Their cotangents are usually
    # zero, but the rule stays exact: d mean / dx = 1 / n, d var / dx = 2 (x - mean) / n, with
    # n and the cotangents summed over the devices when synchronised (as pmean transposes).
    dx = (scale * inv) * (gz - m_gz - xhat * m_gzx)
    n = values_per_channel(x, axis_name)
    for g, dx_dstat in ((g_mean, 1.0), (g_var, 2.0 * xc)):
        if not isinstance(g, SymbolicZero):
            dx = dx + (g if axis_name is None else lax.psum(g, axis_name)) * dx_dstat / n
    return dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(bias.dtype)


_bn_act.defvjp(_bn_act_fwd, _bn_act_bwd, symbolic_zeros=True)


def batch_norm_act(x, scale, bias, act: Optional[Callable] = None, *, eps: float = 1e-5,
                   axis_name=None):
    """act(BN(x)) with batch statistics over all axes but the last (channels).

    Args:
      x: activations (..., C), any float dtype; the output has the same dtype.
      scale, bias: (C,) parameters (float32).
      act: an elementwise function (hashable, e.g. `jax.nn.relu`), or None for none.
      eps: added to the variance.
      axis_name: a mapped axis to synchronise statistics over (None: this device's batch).
    Returns:
      (y, mean, var): the output and the batch mean and biased variance (float32, (C,)),
      the latter for running averages.
    """
    if x.shape[-1:] != scale.shape or scale.shape != bias.shape:
        raise ValueError(f"batch_norm_act: scale {scale.shape} and bias {bias.shape} must be "
                         f"({x.shape[-1]},), the channel count of x {x.shape}")
    return _bn_act(x, scale, bias, act or _identity, float(eps), axis_name)


def inference_bn_act(x, mean, var, scale, bias, act: Optional[Callable] = None, *,
                     eps: float = 1e-5):
    """act(BN(x)) with given (running) statistics, as one per-channel multiply-add."""
    a = scale * lax.rsqrt(var + eps)
    y = x.astype(jnp.float32) * a + (bias - mean * a)
    return (act or _identity)(y).astype(x.dtype)
