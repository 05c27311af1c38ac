"""Paired convergence parity with pycls: the machinery of `convergence_parity.py --paired`.

For one seed, both sides start from the *same* weights (pycls's init of the model, converted
with fastscale_jax.convert.from_pycls) and see the *same* examples in the same order with the
same augmentation draws: a `Plan` (per-epoch permutation, flip and crop-offset draws) is made
once in numpy, the batches are built from it in numpy, and the torch side trains on them
directly while ours gets them through an injected data module (`PlanData`, the input
pipeline's API, like tests/synthetic_data.py) into the trainer itself
(`train_and_evaluate`). The per-seed difference of test top-1 then isolates the training code
(step, optimizer, schedule, BN, loss, eval).

Baseline = pycls's behaviour on both sides: a fresh permutation per epoch, the image padded by
4 with the mean colour (zeros after normalising, as pycls pads its normalised CHW images),
crop offsets 0..7 (pycls 0.1.1's np.random.randint(0, h - size)), the demo JPEGs decoded by
Pillow, pycls's SE conv biases (torch's default uniform init). Ablations switch *our* side
back to today's default, one at a time ('all': every one), the torch side unchanged:

  shuffle   our order from a simulated tf.data shuffle buffer of 10,000 over the repeated,
            per-pass-shuffled stream (data.shuffle_mode='stream', the demo's pipeline)
  pad       pad the raw image with 0 (black) before normalising (data.pad_fill='black')
  se_bias   SE conv biases zeroed (our init) instead of pycls's
  crop      crop offsets 0..8 (9 positions; ours) instead of 0..7
  decoder   the JPEGs decoded by TensorFlow (our pipeline) instead of Pillow

Control (--control): a second torch run per seed from the same weights times
1 + 1e-6 N(0, 1), on the same batches: pycls against itself after a change of a few float32
roundings. The spread of its paired difference is the floor no trainer can beat at this
length of training: float32 rounding grows through training until two runs from the same
start differ as much as two seeds do. Test set (--test-dir): the demo's 2,000 test images, or
a CIFAR-10 test folder (../shared/data/cifar10/test: 10,000), which shrinks the part of the
spread that is only the sampling of test images.

The flips and offsets are drawn as uniforms per stream position and mapped to each side's
range, so an ablation changes only what it names. Model definitions and recipes: FAMILIES.
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import os
import shutil
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(os.path.dirname(HERE), "fastscale_jax", "data", "demo", "cifar10_demo.npz")
CIFAR_MEAN = (125.3, 123.0, 113.9)
CIFAR_STD = (63.0, 62.1, 66.7)
NUM_CLASSES = 10
PAD = 4
STREAM_BUFFER = 10_000
ABLATIONS = ("shuffle", "pad", "se_bias", "crop", "decoder")
JITTER = 1e-6   # relative size of the control's weight change (float32 eps is 1.2e-7)

# The two families: the model (pycls cfg keys) and its recipe. RegNetY: as
# convergence_parity.py. EffNet: pycls's EN-B0 (configs/dds_baselines/effnet/EN-B0_dds_8gpu:
# stem 32, strides 1,2,2,2,1,2,1, depths 1,2,2,3,3,4,1, widths 16..320, exp 1,6,..., kernels
# 3,3,5,3,5,5,3, head 1280; SGD momentum 0.9 Nesterov, BASE_LR 0.4 at batch 256 -> 0.2 at 128,
# cosine, weight decay 1e-5, no warmup, no dropout / drop-connect) scaled down: widths and
# stem / head about /2 (stem 16, widths 8, 16, 24, 40, 56, 96, 160, head 640), depths
# 1,1,1,2,2,2,1; label smoothing 0.1 (as the RegNetY recipe here).
FAMILIES = {
    "regnety": dict(model=dict(depth=8, w0=16, wa=16.0, wm=2.0, group_w=8),
                    recipe=dict(lr=0.1, wd=5e-4, warmup_epochs=1.0, warmup_factor=0.1,
                                label_smoothing=0.1)),
    "effnet": dict(model=dict(stem_w=16, depths=(1, 1, 1, 2, 2, 2, 1),
                              widths=(8, 16, 24, 40, 56, 96, 160),
                              strides=(1, 2, 2, 2, 1, 2, 1), exp_ratios=(1, 6, 6, 6, 6, 6, 6),
                              kernels=(3, 3, 5, 3, 5, 5, 3), head_w=640),
                   recipe=dict(lr=0.2, wd=1e-5, warmup_epochs=0.0, warmup_factor=0.1,
                               label_smoothing=0.1)),
}


def family_args(family: str, *, epochs: int = 5, batch: int = 128, limit: int = 0,
                threads: int = 2, **model) -> argparse.Namespace:
    """The settings convergence_parity's helpers (jax_config, lr_at) read, for `family`."""
    f = FAMILIES[family]
    return argparse.Namespace(family=family, epochs=epochs, batch=batch, limit=limit,
                              threads=threads, no_se=False, **f["recipe"],
                              **dict(f["model"], **model))


