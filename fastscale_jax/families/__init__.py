"""Model families behind one registry: one module per family (pycls / timm's layout).

    from fastscale_jax import families
    families.family_of(spec).name         # 'anynet' | 'effnet' | ...
    families.layer_plan(spec)             # stem, every block, head: the plan everything uses
    families.spec_from_dict(spec.to_dict())

A family module (`families/<name>.py`) defines its spec type, zoo, blocks and their layers,
how the scaler treats it, its checkpoint names and its report rows (`families.base.Family`),
and makes one instance `FAMILY`; adding a family is that module plus one entry in FAMILIES.
"""

from __future__ import annotations

import dataclasses
import functools

from fastscale_jax.errors import ConfigError
from fastscale_jax.families import anynet, effnet, effnetv2
from fastscale_jax.families.base import Family
from fastscale_jax.plan import part_weights, plan_stride

FAMILIES: dict[str, Family] = {f.name: f for f in (anynet.FAMILY, effnet.FAMILY, effnetv2.FAMILY)}


def family_of(spec) -> Family:
    """The family of `spec`; ConfigError (naming the spec types) for anything else."""
    fam = FAMILIES.get(getattr(spec, "family", None))
    if fam is None or not isinstance(spec, fam.spec_type):
        if isinstance(spec, str):
            raise ConfigError(f"expected a model spec, got the string {spec!r}; pass "
                              f"fastscale_jax.get_model_spec({spec!r}) instead")
        types = ", ".join(f.spec_type.__name__ for f in FAMILIES.values())
        raise ConfigError(f"expected a model spec ({types}; e.g. fastscale_jax.get_model_spec("
                          f"'RegNetZ-500MF')), got {type(spec).__name__} {spec!r:.80}")
    return fam


def spec_types() -> tuple:
    return tuple(f.spec_type for f in FAMILIES.values())


def block_plan(spec) -> list:
    """Every block of `spec`, in order, with its widths, stride, groups and shortcut type."""
    return family_of(spec).blocks(spec)


def layer_plan(spec) -> list:
    """Every part of `spec` in order: stem, blocks s1_b1, s1_b2, ..., head (plan.Part)."""
    fam = family_of(spec)
    return [fam.stem(spec), *(fam.block_part(spec, b) for b in fam.blocks(spec)), fam.head(spec)]


def weight_layers(spec) -> list[tuple]:
    """(Flax module path, kind) of every weight-holding layer of `spec`, shortcuts first."""
    return [w for part in layer_plan(spec) for w in part_weights(part)]


def total_stride(spec) -> int:
    """Downsampling factor of the whole network (plan.plan_stride of its layer plan)."""
    return plan_stride(layer_plan(spec))


def spec_from_dict(d: dict):
    """The spec saved by spec.to_dict() (its 'family' names the spec type)."""
    d = dict(d)
    fam = FAMILIES.get(d.pop("family", None))
    if fam is None:
        raise ConfigError(f"spec dict has no known 'family' (valid: {', '.join(FAMILIES)}): {d}")
    names = {f.name for f in dataclasses.fields(fam.spec_type)}
    return fam.spec_type(**{k: v for k, v in d.items() if k in names})


@functools.lru_cache(maxsize=None)
def _zoo() -> tuple:
    zoo, aliases = {}, {}
    for fam in FAMILIES.values():
        zoo.update(fam.zoo())
        aliases.update(fam.aliases())
    return zoo, aliases


def zoo_specs() -> dict:
    """{zoo name: spec} of every family, in registry order."""
    return dict(_zoo()[0])


def zoo_aliases() -> dict:
    """The families' extra aliases {alias: zoo name}."""
    return dict(_zoo()[1])


__all__ = ["FAMILIES", "Family", "block_plan", "family_of", "layer_plan", "spec_from_dict",
           "spec_types", "total_stride", "weight_layers", "zoo_aliases", "zoo_specs"]
