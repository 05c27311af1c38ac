"""2-D convolution used by every model: NHWC input, HWIO kernel, PyTorch-style padding.

    y = conv2d(x, kernel, stride=2, groups=8)              # impl='auto'
    y = conv2d(x, kernel, groups=c, impl="shift")          # force a formulation

Implementations (`impl`):
  'lax'         lax.conv_general_dilated, differentiated by JAX. The fast choice on GPU/TPU.
  'shift'       k*k shifted slices times the kernel taps (see conv_cpu.py), with a custom VJP.
                Fastest on XLA:CPU for depthwise, narrow-group and 1x1 convolutions.
  'group_scan'  group-major scan of dense XLA convs, with a custom VJP. On CPU the fastest
                XLA formulation for wider groups, and for dense kxk convs.
  'onednn'      oneDNN's direct convolution kernels called through jax.ffi (see onednn.py),
                with a custom VJP. CPU only; needs oneDNN 3.x (a dependency on Linux x86_64)
                and a C++ compiler. The fastest on CPU for kxk convs. Convs it does not
                handle (not float32, or a stride that leaves negative right padding, like a
                1x1 stride-2 conv on an even size) run the XLA formulation `cpu_choice` picks.
  'auto'        the global default if one is set (set_default_impl, the `default_impl`
                context manager, or the environment variable FASTSCALE_CONV_IMPL), else per
                backend: 'lax' on GPU/TPU; on CPU 'onednn' for float32 kxk convs where it is
                available (`use_onednn`), else the XLA formulation measured fastest for the
                shape class (`cpu_choice`; numbers in benchmarks/RESULTS.md).

All implementations compute the same function (to float round-off) and take the same kernel
layout, so parameters and checkpoints never depend on the implementation. The custom-VJP
implementations support reverse-mode differentiation (grad, vjp) and vmap, not forward mode
(jvp, jacfwd): use impl='lax' for that. 'auto' is resolved when a function is traced, so
changing the default does not affect functions jit has already compiled.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings

import jax
from jax import lax

from fastscale_jax.ops import conv_cpu, onednn

ENV_VAR = "FASTSCALE_CONV_IMPL"
_FORMULATIONS = {**conv_cpu.FORMULATIONS, "onednn": onednn.FORMULATION}
FORMULATIONS = tuple(_FORMULATIONS)                    # ('shift', 'group_scan', 'onednn')
IMPLS = ("auto", "lax") + FORMULATIONS

_default_impl: str | None = None  # set by set_default_impl / default_impl


def _check(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; valid: {', '.join(IMPLS)}")
    return impl


def set_default_impl(impl: str | None) -> None:
    """Set what impl='auto' means process-wide (None or 'auto': choose per backend/shape).

    Takes precedence over the FASTSCALE_CONV_IMPL environment variable.
    """
    global _default_impl
    _default_impl = None if impl is None else _check(impl)


def get_default_impl() -> str:
    """The global default: set_default_impl's value, else $FASTSCALE_CONV_IMPL, else 'auto'."""
    if _default_impl is not None:
        return _default_impl
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return _check(env)
        except ValueError as e:
            raise ValueError(f"${ENV_VAR}: {e}") from None
    return "auto"


@contextlib.contextmanager
def default_impl(impl: str | None):
    """Context manager: impl='auto' means `impl` inside the block (while tracing)."""
    global _default_impl
    new = None if impl is None else _check(impl)
    old, _default_impl = _default_impl, new
    try:
        yield
    finally:
        _default_impl = old


def shape_class(cin: int, cout: int, groups: int) -> str:
    """'dense' (groups == 1), 'depthwise' (groups == cin == cout) or 'grouped' (the rest)."""
    if groups == 1:
        return "dense"
    if groups == cin == cout:
        return "depthwise"
    return "grouped"


# Widest group (Cin/groups) for which 'shift' beats per-group dense convs on XLA:CPU.
SHIFT_MAX_GROUP_WIDTH = 4


def cpu_choice(cin: int, cout: int, groups: int, kernel: int) -> str:
    """The formulation measured fastest on XLA:CPU for a conv shape (numbers: RESULTS.md).

      dense 1x1                  -> 'shift'       one matmul forward, input and kernel grads
      dense kxk                  -> 'group_scan'  XLA's conv forward and input gradient, the
                                                  kernel gradient as per-tap matmuls
      depthwise, Cin/g <= 4      -> 'shift'       shifted multiply-adds
      grouped, Cin/g > 4         -> 'group_scan'  a scan over groups of dense convs
    """
    del cout
    if groups == 1:
        return "shift" if kernel == 1 else "group_scan"
    return "shift" if cin // groups <= SHIFT_MAX_GROUP_WIDTH else "group_scan"


