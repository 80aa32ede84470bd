"""The restricted unpickler: pickle and joblib files that can build only allowlisted objects.

A pickle can run any code while it loads, so gmmnet never calls :func:`pickle.load` or
:func:`joblib.load` on a user's file.  :class:`SafeUnpickler` resolves only an allowlist of
globals (the estimator classes of :func:`register_safe_class`, the affine Pipeline steps, a
fixed set of numpy helpers) and restricts what may be called, created or given state.
joblib's container format (raw array bytes between pickle opcodes, optional compression) is
read here too; joblib's own unpickler is never used.

Errors: content that is not allowed raises :class:`~gmmnet.errors.UnsafeFileError` (a
scikit-learn estimator class that is not an accepted step: ``UnsupportedModelError``);
malformed content raises :class:`~gmmnet.errors.InputFileError`.  Both are raised where the
stream shows the problem; anything else is a bug and is not caught.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import inspect
import io
import lzma
import math
import pickle
import struct
import sys
import threading
import zlib
from typing import Any, Callable

import numpy as np

from ..errors import GmmnetError, InputFileError, InvalidModelError, UnsafeFileError, UnsupportedModelError
from ._files import short

__all__ = ["FittedState", "SafeUnpickler", "decompress_capped", "materialize", "register_safe_class", "safe_classes",
           "step_classes", "unpickle"]

REFUSAL_HINT = "only scikit-learn mixture classes, affine Pipeline steps and numpy arrays are allowed"

# ---------------------------------------------------------------------------
# The allowlist

#: Estimator classes a model file may hold as its model (or as a Pipeline's last step), as
#: (module, qualified name) the way pickle and skops name them.  Extend with register_safe_class.
_SAFE_CLASSES: dict[tuple[str, str], None] = {
    ("sklearn.mixture._gaussian_mixture", "GaussianMixture"): None,
    ("sklearn.mixture._bayesian_mixture", "BayesianGaussianMixture"): None,
    ("gmmnet.hierarchy", "HierarchicalGaussianMixture"): None,
}
#: The Pipeline and the affine steps before its mixture (issue 14): their pickled state is
#: plain data (numbers, strings, tuples, lists, numpy arrays and scalars, None).
STEP_CLASSES: dict[tuple[str, str], str] = {
    ("sklearn.pipeline", "Pipeline"): "Pipeline",
    ("sklearn.preprocessing._data", "StandardScaler"): "StandardScaler",
    ("sklearn.preprocessing._data", "MinMaxScaler"): "MinMaxScaler",
    ("sklearn.preprocessing._data", "MaxAbsScaler"): "MaxAbsScaler",
    ("sklearn.preprocessing._data", "RobustScaler"): "RobustScaler",
    ("sklearn.decomposition._pca", "PCA"): "PCA",
    ("sklearn.decomposition._truncated_svd", "TruncatedSVD"): "TruncatedSVD",
    # gmmnet's own z = A x + c (what to_estimator and to-gmm write for a graph behind a transform)
    ("gmmnet.pipeline", "AffineTransform"): "AffineTransform",
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
    ("sklearn.decomposition.pca", "PCA"): ("sklearn.decomposition._pca", "PCA"),
    ("sklearn.decomposition.truncated_svd", "TruncatedSVD"): ("sklearn.decomposition._truncated_svd", "TruncatedSVD"),
    **{("sklearn.preprocessing.data", n): ("sklearn.preprocessing._data", n)
       for n in ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler")},
}
SKLEARN_MIXTURES = (
    ("sklearn.mixture._gaussian_mixture", "GaussianMixture"),
    ("sklearn.mixture._bayesian_mixture", "BayesianGaussianMixture"),
)
ACCEPTED_STEPS = "StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, PCA, TruncatedSVD, gmmnet's AffineTransform or 'passthrough'"
_REGISTRY_LOCK = threading.Lock()


def register_safe_class(module: str, name: str) -> None:
    """Allow instances of the class ``module.name`` in pickle, joblib and skops model files.

    The class is then admitted by :func:`gmmnet.io.load_estimator` like scikit-learn's
    mixtures: it may be created (``cls.__new__(cls)``, no constructor arguments) and given its
    pickled state (``__setstate__`` or ``__dict__`` update), and a file whose top-level object
    (or a Pipeline's last step) is one of its instances counts as a mixture model.  Register
    only estimator classes whose ``__setstate__`` does nothing with the state but store and
    validate it.

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
    """The dotted names of the estimator classes model files may contain as their model."""
    return [f"{m}.{n}" for m, n in _SAFE_CLASSES]


def step_classes() -> list[str]:
    """The dotted names of the Pipeline and the affine steps model files may contain."""
    return [f"{m}.{n}" for m, n in STEP_CLASSES]


def canonical_class(module: str, name: str) -> tuple[str, str] | None:
    key = _CLASS_ALIASES.get((module, name), (module, name))
    return key if key in _SAFE_CLASSES or key in STEP_CLASSES else None


def is_model_class(cls: type) -> bool:
    """An allowlisted estimator class that can be the model (not a Pipeline or a step)."""
    return (getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)) in _SAFE_CLASSES


