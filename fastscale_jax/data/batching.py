"""Batch sharding checks, free of ml_collections and tensorflow so the timed step (which runs on
the GPU image, where neither is installed) can use them."""

from __future__ import annotations

from fastscale_jax.errors import ConfigError


def check_divisible(name: str, batch: int, shards: int, what: str) -> None:
    """ConfigError unless `batch` (the setting `name`) splits evenly over `shards` (`what`,
    e.g. 'the 8 devices'): every device needs the same per-device batch. The one such check,
    used by training, its input pipeline and timing."""
    if batch % shards:
        lower = max(shards, batch // shards * shards)
        raise ConfigError(f"{name}={batch} is not divisible by {what} ({shards}): every device "
                          f"needs the same per-device batch; use a multiple of {shards}, e.g. "
                          f"{lower} or {lower + shards}")
