"""Where examples come from: a TFDS dataset, an image folder, or the embedded demo set.

Every source yields the same stream of *encoded* examples
    {'image': tf.string (JPEG/PNG bytes), 'label': tf.int32, 'id': tf.string}
restricted to one process's shard of a split (disjoint shards that together cover the split).
Decoding happens later, in the transforms, so that an undecodable image can be skipped and
counted, and so that a JPEG's random crop can be decoded without decoding the rest of it.

Image folders are listed here with tf.io.gfile rather than read through
`tfds.folder_dataset.ImageFolder`: ImageFolder reads every file of a split inside its own
`as_dataset` map and does not support sub-splits ("Subsplit API not yet supported"), so a process
could only shard after reading *all* files (every host would read the whole of ImageNet); it also
takes the union of the class folders of all splits, so inconsistent class folders would go
unnoticed. The layout and label convention are the same as ImageFolder's: ROOT/<split>/<class>/
*.jpg|*.jpeg|*.png, labels = index of the class folder name in sorted order.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import List, Optional, Sequence

import numpy as np

from fastscale_jax.errors import ConfigError, DataError, MissingPathError
from fastscale_jax.data import _tf, transforms

tf = _tf.tf()  # tensorflow_datasets is imported only by a TFDS source (_tf.tfds())

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEMO_FILE = os.path.join(os.path.dirname(__file__), "demo", "cifar10_demo.npz")
_SPLIT_ALIASES = {"val": "test", "test": "val"}


def _strided_shard_sizes(n: int, process_count: int) -> List[int]:
    """Sizes of ds.shard(process_count, i) for i in range(process_count)."""
    return [len(range(i, n, process_count)) for i in range(process_count)]


class Source:
    """Common interface (see module docstring)."""

    description: str
    num_classes: int
    class_names: Sequence[str]
    image_size_native: Optional[int]  # H == W of every image, if known
    max_side: Optional[int]  # largest image side seen (None: unknown)
    splits: Sequence[str]

    def resolve_split(self, split: str) -> str:
        if split in self.splits:
            return split
        alias = _SPLIT_ALIASES.get(split)
        if alias in self.splits:
            log.info("%s: no split %r, using %r instead.", self.description, split, alias)
            return alias
        raise ConfigError(f"{self.description} has no split {split!r}; available splits: "
                         f"{sorted(self.splits)}. Set data.train_split / data.eval_split.")

    def split_size(self, split: str) -> int:
        raise NotImplementedError

    def shard_sizes(self, split: str, process_count: int) -> List[int]:
        return _strided_shard_sizes(self.split_size(split), process_count)

    def read(self, split: str, process_index: int, process_count: int,
             shuffle_seed: Optional[int] = None, lazy: bool = False):
        """Encoded examples of this process's shard; reshuffled every pass if shuffle_seed.

        lazy: a source of files may yield {'path', 'label', 'id'} instead of the bytes, leaving
        the read to `transforms.safe_map` (an unreadable file is then skipped and counted).
        """
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# Image folders.


def _list_dirs(path):
    return sorted(d.rstrip("/") for d in tf.io.gfile.listdir(path)
                  if tf.io.gfile.isdir(os.path.join(path, d.rstrip("/"))))


# A class folder passes when one of its first DECODE_PROBES files decodes (a split whose every
# image is undecodable would otherwise make tf.data skip forever: a training stream repeats)
DECODE_PROBES = 32


def _check_decodable(class_dir: str, files: list[str]) -> None:
    """DataError naming the class folder, how many files were tried and why the first failed,
    when none of its first DECODE_PROBES files can be read and decoded."""
    why = None
    for f in files[:DECODE_PROBES]:
        path = os.path.join(class_dir, f)
        if os.path.islink(path) and not os.path.exists(path):
            why = why or f"{f}: a symbolic link to a missing file ({os.readlink(path)})"
            continue
        try:
            transforms.decode(tf.io.read_file(path))
            return
        except tf.errors.OpError as e:
            why = why or f"{f}: {(e.message or type(e).__name__).splitlines()[0][:160]}"
    n = min(len(files), DECODE_PROBES)
    raise DataError(f"Class folder {class_dir!r}: none of the {n} image file(s) tried "
                    f"({'all' if n == len(files) else f'the first {n} of {len(files)}'}) can be "
                    f"read and decoded (first: {why}); fix or remove them")


class FolderSource(Source):

    def __init__(self, root: str):
        root = os.path.expanduser(root)
        self.root = root
        self.description = f"image folder {root!r}"
        if tf.io.gfile.exists(root) and not tf.io.gfile.isdir(root):
            raise ConfigError(f"data.folder={root!r} is a file, not a folder: give the folder "
                              "ROOT holding ROOT/train/<class>/*.jpg and ROOT/val|test/...")
        if not tf.io.gfile.isdir(root):
            raise MissingPathError(f"Image folder {root!r} does not exist (data.folder). Expected "
                                    "ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg (or "
                                    "ROOT/test/...).")
        self.splits = _list_dirs(root)
        if not self.splits:
            raise DataError(f"Image folder {root!r} has no split folders; expected "
                             "ROOT/train/<class>/*.jpg and ROOT/val|test/<class>/*.jpg.")
        self._files = {}  # split -> (paths, labels, class names)
        self.class_names = None
        self.image_size_native = self.max_side = None

    def _listing(self, split):
        if split not in self._files:
            split_dir = os.path.join(self.root, split)
            classes = _list_dirs(split_dir)
            if not classes:
                raise DataError(f"{split_dir!r} has no class folders: expected "
                                 f"{split_dir}/<class>/*.jpg (no images found).")
            paths, labels = [], []
            for label, name in enumerate(classes):
                class_dir = os.path.join(split_dir, name)
                files = sorted(f for f in tf.io.gfile.listdir(class_dir)
                               if f.lower().endswith(IMAGE_EXTENSIONS))
                if not files:
                    raise DataError(
                        f"Class folder {class_dir!r} contains no images "
                        f"({'/'.join(IMAGE_EXTENSIONS)}); add images or remove the folder "
                        f"(from every split).")
                _check_decodable(class_dir, files)
                paths.extend(os.path.join(class_dir, f) for f in files)
                labels.extend([label] * len(files))
            self._files[split] = (paths, np.asarray(labels, np.int32), classes)
        return self._files[split]

    def check(self, train_split: str, eval_split: str):
        """Lists both splits, checks that they have the same classes; sets class metadata."""
        train_split = self.resolve_split(train_split)
        eval_split = self.resolve_split(eval_split)
        train_classes = self._listing(train_split)[2]
        eval_classes = self._listing(eval_split)[2]
        if train_classes != eval_classes:
            only_train = sorted(set(train_classes) - set(eval_classes))
            only_eval = sorted(set(eval_classes) - set(train_classes))
            raise DataError(
                f"Inconsistent class folders in {self.root!r}: {train_split!r} has "
                f"{len(train_classes)} classes, {eval_split!r} has {len(eval_classes)}; only in "
                f"{train_split!r}: {only_train[:10]}; only in {eval_split!r}: {only_eval[:10]}. "
                "Labels are the sorted class-folder names, so both splits need the same folders.")
        self.class_names = train_classes
        self.num_classes = len(train_classes)
        if self.max_side is None:
            self._probe_sizes(self._listing(train_split)[0])
        return train_split, eval_split

    def _probe_sizes(self, paths, count: int = 8):
        """Native image size from the headers of a few files spread over the split."""
        spread = np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int)
        picks = [paths[i] for i in spread]
        shapes = []
        for p in picks:
            try:
                shapes.append(tuple(int(v) for v in
                                    transforms._image_shape(tf.io.read_file(p)).numpy()))
            except tf.errors.OpError:
                continue  # an undecodable file; the pipeline will skip and count it
        if shapes:
            self.max_side = max(max(s) for s in shapes)
            if len(set(shapes)) == 1 and shapes[0][0] == shapes[0][1]:
                self.image_size_native = shapes[0][0]

    def split_size(self, split):
        return len(self._listing(self.resolve_split(split))[0])

    def read(self, split, process_index, process_count, shuffle_seed=None, lazy=False):
        paths, labels, _ = self._listing(self.resolve_split(split))
        ds = tf.data.Dataset.from_tensor_slices({"id": paths, "label": labels})
        ds = ds.shard(process_count, process_index)
        if shuffle_seed is not None:  # a full shuffle of the file names: cheap
            ds = ds.shuffle(len(range(process_index, len(paths), process_count)),
                            seed=shuffle_seed, reshuffle_each_iteration=True)
        if lazy:
            return ds.map(lambda ex: {"path": ex["id"], "label": ex["label"], "id": ex["id"]})
        return ds.map(lambda ex: {"image": tf.io.read_file(ex["id"]), "label": ex["label"],
                                  "id": ex["id"]},
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ----------------------------------------------------------------------------------------------
# The embedded demo set.


class DemoSource(Source):

    def __init__(self, path: str = DEMO_FILE):
        if not os.path.exists(path):
            raise MissingPathError(
                f"The demo dataset file {path!r} is missing: the package was installed without "
                "its data files (package-data fastscale_jax/data/demo/*). Reinstall, or recreate "
                "it with `python -m fastscale_jax.data.make_demo`.")
        with np.load(path, allow_pickle=False) as z:
            self._arrays = {k: z[k] for k in z.files}
        self.description = "demo dataset (CIFAR-10 subset)"
        self.class_names = [str(c) for c in self._arrays["class_names"]]
        self.num_classes = len(self.class_names)
        self.splits = [s for s in ("train", "test") if f"{s}_labels" in self._arrays]
        self.image_size_native = int(self._arrays["image_size"])
        self.max_side = self.image_size_native

    def split_size(self, split):
        return len(self._arrays[f"{self.resolve_split(split)}_labels"])

    def encoded(self, split) -> List[bytes]:
        split = self.resolve_split(split)
        data, offsets = self._arrays[f"{split}_bytes"], self._arrays[f"{split}_offsets"]
        return [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]

    def read(self, split, process_index, process_count, shuffle_seed=None, lazy=False):
        split = self.resolve_split(split)
        n = self.split_size(split)
        idx = np.arange(process_index, n, process_count)
        images = self.encoded(split)
        ds = tf.data.Dataset.from_tensor_slices({
            "image": [images[i] for i in idx],
            "label": self._arrays[f"{split}_labels"][idx].astype(np.int32),
            "id": [f"demo/{split}/{i}" for i in idx]})
        if shuffle_seed is not None:
            ds = ds.shuffle(len(idx), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds


# ----------------------------------------------------------------------------------------------
# TFDS.


def _not_prepared_message(name, data_dir_used, data_dir_cfg):
    # a real path in every command, so that they can be copied as they are
    shown = (data_dir_cfg or os.environ.get("TFDS_DATA_DIR")
             or os.path.expanduser("~/tensorflow_datasets"))
    if name.split("/")[0] == "imagenet2012":
        how = (f"ImageNet must be downloaded by hand: put ILSVRC2012_img_train.tar and "
               f"ILSVRC2012_img_val.tar into {shown}/downloads/manual/ and run "
               f"`tfds build imagenet2012 --data_dir {shown}`")
    else:
        how = (f"prepare it once with `tfds build {name} --data_dir {shown}` on a machine with "
               f"internet access (then copy the data_dir), or set data.download=True")
    where = (f"data_dir={shown!r}" if data_dir_cfg else
             f"TFDS's default data_dir {shown!r} (data.data_dir is not set)")
    looked = f" (looked in {data_dir_used!r})" if data_dir_used else ""
    return (f"TFDS dataset {name!r} is not prepared in {where}{looked}. To fix: {how}; or "
            "point data.data_dir at the directory that holds it.")


class TFDSSource(Source):

    def __init__(self, name: str, data_dir: Optional[str], download: bool = False):
        tfds = _tf.tfds()
        self.description = f"TFDS dataset {name!r}"
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ConfigError(
                f"Unknown dataset data.name={name!r}: it is not a TFDS dataset name and no "
                f"prepared copy was found in data_dir={data_dir!r}. Use a TFDS name (e.g. "
                "'imagenet2012', 'cifar10'), 'demo', or data.folder=ROOT for an image folder. "
                f"({str(e).splitlines()[0]})") from None
        if not builder.is_prepared():
            if not download:
                raise MissingPathError(_not_prepared_message(name, builder.data_dir, data_dir))
            builder.download_and_prepare()
        self.builder = builder
        info = builder.info
        keys = info.supervised_keys or ("image", "label")
        self.image_key, self.label_key = keys[0], keys[1]
        if self.image_key not in info.features or self.label_key not in info.features:
            raise DataError(f"{self.description} has no (image, label) features: "
                             f"{list(info.features.keys())}.")
        label = info.features[self.label_key]
        self.num_classes = int(label.num_classes)
        self.class_names = list(label.names)
        shape = info.features[self.image_key].shape
        self.image_size_native = (int(shape[0]) if shape[0] is not None and shape[0] == shape[1]
                                  else None)
        self.max_side = (max(shape[:2]) if None not in shape[:2] else None)
        self.splits = list(info.splits.keys())

    def resolve_split(self, split):
        base = split.split("[")[0]
        if base in self.splits:
            return split
        raise ConfigError(f"{self.description} has no split {split!r}; available splits: "
                         f"{sorted(self.splits)} (imagenet2012's eval split is 'validation'). "
                         "Set data.train_split / data.eval_split.")

    def _subsplits(self, split, process_count):
        return _tf.tfds().even_splits(self.resolve_split(split), n=process_count,
                                   drop_remainder=False)

    def split_size(self, split):
        return int(self.builder.info.splits[self.resolve_split(split)].num_examples)

    def shard_sizes(self, split, process_count):
        return [int(self.builder.info.splits[s].num_examples)
                for s in self._subsplits(split, process_count)]

    def read(self, split, process_index, process_count, shuffle_seed=None, lazy=False):
        tfds = _tf.tfds()
        sub = self._subsplits(split, process_count)[process_index]
        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, add_tfds_id=True)
        ds = self.builder.as_dataset(
            split=sub, shuffle_files=shuffle_seed is not None, read_config=read_config,
            decoders={self.image_key: tfds.decode.SkipDecoding()})
        return ds.map(lambda ex: {"image": ex[self.image_key],
                                  "label": tf.cast(ex[self.label_key], tf.int32),
                                  "id": ex["tfds_id"]}, num_parallel_calls=tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _folder(root):
    return FolderSource(root)


@functools.lru_cache(maxsize=4)
def _demo():
    return DemoSource()


@functools.lru_cache(maxsize=16)
def _tfds_source(name, data_dir, download):
    return TFDSSource(name, data_dir, download)


def get_source(cfg) -> Source:
    """The source that `cfg` (a validated data config) names; listings are cached per process."""
    if cfg.folder:
        source = _folder(os.path.abspath(os.path.expanduser(cfg.folder)))
        source.check(cfg.train_split, cfg.eval_split)
        return source
    if cfg.name == "demo":
        return _demo()
    return _tfds_source(cfg.name, cfg.get("data_dir"), bool(cfg.get("download", False)))


def clear_cache():
    """Forgets cached folder listings and builders (e.g. after files were added)."""
    _folder.cache_clear()
    _demo.cache_clear()
    _tfds_source.cache_clear()
