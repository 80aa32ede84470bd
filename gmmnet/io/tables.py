"""The one table reader: ``.npy``, ``.csv`` and ``.parquet`` files (or arrays) as chunks of rows.

``fit``, ``score``, ``plot``, ``inspect --data`` and ``to-gmm --data`` all read data here,
with the same rules and options:

* ``.npy``: a 1-D or 2-D array of real numbers (bool, int, uint, float); pickled objects are
  refused.  The header is read and checked first (negative or absurd dimensions, a file
  shorter than its header claims); rows are then read in chunks with ``readinto``, so a file
  of any size needs memory for one chunk only.
* ``.csv``: comma-separated numbers, UTF-8.  A first line of column names is detected and
  skipped, as are blank lines and lines starting with ``#``.  A quoted cell may hold commas
  or newlines (RFC 4180); it still has to be a number.  A first column with an empty name
  holding 0, 1, 2, … (what pandas' ``to_csv()`` writes) is dropped, with a note.
* ``.parquet``: numeric columns read by record batches (pyarrow); nulls are NaN; pandas'
  ``__index_level_0__`` column is dropped, with a note.

``columns`` picks features by name (a CSV header, Parquet columns) or position.  NaN and
infinity pass through.  :func:`open_data` gives a chunked reader (what scoring uses);
:func:`load_data` gives the whole table as one float64 array, its size estimated first
(:func:`gmmnet.limits.check_bytes`); a float64 ``.npy`` is memory-mapped instead of copied.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import tokenize
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import DataError, InputFileError, ResourceLimitError, UnsafeFileError, UsageError
from ._files import PathLike, check_readable, name, open_binary, problem, short, suffix

__all__ = ["DATA_SUFFIXES", "DataNote", "Table", "iter_chunks", "load_data", "open_data", "parse_number",
           "print_note", "read_npy_header"]

DATA_SUFFIXES = (".npy", ".csv", ".parquet")
#: Longest CSV record (one row, quoted newlines included).
MAX_CSV_RECORD = 256 << 20
#: Rows per block when load_data reads a whole file.
_BLOCK_BYTES = 16 << 20


class DataNote(UserWarning):
    """Something the reader did to the data that the user should know (a dropped index column)."""


def print_note(message: str) -> None:
    """Print a reader's note on stderr the way the command line does (``note=`` of the readers)."""
    print(f"gmmnet: note: {message}", file=sys.stderr)


def report_notes(notes: list[str], note: Callable[[str], None] | None) -> None:
    """Hand each note to ``note``, or issue it as a :class:`DataNote` warning when ``note`` is None."""
    for msg in notes:
        if note is None:
            warnings.warn(msg, DataNote, stacklevel=3)
        else:
            note(msg)


# ---------------------------------------------------------------------------
# cells


def parse_number(cell: str) -> float | None:
    """A CSV cell as a float (surrounding spaces allowed; nan and inf too), or None."""
    text = cell.strip()
    if not text or "_" in text:  # float() would read '1_000'; numpy's parser would not
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _shown(cell: str, limit: int = 30) -> str:
    """A cell in a message: repr (a newline shows as \\n, so the message stays one line), cut to ``limit``."""
    text = repr(cell[:limit])
    return text if len(cell) <= limit else text[:-1] + "..." + text[-1]


def _open_quote(text: str, in_quotes: bool) -> bool:
    """Whether a quoted cell is still open at the end of ``text`` (the csv module's rules: a
    quote opens a cell only at its start, after optional spaces; ``""`` inside is a quote)."""
    at_start = not in_quotes
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if in_quotes:
            if c == '"':
                if i + 1 < n and text[i + 1] == '"':
                    i += 2
                    continue
                in_quotes = False
        elif c == '"' and at_start:
            in_quotes = True
            at_start = False
        elif c == ",":
            at_start = True
        elif c != " ":
            at_start = False
        i += 1
    return in_quotes


# ---------------------------------------------------------------------------
# .npy header


