"""The torch reader (gmmnet.formats.torch): BatchNorm folding, traced custom modules, torch's ONNX exporters.

"Accepts what the ONNX path accepts": the same module read by from_torch and, exported, by
from_onnx gives the same mixture.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gmmnet.errors import UnsupportedModelError  # noqa: E402
from gmmnet.formats.torch import from_torch, layers_from_torch, read_torch  # noqa: E402
from gmmnet.recover import from_layers  # noqa: E402

pytestmark = pytest.mark.torch


class Abs(torch.nn.Module):
    def forward(self, x):
        return torch.abs(x)


class Mahalanobis(torch.nn.Module):
    """The Mahalanobis-regression model: ‖|Wx + b|‖ (Linear → abs → square → sum → sqrt)."""

    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)

    def forward(self, x):
        return torch.sqrt(torch.sum(torch.square(torch.abs(self.lin(x))), dim=1))


class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.lin(x).abs()
        return x


def linear_bn(act, n_in=3, n_out=6, seed=0, affine=True):
    torch.manual_seed(seed)
    bn = torch.nn.BatchNorm1d(n_out, affine=affine)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n_out))
        bn.running_var.copy_(torch.rand(n_out) + 0.3)
        if affine:
            bn.weight.copy_(torch.randn(n_out))
            bn.bias.copy_(torch.randn(n_out))
    return torch.nn.Sequential(torch.nn.Linear(n_in, n_out), bn, act, torch.nn.Linear(n_out, 2)).double().eval()


def probe(seed=1, n=50, d=3):
    return np.random.default_rng(seed).normal(size=(n, d))


def activations(module, x, upto):
    with torch.no_grad():
        return module[:upto](torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("act", ["abs", "relu"])
def test_batchnorm_is_folded_exactly(act, affine):
    net = linear_bn(Abs() if act == "abs" else torch.nn.ReLU(), affine=affine)
    read = read_torch(net)
    (W, b, a), (_, _, readout) = read.layers
    assert a == act and readout is None
    x = probe()
    z = x @ W.T + b
    np.testing.assert_allclose(np.abs(z) if act == "abs" else np.maximum(z, 0), activations(net, x, 3),
                               rtol=1e-12, atol=1e-12)
    # by hand: w' = γ/√(var+ε)·w, b' = γ(b − mean)/√(var+ε) + β
    lin, bn = net[0], net[1]
    s = 1 / np.sqrt(bn.running_var.numpy() + bn.eps)
    gamma = bn.weight.detach().numpy() if affine else 1.0
    beta = bn.bias.detach().numpy() if affine else 0.0
    np.testing.assert_allclose(W, (gamma * s)[:, None] * lin.weight.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(b, gamma * s * (lin.bias.detach().numpy() - bn.running_mean.numpy()) + beta,
                               rtol=1e-12, atol=1e-13)
    assert len(read.folded) == 1 and "BatchNorm1d '1' folded" in read.folded[0]


def test_from_torch_reports_the_fold_and_matches_from_layers():
    net = linear_bn(Abs())
    W, b, _ = read_torch(net).layers[0]
    mix, rep = from_torch(net, groups=3)
    ref, _ = from_layers(W, b, groups=3)
    np.testing.assert_allclose(mix.means, ref.means, rtol=1e-12)
    assert rep["folded"] and any("BatchNorm1d" in n for n in rep["notes"])
    assert rep["density_check"] == "unchecked: no data"
    # training mode: the running statistics are folded, and the report says so
    net.train()
    _, rep = from_torch(net, groups=3)
    assert "training mode" in rep["folded"][0]


def test_batchnorm_without_running_statistics_is_refused():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, track_running_stats=False), Abs())
    with pytest.raises(UnsupportedModelError, match="running statistics"):
        read_torch(net)


def test_affine_steps_of_a_custom_forward_fold():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)
            self.register_buffer("gain", torch.tensor([1.0, -2.0, 0.5, 3.0]))

        def forward(self, x):
            z = self.lin(x / 255.0 - 0.5) * self.gain + 1.0  # per-neuron Mul/Add after the Linear
            return torch.nn.functional.relu(-z)

    m = Scaled().double()
    (W, b, act), = layers_from_torch(m)
    x = probe(n=20) * 100
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert act == "relu"
    np.testing.assert_allclose(np.maximum(x @ W.T + b, 0), ref, rtol=1e-12, atol=1e-12)


def test_custom_mahalanobis_module_is_traced():
    m = Mahalanobis(3).double()
    read = read_torch(m)
    assert [(W.shape, a) for W, _, a in read.layers] == [((3, 3), "abs")]
    assert read.notes == ["after the last layer the module computes square → sum → sqrt (not read)"]
    mix, rep = from_torch(m)
    ref, _ = from_layers(m.lin.weight.detach().numpy(), m.lin.bias.detach().numpy())
    np.testing.assert_allclose(mix.means, ref.means, rtol=1e-12)
    assert any("sqrt" in n for n in rep["notes"])


def test_untraceable_module_names_the_submodule_to_pass():
    with pytest.raises(UnsupportedModelError, match=r"cannot trace Branchy.*first Linear is 'lin'"):
        read_torch(Branchy())
    with pytest.raises(UnsupportedModelError, match="Tanh"):
        read_torch(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()))


def torchscript_onnx(module, d):
    """torch.onnx.export with the TorchScript exporter (dynamo=False), as bytes."""
    import warnings

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch ≥ 2.9 warns that this exporter is legacy
        torch.onnx.export(module, (torch.zeros(2, d, dtype=torch.float64),), f, dynamo=False)
    return f.getvalue()


def test_torch_path_accepts_what_the_onnx_path_accepts():
    pytest.importorskip("onnx")
    from gmmnet.recover import from_onnx

    m = Mahalanobis(4).double()
    via_onnx, _ = from_onnx(torchscript_onnx(m, 4))
    via_torch, _ = from_torch(m)
    np.testing.assert_allclose(via_torch.means, via_onnx.means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(via_torch.weights, via_onnx.weights)


def test_dynamo_exporter_output_reads_back():
    """torch.onnx.export's default exporter (dynamo) needs onnxscript (gmmnet[torch] installs it)."""
    pytest.importorskip("onnxscript")
    from gmmnet.recover import from_onnx

    net = linear_bn(Abs(), n_in=3, n_out=6)
    prog = torch.onnx.export(net, (torch.zeros(2, 3, dtype=torch.float64),), dynamo=True, verbose=False)
    ops = [n.op_type for n in prog.model_proto.graph.node]
    assert "Abs" in ops and "BatchNormalization" not in ops  # the dynamo exporter folds eval BatchNorm itself
    via_onnx, rep = from_onnx(prog.model_proto, groups=3)
    via_torch, _ = from_torch(net, groups=3)
    np.testing.assert_allclose(via_torch.means, via_onnx.means, rtol=1e-9, atol=1e-10)


