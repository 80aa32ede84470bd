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
from gmmnet.formats.onnx import run, to_onnx
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
        (errors.OutputExistsError, ["to-onnx", files / "m.onnx", "-o", files / "m.onnx", "--force"]),
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
    code, out, err = call(capsys, "to-onnx")
    assert code == errors.UsageError.exit_code and out == ""
    assert err == "gmmnet: error: the following arguments are required: model; see gmmnet to-onnx --help\n"
    code, _, err = call(capsys)  # no command
    assert code == errors.UsageError.exit_code
    assert err.startswith("gmmnet: error: no command given; choose from demo, ") and err.endswith("see gmmnet --help\n")


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
    code, _, err = call(capsys, "to-onnx", files / "gm.onnx", "-o", files / "sub" / ".." / "gm.onnx", "--force")
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


# ---------------------------------------------------------------------------
# strict arguments (issue 17, "Command line")


def _parsers():
    parser = cli.build_parser()
    return {"gmmnet": parser, **cli._subparsers(parser)}


def test_no_parser_guesses_abbreviations():
    assert all(p.allow_abbrev is False for p in _parsers().values())


@pytest.mark.parametrize("argv, message", [
    (["to-onnx", "gm.json", "--dty", "float64"], "unrecognized option --dty (did you mean --dtype?); see gmmnet to-onnx --help"),
    (["to-onnx", "gm.json", "--dty=float64"], "unrecognized option --dty (did you mean --dtype?); see gmmnet to-onnx --help"),
    (["to-onx", "gm.json"], "unknown command 'to-onx' (did you mean to-onnx?); see gmmnet --help"),
    (["to-onnx", "gm.json", "--dtype", "float16"],
     "argument --dtype: invalid choice: 'float16' (did you mean float64?); choose from float32, float64; "
     "see gmmnet to-onnx --help"),
    (["--dbug", "schema"], "unrecognized option --dbug (did you mean --debug?); see gmmnet schema --help"),
    (["inspect", "gm.json", "other.json"], "unexpected argument 'other.json'; see gmmnet inspect --help"),
    (["plot", "gm.json"], "the following arguments are required: -o/--output; see gmmnet plot --help"),
    (["to-gmm", "m.onnx", "--wide", "--json"], "argument --json: not allowed with argument --wide; see gmmnet to-gmm --help"),
])
def test_usage_errors_are_one_line_with_a_did_you_mean(capsys, files, monkeypatch, argv, message):
    monkeypatch.chdir(files)
    code, out, err = call(capsys, *argv)
    assert code == errors.UsageError.exit_code and out == ""
    assert err == f"gmmnet: error: {message}\n"
    assert not (files / "gm.onnx").exists()  # --dty was not taken for --dtype: nothing ran


@pytest.mark.parametrize("argv, allowed", [
    (["to-onnx", "missing.pkl", "-o", "out.txt"], ".onnx"),
    (["to-gmm", "missing.onnx", "-o", "out.onnx"], ".json, .skops, .pkl, .pickle or .joblib"),
    (["fit", "missing.npy", "--levels", "2", "-o", "out.json"], ".skops, .pkl, .pickle or .joblib"),
    (["plot", "missing.json", "-o", "out.jpg"], ".png, .svg or .pdf"),
    (["score", "missing.onnx", "missing.npy", "-o", "out.txt"], ".npy, .npz or .csv"),
    (["schema", "-o", "out.yaml"], ".json"),
])
def test_output_suffix_is_checked_before_any_work(capsys, tmp_path, monkeypatch, argv, allowed):
    """The inputs do not exist: the suffix error (exit 2) comes first, so it is checked before loading."""
    monkeypatch.chdir(tmp_path)
    out = argv[argv.index("-o") + 1]
    code, _, err = call(capsys, *argv)
    assert code == errors.UsageError.exit_code
    assert err == f"gmmnet: error: {out}: unknown output suffix {Path(out).suffix!r}; use {allowed}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["demo", "--components", "0"], "--components must be within 1..178 (the wine data has 178 rows), got 0"),
    (["demo", "--components", "200"], "--components must be within 1..178 (the wine data has 178 rows), got 200"),
    (["demo", "--dataset", "iris", "--components", "151"], "--components must be within 1..150 (the iris data has 150 rows)"),
    (["demo", "--seed", "-1"], "--seed must be within 0..4294967295, got -1"),
    (["fit", "x.npy", "--levels", "2", "-o", "f.skops", "--max-iter", "0"], "--max-iter must be >= 1, got 0"),
    (["fit", "x.npy", "--levels", "2", "-o", "f.skops", "--reg-covar=-1e-6"], "--reg-covar must be >= 0.0"),
])
def test_argument_ranges_are_one_line_usage_errors(capsys, files, monkeypatch, argv, message):
    monkeypatch.chdir(files)
    code, _, err = call(capsys, *argv)
    assert code == errors.UsageError.exit_code, err
    assert err.startswith(f"gmmnet: error: {message}") and err.count("\n") == 1 and "internal error" not in err


