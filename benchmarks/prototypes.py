"""Prototype ONNX graphs for a fast default graph (issue 15): candidates per covariance type.

Every builder takes an IR :class:`~gmmnet.ir.Mixture` (e.g. ``gmmnet.from_sklearn(gmm)``) and
returns an ``onnx.ModelProto`` with input ``X`` (float32, shape ``[batch, d]``, dynamic batch) and
the standard outputs ``label`` (int64), ``responsibilities`` and ``log_likelihood`` (float32), in
the order asked for by ``outputs``.  Everything is derived in float64 from the IR and cast once,
when a constant is written; biases and offsets are computed from the *rounded* weights and the
*rounded* centre, so a float32 graph evaluates ``W̃ (x − m̃) − W̃ (μ_k − m̃)`` up to arithmetic
rounding.  :func:`default_graph` is the recommended recipe per covariance type
(benchmarks/RECOMMENDATION.md has the measurements behind it).

These are research prototypes for the exporter: plain ``onnx.helper`` code, independent of
gmmnet's exporter internals.  Rank-truncated components are not handled.

full
    :func:`full_gemm`        the paper's neurons: Gemm of the eigen-whitening rows λ^-½ v, then
                             ReduceSumSquare of the pre-activations (|z|² = z²: no Abs on the hot
                             path; ``distances=True`` adds the Abs as a side output).
    :func:`full_triangular`  the same D² with a triangular whitening R_k (R_kᵀR_k = Σ_k⁻¹, from a
                             QR of the eigen-whitening) in column blocks: neuron block j reads
                             features from its first index on, so the products skip the zero
                             triangle (``blocks=4``: 62.5 % of the multiply-adds).
    Both take ``groups`` (products over groups of components; ``groups=K`` is skl2onnx's shape)
    and ``chunk`` (run the products over row chunks inside a Scan, so each product's output stays
    in cache for the sum of squares that reads it).
tied
    :func:`tied_offsets`     y = W̃(x − m̃) once, then ‖y − o_k‖² over a broadcast [N, K, d]
                             (``centering="component"``: (x − μ_k)W̃ᵀ as one MatMul instead).
    :func:`tied_expanded`    y = W̃(x − m̃) in float32, then ‖y‖² − 2 y·o_k + ‖o_k‖² as one
                             [N, d]·[d, K] Gemm, in float32 or (after a Cast of y) float64.
diag / spherical
    :func:`axis_quadratic`   the expanded form about one centre m̃; its two Gemms output the
                             log-joint itself: L_k = Σ_j (−½p_kj) xc_j² + Σ_j p_kj δ_kj xc_j + e_k.
    :func:`axis_broadcast`   one neuron per axis: (x − μ_k)·w_k broadcast to [N, K, d], then
                             ReduceSumSquare (the network form without a dense d × K·d matrix).

Heads (``head_kind=``) on the log-joint L [N, K]: ``"gmmnet"`` (today's exporter head: ReduceMax,
guard, Sub, Exp, ReduceSum, Log, Add, Div; the fastest measured), ``"lse"`` (ReduceLogSumExp,
then Exp(L − lse)), ``"softmax"`` (Softmax and ReduceLogSumExp).  ``head_dtype="float64"`` casts
D² (or L) to double first; a double head takes its exponentials in float32 after the float64
shift, as today's exporter does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTPUTS = ("label", "responsibilities", "log_likelihood")
HEADS = ("gmmnet", "lse", "softmax")
OPSET = 17
#: gmmnet's error estimates look at points within A standard deviations of a component's mean.
A = 3.0
#: diag/spherical: the float32 expanded form is used while its predicted cancellation is at most
#: this many times the float32 head's own rounding (see :func:`choose_axis`); set by measurement.
AXIS_RATIO = 50.0
#: Row chunks of :func:`_rows` aim at about this many bytes of pre-activations per product.
CHUNK_BYTES = 1 << 20


# ---------------------------------------------------------------------------
# float64 derivation


@dataclass(frozen=True)
class Derived:
    """The mixture as float64 arrays (one derivation shared by the builders)."""

    ctype: str
    K: int
    d: int
    means: np.ndarray  # (K, d)
    weights: np.ndarray  # (K,)
    consts: np.ndarray  # (K,) c_k = log π_k − ½ log|Σ_k| − (d/2) log 2π + log_constant_k (−inf for π_k = 0)
    whitening: np.ndarray | None  # (K, d, d) eigen-whitening rows λ^-½ v (full/tied)
    variances: np.ndarray | None  # (K, d) σ²_kj (diag/spherical, feature order)

    def centre(self, centering: str) -> np.ndarray:
        """The point subtracted from x before the products, float32-rounded (used exactly afterwards)."""
        if centering == "none":
            return np.zeros(self.d)
        if centering == "global":
            return f32(self.weights @ self.means)
        raise ValueError(f"centering must be 'none' or 'global' here, got {centering!r}")

    def triangular(self) -> np.ndarray:
        """(K, d, d) upper-triangular R_k with R_kᵀ R_k = Σ_k⁻¹ (a QR of the whitening: no squared condition)."""
        _, r = np.linalg.qr(self.whitening)
        sign = np.sign(np.einsum("kii->ki", r))
        sign[sign == 0] = 1.0
        return r * sign[:, :, None]


def derive(mixture) -> Derived:
    """Float64 arrays of an IR mixture (full rank; diag/spherical may have ``eigenvectors=None``)."""
    from gmmnet import linalg

    ct, d = mixture.covariance_type, mixture.n_features
    comps = mixture.components
    if any(c.residual_variance is not None for c in comps):
        raise ValueError("the prototypes handle full-rank mixtures only (no rank truncation)")
    whitening = variances = None
    if ct in ("full", "tied"):
        whitening = np.stack([c.eigenvectors / np.sqrt(c.eigenvalues)[:, None] for c in comps])
    else:
        variances = np.stack([np.broadcast_to(np.asarray(c.eigenvalues, np.float64), (d,)) for c in comps])
    return Derived(ctype=ct, K=mixture.n_components, d=d, means=mixture.means.astype(np.float64),
                   weights=mixture.weights, consts=linalg.component_log_terms(mixture),
                   whitening=whitening, variances=variances)


def f32(a) -> np.ndarray:
    """float64 → float32 → float64: the value a float32 constant holds."""
    return np.asarray(a, np.float64).astype(np.float32).astype(np.float64)


def split(a) -> tuple[np.ndarray, np.ndarray]:
    """a = hi + lo with hi = float32(a), lo = float32(a − hi): x − hi − lo is x − a to float32 rounding."""
    hi = f32(a)
    return hi, f32(np.asarray(a, np.float64) - hi)


# ---------------------------------------------------------------------------
# choices (centering, float32 or float64) from predicted errors


def choose_centering(mixture) -> str:
    """full/tied: gmmnet's rule (the cheapest of none, global, component whose float32 error estimate
    is at most max(ABS_OK, RATIO_OK × the component estimate); see gmmnet's float32_error_estimate)."""
    from gmmnet.formats.onnx.export import ABS_OK, RATIO_OK, float32_error_estimate

    est = {c: float32_error_estimate(mixture, c) for c in ("none", "global", "component")}
    bar = max(ABS_OK, RATIO_OK * est["component"])
    return next(c for c in ("none", "global", "component") if est[c] <= bar)


