"""Read Abs/ReLU networks out of ONNX graphs, by pattern (never by node names or metadata).

The reader is a small abstract interpreter.  It walks the graph in topological order and
gives every tensor one of a few symbolic values, all relative to the graph input ``X``
(shape ``(N, d)``; the batch axis 0 is never mixed):

``_Const``
    a constant (initializer, ``Constant`` node, or any node whose inputs are all constant:
    folded with :class:`onnx.reference.ReferenceEvaluator`).
``_Lin``
    a tensor whose every entry is affine in the *source* of its level: ``W x + b`` over
    the input ``X`` (source −1), or over the activations of neuron level ℓ (source ℓ).
    Gemm, MatMul, Add, Sub, Mul/Div by constants, Neg, Concat, Reshape, Transpose,
    Slice, Gather, Split, ReduceSum… keep a value affine, so every chain of
    ``(Gemm | MatMul + Add)``, the centred forms ``(x − μ_hi − μ_lo) · W``, and the
    elementwise diag/spherical forms ``(x − μ) * λ^-½`` all collapse to rows ``(w_i, b_i)``.
``Abs`` / ``Relu`` of a ``_Lin``
    create *neurons*: the rows join the neuron bank of the next level, and the value
    becomes a selection of those neurons (a ``_Lin`` over that level).
``_Quad``
    entries of the form ``Σ_i M_ji a_i² + L_j·s + c_j`` where ``a_i`` are neurons of one
    level and ``s`` is that level's source.  ``Mul(a, a)``, ``Pow(a, 2)`` and
    ``ReduceSumSquare`` create it; squaring an affine value that is not already a
    neuron (skl2onnx's ``ReduceSumSquare(Gemm(X))`` or ``Mul(X, X)``) creates Abs
    neurons first (``|z|² = z²``).
``_Derived``
    anything computed from the *logits* by the head (log-sum-exp, softmax, argmax, exp…).

The *logits* are the ``_Quad`` of shape ``(K,)`` that a head op (ReduceLogSumExp, Softmax,
LogSoftmax, ArgMax, ReduceMax, TopK, …) reduces over the component axis.  From them the
reader takes the grouping of neurons into components and the constants ``c_k``, and
normalizes every group to ``logit_k = −½ Σ_{i∈g_k} a_i² + c_k``: a coefficient
``−s/2`` is folded into the neuron as ``√s (w, b)``, and a linear term (skl2onnx's
expanded ``x² − 2xμ + μ²`` for diag and spherical) is absorbed by completing the square.

``Max(q, c)`` of a ``_Quad`` with a constant c is read as q itself once q is shown never to go
below c (gmmnet's quadratic layout clamps its expanded D² at 0; see :func:`_clamp_floor`).

Any node that does not fit raises :class:`~gmmnet.errors.UnsupportedModelError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...errors import InputFileError, UnsupportedModelError

__all__ = ["Layer", "NetworkLayers", "read_layers"]

# ops that reduce the logits over the component axis: their consumer marks the head
_HEAD_REDUCERS = {
    "ReduceLogSumExp", "Softmax", "LogSoftmax", "ArgMax", "ArgMin", "ReduceMax", "ReduceMin", "TopK", "Hardmax",
}
# ops allowed downstream of the logits (they never feed neurons back)
_DERIVED_OK = _HEAD_REDUCERS | {
    "Add", "Sub", "Mul", "Div", "Neg", "Exp", "Log", "Sqrt", "Identity", "Cast", "Reshape", "Squeeze",
    "Unsqueeze", "Flatten", "ReduceSum", "ReduceMean", "Max", "Min", "Clip", "Equal", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "Where", "Not", "And", "Or", "Concat", "Abs", "Sigmoid", "Pow", "Gather",
    "Slice", "Transpose", "Sum", "Relu", "CastLike", "Expand", "Tile", "ReduceSumSquare", "Shape", "Size",
}
# element-wise ops applied to a non-logit _Quad: an output transform (e.g. exp(−D²)) of no use to recovery
_QUAD_TRANSFORMS = {"Exp", "Log", "Sqrt", "Sigmoid", "Tanh", "Softplus"}
_PASS = {"Identity", "Dropout"}

#: relative tolerance of the completed square (skl2onnx diag/spherical) in float32 / float64 graphs
_SQUARE_TOL = {"float32": 1e-4, "float64": 1e-9}


# ---------------------------------------------------------------------------
# results


@dataclass
class Layer:
    """One level of neurons: rows ``W`` (float64, ``(n, n_in)``), biases ``b`` and activations.

    ``n_in`` is ``n_features`` for the first level, the previous level's neuron count after.
    ``activations[i]`` is ``"abs"`` or ``"relu"``; ``nodes[i]`` names the node that made neuron i.
    """

    W: np.ndarray
    b: np.ndarray
    activations: list[str]
    nodes: list[str] = field(default_factory=list)

    @property
    def activation(self) -> str:
        kinds = set(self.activations)
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def n_neurons(self) -> int:
        return int(self.W.shape[0])


@dataclass
class NetworkLayers:
    """What the reader found.

    ``layers[-1]`` is the level the head (if any) scores.  When the graph has a mixture head
    (``logit_k = −½ Σ_{i∈g_k} a_i² + c_k``), ``groups`` lists each component's neuron indices
    into ``layers[-1]`` and ``head`` holds the ``c_k``; the neurons were rescaled (and, for
    skl2onnx's expanded diag/spherical forms, their biases completed) so that the head's
    coefficient is exactly −½.  Without a head both are None.
    """

    layers: list[Layer]
    n_features: int
    groups: list[list[int]] | None = None
    head: np.ndarray | None = None
    head_kind: str | None = None  # "log_joint" | "squared_distance" | None
    dtype: str = "float32"
    input_name: str = "X"
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: heads of levels below the top, raw: level → (M, L, c) with logit_k = Σ_i M_ki a_i² + L_k·s + c_k
    #: (read by gmmnet.formats.onnx.deep to give lower levels of a hierarchy back)
    level_heads: dict[int, tuple[Any, Any, np.ndarray]] = field(default_factory=dict)

    @property
    def W(self) -> np.ndarray:
        return self.layers[-1].W

    @property
    def b(self) -> np.ndarray:
        return self.layers[-1].b

    @property
    def activation(self) -> str:
        return self.layers[-1].activation


# ---------------------------------------------------------------------------
# symbolic values


class _Const:
    __slots__ = ("arr",)

    def __init__(self, arr):
        self.arr = np.asarray(arr)


class _Derived:
    __slots__ = ()


_DERIVED = _Derived()


class _Rows:
    """A data tensor of shape (N, *shape) whose prod(shape) entries are rows of symbolic arrays."""

    kind = "rows"
    fields: tuple[str, ...] = ()
    additive = ""

    def __init__(self, shape, **arrays):
        self.shape = tuple(int(s) for s in shape)
        for k in self.fields:
            a = arrays[k]
            # columns over a neuron level are sparse (a K·d-neuron bank would not fit densely)
            setattr(self, k, a.astype(np.float64).tocsr() if sp.issparse(a) else np.asarray(a, dtype=np.float64))

    @property
    def rows(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _new(self, shape, **arrays):
        raise NotImplementedError

    def arrays(self) -> dict:
        return {k: getattr(self, k) for k in self.fields}

    def take(self, idx: np.ndarray) -> "_Rows":
        flat = np.asarray(idx, dtype=np.int64).ravel()
        return self._new(idx.shape, **{k: v[flat] for k, v in self.arrays().items()})

    def scale(self, v: np.ndarray) -> "_Rows":
        v = np.asarray(v, dtype=np.float64).ravel()
        out = {}
        for k, a in self.arrays().items():
            if sp.issparse(a):
                out[k] = sp.diags_array(v) @ a
            else:
                out[k] = a * (v[:, None] if a.ndim == 2 else v)
        return self._new(self.shape, **out)

    def add_const(self, v: np.ndarray) -> "_Rows":
        arrays = self.arrays()
        arrays[self.additive] = arrays[self.additive] + np.asarray(v, dtype=np.float64).ravel()
        return self._new(self.shape, **arrays)

    def plus(self, other: "_Rows") -> "_Rows":
        a, o = self.arrays(), other.arrays()
        out = {}
        for k in self.fields:
            x, y = a[k], o[k]
            if x.ndim == 2 and x.shape[1] != y.shape[1]:
                n = max(x.shape[1], y.shape[1])
                x, y = _pad(x, n), _pad(y, n)
            if sp.issparse(x) != sp.issparse(y):
                x, y = _csr(x), _csr(y)
            out[k] = x + y
        return self._new(self.shape, **out)

    def reduce_sum(self, axes: list[int], keepdims: bool) -> "_Rows":
        shape = self.shape
        out = {}
        T = None
        for k, a in self.arrays().items():
            if sp.issparse(a):
                if T is None:
                    T = _sum_rows(shape, axes)
                out[k] = T @ a
                continue
            trail = a.shape[1:]
            r = a.reshape(shape + trail).sum(axis=tuple(axes), keepdims=keepdims)
            out[k] = r.reshape((-1,) + trail)
        new_shape = tuple(1 if i in axes else s for i, s in enumerate(shape)) if keepdims else tuple(
            s for i, s in enumerate(shape) if i not in axes
        )
        return self._new(new_shape, **out)

    def matmul(self, B: np.ndarray) -> "_Rows":
        """Right-multiply along the last axis by constant B (shape (..., m, p))."""
        shape = self.shape
        if not shape or B.ndim < 2 or B.shape[-2] != shape[-1]:
            raise _Misfit(f"cannot multiply a tensor of shape (N, {', '.join(map(str, shape))}) by a constant of shape {B.shape}")
        if B.ndim > 2 and B.ndim - 2 > len(shape) - 2:
            raise _Misfit("the constant factor would broadcast over the batch axis")
        B = B.astype(np.float64)
        out = {}
        new_lead = None
        T = None
        for k, a in self.arrays().items():
            if sp.issparse(a):
                if T is None:
                    T, new_lead = _matmul_rows(shape, B)
                out[k] = T @ a
                continue
            trail = a.shape[1:]
            t = int(np.prod(trail, dtype=np.int64)) if trail else 1
            f = a.reshape(shape + (t,))
            if B.ndim == 2 and len(shape) == 1:
                # rows of the result: Bᵀ times the rows (plain BLAS; the graph input's identity is skipped)
                r = B.T if f.shape[0] == f.shape[1] and _is_eye(f) else B.T @ f
            elif B.ndim == 2:
                r = np.einsum("...it,ij->...jt", f, B, optimize=True)
            else:  # batched: data (..., rows, m) @ B (..., m, p); the row axis does not broadcast
                r = np.einsum("...rit,...ij->...rjt", f, B)
            new_lead = r.shape[:-1]
            out[k] = r.reshape((-1,) + trail)
        return self._new(new_lead, **out)


class _Lin(_Rows):
    """Rows W s + b over source ``src`` (−1: the graph input; ℓ ≥ 0: activations of level ℓ)."""

    kind = "affine"
    fields = ("W", "b")
    additive = "b"

    def __init__(self, src: int, shape, W, b):
        self.src = src
        super().__init__(shape, W=W, b=b)

    def _new(self, shape, **arrays):
        return _Lin(self.src, shape, arrays["W"], arrays["b"])


class _Quad(_Rows):
    """Rows Σ_i M_i a_i² + L s + c over the neurons a of ``level`` (s: that level's source)."""

    kind = "quadratic"
    fields = ("M", "L", "c")
    additive = "c"

    def __init__(self, level: int, shape, M, L, c):
        self.level = level
        super().__init__(shape, M=M, L=L, c=c)

    def _new(self, shape, **arrays):
        return _Quad(self.level, shape, arrays["M"], arrays["L"], arrays["c"])


class _Misfit(Exception):
    """Raised inside the interpreter; turned into UnsupportedModelError naming the node."""


def _is_eye(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[0] == a.shape[1] and bool(np.array_equal(a, np.eye(a.shape[0])))


def _csr(a) -> sp.csr_array:
    return a.tocsr() if sp.issparse(a) else sp.csr_array(np.asarray(a, dtype=np.float64))


def _dense(a) -> np.ndarray:
    return a.toarray() if sp.issparse(a) else np.asarray(a)


def _sum_rows(shape: tuple[int, ...], axes: list[int]) -> sp.csr_array:
    """Sparse (out_rows, rows) matrix that sums the rows of a (shape)-indexed table over `axes`."""
    rows = int(np.prod(shape, dtype=np.int64))
    coords = np.unravel_index(np.arange(rows), shape)
    kept = [i for i in range(len(shape)) if i not in axes]
    if kept:
        out = np.ravel_multi_index([coords[i] for i in kept], [shape[i] for i in kept])
        n_out = int(np.prod([shape[i] for i in kept], dtype=np.int64))
    else:
        out, n_out = np.zeros(rows, dtype=np.int64), 1
    return sp.csr_array((np.ones(rows), (out, np.arange(rows))), shape=(n_out, rows))


def _matmul_rows(shape: tuple[int, ...], B: np.ndarray):
    """Sparse (out_rows, rows) matrix of ``table(shape) @ B`` acting on rows, and the result's shape."""
    rows = int(np.prod(shape, dtype=np.int64))
    if B.ndim == 2:
        lead = int(np.prod(shape[:-1], dtype=np.int64))
        T = sp.kron(sp.eye_array(lead), sp.csr_array(B.T), format="csr")
        return T, tuple(shape[:-1]) + (B.shape[1],)
    if len(shape) < 2:
        raise _Misfit(f"cannot multiply a tensor of shape (N, {shape[0]}) by a batched constant of shape {B.shape}")
    r, p = shape[-2], B.shape[-1]
    lead = tuple(np.broadcast_shapes(shape[:-2], B.shape[:-2]))
    full = lead + (r, shape[-1], p)
    src = np.broadcast_to(np.arange(rows).reshape(shape)[..., None], full)
    vals = np.broadcast_to(B[..., None, :, :], full)
    n_out = int(np.prod(lead + (r, p), dtype=np.int64))
    dst = np.broadcast_to(np.arange(n_out).reshape(lead + (r, 1, p)), full)
    T = sp.coo_array((vals.ravel(), (dst.ravel(), src.ravel())), shape=(n_out, rows)).tocsr()
    return T, lead + (r, p)


def _pad(a, n: int):
    if a.shape[1] == n:
        return a
    if sp.issparse(a):
        a = a.tocsr()
        return sp.csr_array((a.data, a.indices, a.indptr), shape=(a.shape[0], n))
    out = np.zeros((a.shape[0], n))
    out[:, : a.shape[1]] = a
    return out


# ---------------------------------------------------------------------------
# the interpreter


class _Bank:
    def __init__(self, src: int):
        self.src = src
        self.W: list[np.ndarray] = []
        self.b: list[float] = []
        self.act: list[str] = []
        self.nodes: list[str] = []

    def __len__(self):
        return len(self.b)


class _Reader:
    def __init__(self, model):
        import onnx

        self.onnx = onnx
        self.model = model
        self.graph = model.graph
        self.values: dict[str, Any] = {}
        self.banks: list[_Bank] = []
        self.logits: list[tuple[_Quad, str]] = []
        self.notes: list[str] = []
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)

    # -- helpers -------------------------------------------------------------
    def src_size(self, src: int) -> int:
        return self.n_features if src < 0 else len(self.banks[src])

    def bank(self, level: int) -> _Bank:
        while len(self.banks) <= level:
            self.banks.append(_Bank(len(self.banks) - 1))
        return self.banks[level]

    def fresh(self, v):
        """Pad a symbolic value's neuron/source columns to the current bank sizes."""
        if isinstance(v, _Lin):
            return _Lin(v.src, v.shape, _pad(v.W, self.src_size(v.src)), v.b)
        if isinstance(v, _Quad):
            return _Quad(v.level, v.shape, _pad(v.M, len(self.bank(v.level))), _pad(v.L, self.src_size(v.level - 1)), v.c)
        return v

    def promote(self, v, level: int) -> _Quad:
        """A _Lin over source level−1 (or a _Quad of `level`) as a _Quad of `level`."""
        if isinstance(v, _Quad):
            if v.level != level:
                raise _Misfit("combines squared neurons of different layers")
            return self.fresh(v)
        if isinstance(v, _Lin):
            if v.src != level - 1:
                raise _Misfit("adds a term that is linear in activations to a sum of squares")
            v = self.fresh(v)
            return _Quad(level, v.shape, sp.csr_array((v.rows, len(self.bank(level)))), v.W, v.b)
        raise _Misfit("unexpected operand")

    def unify(self, vals: list) -> list:
        """Bring data operands to one kind (all _Lin over one source, or all _Quad of one level)."""
        quads = [v for v in vals if isinstance(v, _Quad)]
        if quads:
            level = quads[0].level
            return [self.promote(v, level) for v in vals]
        srcs = {v.src for v in vals}
        if len(srcs) != 1:
            raise _Misfit("combines affine values of different layers")
        return [self.fresh(v) for v in vals]

    def make_neurons(self, v: _Lin, act: str, node_name: str) -> _Lin:
        v = self.fresh(v)
        level = v.src + 1
        bank = self.bank(level)
        start = len(bank)
        bank.W.append(_dense(v.W))  # a block of rows (values are never modified in place)
        bank.b.extend(float(c) for c in v.b)
        bank.act.extend([act] * v.rows)
        bank.nodes.extend([node_name] * v.rows)
        n = len(bank)
        sel = sp.csr_array((np.ones(v.rows), (np.arange(v.rows), start + np.arange(v.rows))), shape=(v.rows, n))
        return _Lin(level, v.shape, sel, np.zeros(v.rows))

    def square(self, v, node_name: str) -> _Quad:
        if isinstance(v, _Quad):
            raise _Misfit("squares a value that is already quadratic")
        v = self.fresh(v)
        if v.src >= 0 and np.all(v.b == 0):
            Wc = _csr(v.W)
            Wc.eliminate_zeros()
            if np.all(np.diff(Wc.indptr) == 1):
                # a multiple of one neuron per entry: square those neurons ((c·a)² = c²a²)
                level = v.src
                M = Wc.multiply(Wc)
                return _Quad(level, v.shape, M, sp.csr_array((v.rows, self.src_size(level - 1))), np.zeros(v.rows))
        # a general affine value: |z|² = z², so it becomes Abs neurons first
        sel = self.make_neurons(v, "abs", node_name)
        return self.square(sel, node_name)

    def broadcast(self, shapes: list[tuple[int, ...]], data_flags: list[bool]):
        """Broadcast full shapes (with batch); returns the result's non-batch shape or raises."""
        try:
            full = np.broadcast_shapes(*shapes)
        except ValueError:
            raise _Misfit(f"shapes {shapes} do not broadcast") from None
        data_rank = max(len(s) for s, f in zip(shapes, data_flags) if f)
        if len(full) != data_rank or full[0] != 1:
            raise _Misfit("a constant operand would broadcast over the batch axis")
        return full

    def data_index(self, v: _Rows, full) -> np.ndarray:
        idx = np.arange(v.rows).reshape((1,) + v.shape)
        return np.broadcast_to(idx, full)[0]

    def const_bcast(self, c: np.ndarray, full) -> np.ndarray:
        return np.broadcast_to(c.astype(np.float64), full)[0].ravel()

    def axes_of(self, node, v, attr="axes", input_index=1):
        axes = None
        for a in node.attribute:
            if a.name == attr:
                axes = list(self.onnx.helper.get_attribute_value(a))
        if axes is None and len(node.input) > input_index and node.input[input_index]:
            axes = [int(x) for x in np.asarray(self.const(node.input[input_index])).ravel()]
        return axes

    def const(self, name: str) -> np.ndarray:
        v = self.values.get(name)
        if not isinstance(v, _Const):
            raise _Misfit(f"input {name!r} must be a constant")
        return v.arr

    def attr(self, node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                return self.onnx.helper.get_attribute_value(a)
        return default

    # -- graph --------------------------------------------------------------
    def run(self) -> NetworkLayers:
        onnx = self.onnx
        g = self.graph
        if g.node and any(n.domain not in ("", "ai.onnx") for n in g.node):
            bad = next(n for n in g.node if n.domain not in ("", "ai.onnx"))
            raise UnsupportedModelError(
                f"node {bad.op_type} {bad.name!r} is from domain {bad.domain!r}: only standard ONNX ops are read"
            )
        for init in g.initializer:
            self.values[init.name] = _Const(onnx.numpy_helper.to_array(init))
        for sparse in g.sparse_initializer:
            self.values[sparse.values.name] = _Const(onnx.numpy_helper.to_array(onnx.helper.make_tensor(
                sparse.values.name, sparse.values.data_type, list(sparse.dims), np.zeros(int(np.prod(sparse.dims))))))
        inputs = [i for i in g.input if i.name not in self.values]
        if len(inputs) != 1:
            raise UnsupportedModelError(f"expected one data input, found {len(inputs)}: {[i.name for i in inputs]}")
        x = inputs[0]
        self.input_name = x.name
        tt = x.type.tensor_type
        elem = tt.elem_type
        self.dtype = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64"}.get(elem)
        if self.dtype is None:
            raise UnsupportedModelError(
                f"input {x.name!r} has element type {onnx.TensorProto.DataType.Name(elem)}; expected float or double"
            )
        dims = list(tt.shape.dim)
        if len(dims) != 2:
            raise UnsupportedModelError(f"input {x.name!r} must be 2-D (N, n_features), has rank {len(dims)}")
        d = dims[1].dim_value if dims[1].HasField("dim_value") else self._infer_features(x.name)
        if not d:
            raise UnsupportedModelError(f"cannot tell the number of features of input {x.name!r}")
        self.n_features = int(d)
        self.values[x.name] = _Lin(-1, (self.n_features,), np.eye(self.n_features), np.zeros(self.n_features))

        for i, node in enumerate(g.node):
            try:
                self.step(node)
            except _Misfit as exc:
                raise UnsupportedModelError(_name(node, i) + f" does not fit an Abs/ReLU network: {exc}") from None
            except UnsupportedModelError:
                raise
            except Exception as exc:  # a malformed graph: name the node all the same
                raise UnsupportedModelError(_name(node, i) + f" could not be read: {type(exc).__name__}: {exc}") from None
        return self.finish()

    def _infer_features(self, name: str) -> int | None:
        for node in self.graph.node:
            if node.input and node.input[0] == name and node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
                v = self.values.get(node.input[1])
                if isinstance(v, _Const) and v.arr.ndim == 2:
                    trans = node.op_type == "Gemm" and self.attr(node, "transB", 0)
                    return int(v.arr.shape[1] if trans else v.arr.shape[0])
        return None

    def fold(self, node) -> list[np.ndarray]:
        from onnx.reference import ReferenceEvaluator

        onnx = self.onnx
        ins = [n for n in node.input if n]
        feeds = {n: self.values[n].arr for n in ins}
        vi = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(feeds[n].dtype), feeds[n].shape)
              for n in ins]
        outs = [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o]
        graph = onnx.helper.make_graph([node], "fold", vi, outs)
        m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", self.opset)])
        return ReferenceEvaluator(m).run(None, feeds)

    def step(self, node) -> None:
        op = node.op_type
        ins = [self.values.get(n) if n else None for n in node.input]
        for n, v in zip(node.input, ins):
            if n and v is None:
                raise _Misfit(f"input {n!r} is not produced by any earlier node")
        outs = list(node.output)

        if op == "Constant":
            self.values[outs[0]] = _Const(self.onnx.numpy_helper.to_array(self.attr(node, "value"))
                                          if self.attr(node, "value") is not None else self.fold(node)[0])
            return
        present = [v for v in ins if v is not None]
        if present and all(isinstance(v, _Const) for v in present):
            for name, val in zip([o for o in outs if o], self.fold(node)):
                self.values[name] = _Const(val)
            return

        # downstream of the logits
        if any(isinstance(v, _Derived) for v in ins):
            if op not in _DERIVED_OK:
                raise _Misfit("is not a head operation")
            for o in outs:
                self.values[o] = _DERIVED
            return

        if op in _HEAD_REDUCERS:
            v = ins[0]
            if not isinstance(v, _Quad):
                raise _Misfit(f"{op} expects component scores (a sum of squared neurons), got an {v.kind} value"
                              if isinstance(v, _Rows) else f"{op} has no data input")
            axis = self.axes_of(node, v, "axes") if op.startswith("Reduce") else [self.attr(node, "axis", -1 if op in ("Softmax", "LogSoftmax", "Hardmax", "TopK") else 0)]
            if axis is None:
                axis = list(range(1, len(v.shape) + 1))
            rank = len(v.shape) + 1
            axis = sorted(a % rank for a in axis)
            if len(v.shape) != 1 or axis != [1]:
                raise _Misfit(f"{op} must reduce component scores of shape (N, K) over axis 1")
            self.logits.append((self.fresh(v), node.name or outs[0]))
            for o in outs:
                self.values[o] = _DERIVED
            return

        handler = getattr(self, "op_" + op, None)
        if handler is None:
            data = next((v for v in ins if isinstance(v, _Rows)), None)
            if isinstance(data, _Quad) and op in _QUAD_TRANSFORMS:
                self.notes.append(f"{op} {node.name!r} transforms a sum of squares (an intensity output); ignored")
                for o in outs:
                    self.values[o] = _DERIVED
                return
            raise _Misfit("this op is not part of the Abs/ReLU network pattern")
        res = handler(node, ins)
        if not isinstance(res, (list, tuple)):
            res = [res]
        for name, val in zip(outs, res):
            if name:
                self.values[name] = val

    # -- ops ----------------------------------------------------------------
    def _data(self, ins, i=0) -> _Rows:
        v = ins[i]
        if not isinstance(v, _Rows):
            raise _Misfit(f"input {i} must be data derived from the network input")
        return self.fresh(v)

    def op_Identity(self, node, ins):
        return ins[0]

    op_Dropout = op_Identity

    def op_Cast(self, node, ins):
        import onnx

        to = self.attr(node, "to")
        if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
            raise _Misfit("casts network values to a non-float type")
        return ins[0]

    op_CastLike = op_Cast

    def op_Abs(self, node, ins):
        v = self._data(ins)
        if isinstance(v, _Quad):
            raise _Misfit("Abs of a sum of squares")
        return self.make_neurons(v, "abs", node.name or node.output[0])

    def op_Relu(self, node, ins):
        v = self._data(ins)
        if isinstance(v, _Quad):
            raise _Misfit("Relu of a sum of squares")
        return self.make_neurons(v, "relu", node.name or node.output[0])

    def op_Neg(self, node, ins):
        v = self._data(ins)
        return v.scale(np.full(v.rows, -1.0))

    def _binary(self, node, ins, kind: str):
        a, b = ins[0], ins[1]
        if isinstance(a, _Const) and isinstance(b, _Rows):
            if kind == "sub":
                return self._binary(node, [b, a], "rsub")
            if kind == "div":
                raise _Misfit("divides a constant by network values")
            a, b = b, a
        if isinstance(a, _Rows) and isinstance(b, _Const):
            a = self.fresh(a)
            full = self.broadcast([(1,) + a.shape, b.arr.shape], [True, False])
            v = a.take(self.data_index(a, full))
            c = self.const_bcast(b.arr, full)
            if kind == "add":
                return v.add_const(c)
            if kind == "sub":
                return v.add_const(-c)
            if kind == "rsub":
                return v.scale(np.full(v.rows, -1.0)).add_const(c)
            if kind == "mul":
                return v.scale(c)
            if kind == "div":
                return v.scale(1.0 / c)
        if isinstance(a, _Rows) and isinstance(b, _Rows):
            if kind == "mul":
                if node.input[0] == node.input[1] or _same(a, b):
                    return self.square(a, node.name or node.output[0])
                raise _Misfit("multiplies two different network values")
            if kind == "div":
                raise _Misfit("divides by network values")
            a, b = self.unify([a, b])
            full = self.broadcast([(1,) + a.shape, (1,) + b.shape], [True, True])
            va, vb = a.take(self.data_index(a, full)), b.take(self.data_index(b, full))
            if kind == "sub":
                vb = vb.scale(np.full(vb.rows, -1.0))
            return va.plus(vb)
        raise _Misfit("unexpected operands")

    def op_Add(self, node, ins):
        return self._binary(node, ins, "add")

    def op_Sub(self, node, ins):
        return self._binary(node, ins, "sub")

    def op_Mul(self, node, ins):
        return self._binary(node, ins, "mul")

    def op_Div(self, node, ins):
        return self._binary(node, ins, "div")

    def op_Sum(self, node, ins):
        acc = ins[0]
        for v in ins[1:]:
            acc = self._binary(node, [acc, v], "add")
        return acc

    def op_Max(self, node, ins):
        """Max(sum of squares, constant): a clamp that changes nothing where the form never goes below it.

        gmmnet's quadratic layout clamps its expanded D² at 0 (``Max(D², 0)``, see
        :func:`_clamp_floor`); the value is read as the form itself once that is checked.
        """
        data = [v for v in ins if isinstance(v, _Rows)]
        consts = [v for v in ins if isinstance(v, _Const)]
        if len(data) != 1 or len(consts) != len(ins) - 1 or not isinstance(data[0], _Quad):
            raise _Misfit("only Max(sum of squares, constant), a clamp, is read")
        q = self.fresh(data[0])
        floor = np.concatenate([c.arr.astype(np.float64).ravel() for c in consts])
        if floor.size == 0 or np.ptp(floor) != 0:
            raise _Misfit("Max clamps at a constant that differs between entries")
        _clamp_floor(q, self.banks[q.level], self.src_size(q.level - 1), float(floor[0]), self.dtype)
        self.notes.append(f"Max {node.name!r} clamps a sum of squares at {floor[0]:g}, which it never goes below; "
                          "read as the sum itself")
        return q

    def op_Pow(self, node, ins):
        v = self._data(ins)
        if not isinstance(ins[1], _Const) or not np.all(ins[1].arr == 2):
            raise _Misfit("only Pow(x, 2) is read")
        return self.square(v, node.name or node.output[0])

    def op_Gemm(self, node, ins):
        a = self._data(ins)
        if self.attr(node, "transA", 0):
            raise _Misfit("Gemm with transA on network values")
        if len(a.shape) != 1:
            raise _Misfit("Gemm needs a 2-D input")
        B = self.const(node.input[1]).astype(np.float64)
        if self.attr(node, "transB", 0):
            B = B.T
        alpha, beta = float(self.attr(node, "alpha", 1.0)), float(self.attr(node, "beta", 1.0))
        y = a.matmul(B)
        if alpha != 1.0:
            y = y.scale(np.full(y.rows, alpha))
        if len(node.input) > 2 and node.input[2] and isinstance(ins[2], _Rows):  # C from the data: Y = αAB + βC
            c = ins[2] if beta == 1.0 else self._data(ins, 2).scale(np.full(ins[2].rows, beta))
            return self._binary(node, [y, c], "add")
        if len(node.input) > 2 and node.input[2]:
            C = self.const(node.input[2]).astype(np.float64)
            full = self.broadcast([(1,) + y.shape, C.shape if C.ndim == 2 else (1,) * (2 - C.ndim) + C.shape], [True, False])
            y = y.add_const(beta * self.const_bcast(C.reshape(C.shape if C.ndim == 2 else (1,) * (2 - C.ndim) + C.shape), full))
        return y

    def op_MatMul(self, node, ins):
        if isinstance(ins[0], _Const):
            raise _Misfit("MatMul with a constant on the left mixes the batch axis")
        a = self._data(ins)
        B = self.const(node.input[1])
        if B.ndim == 1:
            return a.matmul(B.reshape(-1, 1)).reduce_sum([len(a.shape) - 1], keepdims=False)
        return a.matmul(B)

    def op_Concat(self, node, ins):
        axis = int(self.attr(node, "axis"))
        if any(not isinstance(v, _Rows) for v in ins):
            raise _Misfit("concatenates constants with network values")
        vals = self.unify(list(ins))
        rank = len(vals[0].shape) + 1
        axis %= rank
        if axis == 0:
            raise _Misfit("concatenates along the batch axis")
        # stack all rows into one table, then index it
        fields = vals[0].fields
        stacked = {}
        for k in fields:
            parts = [getattr(v, k) for v in vals]
            if any(sp.issparse(p) for p in parts):
                stacked[k] = sp.vstack([_csr(p) for p in parts], format="csr")
            else:
                stacked[k] = np.concatenate(parts, axis=0)
        idx, off = [], 0
        for v in vals:
            idx.append(np.arange(v.rows).reshape(v.shape) + off)
            off += v.rows
        index = np.concatenate(idx, axis=axis - 1)
        table = vals[0]._new((off,), **stacked)
        return table.take(index)

    def _reshape_to(self, v: _Rows, target: tuple[int, ...]) -> _Rows:
        return v._new(target, **v.arrays())

    def op_Reshape(self, node, ins):
        v = self._data(ins)
        shape = [int(s) for s in self.const(node.input[1]).ravel()]
        if not shape:
            raise _Misfit("reshapes to a scalar")
        allowzero = self.attr(node, "allowzero", 0)
        rest = shape[1:]
        for i, s in enumerate(rest):
            if s == 0 and not allowzero:
                rest[i] = v.shape[i] if i < len(v.shape) else 0
        if shape[0] in (0, -1) or shape[0] > 0:
            if -1 in rest:
                known = int(np.prod([s for s in rest if s != -1], dtype=np.int64)) or 1
                rest[rest.index(-1)] = v.rows // known
            if int(np.prod(rest, dtype=np.int64)) != v.rows:
                raise _Misfit(f"reshape to {shape} would mix the batch axis")
            return self._reshape_to(v, tuple(rest))
        raise _Misfit(f"reshape to {shape}")

    def op_Flatten(self, node, ins):
        v = self._data(ins)
        if int(self.attr(node, "axis", 1)) != 1:
            raise _Misfit("Flatten must keep the batch axis (axis=1)")
        return self._reshape_to(v, (v.rows,))

    def op_Unsqueeze(self, node, ins):
        v = self._data(ins)
        axes = self.axes_of(node, v)
        rank = len(v.shape) + 1 + len(axes)
        axes = sorted(a % rank for a in axes)
        if 0 in axes:
            raise _Misfit("unsqueezes before the batch axis")
        full = [None] + list(v.shape)
        for a in axes:
            full.insert(a, 1)
        return self._reshape_to(v, tuple(full[1:]))

    def op_Squeeze(self, node, ins):
        v = self._data(ins)
        axes = self.axes_of(node, v)
        rank = len(v.shape) + 1
        if axes is None:
            axes = [i + 1 for i, s in enumerate(v.shape) if s == 1]
        axes = {a % rank for a in axes}
        if 0 in axes:
            raise _Misfit("squeezes the batch axis")
        return self._reshape_to(v, tuple(s for i, s in enumerate(v.shape) if i + 1 not in axes))

    def op_Transpose(self, node, ins):
        v = self._data(ins)
        perm = self.attr(node, "perm")
        rank = len(v.shape) + 1
        perm = list(perm) if perm is not None else list(range(rank))[::-1]
        if perm[0] != 0:
            raise _Misfit("transposes the batch axis")
        idx = np.arange(v.rows).reshape(v.shape).transpose([p - 1 for p in perm[1:]])
        return v.take(idx)

    def op_Slice(self, node, ins):
        v = self._data(ins)
        starts = self.const(node.input[1]).ravel()
        ends = self.const(node.input[2]).ravel()
        rank = len(v.shape) + 1
        axes = self.const(node.input[3]).ravel() if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
        steps = self.const(node.input[4]).ravel() if len(node.input) > 4 and node.input[4] else np.ones(len(starts), int)
        idx = np.arange(v.rows).reshape(v.shape)
        sl = [slice(None)] * len(v.shape)
        for s, e, a, st in zip(starts, ends, axes, steps):
            a = int(a) % rank
            if a == 0:
                raise _Misfit("slices the batch axis")
            big = np.iinfo(np.int64).max
            sl[a - 1] = slice(int(s), None if int(e) >= big // 2 else int(e), int(st))
        return v.take(idx[tuple(sl)])

    def op_Gather(self, node, ins):
        v = self._data(ins)
        ind = self.const(node.input[1]).astype(np.int64)
        axis = int(self.attr(node, "axis", 0)) % (len(v.shape) + 1)
        if axis == 0:
            raise _Misfit("gathers along the batch axis")
        idx = np.take(np.arange(v.rows).reshape(v.shape), ind, axis=axis - 1)
        return v.take(idx)

    def op_Split(self, node, ins):
        v = self._data(ins)
        axis = int(self.attr(node, "axis", 0)) % (len(v.shape) + 1)
        if axis == 0:
            raise _Misfit("splits the batch axis")
        n = len(node.output)
        if len(node.input) > 1 and node.input[1]:
            sizes = [int(s) for s in self.const(node.input[1]).ravel()]
        elif self.attr(node, "split") is not None:
            sizes = list(self.attr(node, "split"))
        else:
            total = v.shape[axis - 1]
            step = -(-total // n)
            sizes = [min(step, total - i * step) for i in range(n)]
        idx = np.arange(v.rows).reshape(v.shape)
        parts = np.split(idx, np.cumsum(sizes)[:-1], axis=axis - 1)
        return [v.take(p) for p in parts]

    def _reduce(self, node, ins, square: bool, mean: bool = False):
        v = self._data(ins)
        axes = self.axes_of(node, v)
        rank = len(v.shape) + 1
        if not axes:
            if self.attr(node, "noop_with_empty_axes", 0):
                return self.square(v, node.name) if square else v
            axes = list(range(rank))
        axes = sorted({a % rank for a in axes})
        if 0 in axes:
            raise _Misfit("reduces over the batch axis")
        if square:
            v = self.square(v, node.name or node.output[0])
        keep = bool(self.attr(node, "keepdims", 1))
        out = v.reduce_sum([a - 1 for a in axes], keep)
        if mean:
            count = int(np.prod([v.shape[a - 1] for a in axes]))
            out = out.scale(np.full(out.rows, 1.0 / count))
        return out

    def op_ReduceSum(self, node, ins):
        return self._reduce(node, ins, square=False)

    def op_ReduceSumSquare(self, node, ins):
        return self._reduce(node, ins, square=True)

    def op_ReduceMean(self, node, ins):
        return self._reduce(node, ins, square=False, mean=True)

    # -- the result -----------------------------------------------------------
    def bank_layers(self) -> list[Layer]:
        """The neuron banks as read, one Layer per level (rows over the level below, or X)."""
        layers = []
        for lvl, bank in enumerate(self.banks):
            n_in = self.src_size(lvl - 1)
            W = (np.concatenate([_pad(w, n_in) for w in bank.W]) if bank.W else np.zeros((0, n_in))).reshape(len(bank), n_in)
            layers.append(Layer(W=W, b=np.array(bank.b, dtype=np.float64), activations=list(bank.act), nodes=list(bank.nodes)))
        return layers

    def finish(self) -> NetworkLayers:
        layers = self.bank_layers()
        if not layers:
            raise UnsupportedModelError("the graph has no Abs or ReLU neurons (no Gemm/MatMul followed by Abs, Relu or a square)")
        out_names = [o.name for o in self.graph.output]
        res = NetworkLayers(layers=layers, n_features=self.n_features, dtype=self.dtype, input_name=self.input_name,
                            outputs=out_names, notes=list(self.notes))

        logits = self.logits
        if not logits:
            # an output that is itself a sum of squares: log-joint (coefficients < 0) or squared distances (> 0)
            cands = [self.fresh(self.values[o]) for o in out_names if isinstance(self.values.get(o), _Quad)]
            cands = [q for q in cands if len(q.shape) == 1]
            if cands:
                logits = [(cands[0], out_names[0])]
        if not logits:
            if len(layers) > 1:
                res.notes.append(f"{len(layers)} neuron levels and no mixture head")
            return res
        # the deepest level's head is the one read (a hierarchy may also score its lower levels)
        top = max(v.level for v, _ in logits)
        lower = sorted({v.level for v, _ in logits if v.level != top})
        if lower:
            res.notes.append(f"heads on levels {lower} ignored; the head of level {top} is read")
        for v, _ in logits:
            if v.level != top and v.level not in res.level_heads:
                f = self.fresh(v)
                res.level_heads[v.level] = (f.M, f.L, f.c)
        logits = [(v, name) for v, name in logits if v.level == top]
        q = self.fresh(logits[0][0])
        for other, name in logits[1:]:
            o = self.fresh(other)
            if o.M.shape != q.M.shape or not (_close(o.M, q.M) and _close(o.L, q.L) and _close(o.c, q.c)):
                raise UnsupportedModelError(f"head node {name!r} reduces different component scores than {logits[0][1]!r}")
        return _normalize_head(res, q, self.dtype)


def _clamp_floor(q: "_Quad", bank: "_Bank", n_in: int, floor: float, dtype: str) -> None:
    """Raise _Misfit unless every entry of ``q`` is ≥ ``floor`` for every input (so Max(q, floor) = q).

    An entry Σ_i M_i a_i² + lᵀs + c with Abs neurons a_i = |w_iᵀs + b_i| and M ≥ 0 is the
    quadratic sᵀAs + gᵀs + h with A = Σ M_i w_i w_iᵀ, g = 2 Σ M_i b_i w_i + l, h = Σ M_i b_i² + c;
    its minimum is h − ¼ gᵀA⁺g (−∞ when g leaves the range of A).  The tolerance is relative to
    the size of the two terms (_SQUARE_TOL of the graph's dtype).
    """
    M = _csr(q.M)
    L = _dense(q.L)
    W = np.concatenate([_pad(w, n_in) for w in bank.W]).reshape(len(bank), n_in) if bank.W else np.zeros((0, n_in))
    b = np.asarray(bank.b, dtype=np.float64)
    tol = _SQUARE_TOL[dtype]
    for r in range(M.shape[0]):
        idx = M.indices[M.indptr[r]:M.indptr[r + 1]]
        m = M.data[M.indptr[r]:M.indptr[r + 1]]
        if np.any(m < 0):
            raise _Misfit("Max clamps a form with negative squared terms (not a squared distance)")
        if any(bank.act[i] != "abs" for i in idx[m != 0]):
            raise _Misfit("Max clamps squared ReLU neurons (not a squared distance)")
        Wr, br = W[idx], b[idx]
        A = (Wr.T * m) @ Wr
        g = 2.0 * Wr.T @ (m * br) + L[r]
        h = float(np.sum(m * br * br) + q.c[r])
        if np.count_nonzero(A - np.diag(np.diag(A))) == 0:  # axis-aligned (gmmnet's quadratic layout): no eigh
            lam, V = np.diag(A).copy(), np.eye(n_in)
        else:
            lam, V = np.linalg.eigh(A)
        big = lam > 1e-12 * max(float(lam.max(initial=0.0)), 1e-300)
        gv = V.T @ g
        scale = max(abs(h), float(np.linalg.norm(g)) ** 2 / max(float(lam.max(initial=0.0)), 1e-300), 1.0)
        if np.linalg.norm(gv[~big]) > tol * max(float(np.linalg.norm(g)), 1e-300):
            raise _Misfit("Max clamps a form that is unbounded below (not a squared distance)")
        low = h - 0.25 * float(np.sum(gv[big] ** 2 / lam[big]))
        if low < floor - tol * scale:
            raise _Misfit(f"Max clamps a form whose minimum {low:.3g} lies below the clamp {floor:g}: the clamp would change it")


def _close(a, b) -> bool:
    """np.allclose for dense or sparse arrays of the same shape."""
    if a.shape != b.shape:
        return False
    if not (sp.issparse(a) or sp.issparse(b)):
        return bool(np.allclose(a, b))
    diff = abs(_csr(a) - _csr(b))
    return diff.nnz == 0 or float(diff.max()) <= 1e-8 + 1e-5 * float(abs(_csr(b)).max())


def _equal(x, y) -> bool:
    if x.shape != y.shape:
        return False
    if sp.issparse(x) or sp.issparse(y):
        return (_csr(x) != _csr(y)).nnz == 0
    return bool(np.array_equal(x, y))


def _same(a, b) -> bool:
    if type(a) is not type(b) or a.shape != b.shape:
        return False
    return all(_equal(x, y) for x, y in zip(a.arrays().values(), b.arrays().values())) and getattr(
        a, "src", getattr(a, "level", None)) == getattr(b, "src", getattr(b, "level", None))


def _name(node, i: int) -> str:
    label = node.name or (node.output[0] if node.output else f"#{i}")
    return f"node {i} ({node.op_type} {label!r})"


def _normalize_head(res: NetworkLayers, q: _Quad, dtype: str) -> NetworkLayers:
    """Turn the logits Σ M a² + L s + c into groups with coefficient −½ and constants c_k."""
    level = q.level
    layer = res.layers[level]
    M, L, c = _csr(q.M), _dense(q.L), q.c
    M.eliminate_zeros()
    M.sort_indices()
    K = M.shape[0]
    if not np.any(M.data > 0):
        kind = "log_joint"
    elif not np.any(M.data < 0):
        kind = "squared_distance"
    else:  # mixed signs (e.g. a residual term ‖x−μ‖²/σ² − Σ(vᵀ(x−μ))²/σ²): decide by the overall curvature
        kind = "log_joint" if float(np.sum(M @ np.sum(layer.W**2, axis=1))) < 0 else "squared_distance"
    if kind == "log_joint":  # logit_k = Σ M a² + … with M = −s/2
        s = -2.0 * M
    else:  # D²_k = Σ s a² + …, read as logit_k = −½ D²_k
        s, L, c = M, -0.5 * L, -0.5 * c
    Ws, bs, acts, nodes, groups, consts = [], [], [], [], [], []
    for k in range(K):
        idx = s.indices[s.indptr[k]:s.indptr[k + 1]]
        sk = s.data[s.indptr[k]:s.indptr[k + 1]]
        if idx.size == 0:
            raise UnsupportedModelError(f"component {k} of the head uses no neurons")
        ak = [layer.activations[i] for i in idx]
        ck = float(c[k])
        lk = L[k]
        if np.any(sk < 0):
            Wk, bk, ck = _quadratic_block(k, layer.W[idx], layer.b[idx], sk, lk, ck, ak)
            ak = ["abs"] * Wk.shape[0]
            res.notes.append(f"component {k}: squared neurons of both signs; read as its quadratic form "
                             f"and re-expressed as {Wk.shape[0]} eigen-neurons")
            nodes_k = ["(quadratic form)"] * Wk.shape[0]
        else:
            root = np.sqrt(sk)
            if np.all(root == 1.0) and idx[-1] - idx[0] == idx.size - 1:  # a contiguous block as it stands
                Wk, bk = layer.W[idx[0]:idx[-1] + 1], layer.b[idx[0]:idx[-1] + 1]
            else:
                Wk = layer.W[idx] * root[:, None]
                bk = layer.b[idx] * root
            nodes_k = [layer.nodes[i] for i in idx]
            if np.any(lk != 0):
                if any(a != "abs" for a in ak):
                    raise UnsupportedModelError(
                        f"component {k}: the head adds a linear term to squared ReLU neurons; that is not a Gaussian"
                    )
                # −½‖Wx+b‖² + lᵀx + c = −½‖Wx + b + δ‖² + c'' with Wᵀδ = −l, c'' = c + δᵀb + ½‖δ‖²
                diag = np.diag(Wk) if Wk.shape[0] == Wk.shape[1] else None
                if diag is not None and np.all(diag != 0) and np.count_nonzero(Wk) == diag.size:
                    delta = -lk / diag  # axis-aligned neurons (diag/spherical): Wᵀ is diagonal
                else:
                    delta, *_ = np.linalg.lstsq(Wk.T, -lk, rcond=None)
                resid = np.linalg.norm(Wk.T @ delta + lk)
                if resid > _SQUARE_TOL[dtype] * max(np.linalg.norm(lk), 1e-300):
                    raise UnsupportedModelError(
                        f"component {k}: the head's linear term lies outside the span of its neurons (not a Gaussian)"
                    )
                ck = ck + float(delta @ bk) + 0.5 * float(delta @ delta)
                bk = bk + delta
        start = sum(len(g) for g in groups)
        groups.append(list(range(start, start + Wk.shape[0])))
        Ws.append(Wk)
        bs.append(bk)
        acts += ak
        nodes += nodes_k
        consts.append(ck)
    shared = sum(len(g) for g in groups) != np.unique(s.indices).size
    if shared:
        res.notes.append("some neurons belong to several components; they were duplicated per component")
    res.layers[level] = Layer(W=np.concatenate(Ws), b=np.concatenate(bs), activations=acts, nodes=nodes)
    res.layers = res.layers[: level + 1]
    res.groups = groups
    res.head = np.array(consts) if kind == "log_joint" else None
    res.head_kind = kind
    if level > 0:
        res.notes.append(f"the head scores level {level}; its inputs are the activations of level {level - 1}")
    return res


def _quadratic_block(k, W, b, s, l, c, acts):
    """−½ Σ s_i (w_iᵀx + b_i)² + lᵀx + c with some s_i < 0, as −½‖W'x + b'‖² + c' (W' eigen-neurons)."""
    if any(a != "abs" for a in acts):
        raise UnsupportedModelError(f"component {k}: squared ReLU neurons with coefficients of both signs")
    P = (W.T * s) @ W
    P = (P + P.T) / 2.0
    lam, V = np.linalg.eigh(P)
    if lam.min() <= 1e-12 * max(lam.max(), 0.0):
        raise UnsupportedModelError(
            f"component {k}: the head's quadratic form is not negative definite: it is not a Gaussian log-density"
        )
    q = l - W.T @ (s * b)
    mu = V @ ((V.T @ q) / lam)
    c0 = c - 0.5 * float(np.sum(s * b * b))
    Wn = (V * np.sqrt(lam)).T  # rows √λ_i v_iᵀ: whitening neurons of the precision P
    return Wn, -(Wn @ mu), c0 + 0.5 * float(mu @ q)


def read_layers(model_or_path) -> NetworkLayers:
    """Read the neuron layers (and the mixture head, if any) of an ONNX model or file.

    Accepts an ``onnx.ModelProto``, a path, or bytes.  Never looks at ``metadata_props``
    or node names.  Raises :class:`UnsupportedModelError` naming the first node that does
    not fit the pattern.
    """
    return _Reader(load_model(model_or_path)).run()


def load_model(model_or_path):
    """An ``onnx.ModelProto`` from a model, a path or bytes, refusing control flow (If, Loop, Scan)."""
    import onnx

    model = model_or_path
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    elif isinstance(model, (str, os.PathLike)):
        try:
            model = onnx.load(os.fspath(model))
        except FileNotFoundError:
            raise InputFileError(f"{model}: no such file") from None
        except Exception as exc:
            raise InputFileError(f"{model}: not a readable ONNX model ({type(exc).__name__})") from None
    if not isinstance(model, onnx.ModelProto):
        raise UnsupportedModelError(f"expected an ONNX ModelProto, got {type(model).__name__}")
    bad = next((n for n in model.graph.node if n.op_type in ("If", "Loop", "Scan")), None)
    if bad is not None:
        raise UnsupportedModelError(f"node {bad.op_type} {bad.name!r}: control flow is not part of the pattern")
    return model