def read_npy_header(path: PathLike, source: str) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) from a .npy header, checked before any data is read."""
    from numpy.lib import format as npy_format

    f = open_binary(path)
    with f:
        try:
            if f.read(6) != b"\x93NUMPY":
                raise InputFileError(f"cannot load {source}: not a .npy file (no NumPy header)")
            f.seek(0)
            version = npy_format.read_magic(f)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
        except OSError as exc:
            raise InputFileError(f"cannot read {source}: {exc.strerror or problem(exc)}") from None
        except (ValueError, SyntaxError, TypeError, EOFError, MemoryError, tokenize.TokenError) as exc:
            # numpy's header parser (ast.literal_eval of the header text) on a malformed header
            raise InputFileError(f"cannot load {source}: not a valid .npy file ({problem(exc)})") from None
    if any(s < 0 for s in shape):
        raise InputFileError(f"cannot load {source}: its header declares a negative dimension (shape {shape})")
    return shape, fortran, dtype, offset


# ---------------------------------------------------------------------------
# readers


class Table:
    """Rows of a data file (or array), read in chunks.

    Attributes: ``name`` (for messages), ``n_rows`` (None until known, for a CSV),
    ``n_features``, ``column_names`` (None when the file has none), ``notes`` (what the
    reader did, e.g. dropped an index column).  Use as a context manager, or call
    :meth:`close`.
    """

    name = "X"
    n_rows: int | None = None
    n_features: int | None = None
    column_names: list[str] | None = None

    def __init__(self) -> None:
        self.notes: list[str] = []
        self._select: list[int] | None = None

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive 2-D arrays of at most ``rows`` rows (the file's own numeric dtype)."""
        for x in self._chunks(rows):
            yield x if self._select is None else x[:, self._select]

    def _chunks(self, rows: int) -> Iterator[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def progress(self) -> tuple[int, int | None, str]:
        """(done, total, unit): rows read of n_rows, or bytes read of the file's size."""
        return 0, self.n_rows, "rows"

    def close(self) -> None:
        pass

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pick(self, columns: Sequence | None, names: list[str] | None, width: int) -> None:
        """Apply ``columns`` (names or positions) to a table of ``width`` columns."""
        if columns is None:
            self.n_features = width
            return
        if isinstance(columns, (str, int)):
            columns = [columns]
        picked = []
        for col in columns:
            if isinstance(col, str):
                if names is None:
                    raise UsageError(f"{self.name} has no column names; pick columns by position (0, 1, ...)")
                if col not in names:
                    raise DataError(f"{self.name} has no column {col!r} (it has {', '.join(map(repr, names[:8]))}"
                                    f"{', ...' if len(names) > 8 else ''})")
                picked.append(names.index(col))
            elif isinstance(col, (int, np.integer)) and not isinstance(col, bool):
                if not -width <= int(col) < width:
                    raise DataError(f"{self.name} has {width} columns; there is no column {int(col)}")
                picked.append(int(col) % width)
            else:
                raise UsageError(f"columns are names or positions, got {col!r}")
        if not picked:
            raise UsageError("columns: name at least one column")
        self._select = picked
        self.n_features = len(picked)


class ArrayTable(Table):
    """An in-memory 2-D array (a 1-D array is one feature)."""

    def __init__(self, x, name: str = "X", columns=None):
        super().__init__()
        x = np.asarray(x)
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2:
            raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {x.shape}")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{name} holds {x.dtype} values; expected real numbers")
        self.x, self.name = x, name
        self.n_rows = x.shape[0]
        self._pick(columns, None, x.shape[1])
        self._done = 0

    def _chunks(self, rows: int) -> Iterator[np.ndarray]:
        for i in range(0, self.n_rows, rows):
            self._done = min(self.n_rows, i + rows)
            yield self.x[i:i + rows]

    def progress(self) -> tuple[int, int | None, str]:
        return self._done, self.n_rows, "rows"


