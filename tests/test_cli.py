"""The command line end to end: gmmnet.cli.main in-process, plus the console script in a subprocess.

Checks every subcommand's happy path, every error class's exit code, one-line errors without
tracebacks (unless --debug), --force, outputs that are inputs, interrupted writes, closed pipes,
and that docs/cli.md documents every command, option and exit code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sklearn.mixture import GaussianMixture

from gmmnet import cli, errors
from gmmnet import io as gio
from gmmnet.formats.onnx import run
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.ir import Mixture, json_schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "cli.md"


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(150, 3)) + 4 * rng.normal(size=3) for _ in range(3)])
    return GaussianMixture(3, covariance_type="full", random_state=0).fit(x), x


@pytest.fixture
def files(tmp_path, fitted):
    gm, x = fitted
    joblib.dump(gm, tmp_path / "gm.joblib")
    (tmp_path / "gm.pkl").write_bytes(pickle.dumps(gm))
    gio.save_estimator(gm, tmp_path / "gm.skops")
    gio.save_ir(from_sklearn(gm), tmp_path / "gm.json")
    np.save(tmp_path / "x.npy", x)
    return tmp_path


def call(capsys, *argv):
    """(exit code, stdout, stderr) of gmmnet.cli.main(argv)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str):
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("gmmnet: error: "), err
    assert "Traceback" not in err
    assert len([ln for ln in lines if ln.startswith("gmmnet: error")]) == 1


# ---------------------------------------------------------------------------
# happy paths


@pytest.mark.parametrize("suffix", [".joblib", ".pkl", ".skops", ".json"])
def test_to_onnx_from_every_model_format(capsys, files, fitted, suffix):
    gm, x = fitted
    code, out, err = call(capsys, "to-onnx", files / f"gm{suffix}", "--dtype", "float64")
    assert code == 0, err
    target = files / "gm.onnx"  # default output: MODEL with .onnx
    assert out.startswith(f"wrote {target}") and "3 components, 9 neurons" in out
    res = run(onnx.load(str(target)), x)
    np.testing.assert_allclose(res["log_likelihood"], gm.score_samples(x), rtol=1e-10)
    np.testing.assert_array_equal(res["label"], gm.predict(x))


def test_to_onnx_options(capsys, files, fitted):
    gm, x = fitted
    out_path = files / "relu.onnx"
    code, _, err = call(capsys, "to-onnx", files / "gm.json", "-o", out_path, "--activation", "relu", "--opset", 13,
                        "--outputs", "log_likelihood", "mahalanobis")
    assert code == 0, err
    model = onnx.load(str(out_path))
    assert [o.name for o in model.graph.output] == ["log_likelihood", "mahalanobis"]
    assert model.opset_import[0].version == 13 and "Relu" in {n.op_type for n in model.graph.node}
    xr = x.astype(np.float32).astype(float)
    ll = run(model, x)["log_likelihood"]
    assert np.max(np.abs(ll - gm.score_samples(xr)) / (1 + np.abs(gm.score_samples(xr)))) < 2e-6


def test_to_gmm_round_trip_json_and_skops(capsys, files, fitted):
    gm, x = fitted
    assert call(capsys, "to-onnx", files / "gm.skops", "-o", files / "m.onnx", "--dtype", "float64")[0] == 0
    code, out, err = call(capsys, "to-gmm", files / "m.onnx", "--report", files / "report.json")
    assert code == 0, err
    assert out.startswith(f"wrote {files / 'm.json'}: 3 components over 3 features")
    back = gio.load_ir(files / "m.json")
    np.testing.assert_allclose(np.sort(back.means, axis=0), np.sort(gm.means_, axis=0), rtol=1e-8)
    assert json.loads((files / "report.json").read_text())["exact"] is True
    code, _, err = call(capsys, "to-gmm", files / "m.onnx", "-o", files / "back.skops", "--data", files / "x.npy")
    assert code == 0, err
    est = gio.load_estimator(files / "back.skops")
    np.testing.assert_allclose(est.score_samples(x), gm.score_samples(x), rtol=1e-8)


