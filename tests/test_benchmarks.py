"""Smoke run of benchmarks/run.py (tiny sizes) so the script does not rot.  No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "run.py")


def _module():
    spec = importlib.util.spec_from_file_location("gmmnet_benchmarks_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_writes_json_and_markdown(tmp_path):
    pytest.importorskip("skl2onnx")
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nintro\n\n<!-- benchmark:start -->\nold table\n<!-- benchmark:end -->\n\nreading\n")
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", str(out), "--doc", str(doc)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    env = res["environment"]
    assert env["cpu_count"] >= 1 and env["versions"]["onnxruntime"] and env["repeats"] >= 5
    assert {(r["K"], r["d"], r["covariance_type"]) for r in res["sizes"]} == {
        (k, d, ct) for k, d in [(3, 4), (4, 8)] for ct in ("full", "tied", "diag", "spherical")}
    for r in res["sizes"]:
        assert set(r["seconds"]) >= {"sklearn", "skl2onnx", "gmmnet", "gmmnet_auto", "numpy"}
        assert all(v > 0 for v in r["seconds"].values())
        assert r["compute_auto"] in ("float32", "float64")
        # accuracy is measured, not timed: the auto graph meets the float32 log-likelihood target
        assert r["log_likelihood_error"]["gmmnet_auto"] <= 2e-6
    assert [r["rank"] for r in res["ranks"]] == [1, 4, 8]
    assert res["profile"]["optimized_nodes"] and "Abs" in res["profile"]["graph_nodes"]
    text = doc.read_text()
    assert "old table" not in text and text.count("<!-- benchmark:start -->") == 1
    assert text.startswith("# Performance\n\nintro") and text.rstrip().endswith("reading")
    assert "| 3 | 4 | 2000 | full |" in text


def test_write_doc_appends_markers_once(tmp_path):
    mod = _module()
    doc = tmp_path / "p.md"
    mod.write_doc(str(doc), "table one")
    mod.write_doc(str(doc), "table two")
    text = doc.read_text()
    assert text.count(mod.START) == 1 and "table two" in text and "table one" not in text


def test_repeats_below_five_refused():
    with pytest.raises(SystemExit):
        _module()._parse(["--repeats", "3"])
