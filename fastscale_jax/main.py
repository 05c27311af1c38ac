"""What `launch.py` and the Colabs call: run one experiment config in one mode.

    from fastscale_jax import main
    main.run(config, workdir="/tmp/run", mode="complexity")

Modes: 'train' (train + evaluate, resuming from workdir), 'eval' (evaluate the latest
checkpoint), 'complexity' (print model / family tables), 'benchmark' (XLA-compiled timing).
"""

from __future__ import annotations

import os

MODES = ("train", "eval", "complexity", "benchmark")


def run(config, workdir: str | None = None, mode: str = "train"):
    """Run `config` in `mode`; returns what the mode produces (tables, metrics, rows)."""
    if mode not in MODES:
        raise ValueError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "complexity":
        return run_complexity(config, workdir)
    if workdir is None:
        raise ValueError(f"--mode {mode} needs --workdir DIR (where results and checkpoints go)")
    os.makedirs(workdir, exist_ok=True)
    if mode == "benchmark":
        from fastscale_jax.timing.benchmark import run_benchmark

        return run_benchmark(config, workdir)
    from fastscale_jax.train import evaluate, train_and_evaluate

    if mode == "eval":
        return evaluate(config, workdir)
    return train_and_evaluate(config, workdir)


def run_complexity(config, workdir: str | None = None) -> str:
    """Print (and, with a workdir, save) the complexity table of the model or family."""
    from fastscale_jax import config as config_lib
    from fastscale_jax import report

    family = config_lib.resolve_family(config)
    if len(family) == 1:
        text = report.model_table(family[0][1])
    else:
        text = report.family_table(family)
    print(text)
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "complexity.txt"), "w") as f:
            f.write(text + "\n")
    return text
