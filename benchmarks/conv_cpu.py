"""Convolution speed on CPU: XLA's lax.conv vs fastscale_jax.ops.conv vs PyTorch.

    python benchmarks/conv_cpu.py                      # default shapes, ~3 min on 2 cores
    python benchmarks/conv_cpu.py --impls lax,shift,group_scan --batches 8,32 --all-shapes
    python benchmarks/conv_cpu.py --models             # + whole models (fwd and train step)

Per convolution shape: forward, and forward+backward (the VJP giving the gradients wrt input
and kernel), of each JAX implementation (jit, AOT-compiled; compile time excluded) and of
torch.nn.functional.conv2d (NCHW; torch.set_num_threads = the cores JAX uses, or --torch-threads;
column skipped when torch does not import). Calls of the implementations are interleaved
round by round, after one warm-up call each; the table gives the median in ms and the ratios
lax / ours and torch / ours ('ours' = impl 'auto', i.e. what the models run). A call slower
than --cell-seconds is timed once (its warm-up call is the measurement).

Measurements are only as quiet as the machine: other processes on the same cores inflate and
scatter them, so the spread (min-max) is printed too. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fastscale_jax.cpu import hostmem  # noqa: E402
from fastscale_jax.ops import conv as fconv  # noqa: E402

# name, (H, Cin, Cout, k, stride, groups), batches
ISSUE_SHAPES = [
    ("dense 128ch @28", (28, 128, 128, 3, 1, 1), (32,)),
    ("grouped 128ch gw8 @28", (28, 128, 128, 3, 1, 16), (32,)),
    ("depthwise 128ch @28", (28, 128, 128, 3, 1, 128), (32,)),
    ("grouped 432ch gw24 @14", (14, 432, 432, 3, 1, 18), (32,)),
    ("depthwise 5x5 s2 144ch @56", (56, 144, 144, 5, 2, 144), (32,)),
]
MODEL_SHAPES = [  # RegNetY-800MF (group width 16) and EfficientNet-B0 at 224 px
    ("RegNetY-800MF s2 128ch g8 s2 @56", (56, 128, 128, 3, 2, 8), (8, 32)),
    ("RegNetY-800MF s3 320ch g20 @14", (14, 320, 320, 3, 1, 20), (8, 32)),
    ("RegNetY-800MF s4 768ch g48 @7", (7, 768, 768, 3, 1, 48), (8,)),
    ("RegNetY-800MF 1x1 320->320 @14", (14, 320, 320, 1, 1, 1), (8,)),
    ("EffNet-B0 dw 144ch k3 @56", (56, 144, 144, 3, 1, 144), (8, 32)),
    ("EffNet-B0 dw 672ch k5 @14", (14, 672, 672, 5, 1, 672), (8, 32)),
    ("EffNet-B0 dw 1152ch k5 @7", (7, 1152, 1152, 5, 1, 1152), (8,)),
]
EXTRA_SHAPES = [  # --all-shapes: group widths around the 'auto' switch, RegNetZ-500MF
    ("gw4 256ch @28", (28, 256, 256, 3, 1, 64), (8,)),
    ("gw8 256ch @28", (28, 256, 256, 3, 1, 32), (8,)),
    ("gw16 256ch @28", (28, 256, 256, 3, 1, 16), (8,)),
    ("gw32 256ch @14", (14, 256, 256, 3, 1, 8), (8,)),
    ("gw64 512ch s2 @14", (14, 512, 512, 3, 2, 8), (8,)),
    ("gw8 768ch @14", (14, 768, 768, 3, 1, 96), (8,)),
    ("RegNetZ-500MF gw4 s2 160ch @56", (56, 160, 160, 3, 2, 40), (8,)),
    ("stem 3->32 s2 @224", (224, 3, 32, 3, 2, 1), (8,)),  # every model's only dense kxk conv
]


def jax_cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _timer(fn, args):
    def call():
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        return time.perf_counter() - t
    return call


def jax_calls(impl, n, h, cin, cout, k, s, g, dtype):
    """(forward call, forward+backward call) for one implementation, AOT-compiled."""
    key = jax.random.PRNGKey(0)
    kx, kw, kd = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n, h, h, cin), dtype)
    w = (jax.random.normal(kw, (k, k, cin // g, cout)) * (2.0 / (k * k * cout)) ** 0.5).astype(dtype)
    ho = (h - 1) // s + 1
    dy = jax.random.normal(kd, (n, ho, ho, cout), dtype)

    def fwd(x, w):
        return fconv.conv2d(x, w, stride=s, groups=g, impl=impl)

    def fwd_bwd(x, w, dy):
        y, vjp = jax.vjp(fwd, x, w)
        return y, vjp(dy)

    f = jax.jit(fwd).lower(x, w).compile()
    fb = jax.jit(fwd_bwd).lower(x, w, dy).compile()
    return _timer(f, (x, w)), _timer(fb, (x, w, dy))


def torch_calls(n, h, cin, cout, k, s, g, threads):
    import torch
    torch.set_num_threads(threads)
    x = torch.randn(n, cin, h, h)
    w = torch.randn(cout, cin // g, k, k) * (2.0 / (k * k * cout)) ** 0.5
    ho = (h - 1) // s + 1
    dy = torch.randn(n, cout, ho, ho)
    p = (k - 1) // 2
    conv = torch.nn.functional.conv2d

    def fwd():
        torch.set_num_threads(threads)
        t = time.perf_counter()
        with torch.no_grad():
            conv(x, w, stride=s, padding=p, groups=g)
        return time.perf_counter() - t

    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

    def fwd_bwd():
        torch.set_num_threads(threads)
        xg.grad = wg.grad = None
        t = time.perf_counter()
        conv(xg, wg, stride=s, padding=p, groups=g).backward(dy)
        return time.perf_counter() - t

    return fwd, fwd_bwd


def measure(calls: dict, rounds: int, cell_seconds: float, warmup: int = 1) -> dict:
    """Interleaved timing: `warmup` untimed rounds (the first execution after compile; more
    let the allocators reach their steady state), then `rounds` rounds calling each once."""
    samples = {name: [] for name in calls}
    slow = set()
    for name, call in calls.items():
        t = call()
        if t > cell_seconds:  # too slow to repeat: the first call is the measurement
            samples[name].append(t)
            slow.add(name)
    for _ in range(warmup - 1):
        for name, call in calls.items():
            if name not in slow:
                call()
    spent = {name: 0.0 for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            if name in slow or spent[name] > cell_seconds * rounds / 2:
                continue
            t = call()
            spent[name] += t
            samples[name].append(t)
    return {name: (1e3 * statistics.median(v), 1e3 * min(v), 1e3 * max(v), len(v))
            for name, v in samples.items()}


def fmt_ms(m):
    med, lo, hi, n = m
    if n == 1:
        return f"{med:.1f} (1x)"
    return f"{med:.1f} [{lo:.1f}-{hi:.1f}]"


def run_convs(args, threads):
    shapes = ISSUE_SHAPES + MODEL_SHAPES + (EXTRA_SHAPES if args.all_shapes else [])
    impls = args.impls.split(",")
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
    dtype = jnp.dtype(args.dtype)
    tcols = [f"torch {t}t" for t in threads] if have_torch else []
    cols = list(impls) + tcols
    header = "| shape | N | ours | pass | " + " | ".join(f"{c} ms" for c in cols)
    header += " | lax/ours |" + "".join(f" {c}/ours |" for c in tcols)
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, (h, cin, cout, k, s, g), batches in shapes:
        if args.batches:
            batches = tuple(int(b) for b in args.batches.split(","))
        if args.only and not any(o.lower() in name.lower() for o in args.only.split(",")):
            continue
        for n in batches:
            auto = fconv.resolve_impl("auto", jnp.zeros((1, 1, 1, cin)), jnp.zeros((k, k, cin // g, cout)), g)
            fwd, fb = {}, {}
            for impl in impls:
                fwd[impl], fb[impl] = jax_calls(impl, n, h, cin, cout, k, s, g, dtype)
            for t, c in zip(threads, tcols):
                fwd[c], fb[c] = torch_calls(n, h, cin, cout, k, s, g, t)
            for label, calls in (("fwd", fwd), ("fwd+bwd", fb)):
                res = measure(calls, args.rounds, args.cell_seconds)
                ours = res["auto"][0] if "auto" in res else res[auto][0] if auto in res else None
                row = f"| {name} | {n} | {auto} | {label} | " + " | ".join(fmt_ms(res[c]) for c in cols)
                lax_r = f"{res['lax'][0] / ours:.2f}" if ours and "lax" in res else "-"
                row += f" | {lax_r} |"
                for c in tcols:
                    row += f" {res[c][0] / ours:.2f} |" if ours else " - |"
                print(row, flush=True)


# ---------------------------------------------------------------------------- whole models
def jax_model_calls(fs, spec, impl, n, res):
    """(forward, train step) calls of our model: eval-mode apply, and value_and_grad of
    softmax cross-entropy through apply(train=True, mutable batch_stats), AOT-compiled."""
    import optax

    model = fs.build_model(spec, conv_impl=impl)
    x = jax.random.normal(jax.random.PRNGKey(1), (n, res, res, 3), jnp.float32)
    y = jax.random.randint(jax.random.PRNGKey(2), (n,), 0, spec.num_classes)
    variables = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.PRNGKey(0))
    params, stats = variables["params"], variables["batch_stats"]
    rngs = {"dropout": jax.random.PRNGKey(3)}

    def forward(params, stats, x):
        return model.apply({"params": params, "batch_stats": stats}, x, train=False)

    def loss(params, stats, x, y):
        logits, new = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                  mutable=["batch_stats"], rngs=rngs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

    t0 = time.perf_counter()
    f = jax.jit(forward).lower(params, stats, x).compile()
    t1 = time.perf_counter()
    step = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params, stats, x, y).compile()
    t2 = time.perf_counter()
    return (_timer(f, (params, stats, x)), _timer(step, (params, stats, x, y)),
            (t1 - t0, t2 - t1))


def torch_model_calls(spec, name, n, res, threads):
    """(forward, train step) of the same model in PyTorch: pycls 0.1.1 when it has the
    architecture, else timm (RegNetZ); None when neither imports."""
    try:
        import torch
        import torch_compare as tc  # benchmarks/torch_compare.py: builds pycls/timm models
        tc._maybe_stub_torchvision()
        model, source = tc.torch_model(name, spec, "auto")
    except Exception as e:  # noqa: BLE001 - optional column
        print(f"#   torch {name}: skipped ({type(e).__name__}: {e})")
        return None
    torch.set_num_threads(threads)
    x = torch.randn(n, 3, res, res)
    y = torch.randint(0, spec.num_classes, (n,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward():
        torch.set_num_threads(threads)
        model.eval()
        t = time.perf_counter()
        with torch.no_grad():
            model(x)
        return time.perf_counter() - t

    def step():
        torch.set_num_threads(threads)
        model.train()
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        loss_fn(model(x), y).backward()
        return time.perf_counter() - t

    return forward, step, source


def run_models(args, threads):
    try:
        import fastscale_jax as fs
        fs.build_model, fs.get_model_spec  # noqa: B018 - AttributeError if not there yet
    except (ImportError, AttributeError) as e:
        print(f"\n--models skipped: fastscale_jax models not available ({e})")
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    impls = args.model_impls.split(",")
    print(f"\n# whole models at {args.model_res}px: forward (eval) and train step (fwd + grads "
          "of softmax CE, batch_stats updated); compile seconds in ()")
    tcols = [] if args.no_torch else [f"torch {t}t" for t in threads]
    cols = impls + tcols
    print("| model | N | pass | " + " | ".join(f"{c} ms" for c in cols) + " | lax/auto |"
          + "".join(f" {c}/auto |" for c in tcols))
    print("|" + "---|" * (len(cols) + 4 + len(tcols)))
    for name in args.model_names.split(","):
        spec = fs.get_model_spec(name)
        spec = spec.replace(resolution=args.model_res) if hasattr(spec, "replace") else spec
        for n in (int(b) for b in args.model_batches.split(",")):
            fwd, step, compile_s = {}, {}, {}
            for impl in impls:
                fwd[impl], step[impl], compile_s[impl] = jax_model_calls(fs, spec, impl, n, args.model_res)
            src = ""
            for t, c in zip(threads, tcols):
                tcalls = torch_model_calls(spec, name, n, args.model_res, t)
                if tcalls:
                    fwd[c], step[c], src = tcalls
            for label, calls, ci in (("fwd", fwd, 0), ("train step", step, 1)):
                res = measure(calls, args.model_rounds, args.model_cell_seconds, args.model_warmup)
                cells = [fmt_ms(res[c]) + (f" ({compile_s[c][ci]:.0f}s)" if c in compile_s else "")
                         if c in res else "-" for c in cols]
                a = res.get("auto", (None,))[0]
                lr = f"{res['lax'][0] / a:.2f}" if a and "lax" in res else "-"
                tr = "".join(f" {res[c][0] / a:.2f} |" if a and c in res else " - |" for c in tcols)
                print(f"| {name} | {n} | {label} | " + " | ".join(cells) + f" | {lr} |" + tr,
                      flush=True)
            if src:
                print(f"#   torch model for {name}: {src}")


def add_malloc_flag(ap):
    ap.add_argument("--default-malloc", action="store_true",
                    help="keep glibc's default allocator settings (by default the process runs "
                         "with fastscale_jax.cpu.hostmem.tune_for_cpu(), as launch.py does for big "
                         "steps; it applies to the torch calls in this process too)")


def apply_malloc(args) -> str:
    """Tune the allocator unless --default-malloc (call before JAX starts); a header line."""
    return "host malloc: glibc defaults" if args.default_malloc else hostmem.tune_for_cpu(force=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impls", default="lax,auto", help="JAX impls to time (comma list of "
                    f"{', '.join(fconv.IMPLS)})")
    ap.add_argument("--batches", default="", help="override every shape's batch sizes, e.g. 8,32")
    ap.add_argument("--all-shapes", action="store_true", help="also the EXTRA_SHAPES")
    ap.add_argument("--torch-threads", default="",
                    help="comma list of torch thread counts, one column each (default: the "
                         "cores JAX uses); on a busy machine torch with >1 thread can be "
                         "10-100x slower (OpenMP waits for descheduled threads), try '2,1'")
    ap.add_argument("--only", default="", help="comma list of substrings of shape names to run")
    ap.add_argument("--rounds", type=int, default=5, help="timed calls per implementation")
    ap.add_argument("--cell-seconds", type=float, default=2.0,
                    help="a call slower than this is timed once; budget per cell ~ rounds x this / 2")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--models", action="store_true", help="also time whole models")
    ap.add_argument("--model-names", default="RegNetY-800MF,RegNetZ-500MF,EfficientNet-B0")
    ap.add_argument("--model-batches", default="8,32")
    ap.add_argument("--model-res", type=int, default=224)
    ap.add_argument("--model-impls", default="lax,auto")
    ap.add_argument("--model-rounds", type=int, default=3)
    ap.add_argument("--model-warmup", type=int, default=3,
                    help="untimed rounds first: a train step page-faults its buffers in for "
                         "the first 2-3 calls, then runs from reused memory")
    ap.add_argument("--model-cell-seconds", type=float, default=20.0)
    ap.add_argument("--skip-convs", action="store_true", help="only the --models part")
    add_malloc_flag(ap)
    args = ap.parse_args()
    malloc = apply_malloc(args)  # before jax.default_backend() starts JAX
    threads = [int(t) for t in args.torch_threads.split(",")] if args.torch_threads else [jax_cpu_cores()]
    versions = f"jax {jax.__version__}, backend {jax.default_backend()}"
    try:
        import torch
        versions += f", torch {torch.__version__} (threads {threads})"
    except ImportError:
        pass
    print(f"# {platform.processor() or platform.machine()}, JAX uses {jax_cpu_cores()} cores, {versions}, "
          f"dtype {args.dtype}, load average {os.getloadavg()[0]:.1f}")
    print(f"# {malloc}")
    print("# median ms [min-max] over interleaved calls; ratios are medians (lax/ours > 1: ours faster)")
    if not args.skip_convs:
        run_convs(args, threads)
    if args.models:
        run_models(args, threads)


if __name__ == "__main__":
    main()
