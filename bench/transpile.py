"""asmsketch benchmark: semantics vs unicorn, corpus agreement, solver trials, and success@k of every
method on held-out functions in both directions. Writes bench/results/transpile.json and the results
section of docs/asmsketch.md.

    python bench/asmsketch_train.py --minutes 30      # once: corpus + model (cached)
    python bench/transpile.py                         # all phases
    python bench/transpile.py --phase eval --functions 50   # one phase (results are merged)
    python bench/transpile.py --phase eval --direction riscv_to_arm   # one direction of it
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # llama_peer

import torch  # noqa: E402

from asmsketch import baseline, corpus, data, evaluate, semcheck, trials  # noqa: E402
from asmsketch.errors import AsmSketchError  # noqa: E402
from asmsketch.pipeline import parse_body  # noqa: E402
from asmsketch.progress import Progress  # noqa: E402

RESULTS = DEFAULT_RESULTS = "bench/results/transpile.json"
DOC = "docs/asmsketch.md"
METHOD_NAMES = {"greedy": "model alone, greedy", "beam": "model alone, beam 5",
                "guess_sketch": "Guess & Sketch", "gs_random_holes": "G&S, random holes (ablation)",
                "gs_no_alignment": "G&S, no alignment (ablation)",
                "gs_opcode_holes": "G&S with opcode holes (option)", "rule_based": "rule-based transpiler (ours)",
                "smollm2_fewshot": "SmolLM2-135M few-shot (stand-in for GPT-4)"}


def load_results() -> dict:
    if os.path.exists(RESULTS):
        with open(RESULTS) as fh:
            return json.load(fh)
    return {}


def save_results(new: dict) -> None:
    """Merge one phase's keys into the results file (per method under directions), atomically; a lock
    lets phases run as separate processes."""
    import fcntl
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    fd = os.open(os.path.dirname(RESULTS), os.O_RDONLY)  # the folder is the lock: no stray file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _merge(new)
    finally:
        os.close(fd)


def _combine_shards(shards: list[dict]) -> dict:
    """One direction's rows from the rows of its shards (disjoint sets of functions)."""
    out = {}
    for m in shards[0]:
        if m == "_sketch":
            times = [t for sh in shards for t in sh[m]["solver_times"]]
            over = {}
            for sh in shards:
                for meth, n in sh[m].get("functions_over_budget", {}).items():
                    over[meth] = over.get(meth, 0) + n
            out[m] = {"blocks_sketched": sum(sh[m]["blocks_sketched"] for sh in shards),
                      "budget_s": shards[0][m].get("budget_s"), "functions_over_budget": over,
                      "blocks_solved": sum(sh[m]["blocks_solved"] for sh in shards),
                      "solver_median_s": statistics.median(times) if times else None}
            continue
        if m == "_passed":
            out[m] = {meth: {at: sorted({i for sh in shards for i in sh[m][meth][at]}) for at in ats}
                      for meth, ats in shards[0][m].items()}
            continue
        n = sum(sh[m]["n"] for sh in shards)
        out[m] = {k: sum(sh[m][k] * sh[m]["n"] for sh in shards) / max(1, n) for k in ("pass_at_1", "pass_at_5")}
        out[m].update(false_passes=sum(sh[m]["false_passes"] for sh in shards), n=n)
    return out


def _merge(new: dict) -> None:
    res = load_results()
    for d, (k, n_shards, rows) in new.pop("eval_shard", {}).items():  # complete shards become the direction
        got = res.setdefault("eval_shards", {}).setdefault(d, {})
        got[f"{k}/{n_shards}"] = rows
        if len(got) == n_shards:
            res.setdefault("directions", {}).setdefault(d, {}).update(_combine_shards(list(got.values())))
            del res["eval_shards"][d]
            if not res["eval_shards"]:
                del res["eval_shards"]
    for d, rows in new.get("directions", {}).items():
        rows.get("_sketch", {}).pop("solver_times", None)
    for k, v in new.items():
        if k == "directions":
            for d, rows in v.items():
                res.setdefault("directions", {}).setdefault(d, {}).update(rows)
        else:
            res[k] = v
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(tmp, RESULTS)


def phase_semantics(res, args):
    out = {}
    for isa in ("arm", "riscv"):
        bar = Progress(len(semcheck.TEMPLATES[isa]) * args.sem_instances, f"semantics {isa}")
        r = semcheck.check_isa(isa, n_instances=args.sem_instances, n_states=args.sem_states, seed=1,
                               progress=bar.update)
        bar.close()
        out[isa] = {"instruction_forms": len(r), "states_per_form": args.sem_instances * args.sem_states,
                    "mismatches": sum(r.values()), "forms_with_mismatch": [t for t, m in r.items() if m]}
    res["semantics"] = out
    res["semantics_mismatches"] = sum(v["mismatches"] for v in out.values())


