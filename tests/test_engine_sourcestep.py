"""Source stepping in the engine: step, next, until and finish from a frame
on live guests, with the interrupts a VMM delivers and the frames CFI gives.
(The pc sequences against real gdb are in test_gdb_live.py.)"""

from __future__ import annotations

import time

import pytest
from corpus import corpus_dir  # noqa: F401 - fixture

from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import StopReason


def _line(s):  # type: ignore[no-untyped-def]
    location = s.program.line_at(s.pc)
    return (location.file, location.line) if location is not None else None


def _at(s, location: str) -> int:  # type: ignore[no-untyped-def]
    return s.program.breakpoint_locations(location)[0]


def test_step_enters_a_function_past_its_prologue_where_break_would_stop(open_guest) -> None:
    s = open_guest("fib", [5])
    s.breakpoints.add(_at(s, "src/fib.c:18"), temporary=True)
    s.cont()
    stop = s.step()
    assert stop.reason is StopReason.STEP and stop.pc == _at(s, "fib")
    assert _line(s) == ("src/fib.c", 12)


def test_next_runs_a_call_to_its_return_in_this_frame_only(open_guest) -> None:
    s = open_guest("fib", [6])
    s.breakpoints.add(_at(s, "src/fib.c:18"), temporary=True)
    s.cont()
    rsp = s.regs.rsp
    stop = s.next()  # over fib(6): 25 recursive calls pass the same return address first
    assert stop.reason is StopReason.STEP and _line(s) == ("src/fib.c", 20)
    assert s.regs.rsp == rsp


def test_a_breakpoint_in_the_called_function_ends_next_as_in_gdb(open_guest) -> None:
    s = open_guest("fib", [4])
    s.breakpoints.add(_at(s, "src/fib.c:18"), temporary=True)
    s.cont()
    bp = s.breakpoints.add(_at(s, "fib"))
    stop = s.next()
    assert stop.reason is StopReason.BREAKPOINT and stop.breakpoint == bp.number
    assert bp.hit_count == 1


def test_until_runs_a_loop_to_its_end(open_guest) -> None:
    s = open_guest("callmix", [4])
    s.breakpoints.add(_at(s, "play_round"), temporary=True)
    s.cont()
    s.finish()  # back in main's for loop, mid-line 70
    lines = {_line(s)}
    for _ in range(3):
        stop = s.next()
        lines.add(_line(s))
    assert ("src/callmix.c", 69) in lines  # next goes round the loop
    while _line(s) != ("src/callmix.c", 70):
        s.next()
    s.next()
    assert _line(s) == ("src/callmix.c", 69)
    stop = s.until_line()  # at the loop's condition: until does not go round again
    assert stop.reason is StopReason.STEP and _line(s) == ("src/callmix.c", 71)
    assert "f0 calls=" not in s.console


def test_finish_from_an_outer_frame_returns_from_that_frame(open_guest) -> None:
    s = open_guest("sort", [8])
    s.breakpoints.add(_at(s, "swap"), temporary=True)
    s.cont()
    frames = s.frame_list()
    assert [f.name for f in frames[:3]] == ["swap", "partition", "quicksort"]
    caller_of_partition = frames[2].pc
    stop = s.finish(frame=1)  # "Run till exit from #1 ... partition"
    assert stop.reason is StopReason.FINISH and stop.pc == caller_of_partition
    assert [f.name for f in s.frame_list()][:1] == ["quicksort"]


def test_frame_selection_is_reset_by_every_stop(open_guest) -> None:
    s = open_guest("fib", [5])
    s.breakpoints.add(_at(s, "fib"))
    s.cont()
    s.cont()
    assert s.select_frame(1).name == "fib" and s.selected_frame == 1
    s.cont()
    assert s.selected_frame == 0


