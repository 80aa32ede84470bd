"""IR → ONNX: a Gaussian mixture as an Abs (or exact ReLU) network with a mixture head.

The graph contract (layouts, node and initializer names, outputs, metadata keys) is
docs/onnx-graph.md; keep the two in step.  In short, component k's neuron i is
``w = λ_i^-½ v_i, b = −wᵀμ_k, a = |wᵀx + b|``; the head computes ``D²_k = Σ_i a²``,
``L_k = −½ D²_k + c_k`` and from it the log-likelihood (a guarded log-sum-exp), the
responsibilities and the label.

Every constant is derived in float64 and cast only when written.  In a float32 graph the
biases are computed from the float32-rounded weights (and the float32-rounded centre),
so that the graph evaluates ``W̃ (x − μ)`` up to arithmetic rounding; ``centering``
decides how much of that rounding cancels (see :func:`float32_error_estimate`).
``compute`` chooses the arithmetic inside a float32 graph (input and outputs stay float32):
float32, float64 behind Cast nodes, or "auto" = float32 where :func:`predicted_errors` says it
meets the accuracy targets, else float64 (docs/onnx-graph.md, "Compute").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ... import linalg
from ...errors import PrecisionWarning, UnsupportedModelError, UsageError

__all__ = [
    "ABS_OK",
    "ACTIVATIONS",
    "CENTERINGS",
    "COMPUTES",
    "DEFAULT_OUTPUTS",
    "DTYPES",
    "LAYOUTS",
    "MAX_OPSET",
    "MIN_OPSET",
    "OUTPUTS",
    "RATIO_OK",
    "WARN_ABOVE",
    "float32_error_estimate",
    "predicted_errors",
    "to_onnx",
]

#: Every output a graph can have (a graph has the requested ones, in the order requested).
OUTPUTS = ("label", "responsibilities", "log_likelihood", "distances", "mahalanobis")
DEFAULT_OUTPUTS = ("label", "responsibilities", "log_likelihood")
ACTIVATIONS = ("abs", "relu")
DTYPES = ("float32", "float64")
CENTERINGS = ("auto", "none", "global", "component")
#: Arithmetic inside a float32-interface graph: "float32" everywhere; "mixed" = float32 neurons,
#: float64 head (from D² on); "float64" = the input is cast to double first.  "auto" picks float32
#: when its predicted errors (:func:`predicted_errors`) meet LL_TARGET and RESP_TARGET, else float64.
COMPUTES = ("auto", "float32", "mixed", "float64")
#: The issue's float32 targets on standardized data: log-likelihood max|Δ|/(1+|ref|), responsibilities max|Δ|.
LL_TARGET = 2e-6
RESP_TARGET = 1e-6
#: The float64-graph target (both outputs), used by the quadratic layout's warning.
F64_TARGET = 1e-10
#: Graph layouts: "neurons" = the Abs (or ReLU) network (every component's whitening neurons, then
#: the head); "quadratic" = diag/spherical only, D² as one expanded product in float64 (no neuron
#: layer unless ``distances`` is requested), then the same head.  docs/onnx-graph.md, "Layouts".
LAYOUTS = ("neurons", "quadratic")
#: The quadratic layout subtracts one centre (or none) before its products.
QUADRATIC_CENTERINGS = ("auto", "none", "global")
MIN_OPSET = 13
MAX_OPSET = 21

#: ``centering="auto"`` takes the cheapest of none, global, component whose estimated error
#: (see :func:`float32_error_estimate`) is at most ``max(ABS_OK, RATIO_OK × estimate of
#: component)``.  Chosen by measurement (docs/onnx-graph.md, "Centering").
ABS_OK = 1e-6
RATIO_OK = 2.0
#: A chosen layout whose estimate exceeds this warns with PrecisionWarning.
WARN_ABOVE = 1e-4
#: "within a few σ": the estimate looks at points A standard deviations from a mean.
_A = 3.0
_UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}


# ---------------------------------------------------------------------------
# float64 derivation


@dataclass
class _Prepared:
    """The mixture as arrays: K components of r = n_features neurons each (rank-completed)."""

    K: int
    d: int
    ctype: str
    means: np.ndarray  # (K, d)
    W: np.ndarray  # (K, d, d) whitening rows λ^-½ v (diagonal for diag/spherical)
    scales: np.ndarray | None  # (K, d) λ^-½ for diag/spherical
    consts: np.ndarray  # (K,) c_k
    weights: np.ndarray  # (K,)
    coord_std: np.ndarray  # (K, d) sqrt(diag Σ_k)
    kept: list[int]  # rank r_k of each component as stored (≤ d)
    truncated: bool = False
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
    """Eigenvectors/eigenvalues of a component, completed to full rank with its residual variance."""
    V, lam = c.eigenvectors, c.eigenvalues
    if c.rank == c.n_features:
        return V, lam
    # orthonormal complement of the kept rows: the trailing right singular vectors of V
    d = c.n_features
    _, _, vh = np.linalg.svd(V, full_matrices=True)
    comp = vh[c.rank:]
    return np.vstack([V, comp]), np.concatenate([lam, np.full(d - c.rank, float(c.residual_variance))])


def _prepare(mixture) -> _Prepared:
    K, d = mixture.n_components, mixture.n_features
    ct = mixture.covariance_type
    means = mixture.means.astype(np.float64)
    Ws, stds, kept, labels = [], [], [], []
    truncated = False
    for k, c in enumerate(mixture.components):
        V, lam = _complete(c)
        truncated |= c.rank < d
        W = linalg.whitening(V, lam)
        Ws.append(W)
        stds.append(np.sqrt(np.maximum(np.einsum("ij,i,ij->j", V, lam, V), 0.0)))
        kept.append(c.rank)
        labels.append([f"c{k}/pc{i}" for i in range(c.rank)] + [f"c{k}/res{i}" for i in range(d - c.rank)])
    if ct == "tied" and not all(np.array_equal(w, Ws[0]) for w in Ws):
        ct = "full"  # tied components truncated with different residual variances: no shared product
    scales = variances = None
    if ct in ("diag", "spherical"):
        variances = np.stack([np.asarray(c.eigenvalues, dtype=np.float64) for c in mixture.components])
        scales = 1.0 / np.sqrt(variances)
    return _Prepared(
        K=K, d=d, ctype=ct, means=means, W=np.stack(Ws), scales=scales,
        consts=linalg.component_log_terms(mixture), weights=mixture.weights, coord_std=np.stack(stds),
        kept=kept, truncated=truncated, labels=labels, variances=variances,
    )


def _rounder(dtype: str):
    np_dtype = np.float32 if dtype == "float32" else np.float64
    return lambda a: np.asarray(a, dtype=np.float64).astype(np_dtype).astype(np.float64)


def _centre_input(g, p, x, centering: str):
    """(graph input, component means relative to it): with "global", x − the mixture's mean first."""
    if centering != "global":
        return x, p.means
    mbar = _global_centre(p, g.dtype)
    x = g.node("Sub", [x, g.const("layer0/mean", mbar, "global centre: the mixture's mean, rounded to the graph dtype")],
               "layer0/center", "x - global centre")
    return x, p.means - mbar


