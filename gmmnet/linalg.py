"""The math, in float64 numpy: whitening bases, neurons (W, b) ⇄ Gaussians, reference scoring.

Conventions: a component's eigenvectors are orthonormal *rows* V, sorted by
decreasing eigenvalue λ; its neurons are W = diag(λ^-1/2) V, b = −W μ, and
a = |W x + b| are the 1-D Mahalanobis distances along each principal component.

A mixture with an input transform (z = A x + c, a Pipeline's affine steps) lives on z; the
reference scoring here takes the raw rows x and applies the transform first.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidModelError, UsageError
from .limits import serial_blas

LOG_2PI = float(np.log(2.0 * np.pi))


def logsumexp(a: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """scipy.special.logsumexp, imported on first use (scipy.special costs ~0.1 s to import and
    converting a model never needs it)."""
    from scipy.special import logsumexp as _logsumexp

    return _logsumexp(a, axis=axis, keepdims=keepdims)

#: Largest condition number λ_max/λ_min for which a component's basis comes from eigh of its
#: precision (error ≈ ε·cond ≤ 1e-13 relative in D²); above it the Jacobi SVD of the factor is used.
FAST_BASIS_MAX_CONDITION = 1e3


# ---------------------------------------------------------------------------
# BLAS threads (serial_blas lives in gmmnet.limits, with the other resource limits)


def map_threads(fn, items) -> None:
    """Run ``fn`` on every item, on up to os.cpu_count() threads (numpy's LAPACK calls release the GIL).

    Each thread runs single-threaded BLAS (:func:`serial_blas`), so the machine's cores are shared
    by plain threads that do not spin: no collapse when other processes load the CPU.
    """
    import os

    items = list(items)
    workers = min(len(items), os.cpu_count() or 1, 8)
    if workers <= 1:
        for item in items:
            fn(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, items):  # re-raises the first exception
            pass


# ---------------------------------------------------------------------------
# Bases


def _sorted_desc(vecs: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-vals, kind="stable")
    return np.ascontiguousarray(vecs[order]), np.ascontiguousarray(vals[order])


def _jacobi_basis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, eigenvalues descending) of Σ = (U Uᵀ)⁻¹ from LAPACK's Jacobi SVD of Uᵀ (dgejsv).

    dgejsv keeps high relative accuracy when Uᵀ = B D with a badly scaled diagonal D and a
    well-conditioned B, which is what raw features with scales 1e-3…1e4 give; an ordinary SVD
    loses ε·√cond(Σ) there (6e-9 on raw breast_cancer with reg_covar 1e-10, 5e-12 with dgejsv).
    """
    from scipy.linalg import lapack

    # joba=2 ('F': scaled on both sides), jobu=3 ('N': no left vectors), jobv=0 ('V'),
    # jobr=1 ('R': restricted range), jobt=0 (may transpose), jobp=1 (no perturbation)
    sva, _, v, work, _, info = lapack.dgejsv(np.asfortranarray(u.T), joba=2, jobu=3, jobv=0, jobr=1, jobt=0, jobp=1)
    if info != 0:  # pragma: no cover - LAPACK convergence failure
        _, s, vh = np.linalg.svd(u.T)
        v, sva, work = vh.T, s, np.ones(2)
    s = sva * (work[1] / work[0])  # dgejsv returns scaled singular values: σ = (work[2]/work[1])·sva
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        lam = 1.0 / s**2
    return _sorted_desc(np.ascontiguousarray(v.T), lam)


def bases_from_precision_cholesky(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-bases of K covariances from factors U_k with Σ_k⁻¹ = U_k U_kᵀ (scikit-learn's
    ``precisions_cholesky_``, shape (K, d, d)).

    One batched ``eigh`` of the precisions U Uᵀ is exact to ε·cond(Σ); components whose
    condition number exceeds :data:`FAST_BASIS_MAX_CONDITION` (raw, badly scaled features) are
    redone with the Jacobi SVD of the factor (:func:`_jacobi_basis`), which keeps relative
    accuracy there.  BLAS runs single-threaded (see :func:`serial_blas`).

    Returns
    -------
    eigenvectors : ndarray of shape (K, d, d)
        Rows, sorted by decreasing eigenvalue.
    eigenvalues : ndarray of shape (K, d)
        Descending.  A singular factor gives ``inf``, a huge precision 0 (callers floor or refuse
        them); a non-finite factor raises :class:`~gmmnet.errors.InvalidModelError`.
    """
    u = np.asarray(u, dtype=np.float64)
    if not np.all(np.isfinite(u)):
        raise InvalidModelError("precision factor has non-finite values")
    n_k, d = u.shape[0], u.shape[-1]
    vecs = np.empty((n_k, d, d))
    lam = np.empty((n_k, d))

    def batch(lo: int) -> None:  # 32 precisions at a time: bounded temporaries
        part = u[lo:lo + 32]
        prec = part @ np.swapaxes(part, 1, 2)
        finite = np.all(np.isfinite(prec), axis=(1, 2))  # an overflowing precision goes to Jacobi
        prec[~finite] = np.eye(d)
        try:
            vals, v = np.linalg.eigh(prec)  # ascending precision = descending λ
        except np.linalg.LinAlgError:  # pragma: no cover - no convergence: Jacobi for this batch
            vals, v, finite[:] = np.ones((len(part), d)), np.zeros_like(prec), False
        vecs[lo:lo + 32] = np.swapaxes(v, 1, 2)
        lam[lo:lo + 32] = np.where(finite[:, None], 1.0 / vals, np.nan)
        lo_val = np.min(lam[lo:lo + 32], axis=1)
        fast = (np.all(np.isfinite(lam[lo:lo + 32]), axis=1) & (lo_val > 0)
                & (np.max(lam[lo:lo + 32], axis=1) <= FAST_BASIS_MAX_CONDITION * lo_val))
        redo.extend((lo + np.flatnonzero(~fast)).tolist())

    def jacobi(k: int) -> None:
        vecs[k], lam[k] = _jacobi_basis(u[k])

    redo: list[int] = []
    with serial_blas(), np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        map_threads(batch, range(0, n_k, 32))
    if redo:  # scipy's LAPACK, loaded before serial_blas so that it limits scipy's BLAS too
        import scipy.linalg  # noqa: F401

        with serial_blas(), np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            map_threads(jacobi, sorted(redo))
    return vecs, lam


def basis_from_precision_cholesky(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-basis of Σ from one factor U with Σ⁻¹ = U Uᵀ: :func:`bases_from_precision_cholesky`
    for K = 1.  Returns (eigenvectors as rows, eigenvalues descending); a singular factor raises
    :class:`~gmmnet.errors.InvalidModelError` (an eigenvalue that underflows to 0 is returned:
    callers floor it or refuse it)."""
    vecs, lam = bases_from_precision_cholesky(np.asarray(u, dtype=np.float64)[None])
    if not np.all(np.isfinite(lam[0])):
        raise InvalidModelError("precision factor is singular or non-finite")
    return vecs[0], lam[0]


def basis_from_covariance(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-basis of a symmetric positive-definite covariance (rows, descending eigenvalues)."""
    cov = np.asarray(cov, dtype=np.float64)
    if not np.all(np.isfinite(cov)):
        raise InvalidModelError("covariance has non-finite values")
    with serial_blas():  # called once per component in loops: BLAS threads only contend
        vals, vecs = np.linalg.eigh((cov + cov.T) / 2.0)
    if vals.min() <= 0:
        raise InvalidModelError(f"covariance is not positive definite (smallest eigenvalue {vals.min():.3g})")
    return _sorted_desc(vecs.T, vals)


def precision_cholesky(eigenvectors: np.ndarray, eigenvalues: np.ndarray,
                       residual_variances=None) -> np.ndarray:
    """scikit-learn's ``precisions_cholesky_`` from eigen-bases, stably: U upper triangular with
    Σ⁻¹ = U Uᵀ and a positive diagonal (sklearn's convention is inv(chol(Σ))ᵀ, see
    scikit-learn #10141).

    With M = Λ^-1/2 V (the neurons' weights), Σ⁻¹ = MᵀM.  A QR of M with its columns reversed,
    M J = Q R, gives Σ⁻¹ = (J Rᵀ J)(J R J), and U = J Rᵀ J is upper triangular.  The rows of M
    are sorted by decreasing size first (Householder QR is then row-wise stable), so the factor
    keeps relative accuracy where inverting or Cholesky-factoring an ill-conditioned Σ would not
    (1.3e-7 → 8e-12 in score_samples on points along a line in 3-D, cond(Σ) ≈ 2e10).

    Parameters
    ----------
    eigenvectors : sequence of K arrays of shape (r_k, d)
        Orthonormal rows (an ndarray of shape (K, r, d) will do).
    eigenvalues : sequence of K arrays of shape (r_k,)
    residual_variances : sequence of K floats or None, optional
        σ² of the d − r_k discarded directions of a rank-truncated component.

    Returns
    -------
    ndarray of shape (K, d, d)
    """
    n_k, d = len(eigenvectors), np.shape(eigenvectors[0])[1]
    m = np.empty((n_k, d, d))
    with serial_blas():
        for k in range(n_k):
            v, lam = np.asarray(eigenvectors[k], dtype=np.float64), np.asarray(eigenvalues[k], dtype=np.float64)
            r = v.shape[0]
            m[k, :r] = v / np.sqrt(lam)[:, None]
            if r < d:  # the discarded directions: an orthonormal basis of V's complement, / σ
                sigma2 = None if residual_variances is None else residual_variances[k]
                if sigma2 is None:
                    raise InvalidModelError("a rank-truncated component needs its residual variance")
                q, _ = np.linalg.qr(v.T, mode="complete")
                m[k, r:] = q[:, r:].T / np.sqrt(sigma2)
        order = np.argsort(-np.max(np.abs(m), axis=2), axis=1, kind="stable")
        m = np.take_along_axis(m, order[:, :, None], axis=1)
        rr = np.linalg.qr(m[:, :, ::-1], mode="r")
    rr = rr * np.sign(np.diagonal(rr, axis1=1, axis2=2))[:, :, None]
    return np.ascontiguousarray(np.swapaxes(rr, 1, 2)[:, ::-1, ::-1])


def whitening(eigenvectors: np.ndarray, eigenvalues: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """W = diag(λ^-1/2) V: rows are the neurons' weight vectors (written into ``out`` if given)."""
    return np.divide(eigenvectors, np.sqrt(eigenvalues)[:, None], out=out)


def neurons(mean: np.ndarray, eigenvectors: np.ndarray, eigenvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of one component: W = diag(λ^-1/2) V, b = −W μ."""
    w = whitening(eigenvectors, eigenvalues)
    return w, -(w @ mean)


def column_scales(w: np.ndarray) -> np.ndarray:
    """Column norms of ``w`` (1 for an all-zero column): ``w / column_scales(w)`` has equilibrated columns."""
    s = np.linalg.norm(w, axis=0)
    s[s == 0] = 1.0
    return s


def neuron_rank(w: np.ndarray, rcond: float) -> int:
    """Rank of a neuron block, scale-invariant: singular values above ``rcond`` × the largest, columns equilibrated.

    Features in other units (a column scaled by 1e5) change W's plain singular values by that much
    but not the rank: deciding it on W / column_scales(W) keeps a cut-off meaningful.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        return 0
    sv = np.linalg.svd(w / column_scales(w), compute_uv=False)
    return int(np.sum(sv > rcond * sv[0])) if sv[0] > 0 else 0


#: Column-norm ratio above which :func:`gaussian_from_neurons` inverts the equilibrated block.
EQUILIBRATE_RATIO = 8.0


def gaussian_from_neurons(w: np.ndarray, b: np.ndarray, rcond: float = 1e-12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert a full-rank neuron block: Σ⁻¹ = WᵀW, μ = least-squares point of the hyperplanes Wx + b = 0.

    Invariant to W → R W, b → R b for orthogonal R (whitening is not unique).  When the columns'
    norms differ widely (features on scales 1e5 apart), the block is inverted in equilibrated
    coordinates u = D x (D the column norms): W D⁻¹ = Q S Vh is well conditioned, and
    Σ = F Fᵀ with F = D⁻¹ Vhᵀ S⁻¹, whose SVD gives the eigenvectors and variances; a plain SVD
    of W would lose ε·cond(W) on the small ones.  The rank test is on the equilibrated block.
    Returns (mean, eigenvectors rows, eigenvalues descending).
    """
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = w.shape[1]
    scale = column_scales(w)
    equil = float(scale.max()) > EQUILIBRATE_RATIO * float(scale.min())
    with serial_blas():  # called once per component in loops: BLAS threads only contend
        q, s, vh = np.linalg.svd(w / scale if equil else w, full_matrices=False)  # W = Q S Vh, WᵀW = Vhᵀ S² Vh
    if s.size < d or s[-1] <= rcond * s[0]:
        raise InvalidModelError(f"neuron block has rank < {d}: the Gaussian is not determined by its weights")
    mean = -(vh.T @ ((q.T @ b) / s))
    if not equil:
        vecs, vals = _sorted_desc(vh, 1.0 / s**2)
        return mean, vecs, vals
    with serial_blas():
        u, sf, _ = np.linalg.svd((vh.T / s) / scale[:, None], full_matrices=False)  # F = D⁻¹ Vhᵀ S⁻¹
    vecs, vals = _sorted_desc(np.ascontiguousarray(u.T), sf**2)
    return mean / scale, vecs, vals


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


def inputs(mixture, x: np.ndarray) -> np.ndarray:
    """The rows the components see: z = A x + c when the mixture has an input transform, else x."""
    x = np.asarray(x, dtype=np.float64)
    t = getattr(mixture, "input_transform", None)
    return x if t is None else t.apply(x)


def component_log_terms(mixture) -> np.ndarray:
    """c_k = log w_k + log-normalizer_k + log_constant_k (−inf for zero weight)."""
    out = np.empty(mixture.n_components)
    for k, c in enumerate(mixture.components):
        with np.errstate(divide="ignore"):
            logw = np.log(c.weight)
        out[k] = logw + log_normalizer(c.eigenvalues, c.n_features, c.residual_variance) + c.log_constant
    return out


def distances(mixture, x: np.ndarray) -> np.ndarray:
    """The Abs activations |W_k (z − μ_k)|, shape (n, Σ_k r_k), components in order (z = :func:`inputs`)."""
    x = inputs(mixture, x)
    blocks = [np.abs(project(c, x - c.mean)) for c in mixture.components]
    return np.concatenate(blocks, axis=1)


def mahalanobis_sq(mixture, x: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance to every component, shape (n, K), of the rows z = :func:`inputs`."""
    x = inputs(mixture, x)
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
    """log w_k + log N_k(z) + c_k for every row and component, shape (n, K).

    ``x`` holds the model's input rows; with an input transform the components see z = A x + c,
    and the result is the density over z (what ``Pipeline.score_samples`` returns).
    """
    return -0.5 * mahalanobis_sq(mixture, x) + component_log_terms(mixture)


def log_likelihood(mixture, x: np.ndarray) -> np.ndarray:
    """log p of every input row (over z = A x + c when the mixture has an input transform)."""
    return logsumexp(log_joint(mixture, x), axis=1)


def responsibilities(mixture, x: np.ndarray) -> np.ndarray:
    """Posterior component probabilities of every input row, shape (n, K)."""
    lj = log_joint(mixture, x)
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def sample(mixture, n_rows: int, seed: int = 0) -> np.ndarray:
    """``n_rows`` input rows drawn from the mixture (float64), split evenly over the components (≥ 1 each).

    Every component is sampled, whatever its weight: these rows probe the bulk of each Gaussian
    (used to measure a graph's rounding error), not the mixture's density.  With an input
    transform the rows are inputs x with A x + c = z for z drawn in the mixture's space
    (:func:`preimage`).
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
    z = np.concatenate(blocks)
    t = getattr(mixture, "input_transform", None)
    return z if t is None else preimage(t, z)

# ---------------------------------------------------------------------------
# Input transforms z = A x + c (a Pipeline's affine steps): fold, unfold, raw coordinates


def right_inverse(A: np.ndarray) -> np.ndarray:
    """R with A R = I for A of full row rank, from the column-equilibrated A (scale-safe)."""
    s = np.linalg.norm(A, axis=0)
    s[s == 0] = 1.0
    return np.linalg.pinv(A / s) / s[:, None]


def preimage(transform, z: np.ndarray) -> np.ndarray:
    """Input rows x with A x + c = z (least squares, minimum norm, when A is not square)."""
    z = np.asarray(z, dtype=np.float64) - transform.offset
    if transform.matrix is None:
        s = transform.scale
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s != 0, z / s, 0.0)
    return np.linalg.lstsq(transform.matrix, z.T, rcond=None)[0].T


def log_abs_det(transform) -> float:
    """log|det A| of a square transform: log p_x(x) = log p_z(A x + c) + log|det A|.

    The graph and ``Pipeline.score_samples`` give log p_z, the density over the transformed
    features; a density over the raw inputs x differs from it by this constant.
    Raises :class:`~gmmnet.errors.InvalidModelError` when A is not square or is singular.
    """
    if transform.matrix is None:
        s = transform.scale
        if np.any(s == 0):
            raise InvalidModelError("the input transform is singular (a zero scale)")
        return float(np.sum(np.log(np.abs(s))))
    a = transform.matrix
    if a.shape[0] != a.shape[1]:
        raise InvalidModelError(f"the input transform maps {a.shape[1]} inputs to {a.shape[0]} features: "
                                "it has no inverse and no determinant")
    sign, logdet = np.linalg.slogdet(a)
    if sign == 0 or not np.isfinite(logdet):
        raise InvalidModelError("the input transform is singular")
    return float(logdet)


def fold_neurons(w: np.ndarray, b: np.ndarray, transform) -> tuple[np.ndarray, np.ndarray]:
    """Neurons (W, b) on z = A x + c as neurons on x: (W A, b + W c).

    Each neuron stays one affine map followed by Abs, now in raw units.  Fold per component,
    after centering in z-space (b = −W μ), so that float32 keeps what centering won.
    """
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    wa = w * transform.scale if transform.matrix is None else w @ transform.matrix
    return wa, b + w @ transform.offset


def unfold_neurons(w: np.ndarray, b: np.ndarray, transform) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`fold_neurons`: neurons (W', b') on x as neurons on z, (W' A⁺, b' − W c).

    Exact when A is invertible, or when the rows of W' lie in A's row space (a folded layer's
    always do); otherwise the least-squares W with W A ≈ W'.
    """
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if transform.matrix is None:
        s = transform.scale
        with np.errstate(divide="ignore", invalid="ignore"):
            wz = np.where(s != 0, w / s, 0.0)
    else:
        wz = np.linalg.lstsq(transform.matrix.T, w.T, rcond=None)[0].T
    return wz, b - wz @ transform.offset


def _full_rank_neurons(component) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) with WᵀW = Σ⁻¹ of a dense component, residual directions included (d rows)."""
    v, lam = component.eigenvectors, component.eigenvalues
    w = v / np.sqrt(lam)[:, None]
    if component.residual_variance is not None:
        q, _ = np.linalg.qr(v.T, mode="complete")
        w = np.vstack([w, q[:, v.shape[0]:].T / np.sqrt(component.residual_variance)])
    return w, -(w @ component.mean)


def raw_view(mixture):
    """The mixture over the raw inputs x, for an invertible input transform (k = d_in).

    Component k becomes N(x; μ' = A⁻¹(μ − c), Σ' = A⁻¹ΣA⁻ᵀ), a normalized density over x, so the
    result's log-likelihood is the original's plus :func:`log_abs_det` (the pipeline's density
    is over z).  Weights and log constants are kept.  A diagonal A keeps diag and spherical
    components axis-aligned (spherical becomes diag unless the scales are equal); otherwise the
    result is ``full`` (``tied`` stays tied).

    Returns
    -------
    (gmmnet.ir.Mixture, float)
        The raw-coordinates mixture (no input transform) and log|det A|.

    Raises
    ------
    InvalidModelError
        A is not square or is singular (a PCA that keeps fewer components than features: the
        Gaussians over x are degenerate along the dropped directions).
    """
    from .ir import Component, Mixture

    t = mixture.input_transform
    if t is None:
        return mixture, 0.0
    logdet = log_abs_det(t)
    ct = mixture.covariance_type
    comps = []
    if t.matrix is None and ct in ("diag", "spherical"):
        s = t.scale
        for c in mixture.components:
            comps.append(Component(mean=(c.mean - t.offset) / s, eigenvectors=None, eigenvalues=c.eigenvalues / s**2,
                                   weight=c.weight, log_constant=c.log_constant))
        new_ct = "spherical" if ct == "spherical" and np.ptp(np.abs(s)) == 0 else "diag"
    else:
        shared = None
        with serial_blas():
            for c in mixture.components:
                if c.axis_aligned:
                    w, b = np.diag(scales(c)), -(scales(c) * c.mean)
                else:
                    w, b = _full_rank_neurons(c)
                wx, bx = fold_neurons(w, b, t)
                if ct == "tied" and shared is not None:  # one covariance: only the mean moves
                    vecs, vals = shared
                    mean = preimage(t, c.mean[None])[0]
                else:
                    mean, vecs, vals = gaussian_from_neurons(wx, bx)
                    shared = (vecs, vals)
                comps.append(Component(mean=mean, eigenvectors=vecs, eigenvalues=vals, weight=c.weight,
                                       log_constant=c.log_constant))
        new_ct = "tied" if ct == "tied" else "full"
    extra = dict(mixture.provenance.extra)
    extra["raw_view_log_abs_det"] = repr(logdet)
    prov = mixture.provenance.model_copy(update={"extra": extra})
    return Mixture(n_features=t.n_inputs, covariance_type=new_ct, components=comps, provenance=prov,
                   diagnostics=mixture.diagnostics), logdet


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
        # |b| = |w·μ| per neuron, as (V μ)·λ^-½: no d×d whitening built for a range check
        bias = np.abs(c.mean * scale if c.axis_aligned else (c.stored_eigenvectors @ c.mean) * scale)
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


#: How ``fixed_direction_em`` models the d − r_k directions a component's layer lacks.
RESIDUAL_MODES = ("isotropic", "full")


def complement_basis(v: np.ndarray) -> np.ndarray:
    """Orthonormal rows (d − r, d) spanning the orthogonal complement of the orthonormal rows ``v`` (r, d).

    The trailing right singular vectors of ``v``: exact to rounding for orthonormal ``v``.
    Builds a d×d matrix (the caller checks the size).
    """
    v = np.asarray(v, dtype=np.float64)
    return np.linalg.svd(v, full_matrices=True)[2][v.shape[0]:]


def fixed_direction_log_joint(x: np.ndarray, means, directions, variances, residuals, weights,
                              complements=None) -> np.ndarray:
    """log π_k + log N(x; μ_k, Σ_k), shape (n, K), Σ_k = V_kᵀ diag(λ_k) V_k + (the complement's part).

    ``directions[k]`` is V_k, orthonormal rows (r_k, d), or None for the coordinate axes (an
    axis-aligned component).  The complement of V_k is modelled by ``residuals[k]``:

    - None: nothing (r_k = d);
    - a float σ_k²: isotropic, σ_k² (I − V_kᵀ V_k).  Never builds a d×d matrix: the
      complement's squared distance is ‖x − μ‖² − ‖V (x − μ)‖²;
    - a matrix C_k (m, m), m = d − r_k: a full covariance Q_kᵀ C_k Q_k in the coordinates of
      ``complements[k]`` = Q_k, orthonormal rows (m, d) spanning the complement.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    out = np.empty((n, len(means)))
    if complements is None:
        complements = [None] * len(means)
    for k, (mu, v, lam, s2, q, w) in enumerate(zip(means, directions, variances, residuals, complements, weights)):
        diff = x - mu
        z = diff if v is None else diff @ v.T
        d2 = np.einsum("ij,ij->i", z / lam, z)
        logdet = float(np.sum(np.log(lam)))
        if np.ndim(s2) == 2:  # full covariance in the complement's coordinates u = Q (x − μ)
            from scipy.linalg import solve_triangular

            chol = np.linalg.cholesky(s2)
            y = solve_triangular(chol, (diff @ q.T).T, lower=True)
            d2 = d2 + np.einsum("ij,ij->j", y, y)
            logdet += 2.0 * float(np.sum(np.log(np.diag(chol))))
        elif s2 is not None and v is not None:
            rest = np.maximum(np.einsum("ij,ij->i", diff, diff) - np.einsum("ij,ij->i", z, z), 0.0)
            d2 = d2 + rest / s2
            logdet += (d - v.shape[0]) * float(np.log(s2))
        with np.errstate(divide="ignore"):
            out[:, k] = np.log(w) - 0.5 * (d2 + logdet + d * LOG_2PI)
    return out


def fixed_direction_em(x: np.ndarray, means, directions, variances, residuals, weights, *,
                       max_iter: int = 200, tol: float = 1e-6, reg: float = 1e-6,
                       residual: str = "isotropic") -> dict:
    """Maximum-likelihood mixture over ``x`` with every component's principal directions held fixed.

    Component k has the directions V_k (orthonormal rows (r_k, d), fixed; None: the coordinate
    axes, as for a diagonal covariance) with variances λ_k along them, and, for r_k < d, a model
    of the d − r_k directions V_k lacks (``residual``):

    - ``"isotropic"``: Σ_k = V_kᵀ diag(λ_k) V_k + σ_k² (I − V_kᵀ V_k), one variance σ_k²;
    - ``"full"``: Σ_k = V_kᵀ diag(λ_k) V_k + Q_kᵀ C_k Q_k, with Q_k an orthonormal basis of the
      complement (:func:`complement_basis`) and C_k a free (d − r_k)×(d − r_k) covariance.  The
      layer's directions still do not move; the complement's eigenvectors come from C_k.

    EM re-estimates the weights π_k, the means μ_k, the λ_k and σ_k² or C_k.  Every M-step is
    closed form (V_k and Q_k together are an orthonormal basis, so the Gaussian factorizes into
    the r_k coordinates along V_k and the block of the complement):

    - N_k = Σ_n r_nk + 10ε (as scikit-learn, so that an empty component stays defined), π_k = N_k / n
    - μ_k = Σ_n r_nk x_n / N_k
    - λ_ki = Σ_n r_nk (v_iᵀ(x_n − μ_k))² / N_k + reg
    - σ_k² = Σ_n r_nk (‖x_n − μ_k‖² − ‖V_k(x_n − μ_k)‖²) / (N_k (d − r_k)) + reg
    - C_k = Σ_n r_nk u_n u_nᵀ / N_k + reg·I, u_n = Q_k (x_n − μ_k)

    ``reg`` is added to every variance, like scikit-learn's ``reg_covar``.  In ``"full"`` mode the
    start C_k is σ_k² I (``residuals[k]``, the inverted mixture's isotropic residual) unless
    ``residuals[k]`` is already a matrix.  Iterates until the mean log-likelihood per row gains
    less than ``tol`` (nats) or ``max_iter`` steps.

    Returns a dict: ``means``, ``variances``, ``residuals`` (σ_k², C_k or None), ``complements``
    (Q_k where C_k is estimated, else None), ``weights``, ``responsibilities`` (n, K) and
    ``log_likelihood`` (mean per row) of the fitted parameters, ``history`` (mean
    log-likelihood before each M-step), ``n_iter``, ``converged``.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise InvalidModelError("calibration needs at least 2 rows")
    if residual not in RESIDUAL_MODES:
        raise UsageError(f"residual must be one of {RESIDUAL_MODES}, got {residual!r}")
    means = [np.asarray(m, dtype=np.float64).copy() for m in means]
    directions = [None if v is None else np.asarray(v, dtype=np.float64) for v in directions]
    variances = [np.asarray(v, dtype=np.float64).copy() for v in variances]
    lacking = [v is not None and v.shape[0] < d for v in directions]
    complements = [complement_basis(v) if residual == "full" and lack else None
                   for v, lack in zip(directions, lacking)]
    res: list = []
    for s, v, q, lack in zip(residuals, directions, complements, lacking):
        if not lack:
            res.append(None)
        elif q is None:
            res.append(float(s))
        else:  # full: start from the isotropic residual (or a given matrix)
            res.append(np.array(s, dtype=np.float64) if np.ndim(s) == 2 else float(s) * np.eye(q.shape[0]))
    residuals = res
    weights = np.asarray(weights, dtype=np.float64).copy()
    history: list[float] = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        lj = fixed_direction_log_joint(x, means, directions, variances, residuals, weights, complements)
        ll = logsumexp(lj, axis=1)
        history.append(float(np.mean(ll)))
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            converged = True
            n_iter -= 1  # the parameters of the previous M-step already met the tolerance
            break
        resp = np.exp(lj - ll[:, None])
        nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
        weights = nk / nk.sum()
        for k, (v, q) in enumerate(zip(directions, complements)):
            r = resp[:, k]
            mu = (r @ x) / nk[k]
            diff = x - mu
            z = diff if v is None else diff @ v.T
            means[k] = mu
            variances[k] = (r @ (z * z)) / nk[k] + reg
            if q is not None:
                u = diff @ q.T
                c = (u * r[:, None]).T @ u / nk[k]
                residuals[k] = (c + c.T) / 2.0 + reg * np.eye(q.shape[0])
            elif residuals[k] is not None:
                rest = np.maximum(np.einsum("ij,ij->i", diff, diff) - np.einsum("ij,ij->i", z, z), 0.0)
                residuals[k] = float(r @ rest) / (nk[k] * (d - v.shape[0])) + reg
    lj = fixed_direction_log_joint(x, means, directions, variances, residuals, weights, complements)
    ll = logsumexp(lj, axis=1)
    return {
        "means": means, "variances": variances, "residuals": residuals, "complements": complements,
        "weights": weights, "responsibilities": np.exp(lj - ll[:, None]), "log_likelihood": float(np.mean(ll)),
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
