"""Small helpers shared by the io modules: file names in messages, checked stats and capped reads."""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path
from typing import Union

from ..errors import InputFileError

PathLike = Union[str, "os.PathLike[str]"]

GiB = 1 << 30


def name(path: PathLike) -> str:
    """The path as the user gave it: what every message names."""
    return os.fspath(path)


def short(text: str, limit: int = 60) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = str(text).replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def problem(exc: BaseException) -> str:
    """A short one-line description of a low-level exception."""
    msg = short(str(exc), 120)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def suffix(path: PathLike) -> str:
    return Path(name(path)).suffix.lower()


def check_readable(path: PathLike, what: str = "file") -> os.stat_result:
    """stat() a file that is about to be read; InputFileError if it is missing or not a regular file."""
    source = name(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(f"{source}: no such {what}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {source}: {exc.strerror or problem(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(f"{source} is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{source} is not a regular {what}")
    return st


def open_binary(path: PathLike):
    """``open(path, "rb")`` with a missing or unreadable file as InputFileError."""
    check_readable(path)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputFileError(f"cannot read {name(path)}: {exc.strerror or problem(exc)}") from None


def read_capped(path: PathLike, max_bytes: int, what: str, *, writable: bool = True) -> bytes | mmap.mmap:
    """The bytes of a regular file, refusing files larger than ``max_bytes`` and empty files.

    ``writable``: an anonymous memory map filled from the file, so that arrays read from it may
    be views of it and stay writable (a bytearray would be zero-filled first, which costs as
    much as the read itself); otherwise ``bytes``.
    """
    source = name(path)
    st = check_readable(path)
    if st.st_size > max_bytes:
        raise InputFileError(f"{source} is too large for a {what} ({st.st_size} bytes, limit {max_bytes})")
    if st.st_size == 0:
        raise InputFileError(f"{source} is empty")
    try:
        with open(path, "rb") as f:
            if writable:
                data = mmap.mmap(-1, st.st_size)
                n = f.readinto(data)  # BufferedReader.readinto reads until full or end of file
            else:
                data = f.read(st.st_size)
                n = len(data)
            extra = f.read(1)
    except OSError as exc:
        raise InputFileError(f"cannot read {source}: {exc.strerror or problem(exc)}") from None
    if extra or n != st.st_size:  # the file changed while we read it
        raise InputFileError(f"cannot read {source}: it changed while being read")
    return data
