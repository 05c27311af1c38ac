"""The training system: data-parallel train/eval steps (pmap or jit + shard_map), optax
optimizers and schedules, losses, mixup/cutmix, EMA, orbax checkpoints with exact resume.

    from fastscale_jax.train import train_and_evaluate, evaluate
    train_and_evaluate(config, workdir)      # what `launch.py --mode train` runs
    evaluate(config, workdir)                # `--mode eval`: the latest checkpoint

Modules: setup (validate a config once, derive the run's sizes, build its compiled steps: also
what timing measures), optim (optimizers, schedules, LR rule), losses, mixing (mixup /
cutmix), state (TrainState), step (per-device step bodies, pmap / shard_map), checkpoint
(orbax), guard (loss checks; checkpoints never hold diverged weights), progress (tqdm bars,
log windows, throughput), preemption (SIGTERM), loop (train_and_evaluate / evaluate), writers
(metrics.jsonl, TensorBoard, curves.png), distributed (multi-host).

Importing this package does not import the loop (which needs ml_collections and, for data,
tensorflow): the step, optimizer and state modules are what timing uses on the GPU image.
"""

__all__ = ["NonFiniteLossError", "evaluate", "train_and_evaluate"]


def __getattr__(name):
    if name in __all__:
        from fastscale_jax.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'fastscale_jax.train' has no attribute {name!r}")
