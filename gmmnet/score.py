"""Bounded-memory batch scoring of an ONNX model over .npy, .csv and .parquet data.

The data is read in chunks of rows by gmmnet's one table reader (:mod:`gmmnet.io.tables`:
a ``.npy`` read chunk by chunk, a streamed ``.csv``, a ``.parquet`` file by record batches,
or an in-memory array), each chunk is scored by
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
import io as _io
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import DataError, InputFileError, UnsupportedModelError, UsageError
from .io.tables import DATA_SUFFIXES, Table, check_batch, iter_chunks, open_data, report_notes

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

OUTPUT_SUFFIXES = (".npy", ".npz", ".csv")

_NP = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def _name(path) -> str:
    return os.fspath(path)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _as_model(model):
    """An onnx.ModelProto from a ModelProto or its bytes (to check its weights)."""
    if isinstance(model, (bytes, bytearray)):
        import onnx
        from google.protobuf.message import DecodeError

        try:
            return onnx.load_model_from_string(bytes(model))
        except DecodeError:
            raise InputFileError("model: not a valid ONNX protobuf") from None
    return model


# ---------------------------------------------------------------------------
# the scorer: one single-threaded session, padding, NaN rows


class Scorer:
    """Score 2-D chunks with one ONNX model, reproducibly.

    The session runs with one intra-op thread (see the module doc); :meth:`__call__` is
    thread-safe, so several chunks may be scored at once from different threads.

    Parameters
    ----------
    model : onnx.ModelProto, bytes, path or onnxruntime.InferenceSession
        The network (any single-input ONNX model with a leading batch dimension).  A path
        is loaded by :func:`gmmnet.io.load_onnx`; weights must be finite.
    outputs : sequence of str, optional
        Tensor outputs to compute (default: every tensor output, in graph order).  An
        output that is a sequence or a map (a ZipMap's probabilities) is never scored.
    source : str, optional
        The model's name in messages (default: its path, or "model").
    """

    def __init__(self, model, outputs=None, *, source: str | None = None):
        import onnxruntime as ort

        from .formats.onnx.runtime import session

        self.source = source or (_name(model) if isinstance(model, (str, os.PathLike)) else "model")
        if isinstance(model, ort.InferenceSession):
            self.session = model
        else:
            from .io import check_finite_weights, load_onnx

            if isinstance(model, (str, os.PathLike)):
                model = load_onnx(model)  # safe loading: external data checked, size capped, weights finite
            else:
                check_finite_weights(_as_model(model), self.source)
            self.session = session(model, self.source, intra_op_num_threads=1, inter_op_num_threads=1)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UsageError(f"{self.source} has {len(inputs)} inputs; scoring needs a model with one input")
        inp = inputs[0]
        self.input_name = inp.name
        dtype = _NP.get(inp.type)
        if dtype is None:
            raise DataError(f"{self.source}: input {inp.name!r} has type {inp.type}; expected float or double")
        self.dtype = np.dtype(dtype)
        if len(inp.shape) != 2:
            raise UsageError(f"{self.source}: input {inp.name!r} has shape {inp.shape}; expected (batch, features)")
        n = inp.shape[1]
        self.n_features: int | None = n if isinstance(n, int) else None
        kinds = {o.name: o.type for o in self.session.get_outputs()}
        names = list(kinds)
        # only tensors have rows; a ZipMap's list of maps (skl2onnx classifiers) is not scored
        tensors = [o for o in names if kinds[o].startswith("tensor(")]
        if outputs is None:
            if not tensors:
                raise UnsupportedModelError(
                    f"{self.source}: no output is a tensor ({', '.join(f'{o}: {kinds[o]}' for o in names)}); "
                    "gmmnet scores tensor outputs")
            outputs = tensors
        else:
            outputs = [outputs] if isinstance(outputs, str) else list(outputs)
            missing = [o for o in outputs if o not in names]
            if missing:
                raise UsageError(f"{self.source} has no output {missing[0]!r} (it has {', '.join(names)})")
            if not outputs:
                raise UsageError(f"name at least one output ({self.source} has {', '.join(names)})")
            if len(set(outputs)) != len(outputs):
                raise UsageError(f"outputs has duplicates: {outputs}")
            for o in outputs:
                if o not in tensors:
                    raise UnsupportedModelError(
                        f"{self.source}: output {o!r} is a {kinds[o]}, not a tensor; gmmnet scores tensor outputs "
                        f"({', '.join(tensors) or 'none here'})")
        self.outputs: list[str] = list(outputs)
        self.all_outputs = tensors
        #: Outputs that are not tensors (a ZipMap's sequence of maps), never scored.
        self.skipped = {o: kinds[o] for o in names if o not in tensors}
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
        from .formats.onnx.runtime import ort_errors

        try:
            probe = self.session.run(self.outputs, {self.input_name: np.zeros((ALIGN, n_features), self.dtype)})
        except ort_errors() as exc:
            raise DataError(f"{self.source} cannot score rows of {n_features} features ({type(exc).__name__})") from None
        probe = dict(zip(self.outputs, probe))
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
        from .formats.onnx.runtime import ort_errors

        try:
            values = self.session.run(self.outputs, {self.input_name: x})
        except ort_errors() as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise DataError(f"{self.source}: onnxruntime failed on a chunk of {len(x)} rows "
                            f"({type(exc).__name__}: {first[:160]})") from None
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
# scoring loops


def _threads(threads) -> int:
    if threads is None:
        return max(1, min(os.cpu_count() or 1, 8))
    if int(threads) < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    return int(threads)


def _scored(scorer: Scorer, src: Table, batch_size: int, threads: int,
            on_chunk: Callable[[int], None] | None = None, offset: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Score ``src`` chunk by chunk, ``threads`` chunks at a time, yielding results in order."""
    if src.n_rows == 0 or not src.n_features:
        return  # no rows: nothing to score
    if scorer.n_features is not None and src.n_features != scorer.n_features:
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
                columns=None, offset: int = 0, note=None) -> Iterator[dict[str, np.ndarray]]:
    """Score ``data`` chunk by chunk: yields ``{output: array}`` for consecutive chunks of rows.

    Parameters
    ----------
    model : onnx.ModelProto, bytes, path, onnxruntime.InferenceSession or Scorer
        A path is loaded by :func:`gmmnet.io.load_onnx` (external data checked); weights
        must be finite.
    data : str, PathLike or array-like
        A path (.npy read in chunks, .csv streamed, .parquet by record batches; see
        :mod:`gmmnet.io.tables`) or a 2-D array.
    outputs : sequence of str, optional
        Graph outputs to compute (default: every tensor output).
    batch_size : int, optional
        Rows per chunk (default: :meth:`Scorer.default_batch_size`, about CHUNK_BYTES of
        activations).
    threads : int, optional
        Chunks scored at once, each on a single-threaded session (default: CPU count, at
        most 8).
    columns : sequence of str or int, optional
        Feature columns by name (CSV header, Parquet) or position (default: all).
    offset : int
        Global index of the first row, when ``data`` is one part of a larger whole (see the
        module doc: it decides where rows sit in the padded chunks, so parts scored apart
        match the whole bit for bit).
    note : callable, optional
        Receives the reader's notes, e.g. a dropped index column (default: warnings).

    Yields
    ------
    dict of str to numpy.ndarray
        One entry per output, one row per input row of the chunk.
    """
    scorer = model if isinstance(model, Scorer) else Scorer(model, outputs)
    with open_data(data, columns=columns, note=note) as src:
        bs = check_batch(batch_size) if batch_size is not None else scorer.default_batch_size()
        yield from _scored(scorer, src, bs, _threads(threads), offset=int(offset))


