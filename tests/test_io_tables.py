"""gmmnet.io.tables: one table reader (npy, csv, parquet) for fit, score, plot, inspect and to-gmm."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from gmmnet import io as gio
from gmmnet.cli import main
from gmmnet.errors import DataError, InputFileError, ResourceLimitError
from gmmnet.io.tables import CsvTable, DataNote, NpyTable, open_data
from gmmnet.score import score, score_to_file

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(loc=c, size=(150, 4)) for c in (-3.0, 0.0, 3.0)])


@pytest.fixture(scope="module")
def model(X, tmp_path_factory):
    import onnx
    from sklearn.mixture import GaussianMixture

    from gmmnet import from_sklearn
    from gmmnet.formats.onnx import to_onnx

    path = tmp_path_factory.mktemp("model") / "m.onnx"
    onnx.save(to_onnx(from_sklearn(GaussianMixture(3, random_state=0).fit(X)), dtype="float64"), path)
    return str(path)


def _pd():
    return pytest.importorskip("pandas")


# ---------------------------------------------------------------------------
# one reader, every format, the same numbers


def test_every_format_reads_the_same_rows(X, tmp_path):
    pd = _pd()
    pytest.importorskip("pyarrow")
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", fmt="%.17g", header="a,b,c,d", comments="")
    df.to_csv(tmp_path / "pandas.csv")  # with pandas' unnamed index column
    df.to_parquet(tmp_path / "x.parquet")
    for name in ("x.npy", "f.npy", "x.csv", "pandas.csv", "x.parquet"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataNote)
            whole = gio.load_data(tmp_path / name)
            chunks = np.concatenate(list(gio.iter_chunks(tmp_path / name, 100)))
        assert whole.dtype == np.float64 and whole.shape == X.shape, name
        assert np.array_equal(whole, X) and np.array_equal(chunks, X), name


def test_columns_pick_features_by_name_or_position(X, tmp_path):
    pd = _pd()
    pytest.importorskip("pyarrow")
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    df.to_csv(tmp_path / "x.csv", index=False)
    df.to_parquet(tmp_path / "x.parquet")
    np.save(tmp_path / "x.npy", X)
    for name in ("x.csv", "x.parquet"):
        assert np.array_equal(gio.load_data(tmp_path / name, columns=["d", "b"]), X[:, [3, 1]])
    for name in ("x.csv", "x.parquet", "x.npy"):
        assert np.array_equal(gio.load_data(tmp_path / name, columns=[0, -1]), X[:, [0, 3]])
    with pytest.raises(DataError, match=r"x\.csv has no column 'e'"):
        gio.load_data(tmp_path / "x.csv", columns=["e"])
    with pytest.raises(DataError, match=r"x\.npy has 4 columns; there is no column 4"):
        gio.load_data(tmp_path / "x.npy", columns=[4])


# ---------------------------------------------------------------------------
# CSV: quoted cells, pandas' index column


def test_csv_quoted_cells_follow_rfc_4180(tmp_path):
    """A quoted cell may hold commas and newlines; the record then spans lines, and line
    numbers in messages still count physical lines."""
    p = tmp_path / "q.csv"
    p.write_text('"first\nname","b"\n"1",2\n3, "4"\n5,6\n')
    assert np.array_equal(gio.load_data(p), [[1, 2], [3, 4], [5, 6]])
    with CsvTable(p) as t:
        assert t.column_names == ["first\nname", "b"]
    p.write_text('a,b\n1,"2\n3"\n4,x\n')
    with pytest.raises(DataError) as excinfo:
        gio.load_data(p)
    assert str(excinfo.value) == f"{p} line 2, column 2: '2\\n3' is not a number"
    p.write_text('a,b\n1,2\n"3\n4",5\n6,x\n')  # the bad cell is on line 5, after a two-line record
    with pytest.raises(DataError, match=r"line 3, column 1: '3\\n4' is not a number"):
        gio.load_data(p)
    p.write_text('a,b\n1,2\n3,"4\n5,6\n')
    with pytest.raises(InputFileError) as excinfo:
        gio.load_data(p)
    assert str(excinfo.value) == f"cannot load {p}: line 3 opens a quoted cell that is never closed"


def test_csv_records_read_the_same_by_score_and_load_data(model, X, tmp_path):
    """Scoring streams the file and load_data reads it whole: both see the same rows."""
    p = tmp_path / "q.csv"
    rows = [f'"{a!r}",{b!r}, {c!r},"{d!r}"' for a, b, c, d in X.tolist()]
    p.write_text('"x\n1",x2,x3,x4\n' + "\n".join(rows) + "\n")
    assert np.array_equal(gio.load_data(p), X)
    got = score(model, str(p), batch_size=64)["log_likelihood"]
    assert np.array_equal(got, score(model, X)["log_likelihood"])


def test_pandas_index_column_is_dropped_with_a_note(X, tmp_path):
    pd = _pd()
    p = tmp_path / "pandas.csv"
    pd.DataFrame(X, columns=["a", "b", "c", "d"]).to_csv(p)
    assert p.read_text().startswith(",a,b,c,d\n0,")
    with pytest.warns(DataNote, match=r"dropped its first column, an unnamed index .*to_csv\(index=False\)"):
        x = gio.load_data(p)
    assert np.array_equal(x, X)
    notes = []
    assert np.array_equal(gio.load_data(p, note=notes.append), X) and len(notes) == 1 and str(p) in notes[0]


def test_unnamed_first_column_that_is_not_an_index_is_refused(X, tmp_path):
    pd = _pd()
    p = tmp_path / "shuffled.csv"
    pd.DataFrame(X, columns=["a", "b", "c", "d"]).iloc[::-1].to_csv(p)  # index 449, 448, ...
    with pytest.raises(DataError) as excinfo, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        gio.load_data(p)
    msg = str(excinfo.value)
    assert msg.startswith(f"{p} line 2: the first column has no name") and "index=False" in msg


def test_cli_reads_a_pandas_csv_in_score_and_fit(model, X, tmp_path, capsys):
    pd = _pd()
    p = tmp_path / "pandas.csv"
    pd.DataFrame(X, columns=["a", "b", "c", "d"]).to_csv(p)
    assert main(["score", model, str(p), "-o", str(tmp_path / "ll.npy")]) == 0
    err = capsys.readouterr().err
    assert f"gmmnet: note: {p}: dropped its first column" in err and "index=False" in err
    assert np.array_equal(np.load(tmp_path / "ll.npy"), score(model, X)["log_likelihood"])
    assert main(["fit", str(p), "--levels", "3", "--seed", "0", "-o", str(tmp_path / "g.skops")]) == 0
    out = capsys.readouterr()
    assert "on 450 rows x 4 features" in out.out and "dropped its first column" in out.err


def test_parquet_pandas_index_column_is_dropped_with_a_note(X, tmp_path):
    pd = _pd()
    pytest.importorskip("pyarrow")
    p = tmp_path / "x.parquet"
    pd.DataFrame(X, columns=["a", "b", "c", "d"], index=np.arange(len(X)) * 2).to_parquet(p)
    with pytest.warns(DataNote, match="__index_level_0__"):
        assert np.array_equal(gio.load_data(p), X)


# ---------------------------------------------------------------------------
# .npy headers and sizes


def _negative_npy(path: Path) -> None:
    np.save(path, np.zeros((3, 4)))
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"(3, 4)", b"(-3, 4)"))


def test_negative_dimension_is_a_clean_error_in_every_verb(model, tmp_path, capsys):
    p = tmp_path / "neg.npy"
    _negative_npy(p)
    expected = f"cannot load {p}: its header declares a negative dimension (shape (-3, 4))"
    with pytest.raises(InputFileError) as excinfo:
        gio.load_data(p)
    assert str(excinfo.value) == expected
    for argv in (["score", model, str(p), "-o", str(tmp_path / "o.npy")],
                 ["to-gmm", model, "--data", str(p), "-o", str(tmp_path / "o.json")],
                 ["fit", str(p), "--levels", "2", "-o", str(tmp_path / "o.skops")]):
        assert main(argv) == InputFileError.exit_code, argv
        assert capsys.readouterr().err == f"gmmnet: error: {expected}\n", argv


def test_whole_float32_copy_is_estimated_first(tmp_path, monkeypatch, capsys):
    """A float32 file read whole becomes float64: twice its size, checked before allocating."""
    from numpy.lib.format import open_memmap

    p = tmp_path / "big32.npy"
    open_memmap(p, mode="w+", dtype=np.float32, shape=(4 << 20, 4))  # 64 MiB, sparse on disk
    monkeypatch.setenv("GMMNET_MAX_MEMORY", "100M")
    with pytest.raises(ResourceLimitError, match=r"big32\.npy: reading its 4194304x4 values as float64 would need "
                                                 r"128\.0 MiB, above the memory limit of 100\.0 MiB"):
        gio.load_data(p)
    monkeypatch.delenv("GMMNET_MAX_MEMORY")
    code = main(["--max-memory", "100M", "fit", str(p), "--levels", "2", "-o", str(tmp_path / "g.skops")])
    assert code == ResourceLimitError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "big32.npy" in err and "--max-memory" in err
    p.unlink()


def test_float64_npy_is_mapped_not_copied(tmp_path, monkeypatch):
    from numpy.lib.format import open_memmap

    p = tmp_path / "big64.npy"
    m = open_memmap(p, mode="w+", dtype=np.float64, shape=(2 << 20, 4))  # 64 MiB
    m[-1] = [1, 2, 3, 4]
    del m
    monkeypatch.setenv("GMMNET_MAX_MEMORY", "1M")  # a copy would be refused; a mapping needs none
    x = gio.load_data(p)
    assert type(x) is np.ndarray and isinstance(x.base, np.memmap) and x.shape == (2 << 20, 4)
    assert np.array_equal(x[-1], [1, 2, 3, 4])
    x[0, 0] = 5.0  # copy-on-write: writable, and the file is unchanged
    del x
    assert np.load(p, mmap_mode="r")[0, 0] == 0.0
    p.unlink()


_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
{body}
"""


