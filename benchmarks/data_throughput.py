"""Throughput of the training input pipeline (fastscale_jax.data) at 224 px, per CPU core.

    python benchmarks/data_throughput.py                 # ~1-2 min on a 2-core machine
    python benchmarks/data_throughput.py --seconds 20 --images 1024 --src-size 500x375

Builds a temporary image folder of JPEGs at ImageNet-like size (default 500x375, quality 90):
CIFAR-10 images from ../shared/data/cifar10 (beside the repo) upsampled, plus noise so that the files have
ImageNet-like sizes (~100 kB); 64 distinct images copied to --images files (random noise images
if CIFAR is absent). Then times `pipeline.build_train_dataset` (read file -> random-resized-crop
decode -> resize 224 -> flip [-> RandAugment 2 layers, m9, mstd0.5] -> normalise -> batch ->
numpy), with and without RandAugment, in two settings:
  * 1 thread:  tf.data private thread pool of 1 and num_parallel_calls=1;
  * all cores: AUTOTUNE over every core available to this process, with data.deterministic
    (the default: same seed, same stream) and without it (tf.data may hand out elements in
    the order its threads finish them).
Besides wall-clock images/s it reports images per CPU-second (user + system time of this
process): the per-core rate, which other jobs on a shared machine do not distort much.
The files sit in the page cache, so this measures CPU work, not disk or network reads.

Feeding estimate (an estimate, not a measurement): RegNetY-4.0GF trains at roughly 2500-3000
images/s on one H100 in bf16, so a host with C cores per GPU must deliver ~3000 / C images/s per
core (~190 on a 16-core-per-GPU machine) for the GPU not to wait.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CIFAR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                     "cifar10", "train")
H100_IMAGES_PER_S = 3000  # RegNetY-4.0GF bf16 training on one H100: an estimate


def make_folder(root, n, width, height, quality=90, unique=64, seed=0):
    """ROOT/train/<class>/*.jpg (n files, `unique` distinct images, width x height), ROOT/val."""
    from fastscale_jax.data._tf import tf as _tf

    tf = _tf()
    rng = np.random.RandomState(seed)
    classes = sorted(os.listdir(CIFAR)) if os.path.isdir(CIFAR) else [f"c{i}" for i in range(10)]
    sizes, encoded = [], []
    for i in range(n):
        cls = classes[i % len(classes)]
        if i < unique:
            src = os.path.join(CIFAR, cls, f"{i // len(classes):04d}.jpg")
            if os.path.exists(src):
                small = tf.io.decode_jpeg(tf.io.read_file(src), channels=3)
            else:
                small = tf.constant(rng.randint(0, 256, (32, 32, 3)), tf.uint8)
            big = tf.image.resize(tf.cast(small, tf.float32), [height, width], method="bicubic")
            big = big + rng.normal(0, 10, big.shape).astype(np.float32)
            encoded.append(tf.io.encode_jpeg(tf.cast(tf.clip_by_value(big, 0, 255), tf.uint8),
                                             quality=quality).numpy())
        data = encoded[i % unique]
        for split in ("train",) + (("val",) if i < len(classes) else ()):
            os.makedirs(os.path.join(root, split, cls), exist_ok=True)
            with open(os.path.join(root, split, cls, f"{i:05d}.jpg"), "wb") as f:
                f.write(data)
        sizes.append(len(data))
    return float(np.mean(sizes))


def measure(root, randaugment, threads, seconds, batch=32, deterministic=True):
    from fastscale_jax.data import config, pipeline
    from fastscale_jax.data._tf import tf as _tf

    tf = _tf()
    cfg = config.default_data_config()
    cfg.folder = root
    cfg.small_images = False
    cfg.num_parallel_calls = threads if threads else -1
    cfg.randaugment.num_layers = 2 if randaugment else 0
    cfg.deterministic = deterministic
    ds = pipeline.build_train_dataset(cfg, global_batch_size=batch, image_size=224, seed=0,
                                      process_index=0, process_count=1, local_device_count=1)
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    it = ds.as_numpy_iterator()
    warm_end = time.perf_counter() + min(4.0, seconds / 2)
    while time.perf_counter() < warm_end:  # fills the shuffle buffer, autotunes
        next(it)
    n, t0, c0 = 0, time.perf_counter(), _cpu_seconds()
    while time.perf_counter() - t0 < seconds:
        b = next(it)
        n += b["image"].shape[0] * b["image"].shape[1]
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return n / wall, n / cpu


def _cpu_seconds():
    """CPU time (user + system) of this process, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=512, help="JPEGs in the temp folder")
    p.add_argument("--src-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row")
    p.add_argument("--folder", default="", help="use this image folder instead of a temp one")
    args = p.parse_args(argv)

    from fastscale_jax.data._tf import tf as _tf

    tf = _tf()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tmp = None
    if args.folder:
        root, mean_kb = args.folder, float("nan")
    else:
        tmp = tempfile.mkdtemp(prefix="fastscale_bench_")
        root = tmp
        w, h = map(int, args.src_size.lower().split("x"))
        t = time.perf_counter()
        mean_kb = make_folder(root, args.images, w, h) / 1e3
        print(f"made {args.images} JPEGs {w}x{h} (mean {mean_kb:.0f} kB) in "
              f"{time.perf_counter() - t:.1f}s under {root}")
    try:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"host: {platform.processor() or platform.machine()}, {cores} cores available, "
              f"load average {load:.2f}; tensorflow {tf.__version__}, python "
              f"{platform.python_version()}")
        rows = []
        for ra in (False, True):
            # data.deterministic (the default) vs tf.data free to reorder: only all-cores
            # runs can reorder, so only they are timed both ways
            for threads, det in ((1, True), (0, True), (0, False)):
                wall_rate, cpu_rate = measure(root, ra, threads, args.seconds,
                                              deterministic=det)
                rows.append((("RRC+flip+RandAugment(2,m9,mstd0.5)" if ra else "RRC+flip"),
                             "1 thread" if threads else f"all {cores} cores",
                             "yes" if det else "no", wall_rate, cpu_rate))
        print()
        print("images/s: wall clock; per CPU-second: images per second of CPU time this process "
              "used\n(the per-core rate; it does not depend on other processes' load). "
              "deterministic: data.deterministic.")
        print(f"{'train transform @224':38s} {'threads':>12s} {'deterministic':>13s} "
              f"{'images/s':>10s} {'per CPU-second':>15s}")
        for name, mode, det, rate, per_core in rows:
            print(f"{name:38s} {mode:>12s} {det:>13s} {rate:10.0f} {per_core:15.0f}")
        print()
        for c in (8, 12, 16, 24):
            print(f"to feed ~{H100_IMAGES_PER_S} img/s (RegNetY-4.0GF, 1 H100, bf16; estimate) "
                  f"with {c} cores per GPU: {H100_IMAGES_PER_S / c:.0f} img/s per core")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
