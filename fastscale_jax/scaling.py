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

import dataclasses
import math
from fractions import Fraction
from typing import NamedTuple

from fastscale_jax.complexity import complexity
from fastscale_jax.errors import ConfigError
from fastscale_jax.families import family_of
from fastscale_jax.specs import scale_width

NAMED_KINDS = {"dWr": "d1_w8_g8_r1"}
# scale() refuses a factor whose rounded model lands further than this many times from it
# (pycls's own scaler strays up to 2.2x on its test cases: ResNet-50 x4 dw gives 1.85x; a
# small base for studies, RegNetZ-500MF x1/64 dw at 32 px, lands 5.7x off), and names a
# model more than NAME_RATIO off with the flops ratio it really has
MAX_ROUNDING_RATIO = 10.0
NAME_RATIO = 1.5


class Exponents(NamedTuple):
    """Per-dimension exponents: a flops factor s scales each dimension by s**exponent."""

    d: float
    w: float
    g: float
    r: float


def _parse_weights(kind: str) -> dict:
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"scaling kind must be a non-empty string, got {kind!r}; e.g. 'dWr', "
                         "'dwr', 'w', or a pycls type string like 'd1_w8_g8_r1'")
    kind = NAMED_KINDS.get(kind, kind)
    if all(ch in "dwgr" for ch in kind):
        if len(set(kind)) != len(kind):
            raise ConfigError(f"scaling kind {kind!r} repeats a letter")
        return {s: 1.0 if s in kind else 0.0 for s in "dwgr"}
    weights = {s: 0.0 for s in "dwgr"}
    for tok in kind.split("_"):
        try:
            letter, value = tok[0], float(tok[1:])
        except (IndexError, ValueError):
            letter, value = "", float("nan")
        if letter not in "dwgr" or not letter or not math.isfinite(value) or value < 0:
            raise ConfigError(f"cannot parse scaling kind {kind!r} (token {tok!r}): use letters from "
                             "'dwgr' ('dwr', 'dWr'), or tokens like 'd1_w8_g8_r1' with non-negative "
                             "weights")
        weights[letter] = value
    return weights


