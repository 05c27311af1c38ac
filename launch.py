"""fastscale_jax command line: one experiment config, one mode.

    python launch.py --config configs/regnetz_dWr.py:demo --workdir runs/demo
    python launch.py --config regnety:800MF --mode complexity      # a packaged config by name
    python launch.py --config configs/alpha_sweep.py --mode benchmark --workdir runs/sweep \
        --config.timing.batch_size=8 --config.family.base_resolution=64

Modes: train (default; resumes from --workdir), eval, complexity, benchmark, study
(a scaling study: configs/study.py).
--config takes a file (FILE.py[:arg]) or a packaged config's name (NAME[:arg], from any
directory; fastscale_jax.configs.names() lists them). Any config field can be overridden with
--config.<key>=<value>.
"""

import difflib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file, optionally with :arg.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, tables and plots.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "complexity", "benchmark", "study"],
                  "What to run.")
flags.mark_flags_as_required(["config"])


def _fail(msg: str):
    print(f"error: {msg}\n  (python launch.py --helpshort lists the flags)", file=sys.stderr)
    sys.exit(2)


def _resolve_config_arg(argv):
    """argv with --config NAME[:arg] (a packaged config) replaced by the packaged file's path."""
    from fastscale_jax import configs

    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            argv[i + 1] = configs.resolve(argv[i + 1])
        elif a.startswith("--config="):
            argv[i] = "--config=" + configs.resolve(a[len("--config="):])
    return argv


def _unknown_key(argv) -> str | None:
    """'unknown config key 'a.b'. Did you mean ...' for the first --config.a.b=... override
    whose key the config does not have (None if every key exists)."""
    from fastscale_jax import configs

    spec = next((argv[i + 1] if a == "--config" else a.split("=", 1)[1]
                 for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")), None)
    node_root = configs.load(spec) if spec else None
    for a in argv:
        if not a.startswith("--config.") or node_root is None:
            continue
        parts, node = a[len("--config."):].split("=", 1)[0].split("."), node_root
        for depth, part in enumerate(parts):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                path = ".".join(parts[:depth + 1])
                close = difflib.get_close_matches(part, keys, n=3)
                hint = (f" Did you mean {' or '.join(repr('.'.join([*parts[:depth], c])) for c in close)}?"
                        if close else f" Keys here: {', '.join(map(str, keys))}." if keys else "")
                return f"unknown config key {path!r}.{hint}"
            node = node[part]
    return None


def parse_flags(argv):
    """absl flag parsing with one-line errors: a missing or broken config file, an unknown
    --config.key (with a did-you-mean), a bad value. --help exits 0."""
    try:
        argv = _resolve_config_arg(argv)
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # config files load lazily: surface their errors here
        return rest
    except SystemExit as e:  # absl's --help / --helpshort / --helpfull exit with status 1
        sys.exit(0 if e.code == 1 and any(a.startswith(("--help", "-h", "-?")) for a in argv)
                 else e.code)
    except (KeyError, AttributeError) as e:  # unknown --config.<key> (top-level or nested)
        msg = _unknown_key(argv)
        if msg is None:
            raise
        _fail(msg)
    except (flags.Error, OSError, ValueError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        _fail(" ".join(lines[-2:]) if lines and lines[-1].startswith("[Errno") else
              (lines[-1] if lines else repr(e)))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from fastscale_jax import main as fs_main
    from fastscale_jax._extras import MissingExtra

    if not flags.FLAGS["verbosity"].present:  # libraries' INFO lines (JAX's backend probe
        logging.set_verbosity(logging.WARNING)  # for a TPU, ...) say nothing actionable
    config, mode = flags.FLAGS.config, flags.FLAGS.mode
    try:
        if mode != "complexity":
            # Before anything starts JAX: allocator settings only reach threads that have not
            # yet allocated (config.host_malloc; fastscale_jax/cpu/hostmem.py).
            print(fs_main.tune_host_malloc(config, mode), flush=True)
        fs_main.run(config, flags.FLAGS.workdir, mode)
    except (ValueError, FileNotFoundError, MissingExtra) as e:  # user errors: one line
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
