"""Where independent jobs run: in this process (``serial``), on this machine's cores
(``processes``) or on a Ray cluster, local or remote (``ray``). One small interface, used by
the elastic build (packing and costing, measuring options) and the planning search, and
meant for every sweep of independent jobs (calibrating layers, for one):

    ex = make_executor("processes", workers=4)
    results = ex.map(fn, [(a, b), (c, d)], keys=keys, cache=JobCache(folder), label="packing")
    with ex.pool(Worker, model) as pool:      # workers that each hold a state (a whole model)
        results = pool.map("measure", items)
    ex.close()

- Results come back in the order of the jobs, whatever order they finished in.
- Every job runs with the same number of torch threads (``threads``) in every executor: a
  sum over a large tensor is split by thread count, so its last bits depend on it. With
  the same ``threads``, results are identical whatever the executor (on one kind of CPU).
- A worker that dies is retried: Ray resubmits its task (``max_retries``) or restarts the
  actor; the processes executor starts a new pool and submits the unfinished jobs again.
- With a :class:`JobCache`, each finished result (bytes) is written whole under a key of
  the job's inputs (:func:`inputs_key`) as it arrives, and a later run takes it from there
  instead of running the job again: an interrupted sweep resumes from what finished.
- Listeners (``ex.listen(fn)``) hear ``fn(label, done, total)`` after every finished job,
  in this process, whichever worker ran it: one progress bar across all workers.

Imports nothing of elastiq but ``cache``; torch and ray load only where a job needs them.
"""
from __future__ import annotations

import hashlib
import os
import struct
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from elastiq.cache import atomic_write_bytes

EXECUTORS = ("serial", "processes", "ray")
RETRIES = 3  # times a job is run again after its worker died


class WorkerLost(RuntimeError):
    """Workers kept dying: a job could not finish after its retries."""


def make_executor(kind: str = "serial", workers: int | None = None, address: str | None = None,
                  threads: int = 1, retries: int = RETRIES) -> "Executor":
    """An executor by name. ``workers``: processes or Ray CPUs (default: this machine's
    cores; on a Ray cluster given by ``address``, its CPUs). ``threads``: torch threads
    of each job, the same in every executor so that results are too."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and (type(value) is not int or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if address is not None and kind != "ray":
        raise ValueError(f"a Ray address needs --executor ray, not {kind}")
    if kind == "serial":
        return Executor(1, threads, retries)
    if kind == "processes":
        return ProcessExecutor(workers or os.cpu_count() or 1, threads, retries)
    return RayExecutor(workers, threads, retries, address)


def _set_threads(threads: int) -> int | None:
    """Set torch's threads if torch is loaded (a job that needs it has imported it); the old count."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    old = torch.get_num_threads()
    if old != threads:
        torch.set_num_threads(threads)
    return old


def _call(fn, threads: int, *args):
    """Run one job with ``threads`` torch threads (in a worker, or restoring them in this process)."""
    _set_threads(threads)
    return fn(*args)


