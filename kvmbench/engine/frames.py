"""Frames: the guest's call chain as gdb shows it, and the callers run control trusts.

The unwinder is the program's (:mod:`kvmbench.symbols.unwind`): the CFI row
at the pc (.debug_frame, .eh_frame) wherever there is one, else frame
pointers and a look at the function's first bytes; each frame says which
method found it. Two users with different needs:

- what the user sees (``bt``, ``frame N``, ``info frame``, locals,
  arguments): every frame gdb would show, each labelled with its method;
- where run control plants a trap (``finish``, ``next`` over a call,
  ``until``, ``advance``): only a caller that is *verified*. A caller found
  from a CFI row is verified. Without CFI a caller is verified only where
  the frame data is certain (as gdb's prologue analyser reads it): at a
  function's first instruction or at a ``ret`` (the return address is at
  rsp), right after ``push rbp``, or in a function whose prologue sets up a
  frame pointer (``push rbp; mov rbp, rsp``); and its return address must
  follow a call instruction in known code. In a frameless function without
  CFI, rbp is data: the answer is a :class:`FrameUnknown` refusal, never a
  guess.

:class:`LiveFrameContext` is the :class:`~kvmbench.symbols.frame.FrameContext`
of the stopped guest: registers by gdb name (segment bases, x87 and SSE
registers where the target has them) and memory as the guest wrote it
(software traps hidden).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kvmbench.arch import instructions
from kvmbench.errors import (
    FrameUnknown,
    GuestMemoryError,
    KvmbenchError,
    RegisterUnavailable,
    UsageError,
)
from kvmbench.symbols.frame import ImageMemory, StaticFrame
from kvmbench.symbols.frames import FrameList, SourceFrame, source_frames
from kvmbench.symbols.model import Symbol, SymbolKind
from kvmbench.symbols.unwind import DEFAULT_LIMIT, Backtrace, Frame, UnwindMethod, Unwinder

if TYPE_CHECKING:
    from kvmbench.engine.session import Session
    from kvmbench.symbols.program import Program
    from kvmbench.symbols.table import SymbolTable

_ENDBR64 = bytes.fromhex("f30f1efa")
_PUSH_RBP = b"\x55"
_MOV_RBP_RSP = (bytes.fromhex("4889e5"), bytes.fromhex("488bec"))
_MASK64 = (1 << 64) - 1
_CFI = (UnwindMethod.DEBUG_FRAME, UnwindMethod.EH_FRAME)


class LiveFrameContext:
    """The stopped guest as a :class:`~kvmbench.symbols.frame.FrameContext`.

    Reads go straight to the target (the engine evaluates conditions while
    the guest is formally running, between two runs); memory reads hide
    software traps. Writes go through the session, which applies them
    between runs.
    """

    def __init__(self, session: "Session") -> None:
        self._session = session

    def read_register(self, name: str) -> int:
        """The register ``name`` (gdb's name); RegisterUnavailable if the target has none."""
        try:
            return self._session.target.read_register(name)
        except UsageError:
            raise RegisterUnavailable(f"register {name} is not available on this target") from None

    def write_register(self, name: str, value: int) -> None:
        """Set a general register (``p $rax = 5``)."""
        self._session.regs[name] = value & _MASK64

    def read_memory(self, address: int, length: int) -> bytes:
        """Guest memory as the guest wrote it; gdb's words where it cannot be read."""
        try:
            return self._session._mem.read(address, length)
        except (GuestMemoryError, UsageError):
            raise GuestMemoryError(f"Cannot access memory at address {address:#x}") from None

    def write_memory(self, address: int, data: bytes) -> None:
        """Store ``data`` as a debugger does (over a trap byte it becomes the new original)."""
        try:
            self._session.mem.write(address, data)
        except GuestMemoryError:
            raise GuestMemoryError(f"Cannot access memory at address {address:#x}") from None


class SymbolsOnlyProgram:
    """What the C evaluator and the frame list need of a program, for a guest
    without an ELF image (symbols only, no DWARF): every DWARF question has
    no answer, ELF symbols are gdb's minimal symbols."""

    debug = None
    units = None

    def __init__(self, symbols: "SymbolTable", unwinder: Unwinder) -> None:
        self.symbols = symbols
        self.unwinder = unwinder
        self.name = "<guest>"

    def find_variable(self, name: str, frame: object = None) -> None:
        return None

    def find_function(self, name: str, frame: object = None) -> None:
        return None

    def find_enumerator(self, name: str, frame: object = None) -> None:
        return None

    def find_type(self, name: str, frame: object = None) -> None:
        return None

    def typedef_names(self) -> frozenset[str]:
        return frozenset()

    def static_frame(self, registers: object = None) -> StaticFrame:
        return StaticFrame(ImageMemory(), None)

    def line_at(self, pc: int) -> None:
        return None

    def symbolize(self, address: int) -> str | None:
        return self.symbols.symbolize(address)

    def breakpoint_address(self, address: int) -> int:
        return address

    def amd64_frame_base(self, frame: Frame) -> int:
        return frame.context.read_register("rsp") - 8

    def entry_value(self, variable: object, frame: object) -> None:
        return None


class Frames:
    """Frame facts for one session's guest."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        self._program: "Program | SymbolsOnlyProgram | None" = None
        self.context = LiveFrameContext(session)
        #: Given the program's own unwinder, the one to use instead (a
        #: kernel session's knows the kernel's unwind data); set before use.
        self.unwinder_factory: Callable[[Unwinder], Unwinder] | None = None

    # --- the program ----------------------------------------------------------------

    @property
    def program(self) -> "Program | SymbolsOnlyProgram":
        """The guest image as a source-level debugger reads it (loaded on first use);
        a symbols-only stand-in when the session has no ELF image."""
        if self._program is None:
            session = self._session
            if session.image is not None:
                from kvmbench.symbols.program import Program

                self._program = Program.from_path(session.image, symbols=session.symbols)
            else:
                self._program = SymbolsOnlyProgram(session.symbols, Unwinder(None, self._bounds))
            if self.unwinder_factory is not None:
                self._program.unwinder = self.unwinder_factory(self._program.unwinder)
        return self._program

    @property
    def has_debug_info(self) -> bool:
        """Whether the image has DWARF (lines, scopes, types)."""
        return getattr(self.program, "units", None) is not None

    def _bounds(self, pc: int) -> tuple[int, int] | None:
        symbol = self._session.symbols.get_containing(pc)
        if symbol is None or symbol.kind is not SymbolKind.FUNCTION:
            return None
        return symbol.address, max(symbol.end, symbol.address + 1)

    # --- frames as gdb shows them -------------------------------------------------

    def physical(self, limit: int = DEFAULT_LIMIT) -> Backtrace:
        """The machine frames of the stopped guest, innermost first (guesses included)."""
        return self.program.unwinder.backtrace(self.context, limit)

    def source_frames(self, limit: int = DEFAULT_LIMIT, *, past_main: bool = False) -> FrameList:
        """gdb's frames (inlined calls expanded; ending at ``main`` unless ``past_main``)."""
        program = self.program
        frames = getattr(program, "frames", None)
        if frames is not None:
            return frames(self.context, limit, past_main=past_main)
        symbols = self._session.symbols
        return source_frames(self.physical(limit), None, line_at=lambda pc: None,
                             symbol_at=lambda pc: _function(symbols.get_containing(pc)))

    def frame_id(self, frame: Frame) -> tuple[int | None, int]:
        """gdb's stack frame id: (CFA, function start)."""
        symbol = self._session.symbols.get_containing(frame.lookup_pc)
        start = symbol.address if symbol is not None else frame.lookup_pc
        return frame.cfa, start

    # --- callers run control may trust ----------------------------------------------

    def _read_u64(self, address: int) -> int:
        return int.from_bytes(self._session._mem.read(address, 8), "little")

    def return_address_at_entry(self) -> int:
        """The return address of a function whose first instruction is
        executing (at rsp), or 0 when it cannot be read."""
        try:
            return self._read_u64(self._session.target.read_register("rsp"))
        except (GuestMemoryError, UsageError):
            return 0

    def _follows_call(self, address: int) -> bool:
        """True if the instruction before ``address`` in known code is a call."""
        mem = self._session._mem
        for length in (5, 2, 3, 6, 7, 4):
            try:
                insn = instructions.decode(mem.read(address - length, 15), address - length)
            except (GuestMemoryError, UsageError):
                continue
            if insn.is_call and insn.next_address == address:
                return True
        return False

    def _prologue(self, start: int) -> tuple[int, int] | None:
        """(offset after push rbp, offset after mov rbp, rsp) if the function
        at ``start`` sets up a frame pointer, else None."""
        try:
            code = self._session._mem.read(start, 12)
        except GuestMemoryError:
            return None
        offset = len(_ENDBR64) if code.startswith(_ENDBR64) else 0
        if code[offset:offset + 1] != _PUSH_RBP:
            return None
        if code[offset + 1:offset + 4] not in _MOV_RBP_RSP:
            return None
        return offset + 1, offset + 4

    def _check_guess(self, callee: Frame, symbol: Symbol) -> None:
        """Refuse a caller found without CFI unless its frame data is certain."""
        symbols = self._session.symbols
        pc = callee.pc
        offset = pc - symbol.address
        prologue = self._prologue(symbol.address)
        at_ret = False
        if callee.level == 0:
            try:
                at_ret = instructions.decode(self._session._mem.read(pc, 15), pc).is_ret
            except (GuestMemoryError, UsageError):
                at_ret = False
        if callee.level == 0 and (offset == 0 or at_ret):
            return
        if prologue is not None and (callee.level > 0 or offset >= prologue[0]):
            if callee.level == 0 and offset >= prologue[1]:
                try:
                    self._read_u64(callee.context.read_register("rbp"))
                except (GuestMemoryError, RegisterUnavailable):
                    raise FrameUnknown(f"{symbol.name}'s frame pointer is not mapped") from None
            return
        raise FrameUnknown(
            f"cannot find the caller of {symbol.name} at {symbols.format_address(pc)}: "
            "it has no CFI and keeps no frame pointer, and its caller is known only at its "
            "first instruction or at a ret")

    def verified_caller(self, callee: Frame) -> Frame | None:
        """The caller of ``callee`` if it is verified; None for the outermost
        frame (a zero return address, as _start leaves it); FrameUnknown otherwise."""
        symbols = self._session.symbols
        symbol = symbols.get_containing(callee.lookup_pc)
        if symbol is None:
            raise FrameUnknown(f"no function contains {callee.pc:#x}: its caller is unknown")
        unwinder = self.program.unwinder
        if callee.rules is None or callee.rules.section is None:
            self._check_guess(callee, symbol)  # before reading anything the guess points at
        try:
            caller = unwinder.caller(callee)
        except KvmbenchError as e:
            raise FrameUnknown(f"cannot find the caller of {symbol.name}: {e}") from None
        if caller is None:
            return None
        if caller.method is UnwindMethod.TAIL_CALL:
            raise FrameUnknown(f"{symbol.name} was reached by a tail call: its caller never returns there")
        if caller.method not in _CFI:
            slot = caller.context.read_register("rsp") - 8 if caller.cfa is not None else None
            where = f" (at {slot:#x})" if slot is not None else ""
            if symbols.get_containing(caller.pc) is None or not self._follows_call(caller.pc):
                raise FrameUnknown(
                    f"{caller.pc:#x}{where} does not follow a call in known code: "
                    f"{symbol.name}'s caller is unknown")
        if caller.cfa is not None and callee.cfa is not None and caller.cfa < callee.cfa:
            raise FrameUnknown("previous frame inner to this frame (corrupt stack?)")
        return caller

    def physical_frame(self, level: int) -> Frame:
        """Physical frame ``level`` (0: the innermost), every caller on the way verified."""
        frame = self.program.unwinder.innermost(self.context)
        for _ in range(level):
            caller = self.verified_caller(frame)
            if caller is None:
                raise FrameUnknown('"finish" not meaningful in the outermost frame.')
            frame = caller
        return frame

    def frame_return(self, level: int = 0) -> tuple[int, int] | None:
        """(return address, the caller's rsp after the return) of physical
        frame ``level``; None in the outermost frame; FrameUnknown when the
        caller is not verified."""
        frame = self.physical_frame(level)
        caller = self.verified_caller(frame)
        if caller is None:
            return None
        try:
            rsp = caller.context.read_register("rsp")
        except (RegisterUnavailable, GuestMemoryError) as e:
            raise FrameUnknown(f"the caller's stack pointer is unknown: {e}") from None
        return caller.pc, rsp & _MASK64

    def backtrace(self, limit: int = 64) -> list[int]:
        """The pcs of the guest's call chain, innermost first; ends at the
        first frame whose caller cannot be verified."""
        frame = self.program.unwinder.innermost(self.context)
        pcs = [frame.pc]
        while len(pcs) < limit:
            try:
                caller = self.verified_caller(frame)
            except FrameUnknown:
                break
            if caller is None:
                break
            pcs.append(caller.pc)
            frame = caller
        return pcs


def _function(symbol: Symbol | None) -> Symbol | None:
    return symbol if symbol is not None and symbol.kind is SymbolKind.FUNCTION else None
