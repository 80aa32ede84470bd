"""The quadratic layout (``to_onnx(..., layout="quadratic")``): diag/spherical mixtures as one
expanded product in float64, both ways.

Errors: log-likelihood max|Δ|/(1+|ref|), responsibilities max|Δ|, on onnxruntime.  A float32
graph is measured against a float64 reference evaluated on the float32-rounded input.
Tolerances (the issue's targets): float32 interface ll ≤ 2e-6, resp ≤ 1e-6; float64 ≤ 1e-10,
except where the layout's own prediction exceeds that and it warns (asserted: measured ≤ predicted).
Standardized data are compared with scikit-learn itself; raw data with gmmnet.linalg (float64,
centred per component), because scikit-learn's own diag/spherical scoring expands the square too.
Round trips: gmmnet.formats.onnx.read.from_onnx gives back the mixture (means, variances, weights,
log-terms c_k) to 1e-9 relative, with and without the graph's metadata.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mixtures import random_mixture, sample

from gmmnet import cli, linalg
from gmmnet import io as gio
from gmmnet.errors import PrecisionWarning, UnsupportedModelError, UsageError
from gmmnet.formats.onnx import run, to_onnx
from gmmnet.formats.onnx.export import predicted_errors
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.ir import Component, Mixture
from gmmnet.formats.onnx.read import from_onnx
from gmmnet.tolerances import tol

TOL = {dt: (tol(f"{dt}_ll"), tol(f"{dt}_resp")) for dt in ("float32", "float64")}  # (log-likelihood, responsibilities)
PARAM_RTOL = 1e-9
STANDARDIZED = ("iris", "wine", "breast_cancer", "digits")
RAW = ("breast_cancer_raw",)


@functools.lru_cache(maxsize=None)
def dataset(name: str) -> np.ndarray:
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    loaders = {"iris": datasets.load_iris, "wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer,
               "digits": datasets.load_digits, "breast_cancer_raw": datasets.load_breast_cancer}
    x = loaders[name]().data.astype(np.float64)
    return x if name.endswith("_raw") else StandardScaler().fit_transform(x)


@functools.lru_cache(maxsize=None)
def fitted(name: str, bayes: bool, ct: str):
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    cls = BayesianGaussianMixture if bayes else GaussianMixture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: any fitted model will do
        return cls(n_components=3, covariance_type=ct, random_state=0, max_iter=100).fit(dataset(name))


def export(mixture, **kw):
    """to_onnx with layout="quadratic" in float64 arithmetic (unless ``compute`` says otherwise),
    returning (model, PrecisionWarnings raised).  The float32 quadratic graph of the default layout
    is tested in tests/test_default_graph.py."""
    kw.setdefault("compute", "float64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrecisionWarning)
        model = to_onnx(mixture, layout="quadratic", **kw)
    return model, [w for w in caught if issubclass(w.category, PrecisionWarning)]


def meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def strip(model) -> onnx.ModelProto:
    """The same graph without metadata, doc strings or meaningful names."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.metadata_props[:]
    m.doc_string = ""
    for i, n in enumerate(m.graph.node):
        n.name, n.doc_string = f"n{i}", ""
    return m


def ll_err(got, ref) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref) / (1.0 + np.abs(ref))))


def assert_same_mixture(got: Mixture, want: Mixture, rtol: float = PARAM_RTOL) -> None:
    if want.covariance_type == "diag" and got.covariance_type == "spherical":  # read back by structure
        assert all(np.ptp(c.eigenvalues) == 0 for c in want.components)
    else:
        assert got.covariance_type == want.covariance_type
    assert got.n_components == want.n_components and got.n_features == want.n_features
    var_w = np.stack([c.eigenvalues for c in want.components])
    var_g = np.stack([c.eigenvalues for c in got.components])
    np.testing.assert_allclose(var_g, var_w, rtol=rtol)
    # means: relative to their size and to the component's spread
    scale = np.abs(want.means) + np.sqrt(var_w if want.covariance_type == "diag" else var_w[:, :1])
    assert np.all(np.abs(got.means - want.means) <= rtol * scale)
    np.testing.assert_allclose(got.weights, want.weights, rtol=rtol, atol=1e-300)
    c_got, c_want = linalg.component_log_terms(got), linalg.component_log_terms(want)
    fin = np.isfinite(c_want)
    assert np.array_equal(np.isfinite(c_got), fin)
    np.testing.assert_allclose(c_got[fin], c_want[fin], rtol=rtol, atol=rtol)


# ---------------------------------------------------------------------------
# exactness against scikit-learn (standardized) and the centred float64 reference (raw)


