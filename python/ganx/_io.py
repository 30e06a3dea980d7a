"""Atomic file replacement: the one way ganx writes a file that a reader must never see torn
(checkpoints, the run folder's config.yaml / metrics.json / log rewrite / PNGs, the metrics'
classifier cache). It depends on nothing of ganx, so every layer may use it.

A write goes to a temporary file in the destination's folder (``.ganx-tmp-PID-NAME.XXXX``), is flushed and
fsynced, then renamed onto ``path`` with ``os.replace`` and the folder is fsynced: a crash at any
point leaves either the old file or the new one at ``path``, and a symbolic link planted under that
name is replaced, never written through. A failed write removes its temporary file.

The steps are separate functions (``_write_temp``, ``_keep_previous``, ``_commit``) so that a test
can stop a process between them (tests/faulty_ganx.py); nothing here reads the environment.
"""
from __future__ import annotations

import os
import stat
import tempfile
from typing import Any, BinaryIO, Callable, Optional, Union

import torch

__all__ = ["atomic_write", "atomic_save", "replace_atomically", "fsync_dir", "temp_prefix", "temp_pid"]


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (a no-op where the OS or filesystem cannot)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _umask() -> int:
    """The process's umask: from /proc (Linux >= 4.7), else set and restored at once (the only
    portable way to read it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


TEMP_PREFIX = ".ganx-tmp-"


def temp_prefix(name: str, pid: Optional[int] = None) -> str:
    """The prefix of ganx's temporary files for ``name``: ``.ganx-tmp-PID-NAME.``; a stale one
    (its PID no longer runs) is removed by ganx.train.rundir.clean_stale_temporaries, and no
    user file is mistaken for one."""
    return f"{TEMP_PREFIX}{os.getpid() if pid is None else pid}-{name}."


def temp_pid(name: str) -> Optional[int]:
    """The PID in a ganx temporary file's name; None when ``name`` is not one."""
    if not name.startswith(TEMP_PREFIX):
        return None
    pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() and "-" in name[len(TEMP_PREFIX):] else None


def _write_temp(path: str, write: Callable[[BinaryIO], Any]) -> str:
    """``write(f)`` into a new temporary file next to ``path``, flushed and fsynced; its name.
    On any failure the temporary file is removed and the error propagates. The file's mode is
    0666 less the umask, like any file the user creates (mkstemp's own is 0600)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(os.path.basename(path)), dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError:
        pass
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _keep_previous(path: str, previous: Optional[str]) -> None:
    """Before ``path`` is replaced: keep the file it holds now as ``previous`` (a name in the same
    folder). A hard link, so ``path`` stays in place the whole time; on a filesystem without hard
    links there is no fallback copy this time."""
    if not previous or not _regular_file(path):
        return  # nothing, a folder, or a symbolic link (never linked through: its target may lie anywhere)
    folder = os.path.dirname(os.path.abspath(path))
    prev = os.path.join(folder, previous)
    ptmp = os.path.join(folder, temp_prefix(previous) + "link")
    try:
        if os.path.lexists(ptmp):
            os.unlink(ptmp)
        os.link(path, ptmp, follow_symlinks=False)
        os.replace(ptmp, prev)
    except OSError:
        _unlink_quietly(ptmp)


def _regular_file(path: str) -> bool:
    """Whether ``path`` itself (not what a link at it points to) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _commit(tmp: str, path: str) -> None:
    os.replace(tmp, path)  # replaces a link named `path`, never writes through it


def replace_atomically(path, write: Callable[[BinaryIO], Any], previous: Optional[str] = None) -> None:
    """Replace ``path`` by what ``write(f)`` writes into a binary file (see the module's doc);
    with ``previous``, the file being replaced is kept under that name in the same folder."""
    path = os.fspath(path)
    try:
        tmp = _write_temp(path, write)
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, f"could not write {path!r}: {e.strerror or e}") from e  # name the file, not its temporary
    try:
        _keep_previous(path, previous)
        _commit(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write(path, data: Union[bytes, str]) -> None:
    """Replace ``path`` with ``data`` (a str is written as UTF-8)."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    replace_atomically(path, lambda f: f.write(blob))


def atomic_save(obj: Any, path, previous: Optional[str] = None) -> None:
    """``torch.save(obj)`` onto ``path`` atomically (its folder is created if missing); with
    ``previous``, the file being replaced is kept under that name."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    replace_atomically(path, lambda f: torch.save(obj, f), previous)
