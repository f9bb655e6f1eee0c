"""Where elastiq keeps what is expensive to rebuild, and how it writes it safely.

Everything written here appears whole or not at all: files and directories are
built under a temporary name next to their destination and renamed into place, so an
interrupted run never leaves a half-written file behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """$ELASTIQ_CACHE, or ~/.cache/elastiq."""
    return Path(os.environ.get("ELASTIQ_CACHE", "~/.cache/elastiq")).expanduser()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_dir(path: Path, overwrite: bool = False):
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    On any error the temporary directory is removed and ``path`` is left as it was."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, size: int, sha256: str) -> None:
    """Refuse a file that is missing, or whose size or checksum is not the recorded one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path.parent} is incomplete: {path.name} is missing")
    if path.stat().st_size != size:
        raise ValueError(f"{path} has {path.stat().st_size} bytes but the manifest says {size}: truncated or replaced")
    if sha256_file(path) != sha256:
        raise ValueError(f"{path} does not match its checksum in the manifest: the file is corrupted")


def read_manifest_json(path: Path, what: str) -> dict:
    """A JSON manifest, or a clear error: ``what`` says what the directory should hold."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent} has no {path.name}: it is not {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is corrupted (not JSON: {e})") from None
