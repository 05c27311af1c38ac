"""Flax modules: parameter counts, shapes, dtypes, determinism, XLA flops cross-check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastscale_jax as fs

FAMILY_MEMBERS = ["RegNetX-200MF", "RegNetY-200MF", "RegNetZ-500MF", "EfficientNet-B0",
                  "ResNet-50", "ResNeXt-50"]


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", FAMILY_MEMBERS + ["RegNetY-4.0GF", "EfficientNet-B3", "RegNetZ-4GF"])
def test_param_count_equals_analytic(name):
    spec = fs.get_model_spec(name)
    model = fs.build_model(spec)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert _count(shapes["params"]) == fs.complexity(spec)["params"]
    # BN running stats: two per normalised channel (BN params are 2 per channel as well)
    assert _count(shapes["batch_stats"]) > 0


def test_cifar_stem_and_head_conv_param_counts():
    spec = fs.get_model_spec("RegNetX-200MF", stem_type="res_stem_cifar", head_w=256,
                             num_classes=10, resolution=32)
    shapes = jax.eval_shape(fs.build_model(spec).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert _count(shapes["params"]) == fs.complexity(spec)["params"]


@pytest.fixture(autouse=True, scope="module")
def _fast_init_prng():
    """XLA:CPU compiles threefry-based init of a whole network slowly (~2.5x slower than
    'rbg'); these tests only need *some* deterministic random init."""
    old = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "rbg")
    yield
    jax.config.update("jax_default_prng_impl", old)


@pytest.mark.parametrize("name", FAMILY_MEMBERS)
@pytest.mark.slow
def test_forward_shapes_and_dtypes(name):
    spec = fs.get_model_spec(name, num_classes=7)
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    variables = jax.jit(fs.build_model(spec).init)(jax.random.key(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
    for dtype in ("float32", "bfloat16"):
        model = fs.build_model(spec, dtype=dtype)  # same variables for any compute dtype

        @jax.jit
        def both(v, x):
            y_eval = model.apply(v, x)
            y_train, upd = model.apply(v, x, train=True, mutable=["batch_stats"],
                                       rngs={"dropout": jax.random.key(2)})
            return y_eval, y_train, upd

        y, y2, updates = both(variables, x)
        assert y.shape == (2, 7) and y.dtype == jnp.float32, dtype
        assert y2.shape == (2, 7) and set(updates) == {"batch_stats"}
        assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(y2)))
        # train-mode BN moved the running statistics
        changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                         variables["batch_stats"], updates["batch_stats"])
        assert any(jax.tree_util.tree_leaves(changed))
        if dtype == "float32":
            y32 = y
        else:  # bf16 compute tracks the f32 result loosely
            assert float(jnp.max(jnp.abs(y - y32))) < 0.1 * float(jnp.max(jnp.abs(y32))) + 0.05


def _tiny(**kw):
    return fs.AnyNetSpec(name="tiny", stem_type="res_stem_cifar", stem_w=8, block_type="res_bottleneck_block",
                         depths=[1, 1], widths=[16, 32], strides=[1, 2], bot_muls=[1, 1],
                         group_widths=[8, 8], se_r=0.25, num_classes=10, resolution=32, **kw)


def test_init_and_apply_deterministic():
    spec = fs.get_model_spec("RegNetX-200MF", num_classes=10)
    model = fs.build_model(spec)
    x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
    init = jax.jit(model.init)
    v1, v2 = init(jax.random.key(0), x), init(jax.random.key(0), x)
    assert all(bool(jnp.array_equal(a, b)) for a, b in
               zip(jax.tree_util.tree_leaves(v1), jax.tree_util.tree_leaves(v2)))
    v3 = init(jax.random.key(1), x)
    assert not bool(jnp.array_equal(v1["params"]["stem"]["conv"]["kernel"],
                                    v3["params"]["stem"]["conv"]["kernel"]))
    apply = jax.jit(model.apply)
    assert bool(jnp.array_equal(apply(v1, x), apply(v1, x)))

    # pycls init: conv N(0, sqrt(2 / fan_out)), fan_out = k * k * out_channels (not / groups);
    # fc N(0, 0.01) with zero bias; BN gamma 1.
    k = v1["params"]["s4_b2"]["f"]["b"]["kernel"]  # 3x3 grouped conv, 368 out channels
    assert k.shape == (3, 3, 8, 368)
    assert float(jnp.std(k)) == pytest.approx((2 / (9 * 368)) ** 0.5, rel=0.05)
    fc = v1["params"]["head"]["fc"]
    assert float(jnp.std(fc["kernel"])) == pytest.approx(0.01, rel=0.05)
    assert float(jnp.abs(fc["bias"]).max()) == 0.0
    assert float(v1["params"]["s1_b1"]["f"]["c_bn"]["scale"].min()) == 1.0


def test_zero_init_last_bn():
    x = jnp.zeros((1, 32, 32, 3))
    v = jax.jit(fs.build_model(_tiny(zero_init_last_bn=True)).init)(jax.random.key(0), x)
    assert float(jnp.abs(v["params"]["s2_b1"]["f"]["c_bn"]["scale"]).max()) == 0.0
    assert float(v["params"]["s2_b1"]["f"]["a_bn"]["scale"].min()) == 1.0


@pytest.mark.parametrize("name", ["RegNetX-200MF", "EfficientNet-B0"])
def test_xla_flops_about_twice_analytic(name):
    spec = fs.get_model_spec(name)
    model = fs.build_model(spec, conv_impl="lax")
    res = 64
    x = jnp.ones((1, res, res, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    compiled = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile()
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    ratio = ca["flops"] / (2 * fs.complexity(spec, res)["flops"])
    # XLA also counts BN, activations, adds and pooling (not multiply-adds): a few percent more.
    assert 0.97 < ratio < 1.15, ratio


def test_build_model_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown dtype"):
        fs.build_model(fs.get_model_spec("RegNetX-200MF"), dtype="float7")
    with pytest.raises(ValueError, match="expected a model spec"):
        fs.build_model({"name": "x"})
    model = fs.build_model(fs.get_model_spec("RegNetX-200MF"))
    with pytest.raises(ValueError, match="3 channels"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
