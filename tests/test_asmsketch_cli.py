"""asmsketch command line: a verified end-to-end run and one clear line for each kind of bad input."""

import pytest
import torch

from asmsketch_support import needs_llvm, pairs
from asmsketch import cli, model, toolchain, train
from asmsketch.corpus import run_text, wrap_function

pytestmark = needs_llvm
TINY = {"d": 48, "heads": 2, "enc_layers": 1, "dec_layers": 1, "ff": 96, "max_len": 128, "dropout": 0.0}


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A toy model that has memorised one short function (so the command has something to verify)."""
    p = next(p for p in pairs() if p.opt == 2 and len(p.arm.splitlines()) <= 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g, _ = train.train([p] * 8, config=TINY, max_steps=60, max_tokens=4000, lr=1e-2)
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("model")
    model.save(g.model, g.vocab, str(path))
    return p, str(path)


def _one_line_error(capsys, code, needle):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("asmsketch: error:") and needle in err[0], err


def test_transpile_end_to_end(memorised, tmp_path, capsys):
    p, mdir = memorised
    src = tmp_path / "in.s"
    src.write_text(wrap_function("myfunc", p.arm))
    out = tmp_path / "out.s"
    code = cli.main(["transpile", str(src), "--model", mdir, "-o", str(out), "--inputs", "30"])
    report = capsys.readouterr().out
    assert code == 0, report
    assert "function myfunc" in report and "PASS" in report and "verified by execution" in report
    got = run_text("riscv", out.read_text().split("myfunc:\n", 1)[1], [(3, 5, 7), (2**64 - 9, 1, 0)], name="myfunc")
    assert got == run_text("arm", p.arm, [(3, 5, 7), (2**64 - 9, 1, 0)])


def test_missing_file(capsys):
    _one_line_error(capsys, cli.main(["transpile", "/nonexistent/x.s"]), "is not a file")


def test_binary_file(tmp_path, capsys):
    f = tmp_path / "x.s"
    f.write_bytes(b"\xff\xfe\x00garbage")
    _one_line_error(capsys, cli.main(["transpile", str(f), "--from", "arm"]), "not UTF-8")


def test_malformed_assembly(tmp_path, capsys):
    f = tmp_path / "x.s"
    f.write_text("f:\n\tadd x0, x1, q7\n\tret\n")
    _one_line_error(capsys, cli.main(["transpile", str(f)]), "cannot read operand 'q7'")


def test_unsupported_instruction(memorised, tmp_path, capsys):
    _, mdir = memorised
    f = tmp_path / "x.s"
    f.write_text("f:\n\tfrobnicate x0, x1\n\tret\n")
    _one_line_error(capsys, cli.main(["transpile", str(f), "--model", mdir]), "assembler rejected")
    f.write_text("f:\n\tsvc #0\n\tadd x0, x0, x1\n\tret\n")
    _one_line_error(capsys, cli.main(["transpile", str(f), "--from", "arm", "--model", mdir]), "not supported by the model")


def test_missing_model(tmp_path, capsys):
    f = tmp_path / "x.s"
    f.write_text("f:\n\tadd x0, x0, x1\n\tret\n")
    _one_line_error(capsys, cli.main(["transpile", str(f), "--model", str(tmp_path / "none")]), "asmsketch train")


def test_missing_toolchain(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: None)
    toolchain.find_tool.cache_clear()
    try:
        f = tmp_path / "x.s"
        f.write_text("f:\n\tadd x0, x0, x1\n\tret\n")
        _one_line_error(capsys, cli.main(["transpile", str(f)]), "llvm-mc")
    finally:
        toolchain.find_tool.cache_clear()


def test_same_isa_refused(tmp_path, capsys):
    f = tmp_path / "x.s"
    f.write_text("f:\n\tadd x0, x0, x1\n\tret\n")
    _one_line_error(capsys, cli.main(["transpile", str(f), "--to", "arm"]), "both arm")