class Executor:
    """The serial executor (every job in this process, one after another) and the
    interface of the others."""

    kind = "serial"

    def __init__(self, workers: int = 1, threads: int = 1, retries: int = RETRIES):
        self.workers, self.threads, self.retries = workers, threads, retries
        self._listeners = []

    def listen(self, fn) -> None:
        """Call ``fn(label, done, total)`` after each finished job (and once before the first)."""
        self._listeners.append(fn)

    def unlisten(self, fn) -> None:
        self._listeners.remove(fn)

    def put(self, value):
        """A handle to pass ``value`` to many jobs, shipped once (Ray: the object store)."""
        return value

    def release(self, *handles) -> None:
        """The jobs are done with these handles (put): free what holds them."""

    def map(self, fn, jobs: list[tuple], *, keys: list[str] | None = None, cache: "JobCache | None" = None,
            label: str = "jobs") -> list:
        """``[fn(*job) for job in jobs]``, run where this executor runs jobs."""
        return self._collect(lambda todo: self._stream(fn, jobs, todo), len(jobs), keys, cache, label)

    def pool(self, factory, *args, memory: int | None = None) -> "Pool":
        """Workers that each hold ``factory(*args)`` (built once per worker); see :class:`Pool`.
        ``memory``: bytes one worker's state takes (Ray places workers only where it fits)."""
        return Pool(self, factory, args, memory)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> str:
        return f"{self.kind}, {self.workers} worker(s) x {self.threads} thread(s)"

    # -- what each executor provides ---------------------------------------------------------
    def _stream(self, fn, jobs, todo):
        """Yield (index, result) of the jobs ``todo``, in the order they finish."""
        old = _set_threads(self.threads)
        try:
            for i in todo:
                yield i, fn(*jobs[i])
        finally:
            if old is not None:
                _set_threads(old)

    def _pool_stream(self, pool: "Pool", method: str, items, todo):
        old = _set_threads(self.threads)
        try:
            if pool.state is None:
                pool.state = pool.factory(*pool.args)
            for i in todo:
                yield i, getattr(pool.state, method)(items[i])
        finally:
            if old is not None:
                _set_threads(old)

    def _close_pool(self, pool: "Pool") -> None:
        pool.state = None

    # -- shared ------------------------------------------------------------------------------
    def _collect(self, stream, n: int, keys, cache, label: str) -> list:
        if cache is not None and (keys is None or len(keys) != n):
            raise ValueError("a job cache needs one key per job")
        results, todo = [None] * n, []
        for i in range(n):
            hit = cache.get(keys[i]) if cache is not None else None
            if hit is None:
                todo.append(i)
            else:
                results[i] = hit
        done = n - len(todo)
        self._tell(label, done, n)
        for i, r in stream(todo):
            if cache is not None:
                if not isinstance(r, bytes):
                    raise TypeError(f"a cached job must return bytes, got {type(r).__name__}")
                cache.put(keys[i], r)
            results[i] = r
            done += 1
            self._tell(label, done, n)
        return results

    def _tell(self, label, done, total) -> None:
        for fn in self._listeners:
            fn(label, done, total)


