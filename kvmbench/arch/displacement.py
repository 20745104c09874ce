"""x86-64 facts for replacing instructions with a jump to a trampoline.

An in-guest probe overwrites the first bytes at a code address with a
``jmp rel32`` (5 bytes, SDM vol. 2, JMP: E9 cd) to a trampoline that runs
copies of the instructions it covered ("displaced") and jumps back. That
is only correct when:

- the covered bytes are whole instructions, decoded from the enclosing
  function's start (a linear sweep of its extent, capstone);
- nothing branches into them past their first byte: no direct branch in
  the image lands there, no code takes such an address (a rip-relative
  ``lea``, an immediate), and the function has no indirect jump (its
  targets are unknown), since a branch into the middle would execute the
  jump's displacement bytes as code;
- every covered instruction means the same at the trampoline's address:
  rip-relative operands are re-aimed at the same target (SDM vol. 2,
  2.2.1.6: relative to the next instruction), and a relative branch is
  re-encoded with a 32-bit displacement; a control transfer (jmp, jcc,
  call, ret, an indirect jmp) may only be the last covered instruction,
  and a call is relocated as ``push`` of its return address (the original
  next address, so the callee returns to the original code) and ``jmp``;
- no covered instruction is one whose place matters to the CPU or the
  guest: system instructions (hlt, cli, sti, popf, mov to ss, in/out,
  int, iret, syscall...), undefined opcodes, loops that only have a rel8
  form, transactional regions.

Pure functions over bytes; :func:`analyse_function` is worth caching per
function, since a session asks about the same functions repeatedly.
"""

from __future__ import annotations

import bisect
import enum
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from capstone import (
    CS_ARCH_X86,
    CS_GRP_BRANCH_RELATIVE,
    CS_GRP_CALL,
    CS_GRP_INT,
    CS_GRP_IRET,
    CS_GRP_JUMP,
    CS_GRP_PRIVILEGE,
    CS_GRP_RET,
    CS_MODE_64,
    Cs,
    CsInsn,
)
from capstone import x86 as cs_x86

__all__ = [
    "JMP_REL32_SIZE",
    "Displaced",
    "Displacement",
    "FunctionFacts",
    "Relocated",
    "Transfer",
    "Undisplaceable",
    "analyse_function",
    "jcc_rel32",
    "jmp_rel32",
    "plan_displacement",
    "push_imm32",
    "relocate",
]

#: ``jmp rel32``: E9 and a 32-bit displacement from the next instruction.
JMP_REL32_SIZE = 5

_MASK64 = (1 << 64) - 1
_INT32 = range(-(1 << 31), 1 << 31)

_CS = Cs(CS_ARCH_X86, CS_MODE_64)
_CS.detail = True
_CS_LOCK = threading.Lock()

#: Instructions whose execution depends on where they are, or that the
#: guest or the CPU treats specially, with why (SDM vol. 2 for each).
_REFUSED = {
    "hlt": "a halt must stay where the guest waits",
    "cli": "it changes the interrupt flag",
    "sti": "its interrupt shadow covers the next instruction in place",
    "popf": "it changes the interrupt and trap flags",
    "popfq": "it changes the interrupt and trap flags",
    "ud0": "it is an undefined opcode",
    "ud1": "it is an undefined opcode",
    "ud2": "it is an undefined opcode",
    "xbegin": "a transactional region's abort address is relative",
    "xabort": "it belongs to a transactional region",
    "xend": "it belongs to a transactional region",
    "lss": "it loads ss (an interrupt shadow)",
    "in": "port I/O exits to the VMM at its own address",
    "out": "port I/O exits to the VMM at its own address",
    "loop": "it has only a rel8 form",
    "loope": "it has only a rel8 form",
    "loopne": "it has only a rel8 form",
    "jrcxz": "it has only a rel8 form",
    "jecxz": "it has only a rel8 form",
    "ljmp": "far transfers are not relocated",
    "lcall": "far transfers are not relocated",
    "retf": "far transfers are not relocated",
    "retfq": "far transfers are not relocated",
    "vmcall": "hypercalls exit at their own address",
    "vmmcall": "hypercalls exit at their own address",
}
_REFUSED_PREFIXES = ("ins", "outs")
_PREFIX_ADDRESS_SIZE = 0x67


class Undisplaceable(Exception):
    """The instructions at an address cannot be covered by a jump; the
    message says why in one line."""


class Transfer(enum.Enum):
    """How a displaced instruction leaves: in order, or by a control transfer."""

    NONE = "none"
    JUMP = "jmp rel"
    CONDITIONAL = "jcc rel"
    CALL = "call rel"
    RETURN = "ret"
    INDIRECT_JUMP = "indirect jmp"


