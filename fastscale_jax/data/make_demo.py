"""Builds the embedded demo dataset fastscale_jax/data/demo/cifar10_demo.npz.

    python -m fastscale_jax.data.make_demo --src /path/to/cifar10 [--train 1000 --test 200]
    FASTSCALE_CIFAR10=/path/to/cifar10 python -m fastscale_jax.data.make_demo

SRC is a CIFAR-10 image folder SRC/{train,test}/<class>/*.jpg. For every class, `--train` files of
SRC/train/<class> and `--test` files of SRC/test/<class> are drawn without replacement by
numpy.random.RandomState(seed) from the sorted file list (the draw is sorted again), and their
JPEG bytes are stored unchanged (no re-encoding) in one compressed .npz:

    class_names     str [C]           sorted class-folder names; label = index
    image_size      int               32
    <split>_bytes   uint8 [total]     concatenated JPEG files
    <split>_offsets int64 [N + 1]     image i is <split>_bytes[offsets[i]:offsets[i + 1]]
    <split>_labels  int16 [N]
    <split>_files   bytes [N]         source file, relative to SRC (ASCII)

Needs only numpy (no tensorflow).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

DEFAULT_SRC = os.environ.get("FASTSCALE_CIFAR10")  # a CIFAR-10 image folder (configs/cifar10.py)
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "cifar10_demo.npz")


def select(src: str, split: str, per_class: int, seed: int):
    classes = sorted(d for d in os.listdir(os.path.join(src, split))
                     if os.path.isdir(os.path.join(src, split, d)))
    files, labels = [], []
    for label, name in enumerate(classes):
        names = sorted(f for f in os.listdir(os.path.join(src, split, name))
                       if f.lower().endswith((".jpg", ".jpeg")))
        if len(names) < per_class:
            raise ValueError(f"{src}/{split}/{name} has {len(names)} images, need {per_class}")
        # One generator per (seed, split, class): the draw of a class does not depend on others.
        rng = np.random.RandomState([seed, 0 if split == "train" else 1, label])
        pick = np.sort(rng.choice(len(names), per_class, replace=False))
        files.extend(f"{split}/{name}/{names[i]}" for i in pick)
        labels.extend([label] * per_class)
    return classes, files, labels


def pack(src: str, files):
    blobs = []
    for f in files:
        with open(os.path.join(src, f), "rb") as fh:
            blobs.append(np.frombuffer(fh.read(), np.uint8))
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.concatenate(blobs), offsets


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=DEFAULT_SRC, required=DEFAULT_SRC is None,
                   help="CIFAR-10 image folder SRC/{train,test}/<class>/*.jpg "
                        "(default: $FASTSCALE_CIFAR10)")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--train", type=int, default=1000, help="train images per class")
    p.add_argument("--test", type=int, default=200, help="test images per class")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    arrays = {"image_size": np.int64(32)}
    class_names = None
    for split, per_class in (("train", args.train), ("test", args.test)):
        classes, files, labels = select(args.src, split, per_class, args.seed)
        if class_names is not None and classes != class_names:
            raise ValueError(f"class folders differ between splits: {class_names} vs {classes}")
        class_names = classes
        data, offsets = pack(args.src, files)
        arrays.update({f"{split}_bytes": data, f"{split}_offsets": offsets,
                       f"{split}_labels": np.asarray(labels, np.int16),
                       f"{split}_files": np.asarray(files, dtype="S")})
    arrays["class_names"] = np.asarray(class_names)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    n_train, n_test = len(arrays["train_labels"]), len(arrays["test_labels"])
    print(f"wrote {args.out}: {n_train} train + {n_test} test images, {len(class_names)} classes, "
          f"{os.path.getsize(args.out) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
