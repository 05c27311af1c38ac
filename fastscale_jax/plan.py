"""The per-layer plan of a spec: every layer of the network, in order, as plain data (no jax).

`layer_plan(spec)` is the one place that says which layers a network has. The Flax modules
(`fastscale_jax.models`) interpret it, the analytic complexity counts it, the checkpoint
converter names its weights from it, and `total_stride` multiplies its strides, so none of
them can disagree on a layer.

A plan is a list of `Part`s: the stem, every block of `specs.block_plan(spec)`, the head. A
part applies its `ops` in order (inside the sub-module `branch` when set: AnyNet blocks keep
their residual branch under 'f', as pycls does). A residual part then adds its input, passed
through its `shortcut` ops (1x1 projection + BN) when there are any, with stochastic depth
`drop_rate` on the branch, and applies `post_act`. Ops name their Flax module path, e.g.
('s1_b1', 'f', 'a'); widths are channels, kernel and stride are pixels.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from fastscale_jax.specs import Block, Spec, block_plan


class ConvOp(NamedTuple):
    """kxk convolution, padding (k - 1) // 2."""

    path: tuple
    w_in: int
    w_out: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    bias: bool = False


class BNOp(NamedTuple):
    """BatchNorm over `channels`, then activation `act` (None = none); zero_init: gamma = 0."""

    path: tuple
    channels: int
    act: Optional[str] = None
    zero_init: bool = False


class MaxPoolOp(NamedTuple):
    """kxk max-pool with padding (k - 1) // 2."""

    channels: int
    kernel: int = 3
    stride: int = 2


class SEOp(NamedTuple):
    """Squeeze-and-excitation: x * sigmoid(expand(act(reduce(mean_hw(x))))), 1x1 convs with bias."""

    path: tuple
    reduce: ConvOp
    expand: ConvOp
    act: str


class PoolOp(NamedTuple):
    """Global average pool to a vector of `channels`."""

    channels: int


class DropoutOp(NamedTuple):
    rate: float


class LinearOp(NamedTuple):
    """Fully connected layer with bias; its output (the logits) is float32."""

    path: tuple
    w_in: int
    w_out: int


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


_STEMS = {"simple_stem_in": (3, 2), "res_stem_in": (7, 2), "res_stem_cifar": (3, 1)}


def _stem(spec) -> Part:
    stem_type = "simple_stem_in" if spec.family == "effnet" else spec.stem_type
    k, s = _STEMS[stem_type]
    ops = [ConvOp(("stem", "conv"), 3, spec.stem_w, k, s),
           BNOp(("stem", "bn"), spec.stem_w, spec.activation)]
    if stem_type == "res_stem_in":
        ops.append(MaxPoolOp(spec.stem_w))
    return Part(("stem",), tuple(ops))


def _se(path, w, w_se, act) -> SEOp:
    return SEOp(path, ConvOp((*path, "reduce"), w, w_se, bias=True),
                ConvOp((*path, "expand"), w_se, w, bias=True), act)


def _anynet_block(spec, b: Block) -> Part:
    """Vanilla/basic: 3x3, 3x3; bottleneck: 1x1, kxk grouped [+SE], 1x1; shortcut 1x1 proj + BN."""
    p = (f"s{b.stage}_b{b.index}",)
    f, bt, act = (*p, "f"), spec.block_type, spec.activation
    zero = spec.zero_init_last_bn and bt != "vanilla_block"
    if bt in ("vanilla_block", "res_basic_block"):
        ops = [ConvOp((*f, "a"), b.w_in, b.w_out, b.kernel, b.stride), BNOp((*f, "a_bn"), b.w_out, act),
               ConvOp((*f, "b"), b.w_out, b.w_out, b.kernel),
               BNOp((*f, "b_bn"), b.w_out, act if bt == "vanilla_block" else None, zero)]
    else:
        ops = [ConvOp((*f, "a"), b.w_in, b.w_b), BNOp((*f, "a_bn"), b.w_b, act),
               ConvOp((*f, "b"), b.w_b, b.w_b, b.kernel, b.stride, b.groups),
               BNOp((*f, "b_bn"), b.w_b, act)]
        if b.w_se:
            ops.append(_se((*f, "se"), b.w_b, b.w_se, act))
        ops += [ConvOp((*f, "c"), b.w_b, b.w_out), BNOp((*f, "c_bn"), b.w_out, None, zero)]
    shortcut = ((ConvOp((*p, "proj"), b.w_in, b.w_out, 1, b.stride), BNOp((*p, "bn"), b.w_out))
                if b.proj else ())
    # RegNetZ's linear blocks have no activation after the add.
    post = act if b.residual and bt != "res_bottleneck_linear_block" else None
    return Part(p, tuple(ops), "f", shortcut, b.residual, post, b.drop_rate, b)


