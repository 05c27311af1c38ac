"""Memory a training step needs at least, and a run refused early when it cannot fit.

A training step keeps at least every conv / linear output for the backward pass: complexity
'acts' per image (pycls's count) x images x bytes per value. That is a lower bound on the
step's memory (BN and activation outputs, gradients and XLA's temporaries come on top), so a
run whose lower bound exceeds the memory it has cannot work: at 10000 px a RegNet's stem
output alone is tens of GiB per image. The input batch (float32 images) is held on the host.
"""

from __future__ import annotations

import os

from fastscale_jax.errors import ConfigError

GIB = 2**30


def activation_bytes(spec, images: int, dtype="float32", resolution=None) -> int:
    """Conv / linear outputs of `images` images: complexity acts x images x bytes per value."""
    import jax.numpy as jnp

    from fastscale_jax.complexity import complexity
    from fastscale_jax.models import resolve_dtype

    acts = complexity(spec, resolution)["acts"]
    return int(acts) * int(images) * jnp.dtype(resolve_dtype(dtype)).itemsize


def host_memory_bytes() -> int:
    """Physical memory, or the cgroup limit when a container sets a lower one."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                total = min(total, int(f.read().strip()))
        except (OSError, ValueError):  # absent, or 'max'
            pass
    return total


def device_memory_bytes(device) -> int | None:
    """An accelerator's memory (None on CPU, where the host memory counts)."""
    if device.platform == "cpu":
        return None
    try:
        return int((device.memory_stats() or {}).get("bytes_limit") or 0) or None
    except Exception:  # noqa: BLE001 - backends without memory_stats
        return None


def check_fits(spec, *, global_batch: int, dtype="float32", train: bool = True) -> None:
    """ValueError naming what to lower when a step's activations (a lower bound, see the
    module docstring) or the host's input batch exceed the memory available."""
    import jax

    res = int(spec.resolution)
    per_process = global_batch // jax.process_count()
    local = jax.local_devices()
    need_in = per_process * res * res * 3 * 4
    host = host_memory_bytes()
    dev_mem = device_memory_bytes(local[0])
    if train:
        images = per_process if dev_mem is None else max(1, per_process // len(local))
        need = activation_bytes(spec, images, dtype)
        where = f"{'the host' if dev_mem is None else local[0].device_kind} " \
                f"({(dev_mem or host) / GIB:.1f} GiB)"
        if dev_mem is None:
            need += need_in
        if need > (dev_mem or host):
            raise ConfigError(
                f"{spec.name} at {res} px cannot train here: one step needs at least "
                f"{need / GIB:.1f} GiB ({images} images x {activation_bytes(spec, 1, dtype)} "
                f"bytes of activations each{' + the input batch' if dev_mem is None else ''}) "
                f"but {where} has less; lower model.resolution or train.global_batch_size")
    if need_in > host:
        raise ConfigError(
            f"an input batch of {per_process} images at {res} px needs {need_in / GIB:.1f} GiB "
            f"but the host has {host / GIB:.1f} GiB; lower model.resolution or the batch size")


# host_malloc='auto' tunes the allocator when a step's activations (complexity 'acts' x batch x
# bytes per value) reach this: below it, steps are cheap and the one-arena setting's lock
# contention (XLA compiles, tf.data threads) costs more than the page faults it saves.
HOST_MALLOC_AUTO_MIN_MIB = 128


def tune_host_malloc(config, mode: str) -> str:
    """Apply `fastscale_jax.cpu.hostmem.tune_for_cpu()` for this run per config.host_malloc
    ('auto' | 'on' | 'off'); must run before JAX starts. Returns a one-line description.

    'auto' applies it for train/eval/benchmark runs whose per-step activations reach
    HOST_MALLOC_AUTO_MIN_MIB (the demo config: ~63 MiB, off; RegNetY-800MF at 224 px, batch 8:
    ~160 MiB, on), never to a time budget's selection or its training (both untuned unless
    host_malloc='on', which tunes both). hostmem itself skips it when an accelerator backend
    is installed.
    """
    from fastscale_jax.cpu import hostmem

    setting = str(config.get("host_malloc", "auto")).strip().lower()
    if setting not in ("auto", "on", "off"):
        raise ConfigError(f"host_malloc must be 'auto', 'on' or 'off', got {setting!r}")
    if setting == "off" or mode in ("complexity", "study", "config"):  # study: each run its own
        return "host malloc tuning: off"
    if setting == "auto" and (mode == "select" or config.scaling.get("time")):
        # the model is chosen by measuring: its size is unknown here, and the selection and the
        # training from it must time the same allocator (host_malloc='on' tunes both)
        return ("host malloc tuning: off (a time budget: the model is not known before timing;"
                " host_malloc='on' tunes the selection and the training from it alike)")
    why = "host_malloc=on"
    if setting == "auto":
        mib = step_activation_mib(config, mode)
        step = {"eval": "eval step (train.eval_batch_size)", "benchmark": "timed step"}.get(
            mode, "train step")
        cmp = "<" if mib < HOST_MALLOC_AUTO_MIN_MIB else ">="
        why = (f"host_malloc=auto: ~{mib:.0f} MiB of activations per {step} {cmp} "
               f"{HOST_MALLOC_AUTO_MIN_MIB} MiB")
        if mib < HOST_MALLOC_AUTO_MIN_MIB:
            return f"host malloc tuning: off ({why})"
    return f"{hostmem.tune_for_cpu(force=setting == 'on')} [{why}]"


def step_activation_mib(config, mode: str) -> float:
    """Activations of one step in MiB: complexity 'acts' per image x batch x bytes per value,
    for the largest model of the run (timing.* settings in benchmark mode)."""
    from fastscale_jax import config as config_lib
    from fastscale_jax import sweep

    dtype = config.model.dtype
    if mode == "benchmark":
        batch, res = config.timing.batch_size, config.timing.get("resolution")
        dtype = config.timing.get("dtype") or dtype
        specs = [spec for _, spec in sweep.resolve_family(config)]
    else:
        batch = config.train.global_batch_size
        if mode == "eval":
            batch = config.train.get("eval_batch_size") or batch
        res, specs = None, [config_lib.resolve_spec(config)]
    return max(activation_bytes(spec, batch, dtype, res) for spec in specs) / 2**20
