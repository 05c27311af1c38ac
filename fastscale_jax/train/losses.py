"""Classification losses on (possibly mixed) soft targets.

'ce':  softmax cross-entropy; label smoothing mixes the target with the uniform distribution.
'bce': per-class sigmoid binary cross-entropy, averaged over batch and classes as timm's
       BinaryCrossEntropy does (ResNet strikes back, Wightman et al. 2021); optional target
       threshold (targets > thresh -> 1, else 0) and smoothing (off = s / K, on = 1 - s + s / K).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax

from fastscale_jax.errors import ConfigError

LOSSES = ("ce", "bce")


def validate(name: str) -> None:
    if name not in LOSSES:
        raise ConfigError(f"unknown train.loss={name!r}; valid: {', '.join(LOSSES)}")


def divergence_limit(num_classes: int) -> float:
    """A training loss above this is diverged, though finite: 100 x ln(K), 100 times the
    cross-entropy of a uniform prediction (K = 1000: ~691). The loop stops there (and keeps
    no checkpoint of such a state) as it does at NaN / inf."""
    return 100.0 * max(1.0, math.log(max(2, int(num_classes))))


def smooth(targets, smoothing: float):
    if not smoothing:
        return targets
    k = targets.shape[-1]
    return targets * (1.0 - smoothing) + smoothing / k


def loss_fn(name: str, logits, targets, *, label_smoothing: float = 0.0,
            bce_target_thresh=None):
    """Mean loss of f32 `logits` [B, K] against soft `targets` [B, K] (rows sum to 1).
    `name` must have passed `validate` ('ce', else 'bce')."""
    logits = logits.astype(jnp.float32)
    if name == "ce":
        return jnp.mean(optax.softmax_cross_entropy(logits, smooth(targets, label_smoothing)))
    if bce_target_thresh is not None:
        targets = (targets > bce_target_thresh).astype(jnp.float32)
    targets = smooth(targets, label_smoothing)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))
