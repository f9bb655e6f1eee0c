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
import sys
import time
from pathlib import Path

# bench/ is first on sys.path, and its kernels.py would shadow the `kernels` package transformers imports
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402


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
    from gptqmodel import GPTQModel, QuantizeConfig

    torch.set_num_threads(args.threads)
    data = torch.load(args.windows)
    calib = [{"input_ids": w.tolist(), "attention_mask": [1] * len(w)} for w in data["calib"]]
    cfg = QuantizeConfig(bits=args.bits, group_size=args.group_size, sym=True, desc_act=False)
    stamp = Path(args.out_dir) / "quantize_seconds.json"
    if stamp.is_file():  # quantized by an earlier run: score it again
        seconds = json.loads(stamp.read_text())["seconds"]
    else:
        t0 = time.perf_counter()
        model = GPTQModel.load(args.model_dir, cfg, device="cpu", dtype=torch.float32)
        model.quantize(calib, batch_size=1)
        seconds = time.perf_counter() - t0
        model.save(args.out_dir)
        del model
        stamp.write_text(json.dumps({"seconds": seconds}))
    # Its CPU kernels (TorchLinear) take float16 / bfloat16 only: decode its saved codes to
    # float32 weights instead, so that it is scored in float32 as elastiq's rows are.
    float_model, rel = with_peer_weights(args.model_dir, Path(args.out_dir), args.bits)
    nll, count = 0.0, 0
    with torch.no_grad():
        for w, n in data["eval"]:
            logits = float_model(input_ids=w[None]).logits[0, -n - 1:-1].float()
            nll -= float(Fn.log_softmax(logits, -1).gather(1, w[-n:, None]).sum())
            count += n
    print(json.dumps({"name": f"GPTQModel {gptqmodel.__version__}", "ppl": math.exp(nll / count), "seconds": seconds,
                      "tokens": count, "weight_relative_rms_error": rel,
                      "config": {"bits": args.bits, "group_size": args.group_size, "sym": True, "desc_act": False,
                                 "damp_percent": cfg.damp_percent}}))


def _unpack(x: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """int32 words holding 32 // bits codes each, lowest bits first, spread along ``dim``."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    if dim == 0:
        return ((x[:, None, :] >> shifts[None, :, None]) & ((1 << bits) - 1)).reshape(-1, x.shape[1])
    return ((x[:, :, None] >> shifts[None, None, :]) & ((1 << bits) - 1)).reshape(x.shape[0], -1)[:, :x.shape[1] * per]


def with_peer_weights(model_dir: str, out_dir: Path, bits: int):
    """The float32 model with every GPTQ-packed linear weight of ``out_dir`` decoded into it
    (the GPTQ checkpoint layout: qweight (in/p, out), qzeros (groups, out/p), scales, g_idx;
    format "gptq" stores zero - 1), and the weights' relative RMS error against the float ones."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    qcfg = json.loads((out_dir / "quantize_config.json").read_text())
    offset = 1 if qcfg.get("checkpoint_format", qcfg.get("format", "gptq")) == "gptq" else 0
    sd = {}
    for f in sorted(out_dir.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    num = den = 0.0
    for key in [k for k in sd if k.endswith(".qweight")]:
        name = key[: -len(".qweight")]
        q = _unpack(sd[key], bits, 0).float()
        z = _unpack(sd[name + ".qzeros"], bits, 1)[:, : q.shape[1]].float() + offset
        s = sd[name + ".scales"].float()
        g = sd[name + ".g_idx"].long() if name + ".g_idx" in sd else torch.arange(q.shape[0]) // qcfg["group_size"]
        w = (s[g] * (q - z[g])).T.contiguous()
        lin = model.get_submodule(name)
        num += float(((w - lin.weight) ** 2).sum())
        den += float((lin.weight ** 2).sum())
        with torch.no_grad():
            lin.weight.copy_(w)
    return model, math.sqrt(num / den)


if __name__ == "__main__":
    main()
