"""Score Dask arrays and dataframes (and Spark's ``mapInPandas``) with an ONNX model.

Scoring billions of rows is a job for an existing engine; this module only gives it the
right function.  Each worker process builds one :class:`gmmnet.score.Scorer` (one
single-threaded onnxruntime session) per model the first time it needs it and keeps it
(:func:`scorer_for`); partitions are scored with their global row offset, so the results
equal :func:`gmmnet.score.score` on the whole data bit for bit (see :mod:`gmmnet.score`).

Needs ``pip install 'gmmnet[dask]'`` (and pandas for dataframes).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Iterable, Iterator

import numpy as np

from .errors import DataError, UsageError
from .score import Scorer
from .score import score as _score

__all__ = ["ModelRef", "output_columns", "score_array", "score_dask", "score_dataframe", "score_pandas_batches",
           "scorer_for", "spark_schema"]

_CACHE: dict[tuple, Scorer] = {}
_LOCK = threading.Lock()
#: Sessions created by this process (tests read it on each worker to check "once per worker").
SESSIONS_CREATED = 0


class ModelRef:
    """A picklable handle to a model: a path (each worker loads the file) or the serialized bytes.

    Its ``key`` (path, size and mtime, or the SHA-256 of the bytes) names the cached scorer.
    """

    def __init__(self, model):
        if isinstance(model, ModelRef):
            self.path, self.data, self.key = model.path, model.data, model.key
            return
        if isinstance(model, (str, os.PathLike)):
            self.path, self.data = os.path.abspath(os.fspath(model)), None
            try:
                st = os.stat(self.path)
            except OSError:
                from .errors import InputFileError

                raise InputFileError(f"{os.fspath(model)}: no such file") from None
            self.key = ("path", self.path, st.st_size, st.st_mtime_ns)
            return
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        elif hasattr(model, "SerializeToString"):
            data = model.SerializeToString()
        else:
            raise UsageError(f"expected an ONNX model, its bytes or a path, got {type(model).__name__}")
        self.path, self.data = None, data
        self.key = ("sha256", hashlib.sha256(data).hexdigest())

    def load(self):
        return self.path if self.path is not None else self.data


def scorer_for(model, outputs=None) -> Scorer:
    """This process's scorer for ``model`` and ``outputs``: built on first use, then reused."""
    global SESSIONS_CREATED
    ref = model if isinstance(model, ModelRef) else ModelRef(model)
    key = (ref.key, None if outputs is None else tuple(outputs))
    scorer = _CACHE.get(key)
    if scorer is None:
        with _LOCK:
            scorer = _CACHE.get(key)
            if scorer is None:
                scorer = Scorer(ref.load(), outputs)
                SESSIONS_CREATED += 1
                _CACHE[key] = scorer
    return scorer


def output_columns(scorer: Scorer) -> list[tuple[str, str, int | None]]:
    """(column, output, index) for each output column: ``name`` or ``name_j`` for per-component outputs."""
    cols = []
    for name in scorer.outputs:
        shape = scorer.row_shapes[name]
        if not shape:
            cols.append((name, name, None))
        else:
            cols.extend((f"{name}_{j}", name, j) for j in range(int(np.prod(shape))))
    return cols


def _frame(scorer: Scorer, res: dict[str, np.ndarray], index=None):
    import pandas as pd

    data = {}
    for col, name, j in output_columns(scorer):
        v = res[name]
        data[col] = v if j is None else v.reshape(len(v), int(np.prod(scorer.row_shapes[name])))[:, j]
    return pd.DataFrame(data, index=index)


# ---------------------------------------------------------------------------
# dask


def _score_block(ref: ModelRef, outputs, x, offset: int) -> dict[str, np.ndarray]:
    scorer = scorer_for(ref, outputs)
    return _score(scorer, np.asarray(x), threads=1, offset=offset)


def score_array(model, x, *, outputs=None) -> dict:
    """Score a 2-D ``dask.array`` block by block; returns ``{output: dask array}`` (lazy).

    The feature axis is put in one chunk; row chunks stay as they are.  Computing several
    outputs together (``dask.compute(*result.values())``) scores each block once.
    """
    import dask
    import dask.array as da

    if x.ndim != 2:
        raise DataError(f"x must be 2-D (n_samples, n_features), got {x.ndim}-D")
    if x.numblocks[1] != 1:
        x = x.rechunk({1: -1})
    if any(np.isnan(c) for c in x.chunks[0]):
        x = x.compute_chunk_sizes()
    ref = ModelRef(model)
    local = scorer_for(ref, outputs)  # validates the model and outputs here, and gives the output shapes
    if local.n_features is not None and x.shape[1] != local.n_features:
        raise DataError(f"x has {x.shape[1]} features (columns); the model expects {local.n_features}")
    ref_d = dask.delayed(ref, pure=True)
    blocks = x.to_delayed().ravel()
    score_block = dask.delayed(_score_block, pure=True)
    parts: dict[str, list] = {k: [] for k in local.outputs}
    offset = 0
    for blk, n in zip(blocks, x.chunks[0]):
        res = score_block(ref_d, outputs, blk, offset)
        for k in local.outputs:
            parts[k].append(da.from_delayed(res[k], shape=(n, *local.row_shapes[k]), dtype=local.out_dtypes[k]))
        offset += n
    return {k: da.concatenate(v, axis=0) for k, v in parts.items()}