def steps_per_epoch(args, num_train: int = 10_000) -> int:
    full = num_train // args.batch
    return min(full, args.limit) if args.limit > 0 else full


# --------------------------------------------------------------------------- models
def pycls_model(args):
    """pycls 0.1.1's model class for `args` (its global cfg set here); pycls's own init."""
    from pycls.core.config import cfg

    cfg.MODEL.NUM_CLASSES = NUM_CLASSES
    cfg.BN.EPS, cfg.BN.MOM, cfg.BN.ZERO_INIT_FINAL_GAMMA = 1e-5, 0.1, False
    cfg.TRAIN.IM_SIZE = 32
    if args.family == "regnety":
        from pycls.models.regnet import RegNet

        cfg.MODEL.TYPE = "regnet"
        cfg.REGNET.DEPTH, cfg.REGNET.W0, cfg.REGNET.WA = args.depth, args.w0, args.wa
        cfg.REGNET.WM, cfg.REGNET.GROUP_W = args.wm, args.group_w
        cfg.REGNET.STEM_TYPE, cfg.REGNET.SE_ON = "res_stem_cifar", True
        return RegNet
    from pycls.models.effnet import EffNet

    cfg.MODEL.TYPE = "effnet"
    cfg.EN.STEM_W, cfg.EN.HEAD_W, cfg.EN.SE_R = args.stem_w, args.head_w, 0.25
    cfg.EN.DEPTHS, cfg.EN.WIDTHS = list(args.depths), list(args.widths)
    cfg.EN.STRIDES, cfg.EN.EXP_RATIOS = list(args.strides), list(args.exp_ratios)
    cfg.EN.KERNELS, cfg.EN.DC_RATIO, cfg.EN.DROPOUT_RATIO = list(args.kernels), 0.0, 0.0
    return EffNet


def our_spec(args):
    if args.family == "regnety":
        from fastscale_jax import regnet_spec

        return regnet_spec("RegNetY-parity", w_a=args.wa, w_0=args.w0, w_m=args.wm,
                           depth=args.depth, group_w=args.group_w, se_r=0.25,
                           stem_type="res_stem_cifar", resolution=32, test_resolution=32,
                           num_classes=NUM_CLASSES)
    from fastscale_jax.families.effnet import EffNetSpec

    return EffNetSpec(name="EfficientNet-parity", stem_w=args.stem_w, depths=args.depths,
                      widths=args.widths, strides=args.strides,
                      exp_ratios=tuple(float(e) for e in args.exp_ratios),
                      kernels=args.kernels, se_r=0.25, head_w=args.head_w,
                      num_classes=NUM_CLASSES, resolution=32, test_resolution=32)


