"""Convergence parity with pycls: the same RegNet, recipe and data trained by fastscale_jax's
trainer and by pycls 0.1.1's model in a minimal PyTorch (CPU) loop; per-epoch test top-1.

    python benchmarks/convergence_parity.py                      # unpaired: 3 seeds x 2 sides, 5 epochs
    python benchmarks/convergence_parity.py --epochs 1 --seeds 1 --limit 4   # smoke test
    python benchmarks/convergence_parity.py --sides torch --seeds 2
    python benchmarks/convergence_parity.py --seeds 6 --jobs 1 --threads 2   # one worker at a time
    python benchmarks/convergence_parity.py --seeds 6          # again, same --workdir: seeds 3..5 only
    python benchmarks/convergence_parity.py --collect --seeds 6   # summarise seeds 0..5 in --workdir
    python benchmarks/convergence_parity.py --paired             # paired: RegNetY + EffNet, 6 seeds
    python benchmarks/convergence_parity.py --paired --families regnety --ablations every \
        --ablation-seeds 2                                       # + ablations of our defaults

--paired (benchmarks/parity_paired.py): per seed the same initial weights and the same
batches (order, flips, crop offsets drawn once in numpy) on both sides; the mean paired
difference of top-1 and its 95% t-interval per epoch, first-epoch per-step losses against a
float64 torch run, and ablations that switch our side back to today's defaults. JSON to
--paired-out (benchmarks/convergence_parity_paired.json). The unpaired text below is the
default mode.

Model: a RegNetY built by pycls from its cfg (default REGNET.DEPTH 8, W0 16, WA 16, WM 2.0,
GROUP_W 8, SE on (SE_R 0.25), STEM_W 32, STEM_TYPE res_stem_cifar; 10 classes, 32 px: stages
of depths (1, 1, 3, 3) and widths (16, 32, 64, 128), 3.6 MF, 0.20M params, 97k acts; small
because pycls's grouped convs on a 2-core CPU take ~0.9 CPU-s per batch of 128 even at this
size) and the same spec in ours
(fastscale_jax.regnet_spec); flops, params and acts are compared before training and
the script stops if they differ.

Recipe, the same on both sides (per step on both sides):
  - SGD momentum 0.9, Nesterov, dampening 0 (torch: pycls's construct_optimizer; ours:
    optim.name='sgd'), weight decay on every parameter, BN and biases included (pycls
    default; ours: optim.wd_mask='all');
  - learning rate: pycls's get_epoch_lr formula evaluated at the fractional epoch
    step / steps_per_epoch, i.e. 0.5 * lr * (1 + cos(pi * step / total_steps)) times the
    warmup factor f + (1 - f) * step / warmup_steps during warmup (f = 0.1); pycls changes the
    lr once per epoch, both sides here change it every step (ours: optim.warmup_style='pycls');
  - softmax cross-entropy with label smoothing 0.1 (pycls 0.1.1 has none: written here);
  - batch 128, every epoch a fresh random order, last partial batch dropped (78 steps);
  - augmentation: horizontal flip (p 0.5) and a random 32x32 crop of the image padded by 4
    on each side; normalisation with pycls's CIFAR mean/std (125.3, 123.0, 113.9) /
    (63.0, 62.1, 66.7). Padding: the torch side pads *after* normalising, as pycls does (the
    pad is the mean colour); ours, with --our-data pycls (the default: recipes.pycls_data),
    pads with the mean colour too and draws a fresh permutation per epoch
    (data.pad_fill='mean', data.shuffle_mode='per_pass'); --our-data default pads the raw
    image black and shuffles with a buffer over the stream (our library defaults).
    Crop offsets: 0..8 on both sides (pycls 0.1.1's random_crop draws 0..7, an off-by-one
    not copied here);
  - BN momentum 0.1 (torch) = 0.9 (flax), eps 1e-5; pycls's init (ours mirrors it; pycls
    leaves the SE convs' biases at torch's default uniform init, ours zeros them);
  - eval: the 2000 demo test images, normalised, no crop; BN running statistics (no precise-BN).

Data: the embedded demo set (fastscale_jax/data/demo/cifar10_demo.npz: 10k train / 2k test
CIFAR-10 JPEGs). Ours decodes them with TensorFlow, the torch side with Pillow.

Independence: the torch side (schedule, augmentation, loss, loop) is written here with
numpy/torch and never calls fastscale_jax code. Each (side, seed) runs in its own
subprocess (torch.set_num_threads(--threads), default 1; XLA:CPU sizes its own pool), --jobs
of them at once (default one per core), each pinned to its own core.

Output: a table of per-epoch test top-1 (mean +- std over seeds) and train loss of both sides,
the final top-1 mean +- std, the difference and its standard error
sqrt(s_a^2 / n_a + s_b^2 / n_b), and the verdict |diff| <= 2 SE; JSON to --out.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEMO = os.path.join(ROOT, "fastscale_jax", "data", "demo", "cifar10_demo.npz")
CIFAR_MEAN = (125.3, 123.0, 113.9)   # pycls/datasets/cifar10.py (_MEAN, applied to R, G, B)
CIFAR_STD = (63.0, 62.1, 66.7)
NUM_CLASSES = 10
PAD = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="N seeds per side (default 3); --paired: N, or one N per --families "
                        "(default 6)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds first..first+N-1")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--limit", type=int, default=0,
                   help="train steps per epoch (0 = all: 10000 // batch); for smoke tests")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1,
                   help="peak learning rate at --batch (pycls's CIFAR configs: 0.1 at 128)")
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--warmup-factor", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--w0", type=int, default=16)
    p.add_argument("--wa", type=float, default=16.0)
    p.add_argument("--wm", type=float, default=2.0)
    p.add_argument("--group-w", type=int, default=8)
    p.add_argument("--no-se", action="store_true", help="RegNetX instead of RegNetY")
    p.add_argument("--our-data", default="pycls", choices=["pycls", "default"],
                   help="our pipeline's data settings: 'pycls' (recipes.pycls_data: a fresh "
                        "permutation per epoch, mean-colour padding; the fix of issue #26) or "
                        "'default' (shuffle buffer over the stream, black padding: before it)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--workdir", default="/tmp/convergence_parity")
    p.add_argument("--out", default=os.path.join(HERE, "convergence_parity.json"))
    p.add_argument("--no-step-check", action="store_true",
                   help="skip the one-step comparison from the same weights (see step_check)")
    p.add_argument("--collect", action="store_true",
                   help="only summarise the worker results already in --workdir")
    p.add_argument("--paired", action="store_true",
                   help="the paired design (benchmarks/parity_paired.py): per seed the same "
                        "initial weights and the same batches on both sides")
    p.add_argument("--families", nargs="+", default=["regnety", "effnet"],
                   choices=["regnety", "effnet"], help="--paired: model families")
    p.add_argument("--ablations", nargs="*", default=[],
                   help="--paired: our side switched back to today's default, each alone: "
                        "shuffle pad se_bias crop decoder, and 'all' (every one together); "
                        "'every' = all six")
    p.add_argument("--ablation-seeds", type=int, default=0,
                   help="--paired: run the ablations on the first N seeds only (0 = all)")
    p.add_argument("--ablation-families", nargs="+", default=["regnety"],
                   choices=["regnety", "effnet"], help="--paired: families of the ablations")
    p.add_argument("--test-dir", default="",
                   help="--paired: a CIFAR-10 test folder (class folders of JPEGs, e.g. "
                        "../shared/data/cifar10/test) to evaluate on instead of the demo's "
                        "2,000 test images")
    p.add_argument("--control", action="store_true",
                   help="--paired: also train torch from jittered weights (the noise floor)")
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                   help="workers run at once, each pinned to a core when > 1 (default: one "
                        "per core this process may use; give each --threads 1)")
    p.add_argument("--paired-out", default=os.path.join(HERE, "convergence_parity_paired.json"))
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)   # 'side:seed'
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [6 if args.paired else 3]
    return args


def steps_per_epoch(args) -> int:
    full = 10_000 // args.batch
    return min(full, args.limit) if args.limit > 0 else full


# --------------------------------------------------------------------------- the model
def pycls_model(args):
    """pycls 0.1.1's RegNet from its global cfg (set here), with pycls's own init."""
    from pycls.core.config import cfg
    from pycls.models.regnet import RegNet

    cfg.MODEL.TYPE, cfg.MODEL.NUM_CLASSES = "regnet", NUM_CLASSES
    cfg.REGNET.DEPTH, cfg.REGNET.W0, cfg.REGNET.WA = args.depth, args.w0, args.wa
    cfg.REGNET.WM, cfg.REGNET.GROUP_W = args.wm, args.group_w
    cfg.REGNET.STEM_TYPE, cfg.REGNET.SE_ON = "res_stem_cifar", not args.no_se
    cfg.BN.EPS, cfg.BN.MOM, cfg.BN.ZERO_INIT_FINAL_GAMMA = 1e-5, 0.1, False
    cfg.TRAIN.IM_SIZE = 32
    return RegNet


def pycls_complexity(args) -> dict:
    model = pycls_model(args)
    cx = model.complexity({"h": 32, "w": 32, "flops": 0, "params": 0, "acts": 0})
    return {k: int(cx[k]) for k in ("flops", "params", "acts")}


def our_spec(args):
    from fastscale_jax import regnet_spec

    return regnet_spec("RegNetY-parity" if not args.no_se else "RegNetX-parity",
                       w_a=args.wa, w_0=args.w0, w_m=args.wm, depth=args.depth,
                       group_w=args.group_w, se_r=0.0 if args.no_se else 0.25,
                       stem_type="res_stem_cifar", resolution=32, test_resolution=32,
                       num_classes=NUM_CLASSES)


def check_same_model(args) -> dict:
    """Both sides' flops / params / acts; ValueError when they differ."""
    from fastscale_jax.complexity import complexity

    theirs = pycls_complexity(args)
    ours = {k: int(v) for k, v in complexity(our_spec(args)).items() if k in theirs}
    if ours != theirs:
        raise ValueError(f"the two models differ: ours {ours}, pycls {theirs}")
    return theirs


