"""The study grid: validate `config.study` and expand it into members, one training run each.

A member is the base model scaled by one strategy (a kind such as 'dWr' or an alpha in
[0, 1]) by one flops factor (or to one flops target), trained with one seed. The base model is
`study.base` (a zoo name) with the config's model.* overrides (resolution, stem_type,
num_classes, ...) and, when `study.base_kind` / `study.base_factor` are set, scaled by them
first (e.g. RegNetZ-500MF shrunk x1/16 by 'dw' at 32 px, then scaled up x2, x4 by each
strategy: scaling a 32 px base *down* with r would go below the 32 px minimum).

Everything here is pure Python (no jax): a bad grid fails before any run starts, with a
ValueError naming the field.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers

from fastscale_jax import config as config_lib
from fastscale_jax.complexity import complexity
from fastscale_jax.scaling import scale, scale_to, scaling_exponents
from fastscale_jax.zoo import get_model_spec


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a study: labels plus the model spec it trains."""

    name: str            # sub-workdir name: <strategy>_x<factor>_s<seed> (or _<target>_)
    base: str            # zoo name of the base model
    strategy: str        # the kind ('dWr') or 'alpha=0.8'
    kind: str | None
    alpha: float | None
    factor: float        # flops factor relative to the base (solved for flops targets)
    target: str | None   # the flops target it was scaled to, if any
    seed: int
    spec: object = dataclasses.field(compare=False, repr=False)

    def labels(self) -> dict:
        """Row labels: the grid coordinates and the model's complexity (flops = multiply-adds)."""
        cx = complexity(self.spec)
        return dict(run=self.name, base=self.base, strategy=self.strategy, kind=self.kind,
                    alpha=self.alpha, factor=self.factor, target=self.target, seed=self.seed,
                    model=self.spec.name, resolution=int(self.spec.resolution),
                    flops=int(cx["flops"]), params=int(cx["params"]), acts=int(cx["acts"]))


def _fail(field: str, value, why: str):
    raise ValueError(f"study.{field}={value!r}: {why}")


def _as_list(study, field: str) -> list:
    v = study.get(field)
    if v is None:
        return []
    if isinstance(v, (str, numbers.Number)):
        return [v]
    return list(v)


