"""gmmnet.io refuses malicious model files and still loads every legitimate one.

Every payload here would create a canary file if it ran (test_payloads_are_live proves it
with an unrestricted loader); every refusal test checks the canary is still absent and that
the error is an UnsafeFileError naming the refused global and the file.
"""

from __future__ import annotations

import builtins
import fractions
import io
import json
import os
import pickle
import subprocess
import warnings
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

import gmmnet.io.pickle as safe_pickle
from gmmnet import io as gio
from gmmnet.errors import (
    InputFileError,
    InvalidModelError,
    NotFittedError,
    OutputExistsError,
    UnsafeFileError,
    UnsupportedModelError,
)

HINT = "only scikit-learn mixture classes, affine Pipeline steps and numpy arrays are allowed"
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def _never_called(self, state):
    raise AssertionError("a refused class was given its state")


@pytest.fixture(scope="module")
def X():
    return load_iris().data


@pytest.fixture(scope="module")
def fitted(X):
    """{(class name, covariance type): fitted estimator}."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in (GaussianMixture, BayesianGaussianMixture):
            for ct in COVARIANCE_TYPES:
                out[cls.__name__, ct] = cls(n_components=3, covariance_type=ct, random_state=0, max_iter=30).fit(X)
    return out


def _gm(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(n_components=2, random_state=0, max_iter=20, **kw).fit(X)


# ---------------------------------------------------------------------------
# payloads


class Payload:
    """Pickles to the call func(*args): what a malicious pickle does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payloads(canary: str) -> dict[str, tuple]:
    create = f"open({canary!r}, 'w').close()"
    return {
        "os.system": (os.system, (f"touch '{canary}'",), "system"),
        "eval": (builtins.eval, (create,), "builtins.eval"),
        "exec": (builtins.exec, (create,), "builtins.exec"),
        "subprocess.Popen": (subprocess.Popen, (["touch", canary],), "subprocess.Popen"),
        "subprocess.call": (subprocess.call, (["touch", canary],), "subprocess.call"),
        "builtins.open": (builtins.open, (canary, "w"), "open"),
    }


PAYLOADS = list(_payloads("x"))


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "canary"
    yield path
    assert not path.exists(), "a payload ran"


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payloads_are_live(kind, tmp_path):
    """Sanity: with plain pickle each payload really creates the canary."""
    path = tmp_path / "canary"
    func, args, _ = _payloads(str(path))[kind]
    result = pickle.loads(pickle.dumps(Payload(func, args)))
    if isinstance(result, subprocess.Popen):
        result.wait()
    elif hasattr(result, "close"):
        result.close()
    assert path.exists()


def _write(fmt: str, obj, path):
    if fmt == "pkl":
        path.write_bytes(pickle.dumps(obj, protocol=4))
    elif fmt == "pkl-protocol2":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    elif fmt == "pkl-protocol0":
        path.write_bytes(pickle.dumps(obj, protocol=0))
    elif fmt == "joblib":
        joblib.dump(obj, path)
    elif fmt == "joblib-zlib":
        joblib.dump(obj, path, compress=3)
    elif fmt == "joblib-gzip":
        joblib.dump(obj, path, compress="gzip")
    else:  # pragma: no cover
        raise ValueError(fmt)


PICKLE_FORMATS = ["pkl", "pkl-protocol2", "pkl-protocol0", "joblib", "joblib-zlib", "joblib-gzip"]


def _suffix(fmt: str) -> str:
    return ".pkl" if fmt.startswith("pkl") else ".joblib"


def _assert_refused(excinfo, path, refused: str):
    msg = str(excinfo.value)
    assert "refusing to load" in msg and refused in msg and path.name in msg and HINT in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("fmt", PICKLE_FORMATS)
