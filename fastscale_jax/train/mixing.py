"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on device, per device batch.

As in timm's Mixup in 'batch' mode: one lambda per (device) batch, each image is mixed with the
image at the mirrored position of the batch; with both enabled, CutMix is chosen with
probability `switch_prob`; a batch is mixed at all with probability `prob`. CutMix's lambda is
corrected to the area of the pasted box after clipping. The key should differ per device and
step (the train step folds in the step and lax.axis_index).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _cutmix_mask(key, lam, h, w):
    """Boolean [H, W] box of area ~ (1 - lam) * H * W, centred uniformly; and the exact lam."""
    ky, kx = jax.random.split(key)
    cut = jnp.sqrt(1.0 - lam)
    ch, cw = jnp.floor(h * cut), jnp.floor(w * cut)
    cy = jax.random.randint(ky, (), 0, h).astype(jnp.float32)
    cx = jax.random.randint(kx, (), 0, w).astype(jnp.float32)
    y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
    x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
    ys = jnp.arange(h, dtype=jnp.float32)[:, None]
    xs = jnp.arange(w, dtype=jnp.float32)[None, :]
    box = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    lam_exact = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return box, lam_exact


def mix(key, images, targets, *, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
        prob: float = 1.0, switch_prob: float = 0.5):
    """Mixed (images [B, H, W, C], soft targets [B, K]); identity when both alphas are 0."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, targets
    k_apply, k_switch, k_mix, k_cut, k_box = jax.random.split(key, 5)
    _, h, w, _ = images.shape
    flipped_images, flipped_targets = images[::-1], targets[::-1]
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(k_switch) < switch_prob
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    lam_mix = jax.random.beta(k_mix, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else 1.0
    lam_cut = jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else 1.0
    box, lam_cut = _cutmix_mask(k_box, jnp.asarray(lam_cut, jnp.float32), h, w)
    apply = jax.random.uniform(k_apply) < prob
    lam = jnp.where(apply, jnp.where(use_cutmix, lam_cut, lam_mix), 1.0).astype(jnp.float32)
    mixed = images * lam.astype(images.dtype) + flipped_images * (1 - lam).astype(images.dtype)
    pasted = jnp.where(box[None, :, :, None], flipped_images, images)
    out = jnp.where(apply & use_cutmix, pasted, jnp.where(apply, mixed, images))
    return out, targets * lam + flipped_targets * (1.0 - lam)
