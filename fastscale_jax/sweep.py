"""The one sweep grammar (`config.family`): the set of models a benchmark, a complexity table
or a scaling study runs over. Pure Python (no jax): a bad sweep fails before any work, with
a ConfigError naming the `family.<field>`.

    family.models       explicit zoo names (then nothing else here applies), or
    family.base         a zoo model: the base, with the config's model.* fields (resolution,
                        stem_type, num_classes, ...) applied to it, then optionally
    family.base_kind / family.base_factor   pre-scaled (e.g. 'dw' x1/16: a small base),
    family.kinds / family.alphas            the strategies ('dwr', 'dWr', 'w', 'd1_w8_g8_r1';
                        alphas in [0, 1]),
    family.factors | family.flops           how much: flops factors of the base, or targets
                        ('4GF'),
    family.match        'flops' (default): every strategy is scaled to one common flops target
                        per factor (the paper compares strategies at equal flops; rounding
                        otherwise moves small models by tens of percent): the target within
                        25% of factor x the base's flops that all strategies reach closest
                        (`common_target`); a member further than family.tolerance (5%) from
                        it is reported and flagged. A flops target ('4GF') is used as given.
                        'factor': pycls's scaler applied to the factor as it is.

Without family.base / family.models the sweep is the config's single model
(config.resolve_spec: scaling.* then model.*). A study (fastscale_jax.study.grid) runs every
member with study.seeds seeds on top.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from fastscale_jax import config as config_lib
from fastscale_jax.complexity import complexity
from fastscale_jax.errors import ConfigError
from fastscale_jax.scaling import candidates, parse_flops, scale, scaling_exponents
from fastscale_jax.zoo import canonical_name, get_model_spec

MATCHES = ("flops", "factor")


@dataclasses.dataclass(frozen=True)
class SweepMember:
    """One model of a sweep: its strategy and amount, and its spec."""

    strategy: str             # 'dWr', 'alpha=0.8', 'zoo' or the single model's kind / 'none'
    kind: str | None
    alpha: float | None
    factor: float             # the flops factor asked for (solved for targets: see `scaled_by`)
    target: str | None        # the flops target it was scaled to ('4GF', or 'x2' of the base)
    target_flops: float | None
    scaled_by: float          # the scaler's factor that gave the spec
    spec: object = dataclasses.field(compare=False, repr=False)

    def labels(self) -> dict:
        """Row labels: strategy (also as 'kind', the benchmark tables' key), alpha, factor,
        target and the model's complexity (flops = multiply-adds) and its distance from the
        target in % (flops_err_pct)."""
        cx = complexity(self.spec)
        err = (100.0 * (cx["flops"] / self.target_flops - 1.0) if self.target_flops else None)
        return dict(model=self.spec.name, strategy=self.strategy, kind=self.strategy,
                    alpha=self.alpha, factor=self.factor, target=self.target,
                    scaled_by=self.scaled_by, resolution=int(self.spec.resolution),
                    flops=int(cx["flops"]), params=int(cx["params"]), acts=int(cx["acts"]),
                    target_flops=self.target_flops, flops_err_pct=err)


def fail(field: str, value, why: str):
    raise ConfigError(f"family.{field}={value!r}: {why}")


def as_list(section, field: str) -> list:
    v = section.get(field)
    if v is None:
        return []
    if isinstance(v, (str, numbers.Number)):
        return [v]
    return list(v)


def positive(field: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        fail(field, v, "expected positive numbers")
    if not (math.isfinite(float(v)) and float(v) > 0):
        fail(field, v, "every factor must be a positive finite number (> 0)")
    return float(v)


def strategies(fam) -> list[tuple[str, str | None, float | None]]:
    """[(label, kind, alpha)] of family.kinds then family.alphas, validated."""
    out = []
    for k in as_list(fam, "kinds"):
        if not isinstance(k, str):
            fail("kinds", k, "kinds are strings such as 'dwr', 'dWr', 'w', 'd'")
        try:
            scaling_exponents(k)
        except ConfigError as e:
            fail("kinds", k, f"unknown scaling kind ({e})")
        out.append((k, k, None))
    for a in as_list(fam, "alphas"):
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not 0 <= float(a) <= 1:
            fail("alphas", a, "alpha must be a number in [0, 1] (1/3 = dwr, 0.8 = dWr)")
        out.append((f"alpha={float(a):.3g}", None, float(a)))
    if not out:
        fail("kinds", fam.get("kinds"), "empty sweep: set family.kinds (e.g. ('dwr', 'dWr')) "
             "and/or family.alphas (e.g. (0.333, 0.8))")
    labels = [label for label, _, _ in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        fail("kinds" if dup[0] in as_list(fam, "kinds") else "alphas", dup[0],
             "listed twice; remove the repeat")
    return out


def amounts(fam) -> list[tuple[str, float | None, str | None]]:
    """[(name part, factor, flops target)] from family.factors or family.flops, validated."""
    factors, targets = as_list(fam, "factors"), as_list(fam, "flops")
    if factors and targets:
        fail("flops", fam.get("flops"), "set family.factors or family.flops, not both")
    if not factors and not targets:
        if fam.get("factors") is not None or fam.get("flops") is not None:  # set, but empty
            fail("factors", fam.get("factors"), "empty sweep: set family.factors (e.g. (2, 4)) "
                 "or family.flops (e.g. ('1GF', '2GF')); unset, the base alone (x1)")
        factors = [1.0]
    out = [(f"x{positive('factors', f):g}", float(f), None) for f in factors]
    for t in targets:
        if not isinstance(t, str) or not t.strip():
            fail("flops", t, "flops targets are strings such as '800MF' or '4GF'")
        try:
            parse_flops(t)
        except ConfigError as e:
            fail("flops", t, str(e))
        out.append((t.strip().upper(), None, t.strip().upper()))
    parts = [p for p, _, _ in out]
    dup = sorted({p for p in parts if parts.count(p) > 1})
    if dup:
        fail("factors" if factors else "flops", dup[0], "listed twice (factors equal as numbers: "
             f"{[p for p in parts]}); remove the repeat")
    return out


def base_name(config) -> str:
    name = config.family.get("base") or config.model.name
    try:
        return canonical_name(name)
    except ConfigError as e:
        fail("base", name, str(e))


def base_spec(config):
    """The base model: family.base with model.* fields, then base_kind x base_factor."""
    fam = config.family
    spec = config_lib.apply_overrides(get_model_spec(base_name(config)),
                                      config_lib.spec_overrides(config))
    bk, bf = fam.get("base_kind"), fam.get("base_factor")
    if (bk is None) != (bf is None):
        fail("base_kind" if bk is None else "base_factor", bk if bk is None else bf,
             "set both family.base_kind and family.base_factor (or neither)")
    if bk is not None:
        try:
            scaling_exponents(bk)
        except ConfigError as e:
            fail("base_kind", bk, str(e))
        spec = scale(spec, positive("base_factor", bf), bk)
    return spec


def _match(fam) -> tuple[str, float]:
    match = fam.get("match") or "flops"
    if match not in MATCHES:
        fail("match", match, f"valid: {', '.join(MATCHES)}")
    tol = fam.get("tolerance")
    tol = 0.05 if tol is None else tol
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
        fail("tolerance", tol, "a relative distance in (0, 1), e.g. 0.05")
    return match, float(tol)


def _near(base, kind, alpha, goal: float) -> list[tuple[float, float, object]]:
    """[(flops, scaler factor, spec)] of the distinct valid models of one strategy near `goal`
    flops (the factor grid scale_to searches: x1/3 to x3 around goal / base flops)."""
    f0 = goal / complexity(base)["flops"]
    grid = [f0 * 2 ** (k / 32) for k in range(-48, 49)]
    return [(complexity(c)["flops"], f, c) for f, c in candidates(base, grid, kind, alpha=alpha)]


def common_target(options: list[list[tuple]], nominal: float, tol: float,
                  spread: float = 1.25) -> float:
    """The flops target for one factor: the one nearest `nominal` (factor x the base's flops)
    that every strategy reaches within `tol` with its nearest model, searched within
    [nominal / spread, nominal * spread]; if none, the one whose worst strategy is nearest.
    Rounding makes each strategy's models discrete, so nominal itself may sit between two of
    them for one strategy and on top of one for another; the paper compares strategies at
    equal flops, which this target gives them."""
    flops = sorted({fl for opts in options for fl, _, _ in opts})
    probes = {nominal, *flops, *(math.sqrt(a * b) for a, b in zip(flops, flops[1:]))}
    probes = [t for t in probes if nominal / spread <= t <= nominal * spread] or [nominal]

    def worst(t):
        return max(min(abs(math.log(fl / t)) for fl, _, _ in opts) for opts in options)
    ok = [t for t in probes if worst(t) <= math.log1p(tol)]
    if ok:
        return min(ok, key=lambda t: abs(math.log(t / nominal)))
    return min(probes, key=lambda t: (round(worst(t), 12), abs(math.log(t / nominal))))


def _amount(base, strats, part, factor, target, match, tol, warn) -> list[SweepMember]:
    """The members of one amount (a factor or a flops target), one per strategy."""
    base_flops = complexity(base)["flops"]
    if target is None and match == "factor":
        return [SweepMember(label, kind, alpha, factor, None, None, factor,
                            scale(base, factor, kind, alpha=alpha)) for label, kind, alpha in strats]
    goal = parse_flops(target) if target is not None else factor * base_flops
    options = [_near(base, kind, alpha, goal) for _, kind, alpha in strats]
    for (label, _, _), opts in zip(strats, options):
        if not opts:
            fail("flops" if target else "factors", target or factor,
                 f"{label}: no valid model near {goal / 1e6:.4g} MF")
    if target is None:  # a factor: the common target near factor x base that all can reach
        goal = common_target(options, goal, tol)
    out = []
    for (label, kind, alpha), opts in zip(strats, options):
        fl, f, spec = min(opts, key=lambda o: abs(math.log(o[0] / goal)))
        if abs(fl / goal - 1.0) > tol:
            warn(f"warning: family {label} {part}: the closest model has {fl / 1e6:.4g} MF, "
                 f"{100 * (fl / goal - 1):+.1f}% from the common target {goal / 1e6:.4g} MF "
                 f"(family.tolerance {100 * tol:g}%); kept, flagged in the flops_err_pct column")
        spec = spec.replace(name=f"{base.name} {part} {label}")  # the amount asked, not the
        out.append(SweepMember(label, kind, alpha,                # scaler's solved factor
                               factor if factor is not None else goal / base_flops,
                               target or part, goal, float(f), spec))
    return out


def _timed_members(config, fam, resolved: dict, warn) -> list[SweepMember]:
    """The members of a time-budget sweep from its recorded selection ({'strategy|budget':
    TimeResult dict}, fastscale_jax.timing.select): a budget no model met is left out."""
    from fastscale_jax.families import spec_from_dict

    base = base_spec(config)
    out = []
    for label, kind, alpha in strategies(fam):
        for t in as_list(fam, "times"):
            rec = resolved.get(f"{label}|{t}")
            if rec is None:
                warn(f"warning: family {label} {t}: no model met this budget (select.csv says "
                     "why); left out")
                continue
            spec = spec_from_dict(rec["spec"]).replace(name=f"{base.name} {t} {label}")
            out.append(SweepMember(label, kind, alpha, float(rec["factor"]), str(t), None,
                                   float(rec["factor"]), spec))
    return out


def expand(config, warn=print, resolved: dict | None = None) -> list[SweepMember]:
    """The sweep's members in order (strategy, then amount); validates the whole sweep and
    builds every spec first. resolved: a time-budget sweep's recorded selection."""
    fam = config.get("family")
    models = as_list(fam, "models") if fam is not None else []
    if models:
        over = config_lib.spec_overrides(config)
        return [SweepMember("zoo", None, None, 1.0, None, None, 1.0,
                            config_lib.apply_overrides(get_model_spec(m), over)) for m in models]
    if fam is None or not fam.get("base"):
        spec = config_lib.resolve_spec(config)
        kind = config.scaling.get("kind") or "none"
        factor = config.scaling.get("factor") or 1.0
        return [SweepMember(kind, None, None, float(factor), None, None, float(factor), spec)]
    if as_list(fam, "times"):
        if resolved is None:
            raise ConfigError("family.times (time budgets) are resolved by measuring on this "
                              "machine: run --mode select (configs/budget_sweep.py); a study "
                              "runs it for you")
        return _timed_members(config, fam, resolved, warn)
    strats, amts, (match, tol) = strategies(fam), amounts(fam), _match(fam)
    base = base_spec(config)
    by_amount = []
    for part, factor, target in amts:
        try:
            by_amount.append(_amount(base, strats, part, factor, target, match, tol, warn))
        except ConfigError as e:
            if str(e).startswith("family."):
                raise
            fail("flops" if target else "factors", target or factor, str(e))
    return [ms[i] for i in range(len(strats)) for ms in by_amount]  # strategy, then amount


def member_key(m: SweepMember) -> str:
    """The member's short name: <strategy>_<amount> ('dWr_x2', 'a0.8_4GF')."""
    return f"{m.strategy.replace('alpha=', 'a')}_{m.target or f'x{m.factor:g}'}"


def resolve_family(config, warn=print) -> list[tuple[dict, object]]:
    """The sweep as [(labels, spec)] (SweepMember.labels()), what benchmarks and complexity
    tables take."""
    return [(m.labels(), m.spec) for m in expand(config, warn=warn)]