def is_allowed_class(cls: Any) -> bool:
    key = (getattr(cls, "__module__", None), getattr(cls, "__qualname__", None))
    return isinstance(cls, type) and (key in _SAFE_CLASSES or key in STEP_CLASSES)


def sklearn_class_refusal(module: str, name: str, source: str) -> GmmnetError | None:
    """UnsupportedModelError for a scikit-learn class that is neither a mixture nor an accepted
    step (Normalizer, PolynomialFeatures, ColumnTransformer, LogisticRegression, ...).  Decided
    from the name alone, so nothing is imported; other names (functions) stay unsafe."""
    if not (module == "sklearn" or module.startswith("sklearn.")):
        return None
    if not (name.isidentifier() and name[:1].isupper()):
        return None  # functions and private helpers: not an estimator class
    return UnsupportedModelError(
        f"cannot load {source}: it holds {short(module, 80)}.{short(name, 80)}, which is not an affine step gmmnet "
        f"converts (a mixture may follow only {ACCEPTED_STEPS})"
    )


class FittedState:
    """A scikit-learn estimator read as its pickled attributes, without importing scikit-learn.

    Importing scikit-learn costs seconds (scipy.stats alone ~1.5 s); converting a mixture reads
    only its fitted attributes.  :func:`unpickle` with ``fitted_state=True`` builds one subclass
    per allowlisted scikit-learn class (:func:`_stand_in`) carrying the original's ``__module__``
    and ``__qualname__``, so the allowlist checks see the same names; its instances hold the
    attributes as plain data and have no methods.  :func:`materialize` turns them into the real
    estimators.
    """

    #: duck-typed marker for modules that may not import gmmnet.io (formats.sklearn)
    fitted_state = True

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


_STAND_INS: dict[tuple[str, str], type] = {}


def _stand_in(module: str, name: str) -> type:
    """The :class:`FittedState` subclass standing in for the scikit-learn class ``module.name``."""
    with _REGISTRY_LOCK:
        cls = _STAND_INS.get((module, name))
        if cls is None:
            cls = type(name, (FittedState,), {"__module__": module, "__qualname__": name, "__slots__": ()})
            _STAND_INS[(module, name)] = cls
    return cls


def materialize(obj: Any, source: str) -> Any:
    """``obj`` with every :class:`FittedState` in it (Pipeline steps included) replaced by an
    instance of the scikit-learn class it stands in for, given the same state."""
    memo: dict[int, Any] = {}

    def real(value: Any) -> Any:
        if id(value) in memo:
            return memo[id(value)]
        if isinstance(value, FittedState):
            t = type(value)
            cls = _import_class(t.__module__, t.__qualname__, source)
            out = cls.__new__(cls)
            memo[id(value)] = out
            _estimator_setstate(out, {k: real(v) for k, v in vars(value).items()}, source)
            return out
        if type(value) is list:
            return [real(v) for v in value]
        if type(value) is tuple:
            return tuple(real(v) for v in value)
        if type(value) is dict:
            return {k: real(v) for k, v in value.items()}
        return value

    try:
        return real(obj)
    except _Corrupt as exc:
        raise InputFileError(f"cannot load {source}: corrupt or truncated pickle ({exc})") from None


def _import_class(module: str, name: str, source: str) -> type:
    import importlib

    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise InputFileError(f"cannot load {source}: it needs {module}.{name}, which is not available here") from None
    if not isinstance(obj, type):
        raise UnsafeFileError(f"refusing to load {module}.{name} from {source}: the allowlisted name is not a class")
    return obj


