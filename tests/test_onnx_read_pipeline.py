"""Reading back graphs of a mixture behind affine preprocessing (issue 14, the reader's side).

A Pipeline's affine steps z = A x + c fold into the first layer: a neuron (w, b) over z becomes
(Aᵀw, b + wᵀc) over x.  The graphs here are built that way by hand (as gmmnet's exporter writes
them, with the InputTransform JSON under the metadata key ``input_transform``), and by skl2onnx
from a Pipeline of a scaler or PCA and a GaussianMixture.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from mixtures import rel_err
from onnx import TensorProto, helper, numpy_helper
from test_onnx_read import neuron_blocks, run_graph

from gmmnet import linalg
from gmmnet.cli import main
from gmmnet.formats.onnx import from_onnx
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.ir import InputTransform, TransformStep
from gmmnet.tolerances import tol

skl2onnx = pytest.importorskip("skl2onnx")

from sklearn.datasets import load_breast_cancer, load_iris  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402


def transform_of(pre, d: int) -> InputTransform:
    """z = A x + c of a fitted affine step, read off by applying it to the unit vectors."""
    c = pre.transform(np.zeros((1, d)))[0]
    A = (pre.transform(np.eye(d)) - c).T
    return InputTransform(matrix=A, offset=c, steps=[TransformStep(name=type(pre).__name__.lower(),
                                                                   cls=f"sklearn.{type(pre).__name__}")])


def folded_graph(mix, t: InputTransform, *, dtype="float64", metadata=True) -> onnx.ModelProto:
    """X → Gemm(W A, b + W c) → Abs → squares → group sums → −½ D² + c_k → head (the mixture over z = A x + c)."""
    f = np.float32 if dtype == "float32" else np.float64
    tp = TensorProto.FLOAT if dtype == "float32" else TensorProto.DOUBLE
    blocks = neuron_blocks(mix)
    W = np.concatenate([w for w, _ in blocks])
    b = np.concatenate([bb for _, bb in blocks])
    Wx, bx = W @ t.matrix, b + W @ t.offset
    K = mix.n_components
    G = np.zeros((W.shape[0], K))
    r0 = 0
    for k, (w, _) in enumerate(blocks):
        G[r0:r0 + w.shape[0], k] = 1.0
        r0 += w.shape[0]
    inits = [numpy_helper.from_array(Wx.astype(f), "W"), numpy_helper.from_array(bx.astype(f), "b"),
             numpy_helper.from_array(G.astype(f), "G"), numpy_helper.from_array(np.array(-0.5, dtype=f), "mhalf"),
             numpy_helper.from_array(linalg.component_log_terms(mix).astype(f), "c"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")]
    nodes = [
        helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=1, name="layer/gemm"),
        helper.make_node("Abs", ["z"], ["a"], name="layer/abs"),
        helper.make_node("Mul", ["a", "a"], ["a2"], name="head/square"),
        helper.make_node("MatMul", ["a2", "G"], ["d2"], name="head/groups"),
        helper.make_node("Mul", ["d2", "mhalf"], ["hd2"], name="head/scale"),
        helper.make_node("Add", ["hd2", "c"], ["logits"], name="head/const"),
        helper.make_node("ReduceLogSumExp", ["logits", "axes1"], ["log_likelihood"], keepdims=0, name="head/lse"),
    ]
    x = helper.make_tensor_value_info("X", tp, ["N", t.n_inputs])
    y = helper.make_tensor_value_info("log_likelihood", tp, ["N"])
    m = helper.make_model(helper.make_graph(nodes, "folded", [x], [y], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 18)])
    if metadata:
        m.metadata_props.add(key="input_transform", value=t.model_dump_json())
    onnx.checker.check_model(m)
    return m


def pipeline(pre, X, k=3, cov="full"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_pipeline(pre, GaussianMixture(k, covariance_type=cov, random_state=0)).fit(X)


RAW = load_breast_cancer().data  # raw features spanning 1e-3 .. 1e3
IRIS = load_iris().data


def steps():
    return {"scaler": StandardScaler(), "minmax": MinMaxScaler(), "pca": PCA(4, random_state=0),
            "pca-whiten": PCA(4, whiten=True, random_state=0)}


# ---------------------------------------------------------------------------
# gmmnet's graphs (metadata input_transform): the transform comes back


@pytest.mark.parametrize("step", ["scaler", "minmax", "pca", "pca-whiten"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_folded_graph_gives_back_the_pipeline(step, dtype):
    pipe = pipeline(steps()[step], RAW)
    t = transform_of(pipe[0], RAW.shape[1])
    mix = from_sklearn(pipe[-1])
    model = folded_graph(mix, t, dtype=dtype)
    rec, report = from_onnx(model)
    assert rec.input_transform is not None and rec.n_features == t.n_outputs
    assert np.allclose(rec.input_transform.matrix, t.matrix, rtol=0, atol=0) and rec.input_transform.steps == t.steps
    # the recovered model scores raw rows like the pipeline
    got = linalg.log_likelihood(rec, RAW)
    limit = tol(f"readback_{dtype}")
    if dtype == "float64":
        assert rel_err(got, pipe.score_samples(RAW)) <= limit
    else:  # the graph sees the float32-rounded rows
        xr = RAW.astype(np.float32).astype(np.float64)
        assert rel_err(linalg.log_likelihood(rec, xr), pipe.score_samples(xr)) <= limit
    assert report["readback"]["checked"] and report["readback"]["max_error"] <= limit
    assert any("recorded in the metadata (input_transform)" in n for n in report["reader"]["notes"])


def test_metadata_that_does_not_fit_the_layer_is_ignored():
    pipe = pipeline(StandardScaler(), IRIS)
    t = transform_of(pipe[0], 4)
    model = folded_graph(from_sklearn(pipe[-1]), t)
    wrong = InputTransform(matrix=np.eye(4)[:3], offset=np.zeros(3))  # claims the layer only uses 3 features
    model.metadata_props[0].value = wrong.model_dump_json()
    rec, report = from_onnx(model)
    assert rec.input_transform is None
    assert any("does not fit the first layer" in n for n in report["reader"]["notes"])
    assert rel_err(linalg.log_likelihood(rec, IRIS), pipe.score_samples(IRIS)) <= tol("readback_float64")
    model.metadata_props[0].value = "{not json"
    rec, report = from_onnx(model)
    assert rec.input_transform is None and any("not a valid input transform" in n for n in report["reader"]["notes"])


# ---------------------------------------------------------------------------
# stripped graphs: Gaussians in raw coordinates


def test_stripped_invertible_fold_reads_the_raw_gaussians():
    pipe = pipeline(StandardScaler(), RAW, k=2)
    t = transform_of(pipe[0], RAW.shape[1])
    mix = from_sklearn(pipe[-1])
    rec, report = from_onnx(folded_graph(mix, t, metadata=False))
    assert rec.input_transform is None
    A, c = t.matrix, t.offset
    Ainv = np.linalg.inv(A)
    for got, ref in zip(rec.components, mix.components):  # μ' = A⁻¹(μ − c), Σ' = A⁻¹ΣA⁻ᵀ
        mu = Ainv @ (ref.mean - c)
        assert np.max(np.abs(got.mean - mu) / (np.abs(mu) + np.diag(Ainv))) <= 1e-9
        cov = Ainv @ linalg.covariance(ref.eigenvectors, ref.eigenvalues) @ Ainv.T
        sd = np.sqrt(np.diag(cov))
        assert np.max(np.abs(linalg.covariance(got.eigenvectors, got.eigenvalues) - cov) / np.outer(sd, sd)) <= 1e-9
    # the graph scores the density of z, log p_z(A x + c) = log p_x(x) − log|det A|: the shared log-constant
    logdet = float(np.linalg.slogdet(A)[1])
    assert abs(report["log_constant"] + logdet) <= 1e-9 * abs(logdet)
    assert np.allclose(rec.weights, mix.weights, rtol=1e-9)
    assert rel_err(linalg.log_likelihood(rec, RAW), pipe.score_samples(RAW)) <= tol("readback_float64")
    jsonschema = pytest.importorskip("jsonschema")  # the report's new fields are in its schema
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).parent.parent / "schemas" / "gmmnet-recovery-report.schema.json").read_text())
    jsonschema.validate(json.loads(json.dumps(report, default=float)), schema)
    assert set(report["readback"]) <= set(schema["properties"]["readback"]["properties"])


@pytest.mark.parametrize("whiten", [False, True])
def test_stripped_pca_fold_reads_the_span_of_the_weights(whiten):
    pipe = pipeline(PCA(4, whiten=whiten, random_state=0), RAW)
    t = transform_of(pipe[0], RAW.shape[1])
    rec, report = from_onnx(folded_graph(from_sklearn(pipe[-1]), t, metadata=False))
    Q = rec.input_transform.matrix
    assert Q.shape == (4, RAW.shape[1]) and np.allclose(Q @ Q.T, np.eye(4), atol=1e-12)
    assert np.allclose(rec.input_transform.offset, 0.0)
    # Q spans the rows of A: the Gaussians live on the directions the pipeline keeps
    assert np.allclose(t.matrix @ Q.T @ Q, t.matrix, atol=1e-10 * np.abs(t.matrix).max())
    got = linalg.log_likelihood(rec, RAW)
    assert rel_err(got, pipe.score_samples(RAW)) <= tol("readback_float64")
    assert any("span only 4 of the 30 input directions" in n for n in report["reader"]["notes"])


# ---------------------------------------------------------------------------
# skl2onnx's pipelines: the preprocessing ops compose into the first layer


@pytest.mark.parametrize("step", ["scaler", "minmax", "pca", "pca-whiten", "scaler+pca"])
@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_skl2onnx_pipelines(step, cov):
    pre = make_pipeline(StandardScaler(), PCA(4, random_state=0)) if step == "scaler+pca" else steps()[step]
    pipe = pipeline(pre, RAW, cov=cov)
    gmm = pipe[-1]
    model = skl2onnx.to_onnx(pipe, RAW[:1], options={id(gmm): {"score_samples": True}})
    rec, report = from_onnx(model)
    z = RAW  # linalg applies rec.input_transform
    assert (rec.input_transform is not None) == ("pca" in step)
    assert rel_err(linalg.log_likelihood(rec, z), pipe.score_samples(RAW)) <= tol("readback_float64")
    assert report["readback"]["checked"] and report["readback"]["max_error"] <= tol("readback_float64")
    assert rel_err(linalg.log_likelihood(rec, z), run_graph(model, RAW)["score_samples"].ravel()) <= tol("readback_float64")


def test_cli_to_gmm_gives_back_the_transform(tmp_path, capsys):
    from gmmnet import io

    pipe = pipeline(PCA(3, whiten=True, random_state=0), IRIS)
    path, out = tmp_path / "pipe.onnx", tmp_path / "back.json"
    onnx.save(folded_graph(from_sklearn(pipe[-1]), transform_of(pipe[0], 4)), str(path))
    assert main(["to-gmm", str(path), "-o", str(out)]) == 0
    back = io.load_model(str(out))
    assert back.input_transform is not None and back.n_features == 3
    got = linalg.log_likelihood(back, IRIS)
    assert rel_err(got, pipe.score_samples(IRIS)) <= tol("readback_float64")


# ---------------------------------------------------------------------------
# hierarchies behind a preprocessing


def prepend_affine(model: onnx.ModelProto, t: InputTransform) -> onnx.ModelProto:
    """The graph with z = x Aᵀ + c computed in front of it (MatMul + Add): the reader folds it into level 0."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    old = g.input[0]
    elem = old.type.tensor_type.elem_type
    f = np.float32 if elem == TensorProto.FLOAT else np.float64
    for node in g.node:
        node.input[:] = ["z_in" if i == old.name else i for i in node.input]
    g.initializer.extend([numpy_helper.from_array(t.matrix.T.astype(f), "pre/At"),
                          numpy_helper.from_array(t.offset.astype(f), "pre/c")])
    pre = [helper.make_node("MatMul", [old.name, "pre/At"], ["pre/xa"], name="pre/matmul"),
           helper.make_node("Add", ["pre/xa", "pre/c"], ["z_in"], name="pre/add")]
    nodes = pre + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    x = helper.make_tensor_value_info(old.name, elem, ["N", t.n_inputs])
    g.input.remove(old)
    g.input.insert(0, x)
    del m.metadata_props[:]
    return m


