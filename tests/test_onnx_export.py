"""IR → ONNX export (gmmnet.formats.onnx.to_onnx), checked on onnxruntime.

Errors: log-likelihood max|Δ|/(1+|ref|), responsibilities max|Δ|.  A float32 graph is
measured against a float64 reference evaluated on the float32-rounded input, so the rounding
of the input itself is not counted.  Standardized data are compared with scikit-learn itself;
raw data with gmmnet.linalg (float64, centred form), because scikit-learn's own float64
evaluation cancels there (its diag/spherical path expands x² − 2xμ + μ²; see
``test_reference_choice_on_raw_data``).

Float32 graphs use the default ``compute="auto"``: float32 arithmetic where the predicted
error meets the targets, else float64 arithmetic behind the float32 interface, so every target
is met.  Pure float32 arithmetic (``compute="float32"``) is measured separately
(``test_pure_float32_compute``): its error is checked against the prediction and skl2onnx,
not against targets it cannot meet (docs/onnx-graph.md, "Compute").
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mixtures import random_mixture, rel_err, sample

from gmmnet import linalg
from gmmnet.errors import DataError, PrecisionWarning, UnsupportedModelError, UsageError
from gmmnet.formats.onnx import OUTPUTS, float32_error_estimate, read, run, session, to_onnx
from gmmnet.formats.onnx.export import predicted_errors
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.ir import Component, Hierarchy, Mixture
from gmmnet.tolerances import tol

COV_TYPES = ("full", "tied", "diag", "spherical")
# (log-likelihood, responsibilities) of the default graphs; compute="float64" is held to float32_resp
TOL_STD = {"float32": (tol("float32_ll"), tol("default_resp")),
           "float64": (tol("float64_ll"), tol("float64_resp"))}
TOL_RAW = {"float32": tol("float32_raw_ll"), "float64": tol("float64_raw_ll")}
TIE = 1e-6


# ---------------------------------------------------------------------------
# data and models (cached: every fit happens once per session)


@functools.lru_cache(maxsize=None)
def dataset(name: str) -> np.ndarray:
    from sklearn import datasets
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    std = lambda x: StandardScaler().fit_transform(x)  # noqa: E731
    if name == "iris":
        return std(datasets.load_iris().data)
    if name == "wine":
        return std(datasets.load_wine().data)
    if name == "breast_cancer":
        return std(datasets.load_breast_cancer().data)
    if name == "digits_pca":
        return std(PCA(16, random_state=0).fit_transform(datasets.load_digits().data))
    if name == "breast_cancer_raw":
        return datasets.load_breast_cancer().data
    if name == "scaled_far":  # means ~1e4, per-feature scales spanning cond 1e10, far-apart clusters
        return _scaled(seed=10, d=6, k=3, mean_scale=1e4, cond=1e10, far=True)
    if name == "scaled_near":  # the same, overlapping clusters
        return _scaled(seed=11, d=6, k=3, mean_scale=1e4, cond=1e10, far=False)
    if name == "scaled_d10":  # means ~1e3, cond 1e9, 4 clusters in 10 features
        return _scaled(seed=12, d=10, k=4, mean_scale=1e3, cond=1e9, far=True)
    if name == "rotated":  # means ~1e4, cond 1e10 along random (oblique) directions
        return _rotated(seed=2, d=6, k=3, mean_scale=1e4, cond=1e10)
    raise KeyError(name)


def _scaled(seed, d, k, mean_scale, cond, far, n=400):
    """Raw-feature-like data: feature scales from mean_scale/100 down by √cond, mildly correlated."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.5, d) * mean_scale
    scales = mean_scale * 1e-2 * np.exp(np.linspace(0, -0.5 * np.log(cond), d))
    out = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        c = (q * np.exp(np.linspace(0, -np.log(10.0), d))) @ q.T
        c = c / np.sqrt(np.outer(np.diag(c), np.diag(c)))
        mu = base + rng.standard_normal(d) * scales * (30 if far else 1)
        out.append(mu + (rng.standard_normal((n, d)) @ np.linalg.cholesky(c).T) * scales)
    return np.concatenate(out)


