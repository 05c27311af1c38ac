"""The named model zoo: every model of pycls's model zoo, plus RegNetZ-500MF and RegNetZ-4GF.

Names follow pycls ("RegNetY-4.0GF", "EfficientNet-B0", "ResNeXt-50"). Snake-case aliases
are accepted: lower case with '_' for '-' ("regnety_4.0gf"), and the GF suffix with or
without ".0" ("regnety_4gf").

Sources:
- RegNetX/Y: pycls configs/dds_baselines/regnet{x,y}/*.yaml (w_a, w_0, w_m, depth, group width;
  RegNetY adds SE with ratio 0.25). Train/test resolution 224/256.
- EfficientNet-B0..B5: pycls configs/dds_baselines/effnet/EN-B*.yaml (with their resolutions).
- ResNet-50/101/152 (1x64d) and ResNeXt-50/101/152 (32x4d): pycls AnyNet configs
  (configs/dds_baselines/res{net,next}/*.yaml).
- RegNetZ-500MF / RegNetZ-4GF: the inverted-bottleneck, linear-output RegNets of Dollar et al.
  2021 ("Fast and Accurate Model Scaling"), with the parameters published in ClassyVision and
  timm (`regnetz_005`: depth 21, w_0 16, w_a 10.7, w_m 2.51, group width 4; `regnetz_040_h`:
  depth 28, w_0 48, w_a 14.5, w_m 2.226, group width 8, head 1536), bottleneck multiplier 4,
  SE 0.25, SiLU, stem width 32. RegNetZ-500MF uses 224/256 px, RegNetZ-4GF timm's 256/320 px.
  Widths go through pycls's generator and block-compatibility rules.
"""

from __future__ import annotations

import difflib

from fastscale_jax.specs import AnyNetSpec, EffNetSpec, Spec, regnet_spec

# name: (w_a, w_0, w_m, depth, group_w)
_REGNETX = {
    "200MF": (36.44, 24, 2.49, 13, 8), "400MF": (24.48, 24, 2.54, 22, 16),
    "600MF": (36.97, 48, 2.24, 16, 24), "800MF": (35.73, 56, 2.28, 16, 16),
    "1.6GF": (34.01, 80, 2.25, 18, 24), "3.2GF": (26.31, 88, 2.25, 25, 48),
    "4.0GF": (38.65, 96, 2.43, 23, 40), "6.4GF": (60.83, 184, 2.07, 17, 56),
    "8.0GF": (49.56, 80, 2.88, 23, 120), "12GF": (73.36, 168, 2.37, 19, 112),
    "16GF": (55.59, 216, 2.1, 22, 128), "32GF": (69.86, 320, 2.0, 23, 168),
}
_REGNETY = {
    "200MF": (36.44, 24, 2.49, 13, 8), "400MF": (27.89, 48, 2.09, 16, 8),
    "600MF": (32.54, 48, 2.32, 15, 16), "800MF": (38.84, 56, 2.4, 14, 16),
    "1.6GF": (20.71, 48, 2.65, 27, 24), "3.2GF": (42.63, 80, 2.66, 21, 24),
    "4.0GF": (31.41, 96, 2.24, 22, 64), "6.4GF": (33.22, 112, 2.27, 25, 72),
    "8.0GF": (76.82, 192, 2.19, 17, 56), "12GF": (73.36, 168, 2.37, 19, 112),
    "16GF": (106.23, 200, 2.48, 18, 112), "32GF": (115.89, 232, 2.53, 20, 232),
}
# name: (w_a, w_0, w_m, depth, group_w, head_w, resolution, test_resolution)
_REGNETZ = {
    "500MF": (10.7, 16, 2.51, 21, 4, 1024, 224, 256),
    "4GF": (14.5, 48, 2.226, 28, 8, 1536, 256, 320),
}
# name: (stem_w, depths, widths, head_w, resolution, test_resolution)
_EFFNET = {
    "B0": (32, [1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320], 1280, 224, 256),
    "B1": (32, [2, 3, 3, 4, 4, 5, 2], [16, 24, 40, 80, 112, 192, 320], 1280, 240, 274),
    "B2": (32, [2, 3, 3, 4, 4, 5, 2], [16, 24, 48, 88, 120, 208, 352], 1408, 260, 298),
    "B3": (40, [2, 3, 3, 5, 5, 6, 2], [24, 32, 48, 96, 136, 232, 384], 1536, 300, 342),
    "B4": (48, [2, 4, 4, 6, 6, 8, 2], [24, 32, 56, 112, 160, 272, 448], 1792, 380, 434),
    "B5": (48, [3, 5, 5, 7, 7, 9, 3], [24, 40, 64, 128, 176, 304, 512], 2048, 456, 522),
}
_RESNET_DEPTHS = {"50": [3, 4, 6, 3], "101": [3, 4, 23, 3], "152": [3, 8, 36, 3]}


