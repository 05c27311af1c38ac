"""The study grid: the sweep of `config.family` (fastscale_jax.sweep, the grammar benchmarks
use too) times `config.study.seeds` seeds, one training run each.

A member is the base model scaled by one strategy (a kind such as 'dWr' or an alpha in
[0, 1]) to one flops target (a factor of the base's flops, or '4GF'; by default every strategy
is matched to the same flops), trained with one seed. The base is family.base with the
config's model.* fields (resolution, stem_type, num_classes, ...) and, with family.base_kind /
family.base_factor, scaled by them first (e.g. RegNetZ-500MF shrunk x1/16 by 'dw' at 32 px,
then scaled up x2, x4 by each strategy: scaling a 32 px base *down* with r would go below the
32 px minimum).

Everything here is pure Python (no jax): a bad grid fails before any run starts, with a
ConfigError naming the field.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers

from fastscale_jax import config as config_lib
from fastscale_jax import sweep
from fastscale_jax.errors import ConfigError
from fastscale_jax.scaling import structure_key
from fastscale_jax.sweep import SweepMember


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a study: a sweep member (fastscale_jax.sweep) with a seed."""

    name: str            # sub-workdir name: <strategy>_<amount>_s<seed>, e.g. dWr_x2_s0
    base: str            # zoo name of the base model
    model: SweepMember
    seed: int

    @property
    def spec(self):
        return self.model.spec

    @property
    def strategy(self) -> str:
        return self.model.strategy

    @property
    def target(self) -> str | None:
        return self.model.target

    def labels(self) -> dict:
        """Row labels: the sweep member's (strategy, factor, target, complexity with flops as
        multiply-adds, distance from the flops target) plus run, base and seed."""
        return dict(self.model.labels(), run=self.name, base=self.base, seed=self.seed)


def seeds(study) -> list[int]:
    n = study.get("seeds")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"study.seeds={n!r}: the number of seeds per model must be an "
                          "integer >= 1")
    first = int(study.get("first_seed") or 0)
    return list(range(first, first + n))


def expand(config, warn=print, resolved: dict | None = None) -> list[Member]:
    """All members of the study in run order (strategy, then amount, then seed); validates the
    whole grid (and builds every spec) before returning. resolved: the recorded selection of
    a time-budget grid (family.times; fastscale_jax.timing.select)."""
    study = config.get("study")
    if study is None:
        raise ConfigError("this config has no study section; use configs/study.py (--mode study)")
    if not config.family.get("base"):
        raise ConfigError("a study needs family.base (the zoo model it scales) with "
                          "family.kinds / family.alphas and family.factors / family.flops")
    seed_list = seeds(study)
    base = sweep.base_name(config)
    members = [Member(f"{sweep.member_key(m)}_s{s}", base, m, s)
               for m in sweep.expand(config, warn=warn, resolved=resolved) for s in seed_list]
    names = [m.name for m in members]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"family.kinds / family.alphas: two members share the name {dup[0]!r}; "
                          "remove the repeated strategy or amount")
    return members


def member_config(config, member: Member):
    """The ordinary training config of one member: the study config without its study section,
    with model.name, scaling.*, model.resolution / test_resolution, seed and data.seed set, and
    the member's labels under `study_member` (for the record in its config.json).

    Without family.base_kind the config alone describes the member's model
    (config.resolve_spec(c) is the member's network, checked; its name says the scaler's factor,
    the member's the amount asked); with it (a pre-scaled base) scaling.* is left unset. The
    runner always passes member.spec to the training loop.
    """
    import ml_collections

    c = copy.deepcopy(config)
    m = member.model
    prescaled = config.family.get("base_kind") is not None
    with c.unlocked():
        del c["study"]
        c.family = config_lib.family_section()
        c.model.name = member.base
        c.model.resolution = int(member.spec.resolution)
        c.model.test_resolution = int(member.spec.test_resolution)
        c.scaling.kind = None if prescaled else m.kind
        c.scaling.alpha = None if prescaled else m.alpha
        c.scaling.factor = None if prescaled else m.scaled_by
        c.scaling.flops = None
        c.seed = int(member.seed)
        c.data.seed = int(member.seed)
        c.study_member = ml_collections.ConfigDict(dict(
            name=member.name, base=member.base, strategy=m.strategy, factor=m.factor,
            scaled_by=m.scaled_by, target=m.target or "", seed=member.seed,
            model=member.spec.name, base_kind=config.family.get("base_kind") or "",
            base_factor=float(config.family.get("base_factor") or 1.0)))
    if not prescaled and structure_key(config_lib.resolve_spec(c)) != structure_key(member.spec):
        raise AssertionError(f"{member.name}: the member config does not reproduce its spec")
    return c
