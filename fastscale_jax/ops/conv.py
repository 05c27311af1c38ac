"""2-D convolution used by every model: NHWC input, HWIO kernel, PyTorch-style padding.

    y = conv2d(x, kernel, stride=2, groups=8)              # impl='auto'
    y = conv2d(x, kernel, groups=c, impl="shift")          # force an implementation

Implementations (`impl`):
  'lax'         lax.conv_general_dilated, differentiated by JAX. The fast choice on GPU/TPU.
  'auto'        per backend: 'lax' on GPU/TPU; on CPU what the CPU package picks for the
                shape.
  'onednn', 'shift', 'group_scan'
                CPU formulations with custom VJPs, from `fastscale_jax.cpu` (oneDNN through
                jax.ffi, and XLA-only ones for where oneDNN is missing); see that package.

The CPU package is consulted through one hook: on the first non-'lax' resolution this module
imports `fastscale_jax.cpu` and calls its `register()`, which hands back its formulations and
its per-shape choice (`CpuConvs`). On GPU/TPU with impl='auto' it is never imported.

All implementations compute the same function (to float round-off) and take the same kernel
layout, so parameters and checkpoints never depend on the implementation. The custom-VJP
implementations support reverse-mode differentiation (grad, vjp) and vmap, not forward mode
(jvp, jacfwd): use impl='lax' for that.

The implementation is always an explicit argument (models take it as `conv_impl`, configs as
model.conv_impl, whose default the $FASTSCALE_CONV_IMPL environment variable sets where the
config is built: fastscale_jax.config.base_config); nothing here reads process-wide state.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Callable, NamedTuple

import jax
from jax import lax

from fastscale_jax.errors import ConfigError

CPU_PACKAGE = "fastscale_jax.cpu"


class CpuConvs(NamedTuple):
    """What the CPU package registers (its `register()` returns these fields).

    formulations: impl name -> (forward, input_grad, kernel_grad), each called as
      forward(x, w, stride, groups, precision), input_grad(x, w, dy, stride, groups,
      precision), kernel_grad(x, w, dy, stride, groups, precision).
    choose(impl, backend, x, kernel, groups, stride) -> the formulation that runs for impl
      'auto' on the CPU, or for a formulation's name on any backend.
    ffi_targets: the jax.ffi custom-call targets its formulations emit (see ffi_convs_in).
    configure(layout, record): the numerics settings of its formulations (oneDNN's layout).
    """
    formulations: dict
    choose: Callable
    ffi_targets: tuple = ()
    configure: Callable = lambda layout, record=None: None


_cpu: CpuConvs | None = None


def cpu_convs() -> CpuConvs:
    """The CPU package's registration, made once per process on first use."""
    global _cpu
    if _cpu is None:
        _cpu = CpuConvs(**importlib.import_module(CPU_PACKAGE).register())
    return _cpu


def configure_cpu(layout: str, record: str | None = None) -> None:
    """Set the CPU formulations' numerics settings for this process (oneDNN's memory layout:
    'nhwc' | 'blocked' | 'tune', and for 'tune' the file its choices are recorded in); a
    no-op off the CPU. See fastscale_jax.cpu.onednn.configure."""
    if jax.default_backend() == "cpu":
        cpu_convs().configure(layout, record)


def impls() -> tuple:
    """Every valid impl name: 'auto', 'lax' and the CPU package's formulations."""
    return ("auto", "lax") + tuple(cpu_convs().formulations)


def __getattr__(name):  # IMPLS: computed on first use, so importing this module stays light
    if name == "IMPLS":
        return impls()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check(impl: str) -> str:
    if impl in ("auto", "lax") or impl in cpu_convs().formulations:
        return impl
    raise ConfigError(f"unknown conv impl {impl!r}; valid: {', '.join(impls())}")


def _backend(x) -> str:
    try:  # a concrete array knows its device; a tracer does not
        return next(iter(x.devices())).platform
    except Exception:  # noqa: BLE001 - tracers raise different errors across versions
        return jax.default_backend()


def resolve_impl(impl: str, x, kernel, groups: int, stride: int = 1) -> str:
    """The concrete implementation ('lax' or a registered formulation) that conv2d runs."""
    impl = _check(impl)
    if impl == "lax":
        return "lax"
    backend = _backend(x)
    if impl == "auto" and backend != "cpu":
        return "lax"
    return cpu_convs().choose(impl, backend, x, kernel, groups, stride)


def ffi_convs_in(compiled) -> int:
    """How many convolution custom calls (oneDNN through jax.ffi) a compiled function makes.

    `compiled`: a jax `Compiled` or `Lowered` (its `as_text()` is read) or HLO / StableHLO
    text. Each forward, input gradient and kernel gradient counts once (up to 3 per conv in a
    train step; none for the input gradient of the first conv). XLA's cost_analysis() counts
    no flops for custom calls, so a nonzero count means its flop figure leaves these
    convolutions out. Only the CPU formulations emit them:
    on GPU/TPU (and with 'lax') the count is 0.
    """
    if _cpu is None:  # nothing resolved to a CPU formulation in this process: no FFI convs
        return 0
    text = compiled if isinstance(compiled, str) else compiled.as_text()
    if not text or not _cpu.ffi_targets:
        return 0
    names = "|".join(re.escape(t) for t in _cpu.ffi_targets)
    pattern = rf'custom_call_target="(?:{names})"|custom_call @(?:{names})\b'
    return len(re.findall(pattern, text))


def _lax_conv(x, kernel, stride, groups, precision):
    p = (kernel.shape[0] - 1) // 2
    return lax.conv_general_dilated(x, kernel, (stride, stride), [(p, p), (p, p)],
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _custom_conv(x, kernel, stride, groups, impl, precision):
    forward, _, _ = cpu_convs().formulations[impl]
    return forward(x, kernel, stride, groups, precision)


def _custom_conv_fwd(x, kernel, stride, groups, impl, precision):
    return _custom_conv(x, kernel, stride, groups, impl, precision), (x, kernel)


def _custom_conv_bwd(stride, groups, impl, precision, residuals, dy):
    x, kernel = residuals
    _, input_grad, kernel_grad = cpu_convs().formulations[impl]
    return (input_grad(x, kernel, dy, stride, groups, precision),
            kernel_grad(x, kernel, dy, stride, groups, precision))


_custom_conv.defvjp(_custom_conv_fwd, _custom_conv_bwd)


def conv2d(x, kernel, *, stride=1, groups=1, impl="auto", precision=None):
    """2-D convolution with PyTorch/pycls padding, any implementation, same result.

    x: NHWC; kernel: HWIO with I = Cin // groups (Flax nn.Conv / lax layout). Padding is
    (k - 1) // 2 on each side (not TF 'SAME', which differs for stride 2 on even sizes); odd
    square kernels; any positive int stride; output spatial size (H - 1) // stride + 1.
    Computes in x.dtype (low-precision inputs accumulate in float32) and returns x.dtype.
    impl: 'auto' | 'lax' | a CPU formulation: 'onednn', 'shift', 'group_scan' (see the module
    docstring).
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
