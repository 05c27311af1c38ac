"""The data configuration: defaults and validation (pure Python, never imports tensorflow).

`default_data_config()` is what an experiment config puts under `config.data`; every field can be
overridden from the command line (`--config.data.name=imagenet2012`). `validate_data_config(cfg)`
raises a ValueError naming the offending field; the pipeline calls it before doing any work.

Fields:
  name            TFDS dataset name (e.g. 'imagenet2012', 'cifar10'), or 'demo' (the small
                  CIFAR-10 subset shipped in fastscale_jax/data/demo/), or 'folder'.
  folder          root of an image folder: ROOT/train/<class>/*.jpg and ROOT/val|test/<class>/*.
                  When set, `name` is ignored.
  data_dir        TFDS data_dir (None: TFDS's default, $TFDS_DATA_DIR or ~/tensorflow_datasets).
  download        let TFDS download and prepare the dataset if missing (default False: offline
                  machines otherwise retry for minutes; prepare with `tfds build` instead).
  train_split / eval_split
                  split names. Image folders: if the requested eval split ('test' or 'val') has no
                  folder but the other one does, the other one is used.
  crop_ratio      eval: resize the short side to image_size / crop_ratio, then center-crop.
  mean, std       per-channel normalisation in 0-255 units, always given in R, G, B order.
  channel_order   'RGB' or 'BGR' for the output images (pycls weights expect 'BGR'); mean/std
                  still describe R, G, B, so BGR output is exactly the RGB output reversed.
  small_images    CIFAR-style augmentation (pad 4 + random crop + flip at native size; eval is
                  the identity). None = auto: True for demo, cifar10, cifar100, TFDS datasets whose
                  native size is <= 64 px and image folders whose images are <= 64 px.
  randaugment     num_layers (0 = off), magnitude (0..10 scale), magnitude_std (per-op Gaussian
                  noise on the magnitude; inf = uniform in [0, magnitude]).
  repeated_aug    each training image appears this many times in a row, each copy with its own
                  augmentation (Hoffer et al. 2019; DeiT's repeated augmentation). 1 = off.
  rrc_scale, rrc_ratio
                  Inception-style random-resized-crop area fraction and aspect-ratio ranges.
  shuffle_buffer  examples in the tf.data shuffle buffer (encoded images, before decoding).
  shuffle_mode    'stream' (default): one shuffle buffer of `shuffle_buffer` examples over the
                  repeated stream (tf.data's usual way at ImageNet scale: memory stays bounded,
                  but an epoch's worth of steps may see an image twice or not at all, and
                  passes mix at their boundary). 'per_pass': a fresh full permutation of this
                  process's shard every pass, so every example appears exactly once per epoch
                  (pycls's RandomSampler / DistributedSampler); holds the whole shard's encoded
                  images (or file paths) in the buffer; `shuffle_buffer` is ignored.
  pad_fill        small_images only: the colour of the pad-4 border before the random crop.
                  'black' (default): the raw image is padded with 0. 'mean': padded with the
                  normalisation mean, i.e. zeros after normalising (pycls pads the normalised
                  CHW image with zeros). recipes.pycls_data sets pycls's choices.
  deterministic   make the example order and augmentations a pure function of the seed
                  (default True: same seed, same run). False lets tf.data hand out elements
                  in the order its threads finish them (benchmarks/RESULTS.md measures the
                  difference).
  seed            default seed of the training stream (train_iterator(seed=...) overrides it).
  cache           cache the encoded images of this process's shard in memory after the first pass.
  num_parallel_calls   tf.data parallelism for decoding/augmentation (-1 = AUTOTUNE).
  prefetch        batches tf.data prepares ahead (-1 = AUTOTUNE, 0 = none).
"""

from __future__ import annotations

import math
import numbers

import ml_collections
from ml_collections import config_dict

from fastscale_jax.errors import ConfigError

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)

# Datasets whose images are CIFAR-sized: `small_images=None` resolves to True for them.
SMALL_IMAGE_DATASETS = ("demo", "cifar10", "cifar100")
SMALL_IMAGE_MAX_SIZE = 64
SHUFFLE_MODES = ("stream", "per_pass")
PAD_FILLS = ("black", "mean")


def default_data_config() -> ml_collections.ConfigDict:
    """The default data configuration (demo dataset, ImageNet normalisation)."""
    cfg = ml_collections.ConfigDict()
    cfg.name = "demo"
    cfg.folder = ""
    cfg.data_dir = config_dict.placeholder(str)
    cfg.download = False
    cfg.train_split = "train"
    cfg.eval_split = "test"
    cfg.crop_ratio = 0.875
    cfg.mean = IMAGENET_MEAN_RGB
    cfg.std = IMAGENET_STD_RGB
    cfg.channel_order = "RGB"
    cfg.small_images = config_dict.placeholder(bool)
    cfg.randaugment = ml_collections.ConfigDict(
        dict(num_layers=0, magnitude=9.0, magnitude_std=0.5))
    cfg.repeated_aug = 1
    cfg.rrc_scale = (0.08, 1.0)
    cfg.rrc_ratio = (3.0 / 4.0, 4.0 / 3.0)
    cfg.shuffle_buffer = 10_000
    cfg.shuffle_mode = "stream"
    cfg.pad_fill = "black"
    cfg.deterministic = True
    cfg.seed = 0
    cfg.cache = False
    cfg.num_parallel_calls = -1
    cfg.prefetch = 2
    return cfg


