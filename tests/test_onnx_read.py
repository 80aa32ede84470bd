"""The ONNX reader (gmmnet.formats.onnx.read) and exact recovery from graphs.

Graphs come from four writers: hand-built layouts below (onnx.helper, independent of
gmmnet's exporter), skl2onnx, torch.onnx.export, and gmmnet's own exporter when present.
Every model has its metadata_props removed before it is read.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mixtures import random_mixture, random_rotation, sample
from onnx import TensorProto, helper, numpy_helper

from gmmnet import linalg
from gmmnet.errors import UnsupportedModelError
from gmmnet.ir import Component, Mixture
from gmmnet.formats.onnx.read import from_onnx, read_layers

COV_TYPES = ("full", "tied", "diag", "spherical")
#: relative tolerances required of exact recovery, by graph dtype
TOL = {"float64": 1e-8, "float32": 1e-4}


# ---------------------------------------------------------------------------
# hand-built graphs (one layout each; helpers are imported by test_recover.py too)


def _np(dtype):
    return np.float32 if dtype == "float32" else np.float64


def _tp(dtype):
    return TensorProto.FLOAT if dtype == "float32" else TensorProto.DOUBLE


def neuron_blocks(mixture, rotations=None):
    """Per-component (W_k, b_k) in float64, each optionally rotated: W → R W, b → R b."""
    blocks = []
    for k, c in enumerate(mixture.components):
        w, b = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
        if rotations is not None:
            w, b = rotations[k] @ w, rotations[k] @ b
        blocks.append((w, b))
    return blocks


def _model(nodes, inits, d, dtype, outputs, opset=18):
    x = helper.make_tensor_value_info("X", _tp(dtype), ["N", d])
    outs = [helper.make_tensor_value_info(n, t, shape) for n, t, shape in outputs]
    graph = helper.make_graph(nodes, "mixture", [x], outs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    m.metadata_props.add(key="gmmnet.note", value="the reader must not need this")
    onnx.checker.check_model(m)
    return m


def _head(nodes, inits, logits, dtype, K):
    """log_likelihood, responsibilities, label from the logits tensor."""
    nodes += [
        helper.make_node("ReduceLogSumExp", [logits, "axes1"], ["log_likelihood"], keepdims=0, name="head/lse"),
        helper.make_node("Softmax", [logits], ["responsibilities"], axis=1, name="head/softmax"),
        helper.make_node("ArgMax", [logits], ["label"], axis=1, keepdims=0, name="head/argmax"),
    ]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1"))
    return [("log_likelihood", _tp(dtype), ["N"]), ("responsibilities", _tp(dtype), ["N", K]),
            ("label", TensorProto.INT64, ["N"])]


def gemm_graph(mixture, *, dtype="float64", activation="abs", rotations=None, transB=True):
    """X → Gemm(all K·r neurons) → Abs | Relu([W; −W]) → square → MatMul(group sums) → ·(−½) + c → head."""
    f = _np(dtype)
    blocks = neuron_blocks(mixture, rotations)
    W = np.concatenate([w for w, _ in blocks])
    b = np.concatenate([bb for _, bb in blocks])
    K, d = mixture.n_components, mixture.n_features
    G = np.zeros((W.shape[0], K))
    r0 = 0
    for k, (w, _) in enumerate(blocks):
        G[r0: r0 + w.shape[0], k] = 1.0
        r0 += w.shape[0]
    if activation == "relu":
        W, b, G = np.concatenate([W, -W]), np.concatenate([b, -b]), np.concatenate([G, G])
    c = linalg.component_log_terms(mixture)
    inits = [
        numpy_helper.from_array((W if transB else W.T).astype(f), "W"),
        numpy_helper.from_array(b.astype(f), "b"),
        numpy_helper.from_array(G.astype(f), "G"),
        numpy_helper.from_array(np.array(-0.5, dtype=f), "mhalf"),
        numpy_helper.from_array(c.astype(f), "c"),
    ]
    act = "Abs" if activation == "abs" else "Relu"
    nodes = [
        helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=int(transB), name="layer/gemm"),
        helper.make_node(act, ["z"], ["a"], name="layer/act"),
        helper.make_node("Mul", ["a", "a"], ["a2"], name="head/square"),
        helper.make_node("MatMul", ["a2", "G"], ["d2"], name="head/groups"),
        helper.make_node("Mul", ["d2", "mhalf"], ["hd2"], name="head/scale"),
        helper.make_node("Add", ["hd2", "c"], ["logits"], name="head/const"),
    ]
    outs = _head(nodes, inits, "logits", dtype, K)
    return _model(nodes, inits, d, dtype, outs)


def centred_graph(mixture, *, dtype="float32", rotations=None):
    """Per-component centring, μ split in float32 high + low parts: ((x − μ_hi) − μ_lo) · W_kᵀ (batched)."""
    f = _np(dtype)
    blocks = neuron_blocks(mixture, rotations)
    K, d = mixture.n_components, mixture.n_features
    mu = mixture.means
    hi = mu.astype(f)
    lo = (mu - hi.astype(np.float64)).astype(f)
    Wt = np.stack([w.T for w, _ in blocks])  # (K, d, d)
    c = linalg.component_log_terms(mixture)
    inits = [
        numpy_helper.from_array(hi, "mu_hi"),
        numpy_helper.from_array(lo, "mu_lo"),
        numpy_helper.from_array(Wt.astype(f), "Wt"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2"),
        numpy_helper.from_array(np.array([-0.5], dtype=f), "mhalf"),
        numpy_helper.from_array(c.astype(f), "c"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["X", "ax1"], ["x3"], name="centre/unsqueeze"),
        helper.make_node("Sub", ["x3", "mu_hi"], ["xc1"], name="centre/hi"),
        helper.make_node("Sub", ["xc1", "mu_lo"], ["xc"], name="centre/lo"),
        helper.make_node("Unsqueeze", ["xc", "ax2"], ["xc4"], name="centre/row"),
        helper.make_node("MatMul", ["xc4", "Wt"], ["z4"], name="layer/matmul"),
        helper.make_node("Squeeze", ["z4", "ax2"], ["z"], name="layer/squeeze"),
        helper.make_node("Abs", ["z"], ["a"], name="layer/abs"),
        helper.make_node("ReduceSumSquare", ["a", "ax2"], ["d2"], keepdims=0, name="head/sumsq"),
        helper.make_node("Mul", ["d2", "mhalf"], ["hd2"], name="head/scale"),
        helper.make_node("Add", ["hd2", "c"], ["logits"], name="head/const"),
    ]
    outs = _head(nodes, inits, "logits", dtype, K)
    return _model(nodes, inits, d, dtype, outs)


def elementwise_graph(mixture, *, dtype="float64"):
    """diag/spherical layout: (x − μ_k) * λ_k^-½ elementwise, Abs, Pow 2, ReduceSum over features."""
    f = _np(dtype)
    K, d = mixture.n_components, mixture.n_features
    scale = np.stack([1.0 / np.sqrt(c.eigenvalues) for c in mixture.components])
    c = linalg.component_log_terms(mixture)
    inits = [
        numpy_helper.from_array(mixture.means.astype(f), "mu"),
        numpy_helper.from_array(scale.astype(f), "s"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2"),
        numpy_helper.from_array(np.array(2.0, dtype=f), "two"),
        numpy_helper.from_array(np.array(-0.5, dtype=f), "mhalf"),
        numpy_helper.from_array(c.astype(f), "c"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["X", "ax1"], ["x3"], name="diag/unsqueeze"),
        helper.make_node("Sub", ["x3", "mu"], ["xc"], name="diag/sub"),
        helper.make_node("Mul", ["xc", "s"], ["z"], name="diag/mul"),
        helper.make_node("Abs", ["z"], ["a"], name="diag/abs"),
        helper.make_node("Pow", ["a", "two"], ["a2"], name="head/pow"),
        helper.make_node("ReduceSum", ["a2", "ax2"], ["d2"], keepdims=0, name="head/sum"),
        helper.make_node("Mul", ["d2", "mhalf"], ["hd2"], name="head/scale"),
        helper.make_node("Add", ["hd2", "c"], ["logits"], name="head/const"),
    ]
    outs = _head(nodes, inits, "logits", dtype, K)
    return _model(nodes, inits, d, dtype, outs)


def layer_graph(W, b, *, activation="abs", dtype="float32", matmul=False):
    """A headless layer: X → Gemm (or MatMul + Add) → Abs | Relu, output the activations."""
    f = _np(dtype)
    d = W.shape[1]
    inits = [numpy_helper.from_array(np.asarray(W).astype(f) if not matmul else np.asarray(W).T.astype(f), "W"),
             numpy_helper.from_array(np.asarray(b).astype(f), "b")]
    if matmul:
        nodes = [helper.make_node("MatMul", ["X", "W"], ["xw"], name="mm"), helper.make_node("Add", ["xw", "b"], ["z"], name="add")]
    else:
        nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=1, name="gemm")]
    nodes.append(helper.make_node("Abs" if activation == "abs" else "Relu", ["z"], ["a"], name="act"))
    return _model(nodes, inits, d, dtype, [("a", _tp(dtype), ["N", W.shape[0]])])



def run_graph(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float32 if inp.type == "tensor(float)" else np.float64
    outs = sess.run(None, {inp.name: x.astype(dtype)})
    return dict(zip([o.name for o in sess.get_outputs()], outs))


def strip(model):
    del model.metadata_props[:]
    return model


# ---------------------------------------------------------------------------
# comparison helpers


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def covs(mixture):
    return np.stack([linalg.covariance(c.eigenvectors, c.eigenvalues, c.residual_variance) for c in mixture.components])


def effective_log_weights(mixture):
    """log w_k + γ_k normalized: what a graph's head can tell (it cannot split w_k from γ_k)."""
    lw = np.log(mixture.weights) + mixture.log_constants
    return lw - np.logaddexp.reduce(lw)