def _build_zoo() -> dict[str, Spec]:
    zoo: dict[str, Spec] = {}
    for kind, table, se_r in (("X", _REGNETX, 0.0), ("Y", _REGNETY, 0.25)):
        for size, (wa, w0, wm, d, g) in table.items():
            name = f"RegNet{kind}-{size}"
            zoo[name] = regnet_spec(name, w_a=wa, w_0=w0, w_m=wm, depth=d, group_w=g, se_r=se_r)
    for size, (wa, w0, wm, d, g, hw, r, tr) in _REGNETZ.items():
        name = f"RegNetZ-{size}"
        zoo[name] = regnet_spec(name, w_a=wa, w_0=w0, w_m=wm, depth=d, group_w=g, bot_mul=4.0,
                                se_r=0.25, block_type="res_bottleneck_linear_block", head_w=hw,
                                activation="silu", resolution=r, test_resolution=tr)
    for b, (sw, ds, ws, hw, r, tr) in _EFFNET.items():
        name = f"EfficientNet-{b}"
        zoo[name] = EffNetSpec(name=name, stem_w=sw, depths=ds, widths=ws,
                               strides=[1, 2, 2, 2, 1, 2, 1], exp_ratios=[1, 6, 6, 6, 6, 6, 6],
                               kernels=[3, 3, 5, 3, 5, 5, 3], se_r=0.25, head_w=hw,
                               resolution=r, test_resolution=tr)
    for kind, bot, gws in (("ResNet", 0.25, [64, 128, 256, 512]), ("ResNeXt", 0.5, [4, 8, 16, 32])):
        for depth, ds in _RESNET_DEPTHS.items():
            name = f"{kind}-{depth}"
            zoo[name] = AnyNetSpec(name=name, stem_type="res_stem_in", stem_w=64,
                                   block_type="res_bottleneck_block", depths=ds,
                                   widths=[256, 512, 1024, 2048], strides=[1, 2, 2, 2],
                                   bot_muls=[bot] * 4, group_widths=gws)
    return zoo


_ZOO = _build_zoo()


def _key(name: str) -> str:
    k = name.strip().lower().replace("-", "_")
    return k.replace(".0gf", "gf")


_ALIASES = {_key(n): n for n in _ZOO}
_ALIASES.update({"regnetz_005": "RegNetZ-500MF", "regnetz_040_h": "RegNetZ-4GF",
                 "regnetz_4.0gf": "RegNetZ-4GF"})


def list_models(family: str | None = None) -> list[str]:
    """Names of all zoo models (optionally those whose name starts with `family`, e.g. 'RegNetY')."""
    names = list(_ZOO)
    if family:
        names = [n for n in names if n.lower().startswith(family.lower())]
    return names


def canonical_name(name: str) -> str:
    """The zoo name for `name` or one of its aliases; ValueError with suggestions if unknown."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    if name in _ZOO:
        return name
    key = _key(name)
    if key in _ALIASES:
        return _ALIASES[key]
    close = difflib.get_close_matches(key, list(_ALIASES), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(_ALIASES[c]) for c in close)}?" if close else ""
    raise ValueError(f"Unknown model {name!r}.{hint} fastscale_jax.list_models() lists all "
                     f"{len(_ZOO)} models.")


def get_model_spec(name: str, **overrides) -> Spec:
    """The spec of a zoo model by name or alias; keyword overrides replace spec fields
    (e.g. num_classes=10, resolution=64)."""
    spec = _ZOO[canonical_name(name)]
    if overrides:
        fields = set(spec.__dataclass_fields__)
        bad = sorted(set(overrides) - fields)
        if bad:
            raise ValueError(f"unknown spec field(s) {bad} for {spec.name}; valid: {sorted(fields)}")
        spec = spec.replace(**overrides)
    return spec
