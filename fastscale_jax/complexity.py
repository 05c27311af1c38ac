"""Analytic model complexity with pycls's conventions (pure Python, no jax).

- flops: multiply-adds (one per MAC; XLA's cost_analysis counts 2 per MAC);
- params: parameter count (BN counts its 2*C affine parameters, not its running stats);
- acts: number of output elements of every conv, linear and max-pool layer.

Counted for one image at the spec's *train* resolution (pycls TRAIN.IM_SIZE). BN, activation
functions, residual adds and the SE multiply count nothing. Complexity walks
`families.layer_plan(spec)`, the same per-layer plan the Flax modules are built from.
"""

from __future__ import annotations

from fastscale_jax.families import layer_plan
from fastscale_jax.plan import (BNOp, ConvOp, DropoutOp, LinearOp, MaxPoolOp, Part, PoolOp,
                                SEOp)


class _Counter:
    """Accumulates (h, w, flops, params, acts) op by op, like pycls's cx dicts."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.flops = self.params = self.acts = 0

    def ops(self, ops):
        for op in ops:
            try:
                count = COUNT[type(op)]
            except KeyError:
                raise TypeError(f"complexity: no count for plan op {type(op).__name__}") from None
            count(self, op)

    def part(self, part: Part):
        h, w = self.h, self.w  # the shortcut runs on the part's input
        self.ops(part.shortcut)
        self.h, self.w = h, w
        self.ops(part.ops)

    def totals(self):
        return {"flops": self.flops, "params": self.params, "acts": self.acts}


def _conv(c: _Counter, op: ConvOp):
    c.h, c.w = (c.h - 1) // op.stride + 1, (c.w - 1) // op.stride + 1
    hw, w_out = c.h * c.w, op.w_out
    k2io = op.kernel * op.kernel * op.w_in * w_out
    c.flops += k2io * hw // op.groups + (w_out * hw if op.bias else 0)
    c.params += k2io // op.groups + (w_out if op.bias else 0)
    c.acts += w_out * hw


def _bn(c: _Counter, op: BNOp):
    c.params += 2 * op.channels


def _max_pool(c: _Counter, op: MaxPoolOp):
    c.h, c.w = (c.h - 1) // op.stride + 1, (c.w - 1) // op.stride + 1
    c.acts += op.channels * c.h * c.w


def _se(c: _Counter, op: SEOp):  # on the pooled 1x1 input; the output keeps h, w
    h, w = c.h, c.w
    c.h = c.w = 1
    c.ops((op.reduce, op.expand))
    c.h, c.w = h, w


def _pool(c: _Counter, op: PoolOp):
    c.h = c.w = 1


def _linear(c: _Counter, op: LinearOp):
    c.flops += op.w_in * op.w_out + op.w_out
    c.params += op.w_in * op.w_out + op.w_out
    c.acts += op.w_out


# How each plan op kind counts (one entry per kind of fastscale_jax.plan.OP_KINDS).
COUNT = {ConvOp: _conv, BNOp: _bn, MaxPoolOp: _max_pool, SEOp: _se, PoolOp: _pool,
         DropoutOp: lambda c, op: None, LinearOp: _linear}


def complexity(spec, resolution: int | None = None, *, per_stage: bool = False) -> dict:
    """flops (multiply-adds), params and acts of `spec` for one image.

    resolution defaults to spec.resolution (the train resolution, as pycls counts).
    With per_stage=True, also returns 'stages': a list of dicts (name 'stem', 's1', ...,
    'head'; with out_h/out_w, the spatial size after that part) whose sums are the totals.
    """
    parts = layer_plan(spec)  # ConfigError for anything but a spec
    r = int(resolution or spec.resolution)
    c = _Counter(r, r)
    after = {}  # 'stem' | 's1' | ... | 'head' -> (running totals, h, w) after its last part
    for part in parts:
        c.part(part)
        after[f"s{part.block.stage}" if part.block else part.path[0]] = (c.totals(), c.h, c.w)
    out = c.totals()
    if per_stage:
        parts, prev = [], dict.fromkeys(out, 0)
        for name, (cum, h, w) in after.items():
            parts.append({"name": name, **{k: cum[k] - prev[k] for k in cum}, "out_h": h, "out_w": w})
            prev = cum
        out["stages"] = parts
    return out
