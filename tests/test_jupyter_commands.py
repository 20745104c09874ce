"""The kernel's command layer in process: how cell lines are routed, gdb's
command words and messages, source-level commands on real guests, and a
session that survives what gdb survives."""

from __future__ import annotations

import re
import time

import pytest

from kvmbench.engine.model import StopReason
from kvmbench.errors import KvmbenchError, SessionStateError, UsageError
from kvmbench.jupyter.commands import Workbench, help_text, lookup, parse_x_format
from kvmbench.jupyter.completion import complete, inspect
from kvmbench.jupyter.display import StopView
from kvmbench.jupyter.transform import make_transformer


def routed(cell: str, names: dict | None = None) -> str:
    return "".join(make_transformer(names or {})(cell.splitlines(keepends=True)))


# --- routing: which lines are commands --------------------------------------------------------


@pytest.mark.parametrize(("line", "python"), [
    ("c", "await _kvmbench_run('continue', '')"),
    ("n", "await _kvmbench_run('next', '')"),
    ("s 3", "await _kvmbench_run('step', '3')"),
    ("p n", "_kvmbench_command('p', 'n')"),
    ("x/4gx $sp", "_kvmbench_command('x', '/4gx $sp')"),
    ("list", "_kvmbench_command('list', '')"),
    ("break fib if n == 3", "_kvmbench_command('break', 'fib if n == 3')"),
    ("continue", "await _kvmbench_run('continue', '')"),
    ("del 2", "_kvmbench_command('del', '2')"),
    ("disas", "_kvmbench_command('disas', '')"),
    ("info frame", "_kvmbench_command('info', 'frame')"),
])
def test_a_line_starting_with_a_command_word_is_that_command(line: str, python: str) -> None:
    assert routed(line + "\n") == python + "\n"


def test_command_words_win_over_python_names_that_shadow_them() -> None:
    names = {"c": 5, "n": 1, "list": list, "next": next, "p": 2}
    assert routed("c\n", names) == "await _kvmbench_run('continue', '')\n"
    assert routed("n\n", names) == "await _kvmbench_run('next', '')\n"
    assert routed("p n\n", names) == "_kvmbench_command('p', 'n')\n"


@pytest.mark.parametrize("line", [
    "c = 5", "c += 1", "n, m = 1, 2", "print(x)", "list(range(3))", "next(it)", "display(obj)",
    "help(len)", "s.cont()", "frame.pc", "p[0] = 1", "del x", "x: int = 3", "set_x = 1",
])
def test_python_that_uses_a_command_word_as_a_name_stays_python(line: str) -> None:
    assert routed(line + "\n") == line + "\n"


def test_python_after_the_python_command_is_python_whatever_its_first_word() -> None:
    assert routed("python next = 5\n") == "next = 5\n"
    assert routed("py c\n") == "c\n"


def test_comments_and_blank_lines_never_change_how_the_next_line_is_read() -> None:
    cell = "# set up\n\nbreak fib\n   \n# now run\nc\n"
    assert routed(cell) == ("# set up\n\n_kvmbench_command('break', 'fib')\n   \n# now run\n"
                            "await _kvmbench_run('continue', '')\n")
    assert routed("x = 1  # n\nn\n") == "x = 1  # n\nawait _kvmbench_run('next', '')\n"


def test_a_word_that_is_neither_a_command_nor_python_gets_gdbs_answer() -> None:
    assert routed("foo bar\n") == "_kvmbench_command(None, 'foo bar')\n"
    assert routed("nxet\n") == "_kvmbench_command(None, 'nxet')\n"  # a misspelt command, not a NameError
    assert routed("known\n", {"known": 1}) == "known\n"
    assert routed("total = 1\ntotal\n") == "total = 1\ntotal\n"  # defined earlier in the cell
    with pytest.raises(UsageError, match=r'^Undefined command: "foo"\.  Try "help"\.$'):
        Workbench().execute("foo bar")


def test_multi_line_cells_mix_python_blocks_strings_and_commands() -> None:
    cell = ('for i in range(3):\n    next\n    %next\nvalues = [1,\n  2]\ndoc = """\nc\n"""\n'
            "break main\nc\n")
    out = routed(cell).splitlines()
    assert out[:2] == ["for i in range(3):", "    next"]  # indented: Python's
    assert out[2] == "    await _kvmbench_run('next', '')"  # %next anywhere is the command
    assert out[3:8] == ["values = [1,", "  2]", 'doc = """', "c", '"""']  # inside brackets, strings
    assert out[8:] == ["_kvmbench_command('break', 'main')", "await _kvmbench_run('continue', '')"]


