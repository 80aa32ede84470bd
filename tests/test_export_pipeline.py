"""A mixture behind an input transform z = A x + c (a Pipeline's affine steps), folded into the first layer
(issue 14, export side): the graph takes raw x and its outputs are the pipeline's.

The transforms are composed here from fitted scikit-learn steps (the library's Pipeline → IR lives in
gmmnet.formats.sklearn); the accuracy rows are gmmnet.tolerances' ``pipeline_*``.  Errors:
log-likelihood max|Δ|/(1+|ref|), responsibilities max|Δ|; a float32 graph is measured against the
pipeline evaluated on the float32-rounded input.
"""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mixtures import random_mixture, rel_err, sample

from gmmnet import linalg
from gmmnet.errors import UsageError
from gmmnet.formats.onnx import plan_export, run, to_onnx
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.hierarchy import HierarchicalGaussianMixture
from gmmnet.ir import Hierarchy, InputTransform, TransformStep
from gmmnet.tolerances import tol

COV_TYPES = ("full", "tied", "diag", "spherical")
U64 = 2.0**-53
#: (log-likelihood, responsibilities) rows of a graph behind an input transform, by dtype
TOL = {"float32": (tol("pipeline_float32_ll"), tol("pipeline_float32_resp")),
       "float64": (tol("pipeline_float64_ll"), tol("pipeline_float64_resp"))}


# ---------------------------------------------------------------------------
# z = A x + c from fitted steps


