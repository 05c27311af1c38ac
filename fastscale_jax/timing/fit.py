"""A linear runtime model across a family: time ~ a*flops + b*acts + c (numpy least squares).

The paper (Dollar et al. 2021, Sec. 3 / Fig. 2) observes that activations predict GPU runtime
better than flops; fitting both on the user's hardware says how much each costs there.
`flops` are multiply-adds (pycls convention), acts are output elements of conv/linear layers,
both per image; times are whatever unit is passed in (seconds per image in benchmark mode).
"""

from __future__ import annotations

import math

import numpy as np

FEATURE_SETS = {"flops+acts": ("flops", "acts"), "flops": ("flops",), "acts": ("acts",)}


def pearson_r(x, y) -> float:
    """Pearson correlation of x and y (nan with < 2 points or a constant series)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _lstsq(cols: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Coefficients of y ~ sum(coef_i * col_i) + intercept (columns rescaled for conditioning)."""
    X = np.stack([*cols, np.ones_like(y)], axis=1)
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    coef, *_ = np.linalg.lstsq(X / scale, y, rcond=None)
    return coef / scale


def fit_runtime(flops, acts, times, features=("flops", "acts")) -> dict:
    """Least-squares fit time ~ a*flops + b*acts + c (or a subset of the features).

    Returns {'features', 'coef' {name: value, 'intercept': c}, 'r2', 'n', 'loo_rel_err_mean',
    'loo_rel_err_max', 'loo_rel_errs', 'pred'}. Leave-one-out: each point is predicted by a
    fit on the others; its relative error is |pred - time| / time (nan where there are not
    more points than coefficients + 1). Non-finite times are dropped.
    """
    data = {"flops": np.asarray(flops, float), "acts": np.asarray(acts, float)}
    t = np.asarray(times, float)
    features = tuple(features)
    bad = [f for f in features if f not in data]
    if bad or not features:
        raise ValueError(f"unknown fit feature {bad[0] if bad else None!r}; valid: {list(data)}")
    if not all(len(v) == len(t) for v in data.values()):
        raise ValueError("flops, acts and times must have the same length")
    ok = np.isfinite(t) & np.isfinite(data["flops"]) & np.isfinite(data["acts"])
    cols = [data[f][ok] for f in features]
    t = t[ok]
    n, k = len(t), len(features) + 1
    out = {"features": list(features), "n": int(n), "coef": None, "r2": math.nan,
           "loo_rel_err_mean": math.nan, "loo_rel_err_max": math.nan, "loo_rel_errs": [],
           "pred": []}
    if n < k:
        out["note"] = f"need at least {k} finite points for {k} coefficients, got {n}"
        return out
    coef = _lstsq(cols, t)
    pred = sum(c * col for c, col in zip(coef[:-1], cols)) + coef[-1]
    ss_res = float(np.sum((t - pred) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    out["coef"] = {**{f: float(c) for f, c in zip(features, coef[:-1])},
                   "intercept": float(coef[-1])}
    out["r2"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else math.nan)
    out["pred"] = [float(p) for p in pred]
    if n > k:  # each held-out fit needs >= k points
        errs = []
        for i in range(n):
            keep = np.arange(n) != i
            c_i = _lstsq([col[keep] for col in cols], t[keep])
            p_i = sum(c * col[i] for c, col in zip(c_i[:-1], cols)) + c_i[-1]
            errs.append(abs(p_i - t[i]) / abs(t[i]) if t[i] != 0 else math.nan)
        out["loo_rel_errs"] = [float(e) for e in errs]
        out["loo_rel_err_mean"] = float(np.nanmean(errs))
        out["loo_rel_err_max"] = float(np.nanmax(errs))
    else:
        out["note"] = f"leave-one-out needs more than {k} points, got {n}"
    return out


def fit_all(flops, acts, times) -> dict:
    """fit_runtime with flops+acts, flops only and acts only: {name: fit}."""
    return {name: fit_runtime(flops, acts, times, feats) for name, feats in FEATURE_SETS.items()}


def format_fit(fits: dict, unit: str = "s/image") -> str:
    lines = []
    for name, f in fits.items():
        if f["coef"] is None:
            lines.append(f"  time ~ {name}: {f.get('note', 'no fit')}")
            continue
        terms = " + ".join(f"{v:.3g}*{k}" for k, v in f["coef"].items() if k != "intercept")
        lines.append(f"  time [{unit}] ~ {terms} + {f['coef']['intercept']:.3g}   "
                     f"R^2={f['r2']:.4f}  LOO rel err mean={f['loo_rel_err_mean']:.1%} "
                     f"max={f['loo_rel_err_max']:.1%}  (n={f['n']})")
    return "\n".join(lines)
