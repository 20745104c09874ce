"""Instruction facts: decoding agrees with objdump on a gcc -O0 program, and
memory_accesses computes the addresses an instruction will touch."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmbench.arch.instructions import (
    MemoryAccess,
    OperandAccess,
    decode,
    disassemble,
    memory_accesses,
)
from kvmbench.errors import BreakpointError, UsageError

R, W, RW = OperandAccess.READ, OperandAccess.WRITE, OperandAccess.READ_WRITE

REGS = {
    "rax": 0x10, "rbx": 0x5000, "rcx": 3, "rdx": 0x20, "rsi": 0x2000, "rdi": 0x3000,
    "rbp": 0x7000, "rsp": 0x6FF0, "r8": 0xFFFF_FFFF_0000_0100, "r9": 0, "r10": 0, "r11": 0,
    "r12": 0, "r13": 0, "r14": 0, "r15": 0, "fs_base": 0x9000, "gs_base": 0xA000,
}  # fmt: skip


def accesses(hex_bytes: str, regs: dict[str, int] = REGS, address: int = 0x1000) -> list:
    return memory_accesses(decode(bytes.fromhex(hex_bytes), address), regs)


# --- control flow -------------------------------------------------------------------


def test_relative_call_is_a_call_with_its_target() -> None:
    insn = decode(bytes.fromhex("e8fb0f0000"), 0x1000)
    assert (insn.mnemonic, insn.size, insn.is_call, insn.branch_target) == ("call", 5, True, 0x2000)
    assert insn.next_address == 0x1005


def test_indirect_call_has_no_static_target() -> None:
    insn = decode(bytes.fromhex("ffd0"), 0x1000)  # call rax
    assert insn.is_call and insn.branch_target is None


def test_ret_is_a_return() -> None:
    insn = decode(b"\xc3", 0x1000)
    assert insn.is_ret and insn.is_branch and not insn.is_call


def test_jcc_is_a_conditional_jump() -> None:
    insn = decode(bytes.fromhex("7405"), 0x1000)  # je
    assert (insn.is_jump, insn.is_conditional, insn.branch_target) == (True, True, 0x1007)


def test_jmp_is_an_unconditional_jump() -> None:
    insn = decode(bytes.fromhex("ebfe"), 0x1000)
    assert (insn.is_jump, insn.is_conditional, insn.branch_target) == (True, False, 0x1000)


def test_loop_is_a_conditional_jump() -> None:
    insn = decode(bytes.fromhex("e2fe"), 0x1000)
    assert insn.is_jump and insn.is_conditional and insn.branch_target == 0x1000


def test_int3_and_syscall_are_interrupts() -> None:
    assert decode(b"\xcc", 0).is_interrupt
    assert decode(b"\x0f\x05", 0).is_interrupt


def test_decode_takes_only_the_first_instruction() -> None:
    insn = decode(bytes.fromhex("554889e5"), 0x1000)
    assert (str(insn), insn.size, insn.bytes) == ("push rbp", 1, b"\x55")


def test_bytes_that_are_no_instruction_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no valid x86-64 instruction at 0x1000"):
        decode(b"\x06", 0x1000)  # push es does not exist in 64-bit mode


def test_truncated_instruction_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        decode(b"\xe8\x00", 0x1000)


# --- memory accesses -----------------------------------------------------------------


def test_store_to_a_local_writes_at_rbp_minus_disp() -> None:
    assert accesses("897dfc") == [MemoryAccess(0x6FFC, 4, W)]  # mov [rbp-4], edi


def test_add_to_memory_reads_and_writes() -> None:
    assert accesses("8345fc01") == [MemoryAccess(0x6FFC, 4, RW)]


def test_base_index_scale_and_displacement() -> None:
    # mov eax, [rbx + rcx*4 + 0x10]
    assert accesses("8b448b10") == [MemoryAccess(0x5000 + 3 * 4 + 0x10, 4, R)]


def test_rip_relative_uses_the_next_instruction_address() -> None:
    # mov eax, [rip + 0x30] at 0x1000, 6 bytes long
    assert accesses("8b0530000000") == [MemoryAccess(0x1006 + 0x30, 4, R)]


def test_push_writes_eight_bytes_below_rsp() -> None:
    assert accesses("55") == [MemoryAccess(0x6FE8, 8, W)]


def test_call_writes_the_return_address_below_rsp() -> None:
    assert accesses("e8fb0f0000") == [MemoryAccess(0x6FE8, 8, W)]


def test_indirect_call_through_memory_reads_the_pointer_then_pushes() -> None:
    # call [rax]
    assert accesses("ff10") == [MemoryAccess(0x10, 8, R), MemoryAccess(0x6FE8, 8, W)]


def test_pop_and_ret_read_at_rsp() -> None:
    assert accesses("5d") == [MemoryAccess(0x6FF0, 8, R)]
    assert accesses("c3") == [MemoryAccess(0x6FF0, 8, R)]


def test_leave_reads_the_saved_frame_pointer_at_rbp() -> None:
    assert accesses("c9") == [MemoryAccess(0x7000, 8, R)]


def test_pop_to_memory_based_on_rsp_uses_rsp_after_the_pop() -> None:
    # pop qword ptr [rsp + 8]
    assert accesses("8f442408") == [MemoryAccess(0x6FF0, 8, R), MemoryAccess(0x6FF8 + 8, 8, W)]


def test_sixteen_bit_push_writes_two_bytes() -> None:
    assert accesses("6650") == [MemoryAccess(0x6FEE, 2, W)]


def test_lea_and_nop_access_no_memory() -> None:
    assert accesses("488d45f0") == []
    assert accesses("0f1f440000") == []


def test_fs_relative_load_adds_fs_base() -> None:
    # mov rax, fs:[0x28] (the stack protector canary)
    assert accesses("64488b042528000000") == [MemoryAccess(0x9028, 8, R)]


def test_movsb_reads_rsi_and_writes_rdi() -> None:
    assert sorted(accesses("a4")) == [MemoryAccess(0x2000, 1, R), MemoryAccess(0x3000, 1, W)]


def test_rep_stosq_reports_the_next_iteration_only() -> None:
    assert accesses("f348ab") == [MemoryAccess(0x3000, 8, W)]


def test_rep_stosq_with_rcx_zero_accesses_nothing() -> None:
    assert accesses("f348ab", {**REGS, "rcx": 0}) == []


def test_sse_movsd_store_is_a_write_not_a_string_move() -> None:
    # movsd [rbp-8], xmm0
    assert accesses("f20f1145f8") == [MemoryAccess(0x6FF8, 8, W)]


def test_movq_store_is_a_write_although_capstone_says_read() -> None:
    assert accesses("660fd645f8") == [MemoryAccess(0x6FF8, 8, W)]


def test_x87_fstp_is_a_write_although_capstone_says_read() -> None:
    assert accesses("dd5df8") == [MemoryAccess(0x6FF8, 8, W)]


def test_cmpxchg_reads_and_writes() -> None:
    assert accesses("480fb10f") == [MemoryAccess(0x3000, 8, RW)]


def test_fxsave_writes_512_bytes() -> None:
    assert accesses("0fae07") == [MemoryAccess(0x3000, 512, W)]


def test_thirty_two_bit_addressing_truncates_the_address() -> None:
    # mov eax, [r8d] with the 0x67 prefix
    assert accesses("67418b00") == [MemoryAccess(0x100, 4, R)]


def test_xlat_reads_rbx_plus_al() -> None:
    assert accesses("d7") == [MemoryAccess(0x5010, 1, R)]


def test_xsave_is_reported_as_not_covered() -> None:
    with pytest.raises(BreakpointError, match="XCR0"):
        accesses("0fae27")


def test_missing_register_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        accesses("55", {"rax": 0})


# --- against objdump --------------------------------------------------------------------

PROGRAM = r"""
struct point { long x, y, z; double w; char tag[40]; };
long counter;
static double scale = 1.5;
struct point origin;

