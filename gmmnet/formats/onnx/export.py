"""IR → ONNX: a Gaussian mixture as an Abs (or exact ReLU) network with a mixture head.

The graph contract (layouts, node and initializer names, outputs, metadata keys) is
docs/onnx-graph.md; keep the two in step.  In short, component k's neuron i is
``w = λ_i^-½ v_i, b = −wᵀμ_k, a = |wᵀx + b|``; the head computes ``D²_k = Σ_i a²``,
``L_k = −½ D²_k + c_k`` and from it the log-likelihood (a guarded log-sum-exp), the
responsibilities and the label.

Export is plan → build → annotate (:mod:`gmmnet.formats.onnx.plan`).  :func:`plan` makes every
choice from the IR and the :class:`~gmmnet.formats.onnx.options.ExportOptions`: the layout (an
entry of :data:`LAYOUTS`), the arithmetic (``compute``), the centring, the predicted errors and
the size of the weights (checked against the memory limit before anything large is built).
:func:`build` writes the graph the plan describes; the neuron layer is an entry of
:data:`LAYERS`, chosen by the layer's geometry and centring.

Every constant is derived in float64 and cast only when written.  In a float32 graph the
biases are computed from the float32-rounded weights (and the float32-rounded centre),
so that the graph evaluates ``W̃ (x − μ)`` up to arithmetic rounding; ``centering``
decides how much of that rounding cancels (see :func:`float32_error_estimate`).
``compute`` chooses the arithmetic inside a float32 graph (input and outputs stay float32):
float32, float64 behind Cast nodes, or "auto" = float32 where :func:`predicted_errors` says it
meets the accuracy targets, else float64 (docs/onnx-graph.md, "Compute").

A mixture behind an input transform z = A x + c (``Mixture.input_transform``) is folded into the
neuron layer (:mod:`gmmnet.formats.onnx.fold`): the graph takes the raw x, its neurons are
(Aᵀw, centred on a preimage of μ_k), and its outputs are the mixture's over z.

Diag and spherical components never build d×d matrices here.  The registry sends rank-truncated
mixtures to the deep exporter (K·r neurons); their estimates here need no basis of the discarded
directions.  Called directly, :func:`to_onnx` writes one completed to full rank (d neurons each, an
orthonormal basis of the discarded subspace with the residual variance): the benchmarks' reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ... import linalg
from ...errors import InvalidModelError, UnsupportedModelError, UsageError
from ...ir import Hierarchy, Mixture
from ...tolerances import tol
from .fold import Fold, check_folded
from .graph import Graph, checked_bytes, gmmnet_version, head_constants, make_model, rounder, set_metadata
from .options import (ACTIVATIONS, CENTERINGS, COMPUTES, DEFAULT_OUTPUTS, DTYPES, LAYOUTS as LAYOUT_NAMES, MAX_OPSET,
                      MIN_OPSET, OUTPUTS, ExportOptions)
from .plan import ExportPlan, Exporter, check_weight_bytes, register_exporter, rename_outputs

__all__ = [
    "ABS_OK",
    "ACTIVATIONS",
    "CENTERINGS",
    "COMPUTES",
    "DEFAULT_OUTPUTS",
    "DTYPES",
    "LAYERS",
    "LAYOUTS",
    "MAX_OPSET",
    "MIN_OPSET",
    "OUTPUTS",
    "RATIO_OK",
    "WARN_ABOVE",
    "build",
    "float32_error_estimate",
    "plan",
    "predicted_errors",
    "to_onnx",
]

#: The float32 targets on standardized data (gmmnet.tolerances): log-likelihood max|Δ|/(1+|ref|), responsibilities max|Δ|.
#: The deep exporter's compute="auto" keeps float32 only where it meets these.
LL_TARGET = tol("float32_ll")
RESP_TARGET = tol("float32_resp")
#: The single-mixture default (compute="auto"): float32 arithmetic where its predicted responsibilities
#: error is at most this (a float32 log-joint of size 50–150 is only known to ~1e-5 of a nat, and
#: skl2onnx's float32 graphs err 1e-6–4e-5 on the same models); else float64 inside.
DEFAULT_RESP_TARGET = tol("default_resp")
#: The float64-graph target (both outputs), used by the quadratic layout's warning.
F64_TARGET = tol("float64_ll")

#: ``centering="auto"`` takes the cheapest of none, global, component whose estimated error
#: (see :func:`float32_error_estimate`) is at most ``max(ABS_OK, RATIO_OK × estimate of
#: component)``.  Chosen by measurement (docs/onnx-graph.md, "Centering").
ABS_OK = 1e-6
RATIO_OK = 2.0
#: The quadratic layout computes in float32 (compute="auto") only while its expanded terms are at most
#: this many times D² in the bulk of every component (:func:`_quadratic_ratio`).  Measured
#: (docs/onnx-graph.md, "Layouts"): up to R ≈ 8 its float32 errors were within max(skl2onnx's, 1e-6) on
#: every data set; beyond, they grew (breast_cancer raw diag R = 8.7: 3.1e-6; iris diag R = 106: 1.8e-5).
QUAD_RATIO = 8.0
#: A chosen layout whose estimate exceeds this warns with PrecisionWarning.
WARN_ABOVE = tol("float32_warn")
#: "within a few σ": the estimate looks at points A standard deviations from a mean.
_A = 3.0
_UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
_AXIS = ("diag", "spherical")


# ---------------------------------------------------------------------------
# float64 derivation


@dataclass
class _Truncated:
    """Rank-truncated components, for the error estimates only: kept rows, and the residual's share basis-free."""

    rows: list  # per component: (r_k, d) kept rows over the graph input
    directions: list  # per component: (r_k, n_features) kept directions V (over z)
    res_inv: np.ndarray  # (K,) 1/σ² (0 where not truncated)
    pdiag: np.ndarray  # (K, d) diag(Aᵀ (I − VᵀV) A): each feature's share of the discarded directions


@dataclass
class _Prepared:
    """The mixture as arrays over the graph's input (the raw x behind an input transform).

    ``ctype`` is the neuron layer's geometry: diag/spherical (axis-aligned neurons, ``scales``),
    or tied/full (dense rows ``W``).  A diag/spherical mixture behind a transform that is not
    diagonal has dense rows: its ``ctype`` is full.
    """

    K: int
    d: int  # width of the graph input
    r: int  # neurons per component: the mixture's n_features
    ctype: str
    means: np.ndarray  # (K, d) centres on the graph input (preimages of μ_k behind a transform)
    W: np.ndarray | None  # (K, r, d) whitening rows λ^-½ v (A-folded); None for diag/spherical and truncated
    scales: np.ndarray | None  # (K, d) λ^-½ (times A's diagonal) for diag/spherical
    consts: np.ndarray  # (K,) c_k
    weights: np.ndarray  # (K,)
    coord_std: np.ndarray  # (K, d) spread of each component along each input feature
    kept: list[int]  # rank r_k of each component as stored (≤ r)
    truncated: _Truncated | None = None  # truncated components not completed (estimates only)
    completed: bool = False  # truncated components completed to full rank (d neurons each)
    bias: np.ndarray | None = None  # (K, r) −W_k r_k where a centre has no exact preimage, else None
    fold: Fold | None = None
    labels: list[list[str]] = field(default_factory=list)  # per component, per neuron
    memo: dict = field(default_factory=dict)  # rounded weights and estimates, computed once per export
    variances: np.ndarray | None = None  # (K, d) σ²_kj for diag/spherical (feature order)

    def rounded_W(self, dtype: str) -> np.ndarray:
        """W rounded to ``dtype`` (as float64); float64 is W itself."""
        key = ("W", dtype)
        if key not in self.memo:
            self.memo[key] = self.W if dtype == "float64" else self.W.astype(np.float32).astype(np.float64)
        return self.memo[key]