@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_in_fitted_mixture_attribute_is_refused(kind, fmt, X, tmp_path, canary):
    func, args, refused = _payloads(str(canary))[kind]
    gm = _gm(X)
    gm.means_ = Payload(func, args)  # the payload replaces a fitted array of a real model
    path = tmp_path / f"model{_suffix(fmt)}"
    _write(fmt, gm, path)
    with pytest.raises(UnsafeFileError) as excinfo:
        gio.load_estimator(path)
    _assert_refused(excinfo, path, refused)


@pytest.mark.parametrize("fmt", ["pkl", "joblib", "joblib-zlib"])
@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_inside_object_array_is_refused(kind, fmt, X, tmp_path, canary):
    """joblib stores object arrays as a nested pickle stream: it must obey the same allowlist."""
    func, args, refused = _payloads(str(canary))[kind]
    gm = _gm(X)
    gm.feature_names_in_ = np.array(["a", Payload(func, args), "c", "d"], dtype=object)
    path = tmp_path / f"model{_suffix(fmt)}"
    _write(fmt, gm, path)
    with pytest.raises(UnsafeFileError) as excinfo:
        gio.load_estimator(path)
    _assert_refused(excinfo, path, refused)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_as_the_whole_file_is_refused(kind, tmp_path, canary):
    func, args, refused = _payloads(str(canary))[kind]
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Payload(func, args)))
    with pytest.raises(UnsafeFileError) as excinfo:
        gio.load_model(path)
    _assert_refused(excinfo, path, refused)


# -- skops ------------------------------------------------------------------


class SetstateCanary:
    """skops restores objects with __setstate__: this one creates the canary when it is trusted."""

    def __init__(self, path):
        self.path = path

    def __setstate__(self, state):
        open(state["path"], "w").close()


def test_skops_setstate_payload_is_live_when_trusted(tmp_path):
    import skops.io as sio

    path = tmp_path / "canary"
    data = sio.dumps({"x": SetstateCanary(str(path))})
    untrusted = sio.get_untrusted_types(data=data)
    assert untrusted == [f"{__name__}.SetstateCanary"]
    sio.loads(data, trusted=untrusted)
    assert path.exists()


@pytest.mark.parametrize("kind", PAYLOADS + ["setstate-class"])
def test_skops_untrusted_type_in_fitted_mixture_is_refused(kind, X, tmp_path, canary):
    import skops.io as sio

    gm = _gm(X)
    if kind == "setstate-class":
        gm.means_ = SetstateCanary(str(canary))
        refused = "SetstateCanary"
    else:
        func, _, refused = _payloads(str(canary))[kind]
        gm.means_ = func  # skops stores functions and types by name
    path = tmp_path / "model.skops"
    sio.dump(gm, path)
    with pytest.raises(UnsafeFileError) as excinfo:
        gio.load_estimator(path)
    _assert_refused(excinfo, path, refused)


def _rewrite_schema(path, edit):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    schema = json.loads(members["schema.json"])
    edit(schema)
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, content in members.items():
            zf.writestr(n, content)


def test_skops_handcrafted_schema_with_popen_is_refused(X, tmp_path, canary):
    import skops.io as sio

    path = tmp_path / "model.skops"
    sio.dump(_gm(X), path)

    def edit(schema):  # the top-level object becomes a subprocess.Popen
        schema["__class__"], schema["__module__"] = "Popen", "subprocess"

    _rewrite_schema(path, edit)
    with pytest.raises(UnsafeFileError) as excinfo:
        gio.load_estimator(path)
    _assert_refused(excinfo, path, "subprocess.Popen")