def _backend(x) -> str:
    try:  # a concrete array knows its device; a tracer does not
        return next(iter(x.devices())).platform
    except Exception:  # noqa: BLE001 - tracers raise different errors across versions
        return jax.default_backend()


_warned_no_onednn = False


def _onednn_handles(x, kernel, stride) -> bool:
    return onednn.supports(x.shape[1], x.shape[2], kernel.shape[0], stride, x.dtype)


def use_onednn(x, kernel, stride: int = 1) -> bool:
    """Whether 'auto' runs this CPU conv with oneDNN: a float32 kxk conv (k > 1; dense 1x1
    convs are plain matmuls, which XLA runs as fast) that the shim supports, when oneDNN is
    available. Warns once per process when it is not (unless disabled on purpose)."""
    global _warned_no_onednn
    if kernel.shape[0] == 1 or not _onednn_handles(x, kernel, stride):
        return False
    ok, why = onednn.status()
    if not ok and not _warned_no_onednn and os.environ.get(onednn.ENV_DISABLE) != "0":
        _warned_no_onednn = True
        warnings.warn(f"fastscale_jax: oneDNN convolutions unavailable, so CPU convs use "
                      f"slower XLA formulations ({why}). ${onednn.ENV_DISABLE}=0 silences this.",
                      RuntimeWarning, stacklevel=3)
    return ok


def resolve_impl(impl: str, x, kernel, groups: int, stride: int = 1) -> str:
    """The concrete implementation ('lax' or a formulation) that conv2d will run."""
    impl = _check(impl)
    if impl == "auto":
        impl = get_default_impl()
    xla_choice = functools.partial(cpu_choice, x.shape[-1], kernel.shape[-1], groups,
                                   kernel.shape[0])
    if impl == "onednn":
        backend = _backend(x)
        if backend != "cpu":
            raise ValueError(f"conv impl 'onednn' runs on CPU only, not {backend}; use "
                             "impl='auto' (lax on GPU/TPU)")
        onednn.require()
        return "onednn" if _onednn_handles(x, kernel, stride) else xla_choice()
    if impl != "auto":
        return impl
    if _backend(x) != "cpu":
        return "lax"
    if use_onednn(x, kernel, stride):
        return "onednn"
    return xla_choice()


def _lax_conv(x, kernel, stride, groups, precision):
    p = (kernel.shape[0] - 1) // 2
    return lax.conv_general_dilated(x, kernel, (stride, stride), [(p, p), (p, p)],
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _custom_conv(x, kernel, stride, groups, impl, precision):
    forward, _, _ = _FORMULATIONS[impl]
    return forward(x, kernel, stride, groups, precision)


def _custom_conv_fwd(x, kernel, stride, groups, impl, precision):
    return _custom_conv(x, kernel, stride, groups, impl, precision), (x, kernel)


def _custom_conv_bwd(stride, groups, impl, precision, residuals, dy):
    x, kernel = residuals
    _, input_grad, kernel_grad = _FORMULATIONS[impl]
    return (input_grad(x, kernel, dy, stride, groups, precision),
            kernel_grad(x, kernel, dy, stride, groups, precision))


_custom_conv.defvjp(_custom_conv_fwd, _custom_conv_bwd)


def conv2d(x, kernel, *, stride=1, groups=1, impl="auto", precision=None):
    """2-D convolution with PyTorch/pycls padding, any implementation, same result.

    x: NHWC; kernel: HWIO with I = Cin // groups (Flax nn.Conv / lax layout). Padding is
    (k - 1) // 2 on each side (not TF 'SAME', which differs for stride 2 on even sizes); odd
    square kernels; any positive int stride; output spatial size (H - 1) // stride + 1.
    Computes in x.dtype (low-precision inputs accumulate in float32) and returns x.dtype.
    impl: 'auto' | 'lax' | 'shift' | 'group_scan' | 'onednn' (see the module docstring).
    """
    kh, kw, ci, cout = kernel.shape
    cin = x.shape[-1]
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(f"conv2d wants NHWC x and HWIO kernel, got {x.shape} and {kernel.shape}")
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"conv2d supports odd square kernels only, got {kh}x{kw}")
    if groups < 1 or cin % groups or cout % groups or ci * groups != cin:
        raise ValueError(f"groups={groups} does not fit Cin={cin}, Cout={cout}, kernel I={ci}")
    stride = int(stride)
    if stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride}")
    if kernel.dtype != x.dtype:
        kernel = kernel.astype(x.dtype)
    impl = resolve_impl(impl, x, kernel, groups, stride)
    if impl == "lax":
        return _lax_conv(x, kernel, stride, groups, precision)
    return _custom_conv(x, kernel, stride, groups, impl, precision)
