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
    from fastscale_jax.models.host_init import INIT
    from fastscale_jax.models.network import APPLY

    for table in (COUNT, APPLY, INIT):
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


@pytest.mark.parametrize("name", ["RegNetY-200MF", "RegNetZ-500MF", "ResNet-50", "EfficientNet-B0",
                                  "EfficientNetV2-S"])
def test_host_init_is_the_models_tree_with_the_models_init_rule(name):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fastscale_jax.models.host_init import host_variables
    from fastscale_jax.models.layers import conv_kernel_std

    spec = fs.get_model_spec(name, zero_init_last_bn=True) if name == "ResNet-50" else \
        fs.get_model_spec(name)
    host = host_variables(spec, seed=0)
    flax_vars = jax.eval_shape(fs.build_model(spec).init, jax.random.key(0),
                               jnp.zeros((1, 64, 64, 3)))
    shapes = lambda t: {jax.tree_util.keystr(p): tuple(x.shape)  # noqa: E731
                        for p, x in jax.tree_util.tree_leaves_with_path(t)}
    assert shapes(host) == shapes(flax_vars)
    stem = host["params"]["stem"]["conv"]["kernel"]
    assert abs(stem.std() / conv_kernel_std(stem.shape) - 1) < 0.1  # fan-out rule, as Flax's
    if name == "ResNet-50":  # zero-initialised last BN of each residual branch
        assert not host["params"]["s1_b1"]["f"]["c_bn"]["scale"].any()


def test_the_train_state_is_built_in_one_place():
    files = [p for p in PKG.rglob("*.py") if "TrainState(" in p.read_text()]
    assert [p.relative_to(PKG).as_posix() for p in files] == ["train/state.py"]


def _imports(path: pathlib.Path, module: str) -> set:
    """fastscale_jax modules `module` imports anywhere in its file (module level or inside
    functions): 'from a.b import c' counts a.b.c when that is a module, else a.b."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if _module_file(sub) else base)
    return {m for m in out if m.startswith("fastscale_jax") and _module_file(m)} - {module}


def _module_file(name: str):
    parts = name.split(".")[1:]
    if not parts:
        return PKG / "__init__.py"
    for cand in (PKG.joinpath(*parts[:-1], parts[-1] + ".py"), PKG.joinpath(*parts, "__init__.py")):
        if cand.is_file():
            return cand
    return None


def test_the_import_graph_has_no_cycle():
    modules = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        parts = [x for x in rel.parts if x != "__init__"]
        modules[".".join(["fastscale_jax", *parts])] = p
    graph = {m: _imports(p, m) for m, p in modules.items()}
    # a package's __init__ re-exporting its submodules is not a cycle of theirs
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and modules[t].name == "__init__.py")}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def test_no_library_constructor_or_import_changes_process_state(tmp_path):
    """The Checkpointer leaves sys.unraisablehook and logging alone (the training loop scopes
    its quieting: checkpoint.quiet_orbax); importing the input pipeline hides no device; a
    oneDNN convolution writes no environment variable."""
    import os
    import sys

    from absl import logging as absl_logging

    from fastscale_jax.train import checkpoint

    hook, verbosity = sys.unraisablehook, absl_logging.get_verbosity()
    checkpoint.Checkpointer(str(tmp_path)).close()
    assert sys.unraisablehook is hook and absl_logging.get_verbosity() == verbosity
    with checkpoint.quiet_orbax():
        assert sys.unraisablehook is not hook
    assert sys.unraisablehook is hook and absl_logging.get_verbosity() == verbosity
    pytest.importorskip("tensorflow")
    from fastscale_jax.data import _tf, pipeline  # noqa: F401

    assert _tf.host_only.cache_info().currsize == 0  # hidden only when a dataset is built
    env = dict(os.environ)  # (TensorFlow sets a few of its own when it is imported)
    import jax.numpy as jnp

    from fastscale_jax.ops.conv import conv2d

    conv2d(jnp.ones((1, 8, 8, 8)), jnp.ones((3, 3, 1, 8)), groups=8, impl="auto").block_until_ready()
    assert dict(os.environ) == env
