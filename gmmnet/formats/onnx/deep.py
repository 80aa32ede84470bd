"""Hierarchy ⇄ deep ONNX network: Linear→Abs→Linear→Abs→…→head, and the paper's activation variants.

Level ℓ of a :class:`gmmnet.ir.Hierarchy` is one Linear layer whose rows are its neurons
``w = λ^-½ v`` (over the activations of level ℓ−1, or over ``X`` for level 0), then an
activation.  The head of the top level (and, on request, of any level) is the mixture head of
:mod:`gmmnet.formats.onnx.export`: ``D²_k = Σ_i a_i²``, ``L_k = −½ D²_k + c_k``.

Activations (``activation=``):

``"abs"``
    ``a = |z|``, exact.
``"relu"``
    rows ``[W_k; −W_k]`` per component and ReLU: ``relu(z) + relu(−z) = |z|``.  The pairing is
    absorbed by the next Linear (its columns for the + and − neuron of a pair are the same
    column ``u``) and by the head (``relu(z)² + relu(−z)² = z²``), so no Add node undoes it.
    Exact.
``"shifted_relu"``
    one ReLU per direction, ``y = relu(−(wᵀx + b) + δ)`` (paper §4.2, eq. 10) with δ in
    standard deviations: an intensity (high near the mean) whose implied signed distance
    ``δ − y`` equals ``z`` wherever ``z ≤ δ``; beyond that the neuron is silent and the
    distance is under-estimated.  Approximate; see docs/hierarchy.md for the measurement.

Rank-truncated components (``residual_variance`` σ²) keep only r neurons; the discarded
subspace enters the head as ``(‖h − μ‖² − Σ_i λ_i a_i²) / σ²``, so
``D²_k = Σ_i (1 − λ_i/σ²) a_i² + ‖h − μ_k‖²/σ²`` (exact, and K·r instead of K·d rows in the
Linear).  ‖h − μ_k‖² is computed per component in the centred form where the level is centred
per component, else around the level's mean m as ‖h − m‖² − 2(μ_k − m)ᵀ(h − m) + ‖μ_k − m‖²
(one MatMul: this is where truncation buys its speed).

``compute`` ("auto" | "float32" | "float64") chooses the arithmetic behind a float32 interface;
"auto" measures the float32 graph against the float64-compute one on rows drawn from level 0.

The reverse, :func:`gmmnet.formats.onnx.read_deep.from_onnx`, reads any deep graph by pattern and
rebuilds one mixture per neuron level, truncated levels included (from their heads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ... import linalg
from ...errors import UnsupportedModelError, UsageError
from .export import (COMPUTES, DEFAULT_OUTPUTS, DTYPES, LL_TARGET, OUTPUTS, RESP_TARGET, _Graph, _rounder, check_opset,
                     check_outputs)

__all__ = ["ACTIVATIONS", "CENTERINGS", "INTENSITIES", "level_outputs", "to_onnx"]

ACTIVATIONS = ("abs", "relu", "shifted_relu")
CENTERINGS = ("auto", "none", "component")
#: Intensity transforms of the distances outputs (paper §4.3).
INTENSITIES = (None, "gauss", "laplace", "triangle")
_LEVEL_KINDS = ("responsibilities", "distances")
#: Tolerance of the orthonormality of one component's neuron directions in the reverse.
_ORTHO_TOL = {"float32": 1e-5, "float64": 1e-9}


def level_outputs(n_levels: int, kinds=("responsibilities",)) -> tuple[str, ...]:
    """Names of per-level outputs, e.g. ``level_outputs(3)`` → ``("level0_responsibilities", …)``."""
    return tuple(f"level{i}_{k}" for i in range(n_levels) for k in kinds)


# ---------------------------------------------------------------------------
# float64 derivation


@dataclass
class _Level:
    """One mixture as neuron arrays.  Neurons are component-major, n = Σ_k r_k."""

    K: int
    d: int
    W: np.ndarray  # (n, d) rows λ^-½ v
    means: np.ndarray  # (K, d)
    owner: np.ndarray  # (n,) component of each neuron
    coef: np.ndarray  # (n,) coefficient of a_i² in D²_k: 1, or 1 − λ_i/σ² when truncated
    res_inv: np.ndarray  # (K,) 1/σ² for truncated components, else 0
    consts: np.ndarray  # (K,) c_k
    ranks: list[int]

    @property
    def n(self) -> int:
        return int(self.W.shape[0])

    @property
    def truncated(self) -> bool:
        return bool(np.any(self.res_inv))


def _prepare(mixture) -> _Level:
    Ws, owner, coef, res_inv, ranks = [], [], [], [], []
    for k, c in enumerate(mixture.components):
        Ws.append(linalg.whitening(c.eigenvectors, c.eigenvalues))
        owner += [k] * c.rank
        ranks.append(c.rank)
        if c.residual_variance is not None and c.rank < c.n_features:
            s2 = float(c.residual_variance)
            coef.append(1.0 - c.eigenvalues / s2)
            res_inv.append(1.0 / s2)
        else:
            coef.append(np.ones(c.rank))
            res_inv.append(0.0)
    return _Level(
        K=mixture.n_components, d=mixture.n_features, W=np.concatenate(Ws), means=mixture.means.astype(np.float64),
        owner=np.array(owner), coef=np.concatenate(coef), res_inv=np.array(res_inv),
        consts=linalg.component_log_terms(mixture), ranks=ranks,
    )


def _levels_of(model):
    from ...ir import Hierarchy, Mixture

    if isinstance(model, Mixture):
        return [model], "mixture"
    if isinstance(model, Hierarchy):
        return list(model.levels), "hierarchy"
    try:  # a fitted HierarchicalGaussianMixture
        from ...hierarchy import HierarchicalGaussianMixture

        if isinstance(model, HierarchicalGaussianMixture):
            return list(model.to_ir().levels), "hierarchy"
    except ImportError:  # pragma: no cover
        pass
    raise UsageError(f"to_onnx expects a gmmnet.ir.Hierarchy or Mixture, got {type(model).__name__}")


def _check(levels, activation, dtype, opset, outputs, centering, delta, intensity, intensity_c):
    if activation not in ACTIVATIONS:
        raise UsageError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if centering not in CENTERINGS + ("global",):
        raise UsageError(f"centering must be one of {CENTERINGS}, got {centering!r}")
    check_opset(opset)
    if not (isinstance(delta, (int, float)) and not isinstance(delta, bool) and math.isfinite(delta) and delta > 0):
        raise UsageError(f"delta must be a finite number > 0 (standard deviations), got {delta!r}")
    if intensity not in INTENSITIES:
        raise UsageError(f"intensity must be one of {', '.join(str(i) for i in INTENSITIES)}, got {intensity!r}")
    if not (isinstance(intensity_c, (int, float)) and math.isfinite(intensity_c) and intensity_c > 0):
        raise UsageError(f"intensity_c must be a finite number > 0, got {intensity_c!r}")
    return check_outputs(outputs, OUTPUTS + level_outputs(len(levels), _LEVEL_KINDS))


# ---------------------------------------------------------------------------
# graph


def _center_sub(g: _Graph, h: str, c: np.ndarray, prefix: str) -> str:
    """h − c with c split into graph-dtype high and low parts (one Sub when the low part is 0)."""
    rnd = _rounder(g.dtype)
    hi = rnd(c)
    lo = rnd(c - hi)
    t = g.node("Sub", [h, g.const(f"{prefix}/centre_hi", hi, "centre, high part")], f"{prefix}/center_hi", "h - centre_hi")
    if np.any(lo):
        t = g.node("Sub", [t, g.const(f"{prefix}/centre_lo", lo, "centre, low part")], f"{prefix}/center_lo", "- centre_lo")
    return t


def _intensity(g: _Graph, a: str, prefix: str, kind, c: float, out: str) -> str:
    """Paper §4.3 intensity heads on Abs distances a: exp(−a²), exp(−a), relu(c − a)."""
    g.renames[f"{prefix}/intensity"] = out
    if kind == "gauss":
        sq = g.node("Mul", [a, a], f"{prefix}/sq", "a^2")
        neg = g.node("Neg", [sq], f"{prefix}/neg", "-a^2")
        return g.node("Exp", [neg], f"{prefix}/intensity", "exp(-a^2)")
    if kind == "laplace":
        neg = g.node("Neg", [a], f"{prefix}/neg", "-|a|")
        return g.node("Exp", [neg], f"{prefix}/intensity", "exp(-|a|)")
    sub = g.node("Sub", [g.const(f"{prefix}/c", np.array(c)), a], f"{prefix}/c_minus", "c - |a|")
    return g.node("Relu", [sub], f"{prefix}/intensity", "relu(c - |a|)")


def _head(g: _Graph, lj: str, prefix: str, names: dict[str, str]) -> None:
    """label / responsibilities / log_likelihood from the log-joint (N, K); ``names`` maps kind → output."""
    if "label" in names:
        g.renames[f"{prefix}/label"] = names["label"]
        g.node("ArgMax", [lj], f"{prefix}/label", "argmax_k L_k (first on ties)", axis=1, keepdims=0)
    if not ({"responsibilities", "log_likelihood"} & set(names)):
        return
    m = g.reduce("ReduceMax", lj, [1], f"{prefix}/max", 1, "row max of L: (N, 1)")
    m = g.node("Max", [m, g.const("head/lowest", np.array(np.finfo(g.np_dtype).min))], f"{prefix}/max_guard",
               "max(m, lowest finite): a row of all -inf keeps a finite shift")
    sh = g.node("Sub", [lj, m], f"{prefix}/shift", "L - m")
    e = g.node("Exp", [sh], f"{prefix}/exp", "exp(L - m)")
    s = g.reduce("ReduceSum", e, [1], f"{prefix}/sum", 1, "sum_k exp(L_k - m)")
    if "log_likelihood" in names:
        ls = g.node("Log", [s], f"{prefix}/log_sum", "log of the sum")
        ll = g.node("Add", [ls, m], f"{prefix}/logsumexp", "log p = m + log sum exp(L - m): (N, 1)")
        g.renames[f"{prefix}/log_likelihood"] = names["log_likelihood"]
        g.squeeze(ll, [1], f"{prefix}/log_likelihood", "(N,)")
    if "responsibilities" in names:
        sg = g.node("Max", [s, g.const("head/one", np.array(1.0))], f"{prefix}/sum_guard", "max(sum, 1)")
        g.renames[f"{prefix}/responsibilities"] = names["responsibilities"]
        g.node("Div", [e, sg], f"{prefix}/responsibilities", "softmax of L over components")


def to_onnx(
    model,
    *,
    activation: str = "abs",
    dtype: str = "float32",
    opset: int = 17,
    outputs=DEFAULT_OUTPUTS,
    centering: str = "auto",
    delta: float = 3.0,
    intensity: str | None = None,
    intensity_c: float = 3.0,
    compute: str = "auto",
):
    """Export a :class:`~gmmnet.ir.Hierarchy` (or a Mixture, as one level) as a deep ONNX network.

    Parameters
    ----------
    model : gmmnet.ir.Hierarchy, gmmnet.ir.Mixture or fitted HierarchicalGaussianMixture
    activation : {"abs", "relu", "shifted_relu"}
        ``"abs"`` and ``"relu"`` (paired, pairing absorbed into the next Linear) are exact;
        ``"shifted_relu"`` is the paper's intensity network ``relu(−(wᵀx + b) + δ)``, exact only
        where every pre-activation is ≤ δ.
    dtype : {"float32", "float64"}
    opset : int
        13 to 21.
    outputs : sequence of str
        Any of ``label``, ``responsibilities``, ``log_likelihood`` (top level), ``distances``
        (top level's Abs features), ``mahalanobis`` (top level), and per level i
        ``level{i}_responsibilities`` and ``level{i}_distances`` (see :func:`level_outputs`).
        Lower levels' component weights are part of the graph only through
        ``level{i}_responsibilities``; :func:`gmmnet.formats.onnx.read_deep.from_onnx` needs them to give
        those weights back.
    centering : {"auto", "none", "component"}
        ``"component"`` subtracts each component's centre (split in high and low parts) before its
        own product; ``"none"`` is one Gemm per level with biases.  ``"auto"``: on level 0 of a
        float32 graph, component where the single-mixture exporter's error estimate asks for
        any centring (raw inputs may sit far from 0), else none; none on the hidden levels
        (their features are O(1) distances) and in float64 arithmetic.
    delta : float
        δ of ``shifted_relu``, in standard deviations.
    intensity : {None, "gauss", "laplace", "triangle"}
        Transform every distances output ``a`` into ``exp(−a²)``, ``exp(−a)`` or
        ``relu(intensity_c − a)`` (paper §4.3).
    intensity_c : float
        c of the ``"triangle"`` intensity.
    compute : {"auto", "float32", "float64"}
        Arithmetic inside a float32 graph, whose input and outputs stay float32: ``"float32"``
        throughout, or ``"float64"`` (X is cast to double first, the float outputs cast back).
        ``"auto"`` builds the float32 graph, measures it against the float64-compute graph on rows
        drawn from level 0 (:func:`gmmnet.linalg.sample`) and keeps float32 only when both measured
        errors are at most half the targets (log-likelihood max |Δ|/(1+|ref|) ≤ 1e-6,
        responsibilities max |Δ| ≤ 5e-7); the choice, its reason and the measured errors are in
        ``metadata_props`` (``compute``, ``compute_reason``, ``measured_float32_error_*``).
        ``"mixed"`` is taken as ``"float64"``.  A float64 graph computes in float64.

    Returns
    -------
    onnx.ModelProto
        Input ``X`` (batch, n_features); checked with ``onnx.checker.check_model(full_check=True)``.
    """
    levels, kind = _levels_of(model)
    outputs = _check(levels, activation, dtype, opset, outputs, centering, delta, intensity, intensity_c)
    if compute not in COMPUTES:
        raise UsageError(f"compute must be one of {COMPUTES}, got {compute!r}")
    if dtype == "float64" and compute not in ("auto", "float64"):
        raise UsageError(f"compute={compute!r} needs dtype='float32'; a float64 graph computes in float64")
    opts = dict(activation=activation, dtype=dtype, opset=int(opset), centering=centering, delta=float(delta),
                intensity=intensity, intensity_c=float(intensity_c),
                source=(model.provenance.source if hasattr(model, "provenance") else type(model).__name__))
    measured, built = None, {}
    preps = [_prepare(mix) for mix in levels]
    if dtype == "float64":
        mode, reason = "float64", "float64 graph"
    elif compute == "float32":
        mode, reason = "float32", "requested 'float32'"
    elif compute in ("float64", "mixed"):  # mixed (float64 head only) buys little here: the levels' rounding dominates
        mode = "float64"
        reason = f"requested {compute!r}" + ("; deep graphs compute all of it in float64" if compute == "mixed" else "")
    else:
        mode, reason, measured, built = _choose_compute(levels, kind, opts, preps, outputs)
    m = built.get(mode)
    if m is None:
        m = _build(levels, kind, outputs, compute=mode, preps=preps, check=False, **opts)
    meta = {"compute": mode, "compute_requested": compute, "compute_reason": reason}
    if measured is not None:
        meta["measured_float32_error_log_likelihood"] = f"{measured['log_likelihood']:.3e}"
        meta["measured_float32_error_responsibilities"] = f"{measured['responsibilities']:.3e}"
    for key, value in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = key, value
    m.doc_string += f" Compute: {mode} ({reason})."
    import onnx

    onnx.checker.check_model(m, full_check=True)
    return m


#: Work (rows × multiply-adds per row) of compute="auto"'s measurement, and its row limits.
_MEASURE_WORK = 5e7
_MEASURE_ROWS = (64, 2000)


def _cost_per_row(levels, relu: bool) -> float:
    cost, m_in = 0.0, levels[0].n_features
    for mix in levels:
        n = sum(c.rank for c in mix.components) * (2 if relu else 1)
        trunc = any(c.rank < c.n_features for c in mix.components)
        cost += n * m_in + (mix.n_components * m_in if trunc else 0) + n * mix.n_components
        m_in = n
    return cost


def _choose_compute(levels, kind, opts, preps, outputs):
    """compute="auto" for a float32 graph: float32 only if the single-mixture predictor accepts
    float32 for every level and the graph's measured errors are ≤ half the targets, else float64.

    Both gates are needed: the measurement sees how the levels compound rounding, but rows drawn
    from the model rarely sit where real data can (between components, in the tails), and there
    it underestimates (measured on the single-mixture test matrix: raw breast_cancer spherical
    gave 6e-31 on model rows and 4.8e-6 on the data); the predictor covers those rows.  The float32 candidate and the same graph computed in float64 run on rows drawn from level 0
    (:func:`gmmnet.linalg.sample`, every component sampled); rows × per-row work is bounded by
    ``_MEASURE_WORK``, so the runs stay short even for a big hierarchy: what remains is building
    and loading the two graphs (when the requested outputs include log_likelihood and
    responsibilities, the chosen one is returned as is, not built a third time).
    """
    from ...errors import InvalidModelError
    from .runtime import measured_errors

    for mix in levels:
        try:
            linalg.check_representable(mix, "float32")
        except InvalidModelError:
            return "float64", "auto: the model's numbers do not fit float32 arithmetic", None, {}
    from .export import predicted_errors

    for i, mix in enumerate(levels):
        pred = predicted_errors(mix, dtype="float32", compute="float32")
        if pred["log_likelihood"] > LL_TARGET or pred["responsibilities"] > RESP_TARGET:
            return ("float64", f"auto: the single-mixture predictor rejects float32 arithmetic for level {i} "
                    f"(predicted ll {pred['log_likelihood']:.1e}, resp {pred['responsibilities']:.1e})", None, {})
    # the requested graph itself when it has both outputs (the chosen one is returned, not built again)
    probe = outputs if {"log_likelihood", "responsibilities"} <= set(outputs) else ("log_likelihood", "responsibilities")
    cand = _build(levels, kind, probe, compute="float32", preps=preps, check=False, **opts)
    ref = _build(levels, kind, probe, compute="float64", preps=preps, check=False, **opts)
    lo, hi = _MEASURE_ROWS
    work = _cost_per_row(levels, opts["activation"] == "relu")
    n_rows = int(min(hi, max(lo, levels[0].n_components, _MEASURE_WORK // work)))
    x = linalg.sample(levels[0], n_rows, seed=0).astype(np.float32)
    err = measured_errors(cand, ref, x)
    ll, resp = err.get("log_likelihood", 0.0), err.get("responsibilities", 0.0)
    ok = ll <= LL_TARGET / 2 and resp <= RESP_TARGET / 2
    reason = (f"auto: float32 if its measured errors against float64 compute on {x.shape[0]} rows drawn from level 0 "
              f"are <= half the targets (ll {LL_TARGET / 2:.0e}, resp {RESP_TARGET / 2:.0e}); "
              f"float32 measured ll {ll:.1e}, resp {resp:.1e}")
    built = {"float32": cand, "float64": ref} if probe is outputs else {}
    return ("float32" if ok else "float64"), reason, {"log_likelihood": ll, "responsibilities": resp}, built


def _build(levels, kind, outputs, *, activation, dtype, opset, centering, delta, intensity, intensity_c, source,
           compute, preps=None, check=True):
    """The deep graph of interface ``dtype`` whose arithmetic is ``compute`` (float64 behind Casts when they differ)."""
    import onnx

    from ... import __version__

    interface = dtype
    dtype = "float64" if compute == "float64" else interface  # the arithmetic's dtype from here on
    requested = centering
    if centering == "global":
        centering = "none"
    preps = preps if preps is not None else [_prepare(m) for m in levels]
    n_lv = len(preps)
    top = n_lv - 1
    want = set(outputs)
    relu = activation == "relu"
    shifted = activation == "shifted_relu"

    level0_centering = "component"
    if centering == "auto" and dtype == "float32":
        # the single-mixture exporter's estimate: per-component centring (K Gemms) only where it pays
        from .export import _choose_centering, _prepare as _flat_prepare

        level0_centering = "none" if _choose_centering(_flat_prepare(levels[0]), "float32")[0] == "none" else "component"
    g = _Graph(dtype, opset)
    g.renames = {}
    rnd = _rounder(dtype)
    h = "X"
    # the input of level ℓ as a vector of m entries: entry j carries feature feat[j] of the level below
    feat = np.arange(preps[0].d)
    for lv, p in enumerate(preps):
        pre = f"level{lv}"
        K = p.K
        # rows of this level over its input vector: the next Linear absorbs the ReLU pairing
        # (n, m); no copy when the level below is Abs (feat = identity): big levels hold 10⁷⁺ weights
        Wg = p.W if feat.size == p.W.shape[1] and np.array_equal(feat, np.arange(feat.size)) else p.W[:, feat]
        m_in = feat.size
        first = np.zeros(m_in, bool)
        first[np.unique(feat, return_index=True)[1]] = True  # + entry of each feature (centre goes there)
        centres = np.zeros((K, m_in))
        centres[:, first] = p.means[:, feat[first]]
        # this level's neuron rows in graph order, and which IR neuron each activation is
        if relu:
            blocks = [np.flatnonzero(p.owner == k) for k in range(K)]
            order = np.concatenate([np.concatenate([b, b]) for b in blocks])
            sign = np.concatenate([np.concatenate([np.ones(b.size), -np.ones(b.size)]) for b in blocks])
        else:
            order = np.arange(p.n)
            sign = np.ones(p.n)
        rows = rnd(Wg[order] * sign[:, None]) if relu else rnd(Wg)  # (m_out, m_in)
        if shifted:
            rows = -rows  # y = relu(−z + δ)
        own = p.owner[order]
        neurons_doc = ("rows per component: +w then -w (relu pairs)" if relu else "row i = neuron i, component-major")
        # auto: the raw input may sit far from 0 (centre per component); hidden features are O(1) distances
        lv_centering = centering if centering != "auto" else ("none" if lv or dtype == "float64" else level0_centering)
        if lv_centering == "component":
            parts = []
            for k in range(K):
                sel = np.flatnonzero(own == k)
                c = _center_sub(g, h, centres[k], f"{pre}/c{k}")
                zk = g.node("Gemm", [c, g.const(f"{pre}/c{k}/W", rows[sel], f"level {lv} component {k} neurons")],
                            f"{pre}/c{k}/linear", f"W_{k} (h - mu_{k})", transB=1)
                if shifted:
                    zk = g.node("Add", [zk, g.const(f"{pre}/c{k}/delta", np.full(sel.size, delta), "delta")],
                                f"{pre}/c{k}/shift", "-z + delta")
                parts.append(zk)
            z = parts[0] if K == 1 else g.node("Concat", parts, f"{pre}/linear", f"(N, {rows.shape[0]}); " + neurons_doc, axis=1)
        else:
            bias = np.zeros(rows.shape[0])  # float64 from the rounded rows, per component (no (n, m) temporary)
            for k in range(K):
                sel = own == k
                bias[sel] = -(rows[sel] @ centres[k])
            if shifted:
                bias = bias + delta
            z = g.node("Gemm", [h, g.const(f"{pre}/W", rows, neurons_doc), g.const(f"{pre}/b", bias, "biases -w.mu")],
                       f"{pre}/linear", f"z = W h + b: (N, {rows.shape[0]})", transB=1)
        if shifted:
            y = g.node("Relu", [z], f"{pre}/relu", "y = relu(-(w.x + b) + delta): intensity")
            zhat = g.node("Sub", [g.const("shifted/delta", np.array(delta)), y], f"{pre}/implied",
                          "delta - y: the signed distance z where z <= delta")
            a = g.node("Abs", [zhat], f"{pre}/abs", "implied distance |delta - y|")
            act_feat = order
        else:
            a = g.node("Relu" if relu else "Abs", [z], f"{pre}/{'relu' if relu else 'abs'}",
                       "activations" + (": relu(z) + relu(-z) = |z| for each pair" if relu else ": |z|"))
            act_feat = order

        is_top = lv == top
        head_out = {k: k for k in ("label", "responsibilities", "log_likelihood") if is_top and k in want}
        alias = None
        if f"{pre}_responsibilities" in want:
            if "responsibilities" in head_out:
                alias = f"{pre}_responsibilities"
            else:
                head_out["responsibilities"] = f"{pre}_responsibilities"
        if head_out or (is_top and "mahalanobis" in want):
            src = zhat if shifted else a
            owner, coef = p.owner[act_feat], p.coef[act_feat]
            per = np.bincount(owner, minlength=K)
            if np.all(np.diff(owner) >= 0) and np.all(per == per[0]):
                # equal blocks, component-major: reshape and reduce (O(N·n), where the MatMul below is O(N·n·K))
                if np.all(coef == 1.0):
                    t = g.reshape(src, [0, K, int(per[0])], f"{pre}/blocks", "(N, K, r): one row of activations per component")
                    d2 = g.reduce("ReduceSumSquare", t, [2], f"{pre}/d2", 0, "D^2_k = sum_i a_i^2: (N, K)")
                else:
                    sq = g.node("Mul", [src, src], f"{pre}/square", "a^2 (relu(z)^2 + relu(-z)^2 = z^2)")
                    sq = g.node("Mul", [sq, g.const(f"{pre}/coef", coef, "coefficient of a_i^2 in D^2_k")],
                                f"{pre}/weighted", "coef_i a_i^2")
                    t = g.reshape(sq, [0, K, int(per[0])], f"{pre}/blocks", "(N, K, r): one row per component")
                    d2 = g.reduce("ReduceSum", t, [2], f"{pre}/d2", 0, "D^2_k = sum_i coef_i a_i^2: (N, K)")
            else:
                sq = g.node("Mul", [src, src], f"{pre}/square", "a^2 (relu(z)^2 + relu(-z)^2 = z^2)")
                G = np.zeros((act_feat.size, K))
                G[np.arange(act_feat.size), owner] = coef
                d2 = g.node("MatMul", [sq, g.const(f"{pre}/G", G, "coefficient of a_i^2 in D^2_k")], f"{pre}/d2",
                            "D^2_k = sum_i coef_i a_i^2: (N, K)")
            consts = p.consts
            if p.truncated:
                # both halves of a ReLU pair: ‖[r+; r-] − [μ; μ]‖² = ‖|z| − μ‖² + ‖μ‖², corrected below
                C = p.means[:, feat]
                corr = np.sum(C[:, ~first] ** 2, axis=1)
                if lv_centering == "component":  # centred per component: (N, K, m), most accurate
                    hc = g.unsqueeze(h, [1], f"{pre}/res/unsqueeze", "h as (N, 1, m)")
                    diff = _center_sub(g, hc, C, f"{pre}/res")
                    S = g.reduce("ReduceSumSquare", diff, [2], f"{pre}/res/sumsq", 0, "||h - mu_k||^2: (N, K)")
                else:  # around the level's mean m: ‖h − m‖² − 2 (μ_k − m)ᵀ(h − m) + ‖μ_k − m‖², O(N·m·K) in one MatMul
                    gc = rnd(C.mean(axis=0))
                    hg = g.node("Sub", [h, g.const(f"{pre}/res/centre", gc, "the level's mean")], f"{pre}/res/center",
                                "h - m")
                    s0 = g.reduce("ReduceSumSquare", hg, [1], f"{pre}/res/sumsq", 1, "||h - m||^2: (N, 1)")
                    cross = g.node("MatMul", [hg, g.const(f"{pre}/res/cross", -2.0 * (C - gc).T, "-2 (mu_k - m)")],
                                   f"{pre}/res/cross_term", "-2 (mu_k - m).(h - m): (N, K)")
                    t = g.node("Add", [s0, cross], f"{pre}/res/partial", "(N, K)")
                    S = g.node("Add", [t, g.const(f"{pre}/res/offset", np.sum((C - gc) ** 2, axis=1), "||mu_k - m||^2")],
                               f"{pre}/res/dist", "||h - mu_k||^2: (N, K)")
                rs = g.node("Mul", [S, g.const(f"{pre}/res/inv_var", p.res_inv, "1/sigma^2 (0 if untruncated)")],
                            f"{pre}/res/scaled", "residual distance^2")
                if np.any(corr):
                    rs = g.node("Sub", [rs, g.const(f"{pre}/res/pair_corr", p.res_inv * corr, "||mu_k||^2 / sigma^2")],
                                f"{pre}/res/pair_corrected", "remove the second copy of ||mu||^2 (ReLU pairs)")
                d2 = g.node("Add", [d2, rs], f"{pre}/d2_full", "D^2 with the isotropic residual")
            half = g.node("Mul", [d2, g.const("head/neg_half", np.array(-0.5))], f"{pre}/neg_half_d2", "-D^2/2")
            lj = g.node("Add", [half, g.const(f"{pre}/c", consts, "c_k = log w_k + log normalizer + log_constant")],
                        f"{pre}/log_joint", "L_k = -D^2_k/2 + c_k: (N, K)")
            if is_top and "mahalanobis" in want:
                g.renames[f"{pre}/mahalanobis"] = "mahalanobis"
                g.node("Sqrt", [d2], f"{pre}/mahalanobis", "D_k")
            _head(g, lj, pre, head_out)
            if alias:
                g.node("Identity", ["responsibilities"], f"{pre}/responsibilities_alias", out=alias)

        dist_outs = ([f"{pre}_distances"] if f"{pre}_distances" in want else []) + (
            ["distances"] if is_top and "distances" in want else [])
        if dist_outs and relu:
            P = np.zeros((act_feat.size, p.n))
            P[np.arange(act_feat.size), act_feat] = 1.0
            dist = g.node("MatMul", [a, g.const(f"{pre}/pair_sum", P, "pairs: relu(z) + relu(-z) = |z|")],
                          f"{pre}/distances", "(N, n) Abs features, component-major")
        elif dist_outs:
            dist = a
        for out_name in dist_outs:
            if intensity is not None:
                _intensity(g, dist, f"{out_name}/i", intensity, intensity_c, out_name)
            else:
                g.node("Identity", [dist], f"{out_name}/out", out=out_name)
        feat = act_feat
        h = a

    # graph IO
    helper = onnx.helper
    if interface != dtype:  # float64 arithmetic behind a float32 interface: Cast in (exact), Cast the outputs back
        g.elem = onnx.TensorProto.FLOAT
        ren = {o: f"{o}/f64" for o in outputs if o != "label"}
        for n in g.nodes:
            ins = ["input/cast" if i == "X" else ren.get(i, i) for i in n.input]
            outs_ = [ren.get(o, o) for o in n.output]
            del n.input[:], n.output[:]
            n.input.extend(ins)
            n.output.extend(outs_)
        cast = helper.make_node("Cast", ["X"], ["input/cast"], name="input/cast", to=onnx.TensorProto.DOUBLE)
        cast.doc_string = "X as double: the graph computes in float64"
        g.nodes.insert(0, cast)
        for o, internal in ren.items():
            c = helper.make_node("Cast", [internal], [o], name=f"output/{o}", to=onnx.TensorProto.FLOAT)
            c.doc_string = f"{o} back to the interface type"
            g.nodes.append(c)
        dtype = interface
    d0 = preps[0].d
    x_info = helper.make_tensor_value_info("X", g.elem, ["batch", d0])
    x_info.doc_string = f"input rows, {d0} features"
    tp = preps[top]
    shapes = {
        "label": (onnx.TensorProto.INT64, ["batch"]),
        "responsibilities": (g.elem, ["batch", tp.K]),
        "log_likelihood": (g.elem, ["batch"]),
        "distances": (g.elem, ["batch", tp.n]),
        "mahalanobis": (g.elem, ["batch", tp.K]),
    }
    for i, p in enumerate(preps):
        shapes[f"level{i}_responsibilities"] = (g.elem, ["batch", p.K])
        shapes[f"level{i}_distances"] = (g.elem, ["batch", p.n])
    outs = [helper.make_tensor_value_info(n, *shapes[n]) for n in outputs]
    for vi in outs:
        vi.doc_string = {"label": "most probable top-level component (int64)",
                         "responsibilities": "posterior of each top-level component",
                         "log_likelihood": "log p_top(f(x)) at the propagated features",
                         "mahalanobis": "Mahalanobis distance to each top-level component"}.get(
            vi.name, "Abs features, component-major" + (f", intensity {intensity}" if intensity else "")
            if vi.name.endswith("distances") else "posterior of each component of that level")
    spec = ",".join(f"{m.n_components}:{m.covariance_type}" + (f":r={max(c.rank for c in m.components)}"
                    if any(c.rank < m.n_features for c in m.components) else "") for m in levels)
    neurons = [p.n * (2 if relu else 1) for p in preps]
    graph = helper.make_graph(g.nodes, "gmmnet_hierarchy", [x_info], outs, initializer=g.inits,
                              doc_string=f"{n_lv}-level hierarchy of Gaussian mixtures ({spec}) over {d0} features")
    opset_ids = [helper.make_opsetid("", opset)]
    om = helper.make_model(graph, opset_imports=opset_ids, producer_name="gmmnet", producer_version=__version__)
    om.ir_version = helper.find_min_ir_version_for(opset_ids)
    om.model_version = 1
    act_text = {"abs": "Abs", "relu": "paired ReLU (pairing absorbed into the next Linear)",
                "shifted_relu": f"shifted ReLU relu(-(w.x+b)+{delta:g}) (approximate beyond {delta:g} sigma)"}[activation]
    om.doc_string = (
        f"A {n_lv}-level hierarchy of Gaussian mixtures ({spec}; source {source}) written by gmmnet {__version__} as "
        f"a deep {act_text} network: level l is one Linear with neurons w = lambda^-1/2 v, b = -w.mu_k over the "
        f"activations of level l-1, then the activation; neurons per level {neurons}. The head of the top level "
        f"forms L_k = -D^2_k/2 + c_k and returns {', '.join(outputs)}. Centering: {requested}. "
        f"Layout: docs/hierarchy.md."
    )
    meta = {
        "producer": "gmmnet", "gmmnet_version": __version__, "source": source, "kind": kind,
        "levels": spec, "n_levels": str(n_lv), "activation": activation, "dtype": dtype, "opset": str(opset),
        "n_features": str(d0), "n_neurons": ",".join(str(n) for n in neurons), "outputs": ",".join(outputs),
        "centering": requested,
    }
    if shifted:
        meta["delta"] = f"{delta:g}"
    if intensity:
        meta["intensity"] = intensity + (f"(c={intensity_c:g})" if intensity == "triangle" else "")
    for i, p in enumerate(preps):
        meta[f"level{i}_ranks"] = ",".join(str(r) for r in p.ranks)
    if kind == "mixture":  # the single-mixture exporter's keys, for readers of either graph
        meta["ranks"] = meta["level0_ranks"]
        if preps[0].truncated:
            meta["truncation"] = ("rank-truncated components: K*r kept neurons plus the residual term "
                                  "||x - mu_k||^2 / sigma_k^2 in the head (deep exporter, one level)")
    for key, value in meta.items():
        e = om.metadata_props.add()
        e.key, e.value = key, value
    if check:
        onnx.checker.check_model(om, full_check=True)
    return om
