"""Atomic output: every file gmmnet writes appears whole or not at all, and never over an input."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Any, Callable, Iterable

from ..errors import GmmnetError, OutputExistsError, OutputFileError
from ._files import PathLike, name, problem

__all__ = ["atomic_write", "same_file"]

_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):  # not Linux: ask the process (briefly changing it, under a lock)
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _same_file(a: str, b: PathLike) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except (OSError, ValueError):  # an unreadable or malformed path is not the same file
        return False


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when two paths name the same file (symlinks and ``..`` resolved, or the same inode)."""
    return _same_file(os.path.abspath(name(a)), b)


def atomic_write(path: PathLike, data: bytes | Callable[[Any], Any], *, force: bool = False,
                 inputs: Iterable[PathLike] = ()) -> None:
    """Write a file all at once or not at all.

    ``data`` is bytes, or a callable that writes to the binary file object it is given.  The
    content goes to a temp file in the target's folder, is fsynced, then renamed over the
    target; if anything fails (including the callable raising) the temp file is removed and
    the target is untouched.

    Raises
    ------
    OutputExistsError
        ``path`` is one of ``inputs`` (always), or exists and ``force`` is false.
    OutputFileError
        The folder is missing or not writable, or the write fails (e.g. disk full).
    """
    target = os.path.abspath(name(path))
    shown = name(path)
    for inp in inputs:
        if _same_file(target, inp):
            raise OutputExistsError(f"refusing to write {shown}: it is the input file {name(inp)}")
    if os.path.isdir(target):
        raise OutputExistsError(f"refusing to write {shown}: it is a folder")
    if os.path.lexists(target) and not force:
        raise OutputExistsError(f"{shown} exists; use --force to overwrite it")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise OutputFileError(f"cannot write {shown}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    except OSError as exc:
        raise OutputFileError(f"cannot write {shown}: {exc.strerror or problem(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        if force:
            os.replace(tmp, target)
        else:
            try:  # no-clobber: fails if someone created the target meanwhile
                os.link(tmp, target)
            except FileExistsError:
                raise OutputExistsError(f"{shown} exists; use --force to overwrite it") from None
            except OSError:  # filesystems without hard links
                if os.path.lexists(target):
                    raise OutputExistsError(f"{shown} exists; use --force to overwrite it") from None
                os.replace(tmp, target)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, GmmnetError):
            raise OutputFileError(f"cannot write {shown}: {exc.strerror or problem(exc)}") from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
