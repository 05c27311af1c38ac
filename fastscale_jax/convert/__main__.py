"""Convert a pycls / timm checkpoint into a fastscale_jax model directory.

    python -m fastscale_jax.convert --source pycls --model RegNetY-800MF RegNetY-800MF_dds_8gpu.pyth out/regnety_800mf
    python -m fastscale_jax.convert --source timm --model RegNetY-800MF regnety_008.safetensors out/regnety_008_timm

The output directory holds the Flax variables (orbax) and fastscale_meta.json (model, spec,
source, preprocessing); load it with fs.convert.load_converted(OUT_DIR).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastscale_jax.convert",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="pycls .pyth, timm/torch .pth or .safetensors file")
    p.add_argument("output", help="new directory for the converted model")
    p.add_argument("--source", required=True, choices=("pycls", "timm"),
                   help="who wrote the checkpoint (decides tensor names and input preprocessing)")
    p.add_argument("--model", required=True, help="zoo model name, e.g. RegNetY-800MF or regnety_800mf")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size if not 1000")
    p.add_argument("--key", default=None,
                   help="checkpoint entry holding the weights (default: model_state / state_dict / ...)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow arbitrary pickles in .pyth/.pth files (default: tensors and plain data only)")
    p.add_argument("--crop-ratio", type=float, default=None,
                   help="eval crop ratio to record (timm: the model's crop_pct, e.g. 0.95 for regnetz_005)")
    args = p.parse_args(argv)

    from fastscale_jax.errors import UserError

    try:
        return _convert(args)
    except UserError as e:  # a problem the user can fix: one line; anything else is a bug
        p.exit(2, f"{p.prog}: error: {e}\n")


def _convert(args) -> int:
    import fastscale_jax as fs
    from fastscale_jax import convert

    from fastscale_jax.convert.checkpoint_io import check_writable

    spec = fs.get_model_spec(args.model)
    check_writable(os.path.abspath(args.output))  # before reading or converting anything
    if args.num_classes is not None:
        spec = spec.replace(num_classes=args.num_classes)
    state_dict = convert.read_checkpoint(args.checkpoint, key=args.key, trust_pickle=args.trust_pickle)
    variables = convert.from_state_dict(state_dict, spec, args.source)
    overrides = {} if args.crop_ratio is None else {"crop_ratio": args.crop_ratio}
    prep = convert.preprocessing_for(args.source, spec, **overrides)
    out = convert.save_converted(args.output, variables, spec, source=args.source,
                                 preprocessing=prep, source_file=args.checkpoint)
    leaves = [v for c in variables.values() for v in _leaves(c)]
    n = sum(int(v.size) for v in leaves)
    print(f"converted {len(leaves)} arrays ({n:,} values) of {spec.name} from {args.source} "
          f"-> {out}\ninput: {prep['channel_order']}, mean {prep['mean']}, std {prep['std']} "
          f"(R, G, B; 0-255), crop_ratio {prep['crop_ratio']}")
    return 0


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


if __name__ == "__main__":
    sys.exit(main())
