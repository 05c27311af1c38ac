"""Preemption: when the training loop must save a checkpoint and return (SIGTERM, Ctrl-C).

A run stopped this way saves the state of the step it is at and returns
{'interrupted': True, ...}; the command line then exits with status 3 (EXIT_INTERRUPTED), so a
scheduler can tell an unfinished run from a finished one (0) and requeue it: rerunning the
same command resumes it.
"""

from __future__ import annotations

import signal
import threading

EXIT_INTERRUPTED = 3


class SigTerm:
    """Preemption: `stop_at(step)` says when the loop must save and return.

    One process: SIGTERM and the first Ctrl-C (SIGINT) set a flag (a second Ctrl-C interrupts
    at once, as Python does). Several processes (a jax.distributed run): every process must
    save the same step, or the collective save and the next step's collectives would wait
    forever, so SIGTERM is left to JAX's preemption service, which hears the SIGTERM any
    process gets and makes multihost_utils.reached_preemption_sync_point true on all of them
    at the same step.
    """

    def __init__(self, multi_process: bool = False):
        self.flag = False
        self.signal = None
        self.multi = multi_process
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            sigs = (signal.SIGINT,) if self.multi else (signal.SIGTERM, signal.SIGINT)
            for s in sigs:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            if self.flag:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            print("\nCtrl-C: saving a checkpoint at the end of this step (Ctrl-C again to stop "
                  "without one)", flush=True)
        self.flag = True
        self.signal = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"

    def stop_at(self, step: int) -> bool:
        if self.flag or not self.multi:
            return self.flag
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(int(step)):
            self.signal = "SIGTERM"
            return True
        return False

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
