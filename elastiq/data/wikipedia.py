"""The built-in Wikipedia texts: extracted once from the sample in gensim's test data, then cached.

Source: gensim 4.4.0's ``test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``,
a real English Wikipedia dump excerpt (Wikipedia content: CC BY-SA 3.0 and GFDL). gensim itself is
never imported: only this data file is read from its package directory.

Extraction keeps main-namespace pages that are not redirects, in file order, and turns each into
``title + "\\n" + plain text`` (rules in ``plain_text``). The first ``EVAL_ARTICLES`` articles are
"wiki-eval"; all the others are "wiki-calib". The texts and a JSON record (source size and
sha256, extraction time, titles) live under ``cache_dir() / "text"``.
"""
from __future__ import annotations

import bz2
import hashlib
import importlib.util
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import mwparserfromhell

from elastiq.cache import atomic_write_text, cache_dir

GENSIM = "gensim"  # only located, never imported (its __init__ pulls scipy and more)
SOURCE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
INSTALL_HINT = "pip install --no-deps gensim==4.4.0 (or run: bash scripts/setup.sh)"
EVAL_ARTICLES = 72  # Anarchism ... Adventure: two thirds of the characters; the rest is calibration
NAMES = ("wiki-eval", "wiki-calib")
RULES = 1  # bump when the extraction rules change, so that old caches rebuild
RECORD = "wiki.json"

_DROPPED_LINKS = ("file:", "image:", "category:")
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][^<>\n]*>")  # HTML tags the parser left as text (unclosed <li>, ...)


def source_path() -> Path:
    spec = importlib.util.find_spec(GENSIM)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the built-in texts are read from gensim's test data, and gensim is not installed: "
                          f"{INSTALL_HINT}")
    path = Path(spec.submodule_search_locations[0]) / SOURCE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (gensim 4.4.0 ships it): reinstall, {INSTALL_HINT}")
    return path


def plain_text(wikitext: str) -> str:
    """Wiki markup -> plain text: mwparserfromhell's strip_code, after dropping three things it
    would keep as text (citations, image options and captions, category names), then line tidying."""
    code = mwparserfromhell.parse(wikitext)
    # <ref> citations sit mid-sentence: their text would glue onto the prose
    for ref in code.filter_tags(matches=lambda tag: str(tag.tag).strip().lower() == "ref"):
        ref.contents = ""
    # [[File:x.jpg|thumb|left|caption]] would strip to "thumb|left|caption"; [[Category:X]] to "Category:X"
    for link in code.filter_wikilinks():
        if str(link.title).strip().lower().startswith(_DROPPED_LINKS):
            link.title, link.text = "", None
    return _tidy_lines(_LEFTOVER_TAG.sub("", code.strip_code()))


def _tidy_lines(text: str) -> str:
    """Strip each line; drop table leftovers (lines starting with | ! { }) and lines without a letter
    or digit; a dropped or blank line becomes one blank line (a paragraph break)."""
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and line[0] not in "|!{}" and any(c.isalnum() for c in line):
            lines.append(line)
        elif lines and lines[-1]:
            lines.append("")
    return "\n".join(lines).strip()


def read_articles(source: Path) -> Iterator[tuple[str, str]]:
    """(title, plain text) of each main-namespace (ns 0), non-redirect page with text, in file order."""
    ns = ""
    with bz2.open(source) as f:
        for event, el in ET.iterparse(f, events=("start", "end")):
            if event == "start":
                if not ns and el.tag.startswith("{"):  # the root carries the MediaWiki export namespace
                    ns = el.tag[: el.tag.index("}") + 1]
                continue
            if el.tag != f"{ns}page":
                continue
            if el.findtext(f"{ns}ns") == "0" and el.find(f"{ns}redirect") is None:
                body = plain_text(el.findtext(f"{ns}revision/{ns}text") or "")
                if body:
                    yield (el.findtext(f"{ns}title") or "").strip(), body
            el.clear()  # keep memory flat: pages are done with once read


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _describe_source(source: Path) -> dict:
    data = source.read_bytes()
    return {"file": source.name, "bytes": len(data), "sha256": _sha256(data)}


def _text_dir() -> Path:
    return cache_dir() / "text"


def _read_record(directory: Path) -> dict | None:
    try:
        record = json.loads((directory / RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("rules") != RULES:
        return None
    for name in NAMES:  # the record vouches for each text by its checksum
        try:
            if _sha256((directory / f"{name}.txt").read_bytes()) != record["texts"][name]["sha256"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
    return record


def _build(directory: Path, source: Path, described: dict) -> dict:
    start = time.perf_counter()
    articles = list(read_articles(source))
    seconds = time.perf_counter() - start
    if len(articles) <= EVAL_ARTICLES:
        raise ValueError(f"{source} holds {len(articles)} articles, expected more than {EVAL_ARTICLES}: "
                         f"is it the file gensim 4.4.0 ships? {INSTALL_HINT}")
    record = {"rules": RULES, "source": described, "extraction_seconds": round(seconds, 2), "texts": {}}
    for name, part in zip(NAMES, (articles[:EVAL_ARTICLES], articles[EVAL_ARTICLES:])):
        text = "\n\n".join(f"{title}\n{body}" for title, body in part)
        atomic_write_text(directory / f"{name}.txt", text)
        record["texts"][name] = {"articles": len(part), "chars": len(text), "sha256": _sha256(text.encode("utf-8")),
                                 "titles": [title for title, _ in part]}
    atomic_write_text(directory / RECORD, json.dumps(record, indent=1))  # last: it vouches for the texts
    return record


def wiki_record() -> dict:
    """The cache record (source, extraction seconds, per text: articles, chars, sha256, titles),
    extracting the texts first if the cache is missing, damaged, or from another source file.

    Without gensim, an intact cache is used as it is (it was checked against the source when written)."""
    directory = _text_dir()
    record = _read_record(directory)
    try:
        source = source_path()
    except (ImportError, FileNotFoundError):
        if record is not None:
            return record
        raise
    described = _describe_source(source)
    if record is not None and record.get("source") == described:
        return record
    return _build(directory, source, described)


def wiki_text(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown Wikipedia text {name!r}: one of {', '.join(NAMES)}")
    wiki_record()
    return (_text_dir() / f"{name}.txt").read_text("utf-8")
