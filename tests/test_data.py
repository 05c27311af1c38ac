"""Tests of the input pipeline (fastscale_jax.data): sources, transforms, sharding, batching.

Fast (tiny folders and batches). The image folders are built in temp dirs, from a few CIFAR-10
JPEGs of ../shared/data/cifar10 (beside the repo) when present, else from the embedded demo set.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from fastscale_jax.data import config as config_lib
from fastscale_jax.data import pipeline
from fastscale_jax import errors as fs_errors
from fastscale_jax.errors import DataError

CIFAR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                     "cifar10")  # ../shared beside the repo
CLASSES = ("airplane", "cat", "dog")
IMAGENET_MIN = (0 - 123.675) / 58.395   # smallest normalised value with the default mean/std
IMAGENET_MAX = (255 - 103.53) / 57.375  # largest
LAYOUT = dict(process_index=0, process_count=1, local_device_count=1)


def _cfg(**kw):
    cfg = config_lib.default_data_config()
    cfg.shuffle_buffer = 64
    cfg.num_parallel_calls = 2
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _cifar_jpegs(split, cls, n):
    """n JPEG byte strings of a CIFAR-10 class (shared data, else the embedded demo)."""
    folder = os.path.join(CIFAR, split, cls)
    if os.path.isdir(folder):
        names = sorted(os.listdir(folder))[:n]
        return [open(os.path.join(folder, f), "rb").read() for f in names]
    from fastscale_jax.data.sources import DemoSource
    demo = DemoSource()
    label = demo.class_names.index(cls)
    idx = np.flatnonzero(demo._arrays[f"{split}_labels"] == label)[:n]
    images = demo.encoded(split)
    return [images[i] for i in idx]


def _write(root, split, cls, name, data):
    os.makedirs(os.path.join(root, split, cls), exist_ok=True)
    with open(os.path.join(root, split, cls, name), "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    """ROOT/train/<3 classes>/8 JPEGs, ROOT/test/<3 classes>/5 JPEGs (32x32 CIFAR images)."""
    root = str(tmp_path_factory.mktemp("cifar_folder"))
    for cls in CLASSES:
        for split, n in (("train", 8), ("test", 5)):
            for i, data in enumerate(_cifar_jpegs(split, cls, n)):
                _write(root, split, cls, f"{i:04d}.jpg", data)
    return root


def _index_png(index, label, size=8):
    """A flat PNG whose pixels spell its index exactly: R = index, G = 255 - index, B = 10*label."""
    pixel = np.array([index, 255 - index, 10 * label], np.uint8)
    return tf.io.encode_png(np.tile(pixel, (size, size, 1))).numpy()


@pytest.fixture(scope="module")
def index_folder(tmp_path_factory):
    """26 eval images (classes of 9, 9 and 8) whose pixels encode a unique index."""
    root = str(tmp_path_factory.mktemp("index_folder"))
    index = 0
    for label, (cls, n) in enumerate(zip(CLASSES, (9, 9, 8))):
        _write(root, "train", cls, "t.png", _index_png(200 + label, label))
        for i in range(n):
            _write(root, "val", cls, f"{i:02d}.png", _index_png(index, label))
            index += 1
    return root, index


def _check_batch(batch, d, b, size, num_classes, mask=False):
    keys = {"image", "label", "mask"} if mask else {"image", "label"}
    assert set(batch) == keys
    assert batch["image"].shape == (d, b, size, size, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (d, b) and batch["label"].dtype == np.int32
    assert ((batch["label"] >= 0) & (batch["label"] < num_classes)).all()
    img = batch["image"] if not mask else batch["image"][batch["mask"]]
    assert np.isfinite(img).all()
    assert img.min() >= IMAGENET_MIN - 1e-4 and img.max() <= IMAGENET_MAX + 1e-4
    assert img.std() > 0.2  # real, normalised images, not padding
    if mask:
        assert batch["mask"].shape == (d, b) and batch["mask"].dtype == np.bool_


# ------------------------------------------------------------------------------------------------
# Sources and shapes.


def test_folder_train_and_eval_batches(cifar_folder):
    cfg = _cfg(folder=cifar_folder)
    info = pipeline.dataset_info(cfg)
    assert info == dict(num_classes=3, num_train=24, num_eval=15, image_size_native=32)
    it = pipeline.train_iterator(cfg, global_batch_size=8, image_size=32, process_index=0,
                                 process_count=1, local_device_count=2)
    for _ in range(4):  # more than one pass over the 24 training images
        _check_batch(next(it), 2, 4, 32, 3)
    ev = pipeline.eval_iterator(cfg, global_batch_size=4, image_size=32, **LAYOUT)
    batches = list(ev)
    assert len(batches) == len(ev) == 4  # 15 images -> 4 batches of 4, one slot padded
    for b in batches:
        _check_batch(b, 1, 4, 32, 3, mask=True)
    assert sum(int(b["mask"].sum()) for b in batches) == 15
    assert not batches[-1]["mask"][0, -1] and (batches[-1]["image"][0, -1] == 0).all()


def test_folder_large_image_transforms(cifar_folder):
    """small_images=False: random-resized-crop + RandAugment for train, resize+center crop eval."""
    cfg = _cfg(folder=cifar_folder, small_images=False)
    cfg.randaugment.num_layers = 1
    batch = next(pipeline.train_iterator(cfg, global_batch_size=6, image_size=40, **LAYOUT))
    _check_batch(batch, 1, 6, 40, 3)
    ev = next(pipeline.eval_iterator(cfg, global_batch_size=5, image_size=24, **LAYOUT))
    _check_batch(ev, 1, 5, 24, 3, mask=True)
    # Eval = resize short side 32 -> floor(24 / 0.875) = 27, center crop 24: a pure function.
    from fastscale_jax.data import transforms
    raw = tf.io.decode_jpeg(open(os.path.join(cifar_folder, "test", "airplane", "0000.jpg"),
                                 "rb").read(), channels=3)
    out = transforms.resize_short_side_center_crop(raw, 24, 0.875).numpy()
    assert out.shape == (24, 24, 3)
    np.testing.assert_allclose(out, tf.image.resize(tf.cast(raw, tf.float32), [27, 27])
                               .numpy()[1:25, 1:25], atol=1e-4)


def test_demo_dataset():
    cfg = _cfg(name="demo")
    info = pipeline.dataset_info(cfg)
    assert info == dict(num_classes=10, num_train=10000, num_eval=2000, image_size_native=32)
    assert config_lib.resolve_small_images(cfg, 32)
    batch = next(pipeline.train_iterator(cfg, global_batch_size=16, image_size=32,
                                         process_index=0, process_count=1, local_device_count=2))
    _check_batch(batch, 2, 8, 32, 10)
    ev = pipeline.eval_iterator(cfg, global_batch_size=250, image_size=32, **LAYOUT)
    assert len(ev) == 8
    labels = np.concatenate([b["label"][b["mask"]] for b in ev])
    assert len(labels) == 2000 and (np.bincount(labels, minlength=10) == 200).all()
    # image_size != native size: the small-image transforms resize.
    _check_batch(next(pipeline.train_iterator(cfg, global_batch_size=4, image_size=48,
                                              **LAYOUT)), 1, 4, 48, 10)


def test_demo_file_is_small_and_well_formed():
    from fastscale_jax.data.sources import DEMO_FILE
    assert os.path.getsize(DEMO_FILE) <= 5_000_000
    with np.load(DEMO_FILE) as z:
        offsets = z["train_offsets"]
        data = z["train_bytes"]
        assert offsets[0] == 0 and offsets[-1] == len(data) and (np.diff(offsets) > 0).all()
        first = data[offsets[0]:offsets[1]].tobytes()
        assert first[:2] == b"\xff\xd8" and first[-2:] == b"\xff\xd9"  # whole JPEG files
        assert tf.io.decode_jpeg(first).shape == (32, 32, 3)


# ------------------------------------------------------------------------------------------------
# Sharding over processes and devices.


@pytest.mark.parametrize("hosts,devices,global_batch", [(3, 2, 12), (2, 1, 6), (1, 4, 4)])
def test_eval_counts_every_example_once(index_folder, hosts, devices, global_batch):
    root, n = index_folder
    cfg = _cfg(folder=root, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert pipeline.dataset_info(cfg)["num_eval"] == n == 26
    seen, lengths = [], []
    per_device = global_batch // (hosts * devices)
    for p in range(hosts):
        ev = pipeline.eval_iterator(cfg, global_batch_size=global_batch, image_size=8,
                                    process_index=p, process_count=hosts,
                                    local_device_count=devices)
        batches = list(ev)
        lengths.append(len(batches))
        for b in batches:
            assert b["image"].shape == (devices, per_device, 8, 8, 3)
            img, label = b["image"][b["mask"]], b["label"][b["mask"]]
            np.testing.assert_array_equal(img[:, 0, 0, 2], 10 * label)  # right label
            np.testing.assert_array_equal(img[:, 0, 0, 0] + img[:, 0, 0, 1], 255)
            seen.extend(img[:, 0, 0, 0].astype(int).tolist())
            assert not b["image"][~b["mask"]].any()
    assert len(set(lengths)) == 1  # every host runs the same number of eval steps
    assert lengths[0] == math.ceil(math.ceil(n / hosts) / (global_batch // hosts))
    assert sorted(seen) == list(range(n))  # each example exactly once


def _shard_ids(source, split, hosts):
    return [[x.decode() for x in source.read(split, p, hosts).map(lambda e: e["id"])
             .as_numpy_iterator()] for p in range(hosts)]


def _assert_partition(shards, total):
    flat = [x for s in shards for x in s]
    assert len(flat) == len(set(flat)) == total  # disjoint and covering
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced


def test_process_shards_are_disjoint_and_cover(cifar_folder, tiny_tfds):
    from fastscale_jax.data import sources
    folder = sources.get_source(_cfg(folder=cifar_folder))
    _assert_partition(_shard_ids(folder, "train", 5), 24)
    assert folder.shard_sizes("train", 5) == [5, 5, 5, 5, 4]
    demo = sources.get_source(_cfg(name="demo"))
    _assert_partition(_shard_ids(demo, "test", 7), 2000)
    name, data_dir = tiny_tfds
    tfds_source = sources.get_source(_cfg(name=name, data_dir=data_dir))
    shards = _shard_ids(tfds_source, "test", 3)
    _assert_partition(shards, 11)
    assert tfds_source.shard_sizes("test", 3) == [len(s) for s in shards]
    # Training streams of different hosts see different images.
    cfg = _cfg(folder=cifar_folder, deterministic=True)
    a, b = (next(pipeline.train_iterator(cfg, global_batch_size=8, image_size=32, process_index=p,
                                         process_count=2, local_device_count=1))["image"]
            for p in (0, 1))
    assert not np.array_equal(a, b)


def test_batch_not_divisible_raises(cifar_folder):
    cfg = _cfg(folder=cifar_folder)
    with pytest.raises(ValueError, match=r"global_batch_size=10 .*3 \* 2 \(6\)"):
        pipeline.train_iterator(cfg, global_batch_size=10, image_size=32, process_index=0,
                                process_count=3, local_device_count=2)
    with pytest.raises(ValueError, match="not divisible"):
        pipeline.eval_iterator(cfg, global_batch_size=7, image_size=32, process_index=0,
                               process_count=1, local_device_count=2)


# ------------------------------------------------------------------------------------------------
# Robustness, determinism, options.


def test_corrupt_jpeg_is_skipped_and_counted(tmp_path):
    root = str(tmp_path)
    good = _cifar_jpegs("train", "cat", 6)
    for i, data in enumerate(good[:5]):
        _write(root, "train", "cat", f"{i}.jpg", data)
        _write(root, "test", "cat", f"{i}.jpg", data)
    _write(root, "train", "cat", "truncated.jpg", good[5][:len(good[5]) // 2])
    _write(root, "test", "cat", "truncated.jpg", good[5][:len(good[5]) // 2])
    _write(root, "test", "cat", "garbage.jpg", b"this is not an image")
    os.symlink(os.path.join(root, "no_such_file"), os.path.join(root, "test", "cat", "gone.jpg"))
    cfg = _cfg(folder=root)

    pipeline.reset_skipped_images()
    ev = pipeline.eval_iterator(cfg, global_batch_size=4, image_size=32, **LAYOUT)
    masks = [b["mask"] for b in ev]
    assert len(masks) == 2 and sum(int(m.sum()) for m in masks) == 5  # 8 files, 3 unusable
    assert pipeline.skipped_images() == 3
    from fastscale_jax.data.transforms import SKIPPED
    assert sorted(os.path.basename(p) for p in SKIPPED.ids) == [
        "garbage.jpg", "gone.jpg", "truncated.jpg"]
    # With cache=True the files are read before the cache; decode errors are still counted.
    pipeline.reset_skipped_images()
    os.remove(os.path.join(root, "test", "cat", "gone.jpg"))
    from fastscale_jax.data import sources
    sources.clear_cache()
    ev = pipeline.eval_iterator(_cfg(folder=root, cache=True), global_batch_size=4,
                                image_size=32, **LAYOUT)
    assert sum(int(b["mask"].sum()) for b in ev) == 5 and pipeline.skipped_images() == 2

    # Training (random-resized-crop decode path) keeps going past the bad file, every pass.
    pipeline.reset_skipped_images()
    it = pipeline.train_iterator(_cfg(folder=root, small_images=False), global_batch_size=5,
                                 image_size=16, **LAYOUT)
    for _ in range(4):  # 4 batches of 5 = 20 good images = 4 passes over the 5 good ones
        _check_batch(next(it), 1, 5, 16, 1)
    assert pipeline.skipped_images() >= 3


def test_deterministic_under_seed(cifar_folder):
    cfg = _cfg(folder=cifar_folder, deterministic=True, small_images=False, repeated_aug=2)
    cfg.randaugment.num_layers = 1

    def first(seed, n=2):
        it = pipeline.train_iterator(cfg, global_batch_size=8, image_size=24, seed=seed,
                                     process_index=0, process_count=1, local_device_count=2)
        return [next(it) for _ in range(n)]

    a, b, c = first(3), first(3), first(4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    # repeated_aug=2: images come in pairs of one source image with different augmentations.
    labels = a[0]["label"].reshape(-1)
    assert (labels[0::2] == labels[1::2]).all()
    images = a[0]["image"].reshape(8, -1)
    assert not np.array_equal(images[0], images[1])


@pytest.fixture(scope="module")
def index_train_folder(tmp_path_factory):
    """12 flat 8x8 training PNGs (3 classes of 4) whose pixels spell their index (0..11)."""
    root = str(tmp_path_factory.mktemp("index_train"))
    for i in range(12):
        label = i % 3
        _write(root, "train", CLASSES[label], f"{i:02d}.png", _index_png(i, label))
        _write(root, "test", CLASSES[label], f"{i:02d}.png", _index_png(i, label))
    return root


def _indices(batch):
    """The index each image spells: G = 255 - index inside the image, 0 in a black border."""
    g = batch["image"][..., 1].reshape(batch["image"].shape[1], -1)
    return list(np.rint(255 - g.max(axis=1)).astype(int))


def test_shuffle_per_pass_yields_every_example_once_per_epoch(index_train_folder):
    cfg = _cfg(folder=index_train_folder, shuffle_mode="per_pass", mean=(0.0, 0.0, 0.0),
               std=(1.0, 1.0, 1.0))
    it = pipeline.train_iterator(cfg, global_batch_size=4, image_size=8, seed=5, **LAYOUT)
    seen = [i for _ in range(12) for i in _indices(next(it))]   # 4 epochs of 3 batches
    epochs = [seen[k:k + 12] for k in range(0, 48, 12)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(12)), epoch
    assert len({tuple(e) for e in epochs}) == 4   # a fresh order every epoch
    again = pipeline.train_iterator(cfg, global_batch_size=4, image_size=8, seed=5, **LAYOUT)
    assert [i for _ in range(6) for i in _indices(next(again))] == seen[:24]   # seeded
    skipped = pipeline.train_iterator(cfg, global_batch_size=4, image_size=8, seed=5,
                                      skip_batches=4, **LAYOUT)
    assert _indices(next(skipped)) == seen[16:20]   # exact resume mid-epoch


@pytest.mark.parametrize("fill", ["black", "mean"])
def test_pad_fill(index_train_folder, fill):
    mean, std = (100.0, 150.0, 200.0), (2.0, 3.0, 4.0)
    cfg = _cfg(folder=index_train_folder, pad_fill=fill, mean=mean, std=std)
    it = pipeline.train_iterator(cfg, global_batch_size=12, image_size=8, seed=0, **LAYOUT)
    images = np.concatenate([next(it)["image"][0] for _ in range(3)])      # [36, 8, 8, 3]
    raw = images * np.float32(std) + np.float32(mean)                      # un-normalised
    g = raw[..., 1].reshape(len(raw), -1)
    border = g < 100      # an image's G is 255 - index >= 244; black 0, mean 150
    if fill == "mean":
        border = np.isclose(g, 150.0, atol=1e-3)
        np.testing.assert_array_equal(images.reshape(len(raw), -1, 3)[border], 0.0)
        np.testing.assert_allclose(raw.reshape(len(raw), -1, 3)[border],
                                   np.broadcast_to(mean, (border.sum(), 3)), atol=1e-4)
    else:
        np.testing.assert_allclose(raw.reshape(len(raw), -1, 3)[border], 0.0, atol=1e-4)
    assert 0 < border.mean() < 0.9          # random crops of the padded image show the border
    inside = raw.reshape(len(raw), -1, 3)[~border]
    assert (inside[:, 1] > 240).all()       # the image's own pixels are untouched


def test_data_option_values_are_checked():
    for field, value, valid in (("shuffle_mode", "epoch", "'stream', 'per_pass'"),
                                ("pad_fill", "white", "'black', 'mean'")):
        cfg = config_lib.default_data_config()
        setattr(cfg, field, value)
        with pytest.raises(fs_errors.ConfigError, match=f"data.{field}='{value}'.*{valid}"):
            config_lib.validate_data_config(cfg)
    cfg = config_lib.default_data_config()
    assert (cfg.shuffle_mode, cfg.pad_fill) == ("stream", "black")   # the demo's defaults


def test_pycls_recipe_sets_pycls_data():
    from fastscale_jax import recipes
    from fastscale_jax.config import base_config

    c = recipes.pycls_sgd(base_config())   # ImageNet: no per-pass buffer of the whole set
    assert (c.data.shuffle_mode, c.data.pad_fill) == ("stream", "mean")
    config_lib.validate_data_config(c.data)
    c = recipes.pycls_data(base_config())  # small sets (the parity benchmark): pycls's order
    assert (c.data.shuffle_mode, c.data.pad_fill) == ("per_pass", "mean")


def test_bgr_flips_channels(cifar_folder):
    kw = dict(global_batch_size=5, image_size=32, **LAYOUT)
    rgb = next(pipeline.eval_iterator(_cfg(folder=cifar_folder, deterministic=True), **kw))
    rgb = rgb["image"]
    bgr = next(pipeline.eval_iterator(_cfg(folder=cifar_folder, deterministic=True,
                                           channel_order="BGR"), **kw))
    np.testing.assert_array_equal(bgr["image"], rgb[..., ::-1])
    assert not np.array_equal(rgb, rgb[..., ::-1])


def test_randaugment_ops_and_determinism():
    from fastscale_jax.data import randaugment as ra
    img = tf.constant(np.random.RandomState(0).randint(0, 256, (20, 24, 3)), tf.uint8)
    for i, name in enumerate(ra.OPS):
        out = ra.apply_op(img, i, 8.0, -1.0)
        assert out.shape == img.shape and out.dtype == tf.uint8, name
        if name not in ("AutoContrast", "Equalize", "Invert"):  # magnitude 0 = identity
            np.testing.assert_array_equal(ra.apply_op(img, i, 0.0).numpy(), img.numpy(), name)
        if name not in ("AutoContrast",):  # (a uniform-noise image is already full-range)
            assert not np.array_equal(out.numpy(), img.numpy()), name
    seed = tf.constant([1, 2], tf.int64)
    a = ra.randaugment(img, seed, 3, 9.0, 0.5).numpy()
    np.testing.assert_array_equal(a, ra.randaugment(img, seed, 3, 9.0, 0.5).numpy())


def test_random_resized_crop_window_ranges():
    from fastscale_jax.data import transforms
    for i in range(30):
        y, x, h, w = transforms.random_resized_crop_window(
            tf.constant([300, 400]), tf.constant([i, 0], tf.int64), (0.08, 1.0),
            (3 / 4, 4 / 3)).numpy()
        assert 0 <= y and y + h <= 300 and 0 <= x and x + w <= 400
        assert 0.08 * 0.9 <= h * w / 120000 <= 1.0
    # No candidate fits an extreme aspect ratio: center crop with the ratio clamped.
    y, x, h, w = transforms.random_resized_crop_window(
        tf.constant([10, 1000]), tf.constant([0, 0], tf.int64), (0.9, 1.0), (1.0, 2.0)).numpy()
    assert (h, w) == (10, 20) and x == 490 and y == 0


# ------------------------------------------------------------------------------------------------
# Errors.


def test_unprepared_tfds_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'cifar10' is not prepared .*tfds build cifar10"):
        pipeline.dataset_info(_cfg(name="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"downloads/manual.*tfds build imagenet2012"):
        pipeline.train_iterator(_cfg(name="imagenet2012", data_dir=str(tmp_path)),
                                global_batch_size=8, image_size=224, **LAYOUT)
    with pytest.raises(ValueError, match="Unknown dataset data.name='no_such_dataset_xyz'"):
        pipeline.dataset_info(_cfg(name="no_such_dataset_xyz", data_dir=str(tmp_path)))


def test_folder_errors(tmp_path, cifar_folder):
    jpeg = _cifar_jpegs("train", "cat", 1)[0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline.dataset_info(_cfg(folder=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    (empty / "train" / "cat").mkdir(parents=True)
    (empty / "test" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="contains no images"):
        pipeline.dataset_info(_cfg(folder=str(empty)))
    (empty / "train" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="contains no images"):
        pipeline.dataset_info(_cfg(folder=str(empty)))
    with pytest.raises(ValueError, match="no split folders"):
        (tmp_path / "bare").mkdir()
        pipeline.dataset_info(_cfg(folder=str(tmp_path / "bare")))
    odd = str(tmp_path / "odd")
    _write(odd, "train", "cat", "a.jpg", jpeg)
    _write(odd, "train", "dog", "a.jpg", jpeg)
    _write(odd, "val", "cat", "a.jpg", jpeg)
    _write(odd, "val", "bird", "a.jpg", jpeg)
    with pytest.raises(ValueError, match=r"Inconsistent class folders.*only in 'val': \['bird'\]"):
        pipeline.dataset_info(_cfg(folder=odd))
    with pytest.raises(ValueError, match=r"no split 'holdout'; available splits: \['test', "):
        pipeline.dataset_info(_cfg(folder=cifar_folder, eval_split="holdout"))
    # (eval_split 'test' falls back to ROOT/val: see test_eval_counts_every_example_once.)
    nosplit = str(tmp_path / "trainonly")
    _write(nosplit, "train", "cat", "a.jpg", jpeg)
    with pytest.raises(ValueError, match="no split 'test'"):
        pipeline.dataset_info(_cfg(folder=nosplit))


def test_config_validation():
    config_lib.validate_data_config(config_lib.default_data_config())
    bad = [("crop_ratio", 1.5, "crop_ratio"), ("channel_order", "RBG", "channel_order"),
           ("rrc_scale", (0.5, 0.1), "rrc_scale"), ("repeated_aug", 0, "repeated_aug"),
           ("std", (1.0, 0.0, 1.0), "std"), ("num_parallel_calls", 0, "num_parallel_calls")]
    for field, value, name in bad:
        cfg = config_lib.default_data_config()
        setattr(cfg, field, value)
        with pytest.raises(ValueError, match=f"data.{name}="):
            config_lib.validate_data_config(cfg)
    cfg = config_lib.default_data_config()
    cfg.randaugment.magnitude = 12
    with pytest.raises(ValueError, match="data.randaugment.magnitude="):
        pipeline.dataset_info(cfg)
    with pytest.raises(ValueError, match="image_size"):
        pipeline.train_iterator(config_lib.default_data_config(), global_batch_size=4,
                                image_size=0, **LAYOUT)


# ------------------------------------------------------------------------------------------------
# TFDS datasets (a tiny one prepared offline in a temp data_dir).


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    import tensorflow_datasets as tfds
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (23, 12, 12, 3)).astype(np.uint8)
    labels = np.arange(23) % 4
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    builder = tfds.dataset_builders.TfDataBuilder(
        name="fastscale_tiny_test", version="1.0.0", data_dir=data_dir,
        split_datasets={"train": ds, "test": ds.take(11)},
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(12, 12, 3)),
            "label": tfds.features.ClassLabel(num_classes=4)}))
    builder.download_and_prepare()
    return "fastscale_tiny_test", data_dir


def test_tfds_source(tiny_tfds):
    name, data_dir = tiny_tfds
    cfg = _cfg(name=name, data_dir=data_dir)
    assert pipeline.dataset_info(cfg) == dict(num_classes=4, num_train=23, num_eval=11,
                                              image_size_native=12)
    assert config_lib.resolve_small_images(cfg, 12)
    batch = next(pipeline.train_iterator(cfg, global_batch_size=4, image_size=12,
                                         process_index=1, process_count=2, local_device_count=2))
    _check_batch(batch, 2, 1, 12, 4)
    total = 0
    for p in range(2):
        ev = pipeline.eval_iterator(cfg, global_batch_size=4, image_size=12, process_index=p,
                                    process_count=2, local_device_count=1)
        total += sum(int(b["mask"].sum()) for b in ev)
    assert total == 11
    with pytest.raises(ValueError, match=r"no split 'validation'; available splits: \['test'"):
        pipeline.dataset_info(_cfg(name=name, data_dir=data_dir, eval_split="validation"))


# ------------------------------------------------------------------------------------------------
# Import hygiene and the batch layout from jax (fresh interpreter: 2 simulated CPU devices).

_SUBPROCESS = r"""
import sys
import fastscale_jax, fastscale_jax.data, fastscale_jax.data.config
cfg = fastscale_jax.data.config.default_data_config()
assert "tensorflow" not in sys.modules, "importing the package imported tensorflow"
from fastscale_jax.data import pipeline
import jax
assert jax.local_device_count() == 2
assert pipeline.batch_layout(8) == (0, 1, 2, 4)  # process / device layout from jax
print("OK")
"""


def test_no_tensorflow_on_import_and_batch_layout_from_jax():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _SUBPROCESS], env=env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def test_undecodable_and_odd_folders_fail_at_once_with_one_line(tmp_path):
    """A class whose every image is undecodable (the training stream would skip forever), a
    dangling symbolic link, one class, a file for a folder: clear errors before any step."""
    root = tmp_path / "bad"
    for cls in ("a", "b"):
        for split in ("train", "test"):
            for i in range(3):
                _write(str(root), split, cls, f"{i}.jpg",
                       b"not a jpeg" if cls == "b" else _cifar_jpegs(split, "cat", 3)[i])
    with pytest.raises(DataError, match=r"Class folder .*train/b.*none of the 3 image file\(s\) "
                                        r"tried \(all\) can be read and decoded"):
        pipeline.dataset_info(_cfg(folder=str(root)))
    link_root = tmp_path / "link"
    for cls in ("a", "b"):
        for split in ("train", "test"):
            _write(str(link_root), split, cls, "0.jpg", _cifar_jpegs(split, "cat", 1)[0])
    os.remove(link_root / "train" / "b" / "0.jpg")
    os.symlink(tmp_path / "nowhere.jpg", link_root / "train" / "b" / "0.jpg")
    with pytest.raises(DataError, match="a symbolic link to a missing file"):
        pipeline.dataset_info(_cfg(folder=str(link_root)))
    one = tmp_path / "one"
    for split in ("train", "test"):
        _write(str(one), split, "a", "0.jpg", _cifar_jpegs(split, "cat", 1)[0])
    with pytest.raises(DataError, match="has 1 class: a classifier needs at least 2"):
        pipeline.dataset_info(_cfg(folder=str(one)))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(fs_errors.ConfigError, match="is a file, not a folder"):
        pipeline.dataset_info(_cfg(folder=str(tmp_path / "file.txt")))
