"""The one error type for input elastiq refuses: a hostile or broken file, a bad option.

Its message is one line that names the problem and what to do; the command line prints
it and exits 2, never a traceback. It is a ValueError, so code that already catches
ValueError keeps working. This module imports nothing of elastiq (nor torch): every layer
may raise it, and every loader, the native runtime's included, checks a folder with
:func:`check_folder` before reading it.
"""
import json
from pathlib import Path

CODE_KEYS = ("auto_map",)  # how a folder asks transformers to import its own Python
JSON_FILES = ("config.json", "tokenizer_config.json", "generation_config.json")


class InputError(ValueError):
    """Input elastiq refuses; ``str(error)`` is the one line to show the user."""


def check_folder(path) -> None:
    """Refuse a model folder whose JSON files are not JSON objects, or that asks to run its
    own code: elastiq never runs Python from a model folder."""
    path = Path(path)
    for name in JSON_FILES:
        f = path / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{f} is not valid JSON ({e}): the model folder is damaged") from None
        if not isinstance(data, dict):
            raise InputError(f"{f} holds a JSON {type(data).__name__}, not an object: the model folder is damaged")
        for key in CODE_KEYS:
            if key in data:
                raise InputError(f"{f} asks to run Python code shipped in the folder ({key}); elastiq never runs "
                                 "code from a model folder. Use a model whose architecture transformers ships")
