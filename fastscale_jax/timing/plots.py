"""PNG plots of benchmark rows (matplotlib, Agg backend; imported only when plotting).

- runtime_vs_complexity: runtime against flops, params and acts, Pearson r in each panel
  title (the paper's Fig. 2 on the user's hardware);
- family_plots: acts vs flops and runtime vs flops, one line per scaling kind, log-log.
"""

from __future__ import annotations

import math
import os

import numpy as np

from fastscale_jax.timing.fit import pearson_r


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ok(rows, key):
    return [r for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))
            and float(r[key]) > 0]


def _is_family(row) -> bool:
    return bool(row.get("kind")) and row.get("kind") not in ("zoo", "none")


def _label(row) -> str:
    """A point's text: the factor ('x16') in a family (the kind is its colour), else the name."""
    if _is_family(row):
        return f"x{row.get('factor', 1):g}"
    return str(row.get("name") or row.get("model", ""))


def runtime_vs_complexity(rows: list[dict], mode: str, path: str, env: dict | None = None) -> str:
    """Three panels: runtime (ms per step) of `mode` vs flops, params, acts; returns path."""
    plt = _plt()
    key = f"{mode}_time_ms"
    rows = _ok(rows, key)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, (feat, label) in zip(axes, (("flops", "flops (multiply-adds)"),
                                        ("params", "params"), ("acts", "activations"))):
        x = [r[feat] for r in rows]
        y = [r[key] for r in rows]
        r = pearson_r(x, y)
        for kind, rs in _by_kind(rows).items():  # one colour per scaling kind, in the legend
            ax.scatter([q[feat] for q in rs], [q[key] for q in rs], s=18,
                       label=kind if _is_family(rs[0]) else None)
        if len(rows) <= 12:  # more labels overlap: the legend says the kind, the CSV the rest
            for xi, yi, row in zip(x, y, rows):
                ax.annotate(_label(row), (xi, yi), xytext=(3, 3), textcoords="offset points",
                            fontsize=6, alpha=0.7, annotation_clip=True, clip_on=True)
        ax.margins(0.08)
        if ax is axes[0] and any(_is_family(q) for q in rows):
            ax.legend(fontsize=7, title="scaling", title_fontsize=7)
        ax.set_xlabel(label)
        _human_axis(ax.xaxis)
        b = rows[0] if rows else {}
        ax.set_ylabel(f"{mode} ms per step of {b.get('batch_size', '?')} images "
                      f"({mode}_time_ms)")
        ax.set_title(f"{mode} vs {feat}: Pearson r = {r:.3f}")
        ax.grid(alpha=0.3)
    if env:
        b = rows[0] if rows else {}
        fig.suptitle(f"{_device_title(env)}, batch {b.get('batch_size', '?')}, "
                     f"{b.get('dtype', '?')}, jax {env.get('jax', '?')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _human_axis(axis) -> None:
    """Tick labels as 120M / 4.5G instead of matplotlib's offset notation (1e8)."""
    from matplotlib.ticker import FuncFormatter

    from fastscale_jax.report import human

    axis.set_major_formatter(FuncFormatter(lambda v, _: human(v) if v else "0"))


def _device_title(env: dict) -> str:
    kind, backend = env.get("device_kind", "?"), env.get("backend", "?")
    return kind if str(kind).lower() == str(backend).lower() else f"{kind} ({backend})"


def _by_kind(rows):
    kinds = {}
    for r in rows:
        kinds.setdefault(str(r.get("kind", "model")), []).append(r)
    return kinds


def family_plots(rows: list[dict], mode: str, workdir: str) -> list[str]:
    """family_acts_vs_flops.png and family_runtime_vs_flops_<mode>.png (one line per kind)."""
    plt = _plt()
    paths = []
    for ykey, ylabel, fname in (
            ("acts", "activations", "family_acts_vs_flops.png"),
            (f"{mode}_time_ms", f"{mode} ms per step ({mode}_time_ms)",
             f"family_runtime_vs_flops_{mode}.png")):
        good = _ok(_ok(rows, ykey), "flops")
        if not good:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        for kind, rs in _by_kind(good).items():
            rs = sorted(rs, key=lambda r: r["flops"])
            ax.plot([r["flops"] for r in rs], [r[ykey] for r in rs], "o-", label=kind, ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("flops (multiply-adds)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} vs flops (log-log), r = "
                     f"{pearson_r(np.log([r['flops'] for r in good]), np.log([r[ykey] for r in good])):.3f}"
                     " (log)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(workdir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _spread_labels(ax, labels, gap_pt: float = 7.0) -> None:
    """Annotate each (xy, text, colour) just right of its point, in its line's colour; the
    labels of one x (one budget) are pushed apart vertically to at least `gap_pt` points, so
    strategies that reached about the same flops stay legible."""
    ax.autoscale_view()
    to_pt = 72.0 / ax.figure.dpi
    by_x = {}
    for xy, text, colour in labels:
        by_x.setdefault(xy[0], []).append((ax.transData.transform(xy)[1] * to_pt, xy, text,
                                           colour))
    for group in by_x.values():
        group.sort(key=lambda g: g[0])
        below = -math.inf
        for y, xy, text, colour in group:   # upwards: each at least gap_pt above the one below
            at = max(y, below + gap_pt)
            ax.annotate(text, xy, xytext=(5, at - y), textcoords="offset points",
                        fontsize=6, color=colour, va="center")
            below = at


def flops_vs_budget(rows: list[dict], path: str, env: dict | None = None,
                    request: dict | None = None) -> str:
    """Flops reached vs time budget, one line per strategy, log-log (more flops at equal time =
    more model for the money); the measured time / budget of each point is its label."""
    from matplotlib.ticker import FuncFormatter

    plt = _plt()
    good = [r for r in rows if r.get("flops") and r.get("budget_ms")]
    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    by, labels = {}, []
    for r in good:
        by.setdefault(r["strategy"], []).append(r)
    for strategy, rs in by.items():
        rs = sorted(rs, key=lambda r: r["budget_ms"])
        (line,) = ax.plot([r["budget_ms"] for r in rs], [r["flops"] / 1e6 for r in rs], "o-",
                          ms=5, label=strategy)
        for r in rs:   # hollow: no model within the tolerance
            xy = (r["budget_ms"], r["flops"] / 1e6)
            if r.get("status") != "within":
                ax.plot(*xy, "o", ms=5, color=line.get_color(), mfc="white")
            labels.append((xy, f"{r['ratio']:.2f}", line.get_color()))
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    ax.tick_params(which="both", labelsize=7)
    req = request or {}
    ax.set_xlabel(f"time budget (ms per {req.get('timing_mode', 'step')} of "
                  f"{req.get('batch_size', '?')} images)")
    ax.set_ylabel("flops reached (millions of multiply-adds per image)")
    device = (env or {}).get("device_kind", "")
    ax.set_title(f"{req.get('base', '')}: the largest model each strategy fits in the budget\n"
                 f"({device}; labels: measured time / budget; hollow: the largest under it, "
                 "none within tolerance)", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, title="strategy", title_fontsize=8)
    fig.tight_layout()
    _spread_labels(ax, labels)   # after the layout: the gaps are measured on the final axes
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

