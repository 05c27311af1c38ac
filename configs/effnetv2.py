"""EfficientNetV2-S / M / L (Tan & Le 2021) as timm defines them, and a CPU demo.

    python launch.py --config configs/effnetv2.py:S --mode complexity
    python launch.py --config configs/effnetv2.py:demo --workdir runs/effnetv2_demo

Arg: 'S' (default), 'M', 'L', 'all' (the three; --mode complexity / benchmark), or 'demo'.
Expect EfficientNetV2-S: 4,707,859,232 flops (multiply-adds), 21,458,488 params (timm's
efficientnetv2_s has the same count), 20,134,560 acts at its 288 px train resolution.

:demo trains EfficientNetV2-S scaled down x1/8 by dWr (the stage depths and widths shrink,
stem and head widths with them), at 64 px, on the embedded 10k-image CIFAR-10 subset: 300
steps of batch 64 with the regnetz_dWr demo's AdamW recipe. What it reached, how long it took
and on which machine: benchmarks/RESULTS.md (section "EfficientNetV2 demo").
"""

from fastscale_jax.config import scaled_config, zoo_config
from fastscale_jax.configs import regnetz_dWr


def get_config(arg=None):
    if (arg or "").strip().lower() == "demo":
        return demo_config()
    return zoo_config("EfficientNetV2", arg, "S")


def demo_config():
    c = regnetz_dWr.demo_config()            # its data, batch, steps and AdamW recipe
    base = scaled_config("EfficientNetV2-S", None, kind="dWr")
    c.model.name, c.scaling = base.model.name, base.scaling
    c.scaling.flops = None
    c.scaling.factor = 0.125
    c.model.stem_type = None                 # EfficientNets have their own stem
    c.model.resolution = 64
    c.model.test_resolution = 64
    return c
