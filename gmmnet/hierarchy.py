"""Hierarchical Gaussian mixtures: a stack of GMMs, each fitted on the Abs features of the one below.

Level 0 is a :class:`sklearn.mixture.GaussianMixture` fitted on the inputs.  Its neurons
(``w_i = λ_i^-1/2 v_i``, ``b_i = −w_iᵀμ``, one per kept principal direction of every component)
turn a sample into the Abs features ``a = |W x + b|`` (:func:`gmmnet.linalg.distances`); level
ℓ+1 is a GaussianMixture fitted on level ℓ's features.  The network Linear→Abs→Linear→Abs→…→head
computes exactly these features, so a fitted :class:`HierarchicalGaussianMixture` converts to a
deep Abs network without approximation (:meth:`HierarchicalGaussianMixture.to_ir` gives the
:class:`gmmnet.ir.Hierarchy` the exporters take).

A level may keep only its top-``r`` principal directions per component (:func:`truncate`): the
discarded directions become one isotropic residual variance σ² (probabilistic-PCA style), which
keeps a proper density but makes the layer K·r neurons wide instead of K·d.
:func:`truncation_error` measures what that costs.

See docs/hierarchy.md.
"""

from __future__ import annotations

import copy
import numbers
import re
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, TransformerMixin
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


from . import errors, linalg
from .ir import Component, Hierarchy, Mixture, Provenance

