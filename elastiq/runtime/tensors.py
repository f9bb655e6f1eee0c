"""Read single tensors of a safetensors file into fresh numpy memory, without torch.

safetensors' numpy reader has no bfloat16 and maps the file (every page a host touched
would stay resident while the file is open, so memory would not fall when a model
shrinks). This reader parses the header, checks that every tensor lies inside the
file, and reads one tensor at a time with pread. bfloat16 comes back as uint16 bits.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

DTYPES = {"U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "F16": np.float16,
          "BF16": np.uint16, "F32": np.float32, "F64": np.float64, "BOOL": np.bool_}


class TensorFileError(ValueError):
    """A safetensors file that cannot be read as one (corrupted, truncated, foreign)."""


class TensorFile:
    def __init__(self, path):
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise TensorFileError(f"{self.path}: cannot open ({e.strerror})") from None
        size = os.fstat(self.fd).st_size
        try:
            n = int.from_bytes(os.pread(self.fd, 8, 0), "little")
            if not 2 <= n <= size - 8:
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            header = json.loads(os.pread(self.fd, n, 8))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            header.pop("__metadata__", None)
            self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
            self._checked: dict[str, tuple] = {}  # key -> (file stamp, digest) of its last good check
            for key, e in header.items():
                start, end = (8 + n + int(o) for o in e["data_offsets"])
                shape = tuple(int(s) for s in e["shape"])
                itemsize = np.dtype(DTYPES[e["dtype"]]).itemsize
                if any(s < 0 for s in shape) or not 8 + n <= start <= end <= size or end - start != math.prod(shape) * itemsize:
                    raise ValueError(f"tensor {key} lies outside the file or has the wrong size")
                self.entries[key] = (e["dtype"], shape, start, end - start)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError) as e:
            os.close(self.fd)
            raise TensorFileError(f"{self.path} is not a readable safetensors file ({e}): the file is corrupted") from None

    def dtype(self, key: str) -> str:
        return self.entries[key][0]

    def stamp(self) -> tuple:
        """What changes whenever the open file's bytes do: size, mtime, ctime, inode."""
        st = os.fstat(self.fd)
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino

    def get(self, key: str, sha256: str | None = None) -> np.ndarray:
        """Tensor ``key``; with ``sha256``, refused unless its bytes have that digest. The digest
        is computed at the first read and again whenever the file changed since the last
        check (its stamp, taken before the read): a re-hash on every read would
        add a tenth of a second to a swap of the built-in model's whole family."""
        if key not in self.entries:
            raise TensorFileError(f"{self.path} has no tensor {key}")
        dtype, shape, start, nbytes = self.entries[key]
        stamp = self.stamp()  # before the read: a write during it shows at the next read
        out = np.empty(nbytes, dtype=np.uint8)
        if nbytes and os.preadv(self.fd, [out], start) != nbytes:
            raise TensorFileError(f"{self.path}: {key} is cut short: the file is truncated")
        if sha256 is not None and self._checked.get(key) != (stamp, sha256):
            if hashlib.sha256(out).hexdigest() != sha256:
                raise TensorFileError(f"{self.path}: {key} does not match its checksum: the file is corrupted")
            self._checked[key] = (stamp, sha256)
        return out.view(DTYPES[dtype]).reshape(shape)

    def __del__(self, _close=os.close):
        try:
            _close(self.fd)
        except (OSError, AttributeError):
            pass


def as_float32(a: np.ndarray, dtype: str) -> np.ndarray:
    """A float tensor read by :class:`TensorFile` as float32 (bfloat16 arrives as its uint16 bits)."""
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)