def test_stepping_and_next_never_enter_the_timer_handler_while_ticks_go_on(open_guest, skip_unless) -> None:
    skip_unless(Feature.SINGLE_STEP, Feature.INTERRUPT_INJECTION)
    s = open_guest("ticks", [400])  # the loop runs for 400 ticks of 1 ms
    handler = s.symbols.get_by_name("tick_handler")
    ticks = s.symbols.get_by_name("ticks").address
    s.breakpoints.add(_at(s, "src/ticks.c:34"), temporary=True)
    s.cont()  # interrupts on, the timer running
    before = s.mem.read_u64(ticks)
    seen = set()
    for k in range(30):
        time.sleep(0.002)  # let ticks fall due while stopped
        stop = s.step() if k % 3 == 0 else s.next()
        if stop.reason is StopReason.EXITED:
            break
        assert stop.reason is StopReason.STEP, stop.describe()
        assert not handler.contains(stop.pc), f"stopped in the handler at {stop.pc:#x}"
        seen.add(_line(s))
    assert seen <= {("src/ticks.c", 34), ("src/ticks.c", 35), ("src/ticks.c", 24), ("src/ticks.c", 25),
                    ("src/ticks.c", 23), ("src/ticks.c", 36)}, seen
    assert s.mem.read_u64(ticks) > before  # the ticks arrived while next ran work() to its return
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0
    assert "ticks = 400" in s.console or "ticks = 401" in s.console


@pytest.mark.parametrize("guest", ["entries-O2", "entries-Os"])
def test_next_and_finish_in_frameless_optimised_code_use_its_cfi(open_guest, corpus_dir, guest) -> None:  # type: ignore[no-untyped-def]
    from corpus import open_case

    s = open_case(open_guest, guest, "frameless", 3)
    entry = s.breakpoints.add("frameless_walk", temporary=True)
    assert s.cont().pc == entry.address
    true_return = s.mem.read_u64(s.regs.rsp)
    s.stepi()  # past the entry: rbp is data, only the CFI knows the caller
    stop = s.finish()
    assert stop.reason is StopReason.FINISH and stop.pc == true_return


def test_an_interrupt_a_step_delivers_anyway_is_run_to_its_return_not_stepped_into() -> None:
    """The VMM holds its ticks while stepping, but one queued before the
    step (injected as a continue ended) is delivered by it: the step lands
    on the handler's first instruction with the interrupt frame pushed
    (SDM vol. 3, 6.14.2). Source stepping runs the handler to the
    interrupted instruction and steps that instead."""
    from fake_target import FakeTarget, fake_symbols, stepped_to, trap_at

    from kvmbench.backends.target import Stepped
    from kvmbench.engine.session import Session

    code, handler, stack = 0x1000, 0x1040, 0x8000
    frame = (stack & ~0xF) - 40

    def interrupted(t, how):  # type: ignore[no-untyped-def]
        for k, value in enumerate((code, 0x8, 0x202, stack, 0x10)):  # rip, cs, rflags, rsp, ss
            t.memory[frame + 8 * k:frame + 8 * k + 8] = value.to_bytes(8, "little")
        t.regs["rsp"], t.regs["rip"] = frame - 8, handler + 1  # and the handler's first push ran
        return Stepped(handler + 1)

    def handler_returns(t, how):  # type: ignore[no-untyped-def]
        t.regs["rsp"] = stack
        return trap_at(code)(t, how)

    target = FakeTarget(script=[interrupted, handler_returns, stepped_to(code + 1)])
    target.memory[code:code + 64] = b"\x90" * 64
    target.memory[handler:handler + 16] = b"\x50" + b"\x90" * 15
    target.regs["rip"], target.regs["rsp"] = code, stack
    s = Session(target, fake_symbols(work=(code, 32), tick_handler=(handler, 16)))
    stop = s._run(s.sourcestep.instruction)
    assert stop.reason is StopReason.STEP and stop.pc == code + 1
    assert target.regs["rsp"] == stack
    modes = [entry[1].mode.name for entry in target.log if entry[0] == "resume"]
    assert modes == ["STEP", "CONTINUE", "STEP"]  # the handler ran free, the instruction was stepped
