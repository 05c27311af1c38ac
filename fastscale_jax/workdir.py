"""The run's workdir: checks before any work, and a lock so that one run uses it at a time.

    from fastscale_jax import workdir
    workdir.prepare(path, create=True)     # train: create it; fail at once if it cannot be used
    with workdir.lock(path):               # process 0 of a training run
        ...

`prepare` raises one clear error when the path is a file, does not exist (eval, create=False)
or cannot be written (read-only file system, permissions), so nothing fails after the work.

The lock is WORKDIR/.lock, a JSON record {pid, host, start, started} held with flock(2) by
the training run's process 0 and removed when it ends. A second run on the workdir fails at once naming the holder.
A lock left by a run that died without releasing it (kill -9, a crashed host) is stale and is
taken over with a message: on the same host when its pid is no longer running (or now belongs
to another process, judged by the process start time); from another host when its heartbeat
(the holder rewrites the file's mtime every HEARTBEAT_S) is older than STALE_S.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time

from fastscale_jax.errors import ConfigError, MissingPathError, WorkdirError

LOCK_NAME = ".lock"
HEARTBEAT_S = 10.0
STALE_S = 60.0


class WorkdirBusyError(WorkdirError):
    """Another run holds the workdir."""


def prepare(path: str, *, create: bool = True) -> str:
    """The absolute workdir after checking it can be used; ValueError / FileNotFoundError."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--workdir {path} is a file, not a directory; give a directory")
    if not os.path.isdir(path):
        if not create:
            raise MissingPathError(
                f"--workdir {path} does not exist; point --workdir at a training run's folder "
                "(the one with checkpoints/)")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise WorkdirError(f"cannot create --workdir {path} ({e.strerror}); choose a folder "
                             "you can write to") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise WorkdirError(f"--workdir {path} is not writable ({e.strerror}); results and "
                         "checkpoints go there: choose a writable folder") from None
    return path


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_time(pid)
    return start is None or now is None or now == start


def _read(fd) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        rec = json.loads(raw.decode() or "{}")
    except (UnicodeDecodeError, ValueError):
        rec = {}
    return rec if isinstance(rec, dict) else {}


def _who(rec: dict) -> str:
    return (f"pid {rec.get('pid')} on host {rec.get('host')} (started "
            f"{rec.get('started', '?')})")


def _stale_reason(rec: dict, path: str) -> str | None:
    """Why a lock record left in the file is stale, or None if its holder may be running."""
    if not rec.get("pid"):
        return "no holder recorded"
    if rec.get("host") == socket.gethostname():
        if not _alive(int(rec["pid"]), rec.get("start")):
            return "that process is no longer running"
        return None
    age = time.time() - os.path.getmtime(path)
    return f"no heartbeat for {age:.0f} s" if age > STALE_S else None


def _flock(fd, *, exclusive: bool):
    """flock(2) without waiting (OSError if another open file holds it); on systems without
    fcntl (Windows) the pid / host record alone guards the workdir."""
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(fd, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_UN)


class _Lock:
    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
        self.fd = None
        self._stop = threading.Event()
        self._thread = None

    def _open_locked(self):
        """The lock file's fd, flock'ed; reopened when the file was replaced meanwhile (a
        releasing run unlinks it: a lock on the unlinked file would guard nothing)."""
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                _flock(fd, exclusive=True)
            except OSError:
                rec = _read(fd)
                os.close(fd)
                raise WorkdirBusyError(
                    f"--workdir {os.path.dirname(self.path)} is in use by another run: "
                    f"{_who(rec)}; wait for it to finish, stop it, or use another "
                    "--workdir") from None
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)
        raise WorkdirBusyError(f"--workdir {os.path.dirname(self.path)}: its lock file keeps "
                               "changing (runs starting and stopping at once?); try again")

    def acquire(self):
        fd = self._open_locked()
        rec = _read(fd)
        if rec.get("pid") and rec.get("pid") != os.getpid():
            why = _stale_reason(rec, self.path)
            if why is None:
                os.close(fd)
                raise WorkdirBusyError(
                    f"--workdir {os.path.dirname(self.path)} is locked by {_who(rec)}, which "
                    f"may still be running; stop it or use another --workdir (if it is gone, "
                    f"delete {self.path})")
            print(f"workdir lock: taking over the stale lock of {_who(rec)} ({why})",
                  flush=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "start": _start_time(os.getpid()),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name="workdir-lock-heartbeat")
        self._thread.start()
        return self

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self):
        if self.fd is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # an empty record: nobody holds it
            os.unlink(self.path)      # a finished workdir keeps no .lock (still held: no race)
        _flock(self.fd, exclusive=False)
        os.close(self.fd)
        self.fd = None


def acquire(workdir: str) -> _Lock:
    """Take the workdir lock (WorkdirBusyError if a live run holds it); `.release()` it."""
    return _Lock(workdir).acquire()


@contextlib.contextmanager
def lock(workdir: str, *, enabled: bool = True):
    """Hold the workdir lock for the block (a no-op when not enabled, e.g. processes > 0)."""
    held = acquire(workdir) if enabled else None
    try:
        yield held
    finally:
        if held is not None:
            held.release()


# ------------------------------------------------------------------------------------------
# append-only records (a benchmark or budget sweep saving as it goes)

def json_safe(o):
    """`o` with non-finite floats as None, numpy scalars as Python ones, tuples as lists."""
    import math

    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):  # numpy scalars
        return json_safe(o.item())
    return o


def append_record(path: str, entry: dict) -> None:
    """One JSON line appended to `path`, flushed to disk before returning (a run killed right
    after loses nothing it was told was saved)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(json_safe(entry)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(path: str, log=print) -> list[dict]:
    """The records of an append-only JSONL file ([] if it does not exist). A line that does not
    parse (a write cut short by a kill) is dropped with one warning naming the file, so the
    work it stood for is simply done again."""
    if not os.path.exists(path):
        return []
    out, torn = [], []
    with open(path) as f:
        for n, line in enumerate(f.read().splitlines(), 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                torn.append(n)
                continue
            if isinstance(rec, dict):
                out.append(rec)
            else:
                torn.append(n)
    if torn:
        log(f"warning: dropped {len(torn)} unreadable line(s) of {path} (line(s) "
            f"{', '.join(map(str, torn[:5]))}: a write cut short?); that work is done again")
    return out
