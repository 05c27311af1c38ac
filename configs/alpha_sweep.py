"""The paper's alpha sweep: a base model scaled with alpha in {0, 1/3, 0.5, 2/3, 0.8, 1}
(0: depth and resolution only; 1/3: uniform dwr; 0.8: fast dWr; 1: width only) by flops
factors {1, 2, 4, 8, 16} (Dollar et al. 2021, Sec. 5 / Fig. 5).

    python launch.py --config configs/alpha_sweep.py --mode complexity
    python launch.py --config configs/alpha_sweep.py:RegNetY-800MF --mode complexity
    python launch.py --config configs/alpha_sweep.py --mode benchmark --workdir /tmp/sweep \
        --config.timing.batch_size=4 --config.model.resolution=64   # small CPU sweep

In a sweep, model.* fields describe the base: model.resolution=64 shrinks the base before
scaling, so members still scale their resolution (timing.resolution would instead time every
member at one resolution). Every strategy is scaled to one common flops target per factor
(family.match='flops'; --config.family.match=factor applies pycls's scaler to the raw factor).

Arg: the base model (default RegNetZ-500MF). Expect params to grow ~s^((1 + alpha) / 2) and
acts ~s^(1 - alpha / 2) (fastscale_jax.theoretical_growth: e_d + 2 e_w and e_d + e_w + 2 e_r
with e_d = (1 - alpha) / 2, e_w = alpha / 2, e_r = (1 - alpha) / 4; dWr: 0.9 and 0.6, dwr: 2/3
and 5/6); the complexity mode prints the fitted and theoretical exponents per alpha.
"""

from fastscale_jax.config import base_config
from fastscale_jax.zoo import canonical_name


def get_config(arg=None):
    c = base_config()
    c.family.base = canonical_name(arg or "RegNetZ-500MF")
    c.model.name = c.family.base
    c.family.alphas = (0.0, 1 / 3, 0.5, 2 / 3, 0.8, 1.0)
    c.family.factors = (1.0, 2.0, 4.0, 8.0, 16.0)
    return c
