"""fastscale_jax.ops.conv and the CPU formulations fastscale_jax.cpu registers with it: every
implementation equals lax.conv_general_dilated (values and gradients wrt input and kernel),
'auto' picks the fast CPU formulations, bad impls raise, FFI convs are counted."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fastscale_jax.cpu import onednn, xla_conv
from fastscale_jax.ops import conv as fconv

IMPLS = [i for i in fconv.IMPLS if i != "auto"]


def reference(x, w, stride, groups):
    p = (w.shape[0] - 1) // 2
    return lax.conv_general_dilated(x, w, (stride, stride), [(p, p), (p, p)],
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups,
                                    precision=lax.Precision.HIGHEST)


def value_and_grads(conv, x, w, dy):
    y, vjp = jax.vjp(conv, x, w)
    return (y,) + tuple(vjp(dy))


# (N, H, W, Cin, Cout, k, stride, groups): depthwise, group widths 1, 2, 4, 8, 16, dense,
# kernels 1/3/5, strides 1/2, odd and even sizes, channel multipliers (Cout != Cin).
CASES = [
    (2, 7, 6, 8, 8, 3, 1, 8),      # depthwise, odd x even
    (2, 8, 8, 8, 8, 3, 2, 8),      # depthwise stride 2, even (where TF 'SAME' differs)
    (1, 9, 9, 6, 6, 5, 2, 6),      # depthwise 5x5 stride 2, odd
    (2, 6, 6, 8, 16, 3, 1, 8),     # group width 1 in, 2 out (channel multiplier)
    (2, 7, 7, 8, 8, 3, 2, 4),      # group width 2
    (2, 6, 6, 16, 16, 3, 1, 4),    # group width 4
    (2, 7, 8, 16, 24, 3, 2, 2),    # group width 8 in, 12 out
    (1, 6, 6, 32, 32, 3, 1, 2),    # group width 16 (shift: loop over taps)
    (2, 5, 6, 16, 8, 1, 1, 2),     # 1x1 grouped
    (2, 6, 7, 8, 12, 1, 1, 1),     # 1x1 dense
    (2, 8, 8, 8, 12, 1, 2, 1),     # 1x1 dense stride 2 (projection shortcut)
    (2, 7, 6, 8, 12, 3, 1, 1),     # dense
    (2, 8, 8, 3, 8, 3, 2, 1),      # dense stride 2, 3 input channels (stem)
    (1, 5, 4, 4, 8, 5, 2, 2),      # grouped 5x5 stride 2, map about the kernel's size
    (1, 1, 1, 8, 4, 1, 1, 1),      # 1x1 spatial (SE)
    (1, 9, 8, 4, 4, 7, 2, 4),      # depthwise 7x7 stride 2: dx phases with taps past the kernel
    (1, 8, 7, 8, 8, 3, 3, 4),      # stride 3: nine dx phases of unequal sizes
    (1, 7, 7, 8, 12, 1, 2, 1),     # 1x1 dense stride 2, odd size (dx scattered, last row kept)
    (1, 6, 5, 96, 96, 3, 2, 2),    # group width 48: shift loops over single taps
    (1, 7, 6, 8, 8, 1, 2, 4),      # 1x1 grouped stride 2: dx phases no tap reaches
]


def _data(case, dtype, seed=0):
    n, h, w, cin, cout, k, s, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, cin), np.float32)
    wt = rng.standard_normal((k, k, cin // g, cout), np.float32)
    dy = rng.standard_normal((n, (h - 1) // s + 1, (w - 1) // s + 1, cout), np.float32)
    return tuple(jnp.asarray(a, dtype) for a in (x, wt, dy))


@functools.lru_cache(maxsize=None)
def _expected(case, dtype_name, seed):
    """lax's value and gradients (in float32, HIGHEST precision), one jit per case."""
    *_, s, g = case
    x, w, dy = (a.astype(jnp.float32) for a in _data(case, jnp.dtype(dtype_name), seed))
    out = jax.jit(lambda a, b, d: value_and_grads(lambda a_, b_: reference(a_, b_, s, g), a, b, d))
    return [np.asarray(o) for o in out(x, w, dy)]


def _close(got, want, rtol):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got / scale, want / scale, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}_{}x{}_c{}-{}_k{}_s{}_g{}".format(*c))
def test_matches_lax_f32(case, impl):
    _, _, _, _, _, _, s, g = case
    x, w, dy = _data(case, jnp.float32)
    want = _expected(case, "float32", 0)
    conv = jax.jit(lambda a, b, d: value_and_grads(
        lambda a_, b_: fconv.conv2d(a_, b_, stride=s, groups=g, impl=impl), a, b, d))
    got = conv(x, w, dy)
    for name, gv, wv in zip(("y", "dx", "dw"), got, want):
        assert gv.dtype == jnp.float32, name
        _close(gv, wv, 1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", [(2, 8, 8, 8, 8, 3, 2, 8), (2, 7, 8, 16, 24, 3, 2, 2),
                                  (2, 8, 8, 3, 8, 3, 2, 1)], ids=["dw", "grouped", "dense"])
