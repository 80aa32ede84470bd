"""Safe loading and saving of every file gmmnet reads or writes.

Model files are untrusted input.  A pickle can run any code while it loads, so gmmnet never
calls :func:`pickle.load` or :func:`joblib.load` on a user's file:

* ``.pkl`` / ``.pickle`` / ``.joblib`` go through :class:`SafeUnpickler`, a restricted
  unpickler that resolves only an allowlist of globals (scikit-learn's mixture classes,
  gmmnet's own estimators, numpy arrays, dtypes and scalars, the legacy ``RandomState``) and
  also restricts *what may be called* on them (see docs/security.md).  Everything else is
  refused with :class:`~gmmnet.errors.UnsafeFileError` when the unpickler first meets it,
  before that global is imported, let alone called.  joblib's container format (raw array
  bytes between pickle opcodes, optional compression) is read by the same class: joblib's
  own unpickler is never used.
* ``.skops`` files are loaded with :func:`skops.io.load` and an explicit ``trusted`` list
  computed from :func:`skops.io.get_untrusted_types`; unknown types are refused.
* ONNX files are loaded without external data; every external-data location is checked
  (relative, no ``..``, no symlink out of the model's folder, exists, within size caps)
  before the data is read.
* JSON IR documents are size-capped and validated by :mod:`gmmnet.ir`.

Every failure is a :class:`~gmmnet.errors.GmmnetError` with a one-line message naming the
file.  Writers go through :func:`atomic_write`: a temp file in the same folder, fsync,
then an atomic rename; an existing output needs ``force=True`` and an output that is one of
the inputs is always refused.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import contextlib
import csv
import importlib
import io
import json
import math
import os
import pickle
import stat
import struct
import sys
import tempfile
import threading
import tokenize
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, Union

import numpy as np

from .errors import (
    DataError,
    GmmnetError,
    InputFileError,
    InvalidModelError,
    NotFittedError,
    OutputExistsError,
    OutputFileError,
    UnsafeFileError,
    UnsupportedModelError,
    UsageError,
)

__all__ = [
    "ESTIMATOR_SUFFIXES",
    "MAX_ESTIMATOR_BYTES",
    "MAX_IR_BYTES",
    "MAX_ONNX_BYTES",
    "MAX_ONNX_EXTERNAL_BYTES",
    "MODEL_SUFFIXES",
    "SafeUnpickler",
    "atomic_write",
    "load_data",
    "load_estimator",
    "load_ir",
    "load_model",
    "load_onnx",
    "register_safe_class",
    "safe_classes",
    "same_file",
    "save_estimator",
    "save_ir",
    "save_onnx",
]

PathLike = Union[str, "os.PathLike[str]"]

GiB = 1 << 30
#: Largest pickle/joblib/skops file, and largest decompressed joblib stream / unzipped skops content.
MAX_ESTIMATOR_BYTES = 1 * GiB
#: Largest JSON IR document.
MAX_IR_BYTES = 1 * GiB
#: Largest ONNX protobuf (protobuf itself cannot parse messages of 2 GiB or more).
MAX_ONNX_BYTES = 2 * GiB - 1
#: Largest total size of the external data files of one ONNX model.
MAX_ONNX_EXTERNAL_BYTES = 4 * GiB

PICKLE_SUFFIXES = (".pkl", ".pickle")
JOBLIB_SUFFIXES = (".joblib",)
SKOPS_SUFFIXES = (".skops",)
ESTIMATOR_SUFFIXES = PICKLE_SUFFIXES + JOBLIB_SUFFIXES + SKOPS_SUFFIXES
IR_SUFFIXES = (".json",)
ONNX_SUFFIXES = (".onnx",)
MODEL_SUFFIXES = ESTIMATOR_SUFFIXES + IR_SUFFIXES + ONNX_SUFFIXES
DATA_SUFFIXES = (".npy", ".csv")

_REFUSAL_HINT = "only scikit-learn mixture classes and numpy arrays are allowed"


# ---------------------------------------------------------------------------
# small helpers


def _name(path: PathLike) -> str:
    return os.fspath(path)


def _short(text: str, limit: int = 60) -> str:
    text = str(text).replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problem(exc: BaseException) -> str:
    """A short one-line description of a low-level exception."""
    msg = _short(str(exc), 120)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _check_readable(path: PathLike, what: str = "file") -> os.stat_result:
    """stat() a file that is about to be read; InputFileError if it is missing or not a file."""
    name = _name(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(f"{name}: no such {what}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {name}: {exc.strerror or _problem(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(f"{name} is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{name} is not a regular {what}")
    return st


def _read_capped(path: PathLike, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file, refusing files larger than ``max_bytes``."""
    name = _name(path)
    st = _check_readable(path)
    if st.st_size > max_bytes:
        raise InputFileError(f"{name} is too large for a {what} ({st.st_size} bytes, limit {max_bytes})")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise InputFileError(f"cannot read {name}: {exc.strerror or _problem(exc)}") from None
    if len(data) > max_bytes:
        raise InputFileError(f"{name} is too large for a {what} (over {max_bytes} bytes)")
    if not data:
        raise InputFileError(f"{name} is empty")
    return data


def _suffix(path: PathLike) -> str:
    return Path(_name(path)).suffix.lower()


# ---------------------------------------------------------------------------
# The allowlist

#: Estimator classes a model file may contain, as (module, qualified name) the way pickle and
#: skops name them.  Extend with :func:`register_safe_class`.
_SAFE_CLASSES: dict[tuple[str, str], None] = {
    ("sklearn.mixture._gaussian_mixture", "GaussianMixture"): None,
    ("sklearn.mixture._bayesian_mixture", "BayesianGaussianMixture"): None,
    ("gmmnet.hierarchy", "HierarchicalGaussianMixture"): None,
}
#: Older scikit-learn module paths (before 0.22) that name the same classes.
_CLASS_ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("sklearn.mixture.gaussian_mixture", "GaussianMixture"): ("sklearn.mixture._gaussian_mixture", "GaussianMixture"),
    ("sklearn.mixture.bayesian_mixture", "BayesianGaussianMixture"): (
        "sklearn.mixture._bayesian_mixture",
        "BayesianGaussianMixture",
    ),
    ("sklearn.mixture", "GaussianMixture"): ("sklearn.mixture._gaussian_mixture", "GaussianMixture"),
    ("sklearn.mixture", "BayesianGaussianMixture"): ("sklearn.mixture._bayesian_mixture", "BayesianGaussianMixture"),
}
_SKLEARN_MIXTURES = (
    ("sklearn.mixture._gaussian_mixture", "GaussianMixture"),
    ("sklearn.mixture._bayesian_mixture", "BayesianGaussianMixture"),
)
_REGISTRY_LOCK = threading.Lock()


