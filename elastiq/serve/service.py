"""What a server runs besides its HTTP side: the hosted model, its engine, the budget that
moves (a fixed size, the machine's or the cgroup's free memory, a replayed trace, or a size
set by hand through the API) and a record of it all over time for the status page."""
from __future__ import annotations

import threading
import time
from collections import deque

import psutil

from .engine import Engine
from .hosted import Hosted


class BudgetControl:
    """Applies budgets to an elastic host (``host.fit_budget``: a budget below the smallest
    option holds the smallest). Each new source (a poll, a trace, a size by hand) stops the
    one before it."""

    def __init__(self, chooser):
        self.chooser = chooser
        self.budget: int | None = None
        self.source = "none"
        self.swaps = 0
        self.refused = False  # the last budget was below the smallest option
        self.last_swap = None  # the last Transition
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._epoch = 0  # bumped by each new source; a thread of an older one stops

    def apply(self, budget: int) -> dict:
        with self._lock:
            self.budget = int(budget)
            try:
                tr, self.refused = self.chooser.fit_budget(self.budget)
            except ValueError as e:  # a copy that fails its check: the swap changed nothing; keep serving
                self.last_error = str(e)
                return {"swapped": False, "error": str(e)}
            if tr is not None:
                self.swaps += 1
                self.last_swap = tr
            return {"swapped": tr is not None, "refused": self.refused}

    def _new_source(self, name: str) -> int:
        with self._lock:
            self._epoch += 1
            self.source = name
            return self._epoch

    def set(self, budget: int, source: str = "manual") -> dict:
        self._new_source(source)
        return self.apply(budget)

    def follow(self, read, name: str, period_s: float = 1.0) -> None:
        """Poll ``read(held_bytes)`` (elastiq.elastic's AvailableMemory, CgroupLimit) every ``period_s``."""
        epoch = self._new_source(name)
        self.apply(read(self.chooser.held_bytes))

        def poll():
            while self._epoch == epoch:
                time.sleep(period_s)
                if self._epoch == epoch:
                    try:
                        self.apply(read(self.chooser.held_bytes))
                    except ValueError as e:  # the source could not be read this time
                        self.last_error = str(e)

        threading.Thread(target=poll, name="elastiq-serve-budget", daemon=True).start()

    def replay(self, events: list[tuple[float, int]], speed: float = 1.0) -> threading.Thread:
        """Apply each (seconds, bytes) event of a trace at its time from now; the last budget stays."""
        epoch = self._new_source("trace")
        t0 = time.monotonic()

        def run():
            for t, b in events:
                time.sleep(max(0.0, t / speed - (time.monotonic() - t0)))
                if self._epoch != epoch:
                    return
                self.apply(b)

        thread = threading.Thread(target=run, name="elastiq-serve-trace", daemon=True)
        thread.start()
        return thread


class Service:
    def __init__(self, hosted: Hosted, history_s: float = 600.0, sample_s: float = 1.0):
        self.hosted = hosted
        self.engine = Engine(hosted)
        self.budget = BudgetControl(hosted.chooser) if hosted.chooser is not None else None
        self.started = time.time()
        self.history: deque[dict] = deque(maxlen=max(1, int(history_s / sample_s)))
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_every, args=(sample_s,), name="elastiq-serve-history",
                                         daemon=True)
        self._sampler.start()

    def close(self) -> None:
        self._stop.set()
        if self.budget is not None:
            self.budget._new_source("stopped")
        self.engine.close()

    @property
    def option(self):
        c = self.hosted.chooser
        return None if c is None else c.option

    def sample(self) -> dict:
        b = self.budget
        return {"t": round(time.time(), 3), "option": self.option, "weight_bytes": self.hosted.weight_bytes,
                "budget_bytes": b.budget if b else None, "process_rss_bytes": self._proc.memory_info().rss,
                "tokens_per_s": round(self.engine.tokens_per_s(), 2), "queued": self.engine.waiting,
                "busy": self.engine.active is not None}

    def _sample_every(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            self.history.append(self.sample())

    def status(self, history: bool = False) -> dict:
        h, b, c = self.hosted, self.budget, self.hosted.chooser
        out = {"model": h.name, "engine": h.engine, **self.sample(), "uptime_s": round(time.time() - self.started, 1),
               "requests": dict(self.engine.counts), "max_context": h.max_ctx}
        if c is not None:
            sizes = [int(c.sizes[k]) for k in c.options]
            out.update({"options": len(c.options) + len(c.extra_ids), "largest_option_bytes": max(sizes),
                        "smallest_option_bytes": min(sizes), "budget_source": b.source, "swaps": b.swaps,
                        "budget_refused": b.refused, "last_error": b.last_error,
                        "last_swap": None if b.last_swap is None else {
                            "option": b.last_swap.option, "units_changed": b.last_swap.units_changed,
                            "seconds": round(b.last_swap.seconds, 4)}})
        else:
            out.update({"options": 1, "budget_source": "none (a saved model has one option)", "swaps": 0})
        if history:
            out["history"] = list(self.history)
        return out
