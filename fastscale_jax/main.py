"""What `launch.py` and the Colabs call: run one experiment config in one mode.

    from fastscale_jax import main
    main.run(config, workdir="/tmp/run", mode="complexity")

Modes: 'train' (train + evaluate, resuming from workdir), 'eval' (evaluate the latest
checkpoint), 'complexity' (print model / family tables), 'benchmark' (XLA-compiled timing),
'study' (train a grid of scaled models, each in its own process; collect, tabulate, plot).
"""

from __future__ import annotations

import os

MODES = ("train", "eval", "complexity", "benchmark", "study")
# host_malloc='auto' tunes the allocator when a step's activations (complexity 'acts' x batch x
# bytes per value) reach this: below it, steps are cheap and the one-arena setting's lock
# contention (XLA compiles, tf.data threads) costs more than the page faults it saves.
HOST_MALLOC_AUTO_MIN_MIB = 128


def run(config, workdir: str | None = None, mode: str = "train"):
    """Run `config` in `mode`; returns what the mode produces (tables, metrics, rows)."""
    if mode not in MODES:
        raise ValueError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "complexity":
        return run_complexity(config, workdir)
    if workdir is None:
        raise ValueError(f"--mode {mode} needs --workdir DIR (where results and checkpoints go)")
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
    from fastscale_jax.train import evaluate, train_and_evaluate

    if mode == "eval":
        return evaluate(config, workdir)
    return train_and_evaluate(config, workdir)


def _remove_if_no_files(workdir: str) -> None:
    """Delete a workdir this run created if it failed before writing any file into it (a run
    that fails at start-up leaves nothing behind; anything with a file in it is kept)."""
    import shutil

    if not any(set(files) - {".lock"} for _, _, files in os.walk(workdir)):  # .lock: workdir.py
        shutil.rmtree(workdir, ignore_errors=True)


def tune_host_malloc(config, mode: str) -> str:
    """Apply `fastscale_jax.cpu.hostmem.tune_for_cpu()` for this run per config.host_malloc
    ('auto' | 'on' | 'off'); must run before JAX starts. Returns a one-line description.

    'auto' applies it for train/eval/benchmark runs whose per-step activations reach
    HOST_MALLOC_AUTO_MIN_MIB (the demo config: ~63 MiB, off; RegNetY-800MF at 224 px, batch 8:
    ~160 MiB, on). hostmem itself skips it when an accelerator backend is installed.
    """
    from fastscale_jax.cpu import hostmem

    setting = str(config.get("host_malloc", "auto")).strip().lower()
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"host_malloc must be 'auto', 'on' or 'off', got {setting!r}")
    if setting == "off" or mode in ("complexity", "study"):  # study: each run tunes its own
        return "host malloc tuning: off"
    if setting == "auto":
        mib = step_activation_mib(config, mode)
        if mib < HOST_MALLOC_AUTO_MIN_MIB:
            return (f"host malloc tuning: off (host_malloc=auto: ~{mib:.0f} MiB of activations "
                    f"per step < {HOST_MALLOC_AUTO_MIN_MIB} MiB)")
    return hostmem.tune_for_cpu(force=setting == "on")


def step_activation_mib(config, mode: str) -> float:
    """Activations of one step in MiB: complexity 'acts' per image x batch x bytes per value,
    for the largest model of the run (timing.* settings in benchmark mode)."""
    from fastscale_jax import config as config_lib
    from fastscale_jax.memory import activation_bytes

    dtype = config.model.dtype
    if mode == "benchmark":
        batch, res = config.timing.batch_size, config.timing.get("resolution")
        dtype = config.timing.get("dtype") or dtype
        specs = [spec for _, spec in config_lib.resolve_family(config)]
    else:
        batch = config.train.global_batch_size
        if mode == "eval":
            batch = config.train.get("eval_batch_size") or batch
        res, specs = None, [config_lib.resolve_spec(config)]
    return max(activation_bytes(spec, batch, dtype, res) for spec in specs) / 2**20


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
