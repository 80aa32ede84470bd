"""The docs: the site builds with warnings as errors, every ```python block runs, generated pages are fresh.

Snippet runner: every ```python block of README.md and docs/**/*.md is executed, the blocks of
one page in order in one namespace (a page reads like one session), in a temporary folder.  A
block opts out only with a marker comment on the line before its fence that states a reason::

    <!-- docs-test: skip (needs a GPU) -->
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[ \t]*$")
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*$")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number of the fence, code, skip reason or None) for every ```python block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i].strip()):
            start = i
            indent = len(lines[i]) - len(lines[i].lstrip())
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            code = "\n".join(line[indent:] for line in lines[i + 1:j]) + "\n"
            prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            m = SKIP.match(prev)
            reason = m.group("reason").strip() if m else None
            if prev.startswith("<!--") and "docs-test" in prev and m is None:
                raise AssertionError(f"{path.name}:{start + 1}: malformed docs-test marker {prev!r}")
            out.append((start + 1, code, reason))
            i = j + 1
        else:
            i += 1
    return out


PAGES = [p for p in markdown_files() if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    rel = page.relative_to(ROOT)
    for line, code, reason in python_blocks(page):
        if reason is not None:
            assert len(reason) >= 3, f"{rel}:{line}: a skipped block must state why"
            continue
        failure = None
        try:
            exec(compile(code, f"{rel}:{line}", "exec"), namespace)  # noqa: S102 - the docs are ours
        except Exception as exc:  # noqa: BLE001 - report any failure with the page and line
            failure = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
        if failure is not None:
            pytest.fail(f"{rel}, block at line {line} failed:\n{failure}", pytrace=False)


def test_the_runner_finds_blocks_and_honours_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("x\n```python\na = 1\n```\n\n<!-- docs-test: skip (shows shell output) -->\n\n"
                    "```python\n>>> nope\n```\n- item\n\n  ```python\n  b = a + 1\n  ```\n")
    blocks = python_blocks(page)
    assert [(b[1], b[2]) for b in blocks] == [("a = 1\n", None), (">>> nope\n", "shows shell output"),
                                              ("b = a + 1\n", None)]
    bad = tmp_path / "q.md"
    bad.write_text("<!-- docs-test: skip -->\n```python\nx\n```\n")
    with pytest.raises(AssertionError, match="malformed docs-test marker"):
        python_blocks(bad)


def test_readme_and_docs_have_python_examples():
    names = {p.name for p in PAGES}
    assert {"README.md", "getting-started.md", "plotting.md", "converting.md"} <= names


# ---------------------------------------------------------------------------
# the site


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for v in item.values():
                out.extend(_nav_pages(v) if isinstance(v, list) else [v])
    return out


def _mkdocs_config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    pytest.importorskip("yaml")
    nav = _nav_pages(_mkdocs_config()["nav"])
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert sorted(pages - set(nav)) == [], "pages missing from mkdocs.yml nav"
    assert sorted(set(nav) - pages) == [], "nav entries without a page"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # not -q: the log is the evidence (strict mode aborts on a warning, and -q would hide which one)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    log = proc.stdout + proc.stderr
    warnings_ = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert proc.returncode == 0 and not warnings_, (f"mkdocs build --strict: exit {proc.returncode}, warnings:\n"
                                                    + "\n".join(warnings_) + "\n--- log:\n" + log[-6000:])
    assert "Documentation built" in log, log[-6000:]
    site = tmp_path / "site"
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("from_onnx", "to_onnx", "HierarchicalGaussianMixture", "plot_file", "atomic_write"):
        assert name in api, f"API reference lacks {name}"
    schema = (site / "reference" / "ir-schema" / "index.html").read_text(encoding="utf-8")
    assert "residual_variance" in schema and "eigenvectors" in schema
    assert (site / "img" / "gallery_neuron.png").exists()


# ---------------------------------------------------------------------------
# generated pages and pictures


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_reference_is_fresh():
    gen = _gen_cli()
    current = gen.TARGET.read_text(encoding="utf-8")
    made_on = re.search(r"on Python (\d+\.\d+)", current)
    here = "{}.{}".format(*sys.version_info[:2])
    if made_on and made_on.group(1) == here:
        assert current == gen.render(), "docs/reference/cli.md is stale: run python docs/gen_cli.py"
    else:  # argparse lays help out differently across Python versions: compare the content
        from gmmnet.cli import build_parser

        parser = build_parser()
        for name, sub in gen._subparsers(parser).items():
            assert f"## gmmnet {name}\n" in current, f"docs/reference/cli.md lacks {name}: run python docs/gen_cli.py"
            for action in sub._actions:
                for opt in action.option_strings:
                    assert opt in current, f"docs/reference/cli.md lacks {name} {opt}: run python docs/gen_cli.py"


def test_gallery_pictures_exist_and_are_linked():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = re.findall(r"docs/img/(gallery_\w+\.png)", readme)
    assert 3 <= len(set(linked)) <= 4
    for name in linked:
        assert (ROOT / "docs" / "img" / name).stat().st_size > 10_000
    made = re.findall(r'"(gallery_\w+\.png)"', (ROOT / "examples" / "gallery.py").read_text(encoding="utf-8"))
    assert set(linked) <= set(made), "every README picture is made by examples/gallery.py"


def test_gallery_script_smoke(tmp_path):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "examples" / "gallery.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.neuron(tmp_path)  # the cheapest of the four; the others share plot.figure with tests/test_plot.py
    assert (tmp_path / "gallery_neuron.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
