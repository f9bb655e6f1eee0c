"""The elastic artifact: one directory holding each stored (unit, base format) copy once.

    elastic.json          manifest: base formats, units, chain, family, quality, checksums
    config.json, tokenizer files
    rest.safetensors      float tensors outside the units (norms, an untied float head, ...)
    base<i>.safetensors   the packed tensors of every stored copy in base format i

Each stored tensor has its sha256 in the manifest and is checked when it is first read,
and again whenever its file changed on disk since, so a host loads copies lazily (only
what an option needs is read) and still refuses a byte corrupted after a first read. Small files are checked whole when the
artifact is opened. An artifact is written in a temporary directory and renamed into
place: a failed build or prune leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from elastiq import formats as F
from elastiq.cache import atomic_dir, check_file, member, read_manifest_json, refuse_links_out, sha256_file
from elastiq.errors import InputError
from elastiq.quant import QuantEmbedding, QuantLinear
from elastiq.quant.io import WEIGHT_DTYPES, has_tokenizer, weight_dtype
from elastiq.runtime import tensors
from elastiq.runtime.describe import write as write_native

from .chain import Chain, Family
from .units import Unit

MANIFEST = "elastic.json"
REST = "rest.safetensors"
EXTRAS = "extras"
VERSION = 1
PACKED_PARTS = ("codes", "scales", "selectors", "tensor_scale")


class ArtifactError(InputError):
    """The directory is not a usable elastic artifact (missing, corrupted, foreign)."""


def base_file(i: int) -> str:
    return f"base{i}.safetensors"


def tensor_sha256(t: torch.Tensor) -> str:
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy() if raw.numel() else b"").hexdigest()


def module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that store a packed module: its packed parts and its bias."""
    p = module.packed()
    out = {k: getattr(p, k) for k in PACKED_PARTS if getattr(p, k) is not None}
    if isinstance(module, QuantLinear) and module.bias is not None:
        out["bias"] = module.bias.detach()
    return {k: v.contiguous() for k, v in out.items()}


def module_meta(module: nn.Module) -> dict:
    return {"kind": "embedding" if isinstance(module, QuantEmbedding) else "linear",
            "shape": list(module.weight_shape), "dtype": str(module.weight_dtype).removeprefix("torch."),
            "bias": isinstance(module, QuantLinear) and module.bias is not None,
            "padding_idx": getattr(module, "padding_idx", None), "scale": getattr(module, "scale", 1.0)}


def stored_parts(meta: dict, fmt: F.Format) -> list[str]:
    """The tensors a packed module of ``module_meta`` ``meta`` in ``fmt`` is stored as."""
    return [k for k in PACKED_PARTS if k != "tensor_scale" or fmt.tensor_scale] + (["bias"] if meta["bias"] else [])


def packed_module(meta: dict, fmt: F.Format, parts: dict[str, torch.Tensor]) -> nn.Module:
    """The packed module stored as ``parts`` (see module_tensors) with ``module_meta`` ``meta``;
    ValueError when the parts do not fit the format and shape."""
    packed = F.Packed(fmt, tuple(meta["shape"]), WEIGHT_DTYPES[meta["dtype"]], tensor_scale=parts.get("tensor_scale"),
                      **{k: parts[k] for k in PACKED_PARTS if k != "tensor_scale"})
    packed.validate()
    if meta["kind"] == "embedding":
        return QuantEmbedding(packed, meta["padding_idx"], meta.get("scale", 1.0))
    return QuantLinear(packed, parts["bias"] if meta["bias"] else None)