class NpyTable(Table):
    """A .npy file read in chunks of rows (``readinto`` at computed offsets: no mapping, no copy of the file)."""

    def __init__(self, path: PathLike, columns=None):
        super().__init__()
        self.name = name(path)
        self.path = path
        shape, self.fortran, dtype, self.offset = read_npy_header(path, self.name)
        if dtype.hasobject:
            raise UnsafeFileError(f"refusing to load Python objects from {self.name}: only numeric arrays are allowed")
        if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise DataError(f"{self.name} holds {dtype} values; expected real numbers")
        if len(shape) not in (1, 2):
            raise DataError(f"{self.name} holds a {len(shape)}-D array of shape {shape}; expected 2-D (n_samples, n_features)")
        self.dtype, self.shape = dtype, shape
        self.n_rows = shape[0]
        width = shape[1] if len(shape) == 2 else 1
        need = self.offset + self.n_rows * width * dtype.itemsize
        size = check_readable(path).st_size
        if size < need:
            raise InputFileError(f"cannot load {self.name}: truncated .npy file (shape {shape} needs {need} bytes, "
                                 f"the file has {size})")
        self._pick(columns, None, width)
        self._width = width
        self._f = None
        self._done = 0

    def _read_into(self, out: np.ndarray, offset: int) -> None:
        """Fill ``out`` (C-contiguous) with the file's bytes at ``offset``."""
        buf = memoryview(out).cast("B")
        if self._f is None:
            try:
                self._f = open(self.path, "rb", buffering=0)
            except OSError as exc:
                raise InputFileError(f"cannot read {self.name}: {exc.strerror or problem(exc)}") from None
        try:
            self._f.seek(offset)
            got = 0
            while got < len(buf):
                n = self._f.readinto(buf[got:])
                if not n:
                    raise InputFileError(f"cannot load {self.name}: the file ended early (it changed while being read)")
                got += n
        except OSError as exc:
            raise InputFileError(f"cannot read {self.name}: {exc.strerror or problem(exc)}") from None

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a (stop - start, width) array of the file's dtype."""
        n, d, item = self.n_rows, self._width, self.dtype.itemsize
        out = np.empty((stop - start, d), self.dtype)
        if not self.fortran or d == 1:
            self._read_into(out, self.offset + start * d * item)
        else:  # column-major: each column's rows are one contiguous run
            col = np.empty(stop - start, self.dtype)
            for j in range(d):
                self._read_into(col, self.offset + (j * n + start) * item)
                out[:, j] = col
        return out

    def _chunks(self, rows: int) -> Iterator[np.ndarray]:
        for i in range(0, self.n_rows if self._width else 0, rows):
            stop = min(self.n_rows, i + rows)
            out = self.read_rows(i, stop)
            self._done = stop
            yield out

    def progress(self) -> tuple[int, int | None, str]:
        return self._done, self.n_rows, "rows"

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class CsvTable(Table):
    """A .csv file streamed record by record (see the module doc for the rules)."""

    def __init__(self, path: PathLike, columns=None):
        super().__init__()
        self.name = name(path)
        self._f = open_binary(path)
        try:
            self._size = max(1, os.fstat(self._f.fileno()).st_size)
            self._read = 0
            self._lineno = 0
            self._records = self._iter_records()
            self._start(columns)
        except BaseException:
            self._f.close()
            raise

    # -- records ---------------------------------------------------------------
    def _readline(self) -> bytes:
        try:
            return self._f.readline(MAX_CSV_RECORD + 1)
        except OSError as exc:
            raise InputFileError(f"cannot read {self.name}: {exc.strerror or problem(exc)}") from None

    def _decode(self, raw: bytes) -> str:
        if len(raw) > MAX_CSV_RECORD:
            raise InputFileError(f"cannot load {self.name}: line {self._lineno} is longer than {MAX_CSV_RECORD >> 20} MiB")
        try:
            return raw.decode("utf-8-sig" if self._lineno == 1 else "utf-8")
        except UnicodeDecodeError:
            raise InputFileError(f"cannot load {self.name}: line {self._lineno} is not UTF-8 text") from None

    def _iter_records(self) -> Iterator[tuple[int, str]]:
        """(first line number, text) of each record that holds data: a quoted cell may carry
        the record over several lines; blank lines, lines of only commas and # lines are skipped."""
        while True:
            raw = self._readline()
            if not raw:
                return
            self._read += len(raw)
            self._lineno += 1
            start = self._lineno
            text = self._decode(raw)
            if '"' in text and _open_quote(text, False):
                parts = [text]
                size = len(raw)
                while True:
                    raw = self._readline()
                    if not raw:
                        raise InputFileError(f"cannot load {self.name}: line {start} opens a quoted cell that is "
                                             "never closed")
                    self._read += len(raw)
                    self._lineno += 1
                    size += len(raw)
                    if size > MAX_CSV_RECORD:
                        raise InputFileError(f"cannot load {self.name}: the record on line {start} is longer than "
                                             f"{MAX_CSV_RECORD >> 20} MiB")
                    more = self._decode(raw)
                    parts.append(more)
                    if not _open_quote(more, True):
                        break
                text = "".join(parts)
            stripped = text.strip()
            if not stripped or stripped.startswith("#") or not stripped.strip(", "):
                continue
            yield start, text

    def _split(self, text: str, lineno: int) -> list[str]:
        try:
            cells = next(csv.reader([text], skipinitialspace=True), [])
        except csv.Error as exc:
            raise InputFileError(f"cannot load {self.name}: malformed CSV on line {lineno} ({short(str(exc), 80)})") from None
        return cells

    # -- the first records: header, index column, width --------------------------
    def _start(self, columns) -> None:
        self._pending: list[tuple[int, str]] = []
        self._index = False  # the first column is pandas' index (dropped)
        self._next_index = 0
        first = next(self._records, None)
        names = None
        if first is not None:
            lineno, text = first
            cells = self._split(text, lineno)
            if all(parse_number(c) is None for c in cells) and all(c.strip() for c in cells[1:]):
                names = [c.strip() for c in cells]  # a header: names (the first may be empty)
                first = next(self._records, None)
        if first is None:
            self.n_rows = 0
            self._width = len(names) if names else 0
            self.column_names = names
            self._pick(columns, names, self._width)
            return
        lineno, text = first
        width = len(self._split(text, lineno))
        if names is not None and len(names) != width:
            raise DataError(f"{self.name} line {lineno} has {width} values, expected {len(names)} "
                            "(the header's columns)")
        self._width, self._width_line = width, lineno
        if names is not None and names[0] == "" and width > 1:
            self._index = True  # checked row by row as the data is read
            names = names[1:]
            self.notes.append(f"{self.name}: dropped its first column, an unnamed index (0, 1, 2, ...) as pandas' "
                              "to_csv() writes; write the file with to_csv(index=False) to leave it out")
        self.column_names = names
        self._pick(columns, names, width - self._index)
        self._pending = [first]

    # -- data ------------------------------------------------------------------
    def _chunks(self, rows: int) -> Iterator[np.ndarray]:
        if not self._pending:
            return
        while True:
            lines = self._pending
            self._pending = []
            while len(lines) < rows:
                item = next(self._records, None)
                if item is None:
                    break
                lines.append(item)
            if not lines:
                return
            x = self._parse(lines)
            if self._index:
                x = self._drop_index(x, lines)
            self.n_rows = (self.n_rows or 0) + len(x)
            yield x

    def _parse(self, lines: list[tuple[int, str]]) -> np.ndarray:
        d = self._width
        texts = [t for _, t in lines]
        if not any('"' in t for t in texts):
            try:  # fast path: numpy's C parser; the slow path below names the bad cell
                with np.errstate(all="ignore"):
                    x = np.loadtxt(texts, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
                if x.shape == (len(lines), d) and not any("_" in t for t in texts):
                    return x
            except ValueError:
                pass
        out = np.empty((len(lines), d), np.float64)
        for r, (lineno, text) in enumerate(lines):
            cells = self._split(text, lineno)
            if len(cells) != d:
                raise DataError(f"{self.name} line {lineno} has {len(cells)} values, expected {d} "
                                f"(as on line {self._width_line})")
            for c, cell in enumerate(cells):
                v = parse_number(cell)
                if v is None:
                    what = "an empty cell" if not cell.strip() else f"{_shown(cell.strip())} is not a number"
                    raise DataError(f"{self.name} line {lineno}, column {c + 1}: {what}")
                out[r, c] = v
        return out

    def _drop_index(self, x: np.ndarray, lines: list[tuple[int, str]]) -> np.ndarray:
        expected = np.arange(self._next_index, self._next_index + len(x), dtype=np.float64)
        bad = np.flatnonzero(x[:, 0] != expected)
        if bad.size:
            r = int(bad[0])
            raise DataError(
                f"{self.name} line {lines[r][0]}: the first column has no name, like the index pandas' to_csv() writes, "
                f"but holds {x[r, 0]:g} where the index would be {int(expected[r])}; name the column, or write the "
                "file with to_csv(index=False)"
            )
        self._next_index += len(x)
        return x[:, 1:]

    def progress(self) -> tuple[int, int | None, str]:
        return self._read, self._size, "bytes"

    def close(self) -> None:
        self._f.close()


class ParquetTable(Table):
    """A .parquet file read by record batches (pyarrow); every column used must be numeric; nulls are NaN."""

    _INDEX = "__index_level_0__"  # pandas writes a non-default index as this column

    def __init__(self, path: PathLike, columns=None):
        super().__init__()
        self.name = name(path)
        check_readable(path)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError(f"reading {self.name} needs pyarrow: pip install 'gmmnet[parquet]'") from None
        self._errors = (pa.ArrowException, OSError, ValueError)
        try:
            self._pf = pq.ParquetFile(path)
            schema = self._pf.schema_arrow
            self.n_rows = self._pf.metadata.num_rows
        except self._errors as exc:  # ArrowInvalid (a ValueError), ArrowIOError (an OSError), ...
            raise InputFileError(f"cannot load {self.name}: not a valid Parquet file ({problem(exc)})") from None
        names = list(schema.names)
        if self._INDEX in names and columns is None:
            names.remove(self._INDEX)
            self.notes.append(f"{self.name}: dropped its column {self._INDEX!r}, the index pandas writes; write the "
                              "file with to_parquet(index=False) to leave it out")
        self.column_names = names
        self._pick(columns, names, len(names))
        self._columns = [names[i] for i in self._select] if self._select is not None else names
        self._select = None  # pyarrow reads only the chosen columns
        for col in self._columns:
            t = schema.field(col).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise DataError(f"{self.name} column {col!r} holds {t} values; expected numbers")
        self._done = 0

    def _chunks(self, rows: int) -> Iterator[np.ndarray]:
        if not self.n_rows or not self.n_features:
            return
        batches = self._pf.iter_batches(batch_size=rows, columns=self._columns)
        while True:
            try:
                batch = next(batches, None)
            except self._errors as exc:
                raise InputFileError(f"cannot load {self.name}: corrupt Parquet data ({problem(exc)})") from None
            if batch is None:
                return
            x = np.empty((batch.num_rows, self.n_features), np.float64)
            for j, col in enumerate(batch.columns):
                x[:, j] = col.to_numpy(zero_copy_only=False)  # nulls arrive as NaN
            self._done += batch.num_rows
            yield x

    def progress(self) -> tuple[int, int | None, str]:
        return self._done, self.n_rows, "rows"

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            self._pf.close()


# ---------------------------------------------------------------------------
# entry points


def open_data(data, *, columns=None, note: Callable[[str], None] | None = None) -> Table:
    """A chunked reader for a path (.npy, .csv, .parquet) or an in-memory 2-D array.

    Parameters
    ----------
    data : str, PathLike or array-like
    columns : sequence of str or int, optional
        Feature columns by name (CSV header, Parquet) or position (default: all).
    note : callable, optional
        Called with each note about what the reader did (a dropped index column); by
        default notes are issued as :class:`DataNote` warnings.

    Returns
    -------
    Table
    """
    if isinstance(data, (str, os.PathLike)):
        sfx = suffix(data)
        if sfx == ".npy":
            table = NpyTable(data, columns)
        elif sfx == ".csv":
            table = CsvTable(data, columns)
        elif sfx == ".parquet":
            table = ParquetTable(data, columns)
        else:
            raise InputFileError(f"{name(data)}: unknown data file type {sfx or '(no suffix)'!r}; "
                                 f"accepted: {', '.join(DATA_SUFFIXES)}")
    else:
        table = ArrayTable(data, columns=columns)
    report_notes(table.notes, note)
    return table


def check_batch(batch_size) -> int:
    """``batch_size`` as a positive int (UsageError otherwise)."""
    try:
        b = int(batch_size)
    except (TypeError, ValueError):
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}") from None
    if b < 1 or b != batch_size:
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}")
    return b