def quadratic_size(p: Derived, m: np.ndarray) -> np.ndarray:
    """T_k = Σ_j p_kj (2|μ_kj − m_j| + A σ_kj)²: the size of the expanded terms about centre m (K,)."""
    return np.sum((2.0 * np.abs(p.means - m) + A * np.sqrt(p.variances)) ** 2 / p.variances, axis=1)


def quadratic_terms(p: Derived, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_k, H_k) in units of the unit roundoff, as gmmnet's ``_predict_quadratic``: P_k = ½(√d + 4) T_k is
    the expanded form's cancellation, H_k = |c_k| + ½D²_hi + d the rounding of the head that any
    float32 graph has (D²_hi = d + A√(2d), the bulk of a component's points)."""
    d2_hi = p.d + A * np.sqrt(2.0 * p.d)
    c = np.where(np.isfinite(p.consts), np.abs(p.consts), 0.0)
    return 0.5 * (np.sqrt(p.d) + 4.0) * quadratic_size(p, m), c + 0.5 * d2_hi + p.d


def choose_axis(mixture) -> tuple[str, str, dict]:
    """(compute, centering, numbers) for a diag/spherical mixture.

    The centre is the mixture's mean unless 0 gives smaller expanded terms.  float32 is kept when
    the predicted cancellation of the expanded form is at most AXIS_RATIO times the head's own
    rounding (max_k P_k/H_k, see :func:`quadratic_terms`): the float32 form is then about as
    accurate as any float32 graph.  Else the form is computed in float64.  AXIS_RATIO was set by
    measurement (benchmarks/RECOMMENDATION.md): up to ~50 the float32 form's errors were within
    the float32 neurons graph's and skl2onnx's on every data set tried; beyond it (narrow
    components far from the centre: iris, digits) they grew to 1e-5 … 0.4.
    """
    p = derive(mixture)
    t = {c: float(np.max(quadratic_size(p, p.centre(c)))) for c in ("none", "global")}
    centering = "global" if t["global"] < t["none"] else "none"
    P, H = quadratic_terms(p, p.centre(centering))
    ratio = float(np.max(P / H))
    return ("float32" if ratio <= AXIS_RATIO else "float64"), centering, {"cancellation_ratio": ratio, "T": t}


# ---------------------------------------------------------------------------
# a small graph writer


class Graph:
    """Nodes and initializers of one graph; ``dtype`` is the type of the constants written next."""

    def __init__(self, dtype: str = "float32", opset: int = OPSET):
        import onnx

        self.onnx = onnx
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.names: dict[str, int] = {}
        self.set_dtype(dtype)

    def set_dtype(self, dtype: str) -> None:
        self.dtype = dtype
        self.np_dtype = np.float32 if dtype == "float32" else np.float64

    def _unique(self, name: str) -> str:
        n = self.names.get(name, 0)
        self.names[name] = n + 1
        return name if n == 0 else f"{name}_{n}"

    def const(self, name: str, value, dtype=None) -> str:
        from onnx import numpy_helper

        if dtype is np.int64 and name in self.names:  # shared integer constants (axes, shapes)
            return name
        name = self._unique(name)
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype or self.np_dtype))
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, np.int64), dtype=np.int64)

    def node(self, op: str, inputs: list[str], name: str, out: str | None = None, **attrs) -> str:
        name = self._unique(name)
        out = out or name
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def reduce(self, op: str, x: str, axes: list[int], name: str, keepdims: int, out: str | None = None) -> str:
        """Reduce* with ``axes`` as an attribute (opset < 18) or an input (18+, and ReduceSum from 13)."""
        if self.opset >= 18 or op == "ReduceSum":
            return self.node(op, [x, self.ints(f"axes_{'_'.join(map(str, axes))}", axes)], name, out, keepdims=keepdims)
        return self.node(op, [x], name, out, axes=list(axes), keepdims=keepdims)

    def cast(self, x: str, dtype: str, name: str, out: str | None = None) -> str:
        elem = self.onnx.TensorProto.FLOAT if dtype == "float32" else self.onnx.TensorProto.DOUBLE
        return self.node("Cast", [x], name, out, to=elem)

    def model(self, d: int, K: int, outputs: tuple[str, ...], doc: str, extra_outputs=()):
        """The ModelProto: input X [batch, d] float32, the requested outputs, checked."""
        h = self.onnx.helper
        F = self.onnx.TensorProto.FLOAT
        shapes = {"label": (self.onnx.TensorProto.INT64, ["batch"]), "responsibilities": (F, ["batch", K]),
                  "log_likelihood": (F, ["batch"]), "distances": (F, ["batch", K * d])}
        outs = [h.make_tensor_value_info(o, *shapes[o]) for o in (*outputs, *extra_outputs)]
        graph = h.make_graph(self.nodes, "gmmnet_prototype", [h.make_tensor_value_info("X", F, ["batch", d])], outs,
                             initializer=self.inits, doc_string=doc)
        opsets = [h.make_opsetid("", self.opset)]
        m = h.make_model(graph, opset_imports=opsets, producer_name="gmmnet-benchmarks")
        m.ir_version = h.find_min_ir_version_for(opsets)
        m.doc_string = doc
        self.onnx.checker.check_model(m, full_check=True)
        return m


