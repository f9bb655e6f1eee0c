"""Render benchmark results (bench/results/*.json) as the Markdown tables in docs/.

    .venv/bin/python bench/markdown.py formats    # from bench/results/formats.json
    .venv/bin/python bench/markdown.py nxfp       # from bench/results/nxfp.json
    .venv/bin/python bench/markdown.py quality    # from bench/results/quality.json
    .venv/bin/python bench/markdown.py profile    # from bench/results/profile.json
    .venv/bin/python bench/markdown.py elastic    # from bench/results/elastic.json
    .venv/bin/python bench/markdown.py kernels    # from bench/results/kernels.json
    .venv/bin/python bench/markdown.py lrec       # from bench/results/lrec.json
    .venv/bin/python bench/markdown.py lrec_setup # from bench/results/lrec_setup.json
    .venv/bin/python bench/markdown.py runtime    # from bench/results/runtime.json
    .venv/bin/python bench/markdown.py calibrate  # from bench/results/calibrate.json
    .venv/bin/python bench/markdown.py NAME FILE  # the same table from another results file
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def formats_table(data: dict) -> str:
    m = data["meta"]
    out = [f"{m['size']}x{m['size']} float32 on {m['device']} ({m['threads']} threads), torch {m['torch']}, "
           f"torchao {m.get('torchao', '-')}, median of {m['runs']} runs, {m['date']}.", "",
           "| format | operation | elastiq M elem/s | torchao M elem/s | ratio | bit-identical | peak / input, elastiq | peak / input, torchao |",
           "|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        ident = {True: "yes", False: "**no**", None: "-"}[r["bit_identical"]]
        ratio = _num(r["ratio"], ".2f") + ("x" if r["ratio"] else "")
        out.append(f"| {r['format']} | {r['op']} | {r['elastiq_elems_per_s'] / 1e6:.1f} | "
                   f"{_num(r['torchao_elems_per_s'] and r['torchao_elems_per_s'] / 1e6, '.1f')} | {ratio} | {ident} | "
                   f"{_num(r.get('elastiq_peak_over_input'), '.2f')} | {_num(r.get('torchao_peak_over_input'), '.2f')} |")
    return "\n".join(out)


def nxfp_table(data: dict) -> str:
    rows = data["results"]
    base = next((r for r in rows if r["format"] == "mxfp4"), rows[0])["smollm2"]
    out = [f"{data['tensors']} SmolLM2-135M linear weights ({data['values'] / 1e6:.1f}M values); "
           "Gaussian and Student-t(3): 512x4096 samples.", "",
           "| format | bits/element | SmolLM2 weights | vs mxfp4 | Gaussian | Student-t(3) |", "|---|---|---|---|---|---|"]
    for r in rows:
        name = r["format"].replace("|", "\\|")  # a pipe would end the table cell
        out.append(f"| `{name}` | {r['bits_per_element']:.4g} | {r['smollm2']:.3e} | "
                   f"{r['smollm2'] / base - 1:+.1%} | {r['gaussian']:.3e} | {r['student_t3']:.3e} |")
    return "\n".join(out)


def quality_table(data: dict) -> str:
    m = data["meta"]
    out = [f"{m['model']}, {m['tokens']} tokens of {m['text']}, context {m['context']}, torch {m['torch']}, {m['date']}.", "",
           "| format | bits/weight | weight MiB | perplexity | Δ perplexity | KL (nats/token) |", "|---|---|---|---|---|---|"]
    for r in data["results"]:
        out.append(f"| `{r['format']}` | {r['bits_per_weight']:.3f} | {r['weight_bytes'] / 2**20:.1f} | {r['perplexity']:.3f} | "
                   f"{r['delta_perplexity']:+.3f} | {r['kl']:.4f} |")
    if data.get("speed"):
        f = data["speed"][0]
        peer = next((r for r in data["speed"] if r["format"].startswith("llama.cpp")), None)
        runs = f" median of {m['speed_repeats']} fresh-process runs," if m.get("speed_repeats") else ""
        out += ["", f"Speed and memory ({m['prompt_tokens']}-token prompt, {m['new_tokens']} greedy tokens, "
                    f"{m['threads']} threads,{runs} weight share of float and ratios to float and llama.cpp):", "",
                "| model | weight MiB | weight vs float | resident MiB | resident vs llama.cpp | prefill tokens/s "
                "| decode tokens/s | decode vs float | decode vs llama.cpp |", "|---|---|---|---|---|---|---|---|---|"]
        for r in data["speed"]:
            vs_peer = (lambda k: f"{r[k] / peer[k]:.2f}x") if peer else (lambda k: "")
            out.append(f"| {r['format']} | {r['weight_bytes'] / 2**20:.1f} | {r['weight_bytes'] / f['weight_bytes']:.0%} | "
                       f"{r['resident_bytes'] / 2**20:.0f} | {vs_peer('resident_bytes')} | {r['prefill_tokens_per_s']:.0f} | "
                       f"{r['decode_tokens_per_s']:.2f} | {r['decode_tokens_per_s'] / f['decode_tokens_per_s']:.2f}x | "
                       f"{vs_peer('decode_tokens_per_s')} |")
    return "\n".join(out)


def kernels_table(data: dict) -> str:
    m = data["meta"]
    fmts = m["formats"]
    cols = ["float"] + fmts + ["torch_int4pack", "nxfp4_torch_path"]
    names = {"torch_int4pack": "torch int4pack (int4-g64)", "nxfp4_torch_path": "nxfp4, torch path"}
    out = [f"One token (a matrix-vector product), median µs of {m['reps']} passes over the copies, torch {m['torch']}, "
           f"{m['date']}; in brackets: speed-up over float32 (above 1 is faster).", ""]
    for threads in sorted({r["threads"] for r in data["rows"]}):
        out += [f"{threads} thread{'s' if threads > 1 else ''}:", "",
                "| weight (out x in) | " + " | ".join(names.get(c, c) for c in cols) + " |",
                "|---|" + "---|" * len(cols)]
        for r in (r for r in data["rows"] if r["threads"] == threads):
            cells = [f"{r[c + '_us']:.0f}" + ("" if c == "float" else f" ({r['float_us'] / r[c + '_us']:.2f}x)") for c in cols]
            out.append(f"| {r['shape']} ({r['out']} x {r['in']}) | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip()


_CLASSES = ["conv", "linear", "attn_self", "attn_cross", "attn_temporal", "norm", "elementwise", "memory", "other"]


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def profile_table(data: dict) -> str:
    m = data["meta"]
    out = [f"{m['device']}, {m['threads']} thread(s), torch {m['torch']}, diffusers {m['diffusers']}, "
           f"{m['steps']} denoising steps or prefills, {m['decode_steps']} decode tokens, {m['date']}; "
           f"`{m['command']}` ({m['seconds']:.0f} s).", "",
           "### Share of operator time by class (default attention backend)", "",
           "| model | family | ms / step | conv | linear | attn self | attn cross | attn temporal | norm | "
           "elementwise | memory | other | operators / wall |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in data["models"].items():
        out.append(f"| {name} | {r['family']} | {1e3 * r['median_step_wall_s']:.0f} | "
                   + " | ".join(_pct(r["shares"][c]) for c in _CLASSES) + f" | {_pct(r['op_time_share_of_wall'])} |")
    out += ["", "### Range of the largest class over steps", "", "| model | class | lowest step | highest step |",
            "|---|---|---|---|"]
    for name, r in data["models"].items():
        top = max(_CLASSES, key=lambda c: r["shares"][c])
        vals = [s[top] for s in r["step_shares"]]
        out.append(f"| {name} | {top} | {_pct(min(vals))} | {_pct(max(vals))} |")
    out += ["", "### FLOPs per step by class", "", "| model | GFLOP / step | conv | linear | attn self | attn cross | "
            "attn temporal |", "|---|---|---|---|---|---|---|"]
    for name, r in data["models"].items():
        total = sum(r["flops"].values()) / r["steps"]
        out.append(f"| {name} | {total / 1e9:.2f} | " + " | ".join(_pct(r["flop_shares"][c]) for c in _CLASSES[:5]) + " |")
    out += ["", "### What elastiq formats compress: linear and convolution", "",
            "| model | share of operator time | share of weight bytes | weight MiB |", "|---|---|---|---|"]
    for name, r in data["models"].items():
        out.append(f"| {name} | {_pct(r['compressible_time_share'])} | {_pct(r['compressible_weight_share'])} | "
                   f"{sum(r['weight_bytes'].values()) / 2**20:.1f} |")
    out += ["", "### Attention sequence lengths (one step)", "",
            "| model | query lengths | key lengths | spread (max / min query) | attention calls |", "|---|---|---|---|---|"]
    for name, r in data["models"].items():
        calls = r["attention_calls"][0]
        qs = sorted({c["q_len"] for c in calls})
        ks = sorted({c["kv_len"] for c in calls})
        out.append(f"| {name} | {', '.join(map(str, qs))} | {', '.join(map(str, ks))} | "
                   f"{r['seq_len_spread']:.0f}x | {len(calls)} |")
    out += ["", "### Flash versus math attention (CPU)", "",
            "| model | family | flash s / step | math s / step | end-to-end speedup | attention-time speedup |",
            "|---|---|---|---|---|---|"]
    for name, b in data["backends"].items():
        out.append(f"| {name} | {b['family']} | {b['flash_s_per_step']:.3f} | {b['math_s_per_step']:.3f} | "
                   f"{b['end_to_end_speedup']:.2f}x | {_num(b['attention_speedup'], '.2f')}x |")
    for key, rows in data["sweeps"].items():
        what = key.split()[-1]
        out += ["", f"### Growth with {what} ({key.split()[0]}, one denoising step)", "",
                f"| {what} | image side | longest query | attention ms, flash | attention ms, math | "
                "attention share, flash | attention share, math | temporal / attention, flash | "
                "score matrices MiB (math materializes) | largest call MiB | temporal score MiB |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            f, mm = r["flash"], r["math"]
            out.append(f"| {r['value']} | {r['image_side']} | {f['max_q_len']} | {1e3 * f['attention_s_per_step']:.0f} | "
                       f"{1e3 * mm['attention_s_per_step']:.0f} | {_pct(f['attention_share'])} | "
                       f"{_pct(mm['attention_share'])} | {_pct(f['temporal_share_of_attention'])} | "
                       f"{f['score_bytes_total'] / 2**20:.1f} | {f['score_bytes_max_call'] / 2**20:.1f} | "
                       f"{f.get('temporal_score_bytes', 0) / 2**20:.2f} |")
    return "\n".join(out)


def lrec_table(data: dict) -> str:
    m = data["meta"]
    fp = data["float_ppl"]
    fmts = [k for k, v in data.items() if isinstance(v, dict) and "ppl_before" in v]
    out = [f"SmolLM2-135M, rank {m['rank']} {m.get('adapter_dtype', 'float32')} adapters, {m['steps']} steps (lr {m['lr']:g}, "
           f"AdamW moments in {m.get('optimizer_state', 'float32')}, one {m['context']}-token window per step, "
           f"{m.get('threads', 2)} thread(s)), teacher top-{m['top_k']} on {m['calib_tokens']} tokens of wiki-calib "
           f"(mass {m['top_k_mass']:.3f}); perplexity on {m['eval_tokens']} tokens of wiki-eval; float {fp:.3f}; "
           f"torch {m['torch']}, {m['date']}.", "",
           "| format | adapters | bits/weight | with adapters | adapter overhead | before | SVD init only | after (zero init) | "
           "after (SVD init) | gap closed | gap closed in log perplexity | best after / float | s/step |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in fmts:
        r = data[f]
        best = min(r["ppl_after"], r["ppl_after_svd"])
        log_gap = (math.log(r["ppl_before"]) - math.log(best)) / (math.log(r["ppl_before"]) - math.log(fp))
        out.append(f"| `{f}` | {r.get('adapter_dtype', m.get('adapter_dtype', 'float32'))} | {r['bits_per_weight']:.3f} | {r['bits_per_weight_with_adapters']:.3f} | "
                   f"{r['adapter_overhead']:.1%} | {r['ppl_before']:.5g} | {r['ppl_svd_init_only']:.5g} | "
                   f"{r['ppl_after']:.5g} | {r['ppl_after_svd']:.5g} | {_pct(r['gap_closed'])} | {_pct(log_gap)} | "
                   f"{best / fp:.3g}x | {r['step_seconds']:.2f} |")
    if "memory" in data:
        mem = data["memory"]
        st = mem.get("settings", {})
        how = (f"`{st['format']}`, rank {st['rank']} {st['adapter_dtype']} adapters, {st['optimizer_state']} AdamW moments, "
               f"{st['steps']} steps, {st.get('threads', 2)} thread(s); " if st else "3 steps; ")
        after = "the modeling code loads" if st else "imports"
        out += ["", f"Peak resident memory of training ({how}growth over the process after {after}; the peak is read "
                    "from when the model is loaded):", "",
                "| set-up | model loaded, MiB | peak in training, MiB | peak vs LREC | s/step |", "|---|---|---|---|---|"]
        names = {"lrec": "LREC: packed linear layers and embedding, adapters",
                 "lrec_float_embedding": "LREC, embedding kept in float32", "float_lora": "LoRA on the float model",
                 "full": "full fine-tuning",
                 "lrec_whole_logits": "before: LREC, float32 embedding, whole-window logits, glibc default",
                 "float_lora_whole_logits": "before: LoRA on the float model, whole-window logits, glibc default"}
        for k in [k for k in names if k in mem]:
            loaded = mem[k].get("loaded_bytes")
            out.append(f"| {names[k]} | {'-' if loaded is None else f'{loaded / 2**20:.0f}'} | {mem[k]['peak_bytes'] / 2**20:.0f} | "
                       f"{mem[k]['peak_bytes'] / mem['lrec']['peak_bytes']:.2f}x | {mem[k]['step_seconds']:.2f} |")
    return "\n".join(out)


def lrec_setup_table(data: dict) -> str:
    med, a = data["median"], data["agreement"]
    mib = lambda b: f"{b / 2**20:,.0f}"  # noqa: E731
    names = {"in_memory": "whole float model in memory (before)", "streamed": "one decoder layer at a time (now)"}
    out = [f"SmolLM2-135M, `{data['format']}`, rank {data['rank']} bfloat16 adapters from the SVD of the error, teacher "
           f"top-64 on {data['calib_tokens']} tokens; {data['threads']} thread(s); median of {len(data['runs']['streamed'])} "
           "fresh processes each; memory is growth over the process after imports, tokenizer and text.", "",
           "| set-up route | peak, MiB | held after, MiB | seconds | peak vs streamed |", "|---|---|---|---|---|"]
    for r, name in names.items():
        m = med[r]
        out.append(f"| {name} | {mib(m['peak_bytes'])} | {mib(m['held_bytes'])} | {m['seconds']:.0f} | "
                   f"{m['peak_bytes'] / med['streamed']['peak_bytes']:.2f}x |")
    same = "the same" if a["same_windows"] and a["packed_codes_identical"] else "**not** the same"
    out += ["", f"Both routes built {same} windows and packed codes; their teacher log-probs differ by at most "
                f"{a['max_abs_logp_difference']:.2g} (float16), {a['top_k_ids_agreeing']:.2%} of the top-64 ids agree, "
                f"and their adapter starts differ by at most {a['max_relative_adapter_difference']:.1e} relative "
                f"({a['adapters_compared']} layers compared)."]
    if "tokenize" in data:
        w, p = data["tokenize"]["whole"], data["tokenize"]["prefix"]
        out += ["", f"Tokenizing `wiki-eval` ({w['text_chars']:,} characters) for its first {w['tokens']:,} tokens: "
                    f"the whole text peaks at {mib(w['peak_bytes'])} MiB ({mib(w['held_bytes'])} MiB still held after), "
                    f"the prefix `tokenize(..., max_tokens)` reads at {mib(p['peak_bytes'])} MiB."]
    if "cli" in data:
        c = data["cli"]
        out += ["", f"`{c['command']}`, the whole process: peak {mib(c['process_peak_bytes'])} MiB, "
                    f"{c['seconds']:.0f} s."]
    return "\n".join(out)


def elastic_table(data: dict) -> str:
    m = data["meta"]
    mib = lambda b: f"{b / 2**20:.2f}"  # noqa: E731
    out = [f"SmolLM2-135M, bases {', '.join(m['formats'])}, unit = one linear layer (and the embedding with its tied "
           f"head); {m['threads']} thread{'s' if m['threads'] > 1 else ''}, torch {m['torch']}, {m['date']}; build took {m['build_seconds']:.0f} s.", "",
           "| measure | elastic chain | (a) one file per base | ratio | goal |", "|---|---|---|---|---|",
           f"| hosting options | {data['options']} | {data['baseline_options']} | {data['options'] / data['baseline_options']:.0f}x | |",
           f"| median step between neighbours, MiB | {data['median_step_bytes'] / 2**20:.3f} | "
           f"{mib(data['baseline_median_step_bytes'])} | {data['granularity_ratio']:.0f}x finer | >= 100x: "
           f"{'met' if data['granularity_ratio'] >= 100 else '**missed**'} |",
           f"| largest step, MiB | {mib(data['max_step_bytes'])} | {mib(data['baseline_max_step_bytes'])} | | |",
           f"| range of weights held, MiB | {mib(data['largest_option_bytes'])} to {mib(data['smallest_option_bytes'])} | "
           f"same ends | | |",
           f"| storage on disk, MiB | {mib(data['artifact_bytes'])} | {mib(data['sum_base_bytes'])} | "
           f"{data['artifact_vs_sum_base']:.3f} | <= 1: {'met' if data['artifact_vs_sum_base'] <= 1 else '**missed**'} |",
           f"| every option stored as its own file, MiB | {data['all_options_bytes'] / 2**20:,.0f} | | "
           f"{data['storage_ratio']:.0f}x the artifact | >= 10x: {'met' if data['storage_ratio'] >= 10 else '**missed**'} |",
           f"| switch, neighbours, ms (median) | {data['switch_ms_neighbour_median']:.2f} | | | <= 10: "
           f"{'met' if data['switch_ms_neighbour_median'] <= 10 else '**missed**'} |",
           f"| switch, extremes, ms (median) | {data['switch_ms_extremes_median']:.0f} | "
           f"{data['reload_whole_file_ms_median']:.0f} (reload the int8 file) | "
           f"{data['switch_speedup_extremes_vs_reload']:.1f}x faster | <= 300: "
           f"{'met' if data['switch_ms_extremes_median'] <= 300 else '**missed**'} |",
           "", f"Perplexity on {m['eval_tokens']} tokens of wiki-eval (float: {data['float_ppl']:.3f}):", "",
           "| option | weights MiB | perplexity | line between bases | no worse? | KL estimated at build |",
           "|---|---|---|---|---|---|"]
    for b in sorted(data["bases"], key=lambda b: -b["weights"]):
        out.append(f"| base `{b['format']}` (whole file) | {mib(b['weights'])} | {b['ppl']:.3f} | | | |")
    for p in data["points"]:
        out.append(f"| {p['option']} | {mib(p['weights'])} | {p['ppl']:.3f} | {p['base_line_ppl']:.3f} | "
                   f"{'yes' if p['no_worse'] else '**no**'} | {p['kl_estimated']:.4f} |")
    out += ["", "Pruned families (b: against the whole chain above):", "",
            "| storage limit | artifact MiB | options kept | largest option MiB | smallest option MiB | "
            "KL est. at largest |", "|---|---|---|---|---|---|"]
    for p in data["pruned"]:
        out.append(f"| {p['share']:.0%} of the chain's | {mib(p['artifact_bytes'])} | {p['options']} of "
                   f"{p['options_before']} | {mib(p['largest_after'])} | {mib(p['smallest_after'])} | "
                   f"{p['kl_estimated_largest_option']:.4f} |")
    if "lrec_option" in data:
        r = data["lrec_option"]
        out += ["", f"LREC adapters (rank 16, bfloat16, {r['steps']} steps, {r['seconds'] / 60:.0f} min) on one "
                    "option, stored as one more option, against the chain's option that fits the same bytes:", "",
                "| option | weights MiB | KL from float (calibration) | perplexity |", "|---|---|---|---|",
                f"| {r['option']} | {mib(r['option_bytes'])} | {r['kl_before']:.4f} | {r['ppl_before']:.3f} |",
                f"| {r['option']} + adapters | {mib(r['option_bytes'] + r['adapter_bytes'])} | {r['kl_after']:.4f} | "
                f"{r['ppl_after']:.3f} |",
                f"| {r['same_size_option']} (chain) | {mib(r['same_size_option_bytes'])} | {r['same_size_option_kl']:.4f} | "
                f"{r['ppl_same_size_option']:.3f} |"]
    out += ["", "Trace replay (fresh process; RSS growth counted from the opened, empty host):", "",
            "| budget MiB | option | weights MiB | swap ms | RSS growth MiB |", "|---|---|---|---|---|"]
    for e in data["trace"]:
        swap = "-" if e["swap_ms"] is None else f"{e['swap_ms']:.0f}"
        out.append(f"| {mib(e['budget'])} | {e['option']} | {mib(e['weights'])} | {swap} | "
                   f"{mib(e['rss'] - data['host_opened_rss'])} |")
    return "\n".join(out)


def _goal(ok: bool) -> str:
    return "met" if ok else "**missed**"


def runtime_table(data: dict) -> str:
    p = data["protocol"]
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    out = [f"SmolLM2-135M, {p['prompt_tokens']}-token prompt, {p['new_tokens']} greedy tokens, {p['threads']} threads, "
           f"each engine in a fresh process, {p['statistic']} of {p['repeats']} runs (engines interleaved).", "",
           "| engine | weights MiB | decode tok/s | prefill tok/s | peak RSS MiB (whole process) | start to first token, s "
           "| decode bandwidth, share of memcpy |", "|---|---|---|---|---|---|---|"]
    names = {"native_nxfp4_emb": "native, nxfp4 + packed embedding", "native_int4": "native, int4 + packed embedding",
             "torch_nxfp4_emb": "torch path, nxfp4 + packed embedding", "llama_cpp": "llama.cpp, Q4_1 GGUF"}
    for key, label in names.items():
        r = data.get(key)
        if r is None:
            continue
        share = f"{r['decode_bandwidth_share']:.0%}" if "decode_bandwidth_share" in r else "-"
        out.append(f"| {label} | {mib(r['weight_bytes'])} | {r['decode_tps']:.1f} | {r['prefill_tps']:.0f} | "
                   f"{mib(r['peak_rss_bytes'])} | {r['first_token_s']:.2f} | {share} |")
    if "decode_vs_llama_cpp" in data:
        out += ["", "| measure (native nxfp4 + emb against llama.cpp) | ratio | goal |", "|---|---|---|",
                f"| decode tokens/s | {data['decode_vs_llama_cpp']:.2f}x | >= 1.0x (0.5x least): "
                f"{_goal(data['decode_vs_llama_cpp'] >= 1)} |",
                f"| decode tokens/s, int4 | {data['decode_int4_vs_llama_cpp']:.2f}x | >= 1.0x: "
                f"{_goal(data['decode_int4_vs_llama_cpp'] >= 1)} |",
                f"| prefill tokens/s | {data['prefill_vs_llama_cpp']:.2f}x | >= 1.0x: {_goal(data['prefill_vs_llama_cpp'] >= 1)} |",
                f"| whole-process peak RSS | {data['rss_vs_llama_cpp']:.2f}x | <= 1.0x: {_goal(data['rss_vs_llama_cpp'] <= 1)} |",
                f"| process start to first token | {data['first_token_vs_llama_cpp']:.2f}x | <= 1.0x: "
                f"{_goal(data['first_token_vs_llama_cpp'] <= 1)} |",
                "", f"Memory-copy bandwidth of this machine: {data['memcpy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s "
                    "(read + write, numpy copying 256 MiB). Greedy tokens equal between the native and torch paths "
                    f"on the same packed bytes: {data['native_torch_same_tokens']} of {p['new_tokens']}."]
    e = data.get("elastic_native")
    if e:
        out += ["", f"Elastic hosting on the native runtime (the demo's artifact, {e['options']} options):", "",
                "| measure | native | goal (today's torch host, bench/elastic.py) |", "|---|---|---|",
                f"| swap, neighbours, ms (median) | {e['neighbour_swap_s'] * 1e3:.2f} | <= 1.6 |",
                f"| swap, extremes, ms (median) | {e['extremes_swap_s'] * 1e3:.0f} | <= 201 |",
                f"| process RSS holding the largest option ({mib(e['largest_option_bytes'])} MiB of weights), MiB | "
                f"{mib(e['rss_largest_bytes'])} | |",
                f"| process RSS after shrinking to the smallest ({mib(e['smallest_option_bytes'])} MiB), MiB | "
                f"{mib(e['rss_after_shrink_bytes'])} | falls: {_goal(e['rss_after_shrink_bytes'] < e['rss_largest_bytes'])} |"]
    b = data.get("busy")
    if b:
        out += ["", f"Decode tokens/s with OpenMP's threads spinning or waiting passively at barriers, on the quiet "
                    f"machine and beside {b['burners']} processes that keep the cores busy ({b['prompt_tokens']}-token "
                    f"prompt, {b['tokens']} tokens, {b['rows'][0]['runs']} run(s) per cell; the same environment for "
                    "both engines):", "",
                "| engine | waiting | quiet | busy |", "|---|---|---|---|"]
        cell = {(r["engine"], r["wait"], r["burners"] > 0): r["decode_tps"] for r in b["rows"]}
        for engine, wait in sorted({(r["engine"], r["wait"]) for r in b["rows"]}):
            label = {"native_nxfp4_emb": "native, nxfp4 + emb", "llama_cpp": "llama.cpp, Q4_1"}.get(engine, engine)
            out.append(f"| {label} | {wait} | {_num(cell.get((engine, wait, False)), '.1f')} | "
                       f"{_num(cell.get((engine, wait, True)), '.1f')} |")
    h = data.get("host")
    if h:
        out += ["", "`elastiq host ARTIFACT --budget <smallest option> --prompt ... --max-new-tokens 32`, start to exit "
                    "(llama.cpp: the same chat prompt through llama-cpp-python, 32 tokens):", "",
                "| command | seconds | peak RSS MiB |", "|---|---|---|"]
        for k, label in (("native", "elastiq host --engine native"), ("torch", "elastiq host --engine torch"),
                         ("llama_cpp", "llama.cpp (llama-cpp-python)")):
            if k in h:
                out.append(f"| {label} | {h[k]['seconds']:.2f} | {mib(h[k]['peak_rss_bytes'])} |")
    return "\n".join(out)


def replace_between(doc: Path, begin: str, end: str, body: str) -> None:
    """Replace what stands between the markers ``begin`` and ``end`` in ``doc`` with ``body``."""
    text = doc.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{doc} has no {begin} ... {end} section")
    head, _, rest = text.partition(begin)
    doc.write_text(f"{head}{begin}\n{body}\n{end}{rest.partition(end)[2]}")


def write_section(doc: Path, name: str, body: str) -> None:
    """Replace what stands between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``doc``."""
    replace_between(doc, f"<!-- {name}:begin -->", f"<!-- {name}:end -->", body)


def calibrate_table(data: dict) -> str:
    m, f = data["meta"], data["float_ppl"]
    out = [f"{m['model']}, {m['max_tokens']} tokens of {m['text']}, context {m['context']}; calibration: "
           f"{data.get('calib_tokens_seen', m['calib_tokens'])} tokens of {m['calib_text']} in windows of "
           f"{m['calib_context']}; torch {m['torch']}, {m['threads']} threads, {m['date']}. Float perplexity {f:.3f}.", "",
           f"GPTQ: sequential {m['gptq'].get('sequential')}, sink weight {m['gptq'].get('sink_weight')}, "
           f"damping {m['gptq']['damp']}, act-order {m['gptq']['act_order']}.", "",
           "| key | format | RTN perplexity | GPTQ perplexity | GPTQ / float | GPTQ seconds |",
           "|---|---|---|---|---|---|"]
    for key in ("int2", "int3", "int3x8", "int4", "int4x16", "nxfp4", "nvfp4"):
        r = data.get(key)
        if r:
            out.append(f"| `{key}` | `{r['format']}` | {r['ppl_rtn']:,.3f} | {r['ppl_gptq']:,.3f} | "
                       f"{r['ppl_gptq'] / f:.2f}x | {r['seconds']:.0f} |")
    dev = [(k, r) for k, r in data.items() if isinstance(r, dict) and "dev_ppl_gptq" in r]
    if dev:
        out += ["", "| key | GPTQ perplexity on held-out wiki-calib (tokens 16,384-20,479) |", "|---|---|"]
        out += [f"| `{k}` | {r['dev_ppl_gptq']:,.3f} |" for k, r in dev]
    extra = [(k, mk, v) for k, r in data.items() if isinstance(r, dict) and "ppl_rtn" in r
             for mk, v in r.items() if mk.startswith("ppl_") and mk not in ("ppl_rtn", "ppl_gptq") and v is not None]
    if extra:
        out += ["", "| key | method | perplexity | on held-out wiki-calib |", "|---|---|---|---|"]
        out += [f"| `{k}` | {mk[4:].replace('_', '+', 1)} | {v:,.3f} | {_num(data[k].get('dev_' + mk), ',.3f')} |"
                for k, mk, v in extra]
    p = data.get("peer")
    if p and "ppl" in p:
        out += ["", "| int4 g128 | perplexity | calibration seconds |", "|---|---|---|",
                *[f"| elastiq GPTQ (`{k}`) | {data[k]['ppl_gptq']:.3f} | {data[k]['seconds']:.0f} |" for k in ("int4", "int4x16") if k in data],
                f"| {p['name']} | {p['ppl']:.3f} | {p['seconds']:.0f} |"]
    elif p:
        out += ["", f"Peer {p.get('name')}: did not run ({p.get('error', '')[-200:]!r})."]
    lrec = [(k.removesuffix("_lrec"), r) for k, r in data.items() if k.endswith("_lrec") and isinstance(r, dict)]
    if lrec:
        out += ["", "| GPTQ + LREC | format | base | rank | steps | calibration tokens | perplexity before training | after | after / float | set-up s | training s |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        out += [f"| `{k}` | `{lr['format']}` | {lr['method']} | {lr['rank']} | {lr['steps']} | {lr['calib_tokens']} | "
                f"{_num(lr['ppl_base_with_svd_adapters'], ',.1f')} | {lr['ppl']:,.2f} | {lr['ppl'] / f:.2f}x | {lr['setup_seconds']:.0f} | "
                f"{lr['train_seconds']:.0f} |" for k, lr in lrec]
    return "\n".join(x for x in out if x is not None)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    render = {"formats": formats_table, "nxfp": nxfp_table, "quality": quality_table, "kernels": kernels_table,
              "profile": profile_table, "lrec": lrec_table, "elastic": elastic_table, "lrec_setup": lrec_setup_table,
              "runtime": runtime_table, "calibrate": calibrate_table}.get(which)
    if render is None:
        sys.exit("usage: bench/markdown.py formats|nxfp|quality|kernels|profile|lrec|lrec_setup|elastic|runtime|calibrate [RESULTS.json]")
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else RESULTS / f"{which}.json"
    print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
