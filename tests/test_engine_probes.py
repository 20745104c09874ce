"""In-guest probes on the bundled (-O0) guests: unconditional tracepoints
counted inside the guest, exactly as the exit mechanisms count them, with
the originals shown, stepped and restored, and the exit mechanism taking
over, with the reason, wherever a probe cannot be planted or must go."""

from __future__ import annotations

import threading

import pytest
from conftest import assemble, console_counts, fib_calls, fib_value

from kvmbench.arch.instructions import disassemble
from kvmbench.backends.capabilities import Feature
from kvmbench.backends.kvm import layout, trampolines
from kvmbench.engine.model import Mechanism, StopReason
from kvmbench.errors import ProbeRefused, UsageError

PROBE = Mechanism.IN_GUEST_PROBE
AREA = range(layout.PROBE_AREA_ADDR, layout.PROBE_AREA_ADDR + layout.PROBE_AREA_SIZE)


@pytest.fixture(autouse=True)
def _needs_probes(skip_unless) -> None:
    skip_unless(Feature.IN_GUEST_PROBE)


def test_a_tracepoint_on_fib_counts_every_call_in_the_guest(open_guest) -> None:
    n = 16
    s = open_guest("fib", [n])
    bp = s.breakpoints.trace("fib")
    assert bp.mechanism is PROBE, bp.reason
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    assert bp.hit_count == s.hits.count(bp.number) == fib_calls(n)
    assert f"fib({n}) = {fib_value(n)}" in s.console


def test_the_hit_log_has_each_hit_with_its_caller_and_time(open_guest) -> None:
    n = 8
    s = open_guest("fib", [n])
    bp = s.breakpoints.trace("fib")
    assert bp.mechanism is PROBE
    before = s.hits.start_ns
    s.cont()
    rows = s.hits.rows(bp.number)
    fib = s.symbols.get_by_name("fib").address
    main = s.symbols.get_by_name("main")
    assert len(rows) == fib_calls(n) and all(pc == fib for pc in rows.pc)
    # fib's own call sites return to fib+36 and fib+55; main's once into main.
    outside = [c for c in rows.caller if not main.address <= c < main.end]
    assert set(outside) == {fib + 36, fib + 55} and len(rows) - len(outside) == 1
    assert rows.time_ns == sorted(rows.time_ns) and before <= rows.time_ns[0]


def test_a_full_ring_costs_one_exit_and_loses_nothing(open_guest, monkeypatch) -> None:
    # No drain timer: only the full ring (and the stop) drain it.
    monkeypatch.setattr(trampolines, "DRAIN_INTERVAL", 3600.0)
    n = 20
    s = open_guest("fib", [n])
    bp = s.breakpoints.trace("fib")
    drains: list[int] = []
    drain = s.probes.drain
    s.probes.drain = lambda: drains.append(drain()) or drains[-1]  # type: ignore[method-assign]
    assert s.cont().exit_code == 0
    assert bp.hit_count == fib_calls(n) > 2 * trampolines.RING_ENTRIES
    assert drains[:2] == [trampolines.RING_ENTRIES] * 2 and sum(drains) == fib_calls(n)
    assert s.hits.rows(bp.number).time_ns == sorted(s.hits.rows(bp.number).time_ns)


def test_ten_probes_count_what_the_guest_counts(open_guest) -> None:
    s = open_guest("callmix", [300])
    bps = {f"f{i}": s.breakpoints.trace(f"f{i}") for i in range(10)}
    assert all(bp.mechanism is PROBE for bp in bps.values()), [b.reason for b in bps.values()]
    assert s.cont().exit_code == 0
    counted = console_counts(s.console, r"(f\d) calls=(\d+)")
    assert {name: bp.hit_count for name, bp in bps.items()} == counted


def test_reads_show_the_originals_and_delete_and_close_restore_them(open_guest) -> None:
    s = open_guest("fib", [5])
    fib = s.symbols.get_by_name("fib").address
    physical = s.target.translate(fib)
    original = s.target.read_physical(physical, 5)
    bp = s.breakpoints.trace("fib")
    assert bp.mechanism is PROBE
    planted = s.target.read_physical(physical, 5)
    assert planted[0] == 0xE9 and planted != original  # jmp rel32 to the trampoline
    target = fib + 5 + int.from_bytes(planted[1:], "little", signed=True)
    assert target in AREA
    assert s.mem.read(fib, 5) == original and s.mem.read(fib, 5, raw=True) == planted
    s.breakpoints.delete(bp.number)
    assert s.target.read_physical(physical, 5) == original
    s.breakpoints.trace("fib")
    seen = []
    close = s.target.machine.close

    def look_then_close() -> None:
        seen.append(s.target.machine.memory.read(physical, 5))
        close()

    s.target.machine.close = look_then_close  # type: ignore[method-assign]
    s.close()
    assert seen == [original]


def _step_into_fib(open_guest, mechanism):  # type: ignore[no-untyped-def]
    """Step from main's call into fib, four instructions; then run to the end."""
    s = open_guest("fib", [3])
    fib = s.symbols.get_by_name("fib").address
    main = s.symbols.get_by_name("main")
    call = next(i for i in disassemble(s.mem.read(main.address, main.size), main.address)
                if i.is_call and i.branch_target == fib)
    bp = s.breakpoints.trace("fib", mechanism=mechanism)
    s.advance(call.address)
    original = s.mem.read(fib, 5)
    s.stepi()
    pcs, raw = [s.pc], []
    for _ in range(4):  # push rbp; mov rbp, rsp; push rbx; sub rsp, 0x18
        s.stepi()
        pcs.append(s.pc)
        raw.append(s.mem.read(fib, 5, raw=True) == original)
    assert s.cont().exit_code == 0
    return [pc - fib for pc in pcs], raw, bp


