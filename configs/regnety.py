"""RegNetY models of the pycls zoo (Radosavovic et al. 2020).

    python launch.py --config configs/regnety.py:800MF --mode complexity
    python launch.py --config configs/regnety.py:all --mode complexity    # the whole family

Arg: a size ('200MF' ... '32GF', '4.0GF' or '4GF') or 'all'. Expect RegNetY-800MF: 797,183,328
flops (multiply-adds), 6,263,168 params, 5,249,888 acts at 224 px, as pycls reports.
"""

from fastscale_jax.config import zoo_config


def get_config(arg=None):
    return zoo_config("RegNetY", arg, "800MF")