def assert_same_mixture(rec, ref, x, tol, ll_tol=None):
    """Means, covariances, (effective) weights and log-likelihoods within relative `tol`.

    Log-likelihoods are compared relative to max(|ll|, 1), within ``ll_tol`` (default `tol`).
    """
    assert rec.n_components == ref.n_components and rec.n_features == ref.n_features
    assert rel(rec.means, ref.means) <= tol, rel(rec.means, ref.means)
    assert rel(covs(rec), covs(ref)) <= tol, rel(covs(rec), covs(ref))
    assert np.max(np.abs(np.exp(effective_log_weights(rec)) - np.exp(effective_log_weights(ref)))) <= tol
    if np.allclose(ref.log_constants, 0):
        assert np.max(np.abs(rec.weights - ref.weights)) <= tol
    ll, ll_ref = linalg.log_likelihood(rec, x), linalg.log_likelihood(ref, x)
    assert np.max(np.abs(ll - ll_ref) / np.maximum(np.abs(ll_ref), 1.0)) <= (tol if ll_tol is None else ll_tol)


# ---------------------------------------------------------------------------
# hand-built layouts


# the elementwise layout (x − μ) * λ^-½ only exists for axis-aligned components
LAYOUTS = [(lay, ct) for lay in ("gemm-abs", "gemm-relu", "gemm-notrans", "centred", "elementwise") for ct in COV_TYPES
           if lay != "elementwise" or ct in ("diag", "spherical")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("layout", "covariance_type"), LAYOUTS)
