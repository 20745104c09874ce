"""x86-64 instruction facts from capstone: length, control flow and the memory
an instruction is about to touch.

Run control needs these to step over calls (nexti), find return addresses
(finish), pick where to put a trap, and attribute a watched write to the
instruction that made it. Capstone (>= 5) does the decoding; its per-operand
``access`` information is wrong for some stores (x87 ``fstp``, ``movq`` to
memory, ``cmpxchg``...), so :func:`decode` corrects the cases a gcc -O0
program and a kernel commonly use, and adds the implicit stack accesses
capstone does not list as operands.

What :func:`memory_accesses` covers:

- every explicit memory operand (base + index * scale + disp, rip-relative
  from the next instruction, fs:/gs: with ``fs_base``/``gs_base``, 32-bit
  addressing with the 0x67 prefix);
- the stack slot of push, pop, pushf, popf, call, ret, leave, enter (level
  0) and iretq;
- string instructions (movs, stos, lods, cmps, scas, ins, outs) at rsi/rdi,
  one element: with a rep prefix a single step executes one iteration, so
  the next iteration's element is what is reported (nothing when rcx is 0);
- xlat's implicit [rbx + al];
- bt/bts/btr/btc with a register bit offset on memory: the operand-sized
  unit the signed offset selects, which may lie outside the operand.

Not covered (``memory_accesses`` raises BreakpointError with the reason):
xsave/xrstor (size depends on XCR0), gathers and scatters (addresses in a
vector register), far returns, 16/32-bit iret, enter with a nesting level,
and the frames that int/syscall/exceptions push. Accesses
the CPU makes on its own (page-table walks, descriptor-table loads) are not
instruction accesses and are never reported.
"""

from __future__ import annotations

import enum
import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from capstone import (
    CS_AC_READ,
    CS_AC_WRITE,
    CS_ARCH_X86,
    CS_GRP_BRANCH_RELATIVE,
    CS_GRP_CALL,
    CS_GRP_INT,
    CS_GRP_JUMP,
    CS_GRP_RET,
    CS_MODE_64,
    Cs,
    CsInsn,
)
from capstone import x86 as cs_x86

from kvmbench.errors import BreakpointError, UsageError

__all__ = [
    "MAX_INSTRUCTION_LENGTH",
    "Instruction",
    "MemoryAccess",
    "MemoryOperand",
    "OperandAccess",
    "decode",
    "disassemble",
    "memory_accesses",
    "string_accesses",
]

# An x86 instruction is at most 15 bytes (SDM vol. 2, 2.3.11); reading this
# many guarantees decode() sees a whole one.
MAX_INSTRUCTION_LENGTH = 15

# One capstone handle for the module. Capstone calls go through ctypes, which
# releases the GIL, and a handle's detail buffer is per handle, so calls are
# serialised.
_CS = Cs(CS_ARCH_X86, CS_MODE_64)
_CS.detail = True
_CS_LOCK = threading.Lock()

_MASK64 = (1 << 64) - 1


class OperandAccess(enum.Enum):
    """How an instruction uses a memory operand."""

    READ = "read"
    WRITE = "write"
    READ_WRITE = "readwrite"

    @property
    def reads(self) -> bool:
        """True if the operand is read."""
        return self is not OperandAccess.WRITE

    @property
    def writes(self) -> bool:
        """True if the operand is written."""
        return self is not OperandAccess.READ


@dataclass(frozen=True)
class MemoryOperand:
    """A memory operand: the address is segment base + base + index * scale + disp.

    Register names are capstone's (``rbp``, ``eax``, ``rip``); ``segment`` is
    ``fs`` or ``gs`` or None (the other segments have base 0 in 64-bit mode).
    ``implicit`` marks accesses not written as operands (the stack slot of
    push/call/ret, xlat's table).
    """

    base: str | None
    index: str | None
    scale: int
    disp: int
    size: int
    access: OperandAccess
    segment: str | None = None
    implicit: bool = False


class MemoryAccess(NamedTuple):
    """One memory access an instruction makes: ``size`` bytes at ``address``."""

    address: int
    size: int
    access: OperandAccess


