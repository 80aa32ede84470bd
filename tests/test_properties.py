"""Property tests: random mixtures through IR JSON, ONNX float64/float32 and back (issue 4).

Mixtures: every covariance type (a parameter, so each is covered at every run), K 1–16, d 1–32
(with the corners K, d ∈ {1, 16/32} as explicit examples), one scale per mixture drawn
log-uniformly from 1e-4 to 1e4 (means and standard deviations scale together: a change of
units), condition numbers up to 1e3.  Tolerances are rows of gmmnet.tolerances
(docs/tolerances.md), with err(ll) = max |Δ| / (1 + |ref|):
  * IR JSON: bit-exact (``ir_json``).
  * ONNX float64: err(ll) ≤ ``float64_ll`` and |Δ responsibilities| ≤ ``float64_resp``.
  * ONNX float32 (default compute): err(ll) ≤ ``float32_ll``, responsibilities ≤ ``default_resp``.
    The float32 reference is the float64 mixture on the float32-rounded input.  Labels agree
    except where the top two log-joints tie within ``label_tie`` (relative).
  * Back through from_onnx: means and covariances within ``readback_float64`` (float64 graph) or
    ``readback_float32`` (float32 graph) relative, per component; weights likewise.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mixtures import random_mixture, sample

from gmmnet import linalg
from gmmnet.formats.onnx import run, to_onnx
from gmmnet.ir import from_json
from gmmnet.formats.onnx.read import from_onnx
from gmmnet.tolerances import tol

COV_TYPES = ("full", "tied", "diag", "spherical")
#: Examples per property; raise it for a longer run: GMMNET_PROPERTY_EXAMPLES=2000 pytest tests/test_properties.py
N = int(os.environ.get("GMMNET_PROPERTY_EXAMPLES", "60"))
ROWS = {"float64": ("float64_ll", "float64_resp", "readback_float64"),
        "float32": ("float32_ll", "default_resp", "readback_float32")}

mixtures = st.builds(
    dict,
    k=st.integers(1, 16),
    d=st.integers(1, 32),
    log10_scale=st.floats(-4, 4),
    cond=st.sampled_from([1.0, 10.0, 1e3]),
    seed=st.integers(0, 2**32 - 1),
)
#: the corners of K × d, tried first on every run
CORNERS = [dict(k=k, d=d, log10_scale=s, cond=1e3, seed=0) for k, d, s in
           [(1, 1, 0.0), (16, 1, -4.0), (1, 32, 4.0), (16, 32, 0.0)]]


def corners(**draws):
    """Decorate a @given test with the corner examples (other drawn arguments fixed to `draws`)."""
    def deco(test):
        for p in reversed(CORNERS):
            test = example(p=p, **draws)(test)
        return test
    return deco


def make(p, covariance_type):
    rng = np.random.default_rng(p["seed"])
    mix = random_mixture(rng, p["k"], p["d"], covariance_type, scale=10.0 ** p["log10_scale"], cond=p["cond"])
    return rng, mix


def _err(a, ref):
    return float(np.max(np.abs(a - ref) / (1.0 + np.abs(ref))))


def _cov(c):
    return linalg.covariance(c.eigenvectors, c.eigenvalues, c.residual_variance)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@settings(max_examples=max(N // 4, 1), deadline=None)
@corners()
@given(p=mixtures)
def test_ir_json_round_trip_is_bit_exact(covariance_type, p):
    assert tol("ir_json") == 0.0  # the row states bit-exactness
    _, mix = make(p, covariance_type)
    back = from_json(mix.model_dump_json())
    assert back.covariance_type == mix.covariance_type and back.n_components == mix.n_components
    for a, b in zip(back.components, mix.components):
        for name in ("mean", "stored_eigenvectors", "eigenvalues"):  # what the document holds
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or x.tobytes() == y.tobytes(), name
        assert a.weight == b.weight and a.log_constant == b.log_constant
    # and the text form is stable (serializing twice gives the same document)
    assert json.loads(back.model_dump_json()) == json.loads(mix.model_dump_json())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
@settings(max_examples=max(N // 4, 1), deadline=None)
@corners(activation="relu")
@given(p=mixtures, activation=st.sampled_from(["abs", "relu"]))
def test_onnx_scores_and_recovers_the_mixture(covariance_type, dtype, p, activation):
    rng, mix = make(p, covariance_type)
    x = sample(rng, mix, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PrecisionWarning is asserted elsewhere; here the numbers speak
        model = to_onnx(mix, dtype=dtype, activation=activation)
    out = run(model, x)
    xr = x.astype(dtype).astype(np.float64)  # measure the graph's arithmetic, not the input rounding
    ll_ref, resp_ref = linalg.log_likelihood(mix, xr), linalg.responsibilities(mix, xr)
    assert np.all(np.isfinite(out["log_likelihood"])) and np.all(np.isfinite(out["responsibilities"]))
    row_ll, row_resp, row_back = ROWS[dtype]
    e_ll, e_resp = _err(out["log_likelihood"], ll_ref), float(np.max(np.abs(out["responsibilities"] - resp_ref)))
    assert e_ll <= tol(row_ll), f"{row_ll}: {e_ll:.2e}"
    assert e_resp <= tol(row_resp), f"{row_resp}: {e_resp:.2e}"
    lj = linalg.log_joint(mix, xr)
    top2 = np.sort(lj, axis=1)[:, -2:] if mix.n_components > 1 else None
    differ = out["label"] != np.argmax(lj, axis=1)
    if np.any(differ):
        gap = (top2[:, 1] - top2[:, 0]) / np.maximum(1.0, np.abs(top2[:, 1]))
        assert np.all(gap[differ] <= tol("label_tie")), "labels differ where the top two log-joints do not tie"

    del model.metadata_props[:]  # recover from the weights alone
    rec, report = from_onnx(model)
    assert report["exact"] and rec.n_components == mix.n_components and rec.n_features == mix.n_features
    back = tol(row_back)
    for k, (a, b) in enumerate(zip(rec.components, mix.components)):
        cov_a, cov_b = _cov(a), _cov(b)
        assert np.max(np.abs(cov_a - cov_b)) <= back * np.max(np.abs(cov_b)), f"component {k} covariance"
        # a mean is compared in its own Gaussian's units (relative to |μ| or σ_max, whichever is larger)
        unit = max(np.max(np.abs(b.mean)), float(np.sqrt(b.eigenvalues.max())))
        assert np.max(np.abs(a.mean - b.mean)) <= back * unit, f"component {k} mean"
    np.testing.assert_allclose(rec.weights, mix.weights, atol=back)
