"""The elastic chain and pruning: pure bookkeeping, checked on hand-made numbers."""
import numpy as np
import pytest

from elastiq.elastic.chain import build_chain, estimate_cost, family_of, prune

FORMATS = ["a8", "b6", "c4", "d3"]


def toy(seed=0, units=7):
    rng = np.random.default_rng(seed)
    size = rng.integers(1000, 5000, units)
    bytes_ = np.stack([size * b // 8 for b in (8, 6, 4, 3)], 1)
    cost = np.cumsum(rng.random((units, 4)) * [0, 0.1, 1, 5], axis=1)
    return build_chain(FORMATS, [f"u{i}" for i in range(units)], bytes_, cost, rest_bytes=123)


def test_chain_is_monotone_and_each_option_is_the_sum_of_its_units():
    c = toy()
    sizes, a = c.option_bytes(), c.assignments()
    assert c.n_options == 7 * 3 + 1
    assert (np.diff(sizes) < 0).all()
    expect = [123 + sum(c.unit_bytes[u, a[k, u]] for u in range(7)) for k in range(c.n_options)]
    assert sizes.tolist() == expect
    assert (a[0] == 0).all() and (a[-1] == 3).all() and (np.abs(np.diff(a, axis=0)).sum(1) == 1).all()
    costs = c.option_cost()
    assert costs[-1] == pytest.approx(c.unit_cost[:, 3].sum()) and costs[0] == pytest.approx(c.unit_cost[:, 0].sum())
    for k in (0, 5, c.n_options - 1):
        assert (c.assignment(k) == a[k]).all()


def test_greedy_takes_the_cheapest_move_per_byte_first():
    bytes_ = [[80, 60, 40, 30], [800, 600, 400, 300]]
    cost = [[0, 1.0, 2.0, 9.0], [0, 1.0, 3.0, 20.0]]  # per byte: unit 1's first move (1/200) beats unit 0's (1/20)
    c = build_chain(FORMATS, ["small", "big"], bytes_, cost, 0)
    # 1/200 (big), 1/100 (big, 6->4), 1/20 (small, 8->6), 1/20 (small 6->4), then 17/100 (big), 7/10 (small)
    assert c.moves.tolist() == [1, 1, 0, 0, 1, 0]


def test_bad_chains_are_refused():
    with pytest.raises(ValueError, match="at least two base formats"):
        build_chain(["a"], ["u"], [[10]], [[0]], 0)
    with pytest.raises(ValueError, match="must shrink every unit"):
        build_chain(["a", "b"], ["u"], [[10, 10]], [[0, 1]], 0)
    with pytest.raises(ValueError, match="must both be"):
        build_chain(["a", "b"], ["u"], [[10, 5]], [[0, 1, 2]], 0)


def test_prune_fits_the_limit_and_keeps_exactly_the_copies_its_options_use():
    c = toy(1)
    full = family_of(c, range(c.n_options))
    assert full.storage_bytes == 123 + c.unit_bytes.sum()
    sizes = c.option_bytes()
    previous = full
    for share in (1.0, 0.8, 0.6, 0.45):
        limit = int(full.storage_bytes * share)
        f = prune(c, limit)
        assert f.storage_bytes <= limit
        assert f.storage_bytes == 123 + sum(c.unit_bytes[u, i] for u, i in f.copies)
        used = {(u, int(c.assignment(k)[u])) for k in f.options for u in range(7)}
        assert used == f.copies
        assert len(f.options) <= len(previous.options)  # a tighter limit never keeps more options
        previous = f
    assert prune(c, full.storage_bytes).options == full.options
    with pytest.raises(ValueError, match="below the smallest option"):
        prune(c, int(sizes[-1]) - 1)
    tight = prune(c, int(sizes[-1]))  # room for one option only: the smallest
    assert tight.options == [c.n_options - 1] and tight.storage_bytes == sizes[-1]


def test_copy_ranges_match_the_assignments():
    c = toy(2)
    a = c.assignments()
    for (u, i), (first, last) in c.copy_ranges().items():
        holds = np.flatnonzero(a[:, u] == i)
        assert (first, last) == (holds.min(), holds.max()) and len(holds) == last - first + 1


def test_estimates_are_exact_at_measured_options_and_ordered_between():
    c = toy(3)
    measured = {0: 0.01, 10: 0.5, c.n_options - 1: 3.0}
    est = estimate_cost(c, measured)
    for k, v in measured.items():
        assert est[k] == pytest.approx(v)
    assert (np.diff(est) >= -1e-12).all()  # the proxy rises along the chain, so the estimate does too


def test_chain_round_trips_through_a_dict():
    from elastiq.elastic.chain import Chain, Family

    c = toy(4)
    d = Chain.from_dict(c.to_dict())
    assert d.moves.tolist() == c.moves.tolist() and (d.option_bytes() == c.option_bytes()).all()
    f = prune(c, int(family_of(c, range(c.n_options)).storage_bytes * 0.7))
    g = Family.from_dict(f.to_dict())
    assert g.options == f.options and g.copies == f.copies and g.storage_bytes == f.storage_bytes
