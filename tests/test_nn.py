"""gmmnet.nn: torch building blocks, exact against the float64 numpy reference (gmmnet.linalg)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.datasets import load_breast_cancer, load_wine  # noqa: E402
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from gmmnet import linalg  # noqa: E402
from gmmnet.errors import InvalidModelError, UnsupportedModelError  # noqa: E402
from gmmnet.formats.sklearn import from_sklearn  # noqa: E402
from gmmnet.ir import Component, Hierarchy, Mixture  # noqa: E402
from gmmnet.nn import (  # noqa: E402
    MahalanobisLinear,
    MixtureNetwork,
    ShapeError,
    init_from_data,
    init_linear_from_mixture,
    mixture_from_module,
    neuron_groups,
    orthogonality_penalty,
    to_torch,
)

torch.set_num_threads(1)
COV_TYPES = ["full", "tied", "diag", "spherical"]
ACTS = ["abs", "relu"]


def rel(got, ref):
    got = got.detach().to(torch.float64).numpy() if torch.is_tensor(got) else np.asarray(got)
    return float(np.max(np.abs(got - ref) / (1.0 + np.abs(ref))))


@pytest.fixture(scope="module")
def wine():
    return StandardScaler().fit_transform(load_wine().data)


_FITS: dict = {}


def fitted(x, ct, cls=GaussianMixture, k=3):
    key = (id(x), ct, cls, k)
    if key not in _FITS:
        _FITS[key] = from_sklearn(cls(n_components=k, covariance_type=ct, random_state=0, max_iter=200).fit(x))
    return _FITS[key]


def check_outputs(out, m, x, tol):
    """Every output of a MixtureNetwork against the linalg reference; returns the worst error."""
    n, k = x.shape[0], m.n_components
    assert out.label.dtype == torch.int64 and out.label.shape == (n,)
    assert out.responsibilities.shape == (n, k) and out.mahalanobis.shape == (n, k)
    assert out.log_likelihood.shape == (n,) and out.distances.shape == (n, k * m.n_features)
    errs = {
        "log_likelihood": rel(out.log_likelihood, linalg.log_likelihood(m, x)),
        "responsibilities": rel(out.responsibilities, linalg.responsibilities(m, x)),
        "distances": rel(out.distances, linalg.distances(m, x)),
        "mahalanobis": rel(out.mahalanobis, np.sqrt(linalg.mahalanobis_sq(m, x))),
    }
    assert max(errs.values()) <= tol, errs
    assert np.array_equal(out.label.numpy(), np.argmax(linalg.log_joint(m, x), axis=1))
    return max(errs.values())


# ---------------------------------------------------------------------------
# to_torch: exact against linalg


@pytest.mark.parametrize("normalize", [True, False], ids=["density-head", "fixed-head"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_torch_float64_exact(wine, ct, act, normalize):
    m = fitted(wine, ct)
    net = to_torch(m, activation=act, normalize=normalize)
    assert net.linear.weight.dtype == torch.float64
    assert net.linear.out_features == (2 if act == "relu" else 1) * m.n_components * m.n_features
    with torch.no_grad():
        out = net(torch.as_tensor(wine))
    check_outputs(out, m, wine, 1e-10)
    np.testing.assert_allclose(net.component_log_terms().detach().numpy(), linalg.component_log_terms(m),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_torch_bayesian_mixture_log_constants(wine, ct):
    m = fitted(wine, ct, BayesianGaussianMixture)
    assert np.any(m.log_constants != 0)
    with torch.no_grad():
        out = to_torch(m)(torch.as_tensor(wine))
    check_outputs(out, m, wine, 1e-10)


def test_to_torch_raw_features_float64():
    x = load_breast_cancer().data[:, :8]  # means ~1e3, condition numbers ~1e8
    gm = GaussianMixture(n_components=3, random_state=0).fit(x)
    with torch.no_grad():
        out = to_torch(gm)(torch.as_tensor(x))  # a fitted sklearn mixture is accepted directly
    check_outputs(out, from_sklearn(gm), x, 1e-10)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_torch_float32(wine, ct, act):
    m = fitted(wine, ct)
    net = to_torch(m, activation=act, dtype=torch.float32)
    x32 = torch.as_tensor(wine, dtype=torch.float32)
    with torch.no_grad():
        out = net(x32)
    assert out.log_likelihood.dtype == torch.float32
    # measured against the reference on the float32-rounded input: the rounding is not the graph's error
    check_outputs(out, m, x32.double().numpy(), 1e-5)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("ct", COV_TYPES)
def test_to_torch_matches_the_onnx_model_float32(wine, ct, act):
    """The issue's contract: to_torch computes what the ONNX export computes (float32, ≤ 1e-5)."""
    from gmmnet.formats.onnx import OUTPUTS, run, to_onnx

    m = fitted(wine, ct)
    x32 = wine.astype(np.float32)
    got = run(to_onnx(m, activation=act, dtype="float32", outputs=OUTPUTS), x32)
    got = {k: np.asarray(v) for k, v in got.items()}
    with torch.no_grad():
        out = to_torch(m, activation=act, dtype=torch.float32)(torch.as_tensor(x32))._asdict()
    for name in OUTPUTS:
        if name == "label":
            # argmax may differ only where two log-joints tie to float32 rounding
            lj = linalg.log_joint(m, x32.astype(np.float64))
            top2 = np.sort(lj, axis=1)[:, -2:]
            differ = out[name].numpy() != got[name]
            assert np.all(top2[differ, 1] - top2[differ, 0] < 1e-4)
            continue
        assert out[name].dtype == torch.float32
        assert rel(out[name], got[name].astype(np.float64)) <= 1e-5, name


