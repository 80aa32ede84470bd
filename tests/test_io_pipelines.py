"""Pipelines in model files (issue 14): the affine steps load, every other step is refused by name
before anything of it is built, and unsafe content stays unsafe."""

from __future__ import annotations

import os
import pickle
import warnings

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    Normalizer,
    PolynomialFeatures,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
)

from gmmnet import io as gio
from gmmnet.cli import main
from gmmnet.errors import InputFileError, InvalidModelError, UnsafeFileError, UnsupportedModelError
from gmmnet.hierarchy import HierarchicalGaussianMixture

FORMATS = ["pkl-p2", "pkl-p4", "pkl-p5", "joblib", "joblib-zlib", "skops"]


@pytest.fixture(scope="module")
def X():
    return load_iris().data


def _fit(pipe, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipe.fit(X)


def _save(fmt: str, obj, folder):
    if fmt.startswith("pkl"):
        path = folder / "pipe.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=int(fmt[-1])))
    elif fmt.startswith("joblib"):
        path = folder / "pipe.joblib"
        joblib.dump(obj, path, compress=3 if fmt.endswith("zlib") else 0)
    else:
        path = folder / "pipe.skops"
        sio.dump(obj, path)
    return path


def _native_load(path):
    if path.suffix == ".pkl":
        return pickle.loads(path.read_bytes())
    if path.suffix == ".joblib":
        return joblib.load(path)
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))


