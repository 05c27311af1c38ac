"""What the command line (fastscale_jax/cli.py) and the Colabs call: run one experiment config
in one mode.

    from fastscale_jax import main
    main.run(config, workdir="/tmp/run", mode="complexity")

Modes: 'train' (train + evaluate, resuming from workdir), 'eval' (evaluate the latest
checkpoint), 'complexity' (print model / family tables), 'benchmark' (XLA-compiled timing),
'study' (train a grid of scaled models, each in its own process; collect, tabulate, plot),
'select' (scale to a time budget by measuring on this machine: fastscale_jax.timing.select),
'config' (print the resolved config, every key, and the model it describes).

This module is the library's entry, not a command: `python -m fastscale_jax.main` says to run
`fastscale` / `python -m fastscale_jax` instead.
"""

from __future__ import annotations

import os

from fastscale_jax.errors import ConfigError

MODES = ("train", "eval", "complexity", "benchmark", "study", "select", "config")


def run(config, workdir: str | None = None, mode: str = "train"):
    """Run `config` in `mode`; returns what the mode produces (tables, metrics, rows)."""
    if mode not in MODES:
        raise ConfigError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "complexity":
        return run_complexity(config, workdir)
    if mode == "config":
        return print_config(config)
    if workdir is None:
        raise ConfigError(f"--mode {mode} needs --workdir DIR (where results and checkpoints go)")
    workdir = os.path.abspath(workdir)  # once, here: study members run in other directories
    if mode in ("train", "eval"):  # before the workdir is touched: say which extra is missing
        from fastscale_jax._extras import check

        check("tensorflow", "train", f"--mode {mode} (its tf.data input pipeline)")
    from fastscale_jax.workdir import prepare

    created = not os.path.exists(workdir)
    prepare(workdir, create=mode != "eval")  # eval: an existing run's folder, never created
    try:
        return _run_in_workdir(config, workdir, mode)
    except BaseException:
        if created:
            _remove_if_no_files(workdir)
        raise


def _run_in_workdir(config, workdir: str, mode: str):
    if mode == "study":  # this process never starts JAX: each run trains in its own process
        from fastscale_jax.study import run_study

        return run_study(config, workdir)
    if mode == "benchmark":
        from fastscale_jax.timing.benchmark import run_benchmark

        return run_benchmark(config, workdir)
    if mode == "select":
        from fastscale_jax.timing.select import run_select

        return run_select(config, workdir)
    from fastscale_jax.train import evaluate, train_and_evaluate

    spec = None
    if config.scaling.get("time"):  # the model its workdir recorded (or resolved here, now)
        from fastscale_jax.timing.select import recorded_spec

        spec = recorded_spec(config, workdir, resolve=mode == "train")
    if mode == "eval":
        return evaluate(config, workdir, spec=spec)
    return train_and_evaluate(config, workdir, spec=spec)


def _remove_if_no_files(workdir: str) -> None:
    """Delete a workdir this run created if it failed before writing any file into it (a run
    that fails at start-up leaves nothing behind; anything with a file in it is kept)."""
    import shutil

    if not any(set(files) - {".lock"} for _, _, files in os.walk(workdir)):  # .lock: workdir.py
        shutil.rmtree(workdir, ignore_errors=True)


def run_complexity(config, workdir: str | None = None) -> str:
    """Print (and, with a workdir, save) the complexity table of the model or family."""
    from fastscale_jax import sweep
    from fastscale_jax import report

    family = sweep.resolve_family(config)
    if len(family) == 1:
        text = report.model_table(family[0][1])
        warning = report.small_maps_warning(family[0][1])
        text += f"\n{warning}" if warning else ""
    else:
        text = report.family_table(family)
    print(text)
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "complexity.txt"), "w") as f:
            f.write(text + "\n")
    return text


def print_config(config) -> str:
    """The resolved config (every key, unset ones as None) and the model it describes."""
    from fastscale_jax import sweep

    text = str(config).rstrip()
    try:
        family = sweep.resolve_family(config)
        models = ", ".join(spec.name for _, spec in family[:8])
        more = f" (+{len(family) - 8} more)" if len(family) > 8 else ""
        text += f"\n# model{'s' if len(family) > 1 else ''}: {models}{more}"
    except ConfigError as e:
        text += f"\n# model: not resolvable: {e}"
    print(text)
    return text


if __name__ == "__main__":
    import sys

    print("fastscale_jax.main is the library's entry (main.run); the command is `fastscale` "
          "(or `python -m fastscale_jax`), e.g.\n  fastscale --config regnetz_dWr:demo "
          "--workdir runs/demo", file=sys.stderr)
    sys.exit(2)

