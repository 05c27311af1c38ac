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
                self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tb"))
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

    def close(self):
        if self._tb is not None:
            self._tb.close()
            self._tb = None


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
    """WORKDIR/curves.png: train loss and eval top-1 (raw and EMA) against step."""
    recs = read_metrics(workdir)
    if not recs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    tr = [r for r in recs if r["split"] == "train" and "loss" in r]
    ax1.plot([r["step"] for r in tr], [r["loss"] for r in tr], label="train loss")
    ev = [r for r in recs if r["split"] == "eval"]
    if ev:
        ax1.plot([r["step"] for r in ev], [r["loss"] for r in ev], "o-", label="eval loss")
        ax2.plot([r["step"] for r in ev], [100 * r["top1"] for r in ev], "o-", label="top-1")
        if "ema_top1" in ev[0]:
            ax2.plot([r["step"] for r in ev], [100 * r["ema_top1"] for r in ev], "s--",
                     label="top-1 (EMA)")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.set_xlabel("step")
    ax2.set_ylabel("eval accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(workdir, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
