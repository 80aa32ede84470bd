"""The math, in float64 numpy: whitening bases, neurons (W, b) ⇄ Gaussians, reference scoring.

Conventions: a component's eigenvectors are orthonormal *rows* V, sorted by
decreasing eigenvalue λ; its neurons are W = diag(λ^-1/2) V, b = −W μ, and
a = |W x + b| are the 1-D Mahalanobis distances along each principal component.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from .errors import InvalidModelError

LOG_2PI = float(np.log(2.0 * np.pi))


def _sorted_desc(vecs: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-vals, kind="stable")
    return np.ascontiguousarray(vecs[order]), np.ascontiguousarray(vals[order])


def basis_from_precision_cholesky(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-basis of Σ from a factor U with Σ⁻¹ = U Uᵀ (scikit-learn's ``precisions_cholesky_``).

    The SVD of the factor is used instead of eigh(U Uᵀ): singular values of U keep
    relative accuracy ε·cond(U) = ε·√cond(Σ), where eigh of the product would lose
    ε·cond(Σ).  Returns (eigenvectors as rows, eigenvalues), eigenvalues descending.
    """
    u = np.asarray(u, dtype=np.float64)
    _, s, vh = np.linalg.svd(u.T)  # Uᵀ = Q S Vh  ⇒  U Uᵀ = Vhᵀ S² Vh
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise InvalidModelError("precision factor is singular or non-finite")
    with np.errstate(over="ignore", under="ignore"):  # s² past float64's range: λ = 0 is caught by callers
        lam = 1.0 / s**2
    return _sorted_desc(vh, lam)


def basis_from_covariance(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-basis of a symmetric positive-definite covariance (rows, descending eigenvalues)."""
    cov = np.asarray(cov, dtype=np.float64)
    if not np.all(np.isfinite(cov)):
        raise InvalidModelError("covariance has non-finite values")
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2.0)
    if vals.min() <= 0:
        raise InvalidModelError(f"covariance is not positive definite (smallest eigenvalue {vals.min():.3g})")
    return _sorted_desc(vecs.T, vals)


def whitening(eigenvectors: np.ndarray, eigenvalues: np.ndarray) -> np.ndarray:
    """W = diag(λ^-1/2) V: rows are the neurons' weight vectors."""
    return eigenvectors / np.sqrt(eigenvalues)[:, None]


def neurons(mean: np.ndarray, eigenvectors: np.ndarray, eigenvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of one component: W = diag(λ^-1/2) V, b = −W μ."""
    w = whitening(eigenvectors, eigenvalues)
    return w, -(w @ mean)


def gaussian_from_neurons(w: np.ndarray, b: np.ndarray, rcond: float = 1e-12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert a full-rank neuron block: Σ⁻¹ = WᵀW, μ = least-squares point of the hyperplanes Wx + b = 0.

    Invariant to W → R W, b → R b for orthogonal R (whitening is not unique).
    Returns (mean, eigenvectors rows, eigenvalues descending).
    """
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    q, s, vh = np.linalg.svd(w, full_matrices=False)  # W = Q S Vh, WᵀW = Vhᵀ S² Vh
    d = w.shape[1]
    if s.size < d or s[-1] <= rcond * s[0]:
        raise InvalidModelError(f"neuron block has rank < {d}: the Gaussian is not determined by its weights")
    mean = -(vh.T @ ((q.T @ b) / s))
    vecs, vals = _sorted_desc(vh, 1.0 / s**2)
    return mean, vecs, vals


def basis(component) -> np.ndarray:
    """A component's directions as dense rows (the identity for an axis-aligned one: d² numbers)."""
    return component.eigenvectors


def component_whitening(component) -> np.ndarray:
    """W of one component as dense rows (avoid for large axis-aligned d: use :func:`scales`)."""
    return whitening(component.eigenvectors, component.eigenvalues)


def scales(component) -> np.ndarray:
    """λ^-1/2 per direction: an axis-aligned component's whitening is diag(scales)."""
    return 1.0 / np.sqrt(component.eigenvalues)


def project(component, diff: np.ndarray) -> np.ndarray:
    """Whitened coordinates W (x − μ) of centred rows ``diff``, shape (n, r); O(n·d) when axis-aligned."""
    if component.axis_aligned:
        return diff * scales(component)
    return diff @ component_whitening(component).T


def covariance(eigenvectors: np.ndarray, eigenvalues: np.ndarray, residual_variance: float | None = None) -> np.ndarray:
    """Σ = Vᵀ diag(λ) V (+ σ²(I − VᵀV) for the discarded directions)."""
    cov = (eigenvectors.T * eigenvalues) @ eigenvectors
    if residual_variance is not None:
        d = eigenvectors.shape[1]
        cov = cov + residual_variance * (np.eye(d) - eigenvectors.T @ eigenvectors)
    return cov


def log_normalizer(eigenvalues: np.ndarray, n_features: int, residual_variance: float | None = None) -> float:
    """log of N's constant: −½ Σ log λ_i − (d/2) log 2π (residual directions use σ²)."""
    logdet = float(np.sum(np.log(eigenvalues)))
    if residual_variance is not None:
        logdet += (n_features - eigenvalues.size) * float(np.log(residual_variance))
    return -0.5 * logdet - 0.5 * n_features * LOG_2PI


# ---------------------------------------------------------------------------
# Reference scoring (float64, centred form); the ONNX and torch graphs are tested against it.


def component_log_terms(mixture) -> np.ndarray:
    """c_k = log w_k + log-normalizer_k + log_constant_k (−inf for zero weight)."""
    out = np.empty(mixture.n_components)
    for k, c in enumerate(mixture.components):
        with np.errstate(divide="ignore"):
            logw = np.log(c.weight)
        out[k] = logw + log_normalizer(c.eigenvalues, c.n_features, c.residual_variance) + c.log_constant
    return out


def distances(mixture, x: np.ndarray) -> np.ndarray:
    """The Abs activations |W_k (x − μ_k)|, shape (n, Σ_k r_k), components in order."""
    x = np.asarray(x, dtype=np.float64)
    blocks = [np.abs(project(c, x - c.mean)) for c in mixture.components]
    return np.concatenate(blocks, axis=1)


def mahalanobis_sq(mixture, x: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance to every component, shape (n, K)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], mixture.n_components))
    for k, c in enumerate(mixture.components):
        diff = x - c.mean
        z = project(c, diff)
        d2 = np.sum(z * z, axis=1)
        if c.residual_variance is not None:
            proj = diff @ c.eigenvectors.T
            d2 = d2 + (np.sum(diff * diff, axis=1) - np.sum(proj * proj, axis=1)) / c.residual_variance
        out[:, k] = d2
    return out


