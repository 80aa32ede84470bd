"""Smoke runs of the issue-7 examples (hybrid pipelines and the study), with small settings."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_pipeline_sklearn(tmp_path, capsys):
    res = load("pipeline_sklearn").main(["--out", str(tmp_path)])
    assert res["onnx"].is_file()
    assert res["prob_error"] <= 1e-5 and res["label_agreement"] == 1.0
    assert res["acc_features"] >= 0.85 and res["acc_plain"] >= 0.9
    assert "ColumnTransformer: 40 features, e.g. gmm__c0_pc0" in capsys.readouterr().out


def test_torch_finetune_onnx(tmp_path):
    pytest.importorskip("torch")
    res = load("torch_finetune_onnx").main(["--epochs", "30", "--out", str(tmp_path)])
    assert res["after"][0] < res["before"][0]  # maximum likelihood lowers the training NLL
    assert res["err64"] <= 1e-10 and res["err32"] <= 1e-5
    assert res["onnx"].is_file()


def test_init_recover_plot(tmp_path):
    pytest.importorskip("torch")
    png = tmp_path / "recover.png"
    res = load("init_recover_plot").main(["--steps", "60", "--out", str(png)])
    assert png.stat().st_size > 10_000
    assert res["mixture"].n_components == 3 and res["accuracy"] >= 0.9
    assert res["activation_error"] <= 1e-10


def test_study_quick(tmp_path, capsys):
    pytest.importorskip("torch")
    study = load("study")
    js = tmp_path / "study.json"
    assert study.main(["--quick", "--out", str(tmp_path), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "study_curves.png").is_file() and (tmp_path / "study_orthogonality.png").is_file()
    assert "### Convergence and accuracy" in printed and "| wine | 0.95 | gmm | abs |" in printed
    import json

    results = json.loads(js.read_text())
    assert len(results["runs"]) == 2 * 2 * 2 * 2  # seeds × inits × activations × penalty
    for r in results["runs"]:
        assert len(r["acc"]) == results["config"]["datasets"]["wine"]["epochs"] + 1
        assert all(0.0 <= a <= 1.0 for a in r["acc"])
        if r["init"] == "gmm":  # a GMM-initialized layer starts on the principal components
            assert r["cos_pc"][0] == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite([r["chance_cos"] for r in results["runs"]]).all()
    # redrawing from the JSON gives the same tables
    assert study.main(["--from-json", str(js), "--out", str(tmp_path)]) == 0


def test_pipeline_exactness_on_wine():
    pytest.importorskip("torch")
    ex = load("pipeline_exactness")
    x, y = ex.datasets()["wine, standardized"]
    t = ex.torch_vs_onnx(x)
    assert t["worst"]["float64"] <= 1e-10 and t["worst"]["float32"] <= 1e-5
    assert t["label_diff"] == {"float64": 0, "float32": 0}
    c = ex.classifier_vs_proba(x, y)
    assert c["worst"]["float64"] <= 1e-10 and c["worst"]["float32"] <= 1e-5
