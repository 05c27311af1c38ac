"""Scaling studies: the paper's experiment (Dollar, Singh, Girshick 2021) end to end.

    python launch.py --config configs/study.py:demo --workdir runs/study_demo --mode study
    FASTSCALE_CIFAR10=/path/to/cifar10 python launch.py --config configs/study.py:cifar10 \
        --workdir runs/study_cifar10 --mode study                    # one GPU
    python launch.py --config configs/study.py:imagenet --workdir runs/study_in1k --mode study \
        --config.data.data_dir=$TFDS_DATA_DIR                        # SLURM via submitit

Each member (strategy x factor x seed) is the ordinary training run of this config with
model / scaling / seed set, in DIR/<strategy>_x<factor>_s<seed>/ (its own process). The
study writes DIR/study.csv, study.json, study_table.txt (mean ± std over seeds) and
error_vs_flops.png, error_vs_acts.png, error_vs_epoch_time.png, epoch_time_vs_flops.png.
Rerunning the command skips finished runs and resumes unfinished ones;
--config.study.collect_only=True only collects and plots (missing runs marked).

Expect (:demo): 4 runs (dwr, dWr x2, x4 x 1 seed) of RegNetZ-500MF shrunk x1/16 by 'dw'
(CIFAR stem, 32 px, 5.4 MF), each strategy matched to one flops target per factor (~12 and
~22 MF), on the embedded 10k-image CIFAR-10 subset, 100 steps of batch 64 (2/3 of an epoch)
each, then one interleaved timing run of every member's train step for the epoch-time column.
Minutes of a 2-core CPU; what it measured, with the machine and load: benchmarks/RESULTS.md
section 6. One seed and under an epoch on a CPU shows the machinery, not evidence about the
paper's claim.

Expect (:cifar10): 36 runs (dwr, dWr, w, d x2, x4, x8 x 3 seeds) of the same 5.4 MF base on
all of CIFAR-10 (50k/10k at 32-44 px; 7-32 MF per image), 2 epochs each. ESTIMATE, not
measured (no GPU here): about 10-12 minutes on one H100. Derivation: per run ~15 s of process
start-up, XLA compile and evaluation (assumed), plus 2 epochs x 50k images at ~25k images/s
(assumed). Flops do not bound that rate: a run needs <= 3 (forward + backward) x 100k images x
32e6 ~ 1e13 multiply-adds, a second at 1% of an H100's ~1e15 bf16 flop/s; tf.data input and
per-step dispatch do. For scale, Keller Jordan's airbench reports 10 CIFAR-10 epochs in ~3.3 s
on one A100 (~150k images/s, data already on the GPU). Total: 36 x (15 + 4) s ~ 11 min. Two
epochs rank models by early progress; for a real comparison raise --config.train.epochs
(30 epochs: ~1 h by the same estimate). Data: --config.data.folder=ROOT or $FASTSCALE_CIFAR10
(ROOT/train/<class>/*.jpg, ROOT/test/...), else TFDS 'cifar10'.

Expect (:imagenet): the paper's setting, not run here: RegNetY-800MF scaled x2, x4, x8, x16
by dwr, dWr, w and d (16 runs, 1 seed), 100 epochs of ImageNet at 224 px with pycls's
recipe (recipes.pycls_sgd), one 8-GPU SLURM job per run through submitit. The paper's
claim to check: at equal flops dWr-scaled models are about as accurate as dwr-scaled ones and
train much faster (their epoch times grow with activations, which dWr keeps low).

Arg: 'demo' (default), 'cifar10' or 'imagenet'. The grid is the sweep config.family (the same
grammar --mode benchmark uses; fastscale_jax.sweep) times config.study.seeds:
  family.base     zoo name of the base model (model.* fields apply to it: resolution, stem)
  family.base_kind/base_factor   optional pre-scaling of the base (demo/cifar10: 'dw' x1/16 at
                  32 px, since scaling a 32 px model *down* with r would go below 32 px)
  family.kinds, family.alphas   strategies: scaling kinds ('dwr', 'dWr', 'w', 'd',
                  'd1_w8_g8_r1') and/or alphas in [0, 1]
  family.factors | family.flops   flops factors of the base (> 0), or flops targets ('4GF');
                  family.match='flops' (default) scales every strategy to the same flops
                  (within family.tolerance, 5%), 'factor' applies the scaler to the factor
study:
  seeds           seeds per model (>= 1; seed s sets config.seed and data.seed)
  timed           after training, time every member's train step in one interleaved run
                  (config.timing's warmup / iters / windows; study_timing.json): the table's,
                  plots' and fit's epoch times (the runs' own throughput stays a column)
  metric          'top1' or 'ema_top1' (what the table and plots call error)
  collect_only    only collect / tabulate / plot what is there
  executor        name 'local' (one process per run; parallel over GPUs / TPU chips:
                  platform, devices, devices_per_run, max_parallel) or 'submitit'
                  (executor.submitit: cluster None = SLURM when available, 'local', 'debug';
                  and AutoExecutor parameters: timeout_min, gpus_per_node, nodes, ...)
"""

import ml_collections
from ml_collections.config_dict import placeholder

from fastscale_jax.configs import cifar10
from fastscale_jax.config import base_config
from fastscale_jax.errors import ConfigError
from fastscale_jax import recipes


