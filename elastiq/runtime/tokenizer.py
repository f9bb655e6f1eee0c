"""The text side of the native runtime without transformers: the ``tokenizers`` library
reads tokenizer.json, and the model's chat template is rendered in jinja2's immutable
sandbox (a template from a model folder cannot reach Python objects or run code)."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path


class TokenizerError(ValueError):
    """A tokenizer folder the runtime cannot use."""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TokenizerError(f"{path} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is not a JSON object")
    return data


def _token_text(value) -> str | None:
    if isinstance(value, dict):  # AddedToken as saved by transformers
        value = value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    def __init__(self, directory):
        from tokenizers import Tokenizer as HFTokenizer

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{directory} has no tokenizer.json: the native runtime reads fast tokenizers only")
        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as e:
            raise TokenizerError(f"{path} is not a tokenizer the tokenizers library reads ({e})") from None
        cfg_path = directory / "tokenizer_config.json"
        cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
        self.bos_token, self.eos_token = _token_text(cfg.get("bos_token")), _token_text(cfg.get("eos_token"))
        template = cfg.get("chat_template")
        jinja = directory / "chat_template.jinja"
        if jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
        self.chat_template = template if isinstance(template, str) else None
        self.eos_token_id = self.tok.token_to_id(self.eos_token) if self.eos_token else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The chat template applied to ``messages`` (as transformers renders it)."""
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat template: pass chat=False")
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            return env.from_string(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except TemplateError as e:
            raise TokenizerError(f"the model's chat template failed: {e}") from None

    def prompt_ids(self, prompt: str, chat: bool = True) -> list[int]:
        """Token ids of a user prompt: through the chat template when there is one and ``chat``."""
        if chat and self.chat_template:
            return self.encode(self.render_chat([{"role": "user", "content": prompt}]), add_special_tokens=False)
        return self.encode(prompt)
