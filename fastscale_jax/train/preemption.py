"""Preemption: when the training loop must save a checkpoint and return (SIGTERM)."""

from __future__ import annotations

import signal
import threading


class SigTerm:
    """Preemption: `stop_at(step)` says when the loop must save and return.

    One process: a SIGTERM handler (main thread only) sets a flag. Several processes (a
    jax.distributed run): every process must save the same step, or the collective save and
    the next step's collectives would wait forever, so the handler is left to JAX's
    preemption service, which hears the SIGTERM any process gets and makes
    multihost_utils.reached_preemption_sync_point true on all of them at the same step.
    """

    def __init__(self, multi_process: bool = False):
        self.flag = False
        self.multi = multi_process
        self._old = None

    def __enter__(self):
        if not self.multi and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.flag = True

    def stop_at(self, step: int) -> bool:
        if not self.multi:
            return self.flag
        from jax.experimental import multihost_utils

        return bool(multihost_utils.reached_preemption_sync_point(int(step)))

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
