"""The one atomic file writer of the package (library and experiments alike).

A file written here holds either its old content or all of the new content under its final name, never a
half-written mix: the data go to a temporary file beside the target, are flushed to disk, and the temporary file
is renamed over the target (``os.replace``, atomic on POSIX and Windows). A crash mid-write leaves the old file
and, at worst, a hidden ``.<name>.<random>.tmp`` beside it.

The file gets the ordinary mode of a new file (0666 minus the umask: 0644 under the usual umask 022), not the
0600 that ``tempfile.mkstemp`` would give, so outputs are as readable as any other file the user writes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator, Union

try:  # POSIX; elsewhere the locks below are no-ops (one process per folder there)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", *, encoding: str = "utf-8", newline: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing (``"w"`` text or ``"wb"`` binary) so that it is replaced atomically on a clean
    exit of the ``with`` block; an exception inside the block leaves the old file untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=encoding if text else None, newline=newline if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` so that ``path`` holds either its old content or all of ``text``.
    Newlines are written as given (no translation), as the csv module expects."""
    with atomic_open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def _create_temporary(path: Path) -> tuple[int, str]:
    # os.open with 0o666 lets the kernel apply the umask, like any new file; O_EXCL makes the name ours alone.
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable (a power cut after the replace keeps the new file). Not possible on
    # every platform (Windows cannot open a folder), where the rename is still atomic.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text"]


@contextlib.contextmanager
def file_lock(path: PathLike) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block; the OS releases it when its
    holder dies, so a killed process never leaves a folder locked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
