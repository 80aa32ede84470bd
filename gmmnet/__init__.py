"""gmmnet: translate between Gaussian mixture models and Abs/ReLU neural networks.

A Linear neuron with weights w = λ^-1/2 v and bias b = −wᵀμ followed by Abs outputs the
Mahalanobis distance of x along one principal component of a Gaussian; a layer of them
is a GMM.  Everything passes through the IR in :mod:`gmmnet.ir`.

The top level holds the round trip (docs/reference/api.md lists it)::

    mixture = gmmnet.from_sklearn(gmm)          # fitted scikit-learn mixture → IR
    model = gmmnet.to_onnx(mixture)             # IR → onnx.ModelProto
    out = gmmnet.run(model, X)                  # onnxruntime: {output name: array}
    back, report = gmmnet.from_onnx(model)      # network → IR (exact for gmmnet's graphs)
    gmm2 = gmmnet.to_sklearn(back)              # IR → fitted scikit-learn estimator

Everything but the IR classes is imported when first called, so ``import gmmnet`` stays light
(no onnx, onnxruntime, scikit-learn or torch).
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .errors import GmmnetError
from .ir import Component, Hierarchy, Mixture

try:
    __version__ = _metadata.version("gmmnet")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["Component", "GmmnetError", "Hierarchy", "Mixture", "__version__", "from_onnx", "from_sklearn", "run",
           "to_onnx", "to_sklearn"]


def from_sklearn(estimator) -> Mixture:
    """Fitted scikit-learn mixture → IR.

    Parameters
    ----------
    estimator : sklearn.mixture.GaussianMixture or BayesianGaussianMixture
        A fitted mixture of any covariance type.

    Returns
    -------
    Mixture
        The IR: per component its weight, mean, eigenvectors and eigenvalues (and, for a
        BayesianGaussianMixture, the exact per-component log-constant).

    See Also
    --------
    gmmnet.formats.sklearn.from_sklearn : the same, with eigenvalue flooring options.
    """
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
    layout: str = "auto",
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


def from_onnx(model, *, data=None, groups=None, n_components: int | None = None):
    """ONNX network → IR: read the Gaussians back from an Abs/ReLU network.

    Graphs gmmnet wrote are read exactly (also with their metadata stripped); a network
    someone trained is read approximately, with per-component diagnostics in the report
    (docs/recovery.md).  A network with several neuron levels under a mixture head (a
    hierarchy, as ``to_onnx`` writes a :class:`Hierarchy`) comes back as a :class:`Hierarchy`.

    Parameters
    ----------
    model : onnx.ModelProto, path or bytes
        The network.
    data : array of shape (n_samples, n_features), optional
        Points the network was meant for: used to group the neurons of a network without a
        mixture head, to fill what the weights leave open, and for the diagnostics.
    groups : int or list of lists of int, optional
        Neuron groups (one per component); an int g means consecutive groups of g neurons.
        Reads a single mixture.
    n_components : int, optional
        Number of components when grouping on ``data``.  Reads a single mixture.

    Returns
    -------
    document : Mixture or Hierarchy
    report : dict
        How the network was read (``exact``, ``grouping``, per-component diagnostics, notes).

    Raises
    ------
    GmmnetError
        A subclass naming what is wrong: an unreadable file, an unsupported pattern, a grouping
        that needs ``groups`` or ``data``.
    """
    from .formats.onnx.read import from_onnx as _single, load_model
    from .formats.onnx.read_deep import from_onnx as _deep, is_deep
    from .formats.onnx.walk import read_graph

    if groups is None and n_components is None:
        model = read_graph(model)  # walked once, for is_deep and for the reader (a file's bytes kept)
        if is_deep(model):
            return _deep(model, data=data)
    else:
        model = load_model(model)
    return _single(model, data=data, groups=groups, n_components=n_components)


def to_sklearn(model):
    """IR → a fitted scikit-learn estimator with the same scores.

    Parameters
    ----------
    model : Mixture or Hierarchy

    Returns
    -------
    sklearn.mixture.GaussianMixture or gmmnet.hierarchy.HierarchicalGaussianMixture
        A :class:`Mixture` gives a ``GaussianMixture`` of the same covariance type (per-component
        log-constants, as a BayesianGaussianMixture has, are folded into the weights with a
        :class:`~gmmnet.errors.PrecisionWarning`); a :class:`Hierarchy` gives a fitted
        ``HierarchicalGaussianMixture``.
    """
    if isinstance(model, Hierarchy):
        from .hierarchy import HierarchicalGaussianMixture

        return HierarchicalGaussianMixture.from_ir(model)
    from .formats.sklearn import to_sklearn as _f

    return _f(model)


def run(model, X, outputs=None) -> dict:
    """Score rows with an ONNX model on onnxruntime.

    Parameters
    ----------
    model : onnx.ModelProto, path or bytes
    X : array of shape (n_samples, n_features)
        Cast to the model's input dtype.
    outputs : str or list of str, optional
        Output names to compute (default: all of the graph's outputs).

    Returns
    -------
    dict
        ``{output name: numpy array}``, e.g. ``label``, ``responsibilities``, ``log_likelihood``.

    See Also
    --------
    gmmnet.score.score_to_file : files of any size in bounded memory.
    """
    from .formats.onnx import run as _f

    return _f(model, X, outputs)
