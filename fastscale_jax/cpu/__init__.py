"""CPU acceleration: fast convolutions for XLA:CPU, and host allocator settings.

XLA:CPU runs grouped and depthwise convolutions, and every convolution's kernel gradient,
through slow generic loops (3-30x slower than PyTorch on the same CPU; docs/cpu.md). This
package holds what makes CPU runs fast. It plugs into `fastscale_jax.ops.conv` through one
hook, `register()`, which conv.py calls once, on the first convolution it resolves to
anything but 'lax' (so never on GPU/TPU with impl='auto'):

  onednn.py     'onednn': oneDNN's direct kernels through jax.ffi (csrc/onednn_conv.cc,
                compiled on first use), and what 'auto' picks on CPU (`onednn.choose`).
                Needs the `cpu` extra (Linux x86_64: pip install 'fastscale-jax[cpu]') and a
                C++ compiler; without them CPU convs use the XLA formulations, with a warning.
  xla_conv.py   'shift', 'group_scan': XLA-only formulations, for where oneDNN is missing
                (other platforms, no compiler, $FASTSCALE_ONEDNN=0) and bfloat16; dense 1x1
                convs run as matmuls ('shift') with oneDNN too.
  hostmem.py    glibc malloc settings for CPU steps with large activations (launch.py).

Environment: FASTSCALE_ONEDNN=0 (oneDNN off), FASTSCALE_ONEDNN_ROOT, FASTSCALE_CACHE_DIR
(onednn.py), FASTSCALE_HOST_MALLOC
(hostmem.py); FASTSCALE_CONV_IMPL sets config.model.conv_impl's default (config.py).

Importing this package imports nothing (not even JAX: hostmem must run before JAX starts);
onednn.py uses ctypes, fcntl and the compiler on first use only, so it imports on every OS.
"""


def register() -> dict:
    """The CPU convolutions for `fastscale_jax.ops.conv` (its `CpuConvs` fields): the
    formulations by impl name, the per-shape choice, and the FFI custom-call targets."""
    from fastscale_jax.cpu import onednn, xla_conv

    return {"formulations": {**xla_conv.FORMULATIONS, "onednn": onednn.FORMULATION},
            "choose": onednn.choose, "ffi_targets": tuple(onednn.TARGETS),
            "configure": onednn.configure}