def _rotated(seed, d, k, mean_scale, cond, n=400):
    """Clusters whose thin directions are random rotations: cond(Σ_k) = cond in every component."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.5, d) * mean_scale * rng.choice([-1, 1], d)
    out = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        sd = np.exp(np.linspace(0, -0.5 * np.log(cond), d)) * mean_scale * 1e-2
        mu = base + rng.standard_normal(d) * mean_scale * 0.3
        out.append(mu + (rng.standard_normal((n, d)) * sd) @ q.T)
    return np.concatenate(out)


@functools.lru_cache(maxsize=None)
def fitted(name: str, bayesian: bool, covariance_type: str):
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    cls = BayesianGaussianMixture if bayesian else GaussianMixture
    k = 4 if name == "scaled_d10" else 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = cls(n_components=k, covariance_type=covariance_type, random_state=0, max_iter=300).fit(dataset(name))
    return est, from_sklearn(est)


@functools.lru_cache(maxsize=None)
def exported(name: str, bayesian: bool, covariance_type: str, dtype: str, activation: str, compute: str = "auto") -> bytes:
    _, mix = fitted(name, bayesian, covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        return to_onnx(mix, dtype=dtype, activation=activation, compute=compute).SerializeToString()


def abs_err(got, ref) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref))) if np.size(ref) else 0.0


def label_mismatches(log_joint_ref: np.ndarray, label: np.ndarray, ref_label=None) -> int:
    """Rows whose label differs from the reference's, not counting rows whose top two log-joints tie within TIE."""
    ref = np.argmax(log_joint_ref, axis=1) if ref_label is None else ref_label
    if log_joint_ref.shape[1] > 1:
        top2 = np.sort(log_joint_ref, axis=1)[:, -2:]
        tied = top2[:, 1] - top2[:, 0] <= TIE
    else:
        tied = np.zeros(len(ref), bool)
    return int(np.sum((label != ref) & ~tied))


@functools.lru_cache(maxsize=None)
def skl2onnx_errors(name: str, bayesian: bool, covariance_type: str, reference: str) -> tuple[float, float]:
    """(log-likelihood, responsibilities) errors of skl2onnx's float32 model on the same data."""
    skl2onnx = pytest.importorskip("skl2onnx")
    est, mix = fitted(name, bayesian, covariance_type)
    x32 = dataset(name).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = skl2onnx.to_onnx(est, x32[:1], target_opset={"": 17, "ai.onnx.ml": 3},
                                 options={id(est): {"score_samples": True}})
    sess = session(model)
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x32})))
    ll_ref, resp_ref = references(name, bayesian, covariance_type, "float32", reference)
    return rel_err(out["score_samples"].ravel(), ll_ref), abs_err(out["probabilities"], resp_ref)


@functools.lru_cache(maxsize=None)
def references(name, bayesian, covariance_type, dtype, reference):
    est, mix = fitted(name, bayesian, covariance_type)
    x = dataset(name).astype(dtype).astype(np.float64)
    if reference == "sklearn":
        return est.score_samples(x), est.predict_proba(x)
    return linalg.log_likelihood(mix, x), linalg.responsibilities(mix, x)


# ---------------------------------------------------------------------------
# exactness on standardized data (vs scikit-learn)