def phase_corpus(res, args):
    n_funcs = -(-args.corpus_pairs // 3) + 10  # a few functions lose a level (RISC-V constant pools)
    bar = Progress(n_funcs, "corpus: compiling")
    pairs = corpus.build_pairs(range(300_000, 300_000 + n_funcs), progress=bar.update)[: args.corpus_pairs]
    bar.close()
    bar = Progress(len(pairs), "corpus: unicorn check")
    t0 = time.time()
    bad = corpus.check_pairs(pairs, n_inputs=100, progress=bar.update)
    bar.close()
    res["corpus"] = {"pairs": len(pairs), "inputs_per_pair": 100, "disagreements": len(bad),
                     "disagreeing_ids": bad[:20], "check_seconds": round(time.time() - t0, 1),
                     "by_level": {f"O{o}": sum(p.opt == o for p in pairs) for o in corpus.OPT_LEVELS}}


def phase_solver(res, args):
    pool = corpus.build_pairs(range(400_000, 400_000 + args.solver_functions))
    left_out = {}
    ts = trials.make_trials(pool, n=args.solver_blocks, seed=0, stats=left_out)
    bar = Progress(len(ts), "solver: corrupted immediates")
    s = trials.summarize(ts, progress=bar.update)
    bar.close()
    to = trials.make_trials(pool, n=args.solver_opcode, seed=1, opcode=True)
    bar = Progress(len(to), "solver: corrupted opcode")
    o = trials.summarize(to, progress=bar.update)
    bar.close()
    res["solver"] = {"fixed_share": s["fixed_share"], "median_s": s["median_s"], "p90_s": s["p90_s"],
                     "median_cpu_s": s["median_cpu_s"], "load_average": os.getloadavg(), "cores": os.cpu_count(),
                     "blocks": s["n"], "fill_found": s["fill_found"], "fill_fails_execution": s["fill_fails_execution"],
                     "no_fix_reasons": s["no_fix_reasons"], "blocks_not_agreeing_left_out": left_out.get("blocks_not_agreeing", 0),
                     "opcode": {"blocks": o["n"], "no_fix": o["n"] - o["fill_found"],
                                "fill_found_and_passes": o["fill_passes_execution"],
                                "fill_fails_execution": o["fill_fails_execution"]}}


def held_out_pairs(seeds, n):
    """Held-out functions of a split, one optimisation level each (in turn -O0, -O1, -O2)."""
    seeds = list(seeds)[:n]
    allp = {p.id: p for p in corpus.build_pairs(seeds)}
    out = []
    for i, s in enumerate(seeds):
        for k in range(3):
            pid = f"fn{s}-O{(i + k) % 3}"
            if pid in allp:
                out.append(allp[pid])
                break
    return out


def phase_eval(res, args):
    from asmsketch.model import load
    torch.set_num_threads(1)
    guesser = load(data.model_dir())
    c = guesser.model.c
    res["eval_model"] = {"params": sum(p.numel() for p in guesser.model.parameters()),
                         "d": c.d, "heads": c.heads, "enc_layers": c.enc_layers, "dec_layers": c.dec_layers, "ff": c.ff}
    all_pairs = held_out_pairs(data.TEST_SEEDS, args.functions)
    k, n_shards = map(int, args.shard.split("/")) if args.shard else (0, 1)
    pairs = all_pairs[k::n_shards]

    def rule_based(body, s, t):
        return [baseline.transpile(parse_body(s, body))]

    extra = {"rule_based": rule_based}
    bar = Progress((2 if args.direction is None else 1) * len(pairs), "eval")
    t0 = time.time()
    dirs = [d for d in evaluate.DIRECTIONS if args.direction in (None, f"{d[0]}_to_{d[1]}")]
    out = evaluate.evaluate(guesser, pairs, k=5, threshold=args.threshold, extra_methods=extra,
                            progress=bar.update, directions=dirs, budget_s=args.budget_s)
    bar.close()
    if n_shards > 1:
        res["eval_shard"] = {d: (k, n_shards, rows) for d, rows in out.items()}
        out = {}
    res["threshold"] = args.threshold
    prev = load_results().get("eval_seconds")
    res["eval_seconds"] = {**(prev if isinstance(prev, dict) else {}),
                           **{f"{d[0]}_to_{d[1]}" + (f" shard {args.shard}" if args.shard else ""):
                              round(time.time() - t0, 1) for d in dirs}}
    res["test_functions"] = args.functions
    res["test_levels"] = {f"O{o}": sum(p.opt == o for p in all_pairs) for o in corpus.OPT_LEVELS}
    if out:
        res["directions"] = out


def phase_shards(res, args):
    """Combine the eval shards saved so far, complete or not (a run cut short); n says how many."""
    for d, got in load_results().get("eval_shards", {}).items():
        res.setdefault("directions", {})[d] = _combine_shards(list(got.values()))
        res.setdefault("partial_shards", {})[d] = sorted(got)


def llama_chat(gguf: str):
    """A FewShot chat callable backed by llama.cpp (one thread; plain weight buffers where this VM's AMX
    crashes, as bench/llama_peer.py decides), and whether plain buffers were used."""
    import llama_peer
    plain = not llama_peer.extra_buffers_work(gguf)
    if plain:
        llama_peer.plain_buffers()
    import llama_cpp
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=2048, n_threads=1, n_batch=512, verbose=False, seed=0)

    def chat(messages, temperature, seed, max_tokens, stop):
        text = ""
        for chunk in llm.create_chat_completion(messages, temperature=temperature, seed=seed, max_tokens=max_tokens,
                                                stream=True):
            text += chunk["choices"][0]["delta"].get("content") or ""
            if stop(text):
                break
        return text
    return chat, plain


