"""RegNetZ models (Dollar et al. 2021): inverted-bottleneck, linear-output RegNets.

    python launch.py --config configs/regnetz.py:500MF --mode complexity

Arg: '500MF', '4GF' or 'all'. See fastscale_jax/zoo.py for where the parameters come from.
"""

from fastscale_jax.config import zoo_config


def get_config(arg=None):
    return zoo_config("RegNetZ", arg, "500MF")
