"""ONNX ⇄ IR.

:func:`to_onnx` writes a :class:`~gmmnet.ir.Mixture` as an Abs/ReLU network with a mixture
head (the graph contract is docs/onnx-graph.md); :func:`run` scores data with onnxruntime;
:mod:`gmmnet.formats.onnx.read` reads networks back by pattern.
"""

from __future__ import annotations

from .export import OUTPUTS, float32_error_estimate, to_onnx
from .runtime import run, session

__all__ = ["OUTPUTS", "float32_error_estimate", "run", "session", "to_onnx"]
