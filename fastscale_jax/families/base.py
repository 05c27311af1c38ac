"""What a model family defines, in one module under fastscale_jax/families/ (pycls's
one-file-per-family layout): its spec type, its zoo, its blocks and their layers, how the
scaler treats it, its names for pycls / timm weights and its report rows.

A family module makes one instance of a `Family` subclass, `FAMILY`, and
fastscale_jax/families/__init__.py lists it (the one line a new family adds elsewhere).
Nothing outside the family modules branches on which family a spec is.
"""

from __future__ import annotations

from typing import Callable

from fastscale_jax.errors import ConfigError


class Family:
    """The interface of a model family (override what the family has)."""

    name: str = ""              # spec.family
    spec_type: type = object    # the family's frozen spec dataclass
    scaled_dims: str = "dwgr"   # the scaler's letters that change this family's specs
    weight_sources: tuple = ()  # checkpoint sources it can be converted from ('pycls', 'timm')

    def zoo(self) -> dict:
        """{zoo name: spec} of the family's named models."""
        return {}

    def aliases(self) -> dict:
        """Extra snake-case names {alias: zoo name} beyond the automatic ones."""
        return {}

    def blocks(self, spec) -> list:
        """Every block of `spec`, in order (specs.Block)."""
        raise NotImplementedError

    def stem(self, spec):
        """The stem Part."""
        raise NotImplementedError

    def block_part(self, spec, block):
        """The Part that builds one block."""
        raise NotImplementedError

    def head(self, spec):
        """The head Part."""
        raise NotImplementedError

    def scale_fields(self, spec, widths: list, width_factor: float, group_factor: float) -> dict:
        """Spec fields the scaler changes besides depths and resolution, from the stage widths
        already multiplied and rounded (`widths`) and the width / group-width factors."""
        raise NotImplementedError

    def stage_config(self, spec, i: int) -> str:
        """The report's description of stage i (0-based), e.g. 'd=2 w=64 s=2 b=1 g=16'."""
        return f"d={spec.depths[i]} w={spec.widths[i]} s={spec.strides[i]}"

    def weight_names(self, spec, source: str) -> tuple[Callable, bool]:
        """(name(part, flax path) -> torch module name, shortcut_first) for `source`'s
        checkpoints of `spec`; ConfigError when the source has no such network."""
        raise ConfigError(f"{spec.name}: {source} has no {self.name} networks to convert; "
                          f"the {self.name} family converts from "
                          f"{', '.join(self.weight_sources) or 'no checkpoint source'}")
