"""fastscale_jax command line: one experiment config, one mode. The same code runs as

    fastscale --config regnetz_dWr:demo --workdir runs/demo         # installed console command
    python -m fastscale_jax --config regnetz_dWr:demo --workdir runs/demo
    python launch.py --config configs/regnetz_dWr.py:demo --workdir runs/demo   # in a clone

    fastscale --config regnety:800MF --mode complexity
    fastscale --config configs/alpha_sweep.py --mode benchmark --workdir runs/sweep \\
        --config.timing.batch_size=8 --config.model.resolution=64
    fastscale --config regnetz_dWr:demo --mode config          # print the resolved config

--config takes a file (FILE.py[:arg]) or a packaged config's name (NAME[:arg], from any
directory; fastscale_jax.configs.names() lists them). Any config field can be overridden with
--config.<key>=<value> (--config.<key>=None unsets it); --mode config prints every key.

Errors: a problem the user can fix (fastscale_jax.errors.UserError) prints one `error:` line
and exits with status 2; anything else is a bug: its traceback is printed, then one line
saying so, exit status 1. Exit status 3: stopped by SIGTERM / Ctrl-C with a checkpoint saved
(rerun the same command to resume; see the README, "Preemption").
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from fastscale_jax.errors import UserError
from fastscale_jax.main import MODES

BUG_LINE = ("fastscale_jax: the error above is a bug, not a problem with your settings; please "
            "report it with the traceback and the command that gave it")
EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 3  # fastscale_jax.train.preemption: stopped, checkpoint saved

config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a file FILE.py[:arg] or a packaged config NAME[:arg]; "
    "override any key with --config.<key>=<value> (=None unsets it); --mode config prints them.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, tables and plots.")
flags.DEFINE_enum("mode", "train", list(MODES), "What to run.")
flags.mark_flags_as_required(["config"])


def _fail(msg: str):
    print(f"error: {msg}\n  ({_prog()} --helpshort lists the flags)", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _prog() -> str:
    name = os.path.basename(sys.argv[0] or "fastscale")
    return f"python {name}" if name.endswith(".py") else name if name != "__main__.py" else \
        "python -m fastscale_jax"


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


# keys that moved (2026-12: one sweep grammar, config.family, for benchmarks and studies)
MOVED = {**{f"study.{k}": f"family.{k}" for k in ("base", "base_kind", "base_factor", "kinds",
                                                   "alphas", "factors", "flops")},
         "family.base_resolution": "model.resolution (in a sweep, model.* describe the base)"}


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
                full = ".".join(parts)
                if full in MOVED:
                    return f"config key {full!r} is now {MOVED[full]}"
                folded = {k.lower(): k for k in keys}
                close = ([folded[part.lower()]] if part.lower() in folded else
                         difflib.get_close_matches(part, keys, n=3))
                hint = (f" Did you mean {' or '.join(repr('.'.join([*parts[:depth], c])) for c in close)}?"
                        if close else f" Keys here: {', '.join(map(str, keys))}." if keys else "")
                return f"unknown config key {path!r}.{hint}"
            node = node[part]
    return None


def _unset_nones(argv):
    """--config.key=None: unset the key (ml_collections would parse 'None' as the key's type)."""
    keep, unset = [], []
    for a in argv:
        if a.startswith("--config.") and "=" in a and a.split("=", 1)[1] in ("None", "none"):
            unset.append(a[len("--config."):].split("=", 1)[0])
        else:
            keep.append(a)
    return keep, unset


def _apply_unsets(config, unset):
    for key in unset:
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        with config.unlocked():
            node[leaf] = None


def parse_flags(argv):
    """absl flag parsing with one-line errors: a missing or broken config file, an unknown
    --config.key (with a did-you-mean), a bad value. --help exits 0."""
    argv, unset = _unset_nones(argv)
    try:
        argv = _resolve_config_arg(argv)
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # config files load lazily: surface their errors here
        for key in unset:  # --config.key=None for a key the config lacks
            if _unknown_key(argv + [f"--config.{key}=0"]):
                _fail(_unknown_key(argv + [f"--config.{key}=0"]))
        _apply_unsets(flags.FLAGS.config, unset)
        return rest
    except SystemExit as e:  # absl's --help / --helpshort / --helpfull exit with status 1
        sys.exit(0 if e.code == 1 and any(a.startswith(("--help", "-h", "-?")) for a in argv)
                 else e.code)
    except (KeyError, AttributeError):  # unknown --config.<key> (top-level or nested)
        msg = _unknown_key(argv)
        if msg is None:
            raise
        _fail(msg)
    except UserError as e:
        _fail(str(e))
    except (flags.Error, OSError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        msg = (" ".join(lines[-2:]) if lines and lines[-1].startswith("[Errno") else
               (lines[-1] if lines else repr(e)))
        _fail(re.sub(r"^[\w.]+(Error|Exception): ", "", msg))  # the message, not the class


def report(fn, *args, **kwargs):
    """fn(*args, **kwargs), with a UserError printed as one `error:` line (returns None then);
    anything else propagates with its traceback. The notebooks' helper."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from fastscale_jax import main as fs_main
    from fastscale_jax import memory

    if not flags.FLAGS["verbosity"].present:  # libraries' INFO lines (JAX's backend probe
        logging.set_verbosity(logging.WARNING)  # for a TPU, orbax's saves, ...) say nothing actionable
        # TensorFlow (the input pipeline) prints its 'oneDNN custom operations are on' and CPU
        # feature lines at import unless these are set; its oneDNN ops are not on the input
        # pipeline's path (the demo's per-step losses are bit-identical either way).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    config, mode = flags.FLAGS.config, flags.FLAGS.mode
    try:
        if mode not in ("complexity", "config"):
            # Before anything starts JAX: allocator settings only reach threads that have not
            # yet allocated (config.host_malloc; fastscale_jax/cpu/hostmem.py).
            print(memory.tune_host_malloc(config, mode), flush=True)
        result = fs_main.run(config, flags.FLAGS.workdir, mode)
    except UserError as e:  # a problem the user can fix: one line
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Exception:  # noqa: BLE001 - a bug: its traceback, then one line saying so
        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr)
        sys.exit(EXIT_BUG)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a training loop
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(result, dict) and result.get("interrupted"):
        sys.exit(EXIT_INTERRUPTED)  # unfinished: a scheduler requeues, a rerun resumes


def _help_lists_our_flags() -> None:
    """absl's --help / --helpshort show the main module's docstring and the flags defined *in*
    it; ours live here, so register them as key flags of whatever script runs (the console
    script, `python -m fastscale_jax` or launch.py), and give it this module's usage text when
    it has none of its own."""
    main_module = sys.modules.get("__main__")
    if main_module is not None and not (main_module.__doc__ or "").strip():
        main_module.__doc__ = __doc__
    for name in ("config", "workdir", "mode"):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def run():
    """The console command `fastscale` (and `python -m fastscale_jax`, `launch.py`)."""
    _help_lists_our_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
