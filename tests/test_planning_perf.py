"""The performance model: hand-computed small cases, the Megatron validation figures, refusals."""
import json

import pytest

from elastiq.labs.planning import collectives as C
from elastiq.labs.planning import perf, search, systems, transformer
from elastiq.labs.planning.schedule import COMM, COMPUTE, Schedule

TINY = transformer.Transformer("tiny", layers=2, hidden=8, ffn=32, heads=2, seq=4, vocab=10)
TOY = systems.System("toy", {"bf16": 1e3}, mem_bw=100.0, mem_bytes=1e9, devices_per_node=4, intra_bw=10.0,
                     inter_bw=1.0, matmul_eff=1.0, vector_eff=1.0, intra_eff=1.0, inter_eff=1.0,
                     intra_latency_s=0, inter_latency_s=0, kernel_overhead_s=0)


# ---- model description --------------------------------------------------------------
def test_tiny_parameter_count_by_hand():
    # attention 4 h^2 = 256, MLP 2 h f = 512, two norms 4 h = 32 -> 800 per layer; tied embedding 10 x 8
    assert TINY.attn_params == 256 and TINY.mlp_params == 512 and TINY.layer_params == 800
    assert TINY.params == 2 * 800 + 80


def test_flops_per_token_is_24h2_plus_4sh():
    m = transformer.get("gpt3-175b")
    h, s = m.hidden, m.seq
    assert m.layer_flops_per_token() == 24 * h * h + 4 * s * h
    assert m.training_flops(10) == 3 * 10 * (96 * (24 * h * h + 4 * s * h) + 2 * h * m.vocab)
    # Megatron's closed form 72 B s L h^2 (1 + s/6h) + 6 B s h V for one sequence (no recompute)
    assert m.training_flops(s) == pytest.approx(72 * s * 96 * h * h * (1 + s / (6 * h)) + 6 * s * h * m.vocab)


def test_gqa_and_gated_counts():
    m = transformer.get("llama-2-70b")
    h, d = 8192, 128
    assert m.attn_params == 2 * h * h + 2 * h * 8 * d
    assert m.mlp_params == 3 * h * 28672
    assert m.kv_bytes_per_token(2) == 2 * 80 * 8 * d * 2
    assert 68.5e9 < m.params < 69.5e9          # Llama-2-70B has 69.0e9 parameters


def test_llama2_7b_matches_published_size():
    assert abs(transformer.get("llama-2-7b").params - 6.74e9) / 6.74e9 < 0.005


