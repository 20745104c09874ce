"""The engine's rules on every target: kvmbench's own VMM and QEMU TCG
through its gdbstub (the same bundled guests boot on both). Counts are the
guests' own; stepping and watch reports must agree between targets.

What a target lacks is skipped with its reason (the planner picks each
target's mechanisms: traps and page traps on kvm, the stub's Z0-Z4 on qemu)."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import HAVE_KVM, HAVE_QEMU, NO_KVM_REASON, NO_QEMU_REASON, console_counts, fib_calls

import kvmbench
from kvmbench.engine.model import Mechanism, StopReason


def test_a_tracepoint_counts_every_call(on_target) -> None:  # type: ignore[no-untyped-def]
    s = on_target("fib", [14])
    bp = s.breakpoints.trace("fib")
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    assert bp.hit_count == fib_calls(14) == 1219
    assert "fib(14) = 377" in s.console


def test_ten_tracepoints_match_the_guests_own_counters(on_target) -> None:  # type: ignore[no-untyped-def]
    s = on_target("callmix", [30])
    bps = {f"f{i}": s.breakpoints.trace(f"f{i}") for i in range(10)}
    assert s.cont().exit_code == 0
    calls = console_counts(s.console, r"(f\d) calls=(\d+)")
    assert len(calls) == 10 and sum(calls.values()) > 0
    assert {name: bp.hit_count for name, bp in bps.items()} == calls


def test_write_watches_report_every_write_with_its_writer(on_target) -> None:  # type: ignore[no-untyped-def]
    s = on_target("counter", [3])
    wps = {name: s.watchpoints.add(name, tracepoint=True)
           for name in ("counter", "watch_a", "watch_b", "watch_f")}
    assert s.cont().exit_code == 0
    writes = console_counts(s.console, r"(\w+) \d+ writes=(\d+)")
    assert {name: wp.hit_count for name, wp in wps.items()} == {name: writes[name] for name in wps}


def test_a_read_watch_sees_every_read(on_target) -> None:  # type: ignore[no-untyped-def]
    s = on_target("counter", [2])
    wp = s.watchpoints.add("read_me", access="read", tracepoint=True)
    assert s.cont().exit_code == 0
    reads = int(s.console.split("reads=")[1].split()[0])
    assert wp.hit_count == reads + 1  # and main's final printf reads it once
    reader = s.symbols.get_by_name("reader")
    assert sum(reader.contains(pc) for pc in s.hits.rows(wp.number).pc) == reads


def test_a_breakpoint_stops_and_continuing_goes_on(on_target) -> None:  # type: ignore[no-untyped-def]
    s = on_target("fib", [5])
    bp = s.breakpoints.add("fib", condition="rdi == 1")
    stops = 0
    while (stop := s.cont()).reason is StopReason.BREAKPOINT:
        assert s.regs.rdi == 1 and stop.pc == bp.address
        stops += 1
    assert stop.exit_code == 0 and stops == bp.hit_count == 5


def test_the_guest_exit_code_is_reported(on_target) -> None:  # type: ignore[no-untyped-def]
    s = on_target("sort", [300])  # more items than the guest holds: its usage error
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 64


def test_pause_from_another_thread_stops_a_spinning_guest(on_target) -> None:  # type: ignore[no-untyped-def]
    s = on_target("spin")
    result = []
    runner = threading.Thread(target=lambda: result.append(s.cont()))
    runner.start()
    time.sleep(0.3)
    s.pause()
    runner.join(5)
    assert not runner.is_alive() and result[0].reason is StopReason.PAUSED
    assert s.regs.rip == result[0].pc


def test_finish_returns_the_value_on_each_target(on_target) -> None:  # type: ignore[no-untyped-def]
    s = on_target("fib", [6])
    s.breakpoints.add("fib", temporary=True)
    s.cont()
    stop = s.finish()
    assert stop.reason is StopReason.FINISH and stop.return_value == 8


@pytest.mark.skipif(not (HAVE_KVM and HAVE_QEMU), reason=NO_KVM_REASON if not HAVE_KVM else NO_QEMU_REASON)
def test_stepping_goes_the_same_way_on_both_targets(caps) -> None:  # type: ignore[no-untyped-def]
    paths = {}
    for target in ("kvm", "qemu"):
        kw = {"capabilities": caps} if target == "kvm" else {}
        with kvmbench.open("fib", ["4"], target=target, **kw) as s:  # type: ignore[arg-type]
            s.breakpoints.add("fib", temporary=True)
            s.cont()
            path = [s.stepi().pc for _ in range(40)] + [s.nexti().pc for _ in range(12)]
            stop = s.until()
            paths[target] = path + [stop.pc, s.finish().return_value]
    assert paths["kvm"] == paths["qemu"]


@pytest.mark.skipif(not HAVE_QEMU, reason=NO_QEMU_REASON)
def test_qemu_serves_breakpoints_and_watches_by_its_stub() -> None:
    with kvmbench.open("counter", ["1"], target="qemu") as s:
        assert s.breakpoints.add("increment").mechanism is Mechanism.STUB_BREAKPOINT
        assert s.breakpoints.add("add_ten", kind="hw").mechanism is Mechanism.STUB_HW_BREAKPOINT
        assert s.watchpoints.add("counter").mechanism is Mechanism.STUB_WATCH
        # TCG has no debug-register limit: more watches than x86 has slots.
        more = [s.watchpoints.add(f"watch_{c}") for c in "abcdef"]
        assert all(w.mechanism is Mechanism.STUB_WATCH for w in more)
        assert s.cont().reason is StopReason.BREAKPOINT