@dataclass(frozen=True)
class Instruction:
    """One decoded x86-64 instruction."""

    address: int
    size: int
    mnemonic: str  # with prefixes, as capstone prints it: "rep stosq"
    op_str: str
    is_call: bool
    is_ret: bool
    is_jump: bool  # jmp, jcc, loop, jrcxz
    is_conditional: bool  # a jump that may fall through
    is_interrupt: bool  # int3, int n, int1, into, syscall, sysenter
    branch_target: int | None  # for direct (relative) call/jmp/jcc/loop
    memory_operands: tuple[MemoryOperand, ...]
    repeat: bool = False  # a rep-prefixed string instruction
    address_size: int = 8  # 4 with the 0x67 prefix
    memory_note: str = ""  # why memory_accesses cannot be exact, if it cannot
    #: bt/bts/btr/btc on memory: (register, its size) holding the signed bit offset.
    bit_offset: tuple[str, int] | None = None
    bytes: bytes = b""  # last: the name shadows the builtin inside the class body

    @property
    def next_address(self) -> int:
        """The address of the instruction after this one (the return address of a call)."""
        return (self.address + self.size) & _MASK64

    @property
    def is_branch(self) -> bool:
        """True if the instruction may transfer control elsewhere than the next one."""
        return self.is_call or self.is_ret or self.is_jump or self.is_interrupt

    def __str__(self) -> str:
        return f"{self.mnemonic} {self.op_str}".rstrip()


# --- decoding ------------------------------------------------------------------


def decode(code: bytes, address: int) -> Instruction:
    """Decode the first instruction of ``code``, located at ``address``.

    Pass at least :data:`MAX_INSTRUCTION_LENGTH` bytes when you have them.
    Raises UsageError when the bytes do not start with a valid instruction.
    Results are remembered: run control decodes the same few instructions
    at every hit, and capstone costs more than a KVM_RUN.
    """
    return _decode(bytes(code[:MAX_INSTRUCTION_LENGTH]), address)


@functools.lru_cache(maxsize=8192)
def _decode(code: bytes, address: int) -> Instruction:
    # The first instruction depends only on its first 15 bytes and its
    # address (rip-relative targets), so those are the whole key.
    with _CS_LOCK:
        for insn in _CS.disasm(code, address, 1):
            return _from_capstone(insn)
    shown = code.hex(" ")
    raise UsageError(f"no valid x86-64 instruction at {address:#x} (bytes: {shown or 'none'})")


def disassemble(code: bytes, address: int, count: int = 0) -> list[Instruction]:
    """Decode consecutive instructions (all of ``code``, or ``count`` of them),
    stopping early at bytes that are not a valid instruction."""
    with _CS_LOCK:
        return [_from_capstone(insn) for insn in _CS.disasm(bytes(code), address, count)]


_LOOPS = frozenset({"loop", "loope", "loopne"})
_UNCONDITIONAL_JUMPS = frozenset({"jmp", "ljmp"})

# Memory operands that are addresses, not accesses (lea computes, nop and
# prefetch hint, clflush/invlpg act on caches and TLBs).
_NO_ACCESS = frozenset({"lea", "nop", "invlpg", "clflush", "clflushopt", "clwb", "cldemote"})

# The string instructions; movsd and cmpsd are strings only with two memory
# operands (otherwise SSE2's scalar-double move and compare).
_STRING_OPS = frozenset(
    f"{op}{w}" for op in ("movs", "stos", "lods", "cmps", "scas", "ins", "outs") for w in "bwdq"
)
_AMBIGUOUS_STRING_OPS = frozenset({"movsd", "cmpsd"})

# Instruction families whose memory operand is written when it is the first
# operand and read otherwise. Capstone 5 reports some of these stores as
# reads (movnti, movq/vmovss to memory, ...).
_STORE_WHEN_FIRST = ("mov", "vmov", "pextr", "vpextr", "extractps", "vextract", "vcvtps2ph")

# Stores with a single memory operand that capstone 5 may report as reads.
_STORES = frozenset(
    {
        "fst", "fstp", "fist", "fistp", "fisttp", "fbstp",
        "fnstcw", "fnstsw", "fnstenv", "fnsave", "fxsave", "fxsave64",
        "stmxcsr", "vstmxcsr", "sgdt", "sidt", "sldt", "str", "smsw",
    }
)  # fmt: skip

