"""Watchpoints on live guests: every write of counter with old/new values and
writer pcs, six at once, read watches by single-step compare, bad input."""

from __future__ import annotations

import pytest
from conftest import console_counts

from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import Access, Kind, Mechanism, StopReason
from kvmbench.errors import KvmbenchError, UsageError

WRITERS = ("increment", "add_ten", "double_counter", "reset_counter")


def _in(s, name: str, pc: int) -> bool:  # type: ignore[no-untyped-def]
    fn = s.symbols.get_by_name(name)
    return fn.address <= pc < fn.address + fn.size


@pytest.mark.parametrize(("mechanism", "kind", "feature"), [
    pytest.param(Mechanism.HW_DATA, Kind.HW, Feature.HW_WRITE_WATCH, id="hw-slot"),
    pytest.param(Mechanism.PAGE_TRAP, Kind.AUTO, Feature.READONLY_MEMSLOT, id="page-trap"),
])
def test_write_watch_reports_every_write_of_counter(open_guest, caps, skip_unless,
                                                     mechanism, kind, feature) -> None:
    skip_unless(feature)
    if mechanism is Mechanism.PAGE_TRAP and caps.works(Feature.HW_WRITE_WATCH):
        pytest.skip("auto picks a hardware slot on this host")
    s = open_guest("counter", [10])
    wp = s.watchpoints.add("counter", kind=kind)
    assert wp.mechanism is mechanism
    value, stops = 0, 0
    while (stop := s.cont()).reason is StopReason.WATCHPOINT:
        stops += 1
        assert stop.watchpoint == wp.number
        assert stop.old_value == value
        value = stop.new_value
        assert value == s.mem.read_u64(wp.address)
        assert any(_in(s, name, stop.writer) for name in WRITERS), s.symbols.format_address(stop.writer)
    assert stop.exit_code == 0, stop.describe()
    final, writes = s.console.split("counter ")[1].split()[:2]
    assert int(final) == value
    assert stops == wp.hit_count == int(writes.split("=")[1]) == 17


def test_six_watchpoints_at_once_count_every_write(open_guest) -> None:
    s = open_guest("counter", [3])
    wps = {f"watch_{c}": s.watchpoints.add(f"watch_{c}", tracepoint=True) for c in "abcdef"}
    stop = s.cont()
    assert stop.exit_code == 0, stop.describe()
    writes = console_counts(s.console, r"(watch_\w) \d+ writes=(\d+)")
    assert {n: w.hit_count for n, w in wps.items()} == writes
    assert writes["watch_f"] == 18


def test_read_watch_finds_every_read_by_stepping(open_guest, skip_unless) -> None:
    skip_unless(Feature.SINGLE_STEP)
    s = open_guest("counter", [2])
    wp = s.watchpoints.add("read_me", access="read", tracepoint=True)
    if wp.mechanism is not Mechanism.STEP_COMPARE:
        pytest.skip(f"read watch served by {wp.served_by} on this host")
    assert "slow" in wp.reason
    stop = s.cont()
    assert stop.exit_code == 0, stop.describe()
    reads = int(s.console.split("reads=")[1].split()[0])
    rows = s.hits.rows(wp.number)
    in_reader = [pc for pc in rows.pc if _in(s, "reader", pc)]
    assert len(in_reader) == reads == 6
    # The only other read is main's printf argument; the write never counts.
    assert all(_in(s, "main", pc) for pc in rows.pc if not _in(s, "reader", pc))
    assert wp.hit_count == reads + 1


def test_read_watch_stop_reports_the_reading_instruction(open_guest, skip_unless) -> None:
    skip_unless(Feature.SINGLE_STEP)
    s = open_guest("counter", [1])
    wp = s.watchpoints.add("read_me", access=Access.READ)
    stop = s.cont()
    assert stop.reason is StopReason.WATCHPOINT and _in(s, "reader", stop.writer)
    assert stop.new_value == stop.old_value == 42
    assert stop.access_address == wp.address