def test_fit_rank_is_checked_against_each_level_input(capsys, tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 4))
    np.save(tmp_path / "x4.npy", x)
    code, _, err = call(capsys, "fit", tmp_path / "x4.npy", "--levels", "3:full:r=9", "-o", tmp_path / "a.skops")
    assert code == errors.UsageError.exit_code and not (tmp_path / "a.skops").exists()
    assert err == ("gmmnet: error: --levels 3:full:r=9: level 0 keeps r=9 directions per component but its input has "
                   "only 4 features (the data's features); use r <= 4\n")
    # level 1's input is level 0's neurons: 2 components x r=2
    code, _, err = call(capsys, "fit", tmp_path / "x4.npy", "--levels", "2:full:r=2,2:diag:r=5", "-o", tmp_path / "b.skops")
    assert code == errors.UsageError.exit_code and "level 1 keeps r=5" in err and "use r <= 4" in err
    code, out, err = call(capsys, "fit", tmp_path / "x4.npy", "--levels", "2:full:r=2,2:diag:r=4", "--seed", "0",
                          "-o", tmp_path / "c.skops")
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'c.skops'}: HierarchicalGaussianMixture")


def test_fit_on_data_with_nan_names_the_rows(capsys, tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3))
    x[[2, 6]] = np.nan
    x[9, 1] = np.inf
    np.save(tmp_path / "bad.npy", x)
    code, _, err = call(capsys, "fit", tmp_path / "bad.npy", "--levels", "2", "-o", tmp_path / "m.skops")
    assert code == errors.DataError.exit_code and not (tmp_path / "m.skops").exists()
    assert err == (f"gmmnet: error: {tmp_path / 'bad.npy'}: 3 rows hold NaN or infinity (rows 3, 7, 10, counting "
                   "from 1); fit needs finite numbers: drop or impute those rows\n")


def _headless(path: Path, fitted):
    """A network of 9 neurons on 3 features with no mixture head: its grouping cannot be read."""
    model = to_onnx(from_sklearn(fitted[0]), outputs=("distances",), dtype="float64")
    del model.metadata_props[:]
    onnx.save(model, str(path))


@pytest.mark.parametrize("command", ["to-onnx", "inspect", "plot", "to-gmm"])
def test_a_network_without_grouping_gets_the_next_step_of_each_command(capsys, files, fitted, command):
    _headless(files / "headless.onnx", fitted)
    argv = [command, files / "headless.onnx"] + (["-o", files / "h.png"] if command == "plot" else [])
    code, _, err = call(capsys, *argv)
    assert code == errors.UsageError.exit_code and err.count("\n") == 1
    assert err.startswith(f"gmmnet: error: {files / 'headless.onnx'}: cannot tell which of the 9 neurons belong together; ")
    if command == "to-gmm":
        assert "pass --groups SIZE" in err
    else:  # these commands have no --groups: the next step is to-gmm's
        assert f"run gmmnet to-gmm {files / 'headless.onnx'} --groups SIZE" in err
        assert "pass groups" not in err
    if command == "to-onnx":
        assert err.endswith("first, then gmmnet to-onnx headless.json\n")


# ---------------------------------------------------------------------------
# to-gmm's table: compact by default, --wide, --json (issue 17)


