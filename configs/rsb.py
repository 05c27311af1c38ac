"""ResNet-strikes-back procedures A2 / A3 (Wightman et al. 2021) for any zoo model.

    python launch.py --config configs/rsb.py:A3:RegNetY-800MF --workdir /tmp/rsb_a3
    python launch.py --config configs/rsb.py:A2:resnet50 --workdir /tmp/rsb_a2

Expect: not measured here (no accelerator). For reference, RSB reports ResNet-50 at 79.8%
(A2, 300 epochs) and 78.1% (A3, 100 epochs, trained at 160 px, tested at 224) top-1 on
ImageNet; other models were not trained with these recipes by pycls.

Arg: 'A2:<model>' or 'A3:<model>' (default 'A3:RegNetY-800MF').

Recipe (recipes.rsb, from RSB Table 1): LAMB, batch 2048, lr 5e-3 (A2) / 8e-3 (A3) at
batch 2048 (scaled linearly with the global batch), weight decay 0.02 and trust ratio on
weights only, 5 warmup epochs + cosine, BCE on mixup 0.1 / cutmix 1.0 targets, RandAugment
2 layers magnitude 7 / 6 with std 0.5, repeated augmentation 3 (A2), stochastic depth 0.05
(A2), 300 (A2) / 100 (A3) epochs, A3 trains at 160 px.
"""

from fastscale_jax.config import base_config
from fastscale_jax import recipes


def get_config(arg=None):
    proc, _, model = (arg or "A3:RegNetY-800MF").partition(":")
    c = base_config()
    c.model.name = model.strip() or "RegNetY-800MF"
    recipes.rsb(c, proc.strip())
    c.train.eval_every_epochs = 5.0
    c.checkpoint.every_steps = 2000
    return c
