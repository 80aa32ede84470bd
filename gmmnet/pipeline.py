"""scikit-learn estimators built on the GMM ⇄ network mapping (no torch).

:class:`AffineTransform`
    A fitted linear map z = A x + c (what a Pipeline's scalers and PCA compose to).
    :func:`to_estimator` turns an IR document with an input transform back into a
    ``Pipeline(AffineTransform, GaussianMixture)`` that scores raw data like the original pipeline.
:class:`MahalanobisFeatures`
    A transformer whose features are the Abs activations of a Gaussian mixture's neurons,
    ``|w_i x + b_i|``: the distance of x from each component's mean along each principal
    component, in standard deviations (:func:`gmmnet.linalg.distances`).  It is the first
    layer of the network gmmnet exports, as a feature extractor for any downstream model.
:class:`GaussianMixtureClassifier`
    One Gaussian mixture per class plus class priors, classified with Bayes' rule.
    :meth:`GaussianMixtureClassifier.to_mixture` gives the single IR mixture of all classes'
    components (weights prior_c · π_{c,k}) whose responsibilities, summed per class, are the
    class probabilities.
"""

from __future__ import annotations

import json
import numbers

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.utils.multiclass import check_classification_targets

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator, X="no_validation", y="no_validation", **kwargs):
        if isinstance(y, str) and y == "no_validation":
            return estimator._validate_data(X, **kwargs)
        return estimator._validate_data(X, y, **kwargs)


from . import errors, linalg
from .ir import Component, Hierarchy, InputTransform, Mixture, Provenance, TransformStep
from .versions import library_versions

__all__ = ["AffineTransform", "EstimatorNotFittedError", "GaussianMixtureClassifier", "InvalidDataError",
           "InvalidParameterError", "MahalanobisFeatures", "to_estimator"]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class EstimatorNotFittedError(errors.NotFittedError, _SklearnNotFittedError):
    """The estimator is used before ``fit``: both gmmnet's and scikit-learn's ``NotFittedError``."""


class InvalidParameterError(errors.UsageError, ValueError):
    """A parameter outside its allowed values: a :class:`gmmnet.errors.UsageError` (exit code 2) that is
    also the ``ValueError`` scikit-learn's conventions (and ``check_estimator``) expect."""


class InvalidDataError(errors.DataError, ValueError):
    """Data an estimator cannot use: a :class:`gmmnet.errors.DataError` that is also a ``ValueError``."""


def _check_fitted(est, attr: str) -> None:
    if not hasattr(est, attr):
        raise EstimatorNotFittedError(
            f"This {type(est).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments first."
        )