@pytest.mark.parametrize("activation", ["abs", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("bayesian", [False, True], ids=["GMM", "BGMM"])
@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits_pca"])
def test_standardized_matches_sklearn(name, bayesian, covariance_type, dtype, activation):
    est, mix = fitted(name, bayesian, covariance_type)
    x = dataset(name).astype(dtype)
    xr = x.astype(np.float64)
    out = run(exported(name, bayesian, covariance_type, dtype, activation), x)
    assert out["log_likelihood"].dtype == np.dtype(dtype) and out["label"].dtype == np.int64
    ll_ref, resp_ref = references(name, bayesian, covariance_type, dtype, "sklearn")
    e_ll, e_resp = rel_err(out["log_likelihood"], ll_ref), abs_err(out["responsibilities"], resp_ref)
    assert label_mismatches(linalg.log_joint(mix, xr), out["label"], est.predict(xr)) == 0
    tol_ll, tol_resp = TOL_STD[dtype]
    assert e_ll <= tol_ll and e_resp <= tol_resp, (e_ll, e_resp)
    if dtype == "float32":  # the default graph is no less accurate than skl2onnx's float32 graph (or within 1e-6)
        sk_ll, sk_resp = skl2onnx_errors(name, bayesian, covariance_type, "sklearn")
        assert e_ll <= max(sk_ll, 1e-6) and e_resp <= max(sk_resp, 1e-6), (e_ll, e_resp, sk_ll, sk_resp)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("bayesian", [False, True], ids=["GMM", "BGMM"])
@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits_pca"])
def test_accurate_opt_in(name, bayesian, covariance_type):
    """compute="float64" (float32 interface): today's most accurate graph, held to float32_ll / float32_resp."""
    est, mix = fitted(name, bayesian, covariance_type)
    x = dataset(name).astype(np.float32)
    model = to_onnx(mix, compute="float64")
    assert _meta(model)["layout"] == "neurons" and _meta(model)["compute"] == "float64"
    out = run(model, x)
    ll_ref, resp_ref = references(name, bayesian, covariance_type, "float32", "sklearn")
    e_ll, e_resp = rel_err(out["log_likelihood"], ll_ref), abs_err(out["responsibilities"], resp_ref)
    assert e_ll <= tol("float32_ll") and e_resp <= tol("float32_resp"), (e_ll, e_resp)


# ---------------------------------------------------------------------------
# raw and ill-conditioned data (vs gmmnet.linalg; float32 also vs skl2onnx)


RAW = ["breast_cancer_raw", "scaled_far", "scaled_near", "scaled_d10", "rotated"]


@pytest.mark.parametrize("activation", ["abs", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("bayesian", [False, True], ids=["GMM", "BGMM"])
@pytest.mark.parametrize("name", RAW)
def test_raw_data(name, bayesian, covariance_type, dtype, activation):
    est, mix = fitted(name, bayesian, covariance_type)
    x = dataset(name).astype(dtype)
    out = run(exported(name, bayesian, covariance_type, dtype, activation), x)
    ll_ref, resp_ref = references(name, bayesian, covariance_type, dtype, "linalg")
    e_ll, e_resp = rel_err(out["log_likelihood"], ll_ref), abs_err(out["responsibilities"], resp_ref)
    assert np.all(np.isfinite(out["log_likelihood"]))
    if dtype == "float64":
        assert e_ll <= TOL_RAW["float64"] and e_resp <= TOL_RAW["float64"], (e_ll, e_resp)
        assert label_mismatches(linalg.log_joint(mix, x.astype(np.float64)), out["label"]) == 0
        return
    assert e_ll <= TOL_RAW["float32"], e_ll
    assert e_resp <= tol("default_resp"), e_resp
    sk_ll, sk_resp = skl2onnx_errors(name, bayesian, covariance_type, "linalg")
    assert e_ll <= max(sk_ll, 1e-6), f"log_likelihood error {e_ll:.3e} is worse than skl2onnx's {sk_ll:.3e}"
    assert e_resp <= max(sk_resp, 1e-6), f"responsibilities error {e_resp:.3e} is worse than skl2onnx's {sk_resp:.3e}"
    assert label_mismatches(linalg.log_joint(mix, x.astype(np.float64)), out["label"]) == 0


def test_reference_choice_on_raw_data():
    """scikit-learn's own float64 scoring cancels on raw data; gmmnet.linalg (centred) is the reference there."""
    for name, ct in [("scaled_far", "full"), ("scaled_far", "diag")]:
        est, mix = fitted(name, False, ct)
        x = dataset(name)
        gap = rel_err(est.score_samples(x), linalg.log_likelihood(mix, x))
        if ct == "full":
            assert gap < 1e-8  # both fine in float64 for full
        else:
            assert gap > 1e-6  # sklearn's expanded diag form loses digits: not a usable reference


# ---------------------------------------------------------------------------
# sizes, opsets, batches


@pytest.mark.parametrize(
    "k,d", [(1, 1), (1, 128), (64, 1), (2, 2), (7, 13), (64, 128)], ids=lambda v: str(v)
)
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_sizes(rng, k, d, covariance_type):
    mix = random_mixture(rng, k, d, covariance_type, spread=3.0, cond=10.0)
    x = sample(rng, mix, 150)
    for dtype in ("float32", "float64"):
        xin = x.astype(dtype)
        xr = xin.astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("error", PrecisionWarning)
            model = to_onnx(mix, dtype=dtype, outputs=OUTPUTS)
        out = run(model, xin)
        tol_ll, tol_resp = TOL_STD[dtype]
        assert rel_err(out["log_likelihood"], linalg.log_likelihood(mix, xr)) <= tol_ll
        assert abs_err(out["responsibilities"], linalg.responsibilities(mix, xr)) <= tol_resp
        assert label_mismatches(linalg.log_joint(mix, xr), out["label"]) == 0
        assert out["distances"].shape == (150, k * d) and out["mahalanobis"].shape == (150, k)


@pytest.mark.parametrize("opset", range(13, 22))
def test_opsets(rng, opset):
    reference = None
    for ct in COV_TYPES:
        mix = random_mixture(rng, 3, 4, ct)
        x = sample(rng, mix, 40)
        for activation in ("abs", "relu"):
            for centering in ("none", "global", "component"):
                model = to_onnx(mix, opset=opset, activation=activation, centering=centering, outputs=OUTPUTS, dtype="float64")
                onnx.checker.check_model(model, full_check=True)
                assert model.opset_import[0].version == opset
                assert model.ir_version == onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
                out = run(model, x)
                np.testing.assert_allclose(out["log_likelihood"], linalg.log_likelihood(mix, x), rtol=1e-12, atol=1e-12)
                reference = reference or out
    # the axes-as-input (18+) and axes-as-attribute (13-17) forms of the reductions
    reduce_nodes = [n for n in model.graph.node if n.op_type in ("ReduceSumSquare", "ReduceMax")]
    assert reduce_nodes
    for n in reduce_nodes:
        has_attr = any(a.name == "axes" for a in n.attribute)
        assert has_attr == (opset < 18) and (len(n.input) == 2) == (opset >= 18)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_dynamic_batch(rng, covariance_type, dtype, activation):
    mix = random_mixture(rng, 3, 5, covariance_type)
    x = sample(rng, mix, 7).astype(dtype)
    model = to_onnx(mix, dtype=dtype, activation=activation, outputs=OUTPUTS)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    full = run(model, x)
    for n in (0, 1, 7):
        out = run(model, x[:n])
        assert out["label"].shape == (n,) and out["log_likelihood"].shape == (n,)
        assert out["responsibilities"].shape == (n, 3) and out["mahalanobis"].shape == (n, 3)
        assert out["distances"].shape == (n, 15)
        for key in OUTPUTS:
            np.testing.assert_array_equal(out[key], full[key][:n])


# ---------------------------------------------------------------------------
# distances, Mahalanobis, outputs


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("activation", ["abs", "relu"])
@pytest.mark.parametrize("centering", ["none", "global", "component"])
def test_distances_and_mahalanobis(rng, covariance_type, activation, centering):
    mix = random_mixture(rng, 4, 3, covariance_type)
    x = sample(rng, mix, 60)
    for dtype, tol in (("float64", 1e-11), ("float32", 2e-5)):
        xin = x.astype(dtype)
        xr = xin.astype(np.float64)
        out = run(to_onnx(mix, dtype=dtype, activation=activation, centering=centering,
                          outputs=("distances", "mahalanobis")), xin)
        assert list(out) == ["distances", "mahalanobis"]
        np.testing.assert_allclose(out["distances"], linalg.distances(mix, xr), rtol=tol, atol=tol)
        np.testing.assert_allclose(out["mahalanobis"], np.sqrt(linalg.mahalanobis_sq(mix, xr)), rtol=tol, atol=tol)


def _truncated(rng, covariance_type, d=5, r=2, k=3):
    comps = []
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    for _ in range(k):
        if covariance_type == "full":
            q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        comps.append(Component(mean=rng.standard_normal(d) * 3, eigenvectors=q.T[:r], eigenvalues=np.array([4.0, 2.0])[:r],
                               weight=1.0 / k, residual_variance=0.3))
    return Mixture(n_features=d, covariance_type=covariance_type, components=comps)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_rank_truncated_components_are_exact(rng, activation, covariance_type):
    """Truncated components: K·r neurons plus the residual term ‖x − μ_k‖²/σ² (the deep exporter, one level), exact."""
    mix = _truncated(rng, covariance_type)
    x = rng.standard_normal((50, 5)) * 3
    model = to_onnx(mix, dtype="float64", activation=activation, outputs=OUTPUTS)
    out = run(model, x)
    np.testing.assert_allclose(out["log_likelihood"], linalg.log_likelihood(mix, x), rtol=1e-12)
    np.testing.assert_allclose(out["responsibilities"], linalg.responsibilities(mix, x), atol=1e-12)
    np.testing.assert_allclose(out["distances"], linalg.distances(mix, x), atol=1e-12)  # kept neurons only
    np.testing.assert_allclose(out["mahalanobis"], np.sqrt(linalg.mahalanobis_sq(mix, x)), rtol=1e-12)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["ranks"] == "2,2,2" and "truncation" in meta and meta["n_neurons"] == str(3 * 2 * (1 + (activation == "relu")))
    # the single-mixture exporter called directly completes them to full rank: d neurons each, the same scores
    from gmmnet.formats.onnx import export

    done = export.to_onnx(mix, dtype="float64", activation=activation, outputs=OUTPUTS)
    out = run(done, x)
    np.testing.assert_allclose(out["log_likelihood"], linalg.log_likelihood(mix, x), rtol=1e-12)
    np.testing.assert_allclose(out["distances"], linalg.distances(mix, x), atol=1e-12)  # kept neurons only
    meta = {p.key: p.value for p in done.metadata_props}
    assert "truncation" in meta and meta["n_neurons"] == str(3 * 5 * (1 + (activation == "relu")))


@pytest.mark.parametrize(
    "outputs",
    [("label",), ("responsibilities",), ("log_likelihood",), ("distances",), ("mahalanobis",),
     ("log_likelihood", "label"), ("mahalanobis", "distances", "responsibilities"), OUTPUTS],
)
def test_output_selection(rng, outputs):
    mix = random_mixture(rng, 3, 4, "full")
    x = sample(rng, mix, 20)
    model = to_onnx(mix, outputs=outputs, dtype="float64")
    assert [o.name for o in model.graph.output] == list(outputs)
    ops = {n.op_type for n in model.graph.node}
    assert ("Sqrt" in ops) == ("mahalanobis" in outputs)
    assert ("ArgMax" in ops) == ("label" in outputs)
    assert ("Exp" in ops) == bool({"responsibilities", "log_likelihood"} & set(outputs))
    assert ("Log" in ops) == ("log_likelihood" in outputs)
    assert ("ReduceSumSquare" in ops) == bool(set(outputs) - {"distances"})
    out = run(model, x)
    assert list(out) == list(outputs)
    ref = {
        "label": np.argmax(linalg.log_joint(mix, x), axis=1),
        "responsibilities": linalg.responsibilities(mix, x),
        "log_likelihood": linalg.log_likelihood(mix, x),
        "distances": linalg.distances(mix, x),
        "mahalanobis": np.sqrt(linalg.mahalanobis_sq(mix, x)),
    }
    for key in outputs:
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-11, atol=1e-11)


def test_run_selects_and_casts(rng):
    mix = random_mixture(rng, 2, 3, "diag")
    model = to_onnx(mix, outputs=OUTPUTS)  # float32 graph, float64 input
    x = sample(rng, mix, 5)
    out = run(model, x, outputs=["mahalanobis"])
    assert list(out) == ["mahalanobis"] and out["mahalanobis"].dtype == np.float32
    np.testing.assert_array_equal(run(model.SerializeToString(), x)["label"], run(session(model), x)["label"])
    with pytest.raises(DataError, match="features"):
        run(model, np.zeros((2, 4)))
    with pytest.raises(DataError, match="no output"):
        run(model, x, outputs=["nope"])


# ---------------------------------------------------------------------------
# rows that are all −inf, zero weights


@pytest.mark.parametrize("dtype,far", [("float32", 1e30), ("float64", 1e200)])
@pytest.mark.parametrize("activation", ["abs", "relu"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_all_minus_inf_rows(rng, dtype, far, activation, covariance_type):
    mix = random_mixture(rng, 3, 2, covariance_type)
    x = np.vstack([sample(rng, mix, 3), [[far, -far]], sample(rng, mix, 2)])
    if dtype == "float32":  # float64 arithmetic keeps D² ≈ 1e60 finite: the row is not all −inf there
        wide = run(to_onnx(mix, dtype=dtype, activation=activation, compute="float64"), x)
        assert wide["log_likelihood"][3] == -np.inf  # −1e60 rounds to −inf in the float32 output
        np.testing.assert_allclose(wide["responsibilities"][3].sum(), 1.0, rtol=1e-6)
    model = to_onnx(mix, dtype=dtype, activation=activation, compute="float32" if dtype == "float32" else "auto")
    out = run(model, x)
    ll = out["log_likelihood"]
    assert ll[3] == -np.inf
    assert np.all(np.isfinite(np.delete(ll, 3)))
    assert not np.any(np.isnan(out["responsibilities"]))
    if "layer0/cast" in {n.name for n in model.graph.node}:  # tied, expanded: its squares are summed in float64
        np.testing.assert_allclose(out["responsibilities"][3].sum(), 1.0, rtol=1e-6)
    else:
        np.testing.assert_array_equal(out["responsibilities"][3], 0.0)  # no component: all zero, not NaN
    good = np.delete(np.arange(6), 3)
    xr = x[good].astype(dtype).astype(np.float64)
    assert rel_err(ll[good], linalg.log_likelihood(mix, xr)) <= TOL_STD[dtype][0]


def test_zero_weight_component(rng):
    comps = [Component(mean=np.zeros(2), eigenvectors=np.eye(2), eigenvalues=np.ones(2), weight=1.0),
             Component(mean=np.ones(2), eigenvectors=np.eye(2), eigenvalues=np.ones(2), weight=0.0)]
    mix = Mixture(n_features=2, covariance_type="full", components=comps)
    x = rng.standard_normal((10, 2))
    for dtype in ("float32", "float64"):
        out = run(to_onnx(mix, dtype=dtype), x)
        assert np.all(out["label"] == 0) and np.all(out["responsibilities"][:, 1] == 0)
        assert rel_err(out["log_likelihood"], linalg.log_likelihood(mix, x.astype(dtype).astype(float))) <= TOL_STD[dtype][0]


# ---------------------------------------------------------------------------
# centering, the error estimate and warnings


def _meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def test_auto_centering_choices():
    def chosen(name, ct, dtype="float32"):
        _, mix = fitted(name, False, ct)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            return _meta(to_onnx(mix, dtype=dtype, compute="float32" if dtype == "float32" else "auto",
                                 layout="neurons"))["centering"]

    assert chosen("wine", "full") == "none"  # standardized: centering buys nothing
    assert chosen("digits_pca", "tied") == "none"
    assert chosen("scaled_far", "full") == "component"  # raw, far-apart clusters
    assert chosen("scaled_near", "full") == "global"  # raw, clusters close together
    assert chosen("scaled_far", "full", "float64") == "none"
    assert chosen("wine", "diag") == "component"  # diag/spherical are always centred per component


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_centering_reduces_float32_error(covariance_type):
    _, mix = fitted("scaled_far", False, covariance_type)
    x = dataset("scaled_far").astype(np.float32)
    ref = linalg.log_likelihood(mix, x.astype(np.float64))
    errs, ests = {}, {}
    for centering in ("none", "global", "component"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            model = to_onnx(mix, centering=centering, compute="float32")
        assert _meta(model)["centering"] == centering
        errs[centering] = rel_err(run(model, x)["log_likelihood"], ref)
        ests[centering] = float32_error_estimate(mix, centering)
    assert errs["component"] <= 1e-6 < errs["global"] < errs["none"]
    assert ests["component"] < ests["global"] < ests["none"]
    # the estimate (absolute) is within an order of magnitude of the measured absolute error
    for centering in errs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            got = run(to_onnx(mix, centering=centering, compute="float32"), x)["log_likelihood"]
        measured = abs_err(got, ref)
        assert ests[centering] / 10 <= measured <= ests[centering] * 5


def test_precision_warning():
    _, mix = fitted("rotated", False, "full")
    with pytest.warns(PrecisionWarning, match="float64"):
        to_onnx(mix, dtype="float32", compute="float32")
    assert float32_error_estimate(mix, "component") > 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        to_onnx(mix, dtype="float64")
        assert _meta(to_onnx(mix, dtype="float32"))["compute"] == "float64"  # auto avoids the loss
        to_onnx(fitted("wine", False, "full")[1], dtype="float32")


def test_estimate_of_auto_is_the_chosen_layout():
    _, mix = fitted("scaled_far", False, "full")
    model = to_onnx(mix, compute="float32")
    meta = _meta(model)
    assert float(meta["error_estimate"]) == pytest.approx(float32_error_estimate(mix, "auto"), rel=1e-3)
    assert float32_error_estimate(mix, "auto") == float32_error_estimate(mix, meta["centering"])
    assert float32_error_estimate(mix, "none", dtype="float64") < 1e-8


# ---------------------------------------------------------------------------
# names, metadata, options


def test_metadata_and_names(rng):
    mix = random_mixture(rng, 3, 4, "full")
    mix.provenance.source = "test.source"
    model = to_onnx(mix, activation="relu", dtype="float32", opset=21)
    meta = _meta(model)
    import gmmnet

    assert meta["producer"] == "gmmnet" and meta["gmmnet_version"] == gmmnet.__version__
    assert meta["source"] == "test.source" and meta["covariance_type"] == "full"
    assert meta["activation"] == "relu" and meta["dtype"] == "float32"
    assert meta["centering"] in ("none", "global", "component") and meta["centering_reason"]
    assert float(meta["error_estimate"]) > 0
    assert model.producer_name == "gmmnet" and model.producer_version == gmmnet.__version__
    assert "Gaussian mixture" in model.doc_string and len(model.doc_string) > 200
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names) and all(names)
    for needed in ("layer0/linear", "layer0/relu", "head/sumsq", "head/log_joint", "head/logsumexp", "head/label"):
        assert needed in names
    inits = {i.name: i for i in model.graph.initializer}
    if meta["centering"] != "component":
        assert "row k*2r + i" in inits["layer0/W"].doc_string
    linear = next(n for n in model.graph.node if n.name == "layer0/linear")
    node_meta = {p.key: p.value for p in linear.metadata_props}  # IR 10 (opset 21): per-node metadata
    assert node_meta["neurons"].split(",")[:2] == ["c0/pc0", "c0/pc1"] and len(node_meta["neurons"].split(",")) == 12


def test_one_product_per_component(rng):
    """The full Abs layout is one Gemm of r rows per component, summed in squares as it comes (no Abs
    pass, no (N, K·r) tensor); ReLU keeps one Gemm of K·2r rows."""
    for k, d in [(2, 3), (16, 24)]:
        mix = random_mixture(rng, k, d, "full", spread=1.0)
        model = to_onnx(mix, dtype="float64")
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("Gemm") == k and ops.count("ReduceSumSquare") == k and "Abs" not in ops
        assert _meta(model)["centering"] == "none"  # float64: rows (w_i, b_i) over [x, 1], the bias in the product
        for c in range(k):
            w = next(i for i in model.graph.initializer if i.name == f"layer0/c{c}/W")
            assert list(w.dims) == [d, d + 1]
        relu = to_onnx(mix, dtype="float64", activation="relu")
        gemms = [n for n in relu.graph.node if n.op_type == "Gemm"]
        assert len(gemms) == 1
        w = next(i for i in relu.graph.initializer if i.name == "layer0/W")
        assert list(w.dims) == [k * 2 * d, d]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"outputs": ("label", "probabilities")}, "probabilities"),
        ({"outputs": ()}, "at least one"),
        ({"outputs": ("label", "label")}, "duplicates"),
        ({"activation": "tanh"}, "activation"),
        ({"dtype": "float16"}, "dtype"),
        ({"centering": "local"}, "centering"),
        ({"opset": 12}, "opset"),
        ({"opset": 22}, "opset"),
        ({"opset": "17"}, "opset"),
    ],
)
def test_bad_options(rng, kwargs, match):
    with pytest.raises(UsageError, match=match):
        to_onnx(random_mixture(rng, 2, 2), **kwargs)


def test_bad_models(rng):
    mix = random_mixture(rng, 2, 2)
    from gmmnet.formats.onnx import export  # the package-level to_onnx sends hierarchies to the deep exporter

    with pytest.raises(UnsupportedModelError, match="Mixture"):
        export.to_onnx(Hierarchy(levels=[mix]))
    with pytest.raises(UsageError):
        to_onnx("not a mixture")
    with pytest.raises(UsageError):
        float32_error_estimate(mix, "sideways")


# ---------------------------------------------------------------------------
# the reader reads every layout back


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("activation", ["abs", "relu"])
@pytest.mark.parametrize("centering", ["none", "global", "component"])
def test_every_layout_is_readable(rng, covariance_type, activation, centering):
    mix = random_mixture(rng, 3, 3, covariance_type)
    model = to_onnx(mix, activation=activation, centering=centering, dtype="float64", outputs=OUTPUTS)
    del model.metadata_props[:]
    net = read.read_layers(model)
    assert net.groups is not None and len(net.groups) == 3
    np.testing.assert_allclose(net.head, linalg.component_log_terms(mix), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------
# one property test over small random mixtures (the IR round trips are tested elsewhere)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 4),
    d=st.integers(1, 5),
    covariance_type=st.sampled_from(COV_TYPES),
    activation=st.sampled_from(["abs", "relu"]),
    centering=st.sampled_from(["auto", "none", "global", "component"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_mixtures_float64(k, d, covariance_type, activation, centering, seed):
    rng = np.random.default_rng(seed)
    mix = random_mixture(rng, k, d, covariance_type, spread=rng.uniform(0.1, 10.0), scale=10.0 ** rng.uniform(-3, 3))
    x = sample(rng, mix, 30)
    out = run(to_onnx(mix, dtype="float64", activation=activation, centering=centering, outputs=OUTPUTS), x)
    assert rel_err(out["log_likelihood"], linalg.log_likelihood(mix, x)) <= 1e-10
    assert abs_err(out["responsibilities"], linalg.responsibilities(mix, x)) <= 1e-10
    assert label_mismatches(linalg.log_joint(mix, x), out["label"]) == 0
    np.testing.assert_allclose(out["distances"], linalg.distances(mix, x), rtol=1e-9, atol=1e-9)


def test_session_errors(tmp_path):
    from gmmnet.errors import InputFileError

    with pytest.raises(InputFileError, match="no such file"):
        session(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputFileError, match="cannot load"):
        session(bad)
    with pytest.raises(DataError, match="2-D"):
        run(to_onnx(random_mixture(np.random.default_rng(0), 2, 2)), np.zeros(2))


# ---------------------------------------------------------------------------
# compute: float64 arithmetic behind a float32 interface


STANDARDIZED = ["iris", "wine", "breast_cancer", "digits_pca"]


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("name", STANDARDIZED + RAW)
def test_pure_float32_compute(name, covariance_type):
    """compute="float32" is measured, not held to targets it cannot meet: within 4x of its prediction
    (measured 0.05-2x over these data sets), and on raw data no worse than skl2onnx."""
    est, mix = fitted(name, False, covariance_type)
    x = dataset(name).astype(np.float32)
    out = run(exported(name, False, covariance_type, "float32", "abs", "float32"), x)
    reference = "sklearn" if name in STANDARDIZED else "linalg"
    ll_ref, resp_ref = references(name, False, covariance_type, "float32", reference)
    e_ll, e_resp = rel_err(out["log_likelihood"], ll_ref), abs_err(out["responsibilities"], resp_ref)
    pred = predicted_errors(mix, compute="float32")
    assert pred["compute"] == "float32"
    assert e_ll <= 4 * pred["log_likelihood"], (e_ll, pred)
    assert e_resp <= 4 * pred["responsibilities"], (e_resp, pred)
    if reference == "linalg":
        assert e_resp <= tol("float32_pure_raw_resp"), e_resp
        sk_ll, _ = skl2onnx_errors(name, False, covariance_type, "linalg")
        assert e_ll <= sk_ll, f"log_likelihood error {e_ll:.3e} is worse than skl2onnx's {sk_ll:.3e}"
    # auto chooses float32 only where the prediction meets the default targets
    auto = predicted_errors(mix)
    if auto["compute"] == "float32":
        assert auto["log_likelihood"] <= tol("float32_ll") and auto["responsibilities"] <= tol("default_resp")


def test_compute_float64_layout(rng):
    _, mix = fitted("rotated", False, "full")  # cond 1e10: float32 arithmetic loses ~1e-3
    model = to_onnx(mix, outputs=OUTPUTS)
    meta = _meta(model)
    assert meta["compute"] == "float64" and meta["compute_requested"] == "auto" and "float64" in meta["compute_reason"]
    assert float(meta["predicted_error_log_likelihood"]) <= tol("float32_ll")
    elem = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == elem
    assert all(o.type.tensor_type.elem_type == elem for o in model.graph.output if o.name != "label")
    first = model.graph.node[0]
    assert first.op_type == "Cast" and first.input[0] == "X"
    assert {i.data_type for i in model.graph.initializer if i.name.startswith(("layer0/", "head/"))
            and i.name != "head/one"} <= {onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64}
    # only exp(L - m) <= 1 and what follows it run in float32 (L - m is formed in float64)
    cast = {n.name: n for n in model.graph.node if n.op_type == "Cast"}
    assert cast["head/shift_float"].input[0] == "head/shift"
    x = dataset("rotated").astype(np.float32)
    out = run(model, x)
    assert all(v.dtype == (np.int64 if k == "label" else np.float32) for k, v in out.items())
    ll_ref = linalg.log_likelihood(mix, x.astype(np.float64))
    assert rel_err(out["log_likelihood"], ll_ref) <= 1e-7  # only the float32 rounding of the outputs remains
    # a well-conditioned model keeps float32 arithmetic: no Cast at all
    small = random_mixture(rng, 3, 2, "full", cond=2.0, spread=1.0)
    model = to_onnx(small)
    assert _meta(model)["compute"] == "float32" and "Cast" not in {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("compute", ["float32", "mixed", "float64"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_compute_options(rng, compute, covariance_type):
    mix = random_mixture(rng, 3, 4, covariance_type)
    x = sample(rng, mix, 40).astype(np.float32)
    xr = x.astype(np.float64)
    for activation in ("abs", "relu"):
        model = to_onnx(mix, compute=compute, activation=activation, outputs=OUTPUTS)
        assert _meta(model)["compute"] == compute
        out = run(model, x)
        assert rel_err(out["log_likelihood"], linalg.log_likelihood(mix, xr)) <= tol("float32_ll")
        assert abs_err(out["responsibilities"], linalg.responsibilities(mix, xr)) <= tol("float32_resp")
        np.testing.assert_allclose(out["distances"], linalg.distances(mix, xr), rtol=2e-5, atol=2e-5)
        assert out["distances"].dtype == np.float32 and out["mahalanobis"].dtype == np.float32
        del model.metadata_props[:]
        net = read.read_layers(model)
        assert net.groups is not None and len(net.groups) == 3
        np.testing.assert_allclose(net.head, linalg.component_log_terms(mix), rtol=1e-5, atol=1e-5)


def test_compute_bad_options(rng):
    mix = random_mixture(rng, 2, 2)
    with pytest.raises(UsageError, match="compute"):
        to_onnx(mix, compute="float16")
    with pytest.raises(UsageError, match="float64 graph"):
        to_onnx(mix, dtype="float64", compute="float32")
    assert _meta(to_onnx(mix, dtype="float64", compute="float64"))["compute"] == "float64"
    with pytest.raises(UsageError, match="compute"):
        predicted_errors(mix, compute="half")