def _global_centre(p: _Prepared, dtype: str) -> np.ndarray:
    """The mixture's overall mean Σ π_k μ_k, rounded to the graph dtype (used exactly afterwards)."""
    return _rounder(dtype)(p.weights @ p.means)


def _split(p: _Prepared, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """μ_k = μ_hi + μ_lo with μ_hi = float32(μ_k), μ_lo = float32(μ_k − μ_hi) (float64: μ_lo = 0)."""
    rnd = _rounder(dtype)
    hi = rnd(p.means)
    lo = rnd(p.means - hi)
    return hi, lo


# ---------------------------------------------------------------------------
# error estimate


def _layout_centering(ctype: str, centering: str) -> str:
    return "component" if ctype in ("diag", "spherical") else centering


def _estimate(p: _Prepared, centering: str, dtype: str) -> float:
    """u · max_k (A ‖e_k‖₂ + |c_k| + d): see :func:`float32_error_estimate`."""
    prods = _products(p, centering, dtype)
    heads = np.where(np.isfinite(p.consts), np.abs(p.consts), 0.0) + p.d
    return float(_UNIT_ROUNDOFF[dtype] * np.max(_A * prods + heads))


def float32_error_estimate(mixture, centering: str = "auto", *, dtype: str = "float32") -> float:
    """Estimated worst absolute error of ``log_likelihood`` from rounding in a ``dtype`` graph.

    For component k with neurons w̃_i (weights rounded to ``dtype``), the centre c that the
    layout subtracts before the product (0 for ``"none"``, the rounded mixture mean for
    ``"global"``, μ_k itself for ``"component"`` and for diag/spherical) and points within
    A = 3 standard deviations of μ_k (σ_kj = √Σ_k,jj per coordinate)::

        t_j   = |μ_kj − c_j| + A σ_kj                  size of the product's input x − c
        e_ki  = ‖w̃_i ∘ t‖₂ + |w̃_i · (μ_k − c)|        rounding of the products (and of x − c),
                                                       and of the bias they must cancel
        est_k = u · (A ‖e_k‖₂ + |c_k| + d)

    u is the unit roundoff (2⁻²⁴ for float32, 2⁻⁵³ for float64).  δz_ki ≈ u·e_ki is the error
    of a pre-activation; ½ δ(D²) = Σ_i a_i δz_i ≤ D ‖δz‖₂ with D ≈ A gives A‖e_k‖₂; u(|c_k| + d)
    is the head's share (rounding of the constant and of D² ≈ d).  The estimate is max_k est_k.
    Measured on onnxruntime for 67 models (docs/onnx-graph.md, "Centering"), the worst absolute
    error over the data was 0.2–4 times the estimate.

    ``centering="auto"`` returns the estimate of the layout :func:`to_onnx` would choose.
    """
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if centering not in CENTERINGS:
        raise UsageError(f"centering must be one of {CENTERINGS}, got {centering!r}")
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


def _predict(p: _Prepared, centering: str, layer: str, head: str) -> dict:
    """Predicted worst errors (log_likelihood relative, responsibilities absolute) of a layout.

    Per component k, in the bulk of its points (D² within d ± A√(2d), the χ²_d spread):

        P_k  = u_layer · A ‖e_k‖₂            the neuron products (as in :func:`float32_error_estimate`)
        S_k  = u_layer · ½ D²_hi             the sum of squares, in the layer's type
        H_k  = u_head · (|c_k| + ½ D²_hi + d) the log-joint L_k = c_k − ½D² and the log-sum-exp
        ll_k = (P_k + S_k + H_k) / (1 + min |c_k − ½D²|)  over that bulk
        resp = ½ max_k (P_k + S_k + H_k)     δr ≤ r(1−r) |δL_a − δL_b| ≤ ¼ · 2 max|δL|

    with D²_hi = d + A√(2d).  S_k is counted separately only when the head is wider than the layer.
    """
    u_l, u_h = _UNIT_ROUNDOFF[layer], _UNIT_ROUNDOFF[head]
    centering = _layout_centering(p.ctype, centering)
    spread = _A * np.sqrt(2.0 * p.d)
    d2_hi, d2_lo = p.d + spread, max(p.d - spread, 0.0)
    prods = _products(p, centering, layer)
    ll, resp = 0.0, 0.0
    for k in range(p.K):
        c = float(p.consts[k]) if np.isfinite(p.consts[k]) else 0.0
        P = u_l * _A * prods[k]
        S = u_l * 0.5 * d2_hi if u_h < u_l else 0.0
        H = u_h * (abs(c) + 0.5 * d2_hi + p.d)
        lo = 0.0 if d2_lo <= 2 * c <= d2_hi else min(abs(c - 0.5 * d2_lo), abs(c - 0.5 * d2_hi))
        ll = max(ll, (P + S + H) / (1.0 + lo))
        resp = max(resp, 0.5 * (P + S + H))
    return {"log_likelihood": ll, "responsibilities": resp}


def _products(p: _Prepared, centering: str, dtype: str) -> np.ndarray:
    """‖e_k‖₂ per component (see :func:`float32_error_estimate`), computed once per layout."""
    centering = _layout_centering(p.ctype, centering)
    key = ("products", centering, dtype)
    if key in p.memo:
        return p.memo[key]
    if centering == "none":
        centres = np.zeros_like(p.means)
    elif centering == "global":
        centres = np.broadcast_to(_global_centre(p, dtype), p.means.shape)
    else:
        hi, lo = _split(p, dtype)
        centres = hi + lo
    Wr = p.rounded_W(dtype)
    off = p.means - centres  # what the product has to cancel
    t = np.abs(off) + _A * p.coord_std  # |x − c| at points A σ from the mean
    if p.ctype in ("diag", "spherical"):  # W is diagonal
        w = np.einsum("kii->ki", Wr)
        e = np.abs(w) * t + np.abs(w * off)
    else:
        e = np.sqrt(np.einsum("kij,kj->ki", Wr * Wr, t * t)) + np.abs(np.einsum("kij,kj->ki", Wr, off))
    p.memo[key] = np.sqrt(np.einsum("ki,ki->k", e, e))
    return p.memo[key]


def _choose_compute(p: _Prepared, dtype: str, compute: str, centering: str = "auto",
                    mixture=None) -> tuple[str, str, str, dict]:
    """(compute, centering, reason, predictions) for a graph of interface ``dtype``."""
    fixed = centering
    if compute == "auto" and dtype == "float32" and mixture is not None and not _fits_float32(mixture):
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
        layer, head = _layer_head(dtype, mode)
        centering = _choose_centering(p, layer)[0] if fixed == "auto" else _layout_centering(p.ctype, fixed)
        preds[mode] = (centering, _predict(p, centering, layer, head))
        pr = preds[mode][1]
        if pr["log_likelihood"] <= LL_TARGET and pr["responsibilities"] <= RESP_TARGET:
            break
    summary = "; ".join(f"{m}: ll {v[1]['log_likelihood']:.1e}, resp {v[1]['responsibilities']:.1e}"
                        for m, v in preds.items())
    if compute == "auto":
        reason = (f"auto: float32 if its predicted errors meet ll {LL_TARGET:.0e}, resp {RESP_TARGET:.0e}, "
                  f"else float64; {summary}")
    else:
        reason = f"requested {compute!r}; {summary}"
    return mode, preds[mode][0], reason, preds[mode][1]


def _fits_float32(mixture) -> bool:
    from ...errors import InvalidModelError
    from ...linalg import check_representable

    try:
        check_representable(mixture, "float32")
    except InvalidModelError:
        return False
    return True


def predicted_errors(mixture, *, dtype: str = "float32", compute: str = "auto", layout: str = "neurons",
                     centering: str = "auto") -> dict:
    """Predicted worst errors of the graph :func:`to_onnx` would write, with the choices made.

    Returns ``{"compute", "centering", "log_likelihood", "responsibilities"}``: the compute and
    centering that ``to_onnx(mixture, dtype=dtype, compute=compute, layout=layout, centering=centering)`` uses, its
    predicted log-likelihood error (max |Δ|/(1+|ref|)) and responsibilities error (max |Δ|) on
    points in the bulk of each component (docs/onnx-graph.md, "Compute" and "Layouts").
    """
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if centering not in CENTERINGS:
        raise UsageError(f"centering must be one of {CENTERINGS}, got {centering!r}")
    _check_compute(dtype, compute)
    _check_mixture(mixture)
    p = _prepare(mixture)
    if layout == "quadratic":
        _check_layout(layout, mixture.covariance_type, compute, centering)
        used = _choose_quadratic_centering(p, centering)[0]
        return {"compute": "float64", "centering": used, **_predict_quadratic(p, dtype, used)}
    _check_layout(layout, mixture.covariance_type, compute)
    mode, centering, _, pred = _choose_compute(p, dtype, compute, centering, mixture=mixture)
    return {"compute": mode, "centering": centering, **pred}


# ---------------------------------------------------------------------------
# the quadratic layout (diag/spherical): D² as one expanded product, always in float64


def _check_layout(layout, covariance_type: str, compute: str = "auto", centering: str = "auto") -> None:
    if layout not in LAYOUTS:
        raise UsageError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "quadratic":
        return
    if covariance_type not in ("diag", "spherical"):
        raise UsageError(f"layout='quadratic' is for diag and spherical mixtures; this one is {covariance_type!r} "
                         "(use layout='neurons')")
    if compute not in ("auto", "float64"):
        raise UsageError(f"layout='quadratic' always computes in float64; compute must be 'auto' or 'float64', "
                         f"got {compute!r}")
    if centering not in QUADRATIC_CENTERINGS:
        raise UsageError(f"layout='quadratic' centres on one point; centering must be one of {QUADRATIC_CENTERINGS}, "
                         f"got {centering!r}")


def _quadratic_terms(p: _Prepared, centering: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, P, δ): the centre m (d,) — the mixture's mean Σ π_k μ_k for "global", 0 for "none" —,
    the precisions P = 1/σ² (K, d) and the offsets δ = μ_k − m (K, d).

    m is stored in the graph as a double exactly as computed here, so it is used exactly.
    """
    m = p.weights @ p.means if centering == "global" else np.zeros(p.d)
    return m, 1.0 / p.variances, p.means - m


def _quadratic_size(p: _Prepared, centering: str) -> np.ndarray:
    """T_k = Σ_j p_kj (2|δ_kj| + A σ_kj)², the size of the expanded terms (see :func:`_predict_quadratic`)."""
    _, prec, off = _quadratic_terms(p, centering)
    return np.sum(prec * (2.0 * np.abs(off) + _A * np.sqrt(p.variances)) ** 2, axis=1)


def _choose_quadratic_centering(p: _Prepared, centering: str) -> tuple[str, str]:
    """(centering, reason): "auto" skips the centring Sub unless it shrinks the expanded terms by over RATIO_OK."""
    if centering != "auto":
        return centering, f"requested {centering!r}"
    t_none, t_glob = float(np.max(_quadratic_size(p, "none"))), float(np.max(_quadratic_size(p, "global")))
    used = "none" if t_none <= RATIO_OK * t_glob else "global"
    return used, (f"auto: none unless centring on the mixture's mean shrinks the expanded terms max_k T_k more than "
                  f"{RATIO_OK:g}x; none {t_none:.3g}, global {t_glob:.3g}")


def _predict_quadratic(p: _Prepared, dtype: str, centering: str) -> dict:
    """Predicted worst errors of the quadratic layout (float64 arithmetic; outputs cast to ``dtype``).

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

    with u = 2⁻⁵³.  The u₃₂ = 2⁻²⁴ terms are the rounding of the outputs to float32 (½ ulp).
    T_k is large when a component is narrow compared with its distance from the centre
    (|δ_kj| ≫ σ_kj): there the expanded form cancels, and the neurons layout (centred on each
    μ_k) is the accurate one.
    """
    key = ("quadratic", dtype, centering)
    if key in p.memo:
        return p.memo[key]
    u = _UNIT_ROUNDOFF["float64"]
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
    if dtype == "float32":
        ll += _UNIT_ROUNDOFF["float32"]
        resp += _UNIT_ROUNDOFF["float32"]
    p.memo[key] = {"log_likelihood": ll, "responsibilities": resp}
    return p.memo[key]


def _check_compute(dtype: str, compute: str) -> None:
    if compute not in COMPUTES:
        raise UsageError(f"compute must be one of {COMPUTES}, got {compute!r}")
    if dtype == "float64" and compute not in ("auto", "float64"):
        raise UsageError(f"compute={compute!r} needs dtype='float32'; a float64 graph computes in float64")


def _choose_centering(p: _Prepared, dtype: str) -> tuple[str, str, dict]:
    """(centering, reason, estimates) for centering="auto".

    A layout is acceptable when its estimate is at most ``max(ABS_OK, RATIO_OK · est(component))``:
    centering is added only where it buys a real improvement over the float32 floor the
    covariance itself imposes (rounding of w·(x − μ) along thin directions), which no layout
    removes.  The cheapest acceptable of none, global, component is chosen.
    """
    if p.ctype in ("diag", "spherical"):
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
# graph building


class _Graph:
    def __init__(self, dtype: str, opset: int):
        import onnx

        self.onnx = onnx
        self.set_dtype(dtype)
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self._init_names: set[str] = set()
        self.renames: dict[str, str] = {}  # internal tensor name → graph output name

    def set_dtype(self, dtype: str) -> None:
        """The element type of the nodes and constants written from here on."""
        self.dtype = dtype
        self.np_dtype = np.float32 if dtype == "float32" else np.float64
        self.elem = self.onnx.TensorProto.FLOAT if dtype == "float32" else self.onnx.TensorProto.DOUBLE

    def const(self, name: str, value, doc: str = "", dtype=None) -> str:
        from onnx import numpy_helper

        if name in self._init_names:
            return name
        arr = np.asarray(value, dtype=dtype or self.np_dtype)
        t = numpy_helper.from_array(arr if arr.ndim == 0 else np.ascontiguousarray(arr), name)
        if doc:
            t.doc_string = doc
        self.inits.append(t)
        self._init_names.add(name)
        return name

    def ints(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64), dtype=np.int64)

    def node(self, op: str, inputs: list[str], name: str, doc: str = "", out: str | None = None, **attrs) -> str:
        out = self.renames.get(out or name, out or name)
        n = self.onnx.helper.make_node(op, inputs, [out], name=name, **attrs)
        if doc:
            n.doc_string = doc
        self.nodes.append(n)
        return out

    def reduce(self, op: str, x: str, axes: list[int], name: str, keepdims: int, doc: str = "") -> str:
        """Reduce* with ``axes`` as an attribute (before opset 18) or an input (18+; ReduceSum 13+)."""
        as_input = self.opset >= 18 or op == "ReduceSum"
        if as_input:
            ax = self.ints("axes/" + "_".join(str(a) for a in axes), axes)
            return self.node(op, [x, ax], name, doc, keepdims=keepdims)
        return self.node(op, [x], name, doc, axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int], name: str, doc: str = "") -> str:
        return self.node("Unsqueeze", [x, self.ints("axes/" + "_".join(str(a) for a in axes), axes)], name, doc)

    def squeeze(self, x: str, axes: list[int], name: str, doc: str = "") -> str:
        return self.node("Squeeze", [x, self.ints("axes/" + "_".join(str(a) for a in axes), axes)], name, doc)

    def reshape(self, x: str, shape: list[int], name: str, doc: str = "") -> str:
        return self.node("Reshape", [x, self.ints("shape/" + "_".join(str(s) for s in shape), shape)], name, doc)


def _center(g: _Graph, x: str, hi: np.ndarray, lo: np.ndarray, prefix: str, what: str) -> str:
    """x − μ_hi − μ_lo (``{prefix}/center_hi``, ``{prefix}/center_lo``), or x − μ (``{prefix}/center``) when μ_lo = 0."""
    if not np.any(lo):
        return g.node("Sub", [x, g.const(f"{prefix}/mean", hi, f"{what} (exact in the graph dtype)")],
                      f"{prefix}/center", f"x - mean: {what}")
    c = g.node("Sub", [x, g.const(f"{prefix}/mean_hi", hi, f"{what}, high part: float32(mean)")],
               f"{prefix}/center_hi", "x - mean_hi")
    return g.node("Sub", [c, g.const(f"{prefix}/mean_lo", lo, f"{what}, low part: float32(mean - mean_hi)")],
                  f"{prefix}/center_lo", "(x - mean_hi) - mean_lo = x - mean to float32 rounding of the result")


def _neuron_list(p: _Prepared) -> str:
    return ",".join(lab for labs in p.labels for lab in labs)


def _build_layer(g: _Graph, p: _Prepared, activation: str, centering: str, x: str = "X") -> tuple[str, str]:
    """The neuron layer.  Returns (pre-activation Z, its kind): "flat" = (N, K·R), "nkr" = (N, K, R).

    R = r for Abs, 2r for ReLU (per component: r rows w, then r rows −w).
    """
    rnd = _rounder(g.dtype)
    K, d = p.K, p.d
    relu = activation == "relu"
    pair = (lambda a, axis: np.concatenate([a, -a], axis=axis)) if relu else (lambda a, axis: a)
    layout_doc_rows = (
        "row k*2r + i = +w (component k, principal component i); row k*2r + r + i = -w (same neuron, mirrored)"
        if relu else "row k*r + i = component k, principal component i"
    )
    neurons = "neurons (component-major): " + _neuron_list(p)

    if p.ctype in ("diag", "spherical"):
        hi, lo = _split(p, g.dtype)
        s = rnd(p.scales)
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
                   "pre-activations w_ki (x - mu_k): " + ("(N, K, 2, d)" if relu else "(N, K, d)") + "; " + neurons)
        if relu:
            z = g.reshape(z, [0, K, 2 * d], "layer0/reshape", "(N, K, 2d): per component d rows +, then d rows -")
        return z, "nkr"

    W = p.rounded_W(g.dtype)  # (K, d, d), rows = neurons
    if p.ctype == "tied":
        W0 = W[0]
        Wp = pair(W0, 0)  # (R, d)
        if centering == "component":
            hi, lo = _split(p, g.dtype)
            xu = g.unsqueeze(x, [1], "layer0/unsqueeze", "X as (N, 1, d)")
            c = _center(g, xu, hi, lo, "layer0", "component means (K, d)")
            z = g.node("MatMul", [c, g.const("layer0/W_T", Wp.T, "shared whitening, transposed: column i = neuron i ("
                                             + ("w_0..w_{d-1}, then -w_0..-w_{d-1})" if relu else "w_i = lambda_i^-1/2 v_i)"))],
                       "layer0/linear", "(x - mu_k) W^T: (N, K, R); " + neurons)
            return z, "nkr"
        x, offs = _centre_input(g, p, x, centering)
        b = -(offs @ W0.T)  # (K, d), float64 from the rounded weights
        y = g.node("Gemm", [x, g.const("layer0/W", Wp, "shared whitening rows: " + (
            "rows 0..d-1 = w_i, rows d..2d-1 = -w_i" if relu else "row i = w_i = lambda_i^-1/2 v_i"))],
            "layer0/shared_linear", "W x for the shared covariance: (N, R)", transB=1)
        y = g.reshape(y, [0, 1, Wp.shape[0]], "layer0/reshape", "(N, 1, R)")
        z = g.node("Add", [y, g.const("layer0/b", pair(b, 1), "per-component biases b_k = -W (mu_k - centre): (K, R)")],
                   "layer0/linear", "W x + b_k: (N, K, R); " + neurons)
        return z, "nkr"

    # full
    rows = np.concatenate([pair(W[k], 0) for k in range(K)])  # (K·R, d)
    if centering == "component":
        hi, lo = _split(p, g.dtype)
        parts = []
        for k in range(K):
            c = _center(g, x, hi[k], lo[k], f"layer0/c{k}", f"mean of component {k}")
            R = rows.shape[0] // K
            parts.append(g.node("Gemm", [c, g.const(f"layer0/c{k}/W", rows[k * R:(k + 1) * R],
                                                    f"component {k} neurons, " + ("rows w_i then -w_i" if relu else "row i = w_i"))],
                                f"layer0/c{k}/linear", f"W_{k} (x - mu_{k})", transB=1))
        z = g.node("Concat", parts, "layer0/linear", "(N, K*R), " + layout_doc_rows + "; " + neurons, axis=1)
        return z, "flat"
    x, offs = _centre_input(g, p, x, centering)
    b = -np.einsum("kij,kj->ki", W, offs)  # (K, r), float64 from the rounded weights
    bias = np.concatenate([pair(b[k], 0) for k in range(K)])
    z = g.node("Gemm", [x, g.const("layer0/W", rows, "neuron weights, " + layout_doc_rows),
                        g.const("layer0/b", bias, "neuron biases b = -w (mu_k - centre), same row layout")],
               "layer0/linear", "z = W x + b: (N, K*R); " + neurons, transB=1)
    return z, "flat"


def _build_quadratic(g: _Graph, p: _Prepared, x: str, centering: str) -> str:
    """D² [N, K] of a diag/spherical mixture as one expanded product (float64 graph).

    ``D²_k = Σ_j p_kj xc_j² − 2 Σ_j p_kj δ_kj xc_j + Σ_j p_kj δ_kj²`` with xc = x − m, δ_k = μ_k − m,
    p = 1/σ², m the mixture's mean ("global") or 0 ("none"): two (N, d)×(d, K) products
    (spherical: ‖xc‖² times p_k) instead of K·d neurons.  Both are Gemms whose C input carries
    the rest of the sum (e_k, then the cross term), so the additions cost no extra pass.
    """
    m, prec, off = _quadratic_terms(p, centering)
    xc = x
    if centering == "global":
        xc = g.node("Sub", [x, g.const("quadratic/mean", m, "centre m = sum_k pi_k mu_k, the mixture's mean (float64)")],
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


def _build_head(g: _Graph, p: _Prepared, d2: str, want: set, emit, head_dtype: str, narrow: bool = False) -> None:
    """The mixture head on D² [N, K]: mahalanobis, L_k = −½D²_k + c_k, label, log-sum-exp, responsibilities.

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


def _check_mixture(mixture) -> None:
    from ...ir import Hierarchy, Mixture

    if isinstance(mixture, Hierarchy):
        raise UnsupportedModelError("to_onnx exports a single Mixture; hierarchies are not supported by this exporter")
    if not isinstance(mixture, Mixture):
        raise UsageError(f"to_onnx expects a gmmnet.ir.Mixture, got {type(mixture).__name__}")


def _check_options(activation, dtype, opset, outputs, centering, compute="auto") -> tuple[str, ...]:
    if activation not in ACTIVATIONS:
        raise UsageError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if centering not in CENTERINGS:
        raise UsageError(f"centering must be one of {CENTERINGS}, got {centering!r}")
    _check_compute(dtype, compute)
    check_opset(opset)
    return check_outputs(outputs)


def check_opset(opset) -> None:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise UsageError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}")


