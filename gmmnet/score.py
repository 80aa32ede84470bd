"""Bounded-memory batch scoring of an ONNX model over .npy, .csv and .parquet data.

The data is read in chunks of rows (a memory-mapped ``.npy``, a streamed ``.csv``, a
``.parquet`` file by record batches, or an in-memory array), each chunk is scored by
onnxruntime, and the results are handed out chunk by chunk (:func:`iter_scores`),
gathered (:func:`score`) or written incrementally to a file (:func:`score_to_file`).
Peak memory is a few chunks, whatever the number of rows.

Reproducibility: a row's result does not depend on how the data is cut into chunks.
onnxruntime's vectorized kernels give results that depend on a row's position inside
the tensor (its address modulo the SIMD width) and, with several intra-op threads, on
how the work is split.  So every session here runs single-threaded (parallelism comes
from scoring several chunks at once) and every chunk is padded so that global row ``i``
sits at position ``i mod ALIGN`` of the tensor handed to onnxruntime.  Scoring the same
rows in one piece, in chunks of any size, or partition by partition on a cluster
(:mod:`gmmnet.distributed`) gives bit-for-bit the same numbers.

Rows holding NaN or ±inf give NaN in every float output and ``-1`` in ``label``; the
other rows are unaffected.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io as _io
import mmap
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import DataError, InputFileError, UnsafeFileError, UsageError
from .io import _parse_number

__all__ = [
    "ALIGN",
    "CHUNK_BYTES",
    "DATA_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "Scorer",
    "iter_chunks",
    "iter_scores",
    "open_data",
    "score",
    "score_to_file",
]

#: Rows are placed at ``global index mod ALIGN`` inside each padded chunk (see module doc).
#: 64 rows × any row width × any item size is a multiple of 64 bytes, the widest SIMD
#: register and a cache line, so every row sees the same alignment in every chunk.
ALIGN = 64
#: Target size of the widest per-chunk intermediate (the layer of K·r activations).
#: Chosen by measurement (benchmarks/score_memory.py --sweep, table in docs/scoring.md):
#: one session scores fastest with about 0.5-4 MiB of activations per chunk (the per-core
#: caches) and loses 30-50% with chunks of 16 MiB and more.
CHUNK_BYTES = 1 << 20
#: Bounds on the default number of rows per chunk (below ~128 rows the per-call cost shows).
MIN_ROWS = 128
MAX_ROWS = 65536

DATA_SUFFIXES = (".npy", ".csv", ".parquet")
OUTPUT_SUFFIXES = (".npy", ".npz", ".csv")

_NP = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def _name(path) -> str:
    return os.fspath(path)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


# ---------------------------------------------------------------------------
# the scorer: one single-threaded session, padding, NaN rows


class Scorer:
    """Score 2-D chunks with one ONNX model, reproducibly.

    Parameters
    ----------
    model : onnx.ModelProto, bytes, path or onnxruntime.InferenceSession
        The network (any single-input ONNX model with a leading batch dimension).
    outputs : sequence of str, optional
        Outputs to compute (default: all graph outputs, in graph order).

    Notes
    -----
    The session runs with one intra-op thread (see the module doc); :meth:`__call__` is
    thread-safe, so several chunks may be scored at once from different threads.
    """

    def __init__(self, model, outputs=None):
        import onnxruntime as ort

        from .formats.onnx.runtime import session

        if isinstance(model, ort.InferenceSession):
            self.session = model
        else:
            if isinstance(model, (str, os.PathLike)):
                from .io import load_onnx

                model = load_onnx(model)  # safe loading: external data checked, size capped
            self.session = session(model, intra_op_num_threads=1, inter_op_num_threads=1)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UsageError(f"the model has {len(inputs)} inputs; scoring needs a model with one input")
        inp = inputs[0]
        self.input_name = inp.name
        dtype = _NP.get(inp.type)
        if dtype is None:
            raise DataError(f"model input {inp.name!r} has type {inp.type}; expected float or double")
        self.dtype = np.dtype(dtype)
        if len(inp.shape) != 2:
            raise UsageError(f"model input {inp.name!r} has shape {inp.shape}; expected (batch, features)")
        n = inp.shape[1]
        self.n_features: int | None = n if isinstance(n, int) else None
        names = [o.name for o in self.session.get_outputs()]
        if outputs is None:
            outputs = names
        else:
            outputs = [outputs] if isinstance(outputs, str) else list(outputs)
            missing = [o for o in outputs if o not in names]
            if missing:
                raise UsageError(f"the model has no output {missing[0]!r} (it has {', '.join(names)})")
            if not outputs:
                raise UsageError(f"name at least one output (the model has {', '.join(names)})")
            if len(set(outputs)) != len(outputs):
                raise UsageError(f"outputs has duplicates: {outputs}")
        self.outputs: list[str] = list(outputs)
        self.all_outputs = names
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.n_neurons = int(meta.get("n_neurons", "0")) or None
        except ValueError:
            self.n_neurons = None
        self.row_shapes: dict[str, tuple] = {}
        self.out_dtypes: dict[str, np.dtype] = {}
        if self.n_features is not None:
            self.probe(self.n_features)

    def probe(self, n_features: int) -> None:
        """Learn each output's per-row shape and dtype from one run on zeros (no guessing from symbolic dims)."""
        if self.row_shapes:
            return
        try:
            probe = self._run(np.zeros((ALIGN, n_features), self.dtype))
        except Exception as exc:  # onnxruntime's own error types
            raise DataError(f"the model cannot score rows of {n_features} features ({type(exc).__name__})") from None
        self.row_shapes = {k: v.shape[1:] for k, v in probe.items()}
        self.out_dtypes = {k: v.dtype for k, v in probe.items()}

    # -- sizes ---------------------------------------------------------------

    def default_batch_size(self) -> int:
        """Rows per chunk: the widest intermediate (K·r activations, or the outputs) near CHUNK_BYTES."""
        width = max([self.n_neurons or 0, self.n_features or 1]
                    + [int(np.prod(s)) if s else 1 for s in self.row_shapes.values()])
        rows = CHUNK_BYTES // (width * self.dtype.itemsize)
        return int(min(MAX_ROWS, max(MIN_ROWS, _round_up(rows, ALIGN))))

    # -- scoring -------------------------------------------------------------

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {self.input_name: x})
        return dict(zip(self.outputs, values))

    def check(self, x, source: str = "X") -> np.ndarray:
        """``x`` as a 2-D array with the model's number of features (DataError otherwise)."""
        x = np.asarray(x)
        if x.ndim == 1 and self.n_features == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2:
            raise DataError(f"{source} must be 2-D (n_samples, n_features), got shape {x.shape}")
        if self.n_features is not None and x.shape[1] != self.n_features:
            raise DataError(f"{source} has {x.shape[1]} features (columns); the model expects {self.n_features}")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{source} holds {x.dtype} values; expected real numbers")
        return x

    def __call__(self, x, offset: int = 0) -> dict[str, np.ndarray]:
        """Score the rows of ``x``; ``offset`` is the global index of its first row.

        Returns ``{output: array}`` with one entry per row.  Rows with NaN or ±inf give NaN
        (float outputs) and -1 (integer outputs such as ``label``).
        """
        x = self.check(x)
        n, d = x.shape
        pre = int(offset) % ALIGN
        total = _round_up(n + pre, ALIGN) if n else 0
        buf = np.zeros((total, d), self.dtype)
        if n:
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range → inf → a bad row
                buf[pre:pre + n] = x  # cast to the model's dtype while copying
        rows = buf[pre:pre + n]
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            rows[bad] = 0.0  # finite stand-ins; their results are overwritten below
        if total:
            out = self._run(buf)
            out = {k: v[pre:pre + n] for k, v in out.items()}
        else:
            out = {k: np.zeros((0, *self.row_shapes.get(k, ())), self.out_dtypes.get(k, self.dtype))
                   for k in self.outputs}
        if bad.any():
            out = {k: np.array(v) for k, v in out.items()}  # own the memory before writing
            for k, v in out.items():
                v[bad] = -1 if v.dtype.kind in "iu" else np.nan
        return out