def iter_chunks(data, batch_size: int = 4096, *, columns=None, note=None) -> Iterator[np.ndarray]:
    """The rows of ``data`` (path or array) as 2-D arrays of at most ``batch_size`` rows."""
    batch_size = check_batch(batch_size)
    with open_data(data, columns=columns, note=note) as table:
        yield from table.chunks(batch_size)


def _map_float64(table: NpyTable) -> np.ndarray | None:
    """A float64 .npy mapped copy-on-write (no copy, writable); None if mapping does not apply."""
    if table.dtype != np.dtype("<f8" if sys.byteorder == "little" else ">f8") or table._select is not None:
        return None
    try:
        mm = np.memmap(table.path, dtype=table.dtype, mode="c", offset=table.offset, shape=table.shape,
                       order="F" if table.fortran else "C")
    except OSError as exc:  # ENOMEM: an address-space limit (ulimit -v) smaller than the file
        from ..limits import format_bytes

        raise ResourceLimitError(f"{table.name}: mapping its {format_bytes(8.0 * np.prod(table.shape))} of values "
                                 f"failed ({exc.strerror or problem(exc)})") from None
    return mm.view(np.ndarray)


def load_data(path: PathLike, *, n_features: int | None = None, columns=None,
              note: Callable[[str], None] | None = None) -> np.ndarray:
    """The whole table as a float64 array of shape (n_samples, n_features).

    Reads ``.npy``, ``.csv`` and ``.parquet`` with :func:`open_data`'s rules.  A float64
    ``.npy`` is memory-mapped (copy-on-write: no copy, and writable); anything else is
    converted to a new float64 array whose size is checked first against the memory limit
    (:func:`gmmnet.limits.check_bytes`).  A 1-D ``.npy`` array is one feature only when
    ``n_features == 1``.  NaN and infinity are passed through.

    Parameters
    ----------
    path : str or PathLike
    n_features : int, optional
        The number of features expected (DataError otherwise).
    columns : sequence of str or int, optional
        Feature columns by name or position.
    note : callable, optional
        Receives the reader's notes (default: :class:`DataNote` warnings).

    Returns
    -------
    numpy.ndarray
    """
    from ..limits import check_bytes

    source = name(path)
    with open_data(path, columns=columns, note=note) as table:
        if isinstance(table, NpyTable) and len(table.shape) == 1 and n_features != 1:
            raise DataError(f"{source} holds a 1-D array of {table.shape[0]} values; expected a 2-D array "
                            "(n_samples, n_features)" + (f" with {n_features} features" if n_features else ""))
        if table.n_rows == 0 or not table.n_features:
            raise DataError(f"{source} holds no data rows")
        if n_features is not None and table.n_features != n_features:
            raise DataError(f"{source}: expected {n_features} features, got {table.n_features}")
        d = table.n_features
        if table.n_rows is not None:  # .npy, .parquet: the size is known before reading
            x = _map_float64(table) if isinstance(table, NpyTable) else None
            if x is not None:
                return x if x.ndim == 2 else x.reshape(-1, 1)
            check_bytes(8.0 * table.n_rows * d, f"reading its {table.n_rows}x{d} values as float64", source)
            x = np.empty((table.n_rows, d), np.float64)
            rows = max(1, _BLOCK_BYTES // (8 * d))
            i = 0
            for chunk in table.chunks(rows):
                x[i:i + len(chunk)] = chunk
                i += len(chunk)
            return x
        parts, n = [], 0  # a CSV: rows are known only at the end
        for chunk in table.chunks(max(1, _BLOCK_BYTES // (8 * d))):
            n += len(chunk)
            check_bytes(2 * 8.0 * n * d, f"reading its {n}+ rows of {d} values as float64", source)
            parts.append(chunk)
        if not n:
            raise DataError(f"{source} holds no data rows")
        return np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0])