def test_a_gdb_cell_is_commands_line_by_line_with_python_by_python() -> None:
    cell = "%%gdb\nbreak fib\n# comment\n\nc\npython print(1)\nfoo\n"
    assert routed(cell) == ("_kvmbench_command('break', 'fib')\n# comment\n\n"
                            "await _kvmbench_run('continue', '')\nprint(1)\n_kvmbench_command(None, 'foo')\n")


def test_commands_end_is_one_command_list() -> None:
    cell = "commands 1\nsilent\np n\ncontinue\nend\nc\n"
    assert routed(cell) == ("_kvmbench_command('commands', '1\\nsilent\\np n\\ncontinue\\nend')\n"
                            "await _kvmbench_run('continue', '')\n")


def test_inside_a_function_run_control_cannot_await() -> None:
    assert routed("def go():\n    %continue\n") == "def go():\n    _kvmbench_command('continue', '')\n"


def test_ipython_help_and_shell_syntax_is_left_to_ipython() -> None:
    for line in ("print?", "?print", "break??", "!ls"):
        assert routed(line + "\n") == line + "\n"


# --- command words, help, completion ---------------------------------------------------------


def test_command_words_resolve_as_gdbs_unique_prefixes() -> None:
    assert lookup("cont").name == "continue" and lookup("brea").name == "break"
    assert lookup("wat").name == "watch" and lookup("disas").name == "disassemble"
    with pytest.raises(UsageError, match=r'^Ambiguous command "de": '):
        lookup("de")
    with pytest.raises(UsageError, match=r'^Undefined command: "frobnicate"\.  Try "help"\.$'):
        lookup("frobnicate")


def test_help_lists_the_classes_and_explains_a_command() -> None:
    text = help_text()
    assert text.startswith("List of classes of commands:") and "breakpoints -- " in text
    assert "step -- " in help_text("running")
    assert help_text("s").startswith("step, s\n")
    with pytest.raises(UsageError, match="Undefined command"):
        help_text("nosuch")


def test_completion_offers_command_words_symbols_registers_and_numbers(workbench) -> None:
    workbench.execute("guest fib 10")
    workbench.execute("break fib")
    assert "finish" in complete(workbench, "fin", 3)["matches"]
    assert "fib" in complete(workbench, "break fi", 8)["matches"]
    assert complete(workbench, "p $ri", 5)["matches"] == ["$rip"]
    assert "frame" in complete(workbench, "info fr", 7)["matches"]
    assert complete(workbench, "delete ", 7)["matches"] == ["1"]


def test_shift_tab_on_a_command_word_shows_its_help(workbench) -> None:
    reply = inspect(workbench, "finish", 3)
    assert reply is not None and reply["data"]["text/plain"].startswith("finish, fin\n")
    workbench.execute("guest fib 10")
    symbol = inspect(workbench, "p fib", 4)
    assert symbol is not None and "fib: function at 0x" in symbol["data"]["text/plain"]


# --- on a real guest -------------------------------------------------------------------------------


@pytest.fixture
def workbench():
    wb = Workbench()
    yield wb
    wb.close()


def test_commands_need_a_guest(workbench):
    with pytest.raises(SessionStateError, match="The program is not being run"):
        workbench.execute("bt")


def test_break_says_where_as_gdb_and_continue_prints_gdbs_stop(workbench):
    workbench.execute("guest fib 10")
    assert workbench.execute("break fib").body.splitlines() == [
        "Breakpoint 1 at 0x101eda: file src/fib.c, line 12.", "(served by hlt trap)"]
    first = workbench.run("continue", "")
    second = workbench.run("continue", "")
    assert isinstance(second, StopView)
    assert second.lines == ("Breakpoint 1, fib (n=9) at src/fib.c:12",
                            "12\t    return n < 2 ? n : fib(n - 1) + fib(n - 2);")
    assert second.note == "breakpoint 1 via hlt trap, hit 2"
    assert any(d.current and d.address == second.stop.pc for d in second.disassembly)
    assert "rdi" in second.changed and first.registers["rdi"] == 10 and second.registers["rdi"] == 9
    assert "<table" in second._repr_html_() and "=>" in repr(second)


