"""EfficientNet-B0..B5 of the pycls zoo (Tan & Le 2019, as trained by pycls).

    python launch.py --config configs/effnet.py:B0 --mode complexity

Arg: 'B0' ... 'B5' or 'all'. Expect EfficientNet-B0: 385,825,092 flops (multiply-adds),
5,288,548 params, 6,748,036 acts at 224 px, as pycls reports.
"""

from fastscale_jax.config import zoo_config


def get_config(arg=None):
    return zoo_config("EfficientNet", arg, "B0")
