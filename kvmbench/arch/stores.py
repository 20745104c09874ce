"""x86-64 facts about stores a debugger sees after the fact.

A trapped store (a write to a read-only memslot, a data breakpoint) is
reported once the CPU or KVM's emulator has moved on: rip stands past the
storing instruction, at a call's target, or, for a rep-prefixed string
instruction with iterations left, still at it (measured in DESIGN.md and
by this project's tests). :func:`find_writer` finds the instruction that
made the store from where rip stands and what was stored.

:func:`push_effect` lets the engine execute a displaced ``push r64`` itself
when it leaves a breakpoint; :func:`replay_registers` tells how to run a
read-modify-write again when it read a byte the debugger had replaced.

Pure functions over bytes and register values; capstone decodes
(:mod:`kvmbench.arch.instructions`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kvmbench.arch.instructions import (
    MAX_INSTRUCTION_LENGTH,
    Instruction,
    OperandAccess,
    decode,
    memory_accesses,
)
from kvmbench.errors import BreakpointError, GuestMemoryError, UsageError

__all__ = [
    "PushEffect",
    "Unreplayable",
    "Writer",
    "WriterCandidates",
    "find_writer",
    "writer_candidates",
    "push_effect",
    "replay_registers",
    "string_step",
]

_MASK64 = (1 << 64) - 1
_RFLAGS_CF = 1 << 0
_RFLAGS_ZF = 1 << 6
_RFLAGS_DF = 1 << 10
_GPR_BY_CODE = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi")
_REX_B = 0x41

#: Reads ``n`` bytes of guest code at an address (may raise GuestMemoryError).
CodeReader = Callable[[int, int], bytes]
#: True if an access of ``size`` bytes at a guest-virtual address accounts
#: for the store being attributed (for a trapped store: exactly the bytes it
#: stored to trapped pages; for a data breakpoint: the watched bytes).
Explains = Callable[[int, int], bool]


@dataclass(slots=True)
class Writer:
    """The instruction that made a store, and whether it is still running
    (a rep-prefixed string instruction with iterations left: rip stays at it)."""

    insn: Instruction
    in_progress: bool = False


#: Decodes the instruction at the start of some bytes located at an address
#: (:func:`kvmbench.arch.instructions.decode`, or a memo of it).
Decoder = Callable[[bytes, int], Instruction]


def _decode_in(window: bytes, window_start: int, address: int,
               decoder: Decoder) -> Instruction | None:
    offset = address - window_start
    if offset < 0 or offset >= len(window):
        return None
    try:
        return decoder(window[offset:offset + MAX_INSTRUCTION_LENGTH], address)
    except UsageError:
        return None


def _decode_at(read_code: CodeReader, address: int, decoder: Decoder = decode) -> Instruction | None:
    try:
        return decoder(read_code(address, MAX_INSTRUCTION_LENGTH), address)
    except (GuestMemoryError, UsageError):
        return None


def _base_name(insn: Instruction) -> str:
    """The mnemonic without prefixes ("rep stosb" -> "stosb", "lock add" -> "add")."""
    return insn.mnemonic.rsplit(" ", 1)[-1]


def string_step(insn: Instruction, regs: Mapping[str, int]) -> int:
    """Bytes rsi/rdi move per iteration of a string instruction (signed by DF)."""
    size = max((op.size for op in insn.memory_operands), default=1)
    try:
        flags = regs["rflags"]
    except KeyError:
        flags = 0
    return -size if flags & _RFLAGS_DF else size


class _Overlay(Mapping[str, int]):
    """``base`` with some registers replaced."""

    def __init__(self, base: Mapping[str, int], changes: dict[str, int]) -> None:
        self._base, self._changes = base, changes

    def __getitem__(self, name: str) -> int:
        if name in self._changes:
            return self._changes[name]
        return self._base[name]

    def __setitem__(self, name: str, value: int) -> None:
        self._changes[name] = value

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter({*self._base, *self._changes})

    def __len__(self) -> int:
        return len({*self._base, *self._changes})


def _registers_before(insn: Instruction, regs: Mapping[str, int]) -> Mapping[str, int]:
    """Register values before ``insn`` ran, where its own side effects on the
    address registers can be undone (the stack pointer of push/call/pop,
    rsi/rdi of a string instruction)."""
    before = _Overlay(regs, {})
    name = _base_name(insn)
    if name == "enter":
        # enter N, 0: push rbp; rbp = rsp; rsp -= N (SDM vol. 2, ENTER).
        before["rsp"] = (regs["rbp"] + 8) & _MASK64
    elif name in ("push", "pushfq", "pushf", "call"):
        size = 2 if any(op.implicit and op.size == 2 for op in insn.memory_operands) else 8
        before["rsp"] = (regs["rsp"] + size) & _MASK64
    elif name in ("pop", "popfq", "popf"):
        before["rsp"] = (regs["rsp"] - 8) & _MASK64
    elif name.startswith(("stos", "movs", "ins", "lods", "cmps", "scas", "outs")):
        step = string_step(insn, regs)
        for register in ("rdi", "rsi"):
            try:
                before[register] = (regs[register] - step) & _MASK64
            except KeyError:
                pass
        if insn.repeat:  # one iteration undone gives rcx its count back
            before["rcx"] = (regs["rcx"] + 1) & _MASK64
    return before


def _stores_to(insn: Instruction, regs: Mapping[str, int], explains: Explains,
               access: OperandAccess = OperandAccess.WRITE) -> bool:
    """True if ``insn`` made the access ``explains`` accounts for: a store
    (``access`` WRITE), a load (READ) or either (READ_WRITE)."""
    def wanted(kind: OperandAccess) -> bool:
        if access is OperandAccess.WRITE:
            return kind.writes
        if access is OperandAccess.READ:
            return kind.reads
        return True

    for candidate in (_registers_before(insn, regs), regs):
        try:
            accesses = memory_accesses(insn, candidate)
        except (BreakpointError, KeyError):
            # Not modelled exactly (xsave, ...): any memory operand may be it.
            return any(wanted(op.access) for op in insn.memory_operands) and not insn.is_branch
        if any(wanted(a.access) and explains(a.address, a.size) for a in accesses):
            return True
    return False


def _linear_predecessor(read_code: CodeReader, start: int, end: int,
                        decoder: Decoder) -> int | None:
    """Decode from ``start`` (a known instruction boundary, e.g. a symbol)
    towards ``end``; the address of the instruction that ends exactly there."""
    address = start
    while address < end and end - address <= 1 << 16:
        insn = _decode_at(read_code, address, decoder)
        if insn is None:
            return None
        if insn.next_address == end:
            return address
        address = insn.next_address
    return None


def _read_window(read_code: CodeReader, start: int, length: int) -> tuple[bytes, int]:
    """Up to ``length`` bytes of code from ``start``, cut to the page of the
    window's middle where a neighbouring page does not read."""
    try:
        return read_code(start, length), start
    except GuestMemoryError:
        pass
    middle = start + length // 2
    page = middle & ~0xFFF
    begin, end = max(start, page), min(start + length, page + 0x1000)
    try:
        return read_code(begin, end - begin), begin
    except GuestMemoryError:
        return b"", start


