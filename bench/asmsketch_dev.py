"""Why do (or don't) the model's confidence and alignment place the holes well? Measured on the dev split
(data.DEV_SEEDS), never the test split; writes bench/results/asmsketch_dev.json.

    python bench/asmsketch_dev.py --functions 100          # beams (cached), diagnosis, λ sweep
    python bench/asmsketch_dev.py --skip-oracle --sweep-thresholds "" --out F   # diagnosis + beam pass only

Diagnosis, per beam candidate whose instruction skeleton (opcodes per line) equals the compiled
reference: which operands differ from the reference ("wrong"), how many of them the confidence holes
cover against random holes of the same count and kinds, and how many wrong operands sit where no hole may
go (outside pure blocks, or destinations). A candidate whose skeleton differs cannot be fixed by holes.
The sweep runs Guess & Sketch and the random-holes ablation on the same candidates for each λ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from asmsketch import data, evaluate  # noqa: E402
from asmsketch.asm import Imm, Reg, Shift  # noqa: E402
from asmsketch.errors import AsmSketchError  # noqa: E402
from asmsketch.isa import REGS, canonical_reg  # noqa: E402
from asmsketch.pipeline import (ALIGN, NO_ALIGN, RANDOM_HOLES, aligned_source_spans,  # noqa: E402
                                confidence_holes, opcode_options, parse_body, positional_source_spans,
                                sketch_candidate, solver_checked_first)
from asmsketch.progress import Progress  # noqa: E402
from asmsketch.semantics import pure_blocks  # noqa: E402
from asmsketch.sketch import immediate_operands, register_operands  # noqa: E402
from asmsketch.tokens import detokenize, roles  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transpile import held_out_pairs  # noqa: E402

OUT = "bench/results/asmsketch_dev.json"


def beams(pairs, guesser, path):
    """Beam-5 hypotheses of every dev function in both directions, cached (they do not depend on λ)."""
    got = {}
    if os.path.exists(path):
        with open(path, "rb") as fh:
            got = pickle.load(fh)
    todo = [(s, t, p) for s, t in evaluate.DIRECTIONS for p in pairs if (s, p.id) not in got]
    bar = Progress(len(todo), "dev beams")
    for s, t, p in todo:
        got[(s, p.id)] = guesser.translate(p.text(s), t, beam=5)
        bar.update(1)
    bar.close()
    if todo:
        with open(path, "wb") as fh:
            pickle.dump(got, fh)
    return got


def _operand_key(isa, a):
    if isinstance(a, Reg):
        return ("reg", canonical_reg(isa, a.name))
    return ("other", str(a))


def diagnose(pairs, got, thresholds, seed=0):
    """Where the wrong operands are, against where the confidence holes and random holes go."""
    out = {}
    for s, t in evaluate.DIRECTIONS:
        d = f"{s}_to_{t}"
        rows = {"candidates": 0, "unparsable": 0, "skeleton_differs": 0, "line_count_differs": 0,
                "skeleton_same": 0, "exact": 0,
                "wrong_imm": 0, "wrong_reg_read": 0, "wrong_other": 0, "wrong_outside_pure": 0,
                "all_wrong_holeable": 0, "by_threshold": {},
                # same lines and operand counts, other opcodes: what opcode holes (λ = 0.9) may repair
                "opcodes_differ_only": 0, "wrong_opcodes": 0, "wrong_opcode_among_options": 0,
                "wrong_opcode_unsure": 0, "cands_every_opcode_among_unsure_options": 0}
        per_lam = {lam: {"holes_imm": 0, "holes_reg": 0, "covered_conf": 0, "covered_random": 0,
                         "cands_all_covered_conf": 0, "cands_all_covered_random": 0} for lam in thresholds}
        rng = random.Random(seed)
        for p in pairs:
            src_toks, hyps = got[(s, p.id)]
            ref = parse_body(t, p.text(t))
            for h in hyps:
                rows["candidates"] += 1
                try:
                    f = parse_body(t, detokenize(h.tokens))
                except AsmSketchError:
                    rows["unparsable"] += 1
                    continue
                if [(i.op, len(i.args)) for i in f.body] != [(i.op, len(i.args)) for i in ref.body]:
                    rows["skeleton_differs"] += 1
                    rows["line_count_differs"] += len(f.body) != len(ref.body)
                    if [len(i.args) for i in f.body] == [len(i.args) for i in ref.body]:
                        _opcode_stats(rows, h, f, ref, t)
                    continue
                rows["skeleton_same"] += 1
                blocks = pure_blocks(f)
                imms = {x for b in blocks for x in immediate_operands(f, *b)}
                regs = {x for b in blocks for x in register_operands(f, *b)}
                wrong = _wrong_operands(t, f, ref)
                if not wrong:
                    rows["exact"] += 1
                    continue
                holeable = {(li, k) for li, k, _ in wrong if any(x.line == li and x.operand == k for x in imms | regs)}
                rows["wrong_imm"] += sum(kd == "imm" for *_, kd in wrong)
                rows["wrong_reg_read"] += sum(kd == "reg" for *_, kd in wrong)
                rows["wrong_other"] += sum(kd == "other" for *_, kd in wrong)
                rows["wrong_outside_pure"] += len(wrong) - len(holeable)
                rows["all_wrong_holeable"] += len(holeable) == len(wrong)
                wl = {(li, k) for li, k, _ in wrong}
                for lam in thresholds:
                    hi, hr = confidence_holes(h, f, t, blocks, lam)
                    conf = {(x.line, x.operand) for x in hi | hr}
                    ri = set(rng.sample(sorted(imms, key=lambda x: (x.line, x.operand)), min(len(imms), len(hi))))
                    rr = set(rng.sample(sorted(regs, key=lambda x: (x.line, x.operand)), min(len(regs), len(hr))))
                    rand = {(x.line, x.operand) for x in ri | rr}
                    q = per_lam[lam]
                    q["holes_imm"] += len(hi)
                    q["holes_reg"] += len(hr)
                    q["covered_conf"] += len(wl & conf)
                    q["covered_random"] += len(wl & rand)
                    q["cands_all_covered_conf"] += wl <= conf
                    q["cands_all_covered_random"] += wl <= rand
        rows["by_threshold"] = {str(k): v for k, v in per_lam.items()}
        rows["sketched_blocks"] = _block_stats(pairs, got, s, t, 0.9)
        out[d] = rows
    return out


def _opcode_stats(rows, h, f, ref, t, threshold=0.9):
    """A candidate whose lines differ from the reference in opcodes only: are the wrong ones among the
    model's options at that line (opcode_options), and unsure (below λ, where opcode holes go)?"""
    opts = opcode_options(h, f, pure_blocks(f), roles(h.tokens, REGS[t]))
    bad = [li for li, (a, b) in enumerate(zip(f.body, ref.body)) if a.op != b.op]
    among = [li for li in bad if li in opts and ref.body[li].op in opts[li][0]]
    unsure = [li for li in among if opts[li][1] < threshold]
    rows["opcodes_differ_only"] += 1
    rows["wrong_opcodes"] += len(bad)
    rows["wrong_opcode_among_options"] += len(among)
    rows["wrong_opcode_unsure"] += len(unsure)
    rows["cands_every_opcode_among_unsure_options"] += len(unsure) == len(bad)


