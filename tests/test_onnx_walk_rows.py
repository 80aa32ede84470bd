"""The walk's fast row operations against the straightforward formulations they replace.

A plain Linear layer on sparse rows is Bᵀ a (not a Kronecker row map), sums over every row and
neuron selections are built in CSR directly, squares of selected neurons square the entries,
values of the right width are passed on without a copy, a group's Abs rows are taken as one
block, and the read-back appends the head's tensor to the model's bytes instead of copying and
re-serializing the model.  Each is checked against the slow form on small random cases.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from onnx import TensorProto, helper, numpy_helper

from gmmnet.formats.onnx import readback
from gmmnet.formats.onnx.read import from_onnx
from gmmnet.formats.onnx.walk import _Lin, _Quad, _Reader, _sum_rows, read_graph


def _kron_rows(shape, B, a):
    """The row map of ``table(shape) @ B`` as a Kronecker product, applied to rows ``a`` (the reference)."""
    lead = int(np.prod(shape[:-1], dtype=np.int64))
    T = sp.kron(sp.eye_array(lead), sp.csr_array(B.T), format="csr")
    return T @ a


def _random_rows(rng, m, n, density):
    a = sp.random_array((m, n), density=density, rng=rng, format="csr")
    a.data[:] = rng.standard_normal(a.nnz)
    return a


@pytest.mark.parametrize("m,p,n,density", [(5, 3, 4, 0.6), (9, 7, 9, 0.3), (4, 6, 40, 0.05), (1, 2, 3, 1.0)])
def test_a_linear_layer_on_sparse_rows_is_the_kron_row_map(m, p, n, density):
    rng = np.random.default_rng(m * 100 + n)
    B = rng.standard_normal((m, p))
    a = _random_rows(rng, m, n, density)
    ref = _kron_rows((m,), B, a).toarray()
    # rows over the graph input: dense (what the file holds), equal to the reference
    over_x = _Lin(-1, (m,), a, np.zeros(m)).matmul(B)
    assert over_x.shape == (p,)
    assert not sp.issparse(over_x.W)
    np.testing.assert_allclose(over_x.W, ref, rtol=1e-14, atol=1e-14)
    # rows over a neuron level: stay sparse
    over_level = _Lin(0, (m,), a, np.zeros(m)).matmul(B)
    assert sp.issparse(over_level.W) and over_level.shape == (p,)
    np.testing.assert_allclose(over_level.W.toarray(), ref, rtol=1e-14, atol=1e-14)
    # a sum of squares: M over neurons stays sparse; L over the input of level 0 is dense, of level 1 sparse
    for level in (0, 1):
        q = _Quad(level, (m,), a, a, np.zeros(m)).matmul(B)
        assert sp.issparse(q.M)
        np.testing.assert_allclose(q.M.toarray(), ref, rtol=1e-14, atol=1e-14)
        assert sp.issparse(q.L) == (level == 1)
        np.testing.assert_allclose(q.L.toarray() if level else q.L, ref, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kind", ["homogeneous", "permuted", "scaled", "shared"])
def test_a_selection_of_input_rows_gathers_the_weights_exactly(kind):
    """[x, 1] (each column one row, in order: a view of B's rows), a permutation, a scaled selection, and a
    column read twice (not a selection: the general product) all give the Kronecker row map's rows exactly."""
    rng = np.random.default_rng(4)
    d, p = 6, 5
    if kind == "homogeneous":  # the value of Concat([X, ones]): rows of the identity, then a zero row
        a = sp.csr_array(np.vstack([np.eye(d), np.zeros((1, d))]))
    elif kind == "permuted":
        a = sp.csr_array(np.eye(d)[rng.permutation(d)])
    elif kind == "scaled":
        a = sp.csr_array(np.diag(rng.uniform(0.5, 2.0, d))[rng.permutation(d)])
    else:
        a = sp.csr_array(np.vstack([np.eye(d), np.eye(d)[:1] * 2.0]))
    m = a.shape[0]
    Bs = rng.standard_normal((p, m))  # as a Gemm with transB=1 stores it
    B = Bs.T
    out = _Lin(-1, (m,), a, np.zeros(m)).matmul(B)
    assert out.shape == (p,) and not sp.issparse(out.W)
    np.testing.assert_array_equal(out.W, _kron_rows((m,), B, a).toarray())
    if kind == "homogeneous":
        assert np.shares_memory(out.W, Bs)  # no copy of the file's rows


def test_a_few_input_columns_times_a_wide_input_stay_sparse():
    """Two rows of a 100,000-feature input times a small B: a dense result would be 20 × 10⁵; kept sparse."""
    rng = np.random.default_rng(3)
    d = 100_000
    a = sp.csr_array((np.ones(2), np.array([5, 77_000]), np.array([0, 1, 2])), shape=(2, d))
    B = rng.standard_normal((2, 20))
    out = _Lin(-1, (2,), a, np.zeros(2)).matmul(B)
    assert sp.issparse(out.W) and out.W.nnz == 40
    np.testing.assert_allclose(out.W.toarray(), _kron_rows((2,), B, a).toarray(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4), (1, 5, 1)])
