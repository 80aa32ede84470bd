"""Issue 14 (core side): Pipelines of affine steps and a mixture ⇄ IR with an input transform."""

import pickle
import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mixtures import random_mixture
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (FunctionTransformer, MaxAbsScaler, MinMaxScaler, Normalizer, PolynomialFeatures,
                                   QuantileTransformer, RobustScaler, StandardScaler)

from gmmnet import ir, linalg
from gmmnet.errors import InvalidModelError, NotFittedError, UnsupportedModelError
from gmmnet.formats.sklearn import compose_steps, from_sklearn, to_sklearn
from gmmnet.hierarchy import HierarchicalGaussianMixture
from gmmnet.pipeline import AffineTransform, GaussianMixtureClassifier, to_estimator
from gmmnet.tolerances import tol

X = load_breast_cancer().data  # raw: features from 1e-3 to 1e3
Y = load_breast_cancer().target
COV_TYPES = ["full", "tied", "diag", "spherical"]
STEPS = {
    "standard": lambda: [StandardScaler()],
    "standard-no-mean": lambda: [StandardScaler(with_mean=False)],
    "standard-no-std": lambda: [StandardScaler(with_std=False)],
    "minmax": lambda: [MinMaxScaler(feature_range=(-1, 2))],
    "maxabs": lambda: [MaxAbsScaler()],
    "robust": lambda: [RobustScaler()],
    "robust-no-centering": lambda: [RobustScaler(with_centering=False)],
    "pca": lambda: [PCA(10)],
    "pca-whiten": lambda: [PCA(10, whiten=True)],
    "truncated-svd": lambda: [TruncatedSVD(10, random_state=0)],
    "passthrough": lambda: ["passthrough", StandardScaler()],
    "standard-pca-whiten": lambda: [StandardScaler(), PCA(8, whiten=True), None],
}


def rel(got, ref) -> float:
    return float(np.max(np.abs(got - ref) / (1 + np.abs(ref))))


def _pipe(steps, last):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BGM: "not converged"
        return make_pipeline(*steps, last).fit(X)


def _mixture(cls, ct):
    kw = {"weight_concentration_prior_type": "dirichlet_process"} if cls is BayesianGaussianMixture else {}
    # 20 EM steps: exactness does not depend on convergence, and the test stays fast
    return cls(n_components=2, covariance_type=ct, random_state=0, max_iter=20, **kw)


@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("steps", list(STEPS))
def test_pipeline_ir_scores_like_the_pipeline(steps, ct, cls):
    pipe = _pipe(STEPS[steps](), _mixture(cls, ct))
    m = from_sklearn(pipe)
    t = m.input_transform
    assert t is not None and t.n_inputs == X.shape[1] and m.n_inputs == X.shape[1]
    real = [s for s in pipe.steps[:-1] if s[1] not in (None, "passthrough")]
    assert [s.name for s in t.steps] == [name for name, _ in real]
    assert t.steps[0].cls.startswith("sklearn.") and t.steps[0].cls.endswith(type(real[0][1]).__name__)
    assert t.diagonal == all(type(s) not in (PCA, TruncatedSVD) for _, s in real)  # scalers stay diagonal
    # the density over z, as Pipeline.score_samples: sklearn's own expanded diag form is the larger error
    assert rel(linalg.log_likelihood(m, X), pipe.score_samples(X)) <= tol("ir_pipeline_ll")
    assert np.max(np.abs(linalg.responsibilities(m, X) - pipe.predict_proba(X))) <= tol("ir_resp")
    assert ir.from_json(m.to_json()).input_transform.steps == t.steps


@pytest.mark.parametrize("step, text", [
    (Normalizer(), "'normalizer' (Normalizer) is not an affine map"),
    (PolynomialFeatures(2), "'polynomialfeatures' (PolynomialFeatures) is not an affine map"),
    (FunctionTransformer(np.log1p), "'functiontransformer' (FunctionTransformer) is not an affine map"),
    (QuantileTransformer(n_quantiles=50), "'quantiletransformer' (QuantileTransformer) is not an affine map"),
    (ColumnTransformer([("s", StandardScaler(), [0, 1])], remainder="passthrough"), "'columntransformer'"),
    (MinMaxScaler(clip=True), r"not an affine map \(clip=True"),
])
def test_steps_that_are_not_affine_are_refused_by_name(step, text):
    pipe = _pipe([step], GaussianMixture(2, covariance_type="diag", random_state=0))
    with pytest.raises(UnsupportedModelError, match=text if "\\(" in text else re.escape(text)) as exc:
        from_sklearn(pipe)
    assert "StandardScaler, MinMaxScaler" in str(exc.value)


