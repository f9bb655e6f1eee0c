"""The elastiq command, end to end on a tiny model saved as a Hugging Face directory; its
start without torch; a house without import cycles."""
import ast
import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from elastiq.cli import app


runner = CliRunner()


def test_formats_table_and_values():
    r = runner.invoke(app, ["formats", "mxfp4", "nvfp4", "--rows", "64", "--cols", "256"])
    assert r.exit_code == 0 and "mxfp4" in r.stdout and "nvfp4" in r.stdout and "4.5" in r.stdout
    r = runner.invoke(app, ["formats", "--values", "mxfp4"])
    assert r.exit_code == 0 and "0111" in r.stdout and " 6 " in r.stdout
    r = runner.invoke(app, ["formats", "mxfp5"])
    assert r.exit_code != 0 and "unknown format" in r.output


def test_quantize_eval_compare(model_dir, tmp_path):
    d, text = model_dir
    out = tmp_path / "packed"
    r = runner.invoke(app, ["quantize", str(d), "--format", "int4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "14 modules quantized" in r.stdout and "lm_head" in r.stdout
    r = runner.invoke(app, ["eval", str(out), "--text", str(text), "--context", "64"])
    assert r.exit_code == 0, r.output
    assert "perplexity" in r.stdout
    plot, js = tmp_path / "q.png", tmp_path / "q.json"
    r = runner.invoke(app, ["compare", str(d), "--formats", "int8,mxfp4", "--text", str(text), "--context", "64",
                            "--max-tokens", "0", "--plot", str(plot), "--json", str(js)])
    assert r.exit_code == 0, r.output
    rows = json.loads(js.read_text())
    assert [x["format"] for x in rows] == ["float", "int8", "mxfp4"] and plot.stat().st_size > 0
    r = runner.invoke(app, ["compare", str(d), "--formats", "mxfp4", "--embedding", "same", "--text", str(text),
                            "--context", "64", "--max-tokens", "0", "--plot", str(plot), "--json", str(js)])
    assert r.exit_code == 0, r.output
    packed_all = json.loads(js.read_text())[1]
    assert packed_all["weight_bytes"] < rows[2]["weight_bytes"]  # the packed embedding is smaller


def test_quantize_with_embedding(model_dir, tmp_path):
    d, text = model_dir
    out = tmp_path / "packed"
    r = runner.invoke(app, ["quantize", str(d), "--format", "nxfp4", "--embedding", "int8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "16 modules quantized" in r.stdout and "kept in float: nothing" in r.stdout
    manifest = json.loads((out / "elastiq.json").read_text())
    assert manifest["modules"]["model.embed_tokens"]["format"] == "int8"
    assert manifest["modules"]["lm_head"]["tied_to"] == "model.embed_tokens"
    r = runner.invoke(app, ["eval", str(out), "--text", str(text), "--context", "64"])
    assert r.exit_code == 0 and "perplexity" in r.stdout, r.output


def test_clear_errors(model_dir, tmp_path):
    d, text = model_dir
    r = runner.invoke(app, ["quantize", str(d), "--format", "mxfp5", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown format" in r.output and not (tmp_path / "x").exists()
    r = runner.invoke(app, ["eval", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "error" in r.output
    r = runner.invoke(app, ["eval", str(d), "--text", str(tmp_path / "missing.txt")])
    assert r.exit_code == 2 and "missing.txt" in r.output
    r = runner.invoke(app, ["compare", str(d), "--formats", "int4,bogus"])
    assert r.exit_code == 2 and "bogus" in r.output
    r = runner.invoke(app, ["compare", str(d), "--formats", "int4", "--embedding", "int5x"])
    assert r.exit_code == 2 and "int5x" in r.output


def test_the_command_line_starts_without_torch():
    code = ("import sys\nfrom elastiq.cli import app\n"
            "try:\n    app(['--help'], prog_name='elastiq')\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'numpy', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "correct-option" in r.stdout


def _imports(path: Path, package: str) -> set[str]:
    """The elastiq modules a file imports, anywhere in it (also inside functions)."""
    tree, out = ast.parse(path.read_text()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m == "elastiq" or m.startswith("elastiq.")}


def test_nothing_below_the_command_line_imports_it():
    root = Path(__file__).resolve().parents[1] / "elastiq"
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        package = ".".join(rel.parts[:-1])
        if rel.parts[1] in ("cli", "__main__"):
            continue
        if any(m == "elastiq.cli" or m.startswith("elastiq.cli.") for m in _imports(path, package)):
            offenders.append(str(rel))
    assert not offenders, offenders


def _area(module: str, root: Path) -> str:
    """'elastiq.lrec.stream' -> 'lrec'; a top-level module is its own area; 'elastiq' itself is the API."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    return parts[1] if (root / parts[1]).is_dir() or (root / f"{parts[1]}.py").is_file() else "api"


def test_the_house_has_no_import_cycle_and_the_core_never_imports_the_labs():
    root = Path(__file__).resolve().parents[1] / "elastiq"
    edges: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        src = "api" if rel.parts[1] == "__init__" else rel.parts[1]
        for m in _imports(path, ".".join(rel.parts[:-1])):
            dst = _area(m, root)
            if dst != src and not (m == "elastiq" and dst == "api" and src != "api" and _only_submodules(path)):
                edges.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(node):] + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(edges):
        visit(node, [])
    assert "cli" not in set().union(*(v for k, v in edges.items() if k not in ("cli", "__main__")))
    core = {k: v for k, v in edges.items() if k not in ("cli", "__main__", "labs")}
    assert "labs" not in set().union(*core.values()), "the core imports the labs"


def _only_submodules(path: Path) -> bool:
    """Whether every ``from elastiq import X`` in the file names a subpackage (formats), not the API."""
    tree = ast.parse(path.read_text())
    root = Path(__file__).resolve().parents[1] / "elastiq"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "elastiq" for a in node.names):
            return False
        if isinstance(node, ast.ImportFrom) and node.module == "elastiq" and not node.level:
            if any(not ((root / a.name).is_dir() or (root / f"{a.name}.py").is_file()) for a in node.names):
                return False
    return True
