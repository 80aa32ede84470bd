"""Rank-truncated levels read back from deep graphs (Abs and ReLU-only), compute=, and truncated single mixtures."""

import numpy as np
import onnx
import pytest
from mixtures import rel_err
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from gmmnet import linalg
from gmmnet.cli import main
from gmmnet.errors import UsageError
from gmmnet.formats.onnx import deep, from_onnx, read_deep, run, to_onnx
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.hierarchy import HierarchicalGaussianMixture, truncate
from gmmnet.ir import Hierarchy, Mixture

HGM = HierarchicalGaussianMixture


@pytest.fixture(scope="module")
def digits():
    x = load_digits().data[:600]
    return StandardScaler().fit_transform(PCA(n_components=8, random_state=0).fit_transform(x))


@pytest.fixture(scope="module")
def models(digits):
    specs = {"two": "3:full:r=4,2:full:r=5", "three": "3:full:r=4,2:diag,2:tied:r=2", "tied": "3:tied:r=3,2:full"}
    return {k: HGM(s, random_state=0).fit(digits) for k, s in specs.items()}


def _same(a, b, rel):
    """Levels agree: structure, ranks, means, eigenvalues, eigenvectors up to sign, σ², weights."""
    assert len(a.levels) == len(b.levels)
    for la, lb in zip(a.levels, b.levels):
        assert (la.covariance_type, la.n_components) == (lb.covariance_type, lb.n_components)
        for ca, cb in zip(la.components, lb.components):
            assert ca.rank == cb.rank
            assert np.max(np.abs(ca.mean - cb.mean)) <= rel * max(1.0, float(np.max(np.abs(ca.mean))))
            assert np.max(np.abs(ca.eigenvalues - cb.eigenvalues) / ca.eigenvalues) <= rel
            assert np.max(np.abs(np.abs(ca.eigenvectors) - np.abs(cb.eigenvectors))) <= rel
            if ca.residual_variance is None:
                assert cb.residual_variance is None
            else:
                assert abs(cb.residual_variance - ca.residual_variance) <= rel * ca.residual_variance
        assert np.max(np.abs(la.weights - lb.weights)) <= rel


@pytest.mark.parametrize("which", ["two", "three"])
@pytest.mark.parametrize("activation", ["abs", "relu"])
@pytest.mark.parametrize("centering", ["none", "component"])
def test_truncated_levels_round_trip(models, digits, which, activation, centering):
    """Every truncated level — lower and top, Abs and paired ReLU — comes back as r kept directions + σ², exactly."""
    h = models[which]
    ir = h.to_ir()
    n = len(ir.levels)
    m = to_onnx(ir, activation=activation, dtype="float64", centering=centering,
                outputs=("label", "log_likelihood") + deep.level_outputs(n))
    back, report = read_deep.from_onnx(m)
    assert isinstance(back, Hierarchy) and report["lower_heads"] == list(range(n - 1))
    _same(ir, back, 1e-9)
    h2 = HGM.from_ir(back)
    assert rel_err(h2.score_samples(digits), h.score_samples(digits)) <= 1e-10
    assert np.array_equal(h2.predict(digits), h.predict(digits))
    again = run(to_onnx(back, activation=activation, dtype="float64"), digits)  # the same network once more
    assert rel_err(again["log_likelihood"], h.score_samples(digits)) <= 1e-10


@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_truncated_tied_levels_stay_tied(models, digits, activation):
    """A truncated tied level (lower, and top) reads back tied: the same rows, eigenvalues and σ² for every component."""
    h = HGM("3:tied:r=3,2:tied:r=2", random_state=0).fit(digits)
    ir = h.to_ir()
    assert [m.covariance_type for m in ir.levels] == ["tied", "tied"]
    back, _ = read_deep.from_onnx(to_onnx(ir, activation=activation, dtype="float64",
                                     outputs=("log_likelihood",) + deep.level_outputs(2)))
    _same(ir, back, 1e-9)
    back, _ = read_deep.from_onnx(to_onnx(models["tied"], activation=activation, dtype="float64",
                                     outputs=("log_likelihood",) + deep.level_outputs(2)))
    _same(models["tied"].to_ir(), back, 1e-9)


@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_truncated_round_trip_float32_arithmetic(models, digits, activation):
    h = models["three"]
    m = to_onnx(h, activation=activation, dtype="float32", compute="float32",
                outputs=("log_likelihood",) + deep.level_outputs(3))
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in m.graph.initializer if i.name.endswith("/W"))
    back, _ = read_deep.from_onnx(m)
    _same(h.to_ir(), back, 1e-4)
    assert rel_err(HGM.from_ir(back).score_samples(digits), h.score_samples(digits)) <= 1e-5


# ---------------------------------------------------------------------------
# compute


@pytest.mark.parametrize("which", ["two", "three"])
@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_compute_float64_behind_a_float32_interface(models, digits, which, activation):
    h = models[which]
    xin = digits.astype(np.float32)
    xr = xin.astype(np.float64)
    m = to_onnx(h, activation=activation, dtype="float32", compute="float64")
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {o.type.tensor_type.elem_type for o in m.graph.output if o.name != "label"} == {onnx.TensorProto.FLOAT}
    assert m.graph.node[0].op_type == "Cast"
    got = run(m, xin)
    assert rel_err(got["log_likelihood"], h.score_samples(xr)) <= 2e-7  # the float32 rounding of the outputs
    assert np.max(np.abs(got["responsibilities"] - h.predict_proba(xr))) <= 1e-7
    f32 = run(to_onnx(h, activation=activation, dtype="float32", compute="float32"), xin)
    assert rel_err(f32["log_likelihood"], h.score_samples(xr)) <= 2e-5  # float32 arithmetic, as before


