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

The reverse, :func:`from_onnx`, reads any deep graph with :func:`gmmnet.formats.onnx.read.read_layers`
and rebuilds one mixture per neuron level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ... import linalg
from ...errors import UnsupportedModelError, UsageError
from .export import DEFAULT_OUTPUTS, DTYPES, OUTPUTS, _Graph, _rounder, check_opset, check_outputs

__all__ = ["ACTIVATIONS", "CENTERINGS", "INTENSITIES", "from_onnx", "is_deep", "level_outputs", "to_onnx"]

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
        ``level{i}_responsibilities``; :func:`from_onnx` needs them to give those weights back.
    centering : {"auto", "none", "component"}
        ``"component"`` subtracts each component's centre (split in high and low parts) before its
        own product; ``"none"`` is one Gemm per level with biases.  ``"auto"``: component on
        level 0 of a float32 graph (raw inputs may sit far from 0), none elsewhere (hidden
        features are O(1) distances).
    delta : float
        δ of ``shifted_relu``, in standard deviations.
    intensity : {None, "gauss", "laplace", "triangle"}
        Transform every distances output ``a`` into ``exp(−a²)``, ``exp(−a)`` or
        ``relu(intensity_c − a)`` (paper §4.3).
    intensity_c : float
        c of the ``"triangle"`` intensity.

    Returns
    -------
    onnx.ModelProto
        Input ``X`` (batch, n_features); checked with ``onnx.checker.check_model(full_check=True)``.
    """
    import onnx

    from ... import __version__

    levels, kind = _levels_of(model)
    outputs = _check(levels, activation, dtype, opset, outputs, centering, delta, intensity, intensity_c)
    opset = int(opset)
    requested = centering
    if centering == "global":
        centering = "none"
    preps = [_prepare(m) for m in levels]
    n_lv = len(preps)
    top = n_lv - 1
    want = set(outputs)
    relu = activation == "relu"
    shifted = activation == "shifted_relu"

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
        Wg = p.W[:, feat]  # (n, m)
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
        rows = rnd(Wg[order] * sign[:, None])  # (m_out, m_in)
        if shifted:
            rows = -rows  # y = relu(−z + δ)
        own = p.owner[order]
        neurons_doc = ("rows per component: +w then -w (relu pairs)" if relu else "row i = neuron i, component-major")
        # auto: the raw input may sit far from 0 (centre per component); hidden features are O(1) distances
        lv_centering = centering if centering != "auto" else ("component" if lv == 0 and dtype == "float32" else "none")
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
            bias = -np.einsum("ij,ij->i", rows, centres[own])  # float64 from the rounded rows
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
            sq = g.node("Mul", [src, src], f"{pre}/square", "a^2 (relu(z)^2 + relu(-z)^2 = z^2)")
            G = np.zeros((act_feat.size, K))
            G[np.arange(act_feat.size), p.owner[act_feat]] = p.coef[act_feat]
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
    source = (model.provenance.source if hasattr(model, "provenance") else type(model).__name__)
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
    for key, value in meta.items():
        e = om.metadata_props.add()
        e.key, e.value = key, value
    onnx.checker.check_model(om, full_check=True)
    return om


# ---------------------------------------------------------------------------
# reverse


def _groups_from_logits(M: np.ndarray, L: np.ndarray, level: int):
    """Groups and per-neuron scale √(−2M) of a lower level's head ``Σ M a² + c`` (no linear term)."""
    M = M.toarray() if hasattr(M, "toarray") else np.asarray(M, dtype=np.float64)
    L = L.toarray() if hasattr(L, "toarray") else np.asarray(L, dtype=np.float64)
    if np.any(np.abs(L) > 0):
        raise UnsupportedModelError(f"level {level}: its head adds a linear term (not a gmmnet mixture head)")
    if np.any(M > 0):
        raise UnsupportedModelError(
            f"level {level}: its head has squared neurons of both signs (a rank-truncated level); "
            "only untruncated lower levels are read back"
        )
    groups = [list(np.flatnonzero(M[k] != 0)) for k in range(M.shape[0])]
    if any(not gr for gr in groups):
        raise UnsupportedModelError(f"level {level}: a component of its head uses no neurons")
    return groups, np.sqrt(-2.0 * M)


def _greedy_groups(W: np.ndarray, tol: float) -> list[list[int]]:
    """Consecutive neurons with mutually orthogonal directions, at most n_in per group (gmmnet's layout)."""
    groups: list[list[int]] = []
    cur: list[int] = []
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    for i in range(W.shape[0]):
        if cur and (len(cur) == W.shape[1] or np.max(np.abs(U[cur] @ U[i])) > tol):
            groups.append(cur)
            cur = []
        cur.append(i)
    groups.append(cur)
    return groups


