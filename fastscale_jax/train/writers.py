"""Run outputs, written by process 0 only: metrics.jsonl, TensorBoard events, curves.png."""

from __future__ import annotations

import json
import os

from fastscale_jax._extras import require


class MetricWriter:
    """Appends {'step', 'split', ...} records to WORKDIR/metrics.jsonl (and TensorBoard)."""

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled and tensorboard:
            try:
                tf = require("tensorflow", "train", "TensorBoard events")
                self._tb_dir = os.path.join(workdir, "tb")
                self._tb = tf.summary.create_file_writer(self._tb_dir)
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
            import tensorflow as tf

            with self._tb.as_default(step=int(step)):
                for k, v in values.items():
                    # tf.summary.write + scalars-plugin metadata: works without the
                    # tensorboard package (tf.summary.scalar needs it)
                    tf.summary.write(f"{split}/{k}", tf.constant(float(v), tf.float32),
                                     metadata=_scalar_metadata())
            self._tb.flush()

    def truncate_after(self, step: int) -> int:
        """Drop what an earlier invocation logged after `step` (the checkpoint a resumed run
        starts from): its metrics.jsonl rows and TensorBoard events, so that replayed steps
        are logged once. Returns the number of metrics rows dropped."""
        if not self.enabled or not os.path.exists(self.path):
            return 0
        with open(self.path) as f:
            lines = [ln for ln in f if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln)["step"] <= step]
        if len(keep) != len(lines):
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(keep)
            os.replace(tmp, self.path)
        if self._tb is not None:
            _truncate_events(self._tb_dir, step)
        return len(lines) - len(keep)

    def close(self):
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _truncate_events(tb_dir: str, step: int) -> None:
    """Rewrite the event files in tb_dir without the events of steps after `step` (TensorBoard
    would otherwise show replayed steps twice). The file of the current writer is left alone:
    it holds nothing yet."""
    import tensorflow as tf

    for name in sorted(os.listdir(tb_dir)):
        path = os.path.join(tb_dir, name)
        if "tfevents" not in name or os.path.getsize(path) == 0:
            continue
        events = []
        try:
            for e in tf.compat.v1.train.summary_iterator(path):
                events.append(e)
        except tf.errors.DataLossError:  # a record cut short by a crash: drop it too
            events.append(None)
        keep = [e for e in events if e is not None and e.step <= step]
        if len(keep) == len(events):
            continue
        tmp = path + ".tmp"
        with tf.io.TFRecordWriter(tmp) as w:
            for e in keep:
                w.write(e.SerializeToString())
        os.replace(tmp, path)


def _scalar_metadata():
    from tensorflow.core.framework import summary_pb2

    md = summary_pb2.SummaryMetadata()
    md.plugin_data.plugin_name = "scalars"
    return md.SerializeToString()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(workdir: str, title: str = "") -> str | None:
    """WORKDIR/curves.png: train and eval loss; train-batch accuracy and eval top-1 (raw and
    EMA, the last one written out) against step."""
    recs = read_metrics(workdir)
    if not recs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
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
    for ax in (ax1, ax2):  # the whole run, not a zoom on a single eval point
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
