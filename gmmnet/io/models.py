"""Loading and saving model files: estimators (pickle, joblib, skops), IR JSON and ONNX.

* ``.pkl`` / ``.pickle`` / ``.joblib`` go through :class:`~gmmnet.io.pickle.SafeUnpickler`.
* ``.skops`` files: every type named in the archive's schema is checked against the same
  allowlist before :func:`skops.io.load` runs with an explicit ``trusted`` list.
* A loaded estimator must be a mixture (an allowlisted model class) or a scikit-learn
  Pipeline of affine steps ending in one; its fitted attributes are checked for type and
  shape so that later code sees sane numbers.
* ONNX files are parsed without external data; every external-data location is checked
  (relative, no ``..``, no symlink out of the model's folder, exists, within size caps)
  before the data is read, and weights must be finite.
* JSON IR documents are size-capped and validated by :mod:`gmmnet.ir`.

Every failure is a :class:`~gmmnet.errors.GmmnetError` with a one-line message naming the
file.  Writers go through :func:`gmmnet.io.atomic.atomic_write`.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import stat
import tokenize
import zipfile
import zlib
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import (
    GmmnetError,
    InputFileError,
    InvalidModelError,
    NotFittedError,
    UnsafeFileError,
    UnsupportedModelError,
    UsageError,
)
from . import pickle as safe_pickle
from ._files import GiB, PathLike, check_readable, name, problem, read_capped, short, suffix
from .atomic import atomic_write

__all__ = [
    "ESTIMATOR_SUFFIXES",
    "MAX_ESTIMATOR_BYTES",
    "MAX_IR_BYTES",
    "MAX_ONNX_BYTES",
    "MAX_ONNX_EXTERNAL_BYTES",
    "MODEL_SUFFIXES",
    "check_finite_weights",
    "load_estimator",
    "load_ir",
    "load_model",
    "load_onnx",
    "is_mixture_state",
    "materialize",
    "save_estimator",
    "save_ir",
    "save_onnx",
]

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

_PIPELINE = ("sklearn.pipeline", "Pipeline")


# ---------------------------------------------------------------------------
# checks of a loaded estimator


_COVARIANCE_SHAPES = {
    "full": lambda k, d: (k, d, d),
    "tied": lambda k, d: (d, d),
    "diag": lambda k, d: (k, d),
    "spherical": lambda k, d: (k,),
}
_FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _key(obj: Any) -> tuple[str, str]:
    t = type(obj)
    return getattr(t, "__module__", "?"), getattr(t, "__qualname__", "?")


def _check_no_shadowing(est: Any, source: str) -> None:
    """An estimator whose pickled state replaces one of its methods with data is refused."""
    cls = type(est).__name__
    for key in vars(est):
        if callable(getattr(type(est), key, None)):
            raise UnsafeFileError(f"refusing to load {source}: its {cls} replaces the method {key!r} with data")


def _check_mixture_state(est: Any, source: str) -> None:
    """Structural checks of a loaded scikit-learn mixture, so later code sees sane attributes."""
    cls = type(est).__name__
    state = vars(est)
    ct = state.get("covariance_type")
    if type(ct) is not str or ct not in _COVARIANCE_SHAPES:
        raise InvalidModelError(f"invalid model in {source}: covariance_type must be one of full, tied, diag, spherical")
    present = [a for a in _FITTED if a in state]
    if not present:
        raise NotFittedError(f"{source} holds an unfitted {cls}; fit it before saving")
    if len(present) < len(_FITTED):
        missing = next(a for a in _FITTED if a not in present)
        raise InvalidModelError(f"invalid model in {source}: the fitted {cls} has no {missing}")

    def arr(attr: str, shape: tuple[int, ...] | None = None, ndim: int | None = None) -> np.ndarray:
        a = state.get(attr)
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
    if "precisions_" in state:
        arr("precisions_", expected)
    if cls == "BayesianGaussianMixture":
        for attr in ("degrees_of_freedom_", "mean_precision_"):
            if attr not in state:
                raise InvalidModelError(f"invalid model in {source}: the fitted {cls} has no {attr}")
        dof = state["degrees_of_freedom_"]
        if ct == "tied" and isinstance(dof, (float, int, np.floating, np.integer)) and not isinstance(dof, bool):
            pass  # one shared Wishart: a scalar
        else:
            arr("degrees_of_freedom_", (k,))
        arr("mean_precision_", (k,))
        prior = state.get("weight_concentration_prior_type")
        wc = state.get("weight_concentration_")
        if type(prior) is str and prior == "dirichlet_process":
            if not (type(wc) in (tuple, list) and len(wc) == 2):
                raise InvalidModelError(f"invalid model in {source}: weight_concentration_ must be a pair of arrays")
            for part in wc:
                if type(part) is not np.ndarray or part.shape != (k,) or part.dtype.kind not in "biuf":
                    raise InvalidModelError(f"invalid model in {source}: weight_concentration_ must be a pair of ({k},) arrays")
        elif type(prior) is str and prior == "dirichlet_distribution":
            arr("weight_concentration_", (k,))
        else:
            raise InvalidModelError(
                f"invalid model in {source}: weight_concentration_prior_type must be dirichlet_process or dirichlet_distribution"
            )


def _check_model(est: Any, source: str) -> None:
    """A model instance (mixture or registered class): no shadowed methods, sane fitted arrays."""
    _check_no_shadowing(est, source)
    if _key(est) in safe_pickle.SKLEARN_MIXTURES:
        _check_mixture_state(est, source)


def _check_pipeline(pipe: Any, source: str) -> None:
    """A Pipeline of affine steps (or 'passthrough') ending in a mixture."""
    _check_no_shadowing(pipe, source)
    steps = vars(pipe).get("steps")
    if type(steps) is not list or not steps:
        raise InvalidModelError(f"invalid model in {source}: the Pipeline has no steps")
    for i, step in enumerate(steps):
        if type(step) is not tuple or len(step) != 2 or type(step[0]) is not str:
            raise InvalidModelError(f"invalid model in {source}: Pipeline step {i} is not a (name, estimator) pair")
        label, est = step
        if i == len(steps) - 1:
            if not safe_pickle.is_model_class(type(est)):
                raise UnsupportedModelError(
                    f"{source}: the Pipeline ends in {_describe_step(est)}, not a mixture "
                    "(GaussianMixture, BayesianGaussianMixture or HierarchicalGaussianMixture)"
                )
            _check_model(est, source)
        elif est is None or (type(est) is str and est == "passthrough"):
            continue
        elif _key(est) in safe_pickle.STEP_CLASSES and _key(est) != _PIPELINE:
            _check_no_shadowing(est, source)
        else:
            raise UnsupportedModelError(
                f"{source}: Pipeline step {label!r} is {_describe_step(est)}, which is not an affine step gmmnet converts "
                f"(a mixture may follow only {safe_pickle.ACCEPTED_STEPS})"
            )


def _describe_step(est: Any) -> str:
    if isinstance(est, str):
        return repr(short(est, 40))
    module, qualname = _key(est)
    return f"a {module}.{qualname}"


def accept_estimator(obj: Any, source: str) -> Any:
    """``obj`` if it is a model gmmnet reads (a mixture, or a Pipeline ending in one), checked."""
    if safe_pickle.is_model_class(type(obj)):
        _check_model(obj, source)
        return obj
    if _key(obj) == _PIPELINE:
        _check_pipeline(obj, source)
        return obj
    module, qualname = _key(obj)
    if _key(obj) in safe_pickle.STEP_CLASSES:
        raise UnsupportedModelError(f"{source} holds a {qualname} on its own; gmmnet reads a mixture, or a Pipeline "
                                    "whose last step is one")
    raise UnsupportedModelError(
        f"{source} holds a {module}.{qualname}, not a scikit-learn GaussianMixture or BayesianGaussianMixture "
        "(or a Pipeline ending in one)"
    )


# ---------------------------------------------------------------------------
# pickle and joblib


def _load_pickled(path: PathLike, source: str, max_bytes: int, fitted_state: bool = False) -> Any:
    data = read_capped(path, max_bytes, "model file")
    data = safe_pickle.decompress_capped(data, source, max_bytes)
    return accept_estimator(safe_pickle.unpickle(data, source, fitted_state=fitted_state), source)


def materialize(obj: Any, path: PathLike) -> Any:
    """A model loaded from ``path`` with ``fitted_state=True`` as the scikit-learn estimator it
    stands for (imports scikit-learn), checked again as :func:`load_estimator` checks what it returns."""
    source = name(path)
    return accept_estimator(safe_pickle.materialize(obj, source), source)


def is_mixture_state(obj: Any) -> bool:
    """Whether ``obj`` is the stand-in of a bare scikit-learn mixture (what
    :func:`gmmnet.formats.sklearn.from_sklearn` reads without scikit-learn)."""
    return isinstance(obj, safe_pickle.FittedState) and _key(obj) in safe_pickle.SKLEARN_MIXTURES


# ---------------------------------------------------------------------------
# skops

# What zipfile raises on a damaged archive (a bad header, CRC or deflate stream, a member cut
# short, a compression method it does not know).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, OSError)


def _skops_members(path: PathLike, source: str, max_bytes: int) -> dict[str, bytes]:
    """schema.json and the headers of the .npy members, after checking the archive's sizes."""
    from numpy.lib import format as npy_format

    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > 100_000:
                raise InputFileError(f"cannot load {source}: too many entries in the skops archive ({len(infos)})")
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise InputFileError(f"{source} unpacks to {total} bytes, more than the limit of {max_bytes}")
            if "schema.json" not in {i.filename for i in infos}:
                raise InputFileError(f"cannot load {source}: not a skops file (no schema.json)")
            schema = zf.read("schema.json")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    try:
                        version = npy_format.read_magic(f)
                        read_header = npy_format.read_array_header_1_0 if version == (1, 0) \
                            else npy_format.read_array_header_2_0
                        shape, _, dtype = read_header(f)
                    except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as exc:
                        raise InputFileError(
                            f"cannot load {source}: corrupt array {short(info.filename, 40)} ({problem(exc)})") from None
                if dtype.hasobject:
                    raise UnsafeFileError(f"refusing to load pickled Python objects inside {source}: "
                                          f"{safe_pickle.REFUSAL_HINT}")
                if any(s < 0 for s in shape) or math.prod(shape) * dtype.itemsize > info.file_size:
                    raise InputFileError(f"cannot load {source}: array {short(info.filename, 40)} claims more data "
                                         "than it holds")
    except _ZIP_ERRORS as exc:
        raise InputFileError(f"cannot load {source}: not a valid skops file ({problem(exc)})") from None
    return {"schema.json": schema}