# ---------------------------------------------------------------------------
# numpy reconstruction, checked

_DTYPE_KINDS = "biufcOUS"  # bool, int, uint, float, complex, object, str, bytes — no void/structured/datetime
_MAX_ITEMSIZE = 1 << 20


class _Refused(Exception):
    """Raised inside the unpickler for content that is not allowed (becomes UnsafeFileError)."""


class _Corrupt(Exception):
    """Raised inside the unpickler for content that is malformed (becomes InputFileError)."""


def _one_of(value: Any, choices: tuple) -> bool:
    """``value in choices`` for file-controlled values: types must match (an ndarray never
    compares ambiguously), and only plain equality is used."""
    return any(type(value) is type(c) and value == c for c in choices)


def _check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise _Corrupt(f"expected a numpy dtype, got {type(dtype).__name__}")
    if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"numpy dtype {dtype.str!r} (only plain numeric, string and object dtypes are allowed)")
    if dtype.itemsize > _MAX_ITEMSIZE:
        raise _Corrupt(f"numpy dtype {dtype.str!r} is implausibly large")
    return dtype


def _check_data_dtype(dtype: Any) -> np.dtype:
    """A dtype whose items are read from raw bytes: also no zero-size items."""
    dtype = _check_dtype(dtype)
    if dtype.itemsize == 0:
        raise _Corrupt(f"numpy dtype {dtype.str!r} has items of zero bytes")
    return dtype


def _check_shape(shape: Any) -> tuple[int, ...]:
    if type(shape) is not tuple or len(shape) > 32 or not all(type(s) is int and 0 <= s < 1 << 62 for s in shape):
        raise _Corrupt("invalid array shape")
    return shape


def _n_items(shape: tuple[int, ...], dtype: np.dtype) -> int:
    n = math.prod(shape)
    if n * max(dtype.itemsize, 1) >= 1 << 62:
        raise _Corrupt("array size is implausibly large")
    return n


def _safe_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype(obj, align, copy)`` for the type strings numpy pickles dtypes with."""
    if type(obj) is not str or len(obj) > 16:
        raise _Refused("numpy.dtype called with something other than a type code")
    if type(align) is not bool or type(copy) is not bool:
        raise _Corrupt("invalid numpy.dtype arguments")
    try:
        dtype = np.dtype(obj, align, copy)
    except (TypeError, ValueError) as exc:  # numpy's answer to a type code it does not know
        raise _Corrupt(f"invalid numpy dtype {short(obj, 20)!r}") from exc
    return _check_dtype(dtype)


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's ``_reconstruct``: an empty ndarray that BUILD then fills."""
    if subtype is not np.ndarray:
        raise _Refused("numpy _reconstruct of something other than numpy.ndarray")
    shape = _check_shape(shape)
    if math.prod(shape) != 0 or not _one_of(typecode, (b"b", "b")):
        raise _Corrupt("unexpected numpy _reconstruct arguments")
    return _RECONSTRUCT(np.ndarray, shape, typecode)


def _safe_scalar(dtype: Any, data: Any = None) -> np.generic:
    """numpy's ``scalar(dtype, bytes)`` for non-object dtypes."""
    dtype = _check_data_dtype(dtype)
    if dtype.hasobject:
        raise _Refused("numpy object scalars")
    if type(data) is not bytes or len(data) != dtype.itemsize:
        raise _Corrupt("invalid numpy scalar data")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's ``_frombuffer`` (pickle protocol 5) with the size checked."""
    dtype = _check_data_dtype(dtype)
    shape = _check_shape(shape)
    if dtype.hasobject:
        raise _Refused("numpy object arrays from raw buffers")
    if not isinstance(buf, (bytes, bytearray)) or not _one_of(order, ("C", "F", "A", "K")):
        raise _Corrupt("invalid numpy buffer")
    if len(buf) != _n_items(shape, dtype) * dtype.itemsize:
        raise _Corrupt("numpy buffer size does not match its shape")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if order == "F" else "C")


