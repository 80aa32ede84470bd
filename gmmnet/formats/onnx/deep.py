"""Hierarchy ⇄ deep ONNX network: Linear→Abs→Linear→Abs→…→head, and the paper's activation variants.

Level ℓ of a :class:`gmmnet.ir.Hierarchy` is one Linear layer whose rows are its neurons
``w = λ^-½ v`` (over the activations of level ℓ−1, or over ``X`` for level 0), then an
activation.  The head of the top level (and, on request, of any level) is the mixture head of
:mod:`gmmnet.formats.onnx.export`: ``D²_k = Σ_i a_i²``, ``L_k = −½ D²_k + c_k``.

Activations (``activation=``, the entries of :data:`ACTIVATION_LAYERS`):

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

An input transform z = A x + c (``Hierarchy.input_transform``, or a Mixture's) is folded into
level 0 (:mod:`gmmnet.formats.onnx.fold`): its rows are W A over the raw input, centred on
preimages of the means.  A truncated level 0 behind a transform computes z − m once (one Gemm
by A, centred on the preimage of the level's mean) for its residual term.

``compute`` ("auto" | "float32" | "float64") chooses the arithmetic behind a float32 interface;
"auto" measures the float32 graph against the float64-compute one on rows drawn from level 0.

Export is plan → build → annotate (:mod:`gmmnet.formats.onnx.plan`): :func:`plan` chooses the
arithmetic (building and measuring the candidates for ``compute="auto"``), :func:`build` returns
the chosen graph with its compute metadata.

The reverse, :func:`from_onnx`, reads any deep graph with :func:`gmmnet.formats.onnx.read.read_layers`'
walk and rebuilds one mixture per neuron level, truncated levels included (from their heads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import linalg
from ...errors import UnsupportedModelError, UsageError
from ...ir import Hierarchy, Mixture
from .fold import Fold, check_folded
from .graph import Graph, gmmnet_version, make_model, rounder, set_metadata
from .options import ACTIVATIONS, CENTERINGS, INTENSITIES, LEVEL_OUTPUT_KINDS, OUTPUTS, ExportOptions, level_outputs
from .plan import ExportPlan, Exporter, check_weight_bytes, register_exporter, rename_outputs

__all__ = ["ACTIVATIONS", "CENTERINGS", "INTENSITIES", "build", "from_onnx", "is_deep", "level_outputs", "plan",
           "to_onnx", "truncated_mixture_graph"]

#: Tolerance of the orthonormality of one component's neuron directions in the reverse.
_ORTHO_TOL = {"float32": 1e-5, "float64": 1e-9}


# ---------------------------------------------------------------------------
# float64 derivation


@dataclass
class _Level:
    """One mixture as neuron arrays.  Neurons are component-major, n = Σ_k r_k."""

    K: int
    d: int  # width of the level's input (the raw features for a level 0 behind an input transform)
    W: np.ndarray  # (n, d) rows λ^-½ v (A-folded for a level 0 behind a transform)
    means: np.ndarray  # (K, d) centres over the level's input (preimages behind a transform)
    owner: np.ndarray  # (n,) component of each neuron
    coef: np.ndarray  # (n,) coefficient of a_i² in D²_k: 1, or 1 − λ_i/σ² when truncated
    res_inv: np.ndarray  # (K,) 1/σ² for truncated components, else 0
    consts: np.ndarray  # (K,) c_k
    ranks: list[int]
    bias: np.ndarray | None = None  # (n,) −w·r where a centre has no exact preimage
    fold: Fold | None = None
    means_z: np.ndarray | None = None  # (K, k) the means over z, for a truncated level's residual term

    @property
    def n(self) -> int:
        return int(self.W.shape[0])

    @property
    def truncated(self) -> bool:
        return bool(np.any(self.res_inv))


def _prepare(mixture, fold: Fold | None = None) -> _Level:
    Ws, owner, coef, res_inv, ranks = [], [], [], [], []
    for k, c in enumerate(mixture.components):
        Ws.append(linalg.component_whitening(c))
        owner += [k] * c.rank
        ranks.append(c.rank)
        if c.residual_variance is not None and c.rank < c.n_features:
            s2 = float(c.residual_variance)
            coef.append(1.0 - c.eigenvalues / s2)
            res_inv.append(1.0 / s2)
        else:
            coef.append(np.ones(c.rank))
            res_inv.append(0.0)
    W, means, bias = np.concatenate(Ws), mixture.means.astype(np.float64), None
    level = _Level(K=mixture.n_components, d=mixture.n_features, W=W, means=means, owner=np.array(owner),
                   coef=np.concatenate(coef), res_inv=np.array(res_inv), consts=linalg.component_log_terms(mixture),
                   ranks=ranks)
    if fold is None:
        return level
    pre, res = fold.preimage(means)
    if np.any(res):
        bias = -np.einsum("ij,ij->i", W, res[level.owner])
    level.W, level.means, level.d, level.bias, level.fold, level.means_z = W @ fold.A, pre, fold.n_inputs, bias, fold, means
    return level


def _levels_of(model) -> tuple[list, str, Fold | None]:
    if isinstance(model, Mixture):
        return [model], "mixture", Fold.of(model.input_transform)
    if isinstance(model, Hierarchy):
        return list(model.levels), "hierarchy", Fold.of(model.input_transform)
    raise UsageError(f"to_onnx expects a gmmnet.ir.Hierarchy or Mixture, got {type(model).__name__}")


# ---------------------------------------------------------------------------
# graph pieces


def _center_sub(g: Graph, h: str, c: np.ndarray, prefix: str) -> str:
    """h − c with c split into graph-dtype high and low parts (one Sub when the low part is 0)."""
    rnd = rounder(g.dtype)
    hi = rnd(c)
    lo = rnd(c - hi)
    t = g.node("Sub", [h, g.const(f"{prefix}/centre_hi", hi, "centre, high part")], f"{prefix}/center_hi", "h - centre_hi")
    if np.any(lo):
        t = g.node("Sub", [t, g.const(f"{prefix}/centre_lo", lo, "centre, low part")], f"{prefix}/center_lo", "- centre_lo")
    return t


def _intensity(g: Graph, a: str, prefix: str, kind, c: float, out: str) -> str:
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


def _head(g: Graph, lj: str, prefix: str, names: dict[str, str]) -> None:
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


@dataclass
class _LevelInput:
    """What one level's Linear sees: its rows in graph order over the input vector h, and their centres."""

    pre: str  # "level{lv}"
    lv: int
    h: str  # the input tensor
    rows: np.ndarray  # (m_out, m_in), rounded, negated for shifted_relu
    own: np.ndarray  # (m_out,) component of each row
    order: np.ndarray  # (m_out,) IR neuron of each row
    centres: np.ndarray  # (K, m_in): μ_k on the + entry of each feature
    bias: np.ndarray | None  # (m_out,) the fold's residual term, or None
    doc: str