@pytest.fixture
def network(files, capsys):
    assert cli.main(["to-onnx", str(files / "gm.json"), "-o", str(files / "n.onnx"), "--dtype", "float64"]) == 0
    capsys.readouterr()
    return files / "n.onnx"


class _Terminal:
    """A stand-in for a terminal: a text stream that says it is a tty."""

    def __init__(self):
        import io

        self.buffer = io.StringIO()

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass

    def isatty(self):
        return True

    def text(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.buffer.getvalue())


def test_to_gmm_default_table_is_compact(capsys, files, network):
    code, out, err = call(capsys, "to-gmm", network, "--data", files / "x.npy")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"wrote {files / 'n.json'}: 3 components over 3 features"
    assert lines[1].split() == ["component", "neurons", "R²", "hyperplane", "σ", "whitening", "err", "status"]
    assert [ln.split()[-1] for ln in lines[3:6]] == ["exact"] * 3
    assert max(map(len, lines[1:])) <= 80 and "\x1b" not in out  # plain text when stdout is not a terminal
    assert "--wide" in lines[-1]


def test_to_gmm_compact_table_counts_what_it_leaves_out(capsys, tmp_path):
    """Many components: the compact table shows cli.COMPACT_ROWS of them and counts the rest."""
    rng = np.random.default_rng(0)
    K = cli.COMPACT_ROWS + 5
    x = np.concatenate([rng.normal(3 * k, 1.0, size=(20, 2)) for k in range(K)])
    gmm = GaussianMixture(K, covariance_type="diag", random_state=0).fit(x)
    path = tmp_path / "many.onnx"
    onnx.save(to_onnx(from_sklearn(gmm), dtype="float64"), str(path))
    code, out, err = call(capsys, "to-gmm", path, "-o", tmp_path / "many.json")
    assert code == 0, err
    lines = out.splitlines()
    rows = [ln for ln in lines[3:] if ln.split() and ln.split()[0].isdigit()]
    assert len(rows) == cli.COMPACT_ROWS and all(r.split()[-1] == "exact" for r in rows)
    assert "... 5 more components (5 exact) not shown" in lines
    code, out, _ = call(capsys, "to-gmm", path, "-o", tmp_path / "many2.json", "--wide")
    assert code == 0 and len([ln for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()]) == K


def _drifted(network: Path, path: Path) -> Path:
    """The network with component 1's neurons scaled by 2 and 0.5, as if training had moved them."""
    import onnx.numpy_helper as nh

    model = onnx.load(str(network))
    for init in model.graph.initializer:
        if init.name == "layer0/c1/W":  # full, Abs: component 1's 3 neurons over 3 features, one Gemm
            init.CopyFrom(nh.from_array(nh.to_array(init) * np.array([2, 0.5, 1.0])[:, None], init.name))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    return path


def test_to_gmm_tables_on_a_terminal_and_json(capsys, files, network, monkeypatch):
    drifted = _drifted(network, files / "drifted.onnx")
    data = files / "x.npy"
    # the compact table fits an 80-column terminal: the long reasons fold, the numbers stay whole
    term = _Terminal()
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "stdout", term)
    assert cli.main(["to-gmm", str(drifted), "--data", str(data), "-o", str(files / "t.json")]) == 0
    monkeypatch.undo()
    text = term.text()
    assert "LOW CONFIDENCE" in text and max(len(ln) for ln in text.splitlines()[1:]) <= 80
    code, plain, _ = call(capsys, "to-gmm", drifted, "--data", data, "-o", files / "p.json")
    low = next(ln for ln in plain.splitlines() if "LOW CONFIDENCE" in ln)  # off a terminal: one line per row
    assert low.startswith("1 ") and len(low) > 80
    # --wide: every key of the report, one line per component even on a terminal
    code, out, _ = call(capsys, "to-gmm", network, "--data", data, "--wide", "-o", files / "w.json")
    header = out.splitlines()[1].split()
    assert header[0] == "component" and {"whitening_allowance", "faithfulness_r2_min", "low_confidence"} <= set(header)
    assert len(out.splitlines()) == 1 + 2 + 3  # wrote, header, rule, three components
    # --json: stdout is the report alone; the status line goes to stderr
    code, out, err = call(capsys, "to-gmm", network, "--data", data, "--json", "-o", files / "j.json")
    assert code == 0
    report = json.loads(out)
    assert report["exact"] is True and len(report["components"]) == 3
    assert err.startswith(f"wrote {files / 'j.json'}")


