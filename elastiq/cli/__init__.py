"""The ``elastiq`` command: one module per area, each command a plain function registered here.

Command modules import typer and rich only (and ``common``, which they share); torch and
the domain packages load inside the functions, so ``elastiq --help`` starts without torch.
Nothing below the command line imports it.
"""
from __future__ import annotations

import typer

from . import analysis, elastic, formats, interop, lrec, models, planning, serve

app = typer.Typer(add_completion=False, no_args_is_help=True, help="elastiq: low-bit formats and elastic model hosting.")


@app.callback()
def main() -> None:
    """elastiq: run language models on machines whose free memory moves under them."""


COMMANDS = [
    ("formats", formats.formats),
    ("quantize", models.quantize),
    ("eval", models.eval_),
    ("compare", models.compare),
    ("correct", lrec.correct),
    ("perf", planning.perf),
    ("carbon", planning.carbon),
    ("profile", analysis.profile),
    ("deviation", analysis.deviation),
    ("faults", analysis.faults),
    ("build", elastic.build),
    ("prune", elastic.prune),
    ("host", elastic.host),
    ("correct-option", lrec.correct_option),
    ("serve", serve.serve),
]
for _name, _command in COMMANDS:
    app.command(_name)(_command)
app.add_typer(interop.export_app, name="export")
app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            add_help_option=False)(interop.lm_eval)

if __name__ == "__main__":
    app()
