"""Linear → BatchNormalization (inference) → Abs/Relu, and per-neuron Mul/Add scales, folded exactly (issue 18)."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from mixtures import random_mixture, rel_err
from onnx import TensorProto, helper, numpy_helper
from test_onnx_read import covs, neuron_blocks, rel

from gmmnet import linalg
from gmmnet.errors import UnsupportedModelError
from gmmnet.formats.onnx import from_onnx
from gmmnet.formats.onnx.read import BATCHNORM_NOTE, read_layers
from gmmnet.tolerances import tol


def bn_params(rng, n):
    """Random inference-mode BatchNorm statistics (scale γ, shift β, running mean and variance)."""
    return (rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n), rng.normal(size=n), rng.normal(size=n) * 3,
            rng.uniform(0.1, 4.0, n))


def undo_bn(W, b, gamma, beta, mean, var, eps):
    """Linear rows that BatchNorm maps onto (W, b): BN(W̃x + b̃) = W x + b."""
    s = gamma / np.sqrt(var + eps)
    return W / s[:, None], (b - beta) / s + mean


def graph(mix, rng, *, activation="abs", extra_scale=False, training_mode=None, eps=1e-5):
    """X → Gemm → BatchNormalization [→ Mul(u) → Add(v)] → Abs|Relu([W;−W]) → square → group sums → head."""
    blocks = neuron_blocks(mix)
    W = np.concatenate([w for w, _ in blocks])
    b = np.concatenate([bb for _, bb in blocks])
    K = mix.n_components
    G = np.zeros((W.shape[0], K))
    r0 = 0
    for k, (w, _) in enumerate(blocks):
        G[r0:r0 + w.shape[0], k] = 1.0
        r0 += w.shape[0]
    if activation == "relu":
        W, b, G = np.concatenate([W, -W]), np.concatenate([b, -b]), np.concatenate([G, G])
    n = W.shape[0]
    Wt, bt = W, b
    if extra_scale:  # a per-neuron affine map after the BatchNorm: u·y + v
        u, v = rng.uniform(0.5, 2.0, n), rng.normal(size=n)
        Wt, bt = Wt / u[:, None], (bt - v) / u
    gamma, beta, mean, var = bn_params(rng, n)
    Wt, bt = undo_bn(Wt, bt, gamma, beta, mean, var, eps)
    inits = [numpy_helper.from_array(a, name) for a, name in
             ((Wt, "W"), (bt, "b"), (gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var"), (G, "G"),
              (np.array(-0.5), "mhalf"), (linalg.component_log_terms(mix), "c"))]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1"))
    bn_kw = {"epsilon": eps}
    if training_mode is not None:
        bn_kw["training_mode"] = training_mode
    nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["z0"], transB=1, name="linear"),
             helper.make_node("BatchNormalization", ["z0", "gamma", "beta", "mean", "var"], ["z1"], name="bn", **bn_kw)]
    last = "z1"
    if extra_scale:
        inits += [numpy_helper.from_array(u, "u"), numpy_helper.from_array(v, "v")]
        nodes += [helper.make_node("Mul", ["z1", "u"], ["z2"], name="scale"),
                  helper.make_node("Add", ["z2", "v"], ["z3"], name="shift")]
        last = "z3"
    nodes += [
        helper.make_node("Abs" if activation == "abs" else "Relu", [last], ["a"], name="act"),
        helper.make_node("Mul", ["a", "a"], ["a2"], name="square"),
        helper.make_node("MatMul", ["a2", "G"], ["d2"], name="groups"),
        helper.make_node("Mul", ["d2", "mhalf"], ["hd2"], name="half"),
        helper.make_node("Add", ["hd2", "c"], ["logits"], name="const"),
        helper.make_node("ReduceLogSumExp", ["logits", "axes1"], ["log_likelihood"], keepdims=0, name="lse"),
    ]
    x = helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", mix.n_features])
    y = helper.make_tensor_value_info("log_likelihood", TensorProto.DOUBLE, ["N"])
    m = helper.make_model(helper.make_graph(nodes, "bn", [x], [y], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("activation", ["abs", "relu"])
@pytest.mark.parametrize("extra_scale", [False, True])
def test_batchnorm_is_folded_exactly(rng, activation, extra_scale):
    mix = random_mixture(rng, 3, 4)
    rec, report = from_onnx(graph(mix, rng, activation=activation, extra_scale=extra_scale))
    assert np.max(np.abs(rec.means - mix.means)) <= 1e-9 * (1 + np.max(np.abs(mix.means)))
    assert rel(covs(rec), covs(mix)) <= 1e-9
    x = linalg.sample(mix, 200, seed=3)
    assert rel_err(linalg.log_likelihood(rec, x), linalg.log_likelihood(mix, x)) <= tol("readback_float64")
    assert BATCHNORM_NOTE in report["reader"]["notes"] and BATCHNORM_NOTE == "BatchNormalization folded into the linear layer"
    assert report["folded"] == [BATCHNORM_NOTE]  # the key the torch reader lists its folded steps under
    assert report["readback"]["checked"]


def test_batchnorm_in_training_mode_is_refused(rng):
    mix = random_mixture(rng, 2, 3)
    with pytest.raises(UnsupportedModelError, match=r"\(BatchNormalization 'bn'\).*training mode"):
        read_layers(graph(mix, rng, training_mode=1))


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (dynamo=False) keeps BN as a node
def test_torch_linear_batchnorm_relu(rng):
    """A torch Linear → BatchNorm1d (eval) → ReLU exported by torch.onnx: the neurons are BN ∘ Linear."""
    torch = pytest.importorskip("torch")
    d, n = 4, 6
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(d, n), torch.nn.BatchNorm1d(n), torch.nn.ReLU()).double()
    with torch.no_grad():  # running statistics as a trained network would have them
        net[1].running_mean.copy_(torch.randn(n))
        net[1].running_var.copy_(torch.rand(n) + 0.5)
        net[1].weight.copy_(torch.randn(n))
        net[1].bias.copy_(torch.randn(n))
    net.eval()
    buf = io.BytesIO()
    torch.onnx.export(net, torch.randn(2, d, dtype=torch.float64), buf, dynamo=False, input_names=["X"],
                      output_names=["Y"], dynamic_axes={"X": {0: "N"}, "Y": {0: "N"}})
    model = onnx.load_from_string(buf.getvalue())
    assert "BatchNormalization" in [nd.op_type for nd in model.graph.node]
    layer = read_layers(model)
    bn = net[1]
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    W = net[0].weight.detach().numpy() * s[:, None]
    b = (net[0].bias - bn.running_mean).detach().numpy() * s + bn.bias.detach().numpy()
    assert np.allclose(layer.W, W, rtol=1e-12, atol=1e-12) and np.allclose(layer.b, b, rtol=1e-12, atol=1e-12)
    assert BATCHNORM_NOTE in layer.notes
    x = np.random.default_rng(1).normal(size=(50, d))
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.allclose(np.maximum(x @ layer.W.T + layer.b, 0.0), ref, rtol=1e-12, atol=1e-12)
    _, report = from_onnx(model, groups=[[0, 1, 2, 3], [4, 5]], data=x)
    assert BATCHNORM_NOTE in report["reader"]["notes"]
