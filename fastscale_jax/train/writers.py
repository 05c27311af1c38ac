"""Run outputs, written by process 0 only: metrics.jsonl, TensorBoard events, curves.png.

TensorBoard event files are written (and rewritten on resume) with the `tensorboard` package's
record writer, record reader and protos: no TensorFlow (only fastscale_jax.data imports it).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

from fastscale_jax._extras import require


class MetricWriter:
    """Appends {'step', 'split', ...} records to WORKDIR/metrics.jsonl (and TensorBoard)."""

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled and tensorboard:
            try:
                self._tb = EventFile(os.path.join(workdir, "tb"))
            except Exception as e:  # TensorBoard is optional
                print(f"warning: no TensorBoard events ({type(e).__name__}: {e})")

    def write(self, step: int, split: str, values: dict):
        if not self.enabled:
            return
        rec = {"step": int(step), "split": split}
        rec.update({k: float(v) for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            self._tb.write_scalars(int(step), {f"{split}/{k}": float(v)
                                               for k, v in values.items()})

    def truncate_after(self, step: int) -> int:
        """Drop what an earlier invocation logged after `step` (the checkpoint a resumed run
        starts from): its metrics.jsonl rows and TensorBoard events, so that replayed steps
        are logged once. Returns the number of metrics rows dropped."""
        if not self.enabled or not os.path.exists(self.path):
            return 0
        with open(self.path) as f:
            lines = [ln if ln.endswith("\n") else ln + "\n" for ln in f if ln.strip()]
        keep = []
        for i, ln in enumerate(lines):
            try:
                row = json.loads(ln)
                if int(row["step"]) <= step:
                    keep.append(ln)
            except (ValueError, KeyError, TypeError):  # a torn line (a crash mid-write)
                print(f"warning: {self.path} line {i + 1} is not a complete record (a run "
                      "stopped while writing it?); dropped", flush=True)
        if len(keep) != len(lines):
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(keep)
            os.replace(tmp, self.path)
        if self._tb is not None:
            truncate_events(self._tb.logdir, step, keep_file=self._tb.path)
        return len(lines) - len(keep)

    def close(self):
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class EventFile:
    """A new TensorBoard event file in `logdir` holding scalar summaries (TF2's format: a float
    tensor with the scalars plugin's metadata, as tf.summary.scalar writes)."""

    _serial = itertools.count()  # distinct names for writers opened in the same second

    def __init__(self, logdir: str):
        require("tensorboard", "train", "TensorBoard events")
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time())}."
                                         f"{socket.gethostname()}.{os.getpid()}."
                                         f"{next(self._serial)}")
        self._records = RecordWriter(open(self.path, "wb"))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write_scalars(self, step: int, values: dict) -> None:
        """One event of `step` with a scalar per {tag: value}; flushed to disk."""
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.scalar.metadata import create_summary_metadata
        from tensorboard.util.tensor_util import make_tensor_proto

        md = create_summary_metadata(display_name=None, description=None)
        summary = summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, metadata=md,
                                      tensor=make_tensor_proto(value, dtype="float32"))
            for tag, value in values.items()])
        self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()

    def close(self) -> None:
        self._records.close()


def read_events(path: str) -> tuple[list, bool]:
    """(events, cut): the Event protos of an event file, and whether its last record was cut
    short (a crash while writing)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    reader, events = PyRecordReader_New(path), []
    try:
        while True:
            reader.GetNext()
            events.append(event_pb2.Event.FromString(reader.record()))
    except errors.OutOfRangeError:
        return events, False
    except errors.DataLossError:
        return events, True
    finally:
        reader.file_handle.close()


def truncate_events(tb_dir: str, step: int, keep_file: str | None = None) -> None:
    """Rewrite the event files in tb_dir without the events of steps after `step` (TensorBoard
    would otherwise show replayed steps twice), and without a record cut short by a crash.
    `keep_file` (the current writer's file) is left alone."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    for name in sorted(os.listdir(tb_dir)):
        path = os.path.join(tb_dir, name)
        if "tfevents" not in name or path == keep_file or os.path.getsize(path) == 0:
            continue
        events, cut = read_events(path)
        keep = [e for e in events if e.step <= step]
        if len(keep) == len(events) and not cut:
            continue
        tmp = path + ".tmp"
        records = RecordWriter(open(tmp, "wb"))
        for e in keep:
            records.write(e.SerializeToString())
        records.close()
        os.replace(tmp, path)


def read_metrics(workdir: str) -> list[dict]:
    """WORKDIR/metrics.jsonl's rows; a torn line is skipped quietly (truncate_after drops it,
    with a warning, when the run resumes)."""
    from fastscale_jax.workdir import read_records

    return read_records(os.path.join(workdir, "metrics.jsonl"), log=lambda *_: None)


def plot_curves(workdir: str, title: str = "") -> str | None:
    """WORKDIR/curves.png: train and eval loss; train-batch accuracy and eval top-1 (raw and
    EMA, the last one written out); the learning rate -- against step."""
    recs = read_metrics(workdir)
    if not recs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.8))
    tr = [r for r in recs if r["split"] == "train" and "loss" in r]
    ax1.plot([r["step"] for r in tr], [r["loss"] for r in tr], label="train loss")
    acc = [r for r in tr if "accuracy" in r]
    ax2.plot([r["step"] for r in acc], [100 * r["accuracy"] for r in acc], color="0.6",
             label="train (batch, augmented)")
    ev = [r for r in recs if r["split"] == "eval"]
    if ev:
        ax1.plot([r["step"] for r in ev], [r["loss"] for r in ev], "o-", label="eval loss")
        ax2.plot([r["step"] for r in ev], [100 * r["top1"] for r in ev], "o-", label="eval top-1")
        if "ema_top1" in ev[0]:
            ax2.plot([r["step"] for r in ev], [100 * r["ema_top1"] for r in ev], "s--",
                     label="eval top-1 (EMA)")
        last = ev[-1]
        ax2.annotate(f"eval top-1 {100 * last['top1']:.1f}% at step {last['step']}",
                     (last["step"], 100 * last["top1"]), textcoords="offset points",
                     xytext=(-8, -6), ha="right", va="top", fontsize=9)
    lr = [r for r in tr if "lr" in r]
    ax3.plot([r["step"] for r in lr], [r["lr"] for r in lr], color="C2")
    ax3.set_xlabel("step")
    ax3.set_ylabel("learning rate (mean over each log window)")
    for ax in (ax1, ax2, ax3):  # the whole run, not a zoom on a single eval point
        ax.set_xlim(0, max(r["step"] for r in recs) * 1.02)
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.set_xlabel("step")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(workdir, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