def _complete(c) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors/eigenvalues of a component, completed to full rank with its residual variance (d² numbers)."""
    V, lam = c.eigenvectors, c.eigenvalues
    if c.rank == c.n_features:
        return V, lam
    # orthonormal complement of the kept rows: the trailing right singular vectors of V
    d = c.n_features
    _, _, vh = np.linalg.svd(V, full_matrices=True)
    return np.vstack([V, vh[c.rank:]]), np.concatenate([lam, np.full(d - c.rank, float(c.residual_variance))])


def _prepare(mixture, transform=None, *, complete: bool = False) -> _Prepared:
    """``mixture`` over the graph input; ``transform`` (z = A x + c) defaults to the mixture's own.

    ``complete``: rank-truncated components completed to full rank (the graph of :func:`to_onnx`
    called directly; d×d per component), else kept as they are (estimates only).
    """
    fold = Fold.of(transform if transform is not None else mixture.input_transform)
    comps = mixture.components
    K, r = mixture.n_components, mixture.n_features
    ct = mixture.covariance_type
    common = dict(
        K=K, r=r, consts=head_constants(linalg.component_log_terms(mixture)), weights=mixture.weights, kept=[c.rank for c in comps],
        labels=[[f"c{k}/pc{i}" for i in range(c.rank)] for k, c in enumerate(comps)], fold=fold,
    )
    means = mixture.means.astype(np.float64)
    if ct in _AXIS and (fold is None or fold.diagonal is not None):
        variances = np.stack([np.asarray(c.eigenvalues, dtype=np.float64) for c in comps])
        scales, coord_std = 1.0 / np.sqrt(variances), np.sqrt(variances)
        if fold is not None:  # z_j − μ_kj = a_j (x_j − μ'_kj): the same neuron, scaled by a_j
            a = fold.diagonal
            means, _ = fold.preimage(means)
            scales, variances, coord_std = scales * a, variances / (a * a), coord_std / np.abs(a)
            if ct == "spherical" and np.ptp(a) != 0:
                ct = "diag"
        return _Prepared(d=means.shape[1], ctype=ct, means=means, W=None, scales=scales, coord_std=coord_std,
                         variances=variances, **common)
    d = r if fold is None else fold.n_inputs
    bias = None
    if fold is not None:
        means, res = fold.preimage(means)
        if np.any(res):
            bias = np.zeros((K, r))
    completed = complete and any(c.rank < r for c in comps)
    if completed:
        if fold is not None:
            raise UnsupportedModelError("a rank-truncated mixture behind an input transform is written by the deep "
                                        "exporter (use gmmnet.formats.onnx.to_onnx)")
        common["labels"] = [[f"c{k}/pc{i}" for i in range(c.rank)] + [f"c{k}/res{i}" for i in range(r - c.rank)]
                            for k, c in enumerate(comps)]
    elif any(c.rank < r for c in comps):
        return _Prepared(d=d, ctype="full" if ct in _AXIS else ct, means=means, W=None, scales=None,
                         coord_std=_truncated_std(comps, fold), truncated=_truncation(comps, fold), **common)
    Ws, stds = np.empty((K, r, d)), np.empty((K, d))  # written in place: no K·r·d copy to stack
    for k, c in enumerate(comps):
        if fold is None:
            V, lam = _complete(c) if completed else (c.eigenvectors, c.eigenvalues)
            linalg.whitening(V, lam, out=Ws[k])
            stds[k] = np.sqrt(np.maximum(np.einsum("ij,i,ij->j", V, lam, V), 0.0))
        else:  # the rows W_z A: diag(λ^-½) A for an axis-aligned component, λ^-½ V A otherwise
            Ws[k] = (linalg.scales(c)[:, None] * fold.A if c.axis_aligned
                     else linalg.whitening(c.eigenvectors, c.eigenvalues) @ fold.A)
            stds[k] = fold.coordinate_std(c.stored_eigenvectors, c.eigenvalues)
            if bias is not None:
                bias[k] = -(linalg.project(c, res[k][None, :])[0])
    if ct == "tied" and not all(np.array_equal(w, Ws[0]) for w in Ws):
        ct = "full"  # tied components truncated with different residual variances: no shared product
    return _Prepared(d=d, ctype="full" if ct in _AXIS else ct, means=means, W=Ws, scales=None,
                     coord_std=stds, bias=bias, completed=completed, **common)


def _transformed(rows_z: np.ndarray, fold: Fold | None) -> np.ndarray:
    return rows_z if fold is None else rows_z @ fold.A


def _truncation(comps, fold: Fold | None) -> _Truncated:
    rows, dirs, res_inv, pdiag = [], [], [], []
    for c in comps:
        V = c.eigenvectors  # a truncated component stores its directions (r_k < d)
        rows.append(_transformed(linalg.whitening(V, c.eigenvalues), fold))
        dirs.append(V)
        s2 = c.residual_variance if c.rank < c.n_features else None
        res_inv.append(0.0 if s2 is None else 1.0 / float(s2))
        VA = _transformed(V, fold)
        col = np.ones(V.shape[1]) if fold is None else np.einsum("zj,zj->j", fold.A, fold.A)
        pdiag.append(np.maximum(col - np.einsum("ij,ij->j", VA, VA), 0.0))
    return _Truncated(rows=rows, directions=dirs, res_inv=np.array(res_inv), pdiag=np.stack(pdiag))


def _truncated_std(comps, fold: Fold | None) -> np.ndarray:
    """√diag of each component's covariance over the graph input (kept directions plus σ² on the rest)."""
    out = []
    for c in comps:
        V, lam = c.eigenvectors, c.eigenvalues
        s2 = float(c.residual_variance) if c.rank < c.n_features else 0.0
        if fold is None:
            var = np.einsum("ij,i,ij->j", V, lam - s2, V) + s2
        else:
            B = fold.pinv @ V.T  # (d_in, r_k)
            var = np.einsum("ji,i,ji->j", B, lam - s2, B) + s2 * np.einsum("jz,jz->j", fold.pinv, fold.pinv)
        out.append(np.sqrt(np.maximum(var, 0.0)))
    return np.stack(out)


def _global_centre(p: _Prepared, dtype: str) -> np.ndarray:
    """The mixture's overall mean Σ π_k μ_k, rounded to the graph dtype (used exactly afterwards)."""
    return rounder(dtype)(p.weights @ p.means)