def scaling_exponents(kind: str | None = None, *, alpha: float | None = None) -> Exponents:
    """The exponents (e_d, e_w, e_g, e_r) of a scaling kind or of alpha, computed as pycls does."""
    if (kind is None) == (alpha is None):
        raise ConfigError("give exactly one of kind (e.g. 'dWr') or alpha (in [0, 1])")
    if alpha is not None:
        try:
            a = float(alpha)
        except (TypeError, ValueError):
            raise ConfigError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
        if not (0.0 <= a <= 1.0):
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        fa = Fraction(a).limit_denominator(10_000)
        fa = fa if abs(float(fa) - a) < 1e-12 else Fraction(a)
        return Exponents(float((1 - fa) / 2), float(fa / 2), float(fa / 2), float((1 - fa) / 4))
    wt = _parse_weights(kind)
    if not any(wt.values()):
        raise ConfigError(f"scaling kind {kind!r} scales nothing (every exponent weight is 0); "
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
    if isinstance(factor, bool):
        raise ConfigError(f"scaling factor must be a positive finite number, got {factor!r}")
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise ConfigError(f"scaling factor must be a positive finite number, got {factor!r}") from None
    if not (math.isfinite(f) and f > 0):
        raise ConfigError(f"scaling factor must be a positive finite number, got {factor!r}")
    return f


def _check_kind_applies(spec, fam, e: Exponents, kind, alpha) -> None:
    """ConfigError when every dimension the kind scales is one the family does not have
    (e.g. 'g' for an EfficientNet, whose convs are depthwise)."""
    moved = [d for d, x in zip("dwgr", e) if x]
    if moved and not any(d in fam.scaled_dims for d in moved):
        label = kind if kind is not None else f"alpha={alpha}"
        raise ConfigError(f"scaling kind {label!r} changes nothing for {spec.name}: it scales "
                          f"only {'/'.join(moved)}, and {fam.name} specs scale "
                          f"{'/'.join(fam.scaled_dims)} ('g' is the group width, which "
                          "depthwise convs do not have); e.g. use 'dWr', 'dwr' or 'w'")


def _scaled(spec, f: float, e: Exponents, label: str):
    fam = family_of(spec)
    d_s, w_s, g_s, r_s = (f ** x for x in e)
    ds = [max(1, round(d * d_s)) for d in spec.depths]
    ws = [scale_width(w, w_s) for w in spec.widths]
    return spec.replace(
        name=f"{spec.name} x{f:g} {label}", depths=ds,
        resolution=round(spec.resolution * r_s / 4) * 4,
        test_resolution=round(spec.test_resolution * r_s / 4) * 4,
        **fam.scale_fields(spec, ws, w_s, g_s))


def scale(spec, factor: float, kind: str | None = None, *, alpha: float | None = None):
    """A new spec whose flops are ~factor x those of `spec` (pycls's scaler, exactly).

    Give the scaling as `kind` ('dWr', 'dwr', 'w', 'd1_w8_g8_r1', ...) or as `alpha` in [0, 1].
    The input spec is not modified. ConfigError when the kind scales nothing this family has,
    when the scaled model is invalid (e.g. a resolution below 32 px), or when rounding moves
    its flops more than MAX_ROUNDING_RATIO-fold away from the request (a factor far below what
    the base's depths and widths can shrink to): `scale_to` finds the nearest reachable model.
    """
    fam = family_of(spec)
    f = _check_factor(factor)
    e = scaling_exponents(kind, alpha=alpha)
    _check_kind_applies(spec, fam, e, kind, alpha)
    label = kind if kind is not None else f"alpha={float(alpha):g}"
    try:
        out = _scaled(spec, f, e, label)
    except ConfigError as err:
        raise ConfigError(f"scaling {spec.name} by x{f:g} {label} gives no valid model: {err}") from None
    if not (e.d or e.w or e.r):  # group width alone: flops do not follow the factor
        return out
    ratio = complexity(out)["flops"] / complexity(spec)["flops"]
    off = abs(math.log(ratio / f))
    if off > math.log(NAME_RATIO):
        out = out.replace(name=f"{out.name} (flops x{ratio:.3g})")
    if off > math.log(MAX_ROUNDING_RATIO):
        raise ConfigError(
            f"scaling {spec.name} by x{f:g} {label} gives a model with {ratio:.3g}x its flops, not "
            f"~{f:g}x: rounding (depths >= 1, widths to multiples of 8, resolution to multiples "
            f"of 4) dominates this far from the base; use a factor nearer 1, or "
            "fastscale_jax.scale_to(spec, flops, kind) for the nearest reachable model")
    return out


class ScaleResult(NamedTuple):
    """What `scale_to` found: the spec, the factor that produced it, its flops (multiply-adds)
    and the requested target."""

    spec: object
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
            raise ConfigError(f"cannot parse flops target {flops!r}: use a number of multiply-adds "
                             "or a string like '800MF', '4GF' or '1.5TF'") from None
    else:
        try:
            v = float(flops)
        except (TypeError, ValueError):
            raise ConfigError(f"flops target must be a number or a string like '4GF', got "
                             f"{flops!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"flops target {flops!r} must be positive and finite (multiply-adds "
                         "per image, e.g. '4GF')")
    if v >= MAX_FLOPS_TARGET:
        raise ConfigError(f"flops target {flops!r} is {v / 1e12:.4g} TF multiply-adds per image: "
                         f"at or above {MAX_FLOPS_TARGET / 1e15:g} PF no model can be built or "
                         "trained; did you mean GF or MF?")
    return v


def structure_key(spec) -> tuple:
    """What makes two specs the same network (every field but the name)."""
    return tuple(getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "name")


def candidates(spec, factors, kind: str | None = None, *, alpha: float | None = None):
    """[(factor, scaled spec)] of the distinct valid models `factors` give, first factor of each
    kept; factors whose model is invalid (a resolution below 32 px, ...) are skipped, not raised.
    Rounding makes many factors give the same model: each appears once."""
    e = scaling_exponents(kind, alpha=alpha)
    _check_kind_applies(spec, family_of(spec), e, kind, alpha)
    label = kind if kind is not None else f"alpha={float(alpha):g}"
    out, seen = [], set()
    for f in factors:
        try:
            cand = _scaled(spec, _check_factor(f), e, label)
        except ConfigError:
            continue
        key = structure_key(cand)
        if key not in seen:
            seen.add(key)
            out.append((float(f), cand))
    return out


def scale_to(spec, flops, kind: str | None = None, *, alpha: float | None = None,
             tolerance: float = 0.25) -> ScaleResult:
    """The scaled model whose flops (multiply-adds) are closest to `flops` (a number or
    '4GF' / '800MF').

    Searches scaling factors on a fine log grid around target/base (x1/3 to x3) and keeps the
    valid model with the smallest |log(achieved / target)|; candidates that are not valid
    models (e.g. a resolution below 32 px) are skipped. Raises ConfigError when even the best
    is more than `tolerance` (relative) away, e.g. a target below what the model can reach.
    """
    target = parse_flops(flops)
    base = complexity(spec)["flops"]
    f0 = target / base
    found = [(f, c, complexity(c)["flops"])
             for f, c in candidates(spec, [f0 * 2 ** (k / 32) for k in range(-48, 49)], kind,
                                    alpha=alpha)]
    label = kind or f"alpha={alpha}"
    if not found:
        raise ConfigError(f"cannot reach {target / 1e9:.3g} GF by scaling {spec.name} with "
                          f"{label}: no factor near {f0:.3g} gives a valid model (the base has "
                          f"{base / 1e9:.3g} GF)")
    f, cand, achieved = min(found, key=lambda t: abs(math.log(t[2] / target)))
    if abs(math.log(achieved / target)) > math.log1p(tolerance):
        lo, hi = min(t[2] for t in found), max(t[2] for t in found)
        raise ConfigError(f"cannot reach {target / 1e9:.3g} GF within {tolerance:.0%} by scaling "
                          f"{spec.name} with {label}: the closest model has {achieved / 1e9:.3g} "
                          f"GF; valid models near this target span {lo / 1e9:.3g}-{hi / 1e9:.3g} "
                          f"GF (the base model has {base / 1e9:.3g} GF)")
    return ScaleResult(cand, f, achieved, target)