def test_watch_length_zero_is_refused(open_guest) -> None:
    s = open_guest("counter", [1])
    with pytest.raises(UsageError, match="length"):
        s.watchpoints.add("counter", 0)
    assert len(s.watchpoints) == 0
    assert s.cont().exit_code == 0


def test_watch_range_beyond_guest_memory_is_refused(open_guest) -> None:
    s = open_guest("counter", [1])
    counter = s.symbols.get_by_name("counter").address
    with pytest.raises(KvmbenchError, match="more than"):
        s.watchpoints.add(counter, 1 << 32)
    end = s.target.machine.memory.size
    with pytest.raises(KvmbenchError, match="outside guest memory"):
        s.watchpoints.add(end - 8, 16)
    with pytest.raises(KvmbenchError):
        s.watchpoints.add(0x7F0000000000, 8)
    assert len(s.watchpoints) == 0
    wp = s.watchpoints.add("counter", tracepoint=True)
    assert s.cont().exit_code == 0 and wp.hit_count == 1 + 1  # increment, add_ten(i=0)


def test_a_watch_stop_stands_past_the_access_and_names_its_writer(open_guest) -> None:
    s = open_guest("counter", [2])
    wp = s.watchpoints.add("read_me", access="read")
    stop = s.cont()
    assert stop.reason is StopReason.WATCHPOINT and stop.watchpoint == wp.number
    assert stop.pc == s.regs.rip  # where the guest is stopped
    if wp.mechanism is Mechanism.STEP_COMPARE:  # the read has retired: the reader is behind
        assert stop.writer is not None and stop.writer < stop.pc
        assert _in(s, "reader", stop.writer)


_SAME_VALUE_STORES = """
    mov $0x200000, %rdi
    movq $7, (%rdi)      # changes 0 -> 7
    movq $7, (%rdi)      # the value already there
    movq $7, (%rdi)      # again
    movq $8, (%rdi)      # changes 7 -> 8
    mov $0, %eax
    out %eax, $0xf4
"""


@pytest.mark.parametrize(("stop_on", "stops"), [("change", 2), ("store", 4)])
def test_a_write_watch_counts_every_store_and_stops_as_asked(open_guest, tmp_path, stop_on,
                                                             stops) -> None:
    from conftest import assemble

    s = open_guest(str(assemble(tmp_path, _SAME_VALUE_STORES)))
    wp = s.watchpoints.add(0x200000, 8, stop_on=stop_on)
    values = []
    while (stop := s.cont()).reason is StopReason.WATCHPOINT:
        values.append(stop.new_value)
    assert stop.exit_code == 0, stop.describe()
    assert wp.hit_count == 4
    assert values == ([7, 8] if stop_on == "change" else [7, 7, 7, 8])
    assert len(values) == stops


def test_stop_on_takes_only_change_or_store(open_guest) -> None:
    s = open_guest("counter", [1])
    with pytest.raises(UsageError, match="stop_on"):
        s.watchpoints.add("counter", stop_on="sometimes")


def test_stepi_from_a_software_breakpoint_under_a_compare_watch_runs_the_guests_instruction(
        open_guest, skip_unless) -> None:
    skip_unless(Feature.SINGLE_STEP)
    s = open_guest("fib", [5])
    fib = s.symbols.get_by_name("fib").address
    bp = s.breakpoints.add(fib + 1, kind="sw")  # mov rbp, rsp: three bytes under a one-byte trap
    assert s.cont().breakpoint == bp.number
    s.watchpoints.add("idt", 8,
                      mechanism=Mechanism.STEP_COMPARE, tracepoint=True)
    stop = s.stepi()
    assert stop.reason is StopReason.STEP and stop.pc == fib + 4, stop.describe()
    s.breakpoints.delete(bp.number)
    assert s.cont().exit_code == 0
    assert "fib(5) = 5" in s.console
