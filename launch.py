"""fastscale_jax command line: one experiment config, one mode.

    python launch.py --config configs/regnetz_dWr.py:demo --workdir /tmp/demo
    python launch.py --config configs/regnety.py:800MF --mode complexity
    python launch.py --config configs/alpha_sweep.py --mode benchmark --workdir /tmp/sweep \
        --config.timing.batch_size=8 --config.model.resolution=64

Modes: train (default; resumes from --workdir), eval, complexity, benchmark.
Any config field can be overridden with --config.<key>=<value>.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file, optionally with :arg.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, tables and plots.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "complexity", "benchmark"], "What to run.")
flags.mark_flags_as_required(["config"])


def _fail(msg: str):
    print(f"error: {msg}\n  (python launch.py --helpshort lists the flags)", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    """absl flag parsing with one-line errors: a missing or broken config file, an unknown
    --config.key (with ml_collections' did-you-mean), a bad value."""
    try:
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # config files load lazily: surface their errors here
        return rest
    except (KeyError, AttributeError) as e:  # unknown --config.<key> (top-level or nested)
        msg = str(e.args[0] if e.args else e)
        key, _, hint = msg.replace("\\n", "\n").replace("\\'", "'").partition("\n")
        _fail(f"unknown config key '{key.strip(chr(39) + ' ')}'. {hint.strip().rstrip(chr(39))}".strip())
    except (flags.Error, OSError, ValueError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        _fail(" ".join(lines[-2:]) if lines and lines[-1].startswith("[Errno") else
              (lines[-1] if lines else repr(e)))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from fastscale_jax import main as fs_main

    config, mode = flags.FLAGS.config, flags.FLAGS.mode
    try:
        if mode != "complexity":
            # Before anything starts JAX: allocator settings only reach threads that have not
            # yet allocated (config.host_malloc; fastscale_jax/hostmem.py).
            print(fs_main.tune_host_malloc(config, mode), flush=True)
        fs_main.run(config, flags.FLAGS.workdir, mode)
    except (ValueError, FileNotFoundError) as e:  # user errors: a message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