def test_hand_built_layouts_recover_exactly(rng, covariance_type, dtype, layout):
    mix = random_mixture(rng, 4, 3, covariance_type, spread=4.0)
    x = sample(rng, mix, 300)
    rots = [random_rotation(rng, 3) for _ in range(4)] if layout != "elementwise" else None
    build = {
        "gemm-abs": lambda: gemm_graph(mix, dtype=dtype, rotations=rots),
        "gemm-relu": lambda: gemm_graph(mix, dtype=dtype, activation="relu", rotations=rots),
        "gemm-notrans": lambda: gemm_graph(mix, dtype=dtype, rotations=rots, transB=False),
        "centred": lambda: centred_graph(mix, dtype=dtype, rotations=rots),
        "elementwise": lambda: elementwise_graph(mix, dtype=dtype),
    }[layout]
    model = build()
    # the hand-built graph itself computes the mixture
    out = run_graph(model, x)
    ll = linalg.log_likelihood(mix, x)
    assert np.max(np.abs(out["log_likelihood"] - ll) / np.abs(ll)) < TOL[dtype]
    rec, report = from_onnx(strip(model))
    assert_same_mixture(rec, mix, x, TOL[dtype])
    assert report["exact"] and report["low_confidence"] == []
    assert report["grouping"] == "graph" and report["head"]
    assert rec.covariance_type == covariance_type


def test_reader_result_shape(rng):
    mix = random_mixture(rng, 3, 2)
    net = read_layers(strip(gemm_graph(mix, activation="relu")))
    assert net.n_features == 2 and net.dtype == "float64" and net.input_name == "X"
    assert net.activation == "relu" and net.W.shape == (12, 2)
    assert net.groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    np.testing.assert_allclose(net.head, linalg.component_log_terms(mix), rtol=1e-12)
    assert net.head_kind == "log_joint"


def test_reader_from_path_and_bytes(tmp_path, rng):
    mix = random_mixture(rng, 2, 2)
    model = strip(gemm_graph(mix))
    p = tmp_path / "m.onnx"
    onnx.save(model, str(p))
    a, b = read_layers(str(p)), read_layers(model.SerializeToString())
    np.testing.assert_array_equal(a.W, b.W)
    rec, _ = from_onnx(p)
    assert rec.provenance.source.startswith("gmmnet.recover:onnx")