__all__ = [
    "COVARIANCE_TYPES",
    "DEFAULT_LEVELS",
    "HierarchicalGaussianMixture",
    "LevelSpecError",
    "format_levels",
    "fit_model",
    "from_ir",
    "parse_levels",
    "truncate",
    "truncation_error",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
#: What ``levels=None`` means: one level of two full-covariance components.
DEFAULT_LEVELS = "2:full"
#: provenance.extra keys written by :func:`truncate`.
_EXTRA_RANK = "truncated_rank"
_EXTRA_FROM = "truncated_from"
_SPEC_KEYS = ("n_components", "covariance_type", "rank")


class LevelSpecError(errors.UsageError, ValueError):
    """An invalid level specification.

    A :class:`gmmnet.errors.UsageError` for the CLI (exit code 2) and a ``ValueError`` for
    scikit-learn conventions.
    """


class HierarchyNotFittedError(errors.NotFittedError, _SklearnNotFittedError):
    """The estimator is used before ``fit``.

    Both gmmnet's and scikit-learn's ``NotFittedError``.
    """


# ---------------------------------------------------------------------------
# Level specifications


def _spec(n_components: Any, covariance_type: Any = "full", rank: Any = None, *, where: str) -> dict:
    """One validated level spec dict; ``where`` prefixes error messages."""
    if isinstance(n_components, (bool, np.bool_)) or not isinstance(n_components, numbers.Integral) or n_components < 1:
        raise LevelSpecError(f"{where}: n_components must be an integer >= 1, got {n_components!r}")
    if covariance_type not in COVARIANCE_TYPES:
        raise LevelSpecError(
            f"{where}: unknown covariance type {covariance_type!r}; expected one of {', '.join(COVARIANCE_TYPES)}"
        )
    if rank is not None and (isinstance(rank, (bool, np.bool_)) or not isinstance(rank, numbers.Integral) or rank < 1):
        raise LevelSpecError(f"{where}: rank must be an integer >= 1 or None, got {rank!r}")
    return {
        "n_components": int(n_components),
        "covariance_type": str(covariance_type),
        "rank": None if rank is None else int(rank),
    }


_INT = re.compile(r"[0-9]+")


def _parse_one(text: str, where: str) -> dict:
    parts = [p.strip() for p in text.split(":")]
    if not parts[0]:
        raise LevelSpecError(f"{where}: empty level; expected K[:covariance_type][:r=R], e.g. '8:full:r=3'")
    if not _INT.fullmatch(parts[0]):
        raise LevelSpecError(f"{where}: number of components must be a positive integer, got {parts[0]!r}")
    kw: dict[str, Any] = {"n_components": int(parts[0])}
    for part in parts[1:]:
        if "=" in part:
            key, _, value = (s.strip() for s in part.partition("="))
            if key not in ("r", "rank"):
                raise LevelSpecError(f"{where}: unknown option {key!r}; only r=R (rank) is allowed")
            if "rank" in kw:
                raise LevelSpecError(f"{where}: rank given twice")
            if not _INT.fullmatch(value):
                raise LevelSpecError(f"{where}: rank must be a positive integer, got {value!r}")
            kw["rank"] = int(value)
        else:
            if "covariance_type" in kw:
                raise LevelSpecError(f"{where}: covariance type given twice ({kw['covariance_type']!r}, {part!r})")
            kw["covariance_type"] = part
    return _spec(**kw, where=where)


def parse_levels(spec: str) -> list[dict]:
    """Parse a level specification string.

    Levels are separated by commas, bottom (input) level first.  Each level is
    ``K[:covariance_type][:r=R]``: the number of components, the covariance type
    (``full``, the default, ``tied``, ``diag`` or ``spherical``) and an optional rank.

    Parameters
    ----------
    spec : str
        For example ``"8:full,4:diag:r=3"``.

    Returns
    -------
    levels : list of dict
        One ``{"n_components": int, "covariance_type": str, "rank": int or None}`` per level.

    Raises
    ------
    LevelSpecError
        A :class:`gmmnet.errors.UsageError` (and ``ValueError``) with a one-line message
        naming the bad level.

    Examples
    --------
    >>> parse_levels("8:full,4:diag:r=3")
    [{'n_components': 8, 'covariance_type': 'full', 'rank': None}, {'n_components': 4, 'covariance_type': 'diag', 'rank': 3}]
    """
    if not isinstance(spec, str):
        raise LevelSpecError(f"level spec must be a string, got {type(spec).__name__}")
    if not spec.strip():
        raise LevelSpecError("empty level spec; expected e.g. '8:full,4:diag:r=3'")
    items = spec.split(",")
    of = f" of level spec {spec!r}" if len(items) > 1 else ""
    return [_parse_one(item, f"level {i} ({item.strip()!r}){of}") for i, item in enumerate(items)]


def format_levels(levels: Sequence[dict]) -> str:
    """Inverse of :func:`parse_levels`: ``[{...}, ...]`` → ``"8:full,4:diag:r=3"``."""
    out = []
    for lv in _normalize_levels(levels):
        text = f"{lv['n_components']}:{lv['covariance_type']}"
        if lv["rank"] is not None:
            text += f":r={lv['rank']}"
        out.append(text)
    return ",".join(out)


def _normalize_levels(levels: Any) -> list[dict]:
    """``levels`` parameter (None, a spec string, or a sequence of dicts/strings) → list of spec dicts."""
    if levels is None:
        levels = DEFAULT_LEVELS
    if isinstance(levels, str):
        return parse_levels(levels)
    if isinstance(levels, dict) or not isinstance(levels, Sequence) or isinstance(levels, bytes):
        raise LevelSpecError(
            f"levels must be a spec string like '8:full,4:diag:r=3' or a list of dicts, got {type(levels).__name__}"
        )
    if len(levels) == 0:
        raise LevelSpecError("levels is empty; give at least one level")
    out = []
    for i, lv in enumerate(levels):
        where = f"levels[{i}]"
        if isinstance(lv, str):
            parsed = parse_levels(lv)
            if len(parsed) != 1:
                raise LevelSpecError(f"{where}: {lv!r} describes {len(parsed)} levels, expected one")
            out.extend(parsed)
        elif isinstance(lv, dict):
            unknown = sorted(set(lv) - set(_SPEC_KEYS), key=str)
            if unknown:
                raise LevelSpecError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(_SPEC_KEYS)}")
            if "n_components" not in lv:
                raise LevelSpecError(f"{where}: n_components is required")
            out.append(_spec(**lv, where=where))
        else:
            raise LevelSpecError(f"{where}: expected a dict or a spec string, got {type(lv).__name__}")
    return out


# ---------------------------------------------------------------------------
# Rank truncation


def _spectrum(c: Component) -> tuple[np.ndarray, np.ndarray]:
    """Order of the directions by decreasing variance, and the full spectrum (kept + residual copies)."""
    order = np.argsort(-c.eigenvalues, kind="stable")
    vals = c.eigenvalues[order]
    if c.residual_variance is not None:
        vals = np.concatenate([vals, np.full(c.n_features - c.rank, c.residual_variance)])
    return order, vals


