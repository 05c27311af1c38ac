"""Runtime measurement of XLA-compiled models: time a spec, sweep a family, fit a runtime model.

    from fastscale_jax import timing
    res = timing.time_model(spec, batch_size=32, modes=("inference", "train_step"))
    res = timing.time_model(spec, config)      # config.timing settings, the config's recipe
    res["train_step"].images_per_s, res["train_step"].compile_s, res["inference"].xla_flops

    timing.fit_runtime(flops, acts, times)     # time ~ a*flops + b*acts + c, R^2, LOO error
    timing.run_benchmark(config, workdir)      # what `launch.py --mode benchmark` calls

`flops` always means multiply-adds (pycls convention, fastscale_jax.complexity); XLA's
cost_analysis() counts 2 flops per multiply-add and is reported as `xla_flops`.
"""

from fastscale_jax.timing.budget import (Budget, BudgetUnreachableError, TimeResult,
                                         parse_budget, predict_to_time, scale_to_time)
from fastscale_jax.timing.fit import fit_runtime, pearson_r
from fastscale_jax.timing.measure import (MODES, TimingResult, environment, time_interleaved,
                                          time_model)
from fastscale_jax.timing.programs import check_resolution, timing_settings


def run_benchmark(config, workdir):
    """Benchmark the model or family of `config`; see fastscale_jax.timing.benchmark."""
    from fastscale_jax.timing.benchmark import run_benchmark as _run

    return _run(config, workdir)


__all__ = ["Budget", "BudgetUnreachableError", "TimeResult", "parse_budget", "predict_to_time",
           "scale_to_time", "MODES", "TimingResult", "check_resolution", "environment", "fit_runtime",
           "pearson_r", "run_benchmark", "time_interleaved", "time_model", "timing_settings"]
