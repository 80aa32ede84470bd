"""Batch scoring (gmmnet.score and `gmmnet score`): chunking, readers, writers, bad data."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from gmmnet import from_sklearn
from gmmnet.cli import main
from gmmnet.errors import (
    DataError,
    InputFileError,
    InvalidModelError,
    OutputExistsError,
    UnsafeFileError,
    UnsupportedModelError,
    UsageError,
)
from gmmnet.formats.onnx import to_onnx
from gmmnet.score import ALIGN, Scorer, _ProgressBar, iter_chunks, iter_scores, open_data, score, score_to_file

ALL = ("label", "responsibilities", "log_likelihood", "distances", "mahalanobis")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(loc=c, size=(400, 6)) for c in (-3.0, 0.0, 3.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(5, covariance_type="full", random_state=0).fit(X)
    mix = from_sklearn(gm)
    return {
        "gm": gm,
        "X": X,
        "m32": to_onnx(mix, dtype="float32", outputs=ALL),
        "m64": to_onnx(mix, dtype="float64"),
        "diag": to_onnx(from_sklearn(GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)), dtype="float32"),
    }


@pytest.fixture()
def files(tmp_path, fitted):
    import onnx

    X = fitted["X"].copy()
    X[7, 2] = np.nan
    X[11] = np.inf
    X[12, 0] = -np.inf
    model = tmp_path / "m.onnx"
    onnx.save(fitted["m32"], model)
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", fmt="%.17g", header="a,b,c,d,e,f", comments="")
    return {"dir": tmp_path, "model": str(model), "X": X, "npy": str(tmp_path / "x.npy"), "csv": str(tmp_path / "x.csv")}


def same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


# ---------------------------------------------------------------------------
# numbers


def test_float64_scores_match_sklearn(fitted):
    gm, X = fitted["gm"], fitted["X"]
    out = score(fitted["m64"], X, batch_size=100)
    np.testing.assert_allclose(out["log_likelihood"], gm.score_samples(X), rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["responsibilities"], gm.predict_proba(X), rtol=0, atol=1e-10)
    assert np.array_equal(out["label"], gm.predict(X))


def test_float32_scores_match_onnxruntime_on_the_whole_array(fitted):
    from gmmnet.formats.onnx import run

    X = fitted["X"]
    direct = run(fitted["m32"], X)
    out = score(fitted["m32"], X, batch_size=64)
    for k in ALL:
        np.testing.assert_allclose(out[k], direct[k], rtol=1e-5, atol=1e-5)
    assert np.array_equal(out["label"], direct["label"])


@pytest.mark.parametrize("model", ["m32", "m64", "diag"])
def test_results_do_not_depend_on_chunking_or_threads(fitted, model):
    X = fitted["X"][:1000]
    ref = score(fitted[model], X, batch_size=len(X), threads=1)
    for bs, threads in [(1, 1), (7, 2), (64, 1), (100, 2), (333, 3)]:
        out = score(fitted[model], X, batch_size=bs, threads=threads)
        for k in ref:
            assert same(out[k], ref[k]), (k, bs, threads)
    # a part scored on its own, told where it starts, equals the same rows of the whole
    part = score(fitted[model], X[123:501], offset=123, threads=1)
    for k in ref:
        assert same(part[k], ref[k][123:501]), k


def test_nonfinite_rows_give_nan_and_leave_the_rest_intact(fitted):
    X = fitted["X"][:300].copy()
    clean = score(fitted["m32"], X)
    X[[3, 64, 299]] = [[np.nan] * 6, [np.inf] * 6, [-np.inf] + [0.0] * 5]
    X[100, 5] = np.nan
    out = score(fitted["m32"], X, batch_size=50)
    bad = np.zeros(len(X), bool)
    bad[[3, 64, 100, 299]] = True
    assert np.array_equal(out["label"][bad], [-1] * 4)
    assert out["label"].dtype == np.int64
    for k in ("responsibilities", "log_likelihood", "distances", "mahalanobis"):
        assert np.isnan(out[k][bad]).all(), k
        assert same(out[k][~bad], clean[k][~bad]), k
    assert same(out["label"][~bad], clean["label"][~bad])


def test_empty_array_gives_empty_outputs(fitted):
    out = score(fitted["m32"], np.zeros((0, 6)))
    assert out["label"].shape == (0,) and out["label"].dtype == np.int64
    assert out["responsibilities"].shape == (0, 5) and out["responsibilities"].dtype == np.float32
    assert out["distances"].shape == (0, 30)


def test_wrong_number_of_columns_names_expected_and_got(fitted, files, tmp_path):
    with pytest.raises(DataError, match=r"has 5 features.*expects 6"):
        score(fitted["m32"], fitted["X"][:, :5])
    np.save(tmp_path / "x5.npy", fitted["X"][:, :5])
    np.savetxt(tmp_path / "x7.csv", np.ones((3, 7)), delimiter=",")
    with pytest.raises(DataError, match=r"x5\.npy has 5 features.*expects 6"):
        score(fitted["m32"], str(tmp_path / "x5.npy"))
    with pytest.raises(DataError, match=r"x7\.csv has 7 features.*expects 6"):
        score_to_file(fitted["m32"], str(tmp_path / "x7.csv"), str(tmp_path / "o.npy"))
    assert not (tmp_path / "o.npy").exists()


def test_unknown_output_and_bad_batch_size(fitted):
    with pytest.raises(UsageError, match="no output 'nope'"):
        Scorer(fitted["m32"], ["nope"])
    with pytest.raises(UsageError, match="batch size"):
        score(fitted["m32"], fitted["X"], batch_size=0)


def test_default_batch_size_follows_the_layer_width(fitted):
    s = Scorer(fitted["m32"])
    bs = s.default_batch_size()
    assert bs % ALIGN == 0 and 128 <= bs <= 65536
    # a model with 4x the neurons gets about 4x fewer rows (until the bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(20, random_state=0, max_iter=2).fit(fitted["X"][:200])
    wide = Scorer(to_onnx(from_sklearn(gm), dtype="float32"))
    assert wide.default_batch_size() < bs


# ---------------------------------------------------------------------------
# readers


def test_readers_agree_bit_for_bit(files, fitted):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pq_path = str(files["dir"] / "x.parquet")
    pd.DataFrame(files["X"], columns=list("abcdef")).to_parquet(pq_path, row_group_size=500)
    ref = score(files["model"], files["X"])
    for path in (files["npy"], files["csv"], pq_path):
        out = score(files["model"], path, batch_size=257)
        for k in ref:
            assert same(out[k], ref[k]), (path, k)


def test_iter_chunks_and_iter_scores(files):
    sizes = [len(c) for c in iter_chunks(files["npy"], 500)]
    assert sizes == [500, 500, 200]
    assert all(c.dtype == np.float64 for c in iter_chunks(files["csv"], 500))
    outs = list(iter_scores(files["model"], files["csv"], batch_size=256, outputs=["log_likelihood"]))
    assert [len(o["log_likelihood"]) for o in outs] == [256] * 4 + [176]
    assert all(list(o) == ["log_likelihood"] for o in outs)


def test_npy_fortran_order_and_1d(fitted, tmp_path):
    X = fitted["X"][:200]
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    ref = score(fitted["m32"], X)
    assert same(score(fitted["m32"], str(tmp_path / "f.npy"), batch_size=64)["log_likelihood"], ref["log_likelihood"])


def test_csv_header_comments_blank_lines_and_quotes(fitted, tmp_path):
    X = fitted["X"][:5]
    lines = ["# a comment", "a,b,c,d,e,f", ""]
    lines += [",".join(repr(float(v)) for v in row) for row in X[:3]]
    lines += ["", '"' + '","'.join(repr(float(v)) for v in X[3]) + '"', " , ".join(repr(float(v)) for v in X[4])]
    p = tmp_path / "h.csv"
    p.write_text("\n".join(lines) + "\n")
    got = np.concatenate(list(iter_chunks(str(p), 2)))
    assert np.array_equal(got, X)


@pytest.mark.parametrize(
    "text, match",
    [
        ("1,2,3,4,5,6\n1,2,x,4,5,6\n", r"line 2, column 3: 'x' is not a number"),
        ("a,b,c,d,e,f\n1,2,3,4,5,6\n1,2,3,4,5\n", r"line 3 has 5 values, expected 6 \(as on line 2\)"),
        ("1,2,3,4,5,6\n\n1,2,,4,5,6\n", r"line 3, column 3: an empty cell"),
    ],
)
def test_csv_bad_cells_name_the_line(fitted, tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=match):
        score(fitted["m32"], str(p))


def test_csv_bad_cell_far_down_leaves_no_output(files, tmp_path):
    p = tmp_path / "late.csv"
    rows = [",".join(["1.5"] * 6)] * 5000
    rows[4321] = "1,2,3,oops,5,6"
    p.write_text("\n".join(rows) + "\n")
    out = tmp_path / "late_out.npz"
    with pytest.raises(DataError, match=r"line 4322, column 4: 'oops'"):
        score_to_file(files["model"], str(p), str(out), batch_size=256)
    assert sorted(os.listdir(tmp_path)) == ["late.csv", "m.onnx", "x.csv", "x.npy"]  # no output, no temp files


@pytest.mark.parametrize("kind", ["npy", "csv", "csv_header_only", "parquet"])
def test_empty_files_are_a_data_error(fitted, tmp_path, kind):
    if kind == "npy":
        p = tmp_path / "e.npy"
        np.save(p, np.zeros((0, 6)))
    elif kind == "csv":
        p = tmp_path / "e.csv"
        p.write_text("\n# nothing\n")
    elif kind == "csv_header_only":
        p = tmp_path / "e.csv"
        p.write_text("a,b,c,d,e,f\n")
    else:
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        p = tmp_path / "e.parquet"
        pd.DataFrame(np.zeros((0, 6)), columns=list("abcdef")).to_parquet(p)
    with pytest.raises(DataError, match="holds no data rows"):
        score_to_file(fitted["m32"], str(p), str(tmp_path / "o.npy"))
    assert not (tmp_path / "o.npy").exists()


def test_parquet_nulls_and_non_numeric_columns(fitted, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    X = fitted["X"][:100]
    df = pd.DataFrame(X, columns=list("abcdef"))
    df["a"] = df["a"].astype("Float64")
    df.loc[5, "a"] = None
    df.to_parquet(tmp_path / "n.parquet")
    out = score(fitted["m32"], str(tmp_path / "n.parquet"))
    assert np.isnan(out["log_likelihood"][5]) and out["label"][5] == -1
    assert np.isfinite(np.delete(out["log_likelihood"], 5)).all()
    df["s"] = "text"
    df.to_parquet(tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"column 's' holds (large_)?string values"):
        score(fitted["m32"], str(tmp_path / "s.parquet"))
    # picking the feature columns skips the text one
    ok = score(fitted["m32"], str(tmp_path / "s.parquet"), columns=list("abcdef"))
    assert same(ok["log_likelihood"], out["log_likelihood"])


def test_bad_files(fitted, tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeFileError, match="Python objects"):
        open_data(str(tmp_path / "o.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(InputFileError, match="not a .npy file"):
        open_data(str(tmp_path / "junk.npy"))
    np.save(tmp_path / "t.npy", np.zeros((100, 6)))
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:-80])
    with pytest.raises(InputFileError, match="truncated"):
        open_data(str(tmp_path / "t.npy"))
    with pytest.raises(InputFileError, match="unknown data file type '.txt'"):
        open_data(str(tmp_path / "x.txt"))
    with pytest.raises(InputFileError, match="no such file"):
        open_data(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match="expected real numbers"):
        open_data(str(tmp_path / "s.npy"))


# ---------------------------------------------------------------------------
# writers


def test_score_to_file_formats(files):
    d, model = files["dir"], files["model"]
    ref = score(model, files["X"])
    info = score_to_file(model, files["npy"], d / "ll.npy", batch_size=100)
    assert info["outputs"] == ["log_likelihood"] and info["rows"] == 1200 and info["nonfinite_rows"] == 3
    assert same(np.load(d / "ll.npy"), ref["log_likelihood"])
    assert same(np.load(d / "ll.npy", mmap_mode="r")[:10], ref["log_likelihood"][:10])
    score_to_file(model, files["csv"], d / "all.npz", batch_size=300, threads=2)
    with np.load(d / "all.npz") as z:
        assert sorted(z.files) == sorted(ALL)
        for k in ALL:
            assert same(z[k], ref[k]), k
    score_to_file(model, files["npy"], d / "r.csv", outputs=["label", "responsibilities"])
    table = np.loadtxt(d / "r.csv", delimiter=",", skiprows=1)
    header = (d / "r.csv").read_text().splitlines()[0]
    assert header == "label,responsibilities_0,responsibilities_1,responsibilities_2,responsibilities_3,responsibilities_4"
    assert np.array_equal(table[:, 0], ref["label"])
    assert np.array_equal(table[:, 1:].astype(np.float32), ref["responsibilities"], equal_nan=True)  # %.9g round-trips


def test_score_to_file_refusals(files):
    d, model = files["dir"], files["model"]
    with pytest.raises(UsageError, match="write .npz or .csv"):
        score_to_file(model, files["npy"], d / "two.npy", outputs=["label", "log_likelihood"])
    with pytest.raises(UsageError, match="unknown output suffix '.txt'"):
        score_to_file(model, files["npy"], d / "o.txt")
    (d / "exists.npy").write_bytes(b"keep")
    with pytest.raises(OutputExistsError, match="--force"):
        score_to_file(model, files["npy"], d / "exists.npy")
    assert (d / "exists.npy").read_bytes() == b"keep"
    score_to_file(model, files["npy"], d / "exists.npy", force=True)
    assert np.load(d / "exists.npy").shape == (1200,)
    with pytest.raises(OutputExistsError, match="input"):
        score_to_file(model, files["npy"], files["npy"], force=True)
    assert np.load(files["npy"]).shape == (1200, 6)


def test_npy_default_needs_a_choice_without_log_likelihood(fitted, tmp_path):
    m = to_onnx(from_sklearn(fitted["gm"]), outputs=("label", "mahalanobis"))
    np.save(tmp_path / "x.npy", fitted["X"][:10])
    with pytest.raises(UsageError, match="pass --outputs NAME"):
        score_to_file(m, str(tmp_path / "x.npy"), tmp_path / "o.npy")


def test_progress_bar_only_on_a_terminal(files):
    """rich draws the bar (share, rows, rate, time left) on a terminal; nothing goes to a pipe
    unless asked for, and then one plain final line."""
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    outputs = {}
    for label, stream, enabled in [("tty", Tty(), None), ("pipe", io.StringIO(), None), ("forced", io.StringIO(), True)]:
        with open_data(files["npy"]) as src:
            bar = _ProgressBar(src, enabled, stream=stream)
            for _ in src.chunks(600):
                bar(600)
            bar.close()
        outputs[label] = stream.getvalue()
    assert "100%" in outputs["tty"] and "1,200 rows" in outputs["tty"] and "rows/s" in outputs["tty"]
    assert "ETA" in outputs["tty"] and "\x1b[" in outputs["tty"]  # a live terminal display
    assert outputs["pipe"] == ""
    assert "1,200 rows" in outputs["forced"] and "\x1b[" not in outputs["forced"]
    assert outputs["forced"].count("\n") == 1


def test_rich_is_imported_only_when_a_bar_is_drawn():
    code = "import sys, gmmnet.cli, gmmnet.score; gmmnet.cli.build_parser(); print('rich' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.stdout.strip() == "False", res.stdout + res.stderr


# ---------------------------------------------------------------------------
# CLI


def test_cli_score(files, capsys):
    d = files["dir"]
    assert main(["score", files["model"], files["npy"], "-o", str(d / "o.npz"), "--batch-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "for 1200 rows" in out and "3 rows with NaN/inf" in out
    with np.load(d / "o.npz") as z:
        assert z["log_likelihood"].shape == (1200,)
    assert main(["score", files["model"], files["npy"], "-o", str(d / "o.npz")]) == OutputExistsError.exit_code
    np.save(d / "x5.npy", files["X"][:, :5])
    assert main(["score", files["model"], str(d / "x5.npy"), "-o", str(d / "o5.npy")]) == DataError.exit_code
    err = capsys.readouterr().err
    assert "has 5 features" in err and "expects 6" in err and "Traceback" not in err


def test_cli_score_help_lists_formats(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = capsys.readouterr().out
    for word in (".npy", ".npz", ".csv", ".parquet", "--batch-size", "--outputs", "--force"):
        assert word in text


def _score_memory(tmp_path, rows: int) -> dict:
    import json

    out = tmp_path / f"r{rows}.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "score_memory.py"), "--rows", str(rows), "--features", "32",
         "--components", "4", "--no-baseline", "--workdir", str(tmp_path), "--json", str(out)],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    r = json.loads(out.read_text())
    assert r["output_rows"] == rows and r["output_finite"]
    return r


def test_score_memory_does_not_grow_with_rows(tmp_path):
    """docs/scoring.md: memory depends on the chunk size, not on the number of rows, and stays
    under the 1.5 GB target.  `gmmnet score` runs in a child process that reads its own peak
    RSS (VmHWM); 32 times the rows (2.4 MiB -> 78 MiB of data) may not raise it by 16 MiB."""
    small, large = _score_memory(tmp_path, 20_000), _score_memory(tmp_path, 640_000)
    assert large["data_bytes"] - small["data_bytes"] > 70 << 20
    assert large["peak_rss_bytes"] - small["peak_rss_bytes"] < 16 << 20, (small, large)
    assert large["peak_rss_bytes"] < large["target_gib"] * 1e9


# ---------------------------------------------------------------------------
# models gmmnet did not write, models it refuses


def test_zipmap_classifier_scores_its_tensor_outputs(tmp_path, capsys):
    """skl2onnx's LogisticRegression gives probabilities as a ZipMap (a sequence of maps)."""
    skl2onnx = pytest.importorskip("skl2onnx")
    import onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    onnx.save(skl2onnx.to_onnx(clf, X[:1].astype(np.float32)), tmp_path / "lr.onnx")
    np.save(tmp_path / "x.npy", X)
    model, data = str(tmp_path / "lr.onnx"), str(tmp_path / "x.npy")
    out = score(model, X)
    assert list(out) == ["output_label"] and np.array_equal(out["output_label"], clf.predict(X))
    assert main(["score", model, data, "-o", str(tmp_path / "l.npy")]) == 0
    captured = capsys.readouterr()
    assert "not scoring output 'output_probability', a seq(map(int64,tensor(float)))" in captured.err
    assert np.array_equal(np.load(tmp_path / "l.npy"), clf.predict(X))
    code = main(["score", model, data, "-o", str(tmp_path / "p.npz"), "--outputs", "output_probability"])
    assert code == UnsupportedModelError.exit_code
    err = capsys.readouterr().err
    assert err == (f"gmmnet: error: {model}: output 'output_probability' is a seq(map(int64,tensor(float))), not a "
                   "tensor; gmmnet scores tensor outputs (output_label)\n")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_weights_are_refused_alike_by_every_verb(fitted, tmp_path, capsys, bad):
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(fitted["m64"])
    w = next(i for i in model.graph.initializer  # a weight matrix (the first initializers may be int64 shapes)
             if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE) and np.prod(i.dims) > 3)
    arr = numpy_helper.to_array(w).copy()
    arr.flat[3] = bad
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "x.npy", fitted["X"][:50])
    kind = "NaN" if np.isnan(bad) else "infinite"
    expected = f"gmmnet: error: invalid model in {path}: initializer {w.name!r} holds {kind} values\n"
    for argv in (["score", str(path), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npy")],
                 ["inspect", str(path)], ["to-gmm", str(path), "-o", str(tmp_path / "o.json")]):
        assert main(argv) == InvalidModelError.exit_code, argv
        assert capsys.readouterr().err == expected, argv
    with pytest.raises(InvalidModelError, match=f"initializer {w.name!r} holds {kind} values"):
        Scorer(model)


def test_onnxruntime_refusal_is_one_line_naming_the_file(tmp_path, capfd):
    """A model the checker accepts but onnxruntime cannot load: one gmmnet line, no runtime log lines."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Mystery", ["X"], ["Y"], domain="org.example")], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("org.example", 1)])
    onnx.save(model, tmp_path / "odd.onnx")
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    code = main(["score", str(tmp_path / "odd.onnx"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npy")])
    assert code == InputFileError.exit_code
    err = capfd.readouterr().err
    assert err.startswith(f"gmmnet: error: {tmp_path / 'odd.onnx'}: onnxruntime cannot load it (") and err.count("\n") == 1


def test_onnxruntime_warnings_are_silenced(fitted, tmp_path, capfd):
    """onnxruntime logs a warning for an initializer no node uses; a session from gmmnet does not."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(fitted["m32"])
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused"))
    onnx.save(model, tmp_path / "u.onnx")
    np.save(tmp_path / "x.npy", fitted["X"][:10])
    assert main(["score", str(tmp_path / "u.onnx"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npy")]) == 0
    assert capfd.readouterr().err == ""