def _truncate_component(c: Component, rank: int) -> Component:
    order, vals = _spectrum(c)
    if rank >= c.rank:
        return c
    kept = vals[:rank]
    sigma2 = float(np.mean(vals[rank:]))  # ML residual: mean of the discarded variances (trace preserved)
    if c.axis_aligned:  # the r axes of largest variance: r×d, never the d×d identity
        vecs = np.zeros((rank, c.n_features))
        vecs[np.arange(rank), order[:rank]] = 1.0
    else:
        vecs = c.stored_eigenvectors[order[:rank]]
    return Component(
        mean=c.mean,
        eigenvectors=np.ascontiguousarray(vecs),
        eigenvalues=np.ascontiguousarray(kept),
        weight=c.weight,
        log_constant=c.log_constant,
        residual_variance=sigma2,
    )


def truncate(mixture: Mixture, rank: int | None) -> Mixture:
    """Keep the top-``rank`` principal directions of every component, the rest as isotropic residual.

    Component k with eigenvalues λ_1 ≥ … ≥ λ_d becomes
    Σ_k ≈ V_rᵀ diag(λ_1..λ_r) V_r + σ_k² (I − V_rᵀV_r) with σ_k² = mean(λ_{r+1}, …, λ_d),
    the maximum-likelihood residual of probabilistic PCA.  trace(Σ_k) and the mean are
    preserved; the density stays normalized.  The level then has K·r neurons.

    Parameters
    ----------
    mixture : gmmnet.ir.Mixture
        Any covariance type.  An already truncated mixture is truncated further (its residual
        variance counts as ``d − r_old`` discarded eigenvalues).
    rank : int or None
        Directions kept per component.  ``None`` or ``rank >= n_features`` returns ``mixture``
        unchanged.

    Returns
    -------
    gmmnet.ir.Mixture
        ``full`` and ``tied`` keep their covariance type (tied components still share one
        covariance).  ``diag`` and ``spherical`` become ``full`` when truncated, because the IR
        requires identity eigenvectors for them; the kept directions are the axes of largest
        variance (for spherical the truncation is exact).  ``provenance.extra`` records
        ``truncated_rank`` and ``truncated_from`` (the original covariance type).

    Raises
    ------
    LevelSpecError
        If ``rank`` is not None and not a positive integer.
    """
    if rank is None:
        return mixture
    if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise LevelSpecError(f"rank must be an integer >= 1 or None, got {rank!r}")
    rank = int(rank)
    d = mixture.n_features
    if rank >= d or all(c.rank <= rank for c in mixture.components):
        return mixture
    ct = mixture.covariance_type
    if ct == "tied":
        shared = _truncate_component(mixture.components[0], rank)
        comps = [
            shared.model_copy(update={"mean": c.mean, "weight": c.weight, "log_constant": c.log_constant})
            for c in mixture.components
        ]
        new_ct = "tied"
    else:
        comps = [_truncate_component(c, rank) for c in mixture.components]
        new_ct = "full"
    prov = mixture.provenance
    extra = dict(prov.extra)
    extra.setdefault(_EXTRA_FROM, ct)
    extra[_EXTRA_RANK] = str(rank)
    return Mixture(
        n_features=d,
        covariance_type=new_ct,
        components=comps,
        provenance=prov.model_copy(update={"extra": extra}),
        diagnostics=copy.deepcopy(mixture.diagnostics),
    )


def truncation_error(mixture, X, ranks: Sequence[int]) -> list[dict]:
    """Measure what rank truncation costs on data ``X``.

    Parameters
    ----------
    mixture : gmmnet.ir.Mixture or fitted sklearn GaussianMixture
        The full model (converted with :func:`gmmnet.formats.sklearn.from_sklearn` if needed).
    X : array-like of shape (n_samples, n_features)
    ranks : sequence of int
        Ranks to try.

    Returns
    -------
    list of dict
        One per rank, in the given order, with keys ``rank``, ``max_abs_dloglik`` and
        ``mean_abs_dloglik`` (|log p_r(x) − log p(x)| over the rows of X, in nats),
        ``label_agreement`` (fraction of rows whose argmax component is unchanged) and
        ``retained_variance`` (mean over components of the kept fraction of trace(Σ_k)).
    """
    if not isinstance(mixture, Mixture):
        from .formats.sklearn import from_sklearn

        mixture = from_sklearn(mixture)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != mixture.n_features:
        raise errors.DataError(f"X must have shape (n_samples, {mixture.n_features}), got {X.shape}")
    ref_joint = linalg.log_joint(mixture, X)
    ref_ll = linalg.log_likelihood(mixture, X)
    ref_lab = np.argmax(ref_joint, axis=1)
    totals = np.array([np.sum(_spectrum(c)[1]) for c in mixture.components])
    out = []
    for r in ranks:
        t = truncate(mixture, r)
        joint = linalg.log_joint(t, X)
        dll = np.abs(linalg.log_likelihood(t, X) - ref_ll)
        kept = np.array([np.sum(c.eigenvalues) for c in t.components])
        out.append(
            {
                "rank": int(r),
                "max_abs_dloglik": float(np.max(dll)),
                "mean_abs_dloglik": float(np.mean(dll)),
                "label_agreement": float(np.mean(np.argmax(joint, axis=1) == ref_lab)),
                "retained_variance": float(np.mean(kept / totals)),
            }
        )
    return out


