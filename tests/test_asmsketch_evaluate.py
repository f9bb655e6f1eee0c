"""asmsketch: the per-function pass lists of the evaluation and the paired comparison built on them."""

import importlib.util
import os

import pytest

from asmsketch_support import needs_llvm, pairs
from asmsketch import baseline, evaluate
from asmsketch.errors import AsmSketchError
from asmsketch.pipeline import parse_body

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_paired_counts_split_the_functions():
    passed = {"a": {"at_1": ["f1", "f2", "f3"], "at_5": ["f1", "f2", "f3", "f4"]},
              "b": {"at_1": ["f3", "f5"], "at_5": ["f1", "f2", "f3", "f5"]}}
    got = evaluate.paired(passed, "a", "b")
    assert got["at_1"] == {"a_only": 2, "b_only": 1, "both": 1}
    assert got["at_5"] == {"a_only": 1, "b_only": 1, "both": 3}


def test_sign_test_p_values():
    assert evaluate.sign_test_p(0, 0) == 1.0
    assert evaluate.sign_test_p(3, 3) == 1.0
    assert evaluate.sign_test_p(5, 0) == pytest.approx(2 / 32)  # two-sided: both all-wins and all-losses
    assert evaluate.sign_test_p(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert evaluate.sign_test_p(2, 8) == evaluate.sign_test_p(8, 2)


def _transpile_bench():
    spec = importlib.util.spec_from_file_location("transpile_bench", os.path.join(ROOT, "bench", "transpile.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shards_combine_their_pass_lists():
    tb = _transpile_bench()
    row = {"pass_at_1": 0.5, "pass_at_5": 0.5, "false_passes": 0, "n": 2}
    s1 = {"beam": row, "_passed": {"beam": {"at_1": ["f1"], "at_5": ["f1"]}}}
    s2 = {"beam": {**row, "n": 1, "pass_at_1": 1.0, "pass_at_5": 1.0},
          "_passed": {"beam": {"at_1": ["f2"], "at_5": ["f2"]}}}
    out = tb._combine_shards([s1, s2])
    assert out["_passed"] == {"beam": {"at_1": ["f1", "f2"], "at_5": ["f1", "f2"]}}
    assert out["beam"]["n"] == 3 and out["beam"]["pass_at_1"] == pytest.approx(2 / 3)
    lines = tb.paired_lines({"_passed": {"guess_sketch": {"at_1": ["f1", "f2"], "at_5": ["f1", "f2"]},
                                         "gs_random_holes": {"at_1": ["f2"], "at_5": ["f2", "f3"]}}})
    assert lines[2] == "| G&S, random holes (ablation) | 1 | 0 | 1 | 1 | 1 | 1 | 1 | 1 |"


@needs_llvm
def test_evaluate_lists_the_functions_each_method_passes():
    ps = list(pairs())[:3]

    def rule_based(body, s, t):
        return [baseline.transpile(parse_body(s, body))]

    def nothing(body, s, t):
        raise AsmSketchError("no translation")

    out = evaluate.evaluate(None, ps, extra_methods={"rule_based": rule_based, "nothing": nothing},
                            n_inputs=5, audit_inputs=5, directions=(("arm", "riscv"),))
    rows = out["arm_to_riscv"]
    passed = rows["_passed"]
    assert len(passed["rule_based"]["at_1"]) == round(rows["rule_based"]["pass_at_1"] * 3) == 3
    assert set(passed["rule_based"]["at_1"]) == {p.id for p in ps}
    assert passed["nothing"]["at_1"] == [] and rows["nothing"]["pass_at_1"] == 0.0
    assert evaluate.paired(passed, "rule_based", "nothing")["at_1"] == {"rule_based_only": 3, "nothing_only": 0,
                                                                        "both": 0}
