"""The engine's rules over a scripted fake target: no /dev/kvm needed.

Each test scripts what the guest does and checks what the engine counts,
reports and asks of its target. The same rules run on real guests in
tests/test_engine_*.py and on the corpus (tests/test_corpus_*.py).
"""

from __future__ import annotations

import threading
import time

import pytest
from fake_target import (
    FakeTarget,
    capabilities,
    exits,
    fake_symbols,
    halts,
    slot_hit,
    stepped_to,
    trap_at,
)

from kvmbench.backends.target import (
    GuestDebugTrap,
    Paused,
    Resume,
    ResumeMode,
    SlotHit,
    StoreTrapped,
    TrapExecuted,
)
from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import Mechanism, StopReason
from kvmbench.engine.session import Session
from kvmbench.engine.stops import BreakpointHit, GuestOwned, classify
from kvmbench.errors import FrameUnknown, SessionStateError, UsageError

CODE = 0x1000  # the fake's "text"
DATA = 0x4000  # a page of data


def session(*script, code: bytes = b"\x90" * 64, caps=None, **symbols) -> tuple[Session, FakeTarget]:  # type: ignore[no-untyped-def]
    target = FakeTarget(script=script, capabilities_=caps)
    target.memory[CODE:CODE + len(code)] = code
    target.regs["rip"] = CODE
    return Session(target, fake_symbols(**symbols)), target


# --- ours or the guest's -----------------------------------------------------------


def test_a_trap_where_we_planted_one_is_our_breakpoint() -> None:
    s, t = session()
    bp = s.breakpoints.add(CODE + 4)
    decision = classify(TrapExecuted(CODE + 4), s.serving)
    assert isinstance(decision, BreakpointHit) and decision.requests == (bp,)


def test_a_trap_anywhere_else_is_the_guests_and_goes_back_to_it() -> None:
    s, t = session()
    s.breakpoints.add(CODE + 4)
    decision = classify(TrapExecuted(CODE + 8), s.serving)
    assert isinstance(decision, GuestOwned) and not decision.catch


def test_a_slot_hit_names_the_breakpoint_holding_the_slot() -> None:
    s, t = session()
    bp = s.breakpoints.add(CODE + 4, kind="hw")
    decision = classify(SlotHit((0,), CODE + 4), s.serving)
    assert isinstance(decision, BreakpointHit) and decision.requests == (bp,)
    assert decision.mechanism is Mechanism.HW_EXECUTE


def test_one_execution_hits_every_breakpoint_at_its_pc_whichever_fired() -> None:
    s, t = session()
    sw = s.breakpoints.add(CODE + 4, kind="sw")
    hw = s.breakpoints.add(CODE + 4, kind="hw")
    decision = classify(SlotHit((0,), CODE + 4), s.serving)
    assert isinstance(decision, BreakpointHit) and set(decision.requests) == {sw, hw}


def test_a_guest_debug_trap_is_caught_only_when_asked() -> None:
    s, t = session()
    assert not classify(GuestDebugTrap(1, CODE), s.serving).catch  # type: ignore[union-attr]
    s.catch_guest_traps = True
    assert classify(GuestDebugTrap(1, CODE), s.serving).catch  # type: ignore[union-attr]


# --- counting ------------------------------------------------------------------------


def test_a_tracepoint_counts_once_per_hit_and_its_instruction_runs_once() -> None:
    # nop at CODE+4: stepped off (no push to emulate), then the guest exits.
    s, t = session(trap_at(CODE + 4), stepped_to(CODE + 5), trap_at(CODE + 4),
                   stepped_to(CODE + 5), exits())
    bp = s.breakpoints.trace(CODE + 4)
    assert s.cont().reason is StopReason.EXITED
    assert bp.hit_count == 2
    steps = [how for how in t.resumes() if how.mode is ResumeMode.STEP]
    assert len(steps) == 2 and all(how.skip_slots_at == CODE + 4 for how in steps)