def register_safe_class(module: str, name: str) -> None:
    """Allow instances of the class ``module.name`` in pickle, joblib and skops model files.

    The class is then admitted by :func:`load_estimator` like scikit-learn's mixtures: it may
    be created (``cls.__new__(cls)``, no constructor arguments) and given its pickled state
    (``__setstate__`` or ``__dict__`` update), and a file whose top-level object is one of its
    instances counts as a mixture model.  Register only estimator classes whose
    ``__setstate__`` does nothing with the state but store and validate it.

    Parameters
    ----------
    module : str
        The module as pickle names it (``cls.__module__``), e.g. ``"gmmnet.hierarchy"``.
    name : str
        The class's qualified name (``cls.__qualname__``), e.g. ``"HierarchicalGaussianMixture"``.
    """
    if not (isinstance(module, str) and isinstance(name, str)):
        raise TypeError("register_safe_class takes the module and class name as strings")
    if not all(p.isidentifier() for p in module.split(".")) or not name.isidentifier():
        raise ValueError(f"not a module and class name: {module!r}, {name!r}")
    with _REGISTRY_LOCK:
        _SAFE_CLASSES[(module, name)] = None


def safe_classes() -> list[str]:
    """The dotted names of the estimator classes model files may contain."""
    return [f"{m}.{n}" for m, n in _SAFE_CLASSES]


def _canonical_class(module: str, name: str) -> tuple[str, str] | None:
    key = _CLASS_ALIASES.get((module, name), (module, name))
    return key if key in _SAFE_CLASSES else None


def _import_class(module: str, name: str, source: str) -> type:
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise InputFileError(f"cannot load {source}: it needs {module}.{name}, which is not available here") from None
    if not isinstance(obj, type):
        raise UnsafeFileError(f"refusing to load {module}.{name} from {source}: the allowlisted name is not a class")
    return obj


def _is_safe_instance(obj: Any) -> bool:
    t = type(obj)
    return (getattr(t, "__module__", None), getattr(t, "__qualname__", None)) in _SAFE_CLASSES


# ---------------------------------------------------------------------------
# numpy reconstruction, checked

_DTYPE_KINDS = "biufcOUS"  # bool, int, uint, float, complex, object, str, bytes — no void/structured/datetime
_MAX_ITEMSIZE = 1 << 20


class _Refused(Exception):
    """Raised inside the unpickler for content that is not allowed (becomes UnsafeFileError)."""


class _Corrupt(Exception):
    """Raised inside the unpickler for content that is malformed (becomes InputFileError)."""


def _check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise _Corrupt(f"expected a numpy dtype, got {type(dtype).__name__}")
    if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"numpy dtype {dtype.str!r} (only plain numeric, string and object dtypes are allowed)")
    if dtype.itemsize > _MAX_ITEMSIZE:
        raise _Corrupt(f"numpy dtype {dtype.str!r} is implausibly large")
    return dtype


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(type(s) is int and s >= 0 for s in shape):
        raise _Corrupt("invalid array shape")
    return shape


def _safe_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype(obj, align, copy)`` for the type strings numpy pickles dtypes with."""
    if not isinstance(obj, str) or len(obj) > 16:
        raise _Refused("numpy.dtype called with something other than a type code")
    if not isinstance(align, bool) or not isinstance(copy, bool):
        raise _Corrupt("invalid numpy.dtype arguments")
    try:
        dtype = np.dtype(obj, align, copy)
    except TypeError as exc:
        raise _Corrupt(f"invalid numpy dtype {obj!r}") from exc
    return _check_dtype(dtype)


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's ``_reconstruct``: an empty ndarray that BUILD then fills."""
    if subtype is not np.ndarray:
        raise _Refused("numpy _reconstruct of something other than numpy.ndarray")
    shape = _check_shape(shape)
    if math.prod(shape) != 0 or typecode not in (b"b", "b"):
        raise _Corrupt("unexpected numpy _reconstruct arguments")
    return _RECONSTRUCT(np.ndarray, shape, typecode)


def _safe_scalar(dtype: Any, data: Any = None) -> np.generic:
    """numpy's ``scalar(dtype, bytes)`` for non-object dtypes."""
    dtype = _check_dtype(dtype)
    if dtype.hasobject:
        raise _Refused("numpy object scalars")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Corrupt("invalid numpy scalar data")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's ``_frombuffer`` (pickle protocol 5) with the size checked."""
    dtype = _check_dtype(dtype)
    shape = _check_shape(shape)
    if dtype.hasobject:
        raise _Refused("numpy object arrays from raw buffers")
    if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F", "A", "K"):
        raise _Corrupt("invalid numpy buffer")
    if len(buf) != math.prod(shape) * dtype.itemsize:
        raise _Corrupt("numpy buffer size does not match its shape")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if order == "F" else "C")


def _check_ndarray_state(state: Any) -> None:
    """Validate ``ndarray.__setstate__`` input before numpy sees it."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise _Corrupt("invalid numpy array state")
    if len(state) == 5:
        if type(state[0]) is not int:
            raise _Corrupt("invalid numpy array state")
        state = state[1:]
    shape, dtype, fortran, data = state
    shape = _check_shape(shape)
    dtype = _check_dtype(dtype)
    if not isinstance(fortran, bool):
        raise _Corrupt("invalid numpy array state")
    n = math.prod(shape)
    if dtype.hasobject:
        if type(data) is not list or len(data) != n:
            raise _Corrupt("numpy object array state does not match its shape")
    elif not isinstance(data, (bytes, bytearray)) or len(data) != n * dtype.itemsize:
        raise _Corrupt("numpy array data does not match its shape")


def _check_dtype_state(dtype: np.dtype, state: Any) -> None:
    """Validate ``dtype.__setstate__`` input: plain dtypes only, flags as numpy itself sets them."""
    if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
        raise _Corrupt("invalid numpy dtype state")
    _, byteorder, subarray, names, fields, elsize, alignment, flags = state[:8]
    if byteorder not in ("<", ">", "|", "="):
        raise _Corrupt("invalid numpy dtype byte order")
    if subarray is not None or names is not None or fields is not None:
        raise _Refused("structured numpy dtypes")
    if len(state) == 9 and state[8] not in (None, {}):
        raise _Refused("numpy dtype metadata")
    if type(flags) is not int or flags != dtype.flags:
        raise _Refused("numpy dtype flags that differ from the dtype's own")
    if type(elsize) is not int or type(alignment) is not int:
        raise _Corrupt("invalid numpy dtype state")
    if dtype.kind in "US":
        unit = 4 if dtype.kind == "U" else 1
        if not 0 <= elsize <= _MAX_ITEMSIZE or elsize % unit or alignment != dtype.alignment:
            raise _Corrupt("invalid numpy string dtype size")
    elif elsize != -1 or alignment != -1:
        raise _Corrupt("invalid numpy dtype state")


def _safe_codecs_encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode(str, 'latin1')``: how pickle protocols 0–2 store bytes."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "iso-8859-1") or errors != "strict":
        raise _Refused("_codecs.encode other than latin-1 text to bytes")
    return codecs.encode(obj, "latin1")


# legacy numpy RandomState (scikit-learn's random_state parameter may hold one)
_BIT_GENERATORS = {
    ("numpy.random._mt19937", "MT19937"): "MT19937",
    ("numpy.random._pcg64", "PCG64"): "PCG64",
    ("numpy.random._pcg64", "PCG64DXSM"): "PCG64DXSM",
    ("numpy.random._philox", "Philox"): "Philox",
    ("numpy.random._sfc64", "SFC64"): "SFC64",
}


def _bit_generator_class(spec: Any) -> type:
    classes = {n: getattr(np.random, n) for n in _BIT_GENERATORS.values()}
    if isinstance(spec, str) and spec in classes:
        return classes[spec]
    if isinstance(spec, type) and spec in classes.values():
        return spec
    raise _Refused("an unknown numpy bit generator")


def _safe_bit_generator_ctor(bit_generator: Any = "MT19937") -> Any:
    return _bit_generator_class(bit_generator)()


def _safe_randomstate_ctor(bit_generator_name: Any = "MT19937", bit_generator_ctor: Any = None) -> np.random.RandomState:
    if bit_generator_ctor not in (None, _safe_bit_generator_ctor):
        raise _Refused("a RandomState with a custom bit generator constructor")
    if isinstance(bit_generator_name, np.random.BitGenerator):
        _bit_generator_class(type(bit_generator_name))
        return np.random.RandomState(bit_generator_name)
    return np.random.RandomState(_bit_generator_class(bit_generator_name)())


def _safe_legacy_randomstate_ctor() -> np.random.RandomState:
    return np.random.RandomState(0)


def _safe_copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocols 0 and 1) for allowlisted classes only."""
    if base is not object or state is not None:
        raise _Refused("copyreg._reconstructor with a base other than object")
    return _new_instance(cls, ())