def test_sum_rows_matches_the_coordinate_build(shape):
    rows = int(np.prod(shape))
    coords = np.unravel_index(np.arange(rows), shape)
    for r in range(1, len(shape) + 1):
        for axes in ([list(range(len(shape)))] if r == len(shape) else [[i] for i in range(len(shape))]):
            kept = [i for i in range(len(shape)) if i not in axes]
            if kept:
                out = np.ravel_multi_index([coords[i] for i in kept], [shape[i] for i in kept])
                n_out = int(np.prod([shape[i] for i in kept]))
            else:
                out, n_out = np.zeros(rows, dtype=np.int64), 1
            ref = sp.coo_array((np.ones(rows), (out, np.arange(rows))), shape=(n_out, rows)).toarray()
            T = _sum_rows(shape, axes)
            assert T.has_sorted_indices
            np.testing.assert_array_equal(T.toarray(), ref)


def _reader(n_features=4):
    x = helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", n_features])
    y = helper.make_tensor_value_info("Y", TensorProto.DOUBLE, ["N", 1])
    model = helper.make_model(helper.make_graph([helper.make_node("Abs", ["X"], ["Y"])], "g", [x], [y]))
    r = _Reader(model)
    r._bind_input()
    return r


def test_neuron_selections_and_their_squares_match_the_reference():
    rng = np.random.default_rng(5)
    r = _reader(4)
    first = r.make_neurons(_Lin(-1, (3,), rng.standard_normal((3, 4)), rng.standard_normal(3)), "abs", "a")
    sel = r.make_neurons(_Lin(-1, (2, 2), rng.standard_normal((4, 4)), rng.standard_normal(4)), "relu", "b")
    ref = sp.csr_array((np.ones(4), (np.arange(4), 3 + np.arange(4))), shape=(4, 7)).toarray()
    np.testing.assert_array_equal(sel.W.toarray(), ref)
    assert sel.W.has_canonical_format and sel.shape == (2, 2) and first.W.shape == (3, 3)
    # a multiple of one neuron per entry, with an explicit zero that must not count as a second neuron
    W = sp.csr_array((np.array([2.0, 0.0, -3.0, 0.5]), np.array([1, 4, 5, 6]), np.array([0, 2, 3, 4])), shape=(3, 7))
    v = _Lin(0, (3,), W, np.zeros(3))
    before = W.copy()
    q = r.square(v, "sq")
    np.testing.assert_allclose(q.M.toarray(), W.multiply(W).toarray(), rtol=0, atol=0)
    assert q.L.shape == (3, 4) and q.L.nnz == 0
    # the value's own array is shared by other values: never pruned in place
    assert W.nnz == before.nnz and np.array_equal(W.data, before.data)
    assert len(r.bank(0)) == 7  # no new neurons were made


def test_fresh_values_are_passed_on_and_stale_ones_padded():
    rng = np.random.default_rng(6)
    r = _reader(4)
    v = r.make_neurons(_Lin(-1, (3,), rng.standard_normal((3, 4)), np.zeros(3)), "abs", "a")
    assert r.fresh(v) is v
    r.make_neurons(_Lin(-1, (2,), rng.standard_normal((2, 4)), np.zeros(2)), "abs", "b")
    w = r.fresh(v)
    assert w is not v and w.W.shape == (3, 5)
    np.testing.assert_array_equal(w.W.toarray()[:, :3], v.W.toarray())
    assert not w.W.toarray()[:, 3:].any()


def test_group_rows_as_one_block_match_the_row_by_row_pairing():
    """Abs rows, mirrored ReLU pairs and single ReLUs of a group, taken as blocks, in the old order."""
    from gmmnet.recover import _recover_layers, mirrored_pairs

    rng = np.random.default_rng(11)
    d = 3
    W = rng.standard_normal((9, d))
    b = rng.standard_normal(9)
    W[5], b[5] = -W[2], -b[2]  # neurons 2 and 5: a mirrored ReLU pair
    acts = ["abs", "abs", "relu", "abs", "relu", "relu", "abs", "abs", "abs"]
    groups = [[0, 1, 2, 3, 4, 5], [6, 7, 8]]
    seen = {}

    import gmmnet.recover as recover

    orig = recover._component

    def spy(g, x, r, dtype):
        seen[g.index] = (g.neurons(None), list(g.abs_orig), list(g.relu_orig))
        return orig(g, x, r, dtype)

    recover._component = spy
    try:
        _recover_layers(W, b, acts, groups=groups, head=None, data=rng.standard_normal((60, d)), n_components=None,
                        dtype="float64", grouping="explicit", source="test")
    finally:
        recover._component = orig
    for k, members in enumerate(groups):  # the per-row construction the blocks replace
        relus = [i for i in members if acts[i] == "relu"]
        pairs = mirrored_pairs(W, b, relus)
        paired = {i for p in pairs for i in p}
        rows = [(W[i], float(b[i]), [i]) for i in members if acts[i] == "abs"]
        rows += [((W[i] - W[j]) / 2.0, float(b[i] - b[j]) / 2.0, [i, j]) for i, j in pairs]
        single = [i for i in relus if i not in paired]
        (Wg, bg), abs_orig, relu_orig = seen[k]
        np.testing.assert_array_equal(Wg, np.array([w for w, _, _ in rows] + [W[i] for i in single]))
        np.testing.assert_array_equal(bg, np.array([c for _, c, _ in rows] + [b[i] for i in single]))
        assert abs_orig == [o for _, _, o in rows] and relu_orig == single
    assert seen[0][1][-1] == [2, 5] and seen[0][2] == [4]