def _check_ndarray_state(state: Any) -> None:
    """Validate ``ndarray.__setstate__`` input before numpy sees it."""
    if type(state) is not tuple or len(state) not in (4, 5):
        raise _Corrupt("invalid numpy array state")
    if len(state) == 5:
        if type(state[0]) is not int:
            raise _Corrupt("invalid numpy array state")
        state = state[1:]
    shape, dtype, fortran, data = state
    shape = _check_shape(shape)
    dtype = _check_dtype(dtype)
    if type(fortran) is not bool:
        raise _Corrupt("invalid numpy array state")
    n = _n_items(shape, dtype)
    if dtype.hasobject:
        if type(data) is not list or len(data) != n:
            raise _Corrupt("numpy object array state does not match its shape")
    elif not isinstance(data, (bytes, bytearray)) or len(data) != n * dtype.itemsize or (n and not dtype.itemsize):
        raise _Corrupt("numpy array data does not match its shape")


def _check_dtype_state(dtype: np.dtype, state: Any) -> None:
    """Validate ``dtype.__setstate__`` input: plain dtypes only, flags as numpy itself sets them."""
    if type(state) is not tuple or len(state) not in (8, 9) or not _one_of(state[0], (3, 4)):
        raise _Corrupt("invalid numpy dtype state")
    _, byteorder, subarray, names, fields, elsize, alignment, flags = state[:8]
    if not _one_of(byteorder, ("<", ">", "|", "=")):
        raise _Corrupt("invalid numpy dtype byte order")
    if subarray is not None or names is not None or fields is not None:
        raise _Refused("structured numpy dtypes")
    if len(state) == 9 and not (state[8] is None or (type(state[8]) is dict and not state[8])):
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
    if type(obj) is not str or not _one_of(encoding, ("latin1", "latin-1", "iso-8859-1")) or not _one_of(
            errors, ("strict",)):
        raise _Refused("_codecs.encode other than latin-1 text to bytes")
    try:
        return codecs.encode(obj, "latin1")
    except UnicodeEncodeError as exc:  # a character above U+00FF: not bytes pickle would write
        raise _Corrupt("_codecs.encode of text that is not latin-1") from exc


# legacy numpy RandomState (scikit-learn's random_state parameter may hold one)
_BIT_GENERATORS = {
    ("numpy.random._mt19937", "MT19937"): "MT19937",
    ("numpy.random._pcg64", "PCG64"): "PCG64",
    ("numpy.random._pcg64", "PCG64DXSM"): "PCG64DXSM",
    ("numpy.random._philox", "Philox"): "Philox",
    ("numpy.random._sfc64", "SFC64"): "SFC64",
}
_BIT_GENERATOR_TYPES = frozenset(getattr(np.random, n) for n in _BIT_GENERATORS.values())


def _bit_generator_class(spec: Any) -> type:
    classes = {n: getattr(np.random, n) for n in _BIT_GENERATORS.values()}
    if type(spec) is str and spec in classes:
        return classes[spec]
    if isinstance(spec, type) and spec in _BIT_GENERATOR_TYPES:
        return spec
    raise _Refused("an unknown numpy bit generator")


def _safe_bit_generator_ctor(bit_generator: Any = "MT19937") -> Any:
    return _bit_generator_class(bit_generator)()


def _safe_randomstate_ctor(bit_generator_name: Any = "MT19937", bit_generator_ctor: Any = None) -> np.random.RandomState:
    if bit_generator_ctor is not None and bit_generator_ctor is not _safe_bit_generator_ctor:
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


class RefusedClass:
    """Stands in for a scikit-learn class refused by name (never imported, never built): its
    instances are inert and take no state, so the rest of the stream can still be read and
    anything unsafe in it reported first."""

    __slots__ = ()


_INERT_BUILTINS = frozenset({"slice", "set", "frozenset", "complex", "range", "bytearray", "bytes", "tuple", "list",
                             "dict", "int", "float", "str", "bool"})


def _inert_name(module: str, name: str) -> bool:
    """Harmless data types a refused scikit-learn step may hold (ColumnTransformer's slices,
    FunctionTransformer's numpy ufunc); any other name stays unsafe wherever it appears."""
    if module == "builtins":
        return name in _INERT_BUILTINS
    return module == "numpy" and isinstance(getattr(np, name, None), np.ufunc)


