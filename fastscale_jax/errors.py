"""The one error boundary: problems a user can fix, each carrying its one-line message.

    from fastscale_jax.errors import ConfigError
    raise ConfigError("train.label_smoothing=1.5 must be in [0, 1)")

The command line (`fastscale_jax.cli`, hence `launch.py`, `fastscale` and `python -m
fastscale_jax`) and the notebooks' helpers print a `UserError` as one `error: <message>` line
and exit with status 2; any other exception is a bug and keeps its traceback.

Each class also derives from the built-in exception that describes it, so Python callers can
catch what it is: a bad setting or argument is a ValueError, a missing folder a
FileNotFoundError, a diverged run a FloatingPointError, a missing optional dependency an
ImportError.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; str(error) is one line naming the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A setting, argument or spec that cannot be honoured (named, with its valid range)."""


class DataError(UserError, ValueError):
    """Input data that cannot be used: no decodable images, empty splits, bad folders."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (a config file, a workdir, a checkpoint)."""


class PathExistsError(UserError, FileExistsError):
    """An output path the user named exists already and would be overwritten."""


class WorkdirError(UserError, RuntimeError):
    """The workdir cannot be used: busy (another run holds it), unwritable, or incompatible."""


class TrainingError(UserError, RuntimeError):
    """A run stopped for a reason the user can act on (a failed checkpoint save, every member
    of a study or benchmark failed)."""


class DivergedError(UserError, FloatingPointError):
    """The training loss became NaN / inf or diverged."""


class MissingExtraError(UserError, ImportError):
    """A feature needs an optional dependency that is not installed (the message says which
    `pip install 'fastscale-jax[extra]'` brings it)."""

