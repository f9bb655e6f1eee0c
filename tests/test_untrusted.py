"""Folders and files elastiq did not write: every hostile or broken one is refused with one
line, before any code of theirs runs, without reading outside the folder, without
filling weights with random values, and without deleting what elastiq did not write.
Issue 16, item by item; docs/security.md says what is promised."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import elastiq
from elastiq import formats as F
from elastiq.cache import sha256_file
from elastiq.cli import app
from elastiq.errors import InputError

from conftest import make_tiny_llama, save_tiny_llama

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
NOWHERE = "/nonexistent/elastiq-artifact"  # checks that must come before the artifact is opened
TEXT = "The quick brown fox jumps over the lazy dog, and then the dog sleeps in the sun. " * 12


def one_line_error(r, *words):
    """A refused command: exit 2, one 'error:' line naming the problem, no traceback."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit), r.output
    lines = [ln for ln in r.output.splitlines() if "error:" in ln]
    assert len(lines) == 1 and r.output.count("error:") == 1, r.output
    for w in words:
        assert w in lines[0], r.output


def rewrite_manifest(directory, name, change):
    """Edit a JSON manifest in place, as a hostile editor would (checksums of other files kept)."""
    path = Path(directory) / name
    m = json.loads(path.read_text())
    m = change(m)
    path.write_text(json.dumps(m))


def vouch(directory, manifest, filename):
    """Recompute a file's size and checksum in a manifest's 'files' table: an attacker can."""
    def change(m):
        p = Path(directory) / filename
        m["files"][filename] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        return m
    rewrite_manifest(directory, manifest, change)


@pytest.fixture
def hf_dir(tmp_path, byte_tokenizer):
    return save_tiny_llama(tmp_path / "hf", byte_tokenizer)


@pytest.fixture
def saved(tmp_path, byte_tokenizer):
    m = elastiq.quantize(make_tiny_llama(), "int8", progress=False)
    return elastiq.save(m, tmp_path / "saved", tokenizer=byte_tokenizer)


@pytest.fixture(scope="module")
def artifact_src(tmp_path_factory, byte_tokenizer):
    from elastiq.elastic import build

    out = tmp_path_factory.mktemp("art") / "tiny.elastic"
    build(make_tiny_llama(), byte_tokenizer, out, formats=["int8", "int4"], calib_text=TEXT, calib_tokens=64,
          context=32, measure=2, progress=False, source="tiny")
    return out


@pytest.fixture
def artifact(artifact_src, tmp_path):
    import shutil

    return Path(shutil.copytree(artifact_src, tmp_path / "tiny.elastic"))


# ---- 1. missing weights are never filled with random values ------------------------------

def test_hf_folder_with_a_missing_weight_is_refused(hf_dir):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(hf_dir / "model.safetensors"))
    weights.pop("model.layers.1.mlp.down_proj.weight")
    save_file(weights, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"missing 1 .*never fills missing weights with random values"):
        elastiq.load(hf_dir)