def test_skops_handcrafted_schema_with_eval_function_is_refused(X, tmp_path, canary):
    import skops.io as sio

    path = tmp_path / "model.skops"
    gm = _gm(X)
    gm.means_ = len  # stored as a function node by name; the schema is then edited to name eval
    sio.dump(gm, path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    assert b'"len"' in members["schema.json"]
    members["schema.json"] = members["schema.json"].replace(b'"len"', b'"eval"')
    with zipfile.ZipFile(path, "w") as zf:
        for n, content in members.items():
            zf.writestr(n, content)
    with pytest.raises(UnsafeFileError) as excinfo:
        gio.load_estimator(path)
    _assert_refused(excinfo, path, "builtins.eval")


# ---------------------------------------------------------------------------
# what the allowlist admits beyond globals: calls, constructors, state


def test_non_allowlisted_harmless_class_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(fractions.Fraction(1, 3)))
    with pytest.raises(UnsafeFileError, match="refusing to load fractions.Fraction"):
        gio.load_estimator(path)


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_other_sklearn_estimator_is_unsupported_before_it_is_built(X, suffix, tmp_path, monkeypatch):
    path = tmp_path / f"model{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = LogisticRegression().fit(X, np.arange(len(X)) % 2)
    path.write_bytes(pickle.dumps(est)) if suffix == ".pkl" else joblib.dump(est, path)
    monkeypatch.setattr(LogisticRegression, "__setstate__", _never_called, raising=False)
    with pytest.raises(UnsupportedModelError) as excinfo:
        gio.load_estimator(path)
    assert "sklearn.linear_model._logistic.LogisticRegression, which is not an affine step" in str(excinfo.value)
    assert path.name in str(excinfo.value)