def _split(p: _Prepared, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """μ_k = μ_hi + μ_lo with μ_hi = float32(μ_k), μ_lo = float32(μ_k − μ_hi) (float64: μ_lo = 0)."""
    rnd = rounder(dtype)
    hi = rnd(p.means)
    lo = rnd(p.means - hi)
    return hi, lo


# ---------------------------------------------------------------------------
# error estimate


def _layout_centering(ctype: str, centering: str) -> str:
    return "component" if ctype in _AXIS else centering


def _estimate(p: _Prepared, centering: str, dtype: str) -> float:
    """u · max_k (A ‖e_k‖₂ + |c_k| + r): see :func:`float32_error_estimate`."""
    prods = _products(p, centering, dtype)
    heads = np.where(np.isfinite(p.consts), np.abs(p.consts), 0.0) + p.r
    return float(_UNIT_ROUNDOFF[dtype] * np.max(_A * prods + heads))


def float32_error_estimate(mixture, centering: str = "auto", *, dtype: str = "float32") -> float:
    """Estimated worst absolute error of ``log_likelihood`` from rounding in a ``dtype`` graph.

    This is an estimate, not a bound: measured on onnxruntime for 67 models
    (docs/onnx-graph.md, "Centering"), the worst absolute error over the data was 0.2–4 times
    the estimate.

    For component k with neurons w̃_i (weights rounded to ``dtype``), the centre c that the
    layout subtracts before the product (0 for ``"none"``, the rounded mixture mean for
    ``"global"``, μ_k itself for ``"component"`` and for diag/spherical) and points within
    A = 3 standard deviations of μ_k (σ_kj = √Σ_k,jj per coordinate)::

        t_j   = |μ_kj − c_j| + A σ_kj                  size of the product's input x − c
        e_ki  = ‖w̃_i ∘ t‖₂ + |w̃_i · (μ_k − c)|        rounding of the products (and of x − c),
                                                       and of the bias they must cancel
        est_k = u · (A ‖e_k‖₂ + |c_k| + r)

    u is the unit roundoff (2⁻²⁴ for float32, 2⁻⁵³ for float64) and r the number of neurons of a
    component.  δz_ki ≈ u·e_ki is the error of a pre-activation; ½ δ(D²) = Σ_i a_i δz_i ≤ D ‖δz‖₂
    with D ≈ A gives A‖e_k‖₂; u(|c_k| + r) is the head's share (rounding of the constant and of
    D² ≈ r).  The estimate is max_k est_k.  For a rank-truncated component the discarded
    directions' share of ‖e_k‖₂ is taken without a basis for them (an upper estimate), so that
    no d×d matrix is built; behind an input transform, x, c and σ are over the raw features.

    ``centering="auto"`` returns the estimate of the layout :func:`to_onnx` would choose.
    """
    ExportOptions(dtype=dtype, centering=centering)
    _check_mixture(mixture)
    p = _prepare(mixture)
    if centering == "auto":
        centering, _, _ = _choose_centering(p, dtype)
    return _estimate(p, centering, dtype)


def _layer_head(dtype: str, compute: str) -> tuple[str, str]:
    """(dtype of the neuron layer, dtype of the head) for a graph of interface ``dtype``."""
    if dtype == "float64" or compute == "float64":
        return "float64", "float64"
    return "float32", ("float64" if compute == "mixed" else "float32")


def _tied_expanded(p: _Prepared, opts: ExportOptions, layer: str, centering: str) -> bool:
    """Whether the tied neurons are written expanded (see :func:`_tied_expanded_d2`): a float32 layer of
    Abs neurons with one shared centre (none or global) and no ``distances`` output."""
    return (p.ctype == "tied" and layer == "float32" and opts.activation == "abs" and "distances" not in opts.outputs
            and centering in ("none", "global") and not p.completed)


def _heads(p: _Prepared, opts: ExportOptions, mode: str, centering: str) -> tuple[str, str]:
    """(layer, head) dtypes of compute ``mode``; the expanded tied form sums its squares in float64."""
    layer, head = _layer_head(opts.dtype, mode)
    if _tied_expanded(p, opts, layer, centering):
        head = "float64"
    return layer, head


def _predict(p: _Prepared, centering: str, layer: str, head: str) -> dict:
    """Predicted worst errors (log_likelihood relative, responsibilities absolute) of a layout.

    Per component k, in the bulk of its points (D² within r ± A√(2r), the χ²_r spread):

        P_k  = u_layer · A ‖e_k‖₂            the neuron products (as in :func:`float32_error_estimate`)
        S_k  = u_layer · ½ D²_hi             the sum of squares, in the layer's type
        H_k  = u_head · (|c_k| + ½ D²_hi + r) the log-joint L_k = c_k − ½D² and the log-sum-exp
        ll_k = (P_k + S_k + H_k) / (1 + min |c_k − ½D²|)  over that bulk
        resp = ½ max_k (P_k + S_k + H_k)     δr ≤ r(1−r) |δL_a − δL_b| ≤ ¼ · 2 max|δL|

    with D²_hi = r + A√(2r).  S_k is counted separately only when the head is wider than the layer.
    Like the estimate, a prediction, not a bound (docs/onnx-graph.md, "Compute").
    """
    u_l, u_h = _UNIT_ROUNDOFF[layer], _UNIT_ROUNDOFF[head]
    centering = _layout_centering(p.ctype, centering)
    spread = _A * np.sqrt(2.0 * p.r)
    d2_hi, d2_lo = p.r + spread, max(p.r - spread, 0.0)
    prods = _products(p, centering, layer)
    ll, resp = 0.0, 0.0
    for k in range(p.K):
        c = float(p.consts[k]) if np.isfinite(p.consts[k]) else 0.0
        P = u_l * _A * prods[k]
        S = u_l * 0.5 * d2_hi if u_h < u_l else 0.0
        H = u_h * (abs(c) + 0.5 * d2_hi + p.r)
        lo = 0.0 if d2_lo <= 2 * c <= d2_hi else min(abs(c - 0.5 * d2_lo), abs(c - 0.5 * d2_hi))
        ll = max(ll, (P + S + H) / (1.0 + lo))
        resp = max(resp, 0.5 * (P + S + H))
    return {"log_likelihood": ll, "responsibilities": resp}


def _centres(p: _Prepared, centering: str, dtype: str) -> np.ndarray:
    if centering == "none":
        return np.zeros_like(p.means)
    if centering == "global":
        return np.broadcast_to(_global_centre(p, dtype), p.means.shape)
    hi, lo = _split(p, dtype)
    return hi + lo


def _products(p: _Prepared, centering: str, dtype: str) -> np.ndarray:
    """‖e_k‖₂ per component (see :func:`float32_error_estimate`), computed once per layout."""
    centering = _layout_centering(p.ctype, centering)
    key = ("products", centering, dtype)
    if key in p.memo:
        return p.memo[key]
    off = p.means - _centres(p, centering, dtype)  # what the product has to cancel
    t = np.abs(off) + _A * p.coord_std  # |x − c| at points A σ from the mean
    if p.ctype in _AXIS:  # one neuron per feature
        w = rounder(dtype)(p.scales)
        e = np.abs(w) * t + np.abs(w * off)
        p.memo[key] = np.sqrt(np.einsum("ki,ki->k", e, e))
    elif p.truncated is not None:
        p.memo[key] = _truncated_products(p, off, t, dtype)
    else:
        _row_products(p, dtype)
    return p.memo[key]


def _row_products(p: _Prepared, dtype: str) -> None:
    """‖e_k‖₂ of dense rows for every centring at once (memoized): one pass over the rounded rows,
    32 components at a time, as batched BLAS products (the rows' squares never exist whole)."""
    modes = ("none", "global", "component")
    offs = [p.means - _centres(p, mode, dtype) for mode in modes]
    # per component, the columns |x − c|² and x − c of every centring: (K, d, 2·modes)
    cols = np.stack([(np.abs(o) + _A * p.coord_std) ** 2 for o in offs] + offs, axis=2)
    # float32 rows are rounded here, 32 components at a time, unless the graph already holds them
    rounded = p.W if dtype == "float64" else p.memo.get(("W", dtype))
    rnd = rounder(dtype)
    out = np.empty((p.K, len(modes)))
    n = len(modes)
    for lo in range(0, p.K, 32):
        w = rnd(p.W[lo:lo + 32]) if rounded is None else rounded[lo:lo + 32]
        sq = np.matmul(w * w, cols[lo:lo + 32, :, :n])  # (k, r, modes): Σ_j w_ij² t_j²
        lin = np.matmul(w, cols[lo:lo + 32, :, n:])  # (k, r, modes): w_i · (μ − c)
        e = np.sqrt(sq) + np.abs(lin)
        out[lo:lo + 32] = np.sqrt(np.einsum("krm,krm->km", e, e))
    for i, mode in enumerate(modes):
        p.memo[("products", mode, dtype)] = out[:, i]


def _truncated_products(p: _Prepared, off: np.ndarray, t: np.ndarray, dtype: str) -> np.ndarray:
    """‖e_k‖₂ of truncated components: the kept rows as they are; the discarded directions u_i/σ
    (no basis is built) through Σ_i ‖(u_iA) ∘ t‖² = Σ_j t_j² pdiag_j and Σ_i (u_iA·off)² = ‖P A off‖²,
    their cross term bounded by Cauchy–Schwarz."""
    tr, rnd = p.truncated, rounder(dtype)
    out = np.empty(p.K)
    for k in range(p.K):
        Wr = rnd(tr.rows[k])
        e = np.sqrt((Wr * Wr) @ (t[k] * t[k])) + np.abs(Wr @ off[k])
        total = float(e @ e)
        if tr.res_inv[k]:
            z_off = off[k] if p.fold is None else p.fold.A @ off[k]
            proj = tr.directions[k] @ z_off
            a2 = float(tr.pdiag[k] @ (t[k] * t[k]))
            b2 = max(float(z_off @ z_off - proj @ proj), 0.0)
            total += tr.res_inv[k] * (np.sqrt(a2) + np.sqrt(b2)) ** 2
        out[k] = np.sqrt(total)
    return out


def _fits(p: _Prepared, mixture, dtype: str) -> bool:
    try:
        _check_representable(p, mixture, dtype)
    except InvalidModelError:
        return False
    return True


def _check_representable(p: _Prepared, mixture, dtype: str) -> None:
    """Refuse numbers the graph's arithmetic cannot hold (they would come out as NaN/inf)."""
    linalg.check_representable(mixture, dtype)
    if p.fold is not None:
        check_folded({"weights": p.W if p.W is not None else p.scales, "centres": p.means, "biases": p.bias}, dtype)


def _choose_compute(p: _Prepared, opts: ExportOptions, mixture=None) -> tuple[str, str, str, dict]:
    """(compute, centering, reason, predictions) for a graph of interface ``opts.dtype``.

    "auto" takes float32 where its predicted errors meet ``LL_TARGET`` (log-likelihood) and
    ``DEFAULT_RESP_TARGET`` (responsibilities), else float64 inside.
    """
    dtype, compute, centering = opts.dtype, opts.compute, opts.centering
    fixed = centering
    if compute == "auto" and dtype == "float32" and mixture is not None and not _fits(p, mixture, "float32"):
        # weights/biases overflow float32: the error predictions are meaningless there
        centering = _choose_centering(p, "float64")[0] if fixed == "auto" else _layout_centering(p.ctype, fixed)
        return ("float64", centering, "auto: the mixture's numbers do not fit float32 arithmetic",
                _predict(p, centering, "float64", "float64"))
    if dtype == "float64":
        centering = _choose_centering(p, "float64")[0] if fixed == "auto" else _layout_centering(p.ctype, fixed)
        return "float64", centering, "float64 graph", _predict(p, centering, "float64", "float64")
    # "mixed" is not among auto's choices: measured, it removes only a small part of the float32 error
    options = ("float32", "float64") if compute == "auto" else (compute,)
    preds = {}
    for mode in options:
        layer = _layer_head(dtype, mode)[0]
        centering = _choose_centering(p, layer)[0] if fixed == "auto" else _layout_centering(p.ctype, fixed)
        preds[mode] = (centering, _predict(p, centering, *_heads(p, opts, mode, centering)))
        pr = preds[mode][1]
        if pr["log_likelihood"] <= LL_TARGET and pr["responsibilities"] <= DEFAULT_RESP_TARGET:
            break
    summary = "; ".join(f"{m}: ll {v[1]['log_likelihood']:.1e}, resp {v[1]['responsibilities']:.1e}"
                        for m, v in preds.items())
    if compute == "auto":
        reason = (f"auto: float32 if its predicted errors meet ll {LL_TARGET:.0e}, resp {DEFAULT_RESP_TARGET:.0e}, "
                  f"else float64; {summary}")
    else:
        reason = f"requested {compute!r}; {summary}"
    return mode, preds[mode][0], reason, preds[mode][1]


def float32_neuron_prediction(p: _Prepared) -> dict:
    """Predicted errors of a float32 neuron layer and float32 head with centering "auto" (the deep
    exporter's gate for each level; the single-mixture graph may sum its squares in float64 instead)."""
    return _predict(p, _choose_centering(p, "float32")[0], "float32", "float32")


def predicted_errors(mixture, *, dtype: str = "float32", compute: str = "auto", layout: str = "auto",
                     centering: str = "auto") -> dict:
    """Predicted worst errors of the graph :func:`to_onnx` would write, with the choices made.

    Returns ``{"layout", "compute", "centering", "log_likelihood", "responsibilities"}``: the layout, compute and
    centering that ``to_onnx(mixture, dtype=dtype, compute=compute, layout=layout, centering=centering)`` uses, its
    predicted log-likelihood error (max |Δ|/(1+|ref|)) and responsibilities error (max |Δ|) on
    points in the bulk of each component (docs/onnx-graph.md, "Compute" and "Layouts").
    Predictions, not bounds: measured errors were 0.05–2 times them.
    """
    opts = ExportOptions(dtype=dtype, compute=compute, layout=layout, centering=centering)
    _check_mixture(mixture)
    p = _prepare(mixture)
    name = _resolve_layout(p, mixture, opts)
    choice = LAYOUTS[name].choose(p, mixture, opts)
    return {"layout": name, "compute": choice.compute, "centering": choice.centering, **choice.predicted}


# ---------------------------------------------------------------------------
# the quadratic layout (diag/spherical): D² as one expanded product, always in float64


def _quadratic_terms(p: _Prepared, centering: str, arith: str = "float64") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, P, δ): the centre m (d,) — the mixture's mean Σ π_k μ_k for "global", 0 for "none" —,
    the precisions P = 1/σ² (K, d) and the offsets δ = μ_k − m (K, d).

    m is rounded to the arithmetic ``arith`` and stored as computed here, so it is used exactly.
    """
    m = rounder(arith)(p.weights @ p.means) if centering == "global" else np.zeros(p.d)
    return m, 1.0 / p.variances, p.means - m


def _quadratic_size(p: _Prepared, centering: str) -> np.ndarray:
    """T_k = Σ_j p_kj (2|δ_kj| + A σ_kj)², the size of the expanded terms (see :func:`_predict_quadratic`)."""
    _, prec, off = _quadratic_terms(p, centering)
    return np.sum(prec * (2.0 * np.abs(off) + _A * np.sqrt(p.variances)) ** 2, axis=1)


def _quadratic_ratio(p: _Prepared, centering: str) -> float:
    """R = max_k T_k / D²_hi: the expanded terms' size in the bulk of component k's points against D² itself.

    With xc = δ_k + σ_k ∘ ξ and Σ_j ξ_j² ≤ D²_hi = d + A√(2d), the terms add up to
    Σ_j p_kj (|xc_j| + |δ_kj|)² ≤ T_k = (2 ‖δ_k‖_p + √D²_hi)², ‖δ‖_p² = Σ_j p_kj δ_kj².  R = 1 for a
    component centred on m; R grows like (‖δ_k‖_p)² / d for components far from the centre.
    """
    _, prec, off = _quadratic_terms(p, centering)
    d2_hi = p.d + _A * np.sqrt(2.0 * p.d)
    delta = np.sqrt(np.sum(prec * off * off, axis=1))
    return float(np.max((2.0 * delta + np.sqrt(d2_hi)) ** 2) / d2_hi)


def _choose_quadratic_centering(p: _Prepared, centering: str) -> tuple[str, str]:
    """(centering, reason): "auto" skips the centring Sub unless it shrinks the expanded terms by over RATIO_OK."""
    if centering != "auto":
        return centering, f"requested {centering!r}"
    t_none, t_glob = float(np.max(_quadratic_size(p, "none"))), float(np.max(_quadratic_size(p, "global")))
    used = "none" if t_none <= RATIO_OK * t_glob else "global"
    return used, (f"auto: none unless centring on the mixture's mean shrinks the expanded terms max_k T_k more than "
                  f"{RATIO_OK:g}x; none {t_none:.3g}, global {t_glob:.3g}")


def _predict_quadratic(p: _Prepared, dtype: str, centering: str, arith: str = "float64") -> dict:
    """Predicted worst errors of the quadratic layout in ``arith`` arithmetic (outputs of type ``dtype``).

    float32 arithmetic: the float32 neurons graph's prediction (:func:`_predict`, the floor of any
    float32 graph: rounding of D² and of the head), times ``max(1, R / QUAD_RATIO)`` where
    ``R = max_k T_k / D²_hi`` (:func:`_quadratic_ratio`) says how much larger than D² the expanded
    terms are in the bulk of a component's points.  Measured on the data sets of
    docs/onnx-graph.md and the benchmark models, that was 0.5–2 times the error.  float64 arithmetic:

    With xc = x − m (m the centre) and δ_k = μ_k − m, the graph sums three terms,
    ``D²_k = Σ_j p_kj xc_j² − 2 Σ_j p_kj δ_kj xc_j + Σ_j p_kj δ_kj²``.  Within A = 3 standard
    deviations of μ_k (|xc_j| ≤ |δ_kj| + A σ_kj) their absolute values add up to at most
    ``T_k = Σ_j p_kj (|xc_j| + |δ_kj|)² ≤ Σ_j p_kj (2|δ_kj| + A σ_kj)²``.  Each term is a length-d
    dot product of operands carrying a few roundings (xc, xc², p, −2pδ), so the classic bound is
    ``(d + 4) u T_k``; rounding errors of dot products add up like a random walk (√d), not in
    the worst case (d), so the prediction uses ``δD²_k ≈ (√d + 4) u T_k``:

        P_k  = ½ (√d + 4) u T_k                    ½ δ(D²), the expanded product's share
        H_k  = u (|c_k| + ½ D²_hi + d)             the head, as in :func:`_predict`
        ll   = max_k (P_k + H_k) / (1 + min over the bulk |c_k − ½ D²|)  (+ u₃₂ for a float32 interface)
        resp = ½ max_k (P_k + H_k)                                      (+ u₃₂ for a float32 interface)

    with u the unit roundoff of ``arith`` (2⁻⁵³ for float64).  The u₃₂ = 2⁻²⁴ terms are the rounding of
    float64 results to a float32 interface (½ ulp); in float32 arithmetic they are part of u.
    T_k is large when a component is narrow compared with its distance from the centre
    (|δ_kj| ≫ σ_kj): there the expanded form cancels, and the neurons layout (centred on each
    μ_k) is the accurate one.
    """
    key = ("quadratic", dtype, centering, arith)
    if key in p.memo:
        return p.memo[key]
    if arith == "float32":
        floor = _predict(p, "component", "float32", "float32")
        scale = max(1.0, _quadratic_ratio(p, centering) / QUAD_RATIO)
        p.memo[key] = {k: v * scale for k, v in floor.items()}
        return p.memo[key]
    u = _UNIT_ROUNDOFF[arith]
    T = _quadratic_size(p, centering)
    spread = _A * np.sqrt(2.0 * p.d)
    d2_hi, d2_lo = p.d + spread, max(p.d - spread, 0.0)
    ll, resp = 0.0, 0.0
    for k in range(p.K):
        c = float(p.consts[k]) if np.isfinite(p.consts[k]) else 0.0
        P = 0.5 * (np.sqrt(p.d) + 4.0) * u * float(T[k])
        H = u * (abs(c) + 0.5 * d2_hi + p.d)
        lo = 0.0 if d2_lo <= 2 * c <= d2_hi else min(abs(c - 0.5 * d2_lo), abs(c - 0.5 * d2_hi))
        ll = max(ll, (P + H) / (1.0 + lo))
        resp = max(resp, 0.5 * (P + H))
    if dtype == "float32" and arith == "float64":
        ll += _UNIT_ROUNDOFF["float32"]
        resp += _UNIT_ROUNDOFF["float32"]
    p.memo[key] = {"log_likelihood": ll, "responsibilities": resp}
    return p.memo[key]


def _choose_centering(p: _Prepared, dtype: str) -> tuple[str, str, dict]:
    """(centering, reason, estimates) for centering="auto".

    A layout is acceptable when its estimate is at most ``max(ABS_OK, RATIO_OK · est(component))``:
    centering is added only where it buys a real improvement over the float32 floor the
    covariance itself imposes (rounding of w·(x − μ) along thin directions), which no layout
    removes.  The cheapest acceptable of none, global, component is chosen.
    """
    if p.ctype in _AXIS:
        est = _estimate(p, "component", dtype)
        return "component", f"{p.ctype} graphs are always centred per component", {"component": est}
    ests = {mode: _estimate(p, mode, dtype) for mode in ("none", "global", "component")}
    bar = max(ABS_OK, RATIO_OK * ests["component"])
    for mode in ("none", "global", "component"):
        if ests[mode] <= bar:
            break
    others = ", ".join(f"{m} {v:.2e}" for m, v in ests.items() if m != mode)
    reason = (f"auto: cheapest layout with estimate <= max({ABS_OK:.0e}, {RATIO_OK:g} x component estimate) "
              f"= {bar:.2e}; {mode} {ests[mode]:.2e} ({others})")
    return mode, reason, ests


# ---------------------------------------------------------------------------
# the neuron layer: one table entry per geometry and centring


def _center(g: Graph, x: str, hi: np.ndarray, lo: np.ndarray, prefix: str, what: str) -> str:
    """x − μ_hi − μ_lo (``{prefix}/center_hi``, ``{prefix}/center_lo``), or x − μ (``{prefix}/center``) when μ_lo = 0."""
    if not np.any(lo):
        return g.node("Sub", [x, g.const(f"{prefix}/mean", hi, f"{what} (exact in the graph dtype)")],
                      f"{prefix}/center", f"x - mean: {what}")
    c = g.node("Sub", [x, g.const(f"{prefix}/mean_hi", hi, f"{what}, high part: float32(mean)")],
               f"{prefix}/center_hi", "x - mean_hi")
    return g.node("Sub", [c, g.const(f"{prefix}/mean_lo", lo, f"{what}, low part: float32(mean - mean_hi)")],
                  f"{prefix}/center_lo", "(x - mean_hi) - mean_lo = x - mean to float32 rounding of the result")


def _centre_input(g: Graph, p: _Prepared, x: str, centering: str):
    """(graph input, component means relative to it): with "global", x − the mixture's mean first."""
    if centering != "global":
        return x, p.means
    mbar = _global_centre(p, g.dtype)
    x = g.node("Sub", [x, g.const("layer0/mean", mbar, "global centre: the mixture's mean, rounded to the graph dtype")],
               "layer0/center", "x - global centre")
    return x, p.means - mbar


