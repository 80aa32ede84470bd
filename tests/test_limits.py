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