def write(directory, *, config, tokenizer, units: list[Unit], chain: Chain, family: Family,
          copy_tensors, modules: dict[str, dict], rest: dict[str, torch.Tensor], rest_aliases: dict[str, str],
          quality: dict, info: dict, overwrite: bool = False) -> Path:
    """Write an artifact. ``copy_tensors(u, i)`` gives {module: {part: tensor}} for a stored copy."""
    from safetensors.torch import save_file

    directory = Path(directory)
    with atomic_dir(directory, overwrite=overwrite, owner=MANIFEST) as tmp:
        config.to_json_file(str(tmp / "config.json"))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        save_file({k: v.contiguous() for k, v in rest.items()}, str(tmp / REST))
        write_native(tmp, config, chain.formats)
        tensors: dict[str, dict[str, str]] = {}
        for i in range(len(chain.formats)):
            stored = sorted(u for u, b in family.copies if b == i)
            if not stored:
                continue
            blob = {}
            for u in stored:
                for module, parts in copy_tensors(u, i).items():
                    blob.update({f"{module}.{k}": t for k, t in parts.items()})
            save_file(blob, str(tmp / base_file(i)))
            tensors[base_file(i)] = {k: tensor_sha256(t) for k, t in blob.items()}
        files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir())
                 if p.is_file() and p.name not in tensors}
        files.update({name: {"bytes": (tmp / name).stat().st_size} for name in tensors})
        manifest = {"elastiq_elastic": VERSION, "architecture": type_name(config), "info": info,
                    "units": [{"name": u.name, "kind": u.kind, "modules": list(u.modules), "tied": list(u.tied)}
                              for u in units],
                    "modules": modules, "chain": chain.to_dict(), "family": family.to_dict(), "quality": quality,
                    "rest_aliases": rest_aliases, "files": files, "tensors": tensors}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return directory


def type_name(config) -> str:
    return (getattr(config, "architectures", None) or [config.model_type])[0]


class TensorFile(tensors.TensorFile):
    """The runtime's safetensors reader (pread into fresh memory, so a swap hands memory
    back), giving torch tensors and refusing with ArtifactError."""

    def __init__(self, path: Path):
        try:
            super().__init__(path)
        except tensors.TensorFileError as e:
            raise ArtifactError(str(e)) from None

    def get(self, key: str) -> torch.Tensor:
        try:
            t = torch.from_numpy(super().get(key))
        except tensors.TensorFileError as e:
            raise ArtifactError(str(e)) from None
        return t.view(torch.bfloat16) if self.dtype(key) == "BF16" else t  # bfloat16 arrives as its bits