def _component(Wk: np.ndarray, bk: np.ndarray, dtype: str, level: int, k: int):
    """(mean, eigenvectors, eigenvalues) of one component whose neuron rows are λ^-½ v (gmmnet layout)."""
    norms = np.linalg.norm(Wk, axis=1)
    V = Wk / norms[:, None]
    err = float(np.max(np.abs(V @ V.T - np.eye(V.shape[0]))))
    if err > _ORTHO_TOL[dtype]:
        raise UnsupportedModelError(
            f"level {level}, component {k}: neuron directions are not orthogonal (max |VVt - I| = {err:.1e}): "
            "the level's features are not principal-axis distances of one Gaussian"
        )
    if V.shape[0] != V.shape[1]:
        raise UnsupportedModelError(
            f"level {level}, component {k}: {V.shape[0]} neurons for {V.shape[1]} inputs; rank-truncated lower "
            "levels are not read back"
        )
    if err > 1e-12:  # float32 rows: the nearest orthonormal rows (polar factor)
        u, _, vh = np.linalg.svd(V)
        V = u @ vh
    ident = np.abs(V)
    if np.max(np.abs(ident - np.eye(V.shape[0]))) <= _ORTHO_TOL[dtype]:
        V = np.eye(V.shape[0])  # axis-aligned (diag/spherical): the IR wants the exact identity
        Wk = V * norms[:, None] * np.sign(np.diag(Wk @ V.T))[:, None]
    mean, *_ = np.linalg.lstsq(Wk, -bk, rcond=None)
    return mean, V, 1.0 / norms**2


#: Relative spread of the smallest eigenvalues read as one repeated residual variance σ².
_RESIDUAL_TOL = {"float32": 1e-4, "float64": 1e-9}


def _retruncate(comp, dtype: str):
    """A component read back at full rank whose smallest eigenvalue repeats (≥ 2 times) → kept rows + residual σ².

    Exact: a rank-truncated component *is* the full-rank Gaussian whose discarded eigenvalues all
    equal σ²; this gives it back its truncated form (K·r features instead of K·d).
    """
    mean, V, lam = comp[:3]
    order = np.argsort(-lam, kind="stable")
    V, lam = V[order], lam[order]
    s2 = float(lam.min())
    tail = lam <= s2 * (1.0 + _RESIDUAL_TOL[dtype])
    if tail.sum() < 2 or tail.all():
        return comp
    return mean, np.ascontiguousarray(V[~tail]), lam[~tail], float(np.mean(lam[tail]))


def _mixture(comps, consts, level: int):
    from scipy.special import logsumexp

    from ...ir import Component, Mixture

    d = comps[0][0].size
    res = [c[3] if len(c) > 3 else None for c in comps]
    comps = [c[:3] for c in comps]
    norms = np.array([linalg.log_normalizer(lam, d, r) for (_, _, lam), r in zip(comps, res)])
    if consts is None:
        w = np.full(len(comps), 1.0 / len(comps))
        lc = np.zeros(len(comps))
    else:
        ell = np.asarray(consts, float) - norms
        lse = float(logsumexp(ell))
        w = np.exp(ell - lse)
        w = w / w.sum()
        lc = np.full(len(comps), lse if abs(lse) > 1e-12 else 0.0)
    components = [Component(mean=mu, eigenvectors=V, eigenvalues=lam, weight=float(w[k]), log_constant=float(lc[k]),
                            residual_variance=res[k])
                  for k, (mu, V, lam) in enumerate(comps)]
    ct = "full"
    if any(r is not None for r in res):
        comps = []  # truncated: stored as full (the IR's diag/spherical/tied need full-rank structure)
    eye = bool(comps) and all(np.array_equal(V, np.eye(d)) for _, V, _ in comps)
    if eye:
        ct = "spherical" if all(np.ptp(lam) <= 1e-9 * lam.max() for _, _, lam in comps) else "diag"
        if ct == "spherical":
            components = [c.model_copy(update={"eigenvalues": np.full(d, float(np.mean(c.eigenvalues)))})
                          for c in components]
    elif len(comps) > 1 and all(np.allclose(V, comps[0][1], rtol=0, atol=1e-9) and
                                np.allclose(lam, comps[0][2], rtol=1e-9, atol=0) for _, V, lam in comps):
        ct = "tied"
        components = [c.model_copy(update={"eigenvectors": comps[0][1], "eigenvalues": comps[0][2]}) for c in components]
    from ...ir import Provenance

    return Mixture(n_features=d, covariance_type=ct, components=components,
                   provenance=Provenance(source=f"gmmnet.formats.onnx.deep:onnx level {level}",
                                         extra={"weights": "from the level's head" if consts is not None
                                                else "uniform (not in the network)"}))


def is_deep(model_or_path) -> bool:
    """True when the graph has more than one neuron level under a mixture head (a hierarchy)."""
    from .read import read_layers

    net = read_layers(model_or_path)
    return len(net.layers) > 1 and net.groups is not None


