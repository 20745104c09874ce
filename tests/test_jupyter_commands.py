"""Handler-level tests of the kernel's command layer, in process: the x/FMT
parser, expressions, the input transformer, and commands on a real guest."""

from __future__ import annotations

import pytest

from kvmbench.errors import SessionStateError, UsageError
from kvmbench.jupyter import expressions
from kvmbench.jupyter.commands import Workbench, parse_x_format
from kvmbench.jupyter.display import StopView
from kvmbench.jupyter.transform import make_transformer


@pytest.mark.parametrize("fmt, expected", [
    ("", (1, "x", None)), ("4gx", (4, "x", 8)), ("4xg", (4, "x", 8)),
    ("s", (1, "s", None)), ("10i", (10, "i", None)), ("3bd", (3, "d", 1)),
])
def test_x_format_parses_gdb_spellings(fmt, expected):
    assert parse_x_format(fmt) == expected


@pytest.mark.parametrize("fmt", ["4q", "g4", "-1x"])
def test_x_format_rejects_malformed(fmt):
    with pytest.raises(UsageError, match="malformed format"):
        parse_x_format(fmt)


def test_expressions_use_registers_symbols_and_loads():
    regs = {"rsp": 0x1000, "rip": 0x2004}
    syms = {"fib": 0x2000}
    value = expressions.evaluate("$rip - fib + *($rsp + 8) * 2", regs.__getitem__, syms.__getitem__,
                                 lambda a: 3 if a == 0x1008 else 0)
    assert value == 4 + 6


def test_expressions_refuse_python():
    with pytest.raises(UsageError):
        expressions.evaluate("__import__('os')", lambda r: 0, lambda s: 0, lambda a: 0)


def test_transformer_awaits_run_control_and_calls_commands():
    transform = make_transformer({})
    assert transform(["%continue\n"]) == ["await _kvmbench_run('continue', '')\n"]
    assert transform(["c\n"]) == ["await _kvmbench_run('continue', '')\n"]
    assert transform(["x/4gx $rsp\n"]) == ["_kvmbench_command('x', '/4gx $rsp')\n"]
    assert transform(["break fib if rdi == 5\n", "si 2\n"]) == [
        "_kvmbench_command('break', 'fib if rdi == 5')\n", "await _kvmbench_run('stepi', '2')\n"]


def test_transformer_leaves_python_alone():
    transform = make_transformer({"x": 1})
    for cell in (["x = 1\n"], ["x\n"], ["for i in range(3):\n", "    continue\n"], ["print(1)\n"]):
        assert transform(list(cell)) == cell


def test_transformer_does_not_await_inside_functions():
    out = make_transformer({})(["def go():\n", "    %continue\n"])
    assert out[1] == "    _kvmbench_command('continue', '')\n"


@pytest.fixture
def workbench():
    wb = Workbench()
    yield wb
    wb.close()


def test_commands_need_a_guest(workbench):
    with pytest.raises(SessionStateError, match="no guest"):
        workbench.execute("info breakpoints")


def test_break_continue_gives_stop_card_with_changes(workbench):
    workbench.execute("guest fib 10")
    workbench.execute("break fib")
    first = workbench.run("continue", "")
    second = workbench.run("continue", "")
    assert isinstance(second, StopView)
    assert second.headline.startswith("breakpoint 1 (fib) via hlt trap")
    assert second.source and second.source.startswith("src/fib.c:")
    assert any(d.current and d.address == second.stop.pc for d in second.disassembly)
    assert "rdi" in second.changed and first.registers["rdi"] == 10 and second.registers["rdi"] == 9
    assert "<table" in second._repr_html_() and "=>" in repr(second)


