"""Memory limits: estimate a size before allocating it, and refuse above the limit.

A small file can declare a huge model (a spherical mixture over 30,000 features, an ONNX input
of width 20,000).  Code that builds anything whose size scales with d², K·d² or rows × columns
calls :func:`check_bytes` with its estimate first, so that gmmnet refuses with a clear error
instead of allocating gigabytes.  The limit is ``GMMNET_MAX_MEMORY`` (bytes, or with a
K/M/G/T suffix), :func:`set_max_memory`, or the CLI's ``--max-memory``; default 4 GiB.

Threads are a resource too: :func:`serial_blas` runs BLAS single-threaded where per-component
work would only make its threads contend.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from typing import Iterator

from .errors import ResourceLimitError

DEFAULT_MAX_MEMORY = 4 * 2**30
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_override: int | None = None


def parse_size(text: str) -> int:
    """'512M', '4G', '1.5G' or a number of bytes → bytes (ValueError if malformed)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)i?B?\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r} (use bytes or a K/M/G/T suffix, e.g. 8G)")
    n = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not n > 0:
        raise ValueError(f"size must be > 0, got {text!r}")
    return int(n)


def max_memory() -> int:
    """The current limit in bytes."""
    if _override is not None:
        return _override
    env = os.environ.get("GMMNET_MAX_MEMORY")
    if env:
        try:
            return parse_size(env)
        except ValueError as exc:
            from .errors import UsageError

            raise UsageError(f"GMMNET_MAX_MEMORY: {exc}") from None
    return DEFAULT_MAX_MEMORY


def set_max_memory(n_bytes: int | str | None) -> None:
    """Set the limit for this process (None: back to the environment / default)."""
    global _override
    _override = None if n_bytes is None else (parse_size(n_bytes) if isinstance(n_bytes, str) else int(n_bytes))


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_bytes(n_bytes: float, what: str, source: str | None = None) -> None:
    """ResourceLimitError if ``n_bytes`` (an estimate made before allocating) exceeds the limit."""
    limit = max_memory()
    if n_bytes > limit:
        where = f"{source}: " if source else ""
        raise ResourceLimitError(
            f"{where}{what} would need {format_bytes(n_bytes)}, above the memory limit of {format_bytes(limit)} "
            f"(raise it with --max-memory or GMMNET_MAX_MEMORY)"
        )


_blas_controller = None
_blas_sees_scipy = False


@contextmanager
def serial_blas() -> Iterator[None]:
    """Run BLAS and LAPACK single-threaded inside the block.

    Per-component work (K decompositions or products of d×d matrices) gains nothing from BLAS
    threads, and on a loaded machine OpenBLAS's spinning threads make it 10–25× slower.

    The controller limits the BLAS libraries loaded when it is made: it is made again once
    scipy.linalg (which brings its own OpenBLAS) has been imported.  Code that calls scipy's
    LAPACK inside the block imports scipy.linalg before entering it (importing it costs ~0.25 s,
    which a conversion that never needs it does not pay).
    """
    global _blas_controller, _blas_sees_scipy
    scipy_loaded = "scipy.linalg" in sys.modules
    if _blas_controller is None or (scipy_loaded and not _blas_sees_scipy):
        from threadpoolctl import ThreadpoolController

        _blas_controller, _blas_sees_scipy = ThreadpoolController(), scipy_loaded
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield
