"""HierarchicalGaussianMixture, level specs, rank truncation (gmmnet.hierarchy)."""

import pickle

import numpy as np
import pytest
from mixtures import random_mixture, sample
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from gmmnet import linalg
from gmmnet.errors import NotFittedError, UnsupportedModelError, UsageError
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.hierarchy import (
    HierarchicalGaussianMixture,
    LevelSpecError,
    format_levels,
    from_ir,
    parse_levels,
    truncate,
    truncation_error,
)
from gmmnet.ir import Hierarchy, Mixture, from_json

COV_TYPES = ["full", "tied", "diag", "spherical"]
HGM = HierarchicalGaussianMixture


@pytest.fixture(scope="module")
def iris():
    return StandardScaler().fit_transform(load_iris().data)


@pytest.fixture(scope="module")
def wine():
    return StandardScaler().fit_transform(load_wine().data)


def _close(a, b, rel=1e-10):
    """|a − b| ≤ rel · max(1, |b|) elementwise."""
    a, b = np.asarray(a), np.asarray(b)
    return np.all(np.abs(a - b) <= rel * np.maximum(1.0, np.abs(b)))


# ---------------------------------------------------------------------------
# scikit-learn conventions


@parametrize_with_checks([HGM(), HGM("2:full,2:diag:r=2")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------
# one level is exactly a GaussianMixture


@pytest.mark.parametrize("ct", COV_TYPES)
def test_one_level_scores_exactly_like_gaussian_mixture(ct, wine):
    h = HGM([{"n_components": 3, "covariance_type": ct}], random_state=0).fit(wine)
    gm = GaussianMixture(3, covariance_type=ct, random_state=0).fit(wine)
    assert _close(h.score_samples(wine), gm.score_samples(wine))
    assert abs(h.score(wine) - gm.score(wine)) <= 1e-10 * max(1.0, abs(gm.score(wine)))
    assert np.max(np.abs(h.predict_proba(wine) - gm.predict_proba(wine))) <= 1e-10
    np.testing.assert_array_equal(h.predict(wine), gm.predict(wine))
    assert h.converged_ == gm.converged_ and h.n_iter_ == gm.n_iter_
    assert h.transform(wine).shape == (len(wine), 3 * wine.shape[1])


# ---------------------------------------------------------------------------
# two levels


@pytest.mark.parametrize(
    "data,levels",
    [
        ("iris", "3:full,2:full"),
        ("iris", "3:tied:r=2,2:diag"),
        ("wine", "3:diag:r=4,3:spherical"),
        ("wine", [{"n_components": 4, "covariance_type": "full", "rank": 3}, {"n_components": 2, "covariance_type": "tied"}]),
    ],
)
def test_two_levels_consistent(data, levels, request):
    x = request.getfixturevalue(data)
    h = HGM(levels, random_state=0, max_iter=200).fit(x)
    specs = parse_levels(levels) if isinstance(levels, str) else levels
    assert len(h.levels_) == len(h.estimators_) == 2 and h.n_features_in_ == x.shape[1]

    f0, f1 = h.transform(x, level=0), h.transform(x)
    r0 = specs[0]["rank"] or x.shape[1]
    assert f0.shape == (len(x), specs[0]["n_components"] * r0)
    assert h.levels_[1].n_features == f0.shape[1]
    r1 = min(specs[1].get("rank") or f0.shape[1], f0.shape[1])
    assert f1.shape == (len(x), specs[1]["n_components"] * r1)
    np.testing.assert_array_equal(h.transform(x, level=-1), f1)
    np.testing.assert_array_equal(h.transform(x, level=-2), f0)
    assert np.all(f0 >= 0) and np.all(f1 >= 0)

    ll, proba, lab = h.score_samples(x), h.predict_proba(x), h.predict(x)
    assert np.all(np.isfinite(ll)) and np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(lab, np.argmax(proba, axis=1))
    assert h.score(x) == pytest.approx(np.mean(ll), rel=1e-12)
    # the top level (untruncated here) scores like its GaussianMixture on the propagated features
    assert _close(ll, h.estimators_[1].score_samples(f0))
    # the IR is a valid Hierarchy and round-trips through JSON exactly
    ir = h.to_ir()
    assert isinstance(ir, Hierarchy) and ir.provenance.source.endswith("HierarchicalGaussianMixture")
    back = from_ir(from_json(ir.to_json()))
    np.testing.assert_array_equal(back.score_samples(x), ll)
    np.testing.assert_array_equal(back.transform(x, level=0), f0)
    assert format_levels(back.levels) == format_levels(specs)


def test_truncated_level_features(iris):
    h = HGM("3:full:r=2,2:full", random_state=0).fit(iris)
    assert [c.rank for c in h.levels_[0].components] == [2, 2, 2]
    assert all(c.residual_variance > 0 for c in h.levels_[0].components)
    assert h.transform(iris, level=0).shape == (150, 6) and h.levels_[1].n_features == 6
    # rank >= n_features keeps everything
    full = HGM("3:full:r=9", random_state=0).fit(iris)
    np.testing.assert_array_equal(full.score_samples(iris), HGM("3:full", random_state=0).fit(iris).score_samples(iris))


@pytest.mark.parametrize("level", [2, -3, 1.0, "0", True])
def test_transform_bad_level(level, iris):
    h = HGM("2:full,2:full", random_state=0).fit(iris)
    with pytest.raises(ValueError, match="level must be"):
        h.transform(iris, level=level)


def test_not_fitted_is_both_errors(iris):
    h = HGM()
    for call in (lambda: h.to_ir(), lambda: h.predict(iris), lambda: h.transform(iris)):
        with pytest.raises(NotFittedError):
            call()
        with pytest.raises(SkNotFittedError):
            call()


def test_from_ir_mixture_and_log_constants(wine):
    bgm = BayesianGaussianMixture(n_components=3, random_state=0, max_iter=200).fit(wine)
    h = from_ir(from_sklearn(bgm))  # a Mixture is a one-level hierarchy; log constants stay exact
    assert _close(h.score_samples(wine), bgm.score_samples(wine))
    np.testing.assert_array_equal(h.predict(wine), bgm.predict(wine))
    assert h.levels == [{"n_components": 3, "covariance_type": "full", "rank": None}]
    with pytest.raises(UnsupportedModelError):
        from_ir(bgm)


# ---------------------------------------------------------------------------
# level specs


@pytest.mark.parametrize(
    "text,want",
    [
        ("8:full,4:diag:r=3", [(8, "full", None), (4, "diag", 3)]),
        (" 3 , 2 : tied ", [(3, "full", None), (2, "tied", None)]),
        ("5:spherical:rank=2", [(5, "spherical", 2)]),
        ("4:r=2", [(4, "full", 2)]),
        ("2:r=1:diag", [(2, "diag", 1)]),
    ],
)
def test_parse_levels(text, want):
    got = parse_levels(text)
    assert got == [{"n_components": k, "covariance_type": ct, "rank": r} for k, ct, r in want]
    assert parse_levels(format_levels(got)) == got


@pytest.mark.parametrize(
    "text",
    ["", "  ", "0:full", "x", "-1:full", "8:foo", "8:FULL", "8:full:r=0", "8:full:r=x", "8:full:r=-2",
     "8:full:q=3", "8:full:r=3:r=4", "8:full:diag", "8,,4", "8,", ":full", 8, None],
)
def test_parse_levels_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_levels(text)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert msg and "\n" not in msg


@pytest.mark.parametrize(
    "levels",
    [[], {"n_components": 2}, 5, [{"covariance_type": "full"}], [{"n_components": 0}], [{"n_components": True}],
     [{"n_components": 2, "foo": 1}], [{"n_components": 2, "rank": 0}], [{"n_components": 2, "rank": 1.5}],
     [{"n_components": 2, "covariance_type": "dense"}], ["2:full,3:full"], [3], "2:nope"],
)
def test_fit_rejects_bad_levels(levels, iris):
    with pytest.raises(LevelSpecError) as info:
        HGM(levels).fit(iris)
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# rank truncation


def _cov(c):
    return linalg.covariance(c.eigenvectors, c.eigenvalues, c.residual_variance)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_truncate_properties(ct, rng):
    d = 6
    m = random_mixture(rng, 3, d, ct, cond=100.0)
    x = sample(rng, m, 200)
    assert truncate(m, None) is m and truncate(m, d) is m and truncate(m, d + 3) is m
    for r in (1, 3, 5):
        t = truncate(m, r)
        assert isinstance(t, Mixture)
        assert t.covariance_type == ("tied" if ct == "tied" else "full")
        assert t.provenance.extra["truncated_from"] == ct and t.provenance.extra["truncated_rank"] == str(r)
        assert linalg.distances(t, x).shape == (200, 3 * r)
        for c, ct_ in zip(m.components, t.components):
            assert ct_.rank == r
            np.testing.assert_array_equal(ct_.mean, c.mean)
            assert ct_.weight == c.weight
            # trace preserved; kept eigenvalues are the largest ones
            assert np.trace(_cov(ct_)) == pytest.approx(np.trace(_cov(c)), rel=1e-12)
            np.testing.assert_allclose(ct_.eigenvalues, np.sort(c.eigenvalues)[::-1][:r], rtol=1e-12)
            assert ct_.residual_variance == pytest.approx(np.mean(np.sort(c.eigenvalues)[::-1][r:]), rel=1e-12)
        # the truncated density is the Gaussian mixture of those covariances (normalized)
        ref = logsumexp(
            [np.log(c.weight) + multivariate_normal(c.mean, _cov(c)).logpdf(x) for c in t.components], axis=0
        )
        np.testing.assert_allclose(linalg.log_likelihood(t, x), ref, rtol=1e-9, atol=1e-9)
        # truncating twice equals truncating once
        tt = truncate(truncate(m, 5), r)
        for a, b in zip(tt.components, t.components):
            np.testing.assert_allclose(_cov(a), _cov(b), rtol=1e-12, atol=1e-12)
            assert a.rank == r
        if ct == "spherical":  # equal eigenvalues: truncation is exact
            np.testing.assert_allclose(linalg.log_likelihood(t, x), linalg.log_likelihood(m, x), rtol=1e-12)


@pytest.mark.parametrize("rank", [0, -1, 1.5, True])
def test_truncate_rejects_bad_rank(rank, rng):
    with pytest.raises(LevelSpecError):
        truncate(random_mixture(rng, 2, 3), rank)


def test_truncation_error_on_digits():
    x = StandardScaler().fit_transform(PCA(16, random_state=0).fit_transform(load_digits().data))
    gm = GaussianMixture(5, random_state=0, max_iter=50).fit(x)
    rows = truncation_error(gm, x, [1, 4, 8, 16])
    assert [r["rank"] for r in rows] == [1, 4, 8, 16]
    full = rows[-1]
    assert full["max_abs_dloglik"] <= 1e-12 and full["label_agreement"] == 1.0 and full["retained_variance"] == 1.0
    assert rows[0]["max_abs_dloglik"] > 0.1 and rows[0]["mean_abs_dloglik"] > 0.1
    assert rows[0]["mean_abs_dloglik"] > rows[2]["mean_abs_dloglik"]
    assert 0 < rows[0]["retained_variance"] < rows[1]["retained_variance"] < rows[2]["retained_variance"] < 1
    assert all(0.0 <= r["label_agreement"] <= 1.0 for r in rows)


# ---------------------------------------------------------------------------
# persistence


def test_pickle_round_trip(iris):
    h = HGM("3:full,2:diag:r=4", random_state=0).fit(iris)
    back = pickle.loads(pickle.dumps(h))
    assert isinstance(back.levels_[0], Mixture)
    np.testing.assert_array_equal(back.score_samples(iris), h.score_samples(iris))
    np.testing.assert_array_equal(back.transform(iris, level=0), h.transform(iris, level=0))
    assert back.get_params() == h.get_params()


def test_skops_round_trip(iris, tmp_path):
    sio = pytest.importorskip("skops.io")
    h = HGM("3:full:r=3,2:tied", random_state=0).fit(iris)
    path = tmp_path / "h.skops"
    sio.dump(h, path)
    assert sio.get_untrusted_types(file=path) == ["gmmnet.hierarchy.HierarchicalGaussianMixture"]
    back = sio.load(path, trusted=["gmmnet.hierarchy.HierarchicalGaussianMixture"])
    np.testing.assert_array_equal(back.score_samples(iris), h.score_samples(iris))
    np.testing.assert_array_equal(back.predict_proba(iris), h.predict_proba(iris))
