"""Specs, the RegNet generator and the zoo (pure Python)."""

import sys

import pytest

import fastscale_jax as fs
from fastscale_jax import AnyNetSpec, EffNetSpec, adjust_block_compatibility, generate_regnet


def test_import_does_not_pull_tensorflow_or_torch():
    import subprocess

    code = ("import sys, fastscale_jax as fs; fs.build_model(fs.get_model_spec('RegNetX-200MF'));"
            "import fastscale_jax.config, fastscale_jax.report;"
            "bad=[m for m in ('tensorflow','tensorflow_datasets','torch') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_regnet_generator_hand_checked():
    # RegNetY-800MF: w_a 38.84, w_0 56, w_m 2.4, depth 14. The generator gives widths
    # [56, 136, 320, 776], depths [1, 3, 8, 2]; block compatibility with group width 16 then
    # rounds half-to-even to [64, 128, 320, 768] (round-half-up would give [64, 144, 320, 784]).
    ws, ds = generate_regnet(38.84, 56, 2.4, 14)
    assert ws == [56, 136, 320, 776] and ds == [1, 3, 8, 2]
    assert adjust_block_compatibility(ws, [1.0] * 4, [16] * 4)[0] == [64, 128, 320, 768]
    spec = fs.get_model_spec("RegNetY-800MF")
    assert list(spec.widths) == [64, 128, 320, 768] and list(spec.depths) == [1, 3, 8, 2]
    assert spec.se_r == 0.25 and list(spec.group_widths) == [16] * 4
    # RegNetX-200MF from its published table: widths [24,56,152,368], depths [1,1,4,7].
    ws, ds = generate_regnet(36.44, 24, 2.49, 13)
    assert (ws, ds) == ([24, 56, 152, 368], [1, 1, 4, 7])


def test_block_compatibility_half_to_even():
    # 20 / 8 = 2.5 rounds to 2 (half-to-even) -> 16, not 24.
    ws, _, gs = adjust_block_compatibility([20], [1.0], [8])
    assert ws == [16] and gs == [8]
    # group width larger than the bottleneck is capped
    ws, _, gs = adjust_block_compatibility([16], [0.25], [8])
    assert gs == [4] and ws == [16]


def test_zoo_names_and_aliases():
    names = fs.list_models()
    assert len(names) == 41
    assert len(fs.list_models("RegNetX")) == 12 and len(fs.list_models("RegNetY")) == 12
    assert len(fs.list_models("EfficientNet")) == 6 and len(fs.list_models("EfficientNetV2")) == 3
    assert len(fs.list_models("RegNet")) == 26  # a prefix: every RegNet
    assert {"ResNet-50", "ResNeXt-152", "RegNetZ-500MF", "RegNetZ-4GF"} <= set(names)
    for alias in ("regnety_4.0gf", "regnety_4gf", "RegNetY-4.0GF", "REGNETY-4GF"):
        assert fs.get_model_spec(alias).name == "RegNetY-4.0GF"
    assert fs.get_model_spec("regnety_800mf").name == "RegNetY-800MF"
    assert fs.get_model_spec("efficientnet_b3").resolution == 300


def test_unknown_model_suggests_close_matches():
    with pytest.raises(ValueError, match="Unknown model 'RegNetY-800M'.*RegNetY-800MF"):
        fs.get_model_spec("RegNetY-800M")
    with pytest.raises(ValueError, match="unknown spec field"):
        fs.get_model_spec("RegNetY-800MF", widht=3)


def _anynet(**kw):
    base = dict(name="t", stem_type="simple_stem_in", stem_w=16, block_type="res_bottleneck_block",
                depths=[1, 1], widths=[16, 32], strides=[2, 2], bot_muls=[1, 1], group_widths=[8, 8])
    base.update(kw)
    return AnyNetSpec(**base)


@pytest.mark.parametrize("kw, field", [
    (dict(widths=[16, 0]), "widths"),
    (dict(depths=[1, -1]), "depths"),
    (dict(group_widths=[8, 12]), "group_widths"),
    (dict(bot_muls=[1.5, 1.0]), "bot_muls"),
    (dict(resolution=16), "resolution"),
    (dict(activation="tanh"), "activation"),
    (dict(block_type="fancy_block"), "block_type"),
    (dict(stem_type="big_stem"), "stem_type"),
    (dict(depths=[1]), "stages"),
])
def test_invalid_anynet_spec_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        _anynet(**kw)


def test_invalid_effnet_spec():
    spec = fs.get_model_spec("EfficientNet-B0")
    with pytest.raises(ValueError, match="'kernels'"):
        spec.replace(kernels=[3, 3, 4, 3, 5, 5, 3])
    with pytest.raises(ValueError, match="'dropout'"):
        spec.replace(dropout=1.5)
    assert isinstance(spec, EffNetSpec) and spec.group_widths == (1,) * 7


def test_specs_are_immutable_values():
    spec = fs.get_model_spec("RegNetX-200MF")
    with pytest.raises(Exception):
        spec.widths = (1, 2, 3, 4)
    assert spec.replace(num_classes=10) != spec
    assert spec.replace(num_classes=10).replace(num_classes=1000) == spec


def test_specs_refuse_values_a_cast_would_change():
    with pytest.raises(fs.errors.ConfigError, match="widths.*must be integers"):
        fs.get_model_spec("RegNetX-200MF").replace(widths=(24.5, 56, 152, 368))
    with pytest.raises(fs.errors.ConfigError, match="depths.*must be numbers"):
        fs.get_model_spec("RegNetX-200MF").replace(depths=(1, True, 4, 7))
    with pytest.raises(fs.errors.ConfigError, match="resolution.*must be an integer"):
        fs.get_model_spec("RegNetX-200MF").replace(resolution=224.5)