def _neuron_list(p: _Prepared) -> str:
    return ",".join(lab for labs in p.labels for lab in labs)


def _pair(relu: bool):
    """[a; −a] along ``axis`` for ReLU pairs, else a."""
    return (lambda a, axis: np.concatenate([a, -a], axis=axis)) if relu else (lambda a, axis: a)


def _rows_doc(relu: bool) -> str:
    return ("row k*2r + i = +w (component k, principal component i); row k*2r + r + i = -w (same neuron, mirrored)"
            if relu else "row k*r + i = component k, principal component i")


def _layer_axis(g: Graph, p: _Prepared, relu: bool, x: str) -> tuple[str, str]:
    """diag/spherical: (x − μ_k) ∘ s_k broadcast over the batch, (N, K, R); always centred per component."""
    K, d = p.K, p.d
    hi, lo = _split(p, g.dtype)
    s = rounder(g.dtype)(p.scales)
    if p.ctype == "spherical":
        s = s[:, :1]
    if relu:
        xu = g.unsqueeze(x, [1, 2], "layer0/unsqueeze", "X as (N, 1, 1, d)")
        hi_, lo_, s_ = hi[:, None, :], lo[:, None, :], np.stack([s, -s], axis=1)
    else:
        xu = g.unsqueeze(x, [1], "layer0/unsqueeze", "X as (N, 1, d)")
        hi_, lo_, s_ = hi, lo, s
    c = _center(g, xu, hi_, lo_, "layer0", "component means, broadcast over the batch")
    sdoc = ("lambda^-1/2 per component and feature" if p.ctype == "diag" else "lambda^-1/2 per component")
    if relu:
        sdoc += "; [k, 0] = +scale, [k, 1] = -scale"
    z = g.node("Mul", [c, g.const("layer0/scale", s_, sdoc)], "layer0/linear",
               "pre-activations w_ki (x - mu_k): " + ("(N, K, 2, d)" if relu else "(N, K, d)") + "; neurons (component-major): "
               + _neuron_list(p))
    if relu:
        z = g.reshape(z, [0, K, 2 * d], "layer0/reshape", "(N, K, 2d): per component d rows +, then d rows -")
    return z, "nkr"


def _layer_tied_centred(g: Graph, p: _Prepared, relu: bool, x: str) -> tuple[str, str]:
    """tied, centred per component: (x − μ_k) Wᵀ as one MatMul over (N, K, d), (N, K, R)."""
    Wp = _pair(relu)(p.rounded_W(g.dtype)[0], 0)  # (R, d)
    hi, lo = _split(p, g.dtype)
    xu = g.unsqueeze(x, [1], "layer0/unsqueeze", "X as (N, 1, d)")
    c = _center(g, xu, hi, lo, "layer0", "component means (K, d)")
    doc = "(x - mu_k) W^T: (N, K, R); neurons (component-major): " + _neuron_list(p)
    wdoc = "shared whitening, transposed: column i = neuron i (" + (
        "w_0..w_{d-1}, then -w_0..-w_{d-1})" if relu else "w_i = lambda_i^-1/2 v_i)")
    if p.bias is None:
        return g.node("MatMul", [c, g.const("layer0/W_T", Wp.T, wdoc)], "layer0/linear", doc), "nkr"
    z = g.node("MatMul", [c, g.const("layer0/W_T", Wp.T, wdoc)], "layer0/product", "(x - mu_k) W^T: (N, K, R)")
    return g.node("Add", [z, g.const("layer0/b", _pair(relu)(p.bias, 1), "-W r_k: the centres' offset from the "
                                     "input transform's range (K, R)")], "layer0/linear", doc), "nkr"


def _layer_tied_shared(g: Graph, p: _Prepared, relu: bool, x: str, centering: str) -> tuple[str, str]:
    """tied, no or one global centre: W x once (N, R), plus per-component biases (K, R)."""
    W0 = p.rounded_W(g.dtype)[0]
    Wp = _pair(relu)(W0, 0)  # (R, d)
    x, offs = _centre_input(g, p, x, centering)
    b = -(offs @ W0.T)  # (K, r), float64 from the rounded weights
    if p.bias is not None:
        b = b + p.bias
    y = g.node("Gemm", [x, g.const("layer0/W", Wp, "shared whitening rows: " + (
        "rows 0..d-1 = w_i, rows d..2d-1 = -w_i" if relu else "row i = w_i = lambda_i^-1/2 v_i"))],
        "layer0/shared_linear", "W x for the shared covariance: (N, R)", transB=1)
    y = g.reshape(y, [0, 1, Wp.shape[0]], "layer0/reshape", "(N, 1, R)")
    z = g.node("Add", [y, g.const("layer0/b", _pair(relu)(b, 1), "per-component biases b_k = -W (mu_k - centre): (K, R)")],
               "layer0/linear", "W x + b_k: (N, K, R); neurons (component-major): " + _neuron_list(p))
    return z, "nkr"


