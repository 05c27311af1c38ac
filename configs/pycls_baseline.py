"""pycls's baseline ImageNet recipe (SGD + Nesterov, cosine, 100 epochs) for any zoo model.

    python launch.py --config configs/pycls_baseline.py:RegNetY-800MF --workdir /tmp/ry800
    python launch.py --config configs/pycls_baseline.py:regnetx_200mf --mode complexity

Expect: the published pycls model-zoo top-1 of the model (e.g. RegNetY-800MF 76.3% per the
pycls MODEL_ZOO, RegNetX-200MF 68.9%) -- published numbers, not measured here (no
accelerator). Needs TFDS imagenet2012 under data.data_dir and a multi-device machine.

Arg: a zoo model name or alias (default RegNetY-800MF); any other model of
`fastscale_jax.list_models()` works, as does scaling it (--config.scaling.kind=dWr
--config.scaling.flops=4GF).

Recipe (recipes.pycls_sgd; pycls configs/dds_baselines): SGD momentum 0.9 Nesterov,
BASE_LR 0.8 at batch 1024 (scaled linearly with train.global_batch_size), 5 warmup epochs from
0.1 x lr, cosine to 0, weight decay 5e-5 on every parameter, 100 epochs, no label smoothing /
mixup / EMA, train at the model's resolution, eval resize 256 / crop 224; pycls's CIFAR
padding (data.pad_fill='mean'). pycls's per-epoch permutation is --config.data.shuffle_mode=
per_pass (recipes.pycls_data): its buffer holds the whole shard, so it is off for TFDS ImageNet
(~140 GB of encoded images) and meant for image folders and small sets.
"""

from fastscale_jax.config import base_config
from fastscale_jax import recipes


def get_config(arg=None):
    c = base_config()
    c.model.name = (arg or "RegNetY-800MF").strip()
    recipes.pycls_sgd(c)
    c.train.eval_every_epochs = 5.0
    c.checkpoint.every_steps = 2000
    return c
