"""Load a Hugging Face model directory; import optional packages with a message that says what to do.

A model folder is input we did not write: transformers is always called with
``trust_remote_code=False`` and local files only, a folder that asks for its own code
(``auto_map``) is refused before transformers sees it, and a checkpoint that lacks
weights the model needs is refused rather than completed with random values.
"""
from __future__ import annotations

import importlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch

from elastiq.errors import InputError, check_folder  # noqa: F401 (check_folder: used here and re-exported)

INSTALL_HINT = {
    "transformers": "pip install transformers==5.24.0",
    "gguf": "pip install gguf==0.19.0",
    "accelerate": "pip install accelerate",  # transformers refuses GGUF files without it
}
SAFE = dict(local_files_only=True, trust_remote_code=False)  # for every from_pretrained on a folder


def require(module: str, purpose: str):
    """Import ``module`` or raise an ImportError that names the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        hint = INSTALL_HINT.get(module, f"pip install {module}")
        raise ImportError(
            f"{purpose} needs the {module} package: run `{hint}` (or `bash scripts/setup.sh`)"
        ) from error


def _refused(path: Path, what: str, error: Exception) -> InputError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return InputError(f"{path}: cannot load the {what} ({first[:300]})")


def auto_config(path):
    """The config of a checked folder."""
    from transformers import AutoConfig

    check_folder(path)
    try:
        return AutoConfig.from_pretrained(str(path), **SAFE)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _refused(Path(path), "model config", e) from None


def auto_tokenizer(path):
    """The tokenizer of a checked folder."""
    from transformers import AutoTokenizer

    check_folder(path)
    try:
        return AutoTokenizer.from_pretrained(str(path), **SAFE)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise _refused(Path(path), "tokenizer", e) from None


def check_loading_info(path, info: dict) -> None:
    """Refuse a load that left parameters uninitialized (random) or ignored stored ones."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or [])
    if not (missing or unexpected or mismatched):
        return
    hint = ""
    if any(k.endswith((".codes", ".scales")) for k in unexpected):
        hint = " It looks like a model saved by elastiq whose elastiq.json is gone: save it again."
    raise InputError(f"{path}: the checkpoint does not fit the model (missing {len(missing)} {missing[:3]}, unexpected "
                     f"{len(unexpected)} {unexpected[:3]}, wrong shape {len(mismatched)} {mismatched[:3]}): elastiq never "
                     f"fills missing weights with random values.{hint}")


@contextmanager
def quiet_loading(transformers):
    """transformers' load report and progress bar off while it loads: a refusal is one line."""
    log = transformers.utils.logging
    level = log.get_verbosity()
    bars = log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def load_hf_dir(path: Path, dtype: torch.dtype):
    """A causal LM and its tokenizer from a local directory written by save_pretrained;
    refused if any weight is missing, unexpected or of the wrong shape."""
    transformers = require("transformers", "loading a model")
    check_folder(path)
    try:
        with quiet_loading(transformers):  # our check below says what is wrong, in one line
            model, info = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True, **SAFE)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise _refused(Path(path), "model", e) from None
    check_loading_info(path, info)
    tokenizer = auto_tokenizer(path)
    return model.to("cpu").eval(), tokenizer