def test_inspect_text_and_json(capsys, files):
    code, out, _ = call(capsys, "inspect", files / "gm.pkl")
    assert code == 0 and "3 components" in out and "condition" in out
    code, out, _ = call(capsys, "inspect", files / "gm.json", "--json")
    summary = json.loads(out)
    comps = summary["levels"][0]["components"]
    assert len(comps) == 3 and abs(sum(c["weight"] for c in comps) - 1) < 1e-12


def test_schema_stdout_and_file(capsys, files):
    code, out, _ = call(capsys, "schema")
    assert code == 0 and json.loads(out) == json_schema()
    assert json.loads(out) == json.loads((ROOT / "schemas" / "gmmnet-ir.schema.json").read_text())
    code, _, _ = call(capsys, "schema", "-o", files / "s.json")
    assert code == 0 and json.loads((files / "s.json").read_text()) == json_schema()
    code, _, err = call(capsys, "schema", "-o", files / "s.json")
    assert code == errors.OutputExistsError.exit_code and "--force" in err
    assert call(capsys, "schema", "-o", files / "s.json", "--force")[0] == 0


def test_eigenvalue_floor_option(capsys, files, fitted):
    gm, _ = fitted
    bad = GaussianMixture(3, random_state=0)
    for a in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_", "converged_",
              "n_iter_", "lower_bound_", "n_features_in_"):
        setattr(bad, a, getattr(gm, a))
    bad.precisions_cholesky_ = gm.precisions_cholesky_ * np.array([1.0, 1e200, 1.0])[:, None, None]
    joblib.dump(bad, files / "singular.joblib")
    code, _, err = call(capsys, "to-onnx", files / "singular.joblib")
    assert code == errors.InvalidModelError.exit_code and "singular covariance" in err and "--eigenvalue-floor" in err
    code, _, err = call(capsys, "to-onnx", files / "singular.joblib", "--eigenvalue-floor", "1e-6", "--dtype", "float64")
    assert code == 0 and "raised 3 eigenvalue(s)" in err
    assert call(capsys, "to-onnx", files / "gm.json", "-o", files / "c.onnx", "--max-condition", "2")[0] == 0
    code, _, err = call(capsys, "to-onnx", files / "gm.json", "-o", files / "d.onnx", "--eigenvalue-floor", "-1")
    assert code == errors.UsageError.exit_code and "eigenvalue floor" in err


# ---------------------------------------------------------------------------
# every exit code


def _ir_with_zero_eigenvalue(path: Path, fitted):
    doc = json.loads(from_sklearn(fitted[0]).model_dump_json())
    doc["components"][1]["eigenvalues"] = [1.0, 1.0, 0.0]
    path.write_text(json.dumps(doc))


def _unsupported_onnx(path: Path):
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["X"], ["Y"], name="squash")], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch canary",))


def _cases(files: Path, fitted):
    """(error class, argv) pairs, one per exit code gmmnet raises."""
    (files / "evil.pkl").write_bytes(pickle.dumps(_Evil()))
    (files / "unfit.pkl").write_bytes(pickle.dumps(GaussianMixture(2)))
    _ir_with_zero_eigenvalue(files / "zero.json", fitted)
    _unsupported_onnx(files / "sigmoid.onnx")
    np.save(files / "x2.npy", np.zeros((5, 2)))
    np.save(files / "x2f.npy", np.zeros((5, 2), np.float32))  # read whole as float64: a copy, estimated first
    assert cli.main(["to-onnx", str(files / "gm.json"), "-o", str(files / "m.onnx")]) == 0
    return [
        (errors.UsageError, ["to-gmm", files / "gm.json"]),
        (errors.UsageError, ["to-gmm", files / "m.onnx", "-o", files / "out.txt"]),
        (errors.InputFileError, ["to-onnx", files / "missing.pkl"]),
        (errors.InputFileError, ["inspect", files / "x.npy"]),
        (errors.UnsafeFileError, ["to-onnx", files / "evil.pkl"]),
        (errors.UnsupportedModelError, ["to-gmm", files / "sigmoid.onnx", "-o", files / "s.json"]),
        (errors.NotFittedError, ["to-onnx", files / "unfit.pkl"]),
        (errors.InvalidModelError, ["to-onnx", files / "zero.json"]),
        (errors.DataError, ["to-gmm", files / "m.onnx", "-o", files / "d.json", "--data", files / "x2.npy"]),
        (errors.OutputExistsError, ["to-onnx", files / "gm.json", "-o", files / "m.onnx"]),
        (errors.OutputExistsError, ["to-onnx", files / "gm.json", "-o", files / "gm.json", "--force"]),
        (errors.OutputFileError, ["to-onnx", files / "gm.json", "-o", files / "no" / "such" / "m.onnx"]),
        (errors.ResourceLimitError, ["--max-memory", "16", "to-gmm", files / "m.onnx", "-o", files / "r.json",
                                     "--data", files / "x2f.npy"]),
    ]