def _linear_centred(g: Graph, p: _Level, li: _LevelInput, delta: float | None) -> str:
    """Centred per component: K Gemms W_k (h − μ_k) (one Sub per centre part), concatenated."""
    parts = []
    for k in range(p.K):
        sel = np.flatnonzero(li.own == k)
        c = _center_sub(g, li.h, li.centres[k], f"{li.pre}/c{k}")
        ins = [c, g.const(f"{li.pre}/c{k}/W", li.rows[sel], f"level {li.lv} component {k} neurons")]
        if li.bias is not None:
            ins.append(g.const(f"{li.pre}/c{k}/b", li.bias[sel], "-w.r: the centre's offset from the input "
                                                                  "transform's range"))
        zk = g.node("Gemm", ins, f"{li.pre}/c{k}/linear", f"W_{k} (h - mu_{k})", transB=1)
        if delta is not None:
            zk = g.node("Add", [zk, g.const(f"{li.pre}/c{k}/delta", np.full(sel.size, delta), "delta")],
                        f"{li.pre}/c{k}/shift", "-z + delta")
        parts.append(zk)
    if p.K == 1:
        return parts[0]
    return g.node("Concat", parts, f"{li.pre}/linear", f"(N, {li.rows.shape[0]}); " + li.doc, axis=1)


def _linear_gemm(g: Graph, p: _Level, li: _LevelInput, delta: float | None) -> str:
    """One Gemm W h + b with the biases −w·μ_k (float64 from the rounded rows)."""
    bias = np.zeros(li.rows.shape[0])  # per component: no (n, m) temporary
    for k in range(p.K):
        sel = li.own == k
        bias[sel] = -(li.rows[sel] @ li.centres[k])
    if li.bias is not None:
        bias = bias + li.bias
    if delta is not None:
        bias = bias + delta
    return g.node("Gemm", [li.h, g.const(f"{li.pre}/W", li.rows, li.doc), g.const(f"{li.pre}/b", bias, "biases -w.mu")],
                  f"{li.pre}/linear", f"z = W h + b: (N, {li.rows.shape[0]})", transB=1)


#: A level's Linear, by its centring ("component", or "none": one Gemm with biases).
LINEAR_LAYERS = {"component": _linear_centred, "none": _linear_gemm}


def _act_abs(g: Graph, pre: str, z: str, delta: float) -> tuple[str, str]:
    a = g.node("Abs", [z], f"{pre}/abs", "activations: |z|")
    return a, a


def _act_relu(g: Graph, pre: str, z: str, delta: float) -> tuple[str, str]:
    a = g.node("Relu", [z], f"{pre}/relu", "activations: relu(z) + relu(-z) = |z| for each pair")
    return a, a


def _act_shifted(g: Graph, pre: str, z: str, delta: float) -> tuple[str, str]:
    y = g.node("Relu", [z], f"{pre}/relu", "y = relu(-(w.x + b) + delta): intensity")
    zhat = g.node("Sub", [g.const("shifted/delta", np.array(delta)), y], f"{pre}/implied",
                  "delta - y: the signed distance z where z <= delta")
    a = g.node("Abs", [zhat], f"{pre}/abs", "implied distance |delta - y|")
    return a, zhat


#: A level's activation: (activations passed on, the tensor the head squares).
ACTIVATION_LAYERS = {"abs": _act_abs, "relu": _act_relu, "shifted_relu": _act_shifted}


def _sum_of_squares(g: Graph, p: _Level, pre: str, src: str, act_feat: np.ndarray) -> str:
    """D²_k = Σ_i coef_i a_i² (N, K): reshape and reduce for equal component-major blocks, else a MatMul."""
    K = p.K
    owner, coef = p.owner[act_feat], p.coef[act_feat]
    per = np.bincount(owner, minlength=K)
    if np.all(np.diff(owner) >= 0) and np.all(per == per[0]):
        # equal blocks, component-major: reshape and reduce (O(N·n), where the MatMul below is O(N·n·K))
        if np.all(coef == 1.0):
            t = g.reshape(src, [0, K, int(per[0])], f"{pre}/blocks", "(N, K, r): one row of activations per component")
            return g.reduce("ReduceSumSquare", t, [2], f"{pre}/d2", 0, "D^2_k = sum_i a_i^2: (N, K)")
        sq = g.node("Mul", [src, src], f"{pre}/square", "a^2 (relu(z)^2 + relu(-z)^2 = z^2)")
        sq = g.node("Mul", [sq, g.const(f"{pre}/coef", coef, "coefficient of a_i^2 in D^2_k")],
                    f"{pre}/weighted", "coef_i a_i^2")
        t = g.reshape(sq, [0, K, int(per[0])], f"{pre}/blocks", "(N, K, r): one row per component")
        return g.reduce("ReduceSum", t, [2], f"{pre}/d2", 0, "D^2_k = sum_i coef_i a_i^2: (N, K)")
    sq = g.node("Mul", [src, src], f"{pre}/square", "a^2 (relu(z)^2 + relu(-z)^2 = z^2)")
    G = np.zeros((act_feat.size, K))
    G[np.arange(act_feat.size), owner] = coef
    return g.node("MatMul", [sq, g.const(f"{pre}/G", G, "coefficient of a_i^2 in D^2_k")], f"{pre}/d2",
                  "D^2_k = sum_i coef_i a_i^2: (N, K)")


