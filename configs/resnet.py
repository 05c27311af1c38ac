"""ResNet-50/101/152 (1x64d) and ResNeXt-50/101/152 (32x4d) in pycls's AnyNet form.

    python launch.py --config configs/resnet.py:ResNet-50 --mode complexity
    python launch.py --config configs/resnet.py:ResNeXt-101 --mode complexity

Arg: a model name ('ResNet-50' default), or 'all' for all six.
"""

from fastscale_jax.config import base_config, zoo_config
from fastscale_jax.zoo import list_models


def get_config(arg=None):
    if (arg or "").lower() == "all":
        c = base_config()
        c.family.models = tuple(list_models("ResNet") + list_models("ResNeXt"))
        c.model.name = c.family.models[0]
        return c
    name = arg or "ResNet-50"
    return zoo_config(name.split("-")[0] if "-" in name else "ResNet", name, "ResNet-50")
