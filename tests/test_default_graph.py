"""The default graph (issue 15): what ``to_onnx(mixture)`` writes with no options, per covariance type.

Its speed is measured by benchmarks/run.py (docs/performance.md), never asserted here.  Here:
the shape each type gets (the paper's neurons stay: a Gemm of w = λ^-½ v rows), the arithmetic
``compute="auto"`` picks, the accuracy at the stated rows (``float32_ll``, ``default_resp``)
against scikit-learn on overlapping models of the benchmark's kind, and the read-back
(``from_onnx``) of every default graph.  The comparison with skl2onnx on real data sets is in
tests/test_onnx_export.py (``test_standardized_matches_sklearn``, ``test_raw_data``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from mixtures import random_mixture, rel_err, sample

from gmmnet import linalg
from gmmnet.errors import PrecisionWarning
from gmmnet.formats.onnx import OUTPUTS, from_onnx, run, to_onnx
from gmmnet.formats.onnx.export import predicted_errors
from gmmnet.tolerances import tol

COV_TYPES = ("full", "tied", "diag", "spherical")


def _meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def _overlapping(ct: str, k: int = 6, d: int = 12, seed: int = 0):
    """Components about 1σ apart, so that responsibilities are not 0/1 (as the benchmark's models)."""
    return random_mixture(np.random.default_rng(seed), k, d, ct, spread=0.5)


def _errors(model, mix, x):
    out = run(model, x)
    xr = x.astype(np.float32).astype(np.float64)
    e_ll = rel_err(out["log_likelihood"], linalg.log_likelihood(mix, xr))
    e_resp = float(np.max(np.abs(out["responsibilities"] - linalg.responsibilities(mix, xr))))
    return e_ll, e_resp


@pytest.mark.parametrize("ct", COV_TYPES)
def test_default_shape_and_arithmetic(ct):
    mix = _overlapping(ct)
    model = to_onnx(mix)
    meta = _meta(model)
    ops = [n.op_type for n in model.graph.node]
    names = {n.name for n in model.graph.node}
    assert meta["compute"] == "float32" and meta["layout_requested"] == "auto"
    assert "Abs" not in ops  # |z|² = z²: the sum of squares reads the pre-activations
    if ct == "full":  # one Gemm of the component's neurons per component, summed in squares at once
        assert meta["layout"] == "neurons" and ops.count("Gemm") == mix.n_components
        inits = {i.name for i in model.graph.initializer}
        assert all(f"layer0/c{k}/W" in inits for k in range(mix.n_components))
    elif ct == "tied":  # the shared neurons once, their expansion in float64
        assert meta["layout"] == "neurons" and "layer0/shared_linear" in names and "layer0/cast" in names
        assert "head/cross_term" in names
    else:  # the quadratic form in float32, the two Gemms giving the log-joint
        assert meta["layout"] == "quadratic" and "Cast" not in ops and "head/log_joint" in names
        assert [n.op_type for n in model.graph.node if n.name == "head/log_joint"] == ["Gemm"]
    pred = predicted_errors(mix)
    assert pred["compute"] == "float32" and pred["layout"] == meta["layout"]
    assert pred["log_likelihood"] <= tol("float32_ll") and pred["responsibilities"] <= tol("default_resp")


@pytest.mark.parametrize("ct", COV_TYPES)
def test_default_accuracy_and_the_accurate_opt_in(ct):
    mix = _overlapping(ct)
    x = sample(np.random.default_rng(1), mix, 3000).astype(np.float32)
    e_ll, e_resp = _errors(to_onnx(mix), mix, x)
    assert e_ll <= tol("float32_ll") and e_resp <= tol("default_resp"), (e_ll, e_resp)
    accurate = to_onnx(mix, compute="float64")
    assert _meta(accurate)["layout"] == "neurons" and _meta(accurate)["compute"] == "float64"
    a_ll, a_resp = _errors(accurate, mix, x)
    assert a_ll <= tol("float32_ll") and a_resp <= tol("float32_resp"), (a_ll, a_resp)
    assert a_resp <= e_resp or a_resp <= 2e-7  # the opt-in is the more accurate one


@pytest.mark.parametrize("ct", COV_TYPES)
def test_default_reads_back(ct):
    mix = _overlapping(ct)
    back, report = from_onnx(to_onnx(mix))
    assert back.covariance_type == ct and back.n_components == mix.n_components
    x = sample(np.random.default_rng(2), mix, 500)
    assert rel_err(linalg.log_likelihood(back, x), linalg.log_likelihood(mix, x)) <= tol("readback_float32")
    scale = np.abs(mix.means).max()
    assert np.max(np.abs(back.means - mix.means)) <= tol("readback_float32") * scale
    cov_w, cov_g = (np.stack([linalg.covariance(linalg.basis(c), np.broadcast_to(c.eigenvalues, (m.n_features,)))
                              for c in m.components]) for m in (mix, back))
    assert np.max(np.abs(cov_g - cov_w)) <= tol("readback_float32") * np.abs(cov_w).max()


@pytest.mark.parametrize("ct", COV_TYPES)
def test_every_output_and_option_still_works(ct):
    mix = _overlapping(ct)
    x = sample(np.random.default_rng(3), mix, 200).astype(np.float32)
    xr = x.astype(np.float64)
    out = run(to_onnx(mix, outputs=OUTPUTS), x)
    np.testing.assert_allclose(out["distances"], linalg.distances(mix, xr), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(out["mahalanobis"] ** 2, linalg.mahalanobis_sq(mix, xr), rtol=1e-4, atol=1e-4)
    relu = run(to_onnx(mix, activation="relu"), x)
    assert rel_err(relu["log_likelihood"], linalg.log_likelihood(mix, xr)) <= tol("float32_ll")
    sk = run(to_onnx(mix, output_names="skl2onnx"), x)
    assert set(sk) == {"label", "probabilities", "score_samples"} and sk["label"].shape == (200, 1)
    f64 = run(to_onnx(mix, dtype="float64"), xr)
    assert rel_err(f64["log_likelihood"], linalg.log_likelihood(mix, xr)) <= tol("float64_ll")
    # a dynamic batch: one row, then many
    model = to_onnx(mix)
    assert run(model, x[:1])["log_likelihood"].shape == (1,)
    assert run(model, np.repeat(x, 5, axis=0))["log_likelihood"].shape == (1000,)


def test_quadratic_float32_falls_back_where_it_would_cancel():
    """Narrow components far from the centre: the expanded form in float32 would cancel, so the
    default computes it in float64 (or writes the neurons), and says why."""
    rng = np.random.default_rng(4)
    mix = random_mixture(rng, 3, 4, "diag", scale=1e-3, spread=3e3)  # |μ|/σ ~ 3000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        model = to_onnx(mix)
    meta = _meta(model)
    assert meta["compute"] == "float64"
    x = sample(rng, mix, 500).astype(np.float32)
    e_ll, _ = _errors(model, mix, x)
    assert e_ll <= tol("float32_raw_ll"), e_ll
