"""The run folder as a unit that one process owns: an exclusive lock, writes that never follow
a symbolic link out of the folder, atomic replacement of every file ganx rewrites, and the
clean-up of temporary files that an interrupted save left behind.

Guarantees (POSIX; see the README's "Reliability" section for what is not covered):

* Every file ganx *replaces* (config.yaml, metrics.json, the log after a resume, checkpoints,
  PNGs) is written to a temporary file in the same folder, fsynced and renamed onto its name:
  a crash leaves the old file or the new one, and a symlink planted under that name is
  replaced, never followed.
* The one file ganx *appends* to (log.jsonl) is opened with ``O_NOFOLLOW``.
* The folders ganx writes into (checkpoints/, samples/, tensorboard/) must resolve inside the
  run folder; a link that leads out of it is refused with a message.
* ``.ganx.lock`` is held with ``flock`` for the whole run: the kernel drops it when the process
  dies (even by kill -9), so a stale lock of a dead process never blocks the next run.
"""
from __future__ import annotations

import datetime
import glob
import os
import socket
import sys
import tempfile
from typing import Optional

from ganx import _io
from ganx.train.config import ConfigError

__all__ = ["RunFolderError", "RunLock", "check_run_dir", "inside", "safe_subdir", "atomic_write",
           "append_line", "clean_stale_temporaries", "check_writable", "LOCK_NAME"]

LOCK_NAME = ".ganx.lock"


class RunFolderError(ConfigError):
    """The run folder cannot be used as asked (a file, read-only, in use by another process, a
    link leading out of it); the message names the path and what to do."""


def _make_folder(path: str, what: str, hint: str = "") -> str:
    """``path`` as a folder (created if missing); a one-line error naming ``what`` it is when it
    is something else or cannot be created."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise RunFolderError(f"{what}{path!r} exists and is not a folder{hint}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create {what}{path!r}: {e.strerror or e}") from None
    return path


def check_run_dir(path) -> str:
    """Create the run folder if needed; a one-line error when it is a file or cannot be created."""
    return _make_folder(os.fspath(path), "run folder ", " (give --out a folder path)")


def inside(root, path) -> bool:
    """Whether ``path`` resolves (following every link) to a place inside ``root``."""
    r = os.path.realpath(root)
    p = os.path.realpath(path)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _refuse_link(root: str, path: str) -> None:
    if not inside(root, path):
        raise RunFolderError(f"{path!r} is a symbolic link (or lies under one) that leads out of the run folder "
                             f"(to {os.path.realpath(path)!r}); ganx does not write through it. Remove the link")


def safe_subdir(root, name: str) -> str:
    """``root/name`` as a folder inside the run folder (created if missing); refused if a link
    takes it elsewhere or it is not a folder."""
    root = os.fspath(root)
    path = os.path.join(root, name)
    if os.path.islink(path) and not os.path.exists(path):
        raise RunFolderError(f"{path!r} is a dangling or looping symbolic link; remove it")
    _refuse_link(root, path)
    return _make_folder(path, "")


def check_writable(folder, names=()) -> str:
    """Before any work that must end in a save: ``folder`` accepts a new file (one is created and
    removed), and each of ``names`` in it is absent or a file (a folder under a checkpoint's name
    would make the first save fail, losing the work done since the start). A one-line error."""
    folder = os.fspath(folder)
    for name in names:
        p = os.path.join(folder, name)
        if os.path.isdir(p):
            raise RunFolderError(f"{p!r} is a folder; ganx saves its checkpoint under that name. Move it away")
    try:
        fd, probe = tempfile.mkstemp(prefix=_io.temp_prefix("probe"), dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunFolderError(f"cannot write into {folder!r} ({e.strerror or e}); the checkpoints could not be "
                             f"saved. Make it writable, or give another --out") from None
    return folder


def atomic_write(path, data, root=None) -> None:
    """Replace ``path`` with ``data`` (bytes or str) atomically (ganx._io.atomic_write). With
    ``root``, the folder must resolve inside it."""
    path = os.fspath(path)
    if root is not None:
        _refuse_link(os.fspath(root), os.path.dirname(os.path.abspath(path)))
    _io.atomic_write(path, data)


def append_line(path, line: str) -> None:
    """Append one line to ``path`` without following a symbolic link at ``path``."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.fspath(path), flags, 0o666)  # less the umask, like any file
    except OSError:
        if os.path.islink(path):
            raise RunFolderError(f"{os.fspath(path)!r} is a symbolic link; ganx does not append through it. "
                                 f"Remove the link") from None
        raise
    line = line if line.endswith("\n") else line + "\n"
    with os.fdopen(fd, "a") as f:
        f.write(line)


def clean_stale_temporaries(run_dir) -> int:
    """Remove the temporary files that interrupted saves left in the run folder, its
    checkpoints/ and samples/: only ganx's own (``.ganx-tmp-PID-...``, ganx._io.temp_prefix) whose
    process no longer runs (or is this one); a user's file is never matched. Only call this while
    holding the run lock. Returns how many."""
    run_dir = os.fspath(run_dir)
    n = 0
    for folder in (run_dir, os.path.join(run_dir, "checkpoints"), os.path.join(run_dir, "samples")):
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        for f in glob.glob(os.path.join(glob.escape(folder), _io.TEMP_PREFIX + "*")):
            pid = _io.temp_pid(os.path.basename(f))
            if pid is None or (pid != os.getpid() and _pid_alive(pid)):
                continue
            try:
                if os.path.isfile(f) or os.path.islink(f):
                    os.unlink(f)
                    n += 1
            except OSError:
                pass
    return n


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


class RunLock:
    """Exclusive lock of a run folder (``.ganx.lock``, held with ``flock``). A second writer gets
    a :class:`RunFolderError` naming the process that holds it. Re-entrant within one object."""

    def __init__(self, run_dir):
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_NAME)
        self._fd: Optional[int] = None
        self.stale_note: Optional[str] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (documented)
            return self
        flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_NONBLOCK", 0))  # a FIFO planted under the name must not block the open
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as e:
            if os.path.islink(self.path):
                raise RunFolderError(f"{self.path!r} is a symbolic link; remove it") from None
            raise RunFolderError(f"cannot write into run folder {self.run_dir!r} ({e.strerror or e}); "
                                 f"is it read-only? Give --out a writable folder") from None
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunFolderError(f"{self.path!r} is not a regular file (a FIFO, a device...); ganx keeps its run "
                                 f"lock there. Remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._read(fd)
            os.close(fd)
            raise RunFolderError(f"run folder {self.run_dir!r} is in use by another ganx process"
                                 f"{' (' + holder + ')' if holder else ''}; wait for it to finish, stop it, "
                                 f"or use another --out") from None
        old = self._read(fd)
        if old:
            try:
                pid = int(old.split()[1])
            except (IndexError, ValueError):
                pid = None
            if pid is not None and pid != os.getpid() and not _pid_alive(pid):
                self.stale_note = f"the lock of a process that no longer runs ({old}) was taken over"
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{datetime.datetime.now().isoformat(timespec='seconds')}\n".encode())
        except OSError as e:  # a full disk: the lock is not taken, nothing else was written yet
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise RunFolderError(f"cannot write the run lock {self.path!r} ({e.strerror or e}); is the disk "
                                 f"full?") from None
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> str:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return os.read(fd, 200).decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass


def warn(msg: str) -> None:
    print(f"ganx: warning: {msg}", file=sys.stderr)