long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

double average(const int *values, int count) {
    double sum = 0;
    for (int i = 0; i < count; i++) sum += values[i] * scale;
    return count ? sum / count : 0.0;
}

struct point copy_point(struct point p) { p.x += 1; return p; }

unsigned char checksum(const unsigned char *buf, unsigned long len) {
    unsigned char c = 0;
    while (len--) c ^= *buf++;
    return c;
}

int main(void) {
    int values[16] = {0};
    long big[64] = {0};
    char text[64] = "kvmbench";
    for (int i = 0; i < 16; i++) values[i] = i * i;
    counter += fib(10) + big[3];
    struct point p = copy_point(origin);
    long (*fp)(long) = fib;
    counter += fp(5) + (long)average(values, 16) + checksum((unsigned char *)text, sizeof text) + p.x;
    switch (counter & 3) {
    case 0: counter++; break;
    case 1: counter--; break;
    case 2: counter *= 3; break;
    default: counter = 0;
    }
    return (int)counter;
}
"""

_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\t(\S.*?)\s*$")
_STRING_MNEMONICS = ("movs", "stos", "lods", "cmps", "scas", "ins", "outs")


@pytest.fixture(scope="module")
def gcc_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None or shutil.which("objdump") is None:
        pytest.skip("gcc and objdump are needed to compare against objdump")
    directory = tmp_path_factory.mktemp("objdump")
    (directory / "prog.c").write_text(PROGRAM)
    # Freestanding and statically linked at a fixed address, so calls have
    # real targets and no libc code is mixed in.
    subprocess.run(
        ["gcc", "-O0", "-fno-pie", "-no-pie", "-nostdlib", "-static", "-ffreestanding",
         "-fno-stack-protector", "-Wl,-e,main", "-o", "prog", "prog.c"],
        cwd=directory, check=True, capture_output=True,
    )  # fmt: skip
    return directory / "prog"


def _objdump(program: Path) -> list[tuple[int, str, str]]:
    """(address, mnemonic with prefixes, operands) of each instruction in .text."""
    out = subprocess.run(
        ["objdump", "-d", "-M", "intel", "--no-show-raw-insn", "-w", "-j", ".text", str(program)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        match = _OBJDUMP_LINE.match(line)
        if not match:
            continue
        text = match.group(2).split("#")[0].strip()
        words = text.split()
        mnemonic = words[0]
        # Prefixes objdump prints as separate words ("rep stos", "lock add").
        while mnemonic in ("rep", "repz", "repnz", "repe", "repne", "lock") and len(words) > 1:
            words = words[1:]
            mnemonic = f"{mnemonic} {words[0]}"
        operands = text[text.find(words[0]) + len(words[0]) :].strip()
        rows.append((int(match.group(1), 16), mnemonic, operands))
    return rows


def _text_section(program: Path) -> tuple[int, bytes]:
    from elftools.elf.elffile import ELFFile

    with program.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".text")
        return section["sh_addr"], section.data()


def _same_mnemonic(objdump: str, ours: str) -> bool:
    if objdump == ours:
        return True
    # objdump leaves the element size off string instructions it shows with
    # explicit operands ("rep stos QWORD PTR es:[rdi],rax"); capstone says stosq.
    return ours[:-1] == objdump and objdump.split()[-1] in _STRING_MNEMONICS


def test_instruction_lengths_match_objdump(gcc_program: Path) -> None:
    start, code = _text_section(gcc_program)
    reference = _objdump(gcc_program)
    ours = disassemble(code, start)
    assert [i.address for i in ours] == [address for address, _, _ in reference]
    assert sum(i.size for i in ours) == len(code)


def test_mnemonics_match_objdump(gcc_program: Path) -> None:
    start, code = _text_section(gcc_program)
    ours = disassemble(code, start)
    mismatches = [
        (hex(i.address), mnemonic, i.mnemonic)
        for i, (_, mnemonic, _) in zip(ours, _objdump(gcc_program))
        if not _same_mnemonic(mnemonic, i.mnemonic)
    ]
    assert mismatches == []


def test_call_targets_match_objdump(gcc_program: Path) -> None:
    start, code = _text_section(gcc_program)
    ours = {i.address: i for i in disassemble(code, start)}
    calls = [(a, ops) for a, m, ops in _objdump(gcc_program) if m == "call"]
    assert calls, "the program makes calls"
    for address, operands in calls:
        target = re.match(r"([0-9a-f]+) <", operands)
        assert ours[address].is_call
        assert ours[address].branch_target == (int(target.group(1), 16) if target else None)


def test_jump_targets_match_objdump(gcc_program: Path) -> None:
    start, code = _text_section(gcc_program)
    ours = {i.address: i for i in disassemble(code, start)}
    jumps = [(a, ops) for a, m, ops in _objdump(gcc_program) if m.startswith("j")]
    assert jumps
    for address, operands in jumps:
        target = re.match(r"([0-9a-f]+) <", operands)
        assert ours[address].is_jump
        assert ours[address].branch_target == (int(target.group(1), 16) if target else None)


def test_every_memory_operand_of_the_program_has_an_address(gcc_program: Path) -> None:
    start, code = _text_section(gcc_program)
    for insn in disassemble(code, start):
        for access in memory_accesses(insn, REGS):
            assert 0 <= access.address < 1 << 64 and access.size > 0


@pytest.mark.parametrize(("hex_bytes", "offset", "expected"), [
    pytest.param("480fa307", 70, (0x3008, 8, R), id="bt-qword-beyond-the-operand"),
    pytest.param("480fab07", -1, (0x2FF8, 8, RW), id="bts-negative-offset-goes-below"),
    pytest.param("0fa307", 33, (0x3004, 4, R), id="bt-dword-register-offset"),
    pytest.param("0fb307", 31, (0x3000, 4, RW), id="btr-inside-the-operand"),
    pytest.param("0fba2f05", 0, (0x3000, 4, RW), id="bts-immediate-stays-at-the-operand"),
])
def test_bit_tests_with_a_register_offset_touch_the_unit_holding_the_bit(
        hex_bytes: str, offset: int, expected: tuple[int, int, OperandAccess]) -> None:
    regs = dict(REGS, rax=offset & (2**64 - 1))
    assert accesses(hex_bytes, regs) == [MemoryAccess(*expected)]


def test_a_rep_step_accesses_every_iteration_rcx_counted() -> None:
    from kvmbench.arch.instructions import string_accesses

    insn = decode(bytes.fromhex("f348a5"), 0x1000)  # rep movsq
    before = dict(REGS, rcx=12, rflags=0x202)
    after = dict(before, rcx=0)
    assert string_accesses(insn, before, after) == [
        MemoryAccess(0x3000, 96, W), MemoryAccess(0x2000, 96, R)]


def test_a_rep_step_backwards_covers_the_elements_below_the_start() -> None:
    from kvmbench.arch.instructions import string_accesses

    insn = decode(bytes.fromhex("f3aa"), 0x1000)  # rep stosb, DF set
    before = dict(REGS, rcx=4, rflags=0x602)
    assert string_accesses(insn, before, dict(before, rcx=1)) == [MemoryAccess(0x2FFE, 3, W)]
