"""fastscale_jax.cpu.hostmem: when the allocator settings apply, and that they take effect."""

import os
import subprocess
import sys

import pytest

from fastscale_jax.cpu import hostmem

# In a fresh interpreter: optionally tune, malloc 64 MB, and report (tune message, bytes that
# glibc serves from mmap'd blocks) from mallinfo2.
PROBE = r"""
import ctypes, sys
from fastscale_jax.cpu import hostmem
msg = hostmem.tune_for_cpu() if sys.argv[1] == "tune" else "-"
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(64 << 20)
print(msg)
print(libc.mallinfo2().hblkhd)
"""


def probe(arg, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "FASTSCALE_HOST_MALLOC")}
    r = subprocess.run([sys.executable, "-c", PROBE, arg], env={**e, **env}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    msg, mmapped = r.stdout.strip().splitlines()
    return msg, int(mmapped)


needs_glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


@needs_glibc
def test_tuning_keeps_large_blocks_off_mmap():
    msg, mmapped = probe("tune", JAX_PLATFORMS="cpu")
    assert msg.startswith("host malloc tuning: on"), msg
    assert mmapped < 64 << 20
    _, mmapped_default = probe("none")
    assert mmapped_default >= 64 << 20  # glibc's default: a 64 MB block is mmap'd


@needs_glibc
def test_env_switch_turns_it_off():
    msg, mmapped = probe("tune", JAX_PLATFORMS="cpu", FASTSCALE_HOST_MALLOC="off")
    assert "off" in msg and mmapped >= 64 << 20


def test_cpu_backend_expected(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert hostmem.cpu_backend_expected()
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not hostmem.cpu_backend_expected()
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setattr(hostmem, "_ACCELERATOR_PLUGINS", ("pytest",))  # an installed dist
    assert not hostmem.cpu_backend_expected()
    monkeypatch.setattr(hostmem, "_ACCELERATOR_PLUGINS", ("no-such-distribution-xyz",))
    assert hostmem.cpu_backend_expected()


def test_not_applied_with_an_accelerator(monkeypatch):
    monkeypatch.setattr(hostmem, "_applied", None)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.delenv("FASTSCALE_HOST_MALLOC", raising=False)
    monkeypatch.setattr(hostmem, "_mallopt", lambda: pytest.fail("must not call mallopt"))
    assert "accelerator" in hostmem.tune_for_cpu()
    assert hostmem.tune_for_cpu() == hostmem._applied  # repeated calls: same answer, no work


# ------------------------------------------------------------------------------------------
# config.host_malloc (what launch.py applies)


def _config(name, batch=8, **model):
    from fastscale_jax.config import base_config

    c = base_config()
    c.model.name = name
    c.train.global_batch_size = batch
    for k, v in model.items():
        c.model[k] = v
    return c


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(hostmem, "tune_for_cpu", lambda force=False: seen.append(force) or "tuned")
    return seen


def test_auto_tunes_only_steps_with_large_activations(calls):
    from fastscale_jax import memory

    # RegNetY-800MF at 224 px: 5.25M acts per image (pycls) x 8 x 4 bytes = 160 MiB.
    assert memory.step_activation_mib(_config("RegNetY-800MF"), "train") == pytest.approx(
        5_249_888 * 8 * 4 / 2**20)
    msg = memory.tune_host_malloc(_config("RegNetY-800MF"), "train")
    assert msg.startswith("tuned [host_malloc=auto: ~") and "train step >= 128 MiB" in msg
    small = _config("RegNetY-800MF", batch=8, resolution=64)
    msg = memory.tune_host_malloc(small, "train")
    assert "off" in msg and "MiB" in msg
    assert memory.step_activation_mib(_config("RegNetY-800MF", dtype="bfloat16"), "train") == \
        pytest.approx(memory.step_activation_mib(_config("RegNetY-800MF"), "train") / 2)
    # benchmark mode sizes the timing batch, not the training one
    bench = _config("RegNetY-800MF", batch=1)
    bench.timing.batch_size = 32
    assert memory.step_activation_mib(bench, "benchmark") == pytest.approx(5_249_888 * 32 * 4 / 2**20)
    assert calls == [False]


def test_on_off_and_bad_values(calls):
    from fastscale_jax import memory

    c = _config("RegNetY-800MF", resolution=64)
    c.host_malloc = "on"
    assert memory.tune_host_malloc(c, "train").startswith("tuned [host_malloc=on")
    assert calls == [True]
    c.host_malloc = "off"
    assert "off" in memory.tune_host_malloc(_config("RegNetY-800MF"), "complexity")
    assert "off" in memory.tune_host_malloc(c, "train") and calls == [True]
    c.host_malloc = "sometimes"
    with pytest.raises(ValueError, match="host_malloc must be 'auto', 'on' or 'off'"):
        memory.tune_host_malloc(c, "train")


def test_a_time_budget_is_tuned_only_when_asked_and_then_for_selection_and_training(calls):
    from fastscale_jax import memory

    c = _config("RegNetY-800MF")   # large enough for 'auto' to tune a flops-scaled run
    c.scaling.time = "200ms"
    assert "a time budget" in memory.tune_host_malloc(c, "select")
    assert "a time budget" in memory.tune_host_malloc(c, "train") and calls == []
    c.host_malloc = "on"
    assert memory.tune_host_malloc(c, "select").startswith("tuned [host_malloc=on")
    assert memory.tune_host_malloc(c, "train").startswith("tuned [host_malloc=on")
    assert calls == [True, True]
