"""The set-up pieces of a run, one job each: validate the config, derive its sizes, build the
optimizer and the compiled train / eval steps.

    validate_config(config, num_devices=8)
    sizes = run_sizes(config, num_train=50_000)
    steps = build_steps(config, spec, sizes, Parallel("pmap"))
    state, metrics = steps.train(state, batch)

`fastscale_jax.timing` builds the steps it times with `build_steps` too, so the runtime a
benchmark reports is that of the step training runs (one loss, one optimizer, one step).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from fastscale_jax.data.batching import check_divisible
from fastscale_jax.errors import ConfigError
from fastscale_jax.train import checkpoint as ckpt_lib
from fastscale_jax.train import losses, optim
from fastscale_jax.train.step import validate_parallel


# Every numeric training setting's valid range, checked once before any work (check_ranges):
# key: (low, high, low included, high included, integer, may be None)
INF = math.inf
RANGES = {
    "train.global_batch_size": (1, INF, True, False, True, False),
    "train.eval_batch_size": (1, INF, True, False, True, True),
    "train.epochs": (0, INF, False, False, False, False),
    "train.num_train_steps": (1, INF, True, False, True, True),
    "train.label_smoothing": (0, 1, True, False, False, False),
    "train.bce_target_thresh": (0, 1, True, False, False, True),
    "train.mixup_alpha": (0, INF, True, False, False, False),
    "train.cutmix_alpha": (0, INF, True, False, False, False),
    "train.mix_prob": (0, 1, True, True, False, False),
    "train.mix_switch_prob": (0, 1, True, True, False, False),
    "train.ema_decay": (0, 1, True, False, False, False),
    "train.log_every_steps": (1, INF, True, False, True, False),
    "train.eval_every_epochs": (0, INF, True, False, False, False),
    "optim.base_lr": (0, INF, False, False, False, False),
    "optim.base_batch_size": (0, INF, False, False, False, False),
    "optim.momentum": (0, 1, True, False, False, False),
    "optim.b1": (0, 1, True, False, False, False),
    "optim.b2": (0, 1, True, False, False, False),
    "optim.eps": (0, INF, False, False, False, False),
    "optim.weight_decay": (0, INF, True, False, False, False),
    "optim.warmup_epochs": (0, INF, True, False, False, False),
    "optim.warmup_steps": (0, INF, True, False, True, True),
    "optim.warmup_init_factor": (0, 1, True, True, False, False),
    "optim.min_lr_factor": (0, 1, True, True, False, False),
    "optim.clip_grad_norm": (0, INF, True, False, False, False),
    "checkpoint.every_steps": (1, INF, True, False, True, False),
    "checkpoint.keep": (1, INF, True, False, True, False),
}


def _interval(lo, hi, lo_in, hi_in) -> str:
    return f"{'[' if lo_in else '('}{lo:g}, {'inf' if hi == INF else f'{hi:g}'}{']' if hi_in else ')'}"


def check_ranges(config) -> None:
    """ConfigError (one line: the key, the value, the valid range) for the first numeric
    setting of RANGES outside its range, non-finite, or of the wrong type."""
    for key, (lo, hi, lo_in, hi_in, integer, nullable) in RANGES.items():
        v = _lookup(config, key)
        if v is None:
            if nullable or _lookup(config, key.split(".")[0]) is None:
                continue
            raise ConfigError(f"{key}=None: it must be set (a number in "
                              f"{_interval(lo, hi, lo_in, hi_in)})")
        what = "an integer" if integer else "a number"
        ok_type = (isinstance(v, int) if integer else isinstance(v, (int, float)))
        if isinstance(v, bool) or not ok_type or not math.isfinite(v):
            raise ConfigError(f"{key}={v!r} must be {what} in {_interval(lo, hi, lo_in, hi_in)}")
        if not ((v > lo or (lo_in and v == lo)) and (v < hi or (hi_in and v == hi))):
            raise ConfigError(f"{key}={v!r} is out of range: must be {what} in "
                              f"{_interval(lo, hi, lo_in, hi_in)}")


def _lookup(config, path: str):
    cur = config
    for key in path.split("."):
        try:
            cur = cur[key]
        except (KeyError, TypeError, AttributeError):
            return None
    return cur


def _validate_train(tcfg) -> None:
    n = tcfg.get("num_train_steps")
    if n is not None and n < 1:
        raise ConfigError(f"train.num_train_steps={n} must be >= 1 (or unset it: train.epochs "
                         "then sets the run length)")
    if n is None and not tcfg.epochs > 0:
        raise ConfigError(f"train.epochs={tcfg.epochs} must be > 0")
    if not 0.0 <= float(tcfg.ema_decay) < 1.0:
        raise ConfigError(f"train.ema_decay={tcfg.ema_decay} must be in [0, 1) (0 = no EMA; "
                         "e.g. 0.9999)")
    for name in ("global_batch_size", "eval_batch_size"):
        if tcfg.get(name) is not None and tcfg.get(name) < 1:
            raise ConfigError(f"train.{name}={tcfg.get(name)} must be >= 1")


def _validate_model(mcfg) -> None:
    from fastscale_jax.envvars import CONV_IMPL_ENV
    from fastscale_jax.models import resolve_dtype
    from fastscale_jax.ops.conv import impls

    from fastscale_jax.cpu.onednn import LAYOUTS

    resolve_dtype(mcfg.dtype)
    if mcfg.get("onednn_layout", "nhwc") not in LAYOUTS:
        raise ConfigError(f"model.onednn_layout={mcfg.onednn_layout!r}: valid {', '.join(LAYOUTS)}")
    if mcfg.conv_impl not in impls():
        raise ConfigError(f"model.conv_impl={mcfg.conv_impl!r}: valid {', '.join(impls())} (its "
                          f"default comes from ${CONV_IMPL_ENV} when that is set)")


def validate_config(config, num_devices: int) -> None:
    """ValueError naming the field and the fix for any train / optim / checkpoint / parallel
    setting that cannot be honoured (batches must split over `num_devices`). The only place
    these sections are validated: the builders below assume a validated config."""
    check_ranges(config)  # every numeric setting's range, one line naming key and range
    _validate_model(config.model)
    optim.validate(config.optim)
    losses.validate(config.train.loss)
    validate_parallel(config.parallel)
    ckpt_lib.validate(config.checkpoint)
    _validate_train(config.train)
    batch = int(config.train.global_batch_size)
    for name, b in (("train.global_batch_size", batch),
                    ("train.eval_batch_size", int(config.train.get("eval_batch_size") or batch))):
        check_divisible(name, b, num_devices, "the number of devices")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """A run's derived sizes (steps count global batches; lr is the peak learning rate)."""
    batch: int                  # global train batch (all devices of all processes)
    eval_batch: int
    num_train: int              # training images
    steps_per_epoch: int
    total_steps: int
    warmup: int                 # warmup steps
    lr: float                   # optim.base_lr scaled to the batch (optim.peak_lr)
    ckpt_every: int             # steps between checkpoints (= data-stream segment length)
    eval_every: int | None      # steps between evaluations during training (None: at the end)


