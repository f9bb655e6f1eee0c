"""elastiq deviation / elastiq faults end to end, and the text-guided head."""
import json

import pytest
import torch
from typer.testing import CliRunner

from elastiq.labs.analysis.textguided import DigitsNet
from elastiq.cli import app


runner = CliRunner()


def test_deviation_command(tmp_path):
    js, png = tmp_path / "d.json", tmp_path / "d.png"
    r = runner.invoke(app, ["deviation", "--seq-lens", "32,64", "--head-dims", "16", "--tiles", "16", "--seeds", "1",
                            "--precisions", "bf16", "--inputs", "bf16", "--stats", "fp32", "--attribution",
                            "--plot", str(png), "--json", str(js)])
    assert r.exit_code == 0, r.output
    rows = json.loads(js.read_text())["rows"]
    assert {x["precision"] for x in rows} == {"bf16", "in=bf16,acc=bf16,stats=fp32,out=bf16"} and png.stat().st_size > 0
    assert "which precision makes flash deviate" in r.stdout
    r = runner.invoke(app, ["deviation", "--precisions", "fp7"])
    assert r.exit_code == 2 and "unknown precision 'fp7'" in r.output
    r = runner.invoke(app, ["deviation", "--seq-lens", "abc"])
    assert r.exit_code == 2 and "--seq-lens" in r.output


def test_faults_command(model_dir, tmp_path):
    d, text = model_dir
    js, png = tmp_path / "f.json", tmp_path / "f.png"
    args = ["faults", str(d), "--format", "mxfp4", "--text", str(text), "--tokens", "64", "--context", "32",
            "--trials", "4", "--site", "scales", "--plot", str(png), "--json", str(js)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert res["overall"]["runs"] == 4 and res["tokens"] == 64 and png.stat().st_size > 0
    r = runner.invoke(app, ["faults", str(d), "--text", str(text), "--layers", "model.layers.*.nope"])
    assert r.exit_code == 2 and "no injectable layer named" in r.output
    r = runner.invoke(app, ["faults", str(d), "--text", str(text), "--format", "mxfp4", "--bits", "9", "--tokens", "64",
                            "--context", "32"])
    assert r.exit_code == 2 and "bit 9 is outside" in r.output
    r = runner.invoke(app, ["faults", str(d), "--text", str(text), "--kind", "cosmic"])
    assert r.exit_code == 2 and "kind must be" in r.output


def test_text_guided_head():
    emb = torch.randn(10, 24)
    m = DigitsNet("text", emb).eval()
    assert m.critical_layer == "head" and DigitsNet("standard").critical_layer == "fc2"
    assert torch.allclose(m.head.weight.norm(dim=1), torch.ones(10))
    assert torch.allclose(m.head.weight, emb / emb.norm(dim=1, keepdim=True))
    logits = m(torch.rand(3, 1, 8, 8))
    scale = 1 / 0.07
    assert logits.shape == (3, 10) and float(logits.abs().max()) <= scale * 1.0001  # cosines times 1/0.07
    with pytest.raises(ValueError, match="class text embeddings"):
        DigitsNet("text", torch.randn(5, 24))
