"""Unit tests of the training pieces: optimizers, schedules, losses, mixup/cutmix (no model)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fastscale_jax.config import base_config
from fastscale_jax.train import losses, mixing, optim


def _params():
    return {"conv": {"kernel": jnp.ones((3, 3, 4, 8))}, "bn": {"scale": jnp.ones((8,)),
            "bias": jnp.zeros((8,))}, "fc": {"kernel": jnp.ones((8, 10)), "bias": jnp.ones((10,))}}


def test_lr_rule_and_schedule():
    o = base_config().optim
    o.base_lr, o.base_batch_size = 0.8, 1024
    assert optim.peak_lr(o, 256) == pytest.approx(0.2)
    o.warmup_init_factor, o.min_lr_factor = 0.1, 0.0
    sched = optim.make_schedule(o, lr=1.0, total_steps=100, warmup=10)
    assert float(sched(0)) == pytest.approx(0.1)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(55)) == pytest.approx(0.5, abs=1e-6)  # cosine midpoint
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-6)
    assert float(sched(5)) < float(sched(9))


def test_pycls_warmup_style_matches_pycls_epoch_lr():
    """warmup_style='pycls' equals pycls's own get_epoch_lr at every epoch boundary, and its
    formula in between (cosine over the whole run, times the linear warmup factor)."""
    opt = pytest.importorskip("pycls.core.optimizer")
    from pycls.core.config import cfg

    o = base_config().optim
    o.warmup_style, o.warmup_init_factor, o.min_lr_factor = "pycls", 0.1, 0.0
    spe, epochs, warm_epochs = 7, 10, 3
    sched = optim.make_schedule(o, lr=0.4, total_steps=spe * epochs, warmup=spe * warm_epochs)
    old = (cfg.OPTIM.BASE_LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WARMUP_EPOCHS,
           cfg.OPTIM.WARMUP_FACTOR, cfg.OPTIM.LR_POLICY)
    try:
        cfg.OPTIM.BASE_LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WARMUP_EPOCHS = 0.4, epochs, warm_epochs
        cfg.OPTIM.WARMUP_FACTOR, cfg.OPTIM.LR_POLICY = 0.1, "cos"
        want = [opt.get_epoch_lr(e) for e in range(epochs)]
    finally:
        (cfg.OPTIM.BASE_LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WARMUP_EPOCHS,
         cfg.OPTIM.WARMUP_FACTOR, cfg.OPTIM.LR_POLICY) = old
    got = [float(sched(e * spe)) for e in range(epochs)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    t = 10 / (spe * warm_epochs)   # mid-warmup step 10: cos(pi * 10 / 70) * (0.1 + 0.9 t)
    assert float(sched(10)) == pytest.approx(
        0.4 * 0.5 * (1 + np.cos(np.pi * 10 / 70)) * (0.1 * (1 - t) + t), rel=1e-5)
    # the default ('prefix') reaches the peak at the end of warmup; pycls does not
    assert float(sched(21)) < 0.4 * 0.99
    o.warmup_style = "prefix"
    assert float(optim.make_schedule(o, lr=0.4, total_steps=70, warmup=21)(21)) == pytest.approx(0.4)
    o.warmup_style = "typo"
    with pytest.raises(ValueError, match="optim.warmup_style.*valid: prefix, pycls"):
        optim.validate(o)


@pytest.mark.parametrize("field,value", [("name", "adam_typo"), ("schedule", "step"),
                                         ("wd_mask", "none")])
def test_unknown_names_raise(field, value):
    o = base_config().optim
    o[field] = value
    with pytest.raises(ValueError, match=f"optim.{field}.*valid"):
        optim.validate(o)
    with pytest.raises(ValueError, match="train.loss.*valid: ce, bce"):
        losses.validate("softmax")


def test_weight_decay_only_on_kernels():
    o = base_config().optim
    for name in ("sgd", "lamb", "adamw"):
        o.name, o.weight_decay = name, 0.5
        tx = optim.make_optimizer(o, 1.0)
        p = _params()
        zeros = jax.tree_util.tree_map(jnp.zeros_like, p)
        upd, _ = tx.update(zeros, tx.init(p), p)
        # zero gradients: only decayed (kernel) params move
        assert float(jnp.abs(upd["conv"]["kernel"]).max()) > 0, name
        assert float(jnp.abs(upd["fc"]["kernel"]).max()) > 0, name
        for k in ("bn", "fc"):
            assert float(jnp.abs(upd[k]["bias"]).max()) == 0, (name, k)
        assert float(jnp.abs(upd["bn"]["scale"]).max()) == 0, name
    o.name, o.wd_mask = "sgd", "all"
    tx = optim.make_optimizer(o, 1.0)
    p = _params()
    upd, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, p), tx.init(p), p)
    assert float(jnp.abs(upd["bn"]["scale"]).max()) > 0


@pytest.mark.parametrize("wd_mask", ["all", "kernels"])
def test_sgd_nesterov_matches_torch_sgd(wd_mask):
    """Several SGD steps with a changing lr equal torch.optim.SGD(nesterov, weight_decay) --
    pycls's optimizer: decay on every parameter ('all'), or on weights only as param groups."""
    torch = pytest.importorskip("torch")
    o = base_config().optim
    o.name, o.momentum, o.nesterov, o.weight_decay, o.wd_mask = "sgd", 0.9, True, 0.05, wd_mask
    lrs = [0.1, 0.3, 0.2, 0.05, 0.01]
    tx = optim.make_optimizer(o, lambda step: jnp.asarray(lrs)[step])
    rng = np.random.default_rng(0)
    p = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32),
                               _params())
    grads = [jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32), p)
             for _ in lrs]
    leaves, treedef = jax.tree_util.tree_flatten(p)
    tp = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    decay = [x.ndim > 1 or wd_mask == "all" for x in leaves]
    topt = torch.optim.SGD([{"params": [t for t, d in zip(tp, decay) if d], "weight_decay": 0.05},
                            {"params": [t for t, d in zip(tp, decay) if not d], "weight_decay": 0.0}],
                           lr=lrs[0], momentum=0.9, nesterov=True, dampening=0.0)
    state = tx.init(p)
    for lr, g in zip(lrs, grads):
        upd, state = tx.update(g, state, p)
        p = optax.apply_updates(p, upd)
        for group in topt.param_groups:
            group["lr"] = lr
        for t, gl in zip(tp, jax.tree_util.tree_leaves(g)):
            t.grad = torch.tensor(gl)
        topt.step()
    for ours, theirs in zip(jax.tree_util.tree_leaves(p), tp):
        np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_lamb_trust_ratio_masked():
    o = base_config().optim
    o.name, o.weight_decay = "lamb", 0.0
    tx = optim.make_optimizer(o, 1.0)
    p = {"w": {"kernel": 10 * jnp.ones((4, 4))}, "b": {"bias": 10 * jnp.ones((4,))}}
    g = jax.tree_util.tree_map(jnp.ones_like, p)
    upd, _ = tx.update(g, tx.init(p), p)
    # Adam's first step is ~sign(g) = 1; the trust ratio rescales weights to ||p|| / ||u|| = 10
    np.testing.assert_allclose(upd["w"]["kernel"], -10.0, rtol=1e-4)
    np.testing.assert_allclose(upd["b"]["bias"], -1.0, rtol=1e-4)


