"""The model scaler of "Fast and Accurate Model Scaling" (Dollar, Singh, Girshick, CVPR 2021).

Scaling a model by a flops factor s multiplies depth by s^e_d, width by s^e_w, group width
by s^e_g and resolution by s^e_r, with e_d + 2 e_w + 2 e_r = 1 so flops grow ~s. Kinds:

- the paper's names: "d", "w", "r", "g", "dw", "dr", "wr", "dwr" (uniform compound scaling),
  "dwgr", "wg", ... (each letter present gets weight 1), and "dWr" (fast compound scaling,
  alpha = 0.8, = pycls "d1_w8_g8_r1");
- pycls type strings "d{a}_w{b}_g{c}_r{e}" with float weights (missing letters weigh 0);
- alpha in [0, 1] (`scale(spec, s, alpha=a)`): e_w = e_g = a/2, e_d = (1 - a)/2, e_r = (1 - a)/4.

Rounding reproduces pycls's scaler exactly (Python round = half-to-even): depths to integers
>= 1; widths to multiples of 8; group widths to 1, 2, 4 or a multiple of 8; block compatibility
re-applied; train and test resolution each to a multiple of 4. AnyNet stem and head widths are
not scaled; EfficientNet's stem and head widths are, and its group width is ignored.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

from fastscale_jax.complexity import complexity
from fastscale_jax.specs import Spec, adjust_block_compatibility

NAMED_KINDS = {"dWr": "d1_w8_g8_r1"}


class Exponents(NamedTuple):
    """Per-dimension exponents: a flops factor s scales each dimension by s**exponent."""

    d: float
    w: float
    g: float
    r: float


def _parse_weights(kind: str) -> dict:
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"scaling kind must be a non-empty string, got {kind!r}; e.g. 'dWr', "
                         "'dwr', 'w', or a pycls type string like 'd1_w8_g8_r1'")
    kind = NAMED_KINDS.get(kind, kind)
    if all(ch in "dwgr" for ch in kind):
        if len(set(kind)) != len(kind):
            raise ValueError(f"scaling kind {kind!r} repeats a letter")
        return {s: 1.0 if s in kind else 0.0 for s in "dwgr"}
    weights = {s: 0.0 for s in "dwgr"}
    for tok in kind.split("_"):
        try:
            letter, value = tok[0], float(tok[1:])
        except (IndexError, ValueError):
            letter, value = "", float("nan")
        if letter not in "dwgr" or not letter or not math.isfinite(value) or value < 0:
            raise ValueError(f"cannot parse scaling kind {kind!r} (token {tok!r}): use letters from "
                             "'dwgr' ('dwr', 'dWr'), or tokens like 'd1_w8_g8_r1' with non-negative "
                             "weights")
        weights[letter] = value
    return weights


def scaling_exponents(kind: str | None = None, *, alpha: float | None = None) -> Exponents:
    """The exponents (e_d, e_w, e_g, e_r) of a scaling kind or of alpha, computed as pycls does."""
    if (kind is None) == (alpha is None):
        raise ValueError("give exactly one of kind (e.g. 'dWr') or alpha (in [0, 1])")
    if alpha is not None:
        try:
            a = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
        if not (0.0 <= a <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        fa = Fraction(a).limit_denominator(10_000)
        fa = fa if abs(float(fa) - a) < 1e-12 else Fraction(a)
        return Exponents(float((1 - fa) / 2), float(fa / 2), float(fa / 2), float((1 - fa) / 4))
    wt = _parse_weights(kind)
    if not any(wt.values()):
        raise ValueError(f"scaling kind {kind!r} scales nothing (every exponent weight is 0); "
                         "give d, w or r a positive weight, e.g. 'dWr' = 'd1_w8_g8_r1'")
    total = wt["d"] + wt["w"] + wt["r"] or wt["g"] / 2 or 1.0
    return Exponents(wt["d"] / total, wt["w"] / total / 2.0, wt["g"] / total / 2.0,
                     wt["r"] / total / 2.0)


def theoretical_growth(kind: str | None = None, *, alpha: float | None = None) -> dict:
    """The paper's growth exponents of flops, params and acts with the flops factor s
    (ignoring rounding and the unscaled stem/head): params ~ s^(e_d + 2 e_w), acts ~
    s^(e_d + e_w + 2 e_r). E.g. dWr: 0.9 and 0.6; dwr: 2/3 and 5/6; w: 1 and 0.5."""
    e = scaling_exponents(kind, alpha=alpha)
    return {"flops": e.d + 2 * e.w + 2 * e.r, "params": e.d + 2 * e.w, "acts": e.d + e.w + 2 * e.r}


def _check_factor(factor) -> float:
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise ValueError(f"scaling factor must be a positive finite number, got {factor!r}") from None
    if not (math.isfinite(f) and f > 0):
        raise ValueError(f"scaling factor must be a positive finite number, got {factor!r}")
    return f


def _scale_width(w: int, s: float) -> int:
    return max(1, round(w * s / 8)) * 8


def _snap_group(g: int) -> int:
    return g if g <= 2 else 4 if g <= 5 else round(g / 8) * 8


def scale(spec: Spec, factor: float, kind: str | None = None, *, alpha: float | None = None) -> Spec:
    """A new spec whose flops are ~factor x those of `spec` (pycls's scaler, exactly).

    Give the scaling as `kind` ('dWr', 'dwr', 'w', 'd1_w8_g8_r1', ...) or as `alpha` in [0, 1].
    The input spec is not modified.
    """
    f = _check_factor(factor)
    e = scaling_exponents(kind, alpha=alpha)
    d_s, w_s, g_s, r_s = (f ** x for x in e)
    ds = [max(1, round(d * d_s)) for d in spec.depths]
    ws = [_scale_width(w, w_s) for w in spec.widths]
    changes = {}
    if spec.family == "anynet":
        gs = [_snap_group(max(1, round(g * g_s))) for g in spec.group_widths]
        ws, bs, gs = adjust_block_compatibility(ws, spec.bot_muls, gs)
        changes.update(bot_muls=bs, group_widths=gs)
    else:
        ws, _, _ = adjust_block_compatibility(ws, spec.exp_ratios, [1] * len(ws))
        changes.update(stem_w=_scale_width(spec.stem_w, w_s), head_w=_scale_width(spec.head_w, w_s))
    label = kind if kind is not None else f"alpha={float(alpha):g}"
    return spec.replace(
        name=f"{spec.name} x{f:g} {label}", depths=ds, widths=ws,
        resolution=round(spec.resolution * r_s / 4) * 4,
        test_resolution=round(spec.test_resolution * r_s / 4) * 4, **changes)


class ScaleResult(NamedTuple):
    """What `scale_to` found: the spec, the factor that produced it, its flops (multiply-adds)
    and the requested target."""

    spec: Spec
    factor: float
    flops: int
    target_flops: float


# A flops target at or above this (multiply-adds per image) is refused: 1 PF is ~25000x
# EfficientNet-B7 (37 GF); such a model could not be built, let alone trained.
MAX_FLOPS_TARGET = 1e15
_FLOPS_SUFFIXES = (("PF", 1e15), ("TF", 1e12), ("GF", 1e9), ("MF", 1e6), ("P", 1e15),
                   ("T", 1e12), ("G", 1e9), ("M", 1e6))


def parse_flops(flops) -> float:
    """A flops target (multiply-adds per image) from a number or '800MF' / '4GF' / '1.5TF'."""
    v = None
    if isinstance(flops, str):
        s = flops.strip().upper()
        suffix, mult = next(((k, m) for k, m in _FLOPS_SUFFIXES if s.endswith(k)), ("", 1.0))
        try:
            v = float(s[: len(s) - len(suffix)]) * mult
        except ValueError:
            raise ValueError(f"cannot parse flops target {flops!r}: use a number of multiply-adds "
                             "or a string like '800MF', '4GF' or '1.5TF'") from None
    else:
        try:
            v = float(flops)
        except (TypeError, ValueError):
            raise ValueError(f"flops target must be a number or a string like '4GF', got "
                             f"{flops!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"flops target {flops!r} must be positive and finite (multiply-adds "
                         "per image, e.g. '4GF')")
    if v >= MAX_FLOPS_TARGET:
        raise ValueError(f"flops target {flops!r} is {v / 1e12:.4g} TF multiply-adds per image: "
                         f"at or above {MAX_FLOPS_TARGET / 1e15:g} PF no model can be built or "
                         "trained; did you mean GF or MF?")
    return v


def scale_to(spec: Spec, flops, kind: str | None = None, *, alpha: float | None = None,
             tolerance: float = 0.25) -> ScaleResult:
    """The scaled model whose flops (multiply-adds) are closest to `flops` (a number or
    '4GF' / '800MF').

    Searches scaling factors on a fine log grid around target/base and keeps the model with
    the smallest |log(achieved / target)|. Raises ValueError when even the best candidate is
    more than `tolerance` (relative) away, e.g. a target below what the model can reach.
    """
    target = parse_flops(flops)
    scaling_exponents(kind, alpha=alpha)  # validate early
    base = complexity(spec)["flops"]
    f0 = target / base
    best = None
    seen = {}
    for k in range(-48, 49):
        f = f0 * 2 ** (k / 32)
        cand = scale(spec, f, kind, alpha=alpha)
        key = (cand.depths, cand.widths, cand.group_widths, cand.resolution,
               getattr(cand, "stem_w", 0), cand.head_w)
        if key not in seen:
            seen[key] = complexity(cand)["flops"]
        err = abs(math.log(seen[key] / target))
        if best is None or err < best[0] - 1e-12:
            best = (err, f, cand, seen[key])
    err, f, cand, achieved = best
    if err > math.log1p(tolerance):
        lo = min(seen.values())
        hi = max(seen.values())
        raise ValueError(f"cannot reach {target / 1e9:.3g} GF by scaling {spec.name} with "
                         f"{kind or f'alpha={alpha}'}: the closest model has {achieved / 1e9:.3g} GF; "
                         f"models near this target span {lo / 1e9:.3g}-{hi / 1e9:.3g} GF (the base "
                         f"model has {base / 1e9:.3g} GF)")
    return ScaleResult(cand, f, achieved, target)
