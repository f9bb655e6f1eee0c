"""Elastic artifacts and hosting, end to end on a tiny Llama (independent checks: each
hosted option against the same model packed directly, bytes against weight_bytes)."""
import threading

import numpy as np
import pytest
import torch

import elastiq
from elastiq.elastic import Artifact, ArtifactError, BudgetError, ElasticModel, build, prune_artifact
from elastiq.elastic.artifact import base_file
from elastiq.quant import weight_bytes

from conftest import make_tiny_llama

TEXT = "The quick brown fox jumps over the lazy dog, and then the dog sleeps in the sun. " * 12


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, byte_tokenizer):
    out = tmp_path_factory.mktemp("elastic") / "tiny.elastic"
    build(make_tiny_llama(), byte_tokenizer, out, calib_text=TEXT, calib_tokens=128, context=64, measure=3,
          progress=False, source="tiny")
    return out


@pytest.fixture(scope="module")
def hosted(artifact):
    return ElasticModel(artifact)


IDS = torch.tensor([[5, 17, 99, 3, 200, 41, 7, 63]])


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def test_the_artifact_holds_the_whole_chain(artifact):
    a = Artifact(artifact)
    a.verify()
    assert [u.kind for u in a.units] == ["embedding"] + ["linear"] * 14
    assert a.units[0].tied == ("lm_head",)
    assert a.chain.formats == ["int8", "int6", "nxfp4", "int3"]
    assert len(a.family.options) == a.chain.n_options == 15 * 3 + 1
    assert (np.diff(a.option_bytes) < 0).all()
    q = a.manifest["quality"]
    assert len(q["bases"]) == 4 and q["bases"][0] < q["bases"][-1]  # int8 is closer to float than int3
    assert set(map(int, q["measured"])) >= {0, a.chain.n_options - 1}
    assert a.storage_bytes() > a.family.storage_bytes  # tensors plus headers, config, tokenizer, manifest


@pytest.mark.parametrize("which, fmt", [(0, "int8"), (-1, "int3")])
def test_the_extreme_options_are_the_base_models(hosted, which, fmt):
    """Option 0 is the model packed in the first base, the last option the model packed in the last."""
    hosted.swap(hosted.options[which])
    direct = elastiq.quantize(make_tiny_llama(), fmt, embedding="same", progress=False)
    assert torch.equal(logits(hosted.model), logits(direct))
    assert weight_bytes(hosted.model) == weight_bytes(direct) == hosted.sizes[hosted.options[which]]


def test_every_option_weighs_what_the_chain_says(hosted):
    for k in hosted.options[::7]:
        hosted.swap(k)
        assert weight_bytes(hosted.model) == hosted.sizes[k]


def test_a_neighbour_swap_replaces_only_the_unit_that_differs(hosted):
    k = hosted.options[10]
    hosted.swap(k)
    before = {n: m for n, m in hosted.model.named_modules()}
    tr = hosted.swap(k + 1)
    moved = hosted.artifact.units[hosted.artifact.chain.moves[k]]
    assert tr.units_changed == 1
    after = dict(hosted.model.named_modules())
    changed = {n for n in after if after[n] is not before.get(n)}
    assert changed == set(moved.modules + moved.tied)
    assert hosted.swap(k + 1) is not None and hosted.apply_budget(int(hosted.sizes[k + 1])) is None  # already there


def test_budgets_pick_the_largest_option_that_fits(hosted):
    sizes = hosted.sizes
    k = hosted.options[20]
    hosted.apply_budget(int(sizes[k]) + 1)
    assert hosted.option == k and sizes[k - 1] > sizes[k] + 1
    hosted.apply_budget(10**12)
    assert hosted.option == hosted.options[0]
    with pytest.raises(BudgetError, match="below the smallest option"):
        hosted.apply_budget(int(sizes[hosted.options[-1]]) - 1)
    assert hosted.option == hosted.options[0]  # a refused budget changes nothing
    with pytest.raises(ValueError, match="not in this artifact's family"):
        hosted.swap(10**6)


def test_forwards_during_swaps_always_see_one_whole_option(hosted):
    a, b = hosted.options[3], hosted.options[-3]
    expect = {}
    for k in (a, b):
        hosted.swap(k)
        expect[k] = logits(hosted.model)
    assert not torch.equal(expect[a], expect[b])
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            hosted.swap(a)
            hosted.swap(b)

    t = threading.Thread(target=swapper)
    t.start()
    try:
        seen = []
        for _ in range(30):
            out = logits(hosted.model)
            match = [k for k, v in expect.items() if torch.equal(out, v)]
            assert len(match) == 1, "a forward pass ran on a half-swapped model"
            seen.append(match[0])
    finally:
        stop.set()
        t.join()
    assert len(set(seen)) == 2  # the swaps really happened while forwards ran


