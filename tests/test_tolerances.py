"""The tolerance table (gmmnet.tolerances): docs/tolerances.md is it, the pages that quote a row
state its value, the code's thresholds are its rows, and every row is asserted by a test."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from gmmnet.tolerances import TOL, markdown_table, quote, tol

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"<!-- tolerances:begin[^>]*-->\n")
END = "<!-- tolerances:end -->"

#: Rows that a test owned elsewhere still asserts with a literal number rather than tol("row"):
#: the test file that does.  The literal must be there; once the file imports the row, drop it here.
LITERAL = {
    "ir_ll": "tests/test_sklearn.py",
    "ir_resp": "tests/test_sklearn.py",
    "torch_float32": "tests/test_nn.py",
    "torch_params": "tests/test_nn.py",
    "readback_exact": "tests/test_quadratic.py",
    "readback_skl2onnx": "tests/test_onnx_read.py",
    "readback_skl2onnx_ll": "tests/test_onnx_read.py",
}


def _token(value: float) -> re.Pattern:
    """The value as written in prose or code: 1e-10, 1e-5 (not 1e-50), 2e-6, 2e-06, or 0.05 where that is shorter."""
    mant, exp = quote(value).split("e")
    forms = [rf"{re.escape(mant)}e-0?{abs(int(exp))}"]
    if "e" not in f"{value:g}":
        forms.append(re.escape(f"{value:g}"))
    return re.compile(rf"(?<![\d.])(?:{'|'.join(forms)})(?![\d])")


def test_rows_are_well_formed():
    for name, row in TOL.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]{1,39}", name), name
        assert math.isfinite(row.value) and row.value >= 0 and row.what.strip(), name
        for page in row.quoted:
            assert (ROOT / page).is_file(), f"{name}: quoted in {page}, which does not exist"
    assert tol("float32_resp") == TOL["float32_resp"].value
    with pytest.raises(KeyError):
        tol("no_such_row")


def test_quote_writes_values_as_the_docs_do():
    assert [quote(v) for v in (0.0, 1e-10, 2e-6, 1.25e-11, 1.6e-3)] == ["0", "1e-10", "2e-6", "1.25e-11", "1.6e-3"]
    assert _token(1e-5).search("≤ 1e-5 and") and not _token(1e-5).search("1e-50") and _token(2e-6).search("2e-06")
    assert _token(0.05).search("= 0.05σ") and not _token(0.05).search("0.055")


def test_the_page_is_the_table():
    page = (ROOT / "docs" / "tolerances.md").read_text(encoding="utf-8")
    m = BEGIN.search(page)
    assert m and END in page, "docs/tolerances.md lacks the tolerances:begin/end markers"
    table = page[m.end():page.index(END)]
    assert table == markdown_table(), (
        "docs/tolerances.md is stale: put the output of `python -m gmmnet.tolerances` between its markers")


@pytest.mark.parametrize("name", [n for n, r in TOL.items() if r.quoted])
def test_pages_that_quote_a_row_state_its_value(name):
    row = TOL[name]
    for page in row.quoted:
        text = (ROOT / page).read_text(encoding="utf-8")
        if row.value == 0:
            assert "bit for bit" in text, f"{page} should state {name} (bit-exact)"
        else:
            assert _token(row.value).search(text), f"{page} quotes {name} but does not state {quote(row.value)}"


def test_the_code_thresholds_are_the_rows():
    from gmmnet import cli, ir
    from gmmnet.formats.onnx import export

    assert export.LL_TARGET == tol("float32_ll")  # compute="auto" keeps float32 only where it meets them
    assert export.RESP_TARGET == tol("float32_resp")
    assert export.WARN_ABOVE == tol("float32_warn")
    assert cli.PRECISION_WARN == tol("float32_warn")
    assert ir.ORTHONORMAL_TOL == tol("ir_check") and ir.WEIGHT_SUM_TOL == tol("ir_check")


def test_every_row_is_asserted_by_a_test():
    """A test file that imports gmmnet.tolerances names the row (tol("row"), or "row" in a table of rows)."""
    sources = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("*.py")}
    importers = {f: text for f, text in sources.items()
                 if re.search(r"gmmnet\.tolerances", text) and f != "tests/test_tolerances.py"}
    problems = []
    for name, row in TOL.items():
        users = [f for f, text in importers.items() if re.search(rf"""["']{name}["']""", text)]
        if re.search(rf"""tol\(["']{name}["']\)""", sources["tests/test_tolerances.py"]):
            users.append("tests/test_tolerances.py")  # here only as an explicit tol("row") check
        if name in LITERAL:
            if users:
                problems.append(f"{name} is now imported by {users}: remove it from LITERAL")
            elif not _token(row.value).search(sources[LITERAL[name]]):
                problems.append(f"{LITERAL[name]} no longer asserts {name} ({quote(row.value)})")
        elif not users:
            problems.append(f"no test asserts row {name}")
    assert not problems, "\n".join(problems)


def test_readme_quotes_the_measured_pure_float32_errors():
    """README's `--compute float32` comment quotes the worst f32 log-likelihood errors of docs/onnx-graph.md."""
    text = (ROOT / "docs" / "onnx-graph.md").read_text(encoding="utf-8")
    raw = text[text.index("Raw / ill-conditioned (targets"):]
    rows = [line.split("|")[1:-1] for line in raw.split("\n\n")[1].splitlines()[2:]]
    f32 = {(r[0].strip(), r[1].strip()): float(r[2].strip(" *")) for r in rows}
    worst_raw = max(v for (data, _), v in f32.items() if data != "rotated")
    worst_rotated = max(v for (data, _), v in f32.items() if data == "rotated")
    line = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                if "--compute float32" in line)
    for v in (worst_raw, worst_rotated):
        assert _token(v).search(line), f"README's --compute float32 line should quote {quote(v)}: {line}"