# ---------------------------------------------------------------------------
# The estimator


def _level_spec_from_ir(m: Mixture) -> dict:
    ranks = [c.rank for c in m.components]
    truncated = max(ranks) < m.n_features
    ct = m.provenance.extra.get(_EXTRA_FROM, m.covariance_type) if truncated else m.covariance_type
    if ct not in COVARIANCE_TYPES:
        ct = m.covariance_type
    return {"n_components": m.n_components, "covariance_type": ct, "rank": max(ranks) if truncated else None}


class HierarchicalGaussianMixture(TransformerMixin, DensityMixin, BaseEstimator):
    """Hierarchical Gaussian mixture: level ℓ+1 is a GMM on the Abs features of level ℓ.

    Level 0 is a :class:`~sklearn.mixture.GaussianMixture` fitted on ``X``.  Each component k
    of a level has one neuron per kept principal direction i of its covariance,
    ``a_ki = |λ_ki^-1/2 v_kiᵀ (x − μ_k)|`` (the distance from μ_k along that direction in standard
    deviations); the level's features are all of them, component-major
    (:func:`gmmnet.linalg.distances`).  The next level is a GaussianMixture fitted on those
    features.  Predictions and densities are those of the top level, evaluated on the features
    propagated through the levels below; :meth:`to_ir` gives the exact deep Abs network as a
    :class:`gmmnet.ir.Hierarchy`.

    Parameters
    ----------
    levels : str, list of dict or None, default=None
        The levels, bottom (input) first.  A spec string such as ``"8:full,4:diag:r=3"``
        (see :func:`parse_levels`) or a list of dicts with keys ``n_components`` (int, required),
        ``covariance_type`` (``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``, default
        ``"full"``) and ``rank`` (int or None, default None).  A ``rank`` r keeps the top-r
        principal directions per component (see :func:`truncate`); ``rank >= n_features`` keeps
        all.  None means ``"2:full"``: one level of two full-covariance components.
    tol : float, default=1e-3
        EM convergence threshold of every level's GaussianMixture.
    reg_covar : float, default=1e-6
        Non-negative regularization added to the covariance diagonals of every level.
    max_iter : int, default=100
        EM iterations per level.
    n_init : int, default=1
        Initializations per level; the best is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        Initialization of every level's GaussianMixture.
    random_state : int, RandomState instance or None, default=None
        Passed unchanged to every level's GaussianMixture, so a one-level hierarchy equals
        ``GaussianMixture(..., random_state=random_state)``.

    Attributes
    ----------
    levels_ : list of gmmnet.ir.Mixture
        The fitted levels in the IR, truncated where a rank was given.  Level ℓ+1 has as many
        features as level ℓ has neurons (Σ_k r_k).
    estimators_ : list of sklearn.mixture.GaussianMixture
        The GaussianMixture fitted at each level (before truncation).  For an estimator made
        by :meth:`from_ir` they are :func:`gmmnet.formats.sklearn.to_sklearn` views of the
        levels.
    converged_ : bool
        True when EM converged at every level.
    n_iter_ : int
        Largest number of EM iterations over the levels (per level: ``estimators_[i].n_iter_``).
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Input feature names, when ``X`` had string column names.

    See Also
    --------
    sklearn.mixture.GaussianMixture : the model of each level.
    gmmnet.ir.Hierarchy : the IR of a fitted hierarchy.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from gmmnet.hierarchy import HierarchicalGaussianMixture
    >>> X = load_iris().data
    >>> hgm = HierarchicalGaussianMixture("3:full,2:diag:r=4", random_state=0).fit(X)
    >>> hgm.transform(X, level=0).shape, hgm.transform(X).shape
    ((150, 12), (150, 8))
    >>> hgm.predict_proba(X).shape
    (150, 2)
    """

    def __init__(
        self,
        levels=None,
        *,
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        random_state=None,
    ):
        self.levels = levels
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------

    def fit(self, X, y=None):
        """Fit the levels bottom-up.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : HierarchicalGaussianMixture
            The fitted estimator.
        """
        return self._fit(X, None)

    def _fit(self, X, progress):
        """``fit`` with an optional ``progress(i, n_levels, spec, n_features, gm_or_None)`` callback."""
        from sklearn.mixture import GaussianMixture

        from .formats.sklearn import from_sklearn

        specs = _normalize_levels(self.levels)
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        features = X
        fitted, estimators = [], []
        for i, spec in enumerate(specs):
            if progress is not None:
                progress(i, len(specs), spec, features.shape[1], None)
            gm = GaussianMixture(
                n_components=spec["n_components"],
                covariance_type=spec["covariance_type"],
                tol=self.tol,
                reg_covar=self.reg_covar,
                max_iter=self.max_iter,
                n_init=self.n_init,
                init_params=self.init_params,
                random_state=self.random_state,
            ).fit(features)
            level = truncate(from_sklearn(gm), spec["rank"])
            if progress is not None:
                progress(i, len(specs), spec, features.shape[1], gm)
            estimators.append(gm)
            fitted.append(level)
            if i + 1 < len(specs):
                features = linalg.distances(level, features)
        self.estimators_ = estimators
        self.levels_ = fitted
        self.converged_ = bool(all(gm.converged_ for gm in estimators))
        self.n_iter_ = int(max(gm.n_iter_ for gm in estimators))
        return self

    # -- evaluation --------------------------------------------------------

    def __sklearn_is_fitted__(self):
        return hasattr(self, "levels_")

    def _check_fitted(self):
        if not hasattr(self, "levels_"):
            raise HierarchyNotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. "
                "Call 'fit' with appropriate arguments before using this estimator."
            )

    def _features(self, X, upto: int) -> np.ndarray:
        """Validated X propagated through levels 0..upto−1 (the input of level ``upto``)."""
        self._check_fitted()
        X = validate_data(self, X, dtype=np.float64, reset=False)
        for m in self.levels_[:upto]:
            X = linalg.distances(m, X)
        return X

    def _top_joint(self, X) -> np.ndarray:
        self._check_fitted()
        return linalg.log_joint(self.levels_[-1], self._features(X, len(self.levels_) - 1))

    def score_samples(self, X):
        """Log-density of the top level at each sample's propagated features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
            ``log p_top(f(x))`` where f maps x through the lower levels' Abs features (for one
            level, the log-density of x).
        """
        from scipy.special import logsumexp

        return logsumexp(self._top_joint(X), axis=1)

    def score(self, X, y=None):
        """Mean of :meth:`score_samples` over ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        log_likelihood : float
        """
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X):
        """Responsibilities of the top level's components.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components of the top level)
        """
        from scipy.special import logsumexp

        lj = self._top_joint(X)
        return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))

    def predict(self, X):
        """Most responsible top-level component.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return np.argmax(self._top_joint(X), axis=1)

    def transform(self, X, level=None):
        """Abs features (neuron activations) of a level.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        level : int or None, default=None
            Which level, 0 being the one on the inputs; negative values count from the top.
            None means the top level.

        Returns
        -------
        features : ndarray of shape (n_samples, Σ_k r_k of that level)
            ``|W_k (f − μ_k)|`` for every component k and kept direction, component-major,
            where f is the level's input.
        """
        self._check_fitted()
        n = len(self.levels_)
        if level is None:
            level = n - 1
        if isinstance(level, (bool, np.bool_)) or not isinstance(level, numbers.Integral) or not -n <= level < n:
            raise LevelSpecError(f"level must be an integer in [{-n}, {n - 1}] or None, got {level!r}")
        level = int(level) % n
        return linalg.distances(self.levels_[level], self._features(X, level))

    # -- IR ------------------------------------------------------------------

    def to_ir(self) -> Hierarchy:
        """The fitted hierarchy as a :class:`gmmnet.ir.Hierarchy` (what the ONNX exporter takes)."""
        self._check_fitted()
        from .versions import library_versions

        spec = format_levels([_level_spec_from_ir(m) for m in self.levels_])
        return Hierarchy(
            levels=list(self.levels_),
            provenance=Provenance(
                source=f"{__name__}.{type(self).__name__}", versions=library_versions(), extra={"levels": spec}
            ),
        )

    @classmethod
    def from_ir(cls, hierarchy) -> "HierarchicalGaussianMixture":
        """A fitted estimator that scores exactly like ``hierarchy``.

        Parameters
        ----------
        hierarchy : gmmnet.ir.Hierarchy or gmmnet.ir.Mixture
            A Mixture is taken as a one-level hierarchy.

        Returns
        -------
        HierarchicalGaussianMixture
            ``levels`` describes the IR's structure (so ``clone(...).fit(X)`` refits the same
            shape); ``levels_`` are the IR's mixtures; ``estimators_`` are
            :func:`gmmnet.formats.sklearn.to_sklearn` views of them (scoring always uses
            ``levels_``, so per-component log constants stay exact).
        """
        import warnings

        from .formats.sklearn import to_sklearn

        if isinstance(hierarchy, Mixture):
            if hierarchy.input_transform is not None:
                hierarchy = Hierarchy(levels=[hierarchy.model_copy(update={"input_transform": None})],
                                      input_transform=hierarchy.input_transform)
            else:
                hierarchy = Hierarchy(levels=[hierarchy])
        if not isinstance(hierarchy, Hierarchy):
            raise errors.UnsupportedModelError(
                f"from_ir takes a gmmnet.ir.Hierarchy or Mixture, got {type(hierarchy).__name__}"
            )
        if hierarchy.input_transform is not None:
            raise errors.UnsupportedModelError(
                "this hierarchy lives behind an input transform (a pipeline's affine steps); "
                "gmmnet.pipeline.to_estimator gives a Pipeline of AffineTransform and HierarchicalGaussianMixture")
        levels = list(hierarchy.levels)
        est = cls(levels=[_level_spec_from_ir(m) for m in levels])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", errors.PrecisionWarning)
            est.estimators_ = [to_sklearn(m) for m in levels]
        est.levels_ = levels
        est.converged_ = True
        est.n_iter_ = 0
        est.n_features_in_ = levels[0].n_features
        return est

    # -- persistence -----------------------------------------------------------
    # levels_ are pickled as IR JSON strings (lossless float64), so pickle/joblib/skops files
    # hold only this class, GaussianMixture, numpy arrays and builtins.

    def __getstate__(self):
        state = super().__getstate__()
        if "levels_" in state:
            state = dict(state)
            state["levels_"] = [m.model_dump_json() if isinstance(m, Mixture) else m for m in state["levels_"]]
        return state

    def __setstate__(self, state):
        if "levels_" in state:
            state = dict(state)
            state["levels_"] = [Mixture.model_validate_json(m) if isinstance(m, str) else m for m in state["levels_"]]
        super().__setstate__(state)


def from_ir(hierarchy) -> HierarchicalGaussianMixture:
    """Same as :meth:`HierarchicalGaussianMixture.from_ir`."""
    return HierarchicalGaussianMixture.from_ir(hierarchy)


def fit_model(X, levels, *, random_state=None, progress=None, **params):
    """Fit what ``gmmnet fit`` fits: a plain GaussianMixture for one untruncated level, else a hierarchy.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    levels : str or list of dict
        A level spec (see :func:`parse_levels`), e.g. ``"8:full,4:diag:r=3"``.
    random_state : int or None
    progress : callable, optional
        Called as ``progress(i, n_levels, spec, n_features, estimator)`` before each level is
        fitted (``estimator`` None) and after it (the fitted GaussianMixture).
    **params
        ``tol``, ``reg_covar``, ``max_iter``, ``n_init``, ``init_params`` for every level.

    Returns
    -------
    sklearn.mixture.GaussianMixture or HierarchicalGaussianMixture
    """
    specs = _normalize_levels(levels)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise errors.DataError(f"X must be a 2-D array with at least 2 rows, got shape {X.shape}")
    for i, spec in enumerate(specs):
        if spec["n_components"] > X.shape[0]:
            raise errors.DataError(
                f"level {i} asks for {spec['n_components']} components but the data has only {X.shape[0]} rows"
            )
    if len(specs) == 1 and specs[0]["rank"] is None:
        from sklearn.mixture import GaussianMixture

        spec = specs[0]
        if progress is not None:
            progress(0, 1, spec, X.shape[1], None)
        gm = GaussianMixture(n_components=spec["n_components"], covariance_type=spec["covariance_type"],
                             random_state=random_state, **params).fit(X)
        if progress is not None:
            progress(0, 1, spec, X.shape[1], gm)
        return gm
    est = HierarchicalGaussianMixture(levels if isinstance(levels, str) else specs, random_state=random_state, **params)
    return est._fit(X, progress)