def score(model, data, *, outputs=None, batch_size: int | None = None, threads: int | None = None,
          columns=None, offset: int = 0, note=None) -> dict[str, np.ndarray]:
    """Score all of ``data`` and return ``{output: array}`` (parameters: :func:`iter_scores`).

    The results are bit-for-bit those of any other chunking, and of
    :mod:`gmmnet.distributed`.  Rows with NaN/inf give NaN (label: -1).
    """
    scorer = model if isinstance(model, Scorer) else Scorer(model, outputs)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in scorer.outputs}
    for out in iter_scores(scorer, data, batch_size=batch_size, threads=threads, columns=columns, offset=offset,
                           note=note):
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


class _ProgressBar:
    """Scoring progress on stderr (rich): bar, share done, rows, rows/s and time left.

    By default it shows only when the stream is a terminal; ``enabled=True`` on a
    non-terminal prints one plain line at the end instead of a live bar.  rich is imported
    here, not at module import, so ``gmmnet --help`` stays fast.
    """

    def __init__(self, src: Table, enabled: bool | None, stream=None):
        stream = stream or sys.stderr
        if enabled is None:
            enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.src, self.rows, self._bar = src, 0, None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("scoring"), BarColumn(), TaskProgressColumn(),
                             TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]:,.0f} rows/s  ETA"),
                             TimeRemainingColumn(), console=Console(file=stream, highlight=False))
        done, total, _ = src.progress()
        self._task = self._bar.add_task("score", total=total, completed=done, rows=0, rate=0.0)
        self._t0 = time.monotonic()
        self._bar.start()

    def __call__(self, n: int) -> None:
        self.rows += n
        if self._bar is not None:
            done, total, _ = self.src.progress()
            rate = self.rows / max(time.monotonic() - self._t0, 1e-9)
            self._bar.update(self._task, completed=done, total=total, rows=self.rows, rate=rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


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
                  inputs: Iterable = (), note=None) -> dict[str, Any]:
    """Score ``data`` and write the results to ``out`` incrementally and atomically.

    ``out`` is ``.npy`` (one output; default ``log_likelihood`` when the model has it),
    ``.npz`` (one array per output, default all) or ``.csv`` (one column per scalar output,
    ``name_j`` columns for per-component outputs, default all).  Results go to a temporary
    file in ``out``'s folder that replaces ``out`` only when complete; an existing ``out``
    needs ``force=True`` and ``out`` may never be the model, the data or one of ``inputs``.

    ``progress`` shows a bar on stderr (default: when stderr is a terminal); ``note``
    receives the reader's notes (default: warnings); the other parameters are
    :func:`iter_scores`'s.

    Returns a summary: ``rows``, ``outputs``, ``nonfinite_rows``, ``batch_size``, ``threads``,
    ``output``, ``notes`` (what the reader did), ``seconds``.
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
    skipped = scorer.skipped if outputs is None else {}
    scorer = Scorer(scorer.session, names, source=scorer.source)
    notes = [f"{scorer.source}: not scoring output {o!r}, a {kind} rather than a tensor" for o, kind in skipped.items()]
    report_notes(notes, note)
    with open_data(data, columns=columns, note=note) as src:
        if src.n_rows == 0 or not src.n_features:
            raise DataError(f"{src.name} holds no data rows")
        if scorer.n_features is not None and src.n_features != scorer.n_features:
            raise DataError(f"{src.name} has {src.n_features} features (columns); the model expects {scorer.n_features}")
        scorer.probe(src.n_features)
        bs = check_batch(batch_size) if batch_size is not None else scorer.default_batch_size()
        nthreads = _threads(threads)
        summary: dict[str, Any] = {"rows": 0, "nonfinite_rows": 0, "outputs": names, "batch_size": bs,
                                   "threads": nthreads, "output": out, "notes": notes + src.notes}
        bar = _ProgressBar(src, progress)
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
