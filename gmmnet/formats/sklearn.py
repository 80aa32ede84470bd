"""scikit-learn mixtures ⇄ IR.

Reads ``GaussianMixture`` and ``BayesianGaussianMixture`` of every covariance type
from their public fitted attributes (no private sklearn helpers).  The Gaussian of
a component comes from ``precisions_cholesky_`` — what sklearn scores with — via
the SVD of the factor (see :func:`gmmnet.linalg.basis_from_precision_cholesky`).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from scipy.special import digamma

from .. import linalg
from ..errors import InvalidModelError, NotFittedError, PrecisionWarning, UnsupportedModelError
from ..ir import Component, Mixture, Provenance
from ..versions import library_versions

SUPPORTED = ("GaussianMixture", "BayesianGaussianMixture")
_FITTED = ("means_", "weights_", "precisions_cholesky_", "covariances_")


def _check(est) -> str:
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    if not isinstance(est, (GaussianMixture, BayesianGaussianMixture)):
        raise UnsupportedModelError(
            f"cannot convert {type(est).__module__}.{type(est).__name__}: "
            f"expected a scikit-learn {' or '.join(SUPPORTED)}"
        )
    missing = [a for a in _FITTED if not hasattr(est, a)]
    if missing:
        raise NotFittedError(f"this {type(est).__name__} is not fitted (no {missing[0]}); call fit first")
    return "BayesianGaussianMixture" if isinstance(est, BayesianGaussianMixture) else "GaussianMixture"


def _bayesian_log_constants(est, d: int) -> np.ndarray:
    """Exact extra terms of BayesianGaussianMixture's log-joint beyond log w_k + log N_k(x).

    Mirrors the variational expectations: −(d/2) log ν_k + ½(E[log|Λ_k|] − d/β_k), and the
    digamma log-weights in place of log(weights_).
    """
    dof = np.asarray(est.degrees_of_freedom_, dtype=np.float64)
    log_lambda = d * np.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(d)[:, None])), axis=0)
    extra = -0.5 * d * np.log(dof) + 0.5 * (log_lambda - d / np.asarray(est.mean_precision_, dtype=np.float64))
    wc = est.weight_concentration_
    if est.weight_concentration_prior_type == "dirichlet_process":
        a, b = np.asarray(wc[0], dtype=np.float64), np.asarray(wc[1], dtype=np.float64)
        dsum = digamma(a + b)
        log_w = digamma(a) - dsum + np.hstack((0.0, np.cumsum(digamma(b) - dsum)[:-1]))
    else:
        wc = np.asarray(wc, dtype=np.float64)
        log_w = digamma(wc) - digamma(np.sum(wc))
    with np.errstate(divide="ignore"):
        return extra + log_w - np.log(np.asarray(est.weights_, dtype=np.float64))


def from_sklearn(est, *, eigenvalue_floor: float | None = None, max_condition: float | None = None) -> Mixture:
    """Convert a fitted ``GaussianMixture`` or ``BayesianGaussianMixture`` to the IR.

    A component whose covariance is singular (an eigenvalue that is 0 after the float64
    inversion of ``precisions_cholesky_``) raises :class:`~gmmnet.errors.InvalidModelError`,
    unless an explicit floor is given: ``eigenvalue_floor`` (absolute variance) and/or
    ``max_condition`` (largest λ_max/λ_min per component); see
    :func:`gmmnet.linalg.floor_eigenvalues`.  A floor changes the model, so it is recorded in
    the provenance (``extra["eigenvalue_floor"]`` / ``extra["max_condition"]``).
    """
    linalg.check_floor_options(eigenvalue_floor, max_condition)
    source = _check(est)
    ct = est.covariance_type
    means = np.asarray(est.means_, dtype=np.float64)
    weights = np.asarray(est.weights_, dtype=np.float64)
    pc = np.asarray(est.precisions_cholesky_, dtype=np.float64)
    n_k, d = means.shape
    for name, arr in (("means_", means), ("weights_", weights), ("precisions_cholesky_", pc)):
        if not np.all(np.isfinite(arr)):
            raise InvalidModelError(f"{name} has non-finite values")

    if ct == "full":
        bases = [linalg.basis_from_precision_cholesky(pc[k]) for k in range(n_k)]
    elif ct == "tied":
        bases = [linalg.basis_from_precision_cholesky(pc)] * n_k
    elif ct == "diag":  # axis-aligned: no directions stored (never a d×d identity)
        bases = [(None, 1.0 / pc[k] ** 2) for k in range(n_k)]
    elif ct == "spherical":
        bases = [(None, np.full(d, 1.0 / pc[k] ** 2)) for k in range(n_k)]
    else:  # pragma: no cover - sklearn validates this
        raise UnsupportedModelError(f"unknown covariance_type {ct!r}")
    n_floored = 0
    if eigenvalue_floor is not None or max_condition is not None:
        floored = []
        for vecs, lam in bases:
            new = linalg.floor_eigenvalues(lam, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)
            n_floored += int(np.count_nonzero(new != lam))
            floored.append((vecs, new))
        bases = floored
    for k, (_, lam) in enumerate(bases):
        if not np.all(np.isfinite(lam)):
            raise InvalidModelError(f"component {k} has an infinite variance (a zero in precisions_cholesky_)")
        if np.any(lam <= 0):
            raise InvalidModelError(
                f"component {k} has a singular covariance (eigenvalue {lam.min():.3g}); "
                "pass eigenvalue_floor= (CLI: --eigenvalue-floor) to floor it explicitly"
            )

    extra = {}
    if eigenvalue_floor is not None:
        extra["eigenvalue_floor"] = repr(float(eigenvalue_floor))
    if max_condition is not None:
        extra["max_condition"] = repr(float(max_condition))
    if extra:
        extra["eigenvalues_floored"] = str(n_floored)
    consts = _bayesian_log_constants(est, d) if source == "BayesianGaussianMixture" else np.zeros(n_k)
    # weights_ sum to 1 up to float rounding; renormalize so the IR's check is about real errors
    weights = weights / weights.sum()
    comps = [
        Component(mean=means[k], eigenvectors=vecs, eigenvalues=lam, weight=float(weights[k]), log_constant=float(consts[k]))
        for k, (vecs, lam) in enumerate(bases)
    ]
    return Mixture(
        n_features=d,
        covariance_type=ct,
        components=comps,
        provenance=Provenance(source=f"sklearn.mixture.{source}", versions=library_versions(), extra=extra),
    )


def to_sklearn(mixture: Mixture):
    """A fitted ``GaussianMixture`` equivalent to the IR mixture.

    ``covariance_type`` is kept.  Per-component ``log_constant`` values have no
    place in ``GaussianMixture``; they are folded into the weights (responsibilities
    and labels stay exact, log-likelihoods shift by one constant) with a warning.
    """
    from sklearn.mixture import GaussianMixture

    if mixture.kind != "mixture":
        raise UnsupportedModelError("to_sklearn takes a single Mixture; hierarchies need HierarchicalGaussianMixture")
    ct = mixture.covariance_type
    comps = mixture.components
    n_k, d = mixture.n_components, mixture.n_features
    weights = mixture.weights
    consts = mixture.log_constants
    if np.any(consts != 0):
        warnings.warn(
            "per-component log constants folded into weights; log-likelihoods shift by a constant",
            PrecisionWarning,
            stacklevel=2,
        )
        with np.errstate(divide="ignore"):
            lw = np.log(weights) + consts
        weights = np.exp(lw - lw.max())
        weights = weights / weights.sum()

    covs = (np.stack([linalg.covariance(c.eigenvectors, c.eigenvalues, c.residual_variance) for c in comps])
            if ct in ("full", "tied") else None)  # diag/spherical: never d×d
    if ct == "full":
        covariances = covs
        prec_chol = np.stack([_precision_cholesky(s) for s in covs])
    elif ct == "tied":
        covariances = covs[0]
        prec_chol = _precision_cholesky(covariances)
    elif ct == "diag":
        covariances = np.stack([c.eigenvalues for c in comps])
        prec_chol = 1.0 / np.sqrt(covariances)
    else:
        covariances = np.array([c.eigenvalues[0] for c in comps])
        prec_chol = 1.0 / np.sqrt(covariances)

    gm = GaussianMixture(n_components=n_k, covariance_type=ct)
    gm.weights_ = weights
    gm.means_ = mixture.means
    gm.covariances_ = covariances
    gm.precisions_cholesky_ = prec_chol
    if ct in ("full",):
        gm.precisions_ = np.einsum("kij,klj->kil", prec_chol, prec_chol)
    elif ct == "tied":
        gm.precisions_ = prec_chol @ prec_chol.T
    else:
        gm.precisions_ = prec_chol**2
    gm.converged_ = True
    gm.n_iter_ = 0
    gm.lower_bound_ = -np.inf
    gm.n_features_in_ = d
    return gm


def _precision_cholesky(cov: np.ndarray) -> np.ndarray:
    """sklearn's convention: inv(chol(Σ))ᵀ, upper triangular with Σ⁻¹ = U Uᵀ."""
    try:
        low = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise InvalidModelError("covariance is not positive definite") from None
    return scipy.linalg.solve_triangular(low, np.eye(cov.shape[0]), lower=True).T
