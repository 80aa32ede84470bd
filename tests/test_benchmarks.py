"""Smoke run of benchmarks/run.py (tiny sizes) and checks of the prototype graphs of
benchmarks/prototypes.py, so neither rots.  No timing assertions: only structure and accuracy."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from mixtures import random_mixture, rel_err, sample

from gmmnet import linalg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "run.py")
COV_TYPES = ("full", "tied", "diag", "spherical")


def _module(name: str):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"gmmnet_benchmarks_{name}", path)
    if spec.name not in sys.modules:  # registered first: dataclasses look their module up while it loads
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_quick_run_writes_json_and_markdown(tmp_path):
    pytest.importorskip("skl2onnx")
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nintro\n\n<!-- benchmark:start -->\nold table\n<!-- benchmark:end -->\n\nreading\n")
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", str(out), "--doc", str(doc)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    env = res["environment"]
    assert env["cpu_count"] >= 1 and env["versions"]["onnxruntime"] and env["repeats"] >= 5
    cases = {(r["K"], r["d"], r["covariance_type"], r["source"]) for r in res["sizes"]}
    assert cases == {(k, d, ct, "GMM") for k, d in [(3, 4), (4, 8)] for ct in COV_TYPES} | {
        (3, 4, ct, "BGM") for ct in COV_TYPES}
    for r in res["sizes"]:
        for mode in ("wall", "cpu"):
            t = r["timing"][mode]
            assert {"skl2onnx", "gmmnet", "gmmnet_f64", r["default"]} <= set(t)
            assert all(v["median"] > 0 and v["ratio_q25"] <= v["ratio"] <= v["ratio_q75"] for v in t.values())
        assert "sklearn" in r["timing"]["wall"]
        # accuracy is measured, not timed: the default prototype and today's default meet the float32 targets here
        for key in (r["default"], "gmmnet"):
            assert r["errors"][key]["log_likelihood"] <= 2e-6
            assert r["errors"][key]["responsibilities"] <= 5e-6
            assert r["errors"][key]["label_mismatches"] == 0
        assert 0 <= r["overlap"]["max_resp_below_0.99"] <= 1
    assert {r["data"] for r in res["datasets"]} == {"iris", "iris_raw"}
    assert all(v["returncode"] == 0 for v in res["conversion"]["cli"].values())
    assert {"to-onnx (BLAS 1)", "to-gmm (BLAS 1)"} <= set(res["conversion"]["cli"])
    assert res["conversion"]["profile"]["from_onnx"]["top"]
    for ct in COV_TYPES:
        assert res["profiles"][ct]["default"]["threads_1"]["optimized_ops"]
        assert res["profiles"][ct]["default"]["threads_1"]["share_per_op_type"]
    text = doc.read_text()
    assert "old table" not in text and text.count("<!-- benchmark:start -->") == 1
    assert text.startswith("# Performance\n\nintro") and text.rstrip().endswith("reading")
    assert "**GMM full, K=3, d=4, N=2000**" in text


def test_write_doc_appends_markers_once(tmp_path):
    mod = _module("run")
    doc = tmp_path / "p.md"
    mod.write_doc(str(doc), "table one")
    mod.write_doc(str(doc), "table two")
    text = doc.read_text()
    assert text.count(mod.START) == 1 and "table two" in text and "table one" not in text


def test_repeats_below_five_refused():
    with pytest.raises(SystemExit):
        _module("run")._parse(["--repeats", "3"])


# ---------------------------------------------------------------------------
# the prototypes: every builder scores like the float64 reference, on any batch size


def _run(model, x):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(["label", "responsibilities", "log_likelihood"], {"X": np.asarray(x, np.float32)})


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_prototypes_match_float64(rng, covariance_type):
    P = _module("prototypes")
    mix = random_mixture(rng, 5, 20, covariance_type, spread=0.5)  # overlapping: responsibilities not 0/1
    x = sample(rng, mix, 700).astype(np.float32)
    xr = x.astype(np.float64)
    ll_ref, resp_ref = linalg.log_likelihood(mix, xr), linalg.responsibilities(mix, xr)
    assert np.mean(resp_ref.max(axis=1) < 0.99) > 0.2
    models = {label: P.build(label, mix) for label in P.CANDIDATES[covariance_type]}
    models["default"] = P.default_graph(mix)
    if covariance_type == "full":  # the other centring and chunk shapes (a chunk that does not divide N)
        models["component"] = P.full_triangular(mix, centering="component", chunk=100)
        models["groups"] = P.full_gemm(mix, groups=2, chunk=64, centering="none")
    if covariance_type == "tied":
        models["component"] = P.tied_offsets(mix, centering="component")
    for name, model in models.items():
        label, resp, ll = _run(model, x)
        assert rel_err(ll, ll_ref) <= 2e-6, name
        assert np.max(np.abs(resp - resp_ref)) <= 1e-5, name
        assert np.mean(label == resp_ref.argmax(axis=1)) > 0.99, name


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_default_prototype_dynamic_batch_and_far_rows(rng, covariance_type):
    P = _module("prototypes")
    mix = random_mixture(rng, 3, 6, covariance_type)
    model = P.default_graph(mix)
    for n in (0, 1, 513):
        label, resp, ll = _run(model, sample(rng, mix, n).reshape(n, 6))
        assert label.shape == (n,) and resp.shape == (n, 3) and ll.shape == (n,)
    far = np.array([[1e30, -1e30] * 3])
    label, resp, ll = _run(model, far)
    assert ll[0] == -np.inf and not np.any(np.isnan(resp))


def test_triangular_whitening_and_blocks():
    P = _module("prototypes")
    rng = np.random.default_rng(3)
    mix = random_mixture(rng, 4, 9, "full")
    p = P.derive(mix)
    R = p.triangular()
    assert np.allclose(np.tril(R, -1), 0)
    assert np.allclose(np.einsum("kji,kjl->kil", R, R), np.einsum("kji,kjl->kil", p.whitening, p.whitening))
    assert P.triangular_fraction(64, 1) == 1.0 and P.triangular_fraction(64, 4) == 0.625
    assert P.auto_blocks(16) == 1 and P.auto_blocks(64) == 4


def test_axis_choice_goes_float64_for_narrow_far_components():
    P = _module("prototypes")
    from gmmnet.ir import Component, Mixture

    wide = [Component(mean=np.full(3, m), eigenvectors=np.eye(3), eigenvalues=np.ones(3), weight=0.5) for m in (0, 1)]
    assert P.choose_axis(Mixture(n_features=3, covariance_type="diag", components=wide))[0] == "float32"
    narrow = [wide[0], Component(mean=np.full(3, 50.0), eigenvectors=np.eye(3), eigenvalues=np.full(3, 1e-4), weight=0.5)]
    assert P.choose_axis(Mixture(n_features=3, covariance_type="diag", components=narrow))[0] == "float64"