def test_every_error_class_has_its_exit_code(capsys, files, fitted, monkeypatch):
    monkeypatch.chdir(files)
    seen = set()
    for cls, argv in _cases(files, fitted):
        code, out, err = call(capsys, *argv)
        assert code == cls.exit_code, (cls.__name__, argv, err)
        assert_one_line_error(err)
        seen.add(cls)
    assert not (files / "canary").exists()
    raisable = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.GmmnetError)}
    assert seen == raisable - {errors.GmmnetError}  # the base class is tested below
    codes = [c.exit_code for c in raisable]
    assert len(set(codes)) == len(codes), "exit codes must be distinct"
    assert errors.EXIT_CODES == {c.__name__: c.exit_code for c in raisable}


def test_base_error_internal_error_interrupt_and_debug(capsys, files, monkeypatch):
    def boom(exc):
        def cmd(args):
            raise exc
        return cmd

    for exc, code in [(errors.GmmnetError("plain failure"), 1), (RuntimeError("bug"), 1), (KeyboardInterrupt(), 130)]:
        monkeypatch.setattr(cli, "cmd_schema", boom(exc))
        got, _, err = call(capsys, "schema")
        assert got == code and "Traceback" not in err
        assert err.startswith("gmmnet: interrupted" if code == 130 else "gmmnet: error: ")
        if isinstance(exc, RuntimeError):
            assert "internal error (RuntimeError: bug); rerun with --debug" in err
    monkeypatch.setattr(cli, "cmd_schema", boom(errors.InvalidModelError("bad")))
    with pytest.raises(errors.InvalidModelError):
        cli.main(["--debug", "schema"])


def test_argparse_errors_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["to-onnx"])
    assert exc.value.code == errors.UsageError.exit_code
    assert call(capsys)[0] == errors.UsageError.exit_code  # no command: help, exit 2


# ---------------------------------------------------------------------------
# outputs


def test_force_overwrites_and_symlinked_input_is_refused(capsys, files):
    assert call(capsys, "to-onnx", files / "gm.json")[0] == 0
    first = (files / "gm.onnx").read_bytes()
    code, _, err = call(capsys, "to-onnx", files / "gm.json", "--dtype", "float64")
    assert code == errors.OutputExistsError.exit_code and (files / "gm.onnx").read_bytes() == first
    assert call(capsys, "to-onnx", files / "gm.json", "--dtype", "float64", "--force")[0] == 0
    assert (files / "gm.onnx").read_bytes() != first
    os.symlink(files / "gm.json", files / "alias.onnx")  # output path is the input behind a symlink
    code, _, err = call(capsys, "to-onnx", files / "gm.json", "-o", files / "alias.onnx", "--force")
    assert code == errors.OutputExistsError.exit_code and "input file" in err
    assert gio.load_ir(files / "gm.json").n_components == 3  # untouched
    code, _, err = call(capsys, "to-onnx", files / "gm.json", "-o", files / "sub" / ".." / "gm.json", "--force")
    assert code in (errors.OutputExistsError.exit_code, errors.OutputFileError.exit_code)