def test_a_subclass_of_an_affine_step_is_not_trusted():
    class LogScaler(StandardScaler):
        def transform(self, X, copy=None):
            return super().transform(np.log1p(X), copy)

    pipe = _pipe([LogScaler()], GaussianMixture(2, covariance_type="diag", random_state=0))
    with pytest.raises(UnsupportedModelError, match="'logscaler' .* not an affine map"):
        from_sklearn(pipe)


def test_unfitted_steps_and_a_last_step_that_is_not_a_mixture():
    pipe = make_pipeline(StandardScaler(), GaussianMixture(2))
    with pytest.raises(NotFittedError, match="'standardscaler'"):
        from_sklearn(pipe)
    with pytest.raises(UnsupportedModelError, match="last step 'pca'"):
        from_sklearn(make_pipeline(StandardScaler(), PCA(3)).fit(X))


def test_nested_pipelines_compose():
    inner = make_pipeline(StandardScaler(), PCA(6))
    pipe = Pipeline([("pre", inner), ("gm", GaussianMixture(2, random_state=0))]).fit(X)
    m = from_sklearn(pipe)
    assert [s.name for s in m.input_transform.steps] == ["pre__standardscaler", "pre__pca"]
    assert rel(linalg.log_likelihood(m, X), pipe.score_samples(X)) <= tol("ir_pipeline_ll")


def test_compose_steps_without_affine_work_is_none():
    assert compose_steps([("a", "passthrough"), ("b", None)]) is None
    pipe = _pipe(["passthrough"], GaussianMixture(2, random_state=0))
    assert from_sklearn(pipe).input_transform is None


def test_hierarchy_and_classifier_in_a_pipeline():
    hpipe = _pipe([StandardScaler(), PCA(6)], HierarchicalGaussianMixture("3:full,2:diag", random_state=0))
    h = from_sklearn(hpipe)
    assert isinstance(h, ir.Hierarchy) and h.input_transform.n_outputs == 6 and h.n_inputs == X.shape[1]
    back = to_estimator(h)
    assert isinstance(back, Pipeline) and rel(back.score_samples(X), hpipe.score_samples(X)) <= tol("to_sklearn")
    with pytest.raises(UnsupportedModelError, match="to_estimator"):
        HierarchicalGaussianMixture.from_ir(h)

    cpipe = make_pipeline(StandardScaler(), GaussianMixtureClassifier(2, random_state=0)).fit(X, Y)
    m = from_sklearn(cpipe)
    assert m.input_transform.diagonal and "class_of_component" in m.provenance.extra
    resp = linalg.responsibilities(m, X)
    cls = np.array([int(i) for i in m.provenance.extra["class_of_component"].split(",")])
    per_class = np.stack([resp[:, cls == c].sum(axis=1) for c in range(2)], axis=1)
    assert np.max(np.abs(per_class - cpipe.predict_proba(X))) <= 1e-10


# ---------------------------------------------------------------------------
# the way back: a Pipeline of an AffineTransform and the mixture


@pytest.mark.parametrize("steps", ["standard", "pca-whiten", "standard-pca-whiten", "minmax"])
@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_estimator_scores_raw_data_like_the_pipeline(steps, ct):
    pipe = _pipe(STEPS[steps](), _mixture(BayesianGaussianMixture, ct))
    m = from_sklearn(pipe)
    back = to_estimator(m)
    assert [name for name, _ in back.steps] == ["affinetransform", "gaussianmixture"]
    assert rel(back.score_samples(X), pipe.score_samples(X)) <= tol("to_sklearn")
    assert np.array_equal(back.predict(X), pipe.predict(X))
    again = from_sklearn(pickle.loads(pickle.dumps(back)))  # the AffineTransform is read back by duck typing
    assert again.input_transform.steps == m.input_transform.steps
    assert rel(linalg.log_likelihood(again, X), linalg.log_likelihood(m, X)) <= tol("to_sklearn")
    with pytest.raises(UnsupportedModelError, match="to_estimator"):
        to_sklearn(m)


