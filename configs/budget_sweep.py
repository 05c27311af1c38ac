"""Scaling strategies compared at equal *runtime* on this machine (issue #24; Dollar et al.
2021: dWr buys more model per millisecond than uniform compound scaling).

    fastscale --config budget_sweep --mode select --workdir runs/budget_sweep
    fastscale --config budget_sweep:demo --mode select --workdir runs/budget_demo   # CPU

Every strategy scales the base to every time budget of family.times (the largest model whose
measured scaling.time_mode step -- the trainer's own train step by default -- fits it at
timing.batch_size), with `fastscale_jax.scale_to_time`. Writes select.csv / select.json (flops,
params, acts reached and the measured time per strategy and budget) and flops_vs_budget.png
(more flops at equal time = more model for the money).

Strategies: dwr (uniform compound), dWr (fast compound, alpha 0.8), w, d, r, alpha 0.5, and a
depth-heavy 'd4_w1_r1' (in the spirit of latency-aware compound scaling, Li et al. 2021).

Arg: '' (RegNetZ-500MF at 224 px, batch 32: for an accelerator) or 'demo' (RegNetZ-500MF
shrunk x1/16 by 'dw' at 32 px with a CIFAR stem, batch 32, host_malloc='on', hits within
±10%: 11-13 min wall, 15-18 CPU-min on a 2-core CPU in three runs). What it measured, with
the machine: benchmarks/RESULTS.md ("Equal-runtime comparison").
Budgets: --config.family.times="('10ms', '20ms', '40ms')".
"""

from fastscale_jax.config import base_config
from fastscale_jax.errors import ConfigError


def get_config(arg=None):
    c = base_config()
    c.model.name = "RegNetZ-500MF"
    c.family.base = "RegNetZ-500MF"
    c.family.kinds = ("dwr", "dWr", "w", "d", "r", "d4_w1_r1")
    c.family.alphas = (0.5,)
    c.family.times = ("100ms", "200ms", "400ms")
    c.scaling.time_mode = "train_step"
    c.timing.batch_size = 32
    c.timing.warmup = 1
    c.timing.iters = 3
    c.timing.windows = 5
    if (arg or "").strip().lower() == "demo":
        c.model.resolution = 32
        c.model.test_resolution = 32
        c.model.stem_type = "res_stem_cifar"
        c.model.num_classes = 10
        c.family.base_kind = "dw"
        c.family.base_factor = 1 / 16
        c.family.times = ("60ms", "120ms", "240ms")
        # A hit is +-10% here, not +-5%: one model's timing windows spread 12-40% on a shared
        # 2-core CPU, so a 5% hit is luck and the search times ~40% more models chasing it
        # (replaying the recorded demo sweeps: 47-53 models at 10% vs 59-73 at 5%). +-10% is
        # what the re-measured choices are held to (benchmarks/budget_check.py); select.csv's
        # ratio column says where each choice landed.
        c.scaling.time_tolerance = 0.10
        # a model whose windows spread over 40% gets 2 more rounds of windows (the same
        # compiled step; timing.remeasure): the usual 12-40% here leaves the median where it
        # is, a burst of load over most windows does not (seen: 240 ms for a 97 ms model)
        c.timing.max_spread_pct = 40.0
        # CPU: glibc keeps freed memory in-process (fastscale_jax/cpu/hostmem.py). Far fewer
        # page faults, so faster and steadier timings; a training run from one of these budgets
        # must set it too to train at the measured speed (host_malloc='auto' leaves it off).
        c.host_malloc = "on"
    elif arg:
        raise ConfigError(f"configs/budget_sweep.py: unknown variant {arg!r}; valid: '' or 'demo'")
    return c