# Read-modify-write even though capstone 5 reports a read.
_READ_MODIFY_WRITE = frozenset({"cmpxchg", "cmpxchg8b", "cmpxchg16b", "xadd", "xchg"})

# Operand sizes capstone gets wrong: these save or load processor state
# (SDM vol. 1, 8.1.10 and 10.5; 64-bit mode, 32-bit operand size).
_STATE_SIZES: Mapping[str, int] = MappingProxyType({
    "fxsave": 512, "fxsave64": 512, "fxrstor": 512, "fxrstor64": 512,
    "fnsave": 108, "frstor": 108, "fnstenv": 28, "fldenv": 28,
})  # fmt: skip

_UNCOVERED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("xsave", "its size depends on XCR0"),
    ("xrstor", "its size depends on XCR0"),
)
_BIT_TESTS = frozenset({"bt", "bts", "btr", "btc"})
_UNCOVERED: Mapping[str, str] = MappingProxyType({
    "retf": "far returns are not modelled",
    "iret": "16/32-bit iret is not modelled",
    "iretd": "16/32-bit iret is not modelled",
    "int": "the interrupt frame goes where the IDT and TSS say",
    "int1": "the interrupt frame goes where the IDT and TSS say",
    "int3": "the interrupt frame goes where the IDT and TSS say",
    "into": "the interrupt frame goes where the IDT and TSS say",
    "syscall": "the kernel entry's stack is not known here",
    "sysenter": "the kernel entry's stack is not known here",
    "lcall": "far calls are not modelled",
})

_PREFIX_OPERAND_SIZE = 0x66
_PREFIX_ADDRESS_SIZE = 0x67
_PREFIX_REP = (0xF2, 0xF3)


def _from_capstone(insn: CsInsn) -> Instruction:
    groups = set(insn.groups)
    name = insn.insn_name()
    operands = list(insn.operands)
    is_jump = CS_GRP_JUMP in groups or name in _LOOPS
    target = None
    if CS_GRP_BRANCH_RELATIVE in groups and operands and operands[0].type == cs_x86.X86_OP_IMM:
        target = operands[0].imm & _MASK64

    mem_ops = [op for op in operands if op.type == cs_x86.X86_OP_MEM]
    is_string = name in _STRING_OPS and (name not in _AMBIGUOUS_STRING_OPS or len(mem_ops) == 2)
    memory: list[MemoryOperand] = []
    note = ""
    if name not in _NO_ACCESS and not name.startswith("prefetch"):
        for position, op in enumerate(operands):
            if op.type != cs_x86.X86_OP_MEM:
                continue
            if op.mem.index and insn.reg_name(op.mem.index)[:1] in ("x", "y", "z"):
                note = "gather/scatter addresses are in a vector register"
            memory.append(_explicit_operand(insn, name, position, op, is_string))
    # In execution order: a pop reads the stack before writing its operand,
    # a push or call reads its operand before writing the stack.
    implicit = _implicit_operands(insn, name)
    memory[:0] = [op for op in implicit if op.access is OperandAccess.READ]
    memory.extend(op for op in implicit if op.access is not OperandAccess.READ)
    if name == "enter" and len(operands) == 2 and operands[1].imm & 0x1F:
        note = "enter with a nesting level is not modelled"
    for prefix, reason in _UNCOVERED_PREFIXES:
        if name.startswith(prefix):
            note = reason
    if name in _UNCOVERED:
        note = _UNCOVERED[name]
    bit_offset = None
    if name in _BIT_TESTS and _bit_offset_in_register(operands):
        bit_offset = (insn.reg_name(operands[1].reg), operands[1].size)

    prefixes = insn.prefix
    return Instruction(
        address=insn.address,
        size=insn.size,
        mnemonic=insn.mnemonic,
        op_str=insn.op_str,
        is_call=CS_GRP_CALL in groups,
        is_ret=CS_GRP_RET in groups,
        is_jump=is_jump,
        is_conditional=is_jump and name not in _UNCONDITIONAL_JUMPS,
        is_interrupt=CS_GRP_INT in groups,
        branch_target=target,
        memory_operands=tuple(memory),
        repeat=is_string and prefixes[0] in _PREFIX_REP,
        address_size=4 if prefixes[3] == _PREFIX_ADDRESS_SIZE else 8,
        memory_note=note,
        bit_offset=bit_offset,
        bytes=bytes(insn.bytes),
    )