def _layer_full_centred(g: Graph, p: _Prepared, relu: bool, x: str) -> tuple[str, str]:
    """full, centred per component: K Gemms W_k (x − μ_k), concatenated (N, K·R)."""
    W = p.rounded_W(g.dtype)
    pair = _pair(relu)
    hi, lo = _split(p, g.dtype)
    parts = []
    for k in range(p.K):
        c = _center(g, x, hi[k], lo[k], f"layer0/c{k}", f"mean of component {k}")
        ins = [c, g.const(f"layer0/c{k}/W", pair(W[k], 0), f"component {k} neurons, "
                          + ("rows w_i then -w_i" if relu else "row i = w_i"))]
        if p.bias is not None:
            ins.append(g.const(f"layer0/c{k}/b", pair(p.bias[k], 0), "-W r_k: the centre's offset from the input "
                               "transform's range"))
        parts.append(g.node("Gemm", ins, f"layer0/c{k}/linear", f"W_{k} (x - mu_{k})", transB=1))
    z = g.node("Concat", parts, "layer0/linear", "(N, K*R), " + _rows_doc(relu) + "; neurons (component-major): "
               + _neuron_list(p), axis=1)
    return z, "flat"


def _layer_full_shared(g: Graph, p: _Prepared, relu: bool, x: str, centering: str) -> tuple[str, str]:
    """full, no or one global centre: one Gemm of K·R rows with biases, (N, K·R)."""
    W = p.rounded_W(g.dtype)
    pair = _pair(relu)
    rows = np.concatenate([pair(W[k], 0) for k in range(p.K)])  # (K·R, d)
    x, offs = _centre_input(g, p, x, centering)
    b = -np.einsum("kij,kj->ki", W, offs)  # (K, r), float64 from the rounded weights
    if p.bias is not None:
        b = b + p.bias
    bias = np.concatenate([pair(b[k], 0) for k in range(p.K)])
    z = g.node("Gemm", [x, g.const("layer0/W", rows, "neuron weights, " + _rows_doc(relu)),
                        g.const("layer0/b", bias, "neuron biases b = -w (mu_k - centre), same row layout")],
               "layer0/linear", "z = W x + b: (N, K*R); neurons (component-major): " + _neuron_list(p), transB=1)
    return z, "flat"


#: The neuron layer, by (geometry, centring): "axis" = diag/spherical (any centring: always per
#: component), "shared" = no centre or one global centre.  Each entry returns the
#: pre-activations and their shape kind: "flat" (N, K·R) or "nkr" (N, K, R).
LAYERS: dict[tuple[str, str], Callable] = {
    ("axis", "component"): lambda g, p, relu, x, centering: _layer_axis(g, p, relu, x),
    ("tied", "component"): lambda g, p, relu, x, centering: _layer_tied_centred(g, p, relu, x),
    ("tied", "shared"): _layer_tied_shared,
    ("full", "component"): lambda g, p, relu, x, centering: _layer_full_centred(g, p, relu, x),
    ("full", "shared"): _layer_full_shared,
}


def _layer_key(p: _Prepared, centering: str) -> tuple[str, str]:
    if p.ctype in _AXIS:
        return "axis", "component"
    return p.ctype, ("component" if centering == "component" else "shared")


def _neurons(g: Graph, p: _Prepared, activation: str, centering: str, x: str, want: set, emit) -> tuple[str, str]:
    """The neuron layer, its activation and the ``distances`` output.

    Returns (what the sum of squares reads, shape kind): the ReLU activations, or for Abs
    neurons their pre-activations z (|z|² = z², so the Abs node only feeds ``distances``).
    """
    relu = activation == "relu"
    z, kind = LAYERS[_layer_key(p, centering)](g, p, relu, x, centering)
    a = _activate(g, p, relu, z, kind, want, emit)
    return (a if relu else z), kind


def _activate(g: Graph, p: _Prepared, relu: bool, z: str, kind: str, want: set, emit) -> str | None:
    """Relu of the pre-activations z, or (Abs neurons) |z| when ``distances`` is asked for, with that output."""
    K, r = p.K, p.r
    if not relu and "distances" not in want:
        return None
    act_op = "Relu" if relu else "Abs"
    act_doc = ("a = relu(z): per component r activations of +w then r of -w; |z| = relu(z) + relu(-z)" if relu
               else "a = |z|: Mahalanobis distance along each principal component")
    if "distances" in want and not relu and kind == "flat" and not p.completed:
        emit("layer0/" + act_op.lower(), "distances")
    a = g.node(act_op, [z], "layer0/" + act_op.lower(), act_doc)
    if "distances" in want and a != "distances" and "distances" not in emit.final:
        if relu:
            t = g.reshape(a, [0, K, 2, r], "distances/reshape", "(N, K, 2, r): the + and - halves of each neuron")
            t = g.reduce("ReduceSum", t, [2], "distances/pair_sum", 0, "relu(z) + relu(-z) = |z|")
        else:
            t = a
        if not p.completed:
            emit("distances/flatten", "distances")
        t = g.reshape(t, [0, K * r], "distances/all" if p.completed else "distances/flatten", "(N, K*r), component-major")
        if p.completed:  # only the kept principal directions (the residual neurons complete the density)
            keep = [k * r + i for k in range(K) for i in range(p.kept[k])]
            emit("distances/kept", "distances")
            g.node("Gather", [t, g.ints("distances/kept_index", keep)], "distances/kept",
                   "the kept principal directions of each component (rank-truncated model)", axis=1)
    return a


def _full_split_d2(g: Graph, p: _Prepared, x: str, centering: str, want: set, emit) -> str:
    """full, Abs neurons: D² [N, K] from one Gemm per component, each summed in squares at once.

    Component k's neurons z_k = W_k (x − μ_k) are an (N, r) Gemm ``layer0/c{k}/linear`` whose
    output the sum of squares reads while it is fresh (|z|² = z²: no Abs pass).  Centred per
    component, its input is x − μ_hi − μ_lo and it has no bias.  Otherwise its input is
    [x − c, 1] (``layer0/homogeneous``: a column of ones appended once) and its rows are the
    neurons (w_i, b_i) with b_i = −w_i·(μ_k − c): the bias rides in the product, where a Gemm's C
    input would cost onnxruntime one more pass over every (N, r) output (measured: 0.86× the time
    of the C form at K = 32, d = 64).  ``distances`` concatenates the z_k into ``layer0/linear``
    and takes the Abs beside the D² path.
    """
    W = p.rounded_W(g.dtype)
    if centering == "component":
        hi, lo = _split(p, g.dtype)
        offs = None
    else:
        x, offs = _centre_input(g, p, x, centering)
        col = g.node("Slice", [x, g.ints("layer0/ones_start", [0]), g.ints("layer0/ones_end", [1]),
                               g.ints("axes/1", [1])], "layer0/first_column", "x[:, :1]")
        col = g.node("Mul", [col, g.const("layer0/zero", np.array(0.0))], "layer0/zeros", "0 * x[:, :1]")
        col = g.node("Add", [col, g.const("layer0/one", np.array(1.0))], "layer0/ones", "a column of ones: (N, 1)")
        x = g.node("Concat", [x, col], "layer0/homogeneous", "[x, 1]: (N, d + 1), so that the bias rides in the "
                   "product", axis=1)
    parts, sums = [], []
    for k in range(p.K):
        if offs is None:
            ins = [_center(g, x, hi[k], lo[k], f"layer0/c{k}", f"mean of component {k}"),
                   g.const(f"layer0/c{k}/W", W[k], f"component {k} neurons, row i = w_i = lambda_i^-1/2 v_i")]
            if p.bias is not None:
                ins.append(g.const(f"layer0/c{k}/b", p.bias[k], "-W r_k: the centre's offset from the input "
                                   "transform's range"))
        else:
            b = -(W[k] @ offs[k]) + (0.0 if p.bias is None else p.bias[k])
            ins = [x, g.const(f"layer0/c{k}/W", np.concatenate([W[k], b[:, None]], axis=1),
                              f"component {k} neurons, row i = (w_i, b_i): w_i = lambda_i^-1/2 v_i, "
                              f"b_i = -w_i (mu_{k} - centre)")]
        z = g.node("Gemm", ins, f"layer0/c{k}/linear", f"z = W_{k} (x - mu_{k}): (N, r), neurons "
                   + ",".join(p.labels[k]), transB=1)
        parts.append(z)
        sums.append(g.reduce("ReduceSumSquare", z, [1], f"head/c{k}/sumsq", 1,
                             f"D^2_{k} = sum_i z_i^2 = sum_i |z_i|^2: (N, 1)"))
    if "distances" in want:
        z = g.node("Concat", parts, "layer0/linear", "(N, K*r), " + _rows_doc(False) + "; neurons (component-major): "
                   + _neuron_list(p), axis=1)
        _activate(g, p, False, z, "flat", want, emit)
    return g.node("Concat", sums, "head/sumsq", "D^2: (N, K)", axis=1)


def _tied_expanded_d2(g: Graph, p: _Prepared, x: str, centering: str) -> str:
    """tied, float32 layer: the d shared neurons y = W (x − c) once, then D² expanded in float64.

    Component k's neurons are y − o_k with o_k = W (μ_k − c) (computed in float64 from the
    float32 weights and centre), so ``D²_k = ‖y‖² − 2 y·o_k + ‖o_k‖²``: y is cast to double
    (exact) and the expansion, a (N, d)×(d, K) Gemm and a sum of squares, runs in float64, where
    it does not cancel.  No (N, K, d) tensor is formed.  Leaves the graph in float64.
    """
    W0 = p.rounded_W(g.dtype)[0]
    x, offs = _centre_input(g, p, x, centering)
    o = offs @ W0.T  # (K, r): z_k = y − o_k
    if p.bias is not None:
        o = o - p.bias
    y = g.node("Gemm", [x, g.const("layer0/W", W0, "shared whitening rows: row i = w_i = lambda_i^-1/2 v_i")],
               "layer0/shared_linear", "y = W x: the shared neurons, (N, r); component k's are y - o_k", transB=1)
    g.set_dtype("float64")
    y = g.node("Cast", [y], "layer0/cast", "y as double (exact): the expansion runs in float64", to=g.elem)
    cross = g.node("Gemm", [y, g.const("head/O", np.ascontiguousarray(-2.0 * o.T), "-2 o_k as columns: (r, K)"),
                            g.const("head/e", np.einsum("ki,ki->k", o, o), "|o_k|^2: (K,)")],
                   "head/cross_term", "-2 y.o_k + |o_k|^2: (N, K)")
    ss = g.reduce("ReduceSumSquare", y, [1], "head/shared_sumsq", 1, "|y|^2: (N, 1)")
    d2 = g.node("Gemm", [ss, g.const("head/ones", np.ones((1, p.K)), "(1, K) ones"), cross], "head/d2_raw",
                "D^2_k = |y|^2 - 2 y.o_k + |o_k|^2 = |y - o_k|^2: (N, K)")
    return g.node("Max", [d2, g.const("head/zero", np.array(0.0), "0")], "head/sumsq",
                  "max(D^2, 0): the true D^2 is >= 0; the expanded sum can round a little below 0")


# ---------------------------------------------------------------------------
# the head


