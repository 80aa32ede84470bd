"""Recovery from raw layers (gmmnet.recover.from_layers) and torch modules: exact and approximate.

Nothing is trained: "trained-like" networks are exact GMM networks with noise, random
weights, dropped neurons, or single ReLUs.  The thresholds are gmmnet.recover.THRESHOLDS.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from mixtures import random_mixture, random_rotation, sample
from test_onnx_read import covs, neuron_blocks, rel

from gmmnet import linalg
from gmmnet.errors import DataError, InvalidModelError, UsageError
from gmmnet.ir import Mixture, from_json
from gmmnet.recover import THRESHOLDS, from_layers, mirrored_pairs, prototypes


def stacked(mixture, rotations=None):
    blocks = neuron_blocks(mixture, rotations)
    return np.concatenate([w for w, _ in blocks]), np.concatenate([c for _, c in blocks])


@pytest.fixture
def separated(rng):
    """Three well-separated 3-D Gaussians, their exact (rotated) neurons, and 1500 points."""
    mix = random_mixture(rng, 3, 3, "full", spread=8.0)
    mix = mix.model_copy(update={"components": [c.model_copy(update={"weight": 1 / 3}) for c in mix.components]})
    W, b = stacked(mix, [random_rotation(rng, 3) for _ in range(3)])
    return mix, W, b, sample(rng, mix, 1500)


# ---------------------------------------------------------------------------
# exact inversion


def test_exact_blocks_without_data(separated):
    mix, W, b, _ = separated
    rec, rep = from_layers(W, b, groups=3)
    np.testing.assert_allclose(rec.means, mix.means, rtol=1e-10, atol=1e-10)
    assert rel(covs(rec), covs(mix)) < 1e-10
    np.testing.assert_allclose(rec.weights, 1 / 3)  # no head, no data: uniform
    assert rep["exact"] and rep["low_confidence"] == []
    assert rep["components"][0]["faithfulness_r2"] is None  # nothing measured without data
    assert rep["density_check"] == "unchecked: no data"  # and the report says so


def test_head_constants_give_weights_and_identical_scores(rng):
    mix = random_mixture(rng, 4, 2, "full")
    mix = mix.model_copy(update={"components": [
        c.model_copy(update={"log_constant": float(g)}) for c, g in zip(mix.components, rng.normal(size=4))
    ]})
    W, b = stacked(mix, [random_rotation(rng, 2) for _ in range(4)])
    head = linalg.component_log_terms(mix)
    rec, rep = from_layers(W, b, groups=2, head=head)
    x = sample(rng, mix, 100)
    np.testing.assert_allclose(linalg.log_likelihood(rec, x), linalg.log_likelihood(mix, x), rtol=1e-12)
    np.testing.assert_allclose(linalg.component_log_terms(rec), head, rtol=1e-12)
    # the shared remainder lives in log_constant; weights ∝ exp(c_k − normalizer_k)
    assert np.ptp(rec.log_constants) == 0
    lw = np.log(mix.weights) + mix.log_constants
    np.testing.assert_allclose(rec.weights, np.exp(lw - np.logaddexp.reduce(lw)), rtol=1e-12)


def test_overcomplete_group_and_hyperplane_residual(rng):
    mix = random_mixture(rng, 1, 2, "full")
    W, b = stacked(mix)
    # 4 neurons: the 2 whitening rows rotated into a 4×2 frame (still WᵀW = Σ⁻¹ up to scale 1)
    Q = np.linalg.qr(rng.standard_normal((4, 4)))[0][:, :2]
    W4, b4 = Q @ W, Q @ b
    rec, rep = from_layers(W4, b4, groups=[[0, 1, 2, 3]])
    np.testing.assert_allclose(rec.means[0], mix.means[0], atol=1e-10)
    assert rel(covs(rec), covs(mix)) < 1e-10
    assert rep["exact"]
    # hyperplanes that do not meet in one point: flagged, least-squares mean
    rec, rep = from_layers(W4, b4 + np.array([0.3, -0.3, 0.2, 0.1]), groups=[[0, 1, 2, 3]])
    assert not rep["exact"] and rep["low_confidence"] == [0]
    assert rep["components"][0]["hyperplane_residual_sigma"] > 0.1


# ---------------------------------------------------------------------------
# approximate recovery: diagnostics degrade, flags turn on


def test_exact_network_passes_the_data_diagnostics(separated):
    mix, W, b, x = separated
    rec, rep = from_layers(W, b, groups=3, data=x)
    assert rep["low_confidence"] == []
    for c in rep["components"]:
        assert c["faithfulness_r2"] > 0.95
        assert c["hyperplane_distance_sigma"] < 0.2
        assert c["whitening_error"] < c["whitening_allowance"]
    np.testing.assert_allclose(rec.weights, mix.weights, atol=0.05)  # from the data's responsibilities
    assert rec.diagnostics["components"] == rep["components"]


def test_noise_degrades_diagnostics_and_turns_on_the_flag(separated):
    mix, W, b, x = separated
    rng = np.random.default_rng(0)
    E, e = rng.standard_normal(W.shape), rng.standard_normal(b.shape)
    r2, werr, flagged = [], [], []
    for noise in (0.0, 0.1, 0.3, 0.6):
        Wn = W * (1 + noise * E)
        bn = b + noise * e * np.linalg.norm(W, axis=1)
        _, rep = from_layers(Wn, bn, groups=3, data=x)
        r2.append(np.mean([c["faithfulness_r2"] for c in rep["components"]]))
        werr.append(np.mean([c["whitening_error"] for c in rep["components"]]))
        flagged.append(len(rep["low_confidence"]))
    assert r2[0] > r2[1] > r2[2] > r2[3]
    assert werr[0] < werr[2] < werr[3]
    assert flagged[0] == 0 and flagged[3] == 3


def test_random_weights_are_flagged(separated):
    mix, W, b, x = separated
    rng = np.random.default_rng(1)
    rec, rep = from_layers(rng.standard_normal(W.shape), rng.standard_normal(b.shape), groups=3, data=x)
    assert rep["low_confidence"] == [0, 1, 2]
    assert all(c["reasons"] for c in rep["components"])
    assert not any(c["faithfulness_r2"] > THRESHOLDS["faithfulness_r2_min"] for c in rep["components"])


def test_rank_deficient_group_takes_the_complement_from_data(separated):
    mix, W, b, x = separated
    keep = [i for i in range(9) if i % 3 != 2]  # two of three neurons per component
    Wv, bv = stacked(mix)  # unrotated: the dropped row is the smallest-variance direction
    rec, rep = from_layers(Wv[keep], bv[keep], groups=2, data=x)
    for k, c in enumerate(rec.components):
        assert c.rank == 2 and c.residual_variance is not None
        lam = mix.components[k].eigenvalues[-1]
        assert 0.6 * lam < c.residual_variance < 1.6 * lam
        assert np.linalg.norm(c.mean - mix.components[k].mean) < 0.3 * np.sqrt(mix.components[k].eigenvalues[0])
        assert rep["components"][k]["rank"] == 2 and not rep["components"][k]["degenerate"]
    assert not rep["exact"]
    # without data: a placeholder complement, flagged degenerate
    rec, rep = from_layers(Wv[keep], bv[keep], groups=2)
    assert all(c["degenerate"] and c["low_confidence"] for c in rep["components"])


def test_relu_mirrored_pairs_are_one_abs_neuron(separated, rng):
    mix, W, b, x = separated
    W2, b2 = np.concatenate([W, -W]), np.concatenate([b, -b])
    perm = rng.permutation(W2.shape[0])
    assert len(mirrored_pairs(W2[perm], b2[perm])) == 9
    rec, rep = from_layers(W2[perm], b2[perm], activation="relu", data=x)  # grouped from the data
    order = np.argsort(rec.means[:, 0])
    np.testing.assert_allclose(rec.means[order], mix.means[np.argsort(mix.means[:, 0])], atol=1e-9)
    assert rep["exact"] and rep["grouping"] == "data"
    assert all(c["activation"] == "relu-pairs" for c in rep["components"])


def test_single_relus_shifted_by_delta(separated):
    mix, W, b, x = separated
    Wv, bv = stacked(mix)
    delta = 1.0  # relu(−(wᵀx + b) + δ), paper eq. 10
    rec, rep = from_layers(-Wv, -bv + delta, activation="relu", groups=3, data=x)
    for k, c in enumerate(rep["components"]):
        assert c["activation"] == "relu"
        np.testing.assert_allclose(c["relu_shift_sigma"], delta, atol=4 / np.sqrt(c["members"]))
        assert c["faithfulness_r2"] > 0.9
        sd = np.sqrt(mix.components[k].eigenvalues[0])
        assert np.linalg.norm(rec.means[k] - mix.means[k]) < 0.3 * sd
    assert not rep["exact"]
    _, rep = from_layers(-Wv, -bv + delta, activation="relu", groups=3)
    assert rep["low_confidence"] == [0, 1, 2]  # δ unknown without data


def test_automatic_grouping_from_data(separated, rng):
    mix, W, b, x = separated
    perm = rng.permutation(9)
    rec, rep = from_layers(W[perm], b[perm], data=x)
    truth = sorted(sorted(np.flatnonzero(perm // 3 == k).tolist()) for k in range(3))
    assert sorted(rep["groups"]) == truth
    assert rep["grouping"] == "data" and rep["low_confidence"] == []
    _, rep2 = from_layers(W[perm], b[perm], data=x, n_components=3)
    assert sorted(rep2["groups"]) == truth


def test_prototypes(separated):
    mix, W, b, x = separated
    p0 = prototypes(W, b)
    np.testing.assert_allclose(np.einsum("ij,ij->i", p0, W) + b, 0, atol=1e-10)  # on the hyperplane
    np.testing.assert_allclose(p0, -(b / np.sum(W * W, axis=1))[:, None] * W)
    # with data and memberships (here: the true component of each point), near the component mean
    labels = np.argmin(linalg.mahalanobis_sq(mix, x), axis=1)
    member = (labels[:, None] == np.repeat(np.arange(3), 3)[None, :]).astype(float)
    p = prototypes(W, b, x, member)
    assert np.all(np.abs(np.einsum("ij,ij->i", p, W) + b) < 0.2)
    sd = np.sqrt([c.eigenvalues[0] for c in mix.components])
    assert np.all(np.linalg.norm(p - np.repeat(mix.means, 3, axis=0), axis=1) < 0.5 * np.repeat(sd, 3))


# ---------------------------------------------------------------------------
# report and IR


def test_report_is_json_and_mixture_round_trips(separated):
    mix, W, b, x = separated
    rec, rep = from_layers(W, b, groups=3, data=x)
    json.dumps(rep)
    back = from_json(rec.to_json())
    assert isinstance(back, Mixture) and back.diagnostics["components"][0]["index"] == 0
    assert rec.provenance.extra["grouping"] == "explicit"


def test_input_errors(separated):
    mix, W, b, x = separated
    with pytest.raises(UsageError):
        from_layers(W, b, groups=4)  # does not divide 9
    with pytest.raises(UsageError):
        from_layers(W, b, groups=[[0, 1, 2], [2, 3, 4]])
    with pytest.raises(UsageError):
        from_layers(W, b, groups=[[0, 99]])
    with pytest.raises(UsageError, match="groups or data|groups"):
        from_layers(W, b)
    with pytest.raises(UsageError):
        from_layers(W, b, head=[0.0, 0.0, 0.0])
    with pytest.raises(DataError):
        from_layers(W, b, groups=3, data=x[:, :2])
    with pytest.raises(InvalidModelError):
        from_layers(W, b[:-1])
    with pytest.raises(InvalidModelError):
        from_layers(W, b, activation="tanh", groups=3)


# ---------------------------------------------------------------------------
# torch


@pytest.mark.torch
def test_layers_from_torch_and_from_torch(separated):
    torch = pytest.importorskip("torch")
    from gmmnet.formats.torch import from_torch, layers_from_torch

    class Abs(torch.nn.Module):
        def forward(self, x):
            return torch.abs(x)

    mix, W, b, x = separated
    lin = torch.nn.Linear(3, 9).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
        lin.bias.copy_(torch.from_numpy(b))
    seq = torch.nn.Sequential(lin, Abs(), torch.nn.Linear(9, 2))
    layers = layers_from_torch(seq)
    assert [l[2] for l in layers] == ["abs", None]
    np.testing.assert_array_equal(layers[0][0], W)
    rec, rep = from_torch(seq, groups=3)
    np.testing.assert_allclose(rec.means, mix.means, atol=1e-10)
    assert any("first layer" in n for n in rep["notes"])
    relu = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    assert layers_from_torch(relu)[0][2] == "relu"
    from gmmnet.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="Tanh"):
        layers_from_torch(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()))


def test_import_gmmnet_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, gmmnet, gmmnet.recover, gmmnet.formats.torch; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