@dataclass(frozen=True)
class Displaced:
    """One instruction as the relocation needs it."""

    address: int
    size: int
    code: bytes
    text: str
    transfer: Transfer
    #: Target of a relative jmp, jcc or call.
    target: int | None = None
    #: Condition code of a jcc (the low nibble of its opcode).
    condition: int | None = None
    #: Offset of the rip-relative disp32 in ``code``, and where it points.
    rip_disp_offset: int | None = None
    rip_target: int | None = None
    #: Why it may not be displaced at all, if it may not.
    refusal: str = ""

    @property
    def next_address(self) -> int:
        return (self.address + self.size) & _MASK64

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class FunctionFacts:
    """A function's instructions from a linear sweep of its extent, and
    the code addresses it may transfer control to."""

    start: int
    end: int
    instructions: tuple[Displaced, ...]
    #: Direct branch targets, and code addresses it takes (rip-relative
    #: ``lea``, immediates): anywhere it might go.
    targets: frozenset[int]
    indirect_jumps: tuple[int, ...]
    #: The sweep decoded every byte up to ``end`` on instruction boundaries.
    complete: bool

    def index_of(self, address: int) -> int | None:
        starts = [i.address for i in self.instructions]
        k = bisect.bisect_left(starts, address)
        return k if k < len(starts) and starts[k] == address else None


@dataclass(frozen=True)
class Displacement:
    """The instructions a jump at ``address`` covers, at least 5 bytes."""

    address: int
    instructions: tuple[Displaced, ...]

    @property
    def length(self) -> int:
        return sum(i.size for i in self.instructions)

    @property
    def end(self) -> int:
        return self.address + self.length

    @property
    def original(self) -> bytes:
        return b"".join(i.code for i in self.instructions)


@dataclass(frozen=True)
class Relocated:
    """The displaced instructions' copies placed at an address, ending in
    the transfer back (or the last instruction's own transfer)."""

    address: int
    code: bytes
    #: (original address, copy's start, copy's end) of each displaced
    #: instruction; the jump back, if any, follows the last.
    copies: tuple[tuple[int, int, int], ...]

    @property
    def end(self) -> int:
        return self.address + len(self.code)


# --- decoding ---------------------------------------------------------------------


def _classify(insn: CsInsn) -> Displaced:
    groups = set(insn.groups)
    name = insn.insn_name()
    operands = list(insn.operands)
    text = f"{insn.mnemonic} {insn.op_str}".rstrip()
    transfer = Transfer.NONE
    target = condition = None
    refusal = ""
    if CS_GRP_INT in groups or CS_GRP_IRET in groups:
        refusal = "interrupts and their returns run where they are"
    elif name in _REFUSED:
        refusal = _REFUSED[name]
    elif name.startswith(_REFUSED_PREFIXES) and not name.startswith("insert"):
        refusal = "port I/O exits to the VMM at its own address"
    elif CS_GRP_PRIVILEGE in groups:
        refusal = "system instructions stay in place"
    elif any(op.type == cs_x86.X86_OP_REG and op.reg == cs_x86.X86_REG_SS
             and op.access & 2 for op in operands):  # CS_AC_WRITE: mov ss / pop ss
        refusal = "it loads ss (an interrupt shadow)"
    elif CS_GRP_CALL in groups:
        if CS_GRP_BRANCH_RELATIVE in groups:
            transfer, target = Transfer.CALL, operands[0].imm & _MASK64
        else:
            refusal = "an indirect call would push the trampoline's address"
    elif CS_GRP_RET in groups:
        if name == "ret":
            transfer = Transfer.RETURN
        else:
            refusal = "far transfers are not relocated"
    elif CS_GRP_JUMP in groups:
        if CS_GRP_BRANCH_RELATIVE in groups:
            target = operands[0].imm & _MASK64
            if name == "jmp":
                transfer = Transfer.JUMP
            else:
                transfer = Transfer.CONDITIONAL
                opcode = insn.opcode
                # jcc rel8 is 70+cc, jcc rel32 is 0F 80+cc (SDM vol. 2, Jcc).
                condition = (opcode[1] if opcode[0] == 0x0F else opcode[0]) & 0xF
        else:
            transfer = Transfer.INDIRECT_JUMP
    rip_offset = rip_target = None
    for op in operands:
        if op.type == cs_x86.X86_OP_MEM and op.mem.base == cs_x86.X86_REG_RIP:
            if insn.prefix[3] == _PREFIX_ADDRESS_SIZE:
                refusal = refusal or "eip-relative addressing is not relocated"
            rip_offset = insn.disp_offset
            rip_target = (insn.address + insn.size + op.mem.disp) & _MASK64
    return Displaced(insn.address, insn.size, bytes(insn.bytes), text, transfer, target,
                     condition, rip_offset, rip_target, refusal)


def _taken_addresses(insn: CsInsn, item: Displaced) -> list[int]:
    """Code addresses an instruction might hand to an indirect transfer:
    rip-relative ``lea`` results and immediates."""
    out = []
    if item.rip_target is not None and insn.insn_name() == "lea":
        out.append(item.rip_target)
    for op in insn.operands:
        if op.type == cs_x86.X86_OP_IMM and item.target is None:
            out.append(op.imm & _MASK64)
    return out


