"""Our XLA-compiled models against the same models in PyTorch: images/s, ours / theirs.

    python benchmarks/torch_compare.py --batch 8 --res 128 --iters 3 --windows 3
    python benchmarks/torch_compare.py --models RegNetY-800MF --batch 32 --res 224 --threads 2

Same model (parameter counts are printed for both sides), batch, resolution and input shape.
Modes: inference (eval mode; torch under no_grad) and train step (SGD lr 0.1, momentum 0.9,
Nesterov; softmax CE on random labels; torch: zero_grad / backward / step; ours:
fastscale_jax.timing's donated, AOT-compiled step). Same timing protocol on both sides:
`warmup` discarded calls, then `windows` windows of `iters` calls, median per-call time.

Torch models: pycls 0.1.1 (the pip release, old cfg API) built from our specs' per-stage
lists (AnyNet for RegNetX/Y, EffNet for EfficientNet) — pycls 0.1.1 has no RegNetZ, so
RegNetZ comes from timm (regnetz_005) when timm imports. timm imports torchvision at import
time; when torchvision is missing, --stub-torchvision (default on) installs an empty stand-in
module first (timm only needs it for data transforms and frozen BN, which we do not use).

Threads: torch.set_num_threads(--threads, default os.cpu_count()); XLA:CPU uses its own
thread pool sized to the machine. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import statistics
import sys
import time
import types

MODELS = ("RegNetY-800MF", "RegNetZ-500MF", "EfficientNet-B0")
TIMM_NAMES = {"RegNetX-200MF": "regnetx_002", "RegNetY-800MF": "regnety_008",
              "RegNetZ-500MF": "regnetz_005", "EfficientNet-B0": "efficientnet_b0"}


# ------------------------------------------------------------------ torchvision stand-in
class _StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = _StubMeta(name, (object,), {"__init__": lambda self, *a, **k: None})
        setattr(self, name, cls)
        return cls


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _StubModule(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def _maybe_stub_torchvision():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        sys.meta_path.insert(0, _StubFinder())
        return True
    return False


# ------------------------------------------------------------------ torch models
def pycls_model(spec):
    """pycls 0.1.1 AnyNet / EffNet with our spec's per-stage numbers (None if unsupported)."""
    from pycls.core.config import cfg

    cfg.MODEL.NUM_CLASSES = spec.num_classes
    if spec.family == "effnet":
        from pycls.models.effnet import EffNet

        if spec.activation != "silu":
            return None
        return EffNet(stem_w=spec.stem_w, ds=list(spec.depths), ws=list(spec.widths),
                      exp_rs=list(spec.exp_ratios), se_r=spec.se_r, ss=list(spec.strides),
                      ks=list(spec.kernels), head_w=spec.head_w, nc=spec.num_classes)
    from pycls.models.anynet import AnyNet

    if spec.activation != "relu" or spec.head_w or spec.block_type not in (
            "res_bottleneck_block", "res_basic_block", "vanilla_block"):
        return None  # RegNetZ (linear bottleneck, SiLU, head conv) is not in pycls 0.1.1
    return AnyNet(stem_type=spec.stem_type, stem_w=spec.stem_w, block_type=spec.block_type,
                  ds=list(spec.depths), ws=list(spec.widths), ss=list(spec.strides),
                  bms=list(spec.bot_muls), gws=list(spec.group_widths),
                  se_r=spec.se_r or None, nc=spec.num_classes)


def timm_model(name):
    import timm

    return timm.create_model(TIMM_NAMES[name], pretrained=False)


def torch_model(name, spec, source):
    if source in ("auto", "pycls"):
        m = pycls_model(spec)
        if m is not None:
            return m, "pycls 0.1.1"
        if source == "pycls":
            raise SystemExit(f"{name}: pycls 0.1.1 cannot build this model; use --source timm")
    import timm

    return timm_model(name), f"timm {timm.__version__} {TIMM_NAMES[name]}"


