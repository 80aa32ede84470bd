"""Calibration with a full residual: ``calibrate(..., residual="full")`` and ``to-gmm --residual full``.

A layer of rank r < d gives each component r directions.  ``residual="isotropic"`` models the
d − r directions it lacks by one variance; ``residual="full"`` (the default) keeps the layer's r
directions (never moved) and estimates a free covariance in their orthogonal complement.  Tested where the
answer is known: rows drawn from a full-covariance mixture whose complement is NOT isotropic,
and a layer holding each component's true r leading directions with wrong scales and means.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gmmnet import cli, linalg
from gmmnet.errors import UsageError
from gmmnet.recover import calibrate, from_layers, holdout_split
from gmmnet.tolerances import tol

from test_calibrate import bare_layer_onnx, call, log_eig_error, mean_error_sigma, planted

ROOT = Path(__file__).resolve().parents[1]
# the complement of the top 2 directions has variances 4, 2, 1: one isotropic variance cannot fit it
SPECTRUM = np.array([25.0, 9.0, 4.0, 2.0, 1.0])


def kl_to_truth(t, c) -> float:
    """KL(truth_k ‖ calibrated_k), closed form."""
    return linalg.gaussian_kl(t.mean, t.eigenvectors, t.eigenvalues, None,
                              c.mean, c.eigenvectors, c.eigenvalues, c.residual_variance)


@pytest.fixture(scope="module")
def narrow():
    """A rank-2 layer in d = 5 (means off by 0.5σ, see test_calibrate's rank-2 test), 30,000 rows."""
    truth, x, W, b, r = planted(seed=1, d=5, spectrum=SPECTRUM, rank=2, mean_offset=0.5)
    inverted, _ = from_layers(W, b, groups=r, data=x)
    return truth, x, inverted, r, W, b


def test_full_residual_recovers_the_true_covariance(narrow):
    truth, x, inverted, r, W, b = narrow
    full, rep = calibrate(inverted, x, kl_samples=0)  # full is the default
    iso, _ = calibrate(inverted, x, kl_samples=0, residual="isotropic")
    assert rep["residual"] == "full" and rep["converged"]
    for c, ci, t, inv in zip(full.components, iso.components, truth.components, inverted.components):
        # a full-rank component: the layer's 2 directions plus the complement's 3 eigenvectors
        assert c.rank == 5 and c.residual_variance is None
        np.testing.assert_allclose(c.eigenvectors @ c.eigenvectors.T, np.eye(5), atol=1e-12)
        # the layer's directions never move: each is one of the calibrated eigenvectors
        np.testing.assert_allclose(np.abs(inv.eigenvectors @ c.eigenvectors.T).max(axis=1), 1.0, atol=1e-12)
        # measured 3e-4 to 2.2e-3 nats on seeds 1-4 (sampling error of a 5-d Gaussian on 6,000-15,000 rows);
        # the isotropic residual on the same rows stays 0.23 nats away
        assert kl_to_truth(t, c) <= tol("calibration_planted_kl")
        assert kl_to_truth(t, ci) > 0.2
        assert log_eig_error(c, t) <= tol("calibration_planted_eigenvalue")
        assert mean_error_sigma(c, t) <= tol("calibration_planted_mean")
        assert abs(c.weight - t.weight) < 0.01
        # along the layer's directions the two residual models estimate the same variances
        lam_full = np.einsum("ij,jk,ik->i", inv.eigenvectors, linalg.covariance(c.eigenvectors, c.eigenvalues),
                             inv.eigenvectors)
        lam_iso = np.einsum("ij,jk,ik->i", inv.eigenvectors,
                            linalg.covariance(ci.eigenvectors, ci.eigenvalues, ci.residual_variance), inv.eigenvectors)
        np.testing.assert_allclose(lam_full, lam_iso, rtol=1e-3)


def test_full_residual_scores_better_held_out_and_reports_it(narrow):
    truth, x, inverted, r, W, b = narrow
    train, test = holdout_split(len(x))
    full, rep = calibrate(inverted, x[train], held_out=x[test], residual="full", kl_samples=500)
    iso, rep_iso = calibrate(inverted, x[train], held_out=x[test], kl_samples=500, residual="isotropic")
    ll, ll_iso = rep["log_likelihood"], rep_iso["log_likelihood"]
    assert rep_iso["residual"] == "isotropic"
    # the truth is within sampling error of the full calibration, so freeing the directions gains nothing
    truth_ll = float(np.mean(linalg.log_likelihood(truth, x[test])))
    assert abs(ll["calibrated"]["held_out"] - truth_ll) < 0.01
    assert ll["calibrated"]["held_out"] > ll_iso["calibrated"]["held_out"] + 0.1
    assert abs(ll["free_step"]["held_out"] - ll["calibrated"]["held_out"]) < 0.01
    assert full.provenance.extra["residual"] == "full"
    assert rep["notes"] == []  # 4,800 to 12,000 rows per component for 3 missing directions
    for p in rep["components"]:
        assert p["residual_variance"]["calibrated"] is None and p["residual_variance"]["inverted"] is not None


def test_full_residual_em_never_decreases_the_likelihood(narrow):
    truth, x, inverted, r, W, b = narrow
    x = x[::10]  # 3,000 rows
    comps = inverted.components
    fit = linalg.fixed_direction_em(x, [c.mean for c in comps], [c.eigenvectors for c in comps],
                                    [c.eigenvalues for c in comps], [c.residual_variance for c in comps],
                                    inverted.weights, tol=1e-10, max_iter=500, residual="full")
    h = np.array(fit["history"])
    # EM is monotone; reg (1e-6 added to every variance) and rounding allow at most 1e-9 nats per row back
    assert len(h) > 3 and np.all(np.diff(h) >= -1e-9) and fit["converged"]
    assert abs(fit["log_likelihood"] - h[-1]) < 1e-12
    for q, v, c in zip(fit["complements"], [c.eigenvectors for c in comps], fit["residuals"]):
        assert q.shape == (3, 5) and c.shape == (3, 3)
        np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(q @ v.T, 0.0, atol=1e-12)
        assert np.all(np.linalg.eigvalsh(c) >= 1e-6)  # reg keeps every complement variance >= reg_covar
    # the full residual's optimum is at least the isotropic one's (it contains it)
    iso = linalg.fixed_direction_em(x, [c.mean for c in comps], [c.eigenvectors for c in comps],
                                    [c.eigenvalues for c in comps], [c.residual_variance for c in comps],
                                    inverted.weights, tol=1e-10, max_iter=500)
    assert fit["log_likelihood"] > iso["log_likelihood"]


def test_too_few_rows_for_the_complement_are_noted(tmp_path, capsys):
    """24-60 rows per component for 38 missing directions: the full residual overfits, and says so."""
    spectrum = np.concatenate([[25.0, 9.0], np.geomspace(4.0, 1.0, 38)])
    truth, x, W, b, r = planted(seed=1, n=150, d=40, spectrum=spectrum, rank=2, mean_offset=0.5)
    x = x[np.random.default_rng(0).permutation(len(x))]
    train, test = holdout_split(len(x))
    inverted, _ = from_layers(W, b, groups=r, data=x[train])
    _, full = calibrate(inverted, x[train], held_out=x[test], kl_samples=0)
    _, iso = calibrate(inverted, x[train], held_out=x[test], kl_samples=0, residual="isotropic")
    n_k = [p["weight"]["calibrated"] * train.size for p in full["components"]]
    noted = [k for k, n in enumerate(n_k) if n <= 38]
    assert noted and len(full["notes"]) == len(noted)
    assert all(note.startswith(f"component {k}:") and "residual='isotropic'" in note
               for k, note in zip(noted, full["notes"]))
    assert iso["notes"] == []
    # held out, the singular complement costs far more than one variance for 38 directions
    assert full["log_likelihood"]["calibrated"]["held_out"] < iso["log_likelihood"]["calibrated"]["held_out"] - 100
    # to-gmm prints the notes
    bare_layer_onnx(W, b, tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", x)
    code, out, err = call(capsys, "to-gmm", tmp_path / "net.onnx", "-o", tmp_path / "m.json", "--groups", r,
                          "--data", tmp_path / "x.npy", "--calibrate")
    assert code == 0, err
    assert any(line.startswith("note: component ") and "--residual isotropic" in line for line in out.splitlines())


def test_log_joint_of_a_full_residual_matches_the_dense_gaussian(rng):
    d, r = 6, 2
    v = np.linalg.qr(rng.standard_normal((d, d)))[0].T
    q = linalg.complement_basis(v[:r])
    a = rng.standard_normal((d - r, d - r))
    c = a @ a.T + 0.5 * np.eye(d - r)
    mu, lam = rng.standard_normal(d), np.array([3.0, 0.5])
    cov = (v[:r].T * lam) @ v[:r] + q.T @ c @ q
    x = rng.standard_normal((50, d))
    got = linalg.fixed_direction_log_joint(x, [mu], [v[:r]], [lam], [c], [1.0], [q])[:, 0]
    from scipy.stats import multivariate_normal

    np.testing.assert_allclose(got, multivariate_normal(mu, cov).logpdf(x), rtol=1e-12)


def test_full_rank_components_are_the_same_either_way():
    truth, x, W, b, r = planted(seed=4, n=3000)
    inverted, _ = from_layers(W, b, groups=r, data=x)
    a, ra = calibrate(inverted, x, kl_samples=0, residual="isotropic")
    f, rf = calibrate(inverted, x, kl_samples=0)
    np.testing.assert_array_equal(a.means, f.means)
    for ca, cf in zip(a.components, f.components):
        np.testing.assert_array_equal(ca.eigenvalues, cf.eigenvalues)
    assert ra["log_likelihood"] == rf["log_likelihood"]


def test_residual_is_checked_and_the_report_matches_its_schema(narrow):
    truth, x, inverted, r, W, b = narrow
    with pytest.raises(UsageError, match="residual"):
        calibrate(inverted, x[:500], residual="diag")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schemas" / "gmmnet-recovery-report.schema.json").read_text())
    rows = x[np.random.default_rng(0).permutation(len(x))[:600]]
    _, rep = from_layers(W, b, groups=r, data=rows[:400])
    _, rep["calibration"] = calibrate(inverted, rows[:400], held_out=rows[400:], residual="full", kl_samples=100)
    jsonschema.validate(json.loads(json.dumps(rep)), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(json.dumps(dict(rep, calibration=dict(rep["calibration"], residual="diag")))),
                            schema)


def test_full_residual_respects_the_memory_limit(rng):
    from gmmnet.errors import ResourceLimitError
    from gmmnet.ir import Component, Mixture
    from gmmnet.limits import set_max_memory

    d, K = 200, 3  # rank-2 components: a 198×198 complement each, more than the isotropic EM needs
    comps = [Component(mean=10.0 * k * np.ones(d), eigenvectors=np.linalg.qr(rng.standard_normal((d, 2)))[0].T,
                       eigenvalues=np.array([4.0, 2.0]), residual_variance=1.0, weight=1 / K) for k in range(K)]
    mix = Mixture(n_features=d, components=comps)
    x = rng.standard_normal((10, d))
    set_max_memory(1_600_000)  # above the isotropic calibration's estimate (1.3 MB), below K complements (1.9 MB)
    try:
        calibrate(mix, x, kl_samples=0, max_iter=2, residual="isotropic")
        with pytest.raises(ResourceLimitError, match="full residual"):
            calibrate(mix, x, kl_samples=0, max_iter=2)
    finally:
        set_max_memory(None)


def test_cli_residual_full(tmp_path, capsys):
    from gmmnet import io as gio

    truth, x, W, b, r = planted(seed=1, n=6000, d=5, spectrum=SPECTRUM, rank=2, mean_offset=0.5)
    bare_layer_onnx(W, b, tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", x)
    lls = {}
    for residual, flag in (("isotropic", ["--residual", "isotropic"]), ("full", [])):  # full: the default
        code, out, err = call(capsys, "to-gmm", tmp_path / "net.onnx", "-o", tmp_path / f"{residual}.json",
                              "--groups", r, "--data", tmp_path / "x.npy", "--calibrate", *flag,
                              "--report", tmp_path / f"{residual}.r.json")
        assert code == 0, err
        assert f"residual: {residual}" in out
        rep = json.loads((tmp_path / f"{residual}.r.json").read_text())
        assert rep["calibration"]["residual"] == residual
        lls[residual] = rep["calibration"]["log_likelihood"]["calibrated"]["held_out"]
        mix = gio.load_ir(tmp_path / f"{residual}.json")
        assert {c.rank for c in mix.components} == ({5} if residual == "full" else {2})
    assert lls["full"] > lls["isotropic"] + 0.1
    # --residual is a calibration option: refused without --calibrate
    code, _, err = call(capsys, "to-gmm", tmp_path / "net.onnx", "-o", tmp_path / "e.json", "--groups", r,
                        "--data", tmp_path / "x.npy", "--residual", "full")
    assert code == 2 and "--residual" in err
