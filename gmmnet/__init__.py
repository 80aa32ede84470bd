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


def to_onnx(
    model,
    *,
    activation: str = "abs",
    dtype: str = "float32",
    opset: int = 17,
    outputs: tuple[str, ...] = ("label", "responsibilities", "log_likelihood"),
    centering: str = "auto",
    compute: str = "auto",
    layout: str = "neurons",
    delta: float = 3.0,
    intensity: str | None = None,
    intensity_c: float = 3.0,
    level_outputs: bool = False,
    output_names: str = "gmmnet",
    return_plan: bool = False,
):
    """Fitted model → ``onnx.ModelProto``: an Abs/ReLU network with a mixture head.

    ``model`` is an IR :class:`Mixture` or :class:`Hierarchy`, a fitted scikit-learn mixture (or
    a Pipeline of affine steps and one, see :func:`from_sklearn`), a fitted
    HierarchicalGaussianMixture (anything with ``to_ir()``) or a fitted
    GaussianMixtureClassifier.  Estimators are converted to the IR first.

    The options are the fields of :class:`gmmnet.formats.onnx.options.ExportOptions`, described
    in :func:`gmmnet.formats.onnx.to_onnx` and docs/onnx-graph.md: ``activation`` ("abs", "relu",
    "shifted_relu"), ``dtype`` ("float32", "float64"), ``opset`` (13–21), ``outputs`` (label,
    responsibilities, log_likelihood, distances, mahalanobis, level{i}_…), ``centering`` ("auto",
    "none", "global", "component"), ``compute`` ("auto", "float32", "mixed", "float64"),
    ``layout`` ("neurons", "quadratic"), ``delta``, ``intensity``, ``intensity_c``,
    ``level_outputs`` and ``output_names`` ("gmmnet", "skl2onnx").  With ``return_plan`` the
    :class:`~gmmnet.formats.onnx.plan.ExportPlan` (every choice the export made) comes back too.
    A bad value raises :class:`gmmnet.errors.UsageError`.
    """
    from .formats.onnx import plan as _plan
    from .formats.onnx import to_onnx as _f

    if not isinstance(model, (Mixture, Hierarchy)) and not _plan.takes(model):
        model = model.to_ir() if callable(getattr(model, "to_ir", None)) else from_sklearn(model)
    return _f(model, activation=activation, dtype=dtype, opset=opset, outputs=outputs, centering=centering,
              compute=compute, layout=layout, delta=delta, intensity=intensity, intensity_c=intensity_c,
              level_outputs=level_outputs, output_names=output_names, return_plan=return_plan)
