"""asmsketch few-shot stand-in: the prompt, greedy first then samples, and the early stop (a fake chat)."""

from asmsketch import fewshot


class FakeChat:
    """Records each call; answers with a repeated line and checks the stop rule as a streaming chat would."""

    def __init__(self, answer):
        self.calls, self.answer = [], answer

    def __call__(self, messages, temperature, seed, max_tokens, stop):
        self.calls.append((messages, temperature, seed, max_tokens))
        text = ""
        for line in self.answer.splitlines(keepends=True):
            text += line
            if stop(text):
                break
        return text


def test_greedy_first_then_seeded_samples_and_a_worked_example():
    chat = FakeChat("```\nadd a0, a0, a1\nret\n```\n")
    fs = fewshot.FewShot([("\tadd x0, x0, x1\n\tret\n", "\tadd a0, a0, a1\n\tret\n")], chat)
    out = fs.translate("\tsub x0, x0, x1\n\tret\n", "arm", "riscv", k=3)
    assert out == ["\tadd a0, a0, a1\n\tret\n"] * 3
    assert [(t, s) for _, t, s, _ in chat.calls] == [(0.0, 0), (fewshot.SAMPLE_TEMPERATURE, 1),
                                                   (fewshot.SAMPLE_TEMPERATURE, 2)]
    msgs = chat.calls[0][0]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "AArch64" in msgs[0]["content"] and "RISC-V" in msgs[0]["content"]
    assert msgs[1]["content"].startswith("\tadd x0") and msgs[2]["content"].startswith("\tadd a0")
    # the other direction swaps the example
    fs.translate("\tsub a0, a0, a1\n\tret\n", "riscv", "arm", k=1)
    assert chat.calls[-1][0][1]["content"].startswith("\tadd a0")


def test_a_degenerate_answer_is_cut_early():
    chat = FakeChat("\tli a0, 1\n" * 50 + "\tret\n")
    out = fewshot.FewShot([], chat).translate("\tret\n", "arm", "riscv", k=1)[0]
    assert out == "\tli a0, 1\n" * 3
    assert fewshot.degenerate("a\nb\nb\nb\n") and not fewshot.degenerate("a\nb\nb\nb") \
        and not fewshot.degenerate("\n\n\n\n")


def test_an_answer_far_longer_than_its_source_is_cut():
    chat = FakeChat("".join(f"\taddi a0, a0, {i}\n" for i in range(40)))
    out = fewshot.FewShot([], chat).translate("\tadd x0, x0, x1\n\tret\n", "arm", "riscv", k=1)[0]
    assert len(out.splitlines()) == fewshot.MAX_LINE_RATIO * 2 + 4 + 1
