"""The walk: Abs/ReLU networks read out of ONNX graphs as layers, by pattern (never by node names).

The reader is a small abstract interpreter.  It walks the graph in topological order and
gives every tensor one of a few symbolic values, all relative to the graph input ``X``
(shape ``(N, d)``; the batch axis 0 is never mixed):

``_Const``
    a constant (initializer, ``Constant`` node, or any node whose inputs are all constant:
    folded with :class:`onnx.reference.ReferenceEvaluator`).
``_Lin``
    a tensor whose every entry is affine in the *source* of its level: ``W x + b`` over
    the input ``X`` (source −1), or over the activations of neuron level ℓ (source ℓ).
    Gemm, MatMul, Add, Sub, Mul/Div by constants, Neg, BatchNormalization (inference mode),
    Concat, Reshape, Transpose, Slice, Gather, Split, ReduceSum… keep a value affine, so every
    chain of ``(Gemm | MatMul + Add)``, a scaler's ``(x − m) / s`` in front of it, the centred
    forms ``(x − μ_hi − μ_lo) · W``, and the elementwise diag/spherical forms
    ``(x − μ) * λ^-½`` all collapse to rows ``(w_i, b_i)``.
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

What each op may do is declared once, in a registry (:func:`reads` decorates the method that
interprets an op on network values, :func:`declare` the ops that only occur after the head;
:func:`supported_ops` lists them and error messages quote that list).

The *logits* are the ``_Quad`` of shape ``(K,)`` that a head op (ReduceLogSumExp, Softmax,
LogSoftmax, ArgMax, ReduceMax, TopK, …) reduces over the component axis.  From them the
reader takes the grouping of neurons into components and the constants ``c_k``, and
normalizes every group to ``logit_k = −½ Σ_{i∈g_k} a_i² + c_k``: a coefficient
``−s/2`` is folded into the neuron as ``√s (w, b)``, and a linear term (skl2onnx's
expanded ``x² − 2xμ + μ²`` for diag and spherical) is absorbed by completing the square.

``Max(q, c)`` of a ``_Quad`` with a constant c is read as q itself once q is shown never to go
below c (gmmnet's quadratic layout clamps its expanded D² at 0; see :func:`_clamp_floor`).

Any node that does not fit raises :class:`~gmmnet.errors.UnsupportedModelError` naming it.
The walk (:func:`read_graph`, :func:`read_layers`) never looks at ``metadata_props``;
:func:`input_space` reads one key, ``input_transform``, and checks what it says against the
graph.  :mod:`gmmnet.formats.onnx.read` (single mixtures) and
:mod:`gmmnet.formats.onnx.read_deep` (hierarchies) turn a reading into the IR.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from ... import linalg
from ...errors import InputFileError, InvalidModelError, UnsupportedModelError
from ...limits import check_bytes
from ...recover import Layer, NetworkLayers

__all__ = ["BATCHNORM_NOTE", "GraphReading", "Layer", "NetworkLayers", "OpRule", "declare", "input_space", "load_model",
           "read_graph", "read_layers", "reads", "supported_ops"]

#: relative tolerance of the completed square (skl2onnx diag/spherical) in float32 / float64 graphs
_SQUARE_TOL = {"float32": 1e-4, "float64": 1e-9}
#: The note a folded BatchNormalization leaves (the torch reader writes the same words).
BATCHNORM_NOTE = "BatchNormalization folded into the linear layer"


# ---------------------------------------------------------------------------
# the op registry


@dataclass(frozen=True)
class OpRule:
    """What the reader may do with one ONNX op type.

    ``read`` interprets the op on network values (affine rows, neurons, sums of squares);
    ``head`` marks the ops that reduce component scores over the component axis (their input
    is the mixture head's logits); ``after_head`` admits the op downstream of the logits (it
    computes outputs from them and never feeds neurons back); ``intensity`` admits it as an
    element-wise transform of a sum of squares (an output such as ``exp(−D²)``, of no use to
    recovery: ignored).
    """

    op: str
    read: Callable | None = None
    head: bool = False
    after_head: bool = False
    intensity: bool = False
    summary: str = ""


_RULES: dict[str, OpRule] = {}


def _register(ops: tuple[str, ...], read: Callable | None, summary: str, **flags) -> None:
    for op in ops:
        if op in _RULES:
            raise RuntimeError(f"the ONNX reader registers {op} twice")
        _RULES[op] = OpRule(op, read, summary=summary, **flags)


def reads(*ops: str, head: bool = False, after_head: bool = False, intensity: bool = False):
    """Decorator: the method reads ``ops`` on network values; the flags say what else they may do."""

    def deco(fn):
        _register(ops, fn, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
                  head=head, after_head=after_head, intensity=intensity)
        return fn

    return deco


def declare(*ops: str, after_head: bool = False, intensity: bool = False, summary: str = "") -> None:
    """Admit ``ops`` that are never read on network values: after the head, or as intensities."""
    _register(ops, None, summary, after_head=after_head, intensity=intensity)


def supported_ops(role: str = "network") -> list[str]:
    """The registered op types, sorted: ``"network"`` (read on network values), ``"head"``,
    ``"after_head"`` or ``"intensity"``."""
    test = {
        "network": lambda r: r.read is not None,
        "head": lambda r: r.head,
        "after_head": lambda r: r.after_head,
        "intensity": lambda r: r.intensity,
    }[role]
    return sorted(op for op, r in _RULES.items() if test(r))


# ---------------------------------------------------------------------------
# symbolic values


class _Const:
    """A constant tensor (initializer, Constant node, or a node folded from constants)."""

    __slots__ = ("arr",)

    def __init__(self, arr):
        self.arr = np.asarray(arr)


class _Derived:
    """A value computed from the component scores by the head (log-sum-exp, softmax, argmax, …)."""

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
            # columns over a neuron level are sparse (a K·d-neuron bank would not fit densely); values are
            # never modified in place, so arrays already of the right kind are shared, not copied
            setattr(self, k, _csr(a) if sp.issparse(a) else np.asarray(a, dtype=np.float64))

    @property
    def rows(self) -> int:
        """Number of entries per batch row (prod(shape))."""
        return int(np.prod(self.shape, dtype=np.int64))

    def _new(self, shape, **arrays):
        """A value of the same kind and source with new shape and arrays."""
        raise NotImplementedError

    def _over_input(self, k: str) -> bool:
        """True when field ``k``'s columns are the graph input's features (not a neuron level)."""
        return False

    def arrays(self) -> dict:
        """The symbolic arrays by field name."""
        return {k: getattr(self, k) for k in self.fields}

    def take(self, idx: np.ndarray) -> "_Rows":
        """The entries at flat indices ``idx``, in the shape of ``idx`` (gather, slice, transpose, broadcast)."""
        flat = np.asarray(idx, dtype=np.int64).ravel()
        return self._new(idx.shape, **{k: v[flat] for k, v in self.arrays().items()})

    def scale(self, v: np.ndarray) -> "_Rows":
        """Entry i multiplied by the constant v[i]."""
        v = np.asarray(v, dtype=np.float64).ravel()
        out = {}
        for k, a in self.arrays().items():
            if sp.issparse(a):
                out[k] = sp.diags_array(v) @ a
            else:
                out[k] = a * (v[:, None] if a.ndim == 2 else v)
        return self._new(self.shape, **out)

    def add_const(self, v: np.ndarray) -> "_Rows":
        """Entry i plus the constant v[i]."""
        arrays = self.arrays()
        arrays[self.additive] = arrays[self.additive] + np.asarray(v, dtype=np.float64).ravel()
        return self._new(self.shape, **arrays)

    def plus(self, other: "_Rows") -> "_Rows":
        """Entry-wise sum with a value of the same kind, source and shape."""
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
        """Sum over non-batch ``axes`` (0-based over ``shape``)."""
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
        B = np.asarray(B, dtype=np.float64)  # no copy: constants are never modified in place
        out = {}
        new_lead = None
        T = None
        for k, a in self.arrays().items():
            if sp.issparse(a) and B.ndim == 2 and len(shape) == 1 and _is_eye(a):
                # the graph input itself (a sparse identity): the rows are Bᵀ, dense as the file holds them
                out[k] = np.ascontiguousarray(B.T)
                new_lead = (B.shape[1],)
                continue
            if sp.issparse(a) and B.ndim == 2 and len(shape) == 1:
                # a plain Linear layer: the rows of the result are Bᵀ a (no row map to build)
                out[k] = _left_multiply(B.T, a, self._over_input(k))
                new_lead = (B.shape[1],)
                continue
            if sp.issparse(a):
                if T is None:
                    T, new_lead = _matmul_rows(shape, B)
                out[k] = T @ a
                continue
            trail = a.shape[1:]
            t = int(np.prod(trail, dtype=np.int64)) if trail else 1
            f = a.reshape(shape + (t,))
            if B.ndim == 2 and len(shape) == 1:
                r = B.T @ f  # rows of the result: Bᵀ times the rows (plain BLAS)
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

    def _over_input(self, k: str) -> bool:
        return k == "W" and self.src < 0


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

    def _over_input(self, k: str) -> bool:
        return k == "L" and self.level == 0


class _Misfit(Exception):
    """Raised inside the interpreter; turned into UnsupportedModelError naming the node."""


def _is_eye(a) -> bool:
    """True for a square identity, dense or sparse (a sparse one is checked without densifying)."""
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        return False
    n = a.shape[0]
    if sp.issparse(a):
        a = a.tocsr()
        return (a.nnz == n and np.array_equal(a.indptr, np.arange(n + 1)) and np.array_equal(a.indices, np.arange(n))
                and bool(np.all(a.data == 1.0)))
    return bool(np.array_equal(a, np.eye(n)))


def _csr(a) -> sp.csr_array:
    """``a`` as a float64 CSR array (``a`` itself when it already is one)."""
    if sp.issparse(a):
        return a.tocsr().astype(np.float64, copy=False)
    return sp.csr_array(np.asarray(a, dtype=np.float64))


def _left_multiply(P: np.ndarray, a, dense_ok: bool):
    """P @ a for a dense constant P (p × m) and sparse rows a (m × n).

    Dense when ``dense_ok`` (columns over the graph input) and the result is no larger than a few
    times what P and a already hold; otherwise sparse, so a value over a K·d-neuron level stays sparse.
    """
    p, n = P.shape[0], a.shape[1]
    if dense_ok and p * n <= 4 * (P.size + a.nnz) + 4096:
        cols = a.tocsc()
        if np.all(np.diff(cols.indptr) == 1) and np.all(cols.data != 0):
            # each column of a picks one row (the input, a slice, [x, 1]): the product gathers P's columns,
            # a view of them when they are consecutive (rows as the file holds them: no copy)
            r = cols.indices
            run = n > 0 and r[-1] - r[0] == n - 1 and bool(np.all(np.diff(r) == 1))
            out = P[:, r[0]:r[0] + n] if run else P[:, r]
            return out if np.all(cols.data == 1.0) else out * cols.data
        return np.ascontiguousarray((a.T @ P.T).T)  # CSC times dense: one pass over a's entries
    return sp.csr_array(P) @ a


def _dense(a) -> np.ndarray:
    """``a`` as a dense array."""
    return a.toarray() if sp.issparse(a) else np.asarray(a)


def _sum_rows(shape: tuple[int, ...], axes: list[int]) -> sp.csr_array:
    """Sparse (out_rows, rows) matrix that sums the rows of a (shape)-indexed table over `axes`."""
    rows = int(np.prod(shape, dtype=np.int64))
    kept = [i for i in range(len(shape)) if i not in axes]
    if not kept:  # one sum of every row: built in CSR directly
        return sp.csr_array((np.ones(rows), np.arange(rows), np.array([0, rows])), shape=(1, rows))
    coords = np.unravel_index(np.arange(rows), shape)
    out = np.ravel_multi_index([coords[i] for i in kept], [shape[i] for i in kept])
    n_out = int(np.prod([shape[i] for i in kept], dtype=np.int64))
    order = np.argsort(out, kind="stable")  # CSR with each output row's sources in order
    indptr = np.concatenate([[0], np.cumsum(np.bincount(out, minlength=n_out))])
    return sp.csr_array((np.ones(rows), order, indptr), shape=(n_out, rows))


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
    """``a`` with zero columns appended up to ``n`` (a level's bank grew after the value was made)."""
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
    """The neurons of one level as they are made: row blocks (dense or sparse) over the level's source."""

    def __init__(self, src: int):
        self.src = src
        self.W: list = []
        self.b: list[float] = []
        self.act: list[str] = []
        self.nodes: list[str] = []
        self.explicit: list[bool] = []  # made by an Abs/Relu node (False: by squaring an affine value)

    def __len__(self):
        return len(self.b)


#: Ops whose output size is set by their (constant) inputs' values, not their sizes: estimated before folding.
_SHAPE_MAKERS = ("ConstantOfShape", "Expand", "Tile", "Range", "Pad", "OneHot", "Resize", "Upsample")
#: What onnx's reference evaluator raises on a malformed constant node (it validates nothing beforehand).
_FOLD_ERRORS = (ValueError, TypeError, IndexError, KeyError, RuntimeError, NotImplementedError, ArithmeticError,
                AttributeError)


class _Reader:
    """One walk of one graph: symbolic values per tensor, the neuron banks, the heads found."""

    def __init__(self, model):
        import onnx

        self.onnx = onnx
        self.model = model
        self.graph = model.graph
        self.values: dict[str, Any] = {}
        self.banks: list[_Bank] = []
        self.logits: list[tuple[_Quad, str, str]] = []  # (scores, head node label, tensor holding them)
        self.notes: list[str] = []
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)

    # -- helpers -------------------------------------------------------------
    def note(self, text: str) -> None:
        """Add a reader note once."""
        if text not in self.notes:
            self.notes.append(text)

    def src_size(self, src: int) -> int:
        """Width of a source: the input's feature count (−1) or a level's neuron count."""
        return self.n_features if src < 0 else len(self.banks[src])

    def bank(self, level: int) -> _Bank:
        """The bank of ``level``, created (with the levels below) on first use."""
        while len(self.banks) <= level:
            self.banks.append(_Bank(len(self.banks) - 1))
        return self.banks[level]

    def level_matrix(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) of a level's neurons as dense float64 arrays, refused above the memory limit.

        The estimate counts the copies that reading and recovery make of it (the level as read, its
        normalized head's rows, the recovery's working arrays): three.
        """
        bank = self.bank(level)
        n, n_in = len(bank), self.src_size(level - 1)
        check_bytes(3 * 8.0 * n * n_in, f"neuron level {level} ({n} neurons × {n_in} inputs, float64, with the "
                                        "copies recovery makes)")
        W = np.zeros((n, n_in))
        r = 0
        for w in bank.W:
            W[r:r + w.shape[0], :w.shape[1]] = _dense(w)
            r += w.shape[0]
        return W, np.array(bank.b, dtype=np.float64)

    def fresh(self, v):
        """Pad a symbolic value's neuron/source columns to the current bank sizes (``v`` itself when they fit)."""
        if isinstance(v, _Lin):
            n = self.src_size(v.src)
            return v if v.W.shape[1] == n else _Lin(v.src, v.shape, _pad(v.W, n), v.b)
        if isinstance(v, _Quad):
            n, m = len(self.bank(v.level)), self.src_size(v.level - 1)
            if v.M.shape[1] == n and v.L.shape[1] == m:
                return v
            return _Quad(v.level, v.shape, _pad(v.M, n), _pad(v.L, m), v.c)
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

    def make_neurons(self, v: _Lin, act: str, node_name: str, explicit: bool = True) -> _Lin:
        """Append the rows of ``v`` to the next level's bank as neurons; the value selects them."""
        v = self.fresh(v)
        level = v.src + 1
        bank = self.bank(level)
        start = len(bank)
        bank.W.append(v.W)  # a block of rows, kept sparse where it is (values are never modified in place)
        bank.b.extend(v.b.tolist())
        bank.act.extend([act] * v.rows)
        bank.nodes.extend([node_name] * v.rows)
        bank.explicit.extend([explicit] * v.rows)
        n = len(bank)
        # row i selects neuron start + i: built in CSR directly
        sel = sp.csr_array((np.ones(v.rows), start + np.arange(v.rows), np.arange(v.rows + 1)), shape=(v.rows, n))
        return _Lin(level, v.shape, sel, np.zeros(v.rows))

    def square(self, v, node_name: str) -> _Quad:
        """v² entry-wise: squares of neurons, or of an affine value (which becomes Abs neurons first)."""
        if isinstance(v, _Quad):
            raise _Misfit("squares a value that is already quadratic")
        v = self.fresh(v)
        if v.src >= 0 and np.all(v.b == 0):
            Wc = _csr(v.W)
            if np.any(Wc.data == 0):
                Wc = Wc.copy()  # v's arrays are shared: never pruned in place
                Wc.eliminate_zeros()
            if np.all(np.diff(Wc.indptr) == 1):
                # a multiple of one neuron per entry: square those neurons ((c·a)² = c²a²)
                level = v.src
                M = sp.csr_array((Wc.data * Wc.data, Wc.indices, Wc.indptr), shape=Wc.shape)
                return _Quad(level, v.shape, M, sp.csr_array((v.rows, self.src_size(level - 1))), np.zeros(v.rows))
        # a general affine value: |z|² = z², so it becomes Abs neurons first
        sel = self.make_neurons(v, "abs", node_name, explicit=False)
        return self.square(sel, node_name)

    def broadcast(self, shapes: list[tuple[int, ...]], data_flags: list[bool]):
        """Broadcast full shapes (with batch); returns the result's full shape or raises."""
        try:
            full = np.broadcast_shapes(*shapes)
        except ValueError:
            raise _Misfit(f"shapes {shapes} do not broadcast") from None
        data_rank = max(len(s) for s, f in zip(shapes, data_flags) if f)
        if len(full) != data_rank or full[0] != 1:
            raise _Misfit("a constant operand would broadcast over the batch axis")
        return full

    def data_index(self, v: _Rows, full) -> np.ndarray:
        """Flat entry indices of ``v`` broadcast to the full shape ``full`` (batch axis dropped)."""
        idx = np.arange(v.rows).reshape((1,) + v.shape)
        return np.broadcast_to(idx, full)[0]

    def const_bcast(self, c: np.ndarray, full) -> np.ndarray:
        """A constant broadcast to the full shape ``full``, flattened (batch axis dropped)."""
        return np.broadcast_to(c.astype(np.float64), full)[0].ravel()

    def axes_of(self, node, v, attr="axes", input_index=1):
        """A node's axes: from the attribute (older opsets) or the constant input (newer), else None."""
        axes = None
        for a in node.attribute:
            if a.name == attr:
                axes = list(self.onnx.helper.get_attribute_value(a))
        if axes is None and len(node.input) > input_index and node.input[input_index]:
            axes = [int(x) for x in np.asarray(self.const(node.input[input_index])).ravel()]
        return axes

    def const(self, name: str) -> np.ndarray:
        """The array of a constant tensor (raises _Misfit for network values)."""
        v = self.values.get(name)
        if not isinstance(v, _Const):
            raise _Misfit(f"input {name!r} must be a constant")
        return v.arr

    def input(self, node, i: int) -> str:
        """The name of input ``i`` (raises _Misfit when the node lacks it)."""
        if len(node.input) <= i or not node.input[i]:
            raise _Misfit(f"has no input {i}")
        return node.input[i]

    def attr(self, node, name, default=None):
        """A node attribute's value, or ``default``."""
        for a in node.attribute:
            if a.name == name:
                return self.onnx.helper.get_attribute_value(a)
        return default

    # -- graph --------------------------------------------------------------
    def run(self) -> "GraphReading":
        """Walk every node; returns what was found (raises UnsupportedModelError naming a misfit node)."""
        g = self.graph
        bad = next((n for n in g.node if n.domain not in ("", "ai.onnx")), None)
        if bad is not None:
            raise UnsupportedModelError(
                f"node {bad.op_type} {bad.name!r} is from domain {bad.domain!r}: only standard ONNX ops are read"
            )
        self._load_constants()
        self._bind_input()
        for i, node in enumerate(g.node):
            try:
                self.step(node)
            except _Misfit as exc:
                raise UnsupportedModelError(_name(node, i) + f" does not fit an Abs/ReLU network: {exc}") from None
        return self.finish()

    def _const_array(self, tensor, what: str) -> np.ndarray:
        """A TensorProto as an array: malformed data is an InvalidModelError, non-finite weights too."""
        if tensor.HasField("data_location") and tensor.data_location == self.onnx.TensorProto.EXTERNAL:
            # numpy_helper would open the file it names: only gmmnet.io.load_onnx checks and loads those
            raise UnsupportedModelError(f"{what} keeps its data in an external file: load the model from its path "
                                        "(gmmnet.io.load_onnx checks and loads external data)")
        try:
            arr = self.onnx.numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as exc:  # raw data that does not match the dims or type
            raise InvalidModelError(f"{what} is malformed ({type(exc).__name__}: {str(exc)[:120]})") from None
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            kind = "NaN" if np.any(np.isnan(arr)) else "infinite"
            raise InvalidModelError(f"{what} holds {kind} values")
        return arr

    def _load_constants(self) -> None:
        """Initializers and sparse initializers as constants (sizes checked before densifying)."""
        g = self.graph
        for init in g.initializer:
            n = int(np.prod(list(init.dims), dtype=np.float64)) if init.dims else 1
            check_bytes(8.0 * n, f"initializer {init.name!r} ({n} values)")
            self.values[init.name] = _Const(self._const_array(init, f"initializer {init.name!r}"))
        for s in g.sparse_initializer:
            name = s.values.name
            dims = [int(d) for d in s.dims]
            if any(d < 0 for d in dims):
                raise InvalidModelError(f"sparse initializer {name!r} has a negative dimension")
            n = int(np.prod(dims, dtype=np.float64))
            check_bytes(8.0 * n, f"sparse initializer {name!r} densified ({n} values)")
            vals = self._const_array(s.values, f"sparse initializer {name!r}").ravel()
            idx = self._const_array(s.indices, f"sparse initializer {name!r} (indices)").astype(np.int64)
            flat = idx.ravel() if idx.ndim == 1 else (np.ravel_multi_index(idx.T, dims) if idx.size else idx.ravel())
            if flat.size != vals.size or (flat.size and (flat.min() < 0 or flat.max() >= n)):
                raise InvalidModelError(f"sparse initializer {name!r} has indices that do not fit its shape {dims}")
            dense = np.zeros(n, dtype=vals.dtype)
            dense[flat] = vals
            self.values[name] = _Const(dense.reshape(dims))

    def _bind_input(self) -> None:
        """The one data input X: float or double, (N, d); its value is the sparse d × d identity."""
        onnx = self.onnx
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            raise UnsupportedModelError(f"expected one data input, found {len(inputs)}: {[i.name for i in inputs][:5]}")
        x = inputs[0]
        self.input_name = x.name
        tt = x.type.tensor_type
        elem = tt.elem_type
        self.dtype = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64"}.get(elem)
        if self.dtype is None:
            kind = onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else str(elem)
            raise UnsupportedModelError(f"input {x.name!r} has element type {kind}; expected float or double")
        dims = list(tt.shape.dim)
        if len(dims) != 2:
            raise UnsupportedModelError(f"input {x.name!r} must be 2-D (N, n_features), has rank {len(dims)}")
        d = dims[1].dim_value if dims[1].HasField("dim_value") else self._infer_features(x.name)
        if not d or d < 0:
            raise UnsupportedModelError(f"cannot tell the number of features of input {x.name!r}")
        self.n_features = int(d)
        # sparse: a declared width costs nothing until a layer over it is built (and checked)
        eye = sp.eye_array(self.n_features, format="csr")
        self.values[x.name] = _Lin(-1, (self.n_features,), eye, np.zeros(self.n_features))

    def _infer_features(self, name: str) -> int | None:
        """The feature count from the first Gemm/MatMul on the input, when the input declares none."""
        for node in self.graph.node:
            if node.input and node.input[0] == name and node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
                v = self.values.get(node.input[1])
                if isinstance(v, _Const) and v.arr.ndim == 2:
                    trans = node.op_type == "Gemm" and self.attr(node, "transB", 0)
                    return int(v.arr.shape[1] if trans else v.arr.shape[0])
        return None

    def _fold_size(self, node, feeds: dict) -> float:
        """Estimated element count of a shape-making node's output, from its constant inputs."""
        def val(i):
            return np.asarray(feeds[node.input[i]]) if len(node.input) > i and node.input[i] in feeds else None

        op = node.op_type
        try:
            if op == "ConstantOfShape":
                return float(np.prod(val(0).astype(np.float64)))
            if op == "Expand":
                return float(np.prod(np.maximum(val(0).shape, 1), dtype=np.float64)) * float(
                    np.prod(np.maximum(val(1).astype(np.float64), 1)))
            if op == "Tile":
                return float(val(0).size) * float(np.prod(np.maximum(val(1).astype(np.float64), 1)))
            if op == "Range":
                start, limit, delta = (float(val(i)) for i in range(3))
                return abs((limit - start) / delta) if delta else 0.0
            if op == "Pad" and val(1) is not None:
                pads = val(1).astype(np.float64)
                return float(np.prod(np.asarray(val(0).shape, np.float64) + pads[: pads.size // 2] + pads[pads.size // 2:]))
            if op == "OneHot":
                return float(val(0).size) * float(np.max(np.abs(val(1))))
            if op in ("Resize", "Upsample"):
                sizes = val(3) if op == "Resize" else None
                if sizes is not None and sizes.size:
                    return float(np.prod(sizes.astype(np.float64)))
                scales = val(2) if op == "Resize" else val(1)
                if scales is not None and scales.size:
                    return float(val(0).size) * float(np.prod(np.maximum(scales.astype(np.float64), 1)))
        except (TypeError, ValueError, IndexError, AttributeError):
            raise _Misfit("its constant inputs do not describe a shape") from None
        return 0.0

    def fold(self, node) -> list[np.ndarray]:
        """Evaluate a node whose inputs are all constant (onnx's reference evaluator)."""
        onnx = self.onnx
        ins = [n for n in node.input if n]
        feeds = {n: self.values[n].arr for n in ins}
        if node.op_type in _SHAPE_MAKERS:
            n = self._fold_size(node, feeds)
            check_bytes(8.0 * n, f"the constant output of {node.op_type} {node.name or node.output[0]!r} ({n:.3g} values)")
        try:
            from onnx.reference import ReferenceEvaluator

            vi = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(feeds[n].dtype),
                                                     feeds[n].shape) for n in ins]
            outs = [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o]
            graph = onnx.helper.make_graph([node], "fold", vi, outs)
            m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", self.opset)])
            return [np.asarray(r) for r in ReferenceEvaluator(m).run(None, feeds)]
        except _FOLD_ERRORS as exc:
            raise _Misfit(f"its constant inputs could not be evaluated ({type(exc).__name__}: {str(exc)[:160]})") from None

    def step(self, node) -> None:
        """Interpret one node: fold constants, pass head values on, or ask the op's registered rule."""
        op = node.op_type
        ins = [self.values.get(n) if n else None for n in node.input]
        for n, v in zip(node.input, ins):
            if n and v is None:
                raise _Misfit(f"input {n!r} is not produced by any earlier node")
        outs = list(node.output)

        if op == "Constant" and self.attr(node, "value") is not None:
            self.values[outs[0]] = _Const(self._const_array(self.attr(node, "value"), f"constant {outs[0]!r}"))
            return
        present = [v for v in ins if v is not None]
        if op == "Constant" or (present and all(isinstance(v, _Const) for v in present)):
            for name, val in zip([o for o in outs if o], self.fold(node)):
                self.values[name] = _Const(val)
            return

        rule = _RULES.get(op)
        # downstream of the logits
        if any(isinstance(v, _Derived) for v in ins):
            if rule is None or not rule.after_head:
                raise _Misfit(f"{op} is not a head operation (after the head: {', '.join(supported_ops('after_head'))})")
            for o in outs:
                self.values[o] = _DERIVED
            return
        if rule is None:
            raise _Misfit(f"{op} is not an op the reader knows; on network values it reads "
                          f"{', '.join(supported_ops('network'))}")
        if rule.read is None:
            data = next((v for v in ins if isinstance(v, _Rows)), None)
            if isinstance(data, _Quad) and rule.intensity:
                self.note(f"{op} {node.name!r} transforms a sum of squares (an intensity output); ignored")
                for o in outs:
                    self.values[o] = _DERIVED
                return
            where = "after the mixture head" + (" or on a sum of squares" if rule.intensity else "")
            raise _Misfit(f"{op} is read only {where}, not on network values")
        res = rule.read(self, node, ins)
        if not isinstance(res, (list, tuple)):
            res = [res]
        for name, val in zip(outs, res):
            if name:
                self.values[name] = val

    # -- ops ----------------------------------------------------------------
    def _data(self, ins, i=0) -> _Rows:
        """Input ``i`` as a network value (raises _Misfit for constants and head values)."""
        v = ins[i] if i < len(ins) else None
        if not isinstance(v, _Rows):
            raise _Misfit(f"input {i} must be data derived from the network input")
        return self.fresh(v)

    @reads("ReduceLogSumExp", "Softmax", "LogSoftmax", "ArgMax", "ArgMin", "ReduceMax", "ReduceMin", "TopK", "Hardmax",
           head=True, after_head=True)
    def op_head(self, node, ins):
        """Reduces component scores (N, K) over axis 1: its input is the mixture head's logits."""
        op = node.op_type
        v = ins[0]
        if not isinstance(v, _Quad):
            raise _Misfit(f"{op} expects component scores (a sum of squared neurons), got an {v.kind} value"
                          if isinstance(v, _Rows) else f"{op} has no data input")
        if op.startswith("Reduce"):
            axis = self.axes_of(node, v, "axes")
        else:
            axis = [self.attr(node, "axis", -1 if op in ("Softmax", "LogSoftmax", "Hardmax", "TopK") else 0)]
        if axis is None:
            axis = list(range(1, len(v.shape) + 1))
        rank = len(v.shape) + 1
        axis = sorted(int(a) % rank for a in axis)
        if len(v.shape) != 1 or axis != [1]:
            raise _Misfit(f"{op} must reduce component scores of shape (N, K) over axis 1")
        self.logits.append((self.fresh(v), node.name or node.output[0], node.input[0]))
        return [_DERIVED] * len(node.output)

    @reads("Identity", "Dropout", after_head=True)
    def op_Identity(self, node, ins):
        """Passes its input on (Dropout is the identity at inference)."""
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            if not (isinstance(ins[2], _Const) and not np.any(ins[2].arr)):
                raise _Misfit("Dropout in training mode")
        return ins[0]

    @reads("Cast", "CastLike", after_head=True)
    def op_Cast(self, node, ins):
        """A cast between float types keeps the value (the reader computes in float64)."""
        onnx = self.onnx
        floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
        to = self.attr(node, "to") if node.op_type == "Cast" else None
        if node.op_type == "CastLike":
            like = ins[1] if len(ins) > 1 else None
            if isinstance(like, _Const) and like.arr.dtype.kind != "f":
                raise _Misfit("casts network values to a non-float type")
        elif to not in floats:
            raise _Misfit("casts network values to a non-float type")
        return ins[0]

    @reads("Abs", "Relu", after_head=True)
    def op_activation(self, node, ins):
        """|z| or relu(z) of an affine value: Abs or ReLU neurons."""
        v = self._data(ins)
        if isinstance(v, _Quad):
            raise _Misfit(f"{node.op_type} of a sum of squares")
        return self.make_neurons(v, node.op_type.lower(), node.name or node.output[0])

    @reads("Neg", after_head=True)
    def op_Neg(self, node, ins):
        """−v."""
        v = self._data(ins)
        return v.scale(np.full(v.rows, -1.0))

    def _binary(self, node, ins, kind: str):
        """Add/Sub/Mul/Div of two operands, at least one a network value (constants broadcast)."""
        if len(ins) < 2:
            raise _Misfit("needs two inputs")
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
                if np.any(c == 0):
                    raise _Misfit("divides by zero")
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

    @reads("Add", "Sub", "Mul", "Div", after_head=True)
    def op_arithmetic(self, node, ins):
        """a + b and a − b (network values of one kind, or a network value and a constant), a · constant
        (a per-neuron scale) or a · a (a square), a / constant."""
        return self._binary(node, ins, node.op_type.lower())

    @reads("Sum", after_head=True)
    def op_Sum(self, node, ins):
        """The sum of all inputs."""
        if not ins:
            raise _Misfit("has no inputs")
        acc = ins[0]
        for v in ins[1:]:
            acc = self._binary(node, [acc, v], "add")
        return acc

    @reads("BatchNormalization")
    def op_BatchNormalization(self, node, ins):
        """Inference-mode BatchNormalization: scale·(x − mean)/√(var + ε) + B per channel, an affine map."""
        v = self._data(ins)
        if isinstance(v, _Quad):
            raise _Misfit("BatchNormalization of a sum of squares")
        if self.attr(node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
            raise _Misfit("BatchNormalization in training mode (batch statistics) is not a fixed affine map")
        if not v.shape:
            raise _Misfit("BatchNormalization needs a channel axis (N, C, …)")
        scale, bias, mean, var = (self.const(self.input(node, i)).astype(np.float64).ravel() for i in (1, 2, 3, 4))
        eps = float(self.attr(node, "epsilon", 1e-5))
        C = v.shape[0]
        if any(a.size != C for a in (scale, bias, mean, var)):
            raise _Misfit(f"BatchNormalization parameters do not have one value per channel ({C})")
        if np.any(var + eps <= 0):
            raise _Misfit("BatchNormalization with a non-positive variance")
        s = scale / np.sqrt(var + eps)
        t = bias - mean * s
        per = (C,) + (1,) * (len(v.shape) - 1)
        self.note(BATCHNORM_NOTE)
        return v.scale(np.broadcast_to(s.reshape(per), v.shape).ravel()).add_const(
            np.broadcast_to(t.reshape(per), v.shape).ravel())

    @reads("Max", after_head=True)
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
        W, b = self.level_matrix(q.level)
        _clamp_floor(q, W, b, self.bank(q.level).act, float(floor[0]), self.dtype)
        self.note(f"Max {node.name!r} clamps a sum of squares at {floor[0]:g}, which it never goes below; "
                  "read as the sum itself")
        return q

    @reads("Pow", after_head=True)
    def op_Pow(self, node, ins):
        """Pow(v, 2): a square."""
        v = self._data(ins)
        if len(ins) < 2 or not isinstance(ins[1], _Const) or not np.all(ins[1].arr == 2):
            raise _Misfit("only Pow(x, 2) is read")
        return self.square(v, node.name or node.output[0])

    @reads("Gemm")
    def op_Gemm(self, node, ins):
        """α·A·B + β·C with constant B (a Linear layer); C constant or a network value."""
        a = self._data(ins)
        if self.attr(node, "transA", 0):
            raise _Misfit("Gemm with transA on network values")
        if len(a.shape) != 1:
            raise _Misfit("Gemm needs a 2-D input")
        B = np.asarray(self.const(self.input(node, 1)), dtype=np.float64)
        if B.ndim != 2:
            raise _Misfit(f"Gemm needs a 2-D B, got shape {B.shape}")
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
            if C.ndim > 2:
                raise _Misfit(f"Gemm's C has rank {C.ndim}")
            C = C.reshape((1,) * (2 - C.ndim) + C.shape)
            full = self.broadcast([(1,) + y.shape, C.shape], [True, False])
            y = y.add_const(beta * self.const_bcast(C, full))
        return y

    @reads("MatMul")
    def op_MatMul(self, node, ins):
        """v · B with constant B (a Linear layer; batched B for per-component blocks)."""
        if isinstance(ins[0], _Const):
            raise _Misfit("MatMul with a constant on the left mixes the batch axis")
        a = self._data(ins)
        B = self.const(self.input(node, 1))
        if B.ndim == 1:
            return a.matmul(B.reshape(-1, 1)).reduce_sum([len(a.shape) - 1], keepdims=False)
        return a.matmul(B)

    @reads("Concat", after_head=True)
    def op_Concat(self, node, ins):
        """Network values of one kind, concatenated along a non-batch axis."""
        axis = self.attr(node, "axis")
        if axis is None:
            raise _Misfit("Concat has no axis")
        if not ins or any(not isinstance(v, _Rows) for v in ins):
            raise _Misfit("concatenates constants with network values")
        vals = self.unify(list(ins))
        rank = len(vals[0].shape) + 1
        if any(len(v.shape) + 1 != rank for v in vals) or not -rank <= int(axis) < rank:
            raise _Misfit("concatenates tensors of different ranks or along an axis they lack")
        axis = int(axis) % rank
        if axis == 0:
            raise _Misfit("concatenates along the batch axis")
        if any(v.shape[:axis - 1] + v.shape[axis:] != vals[0].shape[:axis - 1] + vals[0].shape[axis:] for v in vals):
            raise _Misfit("concatenates tensors whose other axes differ")
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
        """The same entries under a new non-batch shape."""
        return v._new(target, **v.arrays())

    @reads("Reshape", after_head=True)
    def op_Reshape(self, node, ins):
        """A new non-batch shape for the same entries (the batch axis stays first)."""
        v = self._data(ins)
        shape = [int(s) for s in self.const(self.input(node, 1)).ravel()]
        if not shape:
            raise _Misfit("reshapes to a scalar")
        allowzero = self.attr(node, "allowzero", 0)
        rest = shape[1:]
        for i, s in enumerate(rest):
            if s == 0 and not allowzero:
                rest[i] = v.shape[i] if i < len(v.shape) else 0
        if rest.count(-1) > 1 or any(s < -1 for s in rest) or shape[0] < -1:
            raise _Misfit(f"reshape to {shape}")
        if -1 in rest:
            known = int(np.prod([s for s in rest if s != -1], dtype=np.int64)) or 1
            rest[rest.index(-1)] = v.rows // known
        if int(np.prod(rest, dtype=np.int64)) != v.rows:
            raise _Misfit(f"reshape to {shape} would mix the batch axis")
        return self._reshape_to(v, tuple(rest))

    @reads("Flatten", after_head=True)
    def op_Flatten(self, node, ins):
        """Flatten(axis=1): (N, …) → (N, prod(…))."""
        v = self._data(ins)
        if int(self.attr(node, "axis", 1)) != 1:
            raise _Misfit("Flatten must keep the batch axis (axis=1)")
        return self._reshape_to(v, (v.rows,))

    @reads("Unsqueeze", after_head=True)
    def op_Unsqueeze(self, node, ins):
        """New axes of size 1 after the batch axis."""
        v = self._data(ins)
        axes = self.axes_of(node, v)
        if axes is None:
            raise _Misfit("Unsqueeze has no axes")
        rank = len(v.shape) + 1 + len(axes)
        if any(not -rank <= a < rank for a in axes):
            raise _Misfit(f"unsqueezes axes {axes} of a rank-{rank} result")
        axes = sorted(a % rank for a in axes)
        if 0 in axes or len(set(axes)) != len(axes):
            raise _Misfit("unsqueezes before the batch axis")
        full = [None] + list(v.shape)
        for a in axes:
            full.insert(a, 1)
        return self._reshape_to(v, tuple(full[1:]))

    @reads("Squeeze", after_head=True)
    def op_Squeeze(self, node, ins):
        """Drops axes of size 1 (never the batch axis)."""
        v = self._data(ins)
        axes = self.axes_of(node, v)
        rank = len(v.shape) + 1
        if axes is None:
            axes = [i + 1 for i, s in enumerate(v.shape) if s == 1]
        if any(not -rank <= a < rank for a in axes):
            raise _Misfit(f"squeezes axes {axes} of a rank-{rank} tensor")
        axes = {a % rank for a in axes}
        if 0 in axes:
            raise _Misfit("squeezes the batch axis")
        if any(v.shape[a - 1] != 1 for a in axes):
            raise _Misfit("squeezes an axis whose size is not 1")
        return self._reshape_to(v, tuple(s for i, s in enumerate(v.shape) if i + 1 not in axes))

    @reads("Transpose", after_head=True)
    def op_Transpose(self, node, ins):
        """Permutes the non-batch axes."""
        v = self._data(ins)
        perm = self.attr(node, "perm")
        rank = len(v.shape) + 1
        perm = list(perm) if perm is not None else list(range(rank))[::-1]
        if sorted(perm) != list(range(rank)):
            raise _Misfit(f"perm {perm} is not a permutation of {rank} axes")
        if perm[0] != 0:
            raise _Misfit("transposes the batch axis")
        idx = np.arange(v.rows).reshape(v.shape).transpose([p - 1 for p in perm[1:]])
        return v.take(idx)

    @reads("Slice", after_head=True)
    def op_Slice(self, node, ins):
        """A slice of the non-batch axes (constant starts, ends, axes, steps)."""
        v = self._data(ins)
        starts = self.const(self.input(node, 1)).ravel()
        ends = self.const(self.input(node, 2)).ravel()
        rank = len(v.shape) + 1
        axes = self.const(node.input[3]).ravel() if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
        steps = self.const(node.input[4]).ravel() if len(node.input) > 4 and node.input[4] else np.ones(len(starts), int)
        if not (len(starts) == len(ends) == len(axes) == len(steps)):
            raise _Misfit("starts, ends, axes and steps differ in length")
        idx = np.arange(v.rows).reshape(v.shape)
        sl = [slice(None)] * len(v.shape)
        big = np.iinfo(np.int64).max
        for s, e, a, st in zip(starts, ends, axes, steps):
            if not -rank <= int(a) < rank:
                raise _Misfit(f"slices axis {int(a)} of a rank-{rank} tensor")
            a = int(a) % rank
            if a == 0:
                raise _Misfit("slices the batch axis")
            if int(st) == 0:
                raise _Misfit("slices with step 0")
            sl[a - 1] = slice(int(s), None if int(e) >= big // 2 else int(e), int(st))
        return v.take(idx[tuple(sl)])

    @reads("Gather", after_head=True)
    def op_Gather(self, node, ins):
        """Entries picked along a non-batch axis by constant indices."""
        v = self._data(ins)
        ind = self.const(self.input(node, 1)).astype(np.int64)
        rank = len(v.shape) + 1
        axis = int(self.attr(node, "axis", 0))
        if not -rank <= axis < rank:
            raise _Misfit(f"gathers along axis {axis} of a rank-{rank} tensor")
        axis %= rank
        if axis == 0:
            raise _Misfit("gathers along the batch axis")
        size = v.shape[axis - 1]
        if ind.size and (ind.min() < -size or ind.max() >= size):
            raise _Misfit(f"gathers index {int(ind.max() if ind.max() >= size else ind.min())} of an axis of size {size}")
        idx = np.take(np.arange(v.rows).reshape(v.shape), ind, axis=axis - 1)
        return v.take(idx)

    @reads("Split")
    def op_Split(self, node, ins):
        """Pieces along a non-batch axis (sizes from the input or attribute, else equal)."""
        v = self._data(ins)
        rank = len(v.shape) + 1
        axis = int(self.attr(node, "axis", 0))
        if not -rank <= axis < rank:
            raise _Misfit(f"splits axis {axis} of a rank-{rank} tensor")
        axis %= rank
        if axis == 0:
            raise _Misfit("splits the batch axis")
        n = len(node.output)
        total = v.shape[axis - 1]
        if len(node.input) > 1 and node.input[1]:
            sizes = [int(s) for s in self.const(node.input[1]).ravel()]
        elif self.attr(node, "split") is not None:
            sizes = list(self.attr(node, "split"))
        else:
            step = -(-total // n)
            sizes = [min(step, total - i * step) for i in range(n)]
        if len(sizes) != n or sum(sizes) != total or any(s < 0 for s in sizes):
            raise _Misfit(f"split sizes {sizes} do not cut an axis of size {total} into {n} outputs")
        idx = np.arange(v.rows).reshape(v.shape)
        parts = np.split(idx, np.cumsum(sizes)[:-1], axis=axis - 1)
        return [v.take(p) for p in parts]

    def _reduce(self, node, ins, square: bool, mean: bool = False):
        """A sum (of squares, or mean) over non-batch axes."""
        v = self._data(ins)
        axes = self.axes_of(node, v)
        rank = len(v.shape) + 1
        if not axes:
            if self.attr(node, "noop_with_empty_axes", 0):
                return self.square(v, node.name) if square else v
            axes = list(range(rank))
        if any(not -rank <= a < rank for a in axes):
            raise _Misfit(f"reduces axes {axes} of a rank-{rank} tensor")
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

    @reads("ReduceSum", after_head=True)
    def op_ReduceSum(self, node, ins):
        """Σ over non-batch axes."""
        return self._reduce(node, ins, square=False)

    @reads("ReduceSumSquare", after_head=True)
    def op_ReduceSumSquare(self, node, ins):
        """Σ v² over non-batch axes (squares become neurons first)."""
        return self._reduce(node, ins, square=True)

    @reads("ReduceMean", after_head=True)
    def op_ReduceMean(self, node, ins):
        """Mean over non-batch axes."""
        return self._reduce(node, ins, square=False, mean=True)

    # -- the result -----------------------------------------------------------
    def bank_layers(self) -> list[Layer]:
        """The neuron banks as read, one Layer per level (rows over the level below, or X)."""
        layers = []
        for lvl, bank in enumerate(self.banks):
            W, b = self.level_matrix(lvl)
            layers.append(Layer(W=W, b=b, activations=list(bank.act), nodes=list(bank.nodes)))
        return layers

    def finish(self) -> "GraphReading":
        """Every level's raw head, and the top one normalized into groups and constants (a NetworkLayers)."""
        layers = self.bank_layers()
        if not layers:
            raise UnsupportedModelError("the graph has no Abs or ReLU neurons (no Gemm/MatMul followed by Abs, Relu or a square)")
        out_names = [o.name for o in self.graph.output]
        logits = list(self.logits)
        if not logits:
            # an output that is itself a sum of squares: log-joint (coefficients < 0) or squared distances (> 0)
            cands = [(self.fresh(self.values[o]), o) for o in out_names if isinstance(self.values.get(o), _Quad)]
            logits = [(q, o, o) for q, o in cands if len(q.shape) == 1][:1]
        heads, tensors = {}, {}
        for v, _, tensor in logits:
            f = self.fresh(v)
            heads.setdefault(v.level, (f.M, f.L, f.c))
            tensors.setdefault(v.level, tensor)
        reading = GraphReading(
            model=self.model, layers=layers, heads=heads, logits=tensors,
            explicit=[np.array(b.explicit, dtype=bool) for b in self.banks], net=None, error=None,
            dtype=self.dtype, notes=list(self.notes), n_features=self.n_features, input_name=self.input_name)
        net = NetworkLayers(layers=list(layers), n_features=self.n_features, dtype=self.dtype,
                            input_name=self.input_name, outputs=out_names, notes=list(self.notes))
        try:
            reading.net = self._normalize(net, logits)
        except UnsupportedModelError as exc:
            reading.error = exc
        return reading

    def _normalize(self, res: NetworkLayers, logits) -> NetworkLayers:
        """The top level's head as groups with coefficient −½ and constants c_k (lower heads kept raw)."""
        if not logits:
            if len(res.layers) > 1:
                res.notes.append(f"{len(res.layers)} neuron levels and no mixture head")
            return res
        # the deepest level's head is the one read (a hierarchy may also score its lower levels)
        top = max(v.level for v, _, _ in logits)
        lower = sorted({v.level for v, _, _ in logits if v.level != top})
        if lower:
            res.notes.append(f"heads on levels {lower} ignored; the head of level {top} is read")
        for v, _, _ in logits:
            if v.level != top and v.level not in res.level_heads:
                f = self.fresh(v)
                res.level_heads[v.level] = (f.M, f.L, f.c)
        logits = [(v, name) for v, name, _ in logits if v.level == top]
        q = self.fresh(logits[0][0])
        for other, name in logits[1:]:
            o = self.fresh(other)
            if o.M.shape != q.M.shape or not (_close(o.M, q.M) and _close(o.L, q.L) and _close(o.c, q.c)):
                raise UnsupportedModelError(f"head node {name!r} reduces different component scores than {logits[0][1]!r}")
        return _normalize_head(res, q, self.dtype)


def _clamp_floor(q: "_Quad", W: np.ndarray, b: np.ndarray, acts: list[str], floor: float, dtype: str) -> None:
    """Raise _Misfit unless every entry of ``q`` is ≥ ``floor`` for every input (so Max(q, floor) = q).

    An entry Σ_i M_i a_i² + lᵀs + c with Abs neurons a_i = |w_iᵀs + b_i| and M ≥ 0 is the
    quadratic sᵀAs + gᵀs + h with A = Σ M_i w_i w_iᵀ, g = 2 Σ M_i b_i w_i + l, h = Σ M_i b_i² + c;
    its minimum is h − ¼ gᵀA⁺g (−∞ when g leaves the range of A).  The tolerance is relative to
    the size of the two terms (_SQUARE_TOL of the graph's dtype).
    """
    M = _csr(q.M)
    L = _dense(q.L)
    n_in = W.shape[1]
    tol = _SQUARE_TOL[dtype]
    for r in range(M.shape[0]):
        idx = M.indices[M.indptr[r]:M.indptr[r + 1]]
        m = M.data[M.indptr[r]:M.indptr[r + 1]]
        if np.any(m < 0):
            raise _Misfit("Max clamps a form with negative squared terms (not a squared distance)")
        if any(acts[i] != "abs" for i in idx[m != 0]):
            raise _Misfit("Max clamps squared ReLU neurons (not a squared distance)")
        Wr, br = W[idx], b[idx]
        g = 2.0 * Wr.T @ (m * br) + L[r]
        h = float(np.sum(m * br * br) + q.c[r])
        if np.all(np.count_nonzero(Wr, axis=1) <= 1):  # axis-aligned rows (gmmnet's quadratic layout): A is diagonal
            lam, gv = (Wr * Wr).T @ m, g
        else:
            check_bytes(8.0 * n_in * n_in * 3, f"the quadratic form of a clamped sum ({n_in} × {n_in})")
            lam, V = np.linalg.eigh((Wr.T * m) @ Wr)
            gv = V.T @ g
        big = lam > 1e-12 * max(float(lam.max(initial=0.0)), 1e-300)
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
    """Exact equality of two dense or sparse arrays."""
    if x.shape != y.shape:
        return False
    if sp.issparse(x) or sp.issparse(y):
        return (_csr(x) != _csr(y)).nnz == 0
    return bool(np.array_equal(x, y))


def _same(a, b) -> bool:
    """Two symbolic values are the same tensor (so Mul(a, b) is a square)."""
    if type(a) is not type(b) or a.shape != b.shape:
        return False
    return all(_equal(x, y) for x, y in zip(a.arrays().values(), b.arrays().values())) and getattr(
        a, "src", getattr(a, "level", None)) == getattr(b, "src", getattr(b, "level", None))


def _name(node, i: int) -> str:
    """'node i (Op 'name')' for error messages."""
    label = node.name or (node.output[0] if node.output else f"#{i}")
    return f"node {i} ({node.op_type} {label!r})"


def _normalize_head(res: NetworkLayers, q: _Quad, dtype: str) -> NetworkLayers:
    """Turn the logits Σ M a² + L s + c into groups with coefficient −½ and constants c_k."""
    level = q.level
    layer = res.layers[level]
    M, L, c = _csr(q.M).copy(), _dense(q.L), q.c  # a copy: the reading's heads share q's arrays
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
    as_read = True  # every group so far is the next block of the level's rows, unchanged
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
        as_read = as_read and Wk.base is layer.W and bk.base is layer.b and int(idx[0]) == start
        groups.append(list(range(start, start + Wk.shape[0])))
        Ws.append(Wk)
        bs.append(bk)
        acts += ak
        nodes += nodes_k
        consts.append(ck)
    shared = sum(len(g) for g in groups) != np.unique(s.indices).size
    if shared:
        res.notes.append("some neurons belong to several components; they were duplicated per component")
    if as_read and sum(len(g) for g in groups) == layer.W.shape[0]:  # the level as read: no copy of K·d rows
        W, b = layer.W, layer.b
    else:
        W, b = np.concatenate(Ws), np.concatenate(bs)
    res.layers[level] = Layer(W=W, b=b, activations=acts, nodes=nodes)
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


# ops admitted without being read on network values
declare("Exp", "Log", "Sqrt", "Sigmoid", after_head=True, intensity=True,
        summary="after the head (exp of log-probabilities, …), or an intensity transform of a sum of squares")
declare("Tanh", "Softplus", intensity=True, summary="an intensity transform of a sum of squares")
declare("Min", "Clip", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Where", "Not", "And", "Or",
        "Expand", "Tile", "Shape", "Size", after_head=True, summary="computes outputs from the head's values")


# ---------------------------------------------------------------------------
# what a walk found


@dataclass
class GraphReading:
    """Everything one walk of a graph found.

    ``layers`` are the neuron banks as read (rows over the level below's activations, or over
    the input); ``heads`` every level's head as it is, ``level → (M, L, c)`` with
    ``logit_k = Σ_i M_ki a_i² + L_k·s + c_k`` (s the level's input); ``logits`` the name of a
    tensor that holds each level's component scores (what :mod:`gmmnet.formats.onnx.readback`
    compares against); ``explicit`` marks, per level and neuron, the neurons an Abs/Relu node
    made (the others square an affine value, e.g. a truncated component's residual).  ``net`` is
    the top head normalized (``None`` where that failed, ``error`` then says why).  ``serialized``
    holds the model's bytes when the caller had them (the read-back then runs the graph without
    serializing the model again).
    """

    model: Any
    layers: list[Layer]
    heads: dict[int, tuple[Any, Any, np.ndarray]]
    logits: dict[int, str]
    explicit: list[np.ndarray]
    net: NetworkLayers | None
    error: UnsupportedModelError | None
    dtype: str
    notes: list[str]
    n_features: int
    input_name: str
    input_transform: Any = None  # gmmnet.ir.InputTransform once the first level is read over z = A x + c
    serialized: bytes | None = None


def read_graph(model_or_path, *, serialized: bytes | None = None) -> GraphReading:
    """Walk an ONNX model (or file, or bytes) once: neuron levels, raw heads, the top head normalized.

    Never looks at ``metadata_props`` or node names.  Raises
    :class:`~gmmnet.errors.UnsupportedModelError` naming the first node that does not fit the
    pattern; a top head that cannot be normalized is kept as ``error`` (a hierarchy reader may
    still read it as a quadratic form).  A :class:`GraphReading` is returned as it is (callers
    that first ask :func:`gmmnet.formats.onnx.read_deep.is_deep` walk a large graph once).

    ``serialized``, optional, is the bytes (or a bytes-like object) the model was parsed from,
    when the caller has them (self-contained: no external data).  The reading keeps them (as it
    keeps bytes it is given instead of a model), and the read-back check hands them to
    onnxruntime instead of serializing the model again (0.4 s for a 135 MB graph).
    """
    if isinstance(model_or_path, GraphReading):
        return model_or_path
    if serialized is None and isinstance(model_or_path, (bytes, bytearray)):
        serialized = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):  # a file: its bytes come along (None with external data)
        from ... import io

        model_or_path, file_bytes = io.load_onnx(model_or_path, return_bytes=True)
        serialized = file_bytes if serialized is None else serialized
    reading = _Reader(load_model(model_or_path)).run()
    reading.serialized = serialized if serialized is None or isinstance(serialized, bytes) else bytes(serialized)
    return reading


def read_layers(model_or_path) -> NetworkLayers:
    """Read the neuron layers (and the mixture head, if any) of an ONNX model or file.

    Accepts an ``onnx.ModelProto``, a path, or bytes.  Never looks at ``metadata_props``
    or node names.  Raises :class:`UnsupportedModelError` naming the first node that does
    not fit the pattern.
    """
    reading = read_graph(model_or_path)
    if reading.net is None:
        raise reading.error
    return reading.net


def load_model(model_or_path):
    """An ``onnx.ModelProto`` from a model, a path (read with :func:`gmmnet.io.load_onnx`) or bytes.

    Control flow (If, Loop, Scan) is refused: it is not part of any pattern.
    """
    import onnx

    model = model_or_path
    if isinstance(model, (bytes, bytearray)):
        from google.protobuf.message import DecodeError

        try:
            model = onnx.load_from_string(bytes(model))
        except DecodeError as exc:
            raise InputFileError(f"not a readable ONNX model ({type(exc).__name__})") from None
    elif isinstance(model, (str, os.PathLike)):
        from ... import io

        model = io.load_onnx(model)
    if not isinstance(model, onnx.ModelProto):
        raise UnsupportedModelError(f"expected an ONNX ModelProto, got {type(model).__name__}")
    bad = next((n for n in model.graph.node if n.op_type in ("If", "Loop", "Scan")), None)
    if bad is not None:
        raise UnsupportedModelError(f"node {bad.op_type} {bad.name!r}: control flow is not part of the pattern")
    return model


# ---------------------------------------------------------------------------
# the input space: z = A x + c (a folded preprocessing) or the span of the weights


#: The metadata key under which gmmnet's exporter records a folded preprocessing (InputTransform JSON).
INPUT_TRANSFORM_KEY = "input_transform"
#: Relative singular-value cut-off (columns equilibrated) below which the first level's rows span fewer
#: than n_features directions, and the largest relative misfit of rows re-expressed over z.
SPAN_RCOND = {"float64": 1e-9, "float32": 1e-5}


def _note(reading: GraphReading, text: str) -> None:
    """A reader note, on the reading and on its normalized network (the report quotes the latter)."""
    reading.notes.append(text)
    if reading.net is not None:
        reading.net.notes.append(text)


def _level0_rows(reading: GraphReading) -> list[np.ndarray]:
    """Every row over the input x: level 0's neurons, and the linear terms of level-0 heads."""
    rows = [reading.layers[0].W]
    if 0 in reading.heads:
        rows.append(_dense(reading.heads[0][1]))
    net = reading.net
    if net is not None:
        if len(net.layers) == 1 or net.groups is None:
            rows.append(net.layers[0].W)
        if 0 in net.level_heads:
            rows.append(_dense(net.level_heads[0][1]))
    return rows


def _misfit_over(rows: np.ndarray, A: np.ndarray, R: np.ndarray) -> float:
    """Largest relative change of ``rows`` (per column) when re-expressed as (rows R) A."""
    if rows.size == 0:
        return 0.0
    diff = np.abs(rows @ R @ A - rows)
    scale = np.max(np.abs(rows), axis=0)
    scale[scale == 0] = 1.0
    return float(np.max(diff / scale))


def _map_input(reading: GraphReading, transform) -> None:
    """Re-express every row over x as a row over z = A x + c: w·x + β = (w R)·z + β − (w R)·c."""
    A, c = transform.dense(), transform.offset  # a diagonal A (a scaler) is stored as its diagonal
    R = linalg.right_inverse(A)

    def rows(W, b):
        Wz = W @ R
        return Wz, b - Wz @ c

    def head(h):
        M, L, cc = h
        Lz = _dense(L) @ R
        return M, Lz, np.asarray(cc, dtype=np.float64) - Lz @ c

    lay = reading.layers[0]
    W, b = rows(lay.W, lay.b)
    reading.layers[0] = Layer(W=W, b=b, activations=lay.activations, nodes=lay.nodes)
    if 0 in reading.heads:
        reading.heads[0] = head(reading.heads[0])
    net = reading.net
    if net is not None:
        lay = net.layers[0]  # the normalized level 0 when the head scores it, else the level as read
        W, b = rows(lay.W, lay.b)
        net.layers[0] = Layer(W=W, b=b, activations=lay.activations, nodes=lay.nodes)
        if 0 in net.level_heads:
            net.level_heads[0] = head(net.level_heads[0])
        net.n_features = transform.n_outputs
        net.input_transform = transform
    reading.n_features = transform.n_outputs
    reading.input_transform = transform


def _metadata_transform(model, reading: GraphReading):
    """The InputTransform recorded under ``input_transform``, when it fits the graph; else None (and a note)."""
    from pydantic import ValidationError

    from ...ir import InputTransform

    text = next((p.value for p in model.metadata_props if p.key == INPUT_TRANSFORM_KEY), None)
    if text is None:
        return None
    try:
        t = InputTransform.model_validate_json(text)
    except ValidationError:
        _note(reading, f"metadata {INPUT_TRANSFORM_KEY!r} is not a valid input transform; ignored")
        return None
    if t.n_inputs != reading.n_features or t.n_outputs > t.n_inputs:
        _note(reading, f"metadata {INPUT_TRANSFORM_KEY!r} maps {t.n_inputs} inputs, the graph has "
                             f"{reading.n_features}; ignored")
        return None
    A = t.dense()
    R = linalg.right_inverse(A)
    if not np.allclose(A @ R, np.eye(t.n_outputs), rtol=0, atol=1e-8):
        _note(reading, f"metadata {INPUT_TRANSFORM_KEY!r}: its matrix has dependent rows; ignored")
        return None
    err = max(_misfit_over(r, A, R) for r in _level0_rows(reading))
    if err > SPAN_RCOND[reading.dtype]:
        _note(reading, f"metadata {INPUT_TRANSFORM_KEY!r} does not fit the first layer (its rows leave the "
                             f"transform's row space by {err:.1e}); ignored, the layer is read over the raw inputs")
        return None
    return t


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm: each neuron is stored to its own relative precision, so a neuron
    λ^-½ v of a wide direction (tiny weights) counts as much in the rank test as a narrow one."""
    r = np.linalg.norm(rows, axis=1, keepdims=True)
    r[r == 0] = 1.0
    return rows / r


def _span_transform(reading: GraphReading):
    """(Q, 0) when the first level's rows span k < n_features directions (Q: an orthonormal basis), else None."""
    from ...ir import InputTransform

    W0 = reading.layers[0].W
    d = W0.shape[1]
    rcond = SPAN_RCOND[reading.dtype]
    if W0.shape[0] >= d:  # cheap and usual: the first d neurons already span everything
        top = _unit_rows(W0[:d])
        s0 = np.linalg.norm(top, axis=0)
        if np.all(s0 > 0):
            sv = np.linalg.svd(top / s0, compute_uv=False)
            if sv[-1] > rcond * sv[0]:
                return None
    rows = np.concatenate([r for r in _level0_rows(reading) if r.size], axis=0)
    check_bytes(8.0 * rows.shape[0] * d * 3, f"the span of the first layer ({rows.shape[0]} × {d})")
    unit = _unit_rows(rows)
    s = np.linalg.norm(unit, axis=0)
    s[s == 0] = 1.0
    _, sv, vh = np.linalg.svd(unit / s, full_matrices=False)
    k = int(np.sum(sv > rcond * sv[0])) if sv.size and sv[0] > 0 else 0
    if k == 0 or k == d:
        return None
    q, _ = np.linalg.qr((vh[:k] * s).T)  # the row space (rows of (W / s) · diag(s)), orthonormalized
    Q = q.T
    err = _misfit_over(rows, Q, Q.T)
    if err > rcond:
        return None
    return InputTransform(matrix=Q, offset=np.zeros(k))


def input_space(reading: GraphReading, *, grouped: bool = False) -> GraphReading:
    """Read the first level over z = A x + c where that is what the graph is.

    * With ``input_transform`` in the metadata (gmmnet writes it when it folds a Pipeline's
      affine steps into the first layer), the rows are unfolded, W = W' A⁺, after checking
      that W A reproduces W' (otherwise the key is ignored, with a note).
    * Else, when the graph has a mixture head and the first level's rows span only k < n_features
      directions (a folded PCA, say), the level is read over z = Q x with Q an orthonormal basis
      of that span: the Gaussians are degenerate along the other directions, which the graph
      ignores; the scores stay the graph's.  Not with explicit groups (``grouped``).
    """
    t = _metadata_transform(reading.model, reading)
    if t is not None:
        _map_input(reading, t)
        _note(reading, f"the first layer is read over z = A x + c, the {t.n_outputs}-feature preprocessing "
                             f"recorded in the metadata ({INPUT_TRANSFORM_KEY})")
        return reading
    if grouped or not reading.heads:
        return reading
    t = _span_transform(reading)
    if t is not None:
        _map_input(reading, t)
        _note(reading, 
            f"the first layer's weights span only {t.n_outputs} of the {t.n_inputs} input directions: the "
            f"mixture is over z = Q x (Q an orthonormal basis of that span, input_transform); its Gaussians over the "
            "raw inputs are degenerate along the other directions, which the graph ignores")
    return reading
