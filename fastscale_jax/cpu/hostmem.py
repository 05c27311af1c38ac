"""Host allocator settings for training and timing on CPU (glibc only; imports no JAX).

XLA:CPU allocates every executable run's temporary buffers (tens to hundreds of MB for a
training step) with malloc and frees them afterwards. With glibc's defaults those come from
mmap, or from per-thread arenas that are trimmed back to the kernel, so every step page-faults
its working memory in afresh: on the 2-core test VM, a RegNetY-800MF batch-32 train step took
4.1M minor page faults and 13 s of system time over 7 steps. Keeping freed memory in the
process (no mmap for large blocks, no trimming, one arena) removes ~80% of the faults and
makes the step ~20% faster (benchmarks/RESULTS.md §4a); PyTorch's CPU steps gain too.

The cost is that the process keeps its peak heap instead of returning it to the system, and
that all threads share one malloc arena: its lock slows multi-threaded work that mallocs a
lot (XLA's compiler, tf.data), which made the small, data-bound `:demo` run ~7% slower. So
`launch.py` applies it only to steps with enough activations to gain
(`fastscale_jax.main.tune_host_malloc`, config.host_malloc). The settings only take effect for
threads that have not allocated yet: call `tune_for_cpu()` before the first JAX computation.

`FASTSCALE_HOST_MALLOC=off` disables it, `=on` forces it even when an accelerator is present.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os
import sys

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))  # -1: never trim
# Distributions that give JAX a non-CPU default backend.
_ACCELERATOR_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm6-plugin",
                        "jax-rocm7-plugin", "libtpu", "libtpu-nightly", "jax-metal")

_applied: str | None = None


def cpu_backend_expected() -> bool:
    """Whether JAX will run on the CPU, judged without starting JAX: JAX_PLATFORMS names only
    cpu, or no accelerator plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    for dist in _ACCELERATOR_PLUGINS:
        try:
            importlib.metadata.version(dist)
            return False
        except importlib.metadata.PackageNotFoundError:
            continue
    return True


def status() -> str:
    """What tune_for_cpu did in this process, or that it was not called (stamped on timings:
    the allocator moves CPU step times by tens of percent)."""
    return _applied or "host malloc tuning: not requested"


def tune_for_cpu(force: bool = False) -> str:
    """Keep freed heap memory in-process (glibc mallopt) when JAX will run on the CPU.

    Call before the first JAX computation. Returns a one-line description of what was done
    (or why not); never raises. Repeated calls are no-ops.
    """
    global _applied
    if _applied is not None:
        return _applied
    mode = os.environ.get("FASTSCALE_HOST_MALLOC", "auto").strip().lower()
    if mode in ("0", "off", "false", "no"):
        _applied = "host malloc tuning: off (FASTSCALE_HOST_MALLOC)"
    elif not sys.platform.startswith("linux"):
        _applied = f"host malloc tuning: not applied ({sys.platform} is not glibc Linux)"
    elif not (force or mode in ("1", "on", "true", "yes") or cpu_backend_expected()):
        _applied = "host malloc tuning: not applied (an accelerator backend is installed)"
    else:
        _applied = _mallopt()
    return _applied


def _mallopt() -> str:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "host malloc tuning: not applied (no glibc mallopt)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not all(mallopt(param, value) == 1 for param, value in _SETTINGS):
        return "host malloc tuning: not applied (mallopt refused a setting)"
    return "host malloc tuning: on (no mmap for large blocks, no trimming, one arena)"
