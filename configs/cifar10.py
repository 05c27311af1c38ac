"""A zoo model (default RegNetX-200MF) on CIFAR-10 with a CIFAR stem at 32 px.

    FASTSCALE_CIFAR10=/path/to/cifar10 python launch.py --config configs/cifar10.py --workdir runs/cifar10
    python launch.py --config configs/cifar10.py:RegNetY-800MF --workdir runs/cifar10_ry800 \
        --config.data.folder=/path/to/cifar10      # ROOT/train/<class>/*.jpg, ROOT/test/...
    python launch.py --config configs/cifar10.py --workdir runs/cifar10_tfds   # TFDS 'cifar10'

Expect: not measured here end to end (a 2-core CPU would need hours); pycls-style small-image
recipes reach ~93-95% for these model sizes in 100 epochs on a GPU -- a rough expectation,
not a published number for this exact setup.

Data: an image folder (ROOT/train/<class>/*.jpg, ROOT/test/<class>/*.jpg) named by
--config.data.folder or the environment variable FASTSCALE_CIFAR10; with neither, TFDS's
prepared 'cifar10' (`tfds build cifar10`, data.data_dir or TFDS's default directory).
Recipe (ours, in the style of pycls's CIFAR configs): SGD Nesterov lr 0.1 at batch 128
(scaled linearly), weight decay 5e-4 on weights, cosine, 100 epochs, 1 warmup epoch, pad-4
random crop + flip (data.small_images), label smoothing 0.1.
"""

import os

from fastscale_jax.config import base_config

ENV_FOLDER = "FASTSCALE_CIFAR10"  # an image-folder copy of CIFAR-10 (else TFDS 'cifar10')


def get_config(arg=None):
    c = base_config()
    c.model.name = (arg or "RegNetX-200MF").strip()
    c.model.resolution = 32
    c.model.test_resolution = 32
    c.model.stem_type = "res_stem_cifar"
    c.model.num_classes = 10
    c.data.folder = os.environ.get(ENV_FOLDER, "")
    c.data.name = "cifar10"
    c.train.global_batch_size = 128
    c.train.epochs = 100.0
    c.train.label_smoothing = 0.1
    c.train.eval_every_epochs = 5.0
    c.optim.name = "sgd"
    c.optim.base_lr = 0.1
    c.optim.base_batch_size = 128
    c.optim.weight_decay = 5e-4
    c.optim.wd_mask = "kernels"
    c.optim.warmup_epochs = 1.0
    c.checkpoint.every_steps = 1000
    return c