def _schema_classes(schema: bytes, source: str) -> set[tuple[str, str]]:
    """Every (module, class) the skops schema names, found without building anything."""
    try:
        tree = json.loads(schema)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, nesting deeper than json allows
        raise InputFileError(f"cannot load {source}: corrupt skops schema ({type(exc).__name__})") from None
    found: set[tuple[str, str]] = set()
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            mod, cls = node.get("__module__"), node.get("__class__")
            if isinstance(mod, str) and isinstance(cls, str):
                found.add((mod, cls))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


def _skops_refusals(classes: set[tuple[str, str]], source: str) -> None:
    """Refuse what the allowlist does not admit: other scikit-learn estimators (unsupported),
    anything else outside builtins and numpy (unsafe; skops's own check covers those two)."""
    unsupported = []
    for module, cls in sorted(classes):
        if safe_pickle.canonical_class(module, cls) is not None:
            continue
        if module == "builtins" or module == "numpy" or module.startswith("numpy."):
            continue  # skops's get_untrusted_types decides (it lists eval, exec, ...)
        refusal = safe_pickle.sklearn_class_refusal(module, cls, source)
        if refusal is None:
            raise UnsafeFileError(f"refusing to load {short(module, 80)}.{short(cls, 80)} from {source}: "
                                  f"{safe_pickle.REFUSAL_HINT}")
        unsupported.append(refusal)
    if unsupported:
        raise unsupported[0]


