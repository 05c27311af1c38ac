"""Training recipes shared by configs/*.py: functions that set config.train / optim / data
(config code: it lives beside fastscale_jax/config.py, not in the training system).

Where the numbers come from is said next to each; "ours" marks choices made here.
"""

from __future__ import annotations

from fastscale_jax.errors import ConfigError


def rsb(c, procedure: str = "A2"):
    """ResNet strikes back (Wightman, Touvron, Jegou 2021, Table 1) procedures A2 / A3.

    Both: LAMB, batch 2048, warmup 5 epochs then cosine, BCE loss on mixup 0.1 / cutmix 1.0
    targets (switch prob 0.5), RandAugment with magnitude std 0.5, weight decay 0.02 on weights
    only (no decay or trust ratio on biases / BN), no label smoothing, no EMA.
    A2: 300 epochs, lr 5e-3, RandAugment (2 layers) magnitude 7, repeated augmentation 3,
        stochastic depth 0.05, train resolution 224.
    A3: 100 epochs, lr 8e-3, RandAugment magnitude 6, no repeated augmentation, no stochastic
        depth, train resolution 160 (test 224).
    """
    procedure = procedure.upper()
    if procedure not in ("A2", "A3"):
        raise ConfigError(f"unknown RSB procedure {procedure!r}; valid: A2, A3")
    a2 = procedure == "A2"
    c.train.global_batch_size = 2048
    c.train.epochs = 300.0 if a2 else 100.0
    c.train.loss = "bce"
    c.train.label_smoothing = 0.0
    c.train.mixup_alpha = 0.1
    c.train.cutmix_alpha = 1.0
    c.train.mix_switch_prob = 0.5
    c.train.ema_decay = 0.0
    c.optim.name = "lamb"
    c.optim.base_lr = 5e-3 if a2 else 8e-3
    c.optim.base_batch_size = 2048
    c.optim.weight_decay = 0.02
    c.optim.wd_mask = "kernels"
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 5.0
    c.optim.warmup_init_factor = 1e-4 / (5e-3 if a2 else 8e-3)  # timm warmup_lr 1e-4 (ours)
    c.optim.min_lr_factor = 0.0
    c.optim.eps = 1e-6
    c.data.name = "imagenet2012"
    c.data.randaugment.num_layers = 2
    c.data.randaugment.magnitude = 7.0 if a2 else 6.0
    c.data.randaugment.magnitude_std = 0.5
    c.data.repeated_aug = 3 if a2 else 1
    c.model.drop_path_rate = 0.05 if a2 else None
    if not a2:
        c.model.resolution = 160
    return c


def pycls_data(c, *, per_pass: bool = True):
    """pycls's input order and CIFAR padding (benchmarks/RESULTS.md §9 measures both).

    data.shuffle_mode='per_pass' (per_pass=True): a fresh permutation of the training set every
    epoch, each example exactly once (pycls's RandomSampler / DistributedSampler), instead of
    our default shuffle buffer over the repeated stream. Memory: the buffer holds this
    process's whole shard (image folders: file names; TFDS: encoded images, ImageNet train
    ~140 GB / process count), so it is for small sets (CIFAR, the demo, image folders).
    data.pad_fill='mean': small images (CIFAR) are padded with the mean colour, i.e. zeros
    after normalising, as pycls pads its normalised images; ours pads black by default.

    Our defaults stay 'stream' and 'black': the demo's results stay identical, and a bounded
    shuffle buffer is the standard tf.data way at ImageNet scale.
    """
    if per_pass:
        c.data.shuffle_mode = "per_pass"
    c.data.pad_fill = "mean"
    return c


def pycls_sgd(c):
    """pycls's dds baselines (configs/dds_baselines/*: RegNet / EfficientNet, 100 epochs).

    SGD momentum 0.9 with Nesterov, BASE_LR 0.8 at batch 1024 (scaled linearly with the
    batch here), cosine, 5 warmup epochs from 0.1 x lr, weight decay 5e-5 on every parameter
    (pycls decays biases and BN too), no label smoothing, mixup or EMA; Inception crop + flip;
    pycls's CIFAR padding (pycls_data); its per-epoch permutation only where it is cheap (TFDS
    ImageNet would buffer ~140 GB of encoded images: --config.data.shuffle_mode=per_pass
    turns it on for image folders and small sets).
    """
    c.train.global_batch_size = 1024
    c.train.epochs = 100.0
    c.train.loss = "ce"
    c.train.label_smoothing = 0.0
    c.train.mixup_alpha = 0.0
    c.train.cutmix_alpha = 0.0
    c.train.ema_decay = 0.0
    c.optim.name = "sgd"
    c.optim.base_lr = 0.8
    c.optim.base_batch_size = 1024
    c.optim.momentum = 0.9
    c.optim.nesterov = True
    c.optim.weight_decay = 5e-5
    c.optim.wd_mask = "all"
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 5.0
    c.optim.warmup_init_factor = 0.1
    c.optim.warmup_style = "pycls"   # cosine over all epochs, times the warmup factor
    c.optim.min_lr_factor = 0.0
    c.data.name = "imagenet2012"
    pycls_data(c, per_pass=False)
    return c