def test_device_auto_uses_the_gpu_when_torch_sees_one(wine):
    from gmmnet.nn import resolve_device

    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device(None) is None and resolve_device("cpu") == torch.device("cpu")
    net = to_torch(fitted(wine, "full"), device="auto")
    assert net.linear.weight.device.type == want and net.log_constants.device.type == want
    lin, _ = init_from_data(wine, 2, random_state=0, device="auto")
    assert lin.weight.device.type == want
    with torch.no_grad():
        ll = net(wine).log_likelihood  # numpy input follows the module to its device
    assert ll.device.type == want


def test_forward_casts_input_and_keeps_batch_shape(wine):
    m = fitted(wine, "full")
    net = to_torch(m)
    x = wine[:12]
    with torch.no_grad():
        a = net(x)  # numpy in
        b = net(torch.as_tensor(x, dtype=torch.float32).reshape(3, 4, -1))
    assert b.log_likelihood.shape == (3, 4) and b.distances.shape == (3, 4, 3 * 13)
    assert rel(b.log_likelihood.reshape(-1), a.log_likelihood.numpy()) < 1e-6
    with pytest.raises(ShapeError, match="13"):
        net(torch.zeros(2, 5, dtype=torch.float64))


def test_module_moves_and_casts_like_any_module(wine):
    m = fitted(wine, "diag")
    net = to_torch(m).to("cpu").to(torch.float32)
    assert all(t.dtype == torch.float32 for t in list(net.parameters()) + list(net.buffers()))
    with torch.no_grad():
        out = net(torch.as_tensor(wine, dtype=torch.float32))
    assert rel(out.log_likelihood, linalg.log_likelihood(m, wine)) < 1e-5
    # state_dict round trip into a fresh module of the same shape
    fresh = MixtureNetwork(13, 3, dtype=torch.float32)
    fresh.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(torch.as_tensor(wine, dtype=torch.float32)).log_likelihood, out.log_likelihood)


def test_to_torch_refuses_truncated_and_hierarchies(wine):
    m = fitted(wine, "full")
    c = m.components[0]
    trunc = Mixture(n_features=13, components=[Component(mean=c.mean, eigenvectors=c.eigenvectors[:4],
                                                         eigenvalues=c.eigenvalues[:4], weight=1.0,
                                                         residual_variance=0.1)])
    with pytest.raises(UnsupportedModelError, match="rank-truncated"):
        to_torch(trunc)
    with pytest.raises(UnsupportedModelError, match="Hierarchy"):
        to_torch(Hierarchy(levels=[m]))
    with pytest.raises(ValueError, match="activation"):
        to_torch(m, activation="tanh")


