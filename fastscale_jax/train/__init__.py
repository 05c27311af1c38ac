"""The training system: data-parallel train/eval steps (pmap or jit + shard_map), optax
optimizers and schedules, losses, mixup/cutmix, EMA, orbax checkpoints with exact resume.

    from fastscale_jax.train import train_and_evaluate, evaluate
    train_and_evaluate(config, workdir)      # what `launch.py --mode train` runs
    evaluate(config, workdir)                # `--mode eval`: the latest checkpoint

Modules: optim (optimizers, schedules, LR rule), losses, mixing (mixup / cutmix), state
(TrainState), step (per-device step bodies, pmap / shard_map), checkpoint (orbax),
loop (the loops), writers (metrics.jsonl, TensorBoard, curves.png), distributed (multi-host).
"""

from fastscale_jax.train.loop import NonFiniteLossError, evaluate, train_and_evaluate

__all__ = ["NonFiniteLossError", "evaluate", "train_and_evaluate"]
