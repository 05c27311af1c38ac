"""The input a converted checkpoint's network expects (channel order, mean / std, eval crop)."""

from __future__ import annotations

from fastscale_jax.convert.mapping import SOURCES
from fastscale_jax.data.config import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from fastscale_jax.errors import ConfigError


def preprocessing_for(source: str, spec=None, **overrides) -> dict:
    """The input the `source` weights expect, in the data config's terms.

    Returns {'channel_order': 'BGR' | 'RGB', 'mean': (R, G, B), 'std': (R, G, B)} with mean and
    std in 0-255 units, always listed in R, G, B order (data.mean / data.std), plus
    'crop_ratio' (eval: resize the short side to image_size / crop_ratio, center-crop).

    pycls loads images with OpenCV (BGR), normalises with the ImageNet mean/std and feeds BGR;
    its eval resizes to TEST.IM_SIZE and crops TRAIN.IM_SIZE, so with a spec crop_ratio is
    spec.resolution / spec.test_resolution (0.875 for 224/256). timm feeds RGB with the same
    ImageNet statistics for its RegNets/ResNets/EfficientNets and a model-specific crop_pct
    (0.875 by default; e.g. 0.95 for regnetz_005): pass crop_ratio=... (and mean/std for models
    trained with other statistics) as overrides.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown checkpoint source {source!r}; valid: {SOURCES}")
    crop = 0.875
    if source == "pycls" and spec is not None:
        crop = float(spec.resolution) / float(spec.test_resolution)
    prep = {"channel_order": "BGR" if source == "pycls" else "RGB",
            "mean": IMAGENET_MEAN_RGB, "std": IMAGENET_STD_RGB, "crop_ratio": crop}
    unknown = set(overrides) - set(prep)
    if unknown:
        raise ConfigError(f"unknown preprocessing keys {sorted(unknown)}; valid: {sorted(prep)}")
    prep.update(overrides)
    prep["mean"], prep["std"] = tuple(map(float, prep["mean"])), tuple(map(float, prep["std"]))
    if prep["channel_order"] not in ("RGB", "BGR"):
        raise ConfigError(f"channel_order must be 'RGB' or 'BGR', got {prep['channel_order']!r}")
    return prep