# ---------------------------------------------------------------------------
# differentiable: gradients and fine-tuning


@pytest.mark.parametrize("act", ACTS)
def test_gradients_flow(wine, act):
    net = to_torch(fitted(wine, "full"), activation=act)
    out = net(torch.as_tensor(wine))
    loss = -out.log_likelihood.mean() + out.responsibilities[:, 0].sum() + out.distances.mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.all(torch.isfinite(p.grad)), name
        assert p.grad.abs().max() > 0, name


def test_fine_tuning_decreases_nll_and_stays_a_mixture(wine):
    # start from k-means clusters (not an MLE), so maximum likelihood has room to improve
    _, m0 = init_from_data(wine, 3, method="kmeans", random_state=0, dtype=torch.float64)
    net = to_torch(m0)
    x = torch.as_tensor(wine)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = -net(x).log_likelihood.mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = -net(x).log_likelihood.mean().item()
    assert final < losses[0] - 0.05, (losses[0], final)
    # the density head keeps the network a normalized mixture: reading it back scores identically
    m1 = mixture_from_module(net)
    assert m1.covariance_type == "full"
    with torch.no_grad():
        assert rel(net(x).log_likelihood, linalg.log_likelihood(m1, wine)) <= 1e-10


def test_relu_pairs_untie_in_training_and_are_reported(wine):
    net = to_torch(fitted(wine, "full"), activation="relu")
    assert mixture_from_module(net).diagnostics == {"relu_pair_asymmetry": 0.0}
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    (-net(torch.as_tensor(wine)).log_likelihood.mean()).backward()
    opt.step()
    assert mixture_from_module(net).diagnostics["relu_pair_asymmetry"] > 0


# ---------------------------------------------------------------------------
# mixture_from_module: the inverse


def assert_same_mixture(a: Mixture, b: Mixture, x, tol=1e-10):
    assert a.n_components == b.n_components and a.covariance_type == b.covariance_type
    np.testing.assert_allclose(a.weights, b.weights, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.log_constants, b.log_constants, rtol=tol, atol=tol)
    for ca, cb in zip(a.components, b.components):
        np.testing.assert_allclose(ca.mean, cb.mean, rtol=tol, atol=tol)
        cov_a = linalg.covariance(ca.eigenvectors, ca.eigenvalues)
        cov_b = linalg.covariance(cb.eigenvectors, cb.eigenvalues)
        np.testing.assert_allclose(cov_a, cov_b, rtol=tol, atol=tol * np.abs(cov_b).max())
    assert rel(linalg.log_likelihood(a, x), linalg.log_likelihood(b, x)) <= tol


