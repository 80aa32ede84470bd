"""gmmnet.pipeline: scikit-learn estimators (no torch)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris, load_wine
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from gmmnet import errors, linalg
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.pipeline import GaussianMixtureClassifier, MahalanobisFeatures

COV_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def wine():
    X, y = load_wine(return_X_y=True)
    return StandardScaler().fit_transform(X), y


# ---------------------------------------------------------------------------
# scikit-learn compatibility (no expected failures)


@parametrize_with_checks(
    [
        MahalanobisFeatures(),
        MahalanobisFeatures(n_components=2, covariance_type="diag"),
        GaussianMixtureClassifier(),
        GaussianMixtureClassifier(covariance_type="spherical"),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------
# MahalanobisFeatures


@pytest.mark.parametrize("ct", COV_TYPES)
def test_features_are_linalg_distances(wine, ct):
    X, _ = wine
    mf = MahalanobisFeatures(n_components=3, covariance_type=ct, random_state=0).fit(X)
    Z = mf.transform(X)
    assert Z.shape == (178, 39) and mf.n_features_out_ == 39
    np.testing.assert_array_equal(Z, linalg.distances(mf.mixture_, X))
    # the squared features of a component sum to its squared Mahalanobis distance
    d2 = (Z**2).reshape(178, 3, 13).sum(-1)
    np.testing.assert_allclose(d2, linalg.mahalanobis_sq(mf.mixture_, X), rtol=1e-12)
    # and that agrees with the fitted sklearn model's own log-density
    lp = mf.estimator_._estimate_weighted_log_prob(X)  # noqa: SLF001 - reference only
    np.testing.assert_allclose(-0.5 * d2 + linalg.component_log_terms(mf.mixture_), lp, rtol=1e-10, atol=1e-10)
    names = mf.get_feature_names_out()
    assert names[:2].tolist() == ["c0_pc0", "c0_pc1"] and names[-1] == "c2_pc12" and len(names) == 39


def test_given_mixtures(wine):
    X, _ = wine
    gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    a = MahalanobisFeatures(mixture=gm).fit(X)
    assert a.estimator_ is gm  # used as is, not refitted
    b = MahalanobisFeatures(mixture=from_sklearn(gm)).fit(X[:5])  # IR mixture: fit only validates X
    assert b.estimator_ is None
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    unfitted = BayesianGaussianMixture(n_components=2, random_state=0)
    c = MahalanobisFeatures(mixture=unfitted).fit(X)
    assert not hasattr(unfitted, "means_") and isinstance(c.estimator_, BayesianGaussianMixture)
    assert c.transform(X).shape == (178, 26)
    with pytest.raises(ValueError, match="mixture takes 13"):
        MahalanobisFeatures(mixture=gm).fit(X[:, :4])
    with pytest.raises(TypeError, match="mixture must be"):
        MahalanobisFeatures(mixture="gm.pkl").fit(X)


def test_truncated_mixture_features(wine):
    from gmmnet.hierarchy import truncate

    X, _ = wine
    m = truncate(from_sklearn(GaussianMixture(n_components=2, random_state=0).fit(X)), 3)
    mf = MahalanobisFeatures(mixture=m).fit(X)
    assert mf.transform(X).shape == (178, 6)
    assert mf.get_feature_names_out().tolist() == ["c0_pc0", "c0_pc1", "c0_pc2", "c1_pc0", "c1_pc1", "c1_pc2"]


def test_pipeline_with_logistic_regression(wine):
    X, y = load_wine(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), MahalanobisFeatures(n_components=3, random_state=0),
                          LogisticRegression(max_iter=2000)).fit(Xtr, ytr)
    assert model.score(Xte, yte) >= 0.9
    assert model[:-1].get_feature_names_out()[0] == "c0_pc0"


def test_column_transformer(wine):
    X, y = load_wine(return_X_y=True)
    ct = ColumnTransformer([
        ("chem", make_pipeline(StandardScaler(), MahalanobisFeatures(n_components=2, random_state=0)), slice(0, 6)),
        ("rest", StandardScaler(), slice(6, 13)),
    ])
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    model = make_pipeline(ct, LogisticRegression(max_iter=2000)).fit(Xtr, ytr)
    assert model.score(Xte, yte) >= 0.9
    names = ct.get_feature_names_out()
    assert names[0] == "chem__c0_pc0" and names[11] == "chem__c1_pc5" and len(names) == 12 + 7
    # the block is exactly the distances of the fitted mixture on the scaled columns
    chem = ct.named_transformers_["chem"]
    np.testing.assert_array_equal(ct.transform(Xte)[:, :12],
                                  linalg.distances(chem[1].mixture_, chem[0].transform(Xte[:, :6])))


def test_pandas_input_and_output():
    pd = pytest.importorskip("pandas")
    data = load_wine(as_frame=True)
    mf = MahalanobisFeatures(n_components=2, random_state=0).set_output(transform="pandas").fit(data.data)
    out = mf.transform(data.data)
    assert isinstance(out, pd.DataFrame) and list(out.columns[:2]) == ["c0_pc0", "c0_pc1"]
    assert mf.feature_names_in_[0] == data.data.columns[0]


def test_not_fitted_is_both_errors():
    for est, call in ((MahalanobisFeatures(), "transform"), (GaussianMixtureClassifier(), "predict_proba")):
        with pytest.raises(errors.NotFittedError) as info:
            getattr(est, call)(np.zeros((2, 2)))
        assert isinstance(info.value, SklearnNotFittedError)


def test_invalid_params(wine):
    X, y = wine
    with pytest.raises(ValueError, match="n_components"):
        MahalanobisFeatures(n_components=0).fit(X)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixtureClassifier(covariance_type="banded").fit(X, y)
    with pytest.raises(ValueError, match="fewer than n_components"):
        GaussianMixtureClassifier(n_components=3).fit(X[:8], [0] * 6 + [1] * 2)
    with pytest.raises(ValueError, match="priors"):
        GaussianMixtureClassifier(priors=[0.5, 0.5]).fit(X, y)


# ---------------------------------------------------------------------------
# GaussianMixtureClassifier


def _direct_log_joint(clf, X):
    """log prior_c + log Σ_k π_ck N(x; μ_ck, Σ_ck) with scipy, straight from sklearn's covariances_."""
    cols = []
    for prior, gm in zip(clf.class_prior_, clf.estimators_):
        d = X.shape[1]
        covs = {"full": lambda k: gm.covariances_[k], "tied": lambda k: gm.covariances_,
                "diag": lambda k: np.diag(gm.covariances_[k]),
                "spherical": lambda k: gm.covariances_[k] * np.eye(d)}[gm.covariance_type]
        comp = [np.log(gm.weights_[k]) + multivariate_normal(gm.means_[k], covs(k)).logpdf(X)
                for k in range(gm.n_components)]
        cols.append(np.log(prior) + logsumexp(np.column_stack(comp), axis=1))
    return np.column_stack(cols)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_classifier_predict_proba_exact(wine, ct):
    X, y = wine
    clf = GaussianMixtureClassifier(n_components=2, covariance_type=ct, random_state=0).fit(X, y)
    jll = _direct_log_joint(clf, X)
    want = np.exp(jll - logsumexp(jll, axis=1, keepdims=True))
    proba = clf.predict_proba(X)
    assert np.max(np.abs(proba - want)) <= 1e-10
    np.testing.assert_allclose(clf.predict_joint_log_proba(X), jll, rtol=1e-10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[np.argmax(jll, axis=1)])
    assert clf.score(X, y) >= 0.95