@pytest.mark.xfail(strict=True, raises=UnsupportedModelError, reason="pending read engineer: ONNX BatchNormalization")
def test_onnx_batchnormalization_reads_like_the_torch_fold():
    from gmmnet.recover import from_onnx

    net = linear_bn(Abs(), n_in=3, n_out=6)
    data = torchscript_onnx(net, 3)
    import onnx

    assert "BatchNormalization" in [n.op_type for n in onnx.load_from_string(data).graph.node]
    via_onnx, _ = from_onnx(data, groups=3)
    via_torch, _ = from_torch(net, groups=3)
    np.testing.assert_allclose(via_torch.means, via_onnx.means, rtol=1e-10, atol=1e-12)


class ReluPairs(torch.nn.Module):
    """The exact ReLU form written out: |z| = relu(z) + relu(−z), concatenated, then a readout."""

    def __init__(self, d, n):
        super().__init__()
        self.lin = torch.nn.Linear(d, n)
        self.out = torch.nn.Linear(2 * n, 2)

    def forward(self, x):
        z = self.lin(x)
        return self.out(torch.cat([torch.relu(z), torch.relu(-z)], dim=1))


def test_relu_pairs_concatenated_in_forward_are_one_level_of_mirrored_pairs():
    m = ReluPairs(3, 6).double()
    (W, b, act), (U, c, readout) = read_torch(m).layers
    lin = m.lin
    np.testing.assert_array_equal(W[:6], lin.weight.detach().numpy())
    np.testing.assert_array_equal(W[6:], -lin.weight.detach().numpy())
    assert act == "relu" and readout is None and U.shape == (2, 12)
    np.testing.assert_array_equal(U, m.out.weight.detach().numpy())
    mix, rep = from_torch(m, groups=[[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]])
    assert all(c["activation"] == "relu-pairs" for c in rep["components"])
    ref, _ = from_layers(lin.weight.detach().numpy(), lin.bias.detach().numpy(), groups=3)
    np.testing.assert_allclose(mix.means, ref.means, rtol=1e-10, atol=1e-12)
    # the same module through the ONNX reader
    from gmmnet.recover import from_onnx

    via_onnx, _ = from_onnx(torchscript_onnx(m, 3), groups=[[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]])
    np.testing.assert_allclose(via_onnx.means, mix.means, rtol=1e-10, atol=1e-12)


def test_a_second_activation_after_the_level_is_read_is_a_branch():
    class Late(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)

        def forward(self, x):
            z = self.lin(x)
            a = torch.abs(z)
            s = a.sum(dim=1, keepdim=True)  # reads the level
            return torch.relu(z) * s

    with pytest.raises(UnsupportedModelError, match="branch"):
        read_torch(Late())
