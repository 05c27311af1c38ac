"""The input pipeline (tf.data / TFDS): image folders, TFDS datasets and an embedded demo set.

    from fastscale_jax.data import config, pipeline
    data_cfg = config.default_data_config()           # pure Python, no tensorflow
    info = pipeline.dataset_info(data_cfg)
    train_it = pipeline.train_iterator(data_cfg, global_batch_size=256, image_size=32)

Importing this package or `config` does not import tensorflow; importing `pipeline`, `sources`,
`transforms` or `randaugment` does (an error naming the `train` extra if it is missing).
Submodules: config (defaults + validation), pipeline (public API), sources (TFDS / folders /
demo), transforms (decode, crops, normalisation), randaugment, make_demo (builds the demo set).
"""

__all__ = ["config", "pipeline"]


def __getattr__(name):
    import importlib

    if name in ("config", "pipeline", "sources", "transforms", "randaugment", "make_demo"):
        return importlib.import_module(f"fastscale_jax.data.{name}")
    raise AttributeError(f"module 'fastscale_jax.data' has no attribute {name!r}")
