"""The elastic chain and its pruning: pure bookkeeping over numbers, no model needed.

Every unit starts at the first (largest) base format. Each step moves one unit one
base lower, the move with the least estimated quality cost per byte saved, so every
step is a hosting option and memory falls monotonically from the first option (all
units at the first base) to the last (all at the last base).

Pruning keeps a *family*: a subset of the chain's options, and the stored copies
(unit, base) that those options use. A copy serves a contiguous run of options (a
unit holds each base for one stretch of the one-way chain); dropping a copy drops
the options it serves. Pruning drops the copies serving the fewest options per byte
until the family fits the storage limit.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from elastiq.errors import InputError


@dataclass
class Chain:
    formats: list[str]  # base formats, largest first
    units: list[str]
    unit_bytes: np.ndarray  # (units, bases): bytes of each unit at each base
    unit_cost: np.ndarray  # (units, bases): estimated quality cost of each unit at each base
    rest_bytes: int  # bytes outside the units (norms, float head, ...), the same for every option
    moves: np.ndarray  # (steps,): the unit moved one base lower at each step

    @property
    def n_options(self) -> int:
        return len(self.moves) + 1

    def assignments(self) -> np.ndarray:
        """(options, units): each option's base index per unit."""
        a = np.zeros((self.n_options, len(self.units)), dtype=np.int16)
        for k, u in enumerate(self.moves):
            a[k + 1] = a[k]
            a[k + 1, u] += 1
        return a

    def assignment(self, k: int) -> np.ndarray:
        if not 0 <= k < self.n_options:
            raise IndexError(f"option {k} is not in the chain (0..{self.n_options - 1})")
        return np.bincount(self.moves[:k], minlength=len(self.units)).astype(np.int16)

    def option_bytes(self) -> np.ndarray:
        start = int(self.unit_bytes[:, 0].sum()) + self.rest_bytes
        return start - np.concatenate([[0], np.cumsum(self._per_move(self.unit_bytes))]).astype(np.int64)

    def option_cost(self) -> np.ndarray:
        start = float(self.unit_cost[:, 0].sum())
        return start - np.concatenate([[0.0], np.cumsum(self._per_move(self.unit_cost))])

    def _levels(self):
        """(unit, base it leaves) for each move."""
        level = np.zeros(len(self.units), dtype=np.int64)
        for u in self.moves:
            yield int(u), int(level[u])
            level[u] += 1

    def _per_move(self, table: np.ndarray) -> np.ndarray:
        """What each move takes off ``table``'s total (bytes saved; minus the cost added)."""
        return np.array([table[u, i] - table[u, i + 1] for u, i in self._levels()], dtype=table.dtype)

    def copy_ranges(self) -> dict[tuple[int, int], tuple[int, int]]:
        """{(unit, base): (first option, last option) using that copy}."""
        first = {(u, 0): 0 for u in range(len(self.units))}
        last = {}
        for k, (u, i) in enumerate(self._levels()):
            last[(u, i)] = k  # option k is the last one before the move at step k
            first[(u, i + 1)] = k + 1
        for (u, i) in first:
            last.setdefault((u, i), self.n_options - 1)
        return {c: (first[c], last[c]) for c in first}

    def to_dict(self) -> dict:
        return {"formats": self.formats, "units": self.units, "unit_bytes": self.unit_bytes.tolist(),
                "unit_cost": self.unit_cost.tolist(), "rest_bytes": self.rest_bytes, "moves": self.moves.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Chain":
        """A chain read from a manifest; refuses one whose tables and moves do not agree."""
        try:
            c = cls(list(d["formats"]), list(d["units"]), np.asarray(d["unit_bytes"], dtype=np.int64),
                    np.asarray(d["unit_cost"], dtype=np.float64), int(d["rest_bytes"]),
                    np.asarray(d["moves"], dtype=np.int64).reshape(-1))
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise InputError(f"the chain is malformed ({type(e).__name__}: {e})") from None
        n_units, n_bases = len(c.units), len(c.formats)
        if c.unit_bytes.shape != (n_units, n_bases) or c.unit_cost.shape != (n_units, n_bases) or n_bases < 1:
            raise InputError(f"the chain's tables are {c.unit_bytes.shape} and {c.unit_cost.shape}, not (units={n_units}, "
                             f"bases={n_bases})")
        if c.moves.size and (c.moves.min() < 0 or c.moves.max() >= n_units):
            raise InputError(f"the chain moves unit {int(c.moves.max() if c.moves.max() >= n_units else c.moves.min())}, "
                             f"but it has units 0..{n_units - 1}")
        if (np.bincount(c.moves, minlength=n_units) > n_bases - 1).any():
            raise InputError(f"the chain moves a unit past its last base format ({n_bases} bases)")
        if c.rest_bytes < 0 or (c.unit_bytes < 0).any():
            raise InputError("the chain has negative sizes")
        return c


def build_chain(formats: list[str], units: list[str], unit_bytes, unit_cost, rest_bytes: int) -> Chain:
    """Greedy chain: at each step the next move (one unit, one base lower) with the least
    added cost per byte saved. Costs are estimated once per (unit, base)."""
    unit_bytes = np.asarray(unit_bytes, dtype=np.int64)
    unit_cost = np.asarray(unit_cost, dtype=np.float64)
    n_units, n_bases = unit_bytes.shape
    if n_bases < 2:
        raise ValueError("an elastic chain needs at least two base formats")
    if unit_cost.shape != unit_bytes.shape or n_units != len(units) or n_bases != len(formats):
        raise ValueError(f"unit_bytes {unit_bytes.shape} and unit_cost {unit_cost.shape} must both be "
                         f"(units={len(units)}, bases={len(formats)})")
    shrinks = np.diff(unit_bytes, axis=1) < 0
    if not shrinks.all():
        u, i = map(int, np.argwhere(~shrinks)[0])
        raise ValueError(f"base formats must shrink every unit: {units[u]} takes {unit_bytes[u, i + 1]} bytes in "
                         f"{formats[i + 1]} but {unit_bytes[u, i]} in {formats[i]}; order the formats largest first "
                         "and give no two of the same size")
    heap = [(_per_byte(unit_bytes, unit_cost, u, 0), u) for u in range(n_units)]
    heapq.heapify(heap)
    level = np.zeros(n_units, dtype=np.int64)
    moves = []
    while heap:
        _, u = heapq.heappop(heap)
        moves.append(u)
        level[u] += 1
        if level[u] < n_bases - 1:
            heapq.heappush(heap, (_per_byte(unit_bytes, unit_cost, u, level[u]), u))
    return Chain(list(formats), list(units), unit_bytes, unit_cost, int(rest_bytes), np.asarray(moves, dtype=np.int64))


def _per_byte(unit_bytes, unit_cost, u: int, i: int) -> float:
    return float(unit_cost[u, i + 1] - unit_cost[u, i]) / float(unit_bytes[u, i] - unit_bytes[u, i + 1])


@dataclass
class Family:
    """The options an artifact can host, and the copies it stores for them."""
    options: list[int]  # chain option indices, largest first
    copies: set[tuple[int, int]]  # (unit, base) stored
    storage_bytes: int  # copies + rest

    def to_dict(self) -> dict:
        return {"options": self.options, "copies": sorted(map(list, self.copies)), "storage_bytes": self.storage_bytes}

    @classmethod
    def from_dict(cls, d: dict, chain: Chain | None = None) -> "Family":
        """A family read from a manifest; with ``chain``, refuses options or copies outside it."""
        try:
            f = cls([int(k) for k in d["options"]], {(int(c[0]), int(c[1])) for c in d["copies"]}, int(d["storage_bytes"]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise InputError(f"the family is malformed ({type(e).__name__}: {e})") from None
        if chain is not None:
            if not f.options or any(not 0 <= k < chain.n_options for k in f.options):
                raise InputError(f"the family's options {f.options[:5]} are not options of the chain (0..{chain.n_options - 1})")
            if any(not (0 <= u < len(chain.units) and 0 <= i < len(chain.formats)) for u, i in f.copies):
                raise InputError("the family stores copies of units or base formats the chain does not have")
            a = chain.assignments()[f.options]
            if any((u, int(a[j, u])) not in f.copies for j in range(len(f.options)) for u in range(len(chain.units))):
                raise InputError("the family has options that need copies it does not store")
        return f


def family_of(chain: Chain, options) -> Family:
    """The family holding ``options`` and exactly the copies they use."""
    options = sorted(set(int(k) for k in options))
    if not options:
        raise ValueError("a family needs at least one option")
    a = chain.assignments()[options]
    copies = {(u, int(i)) for u in range(len(chain.units)) for i in np.unique(a[:, u])}
    return Family(options, copies, _storage(chain, copies))


def _storage(chain: Chain, copies) -> int:
    return chain.rest_bytes + int(sum(chain.unit_bytes[u, i] for u, i in copies))


def prune(chain: Chain, limit_bytes: int, family: Family | None = None) -> Family:
    """A family whose stored bytes fit ``limit_bytes``, by the greedy rule in the module
    docstring: each round drops the copy that loses the fewest options per byte it frees
    (its own bytes and those of the copies it leaves unused); once one drop can reach the
    limit, the drop reaching it with the fewest options lost."""
    family = family or family_of(chain, range(chain.n_options))
    sizes = chain.option_bytes()
    smallest = min(family.options, key=lambda k: sizes[k])
    if limit_bytes < sizes[smallest]:
        raise ValueError(f"a storage limit of {limit_bytes / 2**20:.1f} MiB is below the smallest option "
                         f"({sizes[smallest] / 2**20:.1f} MiB): no family fits it; raise the limit")
    alive = np.zeros(chain.n_options, dtype=bool)
    alive[family.options] = True
    ranges = chain.copy_ranges()
    copies = [c for c in ranges if c in family.copies]
    first = np.array([ranges[c][0] for c in copies])
    last = np.array([ranges[c][1] for c in copies])
    size = np.array([chain.unit_bytes[c] for c in copies], dtype=np.float64)
    while True:
        idx = np.flatnonzero(alive)
        lo = np.searchsorted(idx, first)  # first alive option each copy serves (index into idx)
        hi = np.searchsorted(idx, last, side="right") - 1  # last one
        used = hi >= lo
        storage = chain.rest_bytes + size[used].sum()
        if storage <= limit_bytes or len(idx) == 1:
            break
        lost = np.where(used, hi - lo + 1, 0)
        # dropping copy c frees every used copy whose alive options all lie in c's alive run
        inside = used[None, :] & (lo[None, :] >= lo[:, None]) & (hi[None, :] <= hi[:, None])
        freed = inside.astype(np.float64) @ size
        ok = used & (lost < len(idx))
        if not ok.any():
            return family_of(chain, [smallest])
        reach = ok & (storage - freed <= limit_bytes)
        pick = (np.flatnonzero(reach)[np.argmin(lost[reach])] if reach.any()
                else np.flatnonzero(ok)[np.argmin(lost[ok] / freed[ok])])
        alive[idx[lo[pick] : hi[pick] + 1]] = False
    return family_of(chain, np.flatnonzero(alive))


def estimate_cost(chain: Chain, measured: dict[int, float]) -> np.ndarray:
    """Each option's quality cost, from the measured options: the estimated cost maps to a
    measured one by piecewise-linear interpolation (exact at the measured options)."""
    est = chain.option_cost()
    if not measured:
        return est
    ks = sorted(measured, key=lambda k: est[k])
    return np.interp(est, est[ks], [measured[k] for k in ks])
