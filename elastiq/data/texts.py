"""Texts by name or path: the built-in Wikipedia texts, or any UTF-8 text file."""
from __future__ import annotations

import os
from pathlib import Path

from elastiq.data.wikipedia import EVAL_ARTICLES, wiki_text

_SOURCE = "English Wikipedia sample in gensim 4.4.0's test data; Wikipedia content, CC BY-SA 3.0 and GFDL"
_BUILTIN = {
    "wiki-eval": f"evaluation text: the first {EVAL_ARTICLES} articles (Anarchism to Adventure) of the {_SOURCE}",
    "wiki-calib": f"calibration text, disjoint from wiki-eval: the other 34 articles (Asia to Algorithm) of the {_SOURCE}",
}


def builtin_texts() -> dict[str, str]:
    """Built-in text name -> one-line description (content, source, licence)."""
    return dict(_BUILTIN)


def load_text(name_or_path: str | os.PathLike) -> str:
    """A built-in text ("wiki-eval", "wiki-calib"; see builtin_texts) or the contents of a UTF-8 text file."""
    if name_or_path in _BUILTIN:
        return wiki_text(str(name_or_path))
    path = Path(name_or_path).expanduser()
    if not path.exists():
        looks_like_a_name = not any(c in str(name_or_path) for c in "./\\")
        if looks_like_a_name:
            raise ValueError(f"unknown text {str(name_or_path)!r}: the built-in texts are {', '.join(_BUILTIN)}; "
                             "a path to a UTF-8 text file is also accepted")
        raise FileNotFoundError(f"text file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory: give a UTF-8 text file or a built-in name ({', '.join(_BUILTIN)})")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # -sig: a leading byte-order mark is not text
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (invalid byte at offset {e.start}): convert it first, "
                         f"e.g. iconv -f latin1 -t utf-8 {path} > converted.txt") from None
    if not text.strip():
        raise ValueError(f"{path} is empty: there is nothing to evaluate")
    return text
