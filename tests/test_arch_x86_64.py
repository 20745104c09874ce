"""x86-64 facts: registers, DR7/DR6 encoding (Intel SDM vol. 3, 18.2), watch
chunking, trap opcodes and RFLAGS bits."""

from __future__ import annotations

import ctypes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmbench.arch import x86_64
from kvmbench.arch.x86_64 import (
    DebugSlot,
    Dr6,
    Dr7Slot,
    Rflags,
    SlotKind,
    check_watch_chunk,
    debugregs_for,
    decode_dr7,
    encode_dr7,
    significant_bits,
    split_range,
    triggered_slots,
)
from kvmbench.errors import UsageError

# --- registers -------------------------------------------------------------------


def test_gdb_register_order_is_amd64_g_packet_order() -> None:
    assert x86_64.GDB_REGISTERS == tuple(
        "rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 "
        "rip eflags cs ss ds es fs gs".split()
    )


def test_gdb_general_registers_are_8_bytes_and_eflags_and_selectors_4() -> None:
    sizes = x86_64.GDB_REGISTER_SIZES
    assert [sizes[r] for r in ("rax", "r15", "rip")] == [8, 8, 8]
    assert [sizes[r] for r in ("eflags", "cs", "gs")] == [4, 4, 4]


def test_every_kvm_regs_field_has_exactly_one_gdb_name() -> None:
    assert sorted(x86_64.GDB_TO_KVM_REGS.values()) == sorted(x86_64.KVM_REGS_FIELDS)


def test_eflags_maps_to_kvm_rflags() -> None:
    assert x86_64.GDB_TO_KVM_REGS["eflags"] == "rflags"
    assert x86_64.GDB_TO_KVM_REGS["rbp"] == "rbp"


def test_kvm_regs_field_order_matches_the_ctypes_mirror() -> None:
    from kvmbench.backends.kvm import abi

    assert tuple(name for name, _ in abi.kvm_regs._fields_) == x86_64.KVM_REGS_FIELDS
    assert ctypes.sizeof(abi.kvm_regs) == 8 * len(x86_64.KVM_REGS_FIELDS)


def test_segment_registers_map_to_kvm_sregs_members() -> None:
    assert dict(x86_64.GDB_TO_KVM_SREGS) == {s: s for s in ("cs", "ss", "ds", "es", "fs", "gs")}


# --- opcodes and flags -------------------------------------------------------------


def test_trap_opcodes_are_int3_and_hlt() -> None:
    assert x86_64.INT3 == b"\xcc"
    assert x86_64.HLT == b"\xf4"


def test_rflags_bits_for_run_control() -> None:
    assert (Rflags.TF, Rflags.IF, Rflags.RF) == (0x100, 0x200, 0x10000)


# --- DR7 -------------------------------------------------------------------------------


def test_one_execute_breakpoint_in_dr0_is_0x401() -> None:
    # L0 plus bit 10, the reserved bit that reads as 1 (see encode_dr7's docstring).
    assert encode_dr7([DebugSlot(0, 0x401000, SlotKind.EXECUTE)]) == 0x401


def test_four_byte_write_watch_in_dr1_sets_l1_rw01_len11() -> None:
    value = encode_dr7([DebugSlot(1, 0x2000, SlotKind.WRITE, 4)])
    assert value & 0b1111 == 0x4  # L1 only
    assert (value >> 20) & 0b11 == 0b01  # RW1: break on data writes
    assert (value >> 22) & 0b11 == 0b11  # LEN1: 4 bytes
    assert value == 0x400 | 0x4 | (0b01 << 20) | (0b11 << 22)


def test_eight_byte_access_watch_uses_len_10() -> None:
    value = encode_dr7([DebugSlot(3, 0x3000, SlotKind.ACCESS, 8)])
    assert (value >> 28) & 0b11 == 0b11
    assert (value >> 30) & 0b11 == 0b10


def test_no_slots_encodes_only_the_fixed_bit() -> None:
    assert encode_dr7([]) == x86_64.DR7_FIXED_1 == 0x400


def test_encode_sets_neither_le_ge_nor_global_enables() -> None:
    slots = [DebugSlot(i, 0x1000 * (i + 1), SlotKind.EXECUTE) for i in range(4)]
    value = encode_dr7(slots)
    assert value & 0x300 == 0
    assert value & 0xAA == 0


def test_read_only_watch_is_refused_on_x86() -> None:
    with pytest.raises(UsageError, match="no read-only data breakpoints"):
        DebugSlot(0, 0x1000, SlotKind.READ, 4)


def test_execute_slot_must_have_length_one() -> None:
    with pytest.raises(UsageError, match="LEN=00"):
        DebugSlot(0, 0x1000, SlotKind.EXECUTE, 4)


def test_debug_slot_index_beyond_dr3_is_refused() -> None:
    with pytest.raises(UsageError, match="DR0-DR3"):
        DebugSlot(4, 0x1000, SlotKind.EXECUTE)


def test_same_register_twice_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="DR2"):
        encode_dr7([DebugSlot(2, 0x10, SlotKind.EXECUTE), DebugSlot(2, 0x20, SlotKind.EXECUTE)])


