"""Builds the tier A training corpus and trains the asmsketch guess model (cached).

    python bench/asmsketch_train.py --minutes 30
    python bench/asmsketch_train.py --minutes 52 --d 256 --layers 3 --heads 8 --ff 512 --lr 1.5e-3 --warmup 200 \
        --max-example-tokens 200 --results bench/results/asmsketch_train_model2.json   # the 4.2 M comparison
    python bench/asmsketch_train.py --copy-task --steps 400

Writes the model to .cache/asmsketch/model (or $ASMSKETCH_CACHE/model) and
bench/results/asmsketch_train.json (corpus size, parameters, steps, loss curve summary).
--copy-task is the check that the model conditions on its source: the same model learns to copy
random instruction lines (source = target), is scored by exact greedy copies of 50 held-out ones and
writes bench/results/asmsketch_copy.json (a model that ignores its source stalls near loss 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from asmsketch import corpus, data, model, train  # noqa: E402
from asmsketch.progress import Progress  # noqa: E402
from asmsketch.tokens import detokenize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--functions", type=int, default=len(data.TRAIN_SEEDS))
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared 2-core machine")
    ap.add_argument("--max-example-tokens", type=int, default=120,
                    help="train on pairs whose sides fit (short pairs teach the alignment fastest)")
    ap.add_argument("--batch-tokens", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--copy-task", action="store_true", help="train on copying random lines instead (a check)")
    ap.add_argument("--steps", type=int, help="a step budget instead of --minutes (load-independent)")
    ap.add_argument("--d", type=int, default=model.Config.d, help="model width")
    ap.add_argument("--heads", type=int, default=model.Config.heads)
    ap.add_argument("--layers", type=int, default=model.Config.enc_layers, help="encoder and decoder layers each")
    ap.add_argument("--ff", type=int, help="feed-forward width (default 3 d)")
    ap.add_argument("--warmup", type=int, help="linear warm-up steps, then cosine to lr/10 (default 100, or a tenth "
                    "of --steps)")
    ap.add_argument("--results", help="results file (default bench/results/asmsketch_train.json; the copy "
                    "task: asmsketch_copy.json)")
    ap.add_argument("--model-dir", help="where to save the model (default: the cache's model, which the "
                    "benchmarks and the command load)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(data.cache_dir(), exist_ok=True)
    path = os.path.join(data.cache_dir(), "train_pairs.jsonl")
    seeds = list(data.TRAIN_SEEDS)[: args.functions]
    if args.copy_task:
        pairs = train.copy_pairs(4000)
    elif os.path.exists(path):
        pairs = corpus.load_pairs(path)
    else:
        bar = Progress(len(seeds), "compiling corpus")
        pairs = corpus.build_pairs(seeds, progress=bar.update)
        bar.close()
        corpus.save_pairs(pairs, path)
    bar = Progress(1.0, "training")
    t0 = time.time()
    cfg = {"dropout": 0.0, "d": args.d, "heads": args.heads, "enc_layers": args.layers, "dec_layers": args.layers,
           "ff": args.ff or 3 * args.d}
    guesser, log = train.train(pairs, config=cfg, seconds=args.minutes * 60, max_steps=args.steps, warmup=args.warmup,
                               max_tokens=args.batch_tokens, lr=args.lr, max_example_tokens=args.max_example_tokens,
                               progress=lambda f, loss, step: bar.set(f, f"step {step} loss {loss:.3f}"))
    bar.close()
    losses = log["losses"]
    tail = losses[-50:]
    out = {"pairs": len(pairs), "functions": 0 if args.copy_task else len(seeds), "examples": log["examples"],
           "params": log["params"],
           "steps": log["steps"], "epochs_started": log["epochs"], "seconds": round(time.time() - t0, 1),
           "threads": args.threads, "config": guesser.model.c.__dict__, "lr": args.lr,
           "batch_tokens": args.batch_tokens, "max_example_tokens": args.max_example_tokens, "warmup": args.warmup,
           "load_average_end": [round(x, 1) for x in os.getloadavg()],
           "loss_first": losses[0] if losses else None, "loss_last50_mean": sum(tail) / max(1, len(tail)),
           "loss_every_50": losses[::50]}
    if args.copy_task:
        held_out = train.copy_pairs(50, seed=1)
        out["held_out"] = len(held_out)
        out["exact_copies_greedy"] = sum(detokenize(guesser.translate(p.arm, "riscv", beam=1)[1][0].tokens) == p.arm
                                         for p in held_out)
    else:
        out["model_dir"] = os.path.relpath(args.model_dir or data.model_dir())
        model.save(guesser.model, guesser.vocab, args.model_dir or data.model_dir())
    os.makedirs("bench/results", exist_ok=True)
    name = args.results or f"bench/results/{'asmsketch_copy.json' if args.copy_task else 'asmsketch_train.json'}"
    if os.path.exists(name):  # earlier runs stay, newest first, under previous_runs
        with open(name) as fh:
            old = json.load(fh)
        out["previous_runs"] = [{k: v for k, v in old.items() if k != "previous_runs"}] + old.get("previous_runs", [])
    with open(name, "w") as fh:
        json.dump(out, fh, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k not in ("loss_every_50", "previous_runs")}))


if __name__ == "__main__":
    main()