def get_config(arg=None):
    variant = (arg or "demo").strip().lower()
    variants = {"demo": demo_config, "cifar10": cifar10_config, "imagenet": imagenet_config}
    if variant not in variants:
        raise ConfigError(f"configs/study.py: unknown variant {arg!r}; valid: {', '.join(variants)}")
    return variants[variant]()


def study_section(c, base: str, kinds, factors, seeds: int) -> ml_collections.ConfigDict:
    """config.study (seeds, metric, executor), with the grid in c.family."""
    c.family.base = base
    c.family.kinds = tuple(kinds)
    c.family.factors = tuple(float(f) for f in factors)
    s = ml_collections.ConfigDict()
    s.seeds = seeds
    s.first_seed = 0
    s.metric = "top1"
    s.collect_only = False
    s.timed = True                   # epoch times from one interleaved timing of every member
    e = s.executor = ml_collections.ConfigDict()
    e.name = "local"                 # 'local' | 'submitit'
    e.platform = "auto"              # local: 'auto' | 'cpu' | 'gpu' | 'tpu'
    e.devices = placeholder(tuple)   # local: device ids to use (default: all found)
    e.devices_per_run = 1            # local: devices (GPUs / TPU chips) per run
    e.max_parallel = 0               # local: runs at once (0: one per device group; CPU: 1)
    sub = e.submitit = ml_collections.ConfigDict()
    sub.cluster = placeholder(str)   # None: SLURM if available, else local; 'local' | 'debug'
    sub.timeout_min = 60
    sub.nodes = 1
    sub.tasks_per_node = 1
    sub.gpus_per_node = placeholder(int)
    sub.cpus_per_task = placeholder(int)
    sub.mem_gb = placeholder(int)
    sub.slurm_partition = placeholder(str)
    sub.slurm_account = placeholder(str)
    return s


def _cifar_base(c):
    c.model.name = "RegNetZ-500MF"
    c.model.resolution = 32
    c.model.test_resolution = 32
    c.model.stem_type = "res_stem_cifar"
    c.model.num_classes = 10
    c.scaling.kind = None
    c.scaling.factor = None
    c.scaling.flops = None


def demo_config():
    """~6 CPU-minutes on a 2-core VM: 4 runs of 100 steps on the embedded demo data.

    The recipe is pinned here (it is part of the experiment; ours): the one the measured run in
    benchmarks/RESULTS.md section 6 used -- LAMB, peak lr 2.5e-3 at batch 64 (5e-3 at 128, RSB's
    LAMB rule), weight decay 0.02 on weights, 15 warmup steps then cosine, label smoothing 0.1,
    EMA 0.99 evaluated alongside the raw weights.
    """
    c = base_config()
    _cifar_base(c)
    c.data.name = "demo"
    c.data.shuffle_buffer = 10_000
    c.train.global_batch_size = 64
    c.train.eval_batch_size = 500
    c.train.num_train_steps = 100    # 2/3 of an epoch of the 10k demo images per run
    c.train.loss = "ce"
    c.train.label_smoothing = 0.1
    c.train.ema_decay = 0.99
    c.train.eval_every_epochs = 0.0  # evaluate at the end only
    c.train.log_every_steps = 10
    c.train.progress = False         # runs log to DIR/<run>/train.log
    c.optim.name = "lamb"
    c.optim.base_lr = 5e-3
    c.optim.base_batch_size = 128
    c.optim.weight_decay = 0.02
    c.optim.warmup_epochs = 0.1      # 15 steps
    c.checkpoint.every_steps = 100
    c.study = study_section(c, "RegNetZ-500MF", ("dwr", "dWr"), (2, 4), seeds=1)
    c.family.base_kind = "dw"
    c.family.base_factor = 1 / 16
    return c


def cifar10_config():
    """All of CIFAR-10, 36 runs, 2 epochs each (~10-12 min on one H100: an estimate)."""
    c = cifar10.get_config("RegNetZ-500MF")   # its recipe: SGD lr 0.1 @ 128, wd 5e-4, ...
    _cifar_base(c)
    c.data.cache = True
    c.model.dtype = "bfloat16"
    c.train.global_batch_size = 256
    c.train.epochs = 2.0
    c.train.eval_every_epochs = 0.0  # evaluate at the end only
    c.train.log_every_steps = 20
    c.train.progress = False
    c.optim.warmup_epochs = 0.2
    c.study = study_section(c, "RegNetZ-500MF", ("dwr", "dWr", "w", "d"), (2, 4, 8), seeds=3)
    c.family.base_kind = "dw"
    c.family.base_factor = 1 / 16
    return c


def imagenet_config():
    """The paper's setting: RegNetY-800MF x2..x16, 100 epochs, pycls recipe, SLURM."""
    c = base_config()
    c.model.name = "RegNetY-800MF"
    recipes.pycls_sgd(c)             # SGD, lr 0.8 at batch 1024, cosine, 5 warmup epochs
    c.model.dtype = "bfloat16"
    c.train.eval_every_epochs = 10.0
    c.train.progress = False
    c.checkpoint.every_steps = 1000
    c.study = study_section(c, "RegNetY-800MF", ("dwr", "dWr", "w", "d"), (2, 4, 8, 16), seeds=1)
    c.study.executor.name = "submitit"
    sub = c.study.executor.submitit
    sub.timeout_min = 3 * 24 * 60
    sub.gpus_per_node = 8
    sub.cpus_per_task = 80
    sub.mem_gb = 400
    return c
