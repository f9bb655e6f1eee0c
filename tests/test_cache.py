"""Atomic writes: whole or nothing."""
import os

import pytest

from elastiq.cache import atomic_dir, atomic_write_text, cache_dir


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ELASTIQ_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_atomic_write_text_leaves_nothing_on_failure(monkeypatch, tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "first")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic_write_text(target, "second")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_commits_on_success_and_rolls_back_on_error(tmp_path):
    dest = tmp_path / "model"
    with atomic_dir(dest) as d:
        (d / "w.bin").write_bytes(b"123")
    assert (dest / "w.bin").read_bytes() == b"123"
    with pytest.raises(FileExistsError):
        with atomic_dir(dest):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(dest, overwrite=True) as d:
            (d / "w.bin").write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert (dest / "w.bin").read_bytes() == b"123"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_dir(dest, overwrite=True) as d:
        (d / "w.bin").write_bytes(b"456")
    assert (dest / "w.bin").read_bytes() == b"456"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
