"""Run control on live guests: stepi, nexti, finish, until and advance land
where gdb would on the same binary; pause from another thread; stepping
never enters interrupt handlers."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

import pytest
from conftest import fib_value

from kvmbench.arch.instructions import decode
from kvmbench.arch.x86_64 import Dr6, significant_bits
from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import StopReason
from kvmbench.guests import guest_path

_GDB_LINE = re.compile(r"^\s*(?:=>\s*)?0x([0-9a-f]+) <\+(\d+)>:\s+(\S+)", re.M)


def gdb_disassemble(guest: str, function: str) -> list[tuple[int, str]]:
    """[(address, mnemonic)] of ``function`` as real gdb disassembles it."""
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    out = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", f"disassemble {function}", str(guest_path(guest))],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return [(int(a, 16), m) for a, _, m in _GDB_LINE.findall(out)]


@pytest.fixture(scope="module")
def fib_code() -> dict[str, list[tuple[int, str]]]:
    return {f: gdb_disassemble("fib", f) for f in ("fib", "main")}


def _call_and_next(code: list[tuple[int, str]], callee_hint: str = "") -> tuple[int, int]:
    for k, (address, mnemonic) in enumerate(code):
        if mnemonic.startswith("call"):
            return address, code[k + 1][0]
    raise AssertionError("no call")


def _main_calls_fib(code) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    calls = [(a, code["main"][k + 1][0]) for k, (a, m) in enumerate(code["main"]) if m.startswith("call")]
    return calls[1]  # arg_int, then fib


def test_model_single_step_rip_and_dr6(open_guest, skip_unless) -> None:
    skip_unless(Feature.SINGLE_STEP)
    s = open_guest("probe", ["step"])
    start = s.symbols.get_by_name("probe_step_code").address
    assert s.advance("probe_step_code").pc == start
    for expected in (start + 1, start + 6, start + 8, start + 9, start + 14):
        stop = s.stepi()
        assert stop.reason is StopReason.STEP
        assert stop.pc == expected == s.regs.rip
        assert significant_bits(stop.extra["dr6"]) == Dr6.BS
    assert s.regs.rax == 2 and s.regs.rcx == 1
    assert s.cont().exit_code == 0


def test_stepi_into_a_call_lands_at_the_callees_first_instruction(open_guest, fib_code) -> None:
    call, after = _main_calls_fib(fib_code)
    s = open_guest("fib", [6])
    assert s.advance(call).pc == call
    rsp = s.regs.rsp
    stop = s.stepi()
    assert stop.pc == fib_code["fib"][0][0] == s.symbols.get_by_name("fib").address
    assert s.regs.rsp == rsp - 8 and s.mem.read_u64(s.regs.rsp) == after


def test_nexti_over_a_call_lands_at_the_next_instruction(open_guest, fib_code) -> None:
    call, after = _main_calls_fib(fib_code)
    s = open_guest("fib", [7])
    bp = s.breakpoints.trace("fib")
    s.advance(call)
    stop = s.nexti()
    assert stop.reason is StopReason.STEP and stop.pc == after
    assert s.regs.rax == fib_value(7)
    assert bp.hit_count == 2 * fib_value(8) - 1  # the callee ran, tracepoint and all
    assert s.cont().exit_code == 0


def test_nexti_over_a_recursive_call_stays_in_the_frame(open_guest, fib_code) -> None:
    call, after = _call_and_next(fib_code["fib"])
    s = open_guest("fib", [6])
    s.breakpoints.add(call, temporary=True)
    s.cont()  # first recursive call site, in the fib(6) frame
    rsp = s.regs.rsp
    stop = s.nexti()
    assert stop.pc == after and s.regs.rsp == rsp
    assert s.regs.rax == fib_value(5)


def test_finish_returns_to_the_caller_with_the_value(open_guest, fib_code) -> None:
    s = open_guest("fib", [6])
    s.breakpoints.add("fib", condition="$rdi == 3", temporary=True)
    s.cont()
    caller_rsp = s.regs.rsp + 8
    return_address = s.mem.read_u64(s.regs.rsp)
    stop = s.finish()
    fib_sites = {fib_code["fib"][k + 1][0] for k, (_, m) in enumerate(fib_code["fib"]) if m.startswith("call")}
    assert stop.reason is StopReason.FINISH
    assert stop.pc == return_address and stop.pc in fib_sites
    assert stop.return_value == fib_value(3) == s.regs.rax
    assert s.regs.rsp == caller_rsp


def test_finish_from_inside_the_body_after_the_prologue(open_guest, fib_code) -> None:
    call, after = _main_calls_fib(fib_code)
    s = open_guest("fib", [5])
    inner = fib_code["fib"][4][0]  # after push rbp; mov rbp,rsp; push rbx; sub
    s.breakpoints.add(inner, temporary=True)
    s.cont()  # the outermost fib(5)
    stop = s.finish()
    assert stop.reason is StopReason.FINISH and stop.pc == after
    assert stop.return_value == fib_value(5)


def test_advance_runs_to_a_location_in_any_frame(open_guest, fib_code) -> None:
    leaf = next(a for a, m in fib_code["fib"] if a - fib_code["fib"][0][0] == 60)
    s = open_guest("fib", [6])
    stop = s.advance("fib+60")
    assert stop.reason is StopReason.LOCATION and stop.pc == leaf
    assert s.mem.read_u64(s.regs.rbp - 0x18) <= 1  # only leaves take the jle


def test_until_a_location_in_this_frame_skips_deeper_frames(open_guest, fib_code) -> None:
    call, after = _call_and_next(fib_code["fib"])
    s = open_guest("fib", [6])
    s.breakpoints.add("fib", temporary=True)
    s.cont()  # fib(6), first instruction
    s.stepi(4)  # past the prologue: rbp is this frame's
    rbp = s.regs.rbp
    stop = s.until(after)  # recursive calls pass `after` in deeper frames first
    assert stop.reason is StopReason.LOCATION and stop.pc == after
    assert s.regs.rbp == rbp and s.regs.rax == fib_value(5)


def test_until_without_location_does_not_loop_back(open_guest) -> None:
    s = open_guest("callmix", [5])
    main = s.symbols.get_by_name("main")
    s.breakpoints.add("play_round", temporary=True)
    s.cont()
    s.finish()  # back in main's loop
    # step until the backward jump of the for loop, then `until` over it
    for _ in range(40):
        insn = decode(s.mem.read(s.pc, 15), s.pc)
        if insn.is_jump and insn.branch_target is not None and insn.branch_target < insn.address:
            break
        s.nexti()
    else:
        pytest.fail("no backward jump found in main's loop")
    stop = s.until()
    assert stop.pc == insn.next_address
    assert main.address <= stop.pc < main.address + main.size


def test_pause_from_another_thread_is_prompt_and_repeatable(open_guest) -> None:
    s = open_guest("spin")
    spins = s.symbols.get_by_name("spins").address
    for round_ in range(2):
        result: list = []
        runner = threading.Thread(target=lambda: result.append(s.cont()))
        runner.start()
        time.sleep(0.2)
        assert s.state.value == "running"
        t0 = time.perf_counter()
        s.pause()
        runner.join(5)
        elapsed = time.perf_counter() - t0
        assert not runner.is_alive(), "pause did not stop the guest"
        assert result[0].reason is StopReason.PAUSED
        assert elapsed < 1.0, f"pause took {elapsed * 1e3:.1f} ms (aim: 50 ms)"
        print(f"pause {round_}: {elapsed * 1e3:.2f} ms")
        assert s.mem.read_u64(spins) > 0
    fn = s.symbols.get_by_name("spin_forever")
    assert fn.address <= s.pc < fn.address + fn.size


def test_stepping_never_enters_the_timer_handler(open_guest, skip_unless) -> None:
    skip_unless(Feature.SINGLE_STEP, Feature.INTERRUPT_INJECTION)
    s = open_guest("ticks", [5])
    handler = s.symbols.get_by_name("tick_handler")
    ticks = s.symbols.get_by_name("ticks").address
    bp = s.breakpoints.add("work")
    s.cont()
    s.breakpoints.delete(bp.number)
    time.sleep(0.005)  # let ticks fall due while stopped
    before = s.mem.read_u64(ticks)
    for _ in range(150):
        stop = s.stepi()
        assert stop.reason is StopReason.STEP
        assert not handler.address <= stop.pc < handler.address + handler.size
    assert s.mem.read_u64(ticks) == before
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    assert "ticks = 5" in s.console or "ticks = 6" in s.console


def _frames(s) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.symbols.format_address(pc).split("+")[0] for pc in s.backtrace()]


def test_backtrace_at_a_breakpoint_names_the_immediate_caller(open_guest) -> None:
    # At fib's first instruction rbp is still main's: a plain rbp walk would skip main.
    s = open_guest("fib", [10])
    s.breakpoints.add("fib")
    s.cont()
    assert _frames(s) == ["fib", "main", "_start"]
    s.cont()  # fib called from fib
    assert _frames(s) == ["fib", "fib", "main", "_start"]


def test_backtrace_is_the_same_through_the_prologue(open_guest) -> None:
    s = open_guest("fib", [10])
    s.breakpoints.add("fib")
    s.cont()
    for _ in range(4):  # push rbp, mov rbp rsp, push rbx, sub rsp
        s.stepi()
        assert _frames(s) == ["fib", "main", "_start"], s.symbols.format_address(s.pc)
