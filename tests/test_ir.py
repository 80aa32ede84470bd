import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mixtures import random_mixture
from pydantic import ValidationError

from gmmnet import ir, linalg
from gmmnet.ir import Component, Hierarchy, Mixture

COV_TYPES = ["full", "tied", "diag", "spherical"]
ROOT = Path(__file__).resolve().parents[1]


def assert_bit_equal(a: Mixture, b: Mixture):
    assert a.n_features == b.n_features and a.covariance_type == b.covariance_type
    for ca, cb in zip(a.components, b.components, strict=True):
        for f in ("mean", "eigenvectors", "eigenvalues"):
            x, y = getattr(ca, f), getattr(cb, f)
            assert x.dtype == y.dtype == np.float64
            assert x.tobytes() == y.tobytes(), f
        assert ca.weight == cb.weight and ca.log_constant == cb.log_constant


@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 16),
    d=st.integers(1, 32),
    ct=st.sampled_from(COV_TYPES),
    log_scale=st.floats(-6, 6),
)
def test_json_round_trip_is_bit_exact(seed, k, d, ct, log_scale):
    rng = np.random.default_rng(seed)
    m = random_mixture(rng, k, d, ct, scale=10.0**log_scale)
    back = ir.from_json(m.to_json())
    assert isinstance(back, Mixture)
    assert_bit_equal(m, back)
    # and the scores are identical, not merely close
    x = rng.standard_normal((5, d)) * 10.0**log_scale
    assert np.array_equal(linalg.log_likelihood(m, x), linalg.log_likelihood(back, x))


def test_special_floats_round_trip():
    vals = np.array([5e-324, 1e-300, 1.0 + 2**-52, 1e300])
    c = Component(mean=np.array([-0.0, 1e-310, 3.0, -7.5]), eigenvectors=np.eye(4), eigenvalues=vals, weight=1.0)
    back = ir.from_json(Mixture(n_features=4, covariance_type="diag", components=[c]).to_json())
    assert back.components[0].eigenvalues.tobytes() == vals.tobytes()
    assert np.signbit(back.components[0].mean[0])


def _one(**over):
    base = dict(mean=np.zeros(2), eigenvectors=np.eye(2), eigenvalues=np.ones(2), weight=1.0)
    base.update(over)
    return base


@pytest.mark.parametrize(
    "over, field, text",
    [
        (dict(eigenvalues=np.array([1.0, 0.0])), "eigenvalues", "singular"),
        (dict(eigenvalues=np.array([1.0, -2.0])), "eigenvalues", "> 0"),
        (dict(mean=np.array([np.nan, 0.0])), "mean", "non-finite"),
        (dict(eigenvectors=np.array([[1.0, 0.0], [0.6, 0.8]])), "eigenvectors", "orthonormal"),
        (dict(eigenvectors=np.eye(3)), "eigenvectors", "shape"),
        (dict(weight=1.5), "weight", "less than or equal"),
    ],
)
def test_validation_names_the_field(over, field, text):
    doc = {"kind": "mixture", "n_features": 2, "components": [{k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                                             for k, v in _one(**over).items()}]}
    with pytest.raises(ValidationError) as exc:
        ir.from_json(json.dumps(doc))
    line = ir.format_validation_error(exc.value)
    assert line.startswith("components.0"), line
    assert field in line or text in line
    assert text in line


def test_weights_must_sum_to_one():
    c = _one(weight=0.4)
    with pytest.raises(ValidationError, match="sum to"):
        Mixture(n_features=2, components=[Component(**c), Component(**c)])


def test_structure_of_covariance_type_is_checked():
    rot = np.array([[0.6, 0.8], [-0.8, 0.6]])
    with pytest.raises(ValidationError, match="identity"):
        Mixture(n_features=2, covariance_type="diag", components=[Component(**_one(eigenvectors=rot))])
    with pytest.raises(ValidationError, match="equal"):
        Mixture(n_features=2, covariance_type="spherical",
                components=[Component(**_one(eigenvalues=np.array([1.0, 2.0])))])
    a, b = Component(**_one(weight=0.5)), Component(**_one(weight=0.5, eigenvalues=np.array([2.0, 1.0])))
    with pytest.raises(ValidationError, match="tied"):
        Mixture(n_features=2, covariance_type="tied", components=[a, b])


def test_rank_truncated_needs_residual():
    with pytest.raises(ValidationError, match="residual_variance"):
        Component(mean=np.zeros(3), eigenvectors=np.eye(3)[:2], eigenvalues=np.ones(2), weight=1.0)
    c = Component(mean=np.zeros(3), eigenvectors=np.eye(3)[:2], eigenvalues=np.ones(2), weight=1.0, residual_variance=0.5)
    assert c.rank == 2