def _score_partition(ref: ModelRef, outputs, columns, pdf, offset: int):
    scorer = scorer_for(ref, outputs)
    x = pdf[list(columns)].to_numpy(dtype=np.float64, na_value=np.nan) if columns is not None else \
        pdf.to_numpy(dtype=np.float64, na_value=np.nan)
    return _frame(scorer, _score(scorer, x.reshape(len(pdf), -1), threads=1, offset=offset), index=pdf.index)


def score_dataframe(model, df, *, columns=None, outputs=None, lengths=None):
    """Score a ``dask.dataframe`` partition by partition; returns a lazy dataframe of results.

    ``columns`` picks the feature columns (default: all, in order).  The result has the
    input's index and divisions, and one column per scalar output (``label``,
    ``log_likelihood``) or per component (``responsibilities_0`` …).  Global row offsets
    need the partition lengths: pass ``lengths`` if known, otherwise they are computed
    first (one pass over the partitions).
    """
    import dask
    import dask.dataframe as dd

    ref = ModelRef(model)
    local = scorer_for(ref, outputs)
    cols = list(columns) if columns is not None else list(df.columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"the dataframe has no column {missing[0]!r}")
    if local.n_features is not None and len(cols) != local.n_features:
        raise DataError(f"the dataframe has {len(cols)} feature columns; the model expects {local.n_features}")
    if lengths is None:
        lengths = df.map_partitions(len).compute()
    lengths = [int(n) for n in lengths]
    if len(lengths) != df.npartitions:
        raise UsageError(f"lengths has {len(lengths)} entries for {df.npartitions} partitions")
    meta = _frame(local, local(np.zeros((0, local.n_features or len(cols)), local.dtype)))
    ref_d = dask.delayed(ref, pure=True)
    score_part = dask.delayed(_score_partition, pure=True)
    parts, offset = [], 0
    for part, n in zip(df.to_delayed(), lengths):
        parts.append(score_part(ref_d, outputs, cols if columns is not None else None, part, offset))
        offset += n
    return dd.from_delayed(parts, meta=meta, divisions=df.divisions, verify_meta=False)


def score_dask(model, data, **kwargs):
    """:func:`score_array` for a dask array, :func:`score_dataframe` for a dask dataframe."""
    import dask.array as da

    if isinstance(data, da.Array):
        return score_array(model, data, **kwargs)
    if hasattr(data, "map_partitions") and hasattr(data, "columns"):
        return score_dataframe(model, data, **kwargs)
    raise UsageError(f"expected a dask array or dataframe, got {type(data).__name__}")


# ---------------------------------------------------------------------------
# Spark (mapInPandas) and other engines that hand out pandas batches


def score_pandas_batches(model, batches: Iterable, *, columns=None, outputs=None) -> Iterator:
    """Score an iterator of pandas DataFrames; yields one result DataFrame per batch.

    This is the function Spark's ``DataFrame.mapInPandas`` wants (see docs/scoring.md):
    ``sdf.mapInPandas(functools.partial(score_pandas_batches, "model.onnx"), spark_schema("model.onnx"))``.
    Row offsets count from the start of the iterator (one Spark partition), so results
    match a single-process score bit for bit when each partition starts at a multiple of
    :data:`gmmnet.score.ALIGN` rows of the whole; otherwise they may differ in the last
    bit of float outputs.
    """
    ref = ModelRef(model)
    offset = 0
    for pdf in batches:
        yield _score_partition(ref, outputs, columns, pdf, offset)
        offset += len(pdf)


def spark_schema(model, outputs=None) -> str:
    """The Spark DDL schema of :func:`score_pandas_batches`'s results, e.g. ``"label bigint, …"``."""
    scorer = scorer_for(ModelRef(model), outputs)
    types = {}
    for name in scorer.outputs:
        dt = scorer.out_dtypes[name]
        types[name] = "bigint" if dt.kind in "iu" else ("float" if dt.itemsize == 4 else "double")
    return ", ".join(f"{col} {types[name]}" for col, name, _ in output_columns(scorer))