def _fail(field, value, what):
    raise ConfigError(f"data config: data.{field}={value!r} is invalid: {what}")


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_num(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_pair(cfg, field, lo_min, hi_max, allow_equal=True):
    v = cfg[field]
    if not isinstance(v, (tuple, list)) or len(v) != 2 or not all(_is_num(x) for x in v):
        _fail(field, v, "expected a pair of numbers (low, high)")
    lo, hi = float(v[0]), float(v[1])
    if not (lo_min < lo <= hi <= hi_max) or (not allow_equal and lo == hi):
        _fail(field, v, f"need {lo_min} < low <= high <= {hi_max}")


def validate_data_config(cfg) -> None:
    """Raises ValueError (naming the field) if a data config value is out of range."""
    for field in ("name", "folder", "train_split", "eval_split"):
        if not isinstance(cfg.get(field), str):
            _fail(field, cfg.get(field), "expected a string")
    if not cfg.folder and not cfg.name:
        _fail("name", cfg.name, "set data.name (a TFDS name, 'demo') or data.folder")
    if cfg.name == "folder" and not cfg.folder:
        _fail("folder", cfg.folder, "data.name='folder' needs data.folder=ROOT")
    if not cfg.train_split:
        _fail("train_split", cfg.train_split, "must not be empty")
    if not cfg.eval_split:
        _fail("eval_split", cfg.eval_split, "must not be empty")
    if cfg.get("data_dir") is not None and not isinstance(cfg.data_dir, str):
        _fail("data_dir", cfg.data_dir, "expected a path string or None")
    if not isinstance(cfg.get("download", False), bool):
        _fail("download", cfg.download, "expected True or False")
    if not _is_num(cfg.crop_ratio) or not 0.0 < cfg.crop_ratio <= 1.0:
        _fail("crop_ratio", cfg.crop_ratio, "need 0 < crop_ratio <= 1 (e.g. 0.875)")
    for field in ("mean", "std"):
        v = cfg[field]
        if not isinstance(v, (tuple, list)) or len(v) != 3 or not all(_is_num(x) for x in v):
            _fail(field, v, "expected three numbers (R, G, B) in 0-255 units")
    if any(s <= 0 for s in cfg.std):
        _fail("std", cfg.std, "every std must be > 0")
    if not isinstance(cfg.channel_order, str) or cfg.channel_order.upper() not in ("RGB", "BGR"):
        _fail("channel_order", cfg.channel_order, "expected 'RGB' or 'BGR'")
    if cfg.get("small_images") is not None and not isinstance(cfg.small_images, bool):
        _fail("small_images", cfg.small_images, "expected True, False or None (auto)")
    ra = cfg.randaugment
    if not _is_int(ra.num_layers) or ra.num_layers < 0:
        _fail("randaugment.num_layers", ra.num_layers, "expected an integer >= 0 (0 = off)")
    if not _is_num(ra.magnitude) or not 0 <= ra.magnitude <= 10:
        _fail("randaugment.magnitude", ra.magnitude, "expected a number in [0, 10]")
    if not _is_num(ra.magnitude_std) or ra.magnitude_std < 0 or math.isnan(ra.magnitude_std):
        _fail("randaugment.magnitude_std", ra.magnitude_std,
              "expected a number >= 0 (0 = fixed magnitude, inf = uniform in [0, magnitude])")
    if not _is_int(cfg.repeated_aug) or cfg.repeated_aug < 1:
        _fail("repeated_aug", cfg.repeated_aug, "expected an integer >= 1 (1 = off)")
    _check_pair(cfg, "rrc_scale", 0.0, 1.0)
    _check_pair(cfg, "rrc_ratio", 0.0, math.inf)
    if not _is_int(cfg.shuffle_buffer) or cfg.shuffle_buffer < 1:
        _fail("shuffle_buffer", cfg.shuffle_buffer, "expected an integer >= 1")
    for field, valid in (("shuffle_mode", SHUFFLE_MODES), ("pad_fill", PAD_FILLS)):
        if cfg.get(field, valid[0]) not in valid:
            _fail(field, cfg.get(field), "valid: " + ", ".join(repr(v) for v in valid))
    for field in ("deterministic", "cache"):
        if not isinstance(cfg[field], bool):
            _fail(field, cfg[field], "expected True or False")
    if not _is_int(cfg.seed):
        _fail("seed", cfg.seed, "expected an integer")
    if not _is_int(cfg.num_parallel_calls) or not (cfg.num_parallel_calls == -1
                                                   or cfg.num_parallel_calls >= 1):
        _fail("num_parallel_calls", cfg.num_parallel_calls, "expected -1 (AUTOTUNE) or >= 1")
    if not _is_int(cfg.prefetch) or cfg.prefetch < -1:
        _fail("prefetch", cfg.prefetch, "expected -1 (AUTOTUNE), 0 (off) or a count >= 1")


def resolve_small_images(cfg, native_size) -> bool:
    """`cfg.small_images`, with None resolved from the dataset name / native image size."""
    if cfg.get("small_images") is not None:
        return bool(cfg.small_images)
    if not cfg.folder and cfg.name in SMALL_IMAGE_DATASETS:
        return True
    return native_size is not None and native_size <= SMALL_IMAGE_MAX_SIZE


def stream_seeds(seed: int, key: int, n: int = 1) -> list[int]:
    """n independent 31-bit seeds derived from (seed, key): the one derivation of the input
    streams' seeds (a segment's stream from (data.seed, its first step); a process's shuffling
    and augmentation seeds from (stream seed, process index))."""
    import numpy as np

    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(key)]).generate_state(n)
    return [int(x) & 0x7FFFFFFF for x in state]