def _build_quadratic(g: Graph, p: _Prepared, x: str, centering: str) -> str:
    """D² [N, K] of a diag/spherical mixture as one expanded product (in the graph's arithmetic).

    ``D²_k = Σ_j p_kj xc_j² − 2 Σ_j p_kj δ_kj xc_j + Σ_j p_kj δ_kj²`` with xc = x − m, δ_k = μ_k − m,
    p = 1/σ², m the mixture's mean ("global") or 0 ("none"): two (N, d)×(d, K) products
    (spherical: ‖xc‖² times p_k) instead of K·d neurons.  Both are Gemms whose C input carries
    the rest of the sum (e_k, then the cross term), so the additions cost no extra pass.
    """
    m, prec, off = _quadratic_terms(p, centering, g.dtype)
    xc = x
    if centering == "global":
        xc = g.node("Sub", [x, g.const("quadratic/mean", m, "centre m = sum_k pi_k mu_k, the mixture's mean")],
                    "quadratic/center", "xc = x - m: (N, d)")
    Q = -2.0 * prec * off
    e = np.sum(prec * off * off, axis=1)
    cross = g.node("Gemm", [xc, g.const("quadratic/Q", np.ascontiguousarray(Q.T), "Q[j, k] = -2 p_kj (mu_kj - m_j): (d, K)"),
                            g.const("quadratic/e", e, "e_k = sum_j p_kj (mu_kj - m_j)^2: (K,)")],
                   "quadratic/cross_term", "-2 sum_j p_kj (mu_kj - m_j) xc_j + e_k: (N, K)")
    if p.ctype == "diag":
        sq = g.node("Mul", [xc, xc], "quadratic/square", "xc_j^2: (N, d)")
        P, pdoc = np.ascontiguousarray(prec.T), "P[j, k] = p_kj = 1/sigma^2_kj, the precisions: (d, K)"
    else:
        sq = g.reduce("ReduceSumSquare", xc, [1], "quadratic/sumsq", 1, "|xc|^2: (N, 1)")
        P, pdoc = prec[:, :1].T.copy(), "P[0, k] = p_k = 1/sigma^2_k, the precisions: (1, K)"
    t = g.node("Gemm", [sq, g.const("quadratic/P", P, pdoc), cross], "quadratic/d2_raw",
               "D^2_k expanded: square term sum_j p_kj xc_j^2 plus the cross term and e_k (Gemm's C): (N, K)")
    return g.node("Max", [t, g.const("quadratic/zero", np.array(0.0), "0")], "quadratic/d2",
                  "max(D^2, 0): the true D^2 is >= 0; the expanded sum can round a little below 0")


@dataclass(frozen=True)
class _LogJoint:
    """A layout's output that is already the log-joint L [N, K] (not D²)."""

    name: str


def _build_quadratic_log_joint(g: Graph, p: _Prepared, x: str, centering: str) -> str:
    """The log-joint L [N, K] of a diag/spherical mixture as one expanded product (float32 arithmetic).

    ``L_k = Σ_j (−½ p_kj) xc_j² + Σ_j p_kj δ_kj xc_j + (c_k − ½ Σ_j p_kj δ_kj²)``: the terms of
    :func:`_build_quadratic` with −½ and c_k folded into the constants (derived in float64, rounded
    once), so that the two Gemms give L with no pass over [N, K] after them.  No clamp: L rounds at
    most slightly above c_k where D² ≈ 0, which no output minds.
    """
    m, prec, off = _quadratic_terms(p, centering, g.dtype)
    xc = x
    if centering == "global":
        xc = g.node("Sub", [x, g.const("quadratic/mean", m, "centre m = sum_k pi_k mu_k, the mixture's mean")],
                    "quadratic/center", "xc = x - m: (N, d)")
    with np.errstate(invalid="ignore"):  # c_k = -inf (a zero weight) stays -inf
        e = p.consts - 0.5 * np.sum(prec * off * off, axis=1)
    cross = g.node("Gemm", [xc, g.const("quadratic/Q", np.ascontiguousarray((prec * off).T),
                                        "Q[j, k] = p_kj (mu_kj - m_j): (d, K)"),
                            g.const("quadratic/e", e, "e_k = c_k - 1/2 sum_j p_kj (mu_kj - m_j)^2: (K,)")],
                   "quadratic/cross_term", "sum_j p_kj (mu_kj - m_j) xc_j + e_k: (N, K)")
    if p.ctype == "diag":
        sq = g.node("Mul", [xc, xc], "quadratic/square", "xc_j^2: (N, d)")
        P, pdoc = np.ascontiguousarray(-0.5 * prec.T), "P[j, k] = -1/2 p_kj = -1/(2 sigma^2_kj): (d, K)"
    else:
        sq = g.reduce("ReduceSumSquare", xc, [1], "quadratic/sumsq", 1, "|xc|^2: (N, 1)")
        P, pdoc = -0.5 * prec[:, :1].T, "P[0, k] = -1/2 p_k = -1/(2 sigma^2_k): (1, K)"
    return g.node("Gemm", [sq, g.const("quadratic/P", P, pdoc), cross], "head/log_joint",
                  "L_k = -D^2_k/2 + c_k expanded: square term plus the cross term and e_k (Gemm's C): (N, K)")


def _build_head(g: Graph, p: _Prepared, d2, want: set, emit, head_dtype: str, narrow: bool = False) -> None:
    """The mixture head on D² [N, K]: mahalanobis, L_k = −½D²_k + c_k, label, log-sum-exp, responsibilities.

    ``d2`` may be a :class:`_LogJoint` (the layout computed L itself; no mahalanobis then).

    ``narrow``: the interface is float32, so a float64 head takes its exponentials in float32
    (after the float64 shift L − m) and gives the responsibilities in float32.
    """
    import onnx

    need_lse = bool(want & {"responsibilities", "log_likelihood"})
    if head_dtype != g.dtype:  # mixed compute: the head in float64 (log-joints of -30..-50 keep their digits)
        g.set_dtype("float64")
        d2 = g.node("Cast", [d2], "head/cast", "D^2 as double: the head computes in float64", to=g.elem)
    if "mahalanobis" in want:
        emit("head/mahalanobis", "mahalanobis")
        g.node("Sqrt", [d2], "head/mahalanobis", "D_k, the Mahalanobis distance")
    if not want & {"label", "responsibilities", "log_likelihood"}:
        return
    if isinstance(d2, _LogJoint):  # the layout wrote L itself
        lj = d2.name
    else:
        half = g.node("Mul", [d2, g.const("head/neg_half", np.array(-0.5))], "head/neg_half_d2", "-D^2/2")
        lj = g.node("Add", [half, g.const("head/c", p.consts,
                                           "c_k = log w_k - 1/2 sum log lambda - d/2 log 2pi + log_constant_k")],
                    "head/log_joint", "L_k = -D^2_k/2 + c_k: (N, K)")
    if "label" in want:
        emit("head/label", "label")
        g.node("ArgMax", [lj], "head/label", "argmax_k L_k (first on ties)", axis=1, keepdims=0)
    if not need_lse:
        return
    m = g.reduce("ReduceMax", lj, [1], "head/max", 1, "row max of L: (N, 1)")
    finfo = np.finfo(g.np_dtype)
    m = g.node("Max", [m, g.const("head/lowest", np.array(finfo.min))], "head/max_guard",
               "max(m, lowest finite): a row of all -inf keeps a finite shift (no inf - inf)")
    sh = g.node("Sub", [lj, m], "head/shift", "L - m")
    wide = g.dtype
    if narrow and wide == "float64":
        # float32 interface: L - m <= 0 is exact enough in float32 (|error| <= 6e-8 |L - m|, and terms with
        # L - m < -17 weigh < 4e-8), and onnxruntime's float32 Exp is far faster than its double one
        g.set_dtype("float32")
        sh = g.node("Cast", [sh], "head/shift_float", "L - m as float: the exponentials in float32", to=g.elem)
    e = g.node("Exp", [sh], "head/exp", "exp(L - m)")
    s = g.reduce("ReduceSum", e, [1], "head/sum", 1, "sum_k exp(L_k - m) >= 1 unless the row is all -inf")
    if "log_likelihood" in want:
        ls = g.node("Log", [s], "head/log_sum", "log of the sum")
        if g.dtype != wide:  # m keeps its float64 digits: log p = m + log s
            ls = g.node("Cast", [ls], "head/log_sum_double", "log of the sum as double", to=onnx.TensorProto.DOUBLE)
            g.set_dtype(wide)
        ll = g.node("Add", [ls, m], "head/logsumexp", "log p(x) = m + log sum exp(L - m): (N, 1)")
        emit("head/log_likelihood", "log_likelihood")
        g.squeeze(ll, [1], "head/log_likelihood", "(N,)")
    if "responsibilities" in want:
        if narrow and wide == "float64":
            g.set_dtype("float32")
        sg = g.node("Max", [s, g.const("head/one", np.array(1.0))], "head/sum_guard",
                    "max(sum, 1): equal to the sum except for all -inf rows (responsibilities 0, not NaN)")
        emit("head/responsibilities", "responsibilities")
        g.node("Div", [e, sg], "head/responsibilities", "softmax of L over components")


# ---------------------------------------------------------------------------
# layouts: each a (choose, build, describe) entry


@dataclass(frozen=True)
class _Choice:
    """What a layout's ``choose`` decides (see :class:`~gmmnet.formats.onnx.plan.ExportPlan`)."""

    compute: str
    compute_reason: str
    layer_dtype: str
    head_dtype: str
    centering: str
    centering_reason: str
    estimates: dict
    estimate: float
    predicted: dict
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """One entry of :data:`LAYOUTS`.

    ``choose(p, mixture, options)`` → the arithmetic, centring and predicted errors;
    ``build(g, p, plan, x, want, emit)`` → the D² tensor (or None) after writing the layout's
    nodes (and the ``distances`` branch); ``describe(plan, p, source)`` → the model's doc string.
    """

    name: str
    choose: Callable
    build: Callable
    describe: Callable
    n_neurons: Callable  # (p, options) → neurons written (ReLU pairs twice)


