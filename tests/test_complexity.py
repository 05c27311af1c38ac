"""Analytic complexity equals pycls's numbers to the unit, for the whole zoo."""

import ast

import pytest

import fastscale_jax as fs
from conftest import SHARED, read_csv


def test_every_zoo_model_is_in_the_reference(pycls_zoo_rows):
    """Every model of a family pycls has; EfficientNetV2 is checked against timm instead
    (tests/test_effnetv2.py)."""
    pycls = {n for n in fs.list_models() if "pycls" in fs.families.family_of(
        fs.get_model_spec(n)).weight_sources}
    assert {r["model"] for r in pycls_zoo_rows} == pycls


def test_whole_zoo_matches_pycls(pycls_zoo_rows):
    for r in pycls_zoo_rows:
        spec = fs.get_model_spec(r["model"])
        cx = fs.complexity(spec)
        assert (cx["flops"], cx["params"], cx["acts"]) == (int(r["flops"]), int(r["params"]), int(r["acts"])), r["model"]
        assert list(spec.depths) == ast.literal_eval(r["depths"]), r["model"]
        assert list(spec.widths) == ast.literal_eval(r["widths"]), r["model"]
        assert (spec.resolution, spec.test_resolution) == (int(r["train_im_size"]), int(r["test_im_size"]))
        if r["group_ws"] != "dw":
            assert list(spec.group_widths) == ast.literal_eval(r["group_ws"]), r["model"]


@pytest.mark.skipif(not (SHARED / "reference").exists(), reason="../shared/reference not present")
def test_shared_reference_rows():
    rows = read_csv(SHARED / "reference" / "pycls_model_zoo.csv")
    assert rows
    for r in rows:
        cx = fs.complexity(fs.get_model_spec(r["model"]), int(r["resolution"]))
        assert (cx["flops"], cx["params"], cx["acts"]) == (int(r["flops"]), int(r["params"]), int(r["acts"]))


def test_per_stage_breakdown_sums_to_total():
    spec = fs.get_model_spec("EfficientNet-B0")
    cx = fs.complexity(spec, per_stage=True)
    assert [p["name"] for p in cx["stages"]] == ["stem"] + [f"s{i}" for i in range(1, 8)] + ["head"]
    for k in ("flops", "params", "acts"):
        assert sum(p[k] for p in cx["stages"]) == cx[k]
    assert cx["stages"][0]["out_h"] == 112 and cx["stages"][-2]["out_h"] == 7


def test_resolution_argument_and_quadratic_flops():
    spec = fs.get_model_spec("ResNet-50")
    a, b = fs.complexity(spec, 224), fs.complexity(spec, 448)
    assert a["params"] == b["params"]
    assert 3.9 < b["flops"] / a["flops"] < 4.05
