"""The README's set-up commands stay true: CI runs the same test command, and the demo works."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    test_cmd = next(b.strip() for b in blocks if "pytest" in b)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines
    assert test_cmd.startswith("pip install torch==2.13.0")  # the CPU build before anything pulls torch


def test_readme_demo_command_is_the_cli_demo():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert any(b.strip().endswith("gmmnet demo") for b in blocks)


def test_import_gmmnet_does_not_import_torch():
    code = "import sys, gmmnet, gmmnet.cli, gmmnet.formats.onnx, gmmnet.io; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_runs_and_reports_within_tolerance():
    out = subprocess.run([sys.executable, "-m", "gmmnet.cli", "demo"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "all configurations within tolerance" in out.stdout
    for ct in ("full", "tied", "diag", "spherical"):
        assert ct in out.stdout


def test_getting_started_commands_run(tmp_path, monkeypatch, capsys):
    """docs/getting-started.md's command-line section, from making data.npy to the plot, runs as written."""
    import shlex

    from gmmnet.cli import main

    text = (ROOT / "docs" / "getting-started.md").read_text()
    section = text.split("## From the command line", 1)[1].split("\n## ", 1)[0]
    lines = [ln.split("  #", 1)[0].strip() for b in _bash_blocks(section) for ln in b.splitlines() if ln.strip()]
    assert lines[0].startswith("python -c ") and "data.npy" in lines[0]
    monkeypatch.chdir(tmp_path)
    for line in lines:
        argv = shlex.split(line)
        if argv[0] == "python":
            subprocess.run([sys.executable, *argv[1:]], check=True, timeout=120)
        else:
            assert argv[0] == "gmmnet" and main(argv[1:]) == 0, (line, capsys.readouterr().err)
    assert {"data.npy", "gmm.skops", "gmm.onnx", "gmm64.onnx", "scores.npy", "back.json", "gmm.png"} <= {
        p.name for p in tmp_path.iterdir()}