# --------------------------------------------------------------------------- torch side
def lr_at(step: int, *, peak: float, total: int, warmup: int, factor: float) -> float:
    """pycls's get_epoch_lr('cos') at the fractional epoch step / steps_per_epoch."""
    lr = 0.5 * peak * (1.0 + math.cos(math.pi * step / total))
    if step < warmup:
        a = step / warmup
        lr *= factor * (1.0 - a) + a
    return lr


def load_demo_pil(path: str = DEMO):
    """Demo images decoded with Pillow: {split: (uint8 [N, 32, 32, 3] RGB, int64 labels)}."""
    from PIL import Image

    out = {}
    with np.load(path, allow_pickle=False) as z:
        for split in ("train", "test"):
            data, offs = z[f"{split}_bytes"], z[f"{split}_offsets"]
            ims = [np.asarray(Image.open(io.BytesIO(data[offs[i]:offs[i + 1]].tobytes()))
                              .convert("RGB")) for i in range(len(offs) - 1)]
            out[split] = (np.stack(ims), z[f"{split}_labels"].astype(np.int64))
    return out


def normalise_nchw(images):
    x = (images.astype(np.float32) - np.float32(CIFAR_MEAN)) / np.float32(CIFAR_STD)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def augment(x, rng):
    """pycls CIFAR train transform on normalised NCHW images: flip, zero-pad 4, random crop."""
    n, _, h, w = x.shape
    flip = rng.random(n) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, :, ::-1], x)
    padded = np.pad(x, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    oy, ox = rng.integers(0, 2 * PAD + 1, n), rng.integers(0, 2 * PAD + 1, n)
    return np.stack([padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])


def smoothed_ce(logits, labels, smoothing: float):
    import torch

    logp = torch.log_softmax(logits, dim=1)
    target = torch.full_like(logp, smoothing / logp.shape[1])
    target.scatter_(1, labels[:, None], 1.0 - smoothing + smoothing / logp.shape[1])
    return -(target * logp).sum(dim=1).mean()


def torch_top1(model, x, y, batch: int = 500) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            pred = model(torch.from_numpy(x[i:i + batch])).argmax(dim=1).numpy()
            correct += int((pred == y[i:i + batch]).sum())
    model.train()
    return correct / len(y)


def torch_run(args, seed: int) -> dict:
    """pycls's model and optimizer, trained by a loop written here."""
    import torch
    from pycls.core import optimizer as pycls_optim
    from pycls.core.config import cfg

    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = pycls_model(args)()   # pycls's init_weights runs in AnyNet.__init__
    cfg.OPTIM.BASE_LR, cfg.OPTIM.MOMENTUM, cfg.OPTIM.NESTEROV = args.lr, 0.9, True
    cfg.OPTIM.DAMPENING, cfg.OPTIM.WEIGHT_DECAY = 0.0, args.wd
    cfg.BN.USE_CUSTOM_WEIGHT_DECAY = False
    opt = pycls_optim.construct_optimizer(model)
    data = load_demo_pil()
    x_train, y_train = normalise_nchw(data["train"][0]), data["train"][1]
    x_test, y_test = normalise_nchw(data["test"][0]), data["test"][1]
    spe = steps_per_epoch(args)
    total, warmup = spe * args.epochs, int(round(args.warmup_epochs * spe))
    step, top1, losses = 0, [], []
    t0 = time.time()
    model.train()
    for _ in range(args.epochs):
        order = rng.permutation(len(y_train))
        for b in range(spe):
            idx = order[b * args.batch:(b + 1) * args.batch]
            lr = lr_at(step, peak=args.lr, total=total, warmup=warmup, factor=args.warmup_factor)
            for group in opt.param_groups:
                group["lr"] = lr
            xb = torch.from_numpy(augment(x_train[idx], rng))
            loss = smoothed_ce(model(xb), torch.from_numpy(y_train[idx]), args.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        top1.append(torch_top1(model, x_test, y_test))
        print(f"torch seed {seed} epoch {len(top1)}: top1 {top1[-1]:.4f} "
              f"loss {np.mean(losses[-spe:]):.4f} ({time.time() - t0:.0f} s)", flush=True)
    return {"top1": top1, "losses": losses, "wall_s": time.time() - t0}


# --------------------------------------------------------------------------- our side
def jax_config(args, seed: int):
    """fastscale_jax config of the recipe above (the spec is passed separately)."""
    from fastscale_jax.config import base_config

    spe = steps_per_epoch(args)
    c = base_config()
    c.seed = seed
    c.data.name, c.data.seed = "demo", seed
    c.data.mean, c.data.std = CIFAR_MEAN, CIFAR_STD
    c.data.small_images = True
    if getattr(args, "our_data", "pycls") == "pycls":
        from fastscale_jax import recipes

        recipes.pycls_data(c)   # per-pass permutation, pad with the mean colour
    t = c.train
    t.global_batch_size, t.num_train_steps = args.batch, spe * args.epochs
    t.label_smoothing, t.loss = args.label_smoothing, "ce"
    t.eval_every_epochs = spe / (10_000 // args.batch)   # every `spe` steps
    t.log_every_steps, t.progress, t.tensorboard, t.plot = spe, False, False, False
    o = c.optim
    o.name, o.base_lr, o.base_batch_size = "sgd", args.lr, args.batch
    o.momentum, o.nesterov, o.weight_decay, o.wd_mask = 0.9, True, args.wd, "all"
    o.schedule, o.warmup_style, o.min_lr_factor = "cosine", "pycls", 0.0
    o.warmup_steps, o.warmup_init_factor = int(round(args.warmup_epochs * spe)), args.warmup_factor
    c.checkpoint.every_steps, c.checkpoint.keep, c.checkpoint.async_save = 10 ** 6, 1, False
    return c


def jax_run(args, seed: int) -> dict:
    from fastscale_jax.train import train_and_evaluate

    workdir = os.path.join(args.workdir, f"jax_seed{seed}")
    shutil.rmtree(workdir, ignore_errors=True)
    t0 = time.time()
    res = train_and_evaluate(jax_config(args, seed), workdir, spec=our_spec(args))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    evals = sorted((r["step"], r["top1"]) for r in rows if r["split"] == "eval")
    return {"top1": [v for _, v in evals], "losses": [float(x) for x in res["losses"]],
            "wall_s": time.time() - t0, "eval_steps": [s for s, _ in evals]}


# --------------------------------------------------------------------------- step check
def _torch_step(args, model, x, y, lr, wd):
    """One plain torch step (pycls's SGD, label-smoothed CE) in the model's dtype."""
    import torch
    from pycls.core import optimizer as pycls_optim
    from pycls.core.config import cfg

    cfg.OPTIM.BASE_LR, cfg.OPTIM.MOMENTUM, cfg.OPTIM.NESTEROV = lr, 0.9, True
    cfg.OPTIM.DAMPENING, cfg.OPTIM.WEIGHT_DECAY, cfg.BN.USE_CUSTOM_WEIGHT_DECAY = 0.0, wd, False
    opt = pycls_optim.construct_optimizer(model)
    model.train()
    dtype = next(model.parameters()).dtype
    loss = smoothed_ce(model(torch.from_numpy(x).to(dtype)), torch.from_numpy(y),
                       args.label_smoothing)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def _our_step(args, variables, x, y, lr, wd):
    """One step of our compiled train step (the trainer's) from `variables`."""
    from fastscale_jax.models import build_model
    from fastscale_jax.train import optim
    from fastscale_jax.train import step as step_lib
    from fastscale_jax.train.state import create_state

    c = jax_config(args, 0)
    c.optim.weight_decay = wd
    sched = optim.make_schedule(c.optim, lr=lr, total_steps=10 ** 6, warmup=0)
    tx = optim.make_optimizer(c.optim, sched)
    model = build_model(our_spec(args))
    state = create_state(model, tx, image_size=32, seed=0, ema=False)
    state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                          opt_state=tx.init(variables["params"]))
    par = step_lib.Parallel("pmap")
    train = par.train_step(step_lib.make_train_body(model, tx, sched, c.train, NUM_CLASSES))
    st, m = train(par.put_state(state),
                  par.put_batch({"image": x.transpose(0, 2, 3, 1)[None], "label": y[None]}))
    st = par.get_state(st)
    return par.get_metrics(m)["loss"], {"params": st.params, "batch_stats": st.batch_stats}


def _update_errors(start, ref, other) -> dict:
    """Per leaf: max |(other - start) - (ref - start)| / max |ref - start|; median and worst."""
    import jax

    flat = [dict(jax.tree_util.tree_flatten_with_path(t)[0]) for t in (start, ref, other)]
    errs = []
    for path in flat[1]:
        s, r, o = (np.asarray(f[path], np.float64) for f in flat)
        errs.append((float(np.max(np.abs(o - r)) / max(float(np.max(np.abs(r - s))), 1e-30)),
                     jax.tree_util.keystr(path)))
    errs.sort()
    return {"median": errs[len(errs) // 2][0], "max": errs[-1][0], "worst": errs[-1][1]}


def step_check(args, batch: int = 32, wd: float = 1e-2, lr: float = 0.01) -> dict:
    """One training step from the same weights (pycls's init, converted) on the same batch
    (shuffled test images, no augmentation): our update and torch's float32 update against
    torch in float64. Only one step: from this init, float32 rounding alone makes torch
    float32 and float64 disagree by tens of percent in some tensors' updates after 2-4
    steps, so longer exact comparisons say nothing. The weight decay is raised (1e-2) so that
    a difference in what it decays would stand out of the rounding noise."""
    import copy

    import torch

    from fastscale_jax.convert import from_pycls

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, spec = pycls_model(args)(), our_spec(args)
    start = from_pycls(model.state_dict(), spec)
    data = load_demo_pil()
    pick = np.random.default_rng(0).permutation(len(data["test"][1]))[:batch]
    x, y = normalise_nchw(data["test"][0][pick]), data["test"][1][pick]   # classes mixed
    ours_loss, ours = _our_step(args, start, x, y, lr, wd)
    m64 = copy.deepcopy(model).double()
    losses = {"ours": ours_loss, "torch32": _torch_step(args, model, x, y, lr, wd),
              "torch64": _torch_step(args, m64, x, y, lr, wd)}
    ref = from_pycls({k: v.float() if v.is_floating_point() else v
                      for k, v in m64.state_dict().items()}, spec)
    t32 = from_pycls(model.state_dict(), spec)
    res = {"batch": batch, "lr": lr, "weight_decay": wd, "loss": losses}
    for kind in ("params", "batch_stats"):
        res[kind] = {"ours": _update_errors(start[kind], ref[kind], ours[kind]),
                     "torch32": _update_errors(start[kind], ref[kind], t32[kind])}
    print(f"step check (1 step, batch {batch}, lr {lr}, wd {wd}): loss ours {losses['ours']:.6f}"
          f", torch f32 {losses['torch32']:.6f}, torch f64 {losses['torch64']:.6f}")
    for kind in ("params", "batch_stats"):
        o, t = res[kind]["ours"], res[kind]["torch32"]
        print(f"  {kind} update error vs torch float64 (per tensor, relative): ours median "
              f"{o['median']:.1e} max {o['max']:.1e} ({o['worst']}); torch float32 median "
              f"{t['median']:.1e} max {t['max']:.1e} ({t['worst']})", flush=True)
    return res


# --------------------------------------------------------------------------- driver
def paired_variants(args, family: str, seed: int):
    names = list(args.ablations)
    if "every" in names:
        names = ["shuffle", "pad", "se_bias", "crop", "decoder", "all"]
    if (family not in args.ablation_families
            or (args.ablation_seeds and seed >= args.first_seed + args.ablation_seeds)):
        names = []
    return ("base", *names)


def paired_worker(args, family: str, seed: int) -> dict:
    import parity_paired as pp

    fargs = pp.family_args(family, epochs=args.epochs, batch=args.batch, limit=args.limit,
                           threads=args.threads)
    return pp.run_seed(fargs, seed, variants=paired_variants(args, family, seed),
                       step_losses=seed == args.first_seed, test_dir=args.test_dir,
                       control=args.control,
                       workdir=os.path.join(args.workdir, f"paired_jax_{family}{seed}"))


def paired_main(args, argv) -> None:
    """--paired: per family and seed a worker (torch side, our variants), then the summary."""
    import resource

    import parity_paired as pp

    t0, started = time.time(), time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    load = {"start": os.getloadavg()}
    cx = {}
    for family in args.families:
        fargs = pp.family_args(family, epochs=args.epochs, batch=args.batch, limit=args.limit)
        cx[family] = pp.check_same_model(fargs)
        print(f"{family}: ours == pycls: {cx[family]}", flush=True)
    per = {f: list(seeds(args, f)) for f in args.families}
    jobs = [(f, seed) for seed in sorted(set().union(*per.values())) for f in args.families
            if seed in per[f]]
    if not args.collect:
        claim_workdir(args)
        run_parallel(args, [(f"paired_{family}", seed) for family, seed in jobs], argv)
    runs = {f: [] for f in args.families}
    for family, seed in jobs:
        path = os.path.join(args.workdir, f"paired_{family}_seed{seed}.json")
        if os.path.exists(path):
            with open(path) as f:
                runs[family].append(json.load(f))
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {"args": recorded_args(args),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
           "started_utc": started, "ended_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "loadavg": dict(load, end=os.getloadavg()), "wall_s": time.time() - t0,
           "cpu_s_children": cpu.ru_utime + cpu.ru_stime,
           # --collect trains nothing: wall_s / cpu_s_children are then the summary's own
           "collect_only": bool(args.collect), "model_complexity": cx,
           "recipes": {f: pp.FAMILIES[f] for f in args.families}}
    for family, rs in runs.items():
        if rs:
            out[family] = dict(pp.summarise(rs), runs=rs)
    paired_report(out)
    with open(args.paired_out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.paired_out}; wall {out['wall_s']:.0f} s, CPU {out['cpu_s_children']:.0f} s"
          f" (workers); load {out['loadavg']}")


def paired_report(out: dict) -> None:
    for family in ("regnety", "effnet"):
        s = out.get(family)
        if not s:
            continue
        print(f"\n{family}: paired top-1 difference ours - torch (points), n = {s['n']} seeds")
        for e in s["per_epoch"]:
            print(f"  epoch {e['epoch']}: ours {e['ours_mean']:.2f} torch {e['torch_mean']:.2f}"
                  f" diff {e['diff_mean']:+.2f} [{e['diff_ci95'][0]:+.2f}, "
                  f"{e['diff_ci95'][1]:+.2f}]")
        if "step_losses" in s:
            for k, v in s["step_losses"].items():
                if isinstance(v, dict):
                    print(f"  first-epoch loss {k}: step 1 {v['step1']:.1e}, max {v['max']:.3g}"
                          f", first step > 1e-4: {v['first_step_over_1e-4']}")
        print(f"  step-1 |loss diff| max over seeds {max(s['step1_loss_absdiff']):.1e}; "
              f"sd of the per-seed final difference {s['final_diff_sd']:.2f}")
        c = s.get("control")
        if c:
            print(f"  control ({c['what']}, n={len(c['seeds'])}): {c['final_diff_mean']:+.2f} "
                  f"[{c['final_diff_ci95'][0]:+.2f}, {c['final_diff_ci95'][1]:+.2f}], "
                  f"sd {c['final_diff_sd']:.2f}")
        for name, a in s["ablations"].items():
            print(f"  ablation {name} (n={len(a['seeds'])}): vs torch "
                  f"{a['final_diff_vs_torch_mean']:+.2f} [{a['final_diff_vs_torch_ci95'][0]:+.2f},"
                  f" {a['final_diff_vs_torch_ci95'][1]:+.2f}], effect vs base "
                  f"{a['effect_vs_base_mean']:+.2f} [{a['effect_vs_base_ci95'][0]:+.2f}, "
                  f"{a['effect_vs_base_ci95'][1]:+.2f}]")


def run_worker(args) -> None:
    side, seed = args.worker.split(":")
    if side.startswith("paired_"):
        res = paired_worker(args, side[len("paired_"):], int(seed))
        os.makedirs(args.workdir, exist_ok=True)
        with open(os.path.join(args.workdir, f"{side}_seed{seed}.json"), "w") as f:
            json.dump(res, f)
        return
    if side == "check":
        res = step_check(args)
    else:
        res = (torch_run if side == "torch" else jax_run)(args, int(seed))
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, f"{side}_seed{seed}.json"), "w") as f:
        json.dump(res, f)


PATH_ARGS = ("workdir", "out", "paired_out", "test_dir")


def recorded_args(args) -> dict:
    """The settings a result JSON records: the path settings relative to the repository (a
    result file names no path of the machine it was made on)."""
    out = {k: v for k, v in vars(args).items() if k != "worker"}
    for k in PATH_ARGS:
        if out.get(k):
            out[k] = os.path.relpath(os.path.abspath(out[k]), ROOT)
    return out


def worker_cmd(side: str, seed: int, argv) -> list:
    """The command line of one worker subprocess: this script, its arguments, --worker."""
    return [sys.executable, os.path.abspath(__file__), *argv, "--worker", f"{side}:{seed}"]


def run_parallel(args, work: list, argv) -> None:
    """The workers (side, seed) of `work`, --jobs at a time, each pinned to its own core when
    --jobs > 1; a worker whose result is already in --workdir is not rerun (delete the
    workdir to start over); stops at the first failure."""
    todo = [(side, seed) for side, seed in work
            if not os.path.exists(os.path.join(args.workdir, f"{side}_seed{seed}.json"))]
    if len(todo) < len(work):
        print(f"{len(work) - len(todo)} of {len(work)} worker(s) already done in "
              f"{args.workdir}", flush=True)
    cores = sorted(os.sched_getaffinity(0))
    running, free = [], list(range(max(1, args.jobs)))
    while todo or running:
        while todo and free:
            (side, seed), slot = todo.pop(0), free.pop(0)
            cmd = worker_cmd(side, seed, argv)
            pin = ({cores[slot % len(cores)]} if args.jobs > 1 else None)
            print(f"== {side} seed {seed}" + (f" (core {min(pin)})" if pin else ""), flush=True)
            running.append((side, seed, slot, subprocess.Popen(
                cmd, preexec_fn=(lambda p=pin: os.sched_setaffinity(0, p)) if pin
                else None)))
        time.sleep(1)
        for item in list(running):
            rc = item[3].poll()
            if rc is None:
                continue
            running.remove(item)
            free.append(item[2])
            if rc:
                for *_, p in running:
                    p.terminate()
                raise SystemExit(f"error: worker {item[0]} seed {item[1]} exited {rc}")


# The settings that define a worker's run: results in one --workdir must share them.
RUN_ARGS = ("epochs", "limit", "batch", "lr", "wd", "warmup_epochs", "warmup_factor",
            "label_smoothing", "depth", "w0", "wa", "wm", "group_w", "no_se", "our_data",
            "test_dir")


def claim_workdir(args) -> None:
    """Record RUN_ARGS in --workdir/run_args.json, or refuse to mix in runs made with other
    settings (run_parallel reuses any worker result it finds there)."""
    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, "run_args.json")
    mine = {k: v for k, v in recorded_args(args).items() if k in RUN_ARGS}
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
        diff = {k: (theirs.get(k), mine[k]) for k in mine if theirs.get(k) != mine[k]}
        if diff:
            what = ", ".join(f"--{k.replace('_', '-')} {a!r} there, {b!r} here"
                             for k, (a, b) in diff.items())
            raise SystemExit(f"error: {args.workdir} holds runs made with other settings "
                             f"({what}); pass a fresh --workdir or delete that one")
    elif any(n.endswith(".json") for n in os.listdir(args.workdir)):
        raise SystemExit(f"error: {args.workdir} holds worker results but no run_args.json "
                         f"(their settings are unknown); pass a fresh --workdir or delete it")
    else:
        with open(path, "w") as f:
            json.dump(mine, f, indent=1)


