"""Smoke runs of the two recovery studies (examples/recovery_*.py) in their --quick mode.

The full runs regenerate the tables and figures of docs/recovery.md; here each runs a tiny
configuration and the outcomes the docs rely on are asserted.
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
    mod = _load("recovery_mahalanobis")
    rng = np.random.default_rng(0)
    mu, cov = mod.true_gaussian(rng, 4)
    assert abs(mod.kl_gauss(mu, cov, mu, cov)) < 1e-12
    # closed form for a shifted mean: ½ Δᵀ Σ⁻¹ Δ
    delta = np.array([1.0, 0, 0, 0])
    np.testing.assert_allclose(mod.kl_gauss(mu, cov, mu + delta, cov), 0.5 * delta @ np.linalg.inv(cov) @ delta,
                               rtol=1e-10)


@pytest.mark.torch
def test_mahalanobis_study_quick(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "maha.png"
    rows = _load("recovery_mahalanobis").main(["--quick", "--out", str(out)])
    assert out.stat().st_size > 0
    by_steps = {r["steps"]: r for r in rows}
    untrained, trained = by_steps[0], by_steps[2000]
    # the converged layer gives the Gaussian back and is not flagged; the untrained one is flagged
    assert trained["loss"] < 1e-4 and trained["kl"] < 1e-2 and not trained["flagged"]
    assert untrained["kl"] > 0.1 and untrained["flagged"]
    assert "| d | steps |" in capsys.readouterr().out


@pytest.mark.torch
def test_digits_study_quick(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "digits.png"
    res = _load("recovery_digits").main(["--quick", "--out", str(out)])
    assert out.stat().st_size > 0
    h = res["head"]
    assert h["net_accuracy"] > 0.8
    assert h["gmm_accuracy"] > 0.5  # the recovered components still sort the digits (chance: 0.1)
    assert np.isfinite(h["test_loglik"]) and np.isfinite(res["sklearn_full"]["test_loglik"])
    assert h["means"].shape == (10, 64) and h["prototypes"].shape == (10 * res["r"], 64)
    # what docs/recovery.md reports: a discriminatively trained layer is not a density of its classes,
    # so every component is flagged, the neurons do not whiten (R² < 0, whitening error ≈ 1), and the
    # recovered densities are far below a GaussianMixture fitted to the data; the classes still sort
    assert h["flagged"] == 10 and np.median(h["r2"]) < 0 and np.median(h["werr"]) > 0.5
    assert h["gmm_accuracy"] < h["net_accuracy"]
    mlp, fitted = res["mlp"], res["sklearn_full"]["test_loglik"]
    assert "error" not in mlp, mlp.get("error")  # automatic grouping recovers the plain MLP
    assert mlp["flagged"] == 10 and sorted(mlp["group_sizes"]) == [res["r"]] * 10
    assert h["test_loglik"] < fitted - 10 and mlp["test_loglik"] < fitted - 10