def _block_stats(pairs, got, s, t, threshold):
    """Over every candidate's pure blocks with a confidence hole: how many operands a hole may go on,
    how many are holes, whether the source has one pure block only (nothing for alignment to choose),
    and whether the aligned source block is the positional one (what the no-alignment ablation takes)."""
    q = {"blocks": 0, "holeable_operands": 0, "holes": 0, "source_has_one_pure_block": 0,
         "aligned_is_positional": 0}
    for p in pairs:
        src_toks, hyps = got[(s, p.id)]
        sf = parse_body(s, p.text(s))
        sb = pure_blocks(sf)
        sr = roles(src_toks[1:], REGS[s])
        sr = [type(sr[0])(-1, -1, "special")] + sr
        for h in hyps:
            try:
                f = parse_body(t, detokenize(h.tokens))
            except AsmSketchError:
                continue
            tr = roles(h.tokens, REGS[t])
            if sum(r.kind == "op" for r in tr) != len(f.body):
                continue
            tb = pure_blocks(f)
            hi, hr = confidence_holes(h, f, t, tb, threshold, tr)
            for b in tb:
                n = sum(b[0] <= x.line < b[1] for x in hi | hr)
                if not n:
                    continue
                q["blocks"] += 1
                q["holes"] += n
                q["holeable_operands"] += len(immediate_operands(f, *b)) + len(register_operands(f, *b))
                q["source_has_one_pure_block"] += len(sb) == 1
                al = aligned_source_spans(h, [i for i, r in enumerate(tr) if b[0] <= r.line < b[1]], sr, sb)
                po = positional_source_spans(f, b, sf, sb)
                q["aligned_is_positional"] += bool(al) and bool(po) and al[-1] == po[0]
    return q