def log_joint(mixture, x: np.ndarray) -> np.ndarray:
    """log w_k + log N_k(x) + c_k for every row and component, shape (n, K)."""
    return -0.5 * mahalanobis_sq(mixture, x) + component_log_terms(mixture)


def log_likelihood(mixture, x: np.ndarray) -> np.ndarray:
    return logsumexp(log_joint(mixture, x), axis=1)


def responsibilities(mixture, x: np.ndarray) -> np.ndarray:
    lj = log_joint(mixture, x)
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))



def sample(mixture, n_rows: int, seed: int = 0) -> np.ndarray:
    """``n_rows`` points drawn from the mixture (float64), split evenly over the components (≥ 1 each).

    Every component is sampled, whatever its weight: these rows probe the bulk of each Gaussian
    (used to measure a graph's rounding error), not the mixture's density.
    """
    rng = np.random.default_rng(seed)
    K = mixture.n_components
    per = max(1, int(n_rows) // K)
    blocks = []
    for c in mixture.components:
        z = rng.standard_normal((per, c.rank)) * np.sqrt(c.eigenvalues)
        x = c.mean + (z if c.axis_aligned else z @ c.eigenvectors)
        if c.residual_variance is not None:  # the discarded directions: isotropic σ²
            e = rng.standard_normal((per, c.n_features)) * np.sqrt(c.residual_variance)
            x = x + e - (e @ c.eigenvectors.T) @ c.eigenvectors
        blocks.append(x)
    return np.concatenate(blocks)

# ---------------------------------------------------------------------------
# Degenerate models: an explicit eigenvalue floor, and the range a graph's dtype can hold


def floor_eigenvalues(eigenvalues: np.ndarray, *, eigenvalue_floor: float | None = None,
                      max_condition: float | None = None) -> np.ndarray:
    """λ ← max(λ, eigenvalue_floor, max(λ) / max_condition), in float64.

    Non-positive and non-finite-small values (e.g. 0 from an underflowed 1/s²) are raised to
    the floor too; with neither option the eigenvalues are returned unchanged.
    """
    lam = np.array(eigenvalues, dtype=np.float64)
    floor = 0.0
    if eigenvalue_floor is not None:
        floor = max(floor, float(eigenvalue_floor))
    if max_condition is not None and np.any(np.isfinite(lam)) and np.nanmax(lam) > 0:
        floor = max(floor, float(np.nanmax(lam[np.isfinite(lam)])) / float(max_condition))
    if floor > 0:
        lam = np.where(np.isnan(lam) | (lam < floor), floor, lam)
    return lam


def check_floor_options(eigenvalue_floor: float | None, max_condition: float | None) -> None:
    """UsageError unless eigenvalue_floor > 0 and max_condition >= 1 (when given), both finite."""
    from .errors import UsageError

    if eigenvalue_floor is not None and not (np.isfinite(eigenvalue_floor) and eigenvalue_floor > 0):
        raise UsageError(f"eigenvalue floor must be a finite number > 0, got {eigenvalue_floor!r}")
    if max_condition is not None and not (np.isfinite(max_condition) and max_condition >= 1):
        raise UsageError(f"max condition number must be a finite number >= 1, got {max_condition!r}")


def regularize(mixture, *, eigenvalue_floor: float | None = None, max_condition: float | None = None):
    """A copy of an IR mixture (or hierarchy) with every component's eigenvalues floored.

    ``eigenvalue_floor`` is an absolute variance; ``max_condition`` caps each component's
    condition number λ_max/λ_min (its smallest variances are raised to λ_max / max_condition).
    The residual variance of rank-truncated components is floored the same way.  This changes
    the model — densities of the floored directions widen — so gmmnet never does it unasked.
    Returns ``(new_model, n_changed)``, the number of eigenvalues (and residual variances) raised.
    """
    check_floor_options(eigenvalue_floor, max_condition)
    if getattr(mixture, "kind", None) == "hierarchy":
        levels, changed = [], 0
        for m in mixture.levels:
            m2, n = regularize(m, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)
            levels.append(m2)
            changed += n
        if not changed:
            return mixture, 0
        extra = dict(mixture.provenance.extra)
        if eigenvalue_floor is not None:
            extra["eigenvalue_floor"] = repr(float(eigenvalue_floor))
        if max_condition is not None:
            extra["max_condition"] = repr(float(max_condition))
        extra["eigenvalues_floored"] = str(changed)
        provenance = mixture.provenance.model_copy(update={"extra": extra})
        return mixture.model_copy(update={"levels": levels, "provenance": provenance}), changed
    comps, changed = [], 0
    for c in mixture.components:
        lam = floor_eigenvalues(c.eigenvalues, eigenvalue_floor=eigenvalue_floor, max_condition=max_condition)
        update = {"eigenvalues": lam}
        changed += int(np.count_nonzero(lam != c.eigenvalues))
        if c.residual_variance is not None:
            rv = float(floor_eigenvalues(np.array([c.residual_variance]), eigenvalue_floor=eigenvalue_floor)[0])
            if max_condition is not None:
                rv = max(rv, float(lam.max()) / float(max_condition))
            changed += int(rv != c.residual_variance)
            update["residual_variance"] = rv
        comps.append(c.model_copy(update=update))
    if not changed:
        return mixture, 0
    # re-validate: the floor must not produce a model the IR would refuse
    data = mixture.model_dump()
    data["components"] = [c.model_dump() for c in comps]
    extra = dict(data["provenance"].get("extra") or {})
    if eigenvalue_floor is not None:
        extra["eigenvalue_floor"] = repr(float(eigenvalue_floor))
    if max_condition is not None:
        extra["max_condition"] = repr(float(max_condition))
    extra["eigenvalues_floored"] = str(changed)
    data["provenance"]["extra"] = extra
    return type(mixture).model_validate(data), changed


def check_representable(mixture, dtype: str = "float32") -> None:
    """InvalidModelError unless a graph in ``dtype`` can hold the mixture's numbers.

    The neuron weights have norm λ^-1/2 per principal direction and the biases are −w·μ; when
    either leaves the dtype's normal range (overflow to inf, or underflow to 0 which would
    silently drop a direction) the exported graph would output NaN or wrong values.
    """
    if getattr(mixture, "kind", None) == "hierarchy":
        for m in mixture.levels:
            check_representable(m, dtype)
        return
    finfo = np.finfo(np.dtype(dtype))
    hi, lo = float(finfo.max), float(finfo.tiny)
    hint = (" (use --dtype float64 or --compute float64, or --eigenvalue-floor / --max-condition)"
            if dtype != "float64" else "")
    for k, c in enumerate(mixture.components):
        scale = 1.0 / np.sqrt(c.eigenvalues)
        bad = (scale > hi) | (scale < lo)
        if np.any(bad):
            i = int(np.argmax(bad))
            raise InvalidModelError(
                f"component {k}: neuron weight norm λ^-1/2 = {scale[i]:.3g} (eigenvalue {c.eigenvalues[i]:.3g}) "
                f"is outside the {dtype} range [{lo:.3g}, {hi:.3g}]{hint}"
            )
        bias = np.abs(project(c, c.mean[None, :])[0])
        mu = np.abs(c.mean)
        if np.max(mu) > hi or np.max(bias) > hi or not np.all(np.isfinite(bias)):
            raise InvalidModelError(
                f"component {k}: the mean or a neuron bias (max |b| = {np.max(bias):.3g}) overflows {dtype}{hint}"
            )
        logterm = log_normalizer(c.eigenvalues, c.n_features, c.residual_variance) + c.log_constant
        if not abs(logterm) <= hi:
            raise InvalidModelError(f"component {k}: its log-normalizer {logterm:.3g} overflows {dtype}{hint}")


# ---------------------------------------------------------------------------
# Calibration: EM over a mixture whose principal directions are held fixed (docs/recovery.md,
# "Calibrated recovery").  Pure numpy on arrays; gmmnet.recover.calibrate wraps it for the IR.


def fixed_direction_log_joint(x: np.ndarray, means, directions, variances, residuals, weights) -> np.ndarray:
    """log π_k + log N(x; μ_k, V_kᵀ diag(λ_k) V_k + σ_k² (I − V_kᵀ V_k)), shape (n, K).

    ``directions[k]`` is V_k, orthonormal rows (r_k, d), or None for the coordinate axes (an
    axis-aligned component); ``residuals[k]`` is σ_k² (None when r_k = d).  Never builds a d×d
    matrix: the complement's squared distance is ‖x − μ‖² − ‖V (x − μ)‖².
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    out = np.empty((n, len(means)))
    for k, (mu, v, lam, s2, w) in enumerate(zip(means, directions, variances, residuals, weights)):
        diff = x - mu
        z = diff if v is None else diff @ v.T
        d2 = np.einsum("ij,ij->i", z / lam, z)
        logdet = float(np.sum(np.log(lam)))
        if s2 is not None and v is not None:
            rest = np.maximum(np.einsum("ij,ij->i", diff, diff) - np.einsum("ij,ij->i", z, z), 0.0)
            d2 = d2 + rest / s2
            logdet += (d - v.shape[0]) * float(np.log(s2))
        with np.errstate(divide="ignore"):
            out[:, k] = np.log(w) - 0.5 * (d2 + logdet + d * LOG_2PI)
    return out


def fixed_direction_em(x: np.ndarray, means, directions, variances, residuals, weights, *,
                       max_iter: int = 200, tol: float = 1e-6, reg: float = 1e-6) -> dict:
    """Maximum-likelihood mixture over ``x`` with every component's principal directions held fixed.

    Component k is N(μ_k, V_kᵀ diag(λ_k) V_k + σ_k² (I − V_kᵀ V_k)) with V_k fixed (None: the
    coordinate axes, as for a diagonal covariance).  EM
    re-estimates the weights π_k, the means μ_k, the variances λ_k along the directions and
    the isotropic residual σ_k² of the d − r_k directions V_k lacks.  Every M-step is closed
    form (the directions are orthonormal, so the Gaussian factorizes along them):

    - N_k = Σ_n r_nk + 10ε (as scikit-learn, so that an empty component stays defined), π_k = N_k / n
    - μ_k = Σ_n r_nk x_n / N_k
    - λ_ki = Σ_n r_nk (v_iᵀ(x_n − μ_k))² / N_k + reg
    - σ_k² = Σ_n r_nk (‖x_n − μ_k‖² − ‖V_k(x_n − μ_k)‖²) / (N_k (d − r_k)) + reg

    ``reg`` is added to every variance, like scikit-learn's ``reg_covar``.  Iterates until the
    mean log-likelihood per row gains less than ``tol`` (nats) or ``max_iter`` steps.

    Returns a dict: ``means``, ``variances``, ``residuals``, ``weights`` (the fitted
    parameters), ``responsibilities`` (n, K) and ``log_likelihood`` (mean per row) of the fitted
    parameters, ``history`` (mean log-likelihood before each M-step), ``n_iter``, ``converged``.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise InvalidModelError("calibration needs at least 2 rows")
    means = [np.asarray(m, dtype=np.float64).copy() for m in means]
    directions = [None if v is None else np.asarray(v, dtype=np.float64) for v in directions]
    variances = [np.asarray(v, dtype=np.float64).copy() for v in variances]
    residuals = [None if s is None or v is None or v.shape[0] == d else float(s) for s, v in zip(residuals, directions)]
    weights = np.asarray(weights, dtype=np.float64).copy()
    history: list[float] = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        lj = fixed_direction_log_joint(x, means, directions, variances, residuals, weights)
        ll = logsumexp(lj, axis=1)
        history.append(float(np.mean(ll)))
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            converged = True
            n_iter -= 1  # the parameters of the previous M-step already met the tolerance
            break
        resp = np.exp(lj - ll[:, None])
        nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
        weights = nk / nk.sum()
        for k, v in enumerate(directions):
            r = resp[:, k]
            mu = (r @ x) / nk[k]
            diff = x - mu
            z = diff if v is None else diff @ v.T
            means[k] = mu
            variances[k] = (r @ (z * z)) / nk[k] + reg
            if residuals[k] is not None:
                rest = np.maximum(np.einsum("ij,ij->i", diff, diff) - np.einsum("ij,ij->i", z, z), 0.0)
                residuals[k] = float(r @ rest) / (nk[k] * (d - v.shape[0])) + reg
    lj = fixed_direction_log_joint(x, means, directions, variances, residuals, weights)
    ll = logsumexp(lj, axis=1)
    return {
        "means": means, "variances": variances, "residuals": residuals, "weights": weights,
        "responsibilities": np.exp(lj - ll[:, None]), "log_likelihood": float(np.mean(ll)),
        "history": history, "n_iter": n_iter, "converged": converged,
    }


def gaussian_kl(mean0, vecs0, vals0, res0, mean1, vecs1, vals1, res1) -> float:
    """KL(N0 ‖ N1) in nats, closed form, for Gaussians in the IR's (μ, V, λ, σ²) form.

    Builds d×d matrices (the caller checks the size).
    """
    d = np.asarray(mean0).size
    cov0 = covariance(vecs0, vals0, res0)
    prec1 = (vecs1.T / vals1) @ vecs1
    logdet1 = float(np.sum(np.log(vals1)))
    if res1 is not None:
        prec1 = prec1 + (np.eye(d) - vecs1.T @ vecs1) / res1
        logdet1 += (d - vals1.size) * float(np.log(res1))
    logdet0 = float(np.sum(np.log(vals0))) + (0.0 if res0 is None else (d - vals0.size) * float(np.log(res0)))
    diff = np.asarray(mean1, float) - np.asarray(mean0, float)
    return 0.5 * float(np.sum(prec1 * cov0) + diff @ prec1 @ diff - d + logdet1 - logdet0)


def direction_angles(directions: np.ndarray, covariance_matrix: np.ndarray) -> np.ndarray:
    """Angle (degrees) from each row of ``directions`` to its matched eigenvector of ``covariance_matrix``.

    The eigenvectors are matched one-to-one to the directions so as to maximize the summed
    |cosine| (Hungarian algorithm).  Eigenvectors of nearly equal eigenvalues are not
    determined, so their angles can be large for a covariance that barely differs.
    """
    from scipy.optimize import linear_sum_assignment

    _, u = np.linalg.eigh((covariance_matrix + covariance_matrix.T) / 2.0)
    cos = np.abs(np.asarray(directions, float) @ u)
    rows, cols = linear_sum_assignment(-cos)
    out = np.empty(cos.shape[0])
    out[rows] = np.degrees(np.arccos(np.clip(cos[rows, cols], 0.0, 1.0)))
    return out