def _run_limited(body: str, limit: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _LIMITED.format(body=body), str(limit), *args],
                          capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and sparse files as on Linux")
def test_files_larger_than_the_address_space_are_read_in_chunks(tmp_path):
    """A 10 GiB .npy under a 2 GiB address-space limit: mapping it whole (what np.load's
    mmap_mode does) fails with OSError; the reader reads any rows of it chunk by chunk."""
    from numpy.lib.format import open_memmap

    p = tmp_path / "huge.npy"
    n = (10 << 30) // (8 * 64)
    m = open_memmap(p, mode="w+", dtype=np.float64, shape=(n, 64))  # sparse: no disk used
    m[-1] = 7.0
    del m
    try:
        body = """
import numpy as np
from gmmnet.io.tables import open_data
with open_data(sys.argv[2]) as t:
    first = next(t.chunks(1000))
    last = t.read_rows(t.n_rows - 2, t.n_rows)
print(first.shape, float(first.sum()), last[-1].tolist() == [7.0] * 64, last[0].sum() == 0)
try:
    np.load(sys.argv[2], mmap_mode="r")
except OSError as exc:
    print("np.load:", type(exc).__name__)
"""
        res = _run_limited(body, 2 << 30, str(p))
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == ["(1000, 64) 0.0 True True", "np.load: OSError"]
        # a whole float64 table cannot be mapped there either: a clean limit error, not an OSError
        res = _run_limited("from gmmnet.cli import main; sys.exit(main(['fit', sys.argv[2], '--levels', '2', "
                           "'-o', sys.argv[2] + '.skops']))", 2 << 30, str(p))
        assert res.returncode == ResourceLimitError.exit_code, res.stderr
        assert res.stderr.startswith(f"gmmnet: error: {p}: mapping its 10.0 GiB of values failed")
        assert res.stderr.count("\n") == 1
    finally:
        p.unlink()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and sparse files as on Linux")
def test_cli_scores_a_file_larger_than_the_address_space(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    d = 16384
    graph = helper.make_graph([helper.make_node("ReduceSum", ["X", "axes"], ["s"], keepdims=0)], "sum",
                              [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, d])],
                              [helper.make_tensor_value_info("s", TensorProto.DOUBLE, [None])],
                              [helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "sum.onnx")
    from numpy.lib.format import open_memmap

    p = tmp_path / "wide.npy"
    rows = (2 << 30) // (8 * d)  # 2 GiB of float64
    m = open_memmap(p, mode="w+", dtype=np.float64, shape=(rows, d))
    m[5, :3] = [1.0, 2.0, 3.0]
    del m
    try:
        body = "from gmmnet.cli import main; sys.exit(main(sys.argv[2:]))"
        res = _run_limited(body, (3 << 29), "score", str(tmp_path / "sum.onnx"), str(p), "-o", str(tmp_path / "s.npy"),
                           "--threads", "1")
        assert res.returncode == 0, res.stderr
        s = np.load(tmp_path / "s.npy")
        assert s.shape == (rows,) and s[5] == 6.0 and np.count_nonzero(s) == 1
    finally:
        p.unlink()