def check_same_model(args) -> dict:
    """Both sides' flops / params / acts at 32 px; ValueError when they differ."""
    from fastscale_jax.complexity import complexity

    cx = pycls_model(args).complexity({"h": 32, "w": 32, "flops": 0, "params": 0, "acts": 0})
    theirs = {k: int(cx[k]) for k in ("flops", "params", "acts")}
    ours = {k: int(v) for k, v in complexity(our_spec(args)).items() if k in theirs}
    if ours != theirs:
        raise ValueError(f"the two {args.family} models differ: ours {ours}, pycls {theirs}")
    return theirs


def initial_weights(args, seed: int):
    """(pycls model from its init under torch.manual_seed(seed), its state dict)."""
    import torch

    torch.manual_seed(seed)
    model = pycls_model(args)()
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def convert(args, state_dict, *, zero_se_bias: bool = False) -> dict:
    from fastscale_jax.convert import from_pycls

    sd = dict(state_dict)
    if zero_se_bias:
        sd = {k: (v * 0 if ".se.f_ex." in k and k.endswith(".bias") else v)
              for k, v in sd.items()}
    return from_pycls(sd, our_spec(args))


# --------------------------------------------------------------------------- data
def _decode(blobs, decoder: str) -> np.ndarray:
    if decoder == "pil":
        from PIL import Image

        return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
    import tensorflow as tf

    return np.stack([tf.io.decode_image(b, channels=3, expand_animations=False).numpy()
                     for b in blobs])


def load_images(decoder: str = "pil", path: str = DEMO, test_dir: str = "") -> dict:
    """The demo set decoded by Pillow ('pil') or TensorFlow ('tf', as our pipeline does):
    {split: (uint8 [N, 32, 32, 3] RGB, int64 labels)}. With `test_dir` (a class-folder tree,
    e.g. ../shared/data/cifar10/test: 10,000 images), the test split comes from there."""
    out = {}
    with np.load(path, allow_pickle=False) as z:
        classes = [str(c) for c in z["class_names"]]
        for split in ("train", "test"):
            data, offs = z[f"{split}_bytes"], z[f"{split}_offsets"]
            blobs = [data[offs[i]:offs[i + 1]].tobytes() for i in range(len(offs) - 1)]
            out[split] = (_decode(blobs, decoder), z[f"{split}_labels"].astype(np.int64))
    if test_dir:
        found = sorted(d for d in os.listdir(test_dir)
                       if os.path.isdir(os.path.join(test_dir, d)))
        if found != classes:
            raise SystemExit(f"error: {test_dir} has class folders {found}, the demo set "
                             f"{classes}; give a CIFAR-10 test folder")
        blobs, labels = [], []
        for label, name in enumerate(classes):
            folder = os.path.join(test_dir, name)
            for fname in sorted(os.listdir(folder)):
                with open(os.path.join(folder, fname), "rb") as f:
                    blobs.append(f.read())
                labels.append(label)
        out["test"] = (_decode(blobs, decoder), np.asarray(labels, np.int64))
    return out