def test_reads_hugging_face_config(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 256,
           "tie_word_embeddings": True, "hidden_act": "silu"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = transformer.get(str(tmp_path))
    assert (m.layers, m.hidden, m.ffn, m.heads, m.kv, m.vocab, m.seq, m.gated_mlp) == (2, 64, 160, 4, 2, 256, 256, True)


def test_hf_config_matches_real_model_parameter_count():
    from conftest import make_tiny_llama

    model = make_tiny_llama()
    m = transformer.from_hf_config(model.config.to_dict())
    real = sum(p.numel() for p in model.parameters())
    # ours counts 4h of norm parameters per layer (LayerNorm with bias); Llama's RMSNorm has 2h, plus a final norm
    assert m.params - 2 * m.hidden * m.layers + m.hidden == real


# ---- collectives ------------------------------------------------------------------------
def test_ring_collectives_by_hand():
    assert C.ring_time("all_reduce", 1000, 4, 100) == pytest.approx(2 * 3 / 4 * 1000 / 100)
    assert C.ring_time("all_gather", 1000, 4, 100) == pytest.approx(7.5)
    assert C.ring_time("reduce_scatter", 1000, 4, 100, latency=1) == pytest.approx(7.5 + 3)
    assert C.ring_time("all_reduce", 1000, 1, 100) == 0
    assert C.ring_time("p2p", 1000, 2, 100, latency=0.5) == pytest.approx(10.5)
    assert C.ring_bytes("all_to_all", 800, 8) == 700


def test_hierarchical_all_reduce():
    links = C.Links(intra_bw=10, inter_bw=1)
    # reduce-scatter 1000 B in a node of 2 (50 s), all-reduce 500 B over 2 nodes (500 s), all-gather (50 s)
    assert C.collective_time("all_reduce", 1000, 2, 2, links) == pytest.approx(50 + 500 + 50)
    assert C.collective_time("all_gather", 1000, 2, 2, links) == pytest.approx(50 + 250)
    assert C.collective_time("all_reduce", 1000, 4, 1, links) == pytest.approx(150)


def test_collective_refusals():
    with pytest.raises(ValueError, match="unknown collective"):
        C.ring_bytes("broadcast", 1, 2)
    with pytest.raises(ValueError, match="negative"):
        C.ring_bytes("all_reduce", -1, 2)
    with pytest.raises(ValueError, match="bandwidth"):
        C.ring_time("all_reduce", 1, 2, 0)


# ---- two-stream schedule -------------------------------------------------------------------
def test_two_streams_overlap_and_expose():
    s = Schedule()
    a = s.add("gemm1", COMPUTE, 3)
    s.add("grad_sync", COMM, 2, (a,))            # overlaps gemm2
    b = s.add("gemm2", COMPUTE, 4, (a,))
    c = s.add("tp_allreduce", COMM, 5, (b,))     # gemm3 waits: 5 - 0 exposed after the comm queue
    s.add("gemm3", COMPUTE, 1, (c,))
    t = s.run()
    # gemm1 0-3, sync 3-5, gemm2 3-7, allreduce 7-12, gemm3 12-13
    assert t.total_s == 13 and t.compute_s == 8 and t.comm_s == 7
    assert t.exposed_comm_s == 5 and t.overlapped_comm_s == 2


def test_schedule_refuses_bad_ops():
    s = Schedule()
    with pytest.raises(ValueError, match="dependency"):
        s.add("x", COMPUTE, 1, (3,))
    with pytest.raises(ValueError, match="non-negative"):
        s.add("x", COMPUTE, -1)


# ---- memory ----------------------------------------------------------------------------------
def test_activation_formulas_match_korthikanti():
    m = transformer.get("gpt3-175b")
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    sbh = s * b * h
    assert perf.activation_bytes_per_layer(m, b, s, t, True, "selective") == pytest.approx(34 * sbh / t)
    assert perf.activation_bytes_per_layer(m, b, s, t, False, "none") == pytest.approx(sbh * (10 + 24 / t + 5 * a * s / (h * t)))
    assert perf.activation_bytes_per_layer(m, b, s, t, True, "none") == pytest.approx(sbh / t * (34 + 5 * a * s / h))
    assert perf.activation_bytes_per_layer(m, b, s, t, False, "full") == pytest.approx(2 * sbh)


# Korthikanti et al. 2022 Fig. 1 (GiB per GPU, as encoded in Calculon's validation): activations without
# recompute and with sequence parallel + selective recompute, and weights + gradients + optimizer state.
FIG1 = {"megatron-22b": (8, 1, 1, 4, 59.25, 9.5625, 45.5625), "gpt3-175b": (8, 8, 3, 1, 66.84375, 12.3515625, 45.5625),
        "turing-530b": (8, 35, 3, 1, 114.0234375, 23.076171875, 31.640625),
        "megatron-1t": (8, 64, 1, 1, 131.25, 26.5625, 32.958984375)}


@pytest.mark.parametrize("name", list(FIG1))
def test_memory_matches_korthikanti_fig1(name):
    t, p, v, mb, act_none, act_seqsel, par_opt = FIG1[name]
    m = transformer.get(name)
    none = perf.training_memory(m, perf.Parallel(tp=t, pp=p, interleave=v), mb, 2048, 10 ** 6)
    seqsel = perf.training_memory(m, perf.Parallel(tp=t, pp=p, interleave=v, sp=True, recompute="selective"), mb, 2048, 10 ** 6)
    assert none.activations / 2 ** 30 == pytest.approx(act_none, rel=0.005)
    assert seqsel.activations / 2 ** 30 == pytest.approx(act_seqsel, rel=0.005)
    # 18 bytes per parameter; Fig. 1 leaves out the first stage's embedding, which ours adds
    state = none.weights + none.gradients + none.optimizer - m.vocab * m.hidden / t * 18
    assert state / 2 ** 30 == pytest.approx(par_opt, rel=0.001)


def test_fsdp_and_optimizer_sharding_divide_state():
    m = transformer.get("llama-2-7b")
    base = perf.training_memory(m, perf.Parallel(dp=8), 1, 4096, 8)
    z1 = perf.training_memory(m, perf.Parallel(dp=8, shard_optimizer=True), 1, 4096, 8)
    z3 = perf.training_memory(m, perf.Parallel(dp=8, fsdp=True), 1, 4096, 8)
    assert z1.optimizer == pytest.approx(base.optimizer / 8) and z1.gradients == base.gradients
    assert z3.gradients == pytest.approx(base.gradients / 8)
    assert z3.weights == pytest.approx(base.weights / 8 + 2 * m.layer_params * 2)


# ---- iteration time ------------------------------------------------------------------------
def test_single_device_iteration_is_the_sum_of_roofline_kernels():
    r = perf.train(TINY, TOY, perf.Parallel(), batch=1, micro_batch=1, check_fit=False)
    assert r.exposed_comm_s == 0 and r.bubble_s == 0 and r.comm_s == 0
    assert r.iteration_s == pytest.approx(r.compute_s)
    # the GEMM FLOPs alone at 1 kFLOP/s bound the time from below
    assert r.iteration_s > r.model_flops / 1e3


def test_gemm_roofline_by_hand():
    sy = TOY
    cost = perf._Coster(sy, "bf16", {"tp": (1, 1), "dp": (1, 1)}, C.Links.of(sy))
    assert cost.compute("gemm", 5000, 100) == pytest.approx(5.0)     # compute-bound: 5000 / 1000
    assert cost.compute("gemm", 100, 1000) == pytest.approx(10.0)    # memory-bound: 1000 / 100
    assert cost.compute("vec", 10 ** 6, 200) == pytest.approx(2.0)


def test_pipeline_bubble_is_p_minus_1_over_v_micro_batches():
    m = transformer.get("gpt3-175b")
    par = perf.Parallel(tp=8, pp=8, interleave=3, recompute="full")
    r = perf.train(m, "a100-80gb", par, batch=64, micro_batch=1, dtype="fp16", flash=False)
    per_mb = (r.iteration_s - r.bubble_s - (r.compute_s - r.compute_s)) / 64
    assert r.bubble_s / per_mb == pytest.approx(7 / 3, rel=0.03)


def test_overlapped_gradient_reduction_hides_communication():
    m = transformer.get("llama-2-7b")
    kw = dict(batch=64, micro_batch=1, seq=2048, check_fit=False)
    on = perf.train(m, "a100-80gb", perf.Parallel(dp=8, tp=8, recompute="full"), **kw)
    off = perf.train(m, "a100-80gb", perf.Parallel(dp=8, tp=8, recompute="full", dp_overlap=False), **kw)
    assert on.exposed_comm_s < off.exposed_comm_s and on.iteration_s < off.iteration_s
    assert on.comm_s == pytest.approx(off.comm_s, rel=0.05)


# Korthikanti et al. 2022 Table 5 (seconds per iteration on Selene, A100-80GB)
MEGATRON = [("megatron-22b", 8, 1, 1, 4, 4, 1.42, 1.10), ("gpt3-175b", 8, 8, 3, 64, 1, 18.13, 13.75),
            ("turing-530b", 8, 35, 3, 280, 1, 49.05, 37.83), ("megatron-1t", 8, 64, 1, 512, 1, 94.42, 71.49)]
# our predictions when this test was written; a change of the model that moves them shows here
OURS = {("megatron-22b", "full"): 1.3513, ("megatron-22b", "selective"): 0.9824, ("gpt3-175b", "full"): 16.720,
        ("gpt3-175b", "selective"): 12.157, ("turing-530b", "full"): 46.496, ("turing-530b", "selective"): 34.574,
        ("megatron-1t", "full"): 91.849, ("megatron-1t", "selective"): 68.548}


@pytest.mark.parametrize("case", MEGATRON, ids=[c[0] for c in MEGATRON])
@pytest.mark.parametrize("rc", ["full", "selective"])
def test_megatron_validation(case, rc):
    name, t, p, v, batch, mb, full, sel = case
    published = full if rc == "full" else sel
    par = perf.Parallel(tp=t, pp=p, interleave=v, recompute=rc, sp=rc == "selective")
    r = perf.train(name, "a100-80gb", par, batch=batch, micro_batch=mb, dtype="fp16", devices=t * p, flash=False)
    assert r.fits
    assert r.iteration_s == pytest.approx(OURS[(name, rc)], rel=0.005)
    # the goal is 10%: six cases meet it; megatron-22b and gpt3-175b with selective recompute miss it
    # (-10.7%, -11.6%), see docs/planning.md. Every case is under-predicted.
    err = r.iteration_s / published - 1
    assert -0.12 < err < 0 and (abs(err) < 0.10 or rc == "selective")


# ---- inference ----------------------------------------------------------------------------------
def test_decode_is_memory_bound_and_format_bits_come_from_the_catalog():
    bf = perf.infer("llama-2-7b", "h100-80gb", batch=1, prompt=128, new_tokens=2, weights="bf16")
    fp4 = perf.infer("llama-2-7b", "h100-80gb", batch=1, prompt=128, new_tokens=2, weights="nvfp4")
    assert fp4.bits_per_weight == 4.5 and bf.bits_per_weight == 16
    sy = systems.get("h100-80gb")
    # batch 1: the step time is the bytes over the effective bandwidth plus 9 kernel launches a layer and one for the head
    launches = (9 * 32 + 1) * sy.kernel_overhead_s
    assert bf.decode_step_s == pytest.approx(bf.bytes_per_step / sy.eff_mem_bw + launches, rel=1e-6)
    assert 2.0 < bf.decode_step_s / fp4.decode_step_s < 16 / 4.5   # launches and the 16-bit head do not shrink
    assert fp4.memory.weights < bf.memory.weights * 0.35


def test_kv_cache_memory_by_hand():
    r = perf.infer("llama-2-70b", "h100-80gb", perf.Parallel(tp=8), batch=2, prompt=1000, new_tokens=24, weights="bf16")
    assert r.memory.kv_cache == pytest.approx(2 * 1024 * (2 * 80 * 8 * 128 * 2) / 8)


# ---- search ------------------------------------------------------------------------------------
def test_search_ranks_fitting_strategies():
    r = search.search("llama-2-7b", "a100-80gb", devices=8, batch=16, seq=2048, micro_batches=(1, 2))
    assert r.ranked and all(x.fits for x in r.ranked)
    times = [x.iteration_s for x in r.ranked]
    assert times == sorted(times)
    assert r.default is not None and r.speedup_over_default >= 1.0
    assert all(x.parallel.devices == 8 for x in r.ranked)


# ---- refusals --------------------------------------------------------------------------------
def test_refuses_parallelism_that_does_not_match_devices():
    with pytest.raises(ValueError, match="does not match the 16 devices"):
        perf.train("megatron-22b", "a100-80gb", perf.Parallel(tp=8), batch=4, devices=16)


def test_refuses_tp_not_dividing_heads_and_pp_not_dividing_layers():
    with pytest.raises(ValueError, match="attention heads"):
        perf.train("turing-530b", "a100-80gb", perf.Parallel(tp=3, pp=35), batch=280)
    with pytest.raises(ValueError, match="layers"):
        perf.train("megatron-22b", "a100-80gb", perf.Parallel(tp=8, pp=5), batch=5)
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        perf.train("megatron-22b", "a100-80gb", perf.Parallel(tp=8, dp=2), batch=3)


def test_refuses_configuration_that_does_not_fit():
    with pytest.raises(perf.DoesNotFit, match=r"needs .* GiB per device but a100-80gb has 74\.5 GiB"):
        perf.train("gpt3-175b", "a100-80gb", perf.Parallel(tp=8), batch=8)
    with pytest.raises(perf.DoesNotFit, match="laptop-m2"):
        perf.infer("llama-2-70b", "laptop-m2", weights="bf16")


def test_refuses_unknown_presets_and_bad_numbers():
    with pytest.raises(ValueError, match="unknown system 'b200'.*a100-80gb"):
        systems.get("b200")
    with pytest.raises(ValueError, match="unknown model 'gpt-5'"):
        transformer.get("gpt-5")
    with pytest.raises(ValueError, match="unknown format"):
        perf.infer("llama-2-7b", "h100-80gb", weights="fp5")
    with pytest.raises(ValueError, match="mem_bw must be a positive number"):
        TOY.with_(mem_bw=-1)
    with pytest.raises(ValueError, match="matmul_eff"):
        TOY.with_(matmul_eff=1.5)
    with pytest.raises(ValueError, match="missing"):
        systems.from_dict({"name": "x", "peak_flops": {"bf16": 1}})
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        TINY.with_(hidden=-8)
    with pytest.raises(ValueError, match="recompute"):
        perf.Parallel(recompute="some")
    with pytest.raises(ValueError, match="tp must be a positive integer"):
        perf.Parallel(tp=0)
    with pytest.raises(ValueError, match="fsdp needs dp"):
        perf.Parallel(fsdp=True)
    with pytest.raises(ValueError, match="no peak rate for dtype 'fp8'"):
        perf.train("megatron-22b", "a100-80gb", perf.Parallel(tp=8), batch=4, micro_batch=4, dtype="fp8")
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        perf.infer("llama-2-7b", "h100-80gb", batch=0)


def test_inference_search_splits_devices_into_replicas():
    r = search.search_inference("llama-2-7b", "h100-80gb", devices=4, batch=8, prompt=128, new_tokens=16)
    assert r.ranked and r.default is not None
    rates = [c.tokens_per_s for c in r.ranked]
    assert rates == sorted(rates, reverse=True) and r.speedup_over_default >= 1.0
    for c in r.ranked:
        assert c.replicas * c.result.parallel.devices == 4 and c.replicas * c.result.batch == 8
        assert c.tokens_per_s == pytest.approx(c.replicas * c.result.batch / c.result.decode_step_s)


def test_sharded_optimizer_moves_the_same_bytes_as_an_all_reduce():
    # ZeRO-1: reduce-scatter the gradients, all-gather the updated weights: one all-reduce's volume
    kw = dict(batch=8, micro_batch=1, seq=512, check_fit=False)
    plain = perf.train("llama-2-7b", "a100-80gb", perf.Parallel(dp=8), **kw)
    z1 = perf.train("llama-2-7b", "a100-80gb", perf.Parallel(dp=8, shard_optimizer=True), **kw)
    assert z1.comm_s == pytest.approx(plain.comm_s, rel=0.05)
    assert z1.memory.optimizer == pytest.approx(plain.memory.optimizer / 8)