def test_tables_are_plain_text_off_a_terminal_and_styled_on_one(capsys, files, monkeypatch):
    code, out, _ = call(capsys, "inspect", files / "gm.json")
    assert code == 0 and "\x1b" not in out
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    assert cli.main(["inspect", str(files / "gm.json")]) == 0
    monkeypatch.undo()
    assert "\x1b[1m" in term.buffer.getvalue()  # the header is bold on a terminal
    assert term.text().splitlines()[3:6] == out.splitlines()[3:6]  # same rows
    # the string form, for callers that print a table themselves
    assert cli._table([["a", "1.5"], ["bb", "22"]], ["mixture", "ll"]) == (
        "mixture   ll\n-------- ---\na        1.5\nbb        22")


def test_fit_progress_plain_off_a_terminal_and_a_bar_on_one(capsys, files, monkeypatch):
    code, _, err = call(capsys, "fit", files / "x.npy", "--levels", "2:full,2:diag", "--seed", "0",
                        "-o", files / "h.skops")
    assert code == 0
    lines = err.splitlines()
    assert lines[0] == "gmmnet fit: level 1/2: 2 full components on 3 features ..."
    assert lines[1].startswith("gmmnet fit: level 1/2: 2 full components on 3 features done in ")
    assert len(lines) == 4 and "\x1b" not in err
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli.main(["fit", str(files / "x.npy"), "--levels", "2:full,2:diag", "--seed", "0", "-o",
                     str(files / "h2.skops")]) == 0
    monkeypatch.undo()
    text = term.text()
    assert "level 2/2: 2 diag components on 6 features done in" in text
    assert "gmmnet fit: level 1/2: 2 full components on 3 features ...\n" not in text  # the bar, not the log lines


