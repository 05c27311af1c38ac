"""EfficientNet-B0 scaled with fast compound scaling (dWr, alpha = 0.8) to a flops target.

    python launch.py --config configs/effnet_dWr.py:4 --mode complexity

Arg: a target ('1GF' ... '32GF') or a plain factor (default 4GF). pycls's scaler gives
EfficientNet-B0 x4 dWr = depths [1, 2, 2, 3, 3, 5, 1], widths [24, 40, 72, 136, 192, 336, 560],
stem 56, head 2232, 240 px: 1.38 GF. EfficientNet scales its stem and head widths too.
Compare uniform compound scaling with --config.scaling.kind=dwr.
"""

from fastscale_jax.config import scaled_config


def get_config(arg=None):
    return scaled_config("EfficientNet-B0", arg)
