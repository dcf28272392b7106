"""Writing results safely: atomic files, strict JSON, figures, and an exclusive lock
per output directory.

Every program that writes under ``results/`` (or a run directory) goes through
these helpers, so that

- a reader, a crash or a full disk never leaves a torn or empty file: each file is
  written to a temporary name beside it, flushed, and renamed over the old one
  (``os.replace`` is atomic on POSIX filesystems); when writing fails the old file
  is still there and the temporary one is removed;
- JSON is strict (RFC 8259): NaN and infinities are written as ``null`` (a metric
  that could not be measured), never as the bare ``NaN`` Python would emit;
- two processes never write one directory at once: :class:`DirectoryLock` holds an
  OS lock (``fcntl.flock``) on ``DIR/.mecjax.lock`` for the life of the job. The
  kernel releases it when the process exits, however it exits, so a crash leaves
  no stale lock; the file keeps the last holder's pid, host, command and start
  time, which the refusal names.

Errors a user can fix are :class:`UserError`; the ``mecjax`` launcher prints them
as one line, ``mecjax COMMAND: message``, and exits with status 2.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".mecjax.lock"


class UserError(ValueError):
    """An error in what the user asked for (a flag, a path, a busy directory): printed
    as one line by the launcher, exit status 2."""


class DirectoryLockedError(UserError):
    """Another process holds the output directory."""


# ----------------------------------------------------------------- atomic files


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never
    see a torn file, and a failed write (e.g. ``ENOSPC``) leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_files_atomic(files: dict) -> None:
    """Write every ``{path: bytes}`` or none: each goes to a temporary file beside its
    target (written and flushed to disk), and only when all are staged are they renamed
    over the old files. A full disk or any error while staging removes the temporary
    files and leaves every old file as it was: a report never mixes two runs."""
    staged = []
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            staged.append((tmp, path))
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        while staged:
            os.replace(*staged[0])
            staged.pop(0)
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None (JSON ``null``), recursively
    through dicts, lists and tuples; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_strict(obj, **kw) -> str:
    """Strict JSON text of ``obj``: non-finite floats as ``null`` (see :func:`json_safe`)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def write_json_atomic(path, obj, indent: int | None = 2) -> None:
    """Strict JSON, written atomically."""
    write_text_atomic(path, dumps_strict(obj, indent=indent))


def save_figure_atomic(fig, path, **savefig_kw) -> None:
    """Render a matplotlib figure in memory, then write it atomically (a failed render
    or a full disk leaves the previous image, never a 0-byte one)."""
    buf = io.BytesIO()
    fmt = savefig_kw.pop("format", Path(path).suffix.lstrip(".") or "png")
    fig.savefig(buf, format=fmt, **savefig_kw)
    write_bytes_atomic(path, buf.getvalue())


# ----------------------------------------------------------------- locks


class DirectoryLock:
    """An exclusive, non-blocking lock on an output directory (``fcntl.flock`` on
    ``DIR/.mecjax.lock``), held from :meth:`acquire` (or ``with``) to :meth:`release`
    or process exit.

    A second holder is refused at once with :class:`DirectoryLockedError` naming the
    holder. A lock file left by a crashed process is not held by anyone (the kernel
    dropped the lock with the process) and is simply taken over.
    """

    def __init__(self, directory, command: str = "mecjax"):
        self.directory = Path(directory)
        self.command = command
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def holder(self) -> str:
        """What the lock file says about its last holder (may be stale if unlocked)."""
        try:
            info = json.loads(self.path.read_text())
            return (f"pid {info['pid']} on {info['host']} ({info['command']}, since "
                    f"{info['since']})")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self) -> "DirectoryLock":
        import fcntl

        if self._fd is not None:
            return self
        if self.directory.exists() and not self.directory.is_dir():
            raise UserError(f"{self.directory} exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryLockedError(f"{self.directory} is in use by {self.holder()}; wait "
                                       f"for it to finish or choose another directory") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_output_dir(directory, flag: str) -> Path:
    """``directory`` as a Path; a :class:`UserError` naming ``flag`` when it, or a folder
    above it, exists but is not a directory (checked before anything is written)."""
    path = Path(directory)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == path else f"lies under the file {p}"
                raise UserError(f"{flag} {path} {what}, not a directory")
            break
    return path


def lock_output_dir(directory, command: str, flag: str) -> DirectoryLock:
    """Acquire (creating the directory) the exclusive lock of an output directory for
    the whole job; a second writer, or a path that cannot be a directory, is a one-line
    :class:`UserError`. Release it with ``.release()`` or use it as a context manager."""
    path = check_output_dir(directory, flag)
    try:
        return DirectoryLock(path, command).acquire()
    except OSError as err:    # e.g. no permission to create it
        raise UserError(f"{flag} {path}: {err.strerror or err}") from None


__all__ = ["check_output_dir", "lock_output_dir", "write_files_atomic", "DirectoryLock", "DirectoryLockedError", "UserError", "dumps_strict", "json_safe",
           "save_figure_atomic", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]
