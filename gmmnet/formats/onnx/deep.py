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

The reverse, :func:`gmmnet.formats.onnx.read_deep.from_onnx`, reads any deep graph by pattern and
rebuilds one mixture per neuron level, truncated levels included (from their heads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import linalg
from ...errors import UnsupportedModelError, UsageError
from ...ir import Hierarchy, Mixture
from .fold import Fold, check_folded
from .graph import Graph, gmmnet_version, head_constants, make_model, rounder, set_metadata
from .options import ACTIVATIONS, CENTERINGS, INTENSITIES, LEVEL_OUTPUT_KINDS, OUTPUTS, ExportOptions, level_outputs
from .plan import ExportPlan, Exporter, check_weight_bytes, register_exporter, rename_outputs

__all__ = ["ACTIVATIONS", "CENTERINGS", "INTENSITIES", "build", "level_outputs", "plan", "to_onnx"]



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
                   coef=np.concatenate(coef), res_inv=np.array(res_inv), consts=head_constants(linalg.component_log_terms(mixture)),
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
    for i, mix in enumerate(levels):  # the float32 neuron layer and head, as the deep graph writes them
        pred = _flat.float32_neuron_prediction(_flat._prepare(mix, fold.transform if i == 0 and fold else None))
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
    if options.layout == "quadratic":  # the deep exporter writes neurons only
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
