"""train_and_evaluate / evaluate: the training loop around the compiled steps.

    from fastscale_jax.train import train_and_evaluate
    result = train_and_evaluate(config, workdir)   # {'top1', 'top5', 'ema_top1', ..., 'step'}

Order of work: validate the config (fastscale_jax.train.setup), read the dataset's sizes,
check the activation memory against the memory available (fastscale_jax.memory), lock the
workdir (process 0; fastscale_jax.workdir), read the newest checkpoint back in full (broken
ones are moved aside with a warning: checkpoint.latest_intact), write config.json and
complexity.txt, build and (if a checkpoint exists) restore the state, compile, train.

Exact resume: the training stream is cut into segments of checkpoint.every_steps steps, each
with a seed derived from (data.seed, segment start). A run resumed from a checkpoint at any step
s (a periodic one, or the one a SIGTERM writes) opens the segment that contains s and skips
s - start batches of it, so it sees exactly the batches an uninterrupted run sees from s; with
the deterministic defaults (data.deterministic, recorded kernel choices) its per-step losses
equal the uninterrupted run's. Rows that metrics.jsonl and TensorBoard got after step s are
dropped on resume, so replayed steps are logged once.

Non-finite loss: on a NaN or inf loss, or a finite one above losses.divergence_limit, the loop
stops with NonFiniteLossError naming the first bad step and the last good checkpoint; a
checkpoint is written only once the loss its parameters give has passed that check
(fastscale_jax.train.guard). A failed async save is reported one step after the write ends
(checkpoint.CheckpointSaveError). Throughput and compile time: fastscale_jax.train.progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any

from fastscale_jax.errors import DataError, MissingPathError, WorkdirError
from fastscale_jax import memory
from fastscale_jax import workdir as workdir_lib
from fastscale_jax.config import flat_dict
from fastscale_jax.data.config import stream_seeds
from fastscale_jax.train import checkpoint as ckpt_lib
from fastscale_jax.train import losses, setup
from fastscale_jax.train.distributed import maybe_initialize
from fastscale_jax.train.guard import LossGuard, NonFiniteLossError
from fastscale_jax.train.preemption import SigTerm
from fastscale_jax.train.progress import EpochBar, LogWindow, Throughput

__all__ = ["NonFiniteLossError", "evaluate", "train_and_evaluate"]

# oneDNN's layout choices of a run with model.onednn_layout='tune' (read back on resume)
LAYOUT_RECORD = "onednn_layouts.txt"


@dataclasses.dataclass(frozen=True)
class _Run:
    """What a run is, once validated: its data module, model spec and sizes."""
    data: Any                   # the input pipeline module (dataset_info / *_iterator)
    info: dict                  # data.dataset_info: num_train, num_classes, ...
    spec: Any
    sizes: setup.Sizes
    num_devices: int
    process_count: int
    is_main: bool               # process 0: writes files, holds the workdir lock


def _setup(config, data, spec, *, for_eval: bool) -> _Run:
    """Validate the config, read the dataset's sizes, resolve the spec, check the memory."""
    import jax

    maybe_initialize(config.get("distributed"))
    setup.validate_config(config, jax.device_count())  # a typo fails before any data work
    if data is None:
        from fastscale_jax.data import pipeline as data
    info = data.dataset_info(config.data)
    sizes = setup.run_sizes(config, num_train=int(info["num_train"]), for_eval=for_eval)
    spec = setup.resolve_spec(config, int(info["num_classes"]), spec)
    memory.check_fits(spec, global_batch=sizes.eval_batch if for_eval else sizes.batch,
                      dtype=config.model.dtype, train=not for_eval)
    return _Run(data=data, info=info, spec=spec, sizes=sizes, num_devices=jax.device_count(),
                process_count=jax.process_count(), is_main=jax.process_index() == 0)


def _open_checkpoints(config, workdir: str, run: _Run, *, for_eval: bool):
    """(Checkpointer, latest intact step or None, its state tree). Process 0 moves broken
    checkpoints aside; a training run with checkpoints but resume=False is refused."""
    ckpt = ckpt_lib.Checkpointer(workdir, keep=int(config.checkpoint.keep),
                                 async_save=bool(config.checkpoint.async_save),
                                 read_only=for_eval)
    try:
        latest, tree = ckpt_lib.latest_intact(ckpt, run.spec, workdir,
                                              move_broken=run.is_main and not for_eval)
        if run.process_count > 1:  # process 0 may have moved broken ones: all must see it
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("fastscale_jax: checkpoints checked")
            ckpt.manager.reload()
        if latest is not None and not for_eval and not config.checkpoint.resume:
            raise WorkdirError(f"--workdir {workdir} already has checkpoints (latest step "
                             f"{latest}) and checkpoint.resume=False; use a new --workdir "
                             "or delete its checkpoints/ folder")
    except BaseException:
        ckpt.close()
        raise
    return ckpt, latest, tree


