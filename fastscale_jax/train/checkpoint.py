"""Orbax checkpoints of the train state in WORKDIR/checkpoints/<step>/.

Each checkpoint has two items: 'state' (params, batch_stats, opt_state, ema, rng, step; host
numpy, one copy) and 'meta' (JSON: model name, the resolved spec, step, parallel mode). Saves
are asynchronous (checkpoint.async_save) and the last checkpoint.keep are kept. Before anything
compiles, `check_compatible` compares the latest checkpoint's spec with the run's spec, so a
workdir of a different model is a clear error instead of a shape mismatch deep in orbax.
"""

from __future__ import annotations

import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def quiet_orbax_logs():
    """Orbax logs every save at absl INFO; keep the console to warnings and up."""
    from absl import logging as absl_logging

    if absl_logging.get_verbosity() >= absl_logging.INFO:
        absl_logging.set_verbosity(absl_logging.WARNING)


class Checkpointer:
    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        quiet_orbax_logs()
        self.directory = checkpoint_dir(workdir)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, enable_async_checkpointing=async_save,
            read_only=read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

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

    def save(self, step: int, host_state, meta: dict, *, force: bool = True) -> bool:
        tree = flax.serialization.to_state_dict(host_state)
        return self.manager.save(
            int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                               meta=ocp.args.JsonSave(dict(meta, step=int(step)))),
            force=force)

    def restore(self, template, step=None):
        """The host state of checkpoint `step` (default latest) in the structure of `template`."""
        step = self.latest_step() if step is None else step
        target = flax.serialization.to_state_dict(template)
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), target)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        restored = jax.tree_util.tree_map(np.asarray, out["state"])
        return flax.serialization.from_state_dict(template, restored)

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        """Waits for in-flight saves (so a crash after a save still leaves it on disk)."""
        if self.manager is not None:
            self.manager.wait_until_finished()
            self.manager.close()
            self.manager = None


def spec_meta(spec) -> dict:
    d = spec.to_dict()
    return {"model": spec.name, "family": spec.family,
            "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}}


def check_compatible(ckpt: Checkpointer, spec, workdir: str) -> int | None:
    """The latest step in workdir (or None); ValueError if it belongs to another model."""
    step = ckpt.latest_step()
    if step is None:
        return None
    meta = ckpt.read_meta(step)
    mine = spec_meta(spec)
    if meta.get("spec") != mine["spec"]:
        theirs = meta.get("spec") or {}
        diff = sorted(k for k in set(theirs) | set(mine["spec"])
                      if theirs.get(k) != mine["spec"].get(k))
        detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs config {mine['spec'].get(k)!r}"
                           for k in diff[:4])
        raise ValueError(
            f"--workdir {workdir} holds a checkpoint (step {step}) of a different model "
            f"({meta.get('model')!r}; this config builds {spec.name!r}). Differences: {detail}. "
            "Use a new --workdir, or delete its checkpoints/ folder to start over.")
    return step
