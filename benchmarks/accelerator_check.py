"""One command that checks a GPU or TPU: correctness, runtime vs complexity, speed vs timm,
a short training run. Prints one table (check, status, key numbers, seconds) and writes a JSON
file (rewritten after every check, so a run killed by a time limit keeps what it finished).

    # on the accelerator, from the repository root (no install needed: the script puts the
    # repo on sys.path); estimated 7-10 min on one H100/H200 (the budget check included), not
    # yet measured:
    python benchmarks/accelerator_check.py --out accel_check.json

    # the same through the project's device tool (only the working tree travels; nothing to
    # carry): timeout_s=540 leaves a margin, and the JSON is in $OUT even on a timeout
    python benchmarks/accelerator_check.py --out $OUT/accel_check.json > $OUT/log.txt 2>&1; tail -30 $OUT/log.txt

    # CPU smoke test of the same code paths at tiny sizes (tests/test_accelerator_check.py):
    python benchmarks/accelerator_check.py --smoke --out /tmp/accel_smoke.json

    # a subset, e.g. to re-run what failed; the full alpha sweep (~2 min more on a GPU):
    python benchmarks/accelerator_check.py --only families parity
    python benchmarks/accelerator_check.py --only alpha --alpha-factors 1 2 4 8 16

What it needs: jax (with CUDA or TPU), flax, optax, orbax-checkpoint, numpy; torch + timm for
the timm check (skipped with the reason otherwise); Pillow or torchvision to decode the demo
JPEGs. It imports nothing from tensorflow, tensorflow_datasets or ml_collections (the GPU image
has none of them; the no_tf check and the test, which blocks all three, verify this), so no
wheels have to be carried. Should a future check need ml_collections (pure Python), carry its
wheel: `pip download --no-deps ml_collections -d wheels` here, then on the device
`pip install --no-deps --no-index wheels/*.whl` before the command.

Checks (each catches its own errors and is recorded as ok / fail / skip with one line):
  environment  devices, versions, XLA / JAX settings
  families     RegNetX/Y/Z, EfficientNet, ResNet compile and run forward + backward in float32
               and bfloat16; bf16 vs f32 on the same weights (loss, gradient cosine); BN
               running statistics stay float32
  parity       float32 logits of one model per family, default backend vs a CPU computation
               with the same weights (CPU backend, conv_impl='lax'); on a CPU-only machine:
               our CPU convs (conv_impl='auto') vs XLA's
  alpha        RegNetZ-500MF scaled by dwr, dWr and w at x1, x4, x16 (--alpha-factors), bf16
               train step at batch 64 timed by fastscale_jax.timing: r(time, acts),
               r(time, flops), the fit time ~ a*flops + b*acts + c with leave-one-out error
  budget       fastscale_jax.scale_to_time: RegNetZ-500MF by dWr and dwr to 2x and 4x its own
               bf16 train-step time at batch 64; the flops each reached and every chosen
               model re-measured in one interleaved run (re-measured time / budget)
  timm         train-step images/s of RegNetY-4GF, RegNetZ-500MF scaled to 4GF with dWr and
               EfficientNet-B0, ours (bf16) vs timm (bf16 autocast, channels-last), ratio
  cifar        a ~1 minute training run on the embedded CIFAR-10 demo set to a stated top-1
  parallel     with >= 2 devices: pmap and jit(shard_map) give the same losses and params
  no_tf        tensorflow, tensorflow_datasets and ml_collections were never imported

Compilation runs ahead of time in --compile-threads threads and goes through a persistent
compilation cache (a temporary directory unless --cache-dir), so timing does not recompile.
On an accelerator, XLA_PYTHON_CLIENT_MEM_FRACTION defaults to 0.6 (room for torch).
Exit status: 0 if no check failed (skips are fine), 1 otherwise, 2 for bad arguments.

--smoke forces the CPU backend with 2 host devices (XLA_FLAGS
--xla_force_host_platform_device_count=2, unless XLA_FLAGS already sets a count), float32
for alpha / timm / cifar and bfloat16 for one family only (XLA:CPU compiles bf16 slowly).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (os.path.dirname(HERE), HERE) if p not in sys.path]

CHECKS = ("environment", "families", "parity", "alpha", "budget", "timm", "cifar", "parallel",
          "no_tf")
FORBIDDEN = ("tensorflow", "tensorflow_datasets", "ml_collections")


def _zoo(name):
    import fastscale_jax as fs

    return fs.get_model_spec(name)


def family_models(smoke: bool) -> list:
    from accel_check.common import shallow

    names = (("RegNetX", "RegNetX-800MF"), ("RegNetY", "RegNetY-800MF"),
             ("RegNetZ", "RegNetZ-500MF"), ("EfficientNet", "EfficientNet-B0"),
             ("ResNet", "ResNet-50"))
    return [(fam, shallow(_zoo(n)) if smoke else _zoo(n)) for fam, n in names]


def cifar_spec(smoke: bool):
    """RegNetZ-500MF x1/4 (dWr) with a CIFAR stem at 32 px, 10 classes (the demo config's
    model); --smoke: RegNetX-200MF with one block per stage and a CIFAR stem."""
    import fastscale_jax as fs

    if smoke:
        s = _zoo("RegNetX-200MF")
        s = s.replace(depths=(1, 1, 1, 1), name="RegNetX-200MF (1 block/stage)")
    else:
        s = fs.scale(_zoo("RegNetZ-500MF"), 0.25, "dWr")
    return s.replace(stem_type="res_stem_cifar", num_classes=10, resolution=32,
                     test_resolution=32)


def make_plan(smoke: bool) -> dict:
    """Sizes of every check: the accelerator run, or tiny CPU sizes for --smoke."""
    from accel_check.common import shallow

    import fastscale_jax as fs

    z4 = fs.scale_to(_zoo("RegNetZ-500MF"), "4GF", "dWr").spec
    timm_models = [("RegNetY-4GF", _zoo("RegNetY-4.0GF")), ("RegNetZ-4GF dWr", z4),
                   ("EfficientNet-B0", _zoo("EfficientNet-B0"))]
    fam = family_models(smoke)
    cifar = cifar_spec(smoke)
    if smoke:
        base = shallow(_zoo("RegNetZ-500MF")).replace(resolution=32)
        return {
            "families": {"models": fam, "batch": 8, "resolution": 64,
                         "dtypes": ("float32", "bfloat16"), "low_precision_families": ("RegNetZ",),
                         "loss_rtol": 0.05, "min_grad_cosine": 0.9},
            "parity": {"models": fam, "batch": 2, "resolution": 32, "rtol": 1e-3},
            "alpha": {"base": base, "kinds": ("dwr", "dWr", "w"), "factors": (1, 2),
                      "batch": 2, "dtype": "float32", "warmup": 1, "iters": 2, "windows": 2},
            "budget": {"base": base, "multiples": (2.0,), "batch": 2, "dtype": "float32",
                       "tolerance": 0.3, "warmup": 1, "iters": 2, "windows": 2},
            "timm": {"models": [(n, shallow(s)) for n, s in timm_models], "batch": 2,
                     "resolution": 32, "dtype": "float32", "warmup": 1, "iters": 1, "windows": 2},
            "cifar": {"spec": cifar, "batch": 64, "steps": 60, "max_seconds": 60,
                      "dtype": "float32", "lr": 0.1, "wd": 5e-4, "warmup_steps": 10,
                      "log_every": 20, "eval_batch": 500, "target_top1": 0.20,
                      "parallel": "shard_map", "train_limit": None},
            "parallel": {"spec": cifar, "batch": 8, "steps": 3, "dtype": "float32", "lr": 0.01,
                         "wd": 5e-4, "tol": 1e-4},
        }
    return {
        "families": {"models": fam, "batch": 32, "resolution": None,
                     "dtypes": ("float32", "bfloat16"), "loss_rtol": 0.05,
                     "min_grad_cosine": 0.9},
        "parity": {"models": fam, "batch": 4, "resolution": None, "rtol": 1e-3},
        "alpha": {"base": _zoo("RegNetZ-500MF"), "kinds": ("dwr", "dWr", "w"),
                  "factors": (1, 4, 16), "batch": 64, "dtype": "bfloat16",
                  "warmup": 2, "iters": 5, "windows": 3},
        "budget": {"base": _zoo("RegNetZ-500MF"), "multiples": (2.0, 4.0), "batch": 64,
                   "dtype": "bfloat16", "tolerance": 0.05, "warmup": 2, "iters": 5,
                   "windows": 3},
        "timm": {"models": timm_models, "batch": 128, "resolution": None, "dtype": "bfloat16",
                 "warmup": 5, "iters": 10, "windows": 3},
        "cifar": {"spec": cifar, "batch": 256, "steps": 2500, "max_seconds": 50,
                  "dtype": "bfloat16", "lr": 0.2, "wd": 5e-4, "warmup_steps": 100,
                  "label_smoothing": 0.1, "log_every": 100, "eval_batch": 500,
                  "target_top1": 0.50, "parallel": "shard_map", "train_limit": None},
        "parallel": {"spec": cifar, "batch": 64, "steps": 3, "dtype": "float32", "lr": 0.01,
                     "wd": 5e-4, "tol": 1e-4},
    }


def check_no_tf(plan, threads) -> dict:
    from accel_check.common import FAIL, OK, result

    seen = [m for m in FORBIDDEN if m in sys.modules]
    return result(FAIL if seen else OK,
                  f"imported: {', '.join(seen)}" if seen else f"none of {', '.join(FORBIDDEN)} "
                  "was imported", imported=seen)


def _runners():
    from accel_check import models, torch_side, training

    return {"environment": lambda plan, threads: models.check_environment(plan),
            "families": models.check_families, "parity": models.check_parity,
            "alpha": models.check_alpha, "budget": models.check_budget,
            "timm": torch_side.check_timm,
            "cifar": training.check_cifar, "parallel": training.check_parallel,
            "no_tf": check_no_tf}


def run_checks(names, plan, threads, on_done=None) -> dict:
    """{name: result dict with 'seconds'}; a check that raises is recorded as failed."""
    from accel_check.common import FAIL, one_line, result

    runners, out = _runners(), {}
    for name in names:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            res = runners[name](plan, threads)
        except Exception as e:  # noqa: BLE001 - one line per failed check, the rest go on
            res = result(FAIL, one_line(e))
        res["seconds"] = round(time.perf_counter() - t0, 2)
        res["cpu_seconds"] = round(time.process_time() - c0, 2)  # all threads of this process
        out[name] = res
        if on_done:
            on_done(name, res)
    return out


def table(results: dict) -> str:
    from fastscale_jax.report import format_table

    rows = [[name, r["status"], r["summary"][:110], f"{r['seconds']:.1f}"]
            for name, r in results.items()]
    return format_table(["check", "status", "key numbers", "seconds"], rows)


def _to_json(o):
    """json.dump's fallback for objects it cannot write (model specs)."""
    return o.to_dict() if hasattr(o, "to_dict") else str(o)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (CI)")
    ap.add_argument("--out", default="accelerator_check.json", help="JSON results file")
    ap.add_argument("--only", nargs="+", metavar="CHECK", help=f"a subset of {CHECKS}")
    ap.add_argument("--compile-threads", type=int, default=None,
                    help="parallel XLA compilations (default: 2 with --smoke, else "
                         "min(8, cpus / 2))")
    ap.add_argument("--cache-dir", help="persistent compilation cache (default: a temp dir)")
    ap.add_argument("--alpha-factors", type=float, nargs="+", metavar="F",
                    help="flops factors of the alpha family (default: 1 4 16; --smoke: 1 2); "
                         "1 2 4 8 16 adds ~2 min on a GPU")
    args = ap.parse_args(argv)
    if args.alpha_factors and (min(args.alpha_factors) < 1 or 1 not in args.alpha_factors):
        ap.exit(2, f"error: --alpha-factors must be >= 1 and include 1, got {args.alpha_factors}\n")
    bad = [c for c in (args.only or []) if c not in CHECKS]
    if bad:
        ap.exit(2, f"error: unknown check {bad[0]!r}; valid: {', '.join(CHECKS)}\n")
    if args.compile_threads is not None and args.compile_threads < 1:
        ap.exit(2, f"error: --compile-threads must be >= 1, got {args.compile_threads}\n")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        ap.exit(2, f"error: --out directory {out_dir} does not exist; create it first\n")
    return args