def test_a_displaced_push_is_emulated_instead_of_stepped() -> None:
    # push rbp at the breakpoint: the engine stores rbp and moves rsp itself.
    s, t = session(trap_at(CODE), exits(), code=b"\x55\x48\x89\xe5")
    t.regs["rbp"], t.regs["rsp"], t.regs["rip"] = 0x1122334455667788, 0x8000, CODE + 0x20
    s.breakpoints.trace(CODE)
    s.cont()
    assert t.regs["rsp"] == 0x7FF8 and t.regs["rip"] == CODE + 1
    assert t.memory[0x7FF8:0x8000] == (0x1122334455667788).to_bytes(8, "little")
    assert all(how.mode is ResumeMode.CONTINUE for how in t.resumes())


def test_resuming_from_a_stop_never_reports_the_breakpoint_at_the_stop_pc() -> None:
    s, t = session(trap_at(CODE + 4), stepped_to(CODE + 5), exits())
    bp = s.breakpoints.add(CODE + 4)
    assert s.cont().breakpoint == bp.number
    assert s.cont().reason is StopReason.EXITED
    assert bp.hit_count == 1


def test_the_first_instruction_is_left_without_counting_a_breakpoint_on_it() -> None:
    # gdb: continuing from where the guest stands steps over a breakpoint there.
    s, t = session(stepped_to(CODE + 1), exits())
    bp = s.breakpoints.add(CODE)
    assert s.cont().reason is StopReason.EXITED and bp.hit_count == 0


def test_a_breakpoint_reached_by_stepi_counts_and_ends_the_steps() -> None:
    s, t = session(stepped_to(CODE + 1), stepped_to(CODE + 2))
    bp = s.breakpoints.add(CODE + 2)
    t.script = [lambda t, how: stepped_to(CODE + 2)(t, how)]  # one resume of several steps
    stop = s.stepi(5)
    assert stop.reason is StopReason.BREAKPOINT and stop.pc == CODE + 2 and bp.hit_count == 1


def test_a_breakpoint_reached_by_the_last_step_counts_and_reports_it() -> None:
    s, t = session(stepped_to(CODE + 2))
    bp = s.breakpoints.add(CODE + 2)
    stop = s.stepi(1)
    assert stop.reason is StopReason.BREAKPOINT and stop.breakpoint == bp.number
    assert bp.hit_count == 1 and stop.extra["steps"] == 1


def test_a_tracepoint_reached_by_stepi_counts_without_ending_the_steps() -> None:
    s, t = session(stepped_to(CODE + 2), stepped_to(CODE + 3), stepped_to(CODE + 4))
    bp = s.breakpoints.trace(CODE + 2)
    t.script[1:] = [stepped_to(CODE + 3), stepped_to(CODE + 4)]
    s.stepi(2)
    assert bp.hit_count == 1


def test_a_condition_that_is_false_neither_counts_nor_stops() -> None:
    s, t = session(trap_at(CODE + 4), stepped_to(CODE + 5), exits())
    bp = s.breakpoints.add(CODE + 4, condition="$rax == 7")
    assert s.cont().reason is StopReason.EXITED and bp.hit_count == 0


def test_an_ignore_count_skips_stops_but_not_counts() -> None:
    s, t = session(trap_at(CODE + 4), stepped_to(CODE + 5), trap_at(CODE + 4),
                   stepped_to(CODE + 5), exits())
    bp = s.breakpoints.add(CODE + 4, ignore_count=1)
    assert s.cont().breakpoint == bp.number and bp.hit_count == 2


# --- the guest's own traps --------------------------------------------------------------


def test_a_guest_trap_goes_back_to_the_guest_and_the_run_goes_on() -> None:
    s, t = session(trap_at(CODE + 9), exits(3))
    assert s.cont().exit_code == 3
    assert t.handed_back == [TrapExecuted(CODE + 9)]


def test_a_guest_that_can_never_wake_ends_the_run_halted() -> None:
    s, t = session(halts())
    stop = s.cont()
    assert stop.reason is StopReason.HALTED and "nothing can wake it" in stop.detail
    assert s.state.value == "stopped"