def test_malformed_array_objects_are_rejected():
    bad = {"dtype": "<f4", "shape": [2], "base64": "AAAAAAAAAAA="}
    doc = {"kind": "mixture", "n_features": 2, "components": [dict(_one(), mean=bad, eigenvectors=[[1, 0], [0, 1]],
                                                                   eigenvalues=[1, 1])]}
    with pytest.raises(ValidationError, match="dtype"):
        ir.from_json(json.dumps(doc))
    doc["components"][0]["mean"] = {"dtype": "<f8", "shape": [3], "base64": "AAAAAAAAAAA="}
    with pytest.raises(ValidationError, match="bytes"):
        ir.from_json(json.dumps(doc))


def test_hierarchy_levels_chain_features(rng):
    lvl0 = random_mixture(rng, 3, 2, "full")
    lvl1 = random_mixture(rng, 2, 6, "diag")
    h = Hierarchy(levels=[lvl0, lvl1])
    back = ir.from_json(h.to_json())
    assert isinstance(back, Hierarchy) and len(back.levels) == 2
    with pytest.raises(ValidationError, match="neurons of levels"):
        Hierarchy(levels=[lvl0, random_mixture(rng, 2, 5, "diag")])


def test_schema_file_is_current():
    on_disk = json.loads((ROOT / "schemas" / "gmmnet-ir.schema.json").read_text())
    assert on_disk == ir.json_schema(), "schemas/ is stale: run `gmmnet schema -o schemas/gmmnet-ir.schema.json --force`"


# ---------------------------------------------------------------------------
# schema 1.1: axis-aligned components store no directions; input transforms


def test_axis_aligned_components_store_no_identity():
    m = random_mixture(np.random.default_rng(0), 3, 5, "diag")
    assert all(c.axis_aligned for c in m.components)
    doc = json.loads(m.to_json())
    assert doc["schema_version"] == "1.1" and all(c["eigenvectors"] is None for c in doc["components"])
    assert np.array_equal(m.components[0].eigenvectors, np.eye(5))  # dense on demand


def test_schema_1_0_identity_eigenvectors_are_read_as_axis_aligned():
    m = random_mixture(np.random.default_rng(1), 2, 3, "spherical")
    doc = json.loads(m.to_json())
    doc["schema_version"] = "1.0"
    for c in doc["components"]:
        c["eigenvectors"] = np.eye(3).tolist()
    back = ir.from_json(json.dumps(doc))
    assert all(c.axis_aligned for c in back.components)
    x = np.random.default_rng(2).standard_normal((4, 3))
    assert np.array_equal(linalg.log_likelihood(back, x), linalg.log_likelihood(m, x))
    doc["schema_version"] = "2.0"
    with pytest.raises(ValidationError, match="schema_version"):
        ir.from_json(json.dumps(doc))


def test_large_spherical_mixture_never_builds_d_by_d():
    import tracemalloc

    from sklearn.mixture import GaussianMixture

    from gmmnet.formats.sklearn import from_sklearn

    d = 30_000
    gm = GaussianMixture(2, covariance_type="spherical")
    gm.weights_, gm.means_ = np.array([0.5, 0.5]), np.zeros((2, d))
    gm.covariances_ = np.array([1.0, 2.0])
    gm.precisions_cholesky_ = 1 / np.sqrt(gm.covariances_)
    tracemalloc.start()
    m = from_sklearn(gm)
    x = np.ones((3, d))
    ll = linalg.log_likelihood(m, x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6, peak  # a d×d float64 identity would be 7.2 GB
    assert np.allclose(ll, gm.score_samples(x), rtol=1e-12)


def test_input_transform_round_trip_and_checks():
    m = random_mixture(np.random.default_rng(3), 2, 3, "full")
    t = ir.InputTransform(matrix=np.arange(12.0).reshape(3, 4), offset=np.ones(3),
                          steps=[ir.TransformStep(name="pca", cls="sklearn.decomposition.PCA", params={"whiten": False})])
    mt = m.model_copy(update={"input_transform": t})
    back = ir.from_json(mt.to_json())
    assert back.input_transform.n_inputs == 4 and back.input_transform.steps[0].params == {"whiten": False}
    assert np.array_equal(back.input_transform.apply(np.ones((1, 4))), np.ones((1, 4)) @ t.matrix.T + 1)
    with pytest.raises(ValidationError, match="input_transform.matrix has 3 rows, expected 2"):
        Mixture(n_features=2, covariance_type="diag", input_transform=t,
                components=[Component(mean=np.zeros(2), eigenvalues=np.ones(2), weight=1.0)])
    with pytest.raises(ValidationError, match="offset must have shape"):
        ir.InputTransform(matrix=np.eye(2), offset=np.ones(3))
