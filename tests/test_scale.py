"""The elastic build and the planning search on every executor give the same results as
in this process: a byte-identical artifact, even when a worker is killed mid-build or the
build is interrupted and resumed; the same ranking of plans."""
import os
import signal

import psutil
import pytest

from conftest import make_tiny_llama
from elastiq.elastic import build
from elastiq.elastic.artifact import differences
from elastiq.executors import Executor, make_executor

TEXT = "A small real sentence about trees and rivers, repeated to make a text. " * 12
KW = dict(formats=["int8", "nxfp4"], calib_text=TEXT, calib_tokens=64, context=32, measure=4, progress=False)
PACKING = "packing and probing"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, byte_tokenizer):
    return build(make_tiny_llama(), byte_tokenizer, tmp_path_factory.mktemp("serial") / "a", **KW)


def kill_mid_build(ex, find_workers):
    """A listener that kills one busy worker in each step (packing, measuring) once a third
    of it is done (or at the next finished job, if no worker is busy at that instant);
    returns the pids killed."""
    killed = {}

    def listener(label, done, total):
        if label not in killed and done >= max(1, total // 3) and done < total:
            victims = find_workers()
            if victims:
                killed[label] = victims[0].pid
                os.kill(victims[0].pid, signal.SIGKILL)

    ex.listen(listener)
    return killed


def forkserver_workers():
    return [c for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline()) for c in p.children()]


@pytest.mark.slow  # worker processes import torch and transformers: about 10 s on two quiet cores
def test_processes_build_the_same_artifact_even_when_a_worker_dies(reference, tmp_path, byte_tokenizer):
    with make_executor("processes", workers=2) as ex:
        killed = kill_mid_build(ex, forkserver_workers)
        out = build(make_tiny_llama(), byte_tokenizer, tmp_path / "p", executor=ex, **KW)
    assert len(killed) == 2  # one worker in each step
    assert differences(reference, out) == []


def test_an_interrupted_build_resumes_from_the_finished_jobs(reference, tmp_path, byte_tokenizer):
    class Interrupted(Exception):
        pass

    jobs, out = tmp_path / "jobs", tmp_path / "r"
    ex = Executor()

    def stop(label, done, total):
        if label == PACKING and done == 5:
            raise Interrupted

    ex.listen(stop)
    with pytest.raises(Interrupted):
        build(make_tiny_llama(), byte_tokenizer, out, executor=ex, jobs_dir=jobs, **KW)
    ex.unlisten(stop)
    assert not out.exists() and len(list(jobs.iterdir())) == 5
    first = []
    ex.listen(lambda label, done, total: first.append(done) if label == PACKING and not first else None)
    build(make_tiny_llama(), byte_tokenizer, out, executor=ex, jobs_dir=jobs, **KW)
    assert first == [5]  # five jobs came from the folder
    assert differences(reference, out) == [] and not jobs.exists()


def test_the_search_ranks_plans_the_same_on_processes():
    from elastiq.labs.planning.search import search

    serial = search("llama-2-7b", "a100-80gb", 16, 64)
    with make_executor("processes", workers=2) as ex:
        spread = search("llama-2-7b", "a100-80gb", 16, 64, executor=ex, plans_per_job=8)
    assert spread.tried == serial.tried > 16
    assert [(r.parallel, r.micro_batch, r.iteration_s) for r in spread.ranked] == \
           [(r.parallel, r.micro_batch, r.iteration_s) for r in serial.ranked]


def test_the_command_line_takes_an_executor_and_refuses_a_bad_one(tmp_path):
    import json

    from typer.testing import CliRunner

    from elastiq.cli import app

    runner = CliRunner()
    args = ["perf", "llama-2-7b", "--search", "--devices", "8", "--batch", "16"]
    r = runner.invoke(app, args + ["--json", str(tmp_path / "serial.json")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, args + ["--executor", "processes", "--workers", "2", "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads((tmp_path / "serial.json").read_text())
    r = runner.invoke(app, ["build", "smollm2-135m", "-o", str(tmp_path / "x"), "--executor", "cluster"])
    assert r.exit_code == 2 and "executor must be one of serial, processes, ray" in r.output
    r = runner.invoke(app, args + ["--ray-address", "10.0.0.1:6379"])
    assert r.exit_code == 2 and "needs --executor ray" in r.output