def test_losses():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    t = jax.nn.one_hot(jnp.array([0]), 3)
    ce = losses.loss_fn("ce", logits, t)
    np.testing.assert_allclose(ce, -jax.nn.log_softmax(logits)[0, 0], rtol=1e-6)
    ls = losses.loss_fn("ce", logits, t, label_smoothing=0.3)
    st = t * 0.7 + 0.1
    np.testing.assert_allclose(ls, -(st * jax.nn.log_softmax(logits)).sum(), rtol=1e-6)
    bce = losses.loss_fn("bce", logits, t)
    ref = -(t * jax.nn.log_sigmoid(logits) + (1 - t) * jax.nn.log_sigmoid(-logits)).mean()
    np.testing.assert_allclose(bce, ref, rtol=1e-6)


@pytest.mark.parametrize("mixup,cutmix", [(0.0, 0.0), (0.2, 0.0), (0.0, 1.0), (0.1, 1.0)])
def test_mixing_targets(mixup, cutmix):
    key = jax.random.PRNGKey(3)
    x = jax.random.normal(key, (8, 16, 16, 3))
    t = jax.nn.one_hot(jnp.arange(8) % 4, 4)
    for i in range(4):
        xm, tm = mixing.mix(jax.random.fold_in(key, i), x, t, mixup_alpha=mixup,
                            cutmix_alpha=cutmix)
        assert xm.shape == x.shape and tm.shape == t.shape
        np.testing.assert_allclose(tm.sum(-1), 1.0, rtol=1e-6)
        if mixup == 0 and cutmix == 0:
            assert (xm == x).all() and (tm == t).all()
        lam = float(tm[0, 0])  # sample 0 (class 0) is mixed with sample 7 (class 3)
        if cutmix and not mixup:  # pixels from the partner cover exactly 1 - lam of the image
            frac = float(jnp.mean(jnp.all(xm[0] == x[7], axis=-1)))
            assert frac == pytest.approx(1 - lam, abs=1e-6)
        if mixup and not cutmix:
            np.testing.assert_allclose(xm[0], lam * x[0] + (1 - lam) * x[7], rtol=1e-5,
                                       atol=1e-5)
