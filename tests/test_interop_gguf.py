"""GGUF export (elastiq.interop) on tiny models from a config: gguf-py's own dequantization
of every exported tensor against elastiq's, elastiq.load of the file against the model,
refusals, fallbacks, elastic options and the command."""
import ast
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import elastiq
from elastiq import formats as F
from elastiq.cli import app
from elastiq.errors import InputError
from elastiq.evaluate import kl_divergence
from elastiq.interop import export_gguf, export_model
from elastiq.interop.gguf_export import name_map, qk_row_order
from elastiq.quant.linear import PackedWeight

from conftest import make_tiny_llama

TEXT = "The quick brown fox jumps over the lazy dog, and then the dog sleeps in the sun. " * 12
IDS = torch.tensor([[5, 17, 99, 3, 200, 41, 7, 63, 128, 255]])


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, but for the sign of zero: E2M1's -0 code decodes to -0.0 in elastiq and
    to 0 in GGUF's MXFP4 (whose table holds integers)."""
    zero = (a == 0) & (b == 0)
    return torch.equal(torch.where(zero, 0, a.view(torch.int32)), torch.where(zero, 0, b.view(torch.int32)))


def packed_model(fmt, embedding=None, seed=0, tie=True):
    return elastiq.quantize(make_tiny_llama(seed, tie=tie), fmt, progress=False, embedding=embedding)


def read_back(path, model) -> dict[str, tuple[str, torch.Tensor]]:
    """{HF name: (GGUF type, values gguf-py dequantizes, in HF row order)} of an exported file."""
    to_hf = {g: hf for hf, g in name_map(model.config).items()}
    out = {}
    for t in gguf.GGUFReader(path).tensors:
        values = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        values = values.reshape(tuple(reversed([int(d) for d in t.shape])))
        order = qk_row_order(model.config, t.name, values.shape[0])
        if order is not None:
            values = values[np.argsort(order)]  # back to the HF rows
        out[to_hf[t.name]] = (t.tensor_type.name, values)
    return out


@pytest.mark.parametrize("fmt, embedding, want", [
    ("int4", "int8", {"Q4_0", "Q8_0"}),
    ("int5", "same", {"Q5_0"}),
    ("int8", None, {"Q8_0", "F32"}),
    ("mxfp4", "same", {"MXFP4"}),
    ("int4-g64", "mxfp4", {"Q4_0", "MXFP4"}),
    ("int3", "int6", {"Q4_0", "Q8_0"}),  # narrower integers sit exactly in the next GGUF type up
    ("mxint8", "same", {"Q8_0"}),  # int8 x 2^-6 under a power-of-two scale: a float16 multiplier
])
def test_gguf_dequantizes_every_exported_tensor_to_elastiqs_values_bit_for_bit(tmp_path, byte_tokenizer, fmt,
                                                                                embedding, want):
    model = packed_model(fmt, embedding)
    report = export_model(model, byte_tokenizer, tmp_path / "m.gguf")
    assert not report["changed"] and report["kl"] is None
    got = read_back(tmp_path / "m.gguf", model)
    packed = {n: m for n, m in model.named_modules() if isinstance(m, PackedWeight)}
    assert {kind for kind, _ in got.values() if kind != "F32"} == want - {"F32"}
    for name, (kind, values) in got.items():
        module = name.removesuffix(".weight")
        expect = F.dequantize(packed[module].packed(), torch.float32) if module in packed else model.state_dict()[name]
        assert values.shape == expect.shape, name
        assert bit_equal(values, expect.float()), (name, kind)
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}  # tied head


def test_export_then_load_gives_back_the_same_weights_and_logits(tmp_path, byte_tokenizer, monkeypatch):
    monkeypatch.setenv("ELASTIQ_CACHE", str(tmp_path / "cache"))
    model = packed_model("int4", "int8", tie=False)  # an untied head: written as output.weight
    model.lm_head = elastiq.quantize(make_tiny_llama(0, tie=False), "int5", progress=False).lm_head
    export_model(model, byte_tokenizer, tmp_path / "m.gguf")
    assert "output.weight" in {t.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    loaded, tok = elastiq.load(tmp_path / "m.gguf")
    state = loaded.state_dict()
    for name, m in model.named_modules():
        if isinstance(m, PackedWeight):
            assert torch.equal(state[f"{name}.weight"], F.dequantize(m.packed(), torch.float32)), name
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, model(IDS).logits)
    assert tok("a tree").input_ids == byte_tokenizer("a tree").input_ids
    meta = gguf.GGUFReader(tmp_path / "m.gguf").fields
    assert meta["general.architecture"].contents() == "llama"
    assert meta["llama.attention.head_count_kv"].contents() == 2
    assert meta["tokenizer.ggml.model"].contents() == "gpt2"