def _check_params(est) -> None:
    n = est.n_components
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 1:
        raise InvalidParameterError(f"n_components must be an integer >= 1, got {n!r}")
    if est.covariance_type not in COVARIANCE_TYPES:
        raise InvalidParameterError(
            f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {est.covariance_type!r}")


def _gaussian_mixture(est, n_components: int) -> GaussianMixture:
    return GaussianMixture(
        n_components=n_components,
        covariance_type=est.covariance_type,
        reg_covar=est.reg_covar,
        max_iter=est.max_iter,
        n_init=est.n_init,
        init_params=est.init_params,
        random_state=est.random_state,
    )


def _is_fitted_mixture(model) -> bool:
    return hasattr(model, "precisions_cholesky_") and hasattr(model, "means_")


# ---------------------------------------------------------------------------
# MahalanobisFeatures


class MahalanobisFeatures(TransformerMixin, BaseEstimator):
    """Per-principal-component Mahalanobis distances to the components of a Gaussian mixture.

    Feature ``c{k}_pc{i}`` is ``|v_{k,i}ᵀ(x − μ_k)| / √λ_{k,i}``: how many standard
    deviations x lies from component k's mean along its i-th principal direction (the Abs
    activation of neuron i of component k in gmmnet's network).  The squared features of one
    component sum to its squared Mahalanobis distance.

    Parameters
    ----------
    n_components : int, default=1
        Components of the ``GaussianMixture`` fitted when ``mixture`` is None.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    mixture : None, gmmnet.ir.Mixture or scikit-learn mixture, default=None
        The mixture to use instead of fitting a new one.  An IR mixture or a *fitted*
        ``GaussianMixture`` / ``BayesianGaussianMixture`` is used as it is (``fit`` only
        validates X against it); an unfitted scikit-learn mixture is cloned and fitted on X.
        ``n_components``, ``covariance_type`` and the fitting options are then ignored.
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : str, default="kmeans"
        Passed to ``GaussianMixture``.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    mixture_ : gmmnet.ir.Mixture
        The mixture whose neurons make the features.
    estimator_ : GaussianMixture or BayesianGaussianMixture or None
        The scikit-learn mixture fitted or given (None for an IR ``mixture``).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string column names.
    n_features_out_ : int
        Σ_k r_k, the number of neurons (K·d unless the mixture is rank-truncated).
    n_iter_ : int
        EM iterations of the fitted mixture (0 for an IR ``mixture``).

    See Also
    --------
    gmmnet.linalg.distances : the computation.
    GaussianMixtureClassifier : a classifier from per-class mixtures.

    Examples
    --------
    >>> from sklearn.datasets import load_wine
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from gmmnet.pipeline import MahalanobisFeatures
    >>> X, y = load_wine(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), MahalanobisFeatures(n_components=2, random_state=0),
    ...                       LogisticRegression(max_iter=1000)).fit(X, y)
    >>> model[1].get_feature_names_out()[:3].tolist()
    ['c0_pc0', 'c0_pc1', 'c0_pc2']
    """

    def __init__(self, n_components=1, covariance_type="full", mixture=None, reg_covar=1e-6, max_iter=100,
                 n_init=1, init_params="kmeans", random_state=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.mixture = mixture
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit the mixture on X (or take the given one).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype=np.float64)
        given = self.mixture
        if given is None:
            _check_params(self)
            self.estimator_ = _gaussian_mixture(self, self.n_components).fit(X)
            self.mixture_ = _from_sklearn(self.estimator_)
        elif isinstance(given, Mixture):
            self.estimator_ = None
            self.mixture_ = given
        elif isinstance(given, (GaussianMixture, BayesianGaussianMixture)):
            self.estimator_ = given if _is_fitted_mixture(given) else clone(given).fit(X)
            self.mixture_ = _from_sklearn(self.estimator_)
        else:
            raise TypeError(
                "mixture must be None, a gmmnet.ir.Mixture or a scikit-learn GaussianMixture/"
                f"BayesianGaussianMixture, got {type(given).__name__}"
            )
        if self.mixture_.n_inputs != X.shape[1]:
            raise InvalidDataError(
                f"X has {X.shape[1]} features, but the given mixture takes {self.mixture_.n_inputs}"
            )
        self.n_features_out_ = int(sum(c.rank for c in self.mixture_.components))
        self.n_iter_ = int(getattr(self.estimator_, "n_iter_", 0))
        return self

    def transform(self, X):
        """The Abs-PC distances.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features_out_), float64
        """
        _check_fitted(self, "mixture_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return linalg.distances(self.mixture_, X)

    def get_feature_names_out(self, input_features=None):
        """``c{k}_pc{i}`` for component k, principal component i.

        Parameters
        ----------
        input_features : array-like of str or None
            Only checked against the names seen in ``fit``.

        Returns
        -------
        ndarray of str objects
        """
        _check_fitted(self, "mixture_")
        if input_features is not None:
            input_features = np.asarray(input_features, dtype=object)
            if len(input_features) != self.n_features_in_:
                raise ValueError(
                    f"input_features should have length equal to number of features ({self.n_features_in_}), "
                    f"got {len(input_features)}"
                )
            seen = getattr(self, "feature_names_in_", None)
            if seen is not None and not np.array_equal(seen, input_features):
                raise ValueError("input_features is not equal to feature_names_in_")
        names = [f"c{k}_pc{i}" for k, c in enumerate(self.mixture_.components) for i in range(c.rank)]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


def _from_sklearn(est) -> Mixture:
    from .formats.sklearn import from_sklearn

    return from_sklearn(est)


# ---------------------------------------------------------------------------
# GaussianMixtureClassifier


class GaussianMixtureClassifier(ClassifierMixin, BaseEstimator):
    """Generative classifier: one ``GaussianMixture`` per class and Bayes' rule.

    ``log p(x, c) = log prior_c + log p(x | c)``, with ``p(x | c)`` the class's mixture;
    ``predict_proba`` is the softmax of it over classes (computed with logsumexp, in the
    centred float64 form of :mod:`gmmnet.linalg`).

    Parameters
    ----------
    n_components : int, default=1
        Components per class.  With one component and ``covariance_type="tied"`` this is
        close to linear discriminant analysis (the covariance is tied within a class only).
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    priors : array-like of shape (n_classes,) or None, default=None
        Class priors; the class frequencies in ``y`` when None.
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : str, default="kmeans"
        Passed to every class's ``GaussianMixture``.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_prior_ : ndarray of shape (n_classes,)
    estimators_ : list of GaussianMixture
        One per class, in the order of ``classes_``.
    mixtures_ : list of gmmnet.ir.Mixture
        The same mixtures in the IR.
    n_iter_ : ndarray of int, shape (n_classes,)
        EM iterations of each class's mixture.
    class_of_component_ : ndarray of int, shape (n_mixture_components,)
        For every component of :meth:`to_mixture`, the index of its class in ``classes_``.
    component_classes_ : ndarray, shape (n_mixture_components,)
        The same as labels: ``classes_[class_of_component_]``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from gmmnet.pipeline import GaussianMixtureClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = GaussianMixtureClassifier(n_components=2, random_state=0).fit(X, y)
    >>> clf.to_mixture().n_components
    6
    >>> round(clf.score(X, y), 2) >= 0.95
    True
    """

    def __init__(self, n_components=1, covariance_type="full", priors=None, reg_covar=1e-6, max_iter=100,
                 n_init=1, init_params="kmeans", random_state=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.priors = priors
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state

    def fit(self, X, y):
        """Fit one mixture per class and the class priors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            A class has fewer samples than ``n_components``, or invalid priors.
        """
        _check_params(self)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        counts = np.bincount(y_idx, minlength=n_classes)
        if self.priors is None:
            prior = counts / counts.sum()
        else:
            prior = np.asarray(self.priors, dtype=np.float64)
            if prior.shape != (n_classes,):
                raise InvalidParameterError(f"priors must have one entry per class ({n_classes}), got shape {prior.shape}")
            if np.any(prior < 0) or not np.isclose(prior.sum(), 1.0):
                raise InvalidParameterError("priors must be non-negative and sum to 1")
            prior = prior / prior.sum()
        self.class_prior_ = prior
        estimators = []
        for c in range(n_classes):
            if counts[c] < self.n_components:
                raise InvalidDataError(
                    f"class {self.classes_[c]!r} has {counts[c]} samples, fewer than n_components={self.n_components}"
                )
            estimators.append(_gaussian_mixture(self, self.n_components).fit(X[y_idx == c]))
        self.estimators_ = estimators
        self.mixtures_ = [_from_sklearn(e) for e in estimators]
        self.n_iter_ = np.array([e.n_iter_ for e in estimators])
        self.class_of_component_ = np.concatenate(
            [np.full(m.n_components, c, dtype=np.int64) for c, m in enumerate(self.mixtures_)]
        )
        self.component_classes_ = self.classes_[self.class_of_component_]
        return self

    def predict_joint_log_proba(self, X):
        """log p(x, c) = log prior_c + log p(x | c) for every class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        _check_fitted(self, "mixtures_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with np.errstate(divide="ignore"):
            log_prior = np.log(self.class_prior_)
        return np.column_stack([linalg.log_likelihood(m, X) for m in self.mixtures_]) + log_prior

    def predict_log_proba(self, X):
        """log p(c | x).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        jll = self.predict_joint_log_proba(X)
        return jll - logsumexp(jll, axis=1, keepdims=True)

    def predict_proba(self, X):
        """p(c | x) by Bayes' rule.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """The most probable class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        jll = self.predict_joint_log_proba(X)
        return self.classes_[np.argmax(jll, axis=1)]

    def to_ir(self) -> Mixture:
        """The IR of the classifier: :meth:`to_mixture` (what ``gmmnet.from_sklearn`` reads)."""
        return self.to_mixture()

    def to_mixture(self) -> Mixture:
        """All classes' components as one IR mixture.

        Component ``j`` is component k of class c = ``class_of_component_[j]`` with weight
        ``prior_c · π_{c,k}``.  Its responsibilities summed over the components of each class are
        ``predict_proba``; ``provenance.extra`` records ``class_of_component`` (comma-separated
        class indices) and ``classes`` (a JSON list of the labels as strings) so that an exporter
        can add the per-class sum from the IR alone.

        Returns
        -------
        gmmnet.ir.Mixture
            ``covariance_type`` is the classifier's, except ``tied`` becomes ``full`` when there is
            more than one class (each class ties its own covariance).
        """
        _check_fitted(self, "mixtures_")
        comps: list[Component] = []
        for c, m in enumerate(self.mixtures_):
            for comp in m.components:
                comps.append(comp.model_copy(update={"weight": float(self.class_prior_[c] * comp.weight)}))
        total = sum(c.weight for c in comps)
        comps = [c.model_copy(update={"weight": c.weight / total}) for c in comps]
        ct = self.covariance_type
        if ct == "tied" and len(self.mixtures_) > 1:
            ct = "full"
        return Mixture(
            n_features=self.n_features_in_,
            covariance_type=ct,
            components=comps,
            provenance=Provenance(
                source="gmmnet.pipeline.GaussianMixtureClassifier",
                versions=library_versions(),
                extra={
                    "class_of_component": ",".join(str(int(i)) for i in self.class_of_component_),
                    "classes": json.dumps([str(c) for c in self.classes_.tolist()]),
                },
            ),
        )


# ---------------------------------------------------------------------------
# AffineTransform and the way back from the IR


class AffineTransform(TransformerMixin, BaseEstimator):
    """The fitted affine map z = A x + c of a pipeline's preprocessing, as one transformer.

    ``Pipeline([("affinetransform", AffineTransform(...)), ("gaussianmixture", gm)])`` scores raw
    rows like the pipeline the IR came from (:func:`to_estimator` builds it).  It holds only numpy
    arrays and builtins, so pickle, joblib and skops files of it load with gmmnet's restricted
    loaders.

    Parameters
    ----------
    matrix : array-like of shape (k, n_features) or None, default=None
        A.  Give this or ``scale``.
    scale : array-like of shape (n_features,) or None, default=None
        The diagonal of A when A is diagonal (scalers only).
    offset : array-like of shape (k,) or None, default=None
        c (zeros when None).
    steps : list of dict or None, default=None
        Provenance: the steps A and c were composed from (``name``, ``cls``, ``params``).

    Attributes
    ----------
    matrix_ : ndarray of shape (k, n_features) or None
    scale_ : ndarray of shape (n_features,) or None
    offset_ : ndarray of shape (k,)
    steps_ : list of dict
    n_features_in_ : int
    n_features_out_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from gmmnet.pipeline import AffineTransform
    >>> t = AffineTransform(scale=[2.0, 0.5], offset=[1.0, 0.0]).fit(np.zeros((1, 2)))
    >>> t.transform([[1.0, 4.0]]).tolist()
    [[3.0, 2.0]]
    """

    def __init__(self, matrix=None, scale=None, offset=None, steps=None):
        self.matrix = matrix
        self.scale = scale
        self.offset = offset
        self.steps = steps

    def fit(self, X=None, y=None):
        """Validate the parameters (nothing is learned from X).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or None
            Checked against A's width when given.
        y : ignored

        Returns
        -------
        self
        """
        t = _input_transform(self.matrix, self.scale, self.offset, self.steps)
        self.matrix_ = None if t.matrix is None else t.matrix.copy()
        self.scale_ = None if t.scale is None else t.scale.copy()
        self.offset_ = t.offset.copy()
        self.steps_ = [step.model_dump() for step in t.steps]
        self.n_features_in_ = t.n_inputs
        self.n_features_out_ = t.n_outputs
        if X is not None:
            validate_data(self, X, dtype=np.float64, reset=False)
        return self

    def transform(self, X):
        """z = X Aᵀ + c.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features_out_), float64
        """
        _check_fitted(self, "offset_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.matrix_ is None:
            return X * self.scale_ + self.offset_
        return X @ self.matrix_.T + self.offset_

    def to_input_transform(self) -> InputTransform:
        """The fitted map as the IR's :class:`gmmnet.ir.InputTransform` (``gmmnet.from_sklearn`` reads it)."""
        _check_fitted(self, "offset_")
        return _input_transform(self.matrix_, self.scale_, self.offset_, self.steps_)

    @classmethod
    def from_input_transform(cls, transform: InputTransform) -> "AffineTransform":
        """A fitted AffineTransform for an IR input transform."""
        steps = [step.model_dump() for step in transform.steps]
        return cls(matrix=transform.matrix, scale=transform.scale, offset=transform.offset, steps=steps).fit()

    def get_feature_names_out(self, input_features=None):
        """``z0``, ``z1``, …: the transformed features.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        ndarray of str objects
        """
        _check_fitted(self, "offset_")
        return np.asarray([f"z{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


def _input_transform(matrix, scale, offset, steps) -> InputTransform:
    if (matrix is None) == (scale is None):
        raise InvalidParameterError("AffineTransform needs exactly one of matrix and scale")
    a = None if matrix is None else np.asarray(matrix, dtype=np.float64)
    s = None if scale is None else np.asarray(scale, dtype=np.float64)
    k = a.shape[0] if a is not None and a.ndim == 2 else (s.size if s is not None else 0)
    c = np.zeros(k) if offset is None else np.asarray(offset, dtype=np.float64)
    return InputTransform(matrix=a, scale=s, offset=c,
                          steps=[TransformStep(**step) if isinstance(step, dict) else step for step in (steps or [])])


def to_estimator(document):
    """A fitted scikit-learn estimator that scores like an IR document.

    Parameters
    ----------
    document : gmmnet.ir.Mixture or gmmnet.ir.Hierarchy

    Returns
    -------
    estimator
        A ``GaussianMixture`` (:func:`gmmnet.formats.sklearn.to_sklearn`) for a mixture, a
        :class:`~gmmnet.hierarchy.HierarchicalGaussianMixture` for a hierarchy; with an input
        transform, a ``Pipeline`` of an :class:`AffineTransform` and that estimator, whose
        ``score_samples`` on raw rows is the original pipeline's.
    """
    from sklearn.pipeline import Pipeline

    from .formats.sklearn import to_sklearn
    from .hierarchy import HierarchicalGaussianMixture

    if isinstance(document, Hierarchy):
        bare = Hierarchy(levels=document.levels, provenance=document.provenance)
        last, name = HierarchicalGaussianMixture.from_ir(bare), "hierarchicalgaussianmixture"
    elif isinstance(document, Mixture):
        bare = document if document.input_transform is None else document.model_copy(update={"input_transform": None})
        last, name = to_sklearn(bare), "gaussianmixture"
    else:
        raise errors.UnsupportedModelError(f"to_estimator takes a gmmnet Mixture or Hierarchy, got {type(document).__name__}")
    t = document.input_transform
    if t is None:
        return last
    return Pipeline([("affinetransform", AffineTransform.from_input_transform(t)), (name, last)])
