"""The recovery study (examples/recovery_study.py) in its --quick mode: what it finds, asserted.

The full run writes the generated section of docs/results.md; the quick run (d = 2 and 10, one
seed, 300 steps; breast_cancer classifiers, 60 epochs) must find the same things on a small scale:
with data the low-confidence flag agrees with KL(true ‖ recovered) ≥ 0.1 on every run, without
data the density is reported unchecked and bad Abs layers pass every structural check, and
calibration brings the recovered densities closer to the truth (regression) and to a fitted
GaussianMixture (classifiers): at least half the gap for full-rank layers with either residual,
and for the narrow layer (4 directions of 30 per class) with the full residual.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kl_of_equal_gaussians_is_zero_and_positive_otherwise():
    mod = _load("recovery_study")
    rng = np.random.default_rng(0)
    mu, vecs, lam = mod.true_gaussian(rng, 4)
    assert lam.max() / lam.min() == pytest.approx(100.0)  # the study's condition number
    cov = (vecs.T * lam) @ vecs
    assert abs(mod.kl_gauss(mu, cov, mu, cov)) < 1e-12
    delta = np.array([1.0, 0, 0, 0])  # closed form for a shifted mean: ½ Δᵀ Σ⁻¹ Δ
    np.testing.assert_allclose(mod.kl_gauss(mu, cov, mu + delta, cov), 0.5 * delta @ np.linalg.solve(cov, delta),
                               rtol=1e-10)


def test_docs_section_markers_and_rewrite(tmp_path):
    mod = _load("recovery_study")
    page = (ROOT / "docs" / "results.md").read_text()
    (s1, e1), (s2, e2) = mod.MARKS["regression"], mod.MARKS["classifiers"]
    assert all(page.count(m) == 1 for m in (s1, e1, s2, e2))
    assert page.index(s1) < page.index(e1) < page.index(s2) < page.index(e2)  # two blocks, in order
    doc = tmp_path / "r.md"
    doc.write_text(f"before\n{s1}\nold 1\n{e1}\nbetween\n{s2}\nold 2\n{e2}\nafter\n")
    mod.update_docs(doc, "new table")  # part 1 by default, as before
    assert doc.read_text() == f"before\n{s1}\n\nnew table\n\n{e1}\nbetween\n{s2}\nold 2\n{e2}\nafter\n"
    mod.update_docs(doc, "classifiers", "classifiers")  # --parts classifiers leaves part 1's block alone
    assert doc.read_text() == f"before\n{s1}\n\nnew table\n\n{e1}\nbetween\n{s2}\n\nclassifiers\n\n{e2}\nafter\n"


def test_default_dims_include_the_authors_d_100():
    mod = _load("recovery_study")
    assert mod.DIMS == (2, 10, 50, 100) and set(mod.PUBLISHED) <= set(mod.DIMS)


@pytest.fixture(scope="module")
def quick():
    pytest.importorskip("torch")
    return _load("recovery_study").main(["--quick"])


@pytest.mark.torch
def test_quick_regression_flag_agrees_with_kl(quick):
    rows = quick["regression"]
    assert len(rows) == 2 * 2 * 2  # d ∈ {2, 10} × {Abs, ReLU} × 2 checkpoints
    for r in rows:
        # with data: flagged exactly when the recovered Gaussian is far from the truth
        assert r["flag_data"] == (r["kl"] >= 0.1), r
        # without data: never a verdict on the density
        assert r["density_check_nodata"] == "unchecked: no data"
        # ... and the structure alone flags single ReLUs (shift unknown), never a full-rank Abs block
        assert r["flag_nodata"] == (r["act"] == "relu")
    assert all(r["mse_train"] >= 0.0 for r in rows)  # the training error beside the test error (overfitting)
    assert quick["args"]["n_train"] == 500 and quick["args"]["dims"] == [2, 10]
    conf = quick["confusion"]
    assert conf["flag_data"]["passed_bad"] == 0 and conf["flag_data"]["flagged_good"] == 0
    assert conf["flag_nodata"]["passed_bad"] >= 1  # a bad Abs layer that only data exposes


@pytest.mark.torch
def test_quick_calibration_moves_toward_the_truth(quick):
    final = [r for r in quick["regression"] if r["steps"] == 300]
    assert len(final) == 4
    for r in final:
        assert r["kl_calibrated"] < r["kl"], r


@pytest.mark.torch
def test_quick_classifiers_calibrated_closes_half_the_gap(quick):
    rows = quick["classifiers"]
    assert [(r["dataset"], r["act"], r["hidden"]) for r in rows] == [
        ("breast_cancer", "abs", 60), ("breast_cancer", "relu", 120), ("breast_cancer", "abs", 8)]
    for r in rows:
        assert r["accuracy"] > 0.9
        assert r["flagged"] == 2  # discriminative neurons do not whiten their class
        for residual in ("isotropic", "full"):
            assert r["inverted"] < r[residual]["calibrated"] < r["gmm"], (residual, r)
    wide, narrow = rows[:2], rows[2]
    for r in wide:
        assert r["ranks"] == [30, 30]  # full-rank groups: the residual does not enter
        assert r["isotropic"] == r["full"]
        assert r["full"]["closed"] >= 0.5
    # the narrow layer: 4 of 30 directions per class; the full residual fits the other 26 from data
    assert max(narrow["ranks"]) < 30 and narrow["full"]["ranks"] == [30, 30]
    assert narrow["isotropic"]["ranks"] == narrow["ranks"]
    assert narrow["full"]["closed"] >= 0.5
    assert narrow["full"]["calibrated"] > narrow["isotropic"]["calibrated"] + 5.0  # nats per sample


@pytest.mark.torch
def test_quick_report_prints_every_table(quick):
    text = _load("recovery_study").report(quick)
    for head in ("| d | network | test MSE", "| | KL ≥ 0.1 | KL < 0.1 |", "| dataset | first layer |",
                 "| gap closed, isotropic | gap closed, full |"):
        assert head in text
