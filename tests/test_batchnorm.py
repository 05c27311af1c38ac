"""BatchNorm: the hand-written backward pass against autodiff, synchronised statistics, and the
module's variables and running averages against Flax's nn.BatchNorm and PyTorch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastscale_jax.models.layers import BatchNorm, activation
from fastscale_jax.ops.batchnorm import batch_norm_act, inference_bn_act

EPS = 1e-5


def formula(x, scale, bias, act, axis_name=None):
    """BN + act written plainly, differentiated by JAX's autodiff (the reference)."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, (0, 1, 2))
    mean_sq = jnp.mean(jnp.square(xf), (0, 1, 2))
    if axis_name is not None:
        mean, mean_sq = jax.lax.pmean((mean, mean_sq), axis_name)
    var = mean_sq - jnp.square(mean)
    y = (xf - mean) * jax.lax.rsqrt(var + EPS) * scale + bias
    return (act or (lambda z: z))(y).astype(x.dtype), mean, var


def random_inputs(shape, seed=0, dtype=jnp.float32):
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    c = shape[-1]
    x = (jax.random.normal(k[0], shape) * 1.5 + 0.7).astype(dtype)
    scale = jax.random.normal(k[1], (c,))
    bias = jax.random.normal(k[2], (c,))
    cts = (jax.random.normal(k[3], shape), jax.random.normal(k[4], (c,)), jax.random.normal(k[5], (c,)))
    return x, scale, bias, cts


def grads(fn, x, scale, bias, cts, use_stats=True):
    """Gradients of <cts, fn(...)> (y and, if use_stats, the statistics) w.r.t. x, scale, bias."""
    def loss(x, s, b):
        y, m, v = fn(x, s, b)
        out = jnp.sum(y.astype(jnp.float32) * cts[0])
        return out + (jnp.sum(m * cts[1]) + jnp.sum(v * cts[2]) if use_stats else 0.0)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, scale, bias)


def assert_close_tree(got, want, rtol):
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        assert g.shape == w.shape
        err = np.max(np.abs(g - w)) / (np.max(np.abs(w)) + 1e-12)
        assert err <= rtol, err


@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
@pytest.mark.parametrize("use_stats", [False, True])
def test_values_and_grads_match_autodiff(act, use_stats):
    fn = activation(act) if act else None
    x, scale, bias, cts = random_inputs((4, 5, 6, 8), seed=1)
    ours = jax.jit(lambda x, s, b: batch_norm_act(x, s, b, fn, eps=EPS))(x, scale, bias)
    assert_close_tree(ours, formula(x, scale, bias, fn), 1e-5)
    got = grads(lambda x, s, b: batch_norm_act(x, s, b, fn, eps=EPS), x, scale, bias, cts, use_stats)
    want = grads(lambda x, s, b: formula(x, s, b, fn), x, scale, bias, cts, use_stats)
    assert_close_tree(got, want, 1e-4)


def test_bfloat16_input():
    x, scale, bias, cts = random_inputs((4, 6, 6, 16), seed=2, dtype=jnp.bfloat16)
    y, mean, var = batch_norm_act(x, scale, bias, jax.nn.relu)
    assert y.dtype == jnp.bfloat16 and mean.dtype == var.dtype == jnp.float32
    got = grads(lambda x, s, b: batch_norm_act(x, s, b, jax.nn.relu), x, scale, bias, cts)
    assert got[0].dtype == jnp.bfloat16
    want = grads(lambda x, s, b: formula(x, s, b, jax.nn.relu), x, scale, bias, cts)
    assert_close_tree(got, want, 2e-2)


