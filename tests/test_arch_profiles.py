"""Debug-slot profiles of x86-64, PowerPC BookE and arm64, and arch selection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmbench.arch import current, x86_64
from kvmbench.arch.profiles import PPC_BOOKE, X86_64, SlotKind, arm64
from kvmbench.errors import HostUnsupported, UsageError


def test_x86_has_four_slots_shared_by_breakpoints_and_watchpoints() -> None:
    assert (X86_64.shared, X86_64.total) == (True, 4)
    assert X86_64.execute_slot_names == X86_64.data_slot_names == ("DR0", "DR1", "DR2", "DR3")


def test_x86_watches_writes_and_accesses_but_not_reads() -> None:
    assert X86_64.data_kinds == {SlotKind.WRITE, SlotKind.ACCESS}
    assert not X86_64.supports(SlotKind.READ)


def test_x86_data_lengths_are_1_2_4_8() -> None:
    assert X86_64.data_lengths == (1, 2, 4, 8)


def test_booke_has_four_instruction_and_two_data_slots_apart() -> None:
    assert (PPC_BOOKE.shared, PPC_BOOKE.total) == (False, 6)
    assert PPC_BOOKE.execute_slot_names == ("IAC1", "IAC2", "IAC3", "IAC4")
    assert PPC_BOOKE.data_slot_names == ("DAC1", "DAC2")


def test_booke_watches_reads_writes_and_accesses() -> None:
    assert PPC_BOOKE.data_kinds == {SlotKind.READ, SlotKind.WRITE, SlotKind.ACCESS}


def test_arm64_profile_is_built_from_the_capability_counts() -> None:
    profile = arm64(brps=6, wrps=4)
    assert (profile.shared, profile.execute_slots, profile.data_slots) == (False, 6, 4)
    assert profile.execute_slot_names == tuple(f"BRP{i}" for i in range(6))
    assert profile.data_slot_names == tuple(f"WRP{i}" for i in range(4))


def test_arm64_watches_any_length_from_one_to_eight_and_reads() -> None:
    profile = arm64(2, 2)
    assert profile.data_lengths == tuple(range(1, 9))
    assert SlotKind.READ in profile.data_kinds


def test_arm64_with_no_watchpoint_registers_supports_no_watches() -> None:
    assert not arm64(brps=2, wrps=0).supports(SlotKind.WRITE)


def test_arm64_counts_beyond_sixteen_are_refused() -> None:
    with pytest.raises(ValueError, match="0..16"):
        arm64(brps=17, wrps=2)


def test_arm64_chunk_may_be_unaligned_inside_a_doubleword() -> None:
    arm64(2, 2).check_data_chunk(0x1003, 5)


def test_arm64_chunk_crossing_a_doubleword_is_refused() -> None:
    with pytest.raises(UsageError, match="8-byte boundary"):
        arm64(2, 2).check_data_chunk(0x1006, 4)


def test_arm64_split_cuts_only_at_doubleword_boundaries() -> None:
    assert arm64(2, 2).split(0x1003, 14) == [(0x1003, 5), (0x1008, 8), (0x1010, 1)]


@given(st.integers(0, 1 << 40), st.integers(1, 100))
def test_arm64_split_covers_the_range_with_watchable_chunks(address: int, length: int) -> None:
    profile = arm64(2, 4)
    chunks = profile.split(address, length)
    for chunk in chunks:
        profile.check_data_chunk(chunk.address, chunk.length)
    assert chunks[0].address == address
    assert sum(c.length for c in chunks) == length
    assert len(chunks) == (address + length - 1) // 8 - address // 8 + 1


def test_x86_profile_split_matches_the_arch_module() -> None:
    assert X86_64.split(0x1003, 14) == x86_64.split_range(0x1003, 14)


def test_current_arch_for_x86_64_is_the_x86_64_module() -> None:
    assert current("x86_64") is x86_64
    assert current("x86_64").PROFILE is X86_64


def test_current_arch_refuses_machines_without_a_module() -> None:
    with pytest.raises(HostUnsupported, match="aarch64"):
        current("aarch64")