def phase_smollm(res, args):
    from asmsketch import fewshot
    shots = [p for p in corpus.build_pairs(range(600_000, 600_010)) if p.opt == 2][:1]
    chat, plain = llama_chat(fewshot.model_path())
    fs = fewshot.FewShot([(p.arm, p.riscv) for p in shots], chat)
    pairs = held_out_pairs(data.TEST_SEEDS, args.smollm_functions)
    dirs = [d for d in evaluate.DIRECTIONS if args.direction in (None, f"{d[0]}_to_{d[1]}")]
    bar = Progress(len(dirs) * len(pairs), "smollm2 few-shot")
    t0 = time.time()
    stop_at = None if args.smollm_minutes is None else t0 + 60 * args.smollm_minutes
    out = evaluate.evaluate(None, pairs, k=5, extra_methods={"smollm2_fewshot": fs.translate},
                            progress=bar.update, directions=dirs, stop_at=stop_at)
    bar.close()
    res["directions"] = {d: {"smollm2_fewshot": rows["smollm2_fewshot"]} for d, rows in out.items()}
    prev = load_results().get("smollm2_seconds")
    res["smollm2_seconds"] = {**(prev if isinstance(prev, dict) else {}),
                              **{d: round(time.time() - t0, 1) for d in out}}
    prev = load_results().get("smollm2_functions")
    res["smollm2_functions"] = {**(prev if isinstance(prev, dict) else {}),
                                **{d: rows["smollm2_fewshot"]["n"] for d, rows in out.items()}}
    res["smollm2_runtime"] = (f"llama-cpp-python {__import__('llama_cpp').__version__}, one thread, greedy + "
                              f"4 samples at temperature {fewshot.SAMPLE_TEMPERATURE}"
                              + (", plain weight buffers" if plain else ""))


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


def method_order(rows) -> list[str]:
    """A direction's methods in METHOD_NAMES' order, whichever phase wrote a row first."""
    order = list(METHOD_NAMES)
    return sorted((m for m in rows if not m.startswith("_")),
                  key=lambda m: order.index(m) if m in order else len(order))


def plot(res, path="bench/results/transpile.png"):
    """pass@1 / pass@5 per method and direction, as bars."""
    if "directions" not in res:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dirs = list(res["directions"])
    fig, axes = plt.subplots(1, len(dirs), figsize=(6 * len(dirs), 4), sharey=True)
    for ax, d in zip(axes if len(dirs) > 1 else [axes], dirs):
        rows = res["directions"][d]
        names = method_order(rows)
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [100 * rows[m]["pass_at_1"] for m in names], 0.4, label="pass@1")
        ax.bar([i + 0.2 for i in x], [100 * rows[m]["pass_at_5"] for m in names], 0.4, label="pass@5")
        ax.set_xticks(list(x), [METHOD_NAMES.get(m, m).split(" (")[0] for m in names], rotation=35, ha="right",
                      fontsize=7)
        ax.set_title(d.replace("_to_", " → "))
        ax.set_ylabel("% of held-out functions")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _model_said(res):
    m = res.get("eval_model")
    if not m:
        return ""
    return (f" Guess model: {m['params']:,} parameters (d={m['d']}, {m['heads']} heads, {m['enc_layers']}+"
            f"{m['dec_layers']} layers, ff {m['ff']}; `bench/results/asmsketch_train.json`).")