def _check_outputs(outputs) -> tuple[str, ...]:
    outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    if not outputs or len(set(outputs)) != len(outputs) or any(o not in OUTPUTS for o in outputs):
        raise ValueError(f"outputs must be distinct names from {OUTPUTS}, got {outputs}")
    return outputs


# ---------------------------------------------------------------------------
# heads: log-joint L [N, K] → label, log_likelihood, responsibilities


def head(g: Graph, L: str, outputs: tuple[str, ...], kind: str = "gmmnet") -> None:
    """Write the requested outputs from the log-joint ``L`` (float32, or float64 when ``g.dtype`` is)."""
    if kind not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
    want = set(outputs)
    if "label" in want:
        g.node("ArgMax", [L], "head/label", "label", axis=1, keepdims=0)
    if not want & {"log_likelihood", "responsibilities"}:
        return
    if kind == "gmmnet" or g.dtype == "float64":
        _head_shifted(g, L, want)
    elif kind == "softmax":
        if "responsibilities" in want:
            g.node("Softmax", [L], "head/softmax", "responsibilities", axis=1)
        if "log_likelihood" in want:
            g.reduce("ReduceLogSumExp", L, [1], "head/lse", 0, out="log_likelihood")
    elif "responsibilities" not in want:
        g.reduce("ReduceLogSumExp", L, [1], "head/lse", 0, out="log_likelihood")
    else:  # "lse": responsibilities = exp(L − log p), the shift guarded on [N, 1] only
        lse = g.reduce("ReduceLogSumExp", L, [1], "head/lse", 1)
        if "log_likelihood" in want:
            g.node("Squeeze", [lse, g.ints("axes_1", [1])], "head/log_likelihood", "log_likelihood")
        guard = g.node("Max", [lse, g.const("head/lowest", np.array(np.finfo(np.float32).min))], "head/guard")
        g.node("Exp", [g.node("Sub", [L, guard], "head/shift")], "head/exp", "responsibilities")