@pytest.mark.parametrize("metadata", [True, False])
def test_hierarchy_behind_a_pca(metadata):
    """Level 0 over z: with the metadata any affine map; stripped, an orthonormal PCA (its rows stay orthogonal)."""
    from gmmnet.formats.onnx import read_deep, to_onnx
    from gmmnet.hierarchy import HierarchicalGaussianMixture

    pre = PCA(4, whiten=metadata, random_state=0).fit(RAW)
    t = transform_of(pre, RAW.shape[1])
    z = pre.transform(RAW)
    h = HierarchicalGaussianMixture("3:full,2:full", random_state=0).fit(z)
    model = prepend_affine(to_onnx(h.to_ir(), dtype="float64", outputs=("log_likelihood",)), t)
    if metadata:
        model.metadata_props.add(key="input_transform", value=t.model_dump_json())
    back, report = read_deep.from_onnx(model)
    assert back.kind == "hierarchy" and back.input_transform is not None
    if metadata:
        assert np.array_equal(back.input_transform.matrix, t.matrix)
    else:  # the span of the first layer: an orthonormal basis of A's rows
        Q = back.input_transform.matrix
        assert np.allclose(Q @ Q.T, np.eye(4), atol=1e-12) and np.allclose(t.matrix @ Q.T @ Q, t.matrix, atol=1e-9)
    assert rel_err(read_deep.log_likelihood(back, RAW), h.score_samples(z)) <= tol("readback_float64")
    assert report["readback"]["checked"] and report["readback"]["max_error"] <= tol("readback_float64")


def test_stripped_hierarchy_behind_a_scaler_is_refused_with_a_hint():
    from gmmnet.errors import UnsupportedModelError
    from gmmnet.formats.onnx import read_deep, to_onnx
    from gmmnet.hierarchy import HierarchicalGaussianMixture

    pre = StandardScaler().fit(IRIS)
    h = HierarchicalGaussianMixture("3:full,2:full", random_state=0).fit(pre.transform(IRIS))
    model = prepend_affine(to_onnx(h.to_ir(), dtype="float64", outputs=("log_likelihood",)), transform_of(pre, 4))
    with pytest.raises(UnsupportedModelError, match="reads back only with its input_transform metadata"):
        read_deep.from_onnx(model)