def _budget(res):
    sk = [rows.get("_sketch", {}) for rows in res.get("directions", {}).values()]
    b = next((x.get("budget_s") for x in sk if x.get("budget_s")), None)
    if b is None:
        return "none"
    over = {d: rows.get("_sketch", {}).get("functions_over_budget") for d, rows in res["directions"].items()}
    said = "; ".join(f"{d}: {n}" for d, n in over.items() if n) or "none"
    return f"{b:g} s wall per function and sketch method; functions that reached it: {said}"


PAIRED = (("guess_sketch", "gs_random_holes"), ("guess_sketch", "gs_no_alignment"),
          ("guess_sketch", "gs_opcode_holes"), ("guess_sketch", "beam"))


def paired_lines(rows) -> list[str]:
    """The paired comparison of Guess & Sketch with its ablations and the beam, function by function."""
    passed = rows.get("_passed")
    if not passed:
        return []
    out = ["| G&S against | pass@1: G&S only | other only | both | sign test p | pass@5: G&S only | other only | "
           "both | sign test p |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a, b in PAIRED:
        if a not in passed or b not in passed:
            continue
        pr = evaluate.paired(passed, a, b)
        cells = []
        for at in ("at_1", "at_5"):
            x = pr[at]
            cells += [str(x[f"{a}_only"]), str(x[f"{b}_only"]), str(x["both"]),
                      f"{evaluate.sign_test_p(x[f'{a}_only'], x[f'{b}_only']):.2g}"]
        out.append(f"| {METHOD_NAMES.get(b, b)} | " + " | ".join(cells) + " |")
    return out


def write_doc(res):
    plot(res)
    block = results_block(res)
    with open(DOC) as fh:
        doc = fh.read()
    start, end = "<!-- results start -->", "<!-- results end -->"
    if start in doc and end in doc:
        doc = doc[: doc.index(start) + len(start)] + "\n" + block + "\n" + doc[doc.index(end):]
        tmp = DOC + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(doc)
        os.replace(tmp, DOC)


def results_block(res) -> str:
    """The results section of the docs, as markdown."""
    lines = ["<!-- results: generated by bench/transpile.py -->", "", "![pass@k per method](../bench/results/transpile.png)", ""]
    if "directions" in res:
        lines += [f"Held-out functions: {res.get('test_functions')} per direction "
                  f"(levels {res.get('test_levels')}); λ = {res.get('threshold')}; "
                  "a candidate passes when it returns the source's results on 20 random inputs under unicorn; "
                  "each pass is re-run on 300 fresh inputs and a pass that fails there is a false pass. "
                  "Greedy decoding gives one candidate, so its pass@5 is its pass@1; the rule-based peer also "
                  "gives one. Guess & Sketch and its ablations put first the candidates whose every sketched block "
                  "z3 proved equal to its source block (`pipeline.solver_checked_first`; no execution), so their "
                  f"pass@1 is the first of that order. Solver budget: {_budget(res)}." + _model_said(res), ""]
        if "smollm2_runtime" in res:
            n, sec = res.get("smollm2_functions", {}), res.get("smollm2_seconds", {})
            runs = ", ".join(f"{n[d]} {d.replace('_to_', '→')} in {sec.get(d, 0):.0f} s" for d in n)
            lines += [f"SmolLM2 stand-in: {res['smollm2_runtime']}; the first functions of the held-out list, as "
                      f"many as its wall-time limit allowed: {runs}.", ""]
        for d, rows in res["directions"].items():
            lines += [f"**{d.replace('_to_', ' → ')}**", "", "| method | pass@1 % | pass@5 % | false passes | n |",
                      "|---|---:|---:|---:|---:|"]
            for m in method_order(rows):
                r = rows[m]
                lines.append(f"| {METHOD_NAMES.get(m, m)} | {pct(r['pass_at_1'])} | {pct(r['pass_at_5'])} | "
                             f"{r['false_passes']} | {r['n']} |")
            pl = paired_lines(rows)
            if pl:
                lines += ["", *pl]
            sk = rows.get("_sketch")
            if sk:
                lines += ["", f"Sketched blocks: {sk['blocks_sketched']}, solved: {sk['blocks_solved']}, "
                          f"median solver time {sk['solver_median_s'] and round(sk['solver_median_s'], 3)} s.", ""]
    if "semantics" in res:
        s = res["semantics"]
        lines += ["| semantics check | forms | states each | mismatches |", "|---|---:|---:|---:|"]
        lines += [f"| {isa} | {v['instruction_forms']} | {v['states_per_form']} | {v['mismatches']} |"
                  for isa, v in s.items()]
        lines.append("")
    if "corpus" in res:
        c = res["corpus"]
        lines += [f"Corpus check: {c['pairs']} pairs ({c['by_level']}), {c['inputs_per_pair']} random inputs each: "
                  f"**{c['disagreements']} disagreements**.", ""]
    if "solver" in res:
        s = res["solver"]
        cpu = s.get("median_cpu_s")
        lines += ["| solver trial | blocks | fixed (fill passes execution) | median s, wall | median s, CPU | p90 s, wall "
                  "| fill found but fails execution |",
                  "|---|---:|---:|---:|---:|---:|---:|",
                  f"| 1–3 corrupted immediates | {s['blocks']} | {pct(s['fixed_share'])} % | {s['median_s']:.3f} | "
                  f"{'–' if cpu is None else f'{cpu:.3f}'} | {s['p90_s']:.3f} | {s['fill_fails_execution']} |",
                  f"| corrupted opcode (+ immediate holes) | {s['opcode']['blocks']} | no fix: {s['opcode']['no_fix']}, "
                  f"equivalent fill: {s['opcode']['fill_found_and_passes']} | | | | {s['opcode']['fill_fails_execution']} |",
                  ""]
        if "load_average" in s:
            lines += [f"Wall times on {s['cores']} cores shared with other jobs (load average at the end "
                      f"{', '.join(f'{x:.1f}' for x in s['load_average'])}); CPU time is the solver process's own.", ""]
        if "no_fix_reasons" in s:
            reasons = "; ".join(f"{k}: {v}" for k, v in sorted(s["no_fix_reasons"].items(), key=lambda kv: -kv[1]))
            lines += [f"Corrupted-immediate blocks with no fix, by the solver's reason: {reasons or 'none'}. "
                      f"Left out before sampling: {s['blocks_not_agreeing_left_out']} blocks whose uncorrupted target "
                      "does not compute what its source block computes (the two functions' pure blocks need not "
                      "correspond), so no fill could be right.", ""]
    return "\n".join(lines)


def main():
    global RESULTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=["semantics", "corpus", "solver", "eval", "shards", "smollm", "doc", "all"],
                    default="all")
    ap.add_argument("--functions", type=int, default=200)
    ap.add_argument("--direction", choices=["arm_to_riscv", "riscv_to_arm"],
                    help="eval one direction (two processes can share the work; results are merged)")
    ap.add_argument("--shard", help="K/N: eval functions K, K+N, ... only; the N shards' rows are combined "
                    "when the last one is saved (N processes share a long run)")
    ap.add_argument("--smollm-functions", type=int, default=200)
    ap.add_argument("--smollm-minutes", type=float, help="wall minutes for the SmolLM2 phase: no function starts "
                    "after them (n says how many ran)")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--budget-s", type=float, default=120.0,
                    help="solver wall seconds per function and sketch method (blocks left keep the guess)")
    ap.add_argument("--sem-instances", type=int, default=10)
    ap.add_argument("--sem-states", type=int, default=100)
    ap.add_argument("--corpus-pairs", type=int, default=2000)
    ap.add_argument("--solver-functions", type=int, default=700)
    ap.add_argument("--solver-blocks", type=int, default=500)
    ap.add_argument("--solver-opcode", type=int, default=100)
    ap.add_argument("--results", default=RESULTS, help="results file; another one (another model's run) leaves "
                    "the docs alone")
    args = ap.parse_args()
    RESULTS = args.results
    phases = ["semantics", "corpus", "solver", "eval", "smollm"] if args.phase == "all" else [args.phase]
    for ph in phases:
        if ph == "doc":
            continue
        res = {}
        try:
            globals()[f"phase_{ph}"](res, args)
        except AsmSketchError as e:
            print(f"{ph}: {e}", file=sys.stderr)
            continue
        save_results(res)
    if RESULTS == DEFAULT_RESULTS:
        write_doc(load_results())
    elif args.phase in ("doc", "shards"):
        print(results_block(load_results()))  # another model's run: its tables, for the docs by hand
    print(json.dumps({k: v for k, v in load_results().items() if k in ("semantics_mismatches", "solver")}, indent=1))


if __name__ == "__main__":
    main()