def test_stepping_through_a_probe_steps_the_original_instructions(open_guest) -> None:
    pcs, originals_in_place, bp = _step_into_fib(open_guest, PROBE)
    assert pcs == [0, 1, 4, 5, 9]  # as objdump lists fib
    # The jump is lifted while rip is in its bytes, planted again once it left.
    assert originals_in_place == [True, True, True, False]
    # Counted as the exit mechanism counts (the call stepped onto is not).
    trap_pcs, _, trap_bp = _step_into_fib(open_guest, Mechanism.HLT_TRAP)
    assert pcs == trap_pcs and bp.hit_count == trap_bp.hit_count
    assert bp.mechanism is PROBE


def test_no_stop_leaves_rip_in_a_trampoline(open_guest) -> None:
    n = 18
    s = open_guest("fib", [n])
    bp = s.breakpoints.trace("fib")
    fib = s.symbols.get_by_name("fib")
    boundaries = {fib.address + k for k in (0, 1, 4, 5, 9, 13, 18, 20, 24, 28, 31, 36, 39, 43,
                                             47, 50, 55, 58, 60, 64, 68, 69)}
    stops = 0
    while True:
        timer = threading.Timer(0.02, s.pause)
        timer.start()
        stop = s.cont()
        timer.cancel()
        if stop.reason is StopReason.EXITED:
            break
        assert stop.reason is StopReason.PAUSED, stop.describe()
        stops += 1
        assert s.pc not in AREA and stop.pc == s.pc
        if fib.contains(s.pc):
            assert s.pc in boundaries, f"paused at {s.pc:#x}, inside an instruction"
    assert stops > 3
    assert bp.hit_count == fib_calls(n) and f"fib({n}) = {fib_value(n)}" in s.console


def test_a_breakpoint_inside_the_probe_makes_it_give_way_and_come_back(open_guest) -> None:
    n = 6
    s = open_guest("fib", [n])
    tp = s.breakpoints.trace("fib")
    fib = s.symbols.get_by_name("fib").address
    inside = s.breakpoints.add(fib + 1)  # mov rbp, rsp: under the jump
    assert tp.mechanism is Mechanism.HLT_TRAP and "gave way" in tp.reason
    stop = s.cont()
    assert stop.reason is StopReason.BREAKPOINT and stop.pc == fib + 1
    s.breakpoints.delete(inside.number)
    assert tp.mechanism is PROBE
    assert s.cont().exit_code == 0
    assert tp.hit_count == fib_calls(n)


def test_a_condition_set_later_moves_the_tracepoint_to_an_exit(open_guest) -> None:
    n = 7
    s = open_guest("fib", [n])
    tp = s.breakpoints.trace("fib")
    assert tp.mechanism is PROBE
    s.breakpoints.add("fib", temporary=True, condition="$rdi == 3")  # a trap at fib
    stop = s.cont()
    assert stop.reason is StopReason.BREAKPOINT and s.regs.rdi == 3
    s.breakpoints.set_condition(tp.number, "$rdi >= 0")
    assert tp.mechanism is Mechanism.HLT_TRAP
    assert s.cont().exit_code == 0
    assert tp.hit_count == fib_calls(n)


def test_an_unsafe_place_is_served_by_an_exit_with_the_reason(open_guest) -> None:
    s = open_guest("fib", [5])
    fib = s.symbols.get_by_name("fib").address
    tp = s.breakpoints.trace(fib + 0x12)  # jle: a 2-byte branch, the jump does not fit
    assert tp.mechanism is Mechanism.HLT_TRAP
    assert "no in-guest probe: fib: 'jle" in tp.reason and "\n" not in tp.reason
    with pytest.raises(ProbeRefused, match="jle") as refused:
        s.breakpoints.trace(fib + 0x12, mechanism="in-guest probe")
    assert "\n" not in str(refused.value)
    with pytest.raises(UsageError, match="only counts"):
        s.breakpoints.add("fib", mechanism="in-guest probe")
    assert s.cont().exit_code == 0
    assert tp.hit_count == fib_calls(5)  # the branch runs once a call


def test_probes_count_exactly_while_the_timer_interrupts_the_guest(open_guest) -> None:
    s = open_guest("ticks", [40])
    handler = s.breakpoints.trace("tick_handler")
    work = s.breakpoints.trace("work")
    assert handler.mechanism is PROBE and work.mechanism is PROBE
    assert s.cont().exit_code == 0
    counted = console_counts(s.console, r"(ticks|work) = (\d+)")
    assert {"ticks": handler.hit_count, "work": work.hit_count} == counted


_REMAP_GUEST = f"""
        mov $200, %r12
1:      call f
        dec %r12
        cmp $100, %r12
        jne 2f
        movq $0, {layout.PD_ADDR + 511 * 8:#x}  # the PD entry that maps the probe area
2:      test %r12, %r12
        jnz 1b
        mov $0, %eax
        out %eax, ${layout.PORT_EXIT:#x}
        .type f, @function
f:      push %rbp
        mov %rsp, %rbp
        nop
        pop %rbp
        ret
        .size f, . - f
"""


def test_a_guest_that_unmaps_the_probe_area_gets_exits_instead(open_guest, tmp_path) -> None:
    s = open_guest(assemble(tmp_path, _REMAP_GUEST))
    tp = s.breakpoints.trace("f")
    assert tp.mechanism is PROBE
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    assert tp.hit_count == 200
    assert tp.mechanism is Mechanism.HLT_TRAP and "no longer map the probe area" in tp.reason
    with pytest.raises(ProbeRefused, match="no longer map"):
        s.breakpoints.trace("f", mechanism="in-guest probe")