def _accelerator_env():
    """Leave room on the GPU for torch (timm check) beside JAX's preallocated pool, and keep
    the CPU backend available for the parity reference."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms and "cpu" not in platforms.split(","):
        os.environ["JAX_PLATFORMS"] = platforms + ",cpu"


def _smoke_env():
    """CPU with 2 host devices; must run before jax is imported."""
    if "jax" in sys.modules:
        raise RuntimeError("--smoke must set up XLA before jax is imported")
    os.environ["JAX_PLATFORMS"] = "cpu"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=2").strip()


def main(argv=None) -> int:
    args = parse_args(argv)
    _smoke_env() if args.smoke else _accelerator_env()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t_start = time.perf_counter()
    from accel_check.common import enable_compile_cache

    cache = args.cache_dir or tempfile.mkdtemp(prefix="accel_check_cache_")
    enable_compile_cache(cache)
    threads = args.compile_threads or (2 if args.smoke else min(8, max(1, os.cpu_count() // 2)))
    plan = make_plan(args.smoke)
    if args.alpha_factors:
        plan["alpha"]["factors"] = tuple(args.alpha_factors)
    names = [c for c in CHECKS if not args.only or c in args.only]
    print(f"accelerator check ({'smoke, CPU' if args.smoke else 'full'}): {', '.join(names)}; "
          f"{threads} compile thread(s), cache {cache}", flush=True)

    done_so_far = {}

    from fastscale_jax.workdir import json_safe  # NaN -> null

    def write(results, complete):
        failed = [n for n, r in results.items() if r["status"] == "fail"]
        doc = {"smoke": args.smoke, "complete": complete, "plan": plan,
               "command": " ".join(["python"] + sys.argv),
               "total_seconds": time.perf_counter() - t_start, "failed": failed,
               "checks": results}
        with open(args.out, "w") as f:  # after every check: a killed run keeps what it did
            json.dump(json_safe(doc), f, indent=1, default=_to_json)
        return failed

    def done(name, res):
        print(f"  {name:12s} {res['status']:5s} {res['seconds']:7.1f}s  {res['summary']}",
              flush=True)
        done_so_far[name] = res
        write(done_so_far, complete=False)

    results = run_checks(names, plan, threads, on_done=done)
    failed = write(results, complete=True)
    print()
    print(table(results))
    print(f"\n{len(failed)} failed, {sum(r['status'] == 'ok' for r in results.values())} ok, "
          f"{sum(r['status'] == 'skip' for r in results.values())} skipped in "
          f"{time.perf_counter() - t_start:.0f}s" + (f": {', '.join(failed)}" if failed else ""))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