def _new_instance(cls: Any, args: Any, kwargs: Any = None) -> Any:
    if not isinstance(cls, type) or not (_is_safe_class(cls) or cls is _joblib_wrapper_class()):
        raise _Refused(f"creating instances of {_describe(cls)}")
    if args or kwargs:
        raise _Refused(f"passing constructor arguments to {_describe(cls)}")
    return cls.__new__(cls)


def _is_safe_class(cls: type) -> bool:
    return (getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)) in _SAFE_CLASSES


def _describe(obj: Any) -> str:
    if isinstance(obj, type) or callable(obj):
        mod = getattr(obj, "__module__", None) or "?"
        return f"{mod}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    return type(obj).__name__


_JOBLIB_WRAPPER: list = []


def _joblib_wrapper_class() -> type | None:
    if not _JOBLIB_WRAPPER:
        try:
            from joblib.numpy_pickle import NumpyArrayWrapper
        except ImportError:  # pragma: no cover - joblib ships with scikit-learn
            NumpyArrayWrapper = None
        _JOBLIB_WRAPPER.append(NumpyArrayWrapper)
    return _JOBLIB_WRAPPER[0]


# The allowlist besides the estimator classes.  _FUNCTIONS: (module, name) → the checked stand-in
# that find_class returns; these are the only things REDUCE may call.  _REFERENCES: globals that
# may only be referenced (passed to an allowed call or record), never called or built.
_FUNCTIONS: dict[tuple[str, str], Callable] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _FUNCTIONS[(_mod, "_reconstruct")] = _safe_reconstruct
    _FUNCTIONS[(_mod, "scalar")] = _safe_scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _FUNCTIONS[(_mod, "_frombuffer")] = _safe_frombuffer
_FUNCTIONS[("numpy", "dtype")] = _safe_dtype
_FUNCTIONS[("_codecs", "encode")] = _safe_codecs_encode
_FUNCTIONS[("copyreg", "_reconstructor")] = _safe_copyreg_reconstructor
_FUNCTIONS[("numpy.random._pickle", "__bit_generator_ctor")] = _safe_bit_generator_ctor
_FUNCTIONS[("numpy.random._pickle", "__randomstate_ctor")] = _safe_randomstate_ctor
_FUNCTIONS[("numpy.random", "__RandomState_ctor")] = _safe_legacy_randomstate_ctor
del _mod
_CALLABLE = frozenset(_FUNCTIONS.values())

_REFERENCES: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("builtins", "object"): lambda: object,
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _joblib_wrapper_class,
}
for _key in _BIT_GENERATORS:
    _REFERENCES[_key] = (lambda n=_BIT_GENERATORS[_key]: getattr(np.random, n))
del _key

_JOBLIB_WRAPPER_KEYS = frozenset({"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"})