class Pool:
    """Workers that each hold a state built once (``factory(*args)``: a model, say), and
    run its methods on items: ``pool.map("measure", items)``. A worker that dies is
    replaced, rebuilding its state."""

    def __init__(self, executor: Executor, factory, args: tuple, memory: int | None = None):
        self.executor, self.factory, self.args, self.memory = executor, factory, args, memory
        self.state = None  # serial: the state itself; processes: its key in the workers; ray: actors

    def map(self, method: str, items: list, *, keys: list[str] | None = None, cache: "JobCache | None" = None,
            label: str = "jobs") -> list:
        ex = self.executor
        return ex._collect(lambda todo: ex._pool_stream(self, method, items, todo), len(items), keys, cache, label)

    def close(self) -> None:
        self.executor._close_pool(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- local processes ----------------------------------------------------------------------------
class Stored:
    """A value put once for the processes executor: pickled to a file that each worker
    reads the first time a job needs it (and forgets when the file is removed)."""

    def __init__(self, path: str):
        self.path = path


_LOADED: dict[str, object] = {}  # a worker's values read from Stored files
_STATE: tuple | None = None  # a worker's (pool key, state) of the pool it last served


def _resolve(x):
    if not isinstance(x, Stored):
        return x
    for path in [p for p in _LOADED if not os.path.exists(p)]:  # released: forget it
        del _LOADED[path]
    if x.path not in _LOADED:
        import pickle

        with open(x.path, "rb") as f:
            _LOADED[x.path] = pickle.load(f)
    return _LOADED[x.path]


def _call_stored(fn, threads: int, *args):
    return _call(fn, threads, *(_resolve(a) for a in args))


def _call_state(key: str, factory, args: tuple, threads: int, method: str, item):
    """Run ``method`` of this worker's state of pool ``key``, built on first use (a worker
    holds one pool's state at a time: a new pool's replaces the last)."""
    global _STATE
    _set_threads(threads)
    if _STATE is None or _STATE[0] != key:
        _STATE = None
        _STATE = (key, factory(*(_resolve(a) for a in args)))
        _set_threads(threads)  # the factory may have imported torch
    return getattr(_STATE[1], method)(item)


class ProcessExecutor(Executor):
    """Jobs on this machine's cores, in worker processes kept for the executor's life and
    forked from a fork server (not from this process, whose torch thread pool a child
    would inherit in an undefined state). Values put once (:meth:`put`) go to a file in
    memory-backed storage that each worker reads once."""

    kind = "processes"

    def __init__(self, workers: int, threads: int = 1, retries: int = RETRIES):
        super().__init__(workers, threads, retries)
        self._pool = None
        self._store = None
        self._pools = 0

    def put(self, value):
        import pickle
        import tempfile

        if self._store is None:
            self._store = tempfile.mkdtemp(prefix="elastiq-store-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        fd, path = tempfile.mkstemp(dir=self._store, suffix=".pkl")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        return Stored(path)

    def release(self, *handles) -> None:
        for h in handles:
            if isinstance(h, Stored):
                Path(h.path).unlink(missing_ok=True)

    def _submit(self, preload: str, *call):
        if self._pool is None:
            import multiprocessing

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([preload])  # read when the server starts (once per process)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._pool.submit(*call)

    def _stream(self, fn, jobs, todo):
        yield from self._resilient(lambda i: self._submit(fn.__module__, _call_stored, fn, self.threads, *jobs[i]), todo)

    def _pool_stream(self, pool: Pool, method, items, todo):
        if pool.state is None:
            self._pools += 1
            pool.state = f"{os.getpid()}-{self._pools}"
        yield from self._resilient(lambda i: self._submit(pool.factory.__module__, _call_state, pool.state, pool.factory,
                                                          pool.args, self.threads, method, items[i]), todo)

    def _resilient(self, submit, todo):
        """Run the jobs; when a worker dies (the pool breaks), keep what finished, start
        a new pool and submit the rest again, up to ``retries`` times."""
        remaining, deaths = list(todo), 0
        while remaining:
            futures = {submit(i): i for i in remaining}
            finished = set()
            try:
                for f in as_completed(futures):
                    yield futures[f], f.result()
                    finished.add(futures[f])
                remaining = []
            except BrokenProcessPool:
                for f, i in futures.items():  # results that arrived before the pool broke
                    if i not in finished and f.done() and not f.cancelled() and f.exception() is None:
                        yield i, f.result()
                        finished.add(i)
                remaining = [i for i in remaining if i not in finished]
                self._shutdown()
                deaths += 1
                if deaths > self.retries:
                    raise WorkerLost(f"a worker process died {deaths} times; {len(remaining)} job(s) did not finish. Out "
                                     "of memory (see the system log)? A script using the processes executor needs "
                                     "`if __name__ == '__main__':` around its main code") from None
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _shutdown(self) -> None:
        if self._pool is not None:
            procs = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:  # a worker killed while it held the job queue's lock leaves the others waiting forever
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join()
            self._pool = None

    def close(self) -> None:
        self._shutdown()
        if self._store is not None:
            import shutil

            shutil.rmtree(self._store, ignore_errors=True)
            self._store = None


# -- Ray --------------------------------------------------------------------------------------------
class _Holder:
    """A Ray actor holding a pool's state."""

    def __init__(self, factory, threads: int, *args):
        self.threads = threads
        _set_threads(threads)
        self.state = factory(*args)

    def call(self, method: str, item):
        _set_threads(self.threads)
        return getattr(self.state, method)(item)


class RayExecutor(Executor):
    """Jobs as Ray tasks, pool workers as Ray actors; inputs shared by many jobs go to the
    object store once (:meth:`put`). Joins the cluster at ``address`` (``ray.init``), or
    starts a local one with ``workers`` CPUs; a session already started is used as it is.
    Every node needs the same elastiq, torch and Python as this one."""

    kind = "ray"

    def __init__(self, workers: int | None, threads: int = 1, retries: int = RETRIES, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise ValueError("the ray executor needs Ray: pip install 'elastiq[scale]'") from None
        self._owned = not ray.is_initialized()
        if self._owned:
            kw = {"address": address} if address else {"num_cpus": workers or os.cpu_count() or 1}
            try:
                ray.init(include_dashboard=False, logging_level="warning", **kw)
            except ConnectionError as e:
                raise ValueError(f"cannot join the Ray cluster at {address}: {e}") from None
        super().__init__(workers or max(1, int(ray.cluster_resources().get("CPU", 1))), threads, retries)
        self._ray = ray

    def put(self, value):
        return self._ray.put(value)

    def _stream(self, fn, jobs, todo):
        ray = self._ray
        task = ray.remote(num_cpus=self.threads, max_retries=self.retries)(_call)
        pending = {task.remote(fn, self.threads, *jobs[i]): i for i in todo}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _pool_stream(self, pool: Pool, method, items, todo):
        ray = self._ray
        if pool.state is None:
            actor = ray.remote(num_cpus=self.threads, max_restarts=self.retries, max_task_retries=self.retries,
                               **({"memory": pool.memory} if pool.memory else {}))(_Holder)
            pool.state = [actor.remote(pool.factory, self.threads, *pool.args)
                          for _ in range(min(self.workers, max(1, len(todo))))]
        idle, pending, queue = list(pool.state), {}, list(todo)
        while queue or pending:
            while idle and queue:
                a, i = idle.pop(), queue.pop(0)
                pending[a.call.remote(method, items[i])] = (a, i)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                a, i = pending.pop(ref)
                idle.append(a)
                yield i, ray.get(ref)

    def _close_pool(self, pool: Pool) -> None:
        for a in pool.state or ():
            self._ray.kill(a)
        pool.state = None

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


# -- resuming -------------------------------------------------------------------------------------
def inputs_key(*parts) -> str:
    """A sha256 (hex) of a job's inputs: bytes, strings, numbers, None, tensors and arrays
    (their dtype, shape and bytes), and lists, tuples and dicts of these."""
    h = hashlib.sha256()
    _feed(h, parts)
    return h.hexdigest()


def _feed(h, x) -> None:
    if isinstance(x, (list, tuple)):
        h.update(b"[%d" % len(x))
        for v in x:
            _feed(h, v)
    elif isinstance(x, dict):
        h.update(b"{%d" % len(x))
        for k in sorted(x):
            _feed(h, k)
            _feed(h, x[k])
    elif isinstance(x, bytes):
        h.update(b"b%d:" % len(x) + x)
    elif isinstance(x, str):
        _feed(h, x.encode())
    elif x is None or isinstance(x, (bool, int, float)):
        h.update(f"{type(x).__name__}:{x!r};".encode())
    elif hasattr(x, "untyped_storage"):  # a torch tensor: its bytes as they are stored
        t = x.detach().contiguous()
        _feed(h, (str(t.dtype), tuple(t.shape)))
        h.update(_tensor_bytes(t.cpu()))
    elif hasattr(x, "tobytes") and hasattr(x, "dtype"):  # a numpy array
        _feed(h, (str(x.dtype), tuple(x.shape), x.tobytes()))
    else:
        raise TypeError(f"cannot key a job on a {type(x).__name__}")


def _tensor_bytes(t):
    import torch

    flat = t.reshape(-1)
    return flat.view(torch.uint8).numpy() if flat.numel() else b""


class JobCache:
    """Finished jobs' results (bytes), one file per key in ``folder``, each written whole
    (atomically) and checked when read: a damaged entry is dropped and its job runs again."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"a job key is a sha256 in hex, got {key!r}")
        return self.folder / f"{key}.job"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        head, body = data[:32], data[32:]
        if len(data) < 40 or hashlib.sha256(body).digest() != head or struct.unpack("<Q", body[:8])[0] != len(body) - 8:
            path.unlink(missing_ok=True)
            return None
        return body[8:]

    def put(self, key: str, data: bytes) -> None:
        body = struct.pack("<Q", len(data)) + data
        atomic_write_bytes(self._path(key), hashlib.sha256(body).digest() + body)

    def discard(self, keys) -> None:
        """Remove these entries (a sweep that finished and wrote its output)."""
        for k in keys:
            self._path(k).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:  # not empty (other sweeps' entries) or gone
            pass
