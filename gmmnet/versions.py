"""Versions of the libraries that took part in a conversion (recorded in provenance)."""

from __future__ import annotations

from importlib import metadata

_LIBS = ("gmmnet", "numpy", "scikit-learn", "onnx", "onnxruntime", "pydantic")


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