# --- stores -------------------------------------------------------------------------------


def _store(pieces, pc):  # type: ignore[no-untyped-def]
    def step(t: FakeTarget, how: Resume) -> StoreTrapped:
        t.regs["rip"] = pc
        return StoreTrapped(tuple(pieces), pc)
    return step


MOV_RDI_RAX = bytes.fromhex("488907")  # mov [rdi], rax
REP_STOSB = bytes.fromhex("f3aa")


def test_a_trapped_store_lands_in_memory_and_counts_once_with_its_writer() -> None:
    s, t = session(_store([(DATA, b"\x07" + bytes(7))], CODE + 3), exits(), code=MOV_RDI_RAX + b"\x90")
    t.regs["rdi"] = DATA
    wp = s.watchpoints.add(DATA, 8, mechanism="page trap")
    stop = s.cont()
    assert stop.reason is StopReason.WATCHPOINT and stop.writer == CODE
    assert (stop.old_value, stop.new_value) == (0, 7) and wp.hit_count == 1
    assert t.memory[DATA] == 7


def test_a_store_in_two_pieces_is_one_hit() -> None:
    start = DATA + 0xFFC  # across the page boundary
    s, t = session(_store([(start, b"\x01" * 4), (start + 4, b"\x02" * 4)], CODE + 3), exits(),
                   code=MOV_RDI_RAX)
    t.regs["rdi"] = start
    wp = s.watchpoints.add(start, 8, mechanism="page trap", tracepoint=True)
    s.cont()
    assert wp.hit_count == 1


def test_a_rep_store_is_run_out_and_reported_once() -> None:
    # rep stosb of three bytes: the first iteration trapped, rip still at the rep.
    def iteration(n):  # type: ignore[no-untyped-def]
        def step(t: FakeTarget, how: Resume) -> StoreTrapped:
            assert how.mode is ResumeMode.STEP and how.hold_interrupts
            t.regs["rdi"] += 1
            t.regs["rcx"] -= 1
            return StoreTrapped(((DATA + n, b"\xab"),), CODE)
        return step

    def first(t: FakeTarget, how: Resume) -> StoreTrapped:
        t.regs["rdi"], t.regs["rcx"] = DATA + 1, 2
        return StoreTrapped(((DATA, b"\xab"),), CODE)

    def leaves(t: FakeTarget, how: Resume):  # type: ignore[no-untyped-def]
        return stepped_to(CODE + 2)(t, how)

    s, t = session(first, iteration(1), iteration(2), leaves, exits(), code=REP_STOSB)
    wp = s.watchpoints.add(DATA, 4, mechanism="page trap")
    stop = s.cont()
    assert stop.reason is StopReason.WATCHPOINT and wp.hit_count == 1
    assert stop.writer == CODE and stop.new_value == 0xABABAB
    assert s.cont().reason is StopReason.EXITED and wp.hit_count == 1


def test_a_store_of_the_value_already_there_counts_but_does_not_stop() -> None:
    s, t = session(_store([(DATA, bytes(8))], CODE + 3), exits(), code=MOV_RDI_RAX)
    t.regs["rdi"] = DATA
    wp = s.watchpoints.add(DATA, 8, mechanism="page trap")
    assert s.cont().reason is StopReason.EXITED and wp.hit_count == 1


def test_a_plain_store_over_a_trap_byte_becomes_its_original() -> None:
    s, t = session(_store([(CODE + 8, b"\xc3")], CODE + 3), exits(), code=MOV_RDI_RAX + b"\x90" * 8)
    t.regs["rdi"] = CODE + 8
    s.breakpoints.add(CODE + 8)
    s.cont()
    assert s.mem.read(CODE + 8, 1) == b"\xc3"  # what the guest wrote
    assert t.memory[CODE + 8] == 0xF4  # the trap stays armed over it


