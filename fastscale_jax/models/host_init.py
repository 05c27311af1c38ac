"""Random model variables made on the host with numpy, from the layer plan and the models' own
initialisation rule (fastscale_jax.models.layers: conv kernels N(0, conv_kernel_std), linear
weights N(0, DENSE_INIT_STD), zero biases, BN scale 1 (0 where zero-initialised), running
mean 0 / var 1).

Timing uses these instead of `model.init`: Flax's init traces an RNG op per parameter and
takes tens of seconds per big model on a CPU, while the values (not their random stream) are
what a timed step sees. Same tree, shapes and distributions as Flax's init; other draws.
"""

from __future__ import annotations

import numpy as np

from fastscale_jax.families import layer_plan
from fastscale_jax.models.layers import DENSE_INIT_STD, conv_kernel_std
from fastscale_jax.plan import BNOp, ConvOp, DropoutOp, LinearOp, MaxPoolOp, PoolOp, SEOp


def _put(tree: dict, collection: str, path: tuple, leaf: str, value) -> None:
    node = tree.setdefault(collection, {})
    for k in path:
        node = node.setdefault(k, {})
    node[leaf] = value


def _conv(tree, op: ConvOp, rng):
    shape = (op.kernel, op.kernel, op.w_in // op.groups, op.w_out)
    _put(tree, "params", op.path, "kernel",
         (rng.standard_normal(shape) * conv_kernel_std(shape)).astype(np.float32))
    if op.bias:
        _put(tree, "params", op.path, "bias", np.zeros(op.w_out, np.float32))


def _bn(tree, op: BNOp, rng):
    c = op.channels
    _put(tree, "params", op.path, "scale", np.full(c, 0.0 if op.zero_init else 1.0, np.float32))
    _put(tree, "params", op.path, "bias", np.zeros(c, np.float32))
    _put(tree, "batch_stats", op.path, "mean", np.zeros(c, np.float32))
    _put(tree, "batch_stats", op.path, "var", np.ones(c, np.float32))


def _se(tree, op: SEOp, rng):
    _conv(tree, op.reduce, rng)
    _conv(tree, op.expand, rng)


def _linear(tree, op: LinearOp, rng):
    _put(tree, "params", op.path, "kernel",
         (rng.standard_normal((op.w_in, op.w_out)) * DENSE_INIT_STD).astype(np.float32))
    _put(tree, "params", op.path, "bias", np.zeros(op.w_out, np.float32))


def _nothing(tree, op, rng):
    pass


# The variables of each plan op kind (one entry per kind of fastscale_jax.plan.OP_KINDS).
INIT = {ConvOp: _conv, BNOp: _bn, SEOp: _se, LinearOp: _linear, MaxPoolOp: _nothing,
        PoolOp: _nothing, DropoutOp: _nothing}


def host_variables(spec, seed: int = 0) -> dict:
    """{'params', 'batch_stats'} of build_model(spec) as numpy arrays (see the module doc)."""
    rng = np.random.default_rng(seed)
    tree: dict = {"params": {}, "batch_stats": {}}
    for part in layer_plan(spec):
        for op in part.shortcut + part.ops:
            INIT[type(op)](tree, op, rng)
    return tree
