"""Issue 14 as a user runs it: a fitted Pipeline straight into gmmnet.to_onnx and `gmmnet to-onnx`,
and `gmmnet to-gmm` back, with the IR that from_sklearn builds (a scaler's diagonal A is stored as
its diagonal, ``InputTransform.scale``; the other tests of the fold build a dense A themselves).

Bounds: the pipeline rows of gmmnet.tolerances against the Pipeline itself, and issue 15's rule
against skl2onnx's graph of the same pipeline: no worse than max(skl2onnx's error, 1e-6).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from mixtures import rel_err

import gmmnet
from gmmnet import io as gio
from gmmnet import linalg
from gmmnet.cli import main
from gmmnet.formats.onnx import run
from gmmnet.tolerances import tol

from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler  # noqa: E402

X = load_breast_cancer().data  # raw: features from 1e-3 to 1e3
STEPS = {"standard": StandardScaler, "minmax": MinMaxScaler, "maxabs": MaxAbsScaler, "robust": RobustScaler,
         "pca": lambda: PCA(10, random_state=0)}
COV_TYPES = ("full", "tied", "diag", "spherical")


def pipeline(step: str, covariance_type: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_pipeline(STEPS[step](), GaussianMixture(3, covariance_type=covariance_type, random_state=0)).fit(X)


def errors(ll, resp, pipe, xr) -> tuple[float, float]:
    return rel_err(ll, pipe.score_samples(xr)), float(np.max(np.abs(resp - pipe.predict_proba(xr))))


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("step", list(STEPS))
def test_to_onnx_takes_the_pipeline(step, covariance_type):
    pipe = pipeline(step, covariance_type)
    ir = gmmnet.from_sklearn(pipe)
    assert ir.input_transform is not None and ir.input_transform.diagonal == (step != "pca")
    xf = X.astype(np.float32)
    xr = xf.astype(np.float64)
    got = run(gmmnet.to_onnx(pipe), xf)
    e_ll, e_resp = errors(got["log_likelihood"], got["responsibilities"], pipe, xr)
    assert e_ll <= tol("pipeline_float32_ll") and e_resp <= tol("pipeline_float32_resp"), (e_ll, e_resp)
    got64 = run(gmmnet.to_onnx(pipe, dtype="float64"), X)
    e64 = errors(got64["log_likelihood"], got64["responsibilities"], pipe, X)
    assert max(e64) <= tol("pipeline_float64_ll"), e64
    skl2onnx = pytest.importorskip("skl2onnx")
    ref = run(skl2onnx.to_onnx(pipe, xf[:1], options={id(pipe[-1]): {"score_samples": True}}, target_opset=17), xf)
    s_ll, s_resp = errors(ref["score_samples"].ravel(), ref["probabilities"], pipe, xr)
    assert e_ll <= max(s_ll, 1e-6) and e_resp <= max(s_resp, 1e-6), ((e_ll, s_ll), (e_resp, s_resp))


@pytest.mark.parametrize("step", ["standard", "pca"])
def test_cli_round_trip_of_a_pickled_pipeline(step, tmp_path, capsys):
    pipe = pipeline(step, "full")
    src = tmp_path / "pipe.pkl"
    src.write_bytes(pickle.dumps(pipe))
    graph, back = tmp_path / "pipe.onnx", tmp_path / "back.json"
    assert main(["to-onnx", str(src), "-o", str(graph), "--dtype", "float64"]) == 0
    assert main(["to-gmm", str(graph), "-o", str(back)]) == 0
    capsys.readouterr()
    doc = gio.load_model(str(back))
    assert doc.input_transform is not None
    assert rel_err(linalg.log_likelihood(doc, X), pipe.score_samples(X)) <= tol("readback_float64")


@pytest.mark.parametrize("ext", ["pkl", "joblib", "skops"])
def test_to_gmm_writes_a_pipeline_gmmnet_loads_again(ext, tmp_path, capsys):
    """A graph behind a folded transform → to-gmm -o *.pkl/joblib/skops: Pipeline(AffineTransform, GaussianMixture)."""
    pipe = pipeline("standard", "full")
    graph, back = tmp_path / "pipe.onnx", tmp_path / f"back.{ext}"
    gio.save_onnx(gmmnet.to_onnx(pipe, dtype="float64"), graph)
    assert main(["to-gmm", str(graph), "-o", str(back)]) == 0
    capsys.readouterr()
    est = gio.load_model(str(back))  # gmmnet's own loader: AffineTransform is on its allowlist
    assert [type(s).__name__ for s in est] == ["AffineTransform", "GaussianMixture"]
    assert rel_err(est.score_samples(X), pipe.score_samples(X)) <= tol("readback_float64")
    assert gmmnet.from_sklearn(est).input_transform is not None


def test_a_wide_scaler_is_sized_before_it_is_made_dense():
    """The exporters fold a dense A: a scaler over 30,000 features (its diagonal in the IR) is refused
    by the memory limit before a 6.7 GiB matrix is built."""
    from gmmnet.errors import ResourceLimitError
    from gmmnet.ir import Component, InputTransform, Mixture

    d = 30_000
    mix = Mixture(n_features=d, covariance_type="diag",
                  components=[Component(mean=np.zeros(d), eigenvectors=None, eigenvalues=np.ones(d), weight=1.0)],
                  input_transform=InputTransform(scale=np.ones(d), offset=np.zeros(d)))
    with pytest.raises(ResourceLimitError, match="dense 30000 × 30000"):
        gmmnet.to_onnx(mix)
