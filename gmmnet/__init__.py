"""gmmnet: translate between Gaussian mixture models and Abs/ReLU neural networks.

A Linear neuron with weights w = λ^-1/2 v and bias b = −wᵀμ followed by Abs outputs the
Mahalanobis distance of x along one principal component of a Gaussian; a layer of them
is a GMM.  Everything passes through the IR in :mod:`gmmnet.ir`.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .errors import GmmnetError
from .ir import Component, Hierarchy, Mixture

try:
    __version__ = _metadata.version("gmmnet")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["Component", "GmmnetError", "Hierarchy", "Mixture", "__version__", "from_sklearn", "to_onnx"]


def from_sklearn(estimator) -> Mixture:
    """Fitted scikit-learn mixture → IR (see :mod:`gmmnet.formats.sklearn`)."""
    from .formats.sklearn import from_sklearn as _f

    return _f(estimator)


def to_onnx(model, **options):
    """IR (or fitted scikit-learn mixture) → ``onnx.ModelProto`` (see :mod:`gmmnet.formats.onnx`)."""
    from .formats.onnx import to_onnx as _f

    if not isinstance(model, (Mixture, Hierarchy)):
        model = from_sklearn(model)
    return _f(model, **options)
