"""Versions of the libraries that took part in a conversion (recorded in provenance)."""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

_LIBS = ("gmmnet", "numpy", "scikit-learn", "onnx", "onnxruntime", "pydantic")


def library_versions() -> dict[str, str]:
    """{library: version} of the libraries a conversion uses (a fresh dict: callers may add to it)."""
    return dict(_library_versions())


@lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:  # reading package metadata costs ~50 ms: once per process
    out = {}
    for name in _LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def gmmnet_version() -> str:
    """gmmnet's own version (``gmmnet.__version__``), for modules below the package root.

    Importing ``gmmnet.__version__`` from inside the package imports the root ``__init__``, which
    sits above every floor; this reads the same metadata from the ground floor.
    """
    try:
        return metadata.version("gmmnet")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0"
