"""What the training loop reports while it runs: a tqdm bar per epoch, the averaged train
metrics of each log window, and the invocation's throughput (final_metrics.json).

Throughput: the first step of an invocation (compilation) is timed on its own (compile_s);
the steps after it give the steady-state rate (train_images_per_s; evaluation during training
excluded), the epoch time (epoch_time_s = train images / rate) and the time the loop waited
for input (input_wait_s).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm


class EpochBar:
    """One tqdm bar per epoch (only where `enabled`: process 0 with train.progress)."""

    def __init__(self, steps_per_epoch: int, total_steps: int, enabled: bool):
        self.per_epoch, self.total, self.enabled = steps_per_epoch, total_steps, enabled
        self.epochs = -(-total_steps // steps_per_epoch)
        self.bar = None
        self._t0, self._timed = None, 0  # steady-state clock and steps since the first one

    def start_step(self, step: int) -> None:
        """Open the epoch's bar when `step` starts an epoch (or the loop starts mid-epoch)."""
        if self.bar is not None and step % self.per_epoch:
            return
        self.close()
        in_epoch = step % self.per_epoch
        self.bar = tqdm(total=min(self.per_epoch, self.total - step + in_epoch),
                        initial=in_epoch, desc=f"epoch {step // self.per_epoch + 1}/{self.epochs}",
                        leave=True, disable=not self.enabled, dynamic_ncols=True)

    def advance(self) -> None:
        """One step done."""
        if self._t0 is None:  # the first step compiled: the clock starts after it
            self._t0 = time.time()
        else:
            self._timed += 1
        self.bar.update(1)

    def run_eta(self, step: int) -> str:
        """The whole run's remaining time at the steady-state rate so far ('?' at first)."""
        if self._t0 is None or self._timed < 2:
            return "?"
        left = (self.total - step) * (time.time() - self._t0) / self._timed
        return time.strftime("%H:%M:%S", time.gmtime(left)) if left < 86400 else f"{left / 3600:.0f}h"

    def show(self, step: int | None = None, **values) -> None:
        """Values shown after the bar (loss, lr, images/s) and the whole run's ETA."""
        if step is not None:
            values["run_eta"] = self.run_eta(step)
        self.bar.set_postfix(**values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogWindow:
    """The step metrics since the last log line; `flush` averages them (host floats) and adds
    images_per_s over the window (the compiling first step excluded)."""

    def __init__(self, batch: int):
        self.batch, self.metrics, self.t0, self.steps = batch, [], time.time(), 0

    def add(self, metrics) -> None:
        self.metrics.append(metrics)
        self.steps += 1

    def restart(self) -> None:
        """Start the timing afresh (after the first step: it compiled)."""
        self.t0, self.steps = time.time(), 0

    def flush(self, to_host) -> dict:
        vals = [to_host(m) for m in self.metrics]
        avg = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
        avg["images_per_s"] = self.steps * self.batch / max(time.time() - self.t0, 1e-9)
        self.metrics.clear()
        self.restart()
        return avg


class Throughput:
    """compile_s, train_images_per_s, epoch_time_s and input_wait_s of one invocation."""

    def __init__(self, batch: int, num_train: int):
        self.batch, self.num_train = batch, num_train
        self.t_start = time.time()
        self.compile_s = self.t0 = self.t_end = None
        self.steps, self.input_wait_s, self.eval_s = 0, 0.0, 0.0

    def first_step_done(self, loss) -> float:
        """Wait for the first step (the one that compiled); its time is compile_s."""
        import jax

        jax.block_until_ready(loss)
        self.t0 = time.time()
        self.compile_s = self.t0 - self.t_start
        return self.compile_s

    def next_batch(self, it):
        """next(it), counting the wait once the steady state has begun."""
        t = time.time()
        batch = next(it)
        if self.t0 is not None:
            self.input_wait_s += time.time() - t
            self.steps += 1
        return batch

    def summary(self) -> dict:
        """The four numbers (rate, epoch time and input wait None without a timed step)."""
        self.t_end = self.t_end or time.time()
        out = {"compile_s": self.compile_s, "train_images_per_s": None, "epoch_time_s": None,
               "input_wait_s": None}
        if self.steps > 0:
            rate = self.steps * self.batch / max(self.t_end - self.t0 - self.eval_s, 1e-9)
            out.update(train_images_per_s=rate, epoch_time_s=self.num_train / rate,
                       input_wait_s=self.input_wait_s)
        return out
