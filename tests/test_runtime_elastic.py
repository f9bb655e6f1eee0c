"""Elastic hosting on the native runtime against the torch host, on a tiny Llama's artifact."""
import json
import shutil

import numpy as np
import pytest
import torch

from elastiq.elastic import ElasticModel, NativeElasticModel, add_low_rank_option, build, open_host
from elastiq.runtime import NativeError

from conftest import make_tiny_llama

TEXT = "The quick brown fox jumps over the lazy dog, and then the dog sleeps in the sun. " * 12
IDS = [5, 17, 99, 3, 200, 41, 7, 63, 12, 150]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, byte_tokenizer):
    out = tmp_path_factory.mktemp("elastic") / "tiny.elastic"
    build(make_tiny_llama(), byte_tokenizer, out, calib_text=TEXT, calib_tokens=128, context=64, measure=3,
          progress=False, source="tiny")
    A = torch.randn(4, 64) * 0.05
    B = torch.randn(64, 4) * 0.05
    add_low_rank_option(out, 20, {"model.layers.0.self_attn.q_proj": (A, B, 2.0)}, "lr", kl=0.0)
    return out


@pytest.fixture(scope="module")
def hosts(artifact):
    return NativeElasticModel(artifact), ElasticModel(artifact)


def torch_logits(host):
    with torch.no_grad():
        return host.model(torch.tensor([IDS])).logits[0].double().numpy()


def test_every_kind_of_option_matches_the_torch_host(hosts):
    native, ref = hosts
    extra = next(iter(native.extra_ids))
    for k in [native.options[0], native.options[len(native.options) // 2], native.options[-1], extra]:
        native.swap(k)
        ref.swap(k)
        native.model.reset()
        got = native.forward(IDS, all_logits=True)
        want = torch_logits(ref)
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
        assert native.held_bytes == ref.held_bytes


def test_a_swap_mid_generation_continues_from_the_same_cache(hosts):
    """Swapping inside the token callback (between two steps) gives the tokens of the same
    swap made by hand between two forward passes."""
    native, _ = hosts
    big, small = native.options[0], native.options[-1]
    native.swap(big)
    prompt = native.tokenizer.prompt_ids("The dog", chat=False)

    def swap_after_three(text, calls=[]):
        calls.append(text)
        if len(calls) == 3:
            native.swap(small)

    g = native.generate("The dog", max_new_tokens=8, chat=False, on_token=swap_after_three)
    assert g.options == [big] * 3 + [small] * 5
    native.swap(big)
    native.model.reset()
    logits = native.forward(prompt)
    toks = []
    for i in range(8):
        toks.append(int(np.argmax(logits)))
        if i == 2:
            native.swap(small)
        logits = native.forward([toks[-1]])
    assert g.tokens == toks


def test_open_host_picks_the_engine(artifact, tmp_path):
    assert isinstance(open_host(artifact), NativeElasticModel)
    assert isinstance(open_host(artifact, "torch"), ElasticModel)
    old = tmp_path / "old.elastic"
    shutil.copytree(artifact, old)
    m = json.loads((old / "elastic.json").read_text())
    for f in ("native.json", "native.safetensors"):
        (old / f).unlink()
        del m["files"][f]
    (old / "elastic.json").write_text(json.dumps(m))
    said = []
    assert isinstance(open_host(old, warn=said.append), ElasticModel)
    assert len(said) == 1 and "torch path" in said[0]
    with pytest.raises(NativeError, match="save or build it again"):
        open_host(old, "native")


def test_a_corrupted_copy_is_refused_and_the_option_kept(artifact, tmp_path):
    bad = tmp_path / "bad.elastic"
    shutil.copytree(artifact, bad)
    host = NativeElasticModel(bad)
    host.swap(host.options[0])
    f = bad / "base3.safetensors"
    b = bytearray(f.read_bytes())
    b[-10] ^= 0xFF
    f.write_bytes(bytes(b))
    with pytest.raises(NativeError, match="checksum"):
        host.swap(host.options[-1])
    assert host.option == host.options[0]
    host.model.reset()
    host.forward(IDS)  # still serving


def test_a_copy_corrupted_after_its_first_read_is_refused_on_the_next(artifact, tmp_path):
    bad = tmp_path / "later.elastic"
    shutil.copytree(artifact, bad)
    host = NativeElasticModel(bad)
    host.swap(host.options[-1])  # reads (and checks) the int3 copies
    host.swap(host.options[0])
    with open(bad / "base3.safetensors", "r+b") as f:  # in place: same inode, new mtime
        f.seek(-10, 2)
        byte = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(NativeError, match="checksum"):
        host.swap(host.options[-1])
    assert host.option == host.options[0]


def test_a_manifest_naming_files_outside_is_refused(artifact, tmp_path):
    bad = tmp_path / "evil.elastic"
    shutil.copytree(artifact, bad)
    m = json.loads((bad / "elastic.json").read_text())
    m["tensors"]["../../outside.safetensors"] = m["tensors"].pop("base0.safetensors")
    (bad / "elastic.json").write_text(json.dumps(m))
    with pytest.raises(NativeError, match="not a plain file name"):
        NativeElasticModel(bad)


def test_the_host_command_runs_without_torch(artifact):
    import subprocess
    import sys

    code = ("import sys; from elastiq.cli import app; "
            f"sys.argv = ['elastiq', 'host', {str(artifact)!r}, '--budget', '1GiB', '--prompt', 'hi', "
            "'--max-new-tokens', '4', '--engine', 'native']\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "-> option" in r.stdout
