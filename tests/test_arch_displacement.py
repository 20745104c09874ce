"""Which instructions a jump may cover, and their relocated copies: the
sweep agrees with objdump on the bundled guests, a copy placed elsewhere
decodes (capstone) to the same operation on the same targets, and every
unsafe patch is refused with a one-line reason."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from elftools.elf.elffile import ELFFile

from kvmbench.arch.displacement import (
    JMP_REL32_SIZE,
    Transfer,
    Undisplaceable,
    analyse_function,
    jcc_rel32,
    jmp_rel32,
    plan_displacement,
    push_imm32,
    relocate,
)
from kvmbench.guests import guest_path

BASE = 0x100000
#: Where the copies go in these tests: as far as the probe area is from code.
AT = 0x3FE00100

_CS = Cs(CS_ARCH_X86, CS_MODE_64)
_CS.detail = True
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def asm(tmp_path: Path, body: str) -> bytes:
    """``body`` (GNU assembler, AT&T) as the raw bytes of a function at BASE."""
    src = tmp_path / "f.S"
    src.write_text(f".text\n.globl f\nf:\n{body}\n")
    obj, raw = tmp_path / "f.o", tmp_path / "f.bin"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(raw)], check=True)
    return raw.read_bytes()


def facts(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    return analyse_function(asm(tmp_path, body), BASE)


def decoded(code: bytes, address: int) -> list[tuple[int, str, str]]:
    return [(i.address, i.mnemonic, i.op_str) for i in _CS.disasm(code, address)]


# --- the sweep -------------------------------------------------------------------


def _functions(image: Path) -> list[tuple[str, int, bytes]]:
    with image.open("rb") as f:
        elf = ELFFile(f)
        text = elf.get_section_by_name(".text")
        data, start = text.data(), text["sh_addr"]
        out = []
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] and \
                    start <= sym["st_value"] < start + len(data):
                offset = sym["st_value"] - start
                out.append((sym.name, sym["st_value"], data[offset:offset + sym["st_size"]]))
        return out


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump is not installed")
@pytest.mark.parametrize("guest", ["fib", "callmix", "sort"])
def test_instruction_boundaries_agree_with_objdump(guest: str) -> None:
    image = guest_path(guest)
    dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(image)],
                          capture_output=True, text=True, check=True).stdout
    listed = {int(m.group(1), 16) for m in re.finditer(r"^\s+([0-9a-f]+):\t", dump, re.M)}
    for name, start, code in _functions(image):
        f = analyse_function(code, start)
        if name == "pvh_start":  # 32-bit code (QEMU's PVH entry): not x86-64 instructions
            assert not f.complete
            continue
        assert f.complete, name
        ours = {i.address for i in f.instructions}
        assert ours == {a for a in listed if start <= a < start + len(code)}, name


@needs_gcc
def test_direct_branches_calls_and_taken_addresses_are_targets(tmp_path) -> None:
    f = facts(tmp_path, """
        lea 1f(%rip), %rax
        call 2f
        jne 2f
    1:  ret
    2:  jmp 1b
    """)
    by_text = {i.text.split()[0]: i for i in f.instructions}
    assert {by_text["call"].target, by_text["jmp"].target, by_text["lea"].rip_target} <= f.targets
    assert by_text["jne"].transfer is Transfer.CONDITIONAL and by_text["ret"].transfer is Transfer.RETURN
    assert f.complete and not f.indirect_jumps


# --- choosing what to cover -----------------------------------------------------


@needs_gcc
def test_a_frame_prologue_is_covered_whole(tmp_path) -> None:
    f = facts(tmp_path, "push %rbp\nmov %rsp, %rbp\npush %rbx\nsub $8, %rsp\nret")
    d = plan_displacement(f, BASE)
    assert [str(i) for i in d.instructions] == ["push rbp", "mov rbp, rsp", "push rbx"]
    assert d.length == JMP_REL32_SIZE and d.end == BASE + 5


@needs_gcc
def test_copies_decode_as_the_originals_and_the_jump_back_ends_them(tmp_path) -> None:
    f = facts(tmp_path, "push %rbp\nmov %rsp, %rbp\nmov %rdi, -8(%rbp)\nret")
    d = plan_displacement(f, BASE)
    r = relocate(d, AT)
    got = decoded(r.code, AT)
    assert [(m, o) for _, m, o in got[:-1]] == [(m, o) for _, m, o in decoded(d.original, BASE)]
    assert got[-1][1:] == ("jmp", f"{d.end:#x}")
    assert [original for original, _, _ in r.copies] == [i.address for i in d.instructions]


@needs_gcc
def test_a_rip_relative_operand_still_reaches_its_target(tmp_path) -> None:
    f = facts(tmp_path, "movq $1, data(%rip)\nret\n.balign 8\ndata: .quad 0")
    d = plan_displacement(f, BASE)
    target = d.instructions[0].rip_target
    insn = next(_CS.disasm(relocate(d, AT).code, AT))
    mem = insn.operands[0].mem
    assert insn.address + insn.size + mem.disp == target


@needs_gcc
def test_a_short_conditional_jump_last_becomes_a_near_one_to_the_same_target(tmp_path) -> None:
    f = facts(tmp_path, "cmp $3, %rdi\nje 1f\nxor %eax, %eax\n1: ret")
    d = plan_displacement(f, BASE)
    assert d.instructions[-1].transfer is Transfer.CONDITIONAL
    got = decoded(relocate(d, AT).code, AT)
    assert got[1][1:] == ("je", f"{d.instructions[-1].target:#x}")
    assert got[2][1:] == ("jmp", f"{d.end:#x}")  # the fall-through goes back


@needs_gcc
def test_a_call_last_pushes_the_original_return_address(tmp_path) -> None:
    f = facts(tmp_path, "call 1f\nret\n1: ret")
    d = plan_displacement(f, BASE)
    got = decoded(relocate(d, AT).code, AT)
    assert [g[1:] for g in got] == [("push", f"{BASE + 5:#x}"),
                                    ("jmp", f"{d.instructions[0].target:#x}")]


def test_the_jump_encodings_decode_to_their_targets() -> None:
    assert decoded(jmp_rel32(0x101000, AT), 0x101000) == [(0x101000, "jmp", f"{AT:#x}")]
    assert decoded(jcc_rel32(0x4, AT, 0x101000), AT) == [(AT, "je", "0x101000")]
    assert decoded(push_imm32(0x101005), 0) == [(0, "push", "0x101005")]
    with pytest.raises(Undisplaceable):
        jmp_rel32(0x1000, 0x1000 + (1 << 31) + 5)
    with pytest.raises(Undisplaceable):
        push_imm32(1 << 31)


# --- refusals ----------------------------------------------------------------------


@needs_gcc
@pytest.mark.parametrize(("body", "why"), [
    ("xor %eax, %eax\nret", "before a 5-byte jump fits"),
    ("test %edi, %edi\njne 1f\nnop\nnop\nnop\n1: ret", "leaves after"),
    ("xor %eax, %eax\n1: add $1, %eax\ncmp $9, %eax\njb 1b\nret", "inside the"),
    ("mov %rdi, %rax\njmp *%rax", "indirect jump"),
    ("cli\nmov $1, %eax\nret", "interrupt flag"),
    ("sti\nmov $1, %eax\nret", "shadow"),
    ("hlt\nmov $1, %eax\nret", "halt"),
    ("popfq\nmov $1, %eax\nret", "flags"),
    ("mov %ax, %ss\nmov $1, %eax\nret", "ss"),
    ("out %al, $0x80\nmov $1, %eax\nret", "port I/O"),
    ("int3\nmov $1, %eax\nret", "interrupts"),
    ("syscall\nmov $1, %eax\nret", "interrupts"),
    ("ud2\nmov $1, %eax\nret", "undefined"),
    ("1: loop 1b\nmov $1, %eax\nret", "rel8"),
    ("call *%rax\nmov $1, %eax\nret", "indirect call"),
    ("wrmsr\nmov $1, %eax\nret", "system instruction"),
])
def test_an_unsafe_patch_is_refused_with_its_reason(tmp_path, body: str, why: str) -> None:
    f = facts(tmp_path, body)
    with pytest.raises(Undisplaceable) as refused:
        plan_displacement(f, BASE)
    assert why in str(refused.value) and "\n" not in str(refused.value)


@needs_gcc
def test_a_branch_from_elsewhere_into_the_covered_bytes_is_refused(tmp_path) -> None:
    f = facts(tmp_path, "push %rbp\nmov %rsp, %rbp\npush %rbx\nret")
    plan_displacement(f, BASE, elsewhere=[BASE, BASE + 5])  # the first byte, and past them
    with pytest.raises(Undisplaceable, match="branches to 0x100001"):
        plan_displacement(f, BASE, elsewhere=[BASE + 1])


@needs_gcc
def test_an_address_that_is_not_an_instruction_boundary_is_refused(tmp_path) -> None:
    f = facts(tmp_path, "mov $0x12345678, %eax\nret")
    with pytest.raises(Undisplaceable, match="not an instruction boundary"):
        plan_displacement(f, BASE + 1)


def test_a_function_that_does_not_decode_to_its_end_is_refused() -> None:
    f = analyse_function(bytes.fromhex("55 4889e5 90 0f0b 06"), BASE)  # ends in a byte no x86-64 has
    assert not f.complete
    with pytest.raises(Undisplaceable, match="does not decode"):
        plan_displacement(f, BASE)
