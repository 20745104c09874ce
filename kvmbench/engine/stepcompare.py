"""Single-step compare: the watch mechanism of last resort.

Before each step the instruction about to run is decoded and its memory
operands computed (:func:`kvmbench.arch.instructions.memory_accesses`):
what it reads and writes, implicit operands included. After the step the
watched values are read again. So a read watch sees reads, and a write watch
sees stores of the value already there; only when the operands cannot be
computed does a changed value alone count.

A rep-prefixed string instruction is one execution however many steps its
iterations take: its accesses are gathered until rip leaves it. A step that
delivered an interrupt ran the handler's first instruction instead of the
one decoded: its frame push and that instruction are what it accessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmbench.arch import instructions
from kvmbench.arch.instructions import Instruction, MemoryAccess, OperandAccess
from kvmbench.backends.target import Stepped
from kvmbench.engine.model import Access, Stop, Watchpoint
from kvmbench.engine.views import RegisterValues
from kvmbench.errors import KvmbenchError

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

@dataclass(frozen=True)
class Expectation:
    """What the instruction at ``pc`` will access (None: cannot tell); for
    a rep string instruction, the registers its iterations count from."""

    pc: int
    insn: Instruction | None
    accesses: list[MemoryAccess] | None
    string_registers: dict[str, int] | None = None


@dataclass
class _Gathered:
    """One execution's accesses to a watch so far (old value at its start)."""

    old: bytes
    read: bool = False
    wrote: bool = False
    known: bool = True
    where: int | None = None


class StepCompare:
    """Decodes before and compares after each step, for one session."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        self._gathering: dict[int, _Gathered] = {}
        self._gathering_pc: int | None = None

    @property
    def watches(self) -> list[Watchpoint]:
        return self._session.serving.step_compare_watches

    def decode(self, pc: int) -> Instruction:
        """The instruction at ``pc`` as the guest wrote it (traps hidden)."""
        return instructions.decode(self._session._mem.read(pc, instructions.MAX_INSTRUCTION_LENGTH), pc)

    def expect(self) -> Expectation:
        target = self._session.target
        pc = target.pc
        try:
            insn = self.decode(pc)
        except KvmbenchError:
            return Expectation(pc, None, None)
        regs = RegisterValues(target)
        try:
            accesses = instructions.memory_accesses(insn, regs)
        except (KvmbenchError, KeyError):
            return Expectation(pc, insn, None)  # fall back to comparing values
        if insn.repeat:
            for name in ("rcx", "rsi", "rdi", "rflags"):
                regs[name]
            return Expectation(pc, insn, accesses, dict(regs))
        return Expectation(pc, insn, accesses)

    def _interrupt_accesses(self, event: Stepped) -> list[MemoryAccess] | None:
        assert event.interrupt_frame is not None
        accesses = [MemoryAccess(event.interrupt_frame, 40, OperandAccess.WRITE)]
        if event.interrupt_handler is None:
            return None
        try:
            insn = self.decode(event.interrupt_handler)
            regs = RegisterValues(self._session.target)
            regs["rsp"] = event.interrupt_frame
            accesses += instructions.memory_accesses(insn, regs)
        except (KvmbenchError, KeyError):
            return None
        return accesses

    def check(self, before: Expectation, event: Stepped) -> Stop | None:
        """Watch hits of the step from ``before`` that ended in ``event``."""
        session = self._session
        accesses = before.accesses
        insn = before.insn
        if event.interrupt_handler is not None or event.interrupt_frame is not None:
            accesses = self._interrupt_accesses(event)
            insn = None
        if before.string_registers is not None and insn is not None and accesses is not None:
            # However many iterations the step ran, the registers count them.
            accesses = instructions.string_accesses(
                insn, before.string_registers, RegisterValues(session.target))
        in_progress = (insn is not None and insn.repeat and session.target.pc == before.pc)
        if self._gathering_pc is not None and self._gathering_pc != before.pc:
            self._gathering.clear()  # the instruction it waited for never finished here
        for wp in self.watches:
            gathered = self._gathering.get(wp.number) or _Gathered(old=wp.value)
            self._gathering[wp.number] = gathered
            if accesses is None:
                gathered.known = False
            for a in accesses or ():
                if a.address < wp.address + wp.length and wp.address < a.address + a.size:
                    gathered.read |= a.access.reads
                    gathered.wrote |= a.access.writes
                    gathered.where = a.address
        if in_progress:
            self._gathering_pc = before.pc
            return None
        stop = None
        gathered_all, self._gathering, self._gathering_pc = self._gathering, {}, None
        for wp in self.watches:
            g = gathered_all.get(wp.number)
            if g is None or g.known and not (g.read or g.wrote):
                continue  # the instruction's accesses are known and miss the watch
            new = session.read_watched(wp)
            if not g.known:
                hit: bool | None = None
            elif wp.access is Access.READ:
                hit = g.read
            elif wp.access is Access.WRITE:
                hit = g.wrote
            else:
                hit = g.read or g.wrote
            stop = session.counting.watch_hit(
                wp, writer=before.pc, old=g.old, new=new, hit=hit, access_address=g.where) or stop
        return stop
