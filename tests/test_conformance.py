"""DESIGN.md's conformance cases (after the Linux KVM selftest debug_regs.c
and kvm-unit-tests), run through the engine. DR6 is compared only on B0-B3,
BD, BS and BT. What the host lacks is skipped with the probe's reason."""

from __future__ import annotations

import pytest

from kvmbench.arch.x86_64 import Dr6, significant_bits
from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import Mechanism, StopReason


def test_int3_stops_with_pc_at_the_int3(open_guest, skip_unless) -> None:
    skip_unless(Feature.INT3)
    s = open_guest("probe", ["hlt"])
    bp = s.breakpoints.add("probe_hlt_site", kind="sw")
    assert bp.mechanism is Mechanism.INT3
    stop = s.cont()
    assert stop.reason is StopReason.BREAKPOINT and stop.pc == bp.address == s.pc


def test_hw_execute_breakpoint_in_each_of_dr0_to_dr3(open_guest, skip_unless) -> None:
    skip_unless(Feature.HW_EXECUTE)
    s = open_guest("callmix", [200])
    bps = [s.breakpoints.add(f"f{i}", kind="hw") for i in (0, 1, 2, 5)]
    assert sorted(b.slot for b in bps) == ["DR0", "DR1", "DR2", "DR3"]
    first = {}
    while (stop := s.cont()).reason is StopReason.BREAKPOINT:
        assert stop.mechanism is Mechanism.HW_EXECUTE
        bp = s.breakpoints[stop.breakpoint]
        assert stop.pc == bp.address == s.pc  # fault-like: stops before it runs
        first.setdefault(bp.slot, stop.pc)
    assert stop.exit_code == 0, stop.describe()
    assert set(first) == {"DR0", "DR1", "DR2", "DR3"}
    counts = {f"f{i}": int(s.console.split(f"f{i} calls=")[1].split()[0]) for i in (0, 1, 2, 5)}
    assert {b.location: b.hit_count for b in bps} == counts


@pytest.mark.parametrize("slot", range(4))
def test_hw_write_watch_in_each_slot(open_guest, skip_unless, slot) -> None:
    skip_unless(Feature.HW_WRITE_WATCH)
    s = open_guest("probe", ["write"])
    fillers = [s.breakpoints.add(f"probe_{n}", kind="hw") for n in ("exec", "read", "irq")[:slot]]
    wp = s.watchpoints.add("probe_var", 4, kind="hw")
    assert wp.slots == (f"DR{slot}",)
    for b in fillers:
        s.breakpoints.delete(b.number)
    stop = s.cont()
    assert stop.reason is StopReason.WATCHPOINT and stop.mechanism is Mechanism.HW_DATA
    write = s.symbols.get_by_name("probe_write")
    assert write.address <= stop.pc < write.address + write.size  # after the store


def test_single_steps_across_sti_cpuid_wrmsr_cli_never_deliver_the_pending_tick(
        open_guest, skip_unless) -> None:
    skip_unless(Feature.SINGLE_STEP, Feature.INTERRUPT_INJECTION)
    s = open_guest("probe", ["sti_step"])
    block = s.symbols.get_by_name("probe_sti_block").address
    end = s.symbols.get_by_name("probe_sti_block_end").address
    handler = s.symbols.get_by_name("probe_tick_handler")
    ticks = s.symbols.get_by_name("probe_ticks").address
    assert s.advance("probe_sti_block").pc == block
    before = s.mem.read_u64(ticks)
    # sti, nop, xor, cpuid, mov, xor, xor, wrmsr, cli (gdb: disassemble probe_sti_step)
    expected = [block + d for d in (1, 2, 4, 6, 11, 13, 15, 17, 18)]
    pcs = []
    while s.pc != end:
        stop = s.stepi()
        assert stop.reason is StopReason.STEP, stop.describe()
        assert not handler.address <= stop.pc < handler.address + handler.size
        assert significant_bits(stop.extra.get("dr6", Dr6.BS)) == Dr6.BS
        pcs.append(stop.pc)
        assert len(pcs) <= len(expected), [hex(p) for p in pcs]
    assert pcs == expected
    assert s.mem.read_u64(ticks) == before
    stop = s.cont()  # teardown: the pending tick comes in, the guest exits
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()


def test_dr7_gd_traps_a_mov_to_a_debug_register(open_guest, skip_unless) -> None:
    # debug_regs.c: with DR7.GD set, the guest's mov to DR0 raises #DB before
    # it executes; the exit is at the mov and DR6 says BD.
    skip_unless(Feature.DR7_GD)
    from kvmbench.backends.kvm import abi
    from kvmbench.backends.kvm.exits import Debug

    s = open_guest("probe", ["movdr"])
    site = s.symbols.resolve("probe_movdr_site")
    s.target.machine.set_guest_debug(abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP,
                              (0, 0, 0, 0, 0, 0, 0, 0x400 | int(Dr6.BD)))
    event = s.target.machine.run()
    assert isinstance(event, Debug) and event.exception == 1
    assert event.pc == site
    assert significant_bits(event.dr6) == Dr6.BD