def _new_instance(cls: Any, args: Any, kwargs: Any = None) -> Any:
    if cls is RefusedClass:
        return object.__new__(RefusedClass)
    if not (is_allowed_class(cls) or (cls is not None and cls is _joblib_wrapper_class())):
        raise _Refused(f"creating instances of {_describe(cls)}")
    if not (type(args) in (tuple, list) and len(args) == 0) or not (
            kwargs is None or (type(kwargs) is dict and not kwargs)):
        raise _Refused(f"passing constructor arguments to {_describe(cls)}")
    return cls.__new__(cls)


def _describe(obj: Any) -> str:
    if isinstance(obj, type) or callable(obj):
        mod = getattr(obj, "__module__", None) or "?"
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or "?"
        return f"{short(str(mod), 80)}.{short(str(name), 80)}"
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
#: The stand-ins' signatures: a call with the wrong arguments is a malformed file, found before the call.
_SIGNATURES = {f: inspect.signature(f) for f in set(_FUNCTIONS.values())}

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
# the in-memory file


class Stream:
    """A read cursor over a file's bytes held in memory (bytes or bytearray).

    :meth:`take` lends a slice without copying, so joblib's arrays become views of the
    (decompressed) file instead of copies: loading holds the stream once, not three times.
    """

    def __init__(self, buf: bytes | bytearray) -> None:
        self._buf = buf
        self._view = memoryview(buf)
        self.pos = 0

    def __len__(self) -> int:
        return len(self._buf)

    def remaining(self) -> int:
        return len(self._buf) - self.pos

    def read(self, n: int = -1) -> bytes:
        end = len(self._buf) if n is None or n < 0 else min(self.pos + n, len(self._buf))
        out = self._view[self.pos:end].tobytes()
        self.pos = end
        return out

    def readline(self) -> bytes:
        i = self._buf.find(b"\n", self.pos)
        end = len(self._buf) if i < 0 else i + 1
        out = self._view[self.pos:end].tobytes()
        self.pos = end
        return out

    def readinto(self, b) -> int:
        n = min(len(b), self.remaining())
        b[:n] = self._view[self.pos:self.pos + n]
        self.pos += n
        return n

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes as a view of the buffer (``_Corrupt`` if fewer are left)."""
        if n > self.remaining():
            raise _Corrupt(f"{n} bytes claimed but only {self.remaining()} left in the file")
        out = self._view[self.pos:self.pos + n]
        self.pos += n
        return out


# ---------------------------------------------------------------------------
# The restricted unpickler

# What the standard library's opcode handlers raise on a malformed stream (a short stack, a
# missing memo entry, an unhashable dict key, a bad int literal, a truncated frame, ...).
_STREAM_ERRORS = (pickle.UnpicklingError, EOFError, IndexError, KeyError, TypeError, AttributeError, ValueError,
                  struct.error, OverflowError)


def _guarded(handler: Callable) -> Callable:
    """A standard opcode handler whose stream errors become _Corrupt (gmmnet's own handlers
    below raise _Corrupt/_Refused themselves, and their other errors are bugs)."""

    def run(self) -> None:
        try:
            handler(self)
        except _STREAM_ERRORS as exc:
            raise _Corrupt(f"{type(exc).__name__}: {short(str(exc), 80)}") from exc

    return run


class _Dispatch(dict):
    """The opcode table; an opcode that pickle does not define is a malformed file."""

    def __missing__(self, key: int):
        raise _Corrupt(f"unknown pickle opcode {bytes([key])!r}")


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be overridden
    """An unpickler that builds only allowlisted objects.

    * ``find_class`` resolves only the allowlist (estimator classes from
      :func:`register_safe_class`, the Pipeline and its affine steps, and a fixed set of numpy /
      joblib / pickle helpers); any other global raises :class:`~gmmnet.errors.UnsafeFileError`
      before it is imported (another scikit-learn estimator class:
      :class:`~gmmnet.errors.UnsupportedModelError`).
    * REDUCE may call only gmmnet's checked stand-ins for numpy's reconstruction helpers;
      NEWOBJ / INST / OBJ may only create allowlisted classes, without arguments;
      BUILD may only set the state of the objects those create.
    * joblib's ``NumpyArrayWrapper`` records are read here, with sizes checked, as views of
      the in-memory stream; object arrays nested inside a joblib file go through a fresh
      ``SafeUnpickler``.  joblib's own unpickler, and its pre-0.10 companion-file format, are
      never used.

    Parameters
    ----------
    file : Stream, bytes, bytearray or io.BytesIO
        The whole file in memory (sizes are checked against what is left).
    source : str
        File name for messages.
    fitted_state : bool
        Build scikit-learn estimators as :class:`FittedState` stand-ins (scikit-learn is not
        imported); gmmnet's own registered classes are built as themselves.
    """

    dispatch = _Dispatch({key: _guarded(handler) for key, handler in pickle._Unpickler.dispatch.items()})

    def __init__(self, file: Stream | bytes | bytearray | io.BytesIO, source: str = "<pickle>", _depth: int = 0,
                 _unsupported: list | None = None, *, fitted_state: bool = False) -> None:
        if hasattr(file, "getvalue"):  # an io.BytesIO, as earlier versions took
            file = file.getvalue()
        stream = file if isinstance(file, Stream) else Stream(file)
        super().__init__(stream, fix_imports=True, encoding="ASCII", errors="strict")
        self._raw = stream
        self._source = source
        self._depth = _depth
        self._unsupported: list[GmmnetError] = [] if _unsupported is None else _unsupported
        self._fitted_state = fitted_state

    def load(self) -> Any:
        """The stream's object; UnsupportedModelError if it named a scikit-learn class that is
        not accepted (only after the whole stream: an unsafe name anywhere is reported first)."""
        try:
            obj = super().load()
        except (_Corrupt, EOFError, pickle.UnpicklingError):
            if self._unsupported:
                raise self._unsupported[0] from None
            raise
        if self._unsupported and self._depth == 0:
            raise self._unsupported[0]
        return obj

    def _pop(self) -> Any:
        if not self.stack:
            raise _Corrupt("pickle stack underflow")
        return self.stack.pop()

    # -- sizes -------------------------------------------------------------------
    def _load_bytearray8(self) -> None:
        # pickle's own version allocates the claimed length (up to 2**64) before reading
        head = self.read(8)
        if len(head) != 8:
            raise _Corrupt("pickle data was truncated")
        (n,) = struct.unpack("<Q", head)
        if n > len(self._raw):
            raise _Corrupt(f"a byte array of {n} bytes in a file of {len(self._raw)}")
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
        canonical = canonical_class(module, name)
        if canonical is not None:
            if self._fitted_state and canonical[0].startswith("sklearn."):
                return _stand_in(*canonical)
            return _import_class(*canonical, self._source)
        refusal = sklearn_class_refusal(module, name, self._source)
        if refusal is not None:  # refused after the whole stream is read, unless something unsafe comes later
            self._unsupported.append(refusal)
            return RefusedClass
        if self._unsupported and _inert_name(module, name):
            return RefusedClass  # data of a refused step (a slice, a numpy ufunc): read on, never built
        raise UnsafeFileError(f"refusing to load {short(module, 80)}.{short(name, 80)} from {self._source}: {REFUSAL_HINT}")

    # -- calls -------------------------------------------------------------------
    def _load_reduce(self) -> None:
        args = self._pop()
        func = self._pop()
        if func is RefusedClass:  # a refused scikit-learn class rebuilt by a call: stays inert
            self.append(object.__new__(RefusedClass))
            return
        if not any(func is f for f in _SIGNATURES):
            raise _Refused(f"calling {_describe(func)}")
        if type(args) is not tuple:
            raise _Corrupt("REDUCE arguments are not a tuple")
        try:
            _SIGNATURES[func].bind(*args)
        except TypeError:
            raise _Corrupt(f"{_describe(func)} called with {len(args)} arguments") from None
        self.append(func(*args))

    dispatch[pickle.REDUCE[0]] = _load_reduce

    def _load_newobj(self) -> None:
        args = self._pop()
        cls = self._pop()
        self.append(_new_instance(cls, args))

    dispatch[pickle.NEWOBJ[0]] = _load_newobj

    def _load_newobj_ex(self) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        self.append(_new_instance(cls, args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST and OBJ (protocols 0, 1)
        self.append(_new_instance(klass, args))

    # -- state -------------------------------------------------------------------
    def _load_build(self) -> None:
        state = self._pop()
        if not self.stack:
            raise _Corrupt("pickle stack underflow")
        inst = self.stack[-1]
        t = type(inst)
        if t is np.ndarray:
            _check_ndarray_state(state)
            _numpy_setstate(inst, state)
        elif t is np.dtype or isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
            _numpy_setstate(inst, state)
        elif t is np.random.RandomState:
            _numpy_setstate(inst, state)  # numpy validates the generator state
        elif t in _BIT_GENERATOR_TYPES:
            if type(state) is tuple and len(state) == 2 and state[1] is None:
                state = state[0]  # (state, seed sequence): RandomState's generators have none
            if type(state) is not dict:
                raise _Refused(f"a {t.__name__} state other than a plain state dict")
            _numpy_setstate(inst, state)
        elif t is RefusedClass:
            pass  # its class is refused once the stream is read; its state is never used
        elif t is _joblib_wrapper_class():
            self.stack[-1] = self._read_joblib_array(state)
        elif is_allowed_class(t):
            _estimator_setstate(inst, state, self._source)
        else:
            raise _Refused(f"setting the state of {_describe(inst)}")

    dispatch[pickle.BUILD[0]] = _load_build

    # -- joblib arrays -------------------------------------------------------------
    def _read_joblib_array(self, state: Any) -> np.ndarray:
        if type(state) is not dict or not all(type(k) is str for k in state) or not set(state) <= _JOBLIB_WRAPPER_KEYS \
                or not {"subclass", "shape", "order", "dtype"} <= set(state):
            raise _Corrupt("invalid joblib array record")
        if state["subclass"] is not np.ndarray:
            raise _Refused("joblib arrays of a numpy.ndarray subclass")
        shape = _check_shape(state["shape"])
        dtype = _check_dtype(state["dtype"])
        order = state["order"]
        if not _one_of(order, ("C", "F")):
            raise _Corrupt("invalid joblib array order")
        raw = self._raw
        if dtype.hasobject:
            # joblib writes object arrays as a nested pickle stream: read it with the same rules
            if self._depth >= 8:
                raise _Corrupt("joblib object arrays nested too deeply")
            arr = SafeUnpickler(raw, self._source, self._depth + 1, self._unsupported,
                                fitted_state=self._fitted_state).load()
            if type(arr) is not np.ndarray or arr.shape != shape or not arr.dtype.hasobject:
                raise _Corrupt("joblib object array does not match its record")
            return arr
        dtype = _check_data_dtype(dtype)
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = raw.take(1)[0]
            raw.take(pad)
        data = raw.take(_n_items(shape, dtype) * dtype.itemsize)
        arr = np.frombuffer(data, dtype=dtype)  # a view of the stream: no copy
        arr = arr.reshape(shape[::-1]).T if order == "F" else arr.reshape(shape)
        if dtype.byteorder not in ("=", "|") and dtype.byteorder != ("<" if sys.byteorder == "little" else ">"):
            arr = arr.astype(dtype.newbyteorder("="))
        return arr


def _numpy_setstate(inst: Any, state: Any) -> None:
    """numpy's own ``__setstate__`` on checked input; what numpy still refuses is a malformed file."""
    try:
        inst.__setstate__(state)
    except (TypeError, ValueError, KeyError) as exc:
        raise _Corrupt(f"invalid {type(inst).__name__} state ({short(str(exc), 80)})") from exc


