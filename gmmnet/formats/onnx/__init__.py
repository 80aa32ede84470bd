"""ONNX ⇄ IR.

:func:`to_onnx` writes a :class:`~gmmnet.ir.Mixture` as an Abs/ReLU network with a mixture
head (the graph contract is docs/onnx-graph.md) and a :class:`~gmmnet.ir.Hierarchy` as a deep
network (:mod:`gmmnet.formats.onnx.deep`, docs/hierarchy.md); :func:`run` scores data with
onnxruntime; :func:`from_onnx` (:mod:`gmmnet.formats.onnx.read`) reads networks back by pattern,
:mod:`gmmnet.formats.onnx.read_deep` deep ones as hierarchies.
"""

from __future__ import annotations

from . import export as _export
from .classifier import classifier_to_onnx
from .export import COMPUTES, OUTPUTS, float32_error_estimate, predicted_errors
from .read import from_onnx
from .runtime import run, session

__all__ = ["COMPUTES", "OUTPUTS", "classifier_to_onnx", "float32_error_estimate", "from_onnx", "predicted_errors",
           "run", "session", "to_onnx"]

_DEEP_ONLY = ("delta", "intensity", "intensity_c")


def to_onnx(model, **options):
    """IR → ``onnx.ModelProto``: a Mixture goes to :func:`gmmnet.formats.onnx.export.to_onnx`, a
    Hierarchy (or a fitted HierarchicalGaussianMixture) to :func:`gmmnet.formats.onnx.deep.to_onnx`.

    A Mixture also takes the deep exporter's options (``activation="shifted_relu"``, ``delta``,
    ``intensity``, per-level outputs), and is then written by it as a one-level network.  So is a
    rank-truncated Mixture (a component with ``residual_variance`` and r < d directions) with an
    ``abs`` or ``relu`` activation: K·r neurons plus the residual term ‖x − μ_k‖²/σ², instead of
    the single-mixture exporter's completion to d neurons per component (same scores, fewer
    neurons; ``layout="quadratic"`` keeps the single-mixture exporter).  Such a graph reads back
    as the truncated Mixture (:func:`from_onnx`, ``gmmnet to-gmm``).
    """
    from ...ir import Hierarchy, Mixture

    if isinstance(model, Mixture):
        outs = options.get("outputs", ())
        outs = (outs,) if isinstance(outs, str) else tuple(outs or ())
        truncated = any(c.rank < c.n_features for c in model.components)
        deep_needed = (
            options.get("activation") == "shifted_relu"
            or any(options.get(k) is not None for k in _DEEP_ONLY)
            or any(str(o).startswith("level") for o in outs)
            or (truncated and options.get("activation", "abs") in ("abs", "relu")
                and options.get("layout", "neurons") == "neurons")
        )
        if not deep_needed:
            return _export.to_onnx(model, **{k: v for k, v in options.items() if k not in _DEEP_ONLY})
    elif not isinstance(model, Hierarchy) and type(model).__name__ != "HierarchicalGaussianMixture":
        return _export.to_onnx(model, **options)  # raises its own one-line error
    layout = options.pop("layout", "neurons")
    if layout != "neurons":  # the deep exporter writes neurons only
        from ...errors import UsageError

        raise UsageError(f"layout={layout!r} applies to a single diag/spherical mixture without the deep options "
                         "(shifted_relu, delta, intensity, level outputs); use layout='neurons'")
    from .deep import to_onnx as _deep

    return _deep(model, **options)
