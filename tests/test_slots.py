"""The hardware debug slot allocator: bounded by the profile, explicit about
who holds what."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kvmbench.arch import x86_64
from kvmbench.arch.profiles import PPC_BOOKE, X86_64, SlotKind, arm64
from kvmbench.engine.slots import Holder, Pool, SlotTable
from kvmbench.errors import BreakpointError, SlotsExhausted, UsageError

EXECUTE, READ, WRITE, ACCESS = SlotKind.EXECUTE, SlotKind.READ, SlotKind.WRITE, SlotKind.ACCESS


@dataclass
class Request:
    """Stands in for the engine's breakpoint and watchpoint objects."""

    what: str
    number: int
    where: str

    def __str__(self) -> str:
        return f"{self.what} {self.number} ({self.where})"


BP1 = Request("breakpoint", 1, "fib")
BP2 = Request("breakpoint", 2, "main")
WP3 = Request("watchpoint", 3, "counter")
WP4 = Request("watchpoint", 4, "watch_a")
BP5 = Request("breakpoint", 5, "helper")


def full_x86_table() -> SlotTable:
    table = SlotTable(X86_64)
    table.allocate(BP1, EXECUTE, 0x401000)
    table.allocate(BP2, EXECUTE, 0x401100)
    table.allocate(WP3, WRITE, 0x403000, 8)
    table.allocate(WP4, ACCESS, 0x403010, 4)
    return table


# --- x86-64 -------------------------------------------------------------------------


def test_x86_table_has_exactly_four_slots() -> None:
    table = SlotTable(X86_64)
    assert (table.used, table.total) == (0, 4)


def test_first_breakpoint_on_x86_gets_dr0() -> None:
    assignment = SlotTable(X86_64).allocate(BP1, EXECUTE, 0x401000)
    assert (assignment.slot, assignment.pool, assignment.index) == ("DR0", Pool.SHARED, 0)


def test_breakpoints_and_watchpoints_share_the_x86_pool() -> None:
    table = full_x86_table()
    assert [h.slot for h in table.holders()] == ["DR0", "DR1", "DR2", "DR3"]
    assert table.free_count(EXECUTE) == table.free_count(WRITE) == 0


def test_fifth_execute_breakpoint_on_x86_names_the_four_holders() -> None:
    table = full_x86_table()
    with pytest.raises(SlotsExhausted) as raised:
        table.allocate(BP5, EXECUTE, 0x401200)
    assert str(raised.value) == (
        "no free hardware debug slot: DR0 breakpoint 1 (fib), DR1 breakpoint 2 (main), "
        "DR2 watchpoint 3 (counter), DR3 watchpoint 4 (watch_a)"
    )


def test_slots_exhausted_is_a_breakpoint_error() -> None:
    with pytest.raises(BreakpointError):
        full_x86_table().allocate(BP5, EXECUTE, 0x401200)


def test_failed_allocation_changes_nothing() -> None:
    table = full_x86_table()
    before = table.assignments()
    with pytest.raises(SlotsExhausted):
        table.allocate(BP5, WRITE, 0x403020, 4)
    assert table.assignments() == before


def test_release_then_reallocate_reuses_the_freed_slot() -> None:
    table = full_x86_table()
    table.release(BP2)
    assert table.free_count(EXECUTE) == 1
    assert table.allocate(BP5, EXECUTE, 0x401200).slot == "DR1"


def test_release_returns_what_it_freed() -> None:
    table = full_x86_table()
    (freed,) = table.release(WP3)
    assert (freed.slot, freed.kind, freed.address, freed.length) == ("DR2", WRITE, 0x403000, 8)


def test_release_of_an_owner_holding_nothing_is_a_no_op() -> None:
    table = full_x86_table()
    assert table.release(BP5) == ()
    assert table.used == 4


def test_holders_lists_slot_and_owner_in_slot_order() -> None:
    table = full_x86_table()
    table.release(BP1)
    assert table.holders() == [Holder("DR1", BP2), Holder("DR2", WP3), Holder("DR3", WP4)]