def _head_shifted(g: Graph, L: str, want: set) -> None:
    """m = max(max_k L, lowest); s = Σ exp(L − m); log p = m + log s; r = exp(L − m)/max(s, 1).

    A float64 L keeps m and the shift in double and takes the exponentials in float32 (exact to
    ~1e-7, and onnxruntime's float32 Exp is far faster than its double one).
    """
    wide = g.dtype == "float64"
    m = g.reduce("ReduceMax", L, [1], "head/max", 1)
    m = g.node("Max", [m, g.const("head/lowest", np.array(np.finfo(g.np_dtype).min))], "head/max_guard")
    sh = g.node("Sub", [L, m], "head/shift")
    if wide:
        g.set_dtype("float32")
        sh = g.cast(sh, "float32", "head/shift_float")
    e = g.node("Exp", [sh], "head/exp")
    s = g.reduce("ReduceSum", e, [1], "head/sum", 1)
    if "log_likelihood" in want:
        ls = g.node("Log", [s], "head/log_sum")
        if wide:
            ls = g.cast(g.node("Add", [g.cast(ls, "float64", "head/log_sum_double"), m], "head/logsumexp"),
                        "float32", "head/ll_float")
        else:
            ls = g.node("Add", [ls, m], "head/logsumexp")
        g.node("Squeeze", [ls, g.ints("axes_1", [1])], "head/log_likelihood", "log_likelihood")
    if "responsibilities" in want:
        sg = g.node("Max", [s, g.const("head/one", np.array(1.0))], "head/sum_guard")
        g.node("Div", [e, sg], "head/responsibilities", "responsibilities")


def _log_joint_from_d2(g: Graph, d2: str, consts: np.ndarray, head_dtype: str = "float32") -> str:
    """L = −½ D² + c (two passes over [N, K]); ``head_dtype="float64"`` casts D² to double first."""
    if head_dtype == "float64" and g.dtype == "float32":
        d2 = g.cast(d2, "float64", "head/cast")
        g.set_dtype("float64")
    half = g.node("Mul", [d2, g.const("head/neg_half", np.array(-0.5))], "head/neg_half_d2")
    return g.node("Add", [half, g.const("head/c", consts)], "head/log_joint")


def _centre(g: Graph, x: str, m: np.ndarray, name: str) -> str:
    """x − m, or x itself when m is 0."""
    if not np.any(m):
        return x
    return g.node("Sub", [x, g.const(f"{name}/mean", m)], f"{name}/center")


# ---------------------------------------------------------------------------
# full covariance


def _blocks(d: int, n_blocks: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, d, max(1, min(n_blocks, d)) + 1).round().astype(int)
    return [(int(s), int(e)) for s, e in zip(edges[:-1], edges[1:]) if e > s]


def _groups(K: int, n_groups: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, K, max(1, min(n_groups, K)) + 1).round().astype(int)
    return [(int(s), int(e)) for s, e in zip(edges[:-1], edges[1:]) if e > s]


def triangular_fraction(d: int, n_blocks: int) -> float:
    """Multiply-adds of :func:`full_triangular` relative to a dense [d, d] product."""
    return sum((e - s) * (d - s) for s, e in _blocks(d, n_blocks)) / d**2