def _choose_neurons(p: _Prepared, mixture, opts: ExportOptions) -> _Choice:
    dtype, centering = opts.dtype, opts.centering
    mode, _, compute_reason, _ = _choose_compute(p, opts, mixture)
    layer = _layer_head(dtype, mode)[0]
    if centering == "auto":
        used, reason, ests = _choose_centering(p, layer)
    else:
        used = _layout_centering(p.ctype, centering)
        reason = (f"requested {centering!r}" if used == centering
                  else f"requested {centering!r}; {p.ctype} graphs are always centred per component")
        ests = {used: _estimate(p, used, layer)}
    estimate = ests[used]
    warns = []
    if estimate > WARN_ABOVE:
        hint = ("use dtype='float64' or compute='float64'" if dtype == "float32"
                else "the model is too ill-conditioned for exact scoring")
        if used == "component":
            better = ""
        else:
            comp = ests["component"] if "component" in ests else _estimate(p, "component", layer)
            better = f"; centering='component' is estimated at {comp:.1e}"
        warns.append(f"estimated {layer} log-likelihood error {estimate:.1e} with centering={used!r} exceeds "
                     f"{WARN_ABOVE:.0e}; {hint}{better}")
    layer, head = _heads(p, opts, mode, used)
    return _Choice(mode, compute_reason, layer, head, used, reason, ests, estimate, _predict(p, used, layer, head),
                   tuple(warns))


def _choose_quadratic(p: _Prepared, mixture, opts: ExportOptions) -> _Choice:
    if p.ctype not in _AXIS:
        if mixture.covariance_type in _AXIS:
            raise UsageError("layout='quadratic' needs a diagonal input transform (scalers); this mixture's input "
                             "transform mixes features (use layout='neurons')")
        raise UsageError(f"layout='quadratic' is for diag and spherical mixtures; this one is "
                         f"{mixture.covariance_type!r} (use layout='neurons')")
    dtype = opts.dtype
    used, reason = _choose_quadratic_centering(p, opts.centering)
    if opts.centering == "auto" and dtype == "float32" and opts.compute in ("auto", "float32"):
        # float32 arithmetic: every rounding counts, so centre wherever it makes the expanded terms smaller
        r = {c: _quadratic_ratio(p, c) for c in ("none", "global")}
        used = "global" if r["global"] < r["none"] else "none"
        reason = (f"auto (float32 arithmetic): the centre with the smaller expanded terms R; none {r['none']:.3g}, "
                  f"global {r['global']:.3g}")
    arith, compute_reason = _quadratic_arith(p, mixture, opts, used)
    if arith == "float64" and opts.centering == "auto":
        used, reason = _choose_quadratic_centering(p, "auto")
    pred = _predict_quadratic(p, dtype, used, arith)
    ests = {c: _predict_quadratic(p, dtype, c, arith)["log_likelihood"] for c in ("none", "global")}
    ll_t, resp_t = (LL_TARGET, DEFAULT_RESP_TARGET) if dtype == "float32" else (F64_TARGET, F64_TARGET)
    if arith == "float64" and dtype == "float32" and opts.compute == "float64":
        resp_t = RESP_TARGET
    warns = []
    if pred["log_likelihood"] > ll_t or pred["responsibilities"] > resp_t:
        warns.append(
            f"layout='quadratic': predicted errors log_likelihood {pred['log_likelihood']:.1e}, responsibilities "
            f"{pred['responsibilities']:.1e} exceed the {dtype} targets ({ll_t:.0e}, {resp_t:.0e}): components "
            f"narrow compared with their distance from the centre (centering={used!r}); use layout='neurons'")
    return _Choice(arith, compute_reason, arith, arith, used, reason, ests, pred["log_likelihood"], pred, tuple(warns))


def _quadratic_arith(p: _Prepared, mixture, opts: ExportOptions, centering: str) -> tuple[str, str]:
    """(arithmetic, reason) of the quadratic layout: float32 where requested, or ("auto", float32 interface)
    where its predicted errors meet the default targets (ll LL_TARGET, resp DEFAULT_RESP_TARGET); else float64.
    The expanded terms cancel when a component is narrow compared with its distance from the centre:
    in float32 that costs skl2onnx's graphs 1e-6..1e-4, and the prediction sees it (T_k)."""
    if opts.dtype == "float64" or opts.compute == "float64":
        return "float64", ("float64 graph" if opts.dtype == "float64" else "requested 'float64'")
    if opts.compute == "float32":
        return "float32", "requested 'float32'"
    if not _fits(p, mixture, "float32"):
        return "float64", "auto: the mixture's numbers do not fit float32 arithmetic"
    pred = _predict_quadratic(p, opts.dtype, centering, "float32")
    ratio = _quadratic_ratio(p, centering)
    ok = (ratio <= QUAD_RATIO and pred["log_likelihood"] <= LL_TARGET
          and pred["responsibilities"] <= DEFAULT_RESP_TARGET)
    summary = (f"expanded terms R = {ratio:.3g} x D^2 (float32 up to {QUAD_RATIO:g}); "
               f"float32: ll {pred['log_likelihood']:.1e}, resp {pred['responsibilities']:.1e}")
    if not ok:
        p64 = _predict_quadratic(p, opts.dtype, centering, "float64")
        summary += f"; float64: ll {p64['log_likelihood']:.1e}, resp {p64['responsibilities']:.1e}"
    return ("float32" if ok else "float64"), (f"auto: float32 if the expanded terms are small and its predicted "
                                              f"errors meet ll {LL_TARGET:.0e}, resp {DEFAULT_RESP_TARGET:.0e}, "
                                              f"else float64; {summary}")


def _build_neurons(g: Graph, p: _Prepared, plan: ExportPlan, x: str, want: set, emit) -> str | None:
    relu = plan.options.activation == "relu"
    scores = bool(want & {"label", "responsibilities", "log_likelihood", "mahalanobis"})
    if scores and _tied_expanded(p, plan.options, plan.layer_dtype, plan.centering):
        return _tied_expanded_d2(g, p, x, plan.centering)
    if scores and p.ctype == "full" and not relu:
        return _full_split_d2(g, p, x, plan.centering, want, emit)
    a, kind = _neurons(g, p, plan.options.activation, plan.centering, x, want, emit)
    if not scores:
        return None
    R = 2 * p.r if relu else p.r
    a3 = g.reshape(a, [0, p.K, R], "head/reshape", "(N, K, R): one row of activations per component") if kind == "flat" else a
    return g.reduce("ReduceSumSquare", a3, [2], "head/sumsq", 0,
                    "D^2_k = sum of squared activations (|z|^2 = z^2; relu(z)^2 + relu(-z)^2 = z^2)")


def _build_quadratic_layout(g: Graph, p: _Prepared, plan: ExportPlan, x: str, want: set, emit):
    d2 = None
    if g.dtype == "float32" and "mahalanobis" not in want and want & {"label", "responsibilities", "log_likelihood"}:
        d2 = _LogJoint(_build_quadratic_log_joint(g, p, x, plan.centering))
    elif want & {"label", "responsibilities", "log_likelihood", "mahalanobis"}:
        d2 = _build_quadratic(g, p, x, plan.centering)
    if "distances" in want:  # the neuron branch, for that output only
        _neurons(g, p, plan.options.activation, "component", x, want, emit)
    return d2


def _describe_neurons(plan: ExportPlan, p: _Prepared, source: str) -> str:
    o = plan.options
    relu = o.activation == "relu"
    return (
        f"A {p.K}-component Gaussian mixture ({p.ctype} covariance, {p.d} features; source {source}) written by gmmnet "
        f"{gmmnet_version()} as an {o.activation} network. Layer 0 holds {plan.n_neurons[0]} neurons: component k's "
        f"neuron i has w = lambda_i^-1/2 v_i and b = -w.mu_k, so its activation |w.x + b| is the distance from the "
        f"mean in standard deviations along principal component i"
        + (" (ReLU pairs [w; -w] give |z| = relu(z) + relu(-z))" if relu else "")
        + f". The head sums the squared activations per component (D^2_k), forms L_k = -D^2_k/2 + c_k and returns "
        f"{', '.join(plan.options.outputs)} (log-likelihood by a guarded log-sum-exp). Input centering: "
        f"{plan.centering} ({plan.centering_reason}); estimated {plan.layer_dtype} log-likelihood error "
        f"{plan.error_estimate:.2e}. Compute: {plan.compute} ({plan.compute_reason}). Layout: docs/onnx-graph.md."
    )


def _describe_quadratic(plan: ExportPlan, p: _Prepared, source: str) -> str:
    n = plan.n_neurons[0]
    return (
        f"A {p.K}-component Gaussian mixture ({p.ctype} covariance, {p.d} features; source {source}) written by gmmnet "
        f"{gmmnet_version()} in the quadratic layout: in float64, xc = x - m (m the mixture's mean, or 0 with "
        f"centering none; here {plan.centering}: {plan.centering_reason}), "
        f"D^2_k = sum_j p_kj xc_j^2 - 2 sum_j p_kj (mu_kj - m_j) xc_j + sum_j p_kj (mu_kj - m_j)^2 with p = 1/sigma^2 "
        f"(two (N, d)x(d, K) products), clamped at 0; the head forms L_k = -D^2_k/2 + c_k and returns "
        f"{', '.join(plan.options.outputs)} (log-likelihood by a guarded log-sum-exp). "
        + (f"The distances output comes from {n} {plan.options.activation} neurons |(x - mu_k)/sigma_k|. " if n else "")
        + f"Predicted errors: log_likelihood {plan.predicted['log_likelihood']:.2e}, responsibilities "
        f"{plan.predicted['responsibilities']:.2e}. Layout: docs/onnx-graph.md."
    )


def _rows_per_component(p: _Prepared, opts: ExportOptions) -> int:
    return 2 * p.r if opts.activation == "relu" else p.r


#: The graph layouts of a single mixture (``ExportOptions.layout``): "neurons" = the Abs (or ReLU)
#: network (every component's whitening neurons, then the head); "quadratic" = diag/spherical
#: only, D² as one expanded product in float64 (no neuron layer unless ``distances`` is
#: requested), then the same head.  docs/onnx-graph.md, "Layouts".  A new layout is one entry.
LAYOUTS: dict[str, Layout] = {
    "neurons": Layout("neurons", _choose_neurons, _build_neurons, _describe_neurons,
                      lambda p, o: p.K * _rows_per_component(p, o)),
    "quadratic": Layout("quadratic", _choose_quadratic, _build_quadratic_layout, _describe_quadratic,
                        lambda p, o: p.K * _rows_per_component(p, o) if "distances" in o.outputs else 0),
}
assert ("auto", *LAYOUTS) == LAYOUT_NAMES


def _resolve_layout(p: _Prepared, mixture, opts: ExportOptions) -> str:
    """The layout of ``layout="auto"`` (the default): "quadratic" for a diag/spherical mixture (float32
    interface, Abs activation, compute auto or float32, one centre or none) unless its predicted errors
    exceed the targets even in float64; else "neurons".  ``compute="float64"`` keeps the neurons layout:
    the most accurate graph (docs/onnx-graph.md, "Layouts")."""
    if opts.layout != "auto":
        return opts.layout
    if (p.ctype in _AXIS and not p.completed and opts.activation == "abs" and opts.dtype == "float32"
            and opts.compute in ("auto", "float32") and opts.centering in ("auto", "none", "global")
            and not _choose_quadratic(p, mixture, opts).warnings):
        return "quadratic"
    return "neurons"