# config keys a resume may change without a word (display and bookkeeping, not the run)
_QUIET_KEYS = ("train.progress", "train.log_every_steps", "train.tensorboard", "train.plot",
               "train.eval_batch_size", "checkpoint.", "distributed.", "host_malloc", "study_member.")


def _check_resume(config, workdir: str, run: _Run, ckpt, latest) -> None:
    """Refuse a resume whose global batch differs from the checkpoint's (the learning rate,
    scaled with the batch, and the data stream would silently change); say so when the
    schedule's length changes (training longer or shorter: the lr from here on follows the new
    schedule); name any other changed setting."""
    meta = ckpt.read_meta(latest) or {}
    was = meta.get("global_batch_size")
    if was is not None and was != run.sizes.batch:
        raise WorkdirError(
            f"--workdir {workdir} holds a run checkpointed at step {latest} with "
            f"train.global_batch_size={was}, not {run.sizes.batch}: resuming would change its "
            f"learning rate and data stream; restore it (its config.json has the run's "
            "settings) or use a new --workdir")
    if not run.is_main:
        return
    was = meta.get("total_steps")
    if was is not None and was != run.sizes.total_steps:
        print(f"warning: resuming at step {latest} with a schedule of {run.sizes.total_steps} "
              f"steps instead of the checkpoint's {was}: the learning rate from here on follows "
              "the new schedule (neither run's alone)", flush=True)
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            old = flat_dict(json.load(f))
    except (OSError, ValueError):
        return
    new = flat_dict(json.loads(config.to_json_best_effort()))
    diff = [k for k in sorted(old.keys() & new.keys()) if old[k] != new[k]
            and not k.startswith(_QUIET_KEYS)]
    if diff:
        print("warning: resuming with changed settings: " + "; ".join(
            f"{k} {old[k]!r} -> {new[k]!r}" for k in diff[:12]), flush=True)


def _finished(workdir: str, latest, total_steps: int) -> dict | None:
    """final_metrics.json of this workdir when its run already ended at total_steps."""
    path = os.path.join(workdir, "final_metrics.json")
    if latest != total_steps or not os.path.exists(path):
        return None
    with open(path) as f:
        res = json.load(f)
    return res if res.get("step") == total_steps else None


def _initial_state(config, run: _Run, steps: setup.Steps, par, latest, tree):
    """The replicated device state: fresh from config.seed, or the checkpoint's."""
    from fastscale_jax.train.state import create_state

    state = create_state(steps.model, steps.tx, image_size=int(run.spec.resolution),
                         seed=int(config.seed), ema=steps.ema)
    if latest is not None:
        state = ckpt_lib.state_from_tree(state, tree, latest)
    return par.put_state(state)


def _train_stream(config, run: _Run, step: int):
    """The training stream positioned at `step`: its segment's stream, skipped ahead."""
    start = step - step % run.sizes.ckpt_every
    return iter(run.data.train_iterator(
        config.data, global_batch_size=run.sizes.batch, image_size=int(run.spec.resolution),
        seed=stream_seeds(config.data.seed, start)[0], skip_batches=step - start))


def _evaluate(config, run: _Run, par, steps: setup.Steps, state) -> dict:
    """top1 / top5 / loss (and ema_*) over the eval split, each example counted once."""
    from tqdm import tqdm

    it = run.data.eval_iterator(config.data, global_batch_size=run.sizes.eval_batch,
                                image_size=int(run.spec.resolution))
    n = len(it) if hasattr(it, "__len__") else None
    show = run.is_main and bool(config.train.get("progress", True))
    total = None
    for batch in tqdm(it, total=n, desc="eval", unit="batch", leave=False, disable=not show,
                      dynamic_ncols=True):
        out = par.get_metrics(steps.eval(state, par.put_batch(batch)))
        total = out if total is None else {k: total[k] + out[k] for k in total}
    if not total or total["count"] == 0:
        raise DataError("the eval split is empty")
    n = total["count"]
    prefixes = ("", "ema_") if steps.ema else ("",)
    return {"count": n, **{p + k: total[p + k] / n for p in prefixes
                           for k in ("top1", "top5", "loss")}}


def _fmt(res: dict) -> str:
    s = f"top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%"
    if "ema_top1" in res:
        s += f"  | EMA top-1 {100 * res['ema_top1']:.2f}%  top-5 {100 * res['ema_top5']:.2f}%"
    return s + f"  ({int(res['count'])} images)"


