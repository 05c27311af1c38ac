"""The per-device train and eval steps, and the two ways to run them data-parallel.

The step bodies see one device's batch and use collectives over the named axis 'batch':
gradients, metrics and BN running statistics are averaged with lax.pmean. They run either

  - 'pmap':      jax.pmap(body, axis_name='batch'); state carries a leading device axis, the
                 batch is [D, B, ...] per process;
  - 'shard_map': jax.jit(jax.shard_map(body, mesh=Mesh(devices, ('batch',)), ...)); the state
                 is replicated (P()), the batch is one global array sharded on its first axis.

Both compute the same thing (tests/test_train_parallel.py). The state is donated.

BatchNorm: forward statistics are per device (pycls / PyTorch DDP semantics) unless
train.sync_bn. The running statistics are pmean'd every step. Running averages are linear in
the batch statistics and do not feed back into training, so this equals keeping per-device
running stats and averaging them before eval and checkpointing -- and it keeps the state
replicated, which both parallel modes need.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fastscale_jax.errors import ConfigError
from fastscale_jax.train import losses, mixing
from fastscale_jax.train.state import TrainState

AXIS = "batch"
PARALLEL_MODES = ("pmap", "shard_map")


def validate_parallel(mode: str) -> None:
    """Raise a ValueError naming the valid choices if `mode` is not a parallel mode."""
    if mode not in PARALLEL_MODES:
        raise ConfigError(f"unknown parallel={mode!r}; valid: {', '.join(PARALLEL_MODES)}")


def _ema_decay(step, decay: float, warmup: bool):
    d = jnp.asarray(decay, jnp.float32)
    if warmup:
        t = step.astype(jnp.float32)
        d = jnp.minimum(d, (1.0 + t) / (10.0 + t))
    return d


def _loss_and_grads(model, train_cfg, num_classes: int, state: TrainState, batch):
    """(loss, (logits, targets, new batch_stats)), grads of one device's batch: mixup / cutmix,
    the configured loss, train-mode BN. Per device; nothing is averaged here."""
    key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), lax.axis_index(AXIS))
    k_mix, k_drop = jax.random.split(key)
    targets = jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)
    images, targets = mixing.mix(
        k_mix, batch["image"], targets, mixup_alpha=float(train_cfg.mixup_alpha),
        cutmix_alpha=float(train_cfg.cutmix_alpha), prob=float(train_cfg.mix_prob),
        switch_prob=float(train_cfg.mix_switch_prob))

    def compute_loss(params):
        logits, new_vars = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True,
            mutable=["batch_stats"], rngs={"dropout": k_drop})
        loss = losses.loss_fn(train_cfg.loss, logits, targets,
                              label_smoothing=float(train_cfg.label_smoothing),
                              bce_target_thresh=train_cfg.get("bce_target_thresh"))
        return loss, (logits, targets, new_vars["batch_stats"])

    return jax.value_and_grad(compute_loss, has_aux=True)(state.params)


def make_grad_body(model, train_cfg, num_classes: int):
    """body(state, batch) -> (loss, grads, batch_stats), averaged over 'batch': the train
    step's forward and backward pass without the optimizer update (timing's 'fwd_bwd')."""

    def body(state: TrainState, batch):
        (loss, (_, _, batch_stats)), grads = _loss_and_grads(model, train_cfg, num_classes,
                                                            state, batch)
        return lax.pmean((loss, grads, batch_stats), AXIS)

    return body


def make_train_body(model, tx, schedule, train_cfg, num_classes: int):
    """body(state, batch) -> (state, metrics), for one device; collectives over 'batch'."""
    ema_on = train_cfg.ema_decay > 0

    def body(state: TrainState, batch):
        (loss, (logits, targets, batch_stats)), grads = _loss_and_grads(
            model, train_cfg, num_classes, state, batch)
        grads = lax.pmean(grads, AXIS)
        batch_stats = lax.pmean(batch_stats, AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema
        if ema_on:
            d = _ema_decay(state.step, train_cfg.ema_decay, train_cfg.ema_warmup)
            new = {"params": params, "batch_stats": batch_stats}
            ema = jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, ema, new)
        correct = jnp.mean((jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
                           .astype(jnp.float32))
        metrics = lax.pmean({"loss": loss, "accuracy": correct}, AXIS)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state, ema=ema)
        return new_state, metrics

    return body


def make_eval_body(model, *, ema: bool):
    """body(state, batch) -> summed metrics over the global batch (masked examples skipped)."""

    def one(variables, images, labels, mask):
        logits = model.apply(variables, images, train=False).astype(jnp.float32)
        m = mask.astype(jnp.float32)
        top5 = lax.top_k(logits, min(5, logits.shape[-1]))[1]
        c1 = (top5[:, 0] == labels).astype(jnp.float32)
        c5 = jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return {"top1": jnp.sum(c1 * m), "top5": jnp.sum(c5 * m), "loss": jnp.sum(ce * m)}

    def body(state: TrainState, batch):
        images, labels, mask = batch["image"], batch["label"], batch["mask"]
        out = {"count": jnp.sum(mask.astype(jnp.float32))}
        out.update(one({"params": state.params, "batch_stats": state.batch_stats},
                       images, labels, mask))
        if ema:
            ev = one({"params": state.ema["params"], "batch_stats": state.ema["batch_stats"]},
                     images, labels, mask)
            out.update({f"ema_{k}": v for k, v in ev.items()})
        return lax.psum(out, AXIS)

    return body


class Parallel:
    """Runs step bodies data-parallel ('pmap' or 'shard_map') and moves state/batches."""

    def __init__(self, mode: str, devices=None):
        """devices: the devices to run on (default all: jax.devices(), this process's
        jax.local_devices()); timing passes a subset."""
        validate_parallel(mode)
        self.mode = mode
        self.local_devices = list(devices) if devices is not None else jax.local_devices()
        self.devices = list(devices) if devices is not None else jax.devices()
        self._pmap_kw = {"devices": self.local_devices} if devices is not None else {}
        # pmap inputs: a leading axis over this process's devices
        self.local_sharding = NamedSharding(Mesh(np.asarray(self.local_devices), (AXIS,)),
                                            P(AXIS))  # = pmap output sharding
        if mode == "shard_map":
            self.mesh = Mesh(np.asarray(self.devices), (AXIS,))
            self.replicated = NamedSharding(self.mesh, P())
            self.sharded = NamedSharding(self.mesh, P(AXIS))

    # -- compiled functions ------------------------------------------------------------
    def train_step(self, body):
        if self.mode == "pmap":
            return jax.pmap(body, axis_name=AXIS, donate_argnums=(0,), **self._pmap_kw)
        f = jax.shard_map(body, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()),
                          check_vma=False)
        return jax.jit(f, donate_argnums=(0,))

    def eval_step(self, body):
        if self.mode == "pmap":
            return jax.pmap(body, axis_name=AXIS, **self._pmap_kw)
        f = jax.shard_map(body, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=P(),
                          check_vma=False)
        return jax.jit(f)

    # -- data movement -----------------------------------------------------------------
    def put_state(self, host_state):
        """Host (numpy) state -> replicated device state."""
        if self.mode == "pmap":
            n = len(self.local_devices)
            return jax.device_put(jax.tree_util.tree_map(
                lambda x: np.broadcast_to(np.asarray(x)[None], (n,) + np.shape(x)), host_state),
                self.local_sharding)
        return jax.device_put(host_state, self.replicated)

    def get_state(self, state):
        """Replicated device state -> host numpy state (one copy)."""
        def one(x):
            x = np.asarray(x.addressable_data(0))
            return x[0] if self.mode == "pmap" else x

        return jax.tree_util.tree_map(one, state)

    def put_batch(self, batch):
        """A process-local batch {k: [D_local, B, ...]} -> device arrays for the step."""
        if self.mode == "pmap":
            return jax.device_put(jax.tree_util.tree_map(np.asarray, batch), self.local_sharding)

        def put(x):
            x = np.asarray(x)
            flat = x.reshape((-1,) + x.shape[2:])
            return jax.make_array_from_process_local_data(self.sharded, flat)

        return jax.tree_util.tree_map(put, batch)

    def abstract(self, state_shapes, batch_shapes):
        """ShapeDtypeStructs with the shapes and shardings put_state / put_batch give to a
        host state and a process-local batch of these shapes (for ahead-of-time lowering)."""
        def sds(x, shape, sharding):
            return jax.ShapeDtypeStruct(shape, x.dtype, sharding=sharding)

        n = len(self.local_devices)
        if self.mode == "pmap":
            state = jax.tree_util.tree_map(
                lambda x: sds(x, (n,) + tuple(x.shape), self.local_sharding), state_shapes)
            batch = jax.tree_util.tree_map(
                lambda x: sds(x, tuple(x.shape), self.local_sharding), batch_shapes)
            return state, batch
        state = jax.tree_util.tree_map(lambda x: sds(x, tuple(x.shape), self.replicated),
                                       state_shapes)
        batch = jax.tree_util.tree_map(
            lambda x: sds(x, (x.shape[0] * x.shape[1],) + tuple(x.shape[2:]), self.sharded),
            batch_shapes)
        return state, batch

    def get_metrics(self, metrics):
        """Replicated metrics -> host floats (a pmap shard is shape (1,), a shard_map one ())."""
        return {k: float(np.asarray(v.addressable_data(0)).reshape(())) for k, v in
                metrics.items()}

    def first(self, x):
        """A replicated scalar metric as a device-0 value (cheap: no host transfer yet)."""
        return x.addressable_data(0) if self.mode == "shard_map" else x[0]
