"""elastiq build / prune / host, end to end on a tiny model saved as a Hugging Face directory."""
import pytest
from typer.testing import CliRunner

from elastiq.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory, byte_tokenizer):
    from conftest import save_tiny_llama

    tmp = tmp_path_factory.mktemp("cli")
    d = save_tiny_llama(tmp / "tiny", byte_tokenizer)
    text = tmp / "calib.txt"
    text.write_text("A small real sentence, repeated to make a text long enough. " * 8)
    out = tmp / "tiny.elastic"
    r = runner.invoke(app, ["build", str(d), "-o", str(out), "--formats", "int8,int4,int3", "--calib", str(text),
                            "--calib-tokens", "64", "--context", "32", "--measure", "3"])
    assert r.exit_code == 0, r.output
    assert "31 options" in r.stdout  # embedding + 14 linears, two moves each, plus the first option
    return tmp, out


def test_host_fixed_budget_and_options(built):
    tmp, out = built
    r = runner.invoke(app, ["host", str(out), "--options"])
    assert r.exit_code == 0 and "measured" in r.stdout
    r = runner.invoke(app, ["host", str(out), "--budget", "1MiB", "--prompt", "hi", "--max-new-tokens", "3"])
    assert r.exit_code == 0, r.output
    assert "option 0" in r.stdout
    r = runner.invoke(app, ["host", str(out), "--budget", "1KiB"])
    assert r.exit_code == 2 and "below the smallest option" in r.output


def test_host_replays_a_trace(built):
    tmp, out = built
    trace = tmp / "trace.csv"
    trace.write_text("seconds,bytes\n0,1MiB\n0.1,70KiB\n0.2,1KiB\n0.3,1MiB\n")
    r = runner.invoke(app, ["host", str(out), "--trace", str(trace), "--speed", "10", "--prompt", "hi",
                            "--max-new-tokens", "6"])
    assert r.exit_code == 0, r.output
    assert "replaying 4 budget events" in r.stdout and "(refused)" in r.stdout and "[option" in r.stdout


def test_prune_and_errors(built):
    tmp, out = built
    r = runner.invoke(app, ["prune", str(out), "--storage-limit", "150KiB", "-o", str(tmp / "p.elastic")])
    assert r.exit_code == 0, r.output
    assert "removed" in r.stdout
    r = runner.invoke(app, ["prune", str(out), "--storage-limit", "1KiB", "-o", str(tmp / "q.elastic")])
    assert r.exit_code == 2 and "below the smallest option" in r.output
    r = runner.invoke(app, ["host", str(tmp / "nothing")])
    assert r.exit_code == 2 and "not a directory" in r.output
    r = runner.invoke(app, ["host", str(out), "--budget", "1MiB", "--available"])
    assert r.exit_code == 2 and "one budget source" in r.output
    r = runner.invoke(app, ["build", "tiny-nonexistent", "-o", str(tmp / "x"), "--formats", "int8"])
    assert r.exit_code == 2 and "at least two base formats" in r.output
    r = runner.invoke(app, ["build", str(tmp / "tiny"), "-o", str(tmp / "x"), "--calib", "wiki-eval"])
    assert r.exit_code == 2 and "evaluation text" in r.output