@dataclass(frozen=True)
class WriterCandidates:
    """What the code around ``pc`` allows as the writer of a store that left
    rip at ``pc``: the instruction at ``pc`` (a rep string store still
    running) and the instructions that end exactly at ``pc``, best first.
    Depends only on the code bytes, so it may be cached on them."""

    here: Instruction | None
    before: tuple[Instruction, ...]


def writer_candidates(read_code: CodeReader, pc: int, *, boundary: int | None = None,
                      decoder: Decoder = decode) -> WriterCandidates:
    """The static half of :func:`find_writer`."""
    window, window_start = _read_window(read_code, pc - MAX_INSTRUCTION_LENGTH,
                                        2 * MAX_INSTRUCTION_LENGTH)
    here = _decode_in(window, window_start, pc, decoder)
    if here is not None and not here.repeat:
        here = None
    before: list[Instruction] = []
    for length in range(1, MAX_INSTRUCTION_LENGTH + 1):
        insn = _decode_in(window, window_start, pc - length, decoder)
        if (insn is not None and insn.size == length and not insn.is_jump
                and insn.memory_operands):
            before.append(insn)
    before.sort(key=lambda c: c.size)
    if len(before) > 1 and boundary is not None and boundary <= pc:
        # Several byte sequences end at pc: the one a linear decode from a
        # known instruction start reaches is the one that ran (compiled code).
        start = _linear_predecessor(read_code, boundary, pc, decoder)
        before.sort(key=lambda c: c.address != start)
    return WriterCandidates(here, tuple(before))


