"""A short training run on the embedded CIFAR-10 demo set, and pmap vs shard_map agreement.

Both use the project's own step (fastscale_jax.train.step: make_train_body, make_eval_body,
Parallel) and optimizer (fastscale_jax.train.optim); the configs are plain attribute objects,
not ml_collections, and the data is read with numpy + Pillow or torchvision (no TensorFlow):
the demo file's JPEGs (fastscale_jax/data/demo/cifar10_demo.npz, 10k train / 2k test images)
are decoded once, then pad-4 random crops and horizontal flips are drawn per batch in numpy.
"""

from __future__ import annotations

import io
import math
import os
import time

import numpy as np

from accel_check.common import FAIL, OK, SKIP, optim_cfg, result, train_cfg

MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)  # CIFAR-10 channel mean / std (RGB)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)


def demo_file() -> str:
    import fastscale_jax

    return os.path.join(os.path.dirname(fastscale_jax.__file__), "data", "demo",
                        "cifar10_demo.npz")


def _jpeg_decoder():
    """bytes -> uint8 [H, W, 3]: Pillow, else torchvision.io (timm's dependency)."""
    try:
        from PIL import Image

        return lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
    except ImportError:
        pass
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        return lambda b: decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8),
                                     mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
    except ImportError as e:
        raise ImportError("decoding the demo JPEGs needs Pillow or torchvision: pip install "
                          "pillow") from e


def load_demo(split: str, limit: int | None = None):
    """(uint8 images [N, 32, 32, 3], int32 labels [N]) of the demo set's `split`;
    `limit` keeps the first `limit` images of a fixed random order."""
    decode = _jpeg_decoder()
    z = np.load(demo_file())
    data, offs = z[f"{split}_bytes"], z[f"{split}_offsets"]
    labels = z[f"{split}_labels"].astype(np.int32)
    idx = np.arange(len(labels))
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(0).permutation(len(idx))[:limit])
    imgs = np.stack([decode(data[offs[i]:offs[i + 1]].tobytes()) for i in idx])
    return imgs, labels[idx]


def normalize(images_u8):
    return (images_u8.astype(np.float32) / 255.0 - MEAN) / STD


def augment(padded, idx, rng):
    """Pad-4 random crops (padded is [N, 40, 40, 3]) with random horizontal flips, in numpy."""
    b, size = len(idx), padded.shape[1] - 8
    oy, ox = rng.integers(0, 9, b), rng.integers(0, 9, b)
    flip = rng.random(b) < 0.5
    ar = np.arange(size)
    rows = oy[:, None] + ar
    cols = ox[:, None] + np.where(flip[:, None], size - 1 - ar, ar)
    return padded[idx[:, None, None], rows[:, :, None], cols[:, None, :]]


def _per_device(batch: dict, n: int) -> dict:
    return {k: v.reshape((n, -1) + v.shape[1:]) for k, v in batch.items()}


def _setup(spec, p, total_steps):
    """model, tx, schedule, step functions and Parallel for a plan."""
    import jax

    from fastscale_jax.models import build_model
    from fastscale_jax.train import optim
    from fastscale_jax.train.step import Parallel, make_eval_body, make_train_body

    model = build_model(spec, dtype=p["dtype"])
    ocfg = optim_cfg(base_lr=p["lr"], base_batch_size=p["batch"], weight_decay=p["wd"])
    sched = optim.make_schedule(ocfg, lr=optim.peak_lr(ocfg, p["batch"]), total_steps=total_steps,
                                warmup=p.get("warmup_steps", 0))
    tx = optim.make_optimizer(ocfg, sched)
    par = Parallel(p["parallel"])
    tcfg = train_cfg(label_smoothing=p.get("label_smoothing", 0.0))
    body = make_train_body(model, tx, sched, tcfg, spec.num_classes)
    n = jax.local_device_count()
    if p["batch"] % n:
        raise ValueError(f"batch {p['batch']} is not divisible by {n} devices")
    return model, tx, par, par.train_step(body), par.eval_step(make_eval_body(model, ema=False)), n


def _evaluate(par, eval_step, st, images, labels, n, eval_batch):
    tot = {"top1": 0.0, "count": 0.0, "loss": 0.0}
    for i in range(0, len(labels), eval_batch):
        x, y = normalize(images[i:i + eval_batch]), labels[i:i + eval_batch]
        pad = (-len(y)) % n
        mask = np.r_[np.ones(len(y), np.float32), np.zeros(pad, np.float32)]
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        y = np.r_[y, np.zeros(pad, np.int32)]
        m = par.get_metrics(eval_step(st, par.put_batch(
            _per_device({"image": x, "label": y, "mask": mask}, n))))
        for k in tot:
            tot[k] += m[k]
    return tot["top1"] / tot["count"], tot["loss"] / tot["count"]


