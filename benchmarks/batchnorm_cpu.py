"""Training-mode BatchNorm + activation, forward and backward: ours vs Flax vs PyTorch on CPU.

    python benchmarks/batchnorm_cpu.py            # ~1 min on 2 cores

Per activation shape (NHWC for JAX, NCHW for torch, float32): one jitted call computing
act(BN(x)) with batch statistics and the gradients wrt x, scale and bias, for
`fastscale_jax.ops.batchnorm.batch_norm_act` (hand-written backward) and for Flax's
nn.BatchNorm followed by the activation (autodiff); torch's BatchNorm2d + activation forward +
backward. Calls are interleaved round by round (benchmarks/conv_cpu.py's `measure`); the table
gives median ms [min-max] and the ratios flax / ours and torch / ours (> 1: ours faster).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import conv_cpu  # noqa: E402  (imports jax but starts no backend before main() tunes malloc)

SHAPES = [(32, 112, 112, 32), (32, 56, 56, 64), (32, 28, 28, 128), (32, 14, 14, 320), (8, 56, 56, 64)]
ACTS = ("relu", "silu")


def jax_calls(shape, act_name):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from fastscale_jax.models.layers import activation
    from fastscale_jax.ops.batchnorm import batch_norm_act

    act = activation(act_name)
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k[0], shape) * 2 + 0.5
    ct = jax.random.normal(k[1], shape)
    scale, bias = jnp.ones(shape[-1:]), jnp.zeros(shape[-1:])
    flax_bn = nn.BatchNorm(use_running_average=False, epsilon=1e-5)
    stats = {"mean": jnp.zeros(shape[-1:]), "var": jnp.ones(shape[-1:])}

    def ours(x, s, b):
        return batch_norm_act(x, s, b, act)[0]

    def flax(x, s, b):
        y, _ = flax_bn.apply({"params": {"scale": s, "bias": b}, "batch_stats": stats}, x,
                             mutable=["batch_stats"])
        return act(y)

    def timed(fn):
        g = jax.jit(jax.grad(lambda x, s, b: jnp.sum(fn(x, s, b) * ct), argnums=(0, 1, 2)))
        g = g.lower(x, scale, bias).compile()
        return conv_cpu._timer(g, (x, scale, bias))

    return {"ours": timed(ours), "flax": timed(flax)}


def torch_call(shape, act_name, threads):
    import time

    import torch

    torch.set_num_threads(threads)
    n, h, w, c = shape
    bn = torch.nn.BatchNorm2d(c)
    act = torch.nn.ReLU() if act_name == "relu" else torch.nn.SiLU()
    x = torch.randn(n, c, h, w, requires_grad=True)
    ct = torch.randn(n, c, h, w)

    def call():
        x.grad = None
        bn.zero_grad(set_to_none=True)
        t = time.perf_counter()
        act(bn(x)).backward(ct)
        return time.perf_counter() - t

    return call


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true")
    conv_cpu.add_malloc_flag(ap)
    args = ap.parse_args()
    malloc = conv_cpu.apply_malloc(args)
    import jax

    threads = conv_cpu.jax_cpu_cores()
    print(f"# jax {jax.__version__} on {jax.default_backend()}, {threads} cores; {malloc}")
    print("# BN (batch statistics) + activation, forward + backward; median ms [min-max]")
    cols = ["ours", "flax"] + ([] if args.no_torch else ["torch"])
    print("| shape (NHWC) | act | " + " | ".join(f"{c} ms" for c in cols) + " | flax/ours |"
          + ("" if args.no_torch else " torch/ours |"))
    print("|" + "---|" * (2 * len(cols) + 1))
    for shape in SHAPES:
        for act in ACTS:
            calls = jax_calls(shape, act)
            if not args.no_torch:
                try:
                    calls["torch"] = torch_call(shape, act, threads)
                except ImportError:
                    args.no_torch = True
            res = conv_cpu.measure(calls, args.rounds, cell_seconds=5.0, warmup=2)
            cells = [conv_cpu.fmt_ms(res[c]) if c in res else "-" for c in cols]
            ratios = [f"{res[c][0] / res['ours'][0]:.2f}" if c in res else "-" for c in cols[1:]]
            print(f"| {shape} | {act} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