@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_mixture_responsibilities_sum_to_predict_proba(wine, ct):
    X, y = wine
    labels = np.array(["barolo", "grignolino", "barbera"])[y]  # string classes
    clf = GaussianMixtureClassifier(n_components=2, covariance_type=ct, random_state=0).fit(X, labels)
    m = clf.to_mixture()
    assert m.n_components == 6 and len(clf.class_of_component_) == 6
    assert m.covariance_type == ("full" if ct == "tied" else ct)
    np.testing.assert_array_equal(clf.component_classes_, clf.classes_[clf.class_of_component_])
    resp = linalg.responsibilities(m, X)
    per_class = np.stack([resp[:, clf.class_of_component_ == c].sum(axis=1) for c in range(3)], axis=1)
    assert np.max(np.abs(per_class - clf.predict_proba(X))) <= 1e-10
    # the weights are prior_c · π_ck
    np.testing.assert_allclose(m.weights, np.concatenate(
        [p * e.weights_ for p, e in zip(clf.class_prior_, clf.estimators_)]), rtol=1e-12)
    extra = m.provenance.extra
    assert [int(i) for i in extra["class_of_component"].split(",")] == clf.class_of_component_.tolist()
    assert json.loads(extra["classes"]) == clf.classes_.tolist()


def test_classifier_priors_and_clone(wine):
    X, y = wine
    clf = GaussianMixtureClassifier(priors=[0.2, 0.3, 0.5], random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.class_prior_, [0.2, 0.3, 0.5])
    uniform = clone(clf).set_params(priors=None).fit(X, y)
    np.testing.assert_allclose(uniform.class_prior_, np.bincount(y) / len(y))
    # changing the prior only shifts the joint log-probability by log(prior ratio)
    shift = clf.predict_joint_log_proba(X) - uniform.predict_joint_log_proba(X)
    np.testing.assert_allclose(shift, np.broadcast_to(np.log(clf.class_prior_ / uniform.class_prior_), shift.shape),
                               rtol=1e-12)


