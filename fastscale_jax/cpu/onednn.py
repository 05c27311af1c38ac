"""oneDNN convolutions on the CPU through jax.ffi: the 'onednn' conv formulation, and what
impl='auto' runs on the CPU (`choose`).

XLA:CPU runs grouped and depthwise convolutions, and every kernel gradient, through slow
generic loops. oneDNN (the library behind PyTorch's CPU convolutions) has JIT-compiled direct
kernels for all of them. This module compiles a small C++ shim (csrc/onednn_conv.cc: XLA FFI
handlers calling oneDNN) on first use, caches the shared library, and registers it with JAX.

Requirements, all checked at first use (`status()` says what is missing):
  * oneDNN 3.x headers and library: on Linux x86_64 the 'cpu' extra
    (pip install 'fastscale-jax[cpu]') brings Intel's onednn-cpu-gomp and
    onednn-devel-cpu-gomp wheels, which put them under their prefix; elsewhere point
    $FASTSCALE_ONEDNN_ROOT at a prefix with include/oneapi/dnnl/ and lib/libdnnl.so.
  * a C++17 compiler ($CXX, else g++ or c++) and jaxlib's FFI headers (shipped with jaxlib).
If any is missing the formulation is unavailable and conv2d's 'auto' uses the XLA ones
(xla_conv.py), with a warning once per process.
$FASTSCALE_ONEDNN=0 turns it off. The library is cached under $FASTSCALE_CACHE_DIR (default
~/.cache/fastscale_jax), keyed by the source, oneDNN and jaxlib, so it compiles once (~5 s).
Memory layout: oneDNN runs a conv on our NHWC buffers or on its blocked-channel layout; the two
sum in different orders (results differ in the last bits), so the layout is a setting of the
run (config.model.onednn_layout, applied with `configure`): 'nhwc' (the default: the same
numbers on every install of a machine), 'blocked', or 'tune' (time both per problem on first
use; the choices go to a record file, the training run's WORKDIR/onednn_layouts.txt, which a
resumed run reads back).

Supported: float32, any groups, odd square kernels, any stride where the (k - 1) // 2
padding leaves a non-negative right padding (every stride 1 and 2 conv; `supports`).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import shutil
import site
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import numpy as np

from fastscale_jax.errors import ConfigError
from fastscale_jax._extras import install_line
from fastscale_jax.cpu import xla_conv
from fastscale_jax.cpu.xla_conv import out_size

ENV_DISABLE = "FASTSCALE_ONEDNN"
ENV_ROOT = "FASTSCALE_ONEDNN_ROOT"
ENV_CACHE = "FASTSCALE_CACHE_DIR"
LAYOUTS = ("nhwc", "blocked", "tune")
INSTALL_HINT = (f"{install_line('cpu')} (Linux x86_64: Intel's oneDNN wheels), or set "
                "$FASTSCALE_ONEDNN_ROOT")

_SOURCE = Path(__file__).parent / "csrc" / "onednn_conv.cc"
TARGETS = {  # FFI custom-call target name -> exported handler symbol
    "fastscale_onednn_conv_forward": "FastscaleOnednnConvForward",
    "fastscale_onednn_conv_input_grad": "FastscaleOnednnConvInputGrad",
    "fastscale_onednn_conv_kernel_grad": "FastscaleOnednnConvKernelGrad",
}


class OnednnUnavailable(RuntimeError):
    """The oneDNN formulation cannot run here; the message says why and how to fix it."""


def _roots():
    env = os.environ.get(ENV_ROOT)
    if env:
        return [Path(env)]
    prefixes = [sys.prefix, site.getuserbase(), sys.base_prefix, "/usr/local", "/usr"]
    return [Path(p) for p in dict.fromkeys([*_wheel_prefixes(), *prefixes])]


def _wheel_prefixes() -> list[str]:
    """Prefixes where the onednn-devel-cpu-gomp wheel put its headers (include/oneapi/dnnl/),
    wherever its site-packages is (a venv, --user, a site dir added by a .pth file)."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("onednn-devel-cpu-gomp")
    except importlib.metadata.PackageNotFoundError:
        return []
    headers = [f for f in dist.files or [] if str(f).endswith("oneapi/dnnl/dnnl_version.h")]
    return [str(Path(dist.locate_file(f)).resolve().parents[3]) for f in headers]


