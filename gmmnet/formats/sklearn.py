"""scikit-learn models ⇄ IR.

Reads ``GaussianMixture`` and ``BayesianGaussianMixture`` of every covariance type from their
public fitted attributes (no private sklearn helpers).  The Gaussian of a component comes from
``precisions_cholesky_`` — what sklearn scores with — via
:func:`gmmnet.linalg.bases_from_precision_cholesky`.

A ``Pipeline`` is read too when its last step is a mixture (or one of gmmnet's estimators, reached
by duck typing through its ``to_ir()`` method: this module never imports them) and every step
before it is an affine map: StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, PCA,
TruncatedSVD or "passthrough".  The steps compose, in float64, to one
:class:`~gmmnet.ir.InputTransform` z = A x + c on the IR; the mixture lives on z, so the IR's
log-likelihood is ``Pipeline.score_samples`` (a density in the transformed space).
"""

from __future__ import annotations

import math

import numpy as np

from .. import linalg
from ..errors import InvalidModelError, NotFittedError, UnsupportedModelError
from ..ir import Component, Hierarchy, InputTransform, Mixture, Provenance, TransformStep
from ..limits import check_bytes
from ..versions import library_versions

SUPPORTED = ("GaussianMixture", "BayesianGaussianMixture")
_FITTED = ("means_", "weights_", "precisions_cholesky_", "covariances_")
#: The pipeline steps gmmnet folds into an input transform (every other step is refused).
AFFINE_STEPS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "PCA", "TruncatedSVD",
                "passthrough")


def _stand_in_kind(est) -> str | None:
    """The class name (one of SUPPORTED) for a stand-in of a scikit-learn mixture: gmmnet.io's
    FittedState, its fitted attributes read without importing scikit-learn, recognised by its
    ``fitted_state`` marker (this module does not import io); else None."""
    t = type(est)
    if getattr(t, "fitted_state", False) is not True or not t.__module__.startswith("sklearn.mixture."):
        return None
    return t.__qualname__ if t.__qualname__ in SUPPORTED else None


def _check(est) -> str:
    kind = _stand_in_kind(est)
    if kind is None:
        from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

        if not isinstance(est, (GaussianMixture, BayesianGaussianMixture)):
            raise UnsupportedModelError(
                f"cannot convert {type(est).__module__}.{type(est).__name__}: "
                f"expected a scikit-learn {' or '.join(SUPPORTED)} (or a Pipeline ending in one)"
            )
        kind = "BayesianGaussianMixture" if isinstance(est, BayesianGaussianMixture) else "GaussianMixture"
    missing = [a for a in _FITTED if not hasattr(est, a)]
    if missing:
        raise NotFittedError(f"this {type(est).__name__} is not fitted (no {missing[0]}); call fit first")
    return kind


def _bayesian_log_terms(est, d: int) -> np.ndarray:
    """log π̃_k + γ_k: BayesianGaussianMixture's exact per-component log-term beyond log N_k(x).

    Mirrors the variational expectations: the digamma log-weights E[log π_k] (which stay finite
    where ``weights_`` underflows to 0) plus −(d/2) log ν_k + ½(E[log|Λ_k|] − d/β_k).
    """
    from scipy.special import digamma  # only BayesianGaussianMixture needs scipy.special

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
    return extra + log_w


