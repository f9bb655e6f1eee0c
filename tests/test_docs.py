"""Every Python code block of README.md and docs/*.md runs, as written, in a fresh folder.

A block may use names its page defines in prose (``model``, ``x``, ``tokenizer``): PRELUDE
defines them for that page. A few blocks would take minutes as written (200 training
steps, a chain on the real model): SMOKE shrinks them by replacing a piece of their text,
and the test checks that each piece is still in the block, so an edited page cannot
silently stop being tested. Blocks on the real model are marked slow; they run on the
test run's own cache (tests/conftest.py), so nothing is written to the user's.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TINY_LLAMA = """
from conftest import make_byte_tokenizer, make_tiny_llama
make_tiny_llama(4).save_pretrained("tiny")
make_byte_tokenizer().save_pretrained("tiny")
"""

PRELUDE = {
    "docs/analysis.md": TINY_LLAMA + """
import torch
import elastiq
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                     num_attention_heads=4, num_key_value_heads=2)).eval()
elastiq.quantize(model, "mxfp4", progress=False)
ids = torch.randint(0, 256, (2, 16))
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()
images = torch.randn(20, 1, 8, 8)
""",
    "docs/calibrate.md": TINY_LLAMA,
    "docs/data.md": """
from conftest import make_byte_tokenizer
tokenizer = make_byte_tokenizer()
""",
    "docs/elastic.md": TINY_LLAMA,
    "docs/formats.md": """
import torch
x = torch.randn(64, 256)
""",
    "docs/lrec.md": TINY_LLAMA,
    "docs/interop.md": TINY_LLAMA,
    "docs/models.md": TINY_LLAMA + """
import os
from elastiq.models import BUILTIN
os.makedirs("path/to", exist_ok=True)
os.rename("tiny", "path/to/hf-model-dir")
""",
    "docs/runtime.md": """
from conftest import make_byte_tokenizer, make_tiny_llama
import elastiq
from elastiq.elastic import build
tok = make_byte_tokenizer()
elastiq.save(elastiq.quantize(make_tiny_llama(4), "nxfp4", embedding="same", progress=False), "smollm2-nxfp4",
             tokenizer=tok)
build(make_tiny_llama(4), tok, "smollm2.elastic", calib_text="A small real sentence. " * 40, calib_tokens=64,
      context=32, measure=2, progress=False)
""",
    "docs/profile.md": """
import torch
from diffusers import UNet2DConditionModel
from elastiq.labs.analysis.profiling.suite import unet_config
model = UNet2DConditionModel(sample_size=8, **unet_config(tiny=True)).eval()
x, t, e = torch.randn(1, 4, 8, 8), torch.tensor(10), torch.randn(1, 4, 32)
""",
}

SMOKE = {  # (page, text in the block) -> what runs instead
    ("README.md", "max_tokens=4096"): "max_tokens=256",
    ("docs/calibrate.md", 'elastiq.load("smollm2-135m")'): 'elastiq.load("tiny")',
    ("docs/calibrate.md", "CalibOptions(tokens=8192)"): "CalibOptions(tokens=256, context=64)",
    ("docs/elastic.md", 'elastiq.load("smollm2-135m")'): 'elastiq.load("tiny")',
    ("docs/elastic.md", 'build(model, tok, "smollm2.elastic")'): 'build(model, tok, "smollm2.elastic", calib_tokens=64, '
                                                                 'context=32, measure=2, progress=False)',
    ("docs/elastic.md", 'host.generate("What is a tree?")'): 'host.generate("What is a tree?", 4)',
    ("docs/lrec.md", 'elastiq.load("smollm2-135m")'): 'elastiq.load("tiny")',
    ("docs/lrec.md", 'float_checkpoint_dir("smollm2-135m")'): 'float_checkpoint_dir("tiny")',
    ("docs/lrec.md", 'load_text("wiki-calib")'): 'load_text("wiki-calib")[:3000]',
    ("docs/lrec.md", "steps=200"): "steps=2",
    # the built-in model's own GGUF file, in float32: its conversion is in the run's cache already
    ("docs/models.md", 'load("path/to/model.Q4_K_M.gguf", dtype=torch.bfloat16)'): 'load(BUILTIN["smollm2-135m"].gguf_path())',
}
REAL_MODEL = ('"smollm2-135m"', "DEFAULT_MODEL")  # a block that loads the real model is slow


def _blocks():
    for page in PAGES:
        rel = page.relative_to(ROOT).as_posix()
        for m in re.finditer(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M):
            line = page.read_text()[:m.start()].count("\n") + 1
            code = _smoke(rel, m.group(1))
            marks = [pytest.mark.slow] if any(s in code for s in REAL_MODEL) else []
            yield pytest.param(rel, code, id=f"{rel}:{line}", marks=marks)


def _smoke(page: str, code: str) -> str:
    for (where, old), new in SMOKE.items():
        if where == page:
            code = code.replace(old, new)
    return code


@pytest.mark.parametrize("page,code", list(_blocks()))
def test_code_block_runs(page, code, tmp_path, monkeypatch, request):
    if any(s in code for s in REAL_MODEL):  # the run's own cache, where the real model already is (conftest)
        monkeypatch.setenv("ELASTIQ_CACHE", str(request.getfixturevalue("smollm2")[2]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    namespace = {"__name__": "docs_block"}
    exec(compile(PRELUDE.get(page, "") + code, f"{page} (code block)", "exec"), namespace)


def test_every_smoke_substitution_still_matches_its_page():
    code = {}
    for page in PAGES:
        rel = page.relative_to(ROOT).as_posix()
        code[rel] = "".join(re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M))
    missing = [(page, old) for (page, old) in SMOKE if old not in code.get(page, "")]
    assert not missing, f"these pages changed: update SMOKE in tests/test_docs.py: {missing}"
    assert {p for p, _ in SMOKE} | set(PRELUDE) <= set(code)