def test_used_and_total_for_display() -> None:
    table = SlotTable(X86_64)
    table.allocate(BP1, EXECUTE, 0x401000)
    assert f"{table.used}/{table.total}" == "1/4"


def test_read_watch_on_x86_is_a_usage_error_that_suggests_access() -> None:
    with pytest.raises(UsageError, match="no read-only data breakpoints; use an access watchpoint"):
        SlotTable(X86_64).allocate(WP3, READ, 0x403000, 4)


def test_free_count_of_read_on_x86_is_zero() -> None:
    assert SlotTable(X86_64).free_count(READ) == 0


def test_three_byte_watch_on_x86_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not 3"):
        SlotTable(X86_64).allocate(WP3, WRITE, 0x403000, 3)


def test_misaligned_watch_on_x86_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="multiple of 8"):
        SlotTable(X86_64).allocate(WP3, WRITE, 0x403004, 8)


def test_execute_slot_with_a_length_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="length 4"):
        SlotTable(X86_64).allocate(BP1, EXECUTE, 0x401000, 4)


def test_usage_errors_take_no_slot() -> None:
    table = SlotTable(X86_64)
    with pytest.raises(UsageError):
        table.allocate(WP3, READ, 0x403000, 4)
    assert table.used == 0


def test_ten_byte_range_on_x86_takes_two_slots_for_one_owner() -> None:
    table = SlotTable(X86_64)
    taken = table.allocate_range(WP3, WRITE, 0x403000, 10)
    assert [(a.slot, a.address, a.length) for a in taken] == [
        ("DR0", 0x403000, 8),
        ("DR1", 0x403008, 2),
    ]
    assert table.release(WP3) == taken
    assert table.used == 0


def test_range_that_needs_more_slots_than_are_free_takes_none() -> None:
    table = SlotTable(X86_64)
    table.allocate(BP1, EXECUTE, 0x401000)
    table.allocate(BP2, EXECUTE, 0x401100)
    with pytest.raises(SlotsExhausted) as raised:
        table.allocate_range(WP3, WRITE, 0x403001, 8)  # 1 + 2 + 4 + 1 bytes
    assert str(raised.value) == (
        "watching 8 bytes at 0x403001 needs 4 hardware debug slots and 2 are free: "
        "DR0 breakpoint 1 (fib), DR1 breakpoint 2 (main)"
    )
    assert table.used == 2


def test_debugregs_render_the_table_for_kvm_set_guest_debug() -> None:
    table = SlotTable(X86_64)
    table.allocate(BP1, EXECUTE, 0x401000)
    table.allocate(WP3, WRITE, 0x403000, 4)
    expected = x86_64.debugregs_for(
        [
            x86_64.DebugSlot(0, 0x401000, EXECUTE),
            x86_64.DebugSlot(1, 0x403000, WRITE, 4),
        ]
    )
    assert table.debugregs() == expected
    assert expected[7] == 0x400 | 0x1 | 0x4 | (0b1101 << 20)


def test_debugregs_after_release_leave_the_register_zero_and_disabled() -> None:
    table = full_x86_table()
    table.release(BP2)
    regs = table.debugregs()
    assert regs[1] == 0
    assert [s.index for s in x86_64.decode_dr7(regs[7])] == [0, 2, 3]


def test_assignment_by_slot_maps_a_dr6_hit_back_to_its_owner() -> None:
    table = full_x86_table()
    (index,) = x86_64.triggered_slots(0xFFFF0FF0 | 0b0100)
    assignment = table.assignment_by_slot(f"DR{index}")
    assert assignment is not None and assignment.owner is WP3


def test_assignment_by_slot_of_a_free_slot_is_none() -> None:
    assert SlotTable(X86_64).assignment_by_slot("DR3") is None


def test_clear_frees_every_slot() -> None:
    table = full_x86_table()
    table.clear()
    assert table.holders() == []


# --- PowerPC BookE -------------------------------------------------------------------


def test_booke_table_has_four_instruction_and_two_data_slots() -> None:
    table = SlotTable(PPC_BOOKE)
    assert table.total == 6
    assert (table.free_count(EXECUTE), table.free_count(WRITE)) == (4, 2)