def test_import_cli_stays_light():
    """`gmmnet --help` imports no heavy library: they load when a command needs them."""
    code = ("import sys, gmmnet.cli; heavy = ('rich', 'onnx', 'onnxruntime', 'sklearn', 'matplotlib', 'torch', 'scipy'); "
            "print([m for m in heavy if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


# ---------------------------------------------------------------------------
# errors: one line on stderr naming the file (issue 13, item 10)


def _error_cases(files: Path, fitted):
    gm, x = fitted
    nan_means = GaussianMixture(3, random_state=0)
    for a in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_", "converged_",
              "n_iter_", "lower_bound_", "n_features_in_"):
        setattr(nan_means, a, getattr(gm, a))
    nan_means.means_ = gm.means_.copy()
    nan_means.means_[1, 2] = np.nan
    joblib.dump(nan_means, files / "nanmean.joblib")
    bad = x.copy()
    bad[4] = np.nan
    np.save(files / "nan.npy", bad)
    graph = helper.make_graph([helper.make_node("Mystery", ["X"], ["Y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
              str(files / "noload.onnx"))
    _ir_with_zero_eigenvalue(files / "zero.json", fitted)
    assert cli.main(["to-onnx", str(files / "gm.json"), "-o", str(files / "m.onnx"), "--dtype", "float64"]) == 0
    return [
        ("nanmean.joblib", ["to-onnx", files / "nanmean.joblib"]),
        ("nanmean.joblib", ["plot", files / "nanmean.joblib", "-o", files / "p.png"]),
        ("nan.npy", ["to-gmm", files / "m.onnx", "--data", files / "nan.npy", "-o", files / "b.json"]),
        ("nan.npy", ["fit", files / "nan.npy", "--levels", "2", "-o", files / "f.skops"]),
        ("noload.onnx", ["score", files / "noload.onnx", files / "x.npy", "-o", files / "s.npy"]),
        ("noload.onnx", ["inspect", files / "noload.onnx"]),
        ("zero.json", ["to-onnx", files / "zero.json"]),
    ]


def test_every_error_is_one_line_naming_its_file(capfd, files, fitted):
    """capfd sees the process's file descriptors: onnxruntime's own log lines would show here too."""
    for name, argv in _error_cases(files, fitted):
        capfd.readouterr()
        code = cli.main([str(a) for a in argv])
        out, err = capfd.readouterr()
        assert code not in (0, 1), (argv, err)
        assert err.count("\n") == 1 and err.startswith("gmmnet: error: ") and name in err, (argv, err)
        assert "Warning" not in err and "internal error" not in err


def test_warnings_of_a_successful_command_are_one_line_each(capfd, tmp_path):
    np.save(tmp_path / "r.npy", np.random.default_rng(0).normal(size=(200, 5)))
    code = cli.main(["fit", str(tmp_path / "r.npy"), "--levels", "3", "--max-iter", "1", "--seed", "0",
                     "-o", str(tmp_path / "one.skops")])
    _, err = capfd.readouterr()
    assert code == 0
    warning = [ln for ln in err.splitlines() if not ln.startswith("gmmnet fit: ")]
    assert len(warning) == 1 and warning[0].startswith("gmmnet: warning: ") and "did not converge" in warning[0]


def test_every_option_in_help_is_in_the_docs():
    """docs/cli.md and --help agree: each option a command's --help prints is in that command's section
    of docs/cli.md, and the generated reference page is today's --help (docs/gen_cli.py)."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_cli
    finally:
        sys.path.pop(0)
    text = DOCS.read_text()
    assert (ROOT / "docs" / "reference" / "cli.md").read_text() == gen_cli.render(), "run python docs/gen_cli.py"
    for name, parser in _parsers().items():
        shown = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", parser.format_help())) - {"-h", "--help"}
        section = text if name == "gmmnet" else text.split(f"## `gmmnet {name}`", 1)[1].split("\n## ", 1)[0]
        if name == "gmmnet":
            section = text.split("## A walk-through", 1)[0] + text.split("## Common behaviour", 1)[1]
        missing = sorted(o for o in shown if f"`{o}" not in section and f" {o}" not in section)
        assert not missing, f"docs/cli.md does not mention {missing} of gmmnet {name}"


def test_api_page_lists_exactly_the_public_api():
    import gmmnet

    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    table = page.split("<!-- public-api:start -->", 1)[1].split("<!-- public-api:end -->", 1)[0]
    listed = re.findall(r"^\| `gmmnet\.(\w+)` \|", table, flags=re.M)
    assert sorted(listed) == sorted(gmmnet.__all__) and len(listed) == len(set(listed))
    for name in gmmnet.__all__:
        obj = getattr(gmmnet, name)
        if callable(obj) and not isinstance(obj, type):
            assert "Parameters" in (obj.__doc__ or "") or name == "to_onnx", f"gmmnet.{name} needs a numpydoc docstring"


def test_top_level_round_trip(fitted):
    import gmmnet
    from gmmnet.hierarchy import HierarchicalGaussianMixture

    gm, x = fitted
    model = gmmnet.to_onnx(gmmnet.from_sklearn(gm), dtype="float64")
    out = gmmnet.run(model, x, outputs=["log_likelihood"])
    np.testing.assert_allclose(out["log_likelihood"], gm.score_samples(x), rtol=1e-10)
    back, report = gmmnet.from_onnx(model.SerializeToString())
    assert report["exact"] and isinstance(back, gmmnet.Mixture)
    np.testing.assert_allclose(gmmnet.to_sklearn(back).score_samples(x), gm.score_samples(x), rtol=1e-8)
    h = HierarchicalGaussianMixture("3:full,2:diag", random_state=0).fit(x)
    deep, _ = gmmnet.from_onnx(gmmnet.to_onnx(h.to_ir(), dtype="float64"))  # a deep network: a Hierarchy again
    assert isinstance(deep, gmmnet.Hierarchy)
    np.testing.assert_allclose(gmmnet.to_sklearn(deep).score_samples(x), h.score_samples(x), rtol=1e-8)
