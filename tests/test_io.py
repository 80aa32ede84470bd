"""gmmnet.io: scoring data (.csv, .npy), model round trips, dispatch and atomic writes."""

from __future__ import annotations

import collections
import os
import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from gmmnet import io as gio
from gmmnet.errors import (
    DataError,
    InputFileError,
    OutputExistsError,
    OutputFileError,
    UnsafeFileError,
    UnsupportedModelError,
    UsageError,
)


@pytest.fixture(scope="module")
def X():
    return load_iris().data


def _fit(cls, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(n_components=3, random_state=0, max_iter=30, **kw).fit(X)


def _csv(tmp_path, text: str, name: str = "data.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------------------
# CSV


def test_csv_plain(tmp_path):
    x = gio.load_data(_csv(tmp_path, "1,2,3\n4.5,-6e-3,7\n"))
    assert x.dtype == np.float64 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, [[1, 2, 3], [4.5, -6e-3, 7]])


def test_csv_header_is_detected(tmp_path):
    x = gio.load_data(_csv(tmp_path, "sepal length,sepal width\n1,2\n3,4\n"), n_features=2)
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])


def test_csv_without_header_keeps_first_row(tmp_path):
    assert gio.load_data(_csv(tmp_path, "1,2\n3,4\n")).shape == (2, 2)


def test_csv_blank_comment_bom_quotes_and_spaces(tmp_path):
    text = "# written by numpy.savetxt\n\n x , y \n 1 , \"2\" \n\n3,4\n"
    x = gio.load_data(_csv(tmp_path, text, encoding="utf-8-sig"))
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])


def test_csv_nan_and_inf_pass_through(tmp_path):
    x = gio.load_data(_csv(tmp_path, "nan,inf\n-inf,1\n"))
    assert np.isnan(x[0, 0]) and x[0, 1] == np.inf and x[1, 0] == -np.inf


def test_csv_single_column_is_one_feature(tmp_path):
    x = gio.load_data(_csv(tmp_path, "1\n2\n3\n"), n_features=1)
    assert x.shape == (3, 1)


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    path = _csv(tmp_path, "a,b,c\n1,2,3\n4,five,6\n")
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"{path} line 3, column 2: 'five' is not a number"


def test_csv_line_numbers_count_blank_and_comment_lines(tmp_path):
    path = _csv(tmp_path, "# comment\n\n1,2\n\n3,x\n")
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"{path} line 5, column 2: 'x' is not a number"


def test_csv_mixed_first_line_is_an_error_not_a_header(tmp_path):
    path = _csv(tmp_path, "x,1\n2,3\n")
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"{path} line 1, column 1: 'x' is not a number"


def test_csv_empty_cell(tmp_path):
    path = _csv(tmp_path, "1,2,3\n4,,6\n")
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"{path} line 2, column 2: an empty cell"


def test_csv_ragged_rows(tmp_path):
    path = _csv(tmp_path, "h1,h2,h3\n1,2,3\n4,5\n")
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"{path} line 3 has 2 values, expected 3 (as on line 2)"


def test_csv_wrong_feature_count(tmp_path):
    path = _csv(tmp_path, "1,2\n3,4\n")
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path, n_features=3)
    assert str(excinfo.value) == f"{path}: expected 3 features, got 2"


@pytest.mark.parametrize("text", ["", "\n\n", "a,b,c\n", "# only a comment\n"])
def test_csv_without_rows(text, tmp_path):
    path = _csv(tmp_path, text)
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"{path} holds no data rows"


def test_csv_not_utf8(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"1,2\n\xff\xfe,3\n")
    with pytest.raises(InputFileError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"cannot load {path}: line 2 is not UTF-8 text"


# ---------------------------------------------------------------------------
# NPY


def _npy(tmp_path, arr, name="data.npy", **kw):
    path = tmp_path / name
    np.save(path, arr, **kw)
    return path


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8, np.bool_])
def test_npy_numeric_becomes_float64(dtype, tmp_path):
    arr = (np.arange(12).reshape(4, 3) % 2).astype(dtype)
    x = gio.load_data(_npy(tmp_path, arr), n_features=3)
    assert x.dtype == np.float64 and type(x) is np.ndarray
    np.testing.assert_array_equal(x, arr.astype(np.float64))


def test_npy_fortran_order(tmp_path):
    arr = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(gio.load_data(_npy(tmp_path, arr)), arr)


def test_npy_nan_passes_through(tmp_path):
    x = gio.load_data(_npy(tmp_path, np.array([[np.nan, 1.0], [np.inf, 2.0]])))
    assert np.isnan(x[0, 0]) and np.isinf(x[1, 0])


def test_npy_1d_is_one_feature_only_when_asked(tmp_path):
    path = _npy(tmp_path, np.arange(5.0))
    assert gio.load_data(path, n_features=1).shape == (5, 1)
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"{path} holds a 1-D array of 5 values; expected a 2-D array (n_samples, n_features)"
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path, n_features=3)
    assert str(excinfo.value) == (
        f"{path} holds a 1-D array of 5 values; expected a 2-D array (n_samples, n_features) with 3 features"
    )