def from_onnx(model_or_path, *, data=None):
    """Read a deep Abs / paired-ReLU network back as a :class:`~gmmnet.ir.Hierarchy`, level by level.

    The graph is read by pattern (:func:`gmmnet.formats.onnx.read.read_layers`).  The top level's
    grouping and constants come from its mixture head.  A lower level's come from its own head
    when the graph has one (gmmnet writes it for ``level{i}_responsibilities``); otherwise its
    neurons are grouped as gmmnet lays them out (consecutive, mutually orthogonal directions)
    and its component weights, which the network does not use, are set uniform (noted in the
    report).  ReLU pairs are found with :func:`gmmnet.recover.mirrored_pairs`; the next level's
    columns for the two neurons of a pair must be equal (that is how the pairing is absorbed).

    A one-level network is handed to :func:`gmmnet.recover.from_network` and comes back as a
    :class:`~gmmnet.ir.Mixture`.

    Returns
    -------
    (Hierarchy or Mixture, report dict)
    """
    from ...ir import Hierarchy, Provenance
    from ...recover import from_network, mirrored_pairs
    from ...versions import library_versions
    from .read import NetworkLayers, read_layers

    net = model_or_path if isinstance(model_or_path, NetworkLayers) else read_layers(model_or_path)
    if len(net.layers) == 1:
        return from_network(net, data=data)
    if net.groups is None or net.head is None:
        raise UnsupportedModelError(f"the graph has {len(net.layers)} neuron levels but no mixture head on the top level")
    dtype = net.dtype
    lower_heads = getattr(net, "level_heads", {}) or {}
    notes = list(net.notes)
    n_lv = len(net.layers)
    levels = []
    col_map = None  # for each IR feature of the level below: its graph neuron indices
    col_scale = None
    for lv, layer in enumerate(net.layers):
        W, b = layer.W.copy(), layer.b.copy()
        # the rows over IR features of the level below (the ReLU pairing is undone here)
        if col_map is not None:
            Wf = np.zeros((W.shape[0], len(col_map)))
            used = np.zeros(W.shape[1], bool)
            for f, idx in enumerate(col_map):
                cols = W[:, idx]
                ref = cols[:, 0]
                if np.max(np.abs(cols - ref[:, None])) > 1e-9 * max(1.0, float(np.max(np.abs(ref)))):
                    raise UnsupportedModelError(
                        f"level {lv}: the columns of a ReLU pair of level {lv - 1} differ: the pairing is not absorbed")
                Wf[:, f] = ref * col_scale[f]
                used[idx] = True
            if np.any(W[:, ~used]):
                raise UnsupportedModelError(f"level {lv}: uses activations of level {lv - 1} that belong to no component")
            W = Wf
        acts = list(layer.activations)
        if lv == n_lv - 1:
            groups, consts, scale = net.groups, net.head, np.ones(W.shape[0])
        elif lv in lower_heads:
            M, L, c = lower_heads[lv]
            groups, scale = _groups_from_logits(M, L, lv)
            consts = c
            scale_n = np.zeros(W.shape[0])
            for k, gr in enumerate(groups):
                scale_n[gr] = scale[k, gr]
            scale = scale_n
        else:
            groups, consts, scale = None, None, np.ones(W.shape[0])
        W = W * scale[:, None]
        b = b * scale
        relus = [i for i, a in enumerate(acts) if a == "relu"]
        partner = {}
        for i, j in mirrored_pairs(W, b, relus):
            partner[i], partner[j] = j, i
        single = [i for i in relus if i not in partner]
        if single:
            raise UnsupportedModelError(f"level {lv}: {len(single)} ReLU neurons have no mirrored partner")
        if groups is None:
            firsts = [i for i in range(W.shape[0]) if acts[i] == "abs" or i < partner[i]]
            gr_f = _greedy_groups(W[firsts], _ORTHO_TOL[dtype] * 10)
            groups = [[firsts[i] for i in gr] for gr in gr_f]
            notes.append(f"level {lv}: no head in the graph; neurons grouped by gmmnet's layout, weights set uniform")
        comps, feats, fscale = [], [], []
        for k, gr in enumerate(groups):
            rows = [i for i in gr if acts[i] == "abs" or i < partner[i]]
            comp = _component(W[rows], b[rows], dtype, lv, k)
            if lv == n_lv - 1 and all(layer.nodes[i] == "(quadratic form)" for i in rows if i < len(layer.nodes)):
                comp = _retruncate(comp, dtype)  # the reader re-expressed a truncated head as full-rank eigen-neurons
            comps.append(comp)
            for i in rows:
                feats.append([i] if acts[i] == "abs" else [i, partner[i]])
                fscale.append(1.0 / scale[i] if scale[i] else 0.0)
        levels.append(_mixture(comps, consts, lv))
        col_map, col_scale = feats, np.array(fscale)
    hier = Hierarchy(levels=levels, provenance=Provenance(source="gmmnet.formats.onnx.deep:onnx",
                                                          versions=library_versions()))
    report = {"n_levels": n_lv, "dtype": dtype, "notes": notes,
              "neurons": [layer.n_neurons for layer in net.layers],
              "lower_heads": sorted(int(k) for k in lower_heads)}
    if data is not None:
        from ...hierarchy import HierarchicalGaussianMixture

        x = np.asarray(data, dtype=np.float64)
        report["mean_log_likelihood"] = float(HierarchicalGaussianMixture.from_ir(hier).score(x))
    return hier, report
