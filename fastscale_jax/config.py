"""Experiment configs: the shared defaults every `configs/*.py` starts from, and the one
place where a config turns into a model spec (`resolve_spec`; a sweep's specs:
fastscale_jax.sweep).

Config layout (ml_collections.ConfigDict):
  model.name            zoo name or alias ('RegNetZ-500MF', 'regnety_800mf', ...)
  model.*               optional spec overrides (resolution, num_classes, stem_type, ...);
                        dtype ('float32' | 'bfloat16'), conv_impl ('auto' | 'lax' | ...) and
                        onednn_layout ('nhwc' | 'blocked' | 'tune'; CPU convolutions)
  scaling.kind/.alpha   how to scale ('dWr', 'dwr', 'd1_w8_g8_r1', ... or alpha in [0, 1];
                        alpha, when set, replaces kind)
  scaling.factor/.flops how much (a flops factor, or a target like '4GF'); unset = no scaling
  scaling.time          or a time budget ('40ms' per step, '1000img/s'), resolved on this
                        machine by --mode select / train (fastscale_jax.timing.select)
  family.*              a set of models: the one sweep grammar of benchmarks, complexity
                        tables and studies (fastscale_jax.sweep)
  data, train, optim    input pipeline and training (fastscale_jax.data / fastscale_jax.train)
  timing                runtime measurement (fastscale_jax.timing)
  host_malloc           'auto' | 'on' | 'off': launch.py's allocator setting for CPU runs
                        (fastscale_jax.main.tune_host_malloc)

Derived values (the scaled spec, steps per epoch, scaled LR) are computed here or in the
training code, never copied by hand into configs.
"""

from __future__ import annotations

import math
import os

import ml_collections
from ml_collections.config_dict import placeholder

from fastscale_jax.envvars import CONV_IMPL_ENV, ONEDNN_LAYOUT_ENV
from fastscale_jax.errors import ConfigError
from fastscale_jax.data.config import default_data_config
from fastscale_jax.scaling import parse_flops, scale, scale_to
from fastscale_jax.zoo import get_model_spec