def _residual(g: Graph, p: _Level, li: _LevelInput, feat: np.ndarray, first: np.ndarray, centred: bool, d2: str) -> str:
    """D² plus the isotropic residual ‖h − μ_k‖²/σ² of truncated components (see the module docstring)."""
    pre, h, rnd = li.pre, li.h, rounder(g.dtype)
    if p.fold is not None:  # level 0 behind a transform: z − m_z = A (x − m') once, m' a preimage of the mean
        mz = p.means_z.mean(axis=0)
        m_pre = p.fold.preimage(mz)[0][0]
        xc = _center_sub(g, h, m_pre, f"{pre}/res/input")
        h = g.node("Gemm", [xc, g.const(f"{pre}/res/A", p.fold.A, "the input transform A: z - m = A (x - m')")],
                   f"{pre}/res/transform", "z - m: (N, k)", transB=1)
        C = p.means_z - (p.fold.A @ m_pre + p.fold.c)
        corr = np.zeros(p.K)
    else:
        # both halves of a ReLU pair: ‖[r+; r-] − [μ; μ]‖² = ‖|z| − μ‖² + ‖μ‖², corrected below
        C = p.means[:, feat]
        corr = np.sum(C[:, ~first] ** 2, axis=1)
    if centred:  # centred per component: (N, K, m), most accurate
        hc = g.unsqueeze(h, [1], f"{pre}/res/unsqueeze", "h as (N, 1, m)")
        diff = _center_sub(g, hc, C, f"{pre}/res")
        S = g.reduce("ReduceSumSquare", diff, [2], f"{pre}/res/sumsq", 0, "||h - mu_k||^2: (N, K)")
    else:  # around the level's mean m: ‖h − m‖² − 2 (μ_k − m)ᵀ(h − m) + ‖μ_k − m‖², O(N·m·K) in one MatMul
        gc = rnd(C.mean(axis=0))
        hg = g.node("Sub", [h, g.const(f"{pre}/res/centre", gc, "the level's mean")], f"{pre}/res/center", "h - m")
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
    return g.node("Add", [d2, rs], f"{pre}/d2_full", "D^2 with the isotropic residual")


def _level_input(p: _Level, lv: int, h: str, feat: np.ndarray, activation: str, rnd) -> tuple[_LevelInput, np.ndarray]:
    """The rows of level ``lv`` over its input vector h (entry j carries feature feat[j] of the level below)."""
    relu, shifted = activation == "relu", activation == "shifted_relu"
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
    bias = None if p.bias is None else p.bias[order] * sign
    if shifted:
        rows = -rows  # y = relu(−z + δ)
        bias = None if bias is None else -bias
    doc = ("rows per component: +w then -w (relu pairs)" if relu else "row i = neuron i, component-major")
    return _LevelInput(pre=f"level{lv}", lv=lv, h=h, rows=rows, own=p.owner[order], order=order, centres=centres,
                       bias=bias, doc=doc), first


# ---------------------------------------------------------------------------
# build


