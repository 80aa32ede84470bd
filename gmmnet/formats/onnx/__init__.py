"""ONNX ⇄ IR.

:func:`to_onnx` writes a :class:`~gmmnet.ir.Mixture` as an Abs/ReLU network with a mixture
head (the graph contract is docs/onnx-graph.md), a :class:`~gmmnet.ir.Hierarchy` as a deep
network (:mod:`gmmnet.formats.onnx.deep`, docs/hierarchy.md) and a fitted
GaussianMixtureClassifier as a classifier (:mod:`gmmnet.formats.onnx.classifier`).  Its options
are :class:`~gmmnet.formats.onnx.options.ExportOptions`; :func:`plan_export` gives the choices
an export makes without building the graph.  :func:`run` scores data with onnxruntime;
:func:`from_onnx` (:mod:`gmmnet.formats.onnx.read`) reads networks back by pattern,
:mod:`gmmnet.formats.onnx.read_deep` deep ones as hierarchies.
"""

from __future__ import annotations

import importlib
import warnings

from .options import COMPUTES, DEFAULT_OUTPUTS, OUTPUTS, ExportOptions
from .plan import ExportPlan, choose_exporter, exporters
from .runtime import run, session

#: Imported on first use, so that ``import gmmnet.formats.onnx.options`` (the CLI's flags) stays light.
_LAZY = {"classifier_to_onnx": "classifier", "float32_error_estimate": "export", "from_onnx": "read",
         "predicted_errors": "export"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["COMPUTES", "DEFAULT_OUTPUTS", "OUTPUTS", "ExportOptions", "ExportPlan", "classifier_to_onnx", "exporters",
           "float32_error_estimate", "from_onnx", "plan_export", "predicted_errors", "run", "session", "to_onnx"]


def _as_exportable(model):
    """``model`` as an exporter takes it: IR documents and classifiers as they are, an estimator through ``to_ir()``."""
    from .plan import takes

    if not takes(model) and callable(getattr(model, "to_ir", None)):
        return model.to_ir()
    return model


def plan_export(
    model,
    *,
    activation: str = "abs",
    dtype: str = "float32",
    opset: int = 17,
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS,
    centering: str = "auto",
    compute: str = "auto",
    layout: str = "auto",
    delta: float = 3.0,
    intensity: str | None = None,
    intensity_c: float = 3.0,
    level_outputs: bool = False,
    output_names: str = "gmmnet",
) -> ExportPlan:
    """The choices :func:`to_onnx` makes for ``model`` with these options, without building the graph.

    Takes the arguments of :func:`to_onnx` and returns an
    :class:`~gmmnet.formats.onnx.plan.ExportPlan`: the exporter, layout, compute and centering
    chosen and why, the predicted errors, the network's shape and the size of its weights.
    Building the graph from a plan: ``to_onnx(..., return_plan=True)`` returns both.
    """
    options = ExportOptions(activation=activation, dtype=dtype, opset=opset, outputs=outputs, centering=centering,
                            compute=compute, layout=layout, delta=delta, intensity=intensity, intensity_c=intensity_c,
                            level_outputs=level_outputs, output_names=output_names)
    model = _as_exportable(model)
    return choose_exporter(model, options).plan(model, options)


def to_onnx(
    model,
    *,
    activation: str = "abs",
    dtype: str = "float32",
    opset: int = 17,
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS,
    centering: str = "auto",
    compute: str = "auto",
    layout: str = "auto",
    delta: float = 3.0,
    intensity: str | None = None,
    intensity_c: float = 3.0,
    level_outputs: bool = False,
    output_names: str = "gmmnet",
    return_plan: bool = False,
):
    """IR (or a fitted GaussianMixtureClassifier) → ``onnx.ModelProto``.

    The registry of exporters (:mod:`gmmnet.formats.onnx.plan`) chooses the graph: a
    :class:`~gmmnet.ir.Mixture` is written by the single-mixture exporter
    (:mod:`gmmnet.formats.onnx.export`) unless an option only the deep exporter writes is asked
    for (``activation="shifted_relu"``, ``intensity``, ``level{i}_…`` outputs) or it is
    rank-truncated (K·r neurons plus the residual term ‖x − μ_k‖²/σ², read back as the truncated
    Mixture); a :class:`~gmmnet.ir.Hierarchy` (or an estimator with ``to_ir()``, such as a fitted
    HierarchicalGaussianMixture) by the deep exporter (:mod:`gmmnet.formats.onnx.deep`); a
    classifier by :mod:`gmmnet.formats.onnx.classifier`.  A model with an ``input_transform``
    (z = A x + c) takes raw x: the transform is folded into the first layer.

    Parameters
    ----------
    model : gmmnet.ir.Mixture, gmmnet.ir.Hierarchy, or an estimator with ``to_ir()`` or a classifier
    activation : {"abs", "relu", "shifted_relu"}
        ``"abs"``: a = |w·x + b|.  ``"relu"``: each neuron as the pair relu(z), relu(−z), whose
        sum is |z|; exact.  ``"shifted_relu"``: the paper's intensity network
        relu(−(w·x + b) + δ), exact only where every pre-activation is ≤ δ (deep exporter).
    dtype : {"float32", "float64"}
        Element type of the input, the initializers and the float outputs.
    opset : int
        Default-domain opset, 13 to 21.  ``ir_version`` is the smallest that supports it.
    outputs : sequence of str
        Any of ``label``, ``responsibilities``, ``log_likelihood``, ``distances``, ``mahalanobis``
        (and for deep graphs ``level{i}_responsibilities``, ``level{i}_distances``); only these
        are computed, in the order given.
    centering : {"auto", "none", "global", "component"}
        How the input is centred before the neuron product (matters for float32 on raw
        features); docs/onnx-graph.md, "Centering".  diag/spherical graphs are always centred
        per component.
    compute : {"auto", "float32", "mixed", "float64"}
        Arithmetic inside a float32 graph, whose input and outputs stay float32: ``"float32"``
        throughout; ``"mixed"``: float32 neurons, float64 head; ``"float64"``: X is cast to
        double first (the most accurate graph).  ``"auto"`` takes ``"float32"`` when its
        predicted errors (:func:`predicted_errors`) meet the default targets (log-likelihood
        2e-6, responsibilities 1e-5), else ``"float64"``; docs/onnx-graph.md, "Compute".
    layout : {"auto", "neurons", "quadratic"}
        ``"neurons"``: the Abs (or ReLU) network.  ``"quadratic"`` (diag and spherical mixtures,
        behind a diagonal input transform at most): D² as one expanded product about one
        centre.  ``"auto"``: quadratic for diag/spherical mixtures with Abs neurons and
        compute auto/float32 (unless predicted inaccurate), else neurons;
        docs/onnx-graph.md, "Layouts".
    delta : float
        δ of ``activation="shifted_relu"``, in standard deviations.
    intensity : {None, "gauss", "laplace", "triangle"}
        Transform every distances output a into exp(−a²), exp(−a) or relu(intensity_c − a)
        (paper §4.3; deep exporter).
    intensity_c : float
        c of ``intensity="triangle"``.
    level_outputs : bool
        Hierarchies: also output ``level{i}_responsibilities`` of every level, which carry the
        lower levels' weights, so that reading the graph back gives the whole hierarchy.
    output_names : {"gmmnet", "skl2onnx"}
        ``"skl2onnx"``: the names and shapes skl2onnx gives a GaussianMixture with
        ``score_samples`` on: ``label`` (N, 1) int64, ``probabilities``, ``score_samples`` (N, 1).
    return_plan : bool
        Also return the :class:`~gmmnet.formats.onnx.plan.ExportPlan` (the choices made).

    Returns
    -------
    onnx.ModelProto, or (onnx.ModelProto, ExportPlan) with ``return_plan``
        Checked with ``onnx.checker.check_model(full_check=True)``.

    Raises
    ------
    gmmnet.errors.UsageError
        A bad option value, or options no exporter writes for this model.
    gmmnet.errors.ResourceLimitError
        The graph's construction would exceed the memory limit (:mod:`gmmnet.limits`).

    Warns
    -----
    gmmnet.errors.PrecisionWarning
        When the chosen layout's estimated log-likelihood error exceeds 1e-4, or the quadratic
        layout's predicted errors exceed the targets of ``dtype``.
    """
    from ...errors import PrecisionWarning

    plan = plan_export(model, activation=activation, dtype=dtype, opset=opset, outputs=outputs, centering=centering,
                       compute=compute, layout=layout, delta=delta, intensity=intensity, intensity_c=intensity_c,
                       level_outputs=level_outputs, output_names=output_names)
    for message in plan.warnings:
        warnings.warn(message, PrecisionWarning, stacklevel=2)
    onnx_model = _build(plan)
    return (onnx_model, plan) if return_plan else onnx_model


def _build(plan: ExportPlan):
    from .plan import exporter

    return exporter(plan.exporter).build(plan)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