def test_headless_layer_needs_groups_or_data(rng):
    mix = random_mixture(rng, 3, 2)
    blocks = neuron_blocks(mix)
    W = np.concatenate([w for w, _ in blocks])
    b = np.concatenate([c for _, c in blocks])
    for matmul in (False, True):
        model = strip(layer_graph(W, b, dtype="float64", matmul=matmul))
        net = read_layers(model)
        assert net.groups is None and net.head is None
        np.testing.assert_allclose(net.W, W, rtol=1e-15)
        with pytest.raises(Exception, match="groups"):
            from_onnx(model)
        rec, rep = from_onnx(model, groups=2)
        np.testing.assert_allclose(rec.means, mix.means, rtol=1e-10, atol=1e-10)
        assert rep["grouping"] == "explicit"


# ---------------------------------------------------------------------------
# property test: any K, d, covariance type, rotation per block


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 8),
    d=st.integers(1, 8),
    covariance_type=st.sampled_from(COV_TYPES),
    dtype=st.sampled_from(["float64", "float32"]),
    layout=st.sampled_from(["gemm-abs", "gemm-relu", "centred"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_rotated_blocks_recover_the_mixture(k, d, covariance_type, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    mix = random_mixture(rng, k, d, covariance_type, spread=3.0)
    rots = [random_rotation(rng, d) for _ in range(k)]
    if layout == "centred":
        model = centred_graph(mix, dtype=dtype, rotations=rots)
    else:
        model = gemm_graph(mix, dtype=dtype, activation=layout.split("-")[1], rotations=rots)
    rec, report = from_onnx(strip(model))
    x = sample(rng, mix, 50)
    assert_same_mixture(rec, mix, x, TOL[dtype])
    assert report["exact"]


# ---------------------------------------------------------------------------
# skl2onnx


@pytest.fixture(scope="module")
def blob_data():
    rng = np.random.default_rng(7)
    parts = [rng.standard_normal((200, 3)) @ rng.standard_normal((3, 3)) + 6 * rng.standard_normal(3) for _ in range(3)]
    return np.concatenate(parts)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("bayesian", [False, True])
def test_skl2onnx_mixture_comes_back(blob_data, covariance_type, bayesian):
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    from gmmnet.formats.sklearn import from_sklearn

    cls = BayesianGaussianMixture if bayesian else GaussianMixture
    est = cls(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=300).fit(blob_data)
    model = strip(skl2onnx.to_onnx(est, blob_data[:1].astype(np.float32), target_opset=18))
    rec, report = from_onnx(model)
    ref = from_sklearn(est)
    # skl2onnx writes float32 (and the expanded x² − 2xμ + μ² form for diag/spherical).  Measured:
    # means, covariances ≤ 1.1e-7 relative, effective weights ≤ 8e-7; log-likelihood ≤ 2.4e-4 relative
    # (full: one thin component whose float32 precision factor is what the graph scores with).
    assert_same_mixture(rec, ref, blob_data, 1e-5, ll_tol=1e-3)
    assert rec.covariance_type == covariance_type
    assert report["exact"]


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("bayesian", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_sklearn_mixtures_through_hand_built_graphs(blob_data, covariance_type, bayesian, dtype, activation):
    """GaussianMixture / BayesianGaussianMixture → IR → hand-built graph (rotated blocks) → back."""
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    from gmmnet.formats.sklearn import from_sklearn

    cls = BayesianGaussianMixture if bayesian else GaussianMixture
    est = cls(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=300).fit(blob_data)
    ref = from_sklearn(est)
    rng = np.random.default_rng(3)
    rots = [random_rotation(rng, 3) for _ in range(3)]
    # float32: the centred layout.  An uncentred float32 Gemm rounds b = −Wμ to 6e-8·|b|, which for a
    # thin component far from the origin moves its log-density by ~3e-4 here (the graph's own error,
    # which recovery reproduces faithfully; DESIGN "Numerics").
    if dtype == "float32" and activation == "abs":
        model = centred_graph(ref, dtype=dtype, rotations=rots)
    else:
        model = gemm_graph(ref, dtype=dtype, activation=activation, rotations=rots)
    rec, report = from_onnx(strip(model))
    if dtype == "float32" and activation == "relu":  # uncentred float32: parameters exact, scores as the graph's
        assert_same_mixture(rec, ref, blob_data, TOL[dtype], ll_tol=1e-3)
    else:
        assert_same_mixture(rec, ref, blob_data, TOL[dtype])
    assert rec.covariance_type == covariance_type and report["exact"]


def test_skl2onnx_labels_and_probabilities_agree(blob_data):
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.mixture import GaussianMixture

    est = GaussianMixture(n_components=3, random_state=0).fit(blob_data)
    model = strip(skl2onnx.to_onnx(est, blob_data[:1].astype(np.float32), target_opset=18))
    rec, _ = from_onnx(model)
    out = run_graph(model, blob_data)
    np.testing.assert_allclose(linalg.responsibilities(rec, blob_data), out["probabilities"], atol=1e-4)


# ---------------------------------------------------------------------------
# torch.onnx.export of nn.Sequential(Linear, Abs) and (Linear, ReLU)


def _torch_export(module, d):
    torch = pytest.importorskip("torch")
    dtype = next(module.parameters()).dtype
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # dynamo=False: the TorchScript exporter (torch's default exporter needs onnxscript)
        torch.onnx.export(module, (torch.zeros(2, d, dtype=dtype),), buf, dynamo=False, input_names=["X"],
                          dynamic_axes={"X": {0: "N"}})
    return strip(onnx.load_from_string(buf.getvalue()))


@pytest.mark.torch
@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_torch_export_sequential_linear_abs(rng, activation):
    torch = pytest.importorskip("torch")

    class Abs(torch.nn.Module):
        def forward(self, x):
            return torch.abs(x)

    K, d = 3, 4
    mix = random_mixture(rng, K, d, "full", spread=4.0)
    blocks = neuron_blocks(mix, [random_rotation(rng, d) for _ in range(K)])
    W = np.concatenate([w for w, _ in blocks])
    b = np.concatenate([c for _, c in blocks])
    if activation == "relu":
        W, b = np.concatenate([W, -W]), np.concatenate([b, -b])
        groups = [list(range(k * d, (k + 1) * d)) + list(range(K * d + k * d, K * d + (k + 1) * d)) for k in range(K)]
    else:
        groups = d
    lin = torch.nn.Linear(d, W.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
        lin.bias.copy_(torch.from_numpy(b))
    module = torch.nn.Sequential(lin, Abs() if activation == "abs" else torch.nn.ReLU())
    model = _torch_export(module, d)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Abs" if activation == "abs" else "Relu"]
    rec, report = from_onnx(model, groups=groups)
    np.testing.assert_allclose(rec.means, mix.means, rtol=1e-9, atol=1e-9)
    assert rel(covs(rec), covs(mix)) < 1e-9
    assert report["exact"] and report["grouping"] == "explicit"


# ---------------------------------------------------------------------------
# gmmnet's own exporter


def _exporter():
    from gmmnet.formats.onnx import to_onnx

    return to_onnx


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("bayesian", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_gmmnet_exporter_round_trip(blob_data, covariance_type, bayesian, dtype, activation):
    to_onnx = _exporter()
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    from gmmnet.formats.sklearn import from_sklearn

    cls = BayesianGaussianMixture if bayesian else GaussianMixture
    est = cls(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=300).fit(blob_data)
    ref = from_sklearn(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = strip(to_onnx(ref, activation=activation, dtype=dtype))
    rec, report = from_onnx(model)
    assert_same_mixture(rec, ref, blob_data, TOL[dtype])
    assert report["exact"]


@pytest.mark.parametrize("bayesian", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gmmnet_exporter_graph_with_rotated_blocks(blob_data, bayesian, dtype):
    """gmmnet's own full graph with every component's neuron block rotated (R_k W_k, R_k b_k)."""
    to_onnx = _exporter()
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    from gmmnet.formats.sklearn import from_sklearn

    cls = BayesianGaussianMixture if bayesian else GaussianMixture
    ref = from_sklearn(cls(n_components=3, covariance_type="full", random_state=0, max_iter=300).fit(blob_data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = strip(to_onnx(ref, dtype=dtype))
    inits = {i.name: i for i in model.graph.initializer}
    rng = np.random.default_rng(3)
    for k in range(3):  # one Gemm per component over [x, 1]: rows (w_i, b_i)
        name = f"layer0/c{k}/W"
        Wb = numpy_helper.to_array(inits[name])
        assert Wb.shape == (3, 4)
        R = random_rotation(rng, 3)
        inits[name].CopyFrom(numpy_helper.from_array((R @ Wb.astype(np.float64)).astype(Wb.dtype), name))
    rec, report = from_onnx(model)
    assert_same_mixture(rec, ref, blob_data, TOL[dtype])
    assert report["exact"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_many_components_round_trip(rng, dtype, covariance_type):
    """K = 48 components in d = 12 (576 neurons): the reader keeps neuron-level values sparse."""
    to_onnx = _exporter()
    mix = random_mixture(rng, 48, 12, covariance_type, spread=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = strip(to_onnx(mix, dtype=dtype))
    net = read_layers(model)
    assert len(net.groups) == 48
    rec, report = from_onnx(model)
    assert_same_mixture(rec, mix, sample(rng, mix, 200), TOL[dtype])
    assert report["exact"] and rec.covariance_type == covariance_type


def test_orthogonal_fast_path_matches_the_svd():
    """Square blocks with orthogonal rows are read without an SVD; rotated ones with it: same Gaussian."""
    from gmmnet.recover import ORTHO_TOL, _orthogonal_block

    rng = np.random.default_rng(5)
    mix = random_mixture(rng, 1, 6, "full", spread=5.0, cond=1e3)
    (W, b), = neuron_blocks(mix)
    fast = _orthogonal_block(W, b, "float64")
    assert fast is not None
    mean, vecs, vals = linalg.gaussian_from_neurons(W, b)
    np.testing.assert_allclose(fast[0], mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast[2], vals, rtol=1e-12)
    np.testing.assert_allclose(linalg.covariance(fast[1], fast[2]), linalg.covariance(vecs, vals), rtol=1e-10, atol=1e-12)
    R = random_rotation(rng, 6)
    assert _orthogonal_block(R @ W, R @ b, "float64") is None  # not orthogonal rows: the SVD path
    # float32-rounded rows: accepted within ORTHO_TOL, covariance within a few times that
    W32, b32 = W.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    fast32 = _orthogonal_block(W32, b32, "float32")
    assert fast32 is not None
    m2, v2, l2 = linalg.gaussian_from_neurons(W32, b32)
    assert rel(linalg.covariance(fast32[1], fast32[2]), linalg.covariance(v2, l2)) < 10 * ORTHO_TOL["float32"]
    assert rel(fast32[0], m2) < 1e-12


@pytest.mark.parametrize("centering", ["none", "global", "component"])
def test_gmmnet_exporter_centred_forms(rng, centering):
    to_onnx = _exporter()
    mix = random_mixture(rng, 3, 4, "full", spread=50.0, cond=1e4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = strip(to_onnx(mix, dtype="float32", centering=centering))
    rec, _ = from_onnx(model)
    assert_same_mixture(rec, mix, sample(rng, mix, 200), TOL["float32"])


# ---------------------------------------------------------------------------
# what does not fit


def _graph(nodes, inits=(), d=3, out=("Y", TensorProto.FLOAT, None), inputs=None):
    x = inputs or [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", d])]
    y = helper.make_tensor_value_info(out[0], out[1], out[2])
    g = helper.make_graph(nodes, "g", x, [y], initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _w(name, shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


@pytest.mark.parametrize(
    "nodes,inits,needle",
    [
        ([helper.make_node("Softmax", ["X"], ["Y"], axis=1, name="first_softmax")], [],
         "Softmax 'first_softmax'"),
        ([helper.make_node("Unsqueeze", ["X", "ax"], ["X4"], name="u"),
          helper.make_node("Conv", ["X4", "K"], ["Y"], name="the_conv")],
         [numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "ax"), _w("K", (1, 1, 1, 1))],
         "Conv 'the_conv'"),
        ([helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=1, name="g"),
          helper.make_node("Sigmoid", ["z"], ["Y"], name="sig")],
         [_w("W", (4, 3)), _w("b", (4,), 1)], "Sigmoid 'sig'"),
        ([helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=1, name="g"),
          helper.make_node("Abs", ["z"], ["a"], name="abs"),
          helper.make_node("Tanh", ["a"], ["Y"], name="squash")],
         [_w("W", (4, 3)), _w("b", (4,), 1)], "Tanh 'squash'"),
        ([helper.make_node("Gemm", ["X", "X", "b"], ["Y"], transB=1, name="selfgemm")],
         [_w("b", (3,), 1)], "Gemm 'selfgemm'"),
        ([helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=1, name="g"),
          helper.make_node("Mul", ["z", "X"], ["Y"], name="crossmul")],
         [_w("W", (3, 3)), _w("b", (3,), 1)], "Mul 'crossmul'"),
        ([helper.make_node("ReduceSum", ["X", "ax0"], ["Y"], name="batchsum")],
         [numpy_helper.from_array(np.array([0], dtype=np.int64), "ax0")], "ReduceSum 'batchsum'"),
        ([helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=1, name="g"),
          helper.make_node("Abs", ["z"], ["a"], name="abs"),
          helper.make_node("ArgMax", ["a"], ["Y"], axis=1, name="argmax_of_neurons")],
         [_w("W", (4, 3)), _w("b", (4,), 1)], "ArgMax 'argmax_of_neurons'"),
    ],
)
def test_unsupported_graphs_name_the_node(nodes, inits, needle):
    model = _graph(nodes, inits)
    with pytest.raises(UnsupportedModelError, match=needle):
        read_layers(model)


def test_unnamed_node_is_named_by_its_output():
    model = _graph([helper.make_node("Softmax", ["X"], ["Y"], axis=1)])
    with pytest.raises(UnsupportedModelError, match="Softmax 'Y'"):
        read_layers(model)


def test_no_neurons_is_unsupported():
    model = _graph([helper.make_node("Gemm", ["X", "W"], ["Y"], transB=1, name="g")], [_w("W", (4, 3))])
    with pytest.raises(UnsupportedModelError, match="no Abs or ReLU"):
        read_layers(model)


def test_integer_input_and_two_inputs_are_unsupported():
    xi = [helper.make_tensor_value_info("X", TensorProto.INT64, ["N", 3])]
    with pytest.raises(UnsupportedModelError, match="element type INT64"):
        read_layers(_graph([helper.make_node("Abs", ["X"], ["Y"])], inputs=xi))
    two = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in ("X", "Z")]
    with pytest.raises(UnsupportedModelError, match="one data input"):
        read_layers(_graph([helper.make_node("Add", ["X", "Z"], ["Y"])], inputs=two))


def test_head_with_positive_and_negative_squares_is_not_a_gaussian(rng):
    W = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    nodes = [
        helper.make_node("Gemm", ["X", "W"], ["z"], transB=1, name="g"),
        helper.make_node("Abs", ["z"], ["a"], name="abs"),
        helper.make_node("Mul", ["a", "a"], ["a2"], name="sq"),
        helper.make_node("MatMul", ["a2", "G"], ["Y0"], name="mix"),
        helper.make_node("Softmax", ["Y0"], ["Y"], axis=1, name="sm"),
    ]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.array([[-0.5], [0.5]], np.float32), "G")]
    with pytest.raises(UnsupportedModelError, match="not a Gaussian"):
        read_layers(_graph(nodes, inits, d=2))


def test_truncated_component_with_residual_term(rng):
    """−½[Σ_i (v_iᵀ(x−μ))²/λ_i + (‖x−μ‖² − Σ_i (v_iᵀ(x−μ))²)/σ²] + c: squares of both signs."""
    d, r, sigma2 = 4, 2, 0.7
    V = random_rotation(rng, d)[:r]
    lam = np.array([3.0, 1.5])
    mu = rng.normal(size=d) * 3
    comp = Component(mean=mu, eigenvectors=V, eigenvalues=lam, weight=1.0, residual_variance=sigma2)
    mix = Mixture(n_features=d, components=[comp])
    c = linalg.component_log_terms(mix)
    coef = -0.5 * (1.0 / lam - 1.0 / sigma2)
    inits = [
        numpy_helper.from_array(mu, "mu"),
        numpy_helper.from_array(V, "V"),
        numpy_helper.from_array(-(V @ mu), "bv"),
        numpy_helper.from_array(coef.reshape(r, 1), "coef"),
        numpy_helper.from_array(np.array([[-0.5 / sigma2]]), "iso"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"),
        numpy_helper.from_array(c, "c"),
    ]
    nodes = [
        helper.make_node("Sub", ["X", "mu"], ["xc"], name="centre"),
        helper.make_node("ReduceSumSquare", ["xc", "ax1"], ["r2"], keepdims=1, name="radius"),
        helper.make_node("Gemm", ["X", "V", "bv"], ["z"], transB=1, name="pcs"),
        helper.make_node("Abs", ["z"], ["a"], name="abs"),
        helper.make_node("Mul", ["a", "a"], ["a2"], name="sq"),
        helper.make_node("MatMul", ["a2", "coef"], ["t1"], name="pc_terms"),
        helper.make_node("MatMul", ["r2", "iso"], ["t2"], name="iso_term"),
        helper.make_node("Add", ["t1", "t2"], ["t"], name="sum"),
        helper.make_node("Add", ["t", "c"], ["logits"], name="const"),
        helper.make_node("ReduceLogSumExp", ["logits", "ax1"], ["ll"], keepdims=0, name="lse"),
    ]
    x = helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", d])
    y = helper.make_tensor_value_info("ll", TensorProto.DOUBLE, ["N"])
    model = helper.make_model(helper.make_graph(nodes, "trunc", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    pts = rng.normal(size=(50, d)) * 2 + mu
    np.testing.assert_allclose(run_graph(model, pts)["ll"], linalg.log_likelihood(mix, pts), rtol=1e-12)
    rec, report = from_onnx(model)
    np.testing.assert_allclose(rec.means, mix.means, rtol=1e-10)
    assert rel(covs(rec), covs(mix)) < 1e-10
    np.testing.assert_allclose(linalg.log_likelihood(rec, pts), linalg.log_likelihood(mix, pts), rtol=1e-10)
    # read by its pattern alone (no metadata here): the kept directions and σ² come back
    assert rec.components[0].rank == r and abs(rec.components[0].residual_variance - sigma2) <= 1e-10 * sigma2
    assert any("rank-truncated" in n for n in report["notes"]) and report["readback"]["checked"]
    # the generic walk re-expresses the head as eigen-neurons
    assert any("both signs" in n for n in read_layers(model).notes)


def test_two_level_network_recovers_the_top_level(rng):
    """X → Gemm → Abs (level 0, 4 neurons) → Gemm → Abs → square-sum head (level 1, over 4 features)."""
    W0 = rng.normal(size=(4, 2))
    b0 = rng.normal(size=4)
    top = random_mixture(rng, 2, 4, "full", spread=2.0)
    blocks = neuron_blocks(top)
    W1 = np.concatenate([w for w, _ in blocks])
    b1 = np.concatenate([c for _, c in blocks])
    G = np.kron(np.eye(2), np.ones((4, 1)))
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (W0, "W0"), (b0, "b0"), (W1, "W1"), (b1, "b1"), (G, "G"), (np.array(-0.5), "mhalf"),
        (linalg.component_log_terms(top), "c")]]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"))
    nodes = [
        helper.make_node("Gemm", ["X", "W0", "b0"], ["z0"], transB=1, name="l0/gemm"),
        helper.make_node("Abs", ["z0"], ["a0"], name="l0/abs"),
        helper.make_node("Gemm", ["a0", "W1", "b1"], ["z1"], transB=1, name="l1/gemm"),
        helper.make_node("Abs", ["z1"], ["a1"], name="l1/abs"),
        helper.make_node("Mul", ["a1", "a1"], ["sq"], name="sq"),
        helper.make_node("MatMul", ["sq", "G"], ["d2"], name="groups"),
        helper.make_node("Mul", ["d2", "mhalf"], ["h"], name="scale"),
        helper.make_node("Add", ["h", "c"], ["logits"], name="const"),
        helper.make_node("Softmax", ["logits"], ["resp"], axis=1, name="softmax"),
    ]
    x = helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", 2])
    y = helper.make_tensor_value_info("resp", TensorProto.DOUBLE, ["N", 2])
    model = helper.make_model(helper.make_graph(nodes, "two", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    net = read_layers(model)
    assert len(net.layers) == 2 and net.layers[0].W.shape == (4, 2) and net.W.shape == (8, 4)
    np.testing.assert_allclose(net.layers[0].W, W0)
    rec, report = from_onnx(model)
    assert rec.n_features == 4
    np.testing.assert_allclose(rec.means, top.means, rtol=1e-10, atol=1e-12)
    assert any("level 1" in n for n in report["notes"])


def test_sparse_row_operators_match_dense():
    """The sparse row maps used for neuron-level values agree with the dense einsum path."""
    import scipy.sparse as sp

    from gmmnet.formats.onnx.walk import _Lin, _matmul_rows, _sum_rows

    rng = np.random.default_rng(9)
    for shape, B in (((3, 4), rng.standard_normal((4, 5))), ((2, 3, 4), rng.standard_normal((2, 4, 6))),
                     ((1, 3, 4), rng.standard_normal((2, 4, 5)))):
        rows = int(np.prod(shape))
        dense = rng.standard_normal((rows, 7))
        ref = _Lin(-1, shape, dense, np.zeros(rows)).matmul(B)
        T, new_shape = _matmul_rows(shape, B)
        assert new_shape == ref.shape
        np.testing.assert_allclose(T @ dense, ref.W, rtol=1e-12, atol=1e-12)
        # the same through a sparse-valued table
        out = _Lin(0, shape, sp.csr_array(dense), np.zeros(rows)).matmul(B)
        np.testing.assert_allclose(out.W.toarray(), ref.W, rtol=1e-12, atol=1e-12)
    shape = (2, 3, 4)
    dense = rng.standard_normal((24, 5))
    for axes in ([0], [1, 2], [0, 1, 2]):
        ref = _Lin(-1, shape, dense, np.zeros(24)).reduce_sum(axes, keepdims=False)
        np.testing.assert_allclose(_sum_rows(shape, axes) @ dense, ref.W, rtol=1e-12, atol=1e-12)