def test_a_format_without_a_gguf_type_is_refused_by_name_and_nothing_is_written(tmp_path, byte_tokenizer):
    model = packed_model("nxfp4")
    with pytest.raises(InputError, match="nxfp4.*--fallback"):
        export_model(model, byte_tokenizer, tmp_path / "m.gguf")
    odd = packed_model("elem=int4,block=16,scale=fp16,round=even")  # groups of 16: finer than a GGUF block
    with pytest.raises(InputError, match="multiples of 32"):
        export_model(odd, byte_tokenizer, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fallback, kind", [("q8_0", "Q8_0"), ("f16", "F16")])
def test_a_fallback_converts_and_reports_the_changed_tensors_and_their_kl(tmp_path, byte_tokenizer, fallback, kind):
    model = packed_model("int8", None)
    model.model.layers[0].mlp.down_proj = packed_model("nxfp4").model.layers[0].mlp.down_proj
    report = export_model(model, byte_tokenizer, tmp_path / "m.gguf", fallback=fallback, kl_text=TEXT, kl_tokens=256)
    assert [(c["tensor"], c["format"], c["type"]) for c in report["changed"]] == [("blk.0.ffn_down.weight", "nxfp4", kind)]
    got = read_back(tmp_path / "m.gguf", model)
    exported = packed_model("int8", None)  # the same KL, measured on a model built from what the file holds
    layer = torch.nn.Linear(160, 64, bias=False)
    layer.weight.data = got["model.layers.0.mlp.down_proj.weight"][1]
    exported.model.layers[0].mlp.down_proj = layer
    kl = kl_divergence(exported, model, byte_tokenizer, TEXT, max_tokens=256, context=256, progress=False)
    assert report["tokens"] > 200 and report["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-12)
    if fallback == "q8_0":  # float16 keeps nxfp4's values to 11 bits: a KL at rounding level
        assert report["kl"] > 1e-9
    assert got["model.layers.0.mlp.down_proj.weight"][0] == kind
    assert got["model.layers.0.mlp.up_proj.weight"][0] == "Q8_0"  # the rest stays exact


def test_an_elastic_option_exports_as_one_mixed_gguf(tmp_path, byte_tokenizer):
    from elastiq.elastic import ElasticModel, build

    art = build(make_tiny_llama(), byte_tokenizer, tmp_path / "a.elastic", formats=["int8", "int4"], calib_text=TEXT,
                calib_tokens=64, context=32, measure=2, progress=False)
    host = ElasticModel(art)
    option = host.options[len(host.options) // 2]
    report = export_gguf(art, tmp_path / "o.gguf", option=option)
    assert report["option"] == option and set(report["types"]) >= {"Q8_0", "Q4_0"}
    host.swap(option)
    got = read_back(tmp_path / "o.gguf", host.model)
    for name, m in host.model.named_modules():
        if isinstance(m, PackedWeight) and f"{name}.weight" in got:
            kind, values = got[f"{name}.weight"]
            assert kind == {"int8": "Q8_0", "int4": "Q4_0"}[m.fmt.name]
            assert bit_equal(values, F.dequantize(m.packed(), torch.float32))
    with pytest.raises(InputError, match="not one"):
        export_gguf(str(tmp_path / "o.gguf"), tmp_path / "x.gguf", option=1)


def test_the_command_writes_the_file_and_refuses_in_one_line(tmp_path, byte_tokenizer):
    runner = CliRunner()
    saved = elastiq.save(packed_model("int4", "same"), tmp_path / "m", tokenizer=byte_tokenizer)
    r = runner.invoke(app, ["export", "gguf", str(saved), "--out", str(tmp_path / "m.gguf"), "--tokenizer-pre", "smollm"])
    assert r.exit_code == 0, r.output
    assert "Q4_0" in r.output and (tmp_path / "m.gguf").is_file()
    assert gguf.GGUFReader(tmp_path / "m.gguf").fields["tokenizer.ggml.pre"].contents() == "smollm"
    r = runner.invoke(app, ["export", "gguf", str(saved), "--out", str(tmp_path / "m.gguf")])
    assert r.exit_code == 2 and "already exists" in r.output
    nx = elastiq.save(packed_model("nxfp4"), tmp_path / "nx", tokenizer=byte_tokenizer)
    r = runner.invoke(app, ["export", "gguf", str(nx), "--out", str(tmp_path / "nx.gguf")])
    assert r.exit_code == 2 and "nxfp4" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["export", "gguf", str(nx), "--out", str(tmp_path / "nx.gguf"), "--fallback", "q4_k"])
    assert r.exit_code == 2 and "q8_0 or f16" in r.output
    assert not (tmp_path / "nx.gguf").exists()


def test_other_architectures_are_refused_by_name(byte_tokenizer, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_embd=32, n_layer=1, n_head=2, n_positions=64))
    with pytest.raises(InputError, match="'gpt2'"):
        export_model(model, byte_tokenizer, tmp_path / "g.gguf")


def test_only_the_command_line_imports_interop():
    root = Path(__file__).resolve().parents[1] / "elastiq"
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] in ("cli", "interop"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any("interop" in n for n in names), rel