def _positive(field: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        _fail(field, v, "expected positive numbers")
    if not (math.isfinite(float(v)) and float(v) > 0):
        _fail(field, v, "every factor must be a positive finite number (> 0)")
    return float(v)


def strategies(study) -> list[tuple[str, str | None, float | None]]:
    """[(label, kind, alpha)] of study.kinds then study.alphas, validated."""
    out = []
    for k in _as_list(study, "kinds"):
        if not isinstance(k, str):
            _fail("kinds", k, "kinds are strings such as 'dwr', 'dWr', 'w', 'd'")
        try:
            scaling_exponents(k)
        except ValueError as e:
            _fail("kinds", k, f"unknown scaling kind ({e})")
        out.append((k, k, None))
    for a in _as_list(study, "alphas"):
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not 0 <= float(a) <= 1:
            _fail("alphas", a, "alpha must be a number in [0, 1] (1/3 = dwr, 0.8 = dWr)")
        out.append((f"alpha={float(a):g}", None, float(a)))
    if not out:
        _fail("kinds", study.get("kinds"), "empty grid: set study.kinds (e.g. ('dwr', 'dWr')) "
              "and/or study.alphas (e.g. (0.333, 0.8))")
    return out


def amounts(study) -> list[tuple[str, float | None, str | None]]:
    """[(name part, factor, flops target)] from study.factors or study.flops, validated."""
    factors, targets = _as_list(study, "factors"), _as_list(study, "flops")
    if factors and targets:
        _fail("flops", study.get("flops"), "set study.factors or study.flops, not both")
    if not factors and not targets:
        _fail("factors", study.get("factors"), "empty grid: set study.factors (e.g. (2, 4)) "
              "or study.flops (e.g. ('1GF', '2GF'))")
    out = [(f"x{_positive('factors', f):g}", float(f), None) for f in factors]
    for t in targets:
        if not isinstance(t, str) or not t.strip():
            _fail("flops", t, "flops targets are strings such as '800MF' or '4GF'")
        out.append((t.strip().upper(), None, t.strip().upper()))
    return out


def seeds(study) -> list[int]:
    n = study.get("seeds")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        _fail("seeds", n, "the number of seeds per model must be an integer >= 1")
    return list(range(int(study.get("first_seed") or 0), int(study.get("first_seed") or 0) + n))


def base_spec(config):
    """The study's base model: study.base with model.* overrides, then base_kind x base_factor."""
    study = config.study
    name = study.get("base") or config.model.name
    try:
        spec = get_model_spec(name)
    except (KeyError, ValueError) as e:
        _fail("base", name, str(e.args[0] if e.args else e))
    spec = config_lib.apply_overrides(spec, config_lib.spec_overrides(config))
    bk, bf = study.get("base_kind"), study.get("base_factor")
    if (bk is None) != (bf is None):
        _fail("base_kind" if bk is None else "base_factor", bk if bk is None else bf,
              "set both study.base_kind and study.base_factor (or neither)")
    if bk is not None:
        try:
            scaling_exponents(bk)
        except ValueError as e:
            _fail("base_kind", bk, str(e))
        spec = scale(spec, _positive("base_factor", bf), bk)
    return spec


def expand(config) -> list[Member]:
    """All members of the study in run order (strategy, then amount, then seed); validates the
    whole grid (and builds every spec) before returning."""
    study = config.get("study")
    if study is None:
        raise ValueError("this config has no study section; use configs/study.py (--mode study)")
    strats, amts, seed_list = strategies(study), amounts(study), seeds(study)
    base = base_spec(config)
    base_name = study.get("base") or config.model.name
    members = []
    for label, kind, alpha in strats:
        for part, factor, target in amts:
            try:
                if target is not None:
                    res = scale_to(base, target, kind, alpha=alpha)
                    spec, factor = res.spec, float(res.factor)
                else:
                    spec = scale(base, factor, kind, alpha=alpha)   # specs validate themselves
            except ValueError as e:
                _fail("flops" if target else "factors", target or factor,
                      f"{label}: {e}")
            tag = label.replace("alpha=", "a")
            for s in seed_list:
                members.append(Member(f"{tag}_{part}_s{s}", base_name, label, kind, alpha,
                                      factor, target, s, spec))
    names = [m.name for m in members]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        _fail("kinds", study.get("kinds"), f"two members share the name {dup[0]!r}; "
              "remove the repeated strategy or factor")
    return members


def member_config(config, member: Member):
    """The ordinary training config of one member: the study config without its study section,
    with model.name, scaling.*, model.resolution / test_resolution, seed and data.seed set, and
    the member's labels under `study_member` (for the record in its config.json).

    Without study.base_kind the config alone describes the member's model
    (config.resolve_spec(c) == member.spec, checked); with it (a pre-scaled base) scaling.* is
    left unset and the runner passes member.spec to the training loop.
    """
    import ml_collections

    c = copy.deepcopy(config)
    prescaled = config.study.get("base_kind") is not None
    with c.unlocked():
        del c["study"]
        c.model.name = member.base
        c.model.resolution = int(member.spec.resolution)
        c.model.test_resolution = int(member.spec.test_resolution)
        c.scaling.kind = None if prescaled else member.kind
        c.scaling.alpha = None if prescaled else member.alpha
        c.scaling.factor = None if prescaled else member.factor
        c.scaling.flops = None
        c.seed = int(member.seed)
        c.data.seed = int(member.seed)
        c.study_member = ml_collections.ConfigDict(dict(
            name=member.name, base=member.base, strategy=member.strategy, factor=member.factor,
            target=member.target or "", seed=member.seed, model=member.spec.name,
            base_kind=config.study.get("base_kind") or "",
            base_factor=float(config.study.get("base_factor") or 1.0)))
    if not prescaled and config_lib.resolve_spec(c) != member.spec:
        raise AssertionError(f"{member.name}: the member config does not reproduce its spec")
    return c
