"""The import-linter contracts of pyproject.toml (docs/architecture.md): every import points down."""

import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def lint(*contracts: str) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    args = [exe, "--no-cache"] + [a for c in contracts for a in ("--contract", c)]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_contracts_are_declared():
    text = (ROOT / "pyproject.toml").read_text()
    for cid in ("layers", "formats", "ground", "sklearn-format"):
        assert f'id = "{cid}"' in text


def test_ground_floor_and_the_sklearn_format_import_nothing_above_them():
    res = lint("ground", "sklearn-format")
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_import_points_down():
    res = lint("layers")
    assert res.returncode == 0, res.stdout + res.stderr


def test_no_format_module_imports_another():
    res = lint("formats")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_broken_contract_fails(tmp_path):
    """The check can fail: an upward import in a copy of the package breaks the ground-floor contract."""
    pkg = tmp_path / "gmmnet"
    shutil.copytree(ROOT / "gmmnet", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "errors.py").write_text((pkg / "errors.py").read_text() + "\nfrom . import cli  # noqa: E402,F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    res = subprocess.run([exe, "--no-cache", "--contract", "ground"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(exe).parent)})
    assert res.returncode != 0 and "gmmnet.errors" in res.stdout, res.stdout + res.stderr
