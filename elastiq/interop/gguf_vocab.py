"""A model's tokenizer as GGUF metadata, so llama.cpp's loader tokenizes as the source does.

The tokenizer is saved to a temporary folder and read back as files: the token list
and types from tokenizer.json, the merges, special token ids, add-BOS flags and chat
template by gguf-py's SpecialVocab (the helper llama.cpp's own converter uses).
Byte-level BPE tokenizers (GPT-2 style: Llama 3, SmolLM, Qwen2) are written as
llama.cpp's "gpt2" model; others are refused by name.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from elastiq.errors import InputError


def token_table(tokenizer_json: dict, n_vocab: int, gguf) -> tuple[list[str], list[int]]:
    """(tokens, types) by id, padded with unused tokens to the model's ``n_vocab`` rows."""
    model = tokenizer_json.get("model") or {}
    decoder = tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise InputError("GGUF export writes byte-level BPE tokenizers (GPT-2 style) only; this tokenizer is "
                         f"{model.get('type')} with a {decoder.get('type')} decoder")
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in model["vocab"].items()}
    for added in tokenizer_json.get("added_tokens") or []:
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    if not by_id or max(by_id) >= n_vocab:
        raise InputError(f"the tokenizer has token ids up to {max(by_id, default=-1)}, but the model's embedding has "
                         f"{n_vocab} rows")
    tokens, types = [], []
    for i in range(n_vocab):  # ids the tokenizer never produces still need a row name in llama.cpp
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    return tokens, types


def write_tokenizer(writer, tokenizer, n_vocab: int, pre: str | None) -> str:
    """Add ``tokenizer`` to the GGUF ``writer``; returns the pre-tokenizer name written."""
    import gguf

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        path = Path(tmp) / "tokenizer.json"
        if not path.is_file():
            raise InputError("GGUF export needs a fast tokenizer (tokenizer.json); this one saves none")
        tokens, types = token_table(json.loads(path.read_text(encoding="utf-8")), n_vocab, gguf)
        writer.add_tokenizer_model("gpt2")
        # llama.cpp names the pre-tokenizer (the split before BPE); "default" is its GPT-2 split
        writer.add_tokenizer_pre(pre or "default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_scores([0.0] * len(tokens))  # BPE ranks tokens by its merges; readers still want scores
        quiet = logging.getLogger("gguf.vocab")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "no merges found" is true of a byte tokenizer, and harmless
        try:
            gguf.SpecialVocab(tmp, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)
        finally:
            quiet.setLevel(level)
    return pre or "default"
