"""train_and_evaluate / evaluate: the training loop around the compiled steps.

    from fastscale_jax.train import train_and_evaluate
    result = train_and_evaluate(config, workdir)   # {'top1', 'top5', 'ema_top1', ..., 'step'}

Order of work: validate the config (optimizer / schedule / loss / parallel names, batch
divisibility, a checkpoint of another model in workdir) -> write config.json and
complexity.txt -> build and (if a checkpoint exists) restore the state -> compile -> train.

Exact resume: the training stream is cut into segments of checkpoint.every_steps steps, each
with a seed derived from (data.seed, segment start). A run resumed from a checkpoint at any step
s (a periodic one, or the one a SIGTERM writes) opens the segment that contains s and skips
s - start batches of it, so it sees exactly the batches an uninterrupted run sees from s; with
the deterministic defaults (data.deterministic, fixed kernel choices) its per-step losses equal
the uninterrupted run's. Rows that metrics.jsonl and TensorBoard got after step s are dropped
on resume, so replayed steps are logged once.

Timing: the first step of an invocation (compilation) is timed on its own (compile_s); the
steps after it give the steady-state training throughput (train_images_per_s, evaluation during
training excluded), the epoch time (epoch_time_s = train images / throughput) and the time the
loop waited for input (input_wait_s); all are in final_metrics.json.

Non-finite loss: the loop checks every step's loss at each log / checkpoint / eval point; on a
NaN or inf, or a finite loss above losses.divergence_limit (100 x ln(classes)), it stops with
NonFiniteLossError naming the first bad step and the last good checkpoint. A checkpoint of the
state after step s is written only when every array of it is finite (checked on device) and
the loss its parameters give (step s's loss) has passed that check, so a checkpoint on disk
never holds diverged weights; the final and the SIGTERM checkpoint are checked for finiteness.

Before any work: settings are validated, the workdir is checked (a file, not writable) and
locked by process 0 (fastscale_jax.workdir), the activation memory is checked against the
memory available (fastscale_jax.memory), and the newest checkpoint is read back in full
(broken ones are moved aside with a warning: checkpoint.latest_intact). A failed async save is
reported one step after the write ends (checkpoint.CheckpointSaveError).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time

import numpy as np

from fastscale_jax import memory
from fastscale_jax import workdir as workdir_lib
from fastscale_jax.train import checkpoint as ckpt_lib
from fastscale_jax.train import losses, optim
from fastscale_jax.train.distributed import maybe_initialize
from fastscale_jax.train.step import validate_parallel


class NonFiniteLossError(FloatingPointError, ValueError):
    """The training loss became NaN or inf (ValueError too, so launch.py prints one line)."""


def _stream_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step)])
               .generate_state(1)[0] & 0x7FFFFFFF)


def _validate_train(tcfg) -> None:
    """ValueError for train.* settings that cannot be honoured, before any work."""
    n = tcfg.get("num_train_steps")
    if n is not None and n < 1:
        raise ValueError(f"train.num_train_steps={n} must be >= 1 (or unset it: train.epochs "
                         "then sets the run length)")
    if n is None and not tcfg.epochs > 0:
        raise ValueError(f"train.epochs={tcfg.epochs} must be > 0")
    if not 0.0 <= float(tcfg.ema_decay) < 1.0:
        raise ValueError(f"train.ema_decay={tcfg.ema_decay} must be in [0, 1) (0 = no EMA; "
                         "e.g. 0.9999)")
    for name in ("global_batch_size", "eval_batch_size"):
        if tcfg.get(name) is not None and tcfg.get(name) < 1:
            raise ValueError(f"train.{name}={tcfg.get(name)} must be >= 1")


class _Run:
    """Everything derived from a config before compiling: spec, sizes, schedule, optimizer."""

    def __init__(self, config, workdir: str, data=None, *, for_eval: bool = False, spec=None):
        import jax

        from fastscale_jax import config as config_lib

        maybe_initialize(config.get("distributed"))
        self.config, self.workdir = config, workdir
        tcfg, ocfg = config.train, config.optim
        # names first: a typo must fail before any data or compile work
        optim.validate(ocfg)
        losses.validate(tcfg.loss)
        validate_parallel(config.parallel)
        ckpt_lib.validate(config.checkpoint)
        _validate_train(tcfg)
        if data is None:
            from fastscale_jax.data import pipeline as data
        self.data = data
        self.num_devices = jax.device_count()
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.is_main = self.process_index == 0
        self.batch = int(tcfg.global_batch_size)
        self.eval_batch = int(tcfg.get("eval_batch_size") or self.batch)
        for name, b in (("train.global_batch_size", self.batch),
                        ("train.eval_batch_size", self.eval_batch)):
            if b < 1 or b % self.num_devices:
                lo = max(self.num_devices, b // self.num_devices * self.num_devices)
                raise ValueError(f"{name}={b} is not divisible by the number of devices "
                                 f"({self.num_devices}); use a multiple, e.g. {lo}")

        self.info = data.dataset_info(config.data)
        spec = config_lib.resolve_spec(config) if spec is None else spec
        if spec.num_classes != self.info["num_classes"]:
            if config.model.get("num_classes") is not None:
                raise ValueError(
                    f"model.num_classes={spec.num_classes} but the dataset has "
                    f"{self.info['num_classes']} classes; set --config.model.num_classes="
                    f"{self.info['num_classes']}")
            spec = spec.replace(num_classes=int(self.info["num_classes"]))
        self.spec = spec
        self.image_size = int(spec.resolution)
        memory.check_fits(spec, global_batch=self.eval_batch if for_eval else self.batch,
                          dtype=config.model.dtype, train=not for_eval)
        self.loss_limit = losses.divergence_limit(spec.num_classes)

        self.steps_per_epoch = max(1, int(self.info["num_train"]) // self.batch)
        if tcfg.get("num_train_steps") is not None:
            self.total_steps = int(tcfg.num_train_steps)
        else:
            self.total_steps = max(1, int(round(tcfg.epochs * self.steps_per_epoch)))
        self.lr = optim.peak_lr(ocfg, self.batch)
        self.warmup = optim.warmup_steps(ocfg, self.steps_per_epoch,
                                         None if for_eval else self.total_steps)
        self.schedule = optim.make_schedule(ocfg, lr=self.lr, total_steps=self.total_steps,
                                            warmup=self.warmup)
        self.tx = optim.make_optimizer(ocfg, self.schedule)
        self.every = max(1, int(config.checkpoint.every_steps))
        eval_every = float(tcfg.eval_every_epochs or 0)
        self.eval_every = (max(1, int(round(eval_every * self.steps_per_epoch)))
                           if eval_every > 0 else None)
        self.ema = float(tcfg.ema_decay) > 0

        # one training run per workdir: process 0 holds WORKDIR/.lock until the run ends
        self.lock = workdir_lib.acquire(workdir) if self.is_main and not for_eval else None
        try:
            self.ckpt = ckpt_lib.Checkpointer(workdir, keep=int(config.checkpoint.keep),
                                              async_save=bool(config.checkpoint.async_save),
                                              read_only=for_eval)
            # the newest checkpoint that reads back completely (broken ones: warned, moved)
            latest, self.restored = ckpt_lib.latest_intact(
                self.ckpt, spec, workdir, move_broken=self.is_main and not for_eval)
            if self.process_count > 1:  # process 0 may have moved broken ones: all see it
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("fastscale_jax: checkpoints checked")
                self.ckpt.manager.reload()
            if latest is not None and not for_eval and not config.checkpoint.resume:
                raise ValueError(f"--workdir {workdir} already has checkpoints (latest step "
                                 f"{latest}) and checkpoint.resume=False; use a new --workdir "
                                 "or delete its checkpoints/ folder")
        except BaseException:
            self.release()
            raise
        self.latest = latest

    def release(self):
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- pieces that touch jax devices --------------------------------------------------
    def build(self):
        from fastscale_jax.models import build_model
        from fastscale_jax.train import step as step_lib
        from fastscale_jax.train.state import create_state

        cfg = self.config
        self.par = step_lib.Parallel(cfg.parallel)
        kw = dict(dtype=cfg.model.dtype, conv_impl=cfg.model.conv_impl)
        self.model = build_model(self.spec, **kw)
        train_model = build_model(self.spec, bn_axis_name=step_lib.AXIS if cfg.train.sync_bn
                                  else None, **kw)
        host_state = create_state(self.model, self.tx, image_size=self.image_size,
                                  seed=int(cfg.seed), ema=self.ema)
        if self.latest is not None:
            host_state = ckpt_lib.state_from_tree(host_state, self.restored, self.latest)
            self.restored = None
        self.host_state = host_state
        self.p_train = self.par.train_step(step_lib.make_train_body(
            train_model, self.tx, self.schedule, cfg.train, self.spec.num_classes))
        self.p_eval = self.par.eval_step(step_lib.make_eval_body(self.model, ema=self.ema))

    def meta(self) -> dict:
        return dict(ckpt_lib.spec_meta(self.spec), parallel=self.config.parallel,
                    global_batch_size=self.batch, total_steps=self.total_steps)

    def train_iter(self, step: int):
        """The training stream positioned at `step`: its segment's stream, skipped ahead."""
        start = step - step % self.every
        return iter(self.data.train_iterator(
            self.config.data, global_batch_size=self.batch, image_size=self.image_size,
            seed=_stream_seed(self.config.data.seed, start), skip_batches=step - start))

    def finished(self) -> dict | None:
        """final_metrics.json of this workdir when the run already ended at total_steps."""
        path = os.path.join(self.workdir, "final_metrics.json")
        if self.latest != self.total_steps or not os.path.exists(path):
            return None
        with open(path) as f:
            res = json.load(f)
        return res if res.get("step") == self.total_steps else None

    def evaluate(self, state) -> dict:
        it = self.data.eval_iterator(self.config.data, global_batch_size=self.eval_batch,
                                     image_size=self.image_size)
        total = None
        for batch in it:
            out = self.par.get_metrics(self.p_eval(state, self.par.put_batch(batch)))
            total = out if total is None else {k: total[k] + out[k] for k in total}
        if not total or total["count"] == 0:
            raise ValueError("the eval split is empty")
        n = total["count"]
        res = {"count": n}
        for prefix in ("", "ema_") if self.ema else ("",):
            res[prefix + "top1"] = total[prefix + "top1"] / n
            res[prefix + "top5"] = total[prefix + "top5"] / n
            res[prefix + "loss"] = total[prefix + "loss"] / n
        return res


