"""Calibrated quantization: GPTQ and scale search on every format's own cast, Hessians from
the model's forward, the stream and in-memory routes, the API, the command line, the manifest."""
import copy
import json

import pytest
import torch

import elastiq
from elastiq import formats as F
from elastiq.calib import Hessians, calibration_windows, quantize_in_memory, quantize_stream
from elastiq.formats.grids import value_table
from elastiq.options import CalibOptions
from elastiq.quant import QuantLinear
from elastiq.quant.gptq import gptq, rtn_cast, search_scales

from conftest import make_tiny_llama

TEXT = ("The ferry waited at the landing while the river rose; by noon the fields were under water "
        "and the village sent boats for the cattle. ") * 6


def _layer(out=24, inp=200, tokens=400, seed=0):
    """A weight, and correlated inputs (so GPTQ has something to work with)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    x = torch.randn(tokens, inp, generator=g) @ (torch.randn(inp, inp, generator=g) * 0.3 + torch.eye(inp))
    return w, x


def _same_bytes(a: F.Packed, b: F.Packed) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("codes", "scales", "selectors"))


@pytest.mark.parametrize("fmt", F.names())
def test_rtn_through_the_split_cast_is_the_formats_own_quantize(fmt):
    w, _ = _layer()  # 200 input columns: a ragged last block for every block size but 8 and 40
    packed, values = rtn_cast(w, fmt)
    assert _same_bytes(packed, F.quantize(w, fmt))
    assert torch.equal(values, F.dequantize(packed))


@pytest.mark.parametrize("fmt", ["int4", "int3", "nf4", "mxfp4", "nvfp4", "nxfp4", "int8-channel", "mxfp4_am"])
def test_independent_inputs_make_gptq_round_to_nearest(fmt):
    w, _ = _layer()
    h = torch.diag(torch.rand(200, generator=torch.Generator().manual_seed(1)) + 0.5)  # no correlation between inputs
    for act_order in (False, True):
        packed, _ = gptq(w, h, fmt, act_order=act_order)
        assert _same_bytes(packed, F.quantize(w, fmt))


@pytest.mark.parametrize("fmt", ["int4", "int3", "int2", "nxfp4", "nvfp4", "nf4"])
def test_gptq_output_error_is_at_most_round_to_nearest(fmt):
    w, x = _layer()
    err = lambda v: ((x @ (v - w).T) ** 2).sum().item()  # noqa: E731
    rtn = err(F.fake_quantize(w, fmt))
    gq = err(gptq(w, x.T @ x, fmt)[1])
    assert gq <= rtn
    assert gq < 0.8 * rtn  # correlated inputs: a real gain, not a tie


def _on_grid(packed: F.Packed) -> bool:
    """Every stored value is its block's scale times a level of the block's grid."""
    fmt, geo = packed.fmt, F.Geometry(packed.shape, packed.fmt)
    deq = F.scale_values(F.unpack_bits(packed.scales, fmt.scale.bits, geo.blocks), fmt, packed.tensor_scale)
    sel = (F.unpack_bits(packed.selectors, fmt.selector_bits, geo.blocks).long() if fmt.selector_bits
           else torch.zeros(geo.blocks, dtype=torch.long))
    vals = F.dequantize(packed).reshape(geo.rows, geo.row)
    for r in range(geo.rows):
        for b in range(geo.per_row):
            blk = r * geo.per_row + b
            levels = value_table(fmt.grids[int(sel[blk])], "cpu") * deq[blk]
            if not torch.isin(vals[r, b * geo.block:(b + 1) * geo.block], levels).all():
                return False
    return True


@pytest.mark.parametrize("fmt", F.names())
def test_every_format_round_trips_through_gptq_onto_its_own_grid(fmt):
    w, x = _layer(out=8)
    for kw in ({}, {"act_order": True}, {"search": True}):
        packed, values = gptq(w, x.T @ x, fmt, **kw)
        packed.validate()
        assert torch.equal(F.dequantize(packed), values), kw  # the stored codes decode to what GPTQ chose
        assert _on_grid(packed), kw


def test_scale_search_lowers_the_weighted_error_and_serves_gptq():
    w, x = _layer()
    h = x.T @ x
    imp = h.diagonal()
    werr = lambda v: (((v - w) ** 2) * imp).sum().item()  # noqa: E731
    _, searched = rtn_cast(w, "int3", search_scales(w, "int3", imp))
    assert werr(searched) < werr(F.fake_quantize(w, "int3"))
    packed, _ = gptq(w, h, "int3", search=True)
    assert _on_grid(packed)


def test_hessians_are_shared_by_layers_fed_the_same_input_and_sum_x_xt():
    model = make_tiny_llama()
    attn = model.model.layers[0].self_attn
    mods = {"q": attn.q_proj, "k": attn.k_proj, "o": attn.o_proj}
    ids = torch.arange(40)[None]
    seen = {}
    hook = attn.q_proj.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0].reshape(-1, 64)))
    with torch.no_grad(), Hessians(mods) as hs:
        model(ids)
    hook.remove()
    assert hs.owner["k"] == "q" and hs.owner["o"] == "o"
    assert hs["k"] is hs["q"] and hs.tokens["q"] == 40
    torch.testing.assert_close(hs["q"], seen["x"].T @ seen["x"])


def test_each_sequences_first_token_counts_sink_weight_times():
    model = make_tiny_llama()
    attn = model.model.layers[0].self_attn
    ids = torch.arange(60).reshape(3, 20)  # three windows of 20 tokens
    seen = {}
    hook = attn.q_proj.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0].detach().clone()))
    with torch.no_grad(), Hessians({"q": attn.q_proj}, sink_weight=9.0) as hs:
        model(ids)
    hook.remove()
    x = seen["x"].double()
    weight = torch.ones(3, 20, dtype=torch.float64)
    weight[:, 0] = 9.0
    expected = torch.einsum("bti,bt,btj->ij", x, weight, x)
    torch.testing.assert_close(hs["q"].double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert hs.tokens["q"] == 60
    with pytest.raises(ValueError, match="sink_weight"):
        CalibOptions(sink_weight=0.5)


def _codes(model):
    return {n: m.packed() for n, m in model.named_modules() if isinstance(m, QuantLinear)}


@pytest.mark.parametrize("method", ["gptq", "gptq+search"])
def test_calibration_from_a_stream_equals_the_whole_model_in_memory(method, tmp_path, byte_tokenizer):
    fp = make_tiny_llama(3)
    fp.save_pretrained(tmp_path / "fp")
    o = CalibOptions(method=method, tokens=400, context=40, sequential=False)  # in memory, every Hessian is the float model's
    mem = copy.deepcopy(fp)
    quantize_in_memory(mem, "int3", byte_tokenizer, TEXT, o, progress=False)
    streamed, report = quantize_stream(tmp_path / "fp", "int3", byte_tokenizer, TEXT, o, progress=False)
    a, b = _codes(mem), _codes(streamed)
    assert set(a) == set(b) == set(report.quantized) and len(a) == 14
    for name in a:
        agree = (F.dequantize(a[name]) == F.dequantize(b[name])).float().mean()
        assert agree > 0.999, name  # the same Hessians up to summation order: only exact ties may flip
    rtn = copy.deepcopy(fp)
    elastiq.quantize(rtn, "int3")
    assert any(not torch.equal(a[n].codes, p.codes) for n, p in _codes(rtn).items())  # calibration changed something


def test_sequential_packs_each_input_group_from_the_packed_layers_before_it(tmp_path, byte_tokenizer):
    fp = make_tiny_llama(2)
    fp.save_pretrained(tmp_path / "fp")
    runs = {seq: _codes(quantize_stream(tmp_path / "fp", "int3", byte_tokenizer, TEXT,
                                        CalibOptions(tokens=400, context=40, sequential=seq), progress=False)[0])
            for seq in (False, True)}
    same = {n for n in runs[True] if torch.equal(runs[True][n].codes, runs[False][n].codes)}
    first = {f"model.layers.0.self_attn.{p}_proj" for p in "qkv"}  # the first group reads the float embedding either way
    assert first <= same
    assert "model.layers.0.self_attn.o_proj" not in same  # its input came through the packed q, k and v
    assert not any(n.startswith("model.layers.1.") for n in same)  # the whole second layer reads the packed first


def test_a_plan_that_skips_a_decoder_layer_streams_through_it(tmp_path, byte_tokenizer):
    fp = make_tiny_llama(2)
    fp.save_pretrained(tmp_path / "fp")
    plan = {"model.layers.0.*": None, "*": "int4"}
    model, report = quantize_stream(tmp_path / "fp", plan, byte_tokenizer, TEXT, CalibOptions(tokens=400, context=40),
                                    progress=False)
    packed = set(_codes(model))
    assert packed and all(n.startswith("model.layers.1.") for n in packed) and len(packed) == 7
    torch.testing.assert_close(model.model.layers[0].self_attn.q_proj.weight, fp.model.layers[0].self_attn.q_proj.weight)


def test_api_calibrates_and_the_manifest_records_it(tmp_path, byte_tokenizer):
    model = make_tiny_llama(2)
    ids = byte_tokenizer(TEXT * 3)["input_ids"][:600]
    name = "model.layers.0.mlp.down_proj"
    seen = []
    hook = model.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        for a in range(0, 600, 60):
            model(torch.tensor(ids[a:a + 60])[None])
    hook.remove()
    x, w = torch.cat(seen), model.get_submodule(name).weight.detach()
    rtn = elastiq.quantize(copy.deepcopy(model), "int3")
    cal = elastiq.quantize(copy.deepcopy(model), "int3", method="gptq", tokenizer=byte_tokenizer, calib_text=TEXT * 3,
                           calibration=CalibOptions(tokens=600, context=60), progress=False)
    err = lambda m: ((x @ (m.get_submodule(name).weight() - w).T) ** 2).sum().item()  # noqa: E731
    assert err(cal) < err(rtn)  # on the calibration inputs, the layer's output error falls
    x = torch.tensor(ids[:60])[None]
    elastiq.save(cal, tmp_path / "m", tokenizer=byte_tokenizer)
    rec = json.loads((tmp_path / "m" / "elastiq.json").read_text())["calibration"]
    seen_tokens = sum(len(w) for w in calibration_windows(byte_tokenizer, TEXT * 3, 600, 60))
    assert rec["method"] == "gptq" and rec["tokens"] == seen_tokens and rec["context"] == 60 and rec["text"] is None
    assert rec["sequential"] is True and rec["sink_weight"] == CalibOptions().sink_weight
    loaded, _ = elastiq.load(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, cal(x).logits)
    with pytest.raises(ValueError, match="tokenizer"):
        elastiq.quantize(copy.deepcopy(model), "int3", method="gptq")
    with pytest.raises(ValueError, match="method"):
        elastiq.quantize(copy.deepcopy(model), "int3", method="best")


def test_lrec_set_up_can_start_from_a_calibrated_base(tmp_path, byte_tokenizer):
    from elastiq.lrec.stream import in_memory_setup, stream_setup

    fp = make_tiny_llama(5)
    fp.save_pretrained(tmp_path / "fp")
    kw = dict(rank=4, context=40, calib_tokens=400, top_k=8, progress=False, method="gptq")
    q_str, _ = stream_setup(tmp_path / "fp", "int3", byte_tokenizer, TEXT, **kw)
    q_mem, _ = in_memory_setup(fp, "int3", byte_tokenizer, TEXT, **kw)
    name = "model.layers.1.mlp.down_proj"
    a, b = q_str.get_submodule(name).base.packed(), q_mem.get_submodule(name).base.packed()
    assert (F.dequantize(a) == F.dequantize(b)).float().mean() > 0.999
    assert not torch.equal(a.codes, F.quantize(fp.get_submodule(name).weight, "int3").codes)
    assert q_str.elastiq_calibration["method"] == "gptq"


def test_command_line_quantize_with_gptq(tmp_path, model_dir):
    from typer.testing import CliRunner

    from elastiq.cli import app

    d, text = model_dir
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["quantize", str(d), "-f", "int4", "-o", str(out), "--method", "gptq",
                                 "--calib", str(text), "--calib-tokens", "300", "--context", "30"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "elastiq.json").read_text())["calibration"]
    assert rec["method"] == "gptq" and rec["text"] == str(text) and rec["tokens"] >= 300
    for bad, why in ((["--method", "best"], "method"), (["--method", "gptq", "--calib", "wiki-eval"], "evaluation text"),
                     (["--method", "gptq", "--act-format", "int8"], "act-format")):
        r = CliRunner().invoke(app, ["quantize", str(d), "-f", "int4", "-o", str(tmp_path / "x"), *bad])
        assert r.exit_code == 2 and why in r.output and "Traceback" not in r.output, r.output
        assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(app, ["quantize", str(out), "-f", "int4", "-o", str(tmp_path / "y"), "--method", "gptq",
                                 "--calib", str(text)])
    assert r.exit_code == 2 and "already packed" in r.output


def test_dead_inputs_and_bad_hessians():
    w, x = _layer(out=4, inp=64)
    x[:, 5] = 0  # an input never seen
    packed, values = gptq(w, x.T @ x, "int4")
    assert (values[:, 5] == 0).all() and _on_grid(packed)
    with pytest.raises(ValueError, match="Hessian"):
        gptq(w, torch.eye(10), "int4")
    with pytest.raises(ValueError, match="axis"):
        gptq(w, x.T @ x, "int4,axis=0")


def test_an_elastic_build_can_calibrate_its_bases(tmp_path, byte_tokenizer):
    from elastiq.elastic import Artifact, build

    fp = make_tiny_llama(1)
    kw = dict(formats=["int8", "int3"], calib_text=TEXT * 8, calib_tokens=64, context=32, measure=2, progress=False)
    a = Artifact(build(copy.deepcopy(fp), byte_tokenizer, tmp_path / "g.elastic", method="gptq", **kw))
    assert a.manifest["info"]["method"] == "gptq"
    u = next(i for i, unit in enumerate(a.units) if unit.name.endswith("mlp.down_proj") or "down_proj" in unit.modules[0])
    name = a.units[u].modules[0]
    packed = a.load_copy(u, 1)[name].packed()
    rtn = F.quantize(fp.get_submodule(name).weight, "int3")
    assert packed.fmt.name == "int3" and not torch.equal(packed.codes, rtn.codes) and _on_grid(packed)