ACCEPTED = {
    "standard": lambda: [StandardScaler()],
    "standard-no-mean": lambda: [StandardScaler(with_mean=False)],
    "standard-no-std": lambda: [StandardScaler(with_std=False)],
    "minmax": lambda: [MinMaxScaler(feature_range=(-1, 2))],
    "maxabs": lambda: [MaxAbsScaler()],
    "robust": lambda: [RobustScaler(quantile_range=(10.0, 90.0))],
    "pca": lambda: [PCA(3)],
    "pca-whiten-randomstate": lambda: [PCA(2, whiten=True, svd_solver="randomized",
                                           random_state=np.random.RandomState(0))],
    "svd": lambda: [TruncatedSVD(2, random_state=0)],
    "passthrough": lambda: ["passthrough"],
    "chain": lambda: [StandardScaler(), "passthrough", PCA(3, whiten=True), MinMaxScaler()],
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("steps", list(ACCEPTED))
def test_affine_pipelines_load_and_score_identically(steps, fmt, X, tmp_path):
    """gmmnet's loader gives what the format's own (unsafe) loader gives, bit for bit (a pickled
    Fortran-ordered array comes back C-ordered either way, so compare with that, not the original)."""
    pipe = _fit(make_pipeline(*ACCEPTED[steps](), GaussianMixture(2, covariance_type="full", random_state=0)), X)
    path = _save(fmt, pipe, tmp_path)
    back, ref = gio.load_estimator(path), _native_load(path)
    assert type(back) is Pipeline
    assert [name for name, _ in back.steps] == [name for name, _ in pipe.steps]
    np.testing.assert_array_equal(back.score_samples(X), ref.score_samples(X))
    np.testing.assert_allclose(back.score_samples(X), pipe.score_samples(X), rtol=1e-12)
    np.testing.assert_array_equal(back.predict(X), ref.predict(X))


@pytest.mark.parametrize("fmt", ["pkl-p4", "joblib-zlib", "skops"])
@pytest.mark.parametrize("last", ["bayesian", "hierarchy"])
def test_other_mixtures_as_the_last_step(last, fmt, X, tmp_path):
    mixture = (BayesianGaussianMixture(n_components=3, random_state=0, max_iter=50) if last == "bayesian"
               else HierarchicalGaussianMixture("3:full,2:diag", random_state=0))
    pipe = _fit(Pipeline([("scale", StandardScaler()), ("pca", PCA(3)), ("mix", mixture)]), X)
    path = _save(fmt, pipe, tmp_path)
    np.testing.assert_array_equal(gio.load_model(path).score_samples(X), _native_load(path).score_samples(X))


def test_saved_pipelines_round_trip(X, tmp_path):
    pipe = _fit(make_pipeline(RobustScaler(), PCA(2), GaussianMixture(2, random_state=0)), X)
    for suffix in (".skops", ".pkl", ".joblib"):
        gio.save_estimator(pipe, tmp_path / f"p{suffix}")
        path = tmp_path / f"p{suffix}"
        np.testing.assert_array_equal(gio.load_estimator(path).score_samples(X), _native_load(path).score_samples(X))


REFUSED = {
    "Normalizer": lambda: Normalizer(),
    "PolynomialFeatures": lambda: PolynomialFeatures(2),
    "FunctionTransformer": lambda: FunctionTransformer(np.tanh),
    "QuantileTransformer": lambda: QuantileTransformer(n_quantiles=20),
    "ColumnTransformer": lambda: ColumnTransformer([("s", StandardScaler(), [0, 1])], remainder="passthrough"),
}


def _boom(*args, **kwargs):
    raise AssertionError("a refused step was built")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("step", list(REFUSED))
def test_other_steps_are_refused_by_name_before_they_are_built(step, fmt, X, tmp_path, monkeypatch):
    est = REFUSED[step]()
    pipe = _fit(make_pipeline(StandardScaler(), est, GaussianMixture(2, random_state=0)), X)
    path = _save(fmt, pipe, tmp_path)
    monkeypatch.setattr(type(est), "__setstate__", _boom, raising=False)  # an instance would get its state
    with pytest.raises(UnsupportedModelError) as excinfo:
        gio.load_estimator(path)
    msg = str(excinfo.value)
    assert f".{step}, which is not an affine step gmmnet converts" in msg and path.name in msg, msg
    assert "StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, PCA, TruncatedSVD, gmmnet's AffineTransform or 'passthrough'" in msg


@pytest.mark.parametrize("fmt", ["pkl-p4", "skops"])
def test_refused_step_exits_5_on_the_command_line(fmt, X, tmp_path, capsys):
    path = _save(fmt, _fit(make_pipeline(Normalizer(), GaussianMixture(2, random_state=0)), X), tmp_path)
    for verb in (["inspect", str(path)], ["to-onnx", str(path), "-o", str(tmp_path / "p.onnx")]):
        assert main(verb) == UnsupportedModelError.exit_code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Normalizer, which is not an affine step" in err


class Payload:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize("fmt", ["pkl-p2", "pkl-p4", "joblib"])
def test_unsafe_content_stays_unsafe_even_beside_a_refused_step(fmt, X, tmp_path, capsys):
    canary = tmp_path / "canary"
    scaler = _fit(StandardScaler(), X)
    scaler.mean_ = Payload(os.system, (f"touch {canary}",))
    pipe = make_pipeline(Normalizer(), scaler, _fit(GaussianMixture(2, random_state=0), X))  # Normalizer first
    path = _save(fmt, pipe, tmp_path)
    with pytest.raises(UnsafeFileError, match=r"refusing to load posix\.system"):
        gio.load_estimator(path)
    assert main(["inspect", str(path)]) == UnsafeFileError.exit_code
    assert "posix.system" in capsys.readouterr().err
    assert not canary.exists()


@pytest.mark.parametrize("fmt", ["pkl-p4", "skops"])
def test_a_refused_step_holding_a_callable_is_unsafe(fmt, X, tmp_path):
    step = FunctionTransformer(os.system)  # its class is refused by name; the function it holds is unsafe
    path = _save(fmt, make_pipeline(step, _fit(GaussianMixture(2, random_state=0), X)), tmp_path)
    with pytest.raises(UnsafeFileError, match=r"refusing to load posix\.system"):
        gio.load_estimator(path)


def test_skops_unsafe_type_beside_a_refused_step(X, tmp_path):
    import fractions

    scaler = _fit(StandardScaler(), X)
    scaler.extra_ = fractions.Fraction(1, 3)
    path = _save("skops", make_pipeline(Normalizer(), scaler, _fit(GaussianMixture(2, random_state=0), X)), tmp_path)
    with pytest.raises(UnsafeFileError, match=r"refusing to load fractions\.Fraction"):
        gio.load_estimator(path)


@pytest.mark.parametrize("fmt", ["pkl-p4", "skops"])
def test_a_step_alone_or_a_pipeline_without_a_mixture_is_unsupported(fmt, X, tmp_path):
    path = _save(fmt, _fit(StandardScaler(), X), tmp_path)
    with pytest.raises(UnsupportedModelError, match="holds a StandardScaler on its own"):
        gio.load_estimator(path)
    path = _save(fmt, _fit(make_pipeline(StandardScaler(), PCA(2)), X), tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"the Pipeline ends in a sklearn\.decomposition\._pca\.PCA, not a mixture"):
        gio.load_estimator(path)
    two = Pipeline([("a", _fit(GaussianMixture(2, random_state=0), X)), ("b", _fit(GaussianMixture(2, random_state=0), X))])
    path = _save(fmt, two, tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"Pipeline step 'a' is a sklearn\.mixture"):
        gio.load_estimator(path)


def test_a_tampered_mixture_inside_a_pipeline_is_checked(X, tmp_path):
    pipe = _fit(make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0)), X)
    pipe.steps[-1][1].means_ = np.zeros((5, 4))
    with pytest.raises(InvalidModelError, match=r"means_ has shape \(5, 4\), expected \(2, n_features\)"):
        gio.load_estimator(_save("pkl-p4", pipe, tmp_path))
    pipe = _fit(make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0)), X)
    pipe.steps = "not steps"
    with pytest.raises(InvalidModelError, match="the Pipeline has no steps"):
        gio.load_estimator(_save("pkl-p4", pipe, tmp_path))


def test_allowlist_names_exactly_the_accepted_classes():
    assert sorted(c.rsplit(".", 1)[1] for c in gio.step_classes()) == sorted(
        ["Pipeline", "StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "PCA", "TruncatedSVD",
         "AffineTransform"])
    from gmmnet.pipeline import AffineTransform

    for cls in (Pipeline, StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, PCA, TruncatedSVD, AffineTransform):
        assert f"{cls.__module__}.{cls.__qualname__}" in gio.step_classes()


def test_corrupt_pickle_after_a_refused_class_still_names_it(X, tmp_path):
    pipe = _fit(make_pipeline(Normalizer(), GaussianMixture(2, random_state=0)), X)
    data = pickle.dumps(pipe, protocol=4)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises((UnsupportedModelError, InputFileError)) as excinfo:
        gio.load_estimator(path)
    assert isinstance(excinfo.value, UnsupportedModelError) and "Normalizer" in str(excinfo.value)