# Spec fields a config may override (model.<field>), with their types.
SPEC_OVERRIDES = {"resolution": int, "test_resolution": int, "num_classes": int,
                  "stem_type": str, "stem_w": int, "head_w": int, "activation": str,
                  "drop_path_rate": float, "zero_init_last_bn": bool, "dropout": float,
                  "dc_ratio": float, "se_r": float}


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by all experiments; each configs/*.py changes what it needs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.host_malloc = "auto"   # CPU runs: glibc keeps freed memory (fastscale_jax.cpu.hostmem); auto|on|off

    c.model = ml_collections.ConfigDict()
    c.model.name = "RegNetZ-500MF"
    c.model.dtype = "float32"
    c.model.conv_impl = os.environ.get(CONV_IMPL_ENV, "").strip() or "auto"
    # CPU oneDNN convs: 'nhwc' | 'blocked' | 'tune' (fastscale_jax.cpu.onednn; numerics differ
    # in the last bits, so it is a setting of the run, recorded in its config.json)
    c.model.onednn_layout = os.environ.get(ONEDNN_LAYOUT_ENV, "").strip() or "nhwc"
    for field, typ in SPEC_OVERRIDES.items():
        c.model[field] = placeholder(typ)

    c.scaling = ml_collections.ConfigDict()
    c.scaling.kind = placeholder(str)
    c.scaling.alpha = placeholder(float)
    c.scaling.factor = placeholder(float)
    c.scaling.flops = placeholder(str)
    c.scaling.time = placeholder(str)        # a time budget ('40ms', '1000img/s'): measured
    c.scaling.time_mode = "train_step"       # the step a time budget is for (timing modes)
    c.scaling.time_tolerance = 0.05          # a measured time this close to it is a hit

    c.family = family_section()

    c.data = default_data_config()

    _add_training_sections(c)

    c.timing = ml_collections.ConfigDict()
    c.timing.batch_size = 32
    c.timing.resolution = placeholder(int)   # default: each model's train resolution
    c.timing.dtype = placeholder(str)        # default: model.dtype
    c.timing.modes = ("inference", "train_step")   # any of inference, fwd_bwd, train_step
    c.timing.warmup = 2                      # discarded calls before timing
    c.timing.iters = 10                      # calls per timed window
    c.timing.windows = 5                     # timed windows (median / min / spread over them)
    c.timing.dataset_size = 1_281_167        # ImageNet train images, for epoch-time estimates
    c.timing.num_devices = 1                 # local devices the batch is split over
    c.timing.max_spread_pct = 20.0           # benchmark: a cell whose windows spread more ...
    c.timing.remeasure = 2                   # ... is timed again up to this often, then flagged
    # the timed steps are the trainer's (train.setup.build_steps): train / optim / model
    # sections give their recipe, config.parallel how they run data-parallel
    return c


def family_section() -> ml_collections.ConfigDict:
    """config.family: the sweep of benchmarks, complexity tables and studies (fastscale_jax.sweep)."""
    f = ml_collections.ConfigDict()
    f.models = placeholder(tuple)     # explicit zoo names (nothing else applies then)
    f.base = placeholder(str)         # the base model of a scaling sweep (model.* apply to it)
    f.base_kind = placeholder(str)    # optional pre-scaling of the base ...
    f.base_factor = placeholder(float)  # ... by this factor (e.g. 'dw' x1/16)
    f.kinds = placeholder(tuple)      # strategies: scaling kinds (e.g. ('dwr', 'dWr'))
    f.alphas = placeholder(tuple)     # and / or alphas in [0, 1]
    f.factors = placeholder(tuple)    # flops factors of the base ...
    f.flops = placeholder(tuple)      # ... or flops targets ('4GF')
    f.times = placeholder(tuple)      # ... or time budgets ('40ms'): --mode select measures
    f.match = "flops"                 # 'flops': every strategy at the same flops | 'factor'
    f.tolerance = 0.05                # match='flops': members further off are flagged
    return f


def _add_training_sections(c) -> None:
    """config.train / optim / checkpoint / parallel / distributed (see fastscale_jax.train).

    The defaults are a short, safe run on the demo data; configs/*.py set real recipes.
    """
    t = c.train = ml_collections.ConfigDict()
    t.global_batch_size = 128        # summed over all devices of all processes
    t.eval_batch_size = placeholder(int)  # default: global_batch_size
    t.epochs = 1.0
    t.num_train_steps = placeholder(int)  # overrides epochs when set
    t.loss = "ce"                    # 'ce' (softmax) | 'bce' (sigmoid, RSB)
    t.label_smoothing = 0.0
    t.bce_target_thresh = placeholder(float)  # BCE: binarise targets > thresh (timm)
    t.mixup_alpha = 0.0              # 0 = off
    t.cutmix_alpha = 0.0             # 0 = off
    t.mix_prob = 1.0                 # probability a batch is mixed at all
    t.mix_switch_prob = 0.5          # with both on: probability of cutmix instead of mixup
    t.ema_decay = 0.0                # 0 = no EMA; else EMA of params + BN stats, eval'd too
    t.ema_warmup = True              # decay_t = min(decay, (1 + t) / (10 + t))
    t.sync_bn = False                # True: BN statistics over the global batch
    t.log_every_steps = 50
    t.eval_every_epochs = 1.0        # 0 = only at the end
    t.progress = True                # tqdm bar per epoch
    t.tensorboard = True             # TensorBoard event files in workdir/tb
    t.plot = True                    # workdir/curves.png at the end

    o = c.optim = ml_collections.ConfigDict()
    o.name = "sgd"                   # 'sgd' (Nesterov) | 'lamb' | 'adamw'
    o.base_lr = 0.1                  # lr = base_lr * global_batch_size / base_batch_size
    o.base_batch_size = 256
    o.momentum = 0.9                 # sgd
    o.nesterov = True                # sgd
    o.b1 = 0.9                       # lamb / adamw
    o.b2 = 0.999
    o.eps = 1e-6
    o.weight_decay = 5e-5
    o.wd_mask = "kernels"            # 'kernels' (conv/dense weights only) | 'all' (pycls)
    o.schedule = "cosine"            # 'cosine' | 'constant' | 'linear' (to 0), after warmup
    o.warmup_epochs = 0.0
    o.warmup_steps = placeholder(int)  # overrides warmup_epochs when set
    o.warmup_init_factor = 0.0       # warmup starts at lr * this
    o.warmup_style = "prefix"        # 'prefix' (warmup, then decay) | 'pycls' (see train.optim)
    o.min_lr_factor = 0.0            # cosine ends at lr * this
    o.clip_grad_norm = 0.0           # 0 = off

    k = c.checkpoint = ml_collections.ConfigDict()
    k.every_steps = 1000             # also the data-stream segment length (exact resume)
    k.keep = 3                       # keep the last K checkpoints
    k.async_save = True
    k.resume = True                  # resume from the latest checkpoint in workdir

    c.parallel = "pmap"              # 'pmap' | 'shard_map' (jit + shard_map on a 1-D mesh)

    d = c.distributed = ml_collections.ConfigDict()
    d.coordinator_address = placeholder(str)  # 'host:port': multi-process run
    d.num_processes = placeholder(int)
    d.process_id = placeholder(int)
    d.auto = False                   # jax.distributed.initialize() with no arguments (SLURM, TPU pods)
    d.cpu_collectives = "gloo"       # CPU multi-process collectives implementation


def flat_dict(d: dict, prefix: str = "") -> dict:
    """{'a.b': v} of a nested dict (a config's JSON), for comparing two configs key by key."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_dict(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _get(cfg, path, default=None):
    cur = cfg
    for key in path.split("."):
        try:
            cur = cur[key]
        except (KeyError, TypeError, AttributeError):
            return default
    return cur


def spec_overrides(config) -> dict:
    """The model.<field> overrides that are set (not None)."""
    return {f: _get(config, f"model.{f}") for f in SPEC_OVERRIDES
            if _get(config, f"model.{f}") is not None}


def apply_overrides(spec, overrides: dict):
    valid = set(spec.__dataclass_fields__)
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"model.{unknown[0]} does not apply to {spec.name} "
                         f"({spec.family} spec); valid overrides: {sorted(valid & set(SPEC_OVERRIDES))}")
    return spec.replace(**overrides) if overrides else spec


def resolve_spec(config):
    """The model spec an experiment config describes: zoo model, then scaling, then overrides.

    Scaling (scaling.factor or scaling.flops, with scaling.kind or scaling.alpha) is applied to
    the zoo model before model.* overrides, so e.g. model.resolution=64 shrinks the input of the
    scaled model without changing its depths and widths.
    """
    spec = get_model_spec(_get(config, "model.name"))
    kind, alpha = _get(config, "scaling.kind"), _get(config, "scaling.alpha")
    factor, flops = _get(config, "scaling.factor"), _get(config, "scaling.flops")
    time = _get(config, "scaling.time")
    if sum(v is not None for v in (factor, flops, time)) > 1:
        raise ConfigError("set only one of scaling.factor, scaling.flops and scaling.time")
    if time is not None:
        raise ConfigError(f"scaling.time={time!r} is resolved by measuring the step on a machine: "
                          "run --mode select (or train) with a --workdir, which records the "
                          "model in select.json")
    if isinstance(kind, str) and kind.strip().lower() in ("", "none"):
        kind = None
    if alpha is not None:  # alpha, when set, replaces the kind (--config.scaling.alpha=0.5)
        kind = None
    if factor is not None or flops is not None:
        if kind is None and alpha is None:
            raise ConfigError("scaling.factor / scaling.flops need scaling.kind (e.g. 'dWr') or "
                             "scaling.alpha (in [0, 1])")
        if factor is not None:
            spec = scale(spec, factor, kind, alpha=alpha)
        else:
            spec = scale_to(spec, flops, kind, alpha=alpha).spec
    return apply_overrides(spec, spec_overrides(config))


def parse_flops_arg(arg: str, default: str = "4GF", variants: tuple = ()):
    """A config argument: a plain factor '4', or a flops target '800MF' / '4GF' / '1.5TF'
    (validated by scaling.parse_flops) -> (flops_str or None, factor or None). `variants`:
    the config's named arguments ('demo'), suggested when the argument is close to one."""
    a = (arg or default).strip()
    try:
        f = float(a)
    except ValueError:
        try:
            parse_flops(a)
        except ValueError as e:
            import difflib

            close = [v for v in variants if v.startswith(a.lower())] or \
                difflib.get_close_matches(a.lower(), variants, n=1, cutoff=0.5)
            named = (f"; did you mean {close[0]!r}?" if close else
                     f"; or one of {', '.join(map(repr, variants))}" if variants else "")
            raise ConfigError(f"config argument {arg!r} is neither a scaling factor like '4' "
                              f"nor a usable flops target ({e}){named}") from None
        return a.upper(), None
    if not (math.isfinite(f) and f > 0):
        raise ConfigError(f"config argument {arg!r}: the factor must be positive")
    return None, f


def zoo_config(prefix: str, arg: str | None, default: str):
    """Config of one zoo model of a family ('RegNetY' + '800MF' -> RegNetY-800MF), or of the
    whole family when arg is 'all'."""
    from fastscale_jax.zoo import list_models

    c = base_config()
    arg = (arg or default).strip()
    if arg.lower() == "all":
        c.family.models = tuple(list_models(prefix))
        c.model.name = c.family.models[0]
    else:
        # validated (with suggestions) when the run resolves the spec
        c.model.name = arg if arg.lower().startswith(prefix.lower()) else f"{prefix}-{arg}"
    return c


def scaled_config(base_model: str, arg: str | None, default: str = "4GF", kind: str = "dWr",
                  variants: tuple = ()):
    """Config of `base_model` scaled with `kind` to the target in `arg` ('4GF', '800MF', or a
    plain flops factor '4'). Override from the command line with --config.scaling.kind=dwr,
    --config.scaling.alpha=0.5 (alpha replaces kind), --config.scaling.flops=8GF."""
    c = base_config()
    c.model.name = base_model
    flops, factor = parse_flops_arg(arg, default, variants)
    c.scaling.kind = kind
    c.scaling.flops = flops
    c.scaling.factor = factor
    return c