# ---------------------------------------------------------------------------
# data sources


class _Source:
    name = "X"
    n_rows: int | None = None
    n_features: int | None = None

    def chunks(self, rows: int) -> Iterator[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def progress(self) -> float | None:
        """Fraction read so far, when rows are not known in advance."""
        return None

    def close(self) -> None:
        pass


class _ArraySource(_Source):
    def __init__(self, x, name: str = "X"):
        x = np.asarray(x)
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2:
            raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {x.shape}")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{name} holds {x.dtype} values; expected real numbers")
        self.x, self.name = x, name
        self.n_rows, self.n_features = x.shape

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        for i in range(0, self.n_rows, rows):
            yield self.x[i:i + rows]


class _NpySource(_Source):
    """A memory-mapped .npy; pages behind the read position are dropped from this process."""

    def __init__(self, path):
        self.name = _name(path)
        _check_file(path, self.name)
        from .io import read_npy_header

        shape, fortran, dtype, self._data_offset = read_npy_header(path, self.name)
        if dtype.hasobject:
            raise UnsafeFileError(f"refusing to load Python objects from {self.name}: only numeric arrays are allowed")
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise DataError(f"{self.name} holds {dtype} values; expected real numbers")
        if len(shape) not in (1, 2):
            raise DataError(f"{self.name} holds a {len(shape)}-D array of shape {shape}; expected 2-D (n_samples, n_features)")
        need = self._data_offset + int(np.prod(shape)) * dtype.itemsize
        if os.path.getsize(path) < need:
            raise InputFileError(f"cannot load {self.name}: truncated .npy file (shape {shape} needs {need} bytes)")
        self.n_rows = shape[0]
        self.n_features = shape[1] if len(shape) == 2 else 1
        self._fortran = fortran
        self._x = np.load(path, mmap_mode="r", allow_pickle=False) if self.n_rows and self.n_features else None
        if self._x is not None and self._x.ndim == 1:
            self._x = self._x.reshape(-1, 1)

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        if self._x is None:
            return
        mm = getattr(self._x, "_mmap", None) or getattr(getattr(self._x, "base", None), "_mmap", None)
        row_bytes = self.n_features * self._x.dtype.itemsize
        page = mmap.PAGESIZE
        done = 0  # bytes of the mapping already released
        for i in range(0, self.n_rows, rows):
            yield np.array(self._x[i:i + rows])  # a copy: the caller may keep it past the release below
            if mm is not None and not self._fortran and hasattr(mm, "madvise"):
                end = (self._data_offset + (i + rows) * row_bytes) // page * page
                if end > done:
                    with contextlib.suppress(OSError, ValueError):
                        mm.madvise(mmap.MADV_DONTNEED, done, end - done)  # keep RSS at a chunk, not the file
                    done = end

    def close(self) -> None:
        self._x = None