def test_npy_3d(tmp_path):
    path = _npy(tmp_path, np.zeros((2, 3, 4)))
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"{path} holds a 3-D array of shape (2, 3, 4); expected 2-D (n_samples, n_features)"


def test_npy_wrong_feature_count(tmp_path):
    path = _npy(tmp_path, np.zeros((2, 4)))
    with pytest.raises(DataError) as excinfo:
        gio.load_data(path, n_features=3)
    assert str(excinfo.value) == f"{path}: expected 3 features, got 4"


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0,)])
def test_npy_empty(shape, tmp_path):
    path = _npy(tmp_path, np.zeros(shape))
    with pytest.raises(DataError, match="holds no data"):
        gio.load_data(path, n_features=1 if len(shape) == 1 else None)


@pytest.mark.parametrize("arr", [np.ones((2, 2), complex), np.array([["a", "b"]]), np.zeros(2, dtype="f8,f8")])
def test_npy_non_real_dtypes(arr, tmp_path):
    path = _npy(tmp_path, arr)
    with pytest.raises(DataError, match="expected real numbers"):
        gio.load_data(path)


def test_npy_pickled_objects_are_refused(tmp_path):
    path = _npy(tmp_path, np.array([[1, "x"]], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeFileError) as excinfo:
        gio.load_data(path)
    assert str(excinfo.value) == f"refusing to load Python objects from {path}: only numeric arrays are allowed"


def test_npy_truncated(tmp_path):
    path = _npy(tmp_path, np.zeros((100, 3)))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(InputFileError, match=rf"cannot load {path}: truncated \.npy file \(shape \(100, 3\) needs 2528 bytes"):
        gio.load_data(path)


def test_npy_garbage(tmp_path):
    path = tmp_path / "data.npy"
    path.write_bytes(b"not an npy file at all")
    with pytest.raises(InputFileError, match=r"not a .npy file \(no NumPy header\)"):
        gio.load_data(path)


def test_data_unknown_suffix_and_missing(tmp_path):
    with pytest.raises(InputFileError) as excinfo:
        gio.load_data(tmp_path / "data.txt")
    assert str(excinfo.value) == f"{tmp_path / 'data.txt'}: unknown data file type '.txt'; accepted: .npy, .csv, .parquet"
    with pytest.raises(InputFileError) as excinfo:
        gio.load_data(tmp_path / "missing.csv")
    assert str(excinfo.value) == f"{tmp_path / 'missing.csv'}: no such file"


# ---------------------------------------------------------------------------
# model round trips


@pytest.mark.parametrize("suffix", [".skops", ".pkl", ".pickle", ".joblib"])
@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
def test_estimator_round_trip(cls, suffix, X, tmp_path):
    est = _fit(cls, X, covariance_type="tied")
    path = tmp_path / f"model{suffix}"
    gio.save_estimator(est, path)
    back = gio.load_estimator(path)
    assert type(back) is cls
    np.testing.assert_array_equal(back.score_samples(X), est.score_samples(X))
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_estimator_refuses_non_mixtures_and_unknown_suffix(X, tmp_path):
    with pytest.raises(UnsupportedModelError, match="cannot save a builtins.dict"):
        gio.save_estimator({"a": 1}, tmp_path / "m.pkl")
    with pytest.raises(UsageError, match="unknown suffix '.bin'"):
        gio.save_estimator(_fit(GaussianMixture, X), tmp_path / "m.bin")
    assert list(tmp_path.iterdir()) == []


def test_save_estimator_never_writes_what_it_would_refuse(X, tmp_path):
    est = _fit(GaussianMixture, X)
    est.notes_ = collections.OrderedDict(a=1)  # pickles as collections.OrderedDict: not allowlisted
    with pytest.raises(UnsupportedModelError, match="collections.OrderedDict"):
        gio.save_estimator(est, tmp_path / "m.pkl")
    assert list(tmp_path.iterdir()) == []


def test_ir_round_trip_is_bit_exact(X, tmp_path):
    from gmmnet.formats.sklearn import from_sklearn
    from gmmnet.ir import Hierarchy

    mixture = from_sklearn(_fit(GaussianMixture, X, covariance_type="full"))
    path = tmp_path / "model.json"
    gio.save_ir(mixture, path)
    back = gio.load_ir(path)
    assert back.model_dump_json() == mixture.model_dump_json()
    for a, b in zip(back.components, mixture.components):
        assert a.mean.tobytes() == b.mean.tobytes() and a.eigenvalues.tobytes() == b.eigenvalues.tobytes()
    # the file is the documented JSON form: model_dump_json(indent=2) and a newline
    assert path.read_bytes() == (mixture.model_dump_json(indent=2) + "\n").encode()
    h = Hierarchy(levels=[mixture])
    gio.save_ir(h, tmp_path / "h.json")
    assert (tmp_path / "h.json").read_bytes() == (h.model_dump_json(indent=2) + "\n").encode()
    assert gio.load_model(tmp_path / "h.json").model_dump_json() == h.model_dump_json()
    with pytest.raises(UnsupportedModelError):
        gio.save_ir({"kind": "mixture"}, tmp_path / "x.json")


def _tiny_onnx():
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Abs", ["X"], ["Y"], name="c0/abs")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [None, 2])],
        [numpy_helper.from_array(np.array([1.0, 2.0]), "unused")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_round_trip(tmp_path):
    model = _tiny_onnx()
    path = tmp_path / "model.onnx"
    gio.save_onnx(model, path)
    back = gio.load_model(path)
    assert back.SerializeToString() == model.SerializeToString()
    with pytest.raises(OutputExistsError):
        gio.save_onnx(model, path)
    with pytest.raises(UnsupportedModelError):
        gio.save_onnx(b"bytes", tmp_path / "other.onnx")


def test_onnx_checker_failure_is_invalid_model(tmp_path):
    from gmmnet.errors import InvalidModelError

    model = _tiny_onnx()
    model.graph.node[0].input[0] = "nowhere"
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InvalidModelError, match="ONNX checker"):
        gio.load_onnx(path)
    assert gio.load_onnx(path, check=False).graph.node[0].input[0] == "nowhere"


# ---------------------------------------------------------------------------
# dispatch


def test_load_model_dispatch(X, tmp_path):
    import onnx

    from gmmnet.ir import Mixture

    est = _fit(GaussianMixture, X)
    gio.save_estimator(est, tmp_path / "m.joblib")
    gio.save_ir(__import__("gmmnet").from_sklearn(est), tmp_path / "m.json")
    gio.save_onnx(_tiny_onnx(), tmp_path / "m.onnx")
    (tmp_path / "M.PKL").write_bytes(pickle.dumps(est))
    assert isinstance(gio.load_model(tmp_path / "m.joblib"), GaussianMixture)
    assert isinstance(gio.load_model(tmp_path / "M.PKL"), GaussianMixture)
    assert isinstance(gio.load_model(str(tmp_path / "m.json")), Mixture)
    assert isinstance(gio.load_model(tmp_path / "m.onnx"), onnx.ModelProto)


def test_load_model_unknown_suffix_lists_accepted(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"x")
    with pytest.raises(InputFileError) as excinfo:
        gio.load_model(path)
    assert str(excinfo.value) == (
        f"{path}: unknown model file type '.h5'; accepted: .pkl, .pickle, .joblib, .skops, .json, .onnx"
    )


@pytest.mark.parametrize("suffix", [".pkl", ".joblib", ".skops", ".json", ".onnx"])
def test_load_model_missing_empty_and_folder(suffix, tmp_path):
    path = tmp_path / f"model{suffix}"
    with pytest.raises(InputFileError) as excinfo:
        gio.load_model(path)
    assert str(excinfo.value) == f"{path}: no such file"
    path.write_bytes(b"")
    with pytest.raises(InputFileError) as excinfo:
        gio.load_model(path)
    assert str(excinfo.value) == f"{path} is empty"
    path.unlink()
    path.mkdir()
    with pytest.raises(InputFileError) as excinfo:
        gio.load_model(path)
    assert str(excinfo.value) == f"{path} is a folder, not a file"


@pytest.mark.parametrize("suffix", [".pkl", ".joblib", ".skops", ".json", ".onnx"])
def test_load_model_wrong_content(suffix, tmp_path):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"This is a README, not a model.\n")
    with pytest.raises(InputFileError) as excinfo:
        gio.load_model(path)
    msg = str(excinfo.value)
    assert str(path) in msg and "\n" not in msg


