import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.mixture.tests.test_gaussian_mixture import RandomData
from sklearn.preprocessing import StandardScaler

from gmmnet import ir, linalg
from gmmnet.errors import GmmnetError, InvalidModelError, NotFittedError, ResourceLimitError, UnsupportedModelError
from gmmnet.formats.sklearn import from_sklearn, to_sklearn
from gmmnet.limits import set_max_memory
from gmmnet.tolerances import tol

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _data(raw: bool):
    x = load_breast_cancer().data[:, :8] if raw else load_wine().data
    return x if raw else StandardScaler().fit_transform(x)


def _fit(cls, ct, x, **kw):
    if cls is BayesianGaussianMixture:
        kw.setdefault("weight_concentration_prior_type", "dirichlet_process")
    return cls(n_components=4, covariance_type=ct, random_state=0, max_iter=200, **kw).fit(x)


def rel(got, ref) -> float:
    return float(np.max(np.abs(got - ref) / (1 + np.abs(ref))))


@pytest.mark.parametrize("raw", [False, True], ids=["standardized", "raw"])
@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
def test_ir_scores_exactly_like_sklearn(cls, ct, raw):
    x = _data(raw)
    est = _fit(cls, ct, x)
    m = from_sklearn(est)
    assert m.covariance_type == ct and m.provenance.source.endswith(cls.__name__)
    assert rel(linalg.log_likelihood(m, x), est.score_samples(x)) <= tol("ir_ll")
    assert np.max(np.abs(linalg.responsibilities(m, x) - est.predict_proba(x))) <= tol("ir_resp")
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
    assert rel(linalg.log_likelihood(from_sklearn(est), x), est.score_samples(x)) <= tol("ir_ll")


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


# ---------------------------------------------------------------------------
# the shared basis of raw, badly scaled data (tied on raw breast_cancer was 1.25e-11 with an SVD)


def _longdouble_d2(u, mu, x):
    y = (x.astype(np.longdouble) - mu.astype(np.longdouble)) @ u.astype(np.longdouble)
    return np.sum(y * y, axis=1)


@pytest.mark.skipif(np.finfo(np.longdouble).eps > 1e-18, reason="the reference needs an extended long double")
@pytest.mark.parametrize("ct", ["full", "tied"])
def test_basis_of_raw_features_keeps_relative_accuracy(ct):
    x = load_breast_cancer().data  # features from 1e-3 to 1e3: cond(Σ) up to ~1e12
    est = GaussianMixture(3, covariance_type=ct, reg_covar=1e-10, random_state=0).fit(x)
    m = from_sklearn(est)
    pcs = est.precisions_cholesky_ if ct == "full" else [est.precisions_cholesky_] * 3
    for k, c in enumerate(m.components):
        ref = _longdouble_d2(pcs[k], c.mean, x)
        z = linalg.project(c, x - c.mean)
        assert np.max(np.abs(np.sum(z * z, axis=1) - ref) / (1 + ref)) <= 1e-11


def test_fast_and_jacobi_bases_agree_on_well_conditioned_factors(rng):
    a = rng.standard_normal((5, 6, 12))
    covs = a @ a.transpose(0, 2, 1) / 12 + np.eye(6)
    covs[4] *= np.logspace(0, 4, 6)[:, None] * np.logspace(0, 4, 6)  # one badly scaled: the Jacobi path
    u = np.stack([np.linalg.inv(np.linalg.cholesky(s)).T for s in covs])
    vecs, lam = linalg.bases_from_precision_cholesky(u)
    for k in range(5):
        assert np.all(np.diff(lam[k]) <= 0)
        back = (vecs[k].T * lam[k]) @ vecs[k]
        assert np.allclose(back, covs[k], rtol=1e-10, atol=1e-12 * np.abs(covs[k]).max())


# ---------------------------------------------------------------------------
# issue 13, item 1: a Dirichlet-process BGM whose weights_ underflow to exactly 0


@pytest.mark.parametrize("ct", COV_TYPES)
def test_bgm_with_underflowing_weights_converts_exactly(ct):
    x = RandomData(np.random.RandomState(0), n_samples=200, n_components=2, n_features=2, scale=1).X[ct]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: "not converged"
        est = BayesianGaussianMixture(n_components=80, covariance_type=ct, weight_concentration_prior=1e-6,
                                      weight_concentration_prior_type="dirichlet_process", random_state=0,
                                      max_iter=10).fit(x)  # 10 EM steps already underflow (and keep the test fast)
    zero = np.flatnonzero(est.weights_ == 0)
    assert zero.size > 0  # the fixture still underflows
    m = from_sklearn(est)
    assert m.n_components == 80 and np.all(np.isfinite(m.log_constants))
    assert m.provenance.extra["zero_weight_components"] == ",".join(map(str, zero))
    assert rel(linalg.log_likelihood(m, x), est.score_samples(x)) <= tol("ir_ll")
    assert np.max(np.abs(linalg.responsibilities(m, x) - est.predict_proba(x))) <= tol("ir_resp")
    assert np.array_equal(np.argmax(linalg.log_joint(m, x), axis=1), est.predict(x))