def check_outputs(outputs, allowed: tuple[str, ...] = OUTPUTS) -> tuple[str, ...]:
    """The requested output names as a tuple: known (in ``allowed``), at least one, no duplicates."""
    if isinstance(outputs, str):
        outputs = (outputs,)
    try:
        outputs = tuple(outputs)
    except TypeError:
        raise UsageError(f"outputs must be a sequence of names from {OUTPUTS}") from None
    unknown = [o for o in outputs if o not in allowed]
    if unknown:
        raise UsageError(f"unknown output {unknown[0]!r}; choose from {', '.join(allowed)}")
    if not outputs:
        raise UsageError(f"outputs must name at least one of {', '.join(OUTPUTS)}")
    if len(set(outputs)) != len(outputs):
        raise UsageError(f"outputs has duplicates: {list(outputs)}")
    return outputs


def to_onnx(
    mixture,
    *,
    activation: str = "abs",
    dtype: str = "float32",
    opset: int = 17,
    outputs=DEFAULT_OUTPUTS,
    centering: str = "auto",
    compute: str = "auto",
    layout: str = "neurons",
):
    """Export an IR :class:`~gmmnet.ir.Mixture` as an ONNX Abs (or exact ReLU) network.

    Parameters
    ----------
    mixture : gmmnet.ir.Mixture
        Any covariance type.  Rank-truncated components (``residual_variance`` set) are
        completed to full rank with their residual variance: exact, d neurons each.
    activation : {"abs", "relu"}
        ``"relu"`` doubles the neurons as ``[w; −w]`` (|z| = relu(z) + relu(−z)); exact.
    dtype : {"float32", "float64"}
        Element type of the input, the initializers and the float outputs.
    opset : int
        Default-domain opset, 13 to 21.  ``ir_version`` is the smallest that supports it.
    outputs : sequence of str
        Any of :data:`OUTPUTS`; only these are computed, in the order given.
    centering : {"auto", "none", "global", "component"}
        How ``x`` is centred before the product (matters for float32 on raw features); see
        docs/onnx-graph.md.  diag/spherical graphs are always centred per component.
    compute : {"auto", "float32", "mixed", "float64"}
        Arithmetic inside a float32 graph, whose input and outputs stay float32: ``"float32"``
        throughout; ``"mixed"``: float32 neurons, float64 head (from D² on); ``"float64"``: X is
        cast to double first.  ``"auto"`` takes ``"float32"`` when its predicted
        errors (:func:`predicted_errors`) meet the float32 targets (log-likelihood 2e-6,
        responsibilities 1e-6), else ``"float64"``.  A float64 graph computes in float64.
    layout : {"neurons", "quadratic"}
        ``"neurons"`` (default): the Abs (or ReLU) network above.  ``"quadratic"`` (diag and
        spherical only): D² as one expanded product about the mixture's mean, always in float64
        inside (the fast layout; no neuron layer unless ``distances`` is requested, and then
        ``activation`` applies to that branch only).  ``centering`` has no effect on it and
        ``compute`` must be ``"auto"`` or ``"float64"``.  See docs/onnx-graph.md, "Layouts".

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model(full_check=True)``.

    Warns
    -----
    gmmnet.errors.PrecisionWarning
        When the chosen layout's estimated log-likelihood error exceeds 1e-4; for
        ``layout="quadratic"``, when its predicted errors exceed the targets of ``dtype``
        (float32: 2e-6 / 1e-6, float64: 1e-10).
    """
    import onnx

    from ... import __version__

    outputs = _check_options(activation, dtype, opset, outputs, centering, compute)
    _check_mixture(mixture)
    _check_layout(layout, mixture.covariance_type, compute, centering)
    opset = int(opset)
    p = _prepare(mixture)
    K, d = p.K, p.d

    requested = centering
    if layout == "quadratic":
        # float64 inside: in float32 the expanded form cancels (skl2onnx's 1e-6..1e-4)
        mode, layer_dtype, head_dtype = "float64", "float64", "float64"
        compute_reason = "layout='quadratic' always computes in float64"
        check_representable_dtype = "float64"
        used, reason = _choose_quadratic_centering(p, centering)
        pred = _predict_quadratic(p, dtype, used)
        estimate = pred["log_likelihood"]
        ests = {c: _predict_quadratic(p, dtype, c)["log_likelihood"] for c in ("none", "global")}
        ll_t, resp_t = (LL_TARGET, RESP_TARGET) if dtype == "float32" else (F64_TARGET, F64_TARGET)
        if pred["log_likelihood"] > ll_t or pred["responsibilities"] > resp_t:
            warnings.warn(
                f"layout='quadratic': predicted errors log_likelihood {pred['log_likelihood']:.1e}, responsibilities "
                f"{pred['responsibilities']:.1e} exceed the {dtype} targets ({ll_t:.0e}, {resp_t:.0e}): components "
                f"narrow compared with their distance from the centre (centering={used!r}); use layout='neurons'",
                PrecisionWarning,
                stacklevel=2,
            )
    else:
        mode, _, compute_reason, _ = _choose_compute(p, dtype, compute, centering, mixture)
        layer_dtype, head_dtype = _layer_head(dtype, mode)
        check_representable_dtype = layer_dtype
    # refuse numbers the graph's arithmetic cannot hold (they would come out as NaN/inf)
    from ...linalg import check_representable

    check_representable(mixture, check_representable_dtype)
    if layout == "neurons":
        if centering == "auto":
            used, reason, ests = _choose_centering(p, layer_dtype)
        else:
            used = _layout_centering(p.ctype, centering)
            reason = (f"requested {centering!r}" if used == centering
                      else f"requested {centering!r}; {p.ctype} graphs are always centred per component")
            ests = {used: _estimate(p, used, layer_dtype)}
        estimate = ests[used]
        pred = _predict(p, used, layer_dtype, head_dtype)
        if estimate > WARN_ABOVE:
            hint = ("use dtype='float64' or compute='float64'" if dtype == "float32"
                    else "the model is too ill-conditioned for exact scoring")
            if used == "component":
                better = ""
            else:
                comp = ests["component"] if "component" in ests else _estimate(p, "component", layer_dtype)
                better = f"; centering='component' is estimated at {comp:.1e}"
            warnings.warn(
                f"estimated {layer_dtype} log-likelihood error {estimate:.1e} with centering={used!r} exceeds {WARN_ABOVE:.0e}; "
                f"{hint}{better}",
                PrecisionWarning,
                stacklevel=2,
            )

    g = _Graph(layer_dtype, opset)
    g.renames = {}
    io_elem = g.elem if layer_dtype == dtype else onnx.TensorProto.FLOAT
    relu = activation == "relu"
    R = 2 * d if relu else d
    want = set(outputs)
    need_d2 = bool(want & {"label", "responsibilities", "log_likelihood", "mahalanobis"})
    # the quadratic layout has a neuron layer only for the distances output
    need_neurons = layout == "neurons" or "distances" in want

    x = "X"
    if layer_dtype != dtype:  # float64 compute behind a float32 interface: float32 → float64 is exact
        x = g.node("Cast", [x], "input/cast", "X as double: the graph computes in float64", to=g.elem)
    final: dict[str, str] = {}  # output name → internal tensor to cast to the interface dtype

    def emit(internal: str, name: str) -> None:
        if g.dtype == dtype or name == "label":
            g.renames[internal] = name
        else:
            final[name] = internal

    d2 = None
    if layout == "quadratic" and need_d2:
        d2 = _build_quadratic(g, p, x, used)
    if need_neurons:
        z, kind = _build_layer(g, p, activation, "component" if layout == "quadratic" else used, x)
        act_op = "Relu" if relu else "Abs"
        act_doc = ("a = relu(z): per component r activations of +w then r of -w; |z| = relu(z) + relu(-z)" if relu
                   else "a = |z|: Mahalanobis distance along each principal component")
        if "distances" in want and not relu and kind == "flat" and not p.truncated:
            emit("layer0/" + act_op.lower(), "distances")
        a = g.node(act_op, [z], "layer0/" + act_op.lower(), act_doc)

        if "distances" in want and a != "distances" and "distances" not in final:
            flat = "distances/flatten" if not p.truncated else "distances/all"
            if relu:
                t = g.reshape(a, [0, K, 2, d], "distances/reshape", "(N, K, 2, r): the + and - halves of each neuron")
                t = g.reduce("ReduceSum", t, [2], "distances/pair_sum", 0, "relu(z) + relu(-z) = |z|")
            else:
                t = a
            if not p.truncated:
                emit("distances/flatten", "distances")
            t = g.reshape(t, [0, K * d], flat, "(N, K*r), component-major")
            if p.truncated:  # only the kept principal directions (the residual neurons complete the density)
                keep = [k * d + i for k in range(K) for i in range(p.kept[k])]
                emit("distances/kept", "distances")
                g.node("Gather", [t, g.ints("distances/kept_index", keep)], "distances/kept",
                       "the kept principal directions of each component (rank-truncated model)", axis=1)

        if need_d2 and layout == "neurons":
            a3 = g.reshape(a, [0, K, R], "head/reshape", "(N, K, R): one row of activations per component") if kind == "flat" else a
            d2 = g.reduce("ReduceSumSquare", a3, [2], "head/sumsq", 0,
                          "D^2_k = sum of squared activations (relu(z)^2 + relu(-z)^2 = z^2)")

    if need_d2:
        _build_head(g, p, d2, want, emit, head_dtype, narrow=dtype == "float32")
    for name, internal in final.items():
        g.node("Cast", [internal], "output/" + name, f"{name} back to the interface type", out=name, to=io_elem)

    # graph inputs / outputs
    helper = onnx.helper
    g.elem = io_elem
    x_info = helper.make_tensor_value_info("X", g.elem, ["batch", d])
    x_info.doc_string = f"input rows, {d} features"
    shapes = {
        "label": (onnx.TensorProto.INT64, ["batch"]),
        "responsibilities": (g.elem, ["batch", K]),
        "log_likelihood": (g.elem, ["batch"]),
        "distances": (g.elem, ["batch", int(sum(p.kept))]),
        "mahalanobis": (g.elem, ["batch", K]),
    }
    docs = {
        "label": "most probable component (int64)",
        "responsibilities": "posterior probability of each component",
        "log_likelihood": "log p(x) under the mixture",
        "distances": "Abs activations |w_ki (x - mu_k)|, component-major (k, then principal component i)",
        "mahalanobis": "Mahalanobis distance D_k to each component (not squared)",
    }
    outs = []
    for name in outputs:
        vi = helper.make_tensor_value_info(name, *shapes[name])
        vi.doc_string = docs[name]
        outs.append(vi)

    source = mixture.provenance.source
    graph = helper.make_graph(g.nodes, "gmmnet_mixture", [x_info], outs, initializer=g.inits,
                              doc_string=f"{K}-component {p.ctype} Gaussian mixture over {d} features")
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opset_ids, producer_name="gmmnet", producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opset_ids)
    model.model_version = 1
    n_neurons = K * R if need_neurons else 0
    if layout == "quadratic":
        model.doc_string = (
            f"A {K}-component Gaussian mixture ({p.ctype} covariance, {d} features; source {source}) written by gmmnet "
            f"{__version__} in the quadratic layout: in float64, xc = x - m (m the mixture's mean, or 0 with "
            f"centering none; here {used}: {reason}), "
            f"D^2_k = sum_j p_kj xc_j^2 - 2 sum_j p_kj (mu_kj - m_j) xc_j + sum_j p_kj (mu_kj - m_j)^2 with p = 1/sigma^2 "
            f"(two (N, d)x(d, K) products), clamped at 0; the head forms L_k = -D^2_k/2 + c_k and returns "
            f"{', '.join(outputs)} (log-likelihood by a guarded log-sum-exp). "
            + (f"The distances output comes from {n_neurons} {activation} neurons |(x - mu_k)/sigma_k|. " if n_neurons else "")
            + f"Predicted errors: log_likelihood {pred['log_likelihood']:.2e}, responsibilities "
            f"{pred['responsibilities']:.2e}. Layout: docs/onnx-graph.md."
        )
    else:
        model.doc_string = (
            f"A {K}-component Gaussian mixture ({p.ctype} covariance, {d} features; source {source}) written by gmmnet "
            f"{__version__} as an {activation} network. Layer 0 holds {n_neurons} neurons: component k's neuron i has "
            f"w = lambda_i^-1/2 v_i and b = -w.mu_k, so its activation |w.x + b| is the distance from the mean in standard "
            f"deviations along principal component i" + (" (ReLU pairs [w; -w] give |z| = relu(z) + relu(-z))" if relu else "")
            + f". The head sums the squared activations per component (D^2_k), forms L_k = -D^2_k/2 + c_k and returns "
            f"{', '.join(outputs)} (log-likelihood by a guarded log-sum-exp). Input centering: {used} ({reason}); "
            f"estimated {layer_dtype} log-likelihood error {estimate:.2e}. Compute: {mode} ({compute_reason}). "
            f"Layout: docs/onnx-graph.md."
        )
    meta = {
        "producer": "gmmnet",
        "gmmnet_version": __version__,
        "source": source,
        "covariance_type": mixture.covariance_type,
        "activation": activation,
        "dtype": dtype,
        "opset": str(opset),
        "n_components": str(K),
        "n_features": str(d),
        "n_neurons": str(n_neurons),
        "ranks": ",".join(str(r) for r in p.kept),
        "outputs": ",".join(outputs),
        "centering": used,
        "centering_requested": requested,
        "centering_reason": reason,
        "error_estimate": f"{estimate:.3e}",
        "error_estimates": ",".join(f"{k}={v:.3e}" for k, v in ests.items()),
        "compute": mode,
        "compute_requested": compute,
        "compute_reason": compute_reason,
        "predicted_error_log_likelihood": f"{pred['log_likelihood']:.3e}",
        "predicted_error_responsibilities": f"{pred['responsibilities']:.3e}",
        "layout": layout,
        "neuron_layout": ("k*2r+i: +w_ki, k*2r+r+i: -w_ki" if relu else "k*r+i: w_ki"),
    }
    if p.truncated:
        meta["truncation"] = ("rank-truncated components completed to full rank: neurons c{k}/res{j} span the "
                              "discarded directions with the residual variance")
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if model.ir_version >= 10:  # per-node metadata: the neuron names on the linear node
        for n in model.graph.node:
            if n.name == "layer0/linear":
                entry = n.metadata_props.add()
                entry.key, entry.value = "neurons", _neuron_list(p)
    onnx.checker.check_model(model, full_check=True)
    return model