def test_decode_accepts_global_enables_as_qemu_and_the_kvm_selftest_write_them() -> None:
    # debug_regs.c: execute breakpoint in DR2, then a 4-byte write watch in DR0.
    assert decode_dr7(0x400 | (1 << 5)) == [Dr7Slot(2, SlotKind.EXECUTE, 1)]
    assert decode_dr7(0x400 | (1 << 1) | 0x000D0000) == [Dr7Slot(0, SlotKind.WRITE, 4)]


def test_decode_ignores_disabled_registers_fields() -> None:
    assert decode_dr7(0x400 | (0b11 << 16) | (0b11 << 18)) == []


def test_decode_refuses_enabled_io_breakpoints() -> None:
    with pytest.raises(ValueError, match="I/O"):
        decode_dr7(0x400 | 0x1 | (0b10 << 16))


@st.composite
def debug_slot_sets(draw: st.DrawFn) -> list[DebugSlot]:
    indices = draw(st.lists(st.integers(0, 3), unique=True, max_size=4))
    slots = []
    for index in indices:
        kind = draw(st.sampled_from([SlotKind.EXECUTE, SlotKind.WRITE, SlotKind.ACCESS]))
        length = 1 if kind is SlotKind.EXECUTE else draw(st.sampled_from([1, 2, 4, 8]))
        address = draw(st.integers(0, (1 << 64) - 1)) // length * length
        slots.append(DebugSlot(index, address, kind, length))
    return slots


@given(debug_slot_sets())
def test_decode_inverts_encode(slots: list[DebugSlot]) -> None:
    expected = sorted((Dr7Slot(s.index, s.kind, s.length) for s in slots), key=lambda s: s.index)
    assert decode_dr7(encode_dr7(slots)) == expected


@given(debug_slot_sets())
def test_debugregs_hold_addresses_in_0_to_3_and_dr7_in_7(slots: list[DebugSlot]) -> None:
    regs = debugregs_for(slots)
    assert len(regs) == 8
    for index in range(4):
        held = [s.address for s in slots if s.index == index]
        assert regs[index] == (held[0] if held else 0)
    assert regs[4:7] == (0, 0, 0)
    assert regs[7] == encode_dr7(slots)


# --- DR6 -------------------------------------------------------------------------------


def test_single_step_dr6_of_this_host_is_bs_only() -> None:
    assert significant_bits(0xFFFF4FF0) == Dr6.BS


def test_significant_bits_keep_b0_to_b3_bd_bs_bt() -> None:
    assert significant_bits(0xFFFFFFFF) == Dr6.B0 | Dr6.B1 | Dr6.B2 | Dr6.B3 | Dr6.BD | Dr6.BS | Dr6.BT


def test_breakpoint_in_dr2_on_a_real_cpu_reads_b2() -> None:
    # The KVM selftest expects 0xffff0ff0 | (1 << i) for DRi.
    assert significant_bits(0xFFFF0FF0 | 0b100) == Dr6.B2


def test_triggered_slots_drops_bn_of_registers_dr7_does_not_enable() -> None:
    dr7 = encode_dr7([DebugSlot(1, 0x1000, SlotKind.EXECUTE)])
    assert triggered_slots(0xFFFF0FF0 | 0b0011) == (0, 1)
    assert triggered_slots(0xFFFF0FF0 | 0b0011, dr7) == (1,)


# --- watch chunks ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 4, 8])
def test_aligned_chunks_of_1_2_4_8_are_watchable(length: int) -> None:
    check_watch_chunk(0x1000 + length, length)


def test_three_byte_chunk_is_refused() -> None:
    with pytest.raises(UsageError, match="not 3"):
        check_watch_chunk(0x1000, 3)


def test_misaligned_chunk_is_refused() -> None:
    with pytest.raises(UsageError, match="multiple of 4"):
        check_watch_chunk(0x1002, 4)


def test_split_of_an_aligned_long_is_one_chunk() -> None:
    assert split_range(0x1000, 8) == [(0x1000, 8)]


def test_split_of_a_misaligned_range_grows_then_shrinks() -> None:
    assert split_range(0x1003, 14) == [(0x1003, 1), (0x1004, 4), (0x1008, 8), (0x1010, 1)]


def test_split_of_an_empty_range_is_refused() -> None:
    with pytest.raises(UsageError):
        split_range(0x1000, 0)


def _fewest_chunks(address: int, length: int) -> int:
    """Reference: dynamic programming over every aligned 1/2/4/8 choice."""
    best = [0] + [length + 1] * length
    for offset in range(length):
        for size in (1, 2, 4, 8):
            if (address + offset) % size == 0 and offset + size <= length:
                best[offset + size] = min(best[offset + size], best[offset] + 1)
    return best[length]


@given(st.integers(0, (1 << 64) - 4096), st.integers(1, 200))
def test_split_chunks_are_aligned_contiguous_and_cover_the_range(address: int, length: int) -> None:
    chunks = split_range(address, length)
    assert all(c.length in (1, 2, 4, 8) for c in chunks)
    assert all(c.address % c.length == 0 for c in chunks)
    assert chunks[0].address == address
    for before, after in zip(chunks, chunks[1:]):
        assert before.address + before.length == after.address
    assert sum(c.length for c in chunks) == length


@given(st.integers(0, 1 << 20), st.integers(1, 64))
def test_split_uses_the_fewest_chunks(address: int, length: int) -> None:
    assert len(split_range(address, length)) == _fewest_chunks(address, length)