def test_to_gmm_refuses_report_equal_to_output_and_data_as_output(capsys, files):
    assert call(capsys, "to-onnx", files / "gm.json", "-o", files / "m.onnx", "--dtype", "float64")[0] == 0
    code, _, err = call(capsys, "to-gmm", files / "m.onnx", "-o", files / "r.json", "--report", files / "r.json")
    assert code == errors.UsageError.exit_code and not (files / "r.json").exists()
    code, _, err = call(capsys, "to-gmm", files / "m.onnx", "-o", files / "x.npy.json", "--data", files / "x.npy",
                        "--report", files / "x.npy", "--force")
    assert code == errors.OutputExistsError.exit_code and "input file" in err
    assert np.load(files / "x.npy").shape == (450, 3)


def test_interrupted_write_leaves_no_file(capsys, files, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # what atomic_write calls before the rename
    code, _, err = call(capsys, "to-onnx", files / "gm.json", "-o", files / "partial.onnx")
    assert code == 130 and "interrupted" in err
    assert not any(p.name.startswith((".partial", "partial")) for p in files.iterdir())


def test_closed_stdout_pipe_is_quiet(capsys, files, monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise OSError("no descriptor")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = cli.main(["inspect", str(files / "gm.json")])
    monkeypatch.undo()
    out, err = capsys.readouterr()
    assert code == 141 and err == ""


def _console() -> list[str]:
    exe = Path(sys.executable).with_name("gmmnet")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gmmnet.cli"]


def test_console_script_subprocess(files):
    big = Mixture.model_validate_json((files / "gm.json").read_text())
    comp = big.components[0]
    many = Mixture(n_features=3, components=[comp.model_copy(update={"weight": 1 / 3000})] * 3000)
    gio.save_ir(many, files / "many.json")
    # error path: exit code and one line, no traceback
    r = subprocess.run([*_console(), "to-onnx", str(files / "missing.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == errors.InputFileError.exit_code and r.stdout == ""
    assert_one_line_error(r.stderr)
    # a reader that stops early (`gmmnet inspect many.json | head -1`): no BrokenPipe traceback
    p = subprocess.Popen([*_console(), "inspect", str(files / "many.json")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    _, err = p.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert p.returncode == 141  # the output (~200 kB) exceeds any pipe buffer, so the write must fail


# ---------------------------------------------------------------------------
# docs/cli.md


def test_docs_exit_code_table_matches_errors():
    text = DOCS.read_text()
    table = text.split("<!-- exit-codes:start -->\n", 1)[1].split("<!-- exit-codes:end -->", 1)[0]
    assert table == errors.exit_code_table(), "regenerate with gmmnet.errors.exit_code_table()"
    rows = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*`(\w+)`", table, flags=re.M))
    assert {name: int(code) for code, name in rows.items()} == errors.EXIT_CODES
    # --help lists the same codes
    assert all(f"{code:<3} {name}" in cli.EPILOG_EXIT_CODES for name, code in errors.EXIT_CODES.items())
    assert all(f"  {code} " in cli.EPILOG_EXIT_CODES for code in errors.OTHER_EXIT_CODES)


def test_docs_walkthrough_runs(capsys, tmp_path, monkeypatch):
    """Every `$ ` line of the walk-through block; lines after a command are its expected error."""
    import shlex

    block = DOCS.read_text().split("## A walk-through", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    monkeypatch.chdir(tmp_path)
    assert len(steps) >= 8
    for command, expected in steps:
        argv = shlex.split(command)
        if argv[0] == "python":
            r = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=120)
            code, err = r.returncode, r.stderr
        else:
            assert argv[0] == "gmmnet"
            code, _, err = call(capsys, *argv[1:])
        if expected:
            assert code != 0 and all(e in err for e in expected), (command, code, err)
        else:
            assert code == 0, (command, err)
    assert {"wine.onnx", "wine64.onnx", "back.json", "back-report.json", "ir.schema.json"} <= {
        p.name for p in tmp_path.iterdir()}


def test_docs_cover_every_command_and_option():
    text = DOCS.read_text()
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert f"## `gmmnet {name}`" in text, f"docs/cli.md has no section for {name}"
        section = text.split(f"## `gmmnet {name}`", 1)[1].split("\n## ", 1)[0]
        for action in p._actions:
            for opt in action.option_strings:
                if opt in ("-h", "--help"):
                    continue
                assert f"`{opt}" in section, f"docs/cli.md: gmmnet {name} does not document {opt}"


def test_help_texts(capsys):
    for argv in (["--help"], ["to-onnx", "--help"], ["to-gmm", "--help"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and "--eigenvalue-floor" in out and "OutputFileError" in out


def test_to_onnx_refuses_a_model_float32_cannot_hold(capsys, tmp_path):
    from mixtures import random_mixture

    gio.save_ir(random_mixture(np.random.default_rng(0), 2, 3, scale=1e-100), tmp_path / "tiny.json")
    code, _, err = call(capsys, "to-onnx", tmp_path / "tiny.json", "--compute", "float32")
    assert code == errors.InvalidModelError.exit_code and "outside the float32 range" in err
    assert not (tmp_path / "tiny.onnx").exists()
    # the default (auto) sees the range and computes in float64 behind the float32 interface
    code, _, err = call(capsys, "to-onnx", tmp_path / "tiny.json")
    assert code == 0, err
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "tiny.onnx")).metadata_props}
    assert meta.get("compute") == "float64"
    for flags in (["--dtype", "float64"], ["--compute", "float64"], ["--eigenvalue-floor", "1e-60"]):
        code, _, err = call(capsys, "to-onnx", tmp_path / "tiny.json", *flags, "--force")
        assert code == 0, (flags, err)


def test_to_onnx_routes_a_hierarchy_estimator(capsys, tmp_path, fitted):
    from gmmnet.hierarchy import HierarchicalGaussianMixture

    _, x = fitted
    h = HierarchicalGaussianMixture(levels="3:full,2:diag:r=2", random_state=0).fit(x)
    gio.save_estimator(h, tmp_path / "h.skops")
    code, out, err = call(capsys, "to-onnx", tmp_path / "h.skops", "--dtype", "float64")
    assert code == 0, err
    assert "(2 levels)" in out
    ll = run(onnx.load(str(tmp_path / "h.onnx")), x)["log_likelihood"]
    np.testing.assert_allclose(ll, h.score_samples(x), rtol=1e-8)
    code, _, err = call(capsys, "to-onnx", tmp_path / "h.skops", "-o", tmp_path / "f.onnx", "--eigenvalue-floor", "10")
    assert code == 0 and "raised" in err


def test_to_onnx_paper_variants(capsys, tmp_path, fitted):
    """--activation shifted_relu (paper eq. 10) and --intensity heads reach the deep exporter."""
    est, x = fitted
    gio.save_estimator(est, tmp_path / "g.skops")
    out = tmp_path / "s.onnx"
    code, _, err = call(capsys, "to-onnx", tmp_path / "g.skops", "-o", out, "--activation", "shifted_relu",
                        "--delta", "50", "--dtype", "float64")
    assert code == 0, err
    model = onnx.load(str(out))
    assert "Relu" in {n.op_type for n in model.graph.node}
    assert any("shifted" in p.value for p in model.metadata_props)
    # with δ far beyond every pre-activation, the shifted network is the exact model
    np.testing.assert_allclose(run(model, x)["log_likelihood"], est.score_samples(x), rtol=1e-8)
    code, _, err = call(capsys, "to-onnx", tmp_path / "g.skops", "-o", tmp_path / "i.onnx", "--intensity", "gauss",
                        "--outputs", "distances", "--dtype", "float64")
    assert code == 0, err
    got = run(onnx.load(str(tmp_path / "i.onnx")), x)["distances"]
    from gmmnet.formats.onnx import to_onnx

    plain = run(to_onnx(from_sklearn(est), dtype="float64", outputs=("distances",)), x)["distances"]
    np.testing.assert_allclose(got, np.exp(-plain**2), rtol=1e-10, atol=1e-300)