def _write_run_info(run: _Run):
    from fastscale_jax import report

    if not run.is_main:
        return
    with open(os.path.join(run.workdir, "config.json"), "w") as f:
        f.write(run.config.to_json_best_effort(indent=2) + "\n")
    table = report.model_table(run.spec, show_test=False)
    with open(os.path.join(run.workdir, "complexity.txt"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"{run.spec.name}: {run.total_steps} steps ({run.steps_per_epoch}/epoch), global batch "
          f"{run.batch} on {run.num_devices} device(s) x {run.process_count} process(es), "
          f"peak lr {run.lr:.4g} ({run.config.optim.name}, {run.config.optim.schedule}, "
          f"warmup {run.warmup} steps), parallel={run.config.parallel}, train and eval at "
          f"{run.image_size}x{run.image_size}")


class _SigTerm:
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


def _fmt(res: dict) -> str:
    s = f"top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%"
    if "ema_top1" in res:
        s += f"  | EMA top-1 {100 * res['ema_top1']:.2f}%  top-5 {100 * res['ema_top5']:.2f}%"
    return s + f"  ({int(res['count'])} images)"


def train_and_evaluate(config, workdir: str, *, data=None, spec=None) -> dict:
    """Train `config` in `workdir` (resuming from its latest checkpoint), evaluating as it goes.

    data: the input pipeline module (default fastscale_jax.data.pipeline); tests pass a
    synthetic one with the same dataset_info / train_iterator / eval_iterator functions.
    spec: a model spec to train instead of the config's model (tests, notebooks).
    Returns the final eval metrics plus 'step', 'train_time_s' and the per-step 'losses' of
    this invocation.
    """
    from tqdm import tqdm

    from fastscale_jax.train.writers import MetricWriter, plot_curves

    workdir_lib.prepare(workdir)
    run = _Run(config, workdir, data, spec=spec)
    done = run.finished()  # every process: one returning alone would leave the others waiting
    if done is not None:
        run.release()
        if run.is_main:
            print(f"{workdir} already finished {run.total_steps} steps: {_fmt(done)}. "
                  "Nothing to do; use a new --workdir (or delete this one) to train again, or --mode eval "
                  "to re-evaluate its checkpoint.")
        return dict(done, already_finished=True, losses=[])
    try:
        _write_run_info(run)
        run.build()
    except BaseException:
        run.release()
        raise
    par = run.par
    state = par.put_state(run.host_state)
    del run.host_state
    step = int(run.latest or 0)
    if run.latest is not None and run.is_main:
        print(f"resuming from {run.ckpt.directory} at step {step}")
    writer = MetricWriter(workdir, enabled=run.is_main, tensorboard=config.train.tensorboard)
    writer.truncate_after(step)  # rows a crashed invocation wrote past the checkpoint
    log_every = max(1, int(config.train.log_every_steps))
    pending, window = [], []  # (step, device loss) not yet checked; metrics since last log
    losses_seen: list[float] = []
    last_saved = run.latest
    staged = None  # (step, host state): written once the loss of its params has been checked

    def stop(what):
        run.ckpt.close()
        good = (f"The last good checkpoint is step {last_saved} in {run.ckpt.directory}: rerun "
                "to resume from it after changing the settings" if last_saved is not None else
                "No checkpoint passed the checks, so the run must start over")
        raise NonFiniteLossError(
            f"{what}; stopping. {good}. Lower optim.base_lr, add optim.clip_grad_norm or "
            "warmup, or use model.dtype=float32.")

    def check_finite():
        vals = [(s, float(np.asarray(v))) for s, v in pending]
        pending.clear()
        for s, v in vals:
            if not (math.isfinite(v) and v <= run.loss_limit):
                why = "" if not math.isfinite(v) else f" (diverged: above {run.loss_limit:.4g})"
                stop(f"loss is {v:.4g}{why} at step {s} (0-based; lr "
                     f"{float(run.schedule(s)):.4g})")
        losses_seen.extend(v for _, v in vals)
        if staged is not None and vals and vals[-1][0] >= staged[0]:
            commit(*staged)  # the staged params gave a good loss

    def commit(at, host):
        nonlocal last_saved, staged
        run.ckpt.save(at, host, run.meta())
        last_saved, staged = at, None

    def save(at, now=False):
        """Stage a checkpoint of the state after `at` steps, written once the loss its params
        give (step `at`) is checked; `now`: write it at once (end of run, SIGTERM)."""
        nonlocal staged
        check_finite()
        if not ckpt_lib.all_finite(state):
            stop(f"the train state after step {at} has NaN / inf values")
        staged = (at, ckpt_lib.host_copy(par.get_state(state)))  # state is donated next step
        if now:
            commit(*staged)

    def do_eval(at):
        res = run.evaluate(state)
        writer.write(at, "eval", res)
        if run.is_main:
            tqdm.write(f"step {at}: eval {_fmt(res)}")
        return res

    it = None
    pbar = None
    t_log, t_start, steps_timed = time.time(), time.time(), 0
    # steady-state timing: steps after this invocation's first (compiling) one
    timing = {"compile_s": None, "t0": None, "steps": 0, "input_wait_s": 0.0, "eval_s": 0.0}

    def first_step_done(loss):
        import jax

        jax.block_until_ready(loss)
        timing["compile_s"] = time.time() - t_start
        timing["t0"] = time.time()
        if run.is_main and config.train.progress:
            tqdm.write(f"first step (compilation) took {timing['compile_s']:.1f} s")

    def _loop():
        nonlocal it, pbar, step, t_log, steps_timed, state
        if run.is_main:
            print("compiling the train step (the first step takes longer; timings and the "
                  "ETA settle after it)...", flush=True)
        with _SigTerm(multi_process=run.process_count > 1) as sigterm:
            while step < run.total_steps:
                if it is None or step % run.every == 0:
                    it = run.train_iter(step)
                epoch = step // run.steps_per_epoch
                if pbar is None or step % run.steps_per_epoch == 0:
                    if pbar is not None:
                        pbar.close()
                    in_epoch = step % run.steps_per_epoch
                    pbar = tqdm(total=min(run.steps_per_epoch, run.total_steps - step + in_epoch),
                                initial=in_epoch, desc=f"epoch {epoch + 1}", leave=True,
                                disable=not (config.train.progress and run.is_main),
                                dynamic_ncols=True)
                t_in = time.time()
                host_batch = next(it)
                if timing["t0"] is not None:
                    timing["input_wait_s"] += time.time() - t_in
                    timing["steps"] += 1
                batch = par.put_batch(host_batch)
                state, metrics = run.p_train(state, batch)
                pending.append((step, par.first(metrics["loss"])))
                if timing["t0"] is None:
                    first_step_done(metrics["loss"])
                    t_log, steps_timed = time.time(), -1  # the log window starts after it
                window.append(metrics)
                step += 1
                steps_timed += 1
                pbar.update(1)
                run.ckpt.raise_if_failed()  # a failed async save: reported now, not later
                if staged is not None:  # the staged state's loss is in: check it, then save
                    check_finite()
                if step % log_every == 0 or step == run.total_steps:
                    check_finite()
                    vals = [par.get_metrics(m) for m in window]
                    window.clear()
                    avg = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
                    dt = time.time() - t_log
                    avg["images_per_s"] = steps_timed * run.batch / max(dt, 1e-9)
                    t_log, steps_timed = time.time(), 0
                    writer.write(step, "train", avg)
                    pbar.set_postfix(loss=f"{avg['loss']:.3f}", lr=f"{avg['lr']:.3g}",
                                     img_s=f"{avg['images_per_s']:.0f}")
                if step % run.every == 0 or step == run.total_steps:
                    save(step, now=step == run.total_steps)
                if run.eval_every and step % run.eval_every == 0 and step != run.total_steps:
                    t_eval = time.time()
                    do_eval(step)
                    timing["eval_s"] += time.time() - t_eval
                if sigterm.stop_at(step):
                    if last_saved != step:
                        save(step, now=True)
                    run.ckpt.close()
                    if run.is_main:
                        print(f"SIGTERM: saved a checkpoint at step {step} in "
                              f"{run.ckpt.directory}; rerun the same command to resume")
                    return {"step": step, "interrupted": True, "losses": losses_seen}
            if pbar is not None:
                pbar.close()
            check_finite()
            timing["t_end"] = time.time()
            if last_saved != step:
                save(step, now=True)
            return do_eval(step)

    try:
        result = _loop()
    finally:  # also on errors / KeyboardInterrupt: finish in-flight async saves
        try:
            run.ckpt.close()
        finally:
            run.release()
        writer.close()
        if pbar is not None:
            pbar.close()
    if result.get("interrupted"):
        return result
    result.update(step=step, train_time_s=time.time() - t_start, losses=losses_seen,
                  **_throughput(timing, run))
    if run.is_main:
        print(f"final (step {step}): {_fmt(result)}")
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({k: v for k, v in result.items() if k != "losses"}, f, indent=2)
        if config.train.plot:
            plot_curves(workdir, title=f"{run.spec.name} ({config.data.name})")
        _print_outputs(workdir, result, run)
    return result


def _throughput(timing: dict, run: _Run) -> dict:
    """compile_s, train_images_per_s, epoch_time_s, input_wait_s of this invocation (None
    where it ran no step after its first)."""
    out = {"compile_s": timing["compile_s"], "train_images_per_s": None, "epoch_time_s": None,
           "input_wait_s": None}
    if timing["steps"] > 0 and timing.get("t_end"):
        seconds = timing["t_end"] - timing["t0"] - timing["eval_s"]
        rate = timing["steps"] * run.batch / max(seconds, 1e-9)
        out.update(train_images_per_s=rate, epoch_time_s=int(run.info["num_train"]) / rate,
                   input_wait_s=timing["input_wait_s"])
    return out


def _print_outputs(workdir: str, result: dict, run: _Run) -> None:
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
    workdir_lib.prepare(workdir, create=False)
    run = _Run(config, workdir, data, for_eval=True, spec=spec)
    if run.latest is None:
        raise FileNotFoundError(f"no checkpoint in {run.ckpt.directory}; train first "
                                "(--mode train) or point --workdir at a training run")
    run.build()
    state = run.par.put_state(run.host_state)
    res = run.evaluate(state)
    run.ckpt.close()
    if run.is_main:
        print(f"checkpoint step {run.latest}: eval {_fmt(res)}")
        with open(os.path.join(workdir, "eval_results.json"), "w") as f:
            json.dump(dict(res, step=run.latest), f, indent=2)
    return dict(res, step=run.latest)
