"""Execution breakpoints on live guests: exact counts per mechanism, more
tracepoints than slots, the hit log, and bad input that leaves the session
usable and guest memory untouched."""

from __future__ import annotations

import pytest
from conftest import console_counts, fib_calls, fib_value

from kvmbench.backends.capabilities import Feature, HostCapabilities
from kvmbench.engine.model import Kind, Mechanism, StopReason
from kvmbench.errors import BreakpointError, ConditionError, KvmbenchError, SlotsExhausted

# (kind, n): one full fib(20) run, the others smaller to keep the suite fast.
MECHANISMS = [
    pytest.param(Mechanism.HW_EXECUTE, 20, id="hw-execute-fib20"),
    pytest.param(Mechanism.HLT_TRAP, 16, id="hlt-trap-fib16"),
    pytest.param(Mechanism.INT3, 16, id="int3-fib16"),
]
_FEATURE = {Mechanism.HW_EXECUTE: Feature.HW_EXECUTE, Mechanism.HLT_TRAP: Feature.HLT_TRAP,
            Mechanism.INT3: Feature.INT3}


def _kind_for(mechanism: Mechanism, caps: HostCapabilities) -> Kind:
    if mechanism is Mechanism.HW_EXECUTE:
        return Kind.HW
    # kind="sw" picks the host's best software trap: int3 where delivered, else hlt.
    if mechanism is Mechanism.HLT_TRAP and caps.works(Feature.INT3):
        pytest.skip("kind=sw serves with int3 on this host; hlt is not chosen")
    return Kind.SW


@pytest.mark.parametrize(("mechanism", "n"), MECHANISMS)
def test_fib_tracepoint_counts_every_call(open_guest, caps, skip_unless, mechanism, n) -> None:
    skip_unless(_FEATURE[mechanism])
    s = open_guest("fib", [n])
    bp = s.breakpoints.trace("fib", kind=_kind_for(mechanism, caps))
    assert bp.mechanism is mechanism
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    assert bp.hit_count == fib_calls(n)
    assert s.hits.count(bp.number) == fib_calls(n)
    assert f"fib({n}) = {fib_value(n)}" in s.console


def test_ten_tracepoints_on_four_slots_match_the_guests_counters(open_guest) -> None:
    s = open_guest("callmix", [300])
    bps = {f"f{i}": s.breakpoints.trace(f"f{i}") for i in range(10)}
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    counted = console_counts(s.console, r"(f\d) calls=(\d+)")
    assert len(counted) == 10
    assert {name: bp.hit_count for name, bp in bps.items()} == counted
    assert all(n > 0 for n in list(counted.values())[:9])


def test_hw_breakpoints_when_slots_are_full_and_auto_still_serves(open_guest, skip_unless) -> None:
    skip_unless(Feature.HW_EXECUTE)
    s = open_guest("callmix", [50])
    for i in range(4):
        s.breakpoints.add(f"f{i}", kind="hw")
    with pytest.raises(SlotsExhausted) as err:
        s.breakpoints.add("f4", kind="hw")
    message = str(err.value)
    assert "DR0" in message and "(f0)" in message and "(f3)" in message
    assert len(s.breakpoints) == 4  # the failed request left nothing behind
    bp = s.breakpoints.add("f4")  # auto: a software trap, or it fails clearly
    assert bp.mechanism is not Mechanism.HW_EXECUTE


def test_hit_log_records_fibs_callers(open_guest) -> None:
    n = 8
    s = open_guest("fib", [n])
    bp = s.breakpoints.trace("fib")
    s.cont()
    rows = s.hits.rows(bp.number)
    assert len(rows) == fib_calls(n)
    fib = s.symbols.get_by_name("fib").address
    main = s.symbols.get_by_name("main")
    callers = set(rows.caller)
    # fib's two call sites return to fib+36 and fib+55 (gdb: disassemble fib);
    # main's returns into main.
    in_main = {c for c in callers if main.address <= c < main.address + main.size}
    assert callers - in_main == {fib + 36, fib + 55}
    assert len(in_main) == 1
    assert rows.caller.count(next(iter(in_main))) == 1
    assert all(pc == fib for pc in rows.pc)
    assert rows.time_ns == sorted(rows.time_ns)


def _memory(s) -> bytes:  # type: ignore[no-untyped-def]
    text = s.symbols.get_by_name("fib")
    return s.mem.read(text.address & ~0xFFF, 0x3000)


def test_unknown_symbol_suggests_a_name(open_guest) -> None:
    s = open_guest("fib", [5])
    before = _memory(s)
    with pytest.raises(KvmbenchError, match="fib") as err:
        s.breakpoints.add("fibb")
    assert "\n" not in str(err.value)
    assert _memory(s) == before and len(s.breakpoints) == 0
    assert s.cont().exit_code == 0


