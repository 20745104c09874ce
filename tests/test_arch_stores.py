"""Store facts: finding the instruction that made a store from where rip
stands after it, push emulation, and replaying a read-modify-write."""

from __future__ import annotations

import pytest

from kvmbench.arch.instructions import decode
from kvmbench.arch.stores import (
    Unreplayable,
    find_writer,
    push_effect,
    replay_registers,
    writer_candidates,
)
from kvmbench.errors import GuestMemoryError

BASE = 0x1000
REGS = {"rax": 0x1122334455667788, "rbx": 0, "rcx": 0, "rdx": 0, "rsi": 0x3000, "rdi": 0x2000,
        "rsp": 0x7FF8, "rbp": 0x8000, "r8": 0, "r9": 0, "r10": 0, "r11": 0, "r12": 0, "r13": 0,
        "r14": 0, "r15": 0, "rip": 0, "rflags": 0x202, "fs_base": 0, "gs_base": 0}


def reader(code: bytes, base: int = BASE):  # type: ignore[no-untyped-def]
    def read(address: int, length: int) -> bytes:
        start = address - base
        if start < 0 or start + length > len(code):
            raise GuestMemoryError("outside the test's code")
        return code[start:start + length]
    return read


def pad(code: str) -> bytes:
    return bytes(16) + bytes.fromhex(code) + bytes.fromhex("90" * 16)


def exactly(address: int, size: int):  # type: ignore[no-untyped-def]
    return lambda a, n: (a, n) == (address, size)


def test_the_writer_is_the_instruction_that_ends_where_rip_stands() -> None:
    code = pad("488907")  # mov [rdi], rax at BASE+16
    writer = find_writer(reader(code), BASE + 19, REGS, exactly(0x2000, 8))
    assert writer is not None and writer.insn.address == BASE + 16 and not writer.in_progress


def test_a_rex_store_is_not_taken_for_its_shorter_suffix() -> None:
    # 89 07 (mov [rdi], eax) also ends there but stores 4 bytes, not 8.
    code = pad("488907")
    writer = find_writer(reader(code), BASE + 19, REGS, exactly(0x2000, 8))
    assert writer is not None and writer.insn.size == 3


def test_a_push_is_found_from_the_stack_pointer_it_left() -> None:
    code = pad("50")  # push rax: rsp already moved down
    regs = dict(REGS, rsp=0x7FF0)
    writer = find_writer(reader(code), BASE + 17, regs, exactly(0x7FF0, 8))
    assert writer is not None and str(writer.insn) == "push rax"


def test_a_call_is_found_from_the_return_address_it_stored() -> None:
    code = pad("e8" + (0x40).to_bytes(4, "little").hex())  # call BASE+16+5+0x40
    regs = dict(REGS, rsp=0x7FF0)
    writer = find_writer(reader(code), BASE + 16 + 5 + 0x40, regs, exactly(0x7FF0, 8),
                         stack_word=BASE + 21)
    assert writer is not None and writer.insn.is_call and writer.insn.address == BASE + 16


def test_a_rep_store_with_iterations_left_is_its_own_writer_still_running() -> None:
    code = pad("f3aa")  # rep stosb: one iteration stored at rdi - 1
    regs = dict(REGS, rdi=0x2001, rcx=2)
    writer = find_writer(reader(code), BASE + 16, regs, exactly(0x2000, 1))
    assert writer is not None and writer.in_progress and writer.insn.address == BASE + 16


def test_a_rep_store_counting_down_goes_by_the_direction_flag() -> None:
    code = pad("f3aa")
    regs = dict(REGS, rdi=0x1FFF, rcx=2, rflags=0x602)  # DF set: rdi moves down
    writer = find_writer(reader(code), BASE + 16, regs, exactly(0x2000, 1))
    assert writer is not None and writer.in_progress


def test_no_instruction_explains_a_store_it_did_not_make() -> None:
    code = pad("4889c8")  # mov rax, rcx: no memory
    assert find_writer(reader(code), BASE + 19, REGS, exactly(0x2000, 8)) is None