def _estimator_setstate(inst: Any, state: Any, source: str) -> None:
    """Give an allowlisted estimator its pickled attributes (a dict with string keys)."""
    if type(state) is not dict or not all(type(k) is str for k in state):
        raise _Corrupt(f"the state of {_describe(type(inst))} is not a dict of attributes")
    version = state.get("_sklearn_version")
    if version is not None and type(version) is not str:
        raise _Corrupt(f"the state of {_describe(type(inst))} has a _sklearn_version that is not text")
    setstate = getattr(inst, "__setstate__", None)
    if setstate is None:  # pragma: no cover - every scikit-learn estimator has __setstate__
        inst.__dict__.update(state)
        return
    from pydantic import ValidationError

    try:
        setstate(state)
    except ValidationError as exc:  # a gmmnet estimator's __setstate__ validates its IR
        from ..ir import format_validation_error

        raise InvalidModelError(f"invalid model in {source}: {format_validation_error(exc)}") from None
    except (TypeError, ValueError) as exc:  # the estimator's own checks of a malformed state
        raise _Corrupt(f"invalid state for {_describe(type(inst))} ({short(str(exc), 80)})") from exc


# ---------------------------------------------------------------------------
# joblib compression


# joblib's compressed formats, by the prefix joblib's writers give them.
_COMPRESSED = (
    ("zlib", b"\x78"),
    ("gzip", b"\x1f\x8b"),
    ("bz2", b"BZ"),
    ("xz", b"\xfd\x37\x7a\x58\x5a"),
    ("lzma", b"\x5d\x00"),
    ("lz4", b"\x04\x22\x4d\x18"),
)
# What a corrupt compressed stream raises while it is decompressed: zlib.error, OSError
# (bz2's "Invalid data stream"), LZMAError, and lz4's RuntimeError.
_DECOMPRESS_ERRORS = (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError, RuntimeError)