def stream_order(rng, n: int, length: int, buffer: int = STREAM_BUFFER) -> np.ndarray:
    """`length` indices as our default pipeline orders them: a fresh permutation per pass
    (the demo source's file shuffle) repeated, through a shuffle buffer of `buffer`
    (tf.data's: fill, then emit a random slot and refill it with the next element)."""
    passes = -(-(length + buffer) // n)
    stream = np.concatenate([rng.permutation(n) for _ in range(passes)])
    buf, nxt = list(stream[:buffer]), buffer
    out = np.empty(length, np.int64)
    for k in range(length):
        j = int(rng.integers(len(buf)))
        out[k] = buf[j]
        buf[j] = stream[nxt]
        nxt += 1
    return out


class Plan:
    """Every draw of a seed's run: per-epoch permutations (pycls) or the stream order (ours,
    'shuffle' ablation), and per stream position a flip uniform and two crop uniforms.
    `side(...)` maps them to one side's indices, flips and crop offsets per step."""

    def __init__(self, seed: int, n: int, epochs: int, spe: int, batch: int):
        rng = np.random.default_rng([seed, 26])
        self.epochs, self.spe, self.batch, self.n = epochs, spe, batch, n
        steps = epochs * spe
        self.per_pass = np.stack([rng.permutation(n)[:spe * batch] for _ in range(epochs)])
        self.u_flip, self.u_y, self.u_x = (rng.random((steps, batch)) for _ in range(3))
        self._stream_seed = [seed, 27]

    def side(self, *, shuffle: str = "per_pass", positions: int = 2 * PAD):
        """{'idx', 'flip', 'oy', 'ox'}: [steps, batch] arrays; `positions` crop offsets per
        axis (8: 0..7 as pycls 0.1.1; 9: 0..8)."""
        steps = self.epochs * self.spe
        if shuffle == "per_pass":
            idx = self.per_pass.reshape(steps, self.batch)
        else:
            rng = np.random.default_rng(self._stream_seed)
            idx = stream_order(rng, self.n, steps * self.batch).reshape(steps, self.batch)
        return {"idx": idx, "flip": self.u_flip < 0.5,
                "oy": np.floor(self.u_y * positions).astype(np.int64),
                "ox": np.floor(self.u_x * positions).astype(np.int64)}


def normalise(x):
    return (x.astype(np.float32) - np.float32(CIFAR_MEAN)) / np.float32(CIFAR_STD)


def make_batch(images, draws: dict, step: int, pad_fill: str = "mean") -> np.ndarray:
    """float32 NHWC batch of `step`: flip, pad 4 (mean colour = 0 after normalising, or the
    raw image with black), crop, normalised."""
    idx = draws["idx"][step]
    x = images[idx]
    x = np.where(draws["flip"][step][:, None, None, None], x[:, :, ::-1], x)
    width = ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0))
    x = np.pad(normalise(x), width) if pad_fill == "mean" else normalise(np.pad(x, width))
    h, w = images.shape[1:3]
    oy, ox = draws["oy"][step], draws["ox"][step]
    return np.stack([x[i, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(len(idx))])


class PlanData:
    """An injected data module for our trainer: the batches of a Plan, then the test set."""

    def __init__(self, train, test, draws, pad_fill: str = "mean", num_eval=None):
        self.train_x, self.train_y = train
        self.test_x, self.test_y = test[0][:num_eval], test[1][:num_eval]
        self.draws, self.pad_fill = draws, pad_fill

    def dataset_info(self, data_cfg=None) -> dict:
        return {"num_classes": NUM_CLASSES, "num_train": len(self.train_y),
                "num_eval": len(self.test_y), "image_size_native": 32}

    def train_iterator(self, data_cfg=None, *, global_batch_size, image_size, seed=0,
                       skip_batches=0, **_):
        import jax

        d = jax.local_device_count()
        step = int(skip_batches)
        while step < len(self.draws["idx"]):
            x = make_batch(self.train_x, self.draws, step, self.pad_fill)
            y = self.train_y[self.draws["idx"][step]].astype(np.int32)
            assert len(y) == global_batch_size, (len(y), global_batch_size)
            yield {"image": x.reshape(d, -1, *x.shape[1:]), "label": y.reshape(d, -1)}
            step += 1

    def eval_iterator(self, data_cfg=None, *, global_batch_size, image_size, **_):
        import jax

        d = jax.local_device_count()
        x_all, n = normalise(self.test_x), len(self.test_y)
        batches = []
        for k in range(0, n, global_batch_size):
            idx = np.arange(k, k + global_batch_size)
            mask = idx < n
            idx = np.where(mask, idx, 0)
            batches.append({"image": x_all[idx].reshape(d, -1, 32, 32, 3),
                            "label": self.test_y[idx].astype(np.int32).reshape(d, -1),
                            "mask": mask.reshape(d, -1)})
        return batches


# --------------------------------------------------------------------------- our side
def our_run(args, start: dict, data: PlanData, workdir: str, seed: int = 0) -> dict:
    """Our trainer (train_and_evaluate) from the variables `start` on `data`'s batches:
    {'top1': per epoch, 'losses': per step, 'wall_s'}. The trainer's fresh init is replaced
    by `start` (the state is built by train.state.new_state, as the trainer's own)."""
    from convergence_parity import jax_config
    from fastscale_jax.train import state as state_lib
    from fastscale_jax.train.loop import train_and_evaluate

    def create_state(model, tx, *, image_size, seed, ema):
        fresh = original(model, tx, image_size=image_size, seed=seed, ema=ema)
        return state_lib.new_state(start, tx, rng=fresh.rng, ema=ema)

    c = jax_config(args, seed)
    shutil.rmtree(workdir, ignore_errors=True)
    original = state_lib.create_state
    state_lib.create_state = create_state
    t0 = time.time()
    try:
        res = train_and_evaluate(c, workdir, data=data, spec=our_spec(args))
    finally:
        state_lib.create_state = original
    import json

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    evals = sorted((r["step"], r["top1"]) for r in rows if r["split"] == "eval")
    return {"top1": [v for _, v in evals], "losses": [float(x) for x in res["losses"]],
            "wall_s": time.time() - t0}


# --------------------------------------------------------------------------- torch side
def torch_run(args, model, images, draws, *, steps=None, dtype="float32", evaluate=True):
    """pycls's model and optimizer (construct_optimizer) trained on the plan's batches by a
    loop written here (lr per step by pycls's formula, label-smoothed CE)."""
    import torch
    from convergence_parity import lr_at, smoothed_ce
    from pycls.core import optimizer as pycls_optim
    from pycls.core.config import cfg

    torch.set_num_threads(args.threads)
    if dtype == "float64":
        model = model.double()
    tdt = torch.float64 if dtype == "float64" else torch.float32
    cfg.OPTIM.BASE_LR, cfg.OPTIM.MOMENTUM, cfg.OPTIM.NESTEROV = args.lr, 0.9, True
    cfg.OPTIM.DAMPENING, cfg.OPTIM.WEIGHT_DECAY = 0.0, args.wd
    cfg.BN.USE_CUSTOM_WEIGHT_DECAY = False
    opt = pycls_optim.construct_optimizer(model)
    (x_train, y_train), (x_test, y_test) = images["train"], images["test"]
    spe = steps_per_epoch(args, len(y_train))
    total, warmup = spe * args.epochs, int(round(args.warmup_epochs * spe))
    steps = total if steps is None else steps
    losses, top1, t0 = [], [], time.time()
    model.train()
    for step in range(steps):
        lr = lr_at(step, peak=args.lr, total=total, warmup=warmup, factor=args.warmup_factor)
        for group in opt.param_groups:
            group["lr"] = lr
        xb = torch.from_numpy(make_batch(x_train, draws, step).transpose(0, 3, 1, 2).copy())
        yb = torch.from_numpy(y_train[draws["idx"][step]])
        loss = smoothed_ce(model(xb.to(tdt)), yb, args.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if evaluate and (step + 1) % spe == 0:
            top1.append(_torch_top1(model, normalise(x_test).transpose(0, 3, 1, 2), y_test,
                                    tdt))
    return {"top1": top1, "losses": losses, "wall_s": time.time() - t0}


def _torch_top1(model, x, y, dtype, batch: int = 500) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(dtype)
            correct += int((model(xb).argmax(dim=1).numpy() == y[i:i + batch]).sum())
    model.train()
    return correct / len(y)


# --------------------------------------------------------------------------- one seed
def variant_settings(name: str) -> dict:
    """Our side's settings for a variant: 'base' (pycls's behaviour), an ablation, 'all'."""
    on = set(ABLATIONS) if name == "all" else ({name} if name != "base" else set())
    unknown = on - set(ABLATIONS)
    if unknown:
        raise ValueError(f"unknown ablation {sorted(unknown)}; valid: {', '.join(ABLATIONS)}, all")
    return {"shuffle": "stream" if "shuffle" in on else "per_pass",
            "pad_fill": "black" if "pad" in on else "mean",
            "zero_se_bias": "se_bias" in on,
            "positions": 2 * PAD + 1 if "crop" in on else 2 * PAD,
            "decoder": "tf" if "decoder" in on else "pil"}


def jittered(model, seed: int, scale: float = JITTER):
    """A copy of `model` with every float tensor of its state times 1 + scale * N(0, 1)
    (numpy draws): a change the size of a few float32 roundings, for the control."""
    import torch

    rng = np.random.default_rng([seed, 28])
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for v in twin.state_dict().values():
            if v.is_floating_point():
                noise = rng.standard_normal(tuple(v.shape)).astype(np.float32)
                v.mul_(1 + scale * torch.from_numpy(noise))
    return twin


def run_seed(args, seed: int, *, variants=("base",), step_losses: bool = False,
             workdir: str = "/tmp/parity_paired", num_eval=None, test_dir: str = "",
             control: bool = False) -> dict:
    """The torch side and our variants for one seed from the same weights; with
    `step_losses`, a float64 torch run of the first epoch too; with `control`, a second torch
    run from the weights jittered by `jittered` (pycls against itself: the noise floor of the
    paired difference)."""
    images = {"pil": load_images("pil", test_dir=test_dir)}
    n = len(images["pil"]["train"][1])
    spe = steps_per_epoch(args, n)
    plan = Plan(seed, n, args.epochs, spe, args.batch)
    model, sd = initial_weights(args, seed)
    start64 = copy.deepcopy(model) if step_losses else None
    twin = jittered(model, seed) if control else None
    torch_draws = plan.side()
    test = (images["pil"]["test"][0][:num_eval], images["pil"]["test"][1][:num_eval])
    torch_images = {"train": images["pil"]["train"], "test": test}
    out = {"seed": seed, "steps_per_epoch": spe, "num_eval": len(test[1]),
           "torch": torch_run(args, model, torch_images, torch_draws)}
    if step_losses:
        out["torch64"] = torch_run(args, start64, torch_images, torch_draws, steps=spe,
                                   dtype="float64", evaluate=False)
    if control:
        out["torch_jitter"] = torch_run(args, twin, torch_images, torch_draws)
    for name in variants:
        s = variant_settings(name)
        if s["decoder"] not in images:
            images[s["decoder"]] = load_images(s["decoder"], test_dir=test_dir)
        im = images[s["decoder"]]
        data = PlanData(im["train"], im["test"], plan.side(shuffle=s["shuffle"],
                                                           positions=s["positions"]),
                        s["pad_fill"], num_eval=num_eval)
        start = convert(args, sd, zero_se_bias=s["zero_se_bias"])
        out[name] = our_run(args, start, data, os.path.join(workdir, f"{args.family}_{name}"),
                            seed)
        out[name]["settings"] = s
    return out


# --------------------------------------------------------------------------- statistics
def sd(values) -> float:
    """Sample standard deviation (ddof 1); 0 for one value."""
    v = np.asarray(values, np.float64)
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def t_interval(values, level: float = 0.95):
    """(mean, [low, high]) of the t-interval of the mean; [mean, mean] for one value."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, [m, m]
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * sd(v) / math.sqrt(len(v)))
    return m, [m - half, m + half]


def loss_agreement(a, b) -> dict:
    """max |a - b| at step 1 and over the steps both have; first step with |a - b| > 1e-4."""
    n = min(len(a), len(b))
    d = np.abs(np.asarray(a[:n], np.float64) - np.asarray(b[:n], np.float64))
    over = np.flatnonzero(d > 1e-4)
    return {"step1": float(d[0]), "max": float(d.max()), "steps": n,
            "first_step_over_1e-4": int(over[0]) + 1 if len(over) else None,
            "mean": float(d.mean())}


def summarise(runs: list) -> dict:
    """Per-epoch and final paired differences (points of top-1, ours - torch), ablations."""
    epochs = len(runs[0]["torch"]["top1"])
    sizes = {r.get("num_eval") for r in runs}
    if len(sizes) > 1:
        raise SystemExit(f"error: these seeds were evaluated on different test sets "
                         f"({sorted(map(str, sizes))} images); rerun them with one --test-dir")
    diffs = np.array([[100 * (r["base"]["top1"][e] - r["torch"]["top1"][e])
                       for e in range(epochs)] for r in runs])
    out = {"seeds": [r["seed"] for r in runs], "n": len(runs), "per_epoch": []}
    for e in range(epochs):
        m, ci = t_interval(diffs[:, e])
        out["per_epoch"].append({
            "epoch": e + 1, "diff_mean": m, "diff_ci95": ci,
            "ours_mean": float(np.mean([100 * r["base"]["top1"][e] for r in runs])),
            "torch_mean": float(np.mean([100 * r["torch"]["top1"][e] for r in runs]))})
    out["final_diff_mean"], out["final_diff_ci95"] = t_interval(diffs[:, -1])
    out["final_diff_per_seed"] = [float(x) for x in diffs[:, -1]]
    out["final_top1"] = {side: [100 * r[side]["top1"][-1] for r in runs]
                         for side in ("base", "torch")}
    spe = runs[0]["steps_per_epoch"]
    first = [r for r in runs if "torch64" in r]
    if first:
        r = first[0]
        o, t32, t64 = (r[k]["losses"][:spe] for k in ("base", "torch", "torch64"))
        out["step_losses"] = {"seed": r["seed"], "first_epoch_steps": spe,
                              "ours_vs_torch32": loss_agreement(o, t32),
                              "ours_vs_torch64": loss_agreement(o, t64),
                              "torch32_vs_torch64": loss_agreement(t32, t64)}
    out["step1_loss_absdiff"] = [abs(r["base"]["losses"][0] - r["torch"]["losses"][0])
                                 for r in runs]
    ctl = [r for r in runs if "torch_jitter" in r]
    if ctl:
        d = [100 * (r["torch_jitter"]["top1"][-1] - r["torch"]["top1"][-1]) for r in ctl]
        m, ci = t_interval(d)
        out["control"] = {"what": f"torch from weights x (1 + {JITTER:g} N(0,1)) minus torch",
                          "seeds": [r["seed"] for r in ctl], "final_diff_per_seed": d,
                          "final_diff_mean": m, "final_diff_ci95": ci,
                          "final_diff_sd": sd(d)}
    out["final_diff_sd"] = sd(diffs[:, -1])
    fixed = ("seed", "steps_per_epoch", "num_eval", "torch", "torch64", "torch_jitter", "base")
    names = list(dict.fromkeys(k for r in runs for k in r if k not in fixed))   # any seed's
    abl = {}
    for name in names:
        rs = [r for r in runs if name in r]
        vs_torch = [100 * (r[name]["top1"][-1] - r["torch"]["top1"][-1]) for r in rs]
        effect = [100 * (r[name]["top1"][-1] - r["base"]["top1"][-1]) for r in rs]
        (m1, c1), (m2, c2) = t_interval(vs_torch), t_interval(effect)
        abl[name] = {"seeds": [r["seed"] for r in rs], "settings": rs[0][name]["settings"],
                     "final_diff_vs_torch_mean": m1, "final_diff_vs_torch_ci95": c1,
                     "effect_vs_base_mean": m2, "effect_vs_base_ci95": c2}
    out["ablations"] = abl
    return out