def auto_blocks(d: int) -> int:
    """Column blocks of at least 16 features, at most 4 (measured: narrower blocks cost more than they save)."""
    return max(1, min(4, d // 16))


def auto_chunk(K: int, d: int, blocks: int = 1) -> int:
    """Rows per chunk so that one product's output [chunk, K·block] is about CHUNK_BYTES (64 … 8192, a power of 2)."""
    width = K * max(e - s for s, e in _blocks(d, blocks))
    rows = CHUNK_BYTES / (4.0 * width)
    return int(2 ** np.clip(np.round(np.log2(rows)), 6, 13))


def _d2_products(g: Graph, p: Derived, x: str, W: np.ndarray, bias: np.ndarray | None, groups: int, blocks: int) -> str:
    """D² [N, K] = Σ_i (W_k x_k + b_k)_i² in products over ``groups`` × ``blocks``.

    Block j = neuron rows [s, e) reading features [s, d) (exact for an upper-triangular W; use
    ``blocks=1`` for a dense one).  ``bias=None`` means per-component centring: each component
    gets its own input x − μ_hi − μ_lo and no bias (``groups`` is then K).
    """
    spans = _blocks(p.d, blocks)

    def sliced(xin: str, tag: str) -> list[str]:
        return [xin if s == 0 else g.node("Slice", [xin, g.ints(f"start_{s}", [s]), g.ints(f"end_{p.d}", [p.d]),
                                                    g.ints("axes_1", [1])], f"{tag}/b{j}/slice")
                for j, (s, _) in enumerate(spans)]

    if bias is None:
        groups = p.K
        hi, lo = split(p.means)
    else:
        xs = sliced(x, "layer0")
    per_group = []
    for gi, (k0, k1) in enumerate(_groups(p.K, groups)):
        gt = f"layer0/g{gi}"
        if bias is None:  # x − μ_k, high and low parts (exact to float32 rounding of the result)
            xk = g.node("Sub", [x, g.const(f"{gt}/mean_hi", hi[k0])], f"{gt}/center_hi")
            if np.any(lo[k0]):
                xk = g.node("Sub", [xk, g.const(f"{gt}/mean_lo", lo[k0])], f"{gt}/center_lo")
            xs = sliced(xk, gt)
        parts = []
        for j, (s, e) in enumerate(spans):
            tag = f"{gt}/b{j}"
            Wj = W[k0:k1, s:e, s:].reshape(-1, p.d - s)  # (|g|·(e − s), d − s)
            ins = [xs[j], g.const(f"{tag}/W", Wj)]
            if bias is not None:
                ins.append(g.const(f"{tag}/b", bias[k0:k1, s:e].ravel()))
            z = g.node("Gemm", ins, f"{tag}/linear", transB=1)
            if k1 - k0 > 1:
                z = g.node("Reshape", [z, g.ints(f"shape_{k1 - k0}_{e - s}", [0, k1 - k0, e - s])], f"{tag}/reshape")
            parts.append(g.reduce("ReduceSumSquare", z, [-1], f"{tag}/sumsq", 0 if k1 - k0 > 1 else 1))
        per_group.append(parts[0] if len(parts) == 1 else g.node("Sum", parts, f"{gt}/d2"))
    return per_group[0] if len(per_group) == 1 else g.node("Concat", per_group, "layer0/d2", axis=1)


def _rows(g: Graph, p: Derived, x: str, chunk: int | None, body) -> str:
    """``body(g, x)`` → D² [N, K] on all rows at once, or over row chunks inside a Scan.

    With ``chunk`` rows per chunk, the graph pads X with zero rows to a multiple of ``chunk`` (at
    least one chunk: a Scan over zero chunks fails on onnxruntime), views it as [n_chunks,
    chunk, d], runs ``body`` on each chunk — so each [chunk, K·block] product stays in cache for
    the sum of squares that reads it — and cuts the padding off the stacked result.
    """
    if not chunk:
        return body(g, x)
    h = g.onnx.helper
    F = g.onnx.TensorProto.FLOAT
    gb = Graph(g.dtype, g.opset)
    out = gb.node("Identity", [body(gb, "x_chunk")], "rows/d2_chunk")
    sub = h.make_graph(gb.nodes, "rows", [h.make_tensor_value_info("x_chunk", F, [chunk, p.d])],
                       [h.make_tensor_value_info(out, F, [chunk, p.K])], initializer=gb.inits)
    n = g.node("Shape", [x], "rows/n", start=0, end=1)  # [1]
    c = g.ints("rows/chunk", [chunk])
    up = g.node("Div", [g.node("Add", [n, g.ints("rows/chunk_m1", [chunk - 1])], "rows/n_up"), c], "rows/n_chunks")
    up = g.node("Max", [up, g.ints("rows/one", [1])], "rows/n_chunks_1")
    pad = g.node("Sub", [g.node("Mul", [up, c], "rows/n_padded"), n], "rows/pad")
    zero = g.ints("rows/zero", [0])
    xp = g.node("Pad", [x, g.node("Concat", [zero, zero, pad, zero], "rows/pads", axis=0)], "rows/padded")
    x3 = g.node("Reshape", [xp, g.ints("rows/shape3", [-1, chunk, p.d])], "rows/chunks")
    d3 = g.node("Scan", [x3], "rows/scan", body=sub, num_scan_inputs=1)
    d2 = g.node("Reshape", [d3, g.ints("rows/shape2", [-1, p.K])], "rows/stack")
    return g.node("Slice", [d2, zero, n, zero], "rows/unpad")


def _full(mixture, triangular: bool, outputs, head_dtype, centering, head_kind, groups, blocks, chunk, opset,
          distances=False):
    p = derive(mixture)
    outputs = _check_outputs(outputs)
    if centering == "auto":
        centering = choose_centering(mixture)
    g = Graph("float32", opset)
    W = f32(p.triangular() if triangular else p.whitening)  # (K, d, d), rows = neurons
    blocks = blocks if triangular else 1
    if centering == "component":
        x, bias = "X", None
    else:
        m = p.centre(centering)
        x, bias = _centre(g, "X", m, "layer0"), -np.einsum("kij,kj->ki", W, p.means - m)
    if chunk == "auto":
        chunk = auto_chunk(p.K if centering != "component" else 1, p.d, blocks)
    extra = ()
    if distances:  # the Abs neurons as a side output, beside the D² path
        z = g.node("Gemm", [x, g.const("layer0/W_all", W.reshape(p.K * p.d, p.d)), g.const("layer0/b_all", bias.ravel())],
                   "layer0/linear_all", transB=1)
        g.node("Abs", [z], "layer0/abs", "distances")
        extra = ("distances",)
    d2 = _rows(g, p, x, chunk, lambda gb, xb: _d2_products(gb, p, xb, W, bias, groups, blocks))
    head(g, _log_joint_from_d2(g, d2, p.consts, head_dtype), outputs, head_kind)
    doc = (f"{'full_triangular' if triangular else 'full_gemm'}: centering={centering} groups={groups} "
           f"blocks={blocks} chunk={chunk} head={head_kind}/{head_dtype}")
    return g.model(p.d, p.K, outputs, doc, extra)


def full_gemm(mixture, *, outputs=OUTPUTS, head_dtype: str = "float32", centering: str = "global",
              head_kind: str = "gmmnet", groups: int = 1, chunk: int | str | None = None, distances: bool = False,
              opset: int = OPSET):
    """The paper's neurons without the Abs pass: z = W̃(x − m̃) + b, D²_k = Σ_i z_ki².

    W̃ are the eigen-whitening rows λ^-½ v (K·d of them), b_k = −W̃_k(μ_k − m̃).  ``groups``: one
    Gemm per group of components (1: one [K·d, d] product; K: skl2onnx's shape).  ``centering``:
    "none", "global", "component" (x − μ_k per component, groups = K) or "auto" (gmmnet's rule).
    ``chunk``: rows per Scan iteration (None: all rows at once; "auto": :func:`auto_chunk`).
    ``distances=True`` adds the Abs neurons as a ``distances`` output beside the hot path.
    """
    return _full(mixture, False, outputs, head_dtype, centering, head_kind, groups, 1, chunk, opset, distances)


def full_triangular(mixture, *, outputs=OUTPUTS, head_dtype: str = "float64", centering: str = "auto",
                    head_kind: str = "gmmnet", groups: int = 1, blocks: int | str = "auto",
                    chunk: int | str | None = "auto", opset: int = OPSET):
    """Triangular whitening in column blocks: the same D² with fewer multiply-adds.

    R_k upper triangular with R_kᵀR_k = Σ_k⁻¹; neuron rows [s, e) read features [s, d) only, so
    block j is a Gemm of (x − m̃)[:, s:] with the stacked [|g|·(e − s), d − s] rows.  Options as
    :func:`full_gemm`; ``blocks="auto"`` is :func:`auto_blocks`.
    """
    p_d = mixture.n_features
    blocks = auto_blocks(p_d) if blocks == "auto" else blocks
    return _full(mixture, True, outputs, head_dtype, centering, head_kind, groups, blocks, chunk, opset)


# ---------------------------------------------------------------------------
# tied covariance


def tied_offsets(mixture, *, outputs=OUTPUTS, head_dtype: str = "float32", centering: str = "global",
                 head_kind: str = "gmmnet", opset: int = OPSET):
    """y = W̃(x − m̃) once, then D²_k = ‖y − o_k‖² with o_k = W̃(μ_k − m̃), broadcast over [N, K, d].

    ``centering="component"``: (x − μ_hi − μ_lo) broadcast to [N, K, d], then one MatMul by W̃ᵀ
    (today's exporter layout for raw data: exact centring, K times the product).
    """
    p = derive(mixture)
    outputs = _check_outputs(outputs)
    if centering == "auto":
        centering = choose_centering(mixture)
    g = Graph("float32", opset)
    W = f32(p.whitening[0])
    if centering == "component":
        hi, lo = split(p.means)
        xu = g.node("Unsqueeze", ["X", g.ints("axes_1", [1])], "layer0/unsqueeze")
        c = g.node("Sub", [xu, g.const("layer0/mean_hi", hi)], "layer0/center_hi")
        if np.any(lo):
            c = g.node("Sub", [c, g.const("layer0/mean_lo", lo)], "layer0/center_lo")
        z = g.node("MatMul", [c, g.const("layer0/W_T", W.T)], "layer0/linear")
    else:
        m = p.centre(centering)
        x = _centre(g, "X", m, "layer0")
        y = g.node("Gemm", [x, g.const("layer0/W", W)], "layer0/shared_linear", transB=1)
        y = g.node("Unsqueeze", [y, g.ints("axes_1", [1])], "layer0/unsqueeze")
        z = g.node("Sub", [y, g.const("layer0/offsets", (p.means - m) @ W.T)], "layer0/linear")
    d2 = g.reduce("ReduceSumSquare", z, [2], "head/sumsq", 0)
    head(g, _log_joint_from_d2(g, d2, p.consts, head_dtype), outputs, head_kind)
    return g.model(p.d, p.K, outputs, f"tied_offsets centering={centering} head={head_kind}/{head_dtype}")


def tied_expanded(mixture, *, outputs=OUTPUTS, centering: str = "global", compute: str = "float64",
                  head_kind: str = "gmmnet", opset: int = OPSET):
    """y = W̃(x − m̃) (one float32 [d, d] Gemm), then L_k = −½‖y‖² + y·o_k + (c_k − ½‖o_k‖²).

    The rest is one [N, d]·[d, K] Gemm whose bias carries the constants and one ReduceSumSquare
    of y.  ``compute="float64"`` casts y to double first (exact), so the expansion does not
    cancel in float32; only y carries float32 rounding.
    """
    p = derive(mixture)
    outputs = _check_outputs(outputs)
    g = Graph("float32", opset)
    m = p.centre(centering)
    W = f32(p.whitening[0])
    offs = (p.means - m) @ W.T  # (K, d), float64 from the rounded weights and centre
    x = _centre(g, "X", m, "layer0")
    y = g.node("Gemm", [x, g.const("layer0/W", W)], "layer0/shared_linear", transB=1)
    if compute == "float64":
        y = g.cast(y, "float64", "layer0/cast")
        g.set_dtype("float64")
    with np.errstate(invalid="ignore"):
        e = p.consts - 0.5 * np.sum(offs * offs, axis=1)
    t = g.node("Gemm", [y, g.const("quad/O", offs.T), g.const("quad/e", e)], "quad/cross")  # y·o_k + e_k
    ss = g.reduce("ReduceSumSquare", y, [1], "quad/sumsq", 1)  # ‖y‖²: [N, 1]
    L = g.node("Gemm", [ss, g.const("quad/neg_half", np.full((1, p.K), -0.5)), t], "head/log_joint")
    head(g, L, outputs, head_kind)
    return g.model(p.d, p.K, outputs, f"tied_expanded centering={centering} compute={compute}")


# ---------------------------------------------------------------------------
# diag and spherical


def axis_quadratic(mixture, *, outputs=OUTPUTS, centering: str = "auto", compute: str = "auto",
                   head_kind: str = "gmmnet", head_dtype: str = "float32", opset: int = OPSET):
    """The expanded quadratic form about one centre; its two Gemms output the log-joint itself.

    xc = x − m̃, δ_k = μ_k − m̃, p = 1/σ²:
    ``L_k = Σ_j (−½ p_kj) xc_j² + Σ_j p_kj δ_kj xc_j + (c_k − ½ Σ_j p_kj δ_kj²)``
    (spherical: ``−½ p_k ‖xc‖²``): a Gemm [d, K] with the constants as bias, then a Gemm of the
    squares with the first as C.  ``compute="float64"`` casts X first (exact) and computes in
    double, as today's ``layout="quadratic"``; "auto" and centering "auto" follow :func:`choose_axis`.
    ``head_dtype="float64"`` casts the float32 L to double for the head.
    """
    p = derive(mixture)
    outputs = _check_outputs(outputs)
    why = ""
    if compute == "auto" or centering == "auto":
        c_auto, m_auto, numbers = choose_axis(mixture)
        compute = c_auto if compute == "auto" else compute
        centering = m_auto if centering == "auto" else centering
        why = f" (cancellation ratio {numbers['cancellation_ratio']:.3g})"
    g = Graph(compute, opset)
    x = "X"
    if compute == "float64":
        x = g.cast(x, "float64", "input/cast")
        m = p.weights @ p.means if centering == "global" else np.zeros(p.d)
    else:
        m = p.centre(centering)
    rnd = f32 if compute == "float32" else (lambda a: np.asarray(a, np.float64))
    prec = 1.0 / p.variances  # (K, d)
    off = p.means - m
    with np.errstate(invalid="ignore"):
        e = p.consts - 0.5 * np.sum(prec * off * off, axis=1)
    xc = _centre(g, x, m, "quad")
    t = g.node("Gemm", [xc, g.const("quad/Q", rnd(prec * off).T), g.const("quad/e", e)], "quad/cross")  # (N, K)
    if p.ctype == "spherical":
        sq = g.reduce("ReduceSumSquare", xc, [1], "quad/sumsq", 1)  # (N, 1)
        P = -0.5 * rnd(prec[:, :1]).T  # (1, K)
    else:
        sq = g.node("Mul", [xc, xc], "quad/square")
        P = -0.5 * rnd(prec).T  # (d, K)
    L = g.node("Gemm", [sq, g.const("quad/P", P), t], "head/log_joint")
    if head_dtype == "float64" and compute == "float32":
        L = g.cast(L, "float64", "head/cast")
        g.set_dtype("float64")
    head(g, L, outputs, head_kind)
    return g.model(p.d, p.K, outputs, f"axis_quadratic centering={centering} compute={compute}{why} head={head_kind}")


def axis_broadcast(mixture, *, outputs=OUTPUTS, head_dtype: str = "float32", head_kind: str = "gmmnet",
                   opset: int = OPSET):
    """One neuron per axis: ((x − μ_hi − μ_lo)·w_k) over [N, K, d], then ReduceSumSquare.

    Spherical: the scale multiplies the [N, K] sum instead (D²_k = p_k ‖x − μ_k‖²).
    """
    p = derive(mixture)
    outputs = _check_outputs(outputs)
    g = Graph("float32", opset)
    hi, lo = split(p.means)
    xu = g.node("Unsqueeze", ["X", g.ints("axes_1", [1])], "layer0/unsqueeze")  # (N, 1, d)
    c = g.node("Sub", [xu, g.const("layer0/mean_hi", hi)], "layer0/center_hi")
    if np.any(lo):
        c = g.node("Sub", [c, g.const("layer0/mean_lo", lo)], "layer0/center_lo")
    if p.ctype == "spherical":
        d2 = g.reduce("ReduceSumSquare", c, [2], "head/sumsq", 0)
        d2 = g.node("Mul", [d2, g.const("layer0/precision", f32(1.0 / p.variances[:, 0]))], "head/d2")
    else:
        z = g.node("Mul", [c, g.const("layer0/scale", f32(1.0 / np.sqrt(p.variances)))], "layer0/linear")
        d2 = g.reduce("ReduceSumSquare", z, [2], "head/sumsq", 0)
    head(g, _log_joint_from_d2(g, d2, p.consts, head_dtype), outputs, head_kind)
    return g.model(p.d, p.K, outputs, f"axis_broadcast head={head_kind}/{head_dtype}")


# ---------------------------------------------------------------------------
# the recommended default per covariance type, and the candidates the benchmark compares


def default_graph(mixture, *, outputs=OUTPUTS, opset: int = OPSET):
    """The recommended default graph (benchmarks/RECOMMENDATION.md).

    full: :func:`full_triangular` (4 column blocks of ≥ 16 features, row chunks of ~1 MiB of
    products in a Scan, gmmnet's centering rule, float64 head).  tied: :func:`tied_expanded`
    in float64 after the float32 [d, d] product, or :func:`tied_offsets` with per-component
    centring when gmmnet's rule asks for it.  diag/spherical: :func:`axis_quadratic` (float32
    about the better centre unless the predicted error says float64).
    """
    ct = mixture.covariance_type
    if ct == "full":
        return full_triangular(mixture, outputs=outputs, opset=opset)
    if ct == "tied":
        centering = choose_centering(mixture)
        if centering == "component":
            return tied_offsets(mixture, outputs=outputs, centering="component", head_dtype="float64", opset=opset)
        return tied_expanded(mixture, outputs=outputs, centering=centering, compute="float64", opset=opset)
    return axis_quadratic(mixture, outputs=outputs, opset=opset)


BUILDERS = {
    "default": default_graph,
    "full_gemm": full_gemm,
    "full_triangular": full_triangular,
    "tied_offsets": tied_offsets,
    "tied_expanded": tied_expanded,
    "axis_quadratic": axis_quadratic,
    "axis_broadcast": axis_broadcast,
}

#: What the benchmark compares per covariance type: label → (builder, keyword arguments).
CANDIDATES = {
    "full": {
        "gemm": ("full_gemm", {}),
        "gemm_k": ("full_gemm", {"groups": "K", "head_dtype": "float64"}),
        "gemm_chunked": ("full_gemm", {"chunk": "auto", "head_dtype": "float64"}),
        "tri": ("full_triangular", {"chunk": None}),
        "tri_chunked": ("full_triangular", {}),
    },
    "tied": {
        "offsets": ("tied_offsets", {"head_dtype": "float64"}),
        "expanded32": ("tied_expanded", {"compute": "float32"}),
        "expanded64": ("tied_expanded", {"compute": "float64"}),
    },
    "diag": {
        "quad_auto": ("axis_quadratic", {}),
        "quad32": ("axis_quadratic", {"compute": "float32"}),
        "quad32_lse": ("axis_quadratic", {"compute": "float32", "head_kind": "lse"}),
        "quad64": ("axis_quadratic", {"compute": "float64"}),
        "broadcast": ("axis_broadcast", {}),
    },
}
CANDIDATES["spherical"] = CANDIDATES["diag"]
#: The candidate label that :func:`default_graph` builds, per covariance type (and its choice rules).
DEFAULT_LABEL = {"full": "tri_chunked", "tied": "expanded64", "diag": "quad_auto", "spherical": "quad_auto"}


def build(label: str, mixture, **kw):
    """Build candidate ``label`` of ``CANDIDATES[mixture.covariance_type]`` (``groups="K"`` = one per component)."""
    name, opts = CANDIDATES[mixture.covariance_type][label]
    opts = {k: (mixture.n_components if v == "K" else v) for k, v in {**opts, **kw}.items()}
    return BUILDERS[name](mixture, **opts)