# ---------------------------------------------------------------------------
# The restricted unpickler


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be overridden
    """An unpickler that builds only allowlisted objects.

    * ``find_class`` resolves only the allowlist (estimator classes from
      :func:`register_safe_class` and a fixed set of numpy / joblib / pickle helpers); any
      other global raises :class:`~gmmnet.errors.UnsafeFileError` before it is imported.
    * REDUCE may call only gmmnet's checked stand-ins for numpy's reconstruction helpers;
      NEWOBJ / INST / OBJ may only create allowlisted estimator classes, without arguments;
      BUILD may only set the state of the objects those create.
    * joblib's ``NumpyArrayWrapper`` records are read here, with sizes checked; object arrays
      nested inside a joblib file go through a fresh ``SafeUnpickler``.  joblib's own
      unpickler, and its pre-0.10 companion-file format, are never used.

    Parameters
    ----------
    file : binary file object (an in-memory buffer: sizes are checked against what is left)
    source : str
        File name for messages.
    """

    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, file: io.BytesIO, source: str = "<pickle>", _depth: int = 0) -> None:
        super().__init__(file, fix_imports=True, encoding="ASCII", errors="strict")
        self._raw = file
        self._source = source
        self._depth = _depth

    # -- sizes -------------------------------------------------------------------
    def _load_bytearray8(self) -> None:
        # pickle's own version allocates the claimed length (up to 2**64) before reading
        (n,) = struct.unpack("<Q", self.read(8))
        if n > len(self._raw.getbuffer()):
            raise _Corrupt(f"a byte array of {n} bytes in a file of {len(self._raw.getbuffer())}")
        data = self.read(n)
        if len(data) != n:
            raise _Corrupt("pickle data was truncated")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    # -- globals ---------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        sys.audit("pickle.find_class", module, name)
        if self.proto < 3 and self.fix_imports:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in _FUNCTIONS:
            return _FUNCTIONS[key]
        if key in _REFERENCES:
            obj = _REFERENCES[key]()
            if obj is None:  # pragma: no cover - joblib missing
                raise InputFileError(f"cannot load {self._source}: it needs {module}.{name}, which is not available here")
            return obj
        canonical = _canonical_class(module, name)
        if canonical is not None:
            return _import_class(*canonical, self._source)
        raise UnsafeFileError(f"refusing to load {_short(module, 80)}.{_short(name, 80)} from {self._source}: {_REFUSAL_HINT}")

    # -- calls -------------------------------------------------------------------
    def _load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if func not in _CALLABLE:
            raise _Refused(f"calling {_describe(func)}")
        if not isinstance(args, tuple):
            raise _Corrupt("REDUCE arguments are not a tuple")
        stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = _load_reduce

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(_new_instance(cls, args))

    dispatch[pickle.NEWOBJ[0]] = _load_newobj

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(_new_instance(cls, args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST and OBJ (protocols 0, 1)
        self.append(_new_instance(klass, args))

    # -- state -------------------------------------------------------------------
    def _load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        t = type(inst)
        if t is np.ndarray:
            _check_ndarray_state(state)
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
            inst.__setstate__(state)
        elif t is np.random.RandomState:
            inst.__setstate__(state)  # numpy validates the generator state
        elif t in {getattr(np.random, n) for n in _BIT_GENERATORS.values()}:
            if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
                state = state[0]  # (state, seed sequence): RandomState's generators have none
            if not isinstance(state, dict):
                raise _Refused(f"a {t.__name__} state other than a plain state dict")
            inst.__setstate__(state)
        elif t is _joblib_wrapper_class():
            stack[-1] = self._read_joblib_array(state)
        elif _is_safe_class(t):
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise _Corrupt(f"the state of {_describe(t)} is not a dict of attributes")
            setstate = getattr(inst, "__setstate__", None)
            if setstate is not None:
                setstate(state)
            else:  # pragma: no cover - every scikit-learn estimator has __setstate__
                inst.__dict__.update(state)
        else:
            raise _Refused(f"setting the state of {_describe(inst)}")

    dispatch[pickle.BUILD[0]] = _load_build

    # -- joblib arrays -------------------------------------------------------------
    def _read_joblib_array(self, state: Any) -> np.ndarray:
        if not isinstance(state, dict) or not set(state) <= _JOBLIB_WRAPPER_KEYS or not {
            "subclass", "shape", "order", "dtype"
        } <= set(state):
            raise _Corrupt("invalid joblib array record")
        if state["subclass"] is not np.ndarray:
            raise _Refused("joblib arrays of a numpy.ndarray subclass")
        shape = _check_shape(state["shape"])
        dtype = _check_dtype(state["dtype"])
        order = state["order"]
        if order not in ("C", "F"):
            raise _Corrupt("invalid joblib array order")
        raw = self._raw
        if dtype.hasobject:
            # joblib writes object arrays as a nested pickle stream: read it with the same rules
            if self._depth >= 8:
                raise _Corrupt("joblib object arrays nested too deeply")
            inner = SafeUnpickler(raw, self._source, self._depth + 1)
            arr = inner.load()
            if type(arr) is not np.ndarray or arr.shape != shape or not arr.dtype.hasobject:
                raise _Corrupt("joblib object array does not match its record")
            return arr
        align = state.get("numpy_array_alignment_bytes")
        if align is not None:
            pad = raw.read(1)
            if len(pad) != 1:
                raise _Corrupt("joblib array data ended early")
            if len(raw.read(pad[0])) != pad[0]:
                raise _Corrupt("joblib array data ended early")
        nbytes = math.prod(shape) * dtype.itemsize
        remaining = len(raw.getbuffer()) - raw.tell()
        if nbytes > remaining:
            raise _Corrupt(f"joblib array of {nbytes} bytes but only {remaining} left in the file")
        arr = np.frombuffer(bytearray(raw.read(nbytes)), dtype=dtype)
        arr = arr.reshape(shape[::-1]).T if order == "F" else arr.reshape(shape)
        if dtype.byteorder not in ("=", "|") and dtype.byteorder != ("<" if sys.byteorder == "little" else ">"):
            arr = arr.astype(dtype.newbyteorder("="))
        return arr


# Every exception a malformed stream can raise inside the unpickler or the objects' __setstate__.
_CORRUPT_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    LookupError,
    struct.error,
    OverflowError,
    MemoryError,
    RecursionError,
    UnicodeError,
    AssertionError,
    NotImplementedError,
    zlib.error,
    OSError,
)


def _joblib_compressors() -> list[tuple[str, bytes, Callable]]:
    try:
        from joblib.compressor import _COMPRESSORS  # name → CompressorWrapper(prefix, decompressor_file)
    except ImportError:  # pragma: no cover
        return []
    return [(name, c.prefix, c.decompressor_file) for name, c in _COMPRESSORS.items() if getattr(c, "prefix", None)]


def _decompress_capped(data: bytes, source: str, max_bytes: int) -> bytes:
    """Undo joblib's compression (zlib, gzip, bz2, xz, lzma, lz4), refusing more than max_bytes."""
    if data.startswith(b"ZF"):
        raise InputFileError(
            f"cannot load {source}: it was written by joblib < 0.10, whose format gmmnet does not read; "
            "re-save it with a current joblib or skops"
        )
    for name, prefix, opener in _joblib_compressors():
        if data.startswith(prefix):
            break
    else:
        return data
    out = bytearray()
    try:
        with opener(io.BytesIO(data)) as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                out += chunk
                if len(out) > max_bytes:
                    raise InputFileError(f"{source} decompresses to more than {max_bytes} bytes")
    except GmmnetError:
        raise
    except (*_CORRUPT_ERRORS, ImportError) as exc:
        raise InputFileError(f"cannot load {source}: corrupt {name}-compressed data ({_problem(exc)})") from None
    return bytes(out)


def _unpickle(data: bytes, source: str) -> Any:
    try:
        return SafeUnpickler(io.BytesIO(data), source).load()
    except GmmnetError:
        raise
    except _Refused as exc:
        raise UnsafeFileError(f"refusing to load {source}: it asks for {exc}; {_REFUSAL_HINT}") from None
    except _Corrupt as exc:
        raise InputFileError(f"cannot load {source}: corrupt or truncated pickle ({exc})") from None
    except _CORRUPT_ERRORS as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):  # a gmmnet estimator's __setstate__ validates its IR
            from .ir import format_validation_error

            raise InvalidModelError(f"invalid model in {source}: {format_validation_error(exc)}") from None
        if isinstance(exc, EOFError) or "truncated" in str(exc):
            raise InputFileError(f"cannot load {source}: the file is truncated (pickle data ended early)") from None
        raise InputFileError(f"cannot load {source}: corrupt pickle data ({_problem(exc)})") from None


# ---------------------------------------------------------------------------
# estimators


