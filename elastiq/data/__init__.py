"""elastiq.data: built-in evaluation and calibration texts, tokenization, evaluation windows.

    from elastiq.data import load_text, tokenize, windows
    text = load_text("wiki-eval")                # or "wiki-calib", or a path to a UTF-8 file
    ids = tokenize(tokenizer, text)              # 1-D LongTensor, no special tokens
    for win, n_scored in windows(ids, context=1024, stride=512, max_tokens=50_000):
        ...                                      # score the last n_scored tokens of win

Anything tuned (calibration) uses "wiki-calib", never "wiki-eval": the two share no article.
See docs/data.md.
"""
from elastiq.data.texts import builtin_texts, load_text
from elastiq.data.wikipedia import wiki_record
from elastiq.data.windows import tokenize, windows

__all__ = ["builtin_texts", "load_text", "tokenize", "wiki_record", "windows"]