def test_examine_print_and_backtrace(workbench):
    workbench.execute("guest fib 10")
    workbench.execute("break fib")
    workbench.run("continue", "")
    workbench.run("stepi", "2")
    assert workbench.execute("p $rip - fib").body.startswith("4 ")
    assert workbench.execute("x/2i $rip").body.count("\n") == 1
    frames = workbench.execute("bt").body.splitlines()
    assert "fib+4" in frames[0] and "main+" in frames[1]
    assert workbench.execute("x/1gx $rsp").body.startswith("0x")


def test_hbreak_slots_run_out_with_a_clear_error(workbench):
    workbench.execute("guest fib 10")
    for name in ("main", "fib", "parse_int", "printf"):
        workbench.execute(f"hbreak {name}")
    with pytest.raises(Exception, match="no free hardware debug slot"):
        workbench.execute("hbreak puts")
    assert "hlt trap" in workbench.execute("break puts").body


def test_x_remembers_format_and_continues_after_the_last_unit(workbench):
    workbench.execute("guest fib 10")
    rsp = workbench.s.regs.rsp
    first = workbench.execute("x/2gx $rsp").body
    assert first.startswith(f"{rsp:#x}")
    more = workbench.execute("x").body  # gdb: one more giant hex word, right after
    assert more.startswith(f"{rsp + 16:#x}") and more.count("\t0x") == 1
    again = workbench.execute("x/1 $rsp").body  # a count alone keeps format and size
    assert again.count("\t") == 1 and len(again.split("\t")[1]) == 18


def test_x_without_an_earlier_x_asks_for_an_address(workbench):
    workbench.execute("guest fib 10")
    with pytest.raises(UsageError, match="no earlier x"):
        workbench.execute("x")


def test_a_watch_only_stepping_can_serve_warns_about_its_cost(workbench):
    workbench.execute("guest counter 2")
    reply = workbench.execute("rwatch read_me").body
    if "single-step compare" in reply:
        assert "note:" in reply and "slow" in reply
    else:  # a host with debug-register watchpoints serves it for free
        assert "note:" not in reply


@pytest.mark.parametrize("line", ["x/100000000s $rsp", "x/100000000xg $rsp", "x/99999999999i $pc",
                                  "x/9999999999999999999999x $rsp"])
def test_x_with_an_unbounded_count_is_refused_at_once(workbench, line: str) -> None:  # type: ignore[no-untyped-def]
    workbench.execute("guest fib 10")
    with pytest.raises(UsageError, match="at most|malformed"):
        workbench.execute(line)


def test_delete_of_a_huge_range_acts_on_the_requests_inside_it(workbench) -> None:  # type: ignore[no-untyped-def]
    workbench.execute("guest fib 10")
    workbench.execute("break fib")
    workbench.execute("break main")
    workbench.execute("delete 1-99999999999999")
    assert len(workbench.s.breakpoints) == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("1 << 1000", 0), ("-1", (1 << 64) - 1), ("0xffffffffffffffff + 1", 0), ("1 << -1", 0),
    ("2 ** 64", 0),  # as in gdb: 2 * *64, a load (here of 0)
    ("a_symbol(", None),
])
def test_print_arithmetic_is_64_bit_and_never_explodes(text: str, expected: int | None) -> None:
    from kvmbench.jupyter.expressions import evaluate

    if expected is None:
        with pytest.raises(UsageError):
            evaluate(text, lambda r: 0, lambda s: 0, lambda a: 0)
    else:
        assert evaluate(text, lambda r: 0, lambda s: 0, lambda a: 0) == expected


@pytest.mark.parametrize("text", ["(" * 10000 + "1" + ")" * 10000, "1+" * 60000 + "1",
                                  "*" * 20000 + "1", "9" * 20000])
def test_hostile_expressions_are_one_line_errors_in_linear_time(text: str) -> None:
    import time

    from kvmbench.jupyter.expressions import evaluate

    start = time.monotonic()
    with pytest.raises(UsageError) as error:
        evaluate(text, lambda r: 0, lambda s: 0, lambda a: 0)
    assert "\n" not in str(error.value) and len(str(error.value)) < 200
    assert time.monotonic() - start < 2.0