_COVARIANCE_SHAPES = {
    "full": lambda k, d: (k, d, d),
    "tied": lambda k, d: (d, d),
    "diag": lambda k, d: (k, d),
    "spherical": lambda k, d: (k,),
}
_FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _check_mixture_state(est: Any, source: str) -> None:
    """Structural checks of a loaded scikit-learn mixture, so later code sees sane attributes."""
    cls = type(est).__name__
    for key in vars(est):
        if callable(getattr(type(est), key, None)):
            raise UnsafeFileError(f"refusing to load {source}: its {cls} replaces the method {key!r} with data")
    ct = getattr(est, "covariance_type", None)
    if not isinstance(ct, str) or ct not in _COVARIANCE_SHAPES:
        raise InvalidModelError(f"invalid model in {source}: covariance_type must be one of full, tied, diag, spherical")
    present = [a for a in _FITTED if a in vars(est)]
    if not present:
        raise NotFittedError(f"{source} holds an unfitted {cls}; fit it before saving")
    if len(present) < len(_FITTED):
        missing = next(a for a in _FITTED if a not in present)
        raise InvalidModelError(f"invalid model in {source}: the fitted {cls} has no {missing}")

    def arr(attr: str, shape: tuple[int, ...] | None = None, ndim: int | None = None) -> np.ndarray:
        a = getattr(est, attr)
        if type(a) is not np.ndarray or a.dtype.kind not in "biuf":
            raise InvalidModelError(f"invalid model in {source}: {attr} must be a numeric array")
        if shape is not None and a.shape != shape:
            raise InvalidModelError(f"invalid model in {source}: {attr} has shape {a.shape}, expected {shape}")
        if ndim is not None and a.ndim != ndim:
            raise InvalidModelError(f"invalid model in {source}: {attr} must be {ndim}-D, got shape {a.shape}")
        return a

    w = arr("weights_", ndim=1)
    k = w.shape[0]
    m = arr("means_", ndim=2)
    if m.shape[0] != k or k < 1 or m.shape[1] < 1:
        raise InvalidModelError(f"invalid model in {source}: means_ has shape {m.shape}, expected ({k}, n_features)")
    d = m.shape[1]
    expected = _COVARIANCE_SHAPES[ct](k, d)
    arr("covariances_", expected)
    arr("precisions_cholesky_", expected)
    if "precisions_" in vars(est):
        arr("precisions_", expected)
    if cls == "BayesianGaussianMixture":
        for attr in ("degrees_of_freedom_", "mean_precision_"):
            if attr not in vars(est):
                raise InvalidModelError(f"invalid model in {source}: the fitted {cls} has no {attr}")
        dof = est.degrees_of_freedom_
        if ct == "tied" and isinstance(dof, (float, int, np.floating, np.integer)) and not isinstance(dof, bool):
            pass  # one shared Wishart: a scalar
        else:
            arr("degrees_of_freedom_", (k,))
        arr("mean_precision_", (k,))
        prior = getattr(est, "weight_concentration_prior_type", None)
        wc = getattr(est, "weight_concentration_", None)
        if prior == "dirichlet_process":
            if not (isinstance(wc, (tuple, list)) and len(wc) == 2):
                raise InvalidModelError(f"invalid model in {source}: weight_concentration_ must be a pair of arrays")
            for part in wc:
                if type(part) is not np.ndarray or part.shape != (k,) or part.dtype.kind not in "biuf":
                    raise InvalidModelError(f"invalid model in {source}: weight_concentration_ must be a pair of ({k},) arrays")
        elif prior == "dirichlet_distribution":
            arr("weight_concentration_", (k,))
        else:
            raise InvalidModelError(
                f"invalid model in {source}: weight_concentration_prior_type must be dirichlet_process or dirichlet_distribution"
            )


def _accept_estimator(obj: Any, source: str) -> Any:
    if not _is_safe_instance(obj):
        raise UnsupportedModelError(
            f"{source} holds a {type(obj).__module__}.{type(obj).__qualname__}, "
            "not a scikit-learn GaussianMixture or BayesianGaussianMixture"
        )
    if (type(obj).__module__, type(obj).__qualname__) in _SKLEARN_MIXTURES:
        _check_mixture_state(obj, source)
    return obj


def _load_pickled(data: bytes, source: str, max_bytes: int) -> Any:
    data = _decompress_capped(data, source, max_bytes)
    return _accept_estimator(_unpickle(data, source), source)


def _skops_check_zip(path: PathLike, source: str, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, *_CORRUPT_ERRORS) as exc:
        raise InputFileError(
            f"cannot load {source}: not a valid skops file (not a readable zip archive: {_problem(exc)})"
        ) from None
    if len(infos) > 100_000:
        raise InputFileError(f"cannot load {source}: too many entries in the skops archive ({len(infos)})")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise InputFileError(f"{source} unpacks to {total} bytes, more than the limit of {max_bytes}")
    if "schema.json" not in {i.filename for i in infos}:
        raise InputFileError(f"cannot load {source}: not a skops file (no schema.json)")
    _skops_check_arrays(path, infos, source)


def _skops_check_arrays(path: PathLike, infos: list, source: str) -> None:
    """Read the header of every .npy member: no pickled objects, and no array larger than its member
    (numpy would allocate the claimed size before noticing the data is short)."""
    from numpy.lib import format as npy_format

    try:
        with zipfile.ZipFile(path) as zf:
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = npy_format.read_magic(f)
                    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
                    shape, _, dtype = read_header(f)
                if dtype.hasobject:
                    raise UnsafeFileError(f"refusing to load pickled Python objects inside {source}: {_REFUSAL_HINT}")
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    raise InputFileError(f"cannot load {source}: array {info.filename} claims more data than it holds")
    except GmmnetError:
        raise
    except (zipfile.BadZipFile, SyntaxError, tokenize.TokenError, *_CORRUPT_ERRORS) as exc:
        raise InputFileError(f"cannot load {source}: corrupt skops file ({_problem(exc)})") from None


