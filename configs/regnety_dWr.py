"""RegNetY-800MF scaled with fast compound scaling (dWr, alpha = 0.8) to a flops target.

    python launch.py --config configs/regnety_dWr.py:4GF --mode complexity
    python launch.py --config configs/regnety_dWr.py:4 --mode complexity      # factor 4

Arg: a target ('1GF' ... '32GF', '800MF') or a plain factor (default 4GF). pycls's scaler
gives RegNetY-800MF x4 dWr = depths [1, 3, 9, 2], widths [128, 224, 576, 1344], group width 32,
240 px: 3.18 GF, 19.9M params, 11.2M acts. Alternatives: --config.scaling.kind=dwr, or
--config.scaling.alpha=0.5 (alpha replaces the kind).
"""

from fastscale_jax.config import scaled_config


def get_config(arg=None):
    return scaled_config("RegNetY-800MF", arg)
