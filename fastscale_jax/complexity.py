"""Analytic model complexity with pycls's conventions (pure Python, no jax).

- flops: multiply-adds (one per MAC; XLA's cost_analysis counts 2 per MAC);
- params: parameter count (BN counts its 2*C affine parameters, not its running stats);
- acts: number of output elements of every conv, linear and max-pool layer.

Counted for one image at the spec's *train* resolution (pycls TRAIN.IM_SIZE). BN, activation
functions, residual adds and the SE multiply count nothing. Complexity walks
`specs.block_plan(spec)`, the same plan the Flax builder uses.
"""

from __future__ import annotations

from fastscale_jax.specs import Spec, block_plan


class _Counter:
    """Accumulates (h, w, flops, params, acts) layer by layer, like pycls's cx dicts."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.flops = self.params = self.acts = 0

    def conv(self, w_in, w_out, k, stride=1, groups=1, bias=False):
        self.h, self.w = (self.h - 1) // stride + 1, (self.w - 1) // stride + 1
        hw = self.h * self.w
        self.flops += k * k * w_in * w_out * hw // groups + (w_out * hw if bias else 0)
        self.params += k * k * w_in * w_out // groups + (w_out if bias else 0)
        self.acts += w_out * hw

    def bn(self, c):
        self.params += 2 * c

    def maxpool(self, c, stride):
        self.h, self.w = (self.h - 1) // stride + 1, (self.w - 1) // stride + 1
        self.acts += c * self.h * self.w

    def se(self, w, w_se):
        h, ww = self.h, self.w
        self.h = self.w = 1
        self.conv(w, w_se, 1, bias=True)
        self.conv(w_se, w, 1, bias=True)
        self.h, self.w = h, ww

    def linear(self, w_in, w_out):
        self.flops += w_in * w_out + w_out
        self.params += w_in * w_out + w_out
        self.acts += w_out

    def totals(self):
        return {"flops": self.flops, "params": self.params, "acts": self.acts}


def _stem(c: _Counter, spec):
    if spec.family == "effnet" or spec.stem_type == "simple_stem_in":
        c.conv(3, spec.stem_w, 3, stride=2)
        c.bn(spec.stem_w)
    elif spec.stem_type == "res_stem_in":
        c.conv(3, spec.stem_w, 7, stride=2)
        c.bn(spec.stem_w)
        c.maxpool(spec.stem_w, stride=2)
    else:  # res_stem_cifar
        c.conv(3, spec.stem_w, 3)
        c.bn(spec.stem_w)


def _anynet_block(c: _Counter, b, block_type):
    if b.proj:
        h, w = c.h, c.w
        c.conv(b.w_in, b.w_out, 1, stride=b.stride)
        c.bn(b.w_out)
        c.h, c.w = h, w
    if block_type in ("vanilla_block", "res_basic_block"):
        c.conv(b.w_in, b.w_out, 3, stride=b.stride)
        c.bn(b.w_out)
        c.conv(b.w_out, b.w_out, 3)
        c.bn(b.w_out)
        return
    c.conv(b.w_in, b.w_b, 1)
    c.bn(b.w_b)
    c.conv(b.w_b, b.w_b, 3, stride=b.stride, groups=b.groups)
    c.bn(b.w_b)
    if b.w_se:
        c.se(b.w_b, b.w_se)
    c.conv(b.w_b, b.w_out, 1)
    c.bn(b.w_out)


def _mbconv(c: _Counter, b):
    if b.w_b != b.w_in:
        c.conv(b.w_in, b.w_b, 1)
        c.bn(b.w_b)
    c.conv(b.w_b, b.w_b, b.kernel, stride=b.stride, groups=b.w_b)
    c.bn(b.w_b)
    if b.w_se:
        c.se(b.w_b, b.w_se)
    c.conv(b.w_b, b.w_out, 1)
    c.bn(b.w_out)


def complexity(spec: Spec, resolution: int | None = None, *, per_stage: bool = False) -> dict:
    """flops (multiply-adds), params and acts of `spec` for one image.

    resolution defaults to spec.resolution (the train resolution, as pycls counts).
    With per_stage=True, also returns 'stages': a list of dicts (name 'stem', 's1', ...,
    'head'; with out_h/out_w, the spatial size after that part) whose sums are the totals.
    """
    r = int(resolution or spec.resolution)
    c = _Counter(r, r)
    parts = []

    def mark(name):
        prev = parts[-1]["_cum"] if parts else {"flops": 0, "params": 0, "acts": 0}
        cur = c.totals()
        parts.append({"name": name, **{k: cur[k] - prev[k] for k in cur},
                      "out_h": c.h, "out_w": c.w, "_cum": cur})

    _stem(c, spec)
    mark("stem")
    blocks = block_plan(spec)
    for s in range(1, spec.num_stages + 1):
        for b in (b for b in blocks if b.stage == s):
            if spec.family == "anynet":
                _anynet_block(c, b, spec.block_type)
            else:
                _mbconv(c, b)
        mark(f"s{s}")
    w_last = spec.widths[-1]
    if spec.head_w > 0:
        c.conv(w_last, spec.head_w, 1)
        c.bn(spec.head_w)
        w_last = spec.head_w
    c.h = c.w = 1
    c.linear(w_last, spec.num_classes)
    mark("head")
    out = c.totals()
    if per_stage:
        for p in parts:
            del p["_cum"]
        out["stages"] = parts
    return out
