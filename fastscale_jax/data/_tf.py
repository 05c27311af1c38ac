"""The one place that imports tensorflow (and tensorflow_datasets) for the data pipeline.

Importing TensorFlow changes nothing else. `host_only()` hides every GPU / TPU from TensorFlow;
the pipeline calls it where it builds a dataset (pipeline.dataset_info, build_train_dataset,
build_eval_dataset): the input pipeline runs on the host CPU only, and a TensorFlow that sees
the GPUs would otherwise reserve their memory before JAX can use it.
"""

from __future__ import annotations

import functools

from fastscale_jax._extras import require

FEATURE = "the input pipeline (fastscale_jax.data)"


@functools.lru_cache(maxsize=None)
def tf():
    return require("tensorflow", "train", FEATURE)


@functools.lru_cache(maxsize=None)
def host_only() -> None:
    """Hide the accelerators from TensorFlow (once per process; before its first op)."""
    try:
        tf().config.set_visible_devices([], "GPU")
        tf().config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialised, or no such device type
        pass


@functools.lru_cache(maxsize=None)
def tfds():
    host_only()  # TFDS may start TensorFlow ops when it opens a builder
    return require("tensorflow_datasets", "train", FEATURE)


def no_autograph(fn):
    """`fn` for Dataset.map without AutoGraph conversion.

    The pipeline's functions branch only on Python values (tensor branches use tf.cond /
    tf.switch_case explicitly), and converting them made tracing RandAugment ~5x slower.
    """
    return tf().autograph.experimental.do_not_convert(fn)