def test_matches_lax_bf16(case, impl):
    _, _, _, _, _, _, s, g = case
    x, w, dy = _data(case, jnp.bfloat16, seed=1)
    want = _expected(case, "bfloat16", 1)
    got = jax.jit(lambda a, b, d: value_and_grads(
        lambda a_, b_: fconv.conv2d(a_, b_, stride=s, groups=g, impl=impl), a, b, d))(x, w, dy)
    for name, gv, wv in zip(("y", "dx", "dw"), got, want):
        assert gv.dtype == jnp.bfloat16, name
        _close(gv, wv, 3e-2)


def test_grad_through_jit_and_vmap():
    x, w, _ = _data((2, 7, 7, 8, 8, 3, 2, 4), jnp.float32)

    def loss(conv):
        return jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) ** 2), argnums=(0, 1)))

    want = loss(lambda a, b: reference(a, b, 2, 4))(x, w)
    for impl in IMPLS:
        conv = lambda a, b: fconv.conv2d(a, b, stride=2, groups=4, impl=impl)  # noqa: E731
        for got, exp in zip(loss(conv)(x, w), want):
            _close(got, exp, 1e-5)
        ys = jax.jit(jax.vmap(lambda a: conv(a, w)))(x[:, None])
        _close(ys[:, 0], reference(x, w, 2, 4), 1e-5)


def test_auto_on_cpu_picks_fast_formulations():
    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only choice")
    x = jnp.zeros((1, 8, 8, 64))
    dw, grouped, dense = jnp.zeros((3, 3, 1, 64)), jnp.zeros((3, 3, 8, 64)), jnp.zeros((3, 3, 64, 64))
    fast = "onednn" if onednn.available() else "shift"
    assert fconv.resolve_impl("auto", x, dw, 64) == fast
    assert fconv.resolve_impl("auto", x, grouped, 8) not in ("lax", "auto")
    assert fconv.resolve_impl("auto", x, jnp.zeros((3, 3, 16, 64)), 4) not in ("lax", "auto")
    assert fconv.resolve_impl("auto", x, dense, 1) not in ("auto",)
    assert fconv.resolve_impl("lax", x, dw, 64) == "lax"
    # the documented per-shape policy (xla_conv.cpu_choice)
    assert xla_conv.cpu_choice(64, 64, 1, 1) == "shift"           # 1x1 dense: matmuls
    assert xla_conv.cpu_choice(64, 64, 1, 3) == "lax"             # kxk dense: XLA's own
    assert xla_conv.cpu_choice(64, 64, 16, 3) == "shift"          # group width 4
    assert xla_conv.cpu_choice(64, 64, 8, 3) == "group_scan"      # group width 8


def test_onednn_is_available_where_it_is_a_dependency():
    """On Linux x86_64 oneDNN comes with the package; if it does not load, say why."""
    import platform
    if not (platform.system() == "Linux" and platform.machine() == "x86_64"):
        pytest.skip("oneDNN is a dependency on Linux x86_64 only")
    ok, why = onednn.status()
    assert ok, why


def test_auto_uses_onednn_for_float32_kxk_convs_only():
    if jax.default_backend() != "cpu" or not onednn.available():
        pytest.skip("needs the CPU backend with oneDNN")
    x = jnp.zeros((1, 8, 8, 64))
    assert fconv.resolve_impl("auto", x, jnp.zeros((3, 3, 8, 64)), 8) == "onednn"
    assert fconv.resolve_impl("auto", x, jnp.zeros((5, 5, 64, 64)), 1, 2) == "onednn"
    assert fconv.resolve_impl("auto", x, jnp.zeros((1, 1, 64, 64)), 1) == "shift"  # matmul
    x16 = x.astype(jnp.bfloat16)
    assert fconv.resolve_impl("auto", x16, jnp.zeros((3, 3, 8, 64), jnp.bfloat16), 8) == "group_scan"
    # forced 'onednn' on a conv it does not handle (1x1 stride 2 on an even size leaves
    # -1 right padding): the XLA formulation runs instead
    assert not onednn.supports(8, 8, 1, 2, jnp.float32)
    assert fconv.resolve_impl("onednn", x, jnp.zeros((1, 1, 64, 64)), 1, 2) == "shift"
    assert fconv.resolve_impl("onednn", x, jnp.zeros((3, 3, 64, 64)), 1, 2) == "onednn"