def test_hf_folder_holding_one_tensor_does_not_quantize(hf_dir, tmp_path):
    from safetensors.torch import save_file

    save_file({"model.norm.weight": torch.ones(64)}, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    r = runner.invoke(app, ["quantize", str(hf_dir), "-f", "int8", "-o", str(tmp_path / "q")])
    one_line_error(r, "random values")
    assert not (tmp_path / "q").exists()


def test_saved_model_without_its_manifest_is_refused_and_named(saved, tmp_path):
    (saved / "elastiq.json").unlink()
    with pytest.raises(InputError, match="elastiq.json is gone"):
        elastiq.load(saved)
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    r = runner.invoke(app, ["eval", str(saved), "--text", str(text), "--context", "32"])
    one_line_error(r, "random values")
    assert "perplexity" not in r.output


# ---- 2. no code from a model folder ever runs ---------------------------------------------

CODE = "import pathlib; pathlib.Path(__file__).with_name('RAN').write_text('code ran')\n"


def plant_code(directory, where):
    """auto_map in config.json or tokenizer_config.json, pointing at a module that leaves a mark."""
    (directory / "evil.py").write_text(CODE)
    f = directory / where
    data = json.loads(f.read_text()) if f.is_file() else {}
    data["auto_map"] = {"AutoConfig": "evil.Config", "AutoModelForCausalLM": "evil.Model", "AutoTokenizer": ["evil.Tok", None]}
    f.write_text(json.dumps(data))


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
@pytest.mark.parametrize("kind", ["hf", "saved", "artifact"])
def test_a_folder_that_asks_to_run_its_code_is_refused_without_a_prompt(kind, where, hf_dir, saved, artifact, tmp_path):
    directory = {"hf": hf_dir, "saved": saved, "artifact": artifact}[kind]
    plant_code(directory, where)
    if kind != "hf":  # re-vouch for the edited file, as an attacker would
        manifest = "elastiq.json" if kind == "saved" else "elastic.json"
        vouch(directory, manifest, where)
    if kind == "artifact":
        r = runner.invoke(app, ["host", str(directory), "--budget", "1MiB"], input="y\ny\n")
    else:
        r = runner.invoke(app, ["quantize", str(directory), "-f", "int4", "-o", str(tmp_path / "out")], input="y\ny\n")
    one_line_error(r, "never runs code")
    assert not (directory / "RAN").exists()
    assert "[y/N]" not in r.output and "trust_remote_code" not in r.output


# ---- 3. nothing outside the folder is read ------------------------------------------------

@pytest.fixture
def secret(tmp_path):
    s = tmp_path / "secret.txt"
    s.write_text("not yours " * 1000)
    return s


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_saved_model_file_names_stay_inside(saved, secret, how):
    name = {"dotdot": "../secret.txt", "absolute": str(secret), "symlink": "link.txt"}[how]
    if how == "symlink":
        (saved / "link.txt").symlink_to(secret)
    rewrite_manifest(saved, "elastiq.json", lambda m: {**m, "files": {**m["files"], name: {
        "bytes": secret.stat().st_size, "sha256": sha256_file(secret)}}})  # even a matching checksum
    with pytest.raises(InputError, match="outside the folder") as e:
        elastiq.load(saved)
    assert str(secret.stat().st_size) not in str(e.value)


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_artifact_tensor_files_stay_inside(artifact, tmp_path, how):
    from safetensors.torch import save_file

    from elastiq.elastic import Artifact

    outside = tmp_path / "outside.safetensors"
    save_file({"x": torch.zeros(4)}, str(outside))
    name = "../outside.safetensors" if how == "dotdot" else str(outside)
    rewrite_manifest(artifact, "elastic.json", lambda m: {**m, "files": {**m["files"], name: {"bytes": outside.stat().st_size}},
                                                          "tensors": {**m["tensors"], name: {"x": "0" * 64}}})
    with pytest.raises(InputError, match="outside the folder"):
        Artifact(artifact)


def test_adapter_file_name_stays_inside(saved, secret):
    from elastiq.lrec import load_adapters

    model, _ = elastiq.load(saved)
    adapters = saved / "adapters"
    adapters.mkdir()
    (adapters / "adapters.json").write_text(json.dumps({"elastiq_adapters": 1, "modules": {}, "file": {
        "name": "../../secret.txt", "bytes": secret.stat().st_size, "sha256": sha256_file(secret)}}))
    with pytest.raises(InputError, match="outside the folder"):
        load_adapters(model, adapters)


def test_links_out_of_our_folders_are_refused(saved, artifact, secret, tmp_path):
    from elastiq.elastic import Artifact

    (saved / "tokenizer.json").unlink()
    (saved / "tokenizer.json").symlink_to(secret)  # unlisted, read by transformers by name
    with pytest.raises(InputError, match="outside the folder"):
        elastiq.load(saved)
    (artifact / "special_tokens_map.json").symlink_to(secret)
    with pytest.raises(InputError, match="outside the folder"):
        Artifact(artifact)


def test_an_adapters_link_out_of_a_saved_model_is_refused(saved, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (saved / "adapters").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match="outside the folder"):
        elastiq.load(saved)


def test_swapped_files_are_refused(saved, artifact, tmp_path, byte_tokenizer):
    """A file replaced by another of the same kind and size (another model's weights, the
    other base's copies) is refused by its checksum or size, never loaded."""
    from elastiq.elastic import Artifact, ArtifactError
    from elastiq.elastic.artifact import base_file

    other = elastiq.save(elastiq.quantize(make_tiny_llama(seed=3), "int8", progress=False), tmp_path / "other",
                         tokenizer=byte_tokenizer)
    assert (other / "model.safetensors").stat().st_size == (saved / "model.safetensors").stat().st_size
    os.replace(other / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(InputError, match="does not match its checksum"):
        elastiq.load(saved)
    a, b = artifact / base_file(0), artifact / base_file(1)
    os.replace(a, tmp_path / "x")
    os.replace(b, a)
    os.replace(tmp_path / "x", b)
    with pytest.raises(ArtifactError, match="bytes but the manifest says"):
        Artifact(artifact)


# ---- 4. --overwrite replaces only what elastiq wrote -------------------------------------

def test_overwrite_refuses_a_folder_elastiq_did_not_write(hf_dir, tmp_path):
    notes = tmp_path / "userdata"
    notes.mkdir()
    (notes / "notes.txt").write_text("my notes")
    r = runner.invoke(app, ["quantize", str(hf_dir), "-f", "int8", "-o", str(notes), "--overwrite"])
    one_line_error(r, "refusing to replace", "did not write")
    assert (notes / "notes.txt").read_text() == "my notes"
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    r = runner.invoke(app, ["quantize", str(hf_dir), "-f", "int8", "-o", str(a_file), "--overwrite"])
    one_line_error(r, "refusing to replace")
    assert a_file.read_text() == "keep"


@pytest.mark.parametrize("command", [["quantize", "-f", "int8"], ["correct", "-f", "int4"], ["build"]])
def test_overwrite_is_refused_before_the_model_loads(tmp_path, command):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("mine")
    r = runner.invoke(app, [command[0], "no-such-model", *command[1:], "-o", str(notes), "--overwrite"])
    one_line_error(r, "refusing to replace")
    assert (notes / "a.txt").read_text() == "mine"


def test_correct_never_resumes_or_removes_a_checkpoint_folder_it_did_not_write(hf_dir, tmp_path):
    mine = tmp_path / "out.checkpoint"  # the name `correct -o out` resumes from, and removes when done
    mine.mkdir()
    (mine / "a.txt").write_text("mine")
    text = tmp_path / "calib.txt"
    text.write_text(TEXT)
    r = runner.invoke(app, ["correct", str(hf_dir), "-f", "int4", "-o", str(tmp_path / "out"), "--steps", "1",
                            "--rank", "2", "--calib", str(text), "--calib-tokens", "64", "--context", "32",
                            "--eval-tokens", "0"])
    one_line_error(r, "refusing to replace")
    assert (mine / "a.txt").read_text() == "mine" and not (tmp_path / "out").exists()


def test_overwrite_replaces_what_elastiq_wrote(saved, byte_tokenizer):
    m = elastiq.quantize(make_tiny_llama(seed=1), "int4", progress=False)
    elastiq.save(m, saved, tokenizer=byte_tokenizer, overwrite=True)
    assert json.loads((saved / "elastiq.json").read_text())["modules"]["model.layers.0.mlp.up_proj"]["format"] == "int4"
    elastiq.load(saved)


# ---- 5. an interrupted write never leaves the name empty, and its temporaries go ------------

KILLED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from elastiq import cache
    out, when = Path(sys.argv[1]), sys.argv[2]
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if when == "after swap":  # killed while removing the old copy, after the new one took the name
        cache.shutil.rmtree = die
    with cache.atomic_dir(out, overwrite=True, owner="elastiq.json") as tmp:
        (tmp / "elastiq.json").write_text("new")
        (tmp / "weights").write_bytes(b"w" * 100000)
        if when == "while writing":
            die()
""")


@pytest.mark.parametrize("when", ["while writing", "after swap"])
def test_a_killed_overwrite_leaves_one_whole_directory(tmp_path, when):
    from elastiq.cache import atomic_dir

    out = tmp_path / "model"
    out.mkdir()
    (out / "elastiq.json").write_text("old")
    r = subprocess.run([sys.executable, "-c", KILLED, str(out), when], cwd=REPO, capture_output=True)
    assert r.returncode == -signal.SIGKILL
    assert (out / "elastiq.json").read_text() == ("new" if when == "after swap" else "old")
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1  # the dead write's temporary: the next write removes it
    with atomic_dir(out, overwrite=True, owner="elastiq.json") as tmp:
        (tmp / "elastiq.json").write_text("third")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (out / "elastiq.json").read_text() == "third"


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    from elastiq.cache import atomic_write_text

    live = tmp_path / f".out.json.elastiq-{os.getppid()}-abc.tmp"  # our parent is alive
    live.write_text("in progress")
    atomic_write_text(tmp_path / "out.json", "{}")
    assert live.exists()


# ---- 6. the GGUF cache is keyed on the whole content --------------------------------------

def test_gguf_cache_key_sees_a_change_in_the_middle(tmp_path, monkeypatch):
    from elastiq.models import from_gguf

    monkeypatch.setenv("ELASTIQ_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    data = bytearray(b"GGUF" + os.urandom(5 << 20))
    path.write_bytes(data)
    before = from_gguf.fingerprint(path)
    st = path.stat()
    data[len(data) // 2: len(data) // 2 + (1 << 20)] = bytes(1 << 20)  # 1 MiB zeroed in the middle
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime put back
    assert from_gguf.fingerprint(path) != before


def test_gguf_hash_is_computed_once_per_file_version(tmp_path, monkeypatch):
    from elastiq.models import from_gguf

    monkeypatch.setenv("ELASTIQ_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(1000))
    calls = []
    real = from_gguf.sha256_file
    monkeypatch.setattr(from_gguf, "sha256_file", lambda p: calls.append(p) or real(p))
    first = from_gguf.fingerprint(path)
    assert from_gguf.fingerprint(path) == first and len(calls) == 1
    path.write_bytes(b"GGUF" + bytes(999) + b"\x01")
    assert from_gguf.fingerprint(path) != first and len(calls) == 2


# ---- 7. every read of an artifact is checked, not only the first --------------------------

def test_a_copy_corrupted_after_its_first_read_is_refused(artifact):
    from elastiq.elastic import ArtifactError, ElasticModel
    from elastiq.elastic.artifact import base_file

    hosted = ElasticModel(artifact)
    first, last = hosted.options[0], hosted.options[-1]
    hosted.swap(first)  # reads every unit in base 0
    f = hosted.artifact._files[base_file(0)]
    key = next(k for k in f.entries if k.endswith(".codes"))
    _, _, start, n = f.entries[key]
    path = artifact / base_file(0)
    st = path.stat()
    with open(path, "r+b") as fh:  # flip one byte in place: same size, mtime put back
        fh.seek(start + n // 2)
        b = fh.read(1)
        fh.seek(start + n // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    hosted.swap(last)
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        hosted.swap(first)
    assert hosted.option == last  # nothing changed: it keeps serving
    with torch.no_grad():
        assert torch.isfinite(hosted.model(torch.tensor([[1, 2, 3]])).logits).all()


# ---- 8.-11. numbers at the edges -----------------------------------------------------------

def roundtrip(x, f):
    return F.dequantize(F.quantize(x, f))


@pytest.mark.parametrize("fmt", F.names())
def test_nan_makes_its_block_nan_and_leaves_the_rest(fmt):
    torch.manual_seed(0)
    x = torch.randn(3, 64)
    clean = x.clone()
    clean[0, 0] = 0.0
    x[0, 0] = float("nan")
    block = F.get(fmt).block or 64
    for fn in (F.fake_quantize, roundtrip):
        y, ref = fn(x, fmt), fn(clean, fmt)
        assert y[0, :block].isnan().all()
        assert torch.equal(y[:, block:], ref[:, block:]) and torch.equal(y[1:], ref[1:])


@pytest.mark.parametrize("fmt", F.names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_input_gives_finite_output_at_the_dtype_edge(fmt, dtype):
    big = torch.finfo(dtype).max
    x = torch.randn(2, 64).to(dtype)
    x[0, 0], x[1, 5], x[1, 40] = big, -big, big * 0.9
    for fn in (F.fake_quantize, roundtrip):
        y = fn(x, fmt)
        assert y.dtype == dtype and torch.isfinite(y).all(), fmt
        assert y[0, 0] > 0 and y[1, 5] < 0  # saturated, sign kept
        assert y[0, 0] == y[0].max() and y[1, 5] == y[1].min()  # to the format's largest value, not flushed


def test_rceil_at_float32_max_saturates():
    x = torch.full((1, 32), 3e38)
    y = F.fake_quantize(x, "mxfp4_rceil")
    assert torch.isfinite(y).all() and float(y.max()) <= torch.finfo(torch.float32).max


@pytest.mark.parametrize("fmt", F.names())
def test_a_parameter_is_quantized_like_its_values(fmt):
    w = torch.nn.Linear(64, 32).weight
    assert w.requires_grad
    assert torch.equal(roundtrip(w, fmt), F.fake_quantize(w.detach(), fmt))


@pytest.mark.parametrize("fmt", ["int4", "mxfp4", "nvfp4", "nxfp4"])
def test_a_block_longer_than_the_row_holds_one_row(fmt):
    x = torch.randn(16, 64)
    huge, row = F.get(f"{fmt},block=2147483648"), F.get(f"{fmt},block=64")
    p = F.quantize(x, huge)
    assert p.nbytes == F.quantize(x, row).nbytes == F.storage_bytes(huge, x.shape)
    assert torch.equal(F.dequantize(p), roundtrip(x, row))
    assert torch.equal(F.fake_quantize(x, huge), F.fake_quantize(x, row))


def test_formats_command_with_a_huge_block_runs_small():
    r = runner.invoke(app, ["formats", "int4,block=2147483648", "--rows", "16", "--cols", "64"])
    assert r.exit_code == 0, r.output


# ---- clear errors instead of tracebacks ---------------------------------------------------

def test_budget_of_four_hundred_nines(tmp_path):
    r = runner.invoke(app, ["host", NOWHERE, "--budget", "9" * 400])
    one_line_error(r, "memory size", "1 EiB")  # checked before the artifact is opened


@pytest.mark.parametrize("t", ["inf", "nan", "-inf"])
def test_trace_times_must_be_finite(tmp_path, t):
    from elastiq.elastic import read_trace

    trace = tmp_path / "trace.csv"
    trace.write_text(f"0,1MiB\n{t},2MiB\n")
    with pytest.raises(InputError, match="not a finite number of seconds"):
        read_trace(trace)
    r = runner.invoke(app, ["host", NOWHERE, "--trace", str(trace)])
    one_line_error(r, "not a finite number of seconds")


@pytest.mark.parametrize("n", ["-1", "0"])
def test_host_max_new_tokens_must_be_positive(n):
    r = runner.invoke(app, ["host", NOWHERE, "--budget", "1MiB", "--max-new-tokens", n])
    one_line_error(r, "max_new_tokens must be a whole number of at least 1")


@pytest.mark.parametrize("args, word", [(["--context", "1"], "context must be"), (["--max-tokens", "0"], "max_tokens must be")])
def test_eval_window_arguments_are_checked_before_loading(args, word):
    r = runner.invoke(app, ["eval", "no-such-model", *args])
    one_line_error(r, word)


def test_eval_of_a_one_token_text(hf_dir, tmp_path):
    text = tmp_path / "one.txt"
    text.write_text("a")
    r = runner.invoke(app, ["eval", str(hf_dir), "--text", str(text), "--context", "16"])
    one_line_error(r, "too short")


@pytest.mark.parametrize("seed", range(4))
def test_gguf_with_a_damaged_header(tmp_path, monkeypatch, seed):
    pytest.importorskip("gguf")
    monkeypatch.setenv("ELASTIQ_CACHE", str(tmp_path / "cache"))
    import random

    rng = random.Random(seed)
    path = tmp_path / "bad.gguf"
    if seed == 0:  # a truncated header: version 3, counts, then nothing
        body = (3).to_bytes(4, "little") + (5).to_bytes(8, "little") + (7).to_bytes(8, "little")
    else:
        body = bytes(rng.getrandbits(8) for _ in range(rng.choice([16, 200, 4096])))
    path.write_bytes(b"GGUF" + body)
    r = runner.invoke(app, ["eval", str(path)])
    one_line_error(r, str(path))
    assert not list((tmp_path / "cache").glob("models/*")) or all(
        not p.is_dir() for p in (tmp_path / "cache" / "models").iterdir())


def test_config_that_is_not_json(hf_dir):
    (hf_dir / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        elastiq.load(hf_dir)


@pytest.mark.parametrize("change, words", [
    (lambda m: [m], "not an object"),
    (lambda m: {k: v for k, v in m.items() if k != "files"}, "'files'"),
    (lambda m: {**m, "modules": {n: {**e, "format": "mxfp5"} for n, e in m["modules"].items()}}, "unknown format"),
    (lambda m: {**m, "modules": {n: {**e, "dtype": "Tensor"} for n, e in m["modules"].items()}}, "dtype 'Tensor'"),
    (lambda m: {**m, "modules": {n: {**e, "shape": [-1, 4]} for n, e in m["modules"].items()}}, "positive integers"),
    (lambda m: {**m, "files": {**m["files"], "config.json": "x"}}, "malformed"),
])
def test_saved_model_manifest_of_the_wrong_shape(saved, change, words):
    rewrite_manifest(saved, "elastiq.json", change)
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace("[", r"\[")):
        elastiq.load(saved)
    r = runner.invoke(app, ["eval", str(saved)])
    one_line_error(r)


@pytest.mark.parametrize("change, words", [
    (lambda m: [m], "not an object"),
    (lambda m: {k: v for k, v in m.items() if k != "chain"}, "'chain'"),
    (lambda m: {**m, "chain": {**m["chain"], "moves": [10**6]}}, "moves unit"),
    (lambda m: {**m, "chain": {**m["chain"], "moves": m["chain"]["moves"] * 2}}, "past its last base"),
    (lambda m: {**m, "chain": {**m["chain"], "formats": ["int8", "mxfp5"]}}, "unknown format"),
    (lambda m: {**m, "family": {**m["family"], "options": [10**6]}}, "not options of the chain"),
    (lambda m: {**m, "modules": {n: {**e, "dtype": "Tensor"} for n, e in m["modules"].items()}}, "dtype 'Tensor'"),
])
def test_artifact_manifest_of_the_wrong_shape(artifact, change, words):
    from elastiq.elastic import Artifact, ArtifactError

    rewrite_manifest(artifact, "elastic.json", change)
    with pytest.raises(ArtifactError, match=words):
        Artifact(artifact)
    r = runner.invoke(app, ["host", str(artifact), "--budget", "1MiB"])
    one_line_error(r)


def test_formats_rows_zero_and_json_to_a_directory(tmp_path):
    one_line_error(runner.invoke(app, ["formats", "int8", "--rows", "0"]), "--rows")
    one_line_error(runner.invoke(app, ["formats", "int8", "--rows", "4", "--cols", "32", "--json", str(tmp_path)]),
                   "is a directory")


@pytest.mark.parametrize("error", ["safetensors", "oserror"])
def test_a_full_disk_is_one_line_and_leaves_nothing(hf_dir, tmp_path, monkeypatch, error):
    import errno

    import safetensors.torch
    from safetensors import SafetensorError

    def full(*a, **k):
        if error == "safetensors":
            raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", full)
    out = tmp_path / "q"
    r = runner.invoke(app, ["quantize", str(hf_dir), "-f", "int8", "-o", str(out)])
    one_line_error(r, "disk is full")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_compare_with_no_formats(tmp_path):
    plot = tmp_path / "c.png"
    r = runner.invoke(app, ["compare", "no-such-model", "--formats", ",", "--plot", str(plot)])
    one_line_error(r, "no formats")
    assert not plot.exists()


# ---- also: a failed swap during trace replay keeps serving ---------------------------------

def test_trace_replay_keeps_serving_when_a_swap_fails(artifact, tmp_path):
    from elastiq.elastic import Artifact
    from elastiq.elastic.artifact import base_file

    a = Artifact(artifact)
    small = a.option_bytes[a.family.options[-1]]
    f = a._files[base_file(1)]
    _, _, start, n = next(e for k, e in f.entries.items() if k.endswith(".codes"))
    with open(artifact / base_file(1), "r+b") as fh:  # every option below the first needs base 1
        fh.seek(start)
        fh.write(bytes(x ^ 0xFF for x in fh.read(4)))
    trace = tmp_path / "trace.csv"
    trace.write_text(f"0,1MiB\n0.05,{small}\n0.1,1MiB\n")
    r = runner.invoke(app, ["host", str(artifact), "--trace", str(trace), "--speed", "10", "--prompt", "hi",
                            "--max-new-tokens", "3"])
    assert r.exit_code == 0, r.output
    assert "swap failed" in r.output and "(swap failed)" in r.output and "[option 0" in r.output


# ---- also: documented behaviours -----------------------------------------------------------

def test_negative_zero_keeps_its_sign_only_where_the_grid_has_minus_zero():
    x = torch.full((1, 64), 1.0)
    x[0, 0] = -0.0
    x[0, 1] = -1e-9  # rounds to zero
    for fmt in ["int8", "int4", "nf4", "mxint8"]:  # no -0 code: +0
        y = F.fake_quantize(x, fmt)
        assert not torch.signbit(y[0, :2]).any() and (y[0, :2] == 0).all(), fmt
    for fmt in ["mxfp4", "mxfp8_e4m3", "nvfp4"]:  # sign-magnitude floats keep -0
        y = F.fake_quantize(x, fmt)
        assert torch.signbit(y[0, :2]).all() and (y[0, :2] == 0).all(), fmt


def test_fp16_scaled_formats_flush_blocks_below_half_the_smallest_normal():
    """The FP16 block scale is clamped at 2**-14, so a block whose largest |x| is below
    2**-15 (about 3.05e-5) rounds to zeros in the int presets (docs/formats.md)."""
    for fmt in ["int8", "int4", "int8-channel"]:
        assert (F.fake_quantize(torch.full((1, 64), 3.0e-5), fmt) == 0).all(), fmt
        assert (F.fake_quantize(torch.full((1, 64), 3.1e-5), fmt) != 0).all(), fmt
    assert (F.fake_quantize(torch.full((1, 64), 2.0e-6), "nf4") == 0).all()
    assert (F.fake_quantize(torch.full((1, 64), 3.0e-6), "nf4") != 0).all()


def test_importing_elastiq_keeps_library_warnings_off_stderr():
    """transformers imports torchao when it is installed: its CUDA-library warnings and
    torch's pytree deprecations (about torchao's enums) used to open every command."""
    pytest.importorskip("torchao")
    r = subprocess.run([sys.executable, "-c", "import elastiq, torchao, transformers"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
