"""Trapped stores and watch traps that fire after the access.

Rules (README, "What each mechanism guarantees"):

- A store counts once per storing instruction, however many pieces or
  pages it spans, and a rep-prefixed string instruction is one store
  however many iterations it takes: its iterations are run out (stepped)
  and gathered before the watch reports, with the value before the first
  iteration and after the last.
- The writer is the storing instruction (:func:`kvmbench.arch.stores.find_writer`
  from where rip stands after the store).
- A store over one of our trap bytes becomes its new original; a
  read-modify-write that read a trap byte is run again with the original
  byte in place (:func:`kvmbench.arch.stores.replay_registers`), so the
  guest computes what it would have computed without the trap, or the
  guest stops with the reason where that cannot be done exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmbench.arch import instructions
from kvmbench.arch.instructions import OperandAccess
from kvmbench.arch.stores import (
    Unreplayable,
    Writer,
    WriterCandidates,
    call_writer,
    find_writer,
    reads_memory,
    replay_registers,
    writer_candidates,
)
from kvmbench.backends.target import StoreStepped, StoreTrapped
from kvmbench.engine.model import Access, Mechanism, Stop, StopReason, Watchpoint
from kvmbench.engine.stops import WatchTrapped
from kvmbench.engine.views import RegisterValues
from kvmbench.errors import GuestMemoryError, KvmbenchError

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

_CANDIDATES_LIMIT = 4096


@dataclass
class _Pending:
    """A watch touched by the instruction being completed."""

    watch: Watchpoint
    old: bytes
    where: int | None


class Stores:
    """The store path of one session."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        self._candidates: dict[tuple[int, bytes], WriterCandidates] = {}
        self._pending: dict[int, _Pending] = {}
        self._running_out = False
        self._writer: int | None = None

    # --- helpers ------------------------------------------------------------------------

    def _explains_pieces(self, pieces: tuple[tuple[int, bytes], ...]):  # type: ignore[no-untyped-def]
        """An access explains a trapped store if, on trapped pages, it covers
        exactly the stored pieces (``mov [rdi], eax`` does not explain the
        8 bytes ``mov [rdi], rax`` stored, though its bytes end the same)."""
        serving = self._session.serving
        if len(pieces) == 1:
            stored_at, stored_data = pieces[0]
            translate = serving.target.translate

            def explains_one(address: int, size: int) -> bool:
                if (address & 0xFFF) + size > 0x1000:
                    return explains(address, size)
                if size != len(stored_data):
                    return False
                try:  # the store's own page is trapped: its bytes must be these
                    return translate(address) == stored_at
                except GuestMemoryError:
                    return False

        stored = sorted((pa, pa + len(data)) for pa, data in pieces)

        def explains(address: int, size: int) -> bool:
            try:
                ranges = serving.physical_pieces(address, size)
            except GuestMemoryError:
                return False
            trapped = serving.write_trap_pages
            covered = sorted(
                (max(start, page << 12), min(end, (page + 1) << 12))
                for start, end in ranges
                for page in range(start >> 12, ((end - 1) >> 12) + 1) if page in trapped)
            return _merged(covered) == _merged(stored)

        return explains_one if len(pieces) == 1 else explains

    def _find_writer(self, pc: int, explains,  # type: ignore[no-untyped-def]
                     pieces: tuple[tuple[int, bytes], ...] = (),
                     access: OperandAccess = OperandAccess.WRITE) -> Writer | None:
        """The instruction that made the access ``explains`` accounts for;
        for a store of ``pieces``, the call that pushed them."""
        session = self._session
        mem = session._mem
        try:
            window = mem.read(pc - 15, 30)
        except GuestMemoryError:
            window = b""
        key = (pc, window)
        candidates = self._candidates.get(key) if window else None
        if candidates is None:
            boundary = None
            symbols = session._symbols
            if not callable(symbols):  # loaded: use them to settle ambiguity
                symbol = symbols.get_containing(pc)
                boundary = symbol.address if symbol is not None else None
            candidates = writer_candidates(mem.read, pc, boundary=boundary)
            if window:
                if len(self._candidates) >= _CANDIDATES_LIMIT:
                    self._candidates.clear()
                self._candidates[key] = candidates
        writer = find_writer(mem.read, pc, RegisterValues(session.target), explains,
                             candidates=candidates, access=access)
        if writer is None and pieces:  # not one of the instructions before pc
            stack_word = self._stack_word(pieces)
            if stack_word is not None:
                return call_writer(mem.read, stack_word)
        return writer

    def _stack_word(self, pieces: tuple[tuple[int, bytes], ...]) -> int | None:
        target = self._session.target
        try:
            rsp = target.translate(target.read_register("rsp"))
        except GuestMemoryError:
            return None
        for pa, data in pieces:
            if pa == rsp and len(data) == 8:
                return int.from_bytes(data, "little")
        return None

    # --- trapped stores -----------------------------------------------------------------

    def on_store(self, event: StoreTrapped) -> Stop | None:
        """A guest store the target trapped, not yet in memory."""
        session = self._session
        serving = session.serving
        pieces = event.pieces
        patches = serving.patches
        over_trap = patches is not None and any(
            patches.armed_in(pa, pa + len(data)) for pa, data in pieces)
        touched = []
        for page_watch in serving.page_watches:
            for pa, data in pieces:
                if page_watch.start < pa + len(data) and pa < page_watch.end:
                    touched.append((page_watch, max(pa, page_watch.start)))
                    break
        writer = None
        if touched or over_trap:  # else a store beside a trap byte: nothing to attribute
            writer = self._find_writer(event.pc, self._explains_pieces(pieces), pieces)
        if over_trap and writer is not None and reads_memory(writer.insn):
            return self._replay(writer, event)
        for page_watch, first in touched:
            wp = page_watch.watch
            if wp.number not in self._pending:
                where = wp.address + self._offset_of(wp, page_watch.start) + first - page_watch.start
                self._pending[wp.number] = _Pending(wp, wp.value, where)
        for pa, data in pieces:
            if patches is not None:
                patches.write(pa, data)
            else:
                session.target.write_physical(pa, data)
        if not touched and writer is None:
            return None
        writer_pc = writer.insn.address if writer is not None else None
        return self._finish(writer, writer_pc)

    def _offset_of(self, wp: Watchpoint, piece_start: int) -> int:
        """Bytes of ``wp`` before the physical piece starting at ``piece_start``."""
        if (wp.address & 0xFFF) + wp.length <= 0x1000:
            return 0  # one page, one piece
        offset = 0
        for start, end in self._session.serving.physical_pieces(wp.address, wp.length):
            if start == piece_start:
                return offset
            offset += end - start
        return 0

    def _finish(self, writer: Writer | None, writer_pc: int | None) -> Stop | None:
        """Report the touched watches once the writing instruction is done;
        run out a rep string instruction first."""
        if self._running_out:
            return None  # the instruction being run out reports when it is done
        if writer is not None and writer.in_progress:
            self._running_out, self._writer = True, writer_pc
            try:
                stop = self._session.runcontrol.run_out(writer.insn.address)
            finally:
                self._running_out = False
            if stop is not None:
                self._pending.clear()
                return stop
        return self.flush(writer_pc)

    def flush(self, writer: int | None) -> Stop | None:
        """Report every watch the completed instruction touched."""
        pending, self._pending = self._pending, {}
        stop = None
        session = self._session
        for p in pending.values():
            new = session.read_watched(p.watch)
            stop = session.counting.watch_hit(
                p.watch, writer=writer, old=p.old, new=new, hit=True,
                access_address=p.where) or stop
        return stop

    def _replay(self, writer: Writer, event: StoreTrapped) -> Stop | None:
        """A read-modify-write read one of our trap bytes: put the originals
        back and run it again from its first byte."""
        session = self._session
        target = session.target
        patches = session.serving.patches
        assert patches is not None
        insn = writer.insn
        wrote = b"".join(data for _, data in event.pieces)
        read = b"".join(target.read_physical(pa, len(data)) for pa, data in event.pieces)
        try:
            restore = replay_registers(insn, RegisterValues(target), int.from_bytes(read, "little"),
                                       int.from_bytes(wrote, "little"), len(wrote))
        except Unreplayable as e:
            for pa, data in event.pieces:
                patches.write(pa, data)
            return Stop(StopReason.GUEST_TRAP, target.pc, detail=(
                f"{e} at {insn.address:#x}; the guest's result may differ from an undisturbed run"))
        for name, value in restore.items():
            target.write_register(name, value)
        target.set_pc(insn.address)
        lifted = [a for pa, data in event.pieces for a in range(pa, pa + len(data))
                  if (p := patches.get(a)) is not None and p.armed]
        runcontrol = session.runcontrol
        steps = [runcontrol.lift_physical(address) for address in lifted]
        try:
            return runcontrol.step_instruction()
        finally:
            for over in steps:
                runcontrol.rearm(over)

    def on_store_stepped(self, event: StoreStepped) -> Stop | None:
        """The target stepped a store it could not trap, with the pages
        writable: resync our trap bytes there and compare the watches."""
        session = self._session
        serving = session.serving
        if serving.patches is not None:
            serving.patches.resync(event.pages)
        try:
            insn = instructions.decode(session._mem.read(event.writer, 15), event.writer)
            accesses = instructions.memory_accesses(insn, RegisterValues(session.target))
        except (KvmbenchError, KeyError):
            accesses = None
        stop = None
        for page_watch in list(serving.page_watches):
            if page_watch.start >> 12 not in event.pages and (page_watch.end - 1) >> 12 not in event.pages:
                continue
            wp = page_watch.watch
            new = session.read_watched(wp)
            hit = None if accesses is None else any(
                a.access.writes and a.address < wp.address + wp.length
                and wp.address < a.address + a.size for a in accesses)
            stop = session.counting.watch_hit(wp, writer=event.writer, old=wp.value, new=new,
                                              hit=hit) or stop
        return stop

    # --- watch traps after the access -----------------------------------------------

    def on_watch_trapped(self, decision: WatchTrapped) -> Stop | None:
        """A hardware data slot or a stub's watchpoint fired after an access."""
        session = self._session
        watches = decision.watches

        def overlaps(address: int, size: int) -> bool:
            return any(w.address < address + size and address < w.address + w.length
                       for w in watches)

        kinds = {w.access for w in watches}
        access = (OperandAccess.WRITE if kinds == {Access.WRITE} else
                  OperandAccess.READ if kinds == {Access.READ} else OperandAccess.READ_WRITE)
        writer = self._find_writer(decision.pc, overlaps, access=access)
        for wp in watches:
            if wp.number not in self._pending:
                self._pending[wp.number] = _Pending(wp, wp.value, decision.address)
        writer_pc = writer.insn.address if writer is not None else None
        if writer is None and any(w.mechanism is Mechanism.HW_DATA for w in watches):
            writer_pc = None  # a read or a non-store access: no instruction found
        return self._finish(writer, writer_pc)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted [start, end) ranges with touching ones joined."""
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