def test_truncated_estimator_files(X, tmp_path):
    est = _fit(GaussianMixture, X)
    for suffix in (".pkl", ".joblib", ".skops"):
        path = tmp_path / f"model{suffix}"
        gio.save_estimator(est, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(InputFileError, match=f"cannot load {path}"):
            gio.load_estimator(path)


# ---------------------------------------------------------------------------
# atomic writes


def test_atomic_write_bytes_and_callable(tmp_path):
    gio.atomic_write(tmp_path / "a.bin", b"abc")
    gio.atomic_write(tmp_path / "b.bin", lambda f: f.write(b"xyz"))
    assert (tmp_path / "a.bin").read_bytes() == b"abc" and (tmp_path / "b.bin").read_bytes() == b"xyz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_atomic_write_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        gio.atomic_write(tmp_path / "a.bin", b"abc")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640


def test_atomic_write_missing_folder_and_folder_target(tmp_path):
    with pytest.raises(OutputFileError, match="does not exist"):
        gio.atomic_write(tmp_path / "nope" / "a.bin", b"x")
    with pytest.raises(OutputExistsError, match="it is a folder"):
        gio.atomic_write(tmp_path, b"x", force=True)


def test_atomic_write_over_symlink_replaces_the_link_not_its_target(tmp_path):
    target = tmp_path / "real.bin"
    target.write_bytes(b"real")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    gio.atomic_write(link, b"new", force=True)
    assert target.read_bytes() == b"real" and not link.is_symlink() and link.read_bytes() == b"new"
