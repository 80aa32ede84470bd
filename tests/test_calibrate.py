"""Calibrated recovery (gmmnet.recover.calibrate) and the density check, in the library and the CLI.

The calibration is tested where its answer is known: a planted mixture whose layer has the true
principal directions but wrong scales (‖w‖) and wrong means, as a trained layer would have them.
The tolerances are rows of gmmnet.tolerances (sampling error on 30,000 rows, not arithmetic).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gmmnet import cli, linalg
from gmmnet.errors import DataError, UsageError
from gmmnet.ir import Component, Mixture
from gmmnet.recover import UNCHECKED, calibrate, density_check, from_layers, holdout_split
from gmmnet.tolerances import tol

ROOT = Path(__file__).resolve().parents[1]
SPECTRUM = np.array([16.0, 6.0, 2.5, 1.0])  # ratios ≥ 2.4: the eigenvectors are well determined


def rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).T


def planted(seed=0, n=30_000, d=4, spectrum=SPECTRUM, rank=None, mean_offset=1.0):
    """A true 3-component mixture, its rows, and a layer with its directions but wrong scales and means.

    The layer's means are off by ``mean_offset`` σ along every direction (random signs).
    With ``rank`` < d the truth is isotropic (variance 1) outside its top ``rank`` directions and the
    layer keeps only those: calibration must find the residual variance too.
    """
    rng = np.random.default_rng(seed)
    comps = []
    for k, (w, scale) in enumerate(zip((0.5, 0.3, 0.2), (1.0, 2.0, 0.5))):
        v = rotation(rng, d)
        lam = scale * np.asarray(spectrum, float)
        comps.append(Component(mean=12.0 * rng.standard_normal(d), eigenvectors=v, eigenvalues=lam, weight=w))
    truth = Mixture(n_features=d, components=comps)
    x = np.concatenate([c.mean + (rng.standard_normal((int(n * c.weight), d)) * np.sqrt(c.eigenvalues)) @ c.eigenvectors
                        for c in comps])
    r = d if rank is None else rank
    W, b = [], []
    for c in comps:
        s = rng.uniform(0.3, 3.0, r)  # the next layer would absorb these
        w = s[:, None] * c.eigenvectors[:r] / np.sqrt(c.eigenvalues[:r])[:, None]
        wrong_mean = c.mean + mean_offset * rng.choice([-1.0, 1.0], d) @ (np.sqrt(c.eigenvalues)[:, None] * c.eigenvectors)
        W.append(w)
        b.append(-w @ wrong_mean)
    return truth, x, np.concatenate(W), np.concatenate(b), r


def log_eig_error(c, t):
    """max |log λ̂/λ| over the directions (matched by the direction itself) and the residual variance."""
    lam_hat = np.einsum("ij,jk,ik->i", t.eigenvectors[: c.rank], linalg.covariance(c.eigenvectors, c.eigenvalues,
                                                                                     c.residual_variance),
                        t.eigenvectors[: c.rank])
    err = np.abs(np.log(lam_hat / t.eigenvalues[: c.rank]))
    return float(err.max())


def mean_error_sigma(c, t):
    diff = c.mean - t.mean
    return float(np.sqrt(diff @ np.linalg.solve(linalg.covariance(t.eigenvectors, t.eigenvalues), diff)))


# ---------------------------------------------------------------------------
# planted mixtures: the answer is known


def test_calibration_recovers_planted_eigenvalues_means_and_weights():
    truth, x, W, b, r = planted()
    train, test = holdout_split(len(x))
    inverted, rep = from_layers(W, b, groups=r, data=x[train])
    # the inversion is exact algebra but the wrong density: every component is flagged
    assert rep["density_check"] == f"checked on {train.size} rows" and rep["low_confidence"] == [0, 1, 2]
    cal, crep = calibrate(inverted, x[train], held_out=x[test])
    assert crep["converged"]
    for c, t in zip(cal.components, truth.components):
        assert log_eig_error(c, t) <= tol("calibration_planted_eigenvalue")
        assert mean_error_sigma(c, t) <= tol("calibration_planted_mean")
        assert abs(c.weight - t.weight) < 0.01
    # directions held fixed: the calibrated eigenvectors are the layer's (up to order and sign)
    for c, t in zip(cal.components, truth.components):
        np.testing.assert_allclose(np.abs(c.eigenvectors @ t.eigenvectors.T).max(axis=1), 1.0, atol=1e-12)
    ll = crep["log_likelihood"]
    assert ll["calibrated"]["held_out"] > ll["inverted"]["held_out"] + 1.0  # the inverted scales are far off
    # the directions are the true ones: freeing them gains nothing beyond sampling, and they barely move
    assert abs(ll["free_step"]["held_out"] - ll["calibrated"]["held_out"]) < 0.01
    assert max(p["free_step_angle_max_deg"] for p in crep["components"]) < 3.0
    # the KL between the mixtures: the per-component closed form and the Monte Carlo estimate both see the gap
    kl = crep["kl"]
    assert all(v > 0.5 for v in kl["components"])
    mc = kl["mixture_monte_carlo"]
    assert mc["value"] > 0.5 and mc["standard_error"] < 0.1 * mc["value"]
    assert cal.diagnostics["density_check"] == f"checked on {train.size} rows"
    assert cal.provenance.extra["n_held_out"] == str(test.size)
    json.dumps(crep)


def test_calibration_finds_the_residual_variance_of_a_rank_deficient_layer():
    spectrum = np.array([25.0, 9.0, 1.0, 1.0, 1.0])  # isotropic outside the top 2
    # means off by 0.5σ: with 1σ and only 2 of 5 directions, the inverted memberships of seed 1 put two
    # clusters in each other's groups, and EM (local, from those memberships) keeps them there
    truth, x, W, b, r = planted(seed=1, d=5, spectrum=spectrum, rank=2, mean_offset=0.5)
    inverted, _ = from_layers(W, b, groups=r, data=x)
    cal, _ = calibrate(inverted, x, residual="isotropic")  # the truth is isotropic there: one variance fits it
    for c, t in zip(cal.components, truth.components):
        assert c.rank == 2
        assert log_eig_error(c, t) <= tol("calibration_planted_eigenvalue")
        assert abs(np.log(c.residual_variance / t.eigenvalues[-1])) <= tol("calibration_planted_eigenvalue")
        assert mean_error_sigma(c, t) <= tol("calibration_planted_mean")


def test_free_step_angle_measures_how_far_the_layers_directions_are_off():
    truth, x, W, b, r = planted(seed=2)
    theta = np.radians(20.0)
    # turn component 0's top two neurons by 20° in their own plane
    w0, w1 = W[0] / np.linalg.norm(W[0]), W[1] / np.linalg.norm(W[1])
    W = W.copy()
    W[0] = np.linalg.norm(W[0]) * (np.cos(theta) * w0 + np.sin(theta) * w1)
    W[1] = np.linalg.norm(W[1]) * (-np.sin(theta) * w0 + np.cos(theta) * w1)
    inverted, _ = from_layers(W, b, groups=r, data=x)
    cal, crep = calibrate(inverted, x)
    angles = crep["components"][0]["free_step_angles_deg"]
    assert abs(sorted(angles)[-1] - 20.0) < 2.0 and abs(sorted(angles)[-2] - 20.0) < 2.0
    assert sorted(angles)[-3] < 3.0
    assert max(crep["components"][1]["free_step_angles_deg"]) < 3.0
    # the free step gains what the fixed directions cost
    ll = crep["log_likelihood"]["free_step"]["train"] - crep["log_likelihood"]["calibrated"]["train"]
    assert ll > 0.01


def test_em_never_decreases_the_likelihood_and_stops_at_tol():
    truth, x, W, b, r = planted(seed=3, n=3000)
    inverted, _ = from_layers(W, b, groups=r, data=x)
    comps = inverted.components
    fit = linalg.fixed_direction_em(x, [c.mean for c in comps], [c.eigenvectors for c in comps],
                                    [c.eigenvalues for c in comps], [c.residual_variance for c in comps],
                                    inverted.weights, tol=1e-9, max_iter=500)
    h = np.array(fit["history"])
    assert np.all(np.diff(h) >= -1e-9) and fit["converged"]
    assert abs(fit["log_likelihood"] - h[-1]) < 1e-12  # the last evaluation is of the returned parameters
    few = linalg.fixed_direction_em(x, [c.mean for c in comps], [c.eigenvectors for c in comps],
                                    [c.eigenvalues for c in comps], [c.residual_variance for c in comps],
                                    inverted.weights, max_iter=1)
    assert few["n_iter"] == 1 and not few["converged"]


def test_gaussian_kl_closed_form():
    rng = np.random.default_rng(0)
    v = rotation(rng, 3)
    lam = np.array([4.0, 2.0, 1.0])
    mu = rng.standard_normal(3)
    assert abs(linalg.gaussian_kl(mu, v, lam, None, mu, v, lam, None)) < 1e-12
    delta = np.array([1.0, 0.0, 0.0])
    cov = linalg.covariance(v, lam)
    np.testing.assert_allclose(linalg.gaussian_kl(mu, v, lam, None, mu + delta, v, lam, None),
                               0.5 * delta @ np.linalg.solve(cov, delta), rtol=1e-12)
    # a rank-truncated component equals the full one whose discarded eigenvalue is σ²
    np.testing.assert_allclose(linalg.gaussian_kl(mu, v[:2], lam[:2], 1.0, mu, v, 2 * lam, None),
                               linalg.gaussian_kl(mu, v, lam, None, mu, v, 2 * lam, None), rtol=1e-12)
    # scale: KL(N(0, s²) ‖ N(0, 1)) in 1-D is ½(s² − 1 − log s²)
    np.testing.assert_allclose(linalg.gaussian_kl(np.zeros(1), np.eye(1), np.array([4.0]), None,
                                                  np.zeros(1), np.eye(1), np.array([1.0]), None),
                               0.5 * (4 - 1 - np.log(4)), rtol=1e-12)


def test_diag_mixture_stays_diag_and_head_constants_are_folded(rng):
    d = 3
    comps = [Component(mean=m, eigenvectors=np.eye(d), eigenvalues=np.array([1.0, 2.0, 3.0]), weight=0.5,
                       log_constant=lc) for m, lc in ((np.zeros(d), 0.7), (10 * np.ones(d), 0.7))]
    mix = Mixture(n_features=d, covariance_type="diag", components=comps)
    x = np.concatenate([rng.normal(0, [2.0, 1.0, 1.0], (500, d)), 10 + rng.normal(0, 1.0, (500, d))])
    cal, rep = calibrate(mix, x)
    assert cal.covariance_type == "diag" and np.array_equal(cal.components[0].eigenvectors, np.eye(d))
    np.testing.assert_allclose(cal.components[0].eigenvalues, [4.0, 1.0, 1.0], rtol=0.2)
    assert rep["log_constants_folded"] and np.all(cal.log_constants == 0)


def test_holdout_split_and_input_errors(rng):
    tr, te = holdout_split(10, 0.2, 0)
    assert te.size == 2 and tr.size == 8 and not set(tr) & set(te)
    np.testing.assert_array_equal(holdout_split(10, 0.2, 0)[1], te)  # seeded
    assert not np.array_equal(holdout_split(100, 0.2, 1)[1], holdout_split(100, 0.2, 0)[1])
    with pytest.raises(UsageError):
        holdout_split(10, 1.0)
    with pytest.raises(DataError):
        holdout_split(3, 0.5)
    truth, x, W, b, r = planted(n=300)
    inverted, _ = from_layers(W, b, groups=r)
    with pytest.raises(UsageError):
        calibrate(inverted, None)
    with pytest.raises(DataError):
        calibrate(inverted, x[:, :2])
    with pytest.raises(UsageError):
        calibrate(inverted, x, reg_covar=0.0)


# ---------------------------------------------------------------------------
# no data, no verdict


def test_density_check_field_without_and_with_data():
    truth, x, W, b, r = planted(n=600)
    _, rep = from_layers(W, b, groups=r)
    # the algebra is exact (full-rank Abs blocks), but nothing looked at a density
    assert rep["exact"] and rep["low_confidence"] == [] and rep["density_check"] == UNCHECKED
    mix, rep = from_layers(W, b, groups=r, data=x)
    assert rep["density_check"] == density_check(len(x)) == f"checked on {len(x)} rows"
    assert mix.diagnostics["density_check"] == rep["density_check"]


def test_report_matches_its_json_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schemas" / "gmmnet-recovery-report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    truth, x, W, b, r = planted(n=600)
    _, bare = from_layers(W, b, groups=r)
    inverted, checked = from_layers(W, b, groups=r, data=x[:400])
    _, checked["calibration"] = calibrate(inverted, x[:400], held_out=x[400:])
    for rep in (bare, checked):
        jsonschema.validate(json.loads(json.dumps(rep)), schema)
    bad = dict(bare, density_check="fine")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(json.dumps(bad)), schema)


# ---------------------------------------------------------------------------
# the CLI: to-gmm says when the density was not checked, and calibrates with --data


def bare_layer_onnx(W, b, path):
    """A headless float64 Gemm → Abs graph, as torch.onnx.export writes a Linear + Abs."""
    n, d = W.shape
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W", "B"], ["z"], transB=1), helper.make_node("Abs", ["z"], ["a"])],
        "layer", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, d])],
        [helper.make_tensor_value_info("a", TensorProto.DOUBLE, [None, n])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "B")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def call(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_says_the_density_is_unchecked_without_data(tmp_path, capsys):
    truth, x, W, b, r = planted(n=900)
    bare_layer_onnx(W, b, tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", x)
    code, out, err = call(capsys, "to-gmm", tmp_path / "net.onnx", "-o", tmp_path / "m.json", "--groups", r,
                          "--report", tmp_path / "r.json")
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if "density not checked" in ln]
    assert len(lines) == 1 and "--data" in lines[0]
    assert json.loads((tmp_path / "r.json").read_text())["density_check"] == UNCHECKED
    code, out, err = call(capsys, "to-gmm", tmp_path / "net.onnx", "-o", tmp_path / "m2.json", "--groups", r,
                          "--data", tmp_path / "x.npy", "--report", tmp_path / "r2.json")
    assert code == 0, err
    assert "density not checked" not in out
    rep = json.loads((tmp_path / "r2.json").read_text())
    assert rep["density_check"] == f"checked on {len(x)} rows" and rep["low_confidence"] == [0, 1, 2]


def test_cli_calibrate_writes_the_calibrated_mixture_and_both_scores(tmp_path, capsys):
    from gmmnet import io as gio

    truth, x, W, b, r = planted(n=6000, mean_offset=0.0)  # right hyperplanes, wrong scales: grouping can find them
    bare_layer_onnx(W, b, tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", x)
    # automatic grouping with --n-components, then calibration on 80 % of the rows
    code, out, err = call(capsys, "to-gmm", tmp_path / "net.onnx", "-o", tmp_path / "cal.json", "--data",
                          tmp_path / "x.npy", "--n-components", 3, "--calibrate", "--report", tmp_path / "r.json")
    assert code == 0, err
    assert "calibrated mixture, 3 components" in out and "held-out ll/row" in out and "KL(calibrated" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert sorted(map(sorted, rep["groups"])) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    cal = rep["calibration"]
    assert cal["n_train"] == 4800 and cal["n_held_out"] == 1200 and cal["holdout"] == {"fraction": 0.2, "seed": 0}
    ll = cal["log_likelihood"]
    assert ll["calibrated"]["held_out"] > ll["inverted"]["held_out"] + 0.5
    mix = gio.load_ir(tmp_path / "cal.json")
    assert mix.provenance.source == "gmmnet.recover:calibrate"
    order = np.argsort(mix.means[:, 0])
    for c, t in zip([mix.components[i] for i in order], sorted(truth.components, key=lambda c: c.mean[0])):
        assert mean_error_sigma(c, t) < 0.1  # 4,800 rows: looser than the 30,000-row row of the table
    # refusals: --calibrate without data, --n-components with --groups
    for argv in (["--calibrate"], ["--groups", "4", "--n-components", "3", "--data", tmp_path / "x.npy"]):
        code, _, err = call(capsys, "to-gmm", tmp_path / "net.onnx", "-o", tmp_path / "e.json", *argv)
        assert code == 2 and "gmmnet: error:" in err


def test_mixture_behind_an_input_transform_is_calibrated_on_z(rng):
    from gmmnet.ir import InputTransform

    truth, x, W, b, r = planted(n=3000)
    inverted, _ = from_layers(W, b, groups=r, data=x)
    A = np.diag([2.0, 0.5, 1.0, 3.0])
    c = np.array([1.0, -1.0, 0.0, 2.0])
    raw = (x - c) @ np.linalg.inv(A).T  # z = A raw + c is x again
    behind = inverted.model_copy(update={"input_transform": InputTransform(matrix=A, offset=c)})
    cal_z, rep_z = calibrate(inverted, x, kl_samples=0)
    cal_x, rep_x = calibrate(behind, raw, kl_samples=0)
    assert cal_x.input_transform is not None
    np.testing.assert_allclose(cal_x.means, cal_z.means, rtol=1e-9, atol=1e-9)
    assert rep_x["log_likelihood"]["calibrated"]["train"] == pytest.approx(rep_z["log_likelihood"]["calibrated"]["train"])
    with pytest.raises(DataError):
        calibrate(behind, raw[:, :3])