def test_compute_auto_measures_and_records(models):
    from gmmnet.formats.onnx.export import _prepare, float32_neuron_prediction
    from gmmnet.tolerances import tol

    m = to_onnx(models["three"])
    meta = {p.key: p.value for p in m.metadata_props}
    preds = [float32_neuron_prediction(_prepare(mix)) for mix in models["three"].to_ir().levels]
    if any(p["log_likelihood"] > tol("float32_ll") or p["responsibilities"] > tol("float32_resp") for p in preds):
        # gate 1: the single-mixture predictor rejects float32 for a level, no measurement
        assert meta["compute"] == "float64" and "predictor rejects" in meta["compute_reason"]
        assert "measured_float32_error_log_likelihood" not in meta
    else:  # gate 2: float32 only when both measured errors are at most half the targets
        ll = float(meta["measured_float32_error_log_likelihood"])
        resp = float(meta["measured_float32_error_responsibilities"])
        assert ll > 0 and resp > 0 and "measured" in meta["compute_reason"]
        assert meta["compute"] == ("float32" if ll <= 1e-6 and resp <= 5e-7 else "float64")
    assert meta["compute_requested"] == "auto" and meta["dtype"] == "float32"
    plain = {p.key: p.value for p in to_onnx(models["two"], compute="float32").metadata_props}
    assert plain["compute"] == "float32" and "measured_float32_error_log_likelihood" not in plain
    assert {p.key: p.value for p in to_onnx(models["two"], dtype="float64").metadata_props}["compute"] == "float64"


def test_compute_auto_keeps_float32_where_it_is_accurate():
    """A well-conditioned mixture on O(1) inputs: float32 arithmetic meets half the targets, so auto keeps it."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) + 4])
    mix = from_sklearn(GaussianMixture(2, covariance_type="spherical", random_state=0).fit(x))
    m = to_onnx(mix, intensity="gauss", outputs=("log_likelihood", "responsibilities", "distances"))  # deep, 1 level
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["kind"] == "mixture" and meta["compute"] == "float32"
    assert float(meta["measured_float32_error_log_likelihood"]) <= 1e-6


def test_bad_compute(models):
    with pytest.raises(UsageError, match="compute"):
        deep.to_onnx(models["two"], compute="float16")
    with pytest.raises(UsageError, match="needs dtype='float32'"):
        deep.to_onnx(models["two"], dtype="float64", compute="float32")


# ---------------------------------------------------------------------------
# truncated single mixtures


@pytest.fixture(scope="module")
def truncated_mixture(digits):
    return truncate(from_sklearn(GaussianMixture(4, random_state=0).fit(digits)), 3)


@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_truncated_mixture_goes_deep_and_back(truncated_mixture, digits, activation):
    mix = truncated_mixture
    m = to_onnx(mix, activation=activation, dtype="float64",
                outputs=("label", "responsibilities", "log_likelihood", "distances", "mahalanobis"))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["kind"] == "mixture" and meta["ranks"] == "3,3,3,3" and "truncation" in meta
    W = next(onnx.numpy_helper.to_array(i) for i in m.graph.initializer if i.name.endswith("/W"))
    assert W.shape[0] == 4 * 3 * (2 if activation == "relu" else 1)  # K·r neurons, not K·d
    got = run(m, digits)
    assert rel_err(got["log_likelihood"], linalg.log_likelihood(mix, digits)) <= 1e-12
    assert np.max(np.abs(got["responsibilities"] - linalg.responsibilities(mix, digits))) <= 1e-12
    assert np.max(np.abs(got["distances"] - linalg.distances(mix, digits))) <= 1e-12
    assert rel_err(got["mahalanobis"] ** 2, linalg.mahalanobis_sq(mix, digits)) <= 1e-12
    back, _ = from_onnx(m)
    assert isinstance(back, Mixture)
    _same(Hierarchy(levels=[mix]), Hierarchy(levels=[back]), 1e-9)


def test_quadratic_layout_keeps_the_single_mixture_exporter(truncated_mixture):
    """abs/relu with the neuron layout go deep; layout="quadratic" reaches the single-mixture exporter (its own rules)."""
    m = to_onnx(truncated_mixture, dtype="float64", activation="abs", layout="neurons")
    assert {p.key: p.value for p in m.metadata_props}["kind"] == "mixture"
    with pytest.raises(UsageError, match="quadratic"):  # not swallowed: that exporter answers (full mixture here)
        to_onnx(truncated_mixture, dtype="float64", layout="quadratic")


def test_cli_truncated_round_trip(tmp_path, models, truncated_mixture, digits, capsys):
    from gmmnet import io

    ir_path, net, back = (str(tmp_path / n) for n in ("h.json", "h.onnx", "back.json"))
    io.save_ir(models["two"].to_ir(), ir_path)
    assert main(["to-onnx", ir_path, "-o", net, "--activation", "relu", "--level-outputs", "--compute", "float32"]) == 0
    meta = {p.key: p.value for p in onnx.load(net).metadata_props}
    assert meta["compute"] == "float32" and meta["kind"] == "hierarchy"
    assert main(["to-gmm", net, "-o", back]) == 0
    _same(models["two"].to_ir(), io.load_model(back), 1e-4)
    mix_path, net1, back1 = (str(tmp_path / n) for n in ("m.json", "m.onnx", "m_back.json"))
    io.save_ir(truncated_mixture, mix_path)
    assert main(["to-onnx", mix_path, "-o", net1, "--dtype", "float64"]) == 0
    assert main(["to-gmm", net1, "-o", back1]) == 0
    got = io.load_model(back1)
    assert isinstance(got, Mixture) and [c.rank for c in got.components] == [3, 3, 3, 3]
    _same(Hierarchy(levels=[truncated_mixture]), Hierarchy(levels=[got]), 1e-9)
