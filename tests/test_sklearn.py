import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.preprocessing import StandardScaler

from gmmnet import linalg
from gmmnet.errors import NotFittedError, PrecisionWarning, UnsupportedModelError
from gmmnet.formats.sklearn import from_sklearn, to_sklearn

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _data(raw: bool):
    x = load_breast_cancer().data[:, :8] if raw else load_wine().data
    return x if raw else StandardScaler().fit_transform(x)


def _fit(cls, ct, x, **kw):
    if cls is BayesianGaussianMixture:
        kw.setdefault("weight_concentration_prior_type", "dirichlet_process")
    return cls(n_components=4, covariance_type=ct, random_state=0, max_iter=200, **kw).fit(x)


@pytest.mark.parametrize("raw", [False, True], ids=["standardized", "raw"])
@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
def test_ir_scores_exactly_like_sklearn(cls, ct, raw):
    x = _data(raw)
    est = _fit(cls, ct, x)
    m = from_sklearn(est)
    assert m.covariance_type == ct and m.provenance.source.endswith(cls.__name__)
    ref = est.score_samples(x)
    assert np.max(np.abs(linalg.log_likelihood(m, x) - ref) / (1 + np.abs(ref))) <= 1e-11
    assert np.max(np.abs(linalg.responsibilities(m, x) - est.predict_proba(x))) <= 1e-11
    # eigen-basis reproduces sklearn's covariances
    covs = est.covariances_
    for k, c in enumerate(m.components):
        want = {"full": lambda: covs[k], "tied": lambda: covs, "diag": lambda: np.diag(covs[k]),
                "spherical": lambda: covs[k] * np.eye(x.shape[1])}[ct]()
        got = linalg.covariance(c.eigenvectors, c.eigenvalues)
        assert np.allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


def test_dirichlet_distribution_prior():
    x = _data(False)
    est = _fit(BayesianGaussianMixture, "full", x, weight_concentration_prior_type="dirichlet_distribution")
    ref = est.score_samples(x)
    assert np.max(np.abs(linalg.log_likelihood(from_sklearn(est), x) - ref) / (1 + np.abs(ref))) <= 1e-11


def test_eigenvalues_descending_and_neurons_whiten():
    x = _data(False)
    m = from_sklearn(_fit(GaussianMixture, "full", x))
    for c in m.components:
        assert np.all(np.diff(c.eigenvalues) <= 0)
        w, b = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
        cov = linalg.covariance(c.eigenvectors, c.eigenvalues)
        assert np.allclose(w @ cov @ w.T, np.eye(x.shape[1]), atol=1e-9)
        assert np.allclose(w @ c.mean + b, 0, atol=1e-9)


def test_unfitted_and_foreign_estimators_are_refused():
    with pytest.raises(NotFittedError, match="not fitted"):
        from_sklearn(GaussianMixture(2))
    with pytest.raises(UnsupportedModelError, match="KMeans"):
        from_sklearn(KMeans(2))
    with pytest.raises(UnsupportedModelError):
        from_sklearn({"means_": 1})


@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_sklearn_round_trip(ct):
    x = _data(False)
    est = _fit(GaussianMixture, ct, x)
    gm = to_sklearn(from_sklearn(est))
    assert gm.covariance_type == ct
    assert np.allclose(gm.score_samples(x), est.score_samples(x), rtol=1e-10, atol=1e-10)
    assert np.array_equal(gm.predict(x), est.predict(x))
    assert gm.sample(5)[0].shape == (5, x.shape[1])


def test_to_sklearn_folds_bayesian_constants_with_warning():
    x = _data(False)
    est = _fit(BayesianGaussianMixture, "full", x)
    with pytest.warns(PrecisionWarning):
        gm = to_sklearn(from_sklearn(est))
    assert np.allclose(gm.predict_proba(x), est.predict_proba(x), atol=1e-10)
    shift = gm.score_samples(x) - est.score_samples(x)
    assert np.ptp(shift) < 1e-9  # only a constant shift