def _build(levels, kind, outputs, opts: ExportOptions, *, compute: str, preps, level0_centering: str, source: str,
           check: bool = True):
    """The deep graph of interface ``opts.dtype`` whose arithmetic is ``compute`` (float64 behind Casts when they differ)."""
    import onnx

    interface = opts.dtype
    dtype = "float64" if compute == "float64" else interface  # the arithmetic's dtype from here on
    activation, delta, intensity = opts.activation, opts.delta, opts.intensity
    requested = centering = opts.centering
    if centering == "global":
        centering = "none"
    n_lv = len(preps)
    top = n_lv - 1
    want = set(outputs)
    relu = activation == "relu"
    shifted = activation == "shifted_relu"
    g = Graph(dtype, opts.opset)
    rnd = rounder(dtype)
    h = "X"
    # the input of level ℓ as a vector of m entries: entry j carries feature feat[j] of the level below
    feat = np.arange(preps[0].d)
    for lv, p in enumerate(preps):
        li, first = _level_input(p, lv, h, feat, activation, rnd)
        pre, K = li.pre, p.K
        # auto: the raw input may sit far from 0 (centre per component); hidden features are O(1) distances
        lv_centering = centering if centering != "auto" else ("none" if lv or dtype == "float64" else level0_centering)
        z = LINEAR_LAYERS[lv_centering](g, p, li, delta if shifted else None)
        a, src = ACTIVATION_LAYERS[activation](g, pre, z, delta)
        act_feat = li.order

        is_top = lv == top
        head_out = {k: k for k in ("label", "responsibilities", "log_likelihood") if is_top and k in want}
        alias = None
        if f"{pre}_responsibilities" in want:
            if "responsibilities" in head_out:
                alias = f"{pre}_responsibilities"
            else:
                head_out["responsibilities"] = f"{pre}_responsibilities"
        if head_out or (is_top and "mahalanobis" in want):
            d2 = _sum_of_squares(g, p, pre, src, act_feat)
            if p.truncated:
                d2 = _residual(g, p, li, feat, first, lv_centering == "component", d2)
            half = g.node("Mul", [d2, g.const("head/neg_half", np.array(-0.5))], f"{pre}/neg_half_d2", "-D^2/2")
            lj = g.node("Add", [half, g.const(f"{pre}/c", p.consts, "c_k = log w_k + log normalizer + log_constant")],
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
                _intensity(g, dist, f"{out_name}/i", intensity, opts.intensity_c, out_name)
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
    x_info.doc_string = f"input rows, {d0} features" + (" (raw: the input transform is folded into level 0)"
                                                         if preps[0].fold is not None else "")
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
    spec = _spec(levels)
    neurons = [p.n * (2 if relu else 1) for p in preps]
    graph = helper.make_graph(g.nodes, "gmmnet_hierarchy", [x_info], outs, initializer=g.inits,
                              doc_string=f"{n_lv}-level hierarchy of Gaussian mixtures ({spec}) over {d0} features")
    act_text = {"abs": "Abs", "relu": "paired ReLU (pairing absorbed into the next Linear)",
                "shifted_relu": f"shifted ReLU relu(-(w.x+b)+{delta:g}) (approximate beyond {delta:g} sigma)"}[activation]
    om = make_model(graph, opts.opset, (
        f"A {n_lv}-level hierarchy of Gaussian mixtures ({spec}; source {source}) written by gmmnet {gmmnet_version()} "
        f"as a deep {act_text} network: level l is one Linear with neurons w = lambda^-1/2 v, b = -w.mu_k over the "
        f"activations of level l-1, then the activation; neurons per level {neurons}. The head of the top level "
        f"forms L_k = -D^2_k/2 + c_k and returns {', '.join(outputs)}. Centering: {requested}. "
        f"Layout: docs/hierarchy.md."
    ))
    meta = {
        "producer": "gmmnet", "gmmnet_version": gmmnet_version(), "source": source, "kind": kind,
        "levels": spec, "n_levels": str(n_lv), "activation": activation, "dtype": dtype, "opset": str(opts.opset),
        "n_features": str(d0), "n_neurons": ",".join(str(n) for n in neurons), "outputs": ",".join(outputs),
        "centering": requested,
    }
    if shifted:
        meta["delta"] = f"{delta:g}"
    if intensity:
        meta["intensity"] = intensity + (f"(c={opts.intensity_c:g})" if intensity == "triangle" else "")
    for i, p in enumerate(preps):
        meta[f"level{i}_ranks"] = ",".join(str(r) for r in p.ranks)
    if kind == "mixture":  # the single-mixture exporter's keys, for readers of either graph
        meta["ranks"] = meta["level0_ranks"]
        if preps[0].truncated:
            meta["truncation"] = ("rank-truncated components: K*r kept neurons plus the residual term "
                                  "||x - mu_k||^2 / sigma_k^2 in the head (deep exporter, one level)")
    set_metadata(om, meta)
    if check:
        onnx.checker.check_model(om, full_check=True)
    return om


def _spec(levels) -> str:
    return ",".join(f"{m.n_components}:{m.covariance_type}" + (f":r={max(c.rank for c in m.components)}"
                    if any(c.rank < m.n_features for c in m.components) else "") for m in levels)


# ---------------------------------------------------------------------------
# plan: compute="auto" measures


#: Work (rows × multiply-adds per row) of compute="auto"'s measurement, its row limits, and the most input
#: numbers it draws (rows × features: 64 MB of float64 rows, so that many features do not mean a large sample).
_MEASURE_WORK = 5e7
_MEASURE_ROWS = (64, 2000)
_MEASURE_NUMBERS = 2**23


def _cost_per_row(levels, relu: bool, d_in: int) -> float:
    cost, m_in = 0.0, d_in
    for mix in levels:
        n = sum(c.rank for c in mix.components) * (2 if relu else 1)
        trunc = any(c.rank < c.n_features for c in mix.components)
        cost += n * m_in + (mix.n_components * m_in if trunc else 0) + n * mix.n_components
        m_in = n
    return cost


def _fits_float32(levels, fold, preps) -> bool:
    from ...errors import InvalidModelError

    try:
        for mix in levels:
            linalg.check_representable(mix, "float32")
        if fold is not None:
            check_folded({"weights": preps[0].W, "centres": preps[0].means, "biases": preps[0].bias}, "float32")
    except InvalidModelError:
        return False
    return True


def _choose_compute(levels, kind, opts, preps, outputs, fold, level0_centering, source):
    """compute="auto" for a float32 graph: float32 only if the single-mixture predictor accepts
    float32 for every level and the graph's measured errors are ≤ half the targets, else float64.

    Both gates are needed: the measurement sees how the levels compound rounding, but rows drawn
    from the model rarely sit where real data can (between components, in the tails), and there
    it underestimates (measured on the single-mixture test matrix: raw breast_cancer spherical
    gave 6e-31 on model rows and 4.8e-6 on the data); the predictor covers those rows.  The float32 candidate and the same graph computed in float64 run on rows drawn from level 0
    (:func:`gmmnet.linalg.sample`, every component sampled, mapped back to raw rows through a
    preimage behind an input transform); rows × per-row work is bounded by ``_MEASURE_WORK``, so
    the runs stay short even for a big hierarchy: what remains is building and loading the two
    graphs (when the requested outputs include log_likelihood and responsibilities, the chosen
    one is returned as is, not built a third time).
    """
    from . import export as _flat
    from .runtime import measured_errors

    if not _fits_float32(levels, fold, preps):
        return "float64", "auto: the model's numbers do not fit float32 arithmetic", None, {}
    single = ExportOptions(compute="float32")
    for i, mix in enumerate(levels):
        pred = _flat.LAYOUTS["neurons"].choose(_flat._prepare(mix, fold.transform if i == 0 and fold else None),
                                               mix, single).predicted
        if pred["log_likelihood"] > _flat.LL_TARGET or pred["responsibilities"] > _flat.RESP_TARGET:
            return ("float64", f"auto: the single-mixture predictor rejects float32 arithmetic for level {i} "
                    f"(predicted ll {pred['log_likelihood']:.1e}, resp {pred['responsibilities']:.1e})", None, {})
    # the requested graph itself when it has both outputs (the chosen one is returned, not built again)
    probe = outputs if {"log_likelihood", "responsibilities"} <= set(outputs) else ("log_likelihood", "responsibilities")
    common = dict(preps=preps, level0_centering=level0_centering, source=source, check=False)
    cand = _build(levels, kind, probe, opts, compute="float32", **common)
    ref = _build(levels, kind, probe, opts, compute="float64", **common)
    lo, hi = _MEASURE_ROWS
    work = _cost_per_row(levels, opts.activation == "relu", preps[0].d)
    n_rows = int(min(hi, _MEASURE_NUMBERS // max(levels[0].n_features, preps[0].d),
                     max(lo, levels[0].n_components, _MEASURE_WORK // work)))
    n_rows = max(n_rows, levels[0].n_components)  # every component sampled
    x = linalg.sample(levels[0], n_rows, seed=0)
    if fold is not None:
        x = fold.preimage(x)[0]
    x = x.astype(np.float32)
    err = measured_errors(cand, ref, x)
    ll, resp = err.get("log_likelihood", 0.0), err.get("responsibilities", 0.0)
    ok = ll <= _flat.LL_TARGET / 2 and resp <= _flat.RESP_TARGET / 2
    reason = (f"auto: float32 if its measured errors against float64 compute on {x.shape[0]} rows drawn from level 0 "
              f"are <= half the targets (ll {_flat.LL_TARGET / 2:.0e}, resp {_flat.RESP_TARGET / 2:.0e}); "
              f"float32 measured ll {ll:.1e}, resp {resp:.1e}")
    built = {"float32": cand, "float64": ref} if probe is outputs else {}
    return ("float32" if ok else "float64"), reason, {"log_likelihood": ll, "responsibilities": resp}, built


def _weights(levels, fold: Fold | None, opts: ExportOptions, outputs) -> tuple[int, int, str]:
    """(initializer bytes, working bytes, what), from the IR's shapes alone (before any array is built)."""
    pairs = 2 if opts.activation == "relu" else 1
    m_in = levels[0].n_features if fold is None else fold.n_inputs
    total = 0
    for i, mix in enumerate(levels):
        n = sum(c.rank for c in mix.components)
        K = mix.n_components
        total += n * pairs * m_in + n * K + m_in * K
        if pairs == 2 and ({f"level{i}_distances", "distances"} & set(outputs)):
            total += 2 * n * n
        m_in = n * pairs
    # float64 derivation (W, its rounded and reordered copies), the initializers, check_model's copy; two graphs
    # are built and measured for compute="auto"
    working = 8 * total * (6 if opts.compute == "auto" and opts.dtype == "float32" else 4)
    what = f"a {len(levels)}-level network over {levels[0].n_features if fold is None else fold.n_inputs} features"
    return 8 * total, working, what


def plan(model, options: ExportOptions) -> ExportPlan:
    """Every choice of the deep graph of ``model`` (a Hierarchy, or a Mixture as one level)."""
    from . import export as _flat

    levels, kind, fold = _levels_of(model)
    outputs = options.outputs
    if options.level_outputs and kind == "hierarchy":  # lets a reader give every level back
        outputs += tuple(o for o in level_outputs(len(levels)) if o not in outputs)
    bad = [o for o in outputs if o not in OUTPUTS + level_outputs(len(levels), LEVEL_OUTPUT_KINDS)]
    if bad:
        raise UsageError(f"unknown output {bad[0]!r} for a {len(levels)}-level network; choose from "
                         f"{', '.join(OUTPUTS + level_outputs(len(levels), LEVEL_OUTPUT_KINDS))}")
    n_bytes, working, what = _weights(levels, fold, options, outputs)
    check_weight_bytes(n_bytes, working, what)
    source = model.provenance.source
    preps = [_prepare(mix, fold if i == 0 else None) for i, mix in enumerate(levels)]
    dtype, compute = options.dtype, options.compute
    level0_centering = "component"
    if options.centering == "auto" and dtype == "float32":
        # the single-mixture exporter's estimate: per-component centring (K Gemms) only where it pays
        flat0 = _flat._prepare(levels[0], fold.transform if fold else None)
        level0_centering = "none" if _flat._choose_centering(flat0, "float32")[0] == "none" else "component"
    measured, built = None, {}
    if dtype == "float64":
        mode, reason = "float64", "float64 graph"
    elif compute == "float32":
        mode, reason = "float32", "requested 'float32'"
    elif compute in ("float64", "mixed"):  # mixed (float64 head only) buys little here: the levels' rounding dominates
        mode = "float64"
        reason = f"requested {compute!r}" + ("; deep graphs compute all of it in float64" if compute == "mixed" else "")
    else:
        mode, reason, measured, built = _choose_compute(levels, kind, options, preps, outputs, fold, level0_centering,
                                                        source)
    for mix in levels:  # never write a graph that would output NaN/inf
        linalg.check_representable(mix, mode)
    if fold is not None:
        check_folded({"weights": preps[0].W, "centres": preps[0].means, "biases": preps[0].bias}, mode)
    used0 = options.centering if options.centering != "auto" else ("none" if mode == "float64" else level0_centering)
    loss = None
    if kind == "mixture" and dtype == "float32" and mode != "float64":
        loss = _flat._estimate(_flat._prepare(levels[0]), "component", "float32")
    relu = options.activation == "relu"
    return ExportPlan(
        exporter="deep", options=options, kind=kind, layout="deep", outputs=outputs, compute=mode, compute_reason=reason,
        centering="none" if used0 == "global" else used0,
        centering_reason=(f"requested {options.centering!r}" if options.centering != "auto" else
                          "auto: level 0 centred per component where the single-mixture estimate asks for any "
                          "centring in float32 arithmetic, else none; hidden levels none"),
        layer_dtype=mode, head_dtype=mode, predicted=dict(measured or {}), error_estimate=None,
        levels=tuple((m.n_components, sum(c.rank for c in m.components)) for m in levels),
        n_neurons=tuple(p.n * (2 if relu else 1) for p in preps), n_features=preps[0].d, weight_bytes=n_bytes,
        float32_loss=loss, input_transform=fold is not None,
        state={"levels": levels, "kind": kind, "preps": preps, "built": built, "measured": measured, "fold": fold,
               "level0_centering": level0_centering, "source": source},
    )


def build(plan: ExportPlan):
    """The deep graph ``plan`` describes (the measured candidate itself where compute="auto" built it)."""
    import onnx

    s = plan.state
    m = s["built"].get(plan.compute)
    if m is None:
        m = _build(s["levels"], s["kind"], plan.outputs, plan.options, compute=plan.compute, preps=s["preps"],
                   level0_centering=s["level0_centering"], source=s["source"], check=False)
    meta = {"compute": plan.compute, "compute_requested": plan.options.compute, "compute_reason": plan.compute_reason}
    measured = s["measured"]
    if measured is not None:
        meta["measured_float32_error_log_likelihood"] = f"{measured['log_likelihood']:.3e}"
        meta["measured_float32_error_responsibilities"] = f"{measured['responsibilities']:.3e}"
    if s["fold"] is not None:
        meta["input_transform"] = s["fold"].metadata()
    if plan.options.output_names != "gmmnet":
        meta["output_names"] = plan.options.output_names
    set_metadata(m, meta)
    m.doc_string += f" Compute: {plan.compute} ({plan.compute_reason})."
    rename_outputs(m, plan.options.output_names)
    onnx.checker.check_model(m, full_check=True)
    return m


def _declines(model, options: ExportOptions) -> str | None:
    if options.layout != "neurons":  # the deep exporter writes neurons only
        return (f"layout={options.layout!r} applies to a single diag/spherical mixture, not to a hierarchy or with the "
                "deep options (shifted_relu, intensity, level outputs); use layout='neurons'")
    return None


EXPORTER = register_exporter(Exporter(
    name="deep", takes=lambda model: isinstance(model, (Mixture, Hierarchy)), declines=_declines, plan=plan,
    build=build, models="a gmmnet.ir.Hierarchy", order=20,
))


def to_onnx(model, **options):
    """Export a :class:`~gmmnet.ir.Hierarchy` (or a Mixture, as one level) with this (the deep) exporter.

    :func:`gmmnet.formats.onnx.to_onnx` chooses the exporter and documents the options
    (:class:`~gmmnet.formats.onnx.options.ExportOptions`); this one is for callers that want a
    deep network whatever the model.  An estimator with ``to_ir()`` (a fitted
    HierarchicalGaussianMixture) is converted first.
    """
    opts = ExportOptions(**options)
    if not isinstance(model, (Mixture, Hierarchy)) and hasattr(model, "to_ir"):
        model = model.to_ir()
    _levels_of(model)
    reason = _declines(model, opts)
    if reason is not None:
        raise UsageError(reason)
    return build(plan(model, opts))


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
            "pass the ONNX model itself, not its NetworkLayers, to read it back"
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
            f"level {level}, component {k}: {V.shape[0]} neurons for {V.shape[1]} inputs, a rank-truncated level "
            f"without its head (its residual variance is not in the graph): export with level{level}_responsibilities "
            "(to-onnx --level-outputs) to read it back"
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


@dataclass
class _Raw:
    """What :func:`_read_raw` found: the neuron banks as read, every level's head unnormalized."""

    layers: list  # read.Layer per level (rows over the level below's activations, or X)
    heads: dict  # level → (M, L, c): logit_k = Σ_i M_ki a_i² + L_k·s + c_k, s the level's input
    explicit: list  # per level, per neuron: made by an Abs/Relu node (not by squaring a residual h − m)
    net: object  # read_layers' NetworkLayers (top head normalized), or None where it could not normalize it
    error: Exception | None
    dtype: str = "float32"
    notes: list = None


def _read_raw(model_or_path) -> _Raw:
    """:func:`read_layers`' walk, keeping every level's raw head — the top one too — and which op made each neuron.

    A truncated level's head mixes kept neurons (coefficient −½(1 − λ/σ²) > 0 … of either sign) with
    the neurons the reader makes for the residual ‖h − μ‖² (squares of affine values); the reverse
    needs that head as it is, which :func:`read_layers` re-expresses (Abs) or refuses (ReLU).
    """
    from .read import _Reader, load_model

    model_or_path = load_model(model_or_path)

    class _RawReader(_Reader):
        def finish(self):
            op_of = {n.name or n.output[0]: n.op_type for n in self.graph.node}
            layers = self.bank_layers()
            explicit = [np.array([op_of.get(nm) in ("Abs", "Relu") for nm in layer.nodes], bool) for layer in layers]
            heads = {}
            for v, _ in self.logits:
                f = self.fresh(v)
                heads.setdefault(v.level, (f.M, f.L, f.c))
            try:
                net, err = super().finish(), None
            except UnsupportedModelError as exc:
                net, err = None, exc
            return _Raw(layers=layers, heads=heads, explicit=explicit, net=net, error=err, dtype=self.dtype,
                        notes=list(self.notes))

    try:
        return _RawReader(model_or_path).run()
    except UnsupportedModelError:
        raise
    except Exception as exc:  # pragma: no cover - the reader names the node itself
        raise UnsupportedModelError(f"the graph could not be read: {type(exc).__name__}: {exc}") from None


def _dense(a) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a, dtype=np.float64)


def _needs_quadratic(raw: _Raw, lv: int) -> bool:
    """True when level lv's head is a truncated one: coefficients of both signs, or residual (squared) neurons."""
    if lv not in raw.heads:
        return False
    M = _dense(raw.heads[lv][0])
    used = np.flatnonzero(np.any(M != 0, axis=0))
    made = raw.explicit[lv][used]
    # squared affine values alone (skl2onnx's ReduceSumSquare(Gemm(X))) are the pattern path's business
    return bool(np.any(made) and (np.any(M > 0) or not np.all(made)))


#: Relative tolerance of the checks on a level's quadratic form (pair folding, isotropic residual).
_QUAD_TOL = {"float32": 2e-3, "float64": 1e-8}


def _fold(A, g, col_map, col_scale, m_src: int, dtype: str, lv: int):
    """A quadratic form over the level below's graph activations → over its IR features.

    A ReLU pair (p, q) carries one feature f = (r_p + r_q)·scale with r_p·r_q = 0, so the form is a
    function of f alone when the pair's rows/columns agree (the diagonal A[p, q] never counts).
    """
    if col_map is None:
        return A, g
    P1 = np.array([idx[0] for idx in col_map])
    P2 = np.array([idx[-1] for idx in col_map])
    tol = _QUAD_TOL[dtype] * max(float(np.max(np.abs(A))), float(np.max(np.abs(g))), 1e-300)
    base = A[np.ix_(P1, P1)]
    off = ~np.eye(P1.size, dtype=bool)
    bad = max(float(np.max(np.abs(A[np.ix_(a, b)] - base)[off], initial=0.0))
              for a, b in ((P1, P2), (P2, P1), (P2, P2)))
    bad = max(bad, float(np.max(np.abs(A[P2, P2] - A[P1, P1]))), float(np.max(np.abs(g[P2] - g[P1]))))
    used = np.zeros(m_src, bool)
    used[P1] = used[P2] = True
    if np.any(~used):
        bad = max(bad, float(np.max(np.abs(A[~used]), initial=0.0)), float(np.max(np.abs(g[~used]), initial=0.0)))
    if bad > tol:
        raise UnsupportedModelError(
            f"level {lv}: its head is not a function of the level below's features (a ReLU pair's halves, or an "
            f"activation outside the features, enter it differently: {bad:.1e})")
    sc = np.asarray(col_scale, float)
    return base * np.outer(sc, sc), g[P1] * sc


def _quadratic_level(raw: _Raw, lv: int, col_map, col_scale, dtype: str):
    """Components of a level whose head is a general quadratic form (a truncated level), exactly.

    Per component, the head's Σ M a² + L·s + c is collected as −½ fᵀPf + gᵀf + c0 over the IR
    features f of the level below (ReLU pairs folded).  The kept directions are the component's
    explicit neurons (Abs / paired ReLU rows), λ_i = 1/(v_iᵀPv_i); the rest of P must be (I − VᵀV)/σ²,
    1/σ² = (tr P − Σ 1/λ_i)/(d − r).  μ = P⁻¹g, and the logit's constant c0 + ½ μᵀg gives the weight.
    Returns (comps, consts, feats, fscale) like the pattern path.
    """
    from ...recover import mirrored_pairs

    layer = raw.layers[lv]
    M, L, c = raw.heads[lv]
    M, L, c = _dense(M), _dense(L), np.asarray(c, float)
    W, b = layer.W, layer.b
    acts = list(layer.activations)
    explicit = raw.explicit[lv]
    relus = [i for i, a in enumerate(acts) if a == "relu"]
    partner = {}
    for i, j in mirrored_pairs(W, b, relus):
        partner[i], partner[j] = j, i
    m_src = W.shape[1]
    tol = _QUAD_TOL[dtype]
    comps, consts, feats, fscale = [], [], [], []
    for k in range(M.shape[0]):
        used = np.flatnonzero(M[k])
        rows, coefs, kept = [], [], []
        for i in used:
            if acts[i] == "relu":
                j = partner.get(i)
                if j is None or M[k, j] == 0 or abs(M[k, j] - M[k, i]) > 1e-9 * abs(M[k, i]) + 1e-300:
                    raise UnsupportedModelError(
                        f"level {lv}, component {k}: a squared ReLU neuron without its mirrored partner at the same "
                        "coefficient (not a Gaussian)")
                if j < i:
                    continue  # the pair counts once, as z²
            rows.append(i)
            coefs.append(M[k, i])
            if explicit[i]:
                kept.append(i)
        R, s_, bb = W[rows], np.array(coefs), b[rows]
        A = (R.T * s_) @ R
        g = 2.0 * R.T @ (s_ * bb) + L[k]
        c0 = float(c[k] + np.sum(s_ * bb * bb))
        A, g = _fold(A, g, col_map, col_scale, m_src, dtype, lv)
        P = -2.0 * (A + A.T) / 2.0
        d = P.shape[0]
        if not kept:
            raise UnsupportedModelError(f"level {lv}, component {k}: its head uses no Abs/ReLU neuron of the level")
        # the kept rows over the IR features of the level below
        U = W[kept]
        if col_map is not None:
            U = np.stack([U[:, idx[0]] for idx in col_map], axis=1) * np.asarray(col_scale, float)
        nrm = np.linalg.norm(U, axis=1)
        V = U / nrm[:, None]
        err = float(np.max(np.abs(V @ V.T - np.eye(V.shape[0]))))
        if err > _ORTHO_TOL[dtype]:
            raise UnsupportedModelError(
                f"level {lv}, component {k}: neuron directions are not orthogonal (max |VVt - I| = {err:.1e})")
        if err > 1e-12:  # float32 rows: the nearest orthonormal rows
            u_, _, vh = np.linalg.svd(V, full_matrices=False)
            V = u_ @ vh
        try:
            mean = np.linalg.solve(P, g)
        except np.linalg.LinAlgError:
            raise UnsupportedModelError(f"level {lv}, component {k}: the head's quadratic form is singular") from None
        prec = np.einsum("ij,jk,ik->i", V, P, V)
        if np.any(prec <= 0):
            raise UnsupportedModelError(f"level {lv}, component {k}: the head's quadratic form is not a Gaussian's")
        lam = 1.0 / prec
        r = V.shape[0]
        scale_p = float(np.max(np.abs(P)))
        if r < d:
            inv_s2 = (float(np.trace(P)) - float(np.sum(prec))) / (d - r)
            if inv_s2 <= 0:
                raise UnsupportedModelError(f"level {lv}, component {k}: the residual variance is not positive")
            model_p = (V.T * prec) @ V + (np.eye(d) - V.T @ V) * inv_s2
            comp = (mean, V, lam, 1.0 / inv_s2)
        else:
            model_p = (V.T * prec) @ V
            comp = (mean, V, lam)
        misfit = float(np.max(np.abs(P - model_p)))
        if misfit > tol * scale_p:
            raise UnsupportedModelError(
                f"level {lv}, component {k}: the head's quadratic form is not {r} principal directions plus an "
                f"isotropic residual (misfit {misfit / scale_p:.1e})")
        # each kept neuron passes through μ (b = −w·μ), so its activation is the IR neuron times a scale
        Wk, bk = U, b[kept]
        miss = np.abs(Wk @ mean + bk)
        if np.any(miss > 1e3 * tol * (nrm * max(1.0, float(np.max(np.abs(mean)))) + np.abs(bk))):
            raise UnsupportedModelError(f"level {lv}, component {k}: a neuron's hyperplane misses the component mean")
        comps.append(comp)
        consts.append(c0 + 0.5 * float(mean @ g))
        for i, n_i, l_i in zip(kept, nrm, lam):
            feats.append([i] if acts[i] == "abs" else [i, partner[i]])
            fscale.append(float(n_i * np.sqrt(l_i)))  # graph activation = IR activation × ‖w‖·λ^½
    return comps, np.array(consts), feats, np.array(fscale)


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
        # truncated: tied when every component has the same rows, eigenvalues and σ², else full
        # (the IR's diag/spherical need identity eigenvectors at full rank)
        if len(comps) > 1 and all(
                r is not None and V.shape == comps[0][1].shape and np.allclose(V, comps[0][1], rtol=0, atol=1e-9)
                and np.allclose(lam, comps[0][2], rtol=1e-9, atol=0) and abs(r - res[0]) <= 1e-9 * res[0]
                for (_, V, lam), r in zip(comps, res)):
            components = [c.model_copy(update={"eigenvectors": comps[0][1], "eigenvalues": comps[0][2],
                                               "residual_variance": res[0]}) for c in components]
            ct = "tied"
        comps = []
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


def truncated_mixture_graph(model_or_path):
    """The loaded model when it is gmmnet's one-level deep graph of a rank-truncated Mixture, else None.

    :func:`gmmnet.recover.from_onnx` hands such a graph to :func:`from_onnx`, which gives the
    truncated components back (rank r, σ²); the generic recovery would complete them to full rank.
    """
    from ...errors import GmmnetError
    from .read import load_model

    try:
        model = load_model(model_or_path)
    except GmmnetError:
        return None  # the generic reader gives the one-line error
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("producer") == "gmmnet" and meta.get("n_levels") == "1" and "truncation" in meta:
        return model
    return None


def is_deep(model_or_path) -> bool:
    """True when the graph has more than one neuron level under a mixture head (a hierarchy)."""
    raw = _read_raw(model_or_path)
    return bool(raw.heads) and max(raw.heads) > 0


def from_onnx(model_or_path, *, data=None):
    """Read a deep Abs / paired-ReLU network back as a :class:`~gmmnet.ir.Hierarchy`, level by level.

    The graph is read by pattern (:func:`gmmnet.formats.onnx.read.read_layers`).  The top level's
    grouping and constants come from its mixture head.  A lower level's come from its own head
    when the graph has one (gmmnet writes it for ``level{i}_responsibilities``); otherwise its
    neurons are grouped as gmmnet lays them out (consecutive, mutually orthogonal directions)
    and its component weights, which the network does not use, are set uniform (noted in the
    report).  ReLU pairs are found with :func:`gmmnet.recover.mirrored_pairs`; the next level's
    columns for the two neurons of a pair must be equal (that is how the pairing is absorbed).

    Rank-truncated levels (any level, Abs or paired ReLU, with its head in the graph) are read from
    the head as it is: its quadratic form over the level below's features must be the kept
    directions (the component's own Abs / ReLU rows) plus an isotropic residual; they come back
    with rank r and ``residual_variance`` σ², exactly (``tied`` when all components share rows,
    eigenvalues and σ²).  A truncated lower level without its head raises
    :class:`~gmmnet.errors.UnsupportedModelError` (σ² is nowhere else in the graph).

    A one-level network is handed to :func:`gmmnet.recover.from_network` and comes back as a
    :class:`~gmmnet.ir.Mixture`; a one-level truncated one is read here and comes back as the
    truncated Mixture.

    Returns
    -------
    (Hierarchy or Mixture, report dict)
    """
    from ...ir import Hierarchy, Provenance
    from ...recover import from_network, mirrored_pairs
    from ...versions import library_versions
    from .read import NetworkLayers

    if isinstance(model_or_path, NetworkLayers):
        net, raw = model_or_path, None
    else:
        raw = _read_raw(model_or_path)
        net = raw.net
    top = max(raw.heads) if raw is not None and raw.heads else None
    top_quad = top is not None and _needs_quadratic(raw, top)  # a truncated top level: read its head as it is
    if not top_quad:
        if net is None:
            raise raw.error
        if len(net.layers) == 1:
            return from_network(net, data=data)
        if net.groups is None or net.head is None:
            raise UnsupportedModelError(
                f"the graph has {len(net.layers)} neuron levels but no mixture head on the top level")
        layers = list(net.layers)
    else:
        layers = list(raw.layers[: top + 1])
    dtype = raw.dtype if raw is not None else net.dtype
    lower_heads = dict(raw.heads if raw is not None else (getattr(net, "level_heads", {}) or {}))
    lower_heads.pop(top, None)
    notes = list(raw.notes if raw is not None else net.notes)
    n_lv = len(layers)
    levels = []
    col_map = None  # for each IR feature of the level below: its graph neuron indices
    col_scale = None
    for lv, layer in enumerate(layers):
        if raw is not None and lv in raw.heads and (lv == top and top_quad or lv != top and _needs_quadratic(raw, lv)):
            comps, consts, col_map, col_scale = _quadratic_level(raw, lv, col_map, col_scale, dtype)
            levels.append(_mixture(comps, consts, lv))
            if any(len(cm) > 3 for cm in comps):
                notes.append(f"level {lv}: rank-truncated; read from its head as kept directions + residual variance")
            continue
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
    report = {"n_levels": n_lv, "dtype": dtype, "notes": notes,
              "neurons": ([int(np.sum(e)) for e in raw.explicit[:n_lv]] if raw is not None  # not the residual's
                          else [layer.n_neurons for layer in layers]),
              "lower_heads": sorted(int(k) for k in lower_heads)}
    if n_lv == 1:  # a one-level truncated network: the Mixture itself
        mix = levels[0].model_copy(update={"provenance": Provenance(
            source="gmmnet.formats.onnx.deep:onnx", versions=library_versions(), extra=levels[0].provenance.extra)})
        if data is not None:
            report["mean_log_likelihood"] = float(np.mean(linalg.log_likelihood(mix, np.asarray(data, np.float64))))
        return mix, report
    hier = Hierarchy(levels=levels, provenance=Provenance(source="gmmnet.formats.onnx.deep:onnx",
                                                          versions=library_versions()))
    if data is not None:
        from ...hierarchy import HierarchicalGaussianMixture

        x = np.asarray(data, dtype=np.float64)
        report["mean_log_likelihood"] = float(HierarchicalGaussianMixture.from_ir(hier).score(x))
    return hier, report