# ---------------------------------------------------------------------------
# plan → build → annotate


def _check_mixture(mixture) -> None:
    if isinstance(mixture, Hierarchy):
        raise UnsupportedModelError("to_onnx exports a single Mixture; hierarchies are not supported by this exporter")
    if not isinstance(mixture, Mixture):
        raise UsageError(f"to_onnx expects a gmmnet.ir.Mixture, got {type(mixture).__name__}")


def _weights(mixture, opts: ExportOptions) -> tuple[int, int, str]:
    """(initializer bytes, working bytes, what) of the graph, from the IR's shapes alone (before any array is built)."""
    K, r = mixture.n_components, mixture.n_features
    fold = Fold.of(mixture.input_transform)
    d = r if fold is None else fold.n_inputs
    pairs = 2 if opts.activation == "relu" else 1
    diagonal = fold is None or fold.diagonal is not None
    head = 2 * K + 16  # log-terms, guards, axes and shapes
    if mixture.covariance_type in _AXIS and diagonal:  # centres (high, low parts) and scales; quadratic: P, Q, e, m
        n = K * d * (2 + pairs) + (2 * K * d + K + d if opts.layout != "neurons" else 0) + head
        working = 8 * n * 4
    else:  # rows, centres (high, low parts) or one centre, biases
        n = K * r * d * pairs + 2 * K * d + K * r * pairs + head
        # float64 rows, their rounded copy, the concatenated rows, the initializer and check_model's serialized copy
        working = 8 * K * r * d * 3 + 8 * n * 2
    return 8 * n, working, f"a {K}-component {mixture.covariance_type} mixture over {d} features"


def plan(mixture, options: ExportOptions, *, complete: bool = False) -> ExportPlan:
    """Every choice of the single-mixture graph for ``mixture`` (a :class:`~gmmnet.ir.Mixture`);
    ``complete``: rank-truncated components completed to full rank (see :func:`to_onnx`)."""
    _check_mixture(mixture)
    n_bytes, working, what = _weights(mixture, options)
    check_weight_bytes(n_bytes, working, what)
    p = _prepare(mixture, complete=complete)
    if options.compute != "auto":  # the arithmetic is known: refuse what it cannot hold before estimating in it
        _check_representable(p, mixture, _layer_head(options.dtype, options.compute)[0])
    layout = LAYOUTS[_resolve_layout(p, mixture, options)]
    choice = layout.choose(p, mixture, options)
    _check_representable(p, mixture, choice.layer_dtype)
    loss = None
    if options.dtype == "float32" and choice.compute != "float64":
        loss = _estimate(p, "component", "float32")
    return ExportPlan(
        exporter="mixture", options=options, kind="mixture", layout=layout.name, outputs=options.outputs,
        compute=choice.compute, compute_reason=choice.compute_reason, centering=choice.centering,
        centering_reason=choice.centering_reason, layer_dtype=choice.layer_dtype, head_dtype=choice.head_dtype,
        predicted=dict(choice.predicted), error_estimate=choice.estimate,
        levels=((p.K, int(sum(p.kept))),), n_neurons=(layout.n_neurons(p, options),), n_features=p.d,
        weight_bytes=n_bytes, warnings=choice.warnings, float32_loss=loss, input_transform=p.fold is not None,
        state={"mixture": mixture, "prepared": p, "estimates": choice.estimates},
    )


class _Emit:
    """Names an internal tensor as a graph output, or (float64 arithmetic behind a float32 interface)
    records it for a Cast back to the interface type."""

    def __init__(self, g: Graph, dtype: str):
        self.g, self.dtype = g, dtype
        self.final: dict[str, str] = {}  # output name → internal tensor to cast to the interface dtype

    def __call__(self, internal: str, name: str) -> None:
        if self.g.dtype == self.dtype or name == "label":
            self.g.renames[internal] = name
        else:
            self.final[name] = internal


def build(plan: ExportPlan):
    """The graph ``plan`` describes, annotated (doc strings, metadata) and checked."""
    import onnx

    mixture, p = plan.state["mixture"], plan.state["prepared"]
    opts = plan.options
    dtype, outputs = opts.dtype, opts.outputs
    g = Graph(plan.layer_dtype, opts.opset)
    io_elem = g.elem if plan.layer_dtype == dtype else onnx.TensorProto.FLOAT
    want = set(outputs)
    x = "X"
    if plan.layer_dtype != dtype:  # float64 compute behind a float32 interface: float32 → float64 is exact
        x = g.node("Cast", [x], "input/cast", "X as double: the graph computes in float64", to=g.elem)
    emit = _Emit(g, dtype)
    d2 = LAYOUTS[plan.layout].build(g, p, plan, x, want, emit)
    if d2 is not None:
        _build_head(g, p, d2, want, emit, plan.head_dtype, narrow=dtype == "float32")
    for name, internal in emit.final.items():
        g.node("Cast", [internal], "output/" + name, f"{name} back to the interface type", out=name, to=io_elem)
    return _annotate(g, p, plan, mixture, io_elem)


def _annotate(g: Graph, p: _Prepared, plan: ExportPlan, mixture, io_elem):
    """Graph inputs and outputs, doc strings, metadata_props, per-node metadata; checked."""
    import onnx

    helper = onnx.helper
    opts = plan.options
    K, d = p.K, p.d
    x_info = helper.make_tensor_value_info("X", io_elem, ["batch", d])
    x_info.doc_string = f"input rows, {d} features" + (" (raw: the input transform is folded into layer 0)"
                                                        if p.fold is not None else "")
    shapes = {
        "label": (onnx.TensorProto.INT64, ["batch"]),
        "responsibilities": (io_elem, ["batch", K]),
        "log_likelihood": (io_elem, ["batch"]),
        "distances": (io_elem, ["batch", int(sum(p.kept))]),
        "mahalanobis": (io_elem, ["batch", K]),
    }
    docs = {
        "label": "most probable component (int64)",
        "responsibilities": "posterior probability of each component",
        "log_likelihood": "log p(x) under the mixture",
        "distances": "Abs activations |w_ki (x - mu_k)|, component-major (k, then principal component i)",
        "mahalanobis": "Mahalanobis distance D_k to each component (not squared)",
    }
    outs = []
    for name in opts.outputs:
        vi = helper.make_tensor_value_info(name, *shapes[name])
        vi.doc_string = docs[name]
        outs.append(vi)
    source = mixture.provenance.source
    graph = helper.make_graph(g.nodes, "gmmnet_mixture", [x_info], outs,
                              doc_string=f"{K}-component {p.ctype} Gaussian mixture over {d} features")
    model = make_model(graph, opts.opset, LAYOUTS[plan.layout].describe(plan, p, source))
    model.graph.initializer.extend(g.inits)  # copied once, into the model (make_model copies the graph)
    ests = plan.state["estimates"]
    meta = {
        "producer": "gmmnet",
        "gmmnet_version": gmmnet_version(),
        "source": source,
        "covariance_type": mixture.covariance_type,
        "activation": opts.activation,
        "dtype": opts.dtype,
        "opset": str(opts.opset),
        "n_components": str(K),
        "n_features": str(d),
        "n_neurons": str(plan.n_neurons[0]),
        "ranks": ",".join(str(r) for r in p.kept),
        "outputs": ",".join(opts.outputs),
        "centering": plan.centering,
        "centering_requested": opts.centering,
        "centering_reason": plan.centering_reason,
        "error_estimate": f"{plan.error_estimate:.3e}",
        "error_estimates": ",".join(f"{k}={v:.3e}" for k, v in ests.items()),
        "compute": plan.compute,
        "compute_requested": opts.compute,
        "compute_reason": plan.compute_reason,
        "predicted_error_log_likelihood": f"{plan.predicted['log_likelihood']:.3e}",
        "predicted_error_responsibilities": f"{plan.predicted['responsibilities']:.3e}",
        "layout": plan.layout,
        "layout_requested": opts.layout,
        "neuron_layout": ("k*2r+i: +w_ki, k*2r+r+i: -w_ki" if opts.activation == "relu" else "k*r+i: w_ki"),
    }
    if p.completed:
        meta["truncation"] = ("rank-truncated components completed to full rank: neurons c{k}/res{j} span the "
                              "discarded directions with the residual variance")
    if p.fold is not None:
        meta["input_transform"] = p.fold.metadata()
    if opts.output_names != "gmmnet":
        meta["output_names"] = opts.output_names
    set_metadata(model, meta)
    if model.ir_version >= 10:  # per-node metadata: the neuron names on the linear node(s)
        per_component = {f"layer0/c{k}/linear": ",".join(labs) for k, labs in enumerate(p.labels)}
        for n in model.graph.node:
            if n.name == "layer0/linear" or (n.name in per_component and n.op_type == "Gemm"):
                entry = n.metadata_props.add()
                entry.key, entry.value = "neurons", (_neuron_list(p) if n.name == "layer0/linear"
                                                     else per_component[n.name])
    rename_outputs(model, opts.output_names)
    plan.state["serialized"] = checked_bytes(model)  # the CLI writes these bytes: no second serialization
    return model


def _declines(mixture, options: ExportOptions) -> str | None:
    if options.needs_deep:
        return ("activation='shifted_relu', intensity heads and level outputs are written by the deep exporter")
    if options.layout != "quadratic" and any(c.rank < c.n_features for c in mixture.components):
        return "a rank-truncated mixture is written by the deep exporter (K·r neurons plus the residual term)"
    return None


EXPORTER = register_exporter(Exporter(
    name="mixture", takes=lambda model: isinstance(model, Mixture), declines=_declines, plan=plan, build=build,
    models="a gmmnet.ir.Mixture", order=10,
))


def to_onnx(mixture, **options):
    """Export an IR :class:`~gmmnet.ir.Mixture` with this (the single-mixture) exporter.

    :func:`gmmnet.formats.onnx.to_onnx` chooses the exporter and documents the options
    (:class:`~gmmnet.formats.onnx.options.ExportOptions`); this one is for callers that want
    this exporter and no other (a deep option raises UsageError).  A rank-truncated mixture is
    completed to full rank here (d neurons per component, exact; metadata ``truncation``), where
    the registry would give it the deep exporter's K·r neurons.  PrecisionWarnings are issued as
    by :func:`gmmnet.formats.onnx.to_onnx`.
    """
    import warnings

    from ...errors import PrecisionWarning

    opts = ExportOptions(**options)
    _check_mixture(mixture)
    if opts.needs_deep:
        raise UsageError(_declines(mixture, opts))
    pl = plan(mixture, opts, complete=True)
    for message in pl.warnings:
        warnings.warn(message, PrecisionWarning, stacklevel=2)
    return build(pl)
