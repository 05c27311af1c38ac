"""Human-readable complexity tables (pure Python + numpy; used by `--mode complexity`)."""

from __future__ import annotations

import math

import numpy as np

from fastscale_jax.complexity import complexity
from fastscale_jax.families import family_of
from fastscale_jax.scaling import theoretical_growth


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (k, M, G, T)."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:g}{unit}"


def small_maps_warning(spec, resolution: int | None = None) -> str | None:
    """A warning when the last stage of `spec` works on maps smaller than 2x2 at this
    resolution (its kxk convs then see mostly padding), else None."""
    stages = [p for p in complexity(spec, resolution, per_stage=True)["stages"]
              if p["name"] not in ("stem", "head")]
    last = stages[-1]
    if min(last["out_h"], last["out_w"]) >= 2:
        return None
    r = int(resolution or spec.resolution)
    return (f"warning: {spec.name} at {r} px: its last stage ({last['name']}) works on "
            f"{last['out_h']}x{last['out_w']} maps, where its convolutions see mostly padding; "
            "raise model.resolution, or use a stem that downsamples less (model.stem_type="
            "res_stem_cifar for AnyNets)")


def format_table(header: list[str], rows: list[list], title: str | None = None) -> str:
    cols = [[str(h)] + [str(r[i]) for r in rows] for i, h in enumerate(header)]
    widths = [max(len(v) for v in col) for col in cols]
    line = "  ".join("-" * w for w in widths)
    out = [title] if title else []
    out.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    out.append(line)
    out += ["  ".join(str(v).rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def model_table(spec, show_test: bool = True) -> str:
    """Per-stage and total flops / params / acts of one model. show_test: name the spec's test
    resolution in the title (training runs evaluate at the train resolution and leave it out)."""
    cx = complexity(spec, per_stage=True)
    rows = []
    for p in cx["stages"]:
        i = int(p["name"][1:]) - 1 if p["name"].startswith("s") and p["name"] != "stem" else None
        desc = ""
        if i is not None:
            desc = family_of(spec).stage_config(spec, i)
        elif p["name"] == "stem":
            desc = f"w={spec.stem_w}"
        else:
            desc = f"head_w={spec.head_w} classes={spec.num_classes}"
        rows.append([p["name"], desc, f"{p['out_h']}x{p['out_w']}", f"{p['flops']:,}",
                     f"{p['params']:,}", f"{p['acts']:,}"])
    rows.append(["total", "", "", f"{cx['flops']:,}", f"{cx['params']:,}", f"{cx['acts']:,}"])
    title = (f"{spec.name}: {human(cx['flops'], 'F')} flops (multiply-adds), "
             f"{human(cx['params'])} params, {human(cx['acts'])} acts at "
             f"{spec.resolution}x{spec.resolution}"
             + (f" (test {spec.test_resolution})" if show_test else "") + ", 1 image")
    return format_table(["part", "config", "out", "flops", "params", "acts"], rows, title)


def fit_loglog(x, y) -> float:
    """Slope of log(y) against log(x) by least squares (nan with < 2 distinct x)."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(set(np.round(x, 12))) < 2:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def family_rows(family: list[tuple[dict, object]]) -> list[dict]:
    rows = []
    for labels, spec in family:
        cx = complexity(spec)
        rows.append({**labels, "name": spec.name, "depths": list(spec.depths),
                     "widths": list(spec.widths), "group_widths": list(spec.group_widths),
                     "resolution": spec.resolution, **cx})
    return rows


def growth_by_kind(rows: list[dict]) -> list[dict]:
    """Fitted log-log exponents of params and acts against flops, per scaling kind, next to
    the paper's theory (None where the kind is not a scaling rule)."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        theory = None
        try:
            if rs[0].get("alpha") is not None:
                theory = theoretical_growth(alpha=rs[0]["alpha"])
            elif kind not in ("zoo", "none"):
                theory = theoretical_growth(kind)
        except ValueError:
            pass
        fl = [r["flops"] for r in rs]
        out.append({"kind": kind, "n": len(rs),
                    "params_fit": fit_loglog(fl, [r["params"] for r in rs]),
                    "acts_fit": fit_loglog(fl, [r["acts"] for r in rs]),
                    "params_theory": theory["params"] if theory else None,
                    "acts_theory": theory["acts"] if theory else None})
    return out


def family_table(family: list[tuple[dict, object]]) -> str:
    rows = family_rows(family)
    body = [[r["kind"], f"{r['factor']:g}", r["name"], str(r["depths"]), str(r["widths"]),
             str(r["group_widths"]) if len(set(r["group_widths"])) > 1 else str(r["group_widths"][0]),
             r["resolution"], human(r["flops"]), human(r["params"]), human(r["acts"])]
            for r in rows]
    text = format_table(["kind", "factor", "model", "depths", "widths", "g", "res", "flops",
                         "params", "acts"], body, "Family complexity (flops = multiply-adds, 1 image at train res)")
    growth = growth_by_kind(rows)
    if any(g["n"] > 1 for g in growth):
        def f(v):
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
        g_rows = [[g["kind"], g["n"], f(g["params_fit"]), f(g["params_theory"]),
                   f(g["acts_fit"]), f(g["acts_theory"])] for g in growth]
        text += "\n\n" + format_table(
            ["kind", "models", "params fit", "params theory", "acts fit", "acts theory"], g_rows,
            "Growth exponents vs flops (log-log least squares; theory: params ~ s^(e_d+2e_w), "
            "acts ~ s^(e_d+e_w+2e_r))")
    return text