class Artifact:
    """A read-only view of an artifact directory; copies are read on demand."""

    def __init__(self, directory):
        self.path = Path(directory)
        if not self.path.is_dir():
            raise ArtifactError(f"{self.path} is not a directory: give the directory `elastiq build` wrote")
        try:
            m = read_manifest_json(self.path / MANIFEST, "an elastic artifact (written by `elastiq build`)")
        except FileNotFoundError as e:
            raise ArtifactError(str(e)) from None
        except ValueError as e:
            raise ArtifactError(str(e)) from None
        if m.get("elastiq_elastic") != VERSION:
            raise ArtifactError(f"{self.path} is elastic artifact version {m.get('elastiq_elastic')}; this elastiq "
                                f"reads version {VERSION}: rebuild it with `elastiq build`")
        try:
            refuse_links_out(self.path)
            _check_manifest(self.path, m)
            for name, meta in m["files"].items():
                path = member(self.path, name)
                if "sha256" in meta:
                    check_file(path, meta["bytes"], meta["sha256"])
                elif not path.is_file():
                    raise ArtifactError(f"{self.path} is incomplete: {name} is missing")
                elif path.stat().st_size != meta["bytes"]:
                    raise ArtifactError(f"{path} has {path.stat().st_size} bytes but the manifest says {meta['bytes']}: "
                                        "truncated or replaced")
            self.manifest = m
            self.chain = Chain.from_dict(m["chain"])
            self.family = Family.from_dict(m["family"], self.chain)
            self.units = [Unit(u["name"], tuple(u["modules"]), u["kind"], tuple(u["tied"])) for u in m["units"]]
            _check_layout(self.path, m, self.chain, self.units)
            self.formats = [F.get(s) for s in self.chain.formats]
            self.extras: list[dict] = list(m.get("extras", []))  # low-rank options (add_low_rank_option)
            self._files = {name: TensorFile(member(self.path, name)) for name in m["tensors"]}
            self._verified: dict[tuple[str, str], tuple] = {}  # (file, key) -> the file's stamp when last checked
        except ArtifactError:
            raise
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise ArtifactError(f"{self.path / MANIFEST} is malformed ({type(e).__name__} {e}): rebuild the artifact") from None
        except Exception as e:  # a corrupted safetensors header, a bad checksum, a bad format name
            raise ArtifactError(f"{self.path}: {e}") from None

    @property
    def option_bytes(self):
        return self.chain.option_bytes()

    def linear_modules(self) -> list[str]:
        """The packed linear layers of the units (where low-rank corrections can go)."""
        return [m for u in self.units for m in u.modules if self.manifest["modules"][m]["kind"] == "linear"]

    def read(self, file: str, key: str) -> torch.Tensor:
        """One stored tensor, checked against its checksum the first time it is read and
        again whenever its file changed on disk since (size, mtime, ctime or inode: ctime
        moves on every write and cannot be set back), so a byte corrupted after a first
        read is refused too (hashing every read would add ~114 ms to a ~200 ms extreme swap: bench/verify_cost.py)."""
        want = self.manifest["tensors"].get(file, {}).get(key)
        if want is None:
            raise ArtifactError(f"{self.path} does not store {key} (pruned away, or not an option of this artifact)")
        stamp = self._files[file].stamp()  # before the read: a write during it shows at the next read
        try:
            t = self._files[file].get(key)
        except ArtifactError:
            raise
        except Exception as e:
            raise ArtifactError(f"{self.path / file}: cannot read {key} ({e}): the file is corrupted") from None
        if self._verified.get((file, key)) == stamp:
            return t
        if tensor_sha256(t) != want:
            raise ArtifactError(f"{self.path / file}: {key} does not match its checksum: the file is corrupted; "
                                "rebuild the artifact")
        self._verified[(file, key)] = stamp
        return t

    def load_copy(self, u: int, i: int) -> dict[str, nn.Module]:
        """{module name: packed module} of unit ``u`` in base format ``i``."""
        if (u, i) not in self.family.copies:
            raise ArtifactError(f"{self.path} does not store {self.units[u].name} in {self.chain.formats[i]}")
        return {name: self._module(name, i) for name in self.units[u].modules}

    def _module(self, name: str, i: int) -> nn.Module:
        meta, file = self.manifest["modules"][name], base_file(i)
        fmt = self.formats[i]
        parts = {k: self.read(file, f"{name}.{k}") for k in stored_parts(meta, fmt)}
        try:
            return packed_module(meta, fmt, parts)
        except ValueError as e:
            raise ArtifactError(f"{self.path / file}: {name} does not fit its manifest entry ({e})") from None

    def load_low_rank(self, extra: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """{module: (A, B, scaling)} of an extra option."""
        return {m: (self.read(extra["file"], f"{m}.lora_A"), self.read(extra["file"], f"{m}.lora_B"), meta["scaling"])
                for m, meta in extra["modules"].items()}

    def verify(self) -> None:
        """Read and check every stored tensor (opening checks only sizes of the large files)."""
        self._verified.clear()
        for file, keys in self.manifest["tensors"].items():
            for key in keys:
                self.read(file, key)

    def storage_bytes(self) -> int:
        return sum(meta["bytes"] for meta in self.manifest["files"].values()) + (self.path / MANIFEST).stat().st_size


def _check_manifest(path: Path, m: dict) -> None:
    """The manifest's top-level shape and file names, before anything is read by them."""
    where = path / MANIFEST
    for key, kind in (("files", dict), ("tensors", dict), ("modules", dict), ("units", list), ("chain", dict),
                      ("family", dict), ("quality", dict), ("rest_aliases", dict), ("info", dict)):
        if not isinstance(m.get(key), kind):
            raise ArtifactError(f"{where} is malformed: {key!r} is missing or not a JSON {kind.__name__}; rebuild the artifact")
    for name, meta in m["files"].items():
        member(path, name)
        if not isinstance(meta, dict) or type(meta.get("bytes")) is not int:
            raise ArtifactError(f"{where} is malformed: the entry of {name!r} has no byte count")
    for name, keys in m["tensors"].items():
        member(path, name)
        if name not in m["files"]:  # its size must be vouched for too
            raise ArtifactError(f"{where} lists tensors in {name!r}, a file it does not list")
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise ArtifactError(f"{where} is malformed: the checksums of {name!r} are not an object of strings")
    if REST not in m["files"] or "config.json" not in m["files"]:
        raise ArtifactError(f"{where} does not list {REST} and config.json: rebuild the artifact")
    extras = m.get("extras", [])
    if not isinstance(extras, list) or not all(isinstance(e, dict) and e.get("file") in m["tensors"] for e in extras):
        raise ArtifactError(f"{where} is malformed: an extra option names a file it does not list")


def _check_layout(path: Path, m: dict, chain: Chain, units: list[Unit]) -> None:
    """Units, modules and quality agree with the chain; every module entry is well formed."""
    where = path / MANIFEST
    if [u.name for u in units] != list(chain.units):
        raise ArtifactError(f"{where}: the units and the chain's units differ; rebuild the artifact")
    for f in chain.formats:
        try:
            F.get(f)
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"{where}: base format {f!r}: {e}") from None
    for u in units:
        for name in u.modules:
            meta = m["modules"].get(name)
            if not isinstance(meta, dict):
                raise ArtifactError(f"{where}: unit {u.name} names module {name!r}, which has no entry")
            shape = meta.get("shape")
            if meta.get("kind") not in ("linear", "embedding") or not (
                    isinstance(shape, list) and len(shape) == 2 and all(type(d) is int and d > 0 for d in shape)):
                raise ArtifactError(f"{where}: module {name!r} has kind {meta.get('kind')!r} and shape {shape!r}; "
                                    "expected linear or embedding of two positive integers")
            weight_dtype(meta.get("dtype"), f"{where}, module {name!r}")
    estimated = m["quality"].get("estimated")
    if not isinstance(estimated, list) or len(estimated) != chain.n_options:
        raise ArtifactError(f"{where}: quality.estimated does not give one value per option ({chain.n_options})")
    for e in m.get("extras", []):
        if e.get("option") not in range(chain.n_options):
            raise ArtifactError(f"{where}: extra option {e.get('name')!r} refers to option {e.get('option')!r}, "
                                f"outside the chain (0..{chain.n_options - 1})")