def check_cifar(plan, threads: int = 1) -> dict:
    """Train the plan's model on the demo set for a fixed number of steps (stopping early at
    max_seconds) and evaluate top-1 on the 2000 demo test images; ok if >= target_top1."""
    import jax

    from fastscale_jax.train.state import create_state

    p = plan["cifar"]
    t0 = time.perf_counter()
    x_train, y_train = load_demo("train", p.get("train_limit"))
    x_test, y_test = load_demo("test")
    decode_s = time.perf_counter() - t0
    spec = p["spec"]
    model, tx, par, train_step, eval_step, n = _setup(spec, p, p["steps"])
    st = par.put_state(create_state(model, tx, image_size=spec.resolution, seed=0, ema=False))
    padded = np.pad(x_train, ((0, 0), (4, 4), (4, 4), (0, 0)))
    rng = np.random.default_rng(0)
    order, pos = rng.permutation(len(y_train)), 0
    losses, step, t_first, t_start = [], 0, None, time.perf_counter()
    for step in range(p["steps"]):
        if pos + p["batch"] > len(order):
            order, pos = rng.permutation(len(y_train)), 0
        idx = order[pos:pos + p["batch"]]
        pos += p["batch"]
        batch = {"image": normalize(augment(padded, idx, rng)), "label": y_train[idx]}
        st, metrics = train_step(st, par.put_batch(_per_device(batch, n)))
        if step == 0:
            losses.append(par.get_metrics(metrics)["loss"])  # waits: compile + first step
            t_first, t_start = time.perf_counter() - t_start, time.perf_counter()
        elif (step + 1) % p["log_every"] == 0:
            losses.append(par.get_metrics(metrics)["loss"])
            if not math.isfinite(losses[-1]) or time.perf_counter() - t_start > p["max_seconds"]:
                break
    jax.block_until_ready(st)
    train_s = time.perf_counter() - t_start
    steps_done = step + 1
    top1, test_loss = _evaluate(par, eval_step, st, x_test, y_test, n, p["eval_batch"])
    images = steps_done * p["batch"]
    capped = steps_done < p["steps"] and math.isfinite(losses[-1])
    data = {"model": spec.name, "dtype": p["dtype"], "batch": p["batch"], "steps": steps_done,
            "stopped_by_time_cap": capped, "max_seconds": p["max_seconds"],
            "steps_planned": p["steps"], "epochs": images / len(y_train),
            "train_images": len(y_train), "test_images": len(y_test), "top1": top1,
            "test_loss": test_loss, "target_top1": p["target_top1"], "losses": losses,
            "decode_s": decode_s, "first_step_s": t_first, "train_s": train_s,
            "images_per_s": (images - p["batch"]) / max(train_s, 1e-9), "devices": n,
            "parallel": p["parallel"]}
    summary = (f"top-1 {top1:.1%} (target {p['target_top1']:.0%}) after {steps_done} steps "
               f"({data['epochs']:.1f} epochs) in {train_s:.0f}s, {data['images_per_s']:.0f} img/s"
               + (f"; stopped at the {p['max_seconds']}s cap" if capped else ""))
    if not all(math.isfinite(v) for v in losses):
        return result(FAIL, f"non-finite training loss: {losses[-1]}", **data)
    return result(OK if top1 >= p["target_top1"] else FAIL, summary, **data)


def _run_mode(spec, p, mode, host_state, batches):
    import jax

    q = dict(p, parallel=mode)
    _, _, par, train_step, _, n = _setup(spec, q, len(batches))
    st = par.put_state(host_state)
    losses = []
    for b in batches:
        st, m = train_step(st, par.put_batch(_per_device(b, n)))
        losses.append(par.get_metrics(m)["loss"])
    return losses, jax.tree_util.tree_leaves(par.get_state(st).params)


def check_parallel(plan, threads: int = 1) -> dict:
    """The same steps from the same state and batches under pmap and under jit(shard_map)."""
    import jax

    from fastscale_jax.train.state import create_state

    p = plan["parallel"]
    n = jax.local_device_count()
    if n < 2:
        return result(SKIP, f"needs >= 2 local devices, this machine has {n}")
    spec = p["spec"]
    model, tx, _, _, _, _ = _setup(spec, dict(p, parallel="pmap"), p["steps"])
    host_state = create_state(model, tx, image_size=spec.resolution, seed=0, ema=False)
    rng = np.random.default_rng(0)
    res = spec.resolution
    batches = [{"image": rng.standard_normal((p["batch"], res, res, 3), dtype=np.float32),
                "label": rng.integers(0, spec.num_classes, p["batch"]).astype(np.int32)}
               for _ in range(p["steps"])]
    out = {m: _run_mode(spec, p, m, host_state, batches) for m in ("pmap", "shard_map")}
    (lp, pp), (ls, ps) = out["pmap"], out["shard_map"]
    loss_diff = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(lp, ls))
    param_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(pp, ps))
    data = {"devices": n, "steps": p["steps"], "batch": p["batch"], "losses_pmap": lp,
            "losses_shard_map": ls, "max_loss_rel_diff": loss_diff,
            "max_param_abs_diff": param_diff, "tol": p["tol"]}
    ok = loss_diff <= p["tol"] and param_diff <= p["tol"] and all(map(math.isfinite, lp))
    return result(OK if ok else FAIL,
                  f"{n} devices, {p['steps']} steps: loss diff {loss_diff:.1e}, param diff "
                  f"{param_diff:.1e} (tol {p['tol']:g})", **data)