def _write_run_info(config, workdir: str, run: _Run) -> None:
    """config.json and complexity.txt in workdir, and the run's one-paragraph summary."""
    from fastscale_jax import report

    if not run.is_main:
        return
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2) + "\n")
    table = report.model_table(run.spec, show_test=False)
    with open(os.path.join(workdir, "complexity.txt"), "w") as f:
        f.write(table + "\n")
    s = run.sizes
    print(table)
    warning = report.small_maps_warning(run.spec)
    if warning:
        print(warning, flush=True)
    print(f"{run.spec.name}: {s.total_steps} steps ({s.steps_per_epoch}/epoch), global batch "
          f"{s.batch} on {run.num_devices} device(s) x {run.process_count} process(es), "
          f"peak lr {s.lr:.4g} ({config.optim.name}, {config.optim.schedule}, "
          f"warmup {s.warmup} steps), parallel={config.parallel}, train and eval at "
          f"{run.spec.resolution}x{run.spec.resolution}")


def train_and_evaluate(config, workdir: str, *, data=None, spec=None) -> dict:
    """Train `config` in `workdir` (resuming from its latest checkpoint), evaluating as it goes.

    data: the input pipeline module (default fastscale_jax.data.pipeline); tests pass one with
    the same dataset_info / train_iterator / eval_iterator functions.
    spec: a model spec to train instead of the config's model (tests, notebooks).
    Returns the final eval metrics plus 'step', 'train_time_s', the throughput numbers of
    fastscale_jax.train.progress and the per-step 'losses' of this invocation.
    """
    from fastscale_jax.train.step import Parallel

    workdir_lib.prepare(workdir)
    run = _setup(config, data, spec, for_eval=False)
    with contextlib.ExitStack() as stack:  # closes checkpoints, then releases the lock
        stack.enter_context(workdir_lib.lock(workdir, enabled=run.is_main))
        stack.enter_context(ckpt_lib.quiet_orbax())
        ckpt, latest, tree = _open_checkpoints(config, workdir, run, for_eval=False)
        stack.callback(ckpt.close)  # also on errors: finishes in-flight async saves
        done = _finished(workdir, latest, run.sizes.total_steps)  # every process decides
        if latest is not None and done is None:
            _check_resume(config, workdir, run, ckpt, latest)
        if done is not None:
            if run.is_main:
                print(f"{workdir} already finished {run.sizes.total_steps} steps: {_fmt(done)}. "
                      "Nothing to do; use a new --workdir (or delete this one) to train again, "
                      "or --mode eval to re-evaluate its checkpoint.")
            return dict(done, already_finished=True, losses=[])
        _write_run_info(config, workdir, run)
        par = Parallel(config.parallel)
        steps = setup.build_steps(config, run.spec, run.sizes, par,
                                  layout_record=os.path.join(workdir, LAYOUT_RECORD))
        state = _initial_state(config, run, steps, par, latest, tree)
        del tree
        if latest is not None and run.is_main:
            print(f"resuming from {ckpt.directory} at step {latest}")
        result = _train(config, workdir, run, ckpt, par, steps, state, int(latest or 0))
    if result.get("interrupted") or not run.is_main:
        return result
    print(f"final (step {result['step']}): {_fmt(result)}")
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
        json.dump({k: v for k, v in result.items() if k != "losses"}, f, indent=2)
    if config.train.plot:
        from fastscale_jax.train.writers import plot_curves

        plot_curves(workdir, title=f"{run.spec.name} ({config.data.name})")
    _print_outputs(workdir, result)
    return result