def _bit_offset_in_register(operands: list[cs_x86.X86Op]) -> bool:
    return (
        len(operands) == 2
        and operands[0].type == cs_x86.X86_OP_MEM
        and operands[1].type == cs_x86.X86_OP_REG
    )


def _explicit_operand(
    insn: CsInsn, name: str, position: int, op: cs_x86.X86Op, is_string: bool
) -> MemoryOperand:
    access = _CAPSTONE_ACCESS.get(op.access & (CS_AC_READ | CS_AC_WRITE), OperandAccess.READ)
    if is_string:
        # ins writes [rdi], outs reads [rsi]; capstone 5 gives them no access.
        if name.startswith("ins"):
            access = OperandAccess.WRITE
        elif name.startswith("outs"):
            access = OperandAccess.READ
    elif name.startswith(_STORE_WHEN_FIRST):
        access = OperandAccess.WRITE if position == 0 else OperandAccess.READ
    elif name in _STORES or (name.startswith("set") and position == 0):
        access = OperandAccess.WRITE
    elif name in _READ_MODIFY_WRITE:
        access = OperandAccess.READ_WRITE
    base = insn.reg_name(op.mem.base) if op.mem.base else None
    disp = op.mem.disp
    if name == "pop" and base in ("rsp", "esp"):
        # POP computes a destination address that uses rsp after the
        # increment (SDM vol. 2, POP).
        disp += _stack_operand_size(insn)
    segment = insn.reg_name(op.mem.segment) if op.mem.segment else None
    return MemoryOperand(
        base=base,
        index=insn.reg_name(op.mem.index) if op.mem.index else None,
        scale=op.mem.scale,
        disp=disp,
        size=_STATE_SIZES.get(name, op.size),
        access=access,
        segment=segment if segment in ("fs", "gs") else None,
    )


_CAPSTONE_ACCESS: Mapping[int, OperandAccess] = MappingProxyType({
    CS_AC_READ: OperandAccess.READ,
    CS_AC_WRITE: OperandAccess.WRITE,
    CS_AC_READ | CS_AC_WRITE: OperandAccess.READ_WRITE,
})


def _stack_operand_size(insn: CsInsn) -> int:
    # push/pop default to 64-bit operands in 64-bit mode; 0x66 makes them
    # 16-bit, and there is no 32-bit form (SDM vol. 2, PUSH).
    return 2 if insn.prefix[2] == _PREFIX_OPERAND_SIZE else 8


def _stack(disp: int, size: int, access: OperandAccess, base: str = "rsp") -> MemoryOperand:
    return MemoryOperand(base, None, 1, disp, size, access, implicit=True)


def _implicit_operands(insn: CsInsn, name: str) -> list[MemoryOperand]:
    if name in ("push", "pushfq", "pushf"):
        size = _stack_operand_size(insn)
        return [_stack(-size, size, OperandAccess.WRITE)]
    if name in ("pop", "popfq", "popf"):
        size = _stack_operand_size(insn)
        return [_stack(0, size, OperandAccess.READ)]
    if name == "call":
        return [_stack(-8, 8, OperandAccess.WRITE)]  # the return address
    if name == "ret":
        return [_stack(0, 8, OperandAccess.READ)]
    if name == "leave":
        # mov rsp, rbp; pop rbp
        return [_stack(0, 8, OperandAccess.READ, base="rbp")]
    if name == "enter":
        return [_stack(-8, 8, OperandAccess.WRITE)]  # push rbp (level 0)
    if name == "iretq":
        # rip, cs, rflags, rsp, ss (SDM vol. 3, 6.14.3)
        return [_stack(0, 40, OperandAccess.READ)]
    if name == "xlatb":
        return [MemoryOperand("rbx", "al", 1, 0, 1, OperandAccess.READ, implicit=True)]
    return []


# --- effective addresses ---------------------------------------------------------


