"""RegNetX models of the pycls zoo (Radosavovic et al. 2020).

    python launch.py --config configs/regnetx.py:200MF --mode complexity

Arg: a size ('200MF' ... '32GF') or 'all'. Expect RegNetX-200MF: 199,040,872 flops
(multiply-adds), 2,684,792 params, 2,164,056 acts at 224 px, as pycls reports.
"""

from fastscale_jax.config import zoo_config


def get_config(arg=None):
    return zoo_config("RegNetX", arg, "200MF")
