"""The per-layer plan: the Flax model's variables are exactly the plan's weight layers, and
the plan's order, names and strides are as pycls builds the networks."""

import jax
import jax.numpy as jnp
import pytest

import fastscale_jax as fs
from fastscale_jax.families import layer_plan, total_stride, weight_layers
from fastscale_jax.plan import BNOp, ConvOp, LinearOp, SEOp


def _spec(name, **kw):
    return fs.AnyNetSpec(name=name, stem_w=8, widths=[8, 16], depths=[2, 2], strides=[1, 2],
                         bot_muls=[1, 1], group_widths=[1, 1], num_classes=10, resolution=32, **kw)


SPECS = {
    "RegNetX": fs.get_model_spec("RegNetX-200MF", depths=(1, 2, 1, 1)),
    "RegNetY": fs.get_model_spec("RegNetY-200MF", depths=(1, 2, 1, 1)),
    "RegNetZ": fs.get_model_spec("RegNetZ-500MF", depths=(1, 2, 1, 1)),
    "ResNet-bottleneck": fs.get_model_spec("ResNet-50", depths=(1, 2, 1, 1)),
    "ResNeXt": fs.get_model_spec("ResNeXt-50", depths=(1, 1, 1, 1)),
    "ResNet-basic": _spec("basic", stem_type="res_stem_in", block_type="res_basic_block"),
    "basic-cifar-head": _spec("basic-cifar", stem_type="res_stem_cifar",
                              block_type="res_basic_block", head_w=32),
    "vanilla": _spec("vanilla", stem_type="simple_stem_in", block_type="vanilla_block"),
    # stage 1 has expansion ratio 1 (no 'exp' conv: w_b == w_in); dropout in the head
    "EfficientNet": fs.get_model_spec("EfficientNet-B0", depths=(1, 2, 1, 1, 1, 1, 1), dropout=0.2),
}


def _plan_shapes(spec):
    """{(collection, *path, leaf): shape} written out from the plan's ops."""
    shapes = {}
    for part in layer_plan(spec):
        for op in part.shortcut + part.ops:
            convs = (op.reduce, op.expand) if isinstance(op, SEOp) else (op,)
            for c in convs:
                if isinstance(c, ConvOp):
                    shapes[("params", *c.path, "kernel")] = (c.kernel, c.kernel, c.w_in // c.groups, c.w_out)
                    if c.bias:
                        shapes[("params", *c.path, "bias")] = (c.w_out,)
                elif isinstance(c, BNOp):
                    for leaf in ("params/scale", "params/bias", "batch_stats/mean", "batch_stats/var"):
                        coll, name = leaf.split("/")
                        shapes[(coll, *c.path, name)] = (c.channels,)
                elif isinstance(c, LinearOp):
                    shapes[("params", *c.path, "kernel")] = (c.w_in, c.w_out)
                    shapes[("params", *c.path, "bias")] = (c.w_out,)
    return shapes


@pytest.mark.parametrize("key", list(SPECS))
def test_model_variables_are_the_plans_weight_layers(key):
    spec = SPECS[key]
    model = fs.build_model(spec)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    got = {tuple(k.key for k in p): tuple(leaf.shape)
           for p, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}
    assert got == _plan_shapes(spec)
    layers = weight_layers(spec)
    assert len({p for p, _ in layers}) == len(layers)
    assert {p for p, _ in layers} == {k[1:-1] for k in got}


def test_weight_layers_order_and_kinds():
    spec = _spec("tiny", stem_type="res_stem_cifar", block_type="res_bottleneck_block",
                 se_r=0.25).replace(depths=(1, 1))
    names = [("/".join(p), kind) for p, kind in weight_layers(spec)]
    block2 = [("s2_b1/proj", "conv"), ("s2_b1/bn", "bn"),  # pycls: shortcut before the branch
              ("s2_b1/f/a", "conv"), ("s2_b1/f/a_bn", "bn"), ("s2_b1/f/b", "conv"),
              ("s2_b1/f/b_bn", "bn"), ("s2_b1/f/se/reduce", "conv_b"),
              ("s2_b1/f/se/expand", "conv_b"), ("s2_b1/f/c", "conv"), ("s2_b1/f/c_bn", "bn")]
    assert names[:2] == [("stem/conv", "conv"), ("stem/bn", "bn")]
    assert names[-11:] == block2 + [("head/fc", "linear")]
    # the first block keeps its width and stride: identity shortcut, no proj
    assert ("s1_b1/proj", "conv") not in names and len(names) == 2 + 8 + 10 + 1


def test_plan_block_structure():
    z = {p.path: p for p in layer_plan(fs.get_model_spec("RegNetZ-500MF"))}
    # RegNetZ: the first block of a stage has no residual, the others no activation after the add
    assert not z[("s2_b1",)].residual and z[("s2_b2",)].residual
    assert z[("s2_b2",)].post_act is None and z[("s2_b2",)].shortcut == ()
    r = {p.path: p for p in layer_plan(fs.get_model_spec("ResNet-50"))}
    assert r[("s1_b1",)].residual and r[("s1_b1",)].post_act == "relu"
    assert [op.path[-1] for op in r[("s1_b1",)].shortcut] == ["proj", "bn"]
    assert r[("s1_b1",)].branch == "f"
    e = {p.path: p for p in layer_plan(fs.get_model_spec("EfficientNet-B0"))}
    assert e[("s1_b1",)].branch is None and [op.path[-1] for op in e[("s1_b1",)].ops][0] == "dwise"
    assert [type(op).__name__ for op in e[("head",)].ops] == ["ConvOp", "BNOp", "PoolOp", "LinearOp"]


@pytest.mark.parametrize("name,stride", [("RegNetX-200MF", 32), ("ResNet-50", 32),
                                         ("EfficientNet-B0", 32), ("RegNetZ-500MF", 32)])
def test_total_stride_zoo(name, stride):
    assert total_stride(fs.get_model_spec(name)) == stride


def test_total_stride_stems():
    # stem conv stride x max-pool stride x stage strides (1, 2)
    assert total_stride(_spec("a", stem_type="res_stem_cifar", block_type="res_basic_block")) == 2
    assert total_stride(_spec("b", stem_type="simple_stem_in", block_type="res_basic_block")) == 4
    assert total_stride(_spec("c", stem_type="res_stem_in", block_type="res_basic_block")) == 8


def test_layer_plan_rejects_non_specs():
    with pytest.raises(ValueError, match="expected a model spec"):
        layer_plan({"name": "x"})