def test_a_linear_decode_from_the_function_start_settles_overlapping_candidates() -> None:
    # 66 48 89 07 and 48 89 07 both store rax at [rdi]; the function starts
    # at the 0x66 only when that prefix belongs to the store.
    code = bytes(16) + bytes.fromhex("b866000000") + bytes.fromhex("488907") + bytes(16)
    candidates = writer_candidates(reader(code), BASE + 24, boundary=BASE + 16)
    assert candidates.before[0].address == BASE + 21  # not the 0x66 tail of the mov eax


def test_a_push_of_a_register_is_emulated_with_its_value_and_slot() -> None:
    effect = push_effect(bytes.fromhex("55"), REGS)
    assert effect is not None and (effect.register, effect.value, effect.address) == (
        "rbp", 0x8000, 0x7FF0)
    effect = push_effect(bytes.fromhex("4154"), REGS)  # push r12
    assert effect is not None and effect.register == "r12" and effect.length == 2


def test_anything_but_a_plain_push_is_not_emulated() -> None:
    assert push_effect(bytes.fromhex("4883ec08"), REGS) is None  # sub rsp, 8
    assert push_effect(bytes.fromhex("ff35"), REGS) is None  # push [rip+...]


def test_replaying_a_flags_only_read_modify_write_restores_nothing() -> None:
    insn = decode(bytes.fromhex("80370f"), BASE)  # xor byte [rdi], 0x0f
    assert replay_registers(insn, REGS, 0xF4, 0xFB, 1) == {}


def test_replaying_xchg_gives_the_register_back_the_value_it_stored() -> None:
    insn = decode(bytes.fromhex("8607"), BASE)  # xchg [rdi], al
    regs = dict(REGS, rax=0x11223344556677F4)  # al took the trap byte
    assert replay_registers(insn, regs, 0xF4, 0x88, 1) == {"rax": 0x1122334455667788}


def test_replaying_xadd_recovers_the_addend() -> None:
    insn = decode(bytes.fromhex("0fc007"), BASE)  # xadd [rdi], al
    regs = dict(REGS, rax=0xF4)  # al = old memory; memory = old + addend
    assert replay_registers(insn, regs, 0xF4, 0xF7, 1) == {"rax": 0x03}


def test_replaying_adc_recovers_the_carry_that_went_in() -> None:
    insn = decode(bytes.fromhex("801701"), BASE)  # adc byte [rdi], 1
    assert replay_registers(insn, dict(REGS, rflags=0x202), 0xF4, 0xF6, 1)["rflags"] & 1 == 1


def test_a_cmpxchg_that_failed_cannot_be_replayed() -> None:
    insn = decode(bytes.fromhex("0fb007"), BASE)  # cmpxchg [rdi], al
    with pytest.raises(Unreplayable, match="rax"):
        replay_registers(insn, dict(REGS, rflags=0x202), 0xF4, 0xF4, 1)


def test_enter_is_found_from_the_frame_pointer_it_set() -> None:
    code = pad("c8100000")  # enter 16, 0: rbp = old rsp - 8, rsp = rbp - 16
    regs = dict(REGS, rbp=0x7FF0, rsp=0x7FE0)
    writer = find_writer(reader(code), BASE + 20, regs, exactly(0x7FF0, 8))
    assert writer is not None and str(writer.insn).startswith("enter")


def test_the_last_iteration_of_a_rep_store_is_still_its_own() -> None:
    code = pad("f3a4")  # rep movsb whose only iteration just stored (rcx now 0)
    regs = dict(REGS, rdi=0x2001, rsi=0x3001, rcx=0)
    writer = find_writer(reader(code), BASE + 16, regs, exactly(0x2000, 1))
    assert writer is not None and writer.in_progress


def test_the_reader_of_a_watched_range_is_found_for_a_read_watch() -> None:
    from kvmbench.arch.instructions import OperandAccess

    code = pad("488b07")  # mov rax, [rdi]
    writer = find_writer(reader(code), BASE + 19, REGS, exactly(0x2000, 8),
                         access=OperandAccess.READ)
    assert writer is not None and writer.insn.address == BASE + 16
    assert find_writer(reader(code), BASE + 19, REGS, exactly(0x2000, 8)) is None  # it stored nothing
