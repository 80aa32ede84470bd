"""Pickled mixtures read as their fitted attributes (gmmnet.io.FittedState), without scikit-learn.

The CLI reads a pickle this way because importing scikit-learn costs seconds; these tests check
that the stand-in converts to the same IR as the estimator, that materialize gives the estimator
back, that the allowlist and the shadowing check still hold, and that the CLI's to-onnx really
does not import scikit-learn for a bare mixture.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gmmnet import io as gio
from gmmnet.errors import UnsafeFileError, UnsupportedModelError
from gmmnet.formats.sklearn import from_sklearn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def X():
    x = load_wine().data
    return (x - x.mean(0)) / x.std(0)


def _dump(est, path):
    if str(path).endswith(".joblib"):
        joblib.dump(est, path)
    else:
        path.write_bytes(pickle.dumps(est))
    return path


@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_stand_in_converts_to_the_same_ir(cls, ct, suffix, X, tmp_path):
    est = cls(n_components=3, covariance_type=ct, random_state=0, max_iter=200).fit(X)
    path = _dump(est, tmp_path / f"model{suffix}")
    state = gio.load_estimator(path, fitted_state=True)
    assert isinstance(state, gio.FittedState) and gio.is_mixture_state(state)
    assert (type(state).__module__, type(state).__qualname__) == (type(est).__module__, type(est).__qualname__)
    a, b = from_sklearn(state), from_sklearn(gio.load_estimator(path))
    assert a.provenance.source == b.provenance.source == f"sklearn.mixture.{cls.__name__}"
    for ca, cb in zip(a.components, b.components, strict=True):
        np.testing.assert_array_equal(ca.mean, cb.mean)
        np.testing.assert_array_equal(ca.eigenvalues, cb.eigenvalues)
        if ca.stored_eigenvectors is None:
            assert cb.stored_eigenvectors is None
        else:
            np.testing.assert_array_equal(ca.stored_eigenvectors, cb.stored_eigenvectors)
        assert (ca.weight, ca.log_constant) == (cb.weight, cb.log_constant)


def test_materialize_gives_the_estimator_back(X, tmp_path):
    est = GaussianMixture(n_components=3, covariance_type="full", random_state=0).fit(X)
    path = _dump(est, tmp_path / "model.joblib")
    real = gio.materialize(gio.load_estimator(path, fitted_state=True), path)
    assert type(real) is GaussianMixture
    np.testing.assert_array_equal(real.score_samples(X), est.score_samples(X))
    real.means_ += 0.0  # arrays read from the file stay writable


def test_pipeline_stand_in_materializes_with_its_steps(X, tmp_path):
    pipe = make_pipeline(StandardScaler(), GaussianMixture(n_components=2, random_state=0)).fit(X * 7 + 3)
    path = _dump(pipe, tmp_path / "pipe.pkl")
    state = gio.load_estimator(path, fitted_state=True)
    assert isinstance(state, gio.FittedState) and not gio.is_mixture_state(state)
    real = gio.materialize(state, path)
    assert [type(s).__name__ for _, s in real.steps] == ["StandardScaler", "GaussianMixture"]
    np.testing.assert_array_equal(real.score_samples(X * 7 + 3), pipe.score_samples(X * 7 + 3))


def test_shadowing_is_refused_when_materialized(X, tmp_path):
    gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    gm.__dict__["score_samples"] = np.zeros(3)
    path = _dump(gm, tmp_path / "model.pkl")
    state = gio.load_estimator(path, fitted_state=True)  # a stand-in has no methods to shadow
    with pytest.raises(UnsafeFileError, match="replaces the method 'score_samples'"):
        gio.materialize(state, path)


def test_allowlist_holds_for_stand_ins(tmp_path):
    from sklearn.linear_model import LogisticRegression

    path = tmp_path / "lr.pkl"
    path.write_bytes(pickle.dumps(LogisticRegression()))
    with pytest.raises(UnsupportedModelError, match="LogisticRegression"):
        gio.load_estimator(path, fitted_state=True)
    path.write_bytes(pickle.dumps(os.system))
    with pytest.raises(UnsafeFileError):
        gio.load_estimator(path, fitted_state=True)


def test_cli_to_onnx_of_a_mixture_does_not_import_sklearn(X, tmp_path):
    est = GaussianMixture(n_components=3, covariance_type="full", random_state=0).fit(X)
    src = _dump(est, tmp_path / "model.joblib")
    out = tmp_path / "model.onnx"
    code = ("import sys, json; from gmmnet.cli import main; rc = main(['to-onnx', sys.argv[1], '-o', sys.argv[2]]); "
            "print(json.dumps([rc, sorted(m for m in sys.modules if m == 'sklearn' or m.startswith('sklearn.'))]))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(out)], capture_output=True, text=True, env=env,
                          check=True)
    rc, sklearn_modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 0 and sklearn_modules == []
    # and the graph is the one the library writes from the estimator
    import onnx

    from gmmnet import to_onnx

    written = onnx.load(out)
    expected = to_onnx(from_sklearn(est))
    assert [i.name for i in written.graph.initializer] == [i.name for i in expected.graph.initializer]
    for a, b in zip(written.graph.initializer, expected.graph.initializer, strict=True):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))


def test_conversion_leaves_blas_threads_as_they_were(X):
    """from_sklearn checks the bases on several threads inside one serial_blas block: the BLAS
    thread counts afterwards are what they were before."""
    from threadpoolctl import threadpool_info

    est = GaussianMixture(n_components=6, covariance_type="full", random_state=0).fit(X)
    before = sorted((i["filepath"], i["num_threads"]) for i in threadpool_info())
    for _ in range(3):
        from_sklearn(est)
    assert sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()) == before