def test_address_outside_guest_memory_is_refused(open_guest) -> None:
    s = open_guest("fib", [5])
    before = _memory(s)
    with pytest.raises(BreakpointError, match="0x7f0000000000"):
        s.breakpoints.add(0x7F0000000000)
    assert _memory(s) == before and len(s.breakpoints) == 0
    bp = s.breakpoints.trace("fib")
    assert s.cont().exit_code == 0 and bp.hit_count == fib_calls(5)


def test_a_condition_naming_nothing_in_scope_is_refused_when_set_as_gdb_refuses_it(open_guest) -> None:
    s = open_guest("fib", [5])
    before = _memory(s)
    with pytest.raises(ConditionError, match=r'^No symbol "nn" in current context\.$'):
        s.breakpoints.add("fib.c:12", condition="nn == 3")
    assert _memory(s) == before and len(s.breakpoints) == 0
    bp = s.breakpoints.add("fib.c:12", condition="n == 3 && $rdi == n && fib != 0")  # all in scope
    with pytest.raises(ConditionError, match='No symbol "rdi"'):
        s.breakpoints.set_condition(bp.number, "rdi == 3")  # a register is $rdi
    assert bp.condition == "n == 3 && $rdi == n && fib != 0"
    stop = s.cont()
    assert stop.breakpoint == bp.number and s.regs.rdi == 3


def test_condition_that_does_not_parse_is_refused_up_front(open_guest) -> None:
    s = open_guest("fib", [5])
    before = _memory(s)
    with pytest.raises(ConditionError) as err:
        s.breakpoints.add("fib", condition="$rdi ==")
    assert "\n" not in str(err.value)
    assert _memory(s) == before and len(s.breakpoints) == 0
    assert s.cont().exit_code == 0


def test_condition_that_raises_stops_with_the_error_and_session_goes_on(open_guest) -> None:
    s = open_guest("fib", [5])
    bp = s.breakpoints.add("fib", condition="1 / ($rdi - 5) == 0")
    stop = s.cont()  # fib(5) first: division by zero
    assert stop.reason is StopReason.BREAKPOINT and stop.breakpoint == bp.number
    assert stop.detail == "Division by zero", stop.detail
    assert s.regs.rdi == 5
    s.breakpoints.set_condition(bp.number, "$rdi == 1")
    stop = s.cont()
    assert stop.reason is StopReason.BREAKPOINT and s.regs.rdi == 1
    s.breakpoints.delete(bp.number)
    assert s.cont().exit_code == 0
    assert "fib(5) = 5" in s.console


def test_condition_stops_only_when_true(open_guest) -> None:
    s = open_guest("fib", [6])
    bp = s.breakpoints.add("fib", condition="$rdi == 0")
    stops = 0
    while (stop := s.cont()).reason is StopReason.BREAKPOINT:
        assert s.regs.rdi == 0
        stops += 1
    assert stop.exit_code == 0
    assert stops == fib_value(6 - 1)  # fib(0) leaves: fib(n-1) of them
    assert bp.hit_count == stops


def test_delete_and_close_restore_guest_code(open_guest, skip_unless) -> None:
    skip_unless(Feature.HLT_TRAP)
    s = open_guest("fib", [5])
    fib = s.symbols.get_by_name("fib").address
    physical = s.target.machine.translate(fib)
    original = s.target.machine.memory.read(physical, 1)
    bp = s.breakpoints.add("fib", kind="sw")
    assert s.target.machine.memory.read(physical, 1) != original  # trap planted
    assert s.mem.read(fib, 1) == original  # and hidden
    s.breakpoints.delete(bp.number)
    assert s.target.machine.memory.read(physical, 1) == original
    s.breakpoints.add("fib", kind="sw")
    seen = []
    machine_close = s.target.machine.close

    def close_after_looking() -> None:
        seen.append(s.target.machine.memory.read(physical, 1))
        machine_close()

    s.target.machine.close = close_after_looking  # type: ignore[method-assign]
    s.close()
    assert seen == [original]


def test_an_unmapped_address_points_to_hbreak(open_guest) -> None:
    s = open_guest("fib", [5])
    with pytest.raises(BreakpointError, match="hbreak"):
        s.breakpoints.add(0x7F0000000000, kind="sw")


def test_a_hardware_breakpoint_may_wait_on_a_page_not_mapped_yet(open_guest, skip_unless) -> None:
    # A DR slot matches the linear address, so code mapped later (a module a
    # kernel loads) can be broken on now; no byte of memory is touched.
    skip_unless(Feature.HW_EXECUTE)
    s = open_guest("fib", [5])
    before = _memory(s)
    bp = s.breakpoints.add(0x7F0000000000, kind="hw")
    assert bp.served_by.startswith("DR")
    assert _memory(s) == before
    assert s.cont().exit_code == 0 and bp.hit_count == 0
