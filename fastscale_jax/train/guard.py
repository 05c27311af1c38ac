"""Checkpoints that never hold diverged weights: the loop's loss check and staged saves.

The loop hands every step's loss and gradient norm (still on device, so the host does not wait
for them) to `LossGuard.record`, and every checkpoint.every_steps steps `stage`s a host copy of the state.
The copy of the state after s steps is written only once the loss its parameters give (that of
0-based step s, the next one) has been read back and found finite and at most
losses.divergence_limit, so a checkpoint on disk never holds diverged weights. `check` reads the
pending values back and raises NonFiniteLossError at the first bad step (a bad loss, or a NaN /
inf gradient norm: a NaN input can leave the loss finite, as ReLU maps NaN to 0, and still
poison the weights), naming the last good checkpoint.
"""

from __future__ import annotations

import math

import numpy as np

from fastscale_jax.errors import DivergedError

from fastscale_jax.train import checkpoint as ckpt_lib


class NonFiniteLossError(DivergedError):
    """The training loss became NaN or inf, or diverged."""


class LossGuard:
    """Pending losses, the staged checkpoint and the last one written (see the module doc)."""

    def __init__(self, ckpt, *, loss_limit: float, schedule, meta: dict, last_saved=None,
                 low_precision: bool = False):
        self.ckpt, self.loss_limit, self.schedule, self.meta = ckpt, loss_limit, schedule, meta
        self.low_precision = low_precision  # bf16 / f16 compute: suggest float32 too
        self.last_saved = last_saved
        self.losses: list[float] = []     # every checked loss of this invocation, in order
        self._pending: list = []          # (step, loss, grad norm) on device, not read back
        self._staged = None               # (step, host state) waiting for its loss

    @property
    def staged(self) -> bool:
        return self._staged is not None

    def record(self, step: int, loss, grad_norm) -> None:
        self._pending.append((step, loss, grad_norm))

    def check(self) -> None:
        """Read back the pending values; NonFiniteLossError at the first bad step; write the
        staged checkpoint once its step's loss is in and good."""
        vals = [(s, float(np.asarray(v)), float(np.asarray(g))) for s, v, g in self._pending]
        self._pending.clear()
        for s, v, g in vals:
            lr = f"0-based; lr {float(self.schedule(s)):.4g}"
            if not (math.isfinite(v) and v <= self.loss_limit):
                why = "" if not math.isfinite(v) else f" (diverged: above {self.loss_limit:.4g})"
                self.fail(f"loss is {v:.4g}{why} at step {s} ({lr})")
            if not math.isfinite(g):
                self.fail(f"the gradient norm is {g} at step {s} ({lr}; loss {v:.4g})")
        self.losses.extend(v for _, v, _ in vals)
        if self._staged is not None and vals and vals[-1][0] >= self._staged[0]:
            self._commit()

    def stage(self, step: int, device_state, get_state, *, now: bool = False) -> None:
        """Stage a checkpoint of the state after `step` steps (host copy: the device state is
        donated to the next step); `now`: write it at once (end of run, preemption)."""
        self.check()
        if not ckpt_lib.all_finite(device_state):
            self.fail(f"the train state after step {step} has NaN / inf values")
        self._staged = (step, ckpt_lib.host_copy(get_state(device_state)))
        if now:
            self._commit()

    def _commit(self) -> None:
        step, host = self._staged
        self.ckpt.save(step, host, self.meta)
        self.last_saved, self._staged = step, None

    def fail(self, what: str):
        self.ckpt.close()
        good = (f"The last good checkpoint is step {self.last_saved} in {self.ckpt.directory}: "
                "rerun to resume from it after changing the settings"
                if self.last_saved is not None else
                "No checkpoint passed the checks, so the run must start over")
        raise NonFiniteLossError(
            f"{what}; stopping. {good}. Lower optim.base_lr, add optim.clip_grad_norm or "
            f"warmup{', or use model.dtype=float32' if self.low_precision else ''}.")
