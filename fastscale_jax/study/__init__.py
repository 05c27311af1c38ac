"""Scaling studies: the paper's experiment end to end.

A study trains a base model scaled by several strategies (kinds such as 'dwr', 'dWr', 'w',
'd', or alphas) by several flops factors, with several seeds, each member as the ordinary
training run in DIR/<strategy>_x<factor>_s<seed>/, then collects DIR/study.csv / study.json,
a table aggregated over seeds and the paper's plots (error vs flops, acts and epoch time;
epoch time vs flops).

    python launch.py --config configs/study.py:demo --workdir runs/study --mode study

    from fastscale_jax.study import run_study
    run_study(config, "runs/study")

Modules: grid (validate and expand config.study), runner (one member in its own process),
executors (local processes, one per device group; submitit), collect (rows, CSV/JSON,
mean ± std table, epoch-time fit), plots (the four PNGs), run (run_study).
"""

__all__ = ["StudyFailedError", "run_study"]


def __getattr__(name):  # lazy: `python -m fastscale_jax.study.runner` must not pre-import runner
    if name in __all__:
        from fastscale_jax.study import run

        return getattr(run, name)
    raise AttributeError(f"module 'fastscale_jax.study' has no attribute {name!r}")