def _subregisters() -> Mapping[str, tuple[str, int]]:
    table: dict[str, tuple[str, int]] = {}
    for legacy in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp"):
        full = "r" + legacy
        table["e" + legacy] = (full, 0xFFFF_FFFF)
        table[legacy] = (full, 0xFFFF)
    for letter in "abcd":
        table[letter + "l"] = ("r" + letter + "x", 0xFF)
    for n in range(8, 16):
        table[f"r{n}d"] = (f"r{n}", 0xFFFF_FFFF)
        table[f"r{n}w"] = (f"r{n}", 0xFFFF)
    return MappingProxyType(table)


_SUBREGISTERS = _subregisters()


def _register(name: str, regs: Mapping[str, int], insn: Instruction) -> int:
    if name in ("rip", "eip"):
        # rip-relative addressing is relative to the next instruction
        # (SDM vol. 2, 2.2.1.6).
        return insn.next_address if name == "rip" else insn.next_address & 0xFFFF_FFFF
    if name in _SUBREGISTERS:
        full, mask = _SUBREGISTERS[name]
        return regs[full] & mask
    return regs[name] & _MASK64


def memory_accesses(insn: Instruction, regs: Mapping[str, int]) -> list[MemoryAccess]:
    """The memory ``insn`` will access if executed with registers ``regs``.

    ``regs`` maps gdb register names to values and needs the general
    registers the operands use (rip comes from the instruction itself), plus
    ``fs_base`` / ``gs_base`` for fs:/gs: operands; a missing one raises
    KeyError. Raises BreakpointError for the instructions the module
    docstring lists as not covered.
    """
    if insn.memory_note:
        raise BreakpointError(
            f"cannot tell what '{insn}' at {insn.address:#x} accesses: {insn.memory_note}"
        )
    if insn.repeat:
        count = regs["rcx"] & (0xFFFF_FFFF if insn.address_size == 4 else _MASK64)
        if count == 0:
            return []  # a rep with rcx = 0 does nothing
    accesses: list[MemoryAccess] = []
    for op in insn.memory_operands:
        ea = op.disp
        if op.base:
            ea += _register(op.base, regs, insn)
        if op.index:
            ea += _register(op.index, regs, insn) * op.scale
        # The stack is addressed with 64-bit rsp whatever the 0x67 prefix says.
        if insn.address_size == 4 and not op.implicit:
            ea &= 0xFFFF_FFFF
        if op.segment:
            ea += regs[f"{op.segment}_base"]
        if insn.bit_offset is not None and not op.implicit:
            ea += _bit_test_displacement(*insn.bit_offset, op.size, regs, insn)
        accesses.append(MemoryAccess(ea & _MASK64, op.size, op.access))
    return accesses


def _bit_test_displacement(register: str, width: int, size: int, regs: Mapping[str, int],
                           insn: Instruction) -> int:
    """Bytes from the operand to the unit a register bit offset selects: the
    offset is signed, and the CPU accesses the operand-sized unit holding
    the bit, ``size * floor(offset / (8 * size))`` bytes away (SDM vol. 2,
    BT: "Bit(BitBase, BitOffset)" with a register offset)."""
    value = _register(register, regs, insn)
    if value >= 1 << (8 * width - 1):
        value -= 1 << (8 * width)
    return size * (value // (8 * size))


def string_accesses(insn: Instruction, before: Mapping[str, int],
                    after: Mapping[str, int]) -> list[MemoryAccess]:
    """What the iterations of a rep-prefixed string instruction touched
    between two register states: as many elements per operand as rcx went
    down, from where rsi/rdi stood, in the direction DF says.

    A single-step of a rep instruction runs one iteration on some CPUs and
    all of them on others (this project's kvm_pvm host), so only the
    registers tell (SDM vol. 2, REP: rcx counts iterations done).
    """
    mask = 0xFFFF_FFFF if insn.address_size == 4 else _MASK64
    iterations = (before["rcx"] - after["rcx"]) & mask
    if not iterations:
        return []
    down = bool(before["rflags"] & (1 << 10))  # DF
    accesses: list[MemoryAccess] = []
    for op, access in zip(insn.memory_operands, memory_accesses(insn, before)):
        length = op.size * iterations
        first = access.address - (length - op.size) if down else access.address
        accesses.append(MemoryAccess(first & _MASK64, length, access.access))
    return accesses