@pytest.mark.parametrize("obj", [{"weights": [0.5, 0.5]}, np.eye(3), [1, 2, 3], "text"])
@pytest.mark.parametrize("suffix", [".pkl", ".joblib", ".skops"])
def test_safe_non_mixture_is_unsupported(obj, suffix, tmp_path):
    import skops.io as sio

    path = tmp_path / f"model{suffix}"
    if suffix == ".skops":
        sio.dump(obj, path)
    elif suffix == ".joblib":
        joblib.dump(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(UnsupportedModelError, match="not a scikit-learn GaussianMixture"):
        gio.load_estimator(path)


def test_skops_other_sklearn_estimator_is_unsupported(X, tmp_path):
    import skops.io as sio

    path = tmp_path / "model.skops"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sio.dump(LogisticRegression().fit(X, np.arange(len(X)) % 2), path)
    with pytest.raises(UnsupportedModelError, match="LogisticRegression"):
        gio.load_estimator(path)


GM = b"csklearn.mixture._gaussian_mixture\nGaussianMixture\n"


def _stack_global(module: bytes, name: bytes) -> bytes:
    """A protocol-4 pickle of just STACK_GLOBAL module name."""
    return b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name + b"\x93."


@pytest.mark.parametrize(
    "name, data, message",
    [
        # calling an allowlisted class with arguments (REDUCE)
        ("reduce-on-class", GM + b"(I2\ntR.", "calling sklearn.mixture._gaussian_mixture.GaussianMixture"),
        # NEWOBJ with constructor arguments
        ("newobj-args", b"\x80\x02cnumpy\nndarray\n(K\x03tq\x00\x81.", "creating instances of numpy.ndarray"),
        # BUILD on a class: would monkey-patch GaussianMixture for the whole process
        ("build-on-class", GM + b"N}S'score_samples'\nI1\ns\x86b.", "setting the state of"),
        # a dotted name reaches attributes of an allowlisted module
        ("dotted-name", _stack_global(b"sklearn.mixture._gaussian_mixture", b"GaussianMixture.__init__"),
         "GaussianMixture.__init__"),
        # an object-dtype numpy scalar whose bytes numpy would read as a pointer
        ("object-scalar",
         b"cnumpy._core.multiarray\nscalar\n(cnumpy\ndtype\n(S'O8'\nI00\nI01\ntR(I3\nS'|'\nNNNI-1\nI-1\nI63\ntbC\x08AAAAAAAAtR.",
         "numpy object scalars"),
        # a float dtype whose state claims the 'has objects' flags
        ("dtype-flags", b"cnumpy\ndtype\n(S'f8'\nI00\nI01\ntR(I3\nS'<'\nNNNI-1\nI-1\nI63\ntb.", "numpy dtype flags"),
        # _codecs.encode used for something other than bytes
        ("codecs", b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.", "_codecs.encode"),
    ],
)
def test_restricted_opcodes(name, data, message, tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    before = dict(vars(GaussianMixture))
    with pytest.raises(UnsafeFileError) as excinfo:
        gio.load_estimator(path)
    assert message in str(excinfo.value) and "model.pkl" in str(excinfo.value)
    assert dict(vars(GaussianMixture)) == before


def test_joblib_pre_0_10_format_is_refused(tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(b"ZF0x00000000000000" + os.urandom(32))
    with pytest.raises(InputFileError, match="joblib < 0.10"):
        gio.load_estimator(path)


def test_joblib_array_larger_than_file_is_refused_without_allocating(tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(np.zeros((4, 3)), path, protocol=2)  # protocol 2: no frames, so the record can be edited in place
    data = path.read_bytes()
    shape = b"K\x04K\x03\x86"  # the record's shape (4, 3)
    assert data.count(shape) == 1
    # claim a shape of 10**9 × 3 float64 (24 GB) for the same 96 bytes: must fail before allocating
    path.write_bytes(data.replace(shape, b"J" + (10**9).to_bytes(4, "little") + b"K\x03\x86"))
    with pytest.raises(InputFileError, match="24000000000 bytes claimed but only 97 left"):
        gio.load_estimator(path)


def test_pickle_bytearray_claiming_more_than_the_file_is_refused(tmp_path):
    """pickle's own BYTEARRAY8 allocates the claimed length (here 16 GiB) before reading."""
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x05\x96" + (1 << 34).to_bytes(8, "little") + b"abc.")
    with pytest.raises(InputFileError, match="a byte array of 17179869184 bytes in a file of 15"):
        gio.load_estimator(path)


def test_skops_array_claiming_more_than_it_holds_is_refused(X, tmp_path):
    import skops.io as sio

    path = tmp_path / "model.skops"
    sio.dump(_gm(X), path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    name = next(n for n in members if n.endswith(".npy"))
    buf = io.BytesIO()  # a header claiming 10**9 float64 values (8 GB), followed by 16 bytes
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    members[name] = buf.getvalue() + b"\x00" * 16
    with zipfile.ZipFile(path, "w") as zf:
        for n, content in members.items():
            zf.writestr(n, content)
    with pytest.raises(InputFileError, match=f"array {name} claims more data than it holds"):
        gio.load_estimator(path)


def test_decompression_bomb_is_capped(tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(np.zeros(1_000_000), path, compress=9)  # 8 MB of zeros, a few KB compressed
    assert path.stat().st_size < 100_000
    with pytest.raises(InputFileError, match="decompresses to more than 1000000 bytes"):
        gio.load_estimator(path, max_bytes=1_000_000)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the child's peak RSS from /proc")
def test_compressed_joblib_peaks_near_its_decompressed_size(tmp_path):
    """The stream is held once: arrays are views of it, not copies (the peak was ~4x the arrays)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "load_memory.py"
    spec = importlib.util.spec_from_file_location("gmmnet_benchmarks_load_memory", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "big.joblib"
    assert bench.write_model(str(path), 96) < 1 << 20  # a small file ...
    r = bench.measure(str(path))
    assert r["array_bytes"] == 96 << 20  # ... that holds 96 MiB
    assert r["growth"] < 1.3 * r["array_bytes"] + (24 << 20), r


def test_pickle_file_size_cap(X, tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_gm(X)))
    with pytest.raises(InputFileError, match="too large"):
        gio.load_estimator(path, max_bytes=100)


def test_method_shadowing_state_is_refused(X, tmp_path):
    gm = _gm(X)
    gm.__dict__["score_samples"] = np.zeros(3)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(gm))
    with pytest.raises(UnsafeFileError, match="replaces the method 'score_samples'"):
        gio.load_estimator(path)


def test_tampered_fitted_attribute_is_invalid(X, tmp_path):
    gm = _gm(X)
    gm.precisions_cholesky_ = gm.precisions_cholesky_[:1]
    path = tmp_path / "model.joblib"
    joblib.dump(gm, path)
    with pytest.raises(InvalidModelError, match=r"precisions_cholesky_ has shape \(1, 4, 4\), expected \(2, 4, 4\)"):
        gio.load_estimator(path)


def test_unfitted_mixture_is_not_fitted(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(GaussianMixture(3)))
    with pytest.raises(NotFittedError, match="unfitted GaussianMixture"):
        gio.load_estimator(path)


def test_register_safe_class_extends_the_allowlist(X, tmp_path, monkeypatch):
    monkeypatch.setattr(safe_pickle, "_SAFE_CLASSES", dict(safe_pickle._SAFE_CLASSES))
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(MyMixture(7)))
    with pytest.raises(UnsafeFileError, match=f"refusing to load {__name__}.MyMixture"):
        gio.load_estimator(path)
    gio.register_safe_class(__name__, "MyMixture")
    assert f"{__name__}.MyMixture" in gio.safe_classes()
    back = gio.load_estimator(path)
    assert type(back) is MyMixture and back.k == 7
    with pytest.raises(ValueError):
        gio.register_safe_class("os", "system; rm")


class MyMixture:
    def __init__(self, k):
        self.k = k


# ---------------------------------------------------------------------------
# every legitimate estimator loads and predicts identically


LEGIT_FORMATS = ["pkl-p2", "pkl-p3", "pkl-p4", "pkl-p5", "joblib", "joblib-zlib3", "joblib-gzip", "joblib-bz2",
                 "joblib-xz", "skops"]


def _save_legit(fmt, est, tmp_path):
    import skops.io as sio

    if fmt.startswith("pkl"):
        path = tmp_path / "model.pkl"
        path.write_bytes(pickle.dumps(est, protocol=int(fmt[-1])))
    elif fmt.startswith("joblib"):
        path = tmp_path / "model.joblib"
        compress = {"joblib": 0, "joblib-zlib3": 3, "joblib-gzip": "gzip", "joblib-bz2": "bz2", "joblib-xz": "xz"}[fmt]
        joblib.dump(est, path, compress=compress)
    else:
        path = tmp_path / "model.skops"
        sio.dump(est, path)
    return path


@pytest.mark.parametrize("fmt", LEGIT_FORMATS)
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("cls", ["GaussianMixture", "BayesianGaussianMixture"])
def test_every_legit_estimator_loads_and_predicts_identically(cls, ct, fmt, fitted, X, tmp_path):
    est = fitted[cls, ct]
    path = _save_legit(fmt, est, tmp_path)
    back = gio.load_model(path)
    assert type(back) is type(est)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(back.score_samples(X), est.score_samples(X))


@pytest.mark.parametrize("fmt", ["pkl-p0", "pkl-p1", "pkl-p4", "joblib", "joblib-gzip", "skops"])
def test_legit_extras_random_state_and_feature_names(fmt, X, tmp_path):
    """A RandomState parameter and string feature names (an object array) are legitimate too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = BayesianGaussianMixture(n_components=2, random_state=np.random.RandomState(3), max_iter=20).fit(X)
    est.feature_names_in_ = np.array(["sepal length", "sepal width", "petal length", "petal width"], dtype=object)
    path = _save_legit(fmt, est, tmp_path)
    back = gio.load_estimator(path)
    assert list(back.feature_names_in_) == list(est.feature_names_in_)
    assert isinstance(back.random_state, np.random.RandomState)
    assert back.random_state.randint(1 << 30) == est.random_state.randint(1 << 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # X is an array, the model was "fitted" with feature names
        np.testing.assert_array_equal(back.score_samples(X), est.score_samples(X))


@pytest.mark.parametrize("fmt", ["pkl-p4", "joblib-zlib3", "skops"])
def test_hierarchical_mixture_loads(fmt, X, tmp_path):
    from gmmnet import hierarchy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = hierarchy.HierarchicalGaussianMixture("3:full,2:diag", random_state=0).fit(X)
    path = _save_legit(fmt, h, tmp_path)
    back = gio.load_estimator(path)
    np.testing.assert_array_equal(back.score_samples(X), h.score_samples(X))


# ---------------------------------------------------------------------------
# ONNX external data


def _onnx_model(tmp_path, name="model.onnx", location="weights.bin"):
    """A model whose weight W lives in an external file; returns (path, W)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"]), helper.make_node("Abs", ["Y"], ["Z"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=0)
    return path, w


def _set_location(path, location, **extra):
    import onnx

    model = onnx.load(path, load_external_data=False)
    tensor = model.graph.initializer[0]
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location
        elif entry.key in extra:
            entry.value = str(extra.pop(entry.key))
    for key, value in extra.items():
        tensor.external_data.add(key=key, value=str(value))
    path.write_bytes(model.SerializeToString())


def test_onnx_external_data_inside_folder_loads(tmp_path):
    from onnx import numpy_helper

    path, w = _onnx_model(tmp_path)
    model = gio.load_onnx(path)
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), w)


def test_onnx_external_data_in_subfolder_loads(tmp_path):
    from onnx import numpy_helper

    (tmp_path / "data").mkdir()
    path, w = _onnx_model(tmp_path, location="data/weights.bin")
    np.testing.assert_array_equal(numpy_helper.to_array(gio.load_onnx(path).graph.initializer[0]), w)


def test_onnx_absolute_external_path_is_refused(tmp_path):
    path, _ = _onnx_model(tmp_path)
    _set_location(path, str(tmp_path / "weights.bin"))  # absolute, even though it is the right file
    with pytest.raises(UnsafeFileError, match="absolute path"):
        gio.load_onnx(path)


@pytest.mark.parametrize("location", ["/etc/passwd", "C:\\Windows\\win.ini", "\\\\server\\share\\w.bin"])
def test_onnx_absolute_external_paths_of_any_style_are_refused(location, tmp_path):
    path, _ = _onnx_model(tmp_path)
    _set_location(path, location)
    with pytest.raises(UnsafeFileError, match="absolute path") as excinfo:
        gio.load_onnx(path)
    assert "model.onnx" in str(excinfo.value)


@pytest.mark.parametrize("location", ["../outside.bin", "data/../../outside.bin", "..\\outside.bin"])
def test_onnx_dotdot_escape_is_refused(location, tmp_path):
    inner = tmp_path / "models"
    inner.mkdir()
    (inner / "data").mkdir()
    (tmp_path / "outside.bin").write_bytes(np.zeros(12, np.float32).tobytes())
    path, _ = _onnx_model(inner)
    _set_location(path, location)
    with pytest.raises(UnsafeFileError, match=r"'\.\.'"):
        gio.load_onnx(path)


def test_onnx_symlink_out_of_folder_is_refused(tmp_path):
    inner = tmp_path / "models"
    inner.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(12, np.float32).tobytes())
    path, _ = _onnx_model(inner)
    (inner / "link.bin").symlink_to(secret)
    _set_location(path, "link.bin")
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        gio.load_onnx(path)


def test_onnx_missing_external_file(tmp_path):
    path, _ = _onnx_model(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(InputFileError, match="external data file 'weights.bin' of tensor 'W' is missing"):
        gio.load_onnx(path)


def test_onnx_external_range_past_end_of_file(tmp_path):
    path, _ = _onnx_model(tmp_path)
    _set_location(path, "weights.bin", offset=40, length=48)
    with pytest.raises(InputFileError, match="reads bytes 40..88 of 'weights.bin', which has 48 bytes"):
        gio.load_onnx(path)


def test_onnx_oversized_external_data(tmp_path):
    path, _ = _onnx_model(tmp_path)
    with pytest.raises(InputFileError, match="external data is larger than the limit of 10 bytes"):
        gio.load_onnx(path, max_external_bytes=10)


def test_onnx_oversized_model(tmp_path):
    path, _ = _onnx_model(tmp_path)
    with pytest.raises(InputFileError, match="too large"):
        gio.load_onnx(path, max_bytes=16)


def test_onnx_truncated_protobuf(tmp_path):
    path, _ = _onnx_model(tmp_path)
    data = path.read_bytes()
    for cut in (1, 7, len(data) // 2, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(InputFileError, match="model.onnx"):
            gio.load_onnx(path)


def test_onnx_random_bytes(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "model.onnx"
    for size in (1, 10, 100, 1000, 10_000):
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(InputFileError, match="model.onnx"):
            gio.load_onnx(path)


def test_onnx_empty_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    with pytest.raises(InputFileError, match="is empty"):
        gio.load_onnx(path)


# ---------------------------------------------------------------------------
# JSON IR


def _ir_text(X) -> str:
    from gmmnet.formats.sklearn import from_sklearn

    return from_sklearn(_gm(X)).model_dump_json()


def test_ir_oversized(X, tmp_path):
    path = tmp_path / "model.json"
    path.write_text(_ir_text(X))
    with pytest.raises(InputFileError, match="too large"):
        gio.load_ir(path, max_bytes=100)


@pytest.mark.parametrize("text", ['{"kind": "mixture", ', "not json", "[1, 2", '{"a": 1,}'])
def test_ir_malformed(text, tmp_path):
    path = tmp_path / "model.json"
    path.write_text(text)
    with pytest.raises(InputFileError, match="model.json: not valid JSON"):
        gio.load_ir(path)


def test_ir_invalid_eigenvalue_names_the_field(X, tmp_path):
    from gmmnet.ir import _from_array

    doc = json.loads(_ir_text(X))
    doc["components"][1]["eigenvalues"] = _from_array(np.array([1.0, -2.0, 3.0, 4.0]))
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidModelError) as excinfo:
        gio.load_ir(path)
    msg = str(excinfo.value)
    assert "model.json" in msg and "components.1" in msg and "eigenvalues must be > 0" in msg, msg


def test_ir_wrong_type_names_the_field(X, tmp_path):
    doc = json.loads(_ir_text(X))
    doc["n_features"] = "four"
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidModelError, match="n_features"):
        gio.load_ir(path)


# ---------------------------------------------------------------------------
# atomic writes


def test_crash_mid_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.onnx"

    def writer(f):
        f.write(b"partial" * 1000)
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        gio.atomic_write(target, writer)
    assert list(tmp_path.iterdir()) == []


def test_crash_mid_overwrite_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def writer(f):
        f.write(b"new, half written")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gio.atomic_write(target, writer, force=True)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_output_equal_to_input_is_refused_even_with_force(tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"input")
    (tmp_path / "sub").mkdir()
    for out in (src, tmp_path / "sub" / ".." / "model.onnx", os.path.relpath(src)):
        with pytest.raises(OutputExistsError, match="it is the input file"):
            gio.atomic_write(out, b"x", force=True, inputs=[src])
    link = tmp_path / "alias.onnx"
    link.symlink_to(src)
    with pytest.raises(OutputExistsError, match="it is the input file"):
        gio.atomic_write(link, b"x", force=True, inputs=[src])
    assert src.read_bytes() == b"input"


def test_existing_output_needs_force(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match=r"out.json exists; use --force to overwrite it"):
        gio.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    gio.atomic_write(target, b"new", force=True)
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_save_functions_refuse_existing_and_input(X, tmp_path):
    est = _gm(X)
    out = tmp_path / "m.skops"
    gio.save_estimator(est, out)
    with pytest.raises(OutputExistsError, match="--force"):
        gio.save_estimator(est, out)
    with pytest.raises(OutputExistsError, match="input"):
        gio.save_estimator(est, out, force=True, inputs=[out])