def test_onednn_independent_convs_in_one_step():
    """XLA may run independent FFI calls at once (here forward, input and kernel gradients of
    four convs, two of them the same shape); each call gets its own workspace."""
    if jax.default_backend() != "cpu" or not onednn.available():
        pytest.skip("needs the CPU backend with oneDNN")
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((4, 12, 12, 32), np.float32))
    ws = [jnp.asarray(rng.standard_normal((3, 3, 32 // g, 32), np.float32)) for g in (4, 4, 8, 32)]
    gs = (4, 4, 8, 32)

    def loss(impl, x, ws):
        return sum(jnp.sum(jnp.tanh(fconv.conv2d(x, w, stride=s, groups=g, impl=impl)))
                   for w, g, s in zip(ws, gs, (1, 1, 2, 1)))

    want = jax.jit(jax.grad(functools.partial(loss, "lax"), argnums=(0, 1)))(x, ws)
    step = jax.jit(jax.grad(functools.partial(loss, "onednn"), argnums=(0, 1)))
    for _ in range(3):
        got = step(x, ws)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            _close(g, w, 1e-5)


def test_onednn_unavailable_falls_back_or_explains(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only choice")
    monkeypatch.setattr(onednn, "status", lambda: (False, "no oneDNN here (test)"))
    monkeypatch.setattr(onednn, "_warned_unavailable", False)
    x, w = jnp.zeros((1, 8, 8, 64)), jnp.zeros((3, 3, 8, 64))
    with pytest.warns(RuntimeWarning, match=r"no oneDNN here \(test\)"):
        assert fconv.resolve_impl("auto", x, w, 8) == "group_scan"
    with pytest.raises(onednn.OnednnUnavailable, match=r"'onednn' is unavailable: no oneDNN here"):
        fconv.conv2d(x, w, groups=8, impl="onednn")


def test_ffi_convs_are_counted():
    """ffi_convs_in counts the oneDNN custom calls of a compiled function (XLA's cost
    analysis has no flops for them): 3 per conv in a gradient, none with 'lax'."""
    x, w = jnp.zeros((2, 8, 8, 16)), jnp.zeros((3, 3, 4, 16))

    def compiled(impl):
        f = lambda a, b: jnp.sum(fconv.conv2d(a, b, groups=4, impl=impl))  # noqa: E731
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(x, w).compile()

    assert fconv.ffi_convs_in(compiled("lax")) == 0
    assert fconv.ffi_convs_in(compiled("group_scan").as_text()) == 0
    if jax.default_backend() != "cpu" or not onednn.available():
        pytest.skip("needs the CPU backend with oneDNN")
    assert fconv.ffi_convs_in(compiled("onednn")) == 3
    twice = lambda a, b: fconv.conv2d(fconv.conv2d(a, b, groups=4, impl="onednn"), b,  # noqa: E731
                                      groups=4, impl="onednn")
    assert fconv.ffi_convs_in(jax.jit(twice).lower(x, w)) == 2  # StableHLO text counts too


def test_models_import_without_posix_only_modules():
    """Windows has no fcntl: importing the models and the CPU package must not need it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import fastscale_jax.models, fastscale_jax.cpu.onednn, fastscale_jax.cpu.hostmem\n"
            "from fastscale_jax.ops import conv; print(conv.impls())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "onednn" in p.stdout


def test_onednn_missing_library_and_disable_messages(monkeypatch, tmp_path):
    monkeypatch.setenv(onednn.ENV_ROOT, str(tmp_path))
    with pytest.raises(onednn.OnednnUnavailable, match=f"no oneDNN 3.x found .*{tmp_path}"):
        onednn.find_onednn()
    (tmp_path / "include" / "oneapi" / "dnnl").mkdir(parents=True)
    (tmp_path / "include" / "oneapi" / "dnnl" / "dnnl_version.h").write_text(
        "#define DNNL_VERSION_MAJOR 2\n")
    with pytest.raises(onednn.OnednnUnavailable, match="oneDNN 2.x; need 3.x"):
        onednn.find_onednn()
    monkeypatch.setenv(onednn.ENV_DISABLE, "0")
    with pytest.raises(onednn.OnednnUnavailable, match="disabled by"):
        onednn._load()


def test_impl_is_explicit_and_the_env_var_only_sets_the_config_default(monkeypatch):
    from fastscale_jax.config import CONV_IMPL_ENV, base_config

    x, dw = jnp.zeros((1, 8, 8, 64)), jnp.zeros((3, 3, 1, 64))
    monkeypatch.setenv(CONV_IMPL_ENV, "lax")
    assert fconv.resolve_impl("auto", x, dw, 64) != "lax"  # conv2d never reads the environment
    assert fconv.resolve_impl("group_scan", x, dw, 64) == "group_scan"
    assert base_config().model.conv_impl == "lax"  # read once, where the config is built
    monkeypatch.delenv(CONV_IMPL_ENV)
    assert base_config().model.conv_impl == "auto"


def test_invalid_arguments_raise():
    x, w = jnp.zeros((1, 8, 8, 8)), jnp.zeros((3, 3, 8, 8))
    with pytest.raises(ValueError, match="valid: auto, lax, shift, group_scan"):
        fconv.conv2d(x, w, impl="cudnn")
    with pytest.raises(ValueError, match="odd square"):
        fconv.conv2d(x, jnp.zeros((2, 2, 8, 8)))
    with pytest.raises(ValueError, match="groups"):
        fconv.conv2d(x, jnp.zeros((3, 3, 2, 8)), groups=3)


def test_parameter_layout_independent_of_impl():
    """A Flax Conv has the same kernel shape whatever its conv_impl, and the same outputs."""
    pytest.importorskip("flax")
    from fastscale_jax.models.layers import Conv

    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 8, 8, 16), np.float32))
    shapes = {jax.eval_shape(Conv(16, 3, 2, groups=4, conv_impl=impl).init, jax.random.PRNGKey(0),
                             x)["params"]["kernel"].shape for impl in fconv.IMPLS}
    assert shapes == {(3, 3, 4, 16)}
    v = jax.jit(Conv(16, 3, 2, groups=4, conv_impl="lax").init)(jax.random.PRNGKey(0), x)
    outs = [jax.jit(Conv(16, 3, 2, groups=4, conv_impl=impl).apply)(v, x)
            for impl in ("lax", "auto")]
    _close(outs[1], outs[0], 1e-5)


_LAYOUT_PROBE = """
import sys, numpy as np, jax, jax.numpy as jnp
from fastscale_jax.ops import conv as fconv
fconv.configure_cpu(sys.argv[2], sys.argv[3] or None)
x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 14, 14, 64)), jnp.float32)
w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 8, 64)), jnp.float32)
f = lambda x, w: jnp.sum(jnp.sin(fconv.conv2d(x, w, groups=8, impl="onednn")))
out = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x, w)
np.savez(sys.argv[1], *[np.asarray(a) for a in jax.tree_util.tree_leaves(out)])
"""


def _probe(tmp_path, name, layout="tune", record=""):
    import subprocess
    import sys

    full = dict(os.environ, JAX_PLATFORMS="cpu")
    out = tmp_path / f"{name}.npz"
    p = subprocess.run([sys.executable, "-c", _LAYOUT_PROBE, str(out), layout, str(record)],
                       env=full,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    with np.load(out) as z:
        return [z[k] for k in sorted(z.files)]


def test_onednn_layout_choice_is_recorded_and_reused(tmp_path):
    """'tune': timed layout choices are written once to the record file and read by later
    processes, so two processes compute bit-identical results; a recorded choice is what runs.
    The default 'nhwc' is a fixed choice: the same numbers whatever any record or cache says."""
    if jax.default_backend() != "cpu" or not onednn.available():
        pytest.skip("oneDNN formulation unavailable on this machine")
    record = tmp_path / "layouts"
    first = _probe(tmp_path, "first", "tune", record)
    lines = record.read_text().splitlines()
    assert len(lines) == 3 and {ln.split()[0] for ln in lines} == {"0", "1", "2"}  # fwd, dx, dw
    assert all(ln.split()[-1] in ("nhwc", "blocked") for ln in lines)
    second = _probe(tmp_path, "second", "tune", record)
    assert record.read_text().splitlines() == lines              # read, not tuned again
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # a recorded choice is obeyed: record 'blocked' everywhere == forcing the blocked layout
    record.write_text("".join(" ".join(ln.split()[:-1]) + " blocked\n" for ln in lines))
    recorded = _probe(tmp_path, "recorded", "tune", record)
    forced = _probe(tmp_path, "forced", "blocked")
    for a, b in zip(recorded, forced):
        np.testing.assert_array_equal(a, b)
    # the default: nhwc, whatever a record says ('blocked' everywhere here)
    nhwc = _probe(tmp_path, "nhwc", "nhwc", record)
    assert record.read_text().splitlines() != lines  # the 'blocked' record is still there
    for a, b in zip(nhwc, _probe(tmp_path, "nhwc2", "nhwc")):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(nhwc, forced))