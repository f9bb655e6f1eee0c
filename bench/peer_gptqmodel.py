"""The GPTQ peer of bench/calibrate.py: GPTQModel quantizes the float model to int4 with
groups of 128 (symmetric, no act-order, its other settings at their defaults) on the
calibration windows it is given, and the packed model it saves is scored on the given
evaluation windows (the same tokens and protocol as elastiq's rows). Prints one JSON line.

GPTQModel's pins clash with elastiq's (7.7 needs torch >= 2.14.1, 7.6 numpy == 2.2.6), so
it runs in an environment of its own (docs/calibrate.md says how it is made):

    /work/wt/peer-venv/bin/python bench/peer_gptqmodel.py FLOAT_DIR windows.pt OUT_DIR
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as Fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("windows", help="torch file: {'calib': [ids], 'eval': [(ids, n_scored)]}")
    ap.add_argument("out_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    args = ap.parse_args()

    import gptqmodel
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig

    torch.set_num_threads(args.threads)
    data = torch.load(args.windows)
    calib = [{"input_ids": w.tolist(), "attention_mask": [1] * len(w)} for w in data["calib"]]
    cfg = QuantizeConfig(bits=args.bits, group_size=args.group_size, sym=True, desc_act=False)
    t0 = time.perf_counter()
    model = GPTQModel.load(args.model_dir, cfg, device="cpu", dtype=torch.float32)
    model.quantize(calib, batch_size=1)
    seconds = time.perf_counter() - t0
    model.save(args.out_dir)
    del model
    q = GPTQModel.load(args.out_dir, device="cpu", backend=BACKEND.TORCH, dtype=torch.float32)
    nll, count = 0.0, 0
    with torch.no_grad():
        for w, n in data["eval"]:
            logits = q.model(input_ids=w[None]).logits[0, -n - 1:-1].float()
            nll -= float(Fn.log_softmax(logits, -1).gather(1, w[-n:, None]).sum())
            count += n
    print(json.dumps({"name": f"GPTQModel {gptqmodel.__version__}", "ppl": math.exp(nll / count), "seconds": seconds,
                      "tokens": count, "config": {"bits": args.bits, "group_size": args.group_size, "sym": True,
                                                  "desc_act": False, "damp_percent": cfg.damp_percent}}))


if __name__ == "__main__":
    main()
