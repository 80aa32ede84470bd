"""Safe loading and saving of every file gmmnet reads or writes.

Model files and data files are untrusted input.  The package has one module per concern:

* :mod:`gmmnet.io.pickle` — the restricted unpickler (:class:`SafeUnpickler`) and joblib's
  container format: pickle, joblib and skops files can build only allowlisted classes
  (:func:`register_safe_class`); see docs/security.md.
* :mod:`gmmnet.io.tables` — the one table reader (``.npy``, ``.csv``, ``.parquet``) that
  ``fit``, ``score``, ``plot`` and ``to-gmm --data`` share (:func:`open_data`,
  :func:`load_data`).
* :mod:`gmmnet.io.atomic` — atomic output (:func:`atomic_write`, :func:`same_file`).
* :mod:`gmmnet.io.models` — model files: estimators and Pipelines (pickle, joblib, skops), IR
  JSON, ONNX with its external data checked (:func:`load_model` and the ``save_*`` writers).

Every failure is a :class:`~gmmnet.errors.GmmnetError` with a one-line message naming the file.
"""

from __future__ import annotations

from .atomic import atomic_write, same_file
from .models import (
    ESTIMATOR_SUFFIXES,
    MAX_ESTIMATOR_BYTES,
    MAX_IR_BYTES,
    MAX_ONNX_BYTES,
    MAX_ONNX_EXTERNAL_BYTES,
    MODEL_SUFFIXES,
    ONNX_SUFFIXES,
    check_finite_weights,
    is_mixture_state,
    load_estimator,
    load_ir,
    load_model,
    load_onnx,
    materialize,
    save_estimator,
    save_ir,
    save_onnx,
)
from .pickle import FittedState, SafeUnpickler, register_safe_class, safe_classes, step_classes
from .tables import DATA_SUFFIXES, DataNote, iter_chunks, load_data, open_data, print_note, read_npy_header

__all__ = [
    "DATA_SUFFIXES",
    "ESTIMATOR_SUFFIXES",
    "MAX_ESTIMATOR_BYTES",
    "MAX_IR_BYTES",
    "MAX_ONNX_BYTES",
    "MAX_ONNX_EXTERNAL_BYTES",
    "MODEL_SUFFIXES",
    "ONNX_SUFFIXES",
    "DataNote",
    "FittedState",
    "SafeUnpickler",
    "atomic_write",
    "check_finite_weights",
    "is_mixture_state",
    "iter_chunks",
    "load_data",
    "load_estimator",
    "load_ir",
    "load_model",
    "load_onnx",
    "materialize",
    "open_data",
    "print_note",
    "read_npy_header",
    "register_safe_class",
    "safe_classes",
    "same_file",
    "save_estimator",
    "save_ir",
    "save_onnx",
    "step_classes",
]
