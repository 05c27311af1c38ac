"""The training loop on a tiny model and synthetic data: learning, exact resume after a crash,
SIGTERM, NaN handling, eval counting, --mode eval, and errors raised before any compile."""

import json
import os
import signal

import jax
import numpy as np
import pytest

import fastscale_jax as fs
from fastscale_jax.config import base_config
from fastscale_jax import AnyNetSpec
from fastscale_jax.train import NonFiniteLossError, evaluate, train_and_evaluate
from fastscale_jax.train import checkpoint as ckpt_lib

from synthetic_data import SyntheticData

# dense convs (group width = width): fast to compile and run on XLA:CPU
SPEC = AnyNetSpec(name="tiny-test", stem_type="res_stem_cifar", stem_w=8,
                  block_type="res_bottleneck_block", depths=(1, 1), widths=(16, 32),
                  strides=(1, 2), bot_muls=(1, 1), group_widths=(16, 32), num_classes=4,
                  resolution=32)


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """Identical steps are compiled by several runs here: share them via the persistent cache."""
    old = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def make_config(**train):
    c = base_config()
    c.train.global_batch_size = 16
    c.train.num_train_steps = 8
    c.train.log_every_steps = 2
    c.train.eval_every_epochs = 0.0
    c.train.progress = False
    c.train.tensorboard = False
    c.train.plot = False
    c.optim.base_lr = 1.0
    c.checkpoint.every_steps = 4
    for k, v in train.items():
        c.train[k] = v
    return c


class TriggerData(SyntheticData):
    """Calls `fire()` when about to serve training batch number `at` (0-based, counted over
    every train iterator it hands out)."""

    def __init__(self, at, **kw):
        super().__init__(**kw)
        self.at, self.served = at, 0

    def fire(self):
        raise NotImplementedError

    def train_iterator(self, *a, **kw):
        for batch in super().train_iterator(*a, **kw):
            if self.served == self.at:
                self.fire()
            self.served += 1
            yield batch


class NanData(TriggerData):
    """Serves training batch number `at` with NaN images, so that step's loss is NaN (a fault
    injected from the data, as a corrupt input would)."""

    def train_iterator(self, *a, **kw):
        for batch in SyntheticData.train_iterator(self, *a, **kw):
            if self.served == self.at:
                batch = dict(batch, image=np.full_like(batch["image"], np.nan))
            self.served += 1
            yield batch


class CrashingData(TriggerData):
    """Raises (like a killed process) instead of serving training batch number `at`."""

    def fire(self):
        raise RuntimeError("simulated crash")


class SigtermData(TriggerData):
    """Sends this process SIGTERM while serving training batch number `at`."""

    def fire(self):
        os.kill(os.getpid(), signal.SIGTERM)


def test_loss_decreases_and_outputs(tmp_path):
    c = make_config(num_train_steps=12, ema_decay=0.9, mixup_alpha=0.2, plot=True)
    c.optim.warmup_steps = 2
    res = train_and_evaluate(c, str(tmp_path), data=SyntheticData(), spec=SPEC)
    losses = res["losses"]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1
    assert res["top1"] > 0.4 and res["ema_top1"] > 0.25  # 4 classes: chance is 0.25
    for f in ("config.json", "complexity.txt", "metrics.jsonl", "final_metrics.json",
              "curves.png"):
        assert (tmp_path / f).exists(), f
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["split"] == "train"]
    assert {"loss", "lr", "images_per_s", "grad_norm"} <= set(train[0])
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["12", "4", "8"]


def test_bf16_compute_trains_with_float32_params(tmp_path):
    c = make_config(num_train_steps=12)
    c.optim.warmup_steps = 2
    c.model.dtype = "bfloat16"
    res = train_and_evaluate(c, str(tmp_path), data=SyntheticData(), spec=SPEC)
    losses = res["losses"]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1
    # parameters (and so the optimizer state built from them) stay float32 in the checkpoint
    import orbax.checkpoint as ocp
    meta = ocp.StandardCheckpointer().metadata(str(tmp_path / "checkpoints" / "12" / "state"))
    leaves = jax.tree_util.tree_leaves(getattr(meta, "item_metadata", meta) or {},
                                       is_leaf=lambda x: hasattr(x, "dtype"))
    dtypes = {str(x.dtype) for x in leaves if hasattr(x, "dtype")}
    assert dtypes and "bfloat16" not in dtypes, dtypes