def _load_skops(path: PathLike, source: str, max_bytes: int) -> Any:
    import skops.io as sio

    _skops_check_zip(path, source, max_bytes)
    # numpy's .npy header parser (inside skops) can also raise SyntaxError and tokenize.TokenError
    errors = (zipfile.BadZipFile, json.JSONDecodeError, ImportError, SyntaxError, tokenize.TokenError, *_CORRUPT_ERRORS)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except GmmnetError:
        raise
    except errors as exc:
        raise InputFileError(f"cannot load {source}: corrupt skops file ({_problem(exc)})") from None
    allowed = set(safe_classes())
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        shown = ", ".join(_short(t, 80) for t in refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise UnsafeFileError(f"refusing to load {shown} from {source}: {_REFUSAL_HINT}")
    trusted = sorted(t for t in untrusted if t in allowed)
    try:
        obj = sio.load(path, trusted=trusted)
    except GmmnetError:
        raise
    except errors as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            from .ir import format_validation_error

            raise InvalidModelError(f"invalid model in {source}: {format_validation_error(exc)}") from None
        if type(exc).__name__ == "UntrustedTypesFoundException":  # pragma: no cover - caught above
            raise UnsafeFileError(f"refusing to load {source}: {_short(str(exc), 160)}") from None
        if isinstance(exc, ValueError) and "pickled" in str(exc):  # an .npy member holding pickled objects
            raise UnsafeFileError(f"refusing to load pickled Python objects inside {source}: {_REFUSAL_HINT}") from None
        raise InputFileError(f"cannot load {source}: corrupt skops file ({_problem(exc)})") from None
    return _accept_estimator(obj, source)


def load_estimator(path: PathLike, *, max_bytes: int = MAX_ESTIMATOR_BYTES) -> Any:
    """Load a fitted scikit-learn mixture (or a registered gmmnet estimator) safely.

    Parameters
    ----------
    path : str or PathLike
        A ``.pkl``/``.pickle`` or ``.joblib`` file (compressed or not; read by
        :class:`SafeUnpickler`), or a ``.skops`` file (:func:`skops.io.load` with an explicit
        trusted list).
    max_bytes : int
        Largest file, and largest decompressed stream or unzipped content.

    Returns
    -------
    estimator
        A ``GaussianMixture``, ``BayesianGaussianMixture`` or registered class instance.

    Raises
    ------
    UnsafeFileError
        The file references anything outside the allowlist (names the refused global).
    InputFileError
        Missing, empty, truncated, corrupt or too large.
    UnsupportedModelError
        The file safely holds something that is not a mixture (a dict, an array, ...).
    NotFittedError, InvalidModelError
        An unfitted mixture, or fitted attributes of the wrong type or shape.
    """
    source = _name(path)
    suffix = _suffix(path)
    if suffix in SKOPS_SUFFIXES:
        st = _check_readable(path)
        if st.st_size == 0:
            raise InputFileError(f"{source} is empty")
        if st.st_size > max_bytes:
            raise InputFileError(f"{source} is too large for a model file ({st.st_size} bytes, limit {max_bytes})")
        return _load_skops(path, source, max_bytes)
    if suffix in PICKLE_SUFFIXES + JOBLIB_SUFFIXES:
        return _load_pickled(_read_capped(path, max_bytes, "model file"), source, max_bytes)
    raise InputFileError(
        f"{source}: unknown estimator file type {suffix or '(no suffix)'!r}; use {', '.join(ESTIMATOR_SUFFIXES)}"
    )


def _serialize_estimator(est: Any, suffix: str, source: str) -> bytes:
    if not _is_safe_instance(est):
        raise UnsupportedModelError(
            f"cannot save a {type(est).__module__}.{type(est).__qualname__} to {source}: "
            "only scikit-learn mixtures and registered gmmnet estimators are saved"
        )
    try:
        if suffix in SKOPS_SUFFIXES:
            import skops.io as sio

            data = sio.dumps(est)
            refused = [t for t in sio.get_untrusted_types(data=data) if t not in set(safe_classes())]
            if refused:
                raise UnsupportedModelError(
                    f"cannot save to {source}: the estimator holds {', '.join(refused[:3])}, which gmmnet would refuse to load"
                )
            return data
        if suffix in PICKLE_SUFFIXES:
            data = pickle.dumps(est, protocol=4)
        elif suffix in JOBLIB_SUFFIXES:
            import joblib

            buf = io.BytesIO()
            joblib.dump(est, buf)
            data = buf.getvalue()
        else:
            raise UsageError(
                f"cannot save an estimator as {source}: unknown suffix {suffix or '(none)'!r}; use .skops, .pkl or .joblib"
            )
    except GmmnetError:
        raise
    except (pickle.PicklingError, TypeError, AttributeError, ValueError) as exc:
        raise UnsupportedModelError(f"cannot save to {source}: {_problem(exc)}") from None
    try:  # never write a file gmmnet itself would refuse to read
        _unpickle(data, source)
    except UnsafeFileError as exc:
        raise UnsupportedModelError(
            f"cannot save to {source}: the estimator holds objects gmmnet refuses to load ({exc})"
        ) from None
    return data


def save_estimator(est: Any, path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> None:
    """Save a fitted mixture as ``.skops`` (recommended), ``.pkl``/``.pickle`` or ``.joblib``.

    The bytes are checked to load with :func:`load_estimator`'s rules before they are written
    (atomically, see :func:`atomic_write`).
    """
    data = _serialize_estimator(est, _suffix(path), _name(path))
    atomic_write(path, data, force=force, inputs=inputs)


# ---------------------------------------------------------------------------
# JSON IR


def load_ir(path: PathLike, *, max_bytes: int = MAX_IR_BYTES):
    """Load and validate a JSON IR document (:class:`~gmmnet.ir.Mixture` or :class:`~gmmnet.ir.Hierarchy`).

    Malformed JSON → :class:`InputFileError`; a document that fails validation →
    :class:`InvalidModelError` naming the first failing field.
    """
    from pydantic import ValidationError

    from .ir import format_validation_error, from_json

    source = _name(path)
    data = _read_capped(path, max_bytes, "JSON document")
    try:
        return from_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err.get("type") == "json_invalid":
            raise InputFileError(f"cannot load {source}: not valid JSON ({_short(err.get('msg', ''), 100)})") from None
        raise InvalidModelError(f"invalid model in {source}: {format_validation_error(exc)}") from None
    except RecursionError:
        raise InputFileError(f"cannot load {source}: JSON nested too deeply") from None
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise InvalidModelError(f"invalid model in {source}: {_problem(exc)}") from None


def save_ir(doc: Any, path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> None:
    """Write an IR document as JSON (atomically)."""
    from .ir import Hierarchy, Mixture

    if not isinstance(doc, (Mixture, Hierarchy)):
        raise UnsupportedModelError(
            f"cannot save a {type(doc).__name__} as an IR document: expected a gmmnet Mixture or Hierarchy"
        )
    atomic_write(path, doc.model_dump_json(indent=2).encode("utf-8") + b"\n", force=force, inputs=inputs)


# ---------------------------------------------------------------------------
# ONNX


def _onnx_tensors(model) -> Iterable:
    """Every TensorProto of a model: initializers, sparse initializers, attribute tensors, subgraphs, functions."""

    def graph_tensors(g, depth: int):
        if depth > 64:
            raise InputFileError("ONNX subgraphs nested too deeply")
        yield from g.initializer
        for sp in g.sparse_initializer:
            yield sp.values
            yield sp.indices
        for node in g.node:
            yield from node_tensors(node, depth)

    def node_tensors(node, depth: int):
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            for sp in a.sparse_tensors:
                yield sp.values
                yield sp.indices
            if a.HasField("g"):
                yield from graph_tensors(a.g, depth + 1)
            for sub in a.graphs:
                yield from graph_tensors(sub, depth + 1)

    yield from graph_tensors(model.graph, 0)
    for fn in model.functions:
        for node in fn.node:
            yield from node_tensors(node, 1)
    for ti in model.training_info:
        yield from graph_tensors(ti.initialization, 1)
        yield from graph_tensors(ti.algorithm, 1)


def _is_unsafe_location(location: str) -> str | None:
    """Why an external-data location may not be used, or None."""
    if not location:
        return "an empty location"
    if "\x00" in location:
        return "a location with a NUL byte"
    if os.path.isabs(location) or PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute() \
            or PureWindowsPath(location).drive or location.startswith(("/", "\\")):
        return "an absolute path"
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        return "a path with '..'"
    return None


def _check_external_data(model, source: str, base_dir: str, max_external_bytes: int) -> int:
    """Check every external-data reference; return the number of external tensors."""
    from onnx import TensorProto

    base_real = os.path.realpath(base_dir)
    total = 0
    count = 0
    sizes: dict[str, int] = {}
    for t in _onnx_tensors(model):
        if not (t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL):
            continue
        count += 1
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        tname = _short(t.name or "(unnamed)", 60)
        why = _is_unsafe_location(location)
        if why:
            raise UnsafeFileError(
                f"refusing to load {source}: tensor {tname!r} points its data at {why} "
                f"({_short(location, 80)!r}); external data must be a file in the model's folder"
            )
        resolved = os.path.realpath(os.path.join(base_real, location))
        if os.path.commonpath([resolved, base_real]) != base_real:
            raise UnsafeFileError(
                f"refusing to load {source}: the external data {_short(location, 80)!r} of tensor {tname!r} "
                "resolves (through a symbolic link) to a file outside the model's folder"
            )
        if resolved not in sizes:
            try:
                st = os.stat(resolved)
            except FileNotFoundError:
                raise InputFileError(
                    f"cannot load {source}: external data file {_short(location, 80)!r} of tensor {tname!r} is missing"
                ) from None
            except OSError as exc:
                raise InputFileError(
                    f"cannot load {source}: cannot read external data {_short(location, 80)!r}: {exc.strerror}"
                ) from None
            if not stat.S_ISREG(st.st_mode):
                raise InputFileError(f"cannot load {source}: external data {_short(location, 80)!r} is not a regular file")
            sizes[resolved] = st.st_size
        size = sizes[resolved]
        try:
            offset = int(info.get("offset", "0") or 0)
            length = int(info["length"]) if info.get("length") not in (None, "") else size - offset
        except ValueError:
            raise InputFileError(
                f"cannot load {source}: tensor {tname!r} has a non-integer external data offset or length"
            ) from None
        if offset < 0 or length < 0 or offset + length > size:
            raise InputFileError(
                f"cannot load {source}: tensor {tname!r} reads bytes {offset}..{offset + length} of "
                f"{_short(location, 80)!r}, which has {size} bytes"
            )
        total += length
        if total > max_external_bytes:
            raise InputFileError(f"{source}: external data is larger than the limit of {max_external_bytes} bytes")
    return count


def load_onnx(path: PathLike, *, max_bytes: int = MAX_ONNX_BYTES, max_external_bytes: int = MAX_ONNX_EXTERNAL_BYTES,
              check: bool = True):
    """Load an ONNX model safely.

    The protobuf is parsed without external data; every external-data reference is then
    checked (a relative path with no ``..``, resolving — symlinks followed — inside the model's
    folder, an existing regular file, offset/length inside it, the total within
    ``max_external_bytes``) before :func:`onnx.external_data_helper.load_external_data_for_model`
    reads it.  With ``check`` the result goes through :func:`onnx.checker.check_model`.

    Returns
    -------
    onnx.ModelProto
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import load_external_data_for_model

    source = _name(path)
    data = _read_capped(path, max_bytes, "ONNX model")
    try:
        model = onnx.load(io.BytesIO(data), format="protobuf", load_external_data=False)
    except (DecodeError, *_CORRUPT_ERRORS) as exc:
        raise InputFileError(f"cannot load {source}: not a valid ONNX protobuf (truncated or corrupt: {_problem(exc)})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise InputFileError(f"cannot load {source}: not an ONNX model (it has no graph nodes)")
    base_dir = os.path.dirname(os.path.abspath(source))
    if _check_external_data(model, source, base_dir, max_external_bytes):
        try:
            load_external_data_for_model(model, base_dir)
        except (*_CORRUPT_ERRORS,) as exc:
            raise InputFileError(f"cannot load {source}: cannot read its external data ({_problem(exc)})") from None
        if any(t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL for t in _onnx_tensors(model)):
            raise UnsupportedModelError(f"{source}: external data in sparse tensors or training info is not supported")
    if check:
        try:
            if model.ByteSize() < 2 * GiB:
                onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidModelError(f"invalid model in {source}: the ONNX checker says: {_short(first, 200)}") from None
        except (*_CORRUPT_ERRORS,) as exc:
            raise InvalidModelError(f"invalid model in {source}: the ONNX checker failed ({_problem(exc)})") from None
    return model


def save_onnx(model: Any, path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> None:
    """Write an ``onnx.ModelProto`` (atomically, data inline)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise UnsupportedModelError(f"cannot save a {type(model).__name__} as ONNX: expected an onnx.ModelProto")
    try:
        data = model.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages of 2 GiB or more
        raise UnsupportedModelError(f"cannot save {_name(path)}: {_problem(exc)}") from None
    atomic_write(path, data, force=force, inputs=inputs)


# ---------------------------------------------------------------------------
# any model


def load_model(path: PathLike):
    """Load any model file gmmnet reads, by suffix.

    ``.pkl``/``.pickle``/``.joblib``/``.skops`` → estimator (:func:`load_estimator`),
    ``.json`` → IR document (:func:`load_ir`), ``.onnx`` → ``onnx.ModelProto`` (:func:`load_onnx`).
    """
    source = _name(path)
    suffix = _suffix(path)
    if suffix not in MODEL_SUFFIXES:
        raise InputFileError(
            f"{source}: unknown model file type {suffix or '(no suffix)'!r}; accepted: {', '.join(MODEL_SUFFIXES)}"
        )
    _check_readable(path)
    if suffix in ESTIMATOR_SUFFIXES:
        return load_estimator(path)
    if suffix in IR_SUFFIXES:
        return load_ir(path)
    return load_onnx(path)


# ---------------------------------------------------------------------------
# data


def _finish_data(x: np.ndarray, source: str, n_features: int | None) -> np.ndarray:
    if x.ndim == 1:
        if n_features == 1:
            x = x.reshape(-1, 1)
        else:
            raise DataError(
                f"{source} holds a 1-D array of {x.shape[0]} values; expected a 2-D array (n_samples, n_features)"
                + (f" with {n_features} features" if n_features else "")
            )
    if x.ndim != 2:
        raise DataError(f"{source} holds a {x.ndim}-D array of shape {x.shape}; expected 2-D (n_samples, n_features)")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{source} holds no data (shape {x.shape})")
    if n_features is not None and x.shape[1] != n_features:
        raise DataError(f"{source}: expected {n_features} features, got {x.shape[1]}")
    return x


def read_npy_header(path: PathLike, source: str) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) from a .npy header, read before numpy maps the data."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise InputFileError(f"cannot load {source}: not a .npy file (no NumPy header)")
            f.seek(0)
            version = npy_format.read_magic(f)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except GmmnetError:
        raise
    except (ValueError, TypeError, OSError, EOFError, SyntaxError, MemoryError, UnicodeError, tokenize.TokenError) as exc:
        raise InputFileError(f"cannot load {source}: not a valid .npy file ({_problem(exc)})") from None
    return shape, fortran, dtype, offset


def _load_npy(path: PathLike, source: str) -> np.ndarray:
    _check_readable(path)
    if read_npy_header(path, source)[2].hasobject:
        raise UnsafeFileError(f"refusing to load Python objects from {source}: only numeric arrays are allowed")
    try:
        x = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UnsafeFileError(f"refusing to load Python objects from {source}: only numeric arrays are allowed") from None
        raise InputFileError(f"cannot load {source}: not a valid .npy file ({_problem(exc)})") from None
    except (OSError, EOFError, TypeError, OverflowError, MemoryError, SyntaxError, UnicodeError, tokenize.TokenError) as exc:
        raise InputFileError(f"cannot load {source}: not a valid .npy file ({_problem(exc)})") from None
    if not isinstance(x, np.ndarray):
        raise InputFileError(f"cannot load {source}: not a .npy array file")
    if x.dtype.kind not in "biuf" or x.dtype.fields is not None:
        raise DataError(f"{source} holds {x.dtype} values; expected real numbers")
    from .limits import check_bytes

    check_bytes(8.0 * x.size, f"reading its {'x'.join(map(str, x.shape))} values as float64", source)
    return np.array(x, dtype=np.float64)


def _parse_number(cell: str) -> float | None:
    text = cell.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _load_csv(path: PathLike, source: str, n_features: int | None) -> np.ndarray:
    _check_readable(path)
    rows: list[list[float]] = []
    width = None
    width_line = 0
    first = True
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            for cells in reader:
                lineno = reader.line_num  # physical line (a quoted cell may span lines)
                if not cells or all(not c.strip() for c in cells):
                    continue  # blank line
                if cells[0].lstrip().startswith("#"):
                    continue  # comment line (numpy.savetxt's header)
                values = [_parse_number(c) for c in cells]
                if first:
                    first = False
                    if all(v is None and c.strip() for v, c in zip(values, cells)):
                        continue  # a header: every cell is a non-empty non-number
                for col, (v, c) in enumerate(zip(values, cells), start=1):
                    if v is None:
                        what = "an empty cell" if not c.strip() else f"{_short(c.strip(), 30)!r} is not a number"
                        raise DataError(f"{source} line {lineno}, column {col}: {what}")
                if width is None:
                    width, width_line = len(values), lineno
                elif len(values) != width:
                    raise DataError(
                        f"{source} line {lineno} has {len(values)} values, expected {width} (as on line {width_line})"
                    )
                rows.append(values)  # type: ignore[arg-type]
    except UnicodeDecodeError:
        raise InputFileError(f"cannot load {source}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise InputFileError(f"cannot load {source}: malformed CSV ({_problem(exc)})") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {source}: {exc.strerror or _problem(exc)}") from None
    if not rows:
        raise DataError(f"{source} holds no data rows")
    if n_features is not None and width != n_features:
        raise DataError(f"{source}: expected {n_features} features, got {width}")
    return np.array(rows, dtype=np.float64)


def load_data(path: PathLike, *, n_features: int | None = None) -> np.ndarray:
    """Scoring data as a float64 array of shape (n_samples, n_features).

    ``.npy`` (numeric, no pickled objects) or ``.csv`` (comma-separated numbers; an optional
    first line of column names is detected and skipped; blank lines and lines starting with
    ``#`` are skipped).  A 1-D ``.npy`` array is one feature only when ``n_features == 1``.
    NaN and infinity are passed through.
    """
    source = _name(path)
    suffix = _suffix(path)
    if suffix == ".npy":
        x = _load_npy(path, source)
    elif suffix == ".csv":
        x = _load_csv(path, source, n_features)
    else:
        raise InputFileError(
            f"{source}: unknown data file type {suffix or '(no suffix)'!r}; accepted: {', '.join(DATA_SUFFIXES)}"
        )
    return _finish_data(x, source, n_features)


# ---------------------------------------------------------------------------
# atomic writes

_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _same_file(a: str, b: PathLike) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when two paths name the same file (symlinks and ``..`` resolved, or the same inode)."""
    return _same_file(os.path.abspath(_name(a)), b)


def atomic_write(path: PathLike, data: bytes | Callable[[Any], Any], *, force: bool = False,
                 inputs: Iterable[PathLike] = ()) -> None:
    """Write a file all at once or not at all.

    ``data`` is bytes, or a callable that writes to the binary file object it is given.  The
    content goes to a temp file in the target's folder, is fsynced, then renamed over the
    target; if anything fails (including the callable raising) the temp file is removed and
    the target is untouched.

    Raises
    ------
    OutputExistsError
        ``path`` is one of ``inputs`` (always), or exists and ``force`` is false.
    OutputFileError
        The folder is missing or not writable, or the write fails (e.g. disk full).
    """
    target = os.path.abspath(_name(path))
    name = _name(path)
    for inp in inputs:
        if _same_file(target, inp):
            raise OutputExistsError(f"refusing to write {name}: it is the input file {_name(inp)}")
    if os.path.isdir(target):
        raise OutputExistsError(f"refusing to write {name}: it is a folder")
    if os.path.lexists(target) and not force:
        raise OutputExistsError(f"{name} exists; use --force to overwrite it")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise OutputFileError(f"cannot write {name}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    except OSError as exc:
        raise OutputFileError(f"cannot write {name}: {exc.strerror or _problem(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        if force:
            os.replace(tmp, target)
        else:
            try:  # no-clobber: fails if someone created the target meanwhile
                os.link(tmp, target)
            except FileExistsError:
                raise OutputExistsError(f"{name} exists; use --force to overwrite it") from None
            except OSError:  # filesystems without hard links
                if os.path.lexists(target):
                    raise OutputExistsError(f"{name} exists; use --force to overwrite it") from None
                os.replace(tmp, target)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, GmmnetError):
            raise OutputFileError(f"cannot write {name}: {exc.strerror or _problem(exc)}") from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