@pytest.mark.parametrize("ct", ["diag", "spherical"])
@pytest.mark.parametrize("bayes", [False, True], ids=["gm", "bgm"])
@pytest.mark.parametrize("name", STANDARDIZED + RAW)
def test_exact(name, bayes, ct):
    est = fitted(name, bayes, ct)
    mixture = from_sklearn(est)
    x = dataset(name)
    for dtype in ("float32", "float64"):
        model, warned = export(mixture, dtype=dtype)
        m = meta(model)
        assert m["layout"] == "quadratic" and m["compute"] == "float64"
        xr = x.astype(dtype).astype(np.float64)
        out = run(model, x.astype(dtype))
        if name in RAW:
            ref_ll, ref_r = linalg.log_likelihood(mixture, xr), linalg.responsibilities(mixture, xr)
        else:
            ref_ll, ref_r = est.score_samples(xr), est.predict_proba(xr)
        e_ll = ll_err(out["log_likelihood"], ref_ll)
        e_r = float(np.max(np.abs(out["responsibilities"] - ref_r)))
        assert np.all(np.isfinite(out["log_likelihood"])) and np.all(np.isfinite(out["responsibilities"]))
        tol_ll, tol_r = TOL[dtype]
        if warned:  # the layout said it would miss the targets: it must at least keep its prediction
            pred = predicted_errors(mixture, dtype=dtype, layout="quadratic")
            assert dtype == "float64" and pred["log_likelihood"] > tol_ll
            assert e_ll <= pred["log_likelihood"] and e_r <= pred["responsibilities"], (e_ll, e_r, pred)
        else:
            assert e_ll <= tol_ll, (dtype, e_ll)
            assert e_r <= tol_r, (dtype, e_r)
            assert e_ll <= float(m["predicted_error_log_likelihood"])
        # labels: the same wherever the top two responsibilities are not a tie
        top2 = np.sort(ref_r, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-6
        assert np.array_equal(out["label"][clear], np.argmax(ref_r, axis=1)[clear])


def test_digits_diag_float64_warns_where_it_misses_the_target():
    """Standardized digits, diag: near-constant pixels give variances ~1e-6, so the expanded terms
    reach ~1e6 per feature and float64 rounding exceeds 1e-10: the layout predicts it and warns."""
    mixture = from_sklearn(fitted("digits", False, "diag"))
    _, warned = export(mixture, dtype="float64")
    assert warned and "layout='neurons'" in str(warned[0].message)
    pred = predicted_errors(mixture, dtype="float64", layout="quadratic")
    assert pred["log_likelihood"] > 1e-10
    # the neurons layout, centred per component, meets the target on the same model
    x = dataset("digits")
    out = run(to_onnx(mixture, dtype="float64"), x)
    assert ll_err(out["log_likelihood"], linalg.log_likelihood(mixture, x)) <= 1e-10


# ---------------------------------------------------------------------------
# round trip (the reverse reader reads the pattern, not names or metadata)


@pytest.mark.parametrize("ct", ["diag", "spherical"])
@pytest.mark.parametrize("name", ["wine", "breast_cancer_raw", "digits"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip(name, ct, dtype):
    mixture = from_sklearn(fitted(name, False, ct))
    model, _ = export(mixture, dtype=dtype, outputs=("label", "responsibilities", "log_likelihood", "mahalanobis"))
    for m in (model, strip(model)):
        got, report = from_onnx(m)
        assert_same_mixture(got, mixture)
        assert all(not c["low_confidence"] for c in report["components"])


def test_reader_refuses_a_clamp_that_changes_the_form():
    """Max(D², 5) is not a no-op (D² reaches 0 at each mean): the reader names the node."""
    mixture = from_sklearn(fitted("iris", False, "diag"))
    model, _ = export(mixture, dtype="float64")
    m = strip(model)
    for init in m.graph.initializer:
        if onnx.numpy_helper.to_array(init).ndim == 0 and float(onnx.numpy_helper.to_array(init)) == 0.0:
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(5.0), init.name))
    with pytest.raises(UnsupportedModelError, match="Max"):
        from_onnx(m)


# ---------------------------------------------------------------------------
# small and degenerate mixtures


def _mixture(means, variances, weights, ct) -> Mixture:
    d = np.asarray(means).shape[1]
    comps = [Component(mean=np.asarray(mu, float), eigenvectors=np.eye(d), eigenvalues=np.asarray(v, float),
                       weight=float(w)) for mu, v, w in zip(means, variances, weights)]
    return Mixture(n_features=d, covariance_type=ct, components=comps)


@pytest.mark.parametrize("ct", ["diag", "spherical"])
def test_single_component_and_single_feature(ct):
    for means, var in (([[0.5, -1.0, 2.0]], [[0.3, 0.3, 0.3] if ct == "spherical" else [0.3, 2.0, 0.05]]), ([[1.5], [-2.0]], [[0.2], [3.0]]), ([[7.0]], [[0.01]])):
        mixture = _mixture(means, var, np.full(len(means), 1.0 / len(means)), ct)
        x = linalg.sample(mixture, 200, seed=1)
        model, warned = export(mixture, dtype="float64", outputs=("log_likelihood", "responsibilities", "label"))
        assert not warned
        out = run(model, x)
        assert ll_err(out["log_likelihood"], linalg.log_likelihood(mixture, x)) <= 1e-12
        np.testing.assert_allclose(out["responsibilities"], linalg.responsibilities(mixture, x), atol=1e-12)
        assert_same_mixture(from_onnx(strip(model))[0], mixture)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_weight_component(dtype):
    mixture = _mixture([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]], [[1.0, 2.0], [0.5, 0.5], [1.0, 1.0]], [0.6, 0.4, 0.0], "diag")
    x = np.vstack([linalg.sample(mixture, 100, seed=2), [[-2.0, 4.0]]]).astype(dtype)
    out = run(export(mixture, dtype=dtype, outputs=("responsibilities", "log_likelihood", "label"))[0], x)
    assert np.all(np.isfinite(out["responsibilities"])) and np.all(np.isfinite(out["log_likelihood"]))
    assert np.all(out["responsibilities"][:, 2] == 0.0)
    assert np.all(out["label"] != 2)
    ref = linalg.log_likelihood(mixture, x.astype(np.float64))
    assert ll_err(out["log_likelihood"], ref) <= TOL[dtype][0]