class _CsvSource(_Source):
    """A streamed .csv: numbers separated by commas; optional header line, blank and # lines skipped."""

    def __init__(self, path):
        self.name = _name(path)
        _check_file(path, self.name)
        self._size = max(1, os.path.getsize(path))
        self._f = open(path, "rb")
        try:
            self._start()
        except BaseException:
            self._f.close()
            raise

    def _start(self) -> None:
        self._read = 0
        self._lineno = 0
        self._pending: list[tuple[int, str]] = []  # the first data line, read to learn the width
        first = self._next_data_line()
        if first is None:
            self.n_features = None
            return
        lineno, text = first
        cells = _split(text, self.name, lineno)
        if all(_parse_number(c) is None and c.strip() for c in cells):  # a header of column names
            first = self._next_data_line()
            if first is None:
                self.n_features = None
                return
            lineno, text = first
            cells = _split(text, self.name, lineno)
        self.n_features = len(cells)
        self._width_line = lineno
        self._pending = [first]

    def _next_data_line(self) -> tuple[int, str] | None:
        while True:
            raw = self._f.readline()
            if not raw:
                return None
            self._read += len(raw)
            self._lineno += 1
            try:
                text = raw.decode("utf-8-sig" if self._lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InputFileError(f"cannot load {self.name}: line {self._lineno} is not UTF-8 text") from None
            stripped = text.strip()
            if not stripped or stripped.startswith("#") or not stripped.strip(", \t"):
                continue
            return self._lineno, text

    def progress(self) -> float:
        return min(1.0, self._read / self._size)

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        if self.n_features is None:
            return
        d = self.n_features
        while True:
            lines = self._pending
            self._pending = []
            while len(lines) < rows:
                item = self._next_data_line()
                if item is None:
                    break
                lines.append(item)
            if not lines:
                return
            yield self._parse(lines, d)

    def _parse(self, lines: list[tuple[int, str]], d: int) -> np.ndarray:
        texts = [t for _, t in lines]
        if not any('"' in t for t in texts):
            try:  # fast path: numpy's C parser; the slow path below names the bad cell
                with np.errstate(all="ignore"):
                    x = np.loadtxt(texts, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
                if x.shape == (len(lines), d):
                    return x
            except ValueError:
                pass
        out = np.empty((len(lines), d), np.float64)
        for r, (lineno, text) in enumerate(lines):
            cells = _split(text, self.name, lineno)
            if len(cells) != d:
                raise DataError(f"{self.name} line {lineno} has {len(cells)} values, expected {d} "
                                f"(as on line {self._width_line})")
            for c, cell in enumerate(cells):
                v = _parse_number(cell)
                if v is None:
                    what = "an empty cell" if not cell.strip() else f"{cell.strip()[:30]!r} is not a number"
                    raise DataError(f"{self.name} line {lineno}, column {c + 1}: {what}")
                out[r, c] = v
        return out

    def close(self) -> None:
        self._f.close()


def _split(text: str, name: str, lineno: int) -> list[str]:
    try:
        rows = list(csv.reader([text], skipinitialspace=True))
    except csv.Error as exc:
        raise InputFileError(f"cannot load {name}: malformed CSV on line {lineno} ({exc})") from None
    return rows[0] if rows else []


class _ParquetSource(_Source):
    """A .parquet file read by record batches (pyarrow); every column must be numeric; nulls are NaN."""

    def __init__(self, path, columns=None):
        self.name = _name(path)
        _check_file(path, self.name)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError("reading .parquet needs pyarrow: pip install 'gmmnet[parquet]'") from None
        try:
            self._pf = pq.ParquetFile(path)
            schema = self._pf.schema_arrow
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError…
            raise InputFileError(f"cannot load {self.name}: not a valid Parquet file ({type(exc).__name__}: {exc})") from None
        names = list(columns) if columns is not None else schema.names
        for col in names:
            if col not in schema.names:
                raise DataError(f"{self.name} has no column {col!r}")
            t = schema.field(col).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise DataError(f"{self.name} column {col!r} holds {t} values; expected numbers")
        self._columns = names
        self.n_rows = self._pf.metadata.num_rows
        self.n_features = len(names)

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        if not self.n_rows or not self.n_features:
            return
        for batch in self._pf.iter_batches(batch_size=rows, columns=self._columns):
            x = np.empty((batch.num_rows, self.n_features), np.float64)
            for j, col in enumerate(batch.columns):
                x[:, j] = col.to_numpy(zero_copy_only=False)  # nulls arrive as NaN
            yield x

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pf.close()


def _check_file(path, name: str) -> None:
    if not os.path.exists(path):
        raise InputFileError(f"{name}: no such file")
    if not os.path.isfile(path):
        raise InputFileError(f"{name}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{name}: permission denied")


def open_data(data, *, columns=None) -> _Source:
    """A chunked reader for a path (.npy, .csv, .parquet) or an in-memory 2-D array."""
    if isinstance(data, (str, os.PathLike)):
        suffix = Path(os.fspath(data)).suffix.lower()
        if suffix == ".npy":
            return _NpySource(data)
        if suffix == ".csv":
            return _CsvSource(data)
        if suffix == ".parquet":
            return _ParquetSource(data, columns=columns)
        raise InputFileError(f"{_name(data)}: unknown data file type {suffix or '(no suffix)'!r}; "
                             f"accepted: {', '.join(DATA_SUFFIXES)}")
    return _ArraySource(data)


def iter_chunks(data, batch_size: int = 4096, *, columns=None) -> Iterator[np.ndarray]:
    """The rows of ``data`` (path or array) as 2-D arrays of at most ``batch_size`` rows."""
    src = open_data(data, columns=columns)
    try:
        yield from src.chunks(_check_batch(batch_size))
    finally:
        src.close()


def _check_batch(batch_size) -> int:
    try:
        b = int(batch_size)
    except (TypeError, ValueError):
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}") from None
    if b < 1 or b != batch_size:
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}")
    return b


