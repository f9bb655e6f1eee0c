"""Where elastiq keeps what is expensive to rebuild, and how it writes it safely.

Everything written here appears whole or not at all: files and directories are
built under a temporary name next to their destination and renamed into place, so an
interrupted run never leaves a half-written file behind.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from elastiq.errors import InputError

TMP_TAG = "elastiq"  # our temporaries are named .NAME.elastiq-PID-RANDOM.tmp: a later write can tell ours apart


def cache_dir() -> Path:
    """$ELASTIQ_CACHE, or ~/.cache/elastiq."""
    return Path(os.environ.get("ELASTIQ_CACHE", "~/.cache/elastiq")).expanduser()


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{TMP_TAG}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries an interrupted write of ``path`` left behind: only names of
    our own pattern, and only those of processes that are gone (a live writer keeps its)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    head = f".{path.name}.{TMP_TAG}-"
    for p in path.parent.iterdir():
        if not (p.name.startswith(head) and p.name.endswith(".tmp")):
            continue
        pid = p.name[len(head):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def write_error(path: Path, error: BaseException) -> InputError | None:
    """A one-line InputError for a write that failed for want of space or permission; None
    for anything else (a bug, which should keep its traceback)."""
    text = str(error)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    elif type(error).__name__ == "SafetensorError" and ("No space left" in text or "StorageFull" in text):
        reason = "the disk is full"
    elif isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"permission denied ({error.strerror})"
    else:
        return None
    return InputError(f"cannot write {path}: {reason}; nothing was written. Free space or choose another place")


@contextmanager
def atomic_file(path: Path):
    """Yield a temporary path beside ``path`` to write; it is renamed to ``path`` when the
    block ends, and removed if the block fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        friendly = write_error(path, e)
        if friendly is not None:
            raise friendly from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system
    or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def check_replaceable(path: Path, owner: str | None) -> None:
    """Refuse to replace ``path`` unless it is a directory elastiq wrote: it holds the
    ``owner`` file (our manifest). ``owner=None``: any directory (our own cache)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        raise InputError(f"refusing to replace {path}: it is not a directory elastiq wrote; remove it yourself "
                         "or choose another output")
    if owner is not None and not (path / owner).is_file():
        raise InputError(f"refusing to replace {path}: it has no {owner}, so elastiq did not write it and "
                         "--overwrite would delete what it holds; remove it yourself or choose another output")


def check_output(path: Path, overwrite: bool, owner: str | None) -> None:
    """Refuse an output path before any slow work: it exists and ``overwrite`` is off, or
    it is not a directory elastiq wrote (see check_replaceable)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
        check_replaceable(path, owner)


def refuse_links_out(directory: Path) -> None:
    """Refuse a folder of ours holding a symbolic link that leads outside it: whatever reads
    the folder's files (transformers reads tokenizer files by name) stays inside."""
    directory = Path(directory)
    for p in directory.iterdir():
        if p.is_symlink():
            member(directory, p.name)


@contextmanager
def atomic_dir(path: Path, overwrite: bool = False, owner: str | None = None):
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    ``overwrite`` replaces an existing ``path`` only if elastiq wrote it (it holds the
    ``owner`` file; see check_replaceable), and in one step (rename-exchange), so the name
    always holds a whole directory, old or new. On any error the temporary directory is
    removed and ``path`` is left as it was. Temporaries of interrupted earlier writes go."""
    path = Path(path)
    check_output(path, overwrite, owner)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        if path.exists() and exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
        elif path.exists():  # no exchange here: the old one is moved aside first, a short gap
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp"))
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        friendly = write_error(path, e)
        if friendly is not None:
            raise friendly from None
        raise


def member(directory: Path, name) -> Path:
    """``directory / name`` for a file name read from a manifest we did not write: a relative
    path of plain names (no '..', not absolute) that stays inside ``directory`` after
    symbolic links are followed. Anything else is refused by name."""
    directory = Path(directory)
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise InputError(f"{directory}: the manifest names a file {name!r}, which is not a plain file name; "
                         "the folder is damaged or hostile")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"{directory}: the manifest names {name!r}, outside the folder; elastiq reads only files "
                         "inside the folder it is given")
    path = directory.joinpath(*parts)
    try:
        inside = path.resolve().is_relative_to(directory.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise InputError(f"{directory}: {name} leads outside the folder (a symbolic link); elastiq reads only files "
                         "inside the folder it is given")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, size: int, sha256: str) -> None:
    """Refuse a file that is missing, or whose size or checksum is not the recorded one."""
    path = Path(path)
    if not isinstance(size, int) or not isinstance(sha256, str):
        raise InputError(f"{path.parent}: the manifest entry of {path.name} is malformed (bytes {size!r}, "
                         f"sha256 {sha256!r}); the folder is damaged")
    if not path.is_file():
        raise InputError(f"{path.parent} is incomplete: {path.name} is missing")
    if path.stat().st_size != size:
        raise InputError(f"{path} has {path.stat().st_size} bytes but the manifest says {size}: truncated or replaced")
    if sha256_file(path) != sha256:
        raise InputError(f"{path} does not match its checksum in the manifest: the file is corrupted")


def read_manifest_json(path: Path, what: str) -> dict:
    """A JSON manifest (an object), or a clear error: ``what`` says what the directory should hold."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(f"{path.parent} has no {path.name}: it is not {what}")
    try:
        data = json.loads(member(path.parent, path.name).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is corrupted (not JSON: {e})") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is malformed: it holds a JSON {type(data).__name__}, not an object; it is not {what}")
    return data