def _train(config, workdir: str, run: _Run, ckpt, par, steps: setup.Steps, state,
           step: int) -> dict:
    """The loop: from `step` to total_steps, logging, checkpointing, evaluating; SIGTERM
    saves and returns {'step', 'interrupted': True, 'losses'}."""
    from tqdm import tqdm

    from fastscale_jax.train.writers import MetricWriter

    sz, main = run.sizes, run.is_main
    guard = LossGuard(ckpt, loss_limit=losses.divergence_limit(run.spec.num_classes),
                      schedule=steps.schedule, last_saved=step or None,
                      low_precision=str(config.model.dtype) not in ("float32", "f32"),
                      meta=dict(ckpt_lib.spec_meta(run.spec), parallel=config.parallel,
                                global_batch_size=sz.batch, total_steps=sz.total_steps))
    meter, window = Throughput(sz.batch, sz.num_train), LogWindow(sz.batch)
    log_every = max(1, int(config.train.log_every_steps))
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(contextlib.closing(
            MetricWriter(workdir, enabled=main, tensorboard=config.train.tensorboard)))
        writer.truncate_after(step)  # rows a crashed invocation wrote past the checkpoint
        bar = EpochBar(sz.steps_per_epoch, sz.total_steps, main and config.train.progress)
        stack.callback(bar.close)
        sigterm = stack.enter_context(SigTerm(multi_process=run.process_count > 1))
        if main:
            print("compiling the train step (the first step takes longer; timings and the "
                  "ETA settle after it)...", flush=True)
        it = None
        while step < sz.total_steps:
            if it is None or step % sz.ckpt_every == 0:
                it = _train_stream(config, run, step)
            bar.start_step(step)
            state, metrics = steps.train(state, par.put_batch(meter.next_batch(it)))
            guard.record(step, par.first(metrics["loss"]), par.first(metrics["grad_norm"]))
            window.add(metrics)
            if meter.compile_s is None:
                meter.first_step_done(metrics["loss"])
                window.restart()  # the log window's images/s starts after compilation
                if main and config.train.progress:
                    tqdm.write(f"first step (compilation) took {meter.compile_s:.1f} s")
            step += 1
            bar.advance()
            ckpt.raise_if_failed()  # a failed async save: reported now, not later
            if guard.staged:  # the staged state's loss is in: check it, then write it
                guard.check()
            if step % log_every == 0 or step == sz.total_steps:
                guard.check()
                avg = window.flush(par.get_metrics)
                writer.write(step, "train", avg)
                bar.show(step, loss=f"{avg['loss']:.3f}", lr=f"{avg['lr']:.3g}",
                         img_s=f"{avg['images_per_s']:.0f}")
            if step % sz.ckpt_every == 0 or step == sz.total_steps:
                guard.stage(step, state, par.get_state, now=step == sz.total_steps)
            if sz.eval_every and step % sz.eval_every == 0 and step != sz.total_steps:
                t = time.time()
                res = _evaluate(config, run, par, steps, state)
                writer.write(step, "eval", res)
                if main:
                    tqdm.write(f"step {step}: eval {_fmt(res)}")
                meter.eval_s += time.time() - t
            if sigterm.stop_at(step):
                if guard.last_saved != step:
                    guard.stage(step, state, par.get_state, now=True)
                ckpt.close()
                if main:
                    print(f"{sigterm.signal}: saved a checkpoint at step {step} in "
                          f"{ckpt.directory}; rerun the same command to resume")
                return {"step": step, "interrupted": True, "signal": sigterm.signal,
                        "losses": guard.losses}
        bar.close()
        guard.check()
        meter.t_end = time.time()
        if guard.last_saved != step:
            guard.stage(step, state, par.get_state, now=True)
        result = _evaluate(config, run, par, steps, state)
        writer.write(step, "eval", result)
    return dict(result, step=step, train_time_s=time.time() - meter.t_start,
                losses=guard.losses, **meter.summary())


def _print_outputs(workdir: str, result: dict) -> None:
    rate = result.get("train_images_per_s")
    if rate:
        print(f"training: {rate:.0f} images/s after the first step (compile "
              f"{result['compile_s']:.1f} s; {result['input_wait_s']:.1f} s waiting for input); "
              f"epoch time {result['epoch_time_s']:.1f} s")
    names = [n for n in ("final_metrics.json", "metrics.jsonl", "curves.png", "tb",
                         "complexity.txt", "config.json") if os.path.exists(os.path.join(workdir, n))]
    print(f"outputs in {os.path.abspath(workdir)}: {', '.join(names)}, checkpoints/ "
          f"(step {result['step']})")


def evaluate(config, workdir: str, *, data=None, spec=None) -> dict:
    """Evaluate the latest checkpoint in workdir (raw and EMA weights)."""
    from fastscale_jax.train.step import Parallel

    workdir_lib.prepare(workdir, create=False)
    run = _setup(config, data, spec, for_eval=True)
    with ckpt_lib.quiet_orbax():
        ckpt, latest, tree = _open_checkpoints(config, workdir, run, for_eval=True)
    with ckpt_lib.quiet_orbax(), contextlib.closing(ckpt):
        if latest is None:
            raise MissingPathError(f"no checkpoint in {ckpt.directory}; train first "
                                    "(--mode train) or point --workdir at a training run")
        par = Parallel(config.parallel)
        steps = setup.build_steps(config, run.spec, run.sizes, par,
                                  layout_record=os.path.join(workdir, LAYOUT_RECORD))
        state = _initial_state(config, run, steps, par, latest, tree)
        res = _evaluate(config, run, par, steps, state)
    if run.is_main:
        print(f"checkpoint step {latest}: eval {_fmt(res)}")
        with open(os.path.join(workdir, "eval_results.json"), "w") as f:
            json.dump(dict(res, step=latest), f, indent=2)
    return dict(res, step=latest)