def _mbconv(spec, b: Block) -> Part:
    """[1x1 expand], kxk depthwise, [SE], 1x1 linear projection; identity shortcut."""
    p, act = (f"s{b.stage}_b{b.index}",), spec.activation
    ops = []
    if b.w_b != b.w_in:
        ops += [ConvOp((*p, "exp"), b.w_in, b.w_b), BNOp((*p, "exp_bn"), b.w_b, act)]
    ops += [ConvOp((*p, "dwise"), b.w_b, b.w_b, b.kernel, b.stride, b.groups),
            BNOp((*p, "dwise_bn"), b.w_b, act)]
    if b.w_se:
        ops.append(_se((*p, "se"), b.w_b, b.w_se, act))
    ops += [ConvOp((*p, "lin_proj"), b.w_b, b.w_out), BNOp((*p, "lin_proj_bn"), b.w_out)]
    return Part(p, tuple(ops), None, (), b.residual, None, b.drop_rate, b)


def _head(spec) -> Part:
    """[1x1 conv, BN + act], global average pool, [dropout], fc."""
    w, ops = spec.widths[-1], []
    if spec.head_w > 0:
        bn = "conv_bn" if spec.family == "effnet" else "bn"
        ops += [ConvOp(("head", "conv"), w, spec.head_w),
                BNOp(("head", bn), spec.head_w, spec.activation)]
        w = spec.head_w
    ops.append(PoolOp(w))
    if getattr(spec, "dropout", 0.0) > 0:
        ops.append(DropoutOp(spec.dropout))
    ops.append(LinearOp(("head", "fc"), w, spec.num_classes))
    return Part(("head",), tuple(ops))


def layer_plan(spec: Spec) -> list[Part]:
    """Every part of `spec` in order: stem, blocks s1_b1, s1_b2, ..., head."""
    if getattr(spec, "family", None) not in ("anynet", "effnet"):
        raise ValueError(f"expected an AnyNetSpec or EffNetSpec, got {type(spec).__name__}")
    block = _anynet_block if spec.family == "anynet" else _mbconv
    return [_stem(spec), *(block(spec, b) for b in block_plan(spec)), _head(spec)]


def _op_weights(op) -> list[tuple]:
    if isinstance(op, ConvOp):
        return [(op.path, "conv_b" if op.bias else "conv")]
    if isinstance(op, BNOp):
        return [(op.path, "bn")]
    if isinstance(op, SEOp):
        return _op_weights(op.reduce) + _op_weights(op.expand)
    if isinstance(op, LinearOp):
        return [(op.path, "linear")]
    return []


def part_weights(part: Part, shortcut_first: bool = True) -> list[tuple]:
    """(Flax module path, kind) of every weight-holding layer of `part`; kinds 'conv',
    'conv_b' (conv with bias), 'bn', 'linear'. The shortcut comes first (pycls's order) or last."""
    ops = part.shortcut + part.ops if shortcut_first else part.ops + part.shortcut
    return [w for op in ops for w in _op_weights(op)]


def weight_layers(spec: Spec) -> list[tuple]:
    """(Flax module path, kind) of every weight-holding layer of `spec`, in pycls's order."""
    return [w for part in layer_plan(spec) for w in part_weights(part)]


def total_stride(spec: Spec) -> int:
    """Downsampling factor of the whole network: the product of the strides along the main
    path (stem conv, stem max-pool, every block's strided conv)."""
    s = 1
    for part in layer_plan(spec):
        for op in part.ops:
            if isinstance(op, (ConvOp, MaxPoolOp)):
                s *= op.stride
    return s
