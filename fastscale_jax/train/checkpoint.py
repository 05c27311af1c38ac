"""Orbax checkpoints of the train state in WORKDIR/checkpoints/<step>/.

Each checkpoint has two items: 'state' (params, batch_stats, opt_state, ema, rng, step; host
numpy, one copy) and 'meta' (JSON: model name, the resolved spec, step, parallel mode). Saves
are asynchronous (checkpoint.async_save) and the last checkpoint.keep (>= 1) are kept.

Safety (nothing lost, nothing silent):
- `latest_intact` reads the newest checkpoint back completely (meta and every array) before
  anything compiles. A checkpoint of another model is a clear error; a broken one (truncated
  data, garbage metadata, a missing item) is reported by step and moved to
  WORKDIR/checkpoints_broken/, and the run falls back to the newest intact checkpoint.
- A failed asynchronous save (disk full, permissions) is reported as one
  `CheckpointSaveError` as soon as the background write ends (`raise_if_failed`), naming the
  step and the previous checkpoint, which orbax leaves in place (old steps are deleted only
  after a save commits).
- `all_finite` checks a device state for NaN / inf without copying it to the host; the loop
  saves only states that pass (fastscale_jax.train.loop).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from fastscale_jax.errors import ConfigError, TrainingError, WorkdirError


class CheckpointSaveError(TrainingError):
    """Writing a checkpoint failed (disk full, permissions); the previous one is kept."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def broken_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints_broken")


def validate(ckpt_cfg) -> None:
    """ValueError for checkpoint settings that cannot be honoured (before any work)."""
    keep, every = ckpt_cfg.keep, ckpt_cfg.every_steps
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep < 1:
        raise ConfigError(f"checkpoint.keep={keep!r} must be an integer >= 1 (how many recent "
                         "checkpoints to keep; 0 would delete every one)")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ConfigError(f"checkpoint.every_steps={every!r} must be an integer >= 1 (train "
                         "steps between checkpoints)")


def _drops_closed_loop_errors(hook):
    """A sys.unraisablehook that drops tensorstore's 'Event loop is closed' records: after a
    failed async write, tensorstore completes its pending writes into orbax's already closed
    event loop and prints one traceback for each (hundreds); the failure itself is reported
    once, as CheckpointSaveError."""
    def unraisablehook(u):
        if isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed":
            return
        hook(u)
    return unraisablehook


class _NoOrbaxTracebacks:
    """logging filter: drops orbax's error records that carry a traceback (a failed async
    save logs the same error with its traceback from four threads; the Checkpointer reports
    that failure once, as CheckpointSaveError) and its warnings that a read-only manager (an
    evaluation reading a run's checkpoints) is read-only, which is what was asked."""

    READ_ONLY = ("Given directory is read only", "CheckpointManagerOptions.read_only=True")

    def filter(self, record) -> bool:
        if f"{os.sep}orbax{os.sep}" not in (record.pathname or ""):
            return True
        if record.exc_info:
            return False
        return not any(m in str(record.msg) for m in self.READ_ONLY)


@contextlib.contextmanager
def quiet_orbax():
    """For the block: orbax's per-save INFO lines (absl) and its repeated tracebacks of a
    failed save are dropped (the failure is reported once, as CheckpointSaveError); the
    process's logging and sys.unraisablehook are restored on exit. The training loop holds it
    around a run; the Checkpointer itself changes no process state."""
    import logging
    import sys

    from absl import logging as absl_logging

    verbosity, hook = absl_logging.get_verbosity(), sys.unraisablehook
    logger, flt = logging.getLogger("absl"), _NoOrbaxTracebacks()
    if verbosity >= absl_logging.INFO:
        absl_logging.set_verbosity(absl_logging.WARNING)
    logger.addFilter(flt)
    sys.unraisablehook = _drops_closed_loop_errors(hook)
    try:
        yield
    finally:
        logger.removeFilter(flt)
        sys.unraisablehook = hook
        absl_logging.set_verbosity(verbosity)


