"""The per-layer plan of a spec, as plain data (no jax): its op kinds and parts, and the part
builders the model families share.

`fastscale_jax.families.layer_plan(spec)` is the one place that says which layers a network
has: the spec's family (one module under fastscale_jax/families/) lists its parts with the
builders here. The Flax modules (`fastscale_jax.models`) interpret the plan, the analytic
complexity counts it, the checkpoint converter names its weights from it, and `total_stride`
multiplies its strides, so none of them can disagree on a layer.

A plan is a list of `Part`s: the stem, every block, the head. A part applies its `ops` in order
(inside the sub-module `branch` when set: AnyNet blocks keep their residual branch under 'f', as
pycls does). A residual part then adds its input, passed through its `shortcut` ops (1x1
projection + BN) when there are any, with stochastic depth `drop_rate` on the branch, and
applies `post_act`. Ops name their Flax module path, e.g. ('s1_b1', 'f', 'a'); widths are
channels, kernel and stride are pixels.

Op kinds: ConvOp, BNOp, MaxPoolOp, SEOp, PoolOp, DropoutOp, LinearOp. Every consumer dispatches
on the op's type through one table (`models.network.APPLY`, `complexity.COUNT`) and asks the op
itself for its weights (`op.weights()`) and its stride; a new op kind is a class here plus one
entry in each table (tests/test_plan.py checks that every table covers every kind).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from fastscale_jax.specs import Block


class ConvOp(NamedTuple):
    """kxk convolution, padding (k - 1) // 2."""

    path: tuple
    w_in: int
    w_out: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    bias: bool = False

    def weights(self) -> list[tuple]:
        return [(self.path, "conv_b" if self.bias else "conv")]


class BNOp(NamedTuple):
    """BatchNorm over `channels`, then activation `act` (None = none); zero_init: gamma = 0."""

    path: tuple
    channels: int
    act: Optional[str] = None
    zero_init: bool = False
    stride = 1

    def weights(self) -> list[tuple]:
        return [(self.path, "bn")]


class MaxPoolOp(NamedTuple):
    """kxk max-pool with padding (k - 1) // 2."""

    channels: int
    kernel: int = 3
    stride: int = 2

    def weights(self) -> list[tuple]:
        return []


class SEOp(NamedTuple):
    """Squeeze-and-excitation: x * sigmoid(expand(act(reduce(mean_hw(x))))), 1x1 convs with bias."""

    path: tuple
    reduce: ConvOp
    expand: ConvOp
    act: str
    stride = 1

    def weights(self) -> list[tuple]:
        return self.reduce.weights() + self.expand.weights()


class PoolOp(NamedTuple):
    """Global average pool to a vector of `channels`."""

    channels: int
    stride = 1

    def weights(self) -> list[tuple]:
        return []


class DropoutOp(NamedTuple):
    rate: float
    stride = 1

    def weights(self) -> list[tuple]:
        return []


class LinearOp(NamedTuple):
    """Fully connected layer with bias; its output (the logits) is float32."""

    path: tuple
    w_in: int
    w_out: int
    stride = 1

    def weights(self) -> list[tuple]:
        return [(self.path, "linear")]


OP_KINDS = (ConvOp, BNOp, MaxPoolOp, SEOp, PoolOp, DropoutOp, LinearOp)


class Part(NamedTuple):
    """The stem, one block or the head (see the module docstring)."""

    path: tuple                     # ('stem',), ('s1_b1',), ('head',)
    ops: tuple
    branch: Optional[str] = None    # sub-module holding `ops` (AnyNet blocks: 'f')
    shortcut: tuple = ()            # projection ops of a residual part; () = identity
    residual: bool = False
    post_act: Optional[str] = None  # activation after the residual add
    drop_rate: float = 0.0          # stochastic depth / drop-connect of the branch
    block: Optional[Block] = None   # the block this part builds (None: stem, head)


def part_weights(part: Part, shortcut_first: bool = True) -> list[tuple]:
    """(Flax module path, kind) of every weight-holding layer of `part`; kinds 'conv',
    'conv_b' (conv with bias), 'bn', 'linear'. The shortcut comes first (pycls's order) or last."""
    ops = part.shortcut + part.ops if shortcut_first else part.ops + part.shortcut
    return [w for op in ops for w in op.weights()]


def plan_stride(parts) -> int:
    """Downsampling factor of a plan: the product of the strides along the main path (stem
    conv, stem max-pool, every block's strided conv)."""
    s = 1
    for part in parts:
        for op in part.ops:
            s *= op.stride
    return s


# ------------------------------------------------------------------------------------
# Part builders the families share.

# stem type: (kernel, stride, max-pool after the conv)
STEMS = {"simple_stem_in": (3, 2, False), "res_stem_in": (7, 2, True),
         "res_stem_cifar": (3, 1, False)}


def stem_part(stem_type: str, w: int, act: str) -> Part:
    """kxk conv 3 -> w, BN + act [, 3x3 max-pool]: pycls's stems (EfficientNets: simple)."""
    k, s, pool = STEMS[stem_type]
    ops = [ConvOp(("stem", "conv"), 3, w, k, s), BNOp(("stem", "bn"), w, act)]
    if pool:
        ops.append(MaxPoolOp(w))
    return Part(("stem",), tuple(ops))


def se_op(path: tuple, w: int, w_se: int, act: str) -> SEOp:
    return SEOp(path, ConvOp((*path, "reduce"), w, w_se, bias=True),
                ConvOp((*path, "expand"), w_se, w, bias=True), act)


def head_part(w_in: int, head_w: int, num_classes: int, act: str, *, bn_name: str = "bn",
              dropout: float = 0.0) -> Part:
    """[1x1 conv w_in -> head_w, BN + act], global average pool, [dropout], fc."""
    w, ops = w_in, []
    if head_w > 0:
        ops += [ConvOp(("head", "conv"), w, head_w), BNOp(("head", bn_name), head_w, act)]
        w = head_w
    ops.append(PoolOp(w))
    if dropout > 0:
        ops.append(DropoutOp(dropout))
    ops.append(LinearOp(("head", "fc"), w, num_classes))
    return Part(("head",), tuple(ops))
