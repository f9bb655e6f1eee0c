"""What both elastic hosts share, without torch: the reader-writer lock that keeps every
forward pass on one whole option, the record of a swap, and the choice of an option
for a budget."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from elastiq.errors import InputError


def check_max_new_tokens(n) -> int:
    """How many tokens to generate: a whole number, at least 1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"max_new_tokens must be a whole number of at least 1, got {n!r}")
    return n


class BudgetError(ValueError):
    """The budget is below the smallest option: nothing can be hosted in it."""


class RWLock:
    """Many readers or one writer; a waiting writer holds new readers back."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class Transition:
    option: int  # chain option index
    bytes: int  # the option's weight bytes
    units_changed: int
    read_seconds: float  # reading and checking the changed copies
    wait_seconds: float  # waiting for the forward pass in flight
    seconds: float  # the whole swap, end to end


class OptionChooser:
    """Choosing among an artifact's options. Hosts set ``sizes`` and ``quality`` (per option
    id), ``options`` (the family's chain options, largest first), ``extra_ids`` (id ->
    low-rank option), ``rest_bytes``, ``name`` and ``option``, and define ``swap``."""

    sizes: np.ndarray
    quality: np.ndarray
    options: list[int]
    extra_ids: dict[int, dict]
    rest_bytes: int
    name: str
    option: int | None

    @property
    def smallest(self) -> int:
        return int(self.sizes[self.options[-1]])

    @property
    def held_bytes(self) -> int:
        """The weights held now: the option's, or only the float remainder before the first."""
        return self.rest_bytes if self.option is None else int(self.sizes[self.option])

    def best_option(self, budget: int) -> int:
        """The option that fits ``budget`` bytes with the least KL from the float model: the
        largest chain option that fits, or an extra (low-rank) option that beats it."""
        fits = [k for k in self.options + list(self.extra_ids) if self.sizes[k] <= budget]
        if fits:
            return min(fits, key=lambda k: (self.quality[k], -self.sizes[k]))
        raise BudgetError(f"a budget of {budget / 2**20:.1f} MiB is below the smallest option of "
                          f"{self.name} ({self.smallest / 2**20:.1f} MiB): free memory, lower the "
                          "reserve, or build the artifact with a smaller base format")

    def apply_budget(self, budget: int):
        """Swap to the best option for ``budget``; None if that is the option already held."""
        k = self.best_option(budget)
        return None if k == self.option else self.swap(k)

    def fit_budget(self, budget: int):
        """(transition or None, refused): as ``apply_budget``, but a budget below the smallest
        option holds the smallest option (a host that is serving keeps serving) and says so."""
        try:
            return self.apply_budget(budget), False
        except BudgetError:
            smallest = self.options[-1]
            return (self.swap(smallest) if self.option != smallest else None), True

    def check_option(self, option: int) -> dict | None:
        """The extra option ``option`` names (None for a chain option); refuses an unknown one."""
        extra = self.extra_ids.get(option)
        if option not in self.options and extra is None:
            raise ValueError(f"option {option} is not in this artifact's family "
                             f"({len(self.options)} options between {self.options[0]} and {self.options[-1]})")
        return extra


ENGINES = ("auto", "native", "torch")
_said_once: set[str] = set()


def open_host(path, engine: str = "auto", nthreads: int | None = None, warn=print):
    """An elastic host of the artifact at ``path`` on ``engine``: "native" (the native
    runtime, no torch), "torch" (transformers' forward over packed layers) or "auto"
    (native where the runtime runs the model; otherwise torch, said once through ``warn``)."""
    from pathlib import Path

    if engine not in ENGINES:
        raise ValueError(f"engine is one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "auto":
        spec = Path(path) / "native.json"
        if spec.is_file():
            engine = "native"
        else:
            engine = "torch"
            if str(path) not in _said_once:
                _said_once.add(str(path))
                warn(f"{path}: the native runtime does not run this model (no native.json: a family it does not "
                     "run, or built before it); hosting it on the torch path")
    if engine == "native":
        from .native_host import NativeElasticModel

        return NativeElasticModel(path, nthreads=nthreads)
    from .host import ElasticModel

    if nthreads:
        import torch

        torch.set_num_threads(nthreads)
    return ElasticModel(path)
