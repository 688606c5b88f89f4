"""Atomic file writes: write to a temporary file in the same folder, check it, then rename.

A file appears under its final name only complete: the bytes are written with ``os.write`` in a loop (a
short write continues, a write that makes no progress is a full disk), the size on disk is compared with
the size meant before the rename, and any failure removes the temporary file and raises ``OSError``
naming the final path. A process killed mid-write leaves only a hidden temporary file
``.<name>.<pid>-<8 random characters>.tmp<suffix>``; :func:`remove_stale_temps` clears those of runs that
are over (the writer's process is gone, or, for names without a pid, the file predates this run).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

# what _temp_file makes (earlier versions wrote no pid)
TEMP_NAME = re.compile(r"^\..+\.(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def _temp_file(path: Path) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp" + path.suffix, dir=path.parent)
    return fd, Path(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:       # another user's live process
        return True
    return True


def _publish(tmp: Path, path: Path) -> None:
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer that wants a file name (``torch.save``); on
    success it replaces ``path`` atomically, on any error it is removed."""
    path = Path(path)
    fd, tmp = _temp_file(path)
    os.close(fd)
    try:
        yield tmp
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_all(fd: int, data: bytes, path: Path) -> None:
    view, done = memoryview(data), 0
    while done < len(data):
        n = os.write(fd, view[done:])
        if n <= 0:
            raise OSError(errno.ENOSPC, f"no space left: wrote {done} of {len(data)} bytes", str(path))
        done += n


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; ``OSError`` (naming ``path``) when it cannot be written whole."""
    path = Path(path)
    fd, tmp = _temp_file(path)
    try:
        try:
            _write_all(fd, data, path)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size != len(data):
            raise OSError(errno.EIO, f"{size} of {len(data)} bytes reached the disk", str(path))
        _publish(tmp, path)
    except OSError as e:
        if e.filename is None or Path(e.filename) == tmp:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _stale(path: Path, name: str, older_than: float) -> bool:
    m = TEMP_NAME.match(name)
    if m is None or not path.is_file() or path.is_symlink() or path.stat().st_mtime >= older_than:
        return False
    return m["pid"] is None or (int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])))


def remove_stale_temps(folder: str | os.PathLike, older_than: float, recursive: bool = True) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes under ``folder``: last modified before
    ``older_than`` (a ``time.time()`` value: the start of this run) and written by a process that is gone, so
    a concurrent run's temporary files are left alone; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    walk = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    removed = []
    for parent, _, names in walk:
        for name in names:
            p = Path(parent) / name
            try:
                if _stale(p, name, older_than):
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:   # renamed or removed by its writer meanwhile
                continue
    return removed