def _wrong_operands(t, f, ref):
    """(line, operand, kind) of the operands of f that differ from the reference (same skeleton)."""
    wrong = set()
    for li, (a_ins, r_ins) in enumerate(zip(f.body, ref.body)):
        for k, (a, b) in enumerate(zip(a_ins.args, r_ins.args)):
            if _operand_key(t, a) != _operand_key(t, b):
                wrong.add((li, k, "imm" if isinstance(a, (Imm, Shift)) else
                           "reg" if isinstance(a, Reg) and k > 0 else "other"))
    return wrong


def oracle(pairs, got, threshold):
    """Same-skeleton candidates whose wrong operands all lie where holes may go: does the sketch fix them
    when the holes are exactly the wrong operands (an oracle's confidence), with and without alignment,
    and with the model's own confidence holes? Separates hole placement from alignment and solving."""
    runner = evaluate.Runner(20, 0)
    out = {}
    for s, t in evaluate.DIRECTIONS:
        d = f"{s}_to_{t}"
        q = {"fixable": 0, "oracle_align": 0, "oracle_no_align": 0, "confidence": 0, "random": 0,
             "oracle_fail_status": {}}
        for p in pairs:
            src_toks, hyps = got[(s, p.id)]
            ref = parse_body(t, p.text(t))
            src_body = p.text(s)
            src_func = parse_body(s, src_body)
            for h in hyps:
                try:
                    f = parse_body(t, detokenize(h.tokens))
                except AsmSketchError:
                    continue
                if [(i.op, len(i.args)) for i in f.body] != [(i.op, len(i.args)) for i in ref.body]:
                    continue
                wrong = _wrong_operands(t, f, ref)
                blocks = pure_blocks(f)
                ok_places = {(x.line, x.operand) for b in blocks
                             for x in immediate_operands(f, *b) + register_operands(f, *b)}
                if not wrong or not {(li, k) for li, k, _ in wrong} <= ok_places:
                    continue
                q["fixable"] += 1
                rl = roles(h.tokens, REGS[t])
                wl = {(li, k) for li, k, _ in wrong}
                probs = [0.0 if (r.line, r.operand) in wl and r.kind in ("imm", "reg") else 1.0 for r in rl]
                oh = type(h)(h.tokens, h.score, probs, h.attention)
                for key, hyp, mode, lam in (("oracle_align", oh, ALIGN, 0.5), ("oracle_no_align", oh, NO_ALIGN, 0.5),
                                            ("confidence", h, ALIGN, threshold),
                                            ("random", h, RANDOM_HOLES, threshold)):
                    c = sketch_candidate(hyp, src_toks, src_func, t, lam, mode, random.Random(f"0-{p.id}"))
                    ok = runner.passes(s, src_body, t, c.body, p.nargs, p.id)[0]
                    q[key] += ok
                    if key == "oracle_align" and not ok:
                        for st in c.sketches or [None]:
                            k = st.status.split(" (")[0] if st else "no block sketched"
                            q["oracle_fail_status"][k] = q["oracle_fail_status"].get(k, 0) + 1
        out[d] = q
        print(d, q, flush=True)
    return out