def test_a_read_modify_write_that_read_a_trap_byte_runs_again_on_the_original() -> None:
    # xor byte [rdi], 0x0f on a byte holding our hlt trap (0xf4) whose original is 0x90.
    XOR = bytes.fromhex("80370f")
    replayed: list[int] = []

    def again(t: FakeTarget, how: Resume) -> StoreTrapped:
        assert how.mode is ResumeMode.STEP and t.regs["rip"] == CODE
        replayed.append(t.memory[CODE + 8])  # the original, not the trap
        t.regs["rip"] = CODE + 3
        return StoreTrapped(((CODE + 8, bytes([t.memory[CODE + 8] ^ 0x0F])),), CODE + 3)

    s, t = session(_store([(CODE + 8, bytes([0xF4 ^ 0x0F]))], CODE + 3), again, exits(),
                   code=XOR + b"\x90" * 8)
    t.regs["rdi"] = CODE + 8
    s.breakpoints.add(CODE + 8)
    s.cont()
    assert replayed == [0x90]
    assert s.mem.read(CODE + 8, 1) == bytes([0x90 ^ 0x0F])  # as without the trap
    assert t.memory[CODE + 8] == 0xF4


# --- frames ---------------------------------------------------------------------------------


def test_finish_in_a_frameless_function_refuses_instead_of_guessing() -> None:
    # leaf: no push rbp; pc past its entry, rbp holds data.
    s, t = session(code=b"\x48\x83\xec\x08" + b"\x90" * 12, leaf=(CODE, 16))
    t.regs["rip"], t.regs["rbp"] = CODE + 4, 0x12345
    with pytest.raises(FrameUnknown, match="no frame pointer"):
        s.finish()
    assert s.state.value == "stopped"


def test_a_return_address_that_does_not_follow_a_call_is_not_trusted() -> None:
    s, t = session(leaf=(CODE, 16))
    t.memory[0x8000:0x8008] = (CODE + 10).to_bytes(8, "little")  # no call before it
    with pytest.raises(FrameUnknown, match="does not follow a call"):
        s.finish()


# --- threads and state ----------------------------------------------------------------------


def test_a_change_from_another_thread_while_running_is_applied_during_a_pause() -> None:
    started = threading.Event()

    def runs_until_paused(t: FakeTarget, how: Resume):  # type: ignore[no-untyped-def]
        started.set()
        while ("pause", None) not in t.log:
            time.sleep(0.001)
        t.log.remove(("pause", None))
        return Paused(t.pc)

    s, t = session(runs_until_paused, exits())
    runner = threading.Thread(target=s.cont)
    runner.start()
    started.wait(5)
    bp = s.breakpoints.add(CODE + 8)  # from this thread, while the guest runs
    runner.join(5)
    assert not runner.is_alive() and s.last_stop.reason is StopReason.EXITED
    assert bp.mechanism is Mechanism.HLT_TRAP and t.memory[CODE + 8] == 0xF4


def test_reads_while_running_are_refused() -> None:
    started, release = threading.Event(), threading.Event()

    def runs(t: FakeTarget, how: Resume):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(5)
        return Paused(t.pc)

    s, t = session(runs)
    runner = threading.Thread(target=s.cont)
    runner.start()
    started.wait(5)
    try:
        with pytest.raises(SessionStateError, match="running"):
            s.regs.rip
    finally:
        release.set()
        runner.join(5)


def test_a_condition_that_never_returns_is_interrupted_by_pause() -> None:
    def forever(session: object) -> bool:
        while True:
            pass

    s, t = session(trap_at(CODE + 4))
    s.breakpoints.add(CODE + 4, condition=forever)
    result = []
    runner = threading.Thread(target=lambda: result.append(s.cont()))
    runner.start()
    time.sleep(0.2)
    s.pause()
    runner.join(5)
    assert not runner.is_alive(), "the condition was not interrupted"
    assert "interrupted" in result[0].detail


def test_every_method_of_a_closed_session_is_a_state_error() -> None:
    s, t = session()
    s.close()
    for call in (lambda: s.cont(), lambda: s.stepi(), lambda: s.regs.rip,
                 lambda: s.mem.read(CODE, 1), lambda: s.breakpoints.add(CODE),
                 lambda: s.watchpoints.add(DATA, 8), lambda: s.backtrace(), lambda: s.finish()):
        with pytest.raises(SessionStateError, match="closed"):
            call()
    s.close()  # idempotent