def find_writer(
    read_code: CodeReader,
    pc: int,
    regs: Mapping[str, int],
    explains: Explains,
    *,
    stack_word: int | None = None,
    boundary: int | None = None,
    decoder: Decoder = decode,
    candidates: WriterCandidates | None = None,
    access: OperandAccess = OperandAccess.WRITE,
) -> Writer | None:
    """The instruction that made a store the guest has just completed.

    ``pc`` is where the guest stands now and ``regs`` its registers (after
    the store); ``explains`` says whether an access of some bytes at a
    virtual address accounts for the store; ``stack_word`` is the 8-byte value stored at rsp, if the
    store wrote there (a call's return address); ``boundary`` is a known
    instruction start at or before ``pc`` (its function's address), used to
    choose when several byte sequences could have ended at ``pc``;
    ``candidates`` the result of :func:`writer_candidates` for this code,
    if the caller cached it. ``access``: the instruction that loaded
    (READ) or touched (READ_WRITE) the bytes instead of the one that
    stored them, for watches that trap after reads. Returns None when no
    instruction explains the access.
    """
    if candidates is None:
        candidates = writer_candidates(read_code, pc, boundary=boundary, decoder=decoder)
    here = candidates.here
    if here is not None and _stores_to(here, regs, explains, access):
        # rip stays on a rep string instruction until its last iteration
        # has been stored and counted (measured: even with rcx now 0).
        return Writer(here, in_progress=True)
    for insn in candidates.before:
        if _stores_to(insn, regs, explains, access):
            return Writer(insn)
    if stack_word is not None:
        return call_writer(read_code, stack_word, decoder)
    return None


def call_writer(read_code: CodeReader, return_address: int,
                decoder: Decoder = decode) -> Writer | None:
    """The call that pushed ``return_address`` (rip is at its target and
    the return address follows the call instruction), if one did."""
    for length in (5, 2, 3, 6, 7, 4):
        insn = _decode_at(read_code, return_address - length, decoder)
        if insn is not None and insn.is_call and insn.next_address == return_address:
            return Writer(insn)
    return None


# --- push emulation ------------------------------------------------------------------


@dataclass(slots=True)
class PushEffect:
    """What a ``push r64`` does: store ``value`` at ``address`` (the new rsp)."""

    length: int
    register: str
    value: int
    address: int


def push_effect(code: bytes, regs: Mapping[str, int]) -> PushEffect | None:
    """The effect of the instruction at the start of ``code`` if it is a
    plain ``push r64`` (50+r, or 41 50+r for r8-r15; SDM vol. 2, PUSH),
    else None. Function entries at -O0 and in most kernels start with one."""
    if len(code) >= 2 and code[0] == _REX_B and 0x50 <= code[1] <= 0x57:
        register, length = f"r{8 + code[1] - 0x50}", 2
    elif code and 0x50 <= code[0] <= 0x57:
        register, length = _GPR_BY_CODE[code[0] - 0x50], 1
    else:
        return None
    # push rsp stores the value rsp had before the push.
    return PushEffect(length, register, regs[register], (regs["rsp"] - 8) & _MASK64)


# --- read-modify-write replay -------------------------------------------------------


class Unreplayable(BreakpointError):
    """A read-modify-write cannot be run again exactly: its inputs are gone."""


# Read-modify-writes whose only other output is the flags, which running
# the instruction again recomputes (the flags they leave unchanged, such as
# inc's CF, are unchanged by the first run as well).
_FLAGS_ONLY = frozenset({
    "add", "sub", "and", "or", "xor", "inc", "dec", "neg", "not",
    "shl", "sal", "shr", "sar", "rol", "ror", "bts", "btr", "btc",
})  # fmt: skip


def _operand_register(insn: Instruction) -> str | None:
    """The register operand of a two-operand instruction ("add [rdi], al" -> "al")."""
    parts = [p.strip() for p in insn.op_str.split(",")]
    if len(parts) == 2 and "[" not in parts[1] and not parts[1].lstrip("-").startswith(("0x", *"0123456789")):
        return parts[1]
    return None