def find_onednn() -> tuple[Path, Path]:
    """(include dir, library dir) of a oneDNN 3.x install, or raise OnednnUnavailable."""
    tried = []
    for root in _roots():
        include = root / "include"
        header = include / "oneapi" / "dnnl" / "dnnl_version.h"
        tried.append(str(root))
        if not header.is_file():
            continue
        major = _version_field(header, "DNNL_VERSION_MAJOR")
        if major is None or major < 3:
            tried[-1] += f" (oneDNN {major}.x; need 3.x)"
            continue
        for lib in [root / "lib", root / "lib64", *root.glob("lib/*-linux-gnu")]:
            if glob.glob(str(lib / "libdnnl.so*")):
                return include, lib
        tried[-1] += " (headers but no libdnnl.so)"
    raise OnednnUnavailable(f"no oneDNN 3.x found (looked in {', '.join(tried)}); install it: "
                            f"{INSTALL_HINT}")


def _version_field(header: Path, name: str):
    for line in header.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define" and parts[1] == name:
            try:
                return int(parts[2])
            except ValueError:
                return None
    return None


def _compiler() -> str:
    for cxx in [os.environ.get("CXX"), "g++", "c++", "clang++"]:
        if cxx and shutil.which(cxx):
            return cxx
    raise OnednnUnavailable("no C++ compiler found to build the oneDNN convolution shim "
                            "(set $CXX, or install g++: apt-get install g++)")


def _library_name(dnnl_lib: Path, ffi_include: str) -> str:
    h = hashlib.sha256(_SOURCE.read_bytes())
    for part in (str(dnnl_lib), ffi_include, jax.__version__, sys.platform):
        h.update(part.encode())
    for so in sorted(glob.glob(str(dnnl_lib / "libdnnl.so*"))):
        h.update(f"{so}:{os.stat(so).st_size}".encode())
    return f"onednn_conv-{h.hexdigest()[:16]}.so"


def _cache_dir() -> Path:
    base = os.environ.get(ENV_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastscale_jax")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build() -> Path:
    """Compile the FFI shim if it is not cached yet; return the shared library's path."""
    include, lib = find_onednn()
    ffi_include = jax.ffi.include_dir()
    cache = _cache_dir()
    target = cache / _library_name(lib, ffi_include)
    if target.is_file():
        return target
    cxx = _compiler()
    import fcntl  # POSIX only: imported here so that importing this module works everywhere

    with open(cache / "build.lock", "w") as lock:  # one compile at a time per cache dir
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{ffi_include}",
               f"-I{include}", str(_SOURCE), f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-o", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            raise OnednnUnavailable(f"compiling {_SOURCE.name} failed ({' '.join(cmd)}):\n"
                                    + proc.stderr[-2000:])
        os.replace(tmp, target)
    return target


def _load() -> str:
    """Build, load and register the handlers once per process; return the library path."""
    if os.environ.get(ENV_DISABLE, "").strip() == "0":
        raise OnednnUnavailable(f"disabled by ${ENV_DISABLE}=0")
    global _lib
    path = build()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise OnednnUnavailable(f"cannot load {path}: {e}") from None
    for name, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    lib.FastscaleOnednnConfigure.argtypes = [ctypes.c_int, ctypes.c_char_p]
    _lib = lib
    _apply()
    return str(path)


_lib = None                 # the loaded shim (None until first use)
_settings = ("nhwc", None)  # (layout, record file) the shim runs with: `configure`


def configure(layout: str = "nhwc", record: str | None = None) -> None:
    """The layout oneDNN convs run with from now on: 'nhwc', 'blocked' or 'tune' (then each
    problem's timed choice is recorded in `record` and read back from it by later processes).
    Called by the trainer and timing from config.model.onednn_layout (train.setup.build_steps);
    takes effect for convs run after it (the shim drops the kernels built so far)."""
    global _settings
    if layout not in LAYOUTS:
        raise ConfigError(f"model.onednn_layout={layout!r}: valid {', '.join(LAYOUTS)}")
    _settings = (layout, None if record is None else os.fspath(record))
    if _lib is not None:
        _apply()


def settings() -> dict:
    """The layout setting convs run with now: {'layout', 'record'}."""
    return {"layout": _settings[0], "record": _settings[1]}