@pytest.mark.parametrize("ct", ["diag", "spherical"])
@pytest.mark.parametrize("opset", [13, 21])
def test_distances_and_mahalanobis_equal_the_neurons_layout(ct, opset):
    mixture = from_sklearn(fitted("wine", False, ct))
    x = dataset("wine")
    outs = ("distances", "mahalanobis", "log_likelihood")
    q = run(export(mixture, dtype="float64", opset=opset, outputs=outs)[0], x)
    n = run(to_onnx(mixture, dtype="float64", opset=opset, outputs=outs), x)
    np.testing.assert_array_equal(q["distances"], n["distances"])  # the same neuron branch
    np.testing.assert_allclose(q["mahalanobis"] ** 2, n["mahalanobis"] ** 2, rtol=1e-12, atol=1e-12)
    assert ll_err(q["log_likelihood"], n["log_likelihood"]) <= 1e-12
    # float32 interface: the branch computes in float64 and is cast once
    q32 = run(export(mixture, dtype="float32", opset=opset, outputs=outs)[0], x.astype(np.float32))
    np.testing.assert_allclose(q32["distances"], linalg.distances(mixture, x.astype(np.float32)), rtol=1e-6, atol=1e-7)
    # without distances there is no neuron layer at all
    ops = {nd.op_type for nd in export(mixture, dtype="float32", opset=opset)[0].graph.node}
    assert not ops & {"Abs", "Relu"}


def test_relu_distances_branch():
    mixture = from_sklearn(fitted("iris", False, "diag"))
    x = dataset("iris")
    q = run(export(mixture, dtype="float64", activation="relu", outputs=("distances", "label"))[0], x)
    np.testing.assert_allclose(q["distances"], linalg.distances(mixture, x), rtol=1e-12, atol=1e-12)


def test_far_narrow_components_warn():
    """Components narrow compared with their distance from the centre: the expanded form cancels."""
    mixture = _mixture([[1e4, -3e4], [1e4 + 1.0, -3e4 + 2.0]], [[1e-6, 1e-4], [1e-6, 1e-4]], [0.5, 0.5], "diag")
    _, warned = export(mixture, dtype="float32", centering="none")
    assert warned and "layout='neurons'" in str(warned[0].message)
    # centring on the mixture's mean removes most of it; auto takes it
    model, _ = export(mixture, dtype="float64")
    assert meta(model)["centering"] == "global"