def test_break_star_is_the_first_byte_and_a_tracepoint_counts_every_call(workbench):
    workbench.execute("guest fib 10")
    assert workbench.execute("break *fib").body.startswith("Breakpoint 1 at 0x101ecd: file src/fib.c, line 11.")
    workbench.execute("delete")
    assert workbench.execute("trace fib").body.startswith("Tracepoint 2 at 0x101ecd: file src/fib.c, line 11.")
    assert workbench.run("continue", "").stop.reason is StopReason.EXITED
    assert workbench.s.breakpoints[2].hit_count == 177  # fib_calls(10)


def test_step_next_finish_and_the_lines_they_print(workbench):
    workbench.execute("guest fib 3")
    workbench.execute("break main")
    workbench.run("continue", "")
    assert workbench.run("next", "").lines == ("18\t    long result = fib(n);",)
    step = workbench.run("step", "")
    assert step.lines == ("fib (n=3) at src/fib.c:12", "12\t    return n < 2 ? n : fib(n - 1) + fib(n - 2);")
    finish = workbench.run("finish", "")
    assert finish.lines == ("Run till exit from #0  fib (n=3) at src/fib.c:12",
                            "0x0000000000101f4a in main (argc=2, argv=0x8000) at src/fib.c:18",
                            "18\t    long result = fib(n);", "Value returned is $1 = 2")
    assert workbench.execute("p $1 + 1").body == "$2 = 3"


def test_frames_locals_and_c_expressions(workbench):
    workbench.execute("guest sort 8")
    workbench.execute("break swap")
    workbench.run("continue", "")
    frames = workbench.execute("bt").body.splitlines()
    assert frames[0].startswith("#0  swap (i=") and frames[-1].startswith("#3  ") and "main" in frames[-1]
    assert workbench.execute("info locals").body.startswith("t = ")
    assert workbench.execute("up").body.splitlines()[0].startswith("#1  0x")
    assert "store = " in workbench.execute("info locals").body
    assert workbench.execute("p items[0] == items[0]").body == "$1 = 1"
    assert workbench.execute("whatis items").body == "type = volatile long [256]"
    assert workbench.execute("p/x 255").body == "$2 = 0xff"
    workbench.execute("set var item_count = 3")
    assert workbench.execute("p item_count").body == "$3 = 3"
    with pytest.raises(UsageError, match='^No symbol "nosuch" in current context.$'):
        workbench.execute("p nosuch")


def test_a_c_condition_stops_only_in_the_frame_it_holds_in(workbench):
    workbench.execute("guest fib 8")
    workbench.execute("break fib if n == 3")
    stop = workbench.run("continue", "")
    assert stop.lines[0] == "Breakpoint 1, fib (n=3) at src/fib.c:12"
    workbench.execute("condition 1 n == 1 && $rdi == 1")
    assert workbench.run("continue", "").lines[0] == "Breakpoint 1, fib (n=1) at src/fib.c:12"
    assert workbench.execute("condition 1").body == "Breakpoint 1 now unconditional."


def test_breakpoint_commands_run_at_the_stop_and_continue_resumes(workbench):
    workbench.execute("guest fib 5")
    workbench.execute("break fib")
    workbench.execute("commands 1\nsilent\nprint n\ncontinue\nend")
    view = workbench.run("continue", "")
    printed = [line for line in view.lines if line.startswith("$")]
    assert len(printed) == 15 and printed[0] == "$1 = 5"  # fib_calls(5) stops, each silent
    assert view.stop.reason is StopReason.EXITED


def test_displays_show_at_every_stop_in_their_scope(workbench):
    workbench.execute("guest fib 4")
    with pytest.raises(UsageError, match='^No symbol "n" in current context.$'):
        workbench.execute("display n")  # at _start: gdb refuses it, and keeps no display
    workbench.execute("break fib")
    workbench.run("continue", "")
    assert workbench.execute("display n").body == "1: n = 4"
    assert workbench.execute("display/x n * 16").body == "2: /x n * 16 = 0x40"
    view = workbench.run("continue", "")
    assert view.lines[-2:] == ("1: n = 3", "2: /x n * 16 = 0x30")
    assert workbench.execute("info display").body.splitlines()[2:] == ["1:   y  n", "2:   y  /x n * 16"]


def test_watch_an_array_element_and_a_global(workbench):
    workbench.execute("guest counter 1")
    text = workbench.execute("watch counter").body.splitlines()
    assert text[0] == "Watchpoint 1: counter" and text[1].startswith("(8 bytes at 0x")
    stop = workbench.run("continue", "")
    assert stop.lines[:4] == ("Watchpoint 1: counter", "", "Old value = 0", "New value = 1")  # gdb's blank line
    assert stop.lines[4].startswith("increment () at src/counter.c:")