def from_sklearn(est, *, eigenvalue_floor: float | None = None, max_condition: float | None = None):
    """Convert a fitted scikit-learn mixture, a Pipeline ending in one, or a gmmnet estimator, to the IR.

    Parameters
    ----------
    est : GaussianMixture, BayesianGaussianMixture, Pipeline or gmmnet estimator
        A fitted mixture; a ``Pipeline`` whose last step is one (or a gmmnet estimator) and whose
        earlier steps are affine (:data:`AFFINE_STEPS`), which becomes the IR's
        ``input_transform``; or any fitted estimator with a ``to_ir()`` method
        (``HierarchicalGaussianMixture``, ``GaussianMixtureClassifier``).
    eigenvalue_floor, max_condition : float, optional
        A component whose covariance is singular (an eigenvalue that is 0 after the float64
        inversion of ``precisions_cholesky_``) raises :class:`~gmmnet.errors.InvalidModelError`
        unless an explicit floor is given: ``eigenvalue_floor`` (absolute variance) and/or
        ``max_condition`` (largest λ_max/λ_min per component); see
        :func:`gmmnet.linalg.floor_eigenvalues`.  A floor changes the model, so it is recorded in
        the provenance (``extra["eigenvalue_floor"]`` / ``extra["max_condition"]``).

    Returns
    -------
    gmmnet.ir.Mixture or gmmnet.ir.Hierarchy
        A Hierarchy only for a hierarchical estimator.

    Raises
    ------
    UnsupportedModelError
        Another class, or a pipeline step that is not affine (named in the message).
    NotFittedError
        An unfitted mixture or pipeline step.
    InvalidModelError
        Invalid numbers: weights outside [0, 1] or not summing to 1, non-finite values, shapes
        that disagree, a singular covariance.
    """
    linalg.check_floor_options(eigenvalue_floor, max_condition)
    if _stand_in_kind(est) is not None:  # a mixture's fitted attributes: scikit-learn is not needed
        return _from_mixture(est, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)
    from sklearn.pipeline import Pipeline

    if isinstance(est, Pipeline):
        return _from_pipeline(est, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)
    if callable(getattr(est, "to_ir", None)) and not hasattr(est, "precisions_cholesky_"):
        doc = est.to_ir()  # a gmmnet estimator (hierarchy, classifier): its own conversion
        if not isinstance(doc, (Mixture, Hierarchy)):
            raise UnsupportedModelError(f"{type(est).__name__}.to_ir() returned {type(doc).__name__}, not a gmmnet IR document")
        if eigenvalue_floor is not None or max_condition is not None:
            doc, _ = linalg.regularize(doc, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)
        return doc
    return _from_mixture(est, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)