def test_resume_after_crash_is_exact(tmp_path):
    c = make_config(num_train_steps=8)
    full = train_and_evaluate(c, str(tmp_path / "full"), data=SyntheticData(), spec=SPEC)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_evaluate(c, str(tmp_path / "crash"), data=CrashingData(6), spec=SPEC)
    assert ckpt_lib.Checkpointer(str(tmp_path / "crash")).latest_step() == 4
    resumed = train_and_evaluate(c, str(tmp_path / "crash"), data=SyntheticData(), spec=SPEC)
    assert len(resumed["losses"]) == 4
    np.testing.assert_allclose(resumed["losses"], full["losses"][4:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed["top1"], full["top1"])
    np.testing.assert_allclose(resumed["loss"], full["loss"], rtol=1e-5)


def test_sigterm_saves_then_eval_mode_and_model_check(tmp_path):
    c = make_config(num_train_steps=8)
    data = SigtermData(2, num_eval=21)
    res = train_and_evaluate(c, str(tmp_path), data=data, spec=SPEC)
    assert res["interrupted"] and res["step"] == 3
    assert ckpt_lib.Checkpointer(str(tmp_path)).latest_step() == 3
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored

    # --mode eval: the latest checkpoint; every one of the 21 eval images counted once
    c.train.eval_batch_size = 8
    ev = evaluate(c, str(tmp_path), data=SyntheticData(num_eval=21), spec=SPEC)
    assert ev["step"] == 3 and ev["count"] == 21

    # a different model in the same workdir: a clear error before anything compiles
    other = SPEC.replace(widths=(16, 48), group_widths=(16, 48))
    with pytest.raises(fs.errors.WorkdirError, match="different model.*widths.*new --workdir"):
        train_and_evaluate(c, str(tmp_path), data=SyntheticData(), spec=other)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    c = make_config(num_train_steps=8, log_every_steps=1)
    with pytest.raises(NonFiniteLossError, match="at step 5.*last good checkpoint is step 4"):
        train_and_evaluate(c, str(tmp_path), data=NanData(at=5), spec=SPEC)
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    assert ck.all_steps() == [4]
    from fastscale_jax.models import build_model
    from fastscale_jax.train import optim
    from fastscale_jax.train.state import create_state

    tx = optim.make_optimizer(c.optim, lambda step: 0.1)  # same state layout as the run
    template = create_state(build_model(SPEC), tx, image_size=32, seed=0, ema=False)
    restored = ck.restore(template)
    assert int(restored.step) == 4
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(restored.params))


@pytest.mark.parametrize("section,key,value,match", [
    ("optim", "name", "adam", "optim.name='adam'.*valid: sgd, lamb, adamw"),
    ("optim", "schedule", "step", "optim.schedule.*valid: cosine"),
    ("train", "loss", "softmax", "train.loss.*valid: ce, bce"),
    (None, "parallel", "pjit", "parallel='pjit'.*valid: pmap, shard_map"),
])
def test_bad_names_fail_before_compile(tmp_path, section, key, value, match):
    c = make_config()
    (c[section] if section else c)[key] = value
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(c, str(tmp_path), data=SyntheticData(), spec=SPEC)
    assert not (tmp_path / "checkpoints").exists()


class SigintData(TriggerData):
    """Sends this process SIGINT (Ctrl-C) while serving training batch number `at`."""

    def fire(self):
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_like_sigterm_and_resume_with_another_batch_is_refused(tmp_path):
    c = make_config(num_train_steps=8)
    res = train_and_evaluate(c, str(tmp_path), data=SigintData(2), spec=SPEC)
    assert res["interrupted"] and res["signal"] == "Ctrl-C" and res["step"] == 3
    assert ckpt_lib.Checkpointer(str(tmp_path)).latest_step() == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    config_json = (tmp_path / "config.json").read_text()
    c2 = make_config(num_train_steps=8)
    c2.train.global_batch_size = 8
    with pytest.raises(fs.errors.WorkdirError, match=r"train.global_batch_size=16, not 8"):
        train_and_evaluate(c2, str(tmp_path), data=SyntheticData(), spec=SPEC)
    assert (tmp_path / "config.json").read_text() == config_json  # the record is kept


def test_torn_metrics_line_is_dropped_with_a_warning_and_the_run_resumes(tmp_path, capsys):
    c = make_config(num_train_steps=8)
    train_and_evaluate(c, str(tmp_path), data=SigtermData(5), spec=SPEC)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "split": "tr')  # a crash mid-write
    res = train_and_evaluate(c, str(tmp_path), data=SyntheticData(), spec=SPEC)
    assert res["step"] == 8 and "is not a complete record" in capsys.readouterr().out
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6, 8]  # each once
    assert not (tmp_path / ".lock").exists()  # a finished run leaves no lock file


def test_divergence_message_suggests_float32_only_for_low_precision(tmp_path):
    c = make_config(num_train_steps=8)
    c.optim.base_lr = 1e6
    with pytest.raises(NonFiniteLossError) as e:
        train_and_evaluate(c, str(tmp_path / "f32"), data=SyntheticData(), spec=SPEC)
    assert "model.dtype=float32" not in str(e.value) and "optim.base_lr" in str(e.value)
