import pytest

from gmmnet import limits
from gmmnet.errors import ResourceLimitError, UsageError


@pytest.mark.parametrize("text, n", [("16", 16), ("1K", 1024), ("1.5G", 3 * 2**29), ("2MiB", 2 * 2**20), ("8g", 8 * 2**30)])
def test_parse_size(text, n):
    assert limits.parse_size(text) == n


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "1X"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        limits.parse_size(text)


def test_check_bytes_names_size_source_and_option(monkeypatch):
    monkeypatch.setenv("GMMNET_MAX_MEMORY", "1M")
    limits.check_bytes(2**20, "ok")
    with pytest.raises(ResourceLimitError, match=r"model\.pkl: building it would need 2\.0 MiB.*1\.0 MiB.*--max-memory"):
        limits.check_bytes(2**21, "building it", "model.pkl")
    limits.set_max_memory("4M")
    try:
        limits.check_bytes(2**21, "ok now")
    finally:
        limits.set_max_memory(None)
    monkeypatch.setenv("GMMNET_MAX_MEMORY", "lots")
    with pytest.raises(UsageError, match="GMMNET_MAX_MEMORY"):
        limits.max_memory()


def test_serial_blas_limits_scipy_blas_loaded_later():
    """serial_blas no longer imports scipy.linalg itself (0.25 s a conversion does not need): its
    controller is made again once scipy's own OpenBLAS is loaded, so that one is limited too."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from gmmnet.limits import serial_blas\n"
        "from threadpoolctl import threadpool_info\n"
        "with serial_blas():\n"
        "    pass\n"
        "before = 'scipy.linalg' in sys.modules\n"
        "import scipy.linalg\n"
        "with serial_blas():\n"
        "    inside = [(i['filepath'], i['num_threads']) for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "print(json.dumps([before, inside]))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    before, inside = json.loads(out.stdout.strip().splitlines()[-1])
    assert before is False
    assert any("scipy" in path for path, _ in inside), inside  # scipy's own BLAS is among those limited
    assert all(n == 1 for _, n in inside), inside
