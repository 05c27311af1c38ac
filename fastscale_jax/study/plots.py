"""The study's four PNGs (the paper's error / epoch-time figures), one line per strategy:

- error_vs_flops.png, error_vs_acts.png, error_vs_epoch_time.png: error (100 - top-1, %)
  of each model, mean over seeds with a ±std bar and every seed as a faint dot;
- epoch_time_vs_flops.png: the measured epoch time of each model.

Runs that did not finish are marked with an 'x' on the bottom edge at their flops / acts (they
have no error or epoch time); the title counts them. Drawn with matplotlib's Figure API
(no pyplot state, any backend).
"""

from __future__ import annotations

import os

PLOTS = (("error_vs_flops.png", "flops", "error"), ("error_vs_acts.png", "acts", "error"),
         ("error_vs_epoch_time.png", "epoch_time", "error"),
         ("epoch_time_vs_flops.png", "flops", "epoch_time"))
LABELS = {"flops": "flops (millions of multiply-adds per image)",
          "acts": "activations per image (thousands)",
          "epoch_time": "epoch time (s; train steps timed interleaved)",
          "error": "top-1 error (%)"}


def _xy(a, key):
    return {"flops": a["flops"] / 1e6, "acts": a["acts"] / 1e3,
            "epoch_time": a["epoch_time_mean"], "error": a["error_mean"]}[key]


def _spread(a, key):
    return {"epoch_time": a["epoch_time_std"], "error": a["error_std"]}.get(key)


def _seed_values(r, key, metric):
    if key == "error":
        return None if r.get(metric) is None else 100.0 * (1.0 - r[metric])
    return {"flops": r["flops"] / 1e6, "acts": r["acts"] / 1e3,
            "epoch_time": r["epoch_time_s"]}[key]


def _one_plot(path, aggs, rows, xkey, ykey, metric, title):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    strategies = list(dict.fromkeys(a["strategy"] for a in aggs))
    for i, s in enumerate(strategies):
        color = f"C{i % 10}"
        pts = sorted((a for a in aggs if a["strategy"] == s and _xy(a, xkey) is not None
                      and _xy(a, ykey) is not None), key=lambda a: _xy(a, xkey))
        if pts:
            ax.errorbar([_xy(a, xkey) for a in pts], [_xy(a, ykey) for a in pts],
                        yerr=[_spread(a, ykey) or 0.0 for a in pts], fmt="o-", color=color,
                        capsize=3, ms=5, label=s)
            timed = "epoch_time" in (xkey, ykey)
            for a in pts:  # '!': its interleaved timing windows spread > NOISY_SPREAD_PCT
                mark = "!" if timed and a.get("noisy") else ""
                ax.annotate((a["target"] or f"x{a['factor']:g}") + mark,
                            (_xy(a, xkey), _xy(a, ykey)), xytext=(4, 4),
                            textcoords="offset points", fontsize=7, alpha=0.7)
        seeds = [(_seed_values(r, xkey, metric), _seed_values(r, ykey, metric))
                 for r in rows if r["strategy"] == s and r["status"] == "done"]
        seeds = [(x, y) for x, y in seeds if x is not None and y is not None]
        if seeds:
            ax.scatter(*zip(*seeds), s=10, color=color, alpha=0.35, lw=0)
    missing = [r for r in rows if r["status"] != "done"]
    if missing and xkey in ("flops", "acts"):
        ax.scatter([_seed_values(r, xkey, metric) for r in missing], [0.02] * len(missing),
                   marker="x", color="k",
                   transform=ax.get_xaxis_transform(), clip_on=False,
                   label=f"not finished ({len(missing)})")
    if xkey in ("flops", "acts"):
        from matplotlib.ticker import FormatStrFormatter

        ax.set_xscale("log")
        xs = [_seed_values(r, xkey, metric) for r in rows]   # missing runs included
        ax.set_xlim(min(xs) / 1.15, max(xs) * 1.15)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(LABELS[xkey])
    ax.set_ylabel(LABELS[ykey].replace("top-1", "top-1" if metric == "top1" else metric))
    n_missing = f"; {len(missing)} of {len(rows)} runs not finished" if missing else ""
    if "epoch_time" in (xkey, ykey) and any(a.get("noisy") for a in aggs):
        n_missing += "; '!': timing spread > 20%"
    ax.set_title(f"{title}{n_missing}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, title="scaling", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_study(workdir: str, aggs: list[dict], rows: list[dict], title: str = "") -> list[str]:
    """Write the four PNGs into workdir; returns their paths."""
    metric = aggs[0]["metric"] if aggs else "top1"
    return [_one_plot(os.path.join(workdir, name), aggs, rows, x, y, metric, title)
            for name, x, y in PLOTS]