def _two_component_graph(rng, output_logits: bool):
    """A 2-component Abs graph with a log-sum-exp head; its logits are a graph output or an inner tensor."""
    d = 3
    W = np.concatenate([np.eye(d), 0.5 * np.eye(d)])
    b = np.concatenate([-W[:d] @ rng.standard_normal(d), -W[d:] @ rng.standard_normal(d)])
    G = np.zeros((2 * d, 2))
    G[:d, 0] = G[d:, 1] = -0.5
    inits = [numpy_helper.from_array(a, n) for a, n in ((W.T, "W"), (b, "b"), (G, "G"), (np.array([-3.0, -4.0]), "c"),
                                                         (np.array([1], dtype=np.int64), "axes"))]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["z0"]), helper.make_node("Add", ["z0", "b"], ["z"]),
             helper.make_node("Abs", ["z"], ["a"]), helper.make_node("Mul", ["a", "a"], ["sq"]),
             helper.make_node("MatMul", ["sq", "G"], ["q"]), helper.make_node("Add", ["q", "c"], ["logits"]),
             helper.make_node("ReduceLogSumExp", ["logits", "axes"], ["ll"], keepdims=0)]
    x = helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", d])
    outs = [helper.make_tensor_value_info("ll", TensorProto.DOUBLE, ["N"])]
    if output_logits:
        outs.append(helper.make_tensor_value_info("logits", TensorProto.DOUBLE, ["N", 2]))
    return helper.make_model(helper.make_graph(nodes, "two", [x], outs, initializer=inits),
                             opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("output_logits", [False, True])
def test_the_read_back_runs_the_bytes_with_the_logits_appended(output_logits):
    import onnx

    from gmmnet.formats.onnx.runtime import session

    rng = np.random.default_rng(2)
    model = _two_component_graph(rng, output_logits)
    data = model.SerializeToString()
    x = rng.standard_normal((8, 3))
    # the reference: a copy of the model with the logits as its only output
    ref_model = onnx.ModelProto()
    ref_model.CopyFrom(model)
    del ref_model.graph.output[:]
    ref_model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.DOUBLE, ["N", 2]))
    ref = session(ref_model).run(["logits"], {"X": x})[0]
    for serialized in (None, data):
        run = readback._runner(model, "logits", 2, serialized)
        np.testing.assert_array_equal(run(x), ref)
    assert model.SerializeToString() == data  # the model itself is untouched
    # the reading keeps the bytes it was given, and the mixture read from them is the model's
    reading = read_graph(data)
    assert reading.serialized == data and read_graph(model).serialized is None
    assert read_graph(model, serialized=data).serialized == data
    assert read_graph(model, serialized=memoryview(data)).serialized == data  # bytes-like: kept as bytes
    m1, r1 = from_onnx(model)
    m2, r2 = from_onnx(data)
    assert r1["readback"]["checked"] and r2["readback"]["max_error"] == r1["readback"]["max_error"]
    np.testing.assert_array_equal(m1.means, m2.means)


def test_many_small_components_run_on_one_blas_thread():
    """Per-component products of a many-component mixture run on one BLAS thread; one large component keeps them."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from gmmnet.recover import SMALL_FEATURES, small_products

    def blas_threads():
        return {p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"}

    outside = blas_threads()
    with small_products(256, 256):
        assert blas_threads() == {1}
    assert blas_threads() == outside
    with small_products(1, 256):
        assert blas_threads() == outside
    with small_products(256, SMALL_FEATURES + 1):
        assert blas_threads() == outside


def test_the_truncated_head_test_reads_sparse_heads_like_dense_ones():
    """_needs_quadratic on a sparse head (with explicit zeros) answers as on the same head densified."""
    from types import SimpleNamespace

    from gmmnet.formats.onnx.read_deep import _needs_quadratic

    rng = np.random.default_rng(8)
    answers = set()
    for trial in range(40):
        K, n = 3, 7
        dense = np.where(rng.random((K, n)) < 0.4, -rng.uniform(0.5, 2.0, (K, n)), 0.0)
        if trial % 3 == 0:
            dense[rng.integers(K), rng.integers(n)] = 1.5  # a positive (residual) coefficient
        made = rng.random(n) < (0.5 if trial % 2 else 1.0)
        M = sp.csr_array(dense)
        M.data[:1] = 0.0  # an explicit zero: not a used neuron
        ref = SimpleNamespace(heads={0: (M.toarray(), None, None)}, explicit=[made])
        got = _needs_quadratic(SimpleNamespace(heads={0: (M, None, None)}, explicit=[made]), 0)
        assert got == _needs_quadratic(ref, 0)
        answers.add(got)
    assert answers == {True, False}