def test_bgm_with_underflowing_weights_through_the_cli(tmp_path):
    """`gmmnet to-onnx` exited 7 ("log_constant must be finite") on this model; now the graph is exact."""
    import joblib

    from gmmnet.cli import main
    from gmmnet.formats.onnx import run

    x = RandomData(np.random.RandomState(0), n_samples=200, n_components=2, n_features=2, scale=1).X["diag"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = BayesianGaussianMixture(n_components=80, covariance_type="diag", weight_concentration_prior=1e-6,
                                      weight_concentration_prior_type="dirichlet_process", random_state=0,
                                      max_iter=10).fit(x)
    assert np.any(est.weights_ == 0)
    joblib.dump(est, tmp_path / "bgm.joblib")
    assert main(["to-onnx", str(tmp_path / "bgm.joblib"), "-o", str(tmp_path / "bgm.onnx"), "--dtype", "float64"]) == 0
    import onnx

    out = run(onnx.load(str(tmp_path / "bgm.onnx")), x)
    assert rel(out["log_likelihood"], est.score_samples(x)) <= tol("float64_ll")
    assert np.max(np.abs(out["responsibilities"] - est.predict_proba(x))) <= tol("float64_resp")


# ---------------------------------------------------------------------------
# issue 13, item 3: to_sklearn on ill-conditioned covariances


def _line_in_3d():
    rng = np.random.default_rng(0)
    t = rng.standard_normal(300)
    return np.outer(t, [1.0, 2.0, -0.5]) + [3.0, -1.0, 2.0] + 1e-5 * rng.standard_normal((300, 3))


@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_sklearn_is_exact_on_ill_conditioned_covariances(ct):
    x = _line_in_3d()
    est = GaussianMixture(2, covariance_type=ct, reg_covar=1e-10, random_state=0).fit(x)
    gm = to_sklearn(from_sklearn(est))
    assert rel(gm.score_samples(x), est.score_samples(x)) <= tol("to_sklearn")
    assert np.array_equal(gm.predict(x), est.predict(x))
    if ct in ("full", "tied"):  # sklearn's convention: upper triangular, positive diagonal
        for u in np.atleast_3d(gm.precisions_cholesky_).reshape(-1, 3, 3):
            assert np.allclose(u, np.triu(u)) and np.all(np.diag(u) > 0)
        assert np.allclose(gm.precisions_cholesky_, est.precisions_cholesky_, rtol=1e-8)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_sklearn_round_trip(ct):
    x = _data(False)
    est = _fit(GaussianMixture, ct, x)
    gm = to_sklearn(from_sklearn(est))
    assert gm.covariance_type == ct
    assert rel(gm.score_samples(x), est.score_samples(x)) <= tol("to_sklearn")
    assert np.array_equal(gm.predict(x), est.predict(x))
    assert gm.sample(5)[0].shape == (5, x.shape[1])


def test_to_sklearn_of_a_rank_truncated_mixture_keeps_its_residual():
    from gmmnet.hierarchy import truncate

    x = _data(False)
    m = truncate(from_sklearn(_fit(GaussianMixture, "full", x)), 3)
    gm = to_sklearn(m)
    assert rel(gm.score_samples(x), linalg.log_likelihood(m, x)) <= tol("to_sklearn")


# ---------------------------------------------------------------------------
# issue 13, item 5: BayesianGaussianMixture → GaussianMixture is exact


@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_sklearn_of_a_bayesian_mixture_scores_exactly(ct):
    x = load_iris().data
    est = _fit(BayesianGaussianMixture, ct, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: it is exact
        gm = to_sklearn(from_sklearn(est))
    assert rel(gm.score_samples(x), est.score_samples(x)) <= tol("to_sklearn")
    assert np.max(np.abs(gm.predict_proba(x) - est.predict_proba(x))) <= tol("ir_resp")
    # the digamma log-weights and Wishart constants live in weights_, which then sum to Z <= 1
    z = gm.weights_.sum()
    assert 0 < z <= 1
    shift = logsumexp(est._estimate_weighted_log_prob(x), axis=1) - est.score_samples(x)
    assert np.max(np.abs(shift)) < 1e-12  # (sklearn's own definition of the score, for the record)


# ---------------------------------------------------------------------------
# issue 13, item 4: invalid models reach API callers as GmmnetError


def _gm_with(**attrs):
    x = _data(False)
    gm = _fit(GaussianMixture, "diag", x)
    gm.__dict__.update(attrs)
    return gm


def test_invalid_weights_raise_invalid_model_error():
    gm = GaussianMixture(2, covariance_type="diag")
    gm.weights_, gm.means_ = np.array([1.5, -0.5]), np.zeros((2, 3))
    gm.covariances_ = np.ones((2, 3))
    gm.precisions_cholesky_ = np.ones((2, 3))
    with pytest.raises(InvalidModelError, match=r"weights_ must be >= 0 with a positive sum, got \[ 1.5 -0.5\]"):
        from_sklearn(gm)


def test_weights_that_do_not_sum_to_one_are_kept_exactly():
    """GaussianMixture scores with log(weights_) as they are (what to_sklearn writes for a BGM)."""
    x = load_iris().data
    bgm = _fit(BayesianGaussianMixture, "full", x)
    gm = to_sklearn(from_sklearn(bgm))
    assert gm.weights_.sum() < 1
    m = from_sklearn(gm)
    assert float(m.provenance.extra["weights_sum"]) == gm.weights_.sum()
    assert rel(linalg.log_likelihood(m, x), bgm.score_samples(x)) <= tol("to_sklearn")


@pytest.mark.parametrize("attrs, text", [
    (dict(means_=np.full((4, 13), np.nan)), "means_ has non-finite values"),
    (dict(precisions_cholesky_=np.ones((3, 13))), r"precisions_cholesky_ has shape \(3, 13\), expected \(4, 13\)"),
    (dict(weights_=np.ones(3) / 3), r"weights_ has shape \(3,\), expected \(4,\)"),
])
def test_tampered_attributes_raise_invalid_model_error(attrs, text):
    with pytest.raises(InvalidModelError, match=text):
        from_sklearn(_gm_with(**attrs))


def test_ir_models_raise_gmmnet_errors_that_stay_value_errors():
    with pytest.raises(GmmnetError) as exc:
        ir.Mixture(n_features=2, components=[ir.Component(mean=np.zeros(2), eigenvalues=np.ones(2), weight=0.5)],
                   covariance_type="diag")
    assert isinstance(exc.value, InvalidModelError) and isinstance(exc.value, ValueError)
    assert exc.value.exit_code == InvalidModelError.exit_code
    assert str(exc.value) == "document: component weights sum to 0.5, expected 1 (tolerance 1e-06)"
    with pytest.raises(InvalidModelError, match=r"^component: eigenvalues must be > 0"):
        ir.Component(mean=np.zeros(2), eigenvalues=np.array([1.0, -1.0]), weight=1.0)
    with pytest.raises(InvalidModelError, match="json_invalid|Invalid JSON") as exc:
        ir.from_json("{not json")
    assert exc.value.errors()[0]["type"] == "json_invalid"


# ---------------------------------------------------------------------------
# issue 13, item 8: sizes are estimated before full bases are built


def test_full_bases_are_refused_above_the_memory_limit():
    gm = GaussianMixture(2, covariance_type="full")
    d = 600
    gm.weights_, gm.means_ = np.array([0.5, 0.5]), np.zeros((2, d))
    gm.covariances_ = gm.precisions_cholesky_ = np.stack([np.eye(d)] * 2)
    set_max_memory("4M")
    try:
        with pytest.raises(ResourceLimitError, match=r"eigen-bases of 2 full 600×600 covariances would need 16\.5 MiB"):
            from_sklearn(gm)
    finally:
        set_max_memory(None)
    assert from_sklearn(gm).n_features == d


def test_large_diag_mixture_round_trips_without_d_by_d():
    import tracemalloc

    d = 20_000
    gm = GaussianMixture(3, covariance_type="diag")
    rng = np.random.default_rng(0)
    gm.weights_, gm.means_ = np.full(3, 1 / 3), rng.standard_normal((3, d))
    gm.covariances_ = rng.uniform(0.5, 2, (3, d))
    gm.precisions_cholesky_ = 1 / np.sqrt(gm.covariances_)
    x = rng.standard_normal((4, d))
    tracemalloc.start()
    m = from_sklearn(gm)
    back = to_sklearn(m)
    ll = linalg.log_likelihood(m, x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6, peak  # one d×d float64 matrix would be 3.2 GB
    assert rel(ll, gm.score_samples(x)) <= tol("ir_ll") and rel(back.score_samples(x), ll) <= tol("to_sklearn")