def test_booke_watchpoints_do_not_consume_instruction_slots() -> None:
    table = SlotTable(PPC_BOOKE)
    table.allocate(WP3, WRITE, 0x10000000, 4)
    table.allocate(WP4, READ, 0x10000010, 4)
    assert table.free_count(EXECUTE) == 4
    assert [h.slot for h in table.holders()] == ["DAC1", "DAC2"]


def test_booke_data_slot_index_counts_within_its_pool() -> None:
    assignment = SlotTable(PPC_BOOKE).allocate(WP3, ACCESS, 0x10000000, 8)
    assert (assignment.slot, assignment.pool, assignment.index) == ("DAC1", Pool.DATA, 0)


def test_third_booke_watchpoint_names_only_the_data_holders() -> None:
    table = SlotTable(PPC_BOOKE)
    table.allocate(BP1, EXECUTE, 0x10000100)
    table.allocate(WP3, WRITE, 0x10000000, 4)
    table.allocate(WP4, READ, 0x10000010, 4)
    with pytest.raises(SlotsExhausted) as raised:
        table.allocate(Request("watchpoint", 6, "flag"), WRITE, 0x10000020, 4)
    assert str(raised.value) == (
        "no free hardware data slot: DAC1 watchpoint 3 (counter), DAC2 watchpoint 4 (watch_a)"
    )


def test_fifth_booke_breakpoint_is_refused_while_data_slots_are_free() -> None:
    table = SlotTable(PPC_BOOKE)
    for n in range(4):
        table.allocate(Request("breakpoint", n + 1, f"f{n}"), EXECUTE, 0x10000000 + 4 * n)
    with pytest.raises(SlotsExhausted, match="no free hardware instruction slot: IAC1 "):
        table.allocate(BP5, EXECUTE, 0x10000100)
    assert table.free_count(WRITE) == 2


def test_booke_breakpoint_on_a_misaligned_address_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="4-byte aligned"):
        SlotTable(PPC_BOOKE).allocate(BP1, EXECUTE, 0x10000002)


def test_booke_table_has_no_debugreg_image() -> None:
    with pytest.raises(ValueError):
        SlotTable(PPC_BOOKE).debugregs()


# --- arm64 ---------------------------------------------------------------------------


def test_arm64_table_sizes_come_from_the_capability_counts() -> None:
    table = SlotTable(arm64(brps=6, wrps=4))
    assert table.total == 10
    assert (table.free_count(EXECUTE), table.free_count(ACCESS)) == (6, 4)


def test_arm64_read_watch_gets_a_watchpoint_register() -> None:
    assignment = SlotTable(arm64(brps=2, wrps=2)).allocate(WP3, READ, 0x1003, 5)
    assert (assignment.slot, assignment.index) == ("WRP0", 0)


def test_arm64_twelve_byte_range_inside_two_doublewords_takes_two_slots() -> None:
    taken = SlotTable(arm64(brps=2, wrps=4)).allocate_range(WP3, WRITE, 0x1002, 12)
    assert [(a.address, a.length) for a in taken] == [(0x1002, 6), (0x1008, 6)]


def test_arm64_with_no_watchpoint_registers_says_so() -> None:
    with pytest.raises(SlotsExhausted, match="^arm64 has no hardware data slots$"):
        SlotTable(arm64(brps=2, wrps=0)).allocate(WP3, WRITE, 0x1000, 4)


def test_arm64_third_breakpoint_with_two_brps_names_the_holders() -> None:
    table = SlotTable(arm64(brps=2, wrps=2))
    table.allocate(BP1, EXECUTE, 0x400000)
    table.allocate(BP2, EXECUTE, 0x400100)
    with pytest.raises(SlotsExhausted) as raised:
        table.allocate(BP5, EXECUTE, 0x400200)
    assert str(raised.value) == (
        "no free hardware instruction slot: BRP0 breakpoint 1 (fib), BRP1 breakpoint 2 (main)"
    )
