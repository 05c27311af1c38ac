"""The named model zoo: every model of pycls's model zoo, RegNetZ-500MF / 4GF and the other
families' named models, gathered from the family modules (fastscale_jax/families/).

Names follow pycls ("RegNetY-4.0GF", "EfficientNet-B0", "ResNeXt-50"). Snake-case aliases
are accepted: lower case with '_' for '-' ("regnety_4.0gf"), and the GF suffix with or
without ".0" ("regnety_4gf"); families add their own (timm's "regnetz_005"). Where each
model's numbers come from is said in its family module.
"""

from __future__ import annotations

import difflib

from fastscale_jax.errors import ConfigError
from fastscale_jax.families import zoo_aliases, zoo_specs

_ZOO = zoo_specs()


def _key(name: str) -> str:
    k = name.strip().lower().replace("-", "_")
    return k.replace(".0gf", "gf")


_ALIASES = {_key(n): n for n in _ZOO}
_ALIASES.update(zoo_aliases())


def list_models(family: str | None = None) -> list[str]:
    """Names of all zoo models, or of one series: `family` is the part before the '-'
    ('RegNetY', 'EfficientNet', 'EfficientNetV2'), else a prefix of the names ('RegNet')."""
    names = list(_ZOO)
    if family:
        f = family.lower()
        exact = [n for n in names if n.split("-")[0].lower() == f]
        names = exact or [n for n in names if n.lower().startswith(f)]
    return names


def canonical_name(name: str) -> str:
    """The zoo name for `name` or one of its aliases; ConfigError with suggestions if unknown."""
    if not isinstance(name, str):
        raise ConfigError(f"model name must be a string, got {type(name).__name__}")
    if name in _ZOO:
        return name
    key = _key(name)
    if key in _ALIASES:
        return _ALIASES[key]
    close = difflib.get_close_matches(key, list(_ALIASES), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(_ALIASES[c]) for c in close)}?" if close else ""
    raise ConfigError(f"Unknown model {name!r}.{hint} fastscale_jax.list_models() lists all "
                     f"{len(_ZOO)} models.")


def get_model_spec(name: str, **overrides):
    """The spec of a zoo model by name or alias; keyword overrides replace spec fields
    (e.g. num_classes=10, resolution=64)."""
    spec = _ZOO[canonical_name(name)]
    if overrides:
        fields = set(spec.__dataclass_fields__)
        bad = sorted(set(overrides) - fields)
        if bad:
            raise ConfigError(f"unknown spec field(s) {bad} for {spec.name}; valid: {sorted(fields)}")
        spec = spec.replace(**overrides)
    return spec