def sweep(pairs, got, thresholds, modes, budget_s, opcode_holes=False):
    """pass@1 / pass@5 of Guess & Sketch and of random holes for each λ on the dev functions, and pass@1
    when the sketched candidates are ordered by pipeline.solver_checked_first."""
    runner = evaluate.Runner(20, 0)
    out = {}
    for s, t in evaluate.DIRECTIONS:
        d = f"{s}_to_{t}"
        beam1 = beam5 = 0
        for p in pairs:
            oks = [runner.passes(s, p.text(s), t, detokenize(h.tokens), p.nargs, p.id)[0] for h in got[(s, p.id)][1]]
            beam1 += bool(oks) and oks[0]
            beam5 += any(oks)
        out[d] = {"beam": {"pass_at_1": beam1 / len(pairs), "pass_at_5": beam5 / len(pairs)}}
        print(d, "beam", out[d]["beam"], flush=True)
        for lam in thresholds:
            for mode in modes:
                bar = Progress(len(pairs), f"{d} λ={lam} {mode}")
                p1 = p5 = r1 = 0
                t0 = time.time()
                for p in pairs:
                    src_toks, hyps = got[(s, p.id)]
                    src_body = p.text(s)
                    src_func = parse_body(s, src_body)
                    rng = random.Random(f"0-{p.id}")
                    deadline = time.time() + budget_s
                    cands = [sketch_candidate(h, src_toks, src_func, t, lam, mode, rng, deadline=deadline,
                                              opcode_holes=opcode_holes) for h in hyps]
                    oks = [runner.passes(s, src_body, t, c.body, p.nargs, p.id)[0] for c in cands]
                    p1 += bool(oks) and oks[0]
                    p5 += any(oks)
                    first = solver_checked_first(cands, t)[0] if cands else None
                    r1 += bool(oks) and oks[cands.index(first)]
                    bar.update(1)
                bar.close()
                key = f"{lam} {mode}" + (" opcode_holes" if opcode_holes else "")
                out[d][key] = {"pass_at_1": p1 / len(pairs), "pass_at_5": p5 / len(pairs),
                               "pass_at_1_reranked": r1 / len(pairs), "seconds": round(time.time() - t0, 1)}
                print(d, key, out[d][key], flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--functions", type=int, default=100)
    ap.add_argument("--thresholds", default="0.5,0.7,0.9,0.97,0.99")
    ap.add_argument("--sweep-thresholds", default="0.9,0.97,0.99")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-oracle", action="store_true")
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--opcode-holes", action="store_true", help="the sweep puts holes on unsure opcodes too")
    ap.add_argument("--out", default=OUT, help="results file (another model's run: another file)")
    args = ap.parse_args()
    from asmsketch.model import load
    torch.set_num_threads(1)
    pairs = held_out_pairs(data.DEV_SEEDS, args.functions)
    guesser = load(data.model_dir())
    tag = hashlib.sha1(open(os.path.join(data.model_dir(), "model.pt"), "rb").read()).hexdigest()[:10]
    got = beams(pairs, guesser, os.path.join(data.cache_dir(), f"dev_beams_{args.functions}_{tag}.pkl"))
    lams = [float(x) for x in args.thresholds.split(",")]
    c = guesser.model.c
    res = {"functions": len(pairs), "diagnosis": diagnose(pairs, got, lams),
           "model": {"params": sum(p.numel() for p in guesser.model.parameters()), "d": c.d,
                     "enc_layers": c.enc_layers, "dec_layers": c.dec_layers, "ff": c.ff, "sha1": tag}}
    print(json.dumps(res, indent=1), flush=True)
    if not args.skip_oracle:
        res["oracle"] = oracle(pairs, got, 0.9)
    if not args.skip_sweep:
        res["sweep"] = sweep(pairs, got, [float(x) for x in args.sweep_thresholds.split(",") if x],
                             (ALIGN, RANDOM_HOLES), args.budget_s, args.opcode_holes)
    old = {}
    if os.path.exists(args.out):
        with open(args.out) as fh:
            old = json.load(fh)
    if old.get("functions") == res["functions"] and old.get("model", {}).get("sha1") == tag:
        for d, rows in old.get("sweep", {}).items():  # a sweep of other settings keeps these rows
            res.setdefault("sweep", {}).setdefault(d, {})
            res["sweep"][d] = {**rows, **res["sweep"][d]}
        res = {**old, **res}  # a run of some parts keeps the others' results (of the same model)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