def test_generate_streams_text_and_needs_an_option(artifact):
    h = ElasticModel(artifact)
    with pytest.raises(RuntimeError, match="no option is loaded"):
        logits(h.model)
    h.swap(h.options[0])
    seen = []
    text = h.generate("hello", max_new_tokens=4, chat=False, on_token=seen.append)
    assert len(seen) == 4 and seen[-1] == text


def test_a_corrupted_copy_is_refused_and_the_model_stays_whole(artifact, tmp_path):
    import shutil

    bad = tmp_path / "bad.elastic"
    shutil.copytree(artifact, bad)
    a = Artifact(bad)
    file = base_file(3)
    key = "model.layers.1.mlp.down_proj.codes"
    _, _, start, nbytes = a._files[file].entries[key]
    with open(bad / file, "r+b") as f:  # flip one byte inside that tensor
        f.seek(start + nbytes // 2)
        byte = f.read(1)
        f.seek(start + nbytes // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    h = ElasticModel(bad)
    h.swap(h.options[0])
    before = logits(h.model)
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        h.swap(h.options[-1])
    assert h.option == h.options[0] and torch.equal(logits(h.model), before)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated or replaced"),
    ("manifest", "corrupted"),
    ("config", "checksum"),
    ("missing", "missing"),
    ("header", "not a readable safetensors file"),
])
def test_damaged_artifacts_are_refused_clearly(artifact, tmp_path, damage, message):
    import shutil

    bad = tmp_path / "bad.elastic"
    shutil.copytree(artifact, bad)
    if damage == "truncate":
        p = bad / base_file(0)
        p.write_bytes(p.read_bytes()[:-10])
    elif damage == "manifest":
        (bad / "elastic.json").write_text("{not json")
    elif damage == "config":
        (bad / "config.json").write_text((bad / "config.json").read_text().replace("64", "65", 1))
    elif damage == "missing":
        (bad / base_file(2)).unlink()
    else:
        p = bad / base_file(1)
        data = bytearray(p.read_bytes())
        data[8:12] = b"\xff\xfe\x00\x01"
        p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=message):
        ElasticModel(bad)


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not a directory"):
        Artifact(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="not an elastic artifact"):
        Artifact(tmp_path)