def time_calls(fn, warmup, iters, windows, sync=None):
    """(median, min, max) seconds per call of `fn` over `windows` windows of `iters` calls,
    after `warmup` calls; `sync()` (e.g. torch.cuda.synchronize) ends warm-up and each window,
    so that asynchronous devices are timed to the end of their work."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / iters)
    return statistics.median(times), min(times), max(times)


def torch_timings(model, batch, res, warmup, iters, windows, channels_last,
                  modes=("inference", "train_step")):
    import torch

    x = torch.randn(batch, 3, res, res)
    y = torch.randint(0, 1000, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out = {}
    model.eval()

    def infer():
        with torch.no_grad():
            model(x)

    if "inference" in modes:
        out["inference"] = time_calls(infer, warmup, iters, windows)
    if "train_step" not in modes:
        return out
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    out["train_step"] = time_calls(step, warmup, iters, windows)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--source", choices=("auto", "pycls", "timm"), default="auto")
    ap.add_argument("--conv-impl", default="auto")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-stub-torchvision", action="store_true")
    ap.add_argument("--modes", nargs="+", default=["inference", "train_step"],
                    choices=["inference", "train_step"])
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    stubbed = False if args.no_stub_torchvision else _maybe_stub_torchvision()
    import torch

    torch.set_num_threads(args.threads)
    import fastscale_jax as fs
    from fastscale_jax.timing import environment, time_model

    env = environment()
    print(f"jax {env['jax']} on {env['device_kind']} ({env['backend']}); torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; os.cpu_count() "
          f"{os.cpu_count()}; batch {args.batch}, {args.res}px, {args.warmup} warm-up, "
          f"{args.windows} windows x {args.iters} iters"
          + ("; torchvision stubbed for timm" if stubbed else ""), flush=True)
    results = []
    for name in args.models:
        print(f"{name}: timing ours and torch ...", flush=True)
        spec = fs.get_model_spec(name)
        tm, source = torch_model(name, spec, args.source)
        n_torch = sum(p.numel() for p in tm.parameters())
        cx = fs.complexity(spec.replace(resolution=args.res))
        ours = time_model(spec, batch_size=args.batch, resolution=args.res,
                          modes=tuple(args.modes), warmup=args.warmup,
                          iters=args.iters, windows=args.windows, conv_impl=args.conv_impl)
        theirs = torch_timings(tm, args.batch, args.res, args.warmup, args.iters,
                               args.windows, args.channels_last, tuple(args.modes))
        for mode in args.modes:
            r = ours[mode]
            t_med, t_min, t_max = theirs[mode]
            row = {"model": name, "mode": mode, "torch_source": source,
                   "params_ours": cx["params"], "params_torch": n_torch,
                   "ours_ms": r.time_s * 1e3, "ours_spread_pct": r.spread_pct,
                   "ours_compile_s": r.compile_s, "ours_images_per_s": r.images_per_s,
                   "torch_ms": t_med * 1e3, "torch_spread_pct": (t_max - t_min) / t_med * 100,
                   "torch_images_per_s": args.batch / t_med,
                   "ratio": r.images_per_s / (args.batch / t_med), "error": r.error}
            results.append(row)
            print(f"{name:16s} {mode:10s} ours {row['ours_images_per_s']:8.1f} img/s "
                  f"({row['ours_ms']:.0f} ms, ±{row['ours_spread_pct']:.0f}%, compile "
                  f"{row['ours_compile_s']:.1f}s)  torch {row['torch_images_per_s']:8.1f} "
                  f"img/s ({row['torch_ms']:.0f} ms, ±{row['torch_spread_pct']:.0f}%)  "
                  f"ours/torch {row['ratio']:.2f}  [params {cx['params']:,} vs {n_torch:,}; "
                  f"{source}]" + (f"  ERROR {r.error}" if r.error else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "torch": torch.__version__, "args": vars(args),
                       "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
