"""Multi-process start-up: jax.distributed.initialize from config.distributed or the environment.

Set config.distributed.coordinator_address ('host:port'), .num_processes and .process_id
(or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); on
TPU pods and SLURM/GPU clusters jax.distributed.initialize() finds them itself (set
config.distributed.auto=True, or JAX_DISTRIBUTED=1, to call it without arguments). On CPU, cross-process collectives need
jax_cpu_collectives_implementation='gloo' (config.distributed.cpu_collectives).
Must run before anything touches a jax device.
"""

from __future__ import annotations

import os

from fastscale_jax.errors import ConfigError

_initialized = False


def maybe_initialize(dist_cfg) -> bool:
    """Initialise jax.distributed if configured; True if this is a multi-process run."""
    global _initialized
    if _initialized:
        return True
    import jax

    addr = dist_cfg.get("coordinator_address") if dist_cfg is not None else None
    num = dist_cfg.get("num_processes") if dist_cfg is not None else None
    pid = dist_cfg.get("process_id") if dist_cfg is not None else None
    addr = addr or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num = num if num is not None else _int_env("JAX_NUM_PROCESSES")
    pid = pid if pid is not None else _int_env("JAX_PROCESS_ID")
    auto = bool(dist_cfg.get("auto")) if dist_cfg is not None else False
    auto = auto or os.environ.get("JAX_DISTRIBUTED", "") not in ("", "0")
    if not addr and not auto:
        return False
    impl = dist_cfg.get("cpu_collectives") if dist_cfg is not None else "gloo"
    if impl:
        jax.config.update("jax_cpu_collectives_implementation", impl)
    if addr:
        if num is None or pid is None:
            raise ConfigError("distributed.coordinator_address needs distributed.num_processes "
                             "and distributed.process_id (or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
        jax.distributed.initialize(coordinator_address=addr, num_processes=int(num),
                                   process_id=int(pid))
    else:
        jax.distributed.initialize()
    _initialized = True
    return True


def _int_env(name):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None
