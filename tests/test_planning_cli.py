"""elastiq perf and elastiq carbon, end to end through the CLI."""
import json
import sys

from typer.testing import CliRunner

from elastiq.cli import app

runner = CliRunner()


def test_perf_train_table_plot_and_json(tmp_path):
    png, js = tmp_path / "t.png", tmp_path / "t.json"
    r = runner.invoke(app, ["perf", "megatron-22b", "--tp", "8", "--devices", "8", "--batch", "4", "--micro-batch", "4",
                            "--recompute", "full", "--no-flash", "--dtype", "fp16", "--plot", str(png), "--json", str(js)])
    assert r.exit_code == 0, r.output
    assert "1.351" in r.output and "fits" in r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    d = json.loads(js.read_text())
    assert d["fits"] and abs(d["iteration_s"] - 1.3513) < 1e-3


def test_perf_infer_with_a_catalog_format():
    r = runner.invoke(app, ["perf", "llama-2-7b", "--system", "h100-80gb", "--task", "infer", "--weights", "nvfp4"])
    assert r.exit_code == 0, r.output
    assert "4.5 bits" in r.output


def test_perf_search(tmp_path):
    r = runner.invoke(app, ["perf", "llama-2-7b", "--search", "--devices", "8", "--batch", "16", "--seq", "2048",
                            "--top", "3", "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    assert "strategies fit" in r.output and "faster" in r.output and (tmp_path / "s.png").exists()


def test_perf_refusals():
    r = runner.invoke(app, ["perf", "gpt3-175b", "--tp", "8", "--batch", "8"])
    assert r.exit_code == 2 and "needs" in r.output and "GiB per device" in r.output
    r = runner.invoke(app, ["perf", "llama-2-7b", "--tp", "3", "--devices", "8"])
    assert r.exit_code == 2 and "does not divide the 8 devices" in r.output
    r = runner.invoke(app, ["perf", "llama-2-7b", "--system", "tpu-v9"])
    assert r.exit_code == 2 and "unknown system" in r.output
    r = runner.invoke(app, ["perf", "llama-2-7b", "--batch", "-1"])
    assert r.exit_code == 2 and "batch must be a positive integer" in r.output
    r = runner.invoke(app, ["perf", "llama-2-7b", "--search"])
    assert r.exit_code == 2 and "--search needs --devices" in r.output


def test_carbon_devices_and_tokens(tmp_path):
    r = runner.invoke(app, ["carbon", "--device", "fairphone-3", "--plot", str(tmp_path / "c.png")])
    assert r.exit_code == 0, r.output
    assert "5.310" in r.output and "0.899" in r.output and "5.692" in r.output
    js = tmp_path / "k.json"
    r = runner.invoke(app, ["carbon", "--model", "llama-2-7b", "--system", "h100-80gb", "--weights", "bf16,nvfp4",
                            "--region", "usa", "--json", str(js)])
    assert r.exit_code == 0, r.output
    rows = json.loads(js.read_text())
    assert [x["weights"] for x in rows] == ["bf16", "nvfp4"] and rows[1]["total_kg"] < rows[0]["total_kg"]


def test_carbon_llm_training():
    r = runner.invoke(app, ["carbon", "--params", "175e9", "--tokens", "300e9", "--gpus", "10000", "--peak-tflops", "125",
                            "--efficiency", "0.197", "--power-w", "330", "--region", "429", "--pue", "1.1"])
    assert r.exit_code == 0, r.output
    assert "553" in r.output     # LLMCarbon's GPT-3 estimate (published 552.1 t)


def test_carbon_measure_falls_back_and_says_so(tmp_path):
    js = tmp_path / "m.json"
    r = runner.invoke(app, ["carbon", "--measure", "--region", "europe", "--json", str(js), "--", sys.executable, "-c", "print(42)"])
    assert r.exit_code == 0, r.output
    d = json.loads(js.read_text())
    assert d["command"][-1] == "print(42)" and d["energy_j"] > 0
    if not d["measured"]:
        assert "FELL BACK TO A MODEL" in r.output


def test_carbon_refusals():
    r = runner.invoke(app, ["carbon", "--device", "toaster"])
    assert r.exit_code == 2 and "unknown device" in r.output
    r = runner.invoke(app, ["carbon", "--region", "atlantis"])
    assert r.exit_code == 2 and "unknown region" in r.output
    r = runner.invoke(app, ["carbon", "--params", "1e9", "--tokens", "1e9"])
    assert r.exit_code == 2 and "needs --params, --tokens, --peak-tflops and --power-w" in r.output
    r = runner.invoke(app, ["carbon", "--pue", "0.5", "--model", "llama-2-7b"])
    assert r.exit_code == 2 and "PUE is at least 1" in r.output
    r = runner.invoke(app, ["carbon", "--", "echo", "hi"])
    assert r.exit_code == 2 and "without --measure" in r.output
    r = runner.invoke(app, ["carbon", "--measure", "--", "no-such-command-elastiq"])
    assert r.exit_code == 2 and "command not found" in r.output


def test_perf_infer_search():
    r = runner.invoke(app, ["perf", "llama-2-7b", "--task", "infer", "--search", "--devices", "4", "--batch", "8",
                            "--system", "h100-80gb", "--top", "2"])
    assert r.exit_code == 0, r.output
    assert "splits fit" in r.output and "default" in r.output