def _immediate(insn: Instruction) -> int | None:
    parts = [p.strip() for p in insn.op_str.split(",")]
    try:
        return int(parts[-1], 0) if len(parts) == 2 else None
    except ValueError:
        return None


def _full_register(name: str) -> tuple[str, int, int]:
    """(64-bit register, shift, mask) of a (sub)register name."""
    legacy = {"al": ("rax", 0, 0xFF), "ah": ("rax", 8, 0xFF), "bl": ("rbx", 0, 0xFF),
              "bh": ("rbx", 8, 0xFF), "cl": ("rcx", 0, 0xFF), "ch": ("rcx", 8, 0xFF),
              "dl": ("rdx", 0, 0xFF), "dh": ("rdx", 8, 0xFF), "sil": ("rsi", 0, 0xFF),
              "dil": ("rdi", 0, 0xFF), "bpl": ("rbp", 0, 0xFF), "spl": ("rsp", 0, 0xFF)}
    if name in legacy:
        return legacy[name]
    for full in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp"):
        if name == "r" + full:
            return name, 0, _MASK64
        if name == "e" + full:
            return "r" + full, 0, 0xFFFF_FFFF
        if name == full:
            return "r" + full, 0, 0xFFFF
    if name.startswith("r") and name[1:].rstrip("dwb").isdigit():
        base = name.rstrip("dwb") if not name[1:].isdigit() else name
        mask = {"d": 0xFFFF_FFFF, "w": 0xFFFF, "b": 0xFF}.get(name[-1], _MASK64)
        return base, 0, mask
    raise Unreplayable(f"unknown register {name!r}")


def _register_value(name: str, regs: Mapping[str, int]) -> int:
    full, shift, mask = _full_register(name)
    return (regs[full] >> shift) & mask


def _with_register(name: str, value: int, regs: Mapping[str, int]) -> dict[str, int]:
    full, shift, mask = _full_register(name)
    if mask == 0xFFFF_FFFF:  # a 32-bit write zero-extends (SDM vol. 1, 3.4.1.1)
        return {full: value & mask}
    return {full: (regs[full] & ~(mask << shift)) | ((value & mask) << shift)}


def replay_registers(insn: Instruction, regs: Mapping[str, int], read: int, wrote: int,
                     size: int) -> dict[str, int]:
    """Registers to restore so that ``insn`` can run again as if it had never
    run: it read ``read`` (a trap byte among its operand) and stored
    ``wrote``, both ``size`` bytes, leaving ``regs``. rip is the caller's to
    reset. Raises :class:`Unreplayable` when an input cannot be recovered.
    """
    name = _base_name(insn)
    mask = (1 << (8 * size)) - 1
    if name in _FLAGS_ONLY:
        return {}
    if name in ("adc", "sbb"):
        # wrote = read +/- source +/- CF: the carry that went in is recoverable.
        register = _operand_register(insn)
        source = _register_value(register, regs) if register else _immediate(insn)
        if source is None:
            raise Unreplayable(f"cannot recover the source of '{insn}'")
        carry = (wrote - read - source) & mask if name == "adc" else (read - source - wrote) & mask
        if carry not in (0, 1):
            raise Unreplayable(f"'{insn}' did not compute what it should have")
        return {"rflags": (regs["rflags"] & ~_RFLAGS_CF) | carry}
    if name in ("xchg", "xadd"):
        register = _operand_register(insn)
        if register is None:
            raise Unreplayable(f"cannot find the register of '{insn}'")
        before = wrote if name == "xchg" else (wrote - read) & mask
        return _with_register(register, before, regs)
    if name == "cmpxchg":
        if regs["rflags"] & _RFLAGS_ZF:
            return {}  # it compared equal: rax was not touched
        raise Unreplayable(
            f"'{insn}' compared a replaced code byte and overwrote rax: its input is lost")
    raise Unreplayable(f"'{insn}' read a replaced code byte and cannot be run again exactly")


def reads_memory(insn: Instruction) -> bool:
    """True if some memory operand of ``insn`` is read (xchg's included)."""
    name = _base_name(insn)
    return name in ("xchg", "cmpxchg", "xadd") or any(
        op.access is not OperandAccess.WRITE and not op.implicit for op in insn.memory_operands)