def test_affine_transform_is_a_plain_transformer():
    t = AffineTransform(matrix=[[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]], offset=[1.0, 0.0, -1.0]).fit(np.zeros((1, 2)))
    assert np.array_equal(t.transform([[1.0, 1.0]]), [[4.0, 1.0, 2.0]])
    assert t.get_feature_names_out().tolist() == ["z0", "z1", "z2"]
    c = clone(t).fit()
    assert np.array_equal(c.matrix_, t.matrix_) and c.n_features_out_ == 3
    state = pickle.loads(pickle.dumps(t)).__dict__
    assert {k for k, v in state.items() if not isinstance(v, (np.ndarray, list, int, float, type(None)))} == set()
    with pytest.raises(ValueError, match="exactly one of matrix and scale"):
        AffineTransform().fit()
    with pytest.raises(InvalidModelError, match="offset must have shape"):
        AffineTransform(scale=[1.0, 2.0], offset=[0.0]).fit()


# ---------------------------------------------------------------------------
# linalg: raw coordinates, folding neurons, sampling inputs


def _with_transform(m, t):
    return ir.Mixture(n_features=m.n_features, covariance_type=m.covariance_type, components=m.components,
                      input_transform=t)


@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("diagonal", [True, False])
def test_raw_view_is_the_density_over_raw_inputs(ct, diagonal, rng):
    d = 4
    m = random_mixture(rng, 3, d, ct)
    if diagonal:
        t = ir.InputTransform(scale=rng.uniform(0.1, 10, d) * rng.choice([-1, 1], d), offset=rng.standard_normal(d))
    else:
        t = ir.InputTransform(matrix=rng.standard_normal((d, d)), offset=rng.standard_normal(d))
    mt = _with_transform(m, t)
    raw, logdet = linalg.raw_view(mt)
    assert raw.input_transform is None and raw.n_features == d
    assert raw.covariance_type == (("diag" if ct != "spherical" else "diag") if diagonal and ct in ("diag", "spherical")
                                   else ("tied" if ct == "tied" else "full"))
    x = linalg.sample(mt, 40, seed=1)
    assert np.allclose(t.apply(x), linalg.sample(m, 40, seed=1))
    assert rel(linalg.log_likelihood(raw, x), linalg.log_likelihood(mt, x) + logdet) <= 1e-10
    assert np.max(np.abs(linalg.responsibilities(raw, x) - linalg.responsibilities(mt, x))) <= 1e-10
    assert np.isclose(logdet, np.linalg.slogdet(t.dense())[1])


def test_raw_view_needs_an_invertible_transform(rng):
    m = random_mixture(rng, 2, 2, "full")
    with pytest.raises(InvalidModelError, match="maps 3 inputs to 2 features"):
        linalg.raw_view(_with_transform(m, ir.InputTransform(matrix=rng.standard_normal((2, 3)), offset=np.zeros(2))))


@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 6), extra=st.integers(0, 3), log_cond=st.floats(0, 6))
def test_folded_neurons_compute_the_same_distances(seed, d, extra, log_cond):
    """Random affine maps, badly conditioned ones included: fold and unfold are exact inverses."""
    rng = np.random.default_rng(seed)
    m = random_mixture(rng, 2, d, "full")
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d + extra, d + extra)))
    a = (u * np.logspace(0, log_cond, d)) @ v[:d]  # k = d rows over d + extra inputs, cond 10^log_cond
    t = ir.InputTransform(matrix=a, offset=rng.standard_normal(d) * 10)
    mt = _with_transform(m, t)
    x = rng.standard_normal((20, d + extra)) * 3
    for k, c in enumerate(m.components):
        w, b = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
        wx, bx = linalg.fold_neurons(w, b, t)
        got = np.abs(x @ wx.T + bx)
        ref = linalg.distances(mt, x)[:, k * d:(k + 1) * d]
        assert np.max(np.abs(got - ref) / (1 + np.abs(ref))) <= 1e-9
        wz, bz = linalg.unfold_neurons(wx, bx, t)
        scale = np.abs(w).max()
        assert np.max(np.abs(wz - w)) <= 1e-9 * scale * 10**log_cond and np.allclose(bz, b, atol=1e-6 * (1 + np.abs(b).max()))


def test_diagonal_fold_and_preimage(rng):
    t = ir.InputTransform(scale=np.array([2.0, 0.5, -4.0]), offset=np.array([1.0, 0.0, 3.0]))
    w, b = rng.standard_normal((5, 3)), rng.standard_normal(5)
    wx, bx = linalg.fold_neurons(w, b, t)
    assert np.allclose(wx, w * t.scale) and np.allclose(bx, b + w @ t.offset)
    wz, bz = linalg.unfold_neurons(wx, bx, t)
    assert np.allclose(wz, w) and np.allclose(bz, b)
    z = rng.standard_normal((4, 3))
    assert np.allclose(t.apply(linalg.preimage(t, z)), z)
