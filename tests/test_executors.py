"""elastiq.executors: jobs come back in order, with pinned torch threads, resume from a job
cache, and survive a worker that dies."""
import os
import signal

import psutil
import pytest
import torch

from elastiq.executors import Executor, JobCache, WorkerLost, inputs_key, make_executor


def square_and_threads(x):
    return x * x, torch.get_num_threads(), os.getpid()


def slow_pid(x):
    import time

    time.sleep(0.2)
    return x, os.getpid()


class Counter:
    """A pool worker's state: built once per worker."""

    def __init__(self, start):
        self.start, self.pid = start, os.getpid()

    def add(self, x):
        return self.start + x, self.pid


def pool_workers():
    """This test process's pool workers: the children of its fork server."""
    return [c for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline()) for c in p.children()]


@pytest.fixture(scope="module")
def processes():
    with make_executor("processes", workers=2, threads=1) as ex:
        yield ex


def test_serial_runs_in_order_with_the_jobs_threads_and_restores_ours():
    before = torch.get_num_threads()
    ex = make_executor("serial", threads=1)
    out = ex.map(square_and_threads, [(i,) for i in range(5)])
    assert [r[0] for r in out] == [0, 1, 4, 9, 16]
    assert {r[1] for r in out} == {1} and {r[2] for r in out} == {os.getpid()}
    assert torch.get_num_threads() == before


def test_processes_return_results_in_job_order_from_other_processes(processes):
    seen = []
    processes.listen(lambda label, done, total: seen.append((label, done, total)))
    out = processes.map(square_and_threads, [(i,) for i in range(8)], label="squares")
    assert [r[0] for r in out] == [i * i for i in range(8)]
    assert {r[1] for r in out} == {1}
    assert os.getpid() not in {r[2] for r in out}
    assert seen[0] == ("squares", 0, 8) and seen[-1] == ("squares", 8, 8) and len(seen) == 9


def test_a_pool_builds_its_state_once_per_worker(processes):
    with processes.pool(Counter, processes.put(100)) as pool:
        out = pool.map("add", list(range(6)))
    assert [r[0] for r in out] == [100 + i for i in range(6)]
    with Executor().pool(Counter, 7) as pool:
        assert [r[0] for r in pool.map("add", [1, 2])] == [8, 9]


def test_a_killed_worker_is_replaced_and_every_job_finishes(processes):
    jobs = [(i,) for i in range(10)]
    killed = []

    def kill_one(label, done, total):
        if done == 2 and not killed:
            victim = pool_workers()[0]
            killed.append(victim.pid)
            os.kill(victim.pid, signal.SIGKILL)

    processes.listen(kill_one)
    try:
        out = processes.map(slow_pid, jobs)
    finally:
        processes.unlisten(kill_one)
    assert killed and [r[0] for r in out] == list(range(10))
    assert killed[0] not in {pid for _, pid in out[4:]}  # its unfinished jobs ran again elsewhere


def test_workers_that_keep_dying_give_up_with_a_clear_error():
    with make_executor("processes", workers=1, retries=1) as ex:
        with pytest.raises(WorkerLost, match="died 2 times"):
            ex.map(_die, [(1,), (2,)])


def _die(x):
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_job_cache_resumes_and_drops_damaged_entries(tmp_path):
    cache = JobCache(tmp_path / "jobs")
    keys = [inputs_key("job", i) for i in range(4)]
    calls = []

    def job(i):
        calls.append(i)
        return b"result %d" % i

    ex = Executor()
    assert ex.map(job, [(i,) for i in range(4)], keys=keys, cache=cache) == [b"result %d" % i for i in range(4)]
    assert calls == [0, 1, 2, 3]
    (tmp_path / "jobs" / f"{keys[1]}.job").write_bytes(b"half a resul")  # damaged: runs again
    calls.clear()
    assert ex.map(job, [(i,) for i in range(4)], keys=keys, cache=cache)[1] == b"result 1"
    assert calls == [1]
    cache.discard(keys)
    assert not (tmp_path / "jobs").exists()
    with pytest.raises(TypeError, match="bytes"):
        ex.map(lambda: 3, [()], keys=keys[:1], cache=cache)


def test_keys_follow_every_byte_of_the_inputs():
    t = torch.arange(6, dtype=torch.float32)
    k = inputs_key("pack", t, {"a": 1})
    assert k == inputs_key("pack", t.clone(), {"a": 1})
    u = t.clone()
    u[3] = torch.nextafter(u[3], torch.tensor(10.0))
    assert k != inputs_key("pack", u, {"a": 1})
    assert k != inputs_key("pack", t.double(), {"a": 1}) != inputs_key("pack", t, {"a": 2})


@pytest.mark.parametrize("kind, kw, message", [
    ("cluster", {}, "executor must be one of"),
    ("processes", {"workers": 0}, "workers must be a positive integer"),
    ("serial", {"threads": 1.5}, "threads must be a positive integer"),
    ("processes", {"address": "10.0.0.1:6379"}, "needs --executor ray"),
])
def test_bad_executor_requests_are_refused(kind, kw, message):
    with pytest.raises(ValueError, match=message):
        make_executor(kind, **kw)
