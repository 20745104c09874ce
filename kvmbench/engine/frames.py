"""Frames: the caller of the running function, for finish, until, advance,
the hit log and backtraces.

A return address taken from frame data is used only once it is verified:
it must follow a call instruction in known code. Frame pointers are
trusted only in functions that set one up (``push rbp; mov rbp, rsp``): in
a frameless function rbp is data, and the caller is known only at the
function's first instruction or at a ``ret``. Anywhere else in such a
function the answer is a :class:`FrameUnknown` refusal, never a guess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvmbench.arch import instructions
from kvmbench.errors import FrameUnknown, GuestMemoryError, UsageError

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

_ENDBR64 = bytes.fromhex("f30f1efa")
_PUSH_RBP = b"\x55"
_MOV_RBP_RSP = (bytes.fromhex("4889e5"), bytes.fromhex("488bec"))
_MASK64 = (1 << 64) - 1


class Frames:
    """Frame facts for one session's guest."""

    def __init__(self, session: "Session") -> None:
        self._session = session

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

    def caller_of(self, pc: int, rsp: int, rbp: int) -> tuple[int, int, int] | None:
        """(return address, caller's rsp after the return, caller's rbp) of
        the frame executing at ``pc``; None for the outermost frame (a zero
        return address, as _start leaves it); raises FrameUnknown."""
        symbols = self._session.symbols
        symbol = symbols.get_containing(pc)
        if symbol is None:
            raise FrameUnknown(f"no function contains {pc:#x}: its caller is unknown")
        offset = pc - symbol.address
        mem = self._session._mem
        try:
            insn = instructions.decode(mem.read(pc, 15), pc)
        except (GuestMemoryError, UsageError):
            insn = None
        prologue = self._prologue(symbol.address)
        if offset == 0 or (prologue is not None and offset < prologue[0]) or (
                insn is not None and insn.is_ret):
            slot, caller_rbp = rsp, rbp  # at entry, or at a ret: the address is at rsp
        elif prologue is not None and offset < prologue[1]:
            slot, caller_rbp = rsp + 8, rbp  # after push rbp, before mov rbp, rsp
        elif prologue is not None:
            slot = rbp + 8
            try:
                caller_rbp = self._read_u64(rbp)
            except GuestMemoryError:
                raise FrameUnknown(f"{symbol.name}'s frame pointer {rbp:#x} is not mapped") from None
        else:
            raise FrameUnknown(
                f"cannot find the caller of {symbol.name} at {symbols.format_address(pc)}: "
                "it keeps no frame pointer, and its caller is known only at its first "
                "instruction or at a ret")
        try:
            return_address = self._read_u64(slot)
        except GuestMemoryError:
            raise FrameUnknown(f"the return address slot {slot:#x} is not mapped") from None
        if return_address == 0:
            return None
        if symbols.get_containing(return_address) is None or not self._follows_call(return_address):
            raise FrameUnknown(
                f"{return_address:#x} (at {slot:#x}) does not follow a call in known code: "
                f"{symbol.name}'s caller is unknown")
        return return_address, (slot + 8) & _MASK64, caller_rbp

    def frame_return(self) -> tuple[int, int] | None:
        """(return address, the caller's rsp after return) of the current
        frame; None in the outermost frame."""
        target = self._session.target
        caller = self.caller_of(target.pc, target.read_register("rsp"), target.read_register("rbp"))
        return None if caller is None else caller[:2]

    def backtrace(self, limit: int = 64) -> list[int]:
        """The pcs of the guest's call chain, innermost first; ends at the
        first frame whose caller cannot be verified."""
        target = self._session.target
        pc, rsp, rbp = target.pc, target.read_register("rsp"), target.read_register("rbp")
        pcs = [pc]
        while len(pcs) < limit:
            try:
                caller = self.caller_of(pc, rsp, rbp)
            except FrameUnknown:
                break
            if caller is None:
                break
            pc, caller_rsp, rbp = caller
            if caller_rsp <= rsp:  # callers' frames lie above (the stack grows down)
                break
            pcs.append(pc)
            rsp = caller_rsp
        return pcs