def analyse_function(code: bytes, start: int) -> FunctionFacts:
    """Sweep ``code`` (a function's whole extent, at ``start``)."""
    instructions: list[Displaced] = []
    targets: set[int] = set()
    indirect: list[int] = []
    end = start + len(code)
    with _CS_LOCK:
        for insn in _CS.disasm(bytes(code), start):
            item = _classify(insn)
            instructions.append(item)
            if item.target is not None:
                targets.add(item.target)
            targets.update(_taken_addresses(insn, item))
            if item.transfer is Transfer.INDIRECT_JUMP:
                indirect.append(item.address)
    reached = instructions[-1].next_address if instructions else start
    return FunctionFacts(start, end, tuple(instructions), frozenset(targets), tuple(indirect),
                         complete=reached == end)


# --- choosing what to displace ---------------------------------------------------


def plan_displacement(function: FunctionFacts, address: int,
                      elsewhere: Iterable[int] = ()) -> Displacement:
    """The instructions a jump at ``address`` must cover, in ``function``;
    ``elsewhere`` holds the branch targets of the rest of the image.
    Raises :class:`Undisplaceable` with the reason when it is unsafe."""
    where = f"the function at {function.start:#x}"
    if not function.complete:
        raise Undisplaceable(f"{where} does not decode to its end: its instruction "
                             "boundaries are not known")
    first = function.index_of(address)
    if first is None:
        raise Undisplaceable(f"{address:#x} is not an instruction boundary of {where}")
    if function.indirect_jumps:
        raise Undisplaceable(f"{where} has an indirect jump at {function.indirect_jumps[0]:#x}: "
                             "where it lands is not known")
    group: list[Displaced] = []
    length = 0
    for insn in function.instructions[first:]:
        if insn.refusal:
            raise Undisplaceable(f"'{insn}' at {insn.address:#x} cannot move to a trampoline: "
                                 f"{insn.refusal}")
        group.append(insn)
        length += insn.size
        if length >= JMP_REL32_SIZE:
            break
        if insn.transfer is not Transfer.NONE:
            raise Undisplaceable(f"'{insn}' at {insn.address:#x} leaves after {length} bytes, "
                                 f"before a {JMP_REL32_SIZE}-byte jump fits")
    else:
        raise Undisplaceable(f"{where} ends {length} bytes after {address:#x}, before a "
                             f"{JMP_REL32_SIZE}-byte jump fits")
    end = address + length
    for target in sorted(function.targets.union(elsewhere)):
        if address < target < end:
            raise Undisplaceable(f"code branches to {target:#x}, inside the {length} bytes a "
                                 f"jump at {address:#x} would cover")
    return Displacement(address, tuple(group))


# --- encoding ----------------------------------------------------------------------


def _rel32(source_end: int, target: int) -> bytes:
    delta = target - source_end
    if delta not in _INT32:
        raise Undisplaceable(f"{target:#x} is out of a rel32's reach from {source_end:#x}")
    return delta.to_bytes(4, "little", signed=True)


def jmp_rel32(source: int, target: int) -> bytes:
    """``jmp target`` encoded at ``source`` (E9 cd)."""
    return b"\xe9" + _rel32(source + JMP_REL32_SIZE, target)


def jcc_rel32(condition: int, source: int, target: int) -> bytes:
    """``jcc target`` with condition code ``condition``, at ``source`` (0F 80+cc cd)."""
    return bytes((0x0F, 0x80 | condition)) + _rel32(source + 6, target)


def push_imm32(value: int) -> bytes:
    """``push imm32`` (68 id): pushes the immediate sign-extended to 64 bits,
    so only values below 2**31 come out as themselves."""
    if not 0 <= value < 1 << 31:
        raise Undisplaceable(f"{value:#x} does not fit a push imm32")
    return b"\x68" + value.to_bytes(4, "little")


def _moved(insn: Displaced, at: int) -> bytes:
    """The instruction's bytes at ``at``, a rip-relative operand re-aimed."""
    if insn.rip_disp_offset is None or insn.rip_target is None:
        return insn.code
    code = bytearray(insn.code)
    offset = insn.rip_disp_offset
    code[offset:offset + 4] = _rel32(at + insn.size, insn.rip_target)
    return bytes(code)


def relocate(displacement: Displacement, at: int) -> Relocated:
    """The copies of ``displacement`` placed at ``at``, then the jump back
    to the first original byte past them (unless the last copy transfers
    control itself)."""
    out = bytearray()
    copies: list[tuple[int, int, int]] = []
    last = displacement.instructions[-1]
    for insn in displacement.instructions:
        here = at + len(out)
        if insn.transfer is Transfer.JUMP:
            out += jmp_rel32(here, insn.target)  # type: ignore[arg-type]
        elif insn.transfer is Transfer.CONDITIONAL:
            out += jcc_rel32(insn.condition, here, insn.target)  # type: ignore[arg-type]
        elif insn.transfer is Transfer.CALL:
            # The callee returns to the original next instruction (outside
            # the covered bytes: a call is always the last one covered).
            out += push_imm32(insn.next_address)
            out += jmp_rel32(here + 5, insn.target)  # type: ignore[arg-type]
        else:
            out += _moved(insn, here)
        copies.append((insn.address, here, at + len(out)))
    if last.transfer in (Transfer.NONE, Transfer.CONDITIONAL):
        out += jmp_rel32(at + len(out), displacement.end)
    return Relocated(at, bytes(out), tuple(copies))