def _affine(step, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(A_s, c_s) of one fitted affine step over d inputs."""
    name = type(step).__name__
    if name == "StandardScaler":
        mean = step.mean_ if step.with_mean else np.zeros(d)  # mean_ is set even with with_mean=False
        scale = step.scale_ if step.with_std else np.ones(d)
        return np.diag(1.0 / scale), -mean / scale
    if name == "MinMaxScaler":
        return np.diag(step.scale_), step.min_
    if name == "MaxAbsScaler":
        return np.diag(1.0 / step.scale_), np.zeros(d)
    if name == "RobustScaler":
        centre = step.center_ if step.with_centering else np.zeros(d)
        scale = step.scale_ if step.with_scaling else np.ones(d)
        return np.diag(1.0 / scale), -centre / scale
    if name == "PCA":
        A = step.components_ / (np.sqrt(step.explained_variance_)[:, None] if step.whiten else 1.0)
        return A, -A @ step.mean_
    if name == "TruncatedSVD":
        return step.components_, np.zeros(step.components_.shape[0])
    raise KeyError(name)


def transform_of(pipe, d: int) -> InputTransform:
    A, c = np.eye(d), np.zeros(d)
    for name, step in pipe.steps[:-1]:
        As, cs = _affine(step, A.shape[0])
        A, c = As @ A, As @ c + cs
    return InputTransform(matrix=A, offset=c, steps=[
        TransformStep(name=n, cls=f"{type(s).__module__}.{type(s).__name__}") for n, s in pipe.steps[:-1]])


def _steps():
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    return {"standard": StandardScaler(), "standard_nomean": StandardScaler(with_mean=False), "minmax": MinMaxScaler(),
            "maxabs": MaxAbsScaler(), "robust": RobustScaler(), "pca": PCA(10, random_state=0),
            "pca_whiten": PCA(10, whiten=True, random_state=0), "svd": TruncatedSVD(10, random_state=0)}


@functools.lru_cache(maxsize=None)
def raw_data() -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data  # features spanning 1e-3 to 1e4


@functools.lru_cache(maxsize=None)
def fitted(step: str, covariance_type: str):
    from sklearn.mixture import GaussianMixture
    from sklearn.pipeline import make_pipeline

    x = raw_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(_steps()[step], GaussianMixture(3, covariance_type=covariance_type, random_state=0)).fit(x)
    mix = from_sklearn(pipe[-1]).model_copy(update={"input_transform": transform_of(pipe, x.shape[1])})
    return pipe, mix


def _meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def _label_mismatches(pipe, xr, label) -> int:
    """Rows whose label differs from predict, not counting rows whose top two log-joints tie within 1e-6."""
    mix = from_sklearn(pipe[-1])
    lj = linalg.log_joint(mix, pipe[:-1].transform(xr))
    top2 = np.sort(lj, axis=1)[:, -2:]
    return int(np.sum((label != pipe.predict(xr)) & (top2[:, 1] - top2[:, 0] > 1e-6)))


# ---------------------------------------------------------------------------
# every step type × covariance type, on raw breast_cancer


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("step", list(_steps()))
def test_graph_outputs_are_the_pipelines(step, covariance_type):
    pipe, mix = fitted(step, covariance_type)
    x = raw_data()
    for dtype in ("float32", "float64"):
        model = to_onnx(mix, dtype=dtype, activation="relu" if step == "robust" else "abs")
        xin = x.astype(dtype)
        xr = xin.astype(np.float64)
        got = run(model, xin)
        e_ll = rel_err(got["log_likelihood"], pipe.score_samples(xr))
        e_resp = float(np.max(np.abs(got["responsibilities"] - pipe.predict_proba(xr))))
        assert e_ll <= TOL[dtype][0], (dtype, e_ll)
        assert e_resp <= TOL[dtype][1], (dtype, e_resp)
        assert _label_mismatches(pipe, xr, got["label"]) == 0
        if dtype == "float32":  # the accurate opt-in keeps the tighter row
            accurate = run(to_onnx(mix, compute="float64", activation="relu" if step == "robust" else "abs"), xin)
            e_acc = float(np.max(np.abs(accurate["responsibilities"] - pipe.predict_proba(xr))))
            assert e_acc <= tol("float32_resp"), e_acc
        assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == x.shape[1]  # raw features in


def test_centring_before_the_fold_keeps_float32_accurate():
    """Raw data far from 0 (means ~1e4, scales spanning cond 1e10) behind a StandardScaler: centred on the
    preimages of the means before the product, float32 arithmetic keeps its accuracy; folded without it, not."""
    from sklearn.mixture import GaussianMixture
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from test_onnx_export import dataset

    x = dataset("scaled_far")
    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0)).fit(x)
    mix = from_sklearn(pipe[-1]).model_copy(update={"input_transform": transform_of(pipe, x.shape[1])})
    xin = x.astype(np.float32)
    ref = linalg.log_likelihood(from_sklearn(pipe[-1]), pipe[:-1].transform(xin.astype(np.float64)))
    errs = {}
    for centering in ("none", "component"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = to_onnx(mix, compute="float32", centering=centering)
        errs[centering] = rel_err(run(model, xin)["log_likelihood"], ref)
    assert errs["component"] <= TOL["float32"][0] < 1e-2 < errs["none"], errs
    assert rel_err(run(to_onnx(mix), xin)["log_likelihood"], ref) <= TOL["float32"][0]  # the default


# ---------------------------------------------------------------------------
# the graph: one Linear+Abs per neuron, in raw units; the transform in the metadata


def test_neurons_are_folded_not_added(rng):
    mix = random_mixture(rng, 3, 4, "full")
    A, c = rng.standard_normal((4, 6)), rng.standard_normal(4)
    folded = mix.model_copy(update={"input_transform": InputTransform(matrix=A, offset=c)})
    for centering in ("none", "global", "component"):
        plain = to_onnx(mix, dtype="float64", centering=centering)
        graph = to_onnx(folded, dtype="float64", centering=centering)
        assert [n.op_type for n in graph.graph.node] == [n.op_type for n in plain.graph.node], centering
    W = {i.name: onnx.numpy_helper.to_array(i) for i in to_onnx(folded, dtype="float64", centering="none").graph.initializer}
    # one Gemm per component over [x, 1]: rows (w', b') with w' = Aᵀw in raw units and b' = b + wᵀc
    Wb = np.concatenate([W[f"layer0/c{k}/W"] for k in range(3)])
    rows = np.concatenate([linalg.component_whitening(comp) @ A for comp in mix.components])
    np.testing.assert_array_equal(Wb[:, :6], rows)  # (K·r, d_in): w' = Aᵀw, in raw units
    mu = np.stack([np.linalg.lstsq(A, comp.mean - c, rcond=None)[0] for comp in mix.components])
    b = -np.einsum("ij,ij->i", rows, np.repeat(mu, 4, axis=0))
    np.testing.assert_allclose(Wb[:, 6], b, rtol=1e-10, atol=1e-12)  # b' = b + wᵀc
    meta = _meta(to_onnx(folded))
    back = InputTransform.model_validate_json(meta["input_transform"])
    assert np.array_equal(back.matrix, A) and np.array_equal(back.offset, c) and meta["n_features"] == "6"


def test_diagonal_transforms_keep_the_axis_aligned_layouts():
    pipe, mix = fitted("standard", "diag")
    ops = {n.op_type for n in to_onnx(mix, layout="neurons").graph.node}
    assert "Gemm" not in ops and "Mul" in ops  # diag neurons stay a broadcast product, scaled by A's diagonal
    assert _meta(to_onnx(mix))["layout"] == "quadratic"  # the default: the expanded form, scaled by A's diagonal
    x = raw_data()
    for dtype in ("float32", "float64"):
        model = to_onnx(mix, layout="quadratic", dtype=dtype)
        xr = x.astype(dtype).astype(np.float64)
        assert rel_err(run(model, x.astype(dtype))["log_likelihood"], pipe.score_samples(xr)) <= TOL[dtype][0]
    _, behind_pca = fitted("pca", "diag")
    with pytest.raises(UsageError, match="diagonal input transform"):
        to_onnx(behind_pca, layout="quadratic")
    assert plan_export(behind_pca).input_transform and plan_export(behind_pca).n_features == 30


# ---------------------------------------------------------------------------
# hierarchies fold the same way into their first level; classifiers through their mixture


@pytest.mark.parametrize("levels", ["3:full,2:diag", "3:full:r=4,2:full"])
def test_hierarchy_behind_a_transform(levels):
    from sklearn.preprocessing import StandardScaler

    x = raw_data()
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    h = HierarchicalGaussianMixture(levels, random_state=0).fit(z)
    A, c = np.diag(1.0 / scaler.scale_), -scaler.mean_ / scaler.scale_
    rot = np.linalg.qr(np.random.default_rng(0).standard_normal((30, 30)))[0]  # and a dense one
    for matrix, offset in ((A, c), (rot @ A, rot @ c)):
        hz = HierarchicalGaussianMixture.from_ir(Hierarchy(levels=[
            _rotate(h.levels_[0], rot if matrix is not A else None)] + list(h.levels_[1:])))
        ir = Hierarchy(levels=list(hz.levels_), input_transform=InputTransform(matrix=matrix, offset=offset))
        for dtype, activation in (("float64", "abs"), ("float32", "relu"), ("float32", "abs")):
            xin = x.astype(dtype)
            xr = xin.astype(np.float64)
            zr = xr @ matrix.T + offset
            got = run(to_onnx(ir, dtype=dtype, activation=activation, outputs=("log_likelihood", "responsibilities",
                                                                                 "level0_responsibilities")), xin)
            assert rel_err(got["log_likelihood"], hz.score_samples(zr)) <= TOL[dtype][0]
            assert np.max(np.abs(got["responsibilities"] - hz.predict_proba(zr))) <= TOL[dtype][1]
            assert np.max(np.abs(got["level0_responsibilities"] - linalg.responsibilities(hz.levels_[0], zr))) <= \
                TOL[dtype][1]


def _rotate(mix, rot):
    """The same mixture over z' = rot z (exact for orthogonal rot)."""
    if rot is None:
        return mix
    comps = [c.model_copy(update={"mean": rot @ c.mean, "eigenvectors": linalg.basis(c) @ rot.T}) for c in mix.components]
    return mix.model_copy(update={"components": comps, "covariance_type": "full" if mix.covariance_type != "tied"
                                  else "tied"})


def test_classifier_behind_a_transform():
    from sklearn.datasets import load_breast_cancer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from gmmnet.pipeline import GaussianMixtureClassifier

    x, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(MinMaxScaler(), GaussianMixtureClassifier(n_components=2, random_state=0)).fit(x, y)
    t = transform_of(pipe, x.shape[1])
    clf = pipe[-1]

    class Behind:  # what a Pipeline wrapper gives the exporter: the classifier's mixture over raw x
        classes_, class_of_component_ = clf.classes_, clf.class_of_component_
        predict_proba = None

        def to_mixture(self):
            return clf.to_mixture().model_copy(update={"input_transform": t})

    model = to_onnx(Behind())
    got = run(model, x.astype(np.float32))
    xr = x.astype(np.float32).astype(np.float64)
    assert np.array_equal(got["label"], pipe.predict(xr))
    assert np.max(np.abs(got["probabilities"] - pipe.predict_proba(xr))) <= TOL["float32"][1]


# ---------------------------------------------------------------------------
# random affine maps, badly conditioned ones included


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 5), extra=st.integers(-2, 2), K=st.integers(1, 3), covariance_type=st.sampled_from(COV_TYPES),
    log_cond=st.floats(0, 7), log_scale=st.floats(-3, 3), log_offset=st.floats(-2, 4), seed=st.integers(0, 2**32 - 1),
)
def test_random_affine_maps(k, extra, K, covariance_type, log_cond, log_scale, log_offset, seed):
    """A = U diag(s) Vᵀ with s spanning cond(A) up to 1e7, tall, square or wide; x are preimages of points of the
    mixture.  float64: within ``pipeline_float64_ll`` plus what any float64 evaluation of A x + c loses
    (≈ u·cond(A), here 50 u·cond(A)); float32 (compute auto): within the float32 rows."""
    rng = np.random.default_rng(seed)
    d_in = max(1, k + extra)
    r = min(k, d_in)
    U = np.linalg.qr(rng.standard_normal((k, k)))[0][:, :r]
    V = np.linalg.qr(rng.standard_normal((d_in, d_in)))[0][:, :r]
    s = 10.0 ** (rng.uniform(-0.5, 0.5, r) * log_cond)
    A = (U * s) @ V.T * 10.0**log_scale
    c = rng.standard_normal(k) * 10.0**log_offset
    mix = random_mixture(rng, K, k, covariance_type)
    z = sample(rng, mix, 40)
    x = np.linalg.lstsq(A, (z - c).T, rcond=None)[0].T
    t = InputTransform(matrix=A, offset=c)
    folded = mix.model_copy(update={"input_transform": t})
    cond = float(np.linalg.cond(A)) if r > 1 else 1.0
    for dtype in ("float64", "float32"):
        xin = x.astype(dtype)
        zr = t.apply(xin.astype(np.float64))
        got = run(to_onnx(folded, dtype=dtype), xin)
        slack = 50 * U64 * cond if dtype == "float64" else 0.0
        assert rel_err(got["log_likelihood"], linalg.log_likelihood(mix, zr)) <= TOL[dtype][0] + slack
        assert np.max(np.abs(got["responsibilities"] - linalg.responsibilities(mix, zr))) <= \
            TOL[dtype][1] + slack


def test_metadata_transform_round_trips_as_json():
    _, mix = fitted("pca_whiten", "full")
    meta = _meta(to_onnx(mix, dtype="float64"))
    doc = json.loads(meta["input_transform"])
    assert [s["name"] for s in doc["steps"]] == ["pca"] and doc["matrix"]["shape"] == [10, 30]
    back = InputTransform.model_validate_json(meta["input_transform"])
    assert np.array_equal(back.matrix, mix.input_transform.matrix)
