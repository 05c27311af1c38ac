"""The input pipeline: data config -> host-local numpy batches for data-parallel training.

    from fastscale_jax.data import pipeline
    info = pipeline.dataset_info(cfg.data)   # num_classes, num_train, num_eval, image_size_native
    train_it = pipeline.train_iterator(cfg.data, global_batch_size=1024, image_size=224, seed=0)
    batch = next(train_it)   # {'image': float32 [D, B, 224, 224, 3], 'label': int32 [D, B]}
    for batch in pipeline.eval_iterator(cfg.data, global_batch_size=1024, image_size=224):
        ...                  # + 'mask': bool [D, B]; padded examples have mask False
    pipeline.skipped_images()  # undecodable images skipped so far in this process

D = local_device_count, B = global_batch_size // (process_count * D). Each process reads only its
own shard of a split (disjoint shards covering the split). Training batches: infinite, shuffled,
the last partial batch of a pass is never formed (the stream repeats before batching). Eval: one
pass; every process yields the same number of batches (so collectives never wait on a host that
ran out), the extra slots padded with mask=False, so that summing over the mask counts every
eval example exactly once on any number of hosts and devices.

Train transform (`small_images` False): decode the Inception-style random crop (rrc_scale,
rrc_ratio) -> resize to image_size -> random horizontal flip -> RandAugment (optional) ->
normalise. `small_images` True (CIFAR): pad 4 (data.pad_fill: black, or the mean colour) and
random crop at native size -> flip ->
resize to image_size if different -> RandAugment -> normalise. Eval: resize the short side to
floor(image_size / crop_ratio) and center-crop (small images: identity, resized to image_size if
different). Importing this module imports tensorflow (see fastscale_jax.data._tf).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from fastscale_jax.errors import ConfigError, DataError
from fastscale_jax.data import _tf, randaugment, sources, transforms
from fastscale_jax.data import config as config_lib
from fastscale_jax.data._tf import no_autograph
from fastscale_jax.data.batching import check_divisible

tf = _tf.tf()


def _source(data_cfg):
    config_lib.validate_data_config(data_cfg)
    return sources.get_source(data_cfg)


def dataset_info(data_cfg) -> dict:
    """dict(num_classes, num_train, num_eval, image_size_native) of the configured dataset.

    num_train / num_eval are the sizes of the whole train / eval splits (all processes);
    image_size_native is the height == width of the images when known (32 for CIFAR), else None.
    """
    _tf.host_only()
    source = _source(data_cfg)
    if int(source.num_classes) < 2:
        raise DataError(f"{source.description} has {source.num_classes} class: a classifier "
                        "needs at least 2 (accuracy would be 100% by construction); add classes")
    return dict(num_classes=int(source.num_classes),
                num_train=int(source.split_size(data_cfg.train_split)),
                num_eval=int(source.split_size(data_cfg.eval_split)),
                image_size_native=source.image_size_native)


def skipped_images() -> int:
    """How many undecodable images all pipelines of this process have skipped so far.

    Every failed decode counts: a bad training image is counted again on every pass (and once
    per copy with repeated_aug). `transforms.SKIPPED.ids` holds the first 100 skipped ids.
    """
    return transforms.SKIPPED.count


def reset_skipped_images() -> None:
    transforms.SKIPPED.reset()


def batch_layout(global_batch_size: int, process_index: Optional[int] = None,
                 process_count: Optional[int] = None,
                 local_device_count: Optional[int] = None):
    """(process_index, process_count, local_device_count, per_device_batch); defaults from jax."""
    if process_index is None or process_count is None or local_device_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
        local_device_count = (jax.local_device_count() if local_device_count is None
                              else local_device_count)
    for name, value, low in (("process_count", process_count, 1),
                             ("local_device_count", local_device_count, 1),
                             ("global_batch_size", global_batch_size, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{name}={value!r} must be an integer >= {low}")
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index={process_index} must be in [0, {process_count})")
    shards = process_count * local_device_count
    check_divisible("global_batch_size", global_batch_size, shards,
                    f"process_count * local_device_count = {process_count} * "
                    f"{local_device_count}")
    return int(process_index), int(process_count), int(local_device_count), \
        global_batch_size // shards


def _seeds(seed: int, process_index: int):
    """Independent 31-bit seeds for file shuffling, buffer shuffling and augmentation."""
    s = config_lib.stream_seeds(seed, process_index, 4)
    return s[0], s[1], (s[2], s[3])


def _parallel(cfg):
    return tf.data.AUTOTUNE if cfg.num_parallel_calls == -1 else int(cfg.num_parallel_calls)


def _options(cfg):
    options = tf.data.Options()
    options.deterministic = bool(cfg.deterministic)
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    return options


def _resize_if_needed(image, size):
    shape = tf.shape(image)
    return tf.cond((shape[0] == size) & (shape[1] == size),
                   lambda: tf.ensure_shape(tf.cast(image, tf.float32), [size, size, 3]),
                   lambda: transforms.resize(image, size))


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _batch_and_split(ds, local_batch, local_device_count, drop_remainder=True):
    ds = ds.batch(local_batch, drop_remainder=drop_remainder)

    def split(batch):
        return {k: tf.reshape(v, [local_device_count, local_batch // local_device_count]
                              + v.shape.as_list()[1:]) for k, v in batch.items()}

    return ds.map(no_autograph(split))


def _small(cfg, source):
    return config_lib.resolve_small_images(cfg, source.max_side)


def _check_image_size(image_size):
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size={image_size!r} must be a positive integer")


def build_train_dataset(data_cfg, *, global_batch_size: int, image_size: int,
                        seed: Optional[int] = None, process_index: Optional[int] = None,
                        process_count: Optional[int] = None,
                        local_device_count: Optional[int] = None, skip_batches: int = 0):
    """The infinite training tf.data.Dataset of {'image': [D, B, S, S, 3], 'label': [D, B]}.

    skip_batches: start the stream of `seed` that many batches in, exactly where an iterator
    that had yielded them would continue (exact resume from a checkpoint at any step). The
    skipped examples are shuffled but never decoded or augmented (each example's augmentation
    seed is its position in the stream), so skipping is cheap.
    """
    _tf.host_only()
    source = _source(data_cfg)
    cfg = data_cfg
    _check_image_size(image_size)
    pi, pc, dev, per_device = batch_layout(global_batch_size, process_index, process_count,
                                           local_device_count)
    seed = cfg.seed if seed is None else seed
    file_seed, buffer_seed, aug_seed = _seeds(seed, pi)
    par = _parallel(cfg)
    det = bool(cfg.deterministic)
    small = _small(cfg, source)
    scale, ratio = tuple(map(float, cfg.rrc_scale)), tuple(map(float, cfg.rrc_ratio))
    ra = cfg.randaugment
    mean, std, order = tuple(cfg.mean), tuple(cfg.std), cfg.channel_order
    pad_fill = mean if cfg.get("pad_fill", "black") == "mean" else None

    ds = source.read(cfg.train_split, pi, pc, shuffle_seed=file_seed, lazy=not cfg.cache)
    if cfg.cache:
        ds = ds.cache()
    shard_size = source.shard_sizes(cfg.train_split, pc)[pi]
    if shard_size == 0:
        raise ConfigError(f"{source.description}: process {pi} of {pc} gets no training examples "
                         f"(split {cfg.train_split!r} has {source.split_size(cfg.train_split)}).")
    if cfg.get("shuffle_mode", "stream") == "per_pass":
        # A fresh permutation of the whole shard each pass (pycls's sampler): every example
        # exactly once per epoch; the seeded reshuffle keeps the passes a function of the seed.
        ds = ds.shuffle(shard_size, seed=buffer_seed, reshuffle_each_iteration=True).repeat()
    else:
        # A buffer larger than the shard would only mix passes (and delay the first batch).
        buffer = max(1, min(cfg.shuffle_buffer, shard_size))
        ds = ds.repeat().shuffle(buffer, seed=buffer_seed)
    if cfg.repeated_aug > 1:
        k = int(cfg.repeated_aug)
        ds = ds.map(no_autograph(lambda ex: {n: tf.stack([v] * k) for n, v in ex.items()}))
        ds = ds.unbatch()
    base = tf.constant(aug_seed, tf.int64)
    ds = ds.enumerate().map(no_autograph(lambda i, ex: dict(
        ex, seed=tf.random.experimental.stateless_fold_in(base, i))))
    if skip_batches < 0:
        raise ConfigError(f"skip_batches={skip_batches} must be >= 0")
    if skip_batches:
        ds = ds.skip(int(skip_batches) * per_device * dev)

    def decode(ex):
        s = tf.random.experimental.stateless_split(ex["seed"], num=2)[0]
        image = (transforms.decode(ex["image"]) if small else
                 transforms.decode_random_resized_crop(ex["image"], s, scale, ratio))
        return {"image": image, "label": ex["label"], "seed": ex["seed"]}

    def augment(ex):
        s = tf.random.experimental.stateless_split(ex["seed"], num=4)
        image = ex["image"]
        if small:
            image = transforms.pad_random_crop(image, s[1], fill=pad_fill)
            image = _resize_if_needed(transforms.random_flip(image, s[2]), image_size)
        else:
            image = transforms.random_flip(transforms.resize(image, image_size), s[2])
        if ra.num_layers > 0:
            image = randaugment.randaugment(_to_uint8(image), s[3], int(ra.num_layers),
                                            float(ra.magnitude), float(ra.magnitude_std))
        image = tf.ensure_shape(transforms.normalize(image, mean, std, order),
                                [image_size, image_size, 3])
        return {"image": image, "label": ex["label"]}

    ds = transforms.safe_map(ds, no_autograph(decode), par, finite=False)
    ds = ds.map(no_autograph(augment), num_parallel_calls=par, deterministic=det)
    ds = _batch_and_split(ds, per_device * dev, dev)
    if cfg.prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE if cfg.prefetch == -1 else cfg.prefetch)
    return ds.with_options(_options(cfg))


def build_eval_dataset(data_cfg, *, global_batch_size: int, image_size: int,
                       process_index: Optional[int] = None, process_count: Optional[int] = None,
                       local_device_count: Optional[int] = None):
    """(dataset, num_batches): one pass of {'image', 'label', 'mask'} batches of shape [D, B, ...].

    num_batches is the same on every process: ceil(largest shard / local batch).
    """
    _tf.host_only()
    source = _source(data_cfg)
    cfg = data_cfg
    _check_image_size(image_size)
    pi, pc, dev, per_device = batch_layout(global_batch_size, process_index, process_count,
                                           local_device_count)
    local_batch = per_device * dev
    par = _parallel(cfg)
    det = bool(cfg.deterministic)
    small = _small(cfg, source)
    mean, std, order = tuple(cfg.mean), tuple(cfg.std), cfg.channel_order
    num_batches = math.ceil(max(source.shard_sizes(cfg.eval_split, pc)) / local_batch)

    def decode(ex):
        return {"image": transforms.decode(ex["image"]), "label": ex["label"]}

    def preprocess(ex):
        image = ex["image"]
        image = (_resize_if_needed(image, image_size) if small else
                 transforms.resize_short_side_center_crop(image, image_size, cfg.crop_ratio))
        image = tf.ensure_shape(transforms.normalize(image, mean, std, order),
                                [image_size, image_size, 3])
        return {"image": image, "label": ex["label"], "mask": tf.constant(True)}

    ds = source.read(cfg.eval_split, pi, pc, shuffle_seed=None, lazy=not cfg.cache)
    if cfg.cache:
        ds = ds.cache()
    ds = transforms.safe_map(ds, no_autograph(decode), par, finite=True)
    ds = ds.map(no_autograph(preprocess), num_parallel_calls=par, deterministic=det)
    pad = tf.data.Dataset.from_tensors({
        "image": tf.zeros([image_size, image_size, 3], tf.float32),
        "label": tf.constant(0, tf.int32), "mask": tf.constant(False)}).repeat()
    ds = ds.concatenate(pad).take(num_batches * local_batch)
    ds = _batch_and_split(ds, local_batch, dev)
    if cfg.prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE if cfg.prefetch == -1 else cfg.prefetch)
    return ds.with_options(_options(cfg)), num_batches


class NumpyIterator:
    """A python iterator over a tf.data.Dataset of batches, yielding dicts of numpy arrays.

    Attributes: dataset (the tf.data.Dataset), per_device_batch, local_device_count,
    num_batches (eval: batches in the pass; train: None = infinite).
    """

    def __init__(self, dataset, per_device_batch, local_device_count, num_batches=None):
        self.dataset = dataset
        self.per_device_batch = per_device_batch
        self.local_device_count = local_device_count
        self.num_batches = num_batches
        self._it = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._it = self.dataset.as_numpy_iterator()
        return next(self._it)

    def __len__(self):
        if self.num_batches is None:
            raise TypeError("the training iterator is infinite")
        return self.num_batches


def train_iterator(data_cfg, *, global_batch_size: int, image_size: int,
                   seed: Optional[int] = None, process_index: Optional[int] = None,
                   process_count: Optional[int] = None,
                   local_device_count: Optional[int] = None,
                   skip_batches: int = 0) -> NumpyIterator:
    """Infinite iterator of {'image': float32 [D, B, S, S, 3], 'label': int32 [D, B]}.

    seed: the training stream's seed (None: data_cfg.seed); each process derives its own shuffle
    and augmentation seeds from it. With data_cfg.deterministic, equal seeds give equal streams.
    skip_batches: begin that many batches into the stream (see build_train_dataset).
    process_index / process_count / local_device_count default to jax's values.
    """
    pi, pc, dev, per_device = batch_layout(global_batch_size, process_index, process_count,
                                           local_device_count)
    ds = build_train_dataset(data_cfg, global_batch_size=global_batch_size,
                             image_size=image_size, seed=seed, process_index=pi,
                             process_count=pc, local_device_count=dev,
                             skip_batches=skip_batches)
    return NumpyIterator(ds, per_device, dev)


def eval_iterator(data_cfg, *, global_batch_size: int, image_size: int,
                  process_index: Optional[int] = None, process_count: Optional[int] = None,
                  local_device_count: Optional[int] = None) -> NumpyIterator:
    """One pass over this process's eval shard: {'image', 'label', 'mask': bool [D, B]}.

    Every process yields len(iterator) batches; sum(mask) over all processes == eval split size
    (minus skipped undecodable images).
    """
    pi, pc, dev, per_device = batch_layout(global_batch_size, process_index, process_count,
                                           local_device_count)
    ds, num_batches = build_eval_dataset(data_cfg, global_batch_size=global_batch_size,
                                         image_size=image_size, process_index=pi,
                                         process_count=pc, local_device_count=dev)
    return NumpyIterator(ds, per_device, dev, num_batches)