def _array(est, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    try:
        arr = np.asarray(getattr(est, name), dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidModelError(f"{name} is not an array of numbers") from None
    if shape is not None and arr.shape != shape:
        raise InvalidModelError(f"{name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidModelError(f"{name} has non-finite values")
    return arr


def _from_mixture(est, *, eigenvalue_floor: float | None, max_condition: float | None) -> Mixture:
    source = _check(est)
    ct = est.covariance_type
    means = _array(est, "means_")
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise InvalidModelError(f"means_ has shape {means.shape}, expected (n_components, n_features)")
    n_k, d = means.shape
    weights = _array(est, "weights_", (n_k,))
    total = math.fsum(weights)
    if np.any(weights < 0) or not total > 0:
        raise InvalidModelError(f"weights_ must be >= 0 with a positive sum, got {np.array2string(weights, precision=4, threshold=6)}")
    shapes = {"full": (n_k, d, d), "tied": (d, d), "diag": (n_k, d), "spherical": (n_k,)}
    if ct not in shapes:
        raise UnsupportedModelError(f"unknown covariance_type {ct!r}")
    if ct in ("full", "tied"):  # eigenvectors, the precisions and eigh's workspace: ~3 K·d² floats
        n_bases = n_k if ct == "full" else 1
        check_bytes(3 * 8.0 * n_bases * d * d, f"the eigen-bases of {n_bases} {ct} {d}×{d} covariance"
                    + ("s" if n_bases > 1 else ""))
    pc = _array(est, "precisions_cholesky_", shapes[ct])

    if ct == "full":
        vecs, lam = linalg.bases_from_precision_cholesky(pc)
        bases = [(vecs[k], lam[k]) for k in range(n_k)]
    elif ct == "tied":
        vecs, lam = linalg.bases_from_precision_cholesky(pc[None])
        bases = [(vecs[0], lam[0])] * n_k  # one shared array: the IR checks and stores it once
    elif ct == "diag":  # axis-aligned: no directions stored (never a d×d identity)
        with np.errstate(over="ignore", divide="ignore"):
            bases = [(None, 1.0 / pc[k] ** 2) for k in range(n_k)]
    else:
        with np.errstate(over="ignore", divide="ignore"):
            bases = [(None, np.full(d, 1.0 / pc[k] ** 2)) for k in range(n_k)]
    n_floored = 0
    if eigenvalue_floor is not None or max_condition is not None:
        floored = []
        for vecs_k, lam_k in bases:
            new = linalg.floor_eigenvalues(lam_k, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)
            n_floored += int(np.count_nonzero(new != lam_k))
            floored.append((vecs_k, new))
        if ct == "tied":
            floored = [floored[0]] * n_k
        bases = floored
    for k, (_, lam_k) in enumerate(bases):
        if not np.all(np.isfinite(lam_k)):
            raise InvalidModelError(f"component {k} has an infinite variance (a zero in precisions_cholesky_)")
        if np.any(lam_k <= 0):
            raise InvalidModelError(
                f"component {k} has a singular covariance (eigenvalue {lam_k.min():.3g}); "
                "pass eigenvalue_floor= (CLI: --eigenvalue-floor) to floor it explicitly"
            )

    extra = {}
    if eigenvalue_floor is not None:
        extra["eigenvalue_floor"] = repr(float(eigenvalue_floor))
    if max_condition is not None:
        extra["max_condition"] = repr(float(max_condition))
    if extra:
        extra["eigenvalues_floored"] = str(n_floored)
    # GaussianMixture scores with log(weights_) as they are: weights that do not sum to 1 (a model
    # written by to_sklearn from a BayesianGaussianMixture, say) keep their sum Z as log_constant
    weights = weights / total
    consts = np.zeros(n_k)
    if source == "GaussianMixture" and abs(total - 1.0) > 1e-12:
        consts[:] = math.log(total)
        extra["weights_sum"] = repr(total)
    if source == "BayesianGaussianMixture":
        terms = _bayesian_log_terms(est, d)
        if not np.all(np.isfinite(terms)):
            raise InvalidModelError("the BayesianGaussianMixture's variational parameters give non-finite log-weights")
        # weights_ (the posterior mean) underflows to exactly 0 where the digamma log-weight is
        # hundreds of nats below the others; such a component adds nothing anywhere sklearn's own
        # float64 scores are finite, so it keeps weight 0 (absent) instead of an infinite constant
        zero = weights == 0
        with np.errstate(divide="ignore"):
            consts = np.where(zero, 0.0, terms - np.log(np.where(zero, 1.0, weights)))
        if np.any(zero):
            extra["zero_weight_components"] = ",".join(str(int(k)) for k in np.flatnonzero(zero))
            extra["zero_weight_note"] = (
                "weights_ underflowed to 0 (digamma log-weights down to "
                f"{float(np.min(terms[zero])):.4g}); these components are kept with weight 0 and add nothing")
    comps: list = [None] * n_k

    def component(k: int) -> None:
        vecs_k, lam_k = bases[k]
        comps[k] = Component(mean=means[k], eigenvectors=vecs_k, eigenvalues=lam_k, weight=float(weights[k]),
                             log_constant=float(consts[k]))

    # the IR checks each basis (V Vᵀ = I, a d×d product that releases the GIL): on every core, with
    # BLAS limited around the threads (limits entered and left inside each thread could interleave)
    with linalg.serial_blas():
        linalg.map_threads(component, range(n_k))
    return Mixture(
        n_features=d,
        covariance_type=ct,
        components=comps,
        provenance=Provenance(source=f"sklearn.mixture.{source}", versions=library_versions(), extra=extra),
    )


# ---------------------------------------------------------------------------
# Pipelines: affine steps → one InputTransform


def _public_name(step) -> str:
    mod = type(step).__module__
    if mod.startswith("sklearn."):
        mod = ".".join(mod.split(".")[:2])  # sklearn.preprocessing._data → sklearn.preprocessing
    return f"{mod}.{type(step).__qualname__}"


def _json_params(step) -> dict:
    """The step's own parameters that JSON holds as they are (numbers, strings, booleans, None)."""
    out = {}
    for key, value in step.get_params(deep=False).items():
        if isinstance(value, tuple) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            value = list(value)
        if value is None or isinstance(value, (bool, int, str, list)) or (isinstance(value, float) and math.isfinite(value)):
            out[key] = value
    return out


def _fitted(step, name: str, *attrs: str) -> None:
    missing = [a for a in attrs if not hasattr(step, a)]
    if missing:
        raise NotFittedError(f"pipeline step {name!r} ({type(step).__name__}) is not fitted (no {missing[0]}); fit the pipeline first")


def _vector(step, name: str, attr: str, n: int | None = None) -> np.ndarray:
    value = getattr(step, attr)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidModelError(f"pipeline step {name!r}: {attr} is not an array of numbers") from None
    if arr.ndim != 1 or (n is not None and arr.size != n):
        raise InvalidModelError(f"pipeline step {name!r}: {attr} has shape {arr.shape}, expected ({n},)")
    if not np.all(np.isfinite(arr)):
        raise InvalidModelError(f"pipeline step {name!r}: {attr} has non-finite values")
    return arr


def _matrix(step, name: str, attr: str) -> np.ndarray:
    arr = np.asarray(getattr(step, attr), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise InvalidModelError(f"pipeline step {name!r}: {attr} has shape {arr.shape}, expected (n_components, n_features)")
    if not np.all(np.isfinite(arr)):
        raise InvalidModelError(f"pipeline step {name!r}: {attr} has non-finite values")
    return arr


def _not_affine(name: str, step, why: str = "") -> UnsupportedModelError:
    return UnsupportedModelError(
        f"pipeline step {name!r} ({type(step).__name__}) is not an affine map{why}; gmmnet converts pipelines whose "
        f"steps before the mixture are {', '.join(AFFINE_STEPS[:-1])} or 'passthrough'"
    )


def _affine_step(name: str, step) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, int]:
    """One fitted step as z = M x + o: (M or None, diagonal s or None, o, n_inputs)."""
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    kind = type(step)  # exact classes: a subclass may transform differently
    if kind is StandardScaler:
        _fitted(step, name, "n_features_in_")
        n = int(step.n_features_in_)
        s = 1.0 / _vector(step, name, "scale_", n) if step.with_std else np.ones(n)
        o = -_vector(step, name, "mean_", n) * s if step.with_mean else np.zeros(n)
        return None, s, o, n
    if kind is RobustScaler:
        _fitted(step, name, "n_features_in_")
        n = int(step.n_features_in_)
        s = 1.0 / _vector(step, name, "scale_", n) if step.with_scaling else np.ones(n)
        o = -_vector(step, name, "center_", n) * s if step.with_centering else np.zeros(n)
        return None, s, o, n
    if kind is MinMaxScaler:
        if getattr(step, "clip", False):
            raise _not_affine(name, step, " (clip=True clips to feature_range)")
        _fitted(step, name, "scale_", "min_")
        s = _vector(step, name, "scale_")
        return None, s, _vector(step, name, "min_", s.size), s.size
    if kind is MaxAbsScaler:
        if getattr(step, "clip", False):
            raise _not_affine(name, step, " (clip=True clips to [-1, 1])")
        _fitted(step, name, "scale_")
        s = 1.0 / _vector(step, name, "scale_")
        return None, s, np.zeros(s.size), s.size
    if kind is PCA:
        _fitted(step, name, "components_", "mean_")
        comp = _matrix(step, name, "components_")
        mean = _vector(step, name, "mean_", comp.shape[1])
        if step.whiten:  # sklearn divides by √explained_variance_, clipped below at machine epsilon
            scale = np.sqrt(_vector(step, name, "explained_variance_", comp.shape[0]))
            scale[scale < np.finfo(np.float64).eps] = np.finfo(np.float64).eps
            comp = comp / scale[:, None]
        return comp, None, -(comp @ mean), comp.shape[1]
    if kind is TruncatedSVD:
        _fitted(step, name, "components_")
        comp = _matrix(step, name, "components_")
        return comp, None, np.zeros(comp.shape[0]), comp.shape[1]
    raise _not_affine(name, step)


def _flat_steps(steps, prefix: str = "") -> list[tuple[str, object]]:
    from sklearn.pipeline import Pipeline

    out = []
    for name, step in steps:
        if isinstance(step, Pipeline):  # a nested pipeline of affine steps is affine too
            out += _flat_steps(step.steps, f"{prefix}{name}__")
        else:
            out.append((f"{prefix}{name}", step))
    return out


def compose_steps(steps) -> InputTransform | None:
    """Compose fitted affine pipeline steps ``[(name, step), ...]`` into one z = A x + c.

    Diagonal steps (scalers) keep A diagonal (stored as ``scale``); a PCA or TruncatedSVD makes it
    dense (k×d).  Composition runs in float64: z₂ = M₂(M₁x + o₁) + o₂ = (M₂M₁)x + (M₂o₁ + o₂).

    Returns
    -------
    gmmnet.ir.InputTransform or None
        None when every step is "passthrough" (or None).

    Raises
    ------
    UnsupportedModelError
        A step that is not affine, named in the message.
    """
    a = s = c = None
    width = None
    record = []
    for name, step in _flat_steps(steps):
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if isinstance(step, str) or not hasattr(step, "get_params"):
            raise _not_affine(name, step)
        inner = None
        if callable(getattr(step, "to_input_transform", None)):  # gmmnet's own AffineTransform
            inner = step.to_input_transform()
            m, sd, o, n_in = inner.matrix, inner.scale, inner.offset, inner.n_inputs
        else:
            m, sd, o, n_in = _affine_step(name, step)
        if width is not None and n_in != width:
            raise InvalidModelError(f"pipeline step {name!r} takes {n_in} features, but the step before gives {width}")
        if m is not None:
            check_bytes(8.0 * m.size * 2, f"the input transform of pipeline step {name!r}")
        if c is None:  # the first step
            a, s, c = m, sd, o
        elif m is None:  # diagonal after anything: scale the rows
            a, s, c = (None, s * sd, c * sd + o) if a is None else (a * sd[:, None], None, c * sd + o)
        else:  # dense after anything
            a, s, c = (m * s if a is None else m @ a), None, m @ c + o
        width = m.shape[0] if m is not None else sd.size
        # an AffineTransform read back from a graph records the steps it was composed from
        record += list(inner.steps) if inner is not None and inner.steps else [
            TransformStep(name=name, cls=_public_name(step), params=_json_params(step))]
    if c is None:
        return None
    return InputTransform(matrix=a, scale=s, offset=c, steps=record)


def _from_pipeline(pipe, *, eigenvalue_floor, max_condition):
    steps = list(pipe.steps)
    if not steps:
        raise UnsupportedModelError("the pipeline has no steps")
    name, last = steps[-1]
    if last is None or isinstance(last, str):
        raise UnsupportedModelError(f"the pipeline's last step {name!r} is {last!r}; it must be a fitted mixture")
    outer = compose_steps(steps[:-1])  # refuse a step that is not affine before any heavy work
    try:
        doc = from_sklearn(last, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)
    except (UnsupportedModelError, NotFittedError) as exc:
        raise type(exc)(f"the pipeline's last step {name!r}: {exc}") from None
    if outer is None:
        return doc
    t = outer if doc.input_transform is None else _then(outer, doc.input_transform)
    if t.n_outputs != (doc.levels[0].n_features if isinstance(doc, Hierarchy) else doc.n_features):
        raise InvalidModelError(f"the pipeline's steps give {t.n_outputs} features, but its last step {name!r} takes "
                                f"{doc.levels[0].n_features if isinstance(doc, Hierarchy) else doc.n_features}")
    data = {field: getattr(doc, field) for field in type(doc).model_fields}
    data["input_transform"] = t
    return type(doc)(**data)


def _then(first: InputTransform, second: InputTransform) -> InputTransform:
    """The transform that applies ``first``, then ``second``."""
    if second.n_inputs != first.n_outputs:
        raise InvalidModelError(f"input transforms do not chain: {first.n_outputs} outputs into {second.n_inputs} inputs")
    if second.matrix is None:
        sd = second.scale
        if first.matrix is None:
            a, s = None, first.scale * sd
        else:
            a, s = first.matrix * sd[:, None], None
        c = first.offset * sd + second.offset
    else:
        m = second.matrix
        a, s = (m * first.scale if first.matrix is None else m @ first.matrix), None
        c = m @ first.offset + second.offset
    return InputTransform(matrix=a, scale=s, offset=c, steps=list(first.steps) + list(second.steps))


# ---------------------------------------------------------------------------
# IR → GaussianMixture


def to_sklearn(mixture: Mixture):
    """A fitted ``GaussianMixture`` that scores exactly like the IR mixture.

    ``covariance_type`` is kept.  ``precisions_cholesky_`` (sklearn's upper-triangular U with
    Σ⁻¹ = U Uᵀ) is built stably from the eigenvectors and eigenvalues
    (:func:`gmmnet.linalg.precision_cholesky`), never by inverting a covariance.

    Per-component ``log_constant`` values (a BayesianGaussianMixture's) go into ``weights_``:
    GaussianMixture scores with ``log(weights_)`` as they are, so ``weights_[k] =
    w_k·exp(log_constant_k)`` makes ``score_samples``, ``predict_proba`` and ``predict`` exact.
    Those weights then sum to Z ≤ 1, not 1: ``sample`` draws component counts from them as
    probabilities (numpy gives the last component the missing 1 − Z), so normalize ``weights_``
    first if you sample (this shifts ``score_samples`` by −log Z).

    Raises
    ------
    UnsupportedModelError
        A hierarchy, or a mixture with an input transform: use
        :func:`gmmnet.pipeline.to_estimator` (a Pipeline of an AffineTransform and the mixture).
    """
    from sklearn.mixture import GaussianMixture

    if getattr(mixture, "kind", None) != "mixture":
        raise UnsupportedModelError("to_sklearn takes a single Mixture; hierarchies need HierarchicalGaussianMixture")
    if mixture.input_transform is not None:
        raise UnsupportedModelError(
            "this mixture lives behind an input transform (a pipeline's affine steps); "
            "gmmnet.pipeline.to_estimator gives a Pipeline of AffineTransform and GaussianMixture")
    ct = mixture.covariance_type
    comps = mixture.components
    n_k, d = mixture.n_components, mixture.n_features
    weights, consts = mixture.weights, mixture.log_constants
    with np.errstate(divide="ignore", under="ignore", over="ignore"):  # w·exp(γ), in logs where γ ≠ 0
        weights = np.where(consts == 0, weights, np.exp(np.log(weights) + consts))

    if ct in ("full", "tied"):
        uniq = comps[:1] if ct == "tied" else comps
        check_bytes(4 * 8.0 * len(uniq) * d * d, f"the covariances and precision factors of {len(uniq)} {d}×{d} components")
        with linalg.serial_blas():  # K products of d×d: BLAS threads only contend
            covs = np.stack([linalg.covariance(c.eigenvectors, c.eigenvalues, c.residual_variance) for c in uniq])
            prec_chol = linalg.precision_cholesky([c.eigenvectors for c in uniq], [c.eigenvalues for c in uniq],
                                                  [c.residual_variance for c in uniq])
            precisions = prec_chol @ np.swapaxes(prec_chol, 1, 2)
        if ct == "tied":
            covs, prec_chol, precisions = covs[0], prec_chol[0], precisions[0]
    else:  # diag/spherical: never d×d
        if any(c.residual_variance is not None for c in comps):  # pragma: no cover - the IR refuses it
            raise UnsupportedModelError("an axis-aligned component cannot be rank-truncated")
        covs = np.stack([c.eigenvalues for c in comps]) if ct == "diag" else np.array([c.eigenvalues[0] for c in comps])
        prec_chol = 1.0 / np.sqrt(covs)
        precisions = 1.0 / covs

    gm = GaussianMixture(n_components=n_k, covariance_type=ct)
    gm.weights_ = weights
    gm.means_ = mixture.means
    gm.covariances_ = covs
    gm.precisions_cholesky_ = prec_chol
    gm.precisions_ = precisions
    gm.converged_ = True
    gm.n_iter_ = 0
    gm.lower_bound_ = -np.inf
    gm.n_features_in_ = d
    return gm
