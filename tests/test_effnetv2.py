"""EfficientNetV2, the third family: exact against timm (parameter counts, converted logits),
analytic complexity against the model and XLA, scaling, timing and one training step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastscale_jax as fs
from fastscale_jax import families

SIZES = ("S", "M", "L")


def tiny(**kw):
    """EfficientNetV2-S with one block per stage (all three block types, SE, a stride-1 stage)."""
    return fs.get_model_spec("EfficientNetV2-S", depths=(1, 1, 1, 2, 1, 1), **kw)


def test_zoo_names_aliases_and_registry():
    names = fs.list_models("EfficientNetV2")
    assert names == [f"EfficientNetV2-{s}" for s in SIZES]
    assert fs.get_model_spec("efficientnetv2_s").name == "EfficientNetV2-S"
    spec = fs.get_model_spec("EfficientNetV2-S")
    assert spec.resolution == 288 and spec.test_resolution == 384  # timm's efficientnetv2_s cfg
    assert families.family_of(spec).name == "effnetv2"
    assert families.spec_from_dict(spec.to_dict()) == spec


def test_block_types_and_shortcuts():
    parts = {p.path[0]: p for p in families.layer_plan(fs.get_model_spec("EfficientNetV2-S"))}
    assert [op.path[-1] for op in parts["s1_b1"].ops] == ["conv", "conv_bn"] and parts["s1_b1"].residual
    assert [op.path[-1] for op in parts["s2_b1"].ops] == ["exp", "exp_bn", "lin_proj", "lin_proj_bn"]
    assert not parts["s2_b1"].residual and parts["s2_b2"].residual
    s4 = parts["s4_b1"].ops
    assert [op.path[-1] for op in s4] == ["exp", "exp_bn", "dwise", "dwise_bn", "se", "lin_proj",
                                         "lin_proj_bn"]
    # SE: 0.25 of the block's input width (timm: se_ratio / exp_ratio of the expanded width)
    assert s4[2].groups == s4[2].w_in == 64 * 4 and s4[4].reduce.w_out == 16


def test_bad_specs_name_the_field():
    with pytest.raises(fs.errors.ConfigError, match="block_types"):
        tiny(block_types=("conv", "fused", "fused", "mbconv", "mbconv", "bogus"))
    with pytest.raises(fs.errors.ConfigError, match="'conv' stages do not expand"):
        tiny(exp_ratios=(2, 4, 4, 4, 6, 6))
    with pytest.raises(fs.errors.ConfigError, match="se_rs"):
        tiny(se_rs=(0, 0, 0, 1.5, 0.25, 0.25))


@pytest.mark.parametrize("size", ["S", pytest.param("M", marks=pytest.mark.slow),
                                  pytest.param("L", marks=pytest.mark.slow)])
def test_params_equal_the_models_and_timms(size):
    spec = fs.get_model_spec(f"EfficientNetV2-{size}")
    shapes = jax.eval_shape(fs.build_model(spec).init, jax.random.key(0),
                            jnp.zeros((1, 64, 64, 3)))
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))
    assert fs.complexity(spec)["params"] == n
    from torch_refs import import_timm

    timm = import_timm()
    tm = timm.create_model(f"efficientnetv2_{size.lower()}", pretrained=False)
    assert n == sum(p.numel() for p in tm.parameters())


@pytest.mark.slow
def test_timm_eval_parity():
    """Full EfficientNetV2-S with timm's random init; a shallow one (every block type) with
    random BN statistics too. (Random BN statistics in all 40 blocks of S make the network
    chaotic: timm's own float32 and float64 logits then differ by ~70%.)"""
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet
    from torch_refs import check_parity, import_timm, randomize, torch

    timm = import_timm()
    spec = fs.get_model_spec("EfficientNetV2-S")
    tm = timm.create_model("efficientnetv2_s", pretrained=False).eval()
    check_parity(tm, spec, fs.convert.from_timm(tm.state_dict(), spec))
    arch = [["cn_r1_k3_s1_e1_c24_skip"], ["er_r2_k3_s2_e4_c48"], ["er_r1_k3_s2_e4_c64"],
            ["ir_r2_k3_s2_e4_c128_se0.25"], ["ir_r1_k3_s1_e6_c160_se0.25"],
            ["ir_r1_k3_s2_e6_c256_se0.25"]]
    small = randomize(EfficientNet(block_args=decode_arch_def(arch), num_features=1280,
                                   stem_size=24, act_layer=torch.nn.SiLU))
    spec = tiny().replace(depths=(1, 2, 1, 2, 1, 1))
    check_parity(small, spec, fs.convert.from_timm(small.state_dict(), spec))


def test_no_pycls_weights():
    with pytest.raises(fs.errors.ConfigError, match="converts from timm"):
        fs.convert.layer_table(fs.get_model_spec("EfficientNetV2-S"), "pycls")


def test_xla_flops_agree_with_the_analytic_count():
    spec = tiny(resolution=64)
    model = fs.build_model(spec, conv_impl="lax")
    x = jnp.zeros((2, 64, 64, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    cost = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    ratio = cost["flops"] / (2 * fs.complexity(spec)["flops"] * 2)
    assert 0.97 < ratio < 1.15, ratio  # the bounds tests/test_models.py sets the other families


def test_scaling_every_kind_and_refuses_g():
    base = fs.get_model_spec("EfficientNetV2-S")
    flops = fs.complexity(base)["flops"]
    for kind in ("d", "w", "r", "dwr", "dWr"):
        s = fs.scale(base, 2.0, kind)
        assert 1.5 < fs.complexity(s)["flops"] / flops < 2.6, kind
        assert s.block_types == base.block_types and s.se_rs == base.se_rs
    w = fs.scale(base, 2.0, "w")
    assert w.stem_w > base.stem_w and w.head_w > base.head_w  # EfficientNets scale both
    assert fs.scale(base, 4.0, alpha=0.8).widths == fs.scale(base, 4.0, "dWr").widths
    with pytest.raises(fs.errors.ConfigError, match="changes nothing"):
        fs.scale(base, 2.0, "g")


def test_one_training_step_and_timing():
    from fastscale_jax import timing
    from fastscale_jax.config import base_config

    c = base_config()
    spec = tiny(resolution=32, test_resolution=32, num_classes=10)
    res = timing.time_model(spec, c, batch_size=2, modes=("train_step",), warmup=1, iters=1,
                            windows=1)["train_step"]
    assert res.ok and res.time_s > 0 and res.finite_outputs, res.error
