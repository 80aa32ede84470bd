"""gmmnet inspect: tables and strict JSON for every input kind, graph summaries, diagnostics, precision warnings."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.numpy_helper as nh
import pytest
from sklearn.mixture import GaussianMixture

import gmmnet
from gmmnet import io
from gmmnet.cli import main
from gmmnet.hierarchy import HierarchicalGaussianMixture
from gmmnet.ir import Component, Mixture


def blobs(seed=0, n=150):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 2)) @ np.array([[2.0, 0.6], [0.0, 0.5]])
    b = rng.normal(size=(n, 2)) * 0.6 + [4.0, 3.0]
    return np.vstack([a, b])


def strict_json(text: str):
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect")
    x = blobs()
    np.save(d / "x.npy", x)
    gmm = GaussianMixture(2, random_state=0).fit(x)
    io.save_estimator(gmm, d / "g.skops")
    io.save_estimator(gmm, d / "g.pkl")
    io.save_ir(gmmnet.from_sklearn(gmm), d / "g.json")
    io.save_onnx(gmmnet.to_onnx(gmm, activation="relu", dtype="float64", opset=15), d / "relu64.onnx")
    io.save_onnx(gmmnet.to_onnx(gmm), d / "abs32.onnx")
    model = gmmnet.to_onnx(gmm, dtype="float64")
    for init in model.graph.initializer:  # the neurons of component 1 drift (scaled by 2 and 0.5)
        if init.name == "layer0/c1/W":  # full, Abs: one Gemm of 2 neurons per component
            init.CopyFrom(nh.from_array(nh.to_array(init) * np.array([[2.0], [0.5]]), init.name))
    io.save_onnx(model, d / "trained.onnx")
    h = HierarchicalGaussianMixture("2:full,3:diag", random_state=0).fit(x)
    io.save_estimator(h, d / "h.pkl")
    io.save_ir(h.to_ir(), d / "h.json")
    io.save_onnx(gmmnet.to_onnx(h.to_ir()), d / "h.onnx")  # a deep network
    # an ill-conditioned mixture: a float32 graph would lose far more than 1e-4
    th = 0.3
    V = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
    bad = Mixture(n_features=2, components=[
        Component(mean=np.array([1e3, 1e3]), eigenvectors=V, eigenvalues=np.array([1e8, 1e-8]), weight=0.5),
        Component(mean=np.array([1e3 + 1, 1e3]), eigenvectors=V, eigenvalues=np.array([1e8, 1e-8]), weight=0.5),
    ])
    io.save_ir(bad, d / "bad.json")
    io.save_onnx(gmmnet.to_onnx(bad, dtype="float64"), d / "bad64.onnx")
    return d, gmm, h


def inspect_json(path, *extra, capsys):
    assert main(["inspect", "--json", str(path), *map(str, extra)]) == 0
    captured = capsys.readouterr()
    return strict_json(captured.out), captured.err


@pytest.mark.parametrize("name", ["g.skops", "g.pkl", "g.json", "relu64.onnx", "abs32.onnx"])
def test_components_match_the_model_for_every_kind(files, name, capsys):
    d, gmm, _ = files
    s, err = inspect_json(d / name, capsys=capsys)
    assert err == ""
    assert s["document"] == "mixture" and len(s["levels"]) == 1
    lvl = s["levels"][0]
    assert (lvl["n_components"], lvl["n_features"], lvl["n_neurons"]) == (2, 2, 4)
    covs = gmm.covariances_
    for c, w, cov in zip(lvl["components"], gmm.weights_, covs):
        lam = np.linalg.eigvalsh(cov)
        assert c["neurons"] == 2
        assert c["weight"] == pytest.approx(w, rel=1e-6)  # float32 graphs round the head constants
        assert c["eigenvalue_min"] == pytest.approx(lam[0], rel=1e-5)
        assert c["eigenvalue_max"] == pytest.approx(lam[-1], rel=1e-5)
        assert c["condition_number"] == pytest.approx(lam[-1] / lam[0], rel=1e-5)
    assert s["kind"] == {"g.skops": "estimator", "g.pkl": "estimator", "g.json": "ir"}.get(name, "onnx")


def test_onnx_graph_summary(files, capsys):
    d, _, _ = files
    s, _ = inspect_json(d / "relu64.onnx", capsys=capsys)
    model = onnx.load(str(d / "relu64.onnx"))
    g = s["graph"]
    assert g["inputs"] == ["X"]
    assert g["outputs"] == ["label", "responsibilities", "log_likelihood"]
    assert g["opset"] == 15
    assert g["nodes"] == len(model.graph.node)
    assert g["activation"] == "relu" and g["dtype"] == "float64"
    assert g["metadata"]["producer"] == "gmmnet"
    assert s["recovery"]["exact"] is True and s["recovery"]["grouping"] == "graph"
    s32, _ = inspect_json(d / "abs32.onnx", capsys=capsys)
    assert s32["graph"]["activation"] == "abs" and s32["graph"]["dtype"] == "float32"


def test_trained_network_diagnostics_in_json_and_table(files, capsys):
    d, _, _ = files
    s, _ = inspect_json(d / "trained.onnx", "--data", d / "x.npy", capsys=capsys)
    diag = s["levels"][0]["diagnostics"]["components"]
    assert [c["low_confidence"] for c in diag] == [False, True]
    assert diag[1]["whitening_error"] > diag[1]["whitening_allowance"]
    assert s["recovery"]["low_confidence"] == [1]
    assert main(["inspect", str(d / "trained.onnx"), "--data", str(d / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert "low-confidence components: 1" in out
    assert "recovery diagnostics" in out and "whitening error" in out


def test_hierarchy_estimator_and_ir(files, capsys):
    d, _, h = files
    for name in ("h.pkl", "h.json", "h.onnx"):
        s, _ = inspect_json(d / name, capsys=capsys)
        assert s["document"] == "hierarchy"
        assert [lvl["n_components"] for lvl in s["levels"]] == [2, 3]
        assert s["levels"][1]["n_features"] == s["levels"][0]["n_neurons"] == 4
        assert s["levels"][1]["covariance_type"] == "diag"
        lam = h.levels_[1].components[2].eigenvalues
        rel = 1e-5 if name.endswith(".onnx") else 1e-12  # a float32 graph rounds the weights
        assert s["levels"][1]["components"][2]["condition_number"] == pytest.approx(lam.max() / lam.min(), rel=rel)
    assert main(["inspect", str(d / "h.pkl")]) == 0
    out = capsys.readouterr().out
    assert "level 0: 2 components" in out and "level 1: 3 components, 4 features" in out


def test_float32_precision_warning(files, capsys, tmp_path):
    """Warnings describe the graph as built (its own compute mode and predicted error), or for a
    model file the graph to-onnx would write by default (issue 13, item 7)."""
    from gmmnet.tolerances import tol

    d, _, _ = files
    bad = io.load_ir(d / "bad.json")
    # a model file: what to-onnx's default (float32, compute auto) would give: float64 inside, no warning
    s, err = inspect_json(d / "bad.json", capsys=capsys)
    assert s["precision"]["float32_error_estimate"] > 1e-4  # pure float32 arithmetic would be far off...
    default = s["precision"]["to_onnx_default"]
    assert default["compute"] == "float64" and default["log_likelihood"] < tol("float32_ll")
    assert s["precision"]["warning"] is None and err == ""
    # ...and the float32 graph to-onnx writes by default computes in float64 inside: no warning either
    io.save_onnx(gmmnet.to_onnx(bad), tmp_path / "auto.onnx")
    s, err = inspect_json(tmp_path / "auto.onnx", capsys=capsys)
    assert s["precision"]["graph"]["compute"] == "float64" and s["graph"]["dtype"] == "float32"
    assert s["precision"]["graph"]["log_likelihood"] < tol("float32_ll")
    assert s["precision"]["warning"] is None and err == ""
    # a graph built to compute in float32 predicts its own miss: one warning line, quoting the prediction
    model = gmmnet.to_onnx(bad, compute="float32", centering="component")
    io.save_onnx(model, tmp_path / "f32.onnx")
    meta = {p.key: p.value for p in model.metadata_props}
    s, err = inspect_json(tmp_path / "f32.onnx", capsys=capsys)
    predicted = float(meta["predicted_error_log_likelihood"])
    assert s["precision"]["graph"] == pytest.approx({
        "dtype": "float32", "compute": "float32", "layout": "neurons", "basis": "predicted",
        "log_likelihood": predicted, "responsibilities": float(meta["predicted_error_responsibilities"])})
    assert f"{predicted:.1e}" in s["precision"]["warning"] and err.count("\n") == 1
    assert err.startswith("gmmnet: warning: this graph (dtype float32, compute float32) is predicted to miss")
    # the same graph without gmmnet's metadata: only the mixture's pure-float32 estimate is known
    del model.metadata_props[:]
    io.save_onnx(model, tmp_path / "bare.onnx")
    s, err = inspect_json(tmp_path / "bare.onnx", capsys=capsys)
    assert s["precision"]["graph"] is None and "does not say how it computes" in s["precision"]["warning"]
    # a float64 graph of the same mixture: the estimate is reported, but nothing to warn about
    s64, err64 = inspect_json(d / "bad64.onnx", capsys=capsys)
    assert s64["precision"]["float32_error_estimate"] > 1e-4
    assert s64["precision"]["warning"] is None and err64 == ""
    # a well-conditioned mixture: no warning
    s_ok, _ = inspect_json(d / "g.json", capsys=capsys)
    assert s_ok["precision"]["float32_error_estimate"] < 1e-4 and s_ok["precision"]["warning"] is None


def test_table_is_aligned(files, capsys):
    d, _, _ = files
    assert main(["inspect", str(d / "g.skops")]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("component"))
    table = lines[start:start + 4]  # header, rule, two components
    assert set(table[1]) <= {"-", " "}
    assert len({len(line) for line in table}) == 1
    # every column boundary (two spaces) of the rule lines up with the header
    cols = [i for i in range(1, len(table[1])) if table[1][i - 1] == " " and table[1][i] == "-"]
    for line in table:
        assert all(line[i - 1] == " " for i in cols)


def test_inspect_errors_are_one_line(files, capsys, tmp_path):
    d, _, _ = files
    assert main(["inspect", str(tmp_path / "missing.onnx")]) == 3
    assert main(["inspect", str(d / "trained.onnx"), "--data", str(tmp_path / "nope.npy")]) == 3
    bad = tmp_path / "junk.json"
    bad.write_text('{"kind": "mixture"}')
    assert main(["inspect", str(bad)]) == 7
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and all(line.startswith("gmmnet: error: ") for line in err.splitlines())


def test_graph_arithmetic_line(files, capsys, tmp_path):
    d, _, _ = files
    assert main(["inspect", str(d / "abs32.onnx")]) == 0
    meta = {p.key: p.value for p in onnx.load(str(d / "abs32.onnx")).metadata_props}
    out = capsys.readouterr().out
    assert f"this graph: layout neurons, compute {meta['compute']}, predicted log_likelihood error" in out
    assert "pure-float32 error estimate of this mixture" in out
    rng = np.random.default_rng(0)
    gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(rng.normal(size=(200, 3)))
    io.save_onnx(gmmnet.to_onnx(gm, layout="quadratic", compute="float64"), tmp_path / "q.onnx")
    assert main(["inspect", str(tmp_path / "q.onnx")]) == 0
    assert "this graph: layout quadratic, compute float64" in capsys.readouterr().out
