"""The elastiq command, end to end on a tiny model saved as a Hugging Face directory."""
import json

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
