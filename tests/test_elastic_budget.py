"""Budget sources and memory traces."""
import pytest

from elastiq.elastic import AvailableMemory, CgroupLimit, Fixed, parse_bytes, read_trace


def test_parse_bytes():
    assert parse_bytes("80MiB") == 80 * 2**20
    assert parse_bytes("1.5GB") == 1_500_000_000
    assert parse_bytes("123456") == 123456
    assert parse_bytes(" 2 kib ") == 2048
    assert parse_bytes(42) == 42
    for bad in ("80 MiBs", "-3MB", "lots", ""):
        with pytest.raises(ValueError, match="memory size"):
            parse_bytes(bad)
    with pytest.raises(ValueError, match="negative"):
        parse_bytes(-1)


def test_fixed_and_available_memory(monkeypatch):
    import psutil

    assert Fixed(1000)(held=500) == 1000

    class VM:
        available = 10_000

    monkeypatch.setattr(psutil, "virtual_memory", lambda: VM)
    assert AvailableMemory(reserve=3_000)(held=2_000) == 9_000  # what the model holds comes back on a swap


def test_cgroup_v2_v1_and_missing(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("1000000\n")
    (v2 / "memory.current").write_text("400000\n")
    assert CgroupLimit(reserve=100_000, root=str(v2))(held=50_000) == 1_000_000 - 400_000 + 50_000 - 100_000
    (v2 / "memory.max").write_text("max\n")
    with pytest.raises(ValueError, match="sets no memory limit"):
        CgroupLimit(root=str(v2))()
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("2000000")
    (v1 / "memory.usage_in_bytes").write_text("500000")
    assert CgroupLimit(root=str(tmp_path / "v1"))(held=0) == 1_500_000
    with pytest.raises(ValueError, match="no cgroup memory controller"):
        CgroupLimit(root=str(tmp_path / "nowhere"))()


def test_read_trace(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("# a comment\nseconds,bytes\n0,100MiB\n1.5, 80MiB  # shrinking\n3,123456\n")
    assert read_trace(p) == [(0.0, 100 * 2**20), (1.5, 80 * 2**20), (3.0, 123456)]
    for text, message in [("0,1MiB\n0,2MiB\n", "increase"), ("-1,1MiB\n", "start at 0"), ("0;1MiB\n", "seconds,bytes"),
                          ("0,1MiB,3\n", "two fields"), ("# nothing\n", "no \\(seconds, bytes\\) events"),
                          ("0,much\n", "memory size")]:
        p.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_trace(p)
    with pytest.raises(FileNotFoundError):
        read_trace(tmp_path / "none.csv")