@pytest.mark.parametrize("normalize", [True, False], ids=["density-head", "fixed-head"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("ct", COV_TYPES)
def test_round_trip(wine, ct, act, normalize):
    m = fitted(wine, ct, BayesianGaussianMixture if normalize else GaussianMixture)
    back = mixture_from_module(to_torch(m, activation=act, normalize=normalize))
    assert back.provenance.source == "gmmnet.nn.MixtureNetwork"
    assert_same_mixture(back, m, wine)


@pytest.mark.parametrize("act", ACTS)
def test_torch_to_ir_to_torch(wine, act):
    """torch → IR → torch: an (already trained) network and its rebuild compute the same outputs."""
    net = to_torch(fitted(wine, "full"), activation=act)
    x = torch.as_tensor(wine)
    # leave the init as training would: blocks no longer orthogonal (relu pairs kept tied, the
    # case in which a relu network is a mixture; untied pairs are reported, see above)
    gen = torch.Generator().manual_seed(0)
    dw = 0.05 * torch.randn(net.n_neurons, 13, generator=gen, dtype=torch.float64)
    db = 0.05 * torch.randn(net.n_neurons, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        net.linear.weight += torch.cat([dw, -dw]) if act == "relu" else dw
        net.linear.bias += torch.cat([db, -db]) if act == "relu" else db
        net.log_weights += torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    again = to_torch(mixture_from_module(net), activation=act)
    with torch.no_grad():
        a, b = net(x), again(x)
    assert torch.equal(a.label, b.label)
    for name in ("log_likelihood", "responsibilities", "mahalanobis"):
        assert rel(getattr(b, name), getattr(a, name).numpy()) <= 1e-10, name
    # at initialization the blocks are whitening rotations already: the parameters come back too
    net0 = to_torch(fitted(wine, "full"), activation=act)
    net1 = to_torch(mixture_from_module(net0), activation=act)
    for (name, p0), (_, p1) in zip(net0.named_parameters(), net1.named_parameters()):
        assert torch.allclose(p0, p1, rtol=1e-12, atol=1e-12), name


@pytest.mark.parametrize("act", ["abs", "relu", "shifted_relu"])
def test_read_plain_linear(wine, act):
    m = fitted(wine, "full")
    lin = torch.nn.Linear(13, (2 if act == "relu" else 1) * 39, dtype=torch.float64)
    init_linear_from_mixture(lin, m, activation=act, delta=0.5)
    back = mixture_from_module(lin, activation=act, weights=m.weights, delta=0.5)
    assert back.n_components == 3
    assert_same_mixture(back, m, wine)


def test_read_rotated_blocks_is_invariant(wine, rng):
    # whitening is unique only up to a rotation inside each component (paper §3.4)
    m = fitted(wine, "full")
    net = to_torch(m)
    with torch.no_grad():
        for k in range(3):
            q, _ = np.linalg.qr(rng.standard_normal((13, 13)))
            sl = slice(13 * k, 13 * (k + 1))
            net.linear.weight[sl] = torch.as_tensor(q) @ net.linear.weight[sl]
            net.linear.bias[sl] = torch.as_tensor(q) @ net.linear.bias[sl]
    assert_same_mixture(mixture_from_module(net), m, wine, tol=1e-9)


def test_read_rank_deficient_block_raises(wine):
    net = to_torch(fitted(wine, "full"))
    with torch.no_grad():
        net.linear.weight[1] = net.linear.weight[0]
    with pytest.raises(InvalidModelError, match="rank"):
        mixture_from_module(net)
    with pytest.raises(UnsupportedModelError):
        mixture_from_module(torch.nn.ReLU())


# ---------------------------------------------------------------------------
# MahalanobisLinear


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_mahalanobis_linear_component_round_trip(wine, ct):
    m = fitted(wine, ct)
    for c in m.components:
        mod = MahalanobisLinear.from_component(c)
        w, b = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
        np.testing.assert_allclose(mod.weight.detach().numpy(), w, rtol=1e-13, atol=1e-13 * np.abs(w).max())
        np.testing.assert_allclose(mod.bias.detach().numpy(), b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
        assert torch.all(mod.scale > 0)
        back = mod.to_component(weight=c.weight)
        np.testing.assert_allclose(back.mean, c.mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(back.eigenvectors, c.eigenvectors, rtol=0, atol=1e-12)
        np.testing.assert_allclose(back.eigenvalues, c.eigenvalues, rtol=1e-12, atol=0)
        # forward (centred form) equals the Linear view and the numpy reference
        with torch.no_grad():
            y = mod(torch.as_tensor(wine))
            y_lin = mod.to_linear()(torch.as_tensor(wine))
        single = Mixture(n_features=13, components=[c.model_copy(update={"weight": 1.0})])
        assert rel(y.abs(), linalg.distances(single, wine)) <= 1e-12
        assert rel(y_lin, y.numpy()) <= 1e-12
    assert mixture_from_module(MahalanobisLinear.from_component(m.components[0])).n_components == 1


def test_mahalanobis_linear_from_linear_and_training(wine, rng):
    lin = torch.nn.Linear(4, 4, dtype=torch.float64)
    mod = MahalanobisLinear.from_linear(lin)
    x = torch.as_tensor(rng.standard_normal((20, 4)))
    with torch.no_grad():
        assert rel(mod(x), lin(x).numpy()) <= 1e-12
        assert rel(mod.weight, lin.weight.numpy()) <= 1e-14 and rel(mod.bias, lin.bias.numpy()) <= 1e-12
    # a generic (non-orthogonal) square block still is a Gaussian: Σ⁻¹ = WᵀW, Wμ + b = 0
    comp = mod.to_component()
    W, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    mean, vecs, vals = linalg.gaussian_from_neurons(W, b)
    np.testing.assert_allclose(comp.mean, mean, atol=1e-12)
    np.testing.assert_allclose(linalg.covariance(comp.eigenvectors, comp.eigenvalues),
                               linalg.covariance(vecs, vals), rtol=1e-10, atol=1e-12)
    # parameters train; directions stay unit-norm and scales positive
    opt = torch.optim.SGD(mod.parameters(), lr=0.1)
    mod(x).pow(2).sum().backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in mod.parameters())
    opt.step()
    assert torch.allclose(mod.directions.norm(dim=1), torch.ones(4, dtype=torch.float64))
    assert torch.all(mod.scale > 0)


def test_mahalanobis_linear_refusals():
    over = torch.nn.Linear(2, 5, dtype=torch.float64)  # 5 hyperplanes in 2-D share no point
    with pytest.raises(UnsupportedModelError, match="one point"):
        MahalanobisLinear.from_linear(over)
    with pytest.raises(UnsupportedModelError, match="bias"):
        MahalanobisLinear.from_linear(torch.nn.Linear(3, 3, bias=False))
    wide = MahalanobisLinear(5, 2, dtype=torch.float64)
    with pytest.raises(UnsupportedModelError, match="residual_variance"):
        wide.to_component()
    assert wide.to_component(residual_variance=2.0).rank == 2


# ---------------------------------------------------------------------------
# initialization


@pytest.mark.parametrize("method", ["gmm", "kmeans"])
@pytest.mark.parametrize("ct", COV_TYPES)
def test_init_from_data(wine, method, ct):
    lin, m = init_from_data(wine, 3, method=method, covariance_type=ct, random_state=0, dtype=torch.float64)
    assert isinstance(lin, torch.nn.Linear) and (lin.in_features, lin.out_features) == (13, 39)
    assert m.covariance_type == ct and m.n_components == 3 and abs(m.weights.sum() - 1) < 1e-12
    with torch.no_grad():
        a = lin(torch.as_tensor(wine)).abs()
    assert rel(a, linalg.distances(m, wine)) <= 1e-12
    assert orthogonality_penalty(lin, neuron_groups(m)).item() <= 1e-20


def test_init_from_data_rank_and_activations(wine):
    lin, m = init_from_data(wine, 2, rank=4, random_state=0, dtype=torch.float64)
    assert lin.out_features == 8 and all(c.rank == 4 and c.residual_variance for c in m.components)
    with torch.no_grad():
        assert rel(lin(torch.as_tensor(wine)).abs(), linalg.distances(m, wine)) <= 1e-12
    # relu: rows [W; −W] and relu(z) + relu(−z) = |z|
    lin_r, m_r = init_from_data(wine, 2, activation="relu", random_state=0, dtype=torch.float64)
    assert lin_r.out_features == 2 * 26
    with torch.no_grad():
        r = torch.relu(lin_r(torch.as_tensor(wine)))
    assert rel(r[:, :26] + r[:, 26:], linalg.distances(m_r, wine)) <= 1e-12
    # shifted relu (paper eq. 10): relu(−(wᵀx + b) + δ)
    lin_s, m_s = init_from_data(wine, 2, activation="shifted_relu", delta=1.5, random_state=0, dtype=torch.float64)
    W, b = (np.concatenate(t) for t in zip(*(linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
                                              for c in m_s.components)))
    with torch.no_grad():
        s = torch.relu(lin_s(torch.as_tensor(wine))).numpy()
    np.testing.assert_allclose(s, np.maximum(-(wine @ W.T + b) + 1.5, 0), atol=1e-12)
    # default dtype follows torch
    assert init_from_data(wine[:, :3], 1)[0].weight.dtype == torch.get_default_dtype()


def test_init_linear_checks(wine):
    m = fitted(wine, "full")
    with pytest.raises(ShapeError, match="needs 13→78"):
        init_linear_from_mixture(torch.nn.Linear(13, 39), m, activation="relu")
    with pytest.raises(ShapeError, match="bias"):
        init_linear_from_mixture(torch.nn.Linear(13, 39, bias=False), m)
    with pytest.raises(ValueError, match="delta"):
        init_linear_from_mixture(torch.nn.Linear(13, 39), m, activation="shifted_relu")
    with pytest.raises(ValueError, match="method"):
        init_from_data(wine, 2, method="spectral")
    assert issubclass(ShapeError, ValueError) and issubclass(ShapeError, InvalidModelError)


# ---------------------------------------------------------------------------
# orthogonality penalty


@pytest.mark.parametrize("act", ACTS)
def test_orthogonality_penalty(wine, act):
    net = to_torch(fitted(wine, "full"), activation=act)
    groups = net.neuron_groups()
    assert len(groups) == (6 if act == "relu" else 3)
    w = net.linear.weight
    assert orthogonality_penalty(w, groups).item() <= 1e-20
    with torch.no_grad():
        w.add_(0.05 * torch.randn_like(w, generator=torch.Generator().manual_seed(0)))
    pen = orthogonality_penalty(net.linear, groups)
    assert pen.item() > 1e-4
    pen.backward()
    assert torch.all(torch.isfinite(w.grad)) and w.grad.abs().max() > 0


def test_orthogonality_penalty_group_specs():
    w = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = orthogonality_penalty(w, 3)
    assert torch.equal(a, orthogonality_penalty(w, [3, 3]))
    assert torch.equal(a, orthogonality_penalty(w, [[0, 1, 2], [3, 4, 5]]))
    # scale-invariant per row: the penalty sees directions only
    assert torch.allclose(a, orthogonality_penalty(w * torch.arange(1, 7, dtype=torch.float64)[:, None], 3))
    for bad in (4, [3, 2], [[0, 6]]):
        with pytest.raises(ShapeError):
            orthogonality_penalty(w, bad)


# ---------------------------------------------------------------------------
# the API reference's examples run


def test_api_doc_examples(capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md[block {i}]", "exec"), namespace)  # noqa: S102 - our own docs
    printed = capsys.readouterr().out
    assert "Linear(in_features=13, out_features=52, bias=True)" in printed
    assert "['chem__c0_pc0' 'chem__c0_pc1']" in printed and "['c0_pc0' 'c0_pc1' 'c0_pc2' 'c0_pc3']" in printed


def test_mixtures_behind_an_input_transform_are_refused_by_name(wine):
    from gmmnet.ir import InputTransform

    m = from_sklearn(GaussianMixture(2, covariance_type="diag", random_state=0).fit(wine))
    mt = m.model_copy(update={"input_transform": InputTransform(scale=np.ones(13), offset=np.zeros(13))})
    with pytest.raises(UnsupportedModelError, match="input transform .*raw_view"):
        to_torch(mt)


def test_a_wide_network_is_refused_before_it_is_allocated():
    from gmmnet.errors import ResourceLimitError
    from gmmnet.limits import set_max_memory

    d = 3000  # a diag mixture's dense Linear: K·d × d = 2·3000² floats
    m = Mixture(n_features=d, covariance_type="diag",
                components=[Component(mean=np.zeros(d), eigenvalues=np.ones(d), weight=0.5)] * 2)
    set_max_memory("64M")
    try:
        with pytest.raises(ResourceLimitError, match="a network of 6000 neurons over 3000 inputs"):
            to_torch(m)
    finally:
        set_max_memory(None)


def test_invalid_options_are_usage_errors_and_value_errors(wine):
    from gmmnet.errors import UsageError

    m = from_sklearn(GaussianMixture(2, random_state=0).fit(wine))
    with pytest.raises(UsageError, match="activation must be one of") as exc:
        to_torch(m, activation="tanh")
    assert isinstance(exc.value, ValueError)