def test_iris_one_component_per_class_beats_chance():
    X, y = load_iris(return_X_y=True)
    assert GaussianMixtureClassifier(random_state=0).fit(X, y).score(X, y) >= 0.95


# ---------------------------------------------------------------------------
# ONNX classifier


@pytest.mark.parametrize("act", ["abs", "relu"])
@pytest.mark.parametrize("ct", COV_TYPES)
def test_classifier_onnx_exact_against_predict_proba(wine, ct, act):
    from gmmnet.formats.onnx import run
    from gmmnet.formats.onnx.classifier import classifier_to_onnx

    X, y = wine
    clf = GaussianMixtureClassifier(n_components=2, covariance_type=ct, random_state=0).fit(X, y + 10)
    proba = clf.predict_proba(X)
    model = classifier_to_onnx(clf, dtype="float64", activation=act)
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    out = run(model, X)
    assert out["label"].dtype == np.int64 and out["probabilities"].shape == (len(X), 3)
    assert np.max(np.abs(out["probabilities"] - proba)) <= 1e-10
    np.testing.assert_array_equal(out["label"], clf.predict(X))  # class values 10, 11, 12, not indices
    meta = {e.key: e.value for e in model.metadata_props}
    assert json.loads(meta["classes"]) == [10, 11, 12] and meta["label_type"] == "int64"
    # float32: rounding only (the figure docs/api.md quotes for standardized data)
    out32 = run(classifier_to_onnx(clf, dtype="float32", activation=act), X.astype(np.float32))
    assert np.max(np.abs(np.asarray(out32["probabilities"], dtype=np.float64) - proba)) <= 1e-5
    np.testing.assert_array_equal(out32["label"], clf.predict(X))


def test_classifier_onnx_string_labels_and_refusals(wine, tmp_path):
    from gmmnet.formats.onnx import run
    from gmmnet.formats.onnx.classifier import classifier_to_onnx

    X, y = wine
    names = np.array(["barolo", "grignolino", "barbera"])[y]
    clf = GaussianMixtureClassifier(random_state=0).fit(X, names)
    model = classifier_to_onnx(clf, dtype="float64")
    path = tmp_path / "clf.onnx"
    path.write_bytes(model.SerializeToString())
    out = run(str(path), X)
    assert out["label"].dtype == object
    np.testing.assert_array_equal(out["label"].astype(str), clf.predict(X))
    assert np.max(np.abs(out["probabilities"] - clf.predict_proba(X))) <= 1e-10
    assert {e.key: e.value for e in model.metadata_props}["label_type"] == "string"
    with pytest.raises(errors.NotFittedError):
        classifier_to_onnx(GaussianMixtureClassifier())
    with pytest.raises(errors.UsageError, match="GaussianMixtureClassifier"):
        classifier_to_onnx(MahalanobisFeatures().fit(X))
    with pytest.raises(errors.UsageError, match="outputs"):
        classifier_to_onnx(clf, outputs=("label",))
    # scikit-learn refuses mixed label types at fit; the exporter still checks what it is given
    from gmmnet.formats.onnx.classifier import _label_tensor

    with pytest.raises(errors.UnsupportedModelError, match="integer or string"):
        _label_tensor(np.array([1, "a"], dtype=object))


# ---------------------------------------------------------------------------
# torch stays optional


def test_pipeline_does_not_import_torch_and_nn_explains_itself():
    code = (
        "import sys, gmmnet, gmmnet.pipeline\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sys.modules['torch'] = None  # simulate an environment without torch\n"
        "try:\n"
        "    import gmmnet.nn\n"
        "except ImportError as e:\n"
        "    assert str(e) == \"gmmnet.nn needs torch: pip install 'gmmnet[torch]'\", str(e)\n"
        "else:\n"
        "    raise SystemExit('gmmnet.nn imported without torch')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
