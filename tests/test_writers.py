"""fastscale_jax.train.writers: metrics.jsonl and TensorBoard events (written without
TensorFlow, read back by TensorBoard), and their truncation when a run resumes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastscale_jax.train.writers import MetricWriter, read_events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Steps 1..4 of training, evaluation at steps 2 and 4.
WRITE = r"""
import sys
from fastscale_jax.train.writers import MetricWriter
w = MetricWriter(sys.argv[1])
for step in (1, 2, 3, 4):
    w.write(step, "train", {"loss": 1.0 / step, "accuracy": 0.125 * step})
    if step % 2 == 0:
        w.write(step, "eval", {"top1": 0.25 * step})
w.close()
loaded = [m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules]
assert not loaded, loaded
print("OK")
"""


def _write_run(workdir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", WRITE, str(workdir)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def _tensorboard_scalars(path):
    """{tag: [(step, value)]} as TensorBoard's own loader reads an event file or directory."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util.tensor_util import make_ndarray

    acc = ea.EventAccumulator(str(path), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        events = acc.Tensors(tag)
        assert all(e.tensor_proto.dtype == 1 for e in events)  # DT_FLOAT, as tf.summary writes
        out[tag] = [(e.step, float(make_ndarray(e.tensor_proto))) for e in events]
    return out


def test_events_without_tensorflow_read_back_by_tensorboard(tmp_path):
    _write_run(tmp_path)
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [
        (1, "train"), (2, "train"), (2, "eval"), (3, "train"), (4, "train"), (4, "eval")]
    names = os.listdir(tmp_path / "tb")
    assert len(names) == 1 and names[0].startswith("events.out.tfevents.")
    got = _tensorboard_scalars(tmp_path / "tb")
    assert set(got) == {"train/loss", "train/accuracy", "eval/top1"}
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in got["train/loss"]], [1, 0.5, 1 / 3, 0.25],
                               rtol=1e-6)
    assert got["train/accuracy"] == [(1, 0.125), (2, 0.25), (3, 0.375), (4, 0.5)]
    assert got["eval/top1"] == [(2, 0.5), (4, 1.0)]


def test_truncate_after_drops_later_steps_and_a_cut_record(tmp_path):
    _write_run(tmp_path)
    (old,) = [tmp_path / "tb" / n for n in os.listdir(tmp_path / "tb")]
    with open(old, "ab") as f:  # a crash in the middle of writing a record
        f.write(b"\x20\x00\x00\x00\x00\x00\x00\x00\x01\x02")
    assert read_events(str(old))[1]  # the reader sees the cut record
    writer = MetricWriter(str(tmp_path))  # the resumed run, from the checkpoint of step 2
    assert writer.truncate_after(2) == 3  # train 3, train 4, eval 4
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (2, "train"), (2, "eval")]
    events, cut = read_events(str(old))
    assert not cut and [e.step for e in events] == [0, 1, 2, 2]  # version, train 1-2, eval 2
    got = _tensorboard_scalars(old)
    assert got["train/loss"] == [(1, 1.0), (2, 0.5)] and got["eval/top1"] == [(2, 0.5)]
    writer.write(3, "train", {"loss": 9.0})  # the resumed run logs into its own, new file
    writer.close()
    (new,) = [tmp_path / "tb" / n for n in os.listdir(tmp_path / "tb") if n != old.name]
    assert _tensorboard_scalars(new) == {"train/loss": [(3, 9.0)]}


def test_without_tensorboard_metrics_are_still_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    writer = MetricWriter(str(tmp_path))
    writer.write(1, "train", {"loss": 2.0})
    writer.close()
    assert ("warning: no TensorBoard events (MissingExtra: TensorBoard events needs tensorboard, "
            "which is not installed: pip install 'fastscale-jax[train]')") in capsys.readouterr().out
    assert not (tmp_path / "tb").exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {
        "step": 1, "split": "train", "loss": 2.0}


def test_disabled_writer_writes_nothing(tmp_path):
    writer = MetricWriter(str(tmp_path), enabled=False)  # a process other than 0
    writer.write(1, "train", {"loss": 2.0})
    assert writer.truncate_after(0) == 0
    writer.close()
    assert os.listdir(tmp_path) == []


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