def test_centering_choice():
    standardized = from_sklearn(fitted("iris", False, "diag"))
    raw = from_sklearn(fitted("breast_cancer_raw", False, "diag"))
    assert meta(export(standardized)[0])["centering"] == "none"
    assert meta(export(raw)[0])["centering"] == "global"
    ops = [n.op_type for n in export(standardized)[0].graph.node]
    assert ops.count("Sub") == 1  # only the head's shift: no centring Sub
    x = dataset("breast_cancer_raw")
    for c in ("none", "global"):
        model, _ = export(raw, dtype="float64", centering=c)
        assert meta(model)["centering"] == c
        assert ll_err(run(model, x)["log_likelihood"], linalg.log_likelihood(raw, x)) <= 1e-10


# ---------------------------------------------------------------------------
# options


def test_options_are_validated():
    iris = dataset("iris")
    from sklearn.mixture import GaussianMixture

    for ct in ("full", "tied"):
        mix = from_sklearn(GaussianMixture(2, covariance_type=ct, random_state=0).fit(iris))
        with pytest.raises(UsageError, match="diag and spherical"):
            to_onnx(mix, layout="quadratic")
        with pytest.raises(UsageError, match="diag and spherical"):
            predicted_errors(mix, layout="quadratic")
    diag = from_sklearn(fitted("iris", False, "diag"))
    with pytest.raises(UsageError, match="layout must be one of"):
        to_onnx(diag, layout="expanded")
    with pytest.raises(UsageError, match="mixed"):
        to_onnx(diag, layout="quadratic", compute="mixed")
    with pytest.raises(UsageError, match="centering"):
        to_onnx(diag, layout="quadratic", centering="component")
    assert meta(to_onnx(diag))["layout"] == "quadratic"  # layout="auto"
    assert meta(to_onnx(diag, compute="float64"))["layout"] == "neurons"  # the accurate graph
    assert meta(to_onnx(diag, layout="neurons"))["layout"] == "neurons"


# ---------------------------------------------------------------------------
# property: any diag/spherical mixture survives the round trip


@settings(max_examples=25)
@given(
    k=st.integers(1, 8),
    d=st.integers(1, 16),
    ct=st.sampled_from(["diag", "spherical"]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    offset=st.sampled_from([0.0, 10.0, 1e4]),  # in units of scale: |mean| / σ up to ~1e4 (docs/onnx-graph.md, "Layouts")
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(k, d, ct, scale, offset, seed):
    rng = np.random.default_rng(seed)
    base = random_mixture(rng, k, d, ct, scale=scale)
    mixture = Mixture(n_features=d, covariance_type=ct, components=[
        c.model_copy(update={"mean": c.mean + offset * scale}) for c in base.components])
    model, _ = export(mixture, dtype="float64")
    assert_same_mixture(from_onnx(strip(model))[0], mixture)
    x = sample(rng, mixture, 64)
    out = run(model, x)
    pred = predicted_errors(mixture, dtype="float64", layout="quadratic")
    assert ll_err(out["log_likelihood"], linalg.log_likelihood(mixture, x)) <= max(pred["log_likelihood"], 1e-10)


# ---------------------------------------------------------------------------
# command line


def _call(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_layout_end_to_end(capsys, tmp_path):
    est = fitted("wine", False, "spherical")
    gio.save_estimator(est, tmp_path / "g.skops")
    code, _, err = _call(capsys, "to-onnx", tmp_path / "g.skops", "--layout", "quadratic", "--compute", "float64",
                         "-o", tmp_path / "q.onnx")
    assert code == 0, err
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert meta(model)["layout"] == "quadratic"
    x = dataset("wine")
    assert ll_err(run(model, x.astype(np.float32))["log_likelihood"],
                  est.score_samples(x.astype(np.float32).astype(np.float64))) <= 2e-6
    code, _, err = _call(capsys, "to-gmm", tmp_path / "q.onnx", "-o", tmp_path / "back.json")
    assert code == 0, err
    assert_same_mixture(gio.load_ir(tmp_path / "back.json"), from_sklearn(est))


def test_cli_layout_errors(capsys, tmp_path):
    from sklearn.mixture import GaussianMixture

    from gmmnet.hierarchy import HierarchicalGaussianMixture

    x = dataset("iris")
    gio.save_estimator(GaussianMixture(2, random_state=0).fit(x), tmp_path / "full.skops")
    code, _, err = _call(capsys, "to-onnx", tmp_path / "full.skops", "--layout", "quadratic")
    assert code == 2 and "diag and spherical" in err and "\n" not in err.strip()
    h = HierarchicalGaussianMixture(levels="2:diag,2:diag", random_state=0).fit(x)
    gio.save_estimator(h, tmp_path / "h.skops")
    code, _, err = _call(capsys, "to-onnx", tmp_path / "h.skops", "--layout", "quadratic")
    assert code == 2 and "hierarchy" in err