def test_synchronised_statistics_match_pmean_autodiff():
    """Under a named axis (vmap here; pmap/shard_map behave alike) the statistics and both
    gradients equal autodiff through lax.pmean, and the statistics are those of the whole batch."""
    x, scale, bias, cts = random_inputs((3, 4, 5, 5, 8), seed=3)  # 3 'devices' of batch 4
    cts = (cts[0], jnp.stack([cts[1]] * 3), jnp.stack([cts[2]] * 3))

    def per_device(fn):
        def run(x, s, b, ct):
            def loss(x, s, b):
                y, m, v = fn(x, s, b)
                return jnp.sum(y * ct[0]) + jnp.sum(m * ct[1]) + jnp.sum(v * ct[2])
            return fn(x, s, b), jax.grad(loss, argnums=(0, 1, 2))(x, s, b)
        return jax.jit(jax.vmap(run, in_axes=(0, None, None, 0), axis_name="d"))

    ours = per_device(lambda x, s, b: batch_norm_act(x, s, b, jax.nn.silu, axis_name="d"))(x, scale, bias, cts)
    want = per_device(lambda x, s, b: formula(x, s, b, jax.nn.silu, "d"))(x, scale, bias, cts)
    assert_close_tree(ours, want, 1e-4)
    whole = formula(x.reshape((12, 5, 5, 8)), scale, bias, jax.nn.silu)
    np.testing.assert_allclose(ours[0][1][0], whole[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours[0][2][0], whole[2], rtol=1e-4, atol=1e-6)


def test_inference_is_the_running_statistics_formula():
    x, scale, bias, _ = random_inputs((2, 3, 3, 4), seed=4)
    mean, var = jnp.arange(4.0) / 4, jnp.arange(1.0, 5.0)
    want = jax.nn.relu((x - mean) / jnp.sqrt(var + EPS) * scale + bias)
    np.testing.assert_allclose(inference_bn_act(x, mean, var, scale, bias, jax.nn.relu, eps=EPS),
                               want, rtol=1e-5, atol=1e-6)


def test_shape_mismatch_is_a_clear_error():
    x, scale, bias, _ = random_inputs((2, 3, 3, 4))
    with pytest.raises(ValueError, match=r"must be \(4,\)"):
        batch_norm_act(x, scale[:3], bias)


# ------------------------------------------------------------------------------------------
# the module


def test_module_variables_match_flax_and_running_variance_is_unbiased():
    x, _, _, _ = random_inputs((4, 5, 5, 6), seed=5)
    ours, flax_bn = BatchNorm(use_running_average=False), nn.BatchNorm(use_running_average=False)
    v_ours, v_flax = ours.init(jax.random.PRNGKey(0), x), flax_bn.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(v_ours) == jax.tree_util.tree_structure(v_flax)
    assert_close_tree(v_ours, v_flax, 0.0)
    # Variables trained with one module load into the other.
    y, upd = ours.apply(v_flax, x, mutable=["batch_stats"])
    y_flax, _ = flax_bn.apply(v_flax, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_flax, rtol=1e-5, atol=1e-5)
    n = 4 * 5 * 5
    xf = np.asarray(x, np.float64).reshape(n, 6)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * xf.mean(0), rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * xf.var(0, ddof=1), rtol=1e-5)


def test_module_zero_init_activation_and_eval():
    x, _, _, _ = random_inputs((2, 4, 4, 3), seed=6)
    bn = BatchNorm(use_running_average=False, zero_init=True, act="relu")
    v = bn.init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(v["params"]["scale"], np.zeros(3))
    v = {"params": {"scale": jnp.array([1.0, -2.0, 0.5]), "bias": jnp.array([0.0, 0.3, -0.1])},
         "batch_stats": {"mean": jnp.array([0.5, 0.7, 0.1]), "var": jnp.array([2.0, 1.0, 3.0])}}
    y_train, _ = bn.apply(v, x, mutable=["batch_stats"])
    assert float(jnp.min(y_train)) == 0.0
    y_eval = BatchNorm(use_running_average=True, act="relu").apply(v, x)
    bs, p = v["batch_stats"], v["params"]
    want = np.maximum((x - bs["mean"]) / np.sqrt(bs["var"] + EPS) * p["scale"] + p["bias"], 0)
    np.testing.assert_allclose(y_eval, want, rtol=1e-5, atol=1e-6)


def test_module_sync_counts_every_device_in_the_unbiased_variance():
    x, _, _, _ = random_inputs((2, 3, 4, 4, 5), seed=7)
    bn = BatchNorm(use_running_average=False, axis_name="d")
    v = bn.init(jax.random.PRNGKey(0), x[0])
    upd = jax.vmap(lambda x: bn.apply(v, x, mutable=["batch_stats"])[1], axis_name="d")(x)
    xf = np.asarray(x, np.float64).reshape(-1, 5)
    for d in range(2):
        np.testing.assert_allclose(upd["batch_stats"]["mean"][d], 0.1 * xf.mean(0), rtol=1e-5)
        np.testing.assert_allclose(upd["batch_stats"]["var"][d], 0.9 + 0.1 * xf.var(0, ddof=1), rtol=1e-5)
