"""The one place that imports tensorflow (and tensorflow_datasets) for the data pipeline.

Importing it hides every GPU from TensorFlow: the input pipeline runs on the host CPU only, and a
TensorFlow that sees the GPUs would otherwise reserve their memory before JAX can use it.
"""

from __future__ import annotations

import functools

from fastscale_jax._extras import require

FEATURE = "the input pipeline (fastscale_jax.data)"


@functools.lru_cache(maxsize=None)
def tf():
    tf_module = require("tensorflow", "train", FEATURE)

    try:
        tf_module.config.set_visible_devices([], "GPU")
        tf_module.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialised, or no such device type
        pass
    return tf_module


@functools.lru_cache(maxsize=None)
def tfds():
    tf()  # hide the accelerators first
    return require("tensorflow_datasets", "train", FEATURE)


def no_autograph(fn):
    """`fn` for Dataset.map without AutoGraph conversion.

    The pipeline's functions branch only on Python values (tensor branches use tf.cond /
    tf.switch_case explicitly), and converting them made tracing RandAugment ~5x slower.
    """
    return tf().autograph.experimental.do_not_convert(fn)