def test_gdbs_words_for_what_the_target_cannot_do(workbench):
    workbench.execute("guest fib 4")
    for line in ("catch syscall", "signal SIGINT", "record"):
        with pytest.raises(UsageError, match=r"^You can't do that when your target is `kvmbench'$"):
            workbench.execute(line)
    with pytest.raises(UsageError, match="^Unable to read siginfo$"):
        workbench.execute("p $_siginfo")
    with pytest.raises(UsageError, match='^Undefined info command: "foo".  Try "help info".$'):
        workbench.execute("info foo")


def test_every_error_is_one_line(workbench):
    workbench.execute("guest fib 4")
    for line in ("p 1 +", "x/4q $sp", "frame 99", "list nosuch", "break nosuch", "up 1 2",
                 "finish now", "watch 1 + 2", "info line nosuch", "undisplay 9"):
        try:
            workbench.execute(line)
        except KvmbenchError as error:
            assert "\n" not in str(error) and str(error), (line, str(error))


# --- the session survives what gdb survives -----------------------------------------------------


def test_after_the_guest_exits_breakpoints_stay_listable_deletable_and_run_keeps_them(workbench):
    workbench.execute("guest fib 4")
    workbench.execute("break fib")
    workbench.execute("tbreak main")
    workbench.execute("delete 2")
    workbench.execute("break main")
    assert workbench.run("continue", "").lines[0].startswith("Breakpoint 3, main (")
    workbench.execute("delete 3")
    workbench.execute("disable 1")
    assert workbench.run("continue", "").lines == ("[Inferior 1 (guest fib) exited normally]",)
    listed = workbench.execute("info breakpoints").body.splitlines()
    assert listed[1].startswith("1       breakpoint     keep n   0x0000000000101eda in fib at src/fib.c:12")
    with pytest.raises(SessionStateError, match="The program is not being run."):
        workbench.execute("next")
    workbench.execute("enable 1")
    view = workbench.run("run", "")  # the same guest again, from its first instruction
    assert view.lines[0] == "Breakpoint 1, fib (n=4) at src/fib.c:12"
    workbench.execute("delete")
    assert workbench.execute("info breakpoints").body == "No breakpoints or watchpoints."


def test_booting_the_same_guest_again_keeps_its_breakpoints_and_numbers(workbench):
    workbench.execute("guest fib 4")
    workbench.execute("break main")
    workbench.execute("break fib")
    workbench.execute("delete 1")
    assert "(1 breakpoint kept)" in workbench.execute("guest fib 5").body
    assert [bp.number for bp in workbench.s.breakpoints] == [2]
    assert workbench.execute("break main").body.startswith("Breakpoint 3 at")
    workbench.execute("guest sort 4")  # another image: its breakpoints are its own
    assert len(workbench.s.breakpoints) == 0


def test_kill_keeps_the_breakpoints_for_the_next_run(workbench):
    workbench.execute("guest fib 4")
    workbench.execute("break fib")
    assert workbench.execute("kill").body == "[Inferior 1 (guest fib) killed]"
    assert workbench.execute("info breakpoints").body.splitlines()[1].startswith("1       breakpoint")
    assert workbench.run("run", "").lines[0] == "Breakpoint 1, fib (n=4) at src/fib.c:12"


# --- x, kept from before ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt, expected", [
    ("", (1, "x", None)), ("4gx", (4, "x", 8)), ("4xg", (4, "x", 8)),
    ("s", (1, "s", None)), ("10i", (10, "i", None)), ("3bd", (3, "d", 1)),
])
def test_x_format_parses_gdb_spellings(fmt, expected):
    assert parse_x_format(fmt) == expected


@pytest.mark.parametrize("fmt", ["4q", "g4", "-1x"])
def test_x_format_rejects_malformed(fmt):
    with pytest.raises(UsageError, match="malformed format|Undefined output format"):
        parse_x_format(fmt)


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
    with pytest.raises(UsageError, match=re.escape("Argument required (starting display address).")):
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
    start = time.monotonic()
    with pytest.raises(UsageError, match="at most|malformed"):
        workbench.execute(line)
    assert time.monotonic() - start < 1.0


def test_delete_of_a_huge_range_acts_on_the_requests_inside_it(workbench) -> None:  # type: ignore[no-untyped-def]
    workbench.execute("guest fib 10")
    workbench.execute("break fib")
    workbench.execute("break main")
    workbench.execute("delete 1-99999999999999")
    assert len(workbench.s.breakpoints) == 0