def test_a_failed_build_leaves_nothing_behind(tmp_path, byte_tokenizer, monkeypatch):
    from elastiq.elastic import artifact as art

    calls = {"n": 0}
    real = art.tensor_sha256

    def failing(t):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk full (simulated)")
        return real(t)

    monkeypatch.setattr(art, "tensor_sha256", failing)
    out = tmp_path / "x.elastic"
    with pytest.raises(OSError, match="disk full"):
        build(make_tiny_llama(), byte_tokenizer, out, calib_text=TEXT, calib_tokens=64, context=32, measure=2,
              progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_build_requests_are_refused(tmp_path, byte_tokenizer):
    m = make_tiny_llama()
    with pytest.raises(ValueError, match="at least two base formats"):
        build(m, byte_tokenizer, tmp_path / "a", formats=["int8"], calib_text=TEXT)
    with pytest.raises(ValueError, match="unknown format"):
        build(m, byte_tokenizer, tmp_path / "a", formats=["int8", "int7"], calib_text=TEXT)
    with pytest.raises(ValueError, match="must shrink every unit"):
        build(m, byte_tokenizer, tmp_path / "a", formats=["int3", "int8"], calib_text=TEXT, calib_tokens=64, context=32,
              progress=False)
    with pytest.raises(ValueError, match="unit must be one of"):
        build(m, byte_tokenizer, tmp_path / "a", unit="block", calib_text=TEXT)
    with pytest.raises(ValueError, match="calibration text has"):
        build(m, byte_tokenizer, tmp_path / "a", calib_text="too short", calib_tokens=64, context=32)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        build(m, byte_tokenizer, tmp_path / "exists", calib_text=TEXT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


def test_layer_units_group_a_decoder_layer(tmp_path, byte_tokenizer):
    out = build(make_tiny_llama(), byte_tokenizer, tmp_path / "layers.elastic", formats=["int8", "int4"], unit="layer",
                embedding=False, calib_text=TEXT, calib_tokens=64, context=32, measure=2, progress=False)
    h = ElasticModel(out)
    assert [u.name for u in h.artifact.units] == ["model.layers.0", "model.layers.1"]
    assert len(h.options) == 3
    h.swap(h.options[-1])
    direct = elastiq.quantize(make_tiny_llama(), "int4", progress=False)  # embedding and head stay float
    assert torch.equal(logits(h.model), logits(direct))
    assert weight_bytes(h.model) == weight_bytes(direct) == h.sizes[h.options[-1]]


def test_pruning_an_artifact(artifact, tmp_path):
    a = Artifact(artifact)
    limit = int(a.family.storage_bytes * 0.7)
    out, report = prune_artifact(a, tmp_path / "pruned", limit)
    p = Artifact(out)
    p.verify()
    assert p.family.storage_bytes <= limit < a.family.storage_bytes
    assert report["options_after"] == len(p.family.options) < len(a.family.options)
    assert sum(m["bytes"] for n, m in p.manifest["files"].items() if n.startswith("base")) < \
        sum(m["bytes"] for n, m in a.manifest["files"].items() if n.startswith("base"))
    h = ElasticModel(out)
    for k in (h.options[0], h.options[-1]):
        h.swap(k)
        assert weight_bytes(h.model) == h.sizes[k]
    gone = report["options_removed"][0]
    with pytest.raises(ValueError, match="not in this artifact's family"):
        h.swap(gone)
    with pytest.raises(ValueError, match="below the smallest option"):
        prune_artifact(a, tmp_path / "none", 1000)
    assert not (tmp_path / "none").exists()


def test_a_low_rank_option_is_one_more_hosting_option(artifact, tmp_path):
    import shutil

    from elastiq.elastic import add_low_rank_option
    from elastiq.quant import LowRankAdded, fake_quantize_model, with_embedding

    art = tmp_path / "extra.elastic"
    shutil.copytree(artifact, art)
    a = Artifact(art)
    k = a.family.options[-1]  # every unit at int3
    g = torch.Generator().manual_seed(0)
    names = ["model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj"]
    deltas = {}
    for n in names:
        out_f, in_f = a.manifest["modules"][n]["shape"]
        deltas[n] = (torch.randn(2, in_f, generator=g) * 0.1, torch.randn(out_f, 2, generator=g) * 0.1, 0.5)
    entry = add_low_rank_option(art, k, deltas, "fix", kl=0.0)
    assert entry["bytes"] == sum(4 * (A.numel() + B.numel()) for A, B, _ in deltas.values())
    h = ElasticModel(art)
    extra = a.chain.n_options
    h.swap(extra)
    assert weight_bytes(h.model) == h.sizes[extra] == h.sizes[k] + entry["bytes"]
    # independent: the int3 model's float weights plus s * B A
    ref = make_tiny_llama()
    fake_quantize_model(ref, with_embedding(ref, "int3", "same"))
    with torch.no_grad():
        for n, (A, B, s) in deltas.items():
            ref.get_submodule(n).weight += s * B @ A
    assert torch.allclose(logits(h.model), logits(ref), atol=1e-4)
    assert h.best_option(int(h.sizes[extra])) == extra  # it fits and its KL (0) beats every option that fits
    assert h.best_option(int(h.sizes[extra]) - 1) != extra
    h.swap(k)
    assert not any(isinstance(m, LowRankAdded) for m in h.model.modules())
    assert weight_bytes(h.model) == h.sizes[k]
    h.swap(extra)
    h.swap(h.options[0])  # every unit moves, and the corrections go
    assert not any(isinstance(m, LowRankAdded) for m in h.model.modules())
    for bad, message in [({"model.norm": deltas[names[0]]}, "not a packed linear layer"),
                         ({names[0]: (deltas[names[0]][1], deltas[names[0]][0], 1.0)}, "needs A")]:
        with pytest.raises(ValueError, match=message):
            add_low_rank_option(art, k, bad, "bad", kl=0.1)
    with pytest.raises(ValueError, match="already has an extra option"):
        add_low_rank_option(art, k, deltas, "fix", kl=0.1)
    with pytest.raises(ValueError, match="not in the family"):
        add_low_rank_option(art, 10**6, deltas, "other", kl=0.1)
    Artifact(art).verify()
    out, report = prune_artifact(Artifact(art), tmp_path / "pruned", int(Artifact(art).family.storage_bytes * 0.8))
    assert [e["name"] for e in Artifact(out).extras] == ([] if report["extras_removed"] else ["fix"])


def test_a_quality_floor_leaves_out_the_worse_options(tmp_path, byte_tokenizer):
    full = build(make_tiny_llama(), byte_tokenizer, tmp_path / "full", formats=["int8", "int3"], calib_text=TEXT,
                 calib_tokens=64, context=32, measure=3, progress=False)
    est = np.array(Artifact(full).manifest["quality"]["estimated"])
    floor = float(np.median(est))
    cut = build(make_tiny_llama(), byte_tokenizer, tmp_path / "cut", formats=["int8", "int3"], calib_text=TEXT,
                calib_tokens=64, context=32, measure=3, max_kl=floor, progress=False)
    a = Artifact(cut)
    assert a.family.options == [k for k in range(len(est)) if k == 0 or est[k] <= floor] != list(range(len(est)))
    assert a.family.storage_bytes < Artifact(full).family.storage_bytes
    h = ElasticModel(cut)
    with pytest.raises(BudgetError):
        h.apply_budget(int(Artifact(full).option_bytes[-1]))  # the int3 end is no longer offered