# ---------------------------------------------------------------------------
# scoring loops


def _threads(threads) -> int:
    if threads is None:
        return max(1, min(os.cpu_count() or 1, 8))
    if int(threads) < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    return int(threads)


def _scored(scorer: Scorer, src: _Source, batch_size: int, threads: int,
            on_chunk: Callable[[int], None] | None = None, offset: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Score ``src`` chunk by chunk, ``threads`` chunks at a time, yielding results in order."""
    if src.n_features is not None and scorer.n_features is not None and src.n_features != scorer.n_features:
        raise DataError(f"{src.name} has {src.n_features} features (columns); the model expects {scorer.n_features}")
    if src.n_features:
        scorer.probe(src.n_features)
    if threads == 1:
        for x in src.chunks(batch_size):
            out = scorer(x, offset)
            offset += len(x)
            if on_chunk:
                on_chunk(len(x))
            yield out
        return
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="gmmnet-score") as pool:
        pending: deque = deque()
        try:
            for x in src.chunks(batch_size):
                pending.append((len(x), pool.submit(scorer, x, offset)))
                offset += len(x)
                while len(pending) > threads:  # bounded: at most threads+1 chunks in memory
                    n, fut = pending.popleft()
                    out = fut.result()
                    if on_chunk:
                        on_chunk(n)
                    yield out
            while pending:
                n, fut = pending.popleft()
                out = fut.result()
                if on_chunk:
                    on_chunk(n)
                yield out
        finally:
            for _, fut in pending:
                fut.cancel()


def iter_scores(model, data, *, outputs=None, batch_size: int | None = None, threads: int | None = None,
                columns=None, offset: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Score ``data`` chunk by chunk: yields ``{output: array}`` for consecutive chunks of rows.

    Parameters
    ----------
    model : onnx.ModelProto, bytes, path, onnxruntime.InferenceSession or Scorer
    data : path (.npy memory-mapped, .csv streamed, .parquet by record batches) or 2-D array
    outputs : sequence of str, optional
        Graph outputs to compute (default: all).
    batch_size : int, optional
        Rows per chunk (default: :meth:`Scorer.default_batch_size`, about CHUNK_BYTES of activations).
    threads : int, optional
        Chunks scored at once, each on a single-threaded session (default: CPU count, at most 8).
    columns : sequence of str, optional
        Parquet columns to use as features (default: all).
    offset : int
        Global index of the first row, when ``data`` is one part of a larger whole (see the
        module doc: it decides where rows sit in the padded chunks, so parts scored apart
        match the whole bit for bit).
    """
    scorer = model if isinstance(model, Scorer) else Scorer(model, outputs)
    src = open_data(data, columns=columns)
    try:
        bs = _check_batch(batch_size) if batch_size is not None else scorer.default_batch_size()
        yield from _scored(scorer, src, bs, _threads(threads), offset=int(offset))
    finally:
        src.close()


def score(model, data, *, outputs=None, batch_size: int | None = None, threads: int | None = None,
          columns=None, offset: int = 0) -> dict[str, np.ndarray]:
    """Score all of ``data`` and return ``{output: array}`` (see :func:`iter_scores`).

    The results are bit-for-bit those of any other chunking, and of
    :mod:`gmmnet.distributed`.  Rows with NaN/inf give NaN (label: -1).
    """
    scorer = model if isinstance(model, Scorer) else Scorer(model, outputs)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in scorer.outputs}
    for out in iter_scores(scorer, data, batch_size=batch_size, threads=threads, columns=columns, offset=offset):
        for k, v in out.items():
            parts[k].append(v)
    if any(not v for v in parts.values()):  # no rows: empty arrays of the right shapes and dtypes
        return scorer(np.zeros((0, scorer.n_features or 0), scorer.dtype))
    return {k: np.concatenate(v) for k, v in parts.items()}


