"""Hostile expressions: every answer is a value or one gdb-style line, in bounded time.

No input may leak a Python exception (RecursionError, ValueError from the
int-to-string limit, pycparser's own errors) or take more than linear time:
huge literals, shifts and history numbers, deep nesting of every kind,
100,000-character expressions.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.errors import ExpressionError
from kvmbench.expressions import Evaluator
from kvmbench.symbols.program import Program

LONG = 100_000

HOSTILE = {
    "a long sum": "+".join(["1"] * (LONG // 2)),
    "a long sum of variables": "+".join(["i_var"] * (LONG // 6)),
    "a long product": "*".join(["2"] * (LONG // 2)),
    "a long comma list": ",".join(["1"] * (LONG // 2)),
    "a long logical chain": "&&".join(["1"] * (LONG // 3)),
    "deep parentheses": "(" * (LONG // 2) + "1" + ")" * (LONG // 2),
    "a run of unary minus": "-" * LONG + "1",
    "a run of negations": "!" * LONG + "1",
    "a run of dereferences": "*" * LONG + "ip_var",
    "a chain of casts": "(int)" * (LONG // 5) + "1",
    "a chain of ternaries": "1?" * (LONG // 4) + "1" + ":1" * (LONG // 4),
    "a chain of assignments": "=".join(["$a"] * (LONG // 3)) + "=1",
    "a chain of subscripts": "zeros" + "[0]" * (LONG // 3),
    "a chain of members": "list_a" + ".next" * (LONG // 5),
    "a chain of @": "i_var@" + "1@" * (LONG // 2) + "1",
    "nested braces": "{" * (LONG // 5) + "int" + "}" * (LONG // 5) + "0",
    "a chain of sizeof": "sizeof " * (LONG // 7) + "1",
    "a huge decimal literal": "9" * LONG,
    "a huge hex literal": "0x" + "f" * LONG,
    "a huge float literal": "1" + "0" * LONG + ".0",
    "a huge exponent": "1e" + "9" * LONG,
    "a huge history number": "$" + "9" * LONG,
    "a huge relative history number": "$$" + "9" * LONG,
    "a huge shift": "1 << " + "9" * 18,
    "a huge string": '"' + "a" * LONG + '"',
    "a huge identifier": "x" * LONG,
    "a huge convenience variable": "$" + "a" * LONG,
    "junk": "@" * LONG,
    "a NUL": "\0",
    "non-ASCII": "é",
    "registers run together": "$rax" * (LONG // 4),
    "unsigned overflow": "(unsigned long)-1 * (unsigned long)-1",
}


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory: pytest.TempPathFactory) -> Evaluator:
    elf = build.build_program(tmp_path_factory.mktemp("hostile"), ["types.c"], "types")
    return Evaluator(Program.from_path(elf))


@pytest.mark.slow
@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_gives_a_value_or_one_line_error_in_bounded_time(evaluator: Evaluator, text: str) -> None:
    start = time.perf_counter()
    try:
        answer = evaluator.print(text)
    except ExpressionError as exc:
        answer = str(exc)
        assert "\n" not in answer and answer
    elapsed = time.perf_counter() - start
    # A correctness bound, not a benchmark: linear work on 100,000 characters.
    assert elapsed < 30, f"{elapsed:.1f} s"
    assert len(answer) < LONG * 2


def test_a_literal_too_large_for_64_bits_is_refused_as_gdb_refuses_it(evaluator: Evaluator) -> None:
    with pytest.raises(ExpressionError, match=r"^Numeric constant too large\.$"):
        evaluator.evaluate("9" * 5000)


def test_deep_nesting_is_refused_in_one_line(evaluator: Evaluator) -> None:
    with pytest.raises(ExpressionError, match="nested too deeply"):
        evaluator.evaluate("(" * 1000 + "1" + ")" * 1000)


def test_moderate_nesting_still_evaluates(evaluator: Evaluator) -> None:
    assert evaluator.evaluate("(" * 100 + "1" + ")" * 100).as_int() == 1
    assert evaluator.evaluate("- " * 50 + "1").as_int() == 1


def test_a_shift_past_the_width_warns_and_gives_zero_as_gdb(evaluator: Evaluator) -> None:
    evaluation = evaluator.evaluate_full("1 << 999999999999")
    assert evaluation.value.as_int() == 0
    assert evaluation.warnings == ["left shift count >= width of type"]


def test_long_string_literal_prints_as_one_repeat_group(evaluator: Evaluator) -> None:
    assert evaluator.print('"' + "a" * 300 + '"', record=False) == "'a' <repeats 300 times>"


def test_unprintable_characters_are_escaped_in_the_message(evaluator: Evaluator, tmp_path: Path) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluator.evaluate("1 \x01")
    assert str(info.value) == "Invalid character '\\001' in expression."