# What skops's loaders raise on a schema or array they cannot follow: its code reads the
# (file-controlled) JSON tree with plain indexing and attribute access.
_SKOPS_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, LookupError, OverflowError,
                 SyntaxError, tokenize.TokenError, NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError,
                 RecursionError)


def _load_skops(path: PathLike, source: str, max_bytes: int) -> Any:
    import skops.io as sio

    members = _skops_members(path, source, max_bytes)
    _skops_refusals(_schema_classes(members["schema.json"], source), source)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except _SKOPS_ERRORS as exc:
        raise InputFileError(f"cannot load {source}: corrupt skops file ({problem(exc)})") from None
    allowed = set(safe_pickle.safe_classes()) | set(safe_pickle.step_classes())
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        shown = ", ".join(short(t, 80) for t in refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise UnsafeFileError(f"refusing to load {shown} from {source}: {safe_pickle.REFUSAL_HINT}")
    trusted = sorted(t for t in untrusted if t in allowed)
    from pydantic import ValidationError

    try:
        obj = sio.load(path, trusted=trusted)
    except ValidationError as exc:
        from ..ir import format_validation_error

        raise InvalidModelError(f"invalid model in {source}: {format_validation_error(exc)}") from None
    except _SKOPS_ERRORS as exc:
        if isinstance(exc, ValueError) and "pickled" in str(exc):  # an .npy member holding pickled objects
            raise UnsafeFileError(f"refusing to load pickled Python objects inside {source}: "
                                  f"{safe_pickle.REFUSAL_HINT}") from None
        raise InputFileError(f"cannot load {source}: corrupt skops file ({problem(exc)})") from None
    return accept_estimator(obj, source)


# ---------------------------------------------------------------------------
# estimators


def load_estimator(path: PathLike, *, max_bytes: int = MAX_ESTIMATOR_BYTES, fitted_state: bool = False) -> Any:
    """Load a fitted scikit-learn mixture, a Pipeline ending in one, or a registered estimator, safely.

    Parameters
    ----------
    path : str or PathLike
        A ``.pkl``/``.pickle`` or ``.joblib`` file (compressed or not; read by
        :class:`~gmmnet.io.SafeUnpickler`), or a ``.skops`` file (:func:`skops.io.load` with an
        explicit trusted list, after the schema's types are checked).
    max_bytes : int
        Largest file, and largest decompressed stream or unzipped content.
    fitted_state : bool
        For pickle and joblib files: return scikit-learn estimators as
        :class:`~gmmnet.io.pickle.FittedState` stand-ins holding their fitted attributes, without
        importing scikit-learn (seconds saved where only the attributes are read, as
        :func:`gmmnet.formats.sklearn.from_sklearn` does for a mixture);
        :func:`~gmmnet.io.pickle.materialize` turns them into the estimators.

    Returns
    -------
    estimator
        A ``GaussianMixture``, ``BayesianGaussianMixture``, registered class instance, or a
        ``Pipeline`` of affine steps (StandardScaler, MinMaxScaler, MaxAbsScaler,
        RobustScaler, PCA, TruncatedSVD, "passthrough") ending in one of those.

    Raises
    ------
    UnsafeFileError
        The file references anything outside the allowlist (names the refused global).
    UnsupportedModelError
        Another scikit-learn estimator (refused by name before it is built), or a file that
        safely holds something that is not a mixture (a dict, an array, ...).
    InputFileError
        Missing, empty, truncated, corrupt or too large.
    NotFittedError, InvalidModelError
        An unfitted mixture, or fitted attributes of the wrong type or shape.
    """
    source = name(path)
    sfx = suffix(path)
    if sfx in SKOPS_SUFFIXES:
        st = check_readable(path)
        if st.st_size == 0:
            raise InputFileError(f"{source} is empty")
        if st.st_size > max_bytes:
            raise InputFileError(f"{source} is too large for a model file ({st.st_size} bytes, limit {max_bytes})")
        return _load_skops(path, source, max_bytes)
    if sfx in PICKLE_SUFFIXES + JOBLIB_SUFFIXES:
        return _load_pickled(path, source, max_bytes, fitted_state)
    raise InputFileError(
        f"{source}: unknown estimator file type {sfx or '(no suffix)'!r}; use {', '.join(ESTIMATOR_SUFFIXES)}"
    )


def _serialize_estimator(est: Any, sfx: str, source: str) -> bytes:
    if not (safe_pickle.is_model_class(type(est)) or _key(est) == _PIPELINE):
        raise UnsupportedModelError(
            f"cannot save a {type(est).__module__}.{type(est).__qualname__} to {source}: "
            "only scikit-learn mixtures, Pipelines ending in one and registered gmmnet estimators are saved"
        )
    if sfx in SKOPS_SUFFIXES:
        import skops.io as sio

        try:
            data = sio.dumps(est)
        except (TypeError, ValueError, AttributeError, pickle.PicklingError) as exc:
            raise UnsupportedModelError(f"cannot save to {source}: {problem(exc)}") from None
        # never write a file gmmnet itself would refuse to read
        classes = _schema_classes(zipfile.ZipFile(io.BytesIO(data)).read("schema.json"), source)
        try:
            _skops_refusals(classes, source)
        except GmmnetError as exc:
            raise UnsupportedModelError(f"cannot save to {source}: the estimator holds objects gmmnet refuses to load "
                                        f"({exc})") from None
        allowed = set(safe_pickle.safe_classes()) | set(safe_pickle.step_classes())
        refused = [t for t in sio.get_untrusted_types(data=data) if t not in allowed]
        if refused:
            raise UnsupportedModelError(
                f"cannot save to {source}: the estimator holds {', '.join(refused[:3])}, which gmmnet would refuse to load"
            )
        return data
    if sfx in PICKLE_SUFFIXES:
        pickled = lambda: pickle.dumps(est, protocol=4)  # noqa: E731
    elif sfx in JOBLIB_SUFFIXES:
        def pickled():
            import joblib

            buf = io.BytesIO()
            joblib.dump(est, buf)
            return buf.getvalue()
    else:
        raise UsageError(
            f"cannot save an estimator as {source}: unknown suffix {sfx or '(none)'!r}; use .skops, .pkl or .joblib"
        )
    try:
        data = pickled()
    except (pickle.PicklingError, TypeError, AttributeError, ValueError) as exc:  # an attribute pickle cannot store
        raise UnsupportedModelError(f"cannot save to {source}: {problem(exc)}") from None
    try:  # never write a file gmmnet itself would refuse to read
        safe_pickle.unpickle(data, source)
    except (UnsafeFileError, UnsupportedModelError) as exc:
        raise UnsupportedModelError(
            f"cannot save to {source}: the estimator holds objects gmmnet refuses to load ({exc})"
        ) from None
    return data


def save_estimator(est: Any, path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> None:
    """Save a fitted mixture (or a Pipeline ending in one) as ``.skops`` (recommended),
    ``.pkl``/``.pickle`` or ``.joblib``.

    The bytes are checked to load with :func:`load_estimator`'s rules before they are written
    (atomically, see :func:`~gmmnet.io.atomic_write`).
    """
    data = _serialize_estimator(est, suffix(path), name(path))
    atomic_write(path, data, force=force, inputs=inputs)


# ---------------------------------------------------------------------------
# JSON IR


def load_ir(path: PathLike, *, max_bytes: int = MAX_IR_BYTES):
    """Load and validate a JSON IR document (:class:`~gmmnet.ir.Mixture` or :class:`~gmmnet.ir.Hierarchy`).

    Malformed JSON → :class:`~gmmnet.errors.InputFileError`; a document that fails validation →
    :class:`~gmmnet.errors.InvalidModelError` naming the first failing field.
    """
    from pydantic import ValidationError

    from ..ir import format_validation_error, from_json

    source = name(path)
    data = read_capped(path, max_bytes, "JSON document", writable=False)
    try:
        return from_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err.get("type") in ("json_invalid", "recursion_loop"):
            raise InputFileError(f"cannot load {source}: not valid JSON ({short(err.get('msg', ''), 100)})") from None
        raise InvalidModelError(f"invalid model in {source}: {format_validation_error(exc)}") from None
    except GmmnetError as exc:  # the IR's own refusals (sizes, numbers) name no file: add it
        raise type(exc)(f"{source}: {exc}") from None


def save_ir(doc: Any, path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> None:
    """Write an IR document as JSON (atomically)."""
    from ..ir import Hierarchy, Mixture

    if not isinstance(doc, (Mixture, Hierarchy)):
        raise UnsupportedModelError(
            f"cannot save a {type(doc).__name__} as an IR document: expected a gmmnet Mixture or Hierarchy"
        )
    import pydantic_core

    # model_dump_json's text as UTF-8 bytes directly: no str of the (base64) arrays to encode again
    body = pydantic_core.to_json(doc, indent=2)
    atomic_write(path, lambda f: (f.write(body), f.write(b"\n")), force=force, inputs=inputs)


# ---------------------------------------------------------------------------
# ONNX


def _onnx_tensors(model, source: str) -> Iterator:
    """Every TensorProto of a model: initializers, sparse initializers, attribute tensors, subgraphs, functions."""

    def graph_tensors(g, depth: int):
        if depth > 64:
            raise InputFileError(f"cannot load {source}: ONNX subgraphs nested too deeply")
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
    for t in _onnx_tensors(model, source):
        if not (t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL):
            continue
        count += 1
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        tname = short(t.name or "(unnamed)", 60)
        why = _is_unsafe_location(location)
        if why:
            raise UnsafeFileError(
                f"refusing to load {source}: tensor {tname!r} points its data at {why} "
                f"({short(location, 80)!r}); external data must be a file in the model's folder"
            )
        resolved = os.path.realpath(os.path.join(base_real, location))
        if os.path.commonpath([resolved, base_real]) != base_real:
            raise UnsafeFileError(
                f"refusing to load {source}: the external data {short(location, 80)!r} of tensor {tname!r} "
                "resolves (through a symbolic link) to a file outside the model's folder"
            )
        if resolved not in sizes:
            try:
                st = os.stat(resolved)
            except FileNotFoundError:
                raise InputFileError(
                    f"cannot load {source}: external data file {short(location, 80)!r} of tensor {tname!r} is missing"
                ) from None
            except OSError as exc:
                raise InputFileError(
                    f"cannot load {source}: cannot read external data {short(location, 80)!r}: {exc.strerror}"
                ) from None
            if not stat.S_ISREG(st.st_mode):
                raise InputFileError(f"cannot load {source}: external data {short(location, 80)!r} is not a regular file")
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
                f"{short(location, 80)!r}, which has {size} bytes"
            )
        total += length
        if total > max_external_bytes:
            raise InputFileError(f"{source}: external data is larger than the limit of {max_external_bytes} bytes")
    return count


def _weight_tensors(model) -> Iterator[tuple[str, Any]]:
    """(what, TensorProto) for the main graph's floating-point weights: initializers, sparse
    initializers' values and Constant nodes' values."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    g = model.graph
    for t in g.initializer:
        if t.data_type in floats:
            yield f"initializer {short(t.name, 60)!r}", t
    for sp in g.sparse_initializer:
        if sp.values.data_type in floats:
            yield f"sparse initializer {short(sp.values.name, 60)!r}", sp.values
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value" and a.HasField("t") and a.t.data_type in floats:
                    label = node.output[0] if node.output else node.name
                    yield f"constant {short(label, 60)!r}", a.t


def check_finite_weights(model, source: str = "model") -> None:
    """InvalidModelError naming the first weight (initializer or constant) that holds NaN or ±inf.

    The one check behind every verb that reads an ONNX file (load_onnx calls it) and behind
    scoring an in-memory model: such a network outputs NaN for every row.
    """
    from onnx import numpy_helper

    for what, tensor in _weight_tensors(model):
        try:
            values = numpy_helper.to_array(tensor).reshape(-1)
        except (ValueError, TypeError) as exc:  # raw data that does not match the dims (the checker's job)
            raise InvalidModelError(f"invalid model in {source}: {what} is malformed ({problem(exc)})") from None
        for i in range(0, values.size, 1 << 20):  # in blocks: no mask as large as the weights
            block = values[i:i + (1 << 20)]
            if not np.isfinite(block).all():
                kind = "NaN" if np.isnan(block).any() else "infinite"
                raise InvalidModelError(f"invalid model in {source}: {what} holds {kind} values")


def load_onnx(path: PathLike, *, max_bytes: int = MAX_ONNX_BYTES, max_external_bytes: int = MAX_ONNX_EXTERNAL_BYTES,
              check: bool = True, return_bytes: bool = False):
    """Load an ONNX model safely.

    The protobuf is parsed without external data; every external-data reference is then
    checked (a relative path with no ``..``, resolving — symlinks followed — inside the model's
    folder, an existing regular file, offset/length inside it, the total within
    ``max_external_bytes``) before :func:`onnx.external_data_helper.load_external_data_for_model`
    reads it.  With ``check`` the result goes through :func:`onnx.checker.check_model`.
    Floating-point weights must be finite (:func:`check_finite_weights`).

    Returns
    -------
    onnx.ModelProto, or (onnx.ModelProto, bytes or None) with ``return_bytes``
        With ``return_bytes``, also the file's bytes the model was parsed from (``None`` when it
        has external data: then they are not the whole model), for callers that would otherwise
        serialize it again (onnxruntime sessions).
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import load_external_data_for_model

    source = name(path)
    data = read_capped(path, max_bytes, "ONNX model", writable=False)
    try:
        model = onnx.load_model_from_string(data)
    except DecodeError as exc:
        raise InputFileError(f"cannot load {source}: not a valid ONNX protobuf (truncated or corrupt: {problem(exc)})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise InputFileError(f"cannot load {source}: not an ONNX model (it has no graph nodes)")
    base_dir = os.path.dirname(os.path.abspath(source))
    external = _check_external_data(model, source, base_dir, max_external_bytes)
    if external:
        data = None  # the file's bytes are not the model: the checker sees the loaded one
        try:
            load_external_data_for_model(model, base_dir)
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:  # reading the files it names
            raise InputFileError(f"cannot load {source}: cannot read its external data ({problem(exc)})") from None
        if any(t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL
               for t in _onnx_tensors(model, source)):
            raise UnsupportedModelError(f"{source}: external data in sparse tensors or training info is not supported")
    if check:
        try:
            if data is not None:  # the bytes just parsed: the checker need not serialize the model again
                onnx.checker.check_model(data)
            elif model.ByteSize() < 2 * GiB:
                onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidModelError(f"invalid model in {source}: the ONNX checker says: {short(first, 200)}") from None
        except UnicodeDecodeError:  # the checker's message quotes a name that is not UTF-8
            raise InvalidModelError(f"invalid model in {source}: the ONNX checker refuses it (a name is not UTF-8 "
                                    "text)") from None
    check_finite_weights(model, source)
    return (model, data) if return_bytes else model


def save_onnx(model: Any, path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = (),
              serialized: bytes | None = None) -> None:
    """Write an ``onnx.ModelProto`` (atomically, data inline).

    ``serialized``: the model's protobuf bytes when the caller already has them (the export
    plan keeps those its check made: ``plan.state["serialized"]``), so a large model is not
    serialized twice; they are written in place of ``model.SerializeToString()``.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise UnsupportedModelError(f"cannot save a {type(model).__name__} as ONNX: expected an onnx.ModelProto")
    if serialized is not None:
        atomic_write(path, serialized, force=force, inputs=inputs)
        return
    try:
        data = model.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages of 2 GiB or more
        raise UnsupportedModelError(f"cannot save {name(path)}: {problem(exc)}") from None
    atomic_write(path, data, force=force, inputs=inputs)


# ---------------------------------------------------------------------------
# any model


def load_model(path: PathLike, *, fitted_state: bool = False):
    """Load any model file gmmnet reads, by suffix.

    ``.pkl``/``.pickle``/``.joblib``/``.skops`` → estimator (:func:`load_estimator`; with
    ``fitted_state``, a pickle's scikit-learn estimators as stand-ins), ``.json`` → IR document
    (:func:`load_ir`), ``.onnx`` → ``onnx.ModelProto`` (:func:`load_onnx`).
    """
    source = name(path)
    sfx = suffix(path)
    if sfx not in MODEL_SUFFIXES:
        raise InputFileError(
            f"{source}: unknown model file type {sfx or '(no suffix)'!r}; accepted: {', '.join(MODEL_SUFFIXES)}"
        )
    check_readable(path)
    if sfx in ESTIMATOR_SUFFIXES:
        return load_estimator(path, fitted_state=fitted_state)
    if sfx in IR_SUFFIXES:
        return load_ir(path)
    return load_onnx(path)
