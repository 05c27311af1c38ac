"""The house rules, checked: families behind one registry, op kinds dispatched through tables
that cover every kind, no branching on a spec's family outside the family modules, and an
import graph without cycles."""

import ast
import pathlib
import re

import pytest

import fastscale_jax as fs
from fastscale_jax import families, plan

PKG = pathlib.Path(fs.__file__).resolve().parent


def test_every_op_kind_has_an_entry_in_every_consumer_table():
    from fastscale_jax.complexity import COUNT
    from fastscale_jax.models.network import APPLY

    for table in (COUNT, APPLY):
        assert set(table) == set(plan.OP_KINDS)
    for kind in plan.OP_KINDS:  # weights and stride come from the op itself
        assert callable(getattr(kind, "weights")) and hasattr(kind, "stride")


def test_every_zoo_model_belongs_to_a_registered_family():
    names = fs.list_models()
    assert len(names) == len(set(names))
    for name in names:
        spec = fs.get_model_spec(name)
        fam = families.family_of(spec)
        assert fam is families.FAMILIES[spec.family]
        assert families.spec_from_dict(spec.to_dict()) == spec


def test_family_of_rejects_non_specs_with_one_clear_line():
    with pytest.raises(fs.errors.ConfigError, match=r"get_model_spec\('RegNetZ-500MF'\)"):
        fs.complexity("RegNetZ-500MF")
    with pytest.raises(fs.errors.ConfigError, match="expected a model spec"):
        fs.build_model(None)


def _code_files():
    return [p for p in PKG.rglob("*.py") if "families" not in p.relative_to(PKG).parts]


def test_nothing_outside_the_family_modules_branches_on_the_family():
    pattern = re.compile(r"""family\s*[!=]=\s*["'](anynet|effnet|effnetv2)["']|"""
                         r"""["'](anynet|effnet|effnetv2)["']\s*[!=]=\s*\w*\.?family|"""
                         r"""isinstance\([^)]*(AnyNetSpec|EffNetSpec|EffNetV2Spec)""")
    hits = [f"{p.relative_to(PKG)}:{i}" for p in _code_files()
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
