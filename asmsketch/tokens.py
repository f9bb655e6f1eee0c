"""Tokenizer for assembly: opcodes, registers and labels stay whole; immediates split into a sign and
single digits, so the model's per-token confidence says which digit it is unsure of.

Each token carries a role (line, operand index, kind) used to turn uncertain tokens into holes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .isa import ARM

PAD, BOS, EOS, UNK, NL = "<pad>", "<bos>", "<eos>", "<unk>", "<nl>"
TO = {ARM: "<to_arm>", "riscv": "<to_riscv>"}
SPECIALS = [PAD, BOS, EOS, UNK, NL, TO[ARM], TO["riscv"]]
_TOKEN = re.compile(r"\.L\w+|[A-Za-z_][\w.]*|\d|[-#\[\](),!:]")


def tokenize_text(body: str) -> list[str]:
    """Tokens of a function body (one instruction or label per line)."""
    out = []
    for line in body.splitlines():
        line = line.strip()
        if not line:
            continue
        out += _TOKEN.findall(line)
        out.append(NL)
    return out


def detokenize(tokens: list[str]) -> str:
    """Inverse of tokenize_text for canonical text."""
    lines, cur = [], []
    for t in tokens + [NL]:
        if t == NL:
            if cur:
                lines.append(_join_line(cur))
            cur = []
        elif t not in SPECIALS:
            cur.append(t)
    return "".join(("" if ln.endswith(":") else "\t") + ln + "\n" for ln in lines)


def _wordish(t: str) -> bool:
    return bool(re.match(r"^[A-Za-z_.]", t))


def _join_line(toks: list[str]) -> str:
    if len(toks) >= 2 and toks[-1] == ":":
        return "".join(toks)
    s = toks[0]
    prev = None
    for i, t in enumerate(toks[1:]):
        if i == 0:
            s += " "
        elif t == "," :
            pass
        elif prev == ",":
            s += " "
        elif _wordish(prev) and (_wordish(t) or t == "#" or t.isdigit()):
            s += " "
        s += t
        prev = t
    return s


@dataclass(frozen=True)
class Role:
    line: int  # instruction index (labels not counted), -1 for label lines / specials
    operand: int  # -1 for the opcode
    kind: str  # op, reg, imm, punct, label, nl


def roles(tokens: list[str], regs: set[str]) -> list[Role]:
    """Role of each token: which instruction and operand it belongs to and what it is."""
    out, line, operand, depth, first, is_label = [], 0, -1, 0, True, False
    for i, t in enumerate(tokens):
        if t == NL:
            out.append(Role(line if not is_label else -1, -1, "nl"))
            if not is_label and not first:
                line += 1
            operand, depth, first, is_label = -1, 0, True, False
            continue
        if first:
            is_label = i + 1 < len(tokens) and tokens[i + 1] == ":"
            first = False
            out.append(Role(-1 if is_label else line, -1, "label" if is_label else "op"))
            operand = 0
            continue
        if is_label:
            out.append(Role(-1, -1, "punct"))
            continue
        if t in "[(":
            depth += 1
        elif t in "])":
            depth -= 1
        if t == "," and depth == 0:
            operand += 1
            out.append(Role(line, -1, "punct"))
            continue
        kind = "reg" if t in regs else "imm" if (t.isdigit() or t == "-") else "label" if t.startswith(".") \
            else "punct"
        out.append(Role(line, operand, kind))
    return out


class Vocab:
    def __init__(self, tokens: list[str]):
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, texts) -> "Vocab":
        seen = dict.fromkeys(SPECIALS + [str(d) for d in range(10)])
        for text in texts:
            for t in tokenize_text(text):
                seen.setdefault(t)
        return cls(list(seen))

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(t, unk) for t in tokens]

    def decode(self, ids) -> list[str]:
        return [self.itos[i] for i in ids]

    def __len__(self):
        return len(self.itos)

    def to_json(self) -> str:
        return json.dumps(self.itos)

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        return cls(json.loads(text))