def add_low_rank_option(directory, option: int, deltas: dict, name: str, kl: float) -> dict:
    """Store low-rank corrections (e.g. trained LoRA adapters) for chain option ``option`` as
    one more hosting option: ``deltas`` maps module names to (A (r, in), B (out, r),
    scaling); ``kl`` is the option's measured KL from the float model. The tensors go to
    ``extras/<name>.safetensors``; the manifest is replaced whole, last."""
    from safetensors.torch import save_file

    from elastiq.cache import atomic_write_text

    a = Artifact(directory)
    if option not in a.family.options:
        raise ValueError(f"option {option} is not in the family of {a.path}: pick one of its options (elastiq host --options)")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"an extra option's name is letters, digits, - and _; got {name!r}")
    if any(e["name"] == name for e in a.extras):
        raise ValueError(f"{a.path} already has an extra option named {name!r}")
    linear = set(a.linear_modules())
    tensors, modules = {}, {}
    for m, (A, B, scaling) in deltas.items():
        if m not in linear:
            raise ValueError(f"{m} is not a packed linear layer of {a.path}")
        out_f, in_f = a.manifest["modules"][m]["shape"]
        if A.dim() != 2 or B.dim() != 2 or A.shape[1] != in_f or B.shape[0] != out_f or A.shape[0] != B.shape[1]:
            raise ValueError(f"the correction of {m} ({out_f}x{in_f}) needs A (r, {in_f}) and B ({out_f}, r), got "
                             f"{tuple(A.shape)} and {tuple(B.shape)}")
        tensors[f"{m}.lora_A"], tensors[f"{m}.lora_B"] = A.detach().contiguous(), B.detach().contiguous()
        modules[m] = {"rank": int(A.shape[0]), "scaling": float(scaling)}
    if not modules:
        raise ValueError("no corrections given")
    file = f"{EXTRAS}/{name}.safetensors"
    target = a.path / file
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        save_file(tensors, str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    m = dict(a.manifest)
    m["tensors"] = {**m["tensors"], file: {k: tensor_sha256(t) for k, t in tensors.items()}}
    m["files"] = {**m["files"], file: {"bytes": target.stat().st_size}}
    entry = {"name": name, "option": int(option), "file": file, "modules": modules, "kl": float(kl),
             "bytes": int(sum(t.numel() * t.element_size() for t in tensors.values()))}
    m["extras"] = a.extras + [entry]
    atomic_write_text(a.path / MANIFEST, json.dumps(m, indent=1))
    return entry


def differences(a, b) -> list[str]:
    """The files in which artifacts ``a`` and ``b`` differ, byte for byte, the manifest
    compared without ``info.build_seconds`` (a timing, not a result): [] when two builds
    made the same artifact."""
    a, b = Path(a), Path(b)
    names = sorted({p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
                   | {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()})
    out = []
    for name in names:
        x, y = a / name, b / name
        if not (x.is_file() and y.is_file()):
            out.append(name)
        elif name == MANIFEST:
            mx, my = json.loads(x.read_text()), json.loads(y.read_text())
            mx["info"].pop("build_seconds", None), my["info"].pop("build_seconds", None)
            if mx != my:
                out.append(name)
        elif x.read_bytes() != y.read_bytes():
            out.append(name)
    return out


def is_artifact(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def prune_artifact(src, out, limit_bytes: int, overwrite: bool = False) -> tuple[Path, dict]:
    """Write the largest family of ``src`` that fits ``limit_bytes`` of storage to ``out``;
    returns the path and a report of what the family lost."""
    from safetensors.torch import load_file

    from elastiq.models.hf import auto_config, auto_tokenizer

    from .chain import prune

    a = src if isinstance(src, Artifact) else Artifact(src)
    if Path(out).resolve() == a.path.resolve():
        raise ValueError(f"prune writes a new artifact: give an --out other than {a.path}")
    family = prune(a.chain, limit_bytes, a.family)
    sizes = a.option_bytes
    before = a.family
    report = {"limit_bytes": int(limit_bytes), "options_before": len(before.options), "options_after": len(family.options),
              "options_removed": sorted(set(before.options) - set(family.options)),
              "storage_before": before.storage_bytes, "storage_after": family.storage_bytes,
              "largest_before": int(sizes[before.options[0]]), "largest_after": int(sizes[family.options[0]]),
              "smallest_after": int(sizes[family.options[-1]])}
    keys = a.manifest["tensors"]

    def copy_tensors(u, i):
        file = base_file(i)
        return {m: {k.removeprefix(m + "."): a.read(file, k) for k in keys[file] if k.startswith(m + ".")
                    and k.removeprefix(m + ".") in PACKED_PARTS + ("bias",)}
                for m in a.units[u].modules}

    tok = auto_tokenizer(a.path) if has_tokenizer(a.path) else None
    kept = [e for e in a.extras if e["option"] in family.options]
    report["extras_removed"] = [e["name"] for e in a.extras if e not in kept]
    info = dict(a.manifest["info"], pruning=report)
    path = write(out, config=auto_config(a.path), tokenizer=tok,
                 units=a.units, chain=a.chain, family=family, copy_tensors=copy_tensors, modules=a.manifest["modules"],
                 rest=load_file(str(a.path / REST)), rest_aliases=a.manifest["rest_aliases"],
                 quality=a.manifest["quality"], info=info, overwrite=overwrite)
    for e in kept:  # extra options whose chain option survives come along
        add_low_rank_option(path, e["option"], a.load_low_rank(e), e["name"], e["kl"])
    return path, report