def seeds(args, family: str | None = None):
    """The seeds first..first+N-1 of one family (--paired: --seeds gives one N for all or one
    per --families), or of both sides (unpaired: one N)."""
    counts = args.seeds
    if len(counts) == 1:
        n = counts[0]
    elif family is None or len(counts) != len(args.families):
        raise SystemExit(f"error: --seeds {' '.join(map(str, counts))}: give one count"
                         + (f", or one per --families ({len(args.families)})" if family else ""))
    else:
        n = counts[args.families.index(family)]
    return range(args.first_seed, args.first_seed + n)


def mean_std(values):
    values = [float(v) for v in values]
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def verdict(a, b) -> dict:
    """Difference of means a - b, its standard error, and |diff| <= 2 SE."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    se = math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))
    return {"diff": ma - mb, "se": se, "within_2se": abs(ma - mb) <= 2 * se}


def epoch_losses(losses, spe):
    return [float(np.mean(losses[e * spe:(e + 1) * spe])) for e in range(len(losses) // spe)]


def table(results: dict, spe: int, epochs: int) -> str:
    sides = list(results)
    head = "| epoch | " + " | ".join(f"{s} top-1 % | {s} train loss" for s in sides) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(sides))]
    for e in range(epochs):
        cells = []
        for s in sides:
            m, sd = mean_std([100 * r["top1"][e] for r in results[s]])
            lm, lsd = mean_std([epoch_losses(r["losses"], spe)[e] for r in results[s]])
            cells += [f"{m:.2f} ± {sd:.2f}", f"{lm:.3f} ± {lsd:.3f}"]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise(args, results: dict, model_cx: dict) -> dict:
    spe = steps_per_epoch(args)
    results = {s: runs for s, runs in results.items() if runs}
    out = {"args": recorded_args(args),
           "model_complexity": model_cx, "steps_per_epoch": spe,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
           "results": results, "final": {}}
    for s, runs in results.items():
        m, sd = mean_std([100 * r["top1"][-1] for r in runs])
        out["final"][s] = {"mean": m, "std": sd, "n": len(runs),
                           "per_seed": [100 * r["top1"][-1] for r in runs],
                           "wall_s": [r["wall_s"] for r in runs]}
    if len(results) == 2 and all(len(r) > 1 for r in results.values()):
        out["verdict"] = verdict(*[[100 * r["top1"][-1] for r in runs]
                                   for runs in results.values()])
    return out


def report(out: dict) -> None:
    results = out["results"]
    if not results:
        return
    print("\n" + table(results, out["steps_per_epoch"], len(next(iter(results.values()))[0]["top1"])))
    for s, f in out["final"].items():
        print(f"{s}: final top-1 {f['mean']:.2f} ± {f['std']:.2f} % (n={f['n']}; seeds "
              f"{', '.join(f'{v:.2f}' for v in f['per_seed'])}; wall "
              f"{statistics.fmean(f['wall_s']):.0f} s per run)")
    v = out.get("verdict")
    if v:
        print(f"{' - '.join(results)}: {v['diff']:+.2f} points, SE {v['se']:.2f}: "
              f"{'within' if v['within_2se'] else 'NOT within'} 2 SE")


def collect(args) -> dict:
    """Worker results already in --workdir ({side}_seed{n}.json) of this run's seeds."""
    results = {}
    for side in args.sides:
        paths = [os.path.join(args.workdir, f"{side}_seed{n}.json") for n in seeds(args)]
        results[side] = [json.load(open(p)) for p in paths if os.path.exists(p)]
    return results


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.paired:
        return paired_main(args, argv)
    cx = check_same_model(args)
    print(f"model: ours == pycls: {cx} (flops = multiply-adds at 32 px)", flush=True)
    extra = {"started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
             "loadavg": {"start": os.getloadavg()}}
    if not args.collect:
        claim_workdir(args)
        check = [] if args.no_step_check else [("check", 0)]
        # seeds interleaved: a change of machine load hits both sides
        run_parallel(args, check + [(side, seed) for seed in seeds(args) for side in args.sides],
                     argv)
    check = os.path.join(args.workdir, "check_seed0.json")
    if not args.no_step_check and os.path.exists(check):
        with open(check) as f:
            extra["step_check"] = json.load(f)
    results = collect(args)
    extra["loadavg"]["end"] = os.getloadavg()
    extra["ended_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    out = dict(summarise(args, results, cx), **extra)
    report(out)
    write(args, out)
    print(f"wrote {args.out}; load average at start {extra['loadavg']['start']}, "
          f"at end {extra['loadavg']['end']}")


def write(args, out: dict) -> None:
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