def _apply() -> None:
    layout, record = _settings
    _lib.FastscaleOnednnConfigure(LAYOUTS.index(layout), (record or "").encode())


@functools.lru_cache(maxsize=None)
def status() -> tuple[bool, str]:
    """(True, library path) if the formulation can run, else (False, why and how to fix).

    Decided once per process (status.cache_clear() re-checks; a loaded library stays)."""
    try:
        return True, _load()
    except OnednnUnavailable as e:
        return False, str(e)


def available() -> bool:
    return status()[0]


def require() -> None:
    """Raise OnednnUnavailable (with the reason and the fix) unless the formulation can run."""
    ok, why = status()
    if not ok:
        raise OnednnUnavailable(f"conv impl 'onednn' is unavailable: {why}")


def supports(height: int, width: int, kernel: int, stride: int, dtype) -> bool:
    """Whether the shim handles this conv: float32 and non-negative right padding."""
    if np.dtype(dtype) != np.float32:
        return False
    pad = (kernel - 1) // 2
    for size in (height, width):
        out = out_size(size, stride)
        if (out - 1) * stride + kernel - size - pad < 0:
            return False
    return True


def _call(target, out_shape, dtype, stride, groups, *args):
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, dtype),
                            vmap_method="sequential")(
        *args, stride=np.int64(stride), groups=np.int64(groups))


def forward(x, kernel, stride, groups, precision=None):
    """y = conv(x, kernel): x NHWC float32, kernel HWIO with I = Cin // groups."""
    del precision  # oneDNN computes float32 in float32
    n, h, w, _ = x.shape
    out = (n, out_size(h, stride), out_size(w, stride), kernel.shape[-1])
    return _call("fastscale_onednn_conv_forward", out, x.dtype, stride, groups, x, kernel)


def input_grad(x, kernel, dy, stride, groups, precision=None):
    """dL/dx from dy = dL/dy (same conv); x is used for its shape only."""
    del precision
    return _call("fastscale_onednn_conv_input_grad", x.shape, x.dtype, stride, groups, dy,
                 kernel)


def kernel_grad(x, kernel, dy, stride, groups, precision=None):
    """dL/dkernel in the HWIO layout of `kernel` (used for its shape only)."""
    del precision
    return _call("fastscale_onednn_conv_kernel_grad", kernel.shape, kernel.dtype, stride,
                 groups, x, dy)


FORMULATION = (forward, input_grad, kernel_grad)


_warned_unavailable = False


def _handles(x, kernel, stride) -> bool:
    return supports(x.shape[1], x.shape[2], kernel.shape[0], stride, x.dtype)


def use_onednn(x, kernel, stride: int = 1) -> bool:
    """Whether 'auto' runs this CPU conv with oneDNN: a float32 kxk conv (k > 1; dense 1x1
    convs are plain matmuls, which XLA runs as fast) that the shim supports, when oneDNN is
    available. Warns once per process when it is not (unless disabled on purpose)."""
    global _warned_unavailable
    if kernel.shape[0] == 1 or not _handles(x, kernel, stride):
        return False
    ok, why = status()
    if not ok and not _warned_unavailable and os.environ.get(ENV_DISABLE) != "0":
        _warned_unavailable = True
        warnings.warn(f"fastscale_jax: oneDNN convolutions unavailable, so CPU convs use "
                      f"slower XLA formulations ({why}). ${ENV_DISABLE}=0 silences this.",
                      RuntimeWarning, stacklevel=4)
    return ok


def choose(impl: str, backend: str, x, kernel, groups: int, stride: int) -> str:
    """The formulation that runs for `impl` ('auto' on the CPU, or a formulation's name):
    'onednn' where `use_onednn` says so (forced 'onednn': where the shim supports the conv,
    else an error if oneDNN is unavailable), else the XLA one `xla_conv.cpu_choice` picks."""
    def xla_choice():
        return xla_conv.cpu_choice(x.shape[-1], kernel.shape[-1], groups, kernel.shape[0])

    if impl == "onednn":
        if backend != "cpu":
            raise ConfigError(f"conv impl 'onednn' runs on CPU only, not {backend}; use "
                             "impl='auto' (lax on GPU/TPU)")
        require()
        return "onednn" if _handles(x, kernel, stride) else xla_choice()
    if impl != "auto":
        return impl
    return "onednn" if use_onednn(x, kernel, stride) else xla_choice()
