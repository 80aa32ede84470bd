"""Degenerate models through IR → ONNX (float64 and float32) → outputs (issue 4).

Zero-weight and duplicate components, K=1, d=1, scales 1e-8 … 1e8, singular covariances
(a clear error, or the explicit floor), numbers a float32 graph cannot hold (a clear error),
and NaN/inf rows in the data.  Errors, err(ll) = max |Δ| / (1 + |ref|) and max |Δ| of the
responsibilities, against the float64 reference on the dtype-rounded input, within the rows of
gmmnet.tolerances (docs/tolerances.md): mixtures whose means and spreads share one scale
(1e-8 … 1e8 is a change of units) are held to the standardized rows (float64_ll, float64_resp,
float32_ll, float32_resp); ill-conditioned ones (scales 1e-8 and 1e8 side by side, an eigenvalue
floor, λ = 1e-200) to the raw rows (float64_raw_ll, float64_raw_resp, float32_raw_ll, float32_resp).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from mixtures import random_mixture, rel_err, sample
from pydantic import ValidationError
from sklearn.mixture import GaussianMixture

from gmmnet import linalg
from gmmnet.errors import InvalidModelError, UsageError
from gmmnet.formats.onnx import run, to_onnx
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.ir import Component, Mixture, from_json
from gmmnet.tolerances import tol

ALL_OUTPUTS = ("label", "responsibilities", "log_likelihood", "distances", "mahalanobis")
DTYPES = ("float64", "float32")
#: (log-likelihood, responsibilities) rows by (dtype, raw)
ROWS = {("float64", False): ("float64_ll", "float64_resp"),
        ("float32", False): ("float32_ll", "float32_resp"),
        ("float64", True): ("float64_raw_ll", "float64_raw_resp"),
        ("float32", True): ("float32_raw_ll", "float32_resp")}


def scores(mix, x, dtype, activation="abs"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(to_onnx(mix, dtype=dtype, activation=activation, outputs=ALL_OUTPUTS), x)


def check_exact(mix, x, dtype, activation="abs", raw=False):
    """Every float output finite; log-likelihood and responsibilities within their rows."""
    out = scores(mix, x, dtype, activation)
    for name in ALL_OUTPUTS[1:]:
        assert np.all(np.isfinite(out[name])), f"{name} has NaN/inf"
    xr = x.astype(dtype).astype(np.float64)
    row_ll, row_resp = ROWS[dtype, raw]
    e_ll = rel_err(out["log_likelihood"], linalg.log_likelihood(mix, xr))
    e_resp = float(np.max(np.abs(out["responsibilities"] - linalg.responsibilities(mix, xr))))
    assert e_ll <= tol(row_ll), f"{row_ll}: {e_ll:.2e} > {tol(row_ll):g}"
    assert e_resp <= tol(row_resp), f"{row_resp}: {e_resp:.2e} > {tol(row_resp):g}"
    return out


def reweighted(mix, weights):
    comps = [c.model_copy(update={"weight": float(w)}) for c, w in zip(mix.components, weights)]
    return Mixture(n_features=mix.n_features, covariance_type=mix.covariance_type, components=comps)


# ---------------------------------------------------------------------------
# structure


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_zero_weight_components_give_zero_responsibility_not_nan(rng, dtype, activation):
    mix = reweighted(random_mixture(rng, 4, 3), [0.0, 0.5, 0.0, 0.5])
    x = sample(rng, random_mixture(rng, 4, 3), 200)  # points anywhere, also near the dead components
    out = check_exact(mix, x, dtype, activation)
    assert np.all(out["responsibilities"][:, [0, 2]] == 0.0)
    assert set(np.unique(out["label"])) <= {1, 3}


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # sklearn's own log(0) in score_samples
def test_zero_weight_component_from_sklearn(rng):
    x = rng.normal(size=(300, 2))
    gm = GaussianMixture(3, random_state=0).fit(x)
    gm.weights_ = np.array([0.0, 0.4, 0.6])
    mix = from_sklearn(gm)
    assert mix.components[0].weight == 0.0
    for dtype in DTYPES:
        out = check_exact(mix, x, dtype)
        row = ROWS[dtype, False][0]
        assert rel_err(out["log_likelihood"], gm.score_samples(x.astype(dtype).astype(float))) <= tol(row)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,d", [(1, 1), (1, 7), (5, 1)])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_k1_and_d1(rng, dtype, k, d, covariance_type):
    mix = random_mixture(rng, k, d, covariance_type)
    out = check_exact(mix, sample(rng, mix, 100), dtype)
    if k == 1:
        assert np.all(out["label"] == 0) and np.all(out["responsibilities"] == 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_duplicate_components_split_evenly(rng, dtype):
    base = random_mixture(rng, 1, 3).components[0]
    mix = Mixture(n_features=3, components=[base.model_copy(update={"weight": 0.5}) for _ in range(2)])
    out = check_exact(mix, sample(rng, mix, 100), dtype)
    np.testing.assert_array_equal(out["responsibilities"][:, 0], out["responsibilities"][:, 1])
    assert np.all(out["label"] == 0)  # first index on an exact tie


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e-8, 1e-4, 1e4, 1e8])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_huge_and_tiny_scales(rng, dtype, scale, covariance_type):
    mix = random_mixture(rng, 3, 4, covariance_type, scale=scale)
    check_exact(mix, sample(rng, mix, 100), dtype)  # means and σ scale together: a change of units


def test_mixed_scales_in_one_mixture_float64(rng):
    """Components 1e-8 and 1e8 wide side by side (condition of the whole model 1e32)."""
    a, b = random_mixture(rng, 1, 3, scale=1e-8), random_mixture(rng, 1, 3, scale=1e8)
    mix = Mixture(n_features=3, components=[a.components[0].model_copy(update={"weight": 0.5}),
                                            b.components[0].model_copy(update={"weight": 0.5})])
    x = np.concatenate([sample(rng, a, 50), sample(rng, b, 50)])
    out = check_exact(mix, x, "float64", raw=True)
    np.testing.assert_array_equal(out["label"], np.repeat([0, 1], 50))


# ---------------------------------------------------------------------------
# singular and unrepresentable covariances


def _singular_gm(rng):
    x = rng.normal(size=(300, 3))
    gm = GaussianMixture(2, random_state=0).fit(x)
    pc = gm.precisions_cholesky_.copy()
    pc[1] *= 1e200  # precision 1e400·P: the covariance underflows to exactly 0 in float64
    gm.precisions_cholesky_ = pc
    return gm, x


def test_singular_sklearn_component_is_a_clear_error(rng):
    gm, _ = _singular_gm(rng)
    with pytest.raises(InvalidModelError, match=r"component 1 has a singular covariance .*eigenvalue_floor"):
        from_sklearn(gm)


@pytest.mark.parametrize("dtype", DTYPES)
def test_explicit_floor_repairs_a_singular_component(rng, dtype):
    gm, x = _singular_gm(rng)
    mix = from_sklearn(gm, eigenvalue_floor=1e-6)
    assert mix.components[1].eigenvalues.min() == 1e-6
    assert mix.provenance.extra["eigenvalue_floor"] == "1e-06" and mix.provenance.extra["eigenvalues_floored"] == "3"
    np.testing.assert_array_equal(mix.components[0].eigenvalues, from_sklearn(
        GaussianMixture(2, random_state=0).fit(x)).components[0].eigenvalues)  # untouched component
    check_exact(mix, x, dtype, raw=True)  # λ from 1e-6 to ~1: ill-conditioned


def test_max_condition_caps_every_component(rng):
    mix = random_mixture(rng, 3, 5, "full", cond=1e12)
    assert max(c.eigenvalues.max() / c.eigenvalues.min() for c in mix.components) > 1e8
    capped, n = linalg.regularize(mix, max_condition=1e6)
    assert n > 0 and capped.provenance.extra["max_condition"] == "1000000.0"
    for c, orig in zip(capped.components, mix.components):
        assert c.eigenvalues.max() / c.eigenvalues.min() <= 1e6 * (1 + 1e-12)
        assert c.eigenvalues.max() == orig.eigenvalues.max()
        np.testing.assert_array_equal(c.eigenvectors, orig.eigenvectors)
    same, n0 = linalg.regularize(mix)  # no option: nothing changes
    assert same is mix and n0 == 0


@pytest.mark.parametrize("covariance_type", ["tied", "spherical", "diag"])
def test_floor_keeps_the_covariance_structure(rng, covariance_type):
    mix = random_mixture(rng, 3, 4, covariance_type, scale=1e-3)
    floored, n = linalg.regularize(mix, eigenvalue_floor=1e-5)
    assert n > 0 and floored.covariance_type == covariance_type  # the IR re-validated tied/spherical


def test_floor_options_are_checked():
    for bad in ({"eigenvalue_floor": 0.0}, {"eigenvalue_floor": -1.0}, {"eigenvalue_floor": float("nan")},
                {"max_condition": 0.5}, {"max_condition": float("inf")}):
        with pytest.raises(UsageError):
            linalg.check_floor_options(**{"eigenvalue_floor": None, "max_condition": None, **bad})


def test_non_positive_eigenvalue_in_ir_is_refused_naming_the_field():
    good = Component(mean=[0.0, 0.0], eigenvectors=np.eye(2), eigenvalues=[1.0, 1.0], weight=1.0)
    doc = Mixture(n_features=2, components=[good]).model_dump(mode="json")
    doc["components"][0]["eigenvalues"] = [1.0, 0.0]
    import json

    with pytest.raises(ValidationError, match="components.0"):
        from_json(json.dumps(doc))


def test_float32_range_is_checked_not_silently_nan(rng):
    mix = random_mixture(rng, 2, 3, scale=1e-100)  # λ = 1e-200: weights 1e100 overflow float32
    with pytest.raises(InvalidModelError, match=r"component 0: .* outside the float32 range .*--dtype float64"):
        linalg.check_representable(mix, "float32")
    linalg.check_representable(mix, "float64")
    check_exact(mix, sample(rng, mix, 50), "float64", raw=True)
    # an explicit floor makes it representable in float32 (a different, wider model)
    floored, _ = linalg.regularize(mix, eigenvalue_floor=1e-60)
    linalg.check_representable(floored, "float32")
    out = scores(floored, sample(rng, mix, 20), "float32")
    assert np.all(np.isfinite(out["log_likelihood"]))


def test_library_to_onnx_refuses_what_its_arithmetic_cannot_hold(rng):
    mix = random_mixture(rng, 2, 3, scale=1e-100)
    with pytest.raises(InvalidModelError, match="outside the float32 range"):
        to_onnx(mix, dtype="float32", compute="float32")
    # auto computes in float64 here (the float32 error estimate is far past the targets): finite outputs
    out = run(to_onnx(mix, dtype="float32"), sample(rng, mix, 20).astype(np.float32))
    assert np.all(np.isfinite(out["log_likelihood"]))


def test_float32_bias_overflow_is_checked(rng):
    mix = random_mixture(rng, 1, 2, scale=1e-20)
    far = mix.components[0].model_copy(update={"mean": np.array([1e25, 0.0])})  # |b| = 1e25 / 1e-20
    with pytest.raises(InvalidModelError, match="overflows float32"):
        linalg.check_representable(Mixture(n_features=2, components=[far]), "float32")


# ---------------------------------------------------------------------------
# data rows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_nan_and_inf_rows_leave_the_other_rows_intact(rng, dtype, covariance_type):
    mix = random_mixture(rng, 3, 2, covariance_type)
    x = sample(rng, mix, 6)
    bad = x.copy()
    bad[1] = [np.nan, 0.0]
    bad[3] = [np.inf, 0.0]
    bad[4] = [-np.inf, np.inf]
    good_rows = [0, 2, 5]
    clean, dirty = scores(mix, x, dtype), scores(mix, bad, dtype)
    for name in ("log_likelihood", "responsibilities", "label", "mahalanobis"):
        np.testing.assert_array_equal(dirty[name][good_rows], clean[name][good_rows])
    assert np.isnan(dirty["log_likelihood"][1])  # NaN in, NaN out
    assert not np.any(np.isfinite(dirty["log_likelihood"][[3, 4]]))  # inf in: -inf or NaN, never a number
    assert not np.any(np.isfinite(dirty["responsibilities"][1]))


def test_regularize_a_hierarchy_records_the_floor(rng):
    from gmmnet.hierarchy import HierarchicalGaussianMixture

    x = rng.normal(size=(200, 3))
    doc = HierarchicalGaussianMixture(levels="2:full,2:diag", random_state=0).fit(x).to_ir()
    floored, n = linalg.regularize(doc, eigenvalue_floor=5.0)
    assert n > 0 and floored.provenance.extra["eigenvalues_floored"] == str(n)
    assert floored.provenance.extra["levels"] == doc.provenance.extra["levels"]  # the rest is kept
    assert all(c.eigenvalues.min() >= 5.0 for m in floored.levels for c in m.components)