@pytest.mark.parametrize("call", [
    lambda s: s.stepi("3"), lambda s: s.stepi(0), lambda s: s.breakpoints.add(None),
    lambda s: s.breakpoints.add(True), lambda s: s.watchpoints.add(DATA, "8"),
    lambda s: s.watchpoints.add(DATA, -1), lambda s: s.breakpoints.add(CODE, ignore_count="1"),
    lambda s: s.mem.read(DATA, "8"), lambda s: s.mem.write(DATA, "text"),
    lambda s: s.regs.__setitem__("rax", "5"), lambda s: s.breakpoints.add(CODE, kind="soft"),
])
def test_api_arguments_of_the_wrong_type_are_usage_errors(call) -> None:  # type: ignore[no-untyped-def]
    s, t = session()
    with pytest.raises(UsageError):
        call(s)
    assert s.state.value == "stopped" and t.memory[DATA:DATA + 8] == bytes(8)


def test_a_trap_at_a_non_canonical_address_is_refused() -> None:
    s, t = session()
    with pytest.raises(Exception, match="canonical"):
        s.breakpoints.add(0x0000_8000_0000_0000)


def test_a_trap_deleted_and_added_again_during_a_step_off_stays_lifted() -> None:
    from kvmbench.engine.session import _Change

    seen: list[int] = []

    def pause_for_changes(t: FakeTarget, how: Resume) -> Paused:
        assert how.mode is ResumeMode.STEP
        bp = next(iter(s.breakpoints))
        s._changes.append(_Change(lambda: s.breakpoints.delete(bp.number)))
        s._changes.append(_Change(lambda: s.breakpoints.trace(CODE + 4)))
        return Paused(t.pc)

    def step(t: FakeTarget, how: Resume):  # type: ignore[no-untyped-def]
        seen.append(t.memory[CODE + 4])  # what the stepped instruction is
        return stepped_to(CODE + 5)(t, how)

    s, t = session(trap_at(CODE + 4), pause_for_changes, step, exits())
    s.breakpoints.trace(CODE + 4)
    s.cont()
    assert seen == [0x90]  # the guest's nop, not the trap planted again meanwhile
    assert t.memory[CODE + 4] == 0xF4  # and the new tracepoint is armed after


def test_a_guest_hlt_under_a_breakpoint_is_handed_back_never_stepped() -> None:
    s, t = session(trap_at(CODE + 4), exits(), code=b"\x90" * 4 + b"\xf4" + b"\x90" * 4)
    bp = s.breakpoints.trace(CODE + 4)
    s.cont()
    assert bp.hit_count == 1
    assert TrapExecuted(CODE + 4, "hlt") in t.handed_back
    assert not any(how.mode is ResumeMode.STEP for how in t.resumes())


def test_a_trap_added_where_a_hardware_breakpoint_is_being_stepped_off_stays_lifted() -> None:
    # No RF here, so leaving the slot's hit is a step; a change during that
    # step plants a software trap at the same pc: the step must not run it.
    from kvmbench.engine.session import _Change

    seen: list[int] = []

    def pause_for_a_new_trap(t: FakeTarget, how: Resume) -> Paused:
        s._changes.append(_Change(lambda: s.breakpoints.trace(CODE + 4, kind="sw")))
        return Paused(t.pc)

    def step(t: FakeTarget, how: Resume):  # type: ignore[no-untyped-def]
        seen.append(t.memory[CODE + 4])
        return stepped_to(CODE + 5)(t, how)

    s, t = session(slot_hit(CODE + 4), pause_for_a_new_trap, step, exits(),
                   caps=capabilities(Feature.RESUME_FLAG))
    s.breakpoints.trace(CODE + 4, kind="hw")
    s.cont()
    assert seen == [0x90]
    assert t.memory[CODE + 4] == 0xF4