def _short(e: BaseException, n: int = 200) -> str:
    """'Type: first line' of an error, cut to n characters; an OS error code that tensorstore
    buries at the end of a long message ('No space left on device') goes first."""
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out = f"{type(e).__name__}: {lines[0][:n] if lines else ''}".rstrip(": ")
    code = re.search(r"os_error_code='?(\d+)", text)
    return f"{os.strerror(int(code.group(1)))}; {out}" if code else out


class Checkpointer:
    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        if int(keep) < 1:
            raise ConfigError(f"checkpoint.keep={keep} must be >= 1 (0 would delete every "
                             "checkpoint)")
        self.directory = checkpoint_dir(workdir)
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(keep), create=not read_only, enable_async_checkpointing=async_save,
            read_only=read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))
        self._in_flight = None             # step of a save that may still be writing
        self._last_ok = self.latest_step()  # newest step known to be on disk

    def latest_step(self):
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def read_meta(self, step=None) -> dict | None:
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def read_state(self, step) -> dict:
        """Checkpoint `step`'s state as saved: nested dicts of host numpy arrays."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))
        return jax.tree_util.tree_map(np.asarray, out["state"])

    def _failed(self, step, e: BaseException) -> CheckpointSaveError:
        prev = (f"the previous checkpoint (step {self._last_ok}) is intact"
                if self._last_ok is not None else "there is no earlier checkpoint")
        return CheckpointSaveError(
            f"saving checkpoint step {step} in {self.directory} failed ({_short(e, 120)}); {prev}. "
            "Free disk space or fix the folder's permissions, then rerun the same command to "
            "resume")

    def raise_if_failed(self):
        """Raise CheckpointSaveError if an asynchronous save has ended with an error (cheap:
        returns at once while a save is still writing)."""
        if self._in_flight is None or self.manager.is_saving_in_progress():
            return
        step, self._in_flight = self._in_flight, None
        try:  # the commit's error surfaces in check_for_errors, the finalize's in wait
            self.manager.check_for_errors()
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - any write error, reported once
            raise self._failed(step, e) from e
        self._last_ok = step

    def save(self, step: int, host_state, meta: dict, *, force: bool = True) -> bool:
        self.raise_if_failed()
        tree = flax.serialization.to_state_dict(host_state)
        try:
            out = self.manager.save(
                int(step), args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree),
                    meta=ocp.args.JsonSave(dict(meta, step=int(step)))), force=force)
        except Exception as e:  # noqa: BLE001 - includes an earlier async save's error
            raise self._failed(self._in_flight or step, e) from e
        if self._in_flight is not None:  # orbax finished it (or raised above) before this one
            self._last_ok = self._in_flight
        self._in_flight = int(step)
        return out

    def restore(self, template, step=None):
        """The host state of checkpoint `step` (default latest) in the structure of `template`."""
        step = self.latest_step() if step is None else step
        return state_from_tree(template, self.read_state(step), step)

    def wait(self):
        self.manager.wait_until_finished()
        self.raise_if_failed()

    def close(self):
        """Waits for in-flight saves (so a crash after a save still leaves it on disk); a save
        that failed is raised as CheckpointSaveError."""
        if self.manager is None:
            return
        manager, self.manager = self.manager, None
        try:
            manager.wait_until_finished()
            if self._in_flight is not None:
                manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            raise self._failed(self._in_flight, e) from e
        finally:
            manager.close()


def state_from_tree(template, tree: dict, step=None):
    """`template`'s structure filled with the arrays of a restored state tree, cast to the
    template's dtypes; ValueError naming the first mismatching entries."""
    want = traverse_util.flatten_dict(flax.serialization.to_state_dict(template),
                                      keep_empty_nodes=True, sep="/")
    got = traverse_util.flatten_dict(tree, keep_empty_nodes=True, sep="/")
    bad = sorted(set(want) ^ set(got))
    bad += [k for k in want if k in got and np.shape(want[k]) != np.shape(got[k])]
    if bad:
        raise WorkdirError(
            f"checkpoint step {step} does not match this run's train state (e.g. {bad[:3]}); "
            "was it written with another optim.name or train.ema_decay? Use the same settings "
            "or a new --workdir")
    out = {k: (v if v is traverse_util.empty_node else np.asarray(got[k], np.asarray(v).dtype))
           for k, v in want.items()}
    return flax.serialization.from_state_dict(
        template, traverse_util.unflatten_dict(out, sep="/"))