def run_sizes(config, *, num_train: int, for_eval: bool = False) -> Sizes:
    """The run's batch sizes, step counts, warmup and peak lr (computed here only)."""
    tcfg = config.train
    batch = int(tcfg.global_batch_size)
    eval_batch = int(tcfg.get("eval_batch_size") or batch)
    if batch > int(num_train) and not for_eval:
        raise ConfigError(f"train.global_batch_size={batch} is larger than the train split "
                          f"({num_train} images): every step would repeat images within the "
                          f"batch; use at most {num_train}")
    per_epoch = max(1, int(num_train) // batch)
    if tcfg.get("num_train_steps") is not None:
        total = int(tcfg.num_train_steps)
    else:
        total = max(1, int(round(tcfg.epochs * per_epoch)))
    eval_epochs = float(tcfg.eval_every_epochs or 0)
    return Sizes(
        batch=batch, eval_batch=eval_batch, num_train=int(num_train), steps_per_epoch=per_epoch,
        total_steps=total,
        warmup=optim.warmup_steps(config.optim, per_epoch, None if for_eval else total),
        lr=optim.peak_lr(config.optim, batch),
        ckpt_every=max(1, int(config.checkpoint.every_steps)),
        eval_every=max(1, int(round(eval_epochs * per_epoch))) if eval_epochs > 0 else None)


def resolve_spec(config, num_classes: int, spec=None):
    """The run's model spec (`spec`, else the config's), with the dataset's class count."""
    from fastscale_jax import config as config_lib

    spec = config_lib.resolve_spec(config) if spec is None else spec
    if spec.num_classes == num_classes:
        return spec
    if config.model.get("num_classes") is not None:
        raise ConfigError(f"model.num_classes={spec.num_classes} but the dataset has "
                         f"{num_classes} classes; set --config.model.num_classes={num_classes}")
    return spec.replace(num_classes=int(num_classes))


@dataclasses.dataclass
class Steps:
    """A run's model, optimizer and compiled steps (see fastscale_jax.train.step)."""
    model: Any                  # eval-mode Flax module (also what create_state initialises)
    schedule: Callable          # step -> learning rate
    tx: Any                     # optax.GradientTransformation
    train: Callable             # (state, batch) -> (state, metrics); state donated
    eval: Callable              # (state, batch) -> summed eval metrics
    grads: Callable             # (state, batch) -> (loss, grads, batch_stats): fwd + bwd only
    ema: bool                   # the state carries EMA weights (train.ema_decay > 0)


def build_steps(config, spec, sizes: Sizes, par, *, layout_record: str | None = None) -> Steps:
    """The model, schedule, optimizer and the train / eval / gradient steps compiled by `par`
    (a step.Parallel) from the config's recipe (model.dtype / conv_impl / onednn_layout,
    train.*, optim.*). layout_record: where oneDNN records its layout choices with
    model.onednn_layout='tune' (the trainer: WORKDIR/onednn_layouts.txt)."""
    from fastscale_jax.models import build_model
    from fastscale_jax.ops.conv import configure_cpu
    from fastscale_jax.train import step as step_lib

    configure_cpu(config.model.get("onednn_layout", "nhwc"), layout_record)
    kw = dict(dtype=config.model.dtype, conv_impl=config.model.conv_impl)
    model = build_model(spec, **kw)
    train_model = build_model(
        spec, bn_axis_name=step_lib.AXIS if config.train.sync_bn else None, **kw)
    schedule = optim.make_schedule(config.optim, lr=sizes.lr, total_steps=sizes.total_steps,
                                   warmup=sizes.warmup)
    tx = optim.make_optimizer(config.optim, schedule)
    ema = float(config.train.ema_decay) > 0
    return Steps(
        model=model, schedule=schedule, tx=tx, ema=ema,
        train=par.train_step(step_lib.make_train_body(train_model, tx, schedule, config.train,
                                                      spec.num_classes)),
        eval=par.eval_step(step_lib.make_eval_body(model, ema=ema)),
        grads=par.eval_step(step_lib.make_grad_body(train_model, config.train,
                                                    spec.num_classes)))
