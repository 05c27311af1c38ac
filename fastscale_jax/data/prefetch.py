"""Double-buffered host-to-device prefetch of [local_device_count, per_device_batch, ...] batches.

jax 0.10 no longer has `jax.device_put_sharded`; `flax.jax_utils.prefetch_to_device` still exists
(flax 0.12) but re-stacks every batch on the host (np.stack(list(x))) before the transfer. This
helper puts the host-local array directly onto a 1-D mesh of the local devices, split along the
leading axis, which is what `jax.pmap` expects (no re-layout when the step runs). Imports jax only.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np


def device_put_sharded_batch(batch, devices=None):
    """Puts a pytree of [len(devices), ...] host arrays on `devices`, split along axis 0."""
    import jax

    devices = list(devices) if devices is not None else jax.local_devices()
    mesh = jax.sharding.Mesh(np.asarray(devices), ("devices",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices"))

    def put(x):
        if np.ndim(x) == 0 or np.shape(x)[0] != len(devices):
            raise ValueError(f"prefetch_to_device: array of shape {np.shape(x)} does not have a "
                             f"leading axis of size {len(devices)} (one slice per device).")
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map(put, batch)


def prefetch_to_device(iterator, size: int = 2, devices=None):
    """Yields the batches of `iterator` as device arrays, keeping `size` transfers in flight.

    Each batch is a pytree of host arrays whose leading axis has one slice per device (the
    layout of `pipeline.train_iterator` / `eval_iterator`). size=2 overlaps the transfer of the
    next batch with the current step on GPU; on TPU/CPU it is usually unnecessary.
    """
    if size < 1:
        raise ValueError(f"prefetch_to_device: size={size} must be >= 1")
    queue = collections.deque()
    iterator = iter(iterator)

    def enqueue(n):
        for batch in itertools.islice(iterator, n):
            queue.append(device_put_sharded_batch(batch, devices))

    enqueue(size)
    while queue:
        yield queue.popleft()
        enqueue(1)
