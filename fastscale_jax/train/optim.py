"""Optimizers and learning-rate schedules (optax), built from `config.optim`.

Learning-rate rule (linear scaling, Goyal et al. 2017): the peak learning rate is

    lr = optim.base_lr * train.global_batch_size / optim.base_batch_size

so a recipe states its learning rate at the batch size it was tuned for (pycls's dds configs:
BASE_LR 0.8 at batch 1024 -> base_lr=0.8, base_batch_size=1024; RSB: LAMB 5e-3 at batch 2048)
and keeps it when the batch changes. pycls itself does not rescale (BASE_LR is the learning rate
at the configured batch); with base_batch_size equal to that batch the two agree.

Schedule, per step (optim.warmup_style):
  'prefix' (default): linear warmup from lr * warmup_init_factor to lr over the warmup steps,
      then cosine (or constant, or linear) decay to lr * min_lr_factor over the remaining steps.
  'pycls': pycls's get_epoch_lr evaluated per step: the decay runs over the whole run from
      step 0, and during warmup it is multiplied by a factor rising linearly from
      warmup_init_factor to 1 (so warmup ends at the decayed value, not at lr). pycls itself
      changes the lr once per epoch; at epoch boundaries the two agree.

Weight decay and (LAMB) trust ratio apply only to weights, i.e. conv and dense kernels (arrays
with ndim > 1), not to biases or BN scales/offsets (RSB / timm's filter_bias_and_bn) unless
optim.wd_mask = 'all' (pycls decays every parameter).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from fastscale_jax.errors import ConfigError

OPTIMIZERS = ("sgd", "lamb", "adamw")
SCHEDULES = ("cosine", "constant", "linear")
WD_MASKS = ("kernels", "all")
WARMUP_STYLES = ("prefix", "pycls")


def _choice(field, value, valid):
    if value not in valid:
        raise ConfigError(f"unknown {field}={value!r}; valid: {', '.join(valid)}")


def validate(optim_cfg) -> None:
    """ValueError (naming the field and the valid choices) before anything compiles."""
    _choice("optim.name", optim_cfg.name, OPTIMIZERS)
    _choice("optim.schedule", optim_cfg.schedule, SCHEDULES)
    _choice("optim.wd_mask", optim_cfg.wd_mask, WD_MASKS)
    _choice("optim.warmup_style", optim_cfg.get("warmup_style", "prefix"), WARMUP_STYLES)
    for field in ("base_lr", "base_batch_size"):
        v = optim_cfg[field]
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"optim.{field}={v} must be a finite number > 0")
    for field in ("warmup_epochs", "warmup_steps"):
        v = optim_cfg.get(field)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"optim.{field}={v} must be >= 0")


def peak_lr(optim_cfg, global_batch_size: int) -> float:
    return float(optim_cfg.base_lr) * global_batch_size / float(optim_cfg.base_batch_size)


def warmup_steps(optim_cfg, steps_per_epoch: int, total_steps: int | None = None) -> int:
    """Warmup length in steps (warmup_steps, else warmup_epochs x steps_per_epoch). A warmup
    longer than the run (total_steps) is clipped to it, with a warning: the whole run then
    warms up and the learning rate never decays."""
    if optim_cfg.get("warmup_steps") is not None:
        n, what = int(optim_cfg.warmup_steps), f"optim.warmup_steps={optim_cfg.warmup_steps}"
    else:
        n = int(round(optim_cfg.warmup_epochs * steps_per_epoch))
        what = f"optim.warmup_epochs={optim_cfg.warmup_epochs} ({n} steps)"
    if total_steps is not None and n > total_steps:
        print(f"warning: {what} is longer than the run ({total_steps} steps); warming up over "
              f"all {total_steps} steps (no decay). Lower the warmup or train longer",
              flush=True)
        n = int(total_steps)
    return n


def make_schedule(optim_cfg, *, lr: float, total_steps: int, warmup: int):
    """Per-step learning rate: warmup, then decay (see the module docstring, warmup_style).
    `optim_cfg` must have passed `validate`."""
    style = optim_cfg.get("warmup_style", "prefix")
    warmup = max(0, min(int(warmup), total_steps))
    if style == "pycls":
        return _pycls_schedule(optim_cfg, lr=lr, total_steps=total_steps, warmup=warmup)
    decay_steps = max(1, total_steps - warmup)
    main = _decay(optim_cfg, lr, decay_steps)
    if warmup == 0:
        return main
    warm = optax.linear_schedule(lr * float(optim_cfg.warmup_init_factor), lr, warmup)
    return optax.join_schedules([warm, main], [warmup])


def _decay(optim_cfg, lr: float, decay_steps: int):
    """The schedule after warmup: cosine / linear to lr * min_lr_factor, or constant."""
    end = lr * float(optim_cfg.min_lr_factor)
    if optim_cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps, alpha=float(optim_cfg.min_lr_factor))
    if optim_cfg.schedule == "linear":
        return optax.linear_schedule(lr, end, decay_steps)
    return optax.constant_schedule(lr)


def _pycls_schedule(optim_cfg, *, lr: float, total_steps: int, warmup: int):
    """pycls: decay(step) over all total_steps, times f + (1 - f) * step / warmup in warmup."""
    main = _decay(optim_cfg, lr, max(1, total_steps))
    if warmup == 0:
        return main
    f = float(optim_cfg.warmup_init_factor)

    def schedule(step):
        a = jnp.minimum(jnp.asarray(step, jnp.float32) / warmup, 1.0)
        return main(step) * (f * (1.0 - a) + a)
    return schedule


def kernel_mask(params):
    """True for weights (conv / dense kernels: ndim > 1), False for biases and BN params."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(optim_cfg, schedule) -> optax.GradientTransformation:
    """The optax transformation (gradient clipping, the optimizer, masked weight decay).
    `optim_cfg` must have passed `validate`."""
    wd = float(optim_cfg.weight_decay)
    mask = kernel_mask if optim_cfg.wd_mask == "kernels" else None
    parts = []
    if optim_cfg.clip_grad_norm and optim_cfg.clip_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(float(optim_cfg.clip_grad_norm)))
    name = optim_cfg.name
    if name == "sgd":
        # pycls: decoupled-from-nothing L2 (added to the gradient before momentum).
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask))
        parts.append(optax.sgd(schedule, momentum=float(optim_cfg.momentum),
                               nesterov=bool(optim_cfg.nesterov)))
    elif name == "adamw":
        parts.append(optax.adamw(schedule, b1=float(optim_cfg.b1), b2=float(optim_cfg.b2),
                                 eps=float(optim_cfg.eps), weight_decay=wd, mask=mask))
    else:  # lamb: Adam moments, decoupled decay and trust ratio on weights only (timm / RSB)
        parts += [optax.scale_by_adam(b1=float(optim_cfg.b1), b2=float(optim_cfg.b2),
                                      eps=float(optim_cfg.eps))]
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask))
        trust = optax.scale_by_trust_ratio()
        parts.append(optax.masked(trust, mask) if mask is not None else trust)
        parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)
