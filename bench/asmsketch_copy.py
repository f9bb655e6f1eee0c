"""The copy-task check of the asmsketch guess model: the model, built from its default config, learns to
copy random instruction lines (source = target). A seq2seq model that conditions on its source gets
to near-zero loss and exact copies in about a minute; one that ignores it (the earlier init) stalls
near 1.3, the entropy of the lines' contents.

    python bench/asmsketch_copy.py --seconds 60

Writes bench/results/asmsketch_copy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from asmsketch import train  # noqa: E402
from asmsketch.tokens import detokenize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    guesser, log = train.train(train.copy_pairs(4000), config={"dropout": 0.0}, seconds=args.seconds,
                               max_tokens=1500, lr=args.lr)
    held_out = train.copy_pairs(50, seed=1)
    exact = sum(detokenize(guesser.translate(p.arm, "riscv", beam=1)[1][0].tokens) == p.arm for p in held_out)
    losses = log["losses"]
    out = {"seconds": round(time.time() - t0, 1), "train_seconds": round(log["seconds"], 1), "steps": log["steps"],
           "params": log["params"], "config": guesser.model.c.__dict__, "lr": args.lr,
           "loss_first": losses[0], "loss_last20_mean": round(sum(losses[-20:]) / len(losses[-20:]), 4),
           "loss_every_50": losses[::50], "held_out": len(held_out), "exact_copies_greedy": exact}
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/asmsketch_copy.json", "w") as fh:
        json.dump(out, fh, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "loss_every_50"}))


if __name__ == "__main__":
    main()
