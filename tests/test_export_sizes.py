"""Hostile sizes on the export side (issue 13, item 8): small models over many features export in
small memory, and a graph too big to build is refused, with its size, before anything is allocated.

Peak memory is measured with tracemalloc (numpy reports its buffers to it) around the export alone,
and once through the CLI in a subprocess (peak RSS of that process).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from gmmnet import limits, linalg
from gmmnet.errors import ResourceLimitError, UnsupportedModelError
from gmmnet.formats.onnx import float32_error_estimate, plan_export, predicted_errors, run, to_onnx
from gmmnet.formats.onnx.plan import check_weight_bytes
from gmmnet.ir import Component, Hierarchy, Mixture

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


def _axis(K: int, d: int, ct: str, seed: int = 0) -> Mixture:
    rng = np.random.default_rng(seed)
    comps = [Component(mean=rng.standard_normal(d), eigenvectors=None,
                       eigenvalues=np.full(d, rng.uniform(0.5, 2.0)) if ct == "spherical" else rng.uniform(0.5, 2.0, d),
                       weight=1.0 / K) for _ in range(K)]
    return Mixture(n_features=d, covariance_type=ct, components=comps)


def _rank1(d: int, seed: int = 0) -> Mixture:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(d)
    v /= np.linalg.norm(v)
    return Mixture(n_features=d, covariance_type="full", components=[Component(
        mean=rng.standard_normal(d), eigenvectors=v[None, :], eigenvalues=np.array([4.0]), weight=1.0,
        residual_variance=0.5)])


def _peak(fn) -> tuple[object, float]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "name, make, limit_mb",
    [
        # a d×d matrix would be 7.2 GB (spherical, d=30,000), 6.4 GB (diag, K=2, d=20,000), 7.2 GB (rank 1)
        ("spherical d=30000", lambda: _axis(1, 30_000, "spherical"), 60),
        ("diag K=2 d=20000", lambda: _axis(2, 20_000, "diag"), 60),
        ("rank-1 full d=30000", lambda: _rank1(30_000), 60),
    ],
)
def test_many_features_export_in_small_memory(name, make, limit_mb):
    mix = make()
    model, peak = _peak(lambda: to_onnx(mix, dtype="float32"))
    assert peak < limit_mb * MB, f"{name}: export peaked at {peak / MB:.0f} MB"
    _, peak = _peak(lambda: (float32_error_estimate(mix), predicted_errors(mix)))
    assert peak < limit_mb * MB, f"{name}: the estimates peaked at {peak / MB:.0f} MB"
    x = linalg.sample(mix, 8, seed=1)
    got = run(model, x.astype(np.float32))
    ref = linalg.log_likelihood(mix, x.astype(np.float32).astype(np.float64))
    assert np.max(np.abs(got["log_likelihood"] - ref) / (1 + np.abs(ref))) <= 1e-5


def test_quadratic_layout_and_relu_in_small_memory():
    mix = _axis(2, 20_000, "diag")
    _, peak = _peak(lambda: (to_onnx(mix, layout="quadratic"), to_onnx(mix, activation="relu")))
    assert peak < 60 * MB


def test_a_graph_over_the_limit_is_refused_before_it_is_built(rng):
    mix = Mixture(n_features=200, covariance_type="full", components=[
        Component(mean=rng.standard_normal(200), eigenvectors=np.eye(200), eigenvalues=np.ones(200), weight=0.125)
        for _ in range(8)])  # 8 × 200 × 200 weights: 2.4 MB in float64
    try:
        limits.set_max_memory("1M")
        with pytest.raises(ResourceLimitError, match=r"MiB.*memory limit of 1\.0 MiB.*--max-memory") as info:
            _peak(lambda: to_onnx(mix))
        assert "8-component full mixture over 200 features" in str(info.value)
        with pytest.raises(ResourceLimitError):
            plan_export(Hierarchy(levels=[mix]))  # the deep exporter estimates first too
        tracemalloc.start()
        with pytest.raises(ResourceLimitError):
            to_onnx(mix, activation="relu")
        assert tracemalloc.get_traced_memory()[1] < 0.5 * MB  # refused before any weight was derived
        tracemalloc.stop()
    finally:
        limits.set_max_memory(None)
    assert to_onnx(mix, dtype="float64") is not None  # under the default limit it exports


def test_completing_a_rank_1_model_is_refused_not_attempted():
    """The single-mixture exporter called directly completes truncated components (d×d each): for d=30,000
    that is refused from the estimate (7.2 GB), with tracemalloc showing nothing large was allocated."""
    from gmmnet.formats.onnx import export

    mix = _rank1(30_000)
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match="GiB"):
            export.to_onnx(mix)
        assert tracemalloc.get_traced_memory()[1] < 20 * MB
    finally:
        tracemalloc.stop()


def test_onnx_protobuf_limit():
    with pytest.raises(UnsupportedModelError, match="2 GiB"):
        try:
            limits.set_max_memory("1T")
            check_weight_bytes(3 * 2**30, 3 * 2**30, "a test model")
        finally:
            limits.set_max_memory(None)


def test_cli_hostile_pickles(tmp_path):
    """The issue's files: a 240 KB spherical pickle with 30,000 features, a diag one with 20,000 and a
    641 KB rank-1 IR, through `gmmnet to-onnx` in one process: its peak RSS stays far below a d×d matrix."""
    from sklearn.mixture import GaussianMixture

    def fake(K, d, ct):
        r = np.random.default_rng(0)
        g = GaussianMixture(n_components=K, covariance_type=ct)
        g.weights_, g.means_ = np.full(K, 1.0 / K), r.standard_normal((K, d))
        g.covariances_ = r.uniform(0.5, 2, K if ct == "spherical" else (K, d))
        g.precisions_cholesky_ = 1 / np.sqrt(g.covariances_)
        g.precisions_ = g.precisions_cholesky_**2
        g.converged_, g.n_iter_, g.lower_bound_, g.n_features_in_ = True, 1, 0.0, d
        return g

    (tmp_path / "sph.pkl").write_bytes(pickle.dumps(fake(1, 30_000, "spherical")))
    (tmp_path / "diag.pkl").write_bytes(pickle.dumps(fake(2, 20_000, "diag")))
    (tmp_path / "rank1.json").write_text(_rank1(30_000).to_json())
    # the child's own peak (VmHWM, reset by exec): ru_maxrss keeps the forked pytest process's RSS across exec
    code = (
        "import re, sys\nfrom gmmnet import cli\n"
        "for f in ('sph.pkl', 'diag.pkl', 'rank1.json'):\n"
        "    assert cli.main(['to-onnx', f, '-o', f + '.onnx']) == 0, f\n"
        "print(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    peak_kb = int(res.stdout.strip().splitlines()[-1])
    assert peak_kb < 600 * 1024, f"to-onnx peaked at {peak_kb / 1024:.0f} MB"  # measured ~230 MB; a d×d matrix is 7 GB
    assert (tmp_path / "rank1.json.onnx").stat().st_size < 1 * MB  # K·r neurons, not a completed d×d layer
