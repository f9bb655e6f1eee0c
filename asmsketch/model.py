"""The "guess": a small BART-style encoder-decoder (pre-LN transformer, learned positions, tied
embeddings) built from a config and trained here, with beam search that returns each hypothesis'
per-token probabilities and its cross-attention (last decoder layer, averaged over heads).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tokens import BOS, EOS, PAD, TO, Vocab, tokenize_text

N_ALTERNATIVES = 4  # tokens kept per step for the sketch's opcode holes (the chosen one and three others)


@dataclass
class Config:
    vocab: int
    d: int = 128
    heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 2
    ff: int = 384
    max_len: int = 400
    dropout: float = 0.1


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.dk).transpose(1, 2)

    def forward(self, x, k, v, mask=None):
        """x: queries (B,T,d); k, v: already split (B,h,S,dk). Returns (out, weights (B,h,T,S))."""
        q = self.split(self.q(x))
        s = q @ k.transpose(-1, -2) / math.sqrt(self.dk)
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        w = s.softmax(-1)
        out = (self.drop(w) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.o(out), w


class EncoderLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.att = Attention(c.d, c.heads, c.dropout)
        self.n1, self.n2 = nn.LayerNorm(c.d), nn.LayerNorm(c.d)
        self.ff = nn.Sequential(nn.Linear(c.d, c.ff), nn.GELU(), nn.Linear(c.ff, c.d))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, pad_mask):
        h = self.n1(x)
        a, _ = self.att(h, self.att.split(self.att.k(h)), self.att.split(self.att.v(h)), pad_mask)
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.n2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.self_att = Attention(c.d, c.heads, c.dropout)
        self.cross = Attention(c.d, c.heads, c.dropout)
        self.n1, self.n2, self.n3 = nn.LayerNorm(c.d), nn.LayerNorm(c.d), nn.LayerNorm(c.d)
        self.ff = nn.Sequential(nn.Linear(c.d, c.ff), nn.GELU(), nn.Linear(c.ff, c.d))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, mem_kv, src_mask, cache=None, causal=None):
        h = self.n1(x)
        k, v = self.self_att.split(self.self_att.k(h)), self.self_att.split(self.self_att.v(h))
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        a, _ = self.self_att(h, k, v, causal)
        x = x + self.drop(a)
        c, w = self.cross(self.n2(x), *mem_kv, src_mask)
        x = x + self.drop(c)
        return x + self.drop(self.ff(self.n3(x))), w


class Seq2Seq(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.emb = nn.Embedding(c.vocab, c.d)
        self.pos_enc = nn.Embedding(c.max_len, c.d)
        self.pos_dec = nn.Embedding(c.max_len, c.d)
        self.enc = nn.ModuleList(EncoderLayer(c) for _ in range(c.enc_layers))
        self.dec = nn.ModuleList(DecoderLayer(c) for _ in range(c.dec_layers))
        self.n_enc, self.n_dec = nn.LayerNorm(c.d), nn.LayerNorm(c.d)
        # The original Transformer's init: Xavier linears, token vectors N(0, 1/d) scaled by sqrt(d) (the
        # output projection is the tied embedding), positions at unit scale. GPT-2's N(0, 0.02) everywhere,
        # a scale for d=768, left this small model's attention logits near 0: it learnt the target
        # language and ignored its source (a copy task stalled at loss 1.3; bench/asmsketch_copy.py).
        self.scale = math.sqrt(c.d)
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                nn.init.zeros_(mod.bias)
        nn.init.normal_(self.emb.weight, std=c.d ** -0.5)
        nn.init.normal_(self.pos_enc.weight, std=1.0)
        nn.init.normal_(self.pos_dec.weight, std=1.0)

    def encode(self, src, pad_id: int):
        mask = (src == pad_id)[:, None, None, :]
        x = self.emb(src) * self.scale + self.pos_enc(torch.arange(src.shape[1]))
        for layer in self.enc:
            x = layer(x, mask)
        mem = self.n_enc(x)
        kv = [(l.cross.split(l.cross.k(mem)), l.cross.split(l.cross.v(mem))) for l in self.dec]
        return kv, mask

    def decode(self, tgt, kv, src_mask, start: int = 0, caches=None):
        t = tgt.shape[1]
        x = self.emb(tgt) * self.scale + self.pos_dec(torch.arange(start, start + t))
        causal = None
        if caches is None:
            causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        w = None
        for i, layer in enumerate(self.dec):
            x, w = layer(x, kv[i], src_mask, None if caches is None else caches[i], causal)
        return self.n_dec(x) @ self.emb.weight.T, w

    def forward(self, src, tgt_in, pad_id):
        kv, mask = self.encode(src, pad_id)
        logits, _ = self.decode(tgt_in, kv, mask)
        return logits


@dataclass
class Hypothesis:
    tokens: list[str]
    score: float  # length-normalised log-probability
    probs: list[float]  # probability of each emitted token
    attention: list[list[float]]  # per emitted token: weights over source tokens
    # per emitted token: the model's most likely tokens at that step, with their probabilities
    alternatives: list[list[tuple[str, float]]] = field(default_factory=list)


class Guesser:
    """A trained model with its vocabulary: translates function bodies."""

    def __init__(self, model: Seq2Seq, vocab: Vocab):
        self.model, self.vocab = model.eval(), vocab

    def source_tokens(self, body: str, target_isa: str) -> list[str]:
        return [TO[target_isa]] + tokenize_text(body) + [EOS]

    @torch.no_grad()
    def translate(self, body: str, target_isa: str, beam: int = 5, max_new: int | None = None,
                  n_best: int | None = None) -> tuple[list[str], list[Hypothesis]]:
        """Beam search. Returns (source tokens, hypotheses best first)."""
        v, m = self.vocab, self.model
        src_toks = self.source_tokens(body, target_isa)
        if len(src_toks) > m.c.max_len:
            return src_toks, []
        src = torch.tensor([v.encode(src_toks)])
        kv, mask = m.encode(src, v.stoi[PAD])
        max_new = min(max_new or 2 * len(src_toks) + 20, m.c.max_len - 1)
        eos = v.stoi[EOS]
        beams = [([], 0.0, [], [], [])]  # ids, logp, probs, attention rows, alternatives
        caches = [dict() for _ in m.dec]
        last = torch.tensor([[v.stoi[BOS]]])
        done: list[Hypothesis] = []
        for step in range(max_new):
            n = len(beams)
            kv_n = [(k.expand(n, -1, -1, -1), vv.expand(n, -1, -1, -1)) for k, vv in kv]
            logits, w = m.decode(last, kv_n, mask, start=step, caches=caches)
            logp = F.log_softmax(logits[:, -1].float(), -1)
            att = w[:, :, -1].mean(1)  # (n, S)
            top_lp, top_id = logp.topk(beam, -1)
            alt_p, alt_id = logp.topk(min(N_ALTERNATIVES, logp.shape[-1]), -1)
            alt_p, alt_id = alt_p.exp().tolist(), alt_id.tolist()
            cands = []
            for bi, (ids, lp, probs, atts, alts) in enumerate(beams):
                for j in range(beam):
                    cands.append((lp + top_lp[bi, j].item(), bi, top_id[bi, j].item(), top_lp[bi, j].item()))
            cands.sort(key=lambda c: -c[0])
            new, keep = [], []
            for total, bi, tid, tlp in cands:
                ids, _, probs, atts, alts = beams[bi]
                step_alts = [(v.itos[a], p) for a, p in zip(alt_id[bi], alt_p[bi])]
                entry = (ids + [tid], total, probs + [math.exp(tlp)], atts + [att[bi].tolist()], alts + [step_alts])
                if tid == eos:
                    toks = v.decode(entry[0][:-1])
                    done.append(Hypothesis(toks, total / len(entry[0]), entry[2][:-1], entry[3][:-1], entry[4][:-1]))
                else:
                    new.append(entry)
                    keep.append(bi)
                if len(new) == beam:
                    break
            if len(done) >= (n_best or beam) and (not new or max(h.score for h in done) >= new[0][1] / (step + 1)):
                break
            if not new:
                break
            idx = torch.tensor(keep)
            for c in caches:
                c["k"], c["v"] = c["k"][idx], c["v"][idx]
            beams = new
            last = torch.tensor([[b[0][-1]] for b in beams])
        if len(done) < (n_best or beam):  # out of room: unfinished beams still count as (likely wrong) guesses
            for ids, lp, probs, atts, alts in beams[: (n_best or beam) - len(done)]:
                done.append(Hypothesis(v.decode(ids), lp / max(1, len(ids)), probs, atts, alts))
        done.sort(key=lambda h: -h.score)
        return src_toks, done[: (n_best or beam)]


def save(model: Seq2Seq, vocab: Vocab, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, "model.pt.tmp")
    torch.save(model.state_dict(), tmp)
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(asdict(model.c), fh)
    with open(os.path.join(path, "vocab.json"), "w") as fh:
        fh.write(vocab.to_json())
    os.replace(tmp, os.path.join(path, "model.pt"))


def load(path: str) -> Guesser:
    from .errors import AsmSketchError
    try:
        with open(os.path.join(path, "config.json")) as fh:
            c = Config(**json.load(fh))
        with open(os.path.join(path, "vocab.json")) as fh:
            vocab = Vocab.from_json(fh.read())
        model = Seq2Seq(c)
        model.load_state_dict(torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=True))
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as e:
        raise AsmSketchError(f"cannot load the guess model from '{path}' ({type(e).__name__}): "
                             f"train one with 'asmsketch train' or bench/asmsketch_train.py") from None
    return Guesser(model, vocab)