@jax.jit
def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def all_finite(state) -> bool:
    """True if every floating-point array of `state` is finite (reduced where it lives)."""
    return bool(_all_finite(state))


def spec_meta(spec) -> dict:
    d = spec.to_dict()
    return {"model": spec.name, "family": spec.family,
            "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}}


def _check_model(meta: dict, spec, step, workdir):
    mine = spec_meta(spec)
    if meta.get("spec") != mine["spec"]:
        theirs = meta.get("spec") or {}
        diff = sorted(k for k in set(theirs) | set(mine["spec"])
                      if theirs.get(k) != mine["spec"].get(k))
        detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs config {mine['spec'].get(k)!r}"
                           for k in diff[:4])
        raise WorkdirError(
            f"--workdir {workdir} holds a checkpoint (step {step}) of a different model "
            f"({meta.get('model')!r}; this config builds {spec.name!r}). Differences: {detail}. "
            "Use a new --workdir, or delete its checkpoints/ folder to start over.")


def _move_aside(ckpt: Checkpointer, step: int, workdir: str) -> str:
    dest_root = broken_dir(workdir)
    os.makedirs(dest_root, exist_ok=True)
    dest = os.path.join(dest_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(os.path.join(ckpt.directory, str(step)), dest)
    return dest


def latest_intact(ckpt: Checkpointer, spec, workdir: str, *, move_broken: bool = True):
    """(step, state tree) of the newest checkpoint that reads back completely, or (None, None).

    Broken newer checkpoints are named in a warning and (move_broken) moved to
    WORKDIR/checkpoints_broken/ so that the resumed run can write their steps again. Raises
    ValueError when checkpoints exist but none is intact, or when they hold another model.
    """
    broken = []
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            meta = ckpt.read_meta(step)
        except Exception as e:  # noqa: BLE001 - any unreadable metadata
            broken.append((step, f"meta: {_short(e)}"))
            continue
        _check_model(meta, spec, step, workdir)
        try:
            tree = ckpt.read_state(step)
        except Exception as e:  # noqa: BLE001 - truncated / missing arrays
            broken.append((step, f"state: {_short(e)}"))
            continue
        break
    else:
        step, tree = None, None
    if broken and step is None:
        steps = ", ".join(str(s) for s, _ in broken)
        raise WorkdirError(
            f"no intact checkpoint in {ckpt.directory}: step(s) {steps} cannot be read "
            f"({broken[0][1]}). Delete the broken step folders (or the whole checkpoints/ "
            "folder to start over), or use a new --workdir")
    for s, why in broken:
        where = ""
        if move_broken:
            where = f"; moved to {_move_aside(ckpt, s, workdir)}"
        print(f"warning: checkpoint step {s} in {ckpt.directory} is broken ({why}){where}; "
              f"using step {step}, the newest intact checkpoint", flush=True)
    if broken and move_broken:
        ckpt.manager.reload()
        ckpt._last_ok = step
    return step, tree


def check_compatible(ckpt: Checkpointer, spec, workdir: str) -> int | None:
    """The latest step in workdir (or None); ValueError if it belongs to another model."""
    step = ckpt.latest_step()
    if step is not None:
        _check_model(ckpt.read_meta(step), spec, step, workdir)
    return step


def host_copy(tree):
    """A copy of a host state (numpy views of device buffers must not outlive a donation)."""
    return jax.tree_util.tree_map(np.array, tree)
