"""The asmsketch command: transpile a .s file between AArch64 and RISC-V, train the model, build a corpus."""

from __future__ import annotations

import argparse
import os
import re
import sys

from .errors import AsmSketchError
from .isa import ARM, ISAS, RISCV, other

MAX_INPUT_BYTES = 1 << 20


def detect_isa(text: str) -> str:
    arm = len(re.findall(r"\b[xw]([0-9]|[12][0-9]|30)\b|\bxzr\b|\bwzr\b", text))
    rv = len(re.findall(r"\b(a[0-7]|t[0-6]|s([0-9]|1[01])|zero|ra)\b", text))
    if arm == rv == 0:
        raise AsmSketchError("cannot tell the ISA of the input (no AArch64 or RISC-V registers found): pass --from")
    return ARM if arm > rv else RISCV


def read_input(path: str) -> str:
    if not os.path.isfile(path):
        raise AsmSketchError(f"'{path}' is not a file: give the path of a .s assembly file")
    if os.path.getsize(path) > MAX_INPUT_BYTES:
        raise AsmSketchError(f"'{path}' is larger than 1 MiB: split it into smaller files")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError:
        raise AsmSketchError(f"'{path}' is not UTF-8 text: give an assembly (.s) file") from None


def write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp-asmsketch"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def cmd_transpile(args) -> int:
    from .asm import normalize_labels, parse_functions
    from .corpus import wrap_function
    from .data import model_dir
    from .model import load
    from .pipeline import ALIGN, sketch_candidate, solver_checked_first, verify
    from .tokens import tokenize_text
    from .toolchain import assemble, require_tool

    require_tool("llvm-mc")
    text = read_input(args.file)
    src_isa = args.source or detect_isa(text)
    tgt_isa = args.to or other(src_isa)
    if tgt_isa == src_isa:
        raise AsmSketchError(f"source and target are both {src_isa}: choose --to {other(src_isa)}")
    funcs = parse_functions(src_isa, text, os.path.basename(args.file))
    assemble(text, src_isa)  # unsupported instructions are named by the assembler here
    guesser = load(args.model or model_dir())
    out_text, all_ok = ["\t.text"], True
    for f in funcs:
        f = normalize_labels(f)
        body = f.text(with_header=False)
        toks = tokenize_text(body)
        unknown = sorted({t for t in toks if t not in guesser.vocab.stoi})
        if unknown:
            raise AsmSketchError(f"function '{f.name}': {', '.join(unknown[:5])} not supported by the model "
                                 f"(it knows the integer subset listed in docs/asmsketch.md)")
        src_toks, hyps = guesser.translate(body, tgt_isa, beam=args.beam)
        if not hyps:
            raise AsmSketchError(f"function '{f.name}' is too long for the model ({len(toks)} tokens)")
        cands = solver_checked_first([sketch_candidate(h, src_toks, f, tgt_isa, args.threshold, ALIGN,
                                                       opcode_holes=args.opcode_holes) for h in hyps],
                                     tgt_isa)
        ok = verify(src_isa, body, tgt_isa, [c.body for c in cands], nargs=8, n_inputs=args.inputs)
        print(f"function {f.name}: {len(cands)} candidates")
        for i, (c, passed) in enumerate(zip(cands, ok)):
            spans = "; ".join(f"target lines {s.target_lines[0] + 1}-{s.target_lines[1]} <- source lines "
                              f"{(s.source_lines[0] + 1, s.source_lines[1]) if s.source_lines else '?'}: "
                              f"{s.holes_said()} {s.status}" for s in c.sketches) or "no holes"
            print(f"  #{i + 1} score {c.score:.3f} {'PASS' if passed else 'fail'} | {spans}")
        best = next((c for c, p in zip(cands, ok) if p), None)
        if best is None:
            all_ok = False
            print(f"  no candidate for {f.name} gives the source's results: none written")
            continue
        out_text.append(wrap_function(f.name, best.body).replace("\t.text\n", ""))
        print(f"  chosen #{cands.index(best) + 1}: verified by execution on {args.inputs} random inputs")
    result = "\n".join(out_text) + "\n"
    if args.output:
        write_atomic(args.output, result)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(result)
    return 0 if all_ok else 1


def cmd_train(args) -> int:
    import torch

    from . import corpus, data, model, train
    from .progress import Progress
    torch.set_num_threads(1)
    seeds = list(data.TRAIN_SEEDS)[: args.functions]
    bar = Progress(len(seeds), "compiling corpus")
    pairs = corpus.build_pairs(seeds, progress=bar.update)
    bar.close()
    bar = Progress(1.0, "training")
    g, log = train.train(pairs, seconds=args.minutes * 60,
                         progress=lambda f, loss, step: bar.set(f, f"step {step} loss {loss:.3f}"))
    bar.close()
    model.save(g.model, g.vocab, args.model or data.model_dir())
    print(f"trained {log['params']:,} parameters for {log['steps']} steps; saved to {args.model or data.model_dir()}")
    return 0


def cmd_corpus(args) -> int:
    from . import corpus
    from .progress import Progress
    seeds = range(args.seed, args.seed + args.functions)
    bar = Progress(args.functions, "compiling")
    pairs = corpus.build_pairs(seeds, progress=bar.update)
    bar.close()
    bad = corpus.check_pairs(pairs, n_inputs=args.inputs)
    corpus.save_pairs(pairs, args.output)
    print(f"{len(pairs)} pairs written to {args.output}; {len(bad)} disagree under unicorn")
    return 0 if not bad else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="asmsketch", description="Guess & Sketch transpilation between "
                                 "AArch64 and RISC-V assembly (integer subset).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("transpile", help="translate the functions of a .s file and verify them by execution")
    t.add_argument("file")
    t.add_argument("--from", dest="source", choices=ISAS)
    t.add_argument("--to", choices=ISAS)
    t.add_argument("-o", "--output")
    t.add_argument("--model", help="model directory (default: the cache)")
    t.add_argument("--beam", type=int, default=5)
    t.add_argument("--threshold", type=float, default=0.9, help="confidence below which a token becomes a hole")
    t.add_argument("--opcode-holes", action="store_true",
                   help="also put holes on unsure opcodes, chosen among the model's next choices (slower)")
    t.add_argument("--inputs", type=int, default=100, help="random inputs for the execution check")
    r = sub.add_parser("train", help="build the tier A corpus and train the guess model")
    r.add_argument("--functions", type=int, default=6000)
    r.add_argument("--minutes", type=float, default=25)
    r.add_argument("--model")
    c = sub.add_parser("corpus", help="write tier A pairs (JSON lines) and check them under unicorn")
    c.add_argument("output")
    c.add_argument("--functions", type=int, default=100)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--inputs", type=int, default=100)
    args = ap.parse_args(argv)
    try:
        return {"transpile": cmd_transpile, "train": cmd_train, "corpus": cmd_corpus}[args.cmd](args)
    except AsmSketchError as e:
        print(f"asmsketch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def app() -> None:
    sys.exit(main())


if __name__ == "__main__":
    app()