# ---------------------------------------------------------------------------
# writers


class _NpyStream:
    """Write a .npy whose row count is known only at the end: header reserved, rewritten last."""

    _PLACEHOLDER = 10**15  # the header is sized for this many rows and padded on rewrite

    def __init__(self, f, dtype, row_shape):
        self.f, self.dtype, self.row_shape = f, np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self._start = f.tell()
        head = self._header(self._PLACEHOLDER)
        self._len = _round_up(len(head) + 1, 64)  # the total header size, fixed from here on
        f.write(self._pad(head))

    def _header(self, n: int) -> bytes:
        from numpy.lib import format as npy_format

        d = {"descr": npy_format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (n, *self.row_shape)}
        return repr(d).encode("latin1")

    def _pad(self, head: bytes) -> bytes:
        prefix = b"\x93NUMPY\x01\x00"
        body_len = self._len - len(prefix) - 2
        if body_len > 0xFFFF:  # pragma: no cover - only with absurd row shapes
            raise DataError("output row shape too large for a .npy header")
        body = head + b" " * (body_len - len(head) - 1) + b"\n"
        return prefix + body_len.to_bytes(2, "little") + body

    def write(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if arr.shape[1:] != self.row_shape:
            raise DataError(f"output chunk of shape {arr.shape} does not match rows of shape {self.row_shape}")
        self.f.write(arr.data if arr.size else b"")
        self.rows += arr.shape[0]

    def finish(self) -> None:
        end = self.f.tell()
        self.f.seek(self._start)
        self.f.write(self._pad(self._header(self.rows)))
        self.f.seek(end)


def _csv_columns(name: str, row_shape: tuple) -> list[str]:
    if not row_shape:
        return [name]
    return [f"{name}_{j}" for j in range(int(np.prod(row_shape)))]


def _csv_fmt(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        return "%d"
    return "%.9g" if dtype.itemsize <= 4 else "%.17g"  # enough digits to read back the same number


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total_rows: int | None, src: _Source, enabled: bool | None, stream=None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.total, self.src, self.rows = total_rows, src, 0
        self.t0 = self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.rows += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.2:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.rows / self.total if self.total else self.src.progress()
        rate = self.rows / max(now - self.t0, 1e-9)
        if frac is None:
            line = f"scored {self.rows:,} rows ({rate:,.0f} rows/s)"
        else:
            width = 30
            fill = int(round(width * min(frac, 1.0)))
            line = f"[{'#' * fill}{'.' * (width - fill)}] {100 * frac:5.1f}%  {self.rows:,} rows  {rate:,.0f} rows/s"
        self.stream.write("\r" + line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def _pick_outputs(scorer_outputs: list[str], requested, suffix: str, out: str) -> list[str]:
    if requested:
        return list(requested)
    if suffix == ".npy":
        if len(scorer_outputs) == 1:
            return scorer_outputs
        if "log_likelihood" in scorer_outputs:
            return ["log_likelihood"]
        raise UsageError(f"{out} holds one array but the model has outputs {', '.join(scorer_outputs)}: "
                         "pass --outputs NAME, or write .npz or .csv")
    return scorer_outputs


def score_to_file(model, data, out, *, outputs=None, batch_size: int | None = None, threads: int | None = None,
                  force: bool = False, progress: bool | None = None, columns=None,
                  inputs: Iterable = ()) -> dict[str, Any]:
    """Score ``data`` and write the results to ``out`` incrementally and atomically.

    ``out`` is ``.npy`` (one output; default ``log_likelihood`` when the model has it),
    ``.npz`` (one array per output, default all) or ``.csv`` (one column per scalar output,
    ``name_j`` columns for per-component outputs, default all).  Results go to a temporary
    file in ``out``'s folder that replaces ``out`` only when complete; an existing ``out``
    needs ``force=True`` and ``out`` may never be the model, the data or one of ``inputs``.

    Returns a summary: ``rows``, ``outputs``, ``nonfinite_rows``, ``batch_size``, ``seconds``.
    """
    from .io import atomic_write

    out = _name(out)
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise UsageError(f"unknown output suffix {suffix or '(none)'!r} for {out}: use {', '.join(OUTPUT_SUFFIXES)}")
    if outputs is not None:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    if suffix == ".npy" and outputs and len(outputs) > 1:
        raise UsageError(f"{out} holds one array; write .npz or .csv for {len(outputs)} outputs")
    paths = [p for p in (model, data) if isinstance(p, (str, os.PathLike))] + list(inputs)
    scorer = model if isinstance(model, Scorer) else Scorer(model)
    names = _pick_outputs(scorer.outputs, outputs, suffix, out)
    scorer = Scorer(scorer.session, names)
    src = open_data(data, columns=columns)
    try:
        if src.n_features is not None and scorer.n_features is not None and src.n_features != scorer.n_features:
            raise DataError(f"{src.name} has {src.n_features} features (columns); the model expects {scorer.n_features}")
        if src.n_rows == 0 or src.n_features in (None, 0):
            raise DataError(f"{src.name} holds no data rows")
        scorer.probe(src.n_features)
        bs = _check_batch(batch_size) if batch_size is not None else scorer.default_batch_size()
        nthreads = _threads(threads)
        summary: dict[str, Any] = {"rows": 0, "nonfinite_rows": 0, "outputs": names, "batch_size": bs,
                                   "threads": nthreads, "output": out}
        bar = _Progress(src.n_rows, src, progress)
        t0 = time.perf_counter()

        def chunks():
            for res in _scored(scorer, src, bs, nthreads, bar):
                summary["rows"] += len(next(iter(res.values())))
                first = res[names[0]]
                bad = np.isnan(first) if first.dtype.kind == "f" else first < 0
                summary["nonfinite_rows"] += int(bad.reshape(len(first), -1).any(axis=1).sum())
                yield res

        def write(f):
            if suffix == ".npy":
                w = _NpyStream(f, scorer.out_dtypes[names[0]], scorer.row_shapes[names[0]])
                for res in chunks():
                    w.write(res[names[0]])
                w.finish()
            elif suffix == ".csv":
                header = [c for k in names for c in _csv_columns(k, scorer.row_shapes[k])]
                f.write((",".join(header) + "\n").encode())
                for res in chunks():
                    buf = _io.StringIO()
                    cols = [res[k].reshape(len(res[k]), int(np.prod(scorer.row_shapes[k]))) for k in names]
                    fmts = [_csv_fmt(scorer.out_dtypes[k]) for k in names for _ in range(cols[names.index(k)].shape[1])]
                    table = np.concatenate([c.astype(np.float64) if len(set(scorer.out_dtypes.values())) > 1
                                            else c for c in cols], axis=1)
                    np.savetxt(buf, table, fmt=fmts, delimiter=",")
                    f.write(buf.getvalue().encode())
            else:
                _write_npz(f, out, names, scorer, chunks())
            if summary["rows"] == 0:
                raise DataError(f"{src.name} holds no data rows")

        try:
            atomic_write(out, write, force=force, inputs=paths)
        finally:
            bar.close()
        summary["seconds"] = time.perf_counter() - t0
        return summary
    finally:
        src.close()


def _write_npz(f, out: str, names: list[str], scorer: Scorer, results: Iterator[dict[str, np.ndarray]]) -> None:
    """Stream each output to its own temporary .npy beside ``out``, then store them in one zip."""
    import zipfile

    folder = os.path.dirname(os.path.abspath(out))
    temps: dict[str, Any] = {}
    try:
        writers = {}
        for k in names:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(out)}.{k}.", suffix=".tmp")
            os.unlink(tmp)  # anonymous: nothing is left behind whatever happens
            temps[k] = os.fdopen(fd, "w+b")
            writers[k] = _NpyStream(temps[k], scorer.out_dtypes[k], scorer.row_shapes[k])
        for res in results:
            for k in names:
                writers[k].write(res[k])
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for k in names:
                writers[k].finish()
                temps[k].seek(0)
                with zf.open(f"{k}.npy", "w", force_zip64=True) as dst:
                    shutil.copyfileobj(temps[k], dst, 8 << 20)
    finally:
        for t in temps.values():
            with contextlib.suppress(OSError):
                t.close()