def _decompressor(kind: str):
    if kind in ("zlib", "gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | (16 if kind == "gzip" else 0))
    if kind == "bz2":
        import bz2

        return bz2.BZ2Decompressor()
    if kind in ("xz", "lzma"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)
    import lz4.frame  # optional, as in joblib

    return lz4.frame.LZ4FrameDecompressor()


def decompress_capped(data: bytearray, source: str, max_bytes: int) -> bytearray:
    """Undo joblib's compression (zlib, gzip, bz2, xz, lzma, lz4), refusing more than max_bytes.

    The stream is inflated here, at most 1 MiB of output per call (joblib's own reader can
    loop on the bytes after a stream's end and grow them without bound), into one growing
    bytearray: the peak is about the decompressed size plus the compressed file.
    """
    if data[:2] == b"ZF":
        raise InputFileError(
            f"cannot load {source}: it was written by joblib < 0.10, whose format gmmnet does not read; "
            "re-save it with a current joblib or skops"
        )
    kind = next((k for k, prefix in _COMPRESSED if data[:len(prefix)] == prefix), None)
    if kind is None:
        return data
    try:
        d = _decompressor(kind)
    except ImportError:
        raise InputFileError(f"cannot load {source}: it is {kind}-compressed and {kind} is not installed") from None
    view, pos, pending = memoryview(data), 0, b""
    out = bytearray()
    try:
        while not d.eof:
            if kind in ("zlib", "gzip"):  # zlib keeps unread input in unconsumed_tail
                if not pending:
                    if pos >= len(view):
                        raise InputFileError(f"cannot load {source}: the {kind}-compressed data ends early")
                    pending, pos = view[pos:pos + (1 << 16)], pos + (1 << 16)
                chunk = d.decompress(pending, 1 << 20)
                pending = d.unconsumed_tail
            else:  # bz2, lzma, lz4 keep it inside and say when they need more
                feed = b""
                if d.needs_input:
                    if pos >= len(view):
                        raise InputFileError(f"cannot load {source}: the {kind}-compressed data ends early")
                    feed, pos = view[pos:pos + (1 << 16)], pos + (1 << 16)
                chunk = d.decompress(feed, 1 << 20)
            if len(out) + len(chunk) > max_bytes:
                raise InputFileError(f"{source} decompresses to more than {max_bytes} bytes")
            out += chunk
    except _DECOMPRESS_ERRORS as exc:
        raise InputFileError(f"cannot load {source}: corrupt {kind}-compressed data ({type(exc).__name__})") from None
    return out


def unpickle(data: bytes | bytearray | Stream, source: str, *, fitted_state: bool = False) -> Any:
    """The object a pickle (or uncompressed joblib) stream holds, built by :class:`SafeUnpickler`;
    with ``fitted_state``, scikit-learn estimators come as :class:`FittedState` stand-ins."""
    try:
        return SafeUnpickler(data, source, fitted_state=fitted_state).load()
    except _Refused as exc:
        raise UnsafeFileError(f"refusing to load {source}: it asks for {exc}; {REFUSAL_HINT}") from None
    except _Corrupt as exc:
        raise InputFileError(f"cannot load {source}: corrupt or truncated pickle ({exc})") from None
    except (EOFError, pickle.UnpicklingError) as exc:  # load()'s own loop: the stream ended early
        raise InputFileError(f"cannot load {source}: the file is truncated ({short(str(exc), 60) or 'no STOP'})") from None
