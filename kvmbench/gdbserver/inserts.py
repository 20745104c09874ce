"""The breakpoints and watchpoints one client inserted (``Z0``-``Z4``), as
session requests.

Each insert becomes one request of the session's engine: ``Z0`` a
breakpoint of kind ``auto`` (a software trap where the host has one),
``Z1`` one of kind ``hw``; a ``Z1`` beyond the free hardware slots is
served by the best other mechanism and still answered OK, so gdb's fifth
``hbreak`` works (its user asked for a breakpoint that cannot be seen in
memory, and every mechanism kvmbench has hides its traps from memory
reads). ``Z2``/``Z3``/``Z4`` become write, read and access watchpoints.

gdb removes every breakpoint when the guest stops and inserts them again
before it resumes (``set breakpoint always-inserted off``, its default),
two packets per breakpoint per stop. Removals are therefore deferred: a
``z`` marks the request, a ``Z`` of the same breakpoint takes the mark
back, and only a resume that would run into a marked request deletes it
(:meth:`ClientInserts.settle`). A single-step runs one instruction, so
marked requests may stay armed over it: the engine never reports the
breakpoint at the pc a run starts from, and a stop at a marked request is
reported as a plain step (:meth:`ClientInserts.owns`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from kvmbench.engine.model import Access, Breakpoint, Watchpoint
from kvmbench.engine.session import Session
from kvmbench.errors import BreakpointError
from kvmbench.rsp.breakpoints import BreakpointRequest, BreakpointType

_ACCESS = {
    BreakpointType.WRITE_WATCH: Access.WRITE,
    BreakpointType.READ_WATCH: Access.READ,
    BreakpointType.ACCESS_WATCH: Access.ACCESS,
}
#: Longest range one ``Z2``-``Z4`` may watch (gdb splits nothing itself:
#: ``watch`` on a large array asks for its whole length).
MAX_WATCH = 1 << 16


@dataclass(frozen=True, slots=True)
class InsertKey:
    """What identifies an insert: ``z`` must repeat its ``Z``'s fields."""

    type: BreakpointType
    address: int
    kind: int


@dataclass
class Insert:
    key: InsertKey
    number: int
    #: Removed by the client; deleted from the session at the next resume.
    removed: bool = False


class ClientInserts:
    """One client's inserts (a lock keeps the connection's two threads apart:
    a client may send ``Z`` while its ``c`` is starting)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._inserts: dict[InsertKey, Insert] = {}
        self._lock = threading.RLock()

    def insert(self, request: BreakpointRequest) -> None:
        with self._lock:
            key = InsertKey(request.type, request.address, request.kind)
            existing = self._inserts.get(key)
            if existing is not None and self._alive(existing):
                existing.removed = False  # gdb re-inserting what it removed at the stop
                return
            self._inserts.pop(key, None)
            self._inserts[key] = Insert(key, self._create(key))

    def remove(self, request: BreakpointRequest) -> None:
        """``z``: mark (removing a breakpoint that is not inserted is no error,
        GDB manual: the stub "shall not fail")."""
        with self._lock:
            key = InsertKey(request.type, request.address, request.kind)
            existing = self._inserts.get(key)
            if existing is not None:
                existing.removed = True

    def settle(self) -> None:
        """Delete the requests the client removed (before a continue)."""
        with self._lock:
            for key, insert in list(self._inserts.items()):
                if insert.removed:
                    self._delete(insert)
                    del self._inserts[key]

    def release(self) -> None:
        """Delete every request of this client (detach, disconnect)."""
        with self._lock:
            for insert in list(self._inserts.values()):
                self._delete(insert)
            self._inserts.clear()

    def owns(self, number: int | None, *, active: bool = True) -> bool:
        """True if request ``number`` is one of this client's (and, with
        ``active``, not removed by it)."""
        return any(i.number == number and not (active and i.removed) for i in self._inserts.values())

    def numbers(self) -> list[int]:
        return [i.number for i in self._inserts.values() if not i.removed]

    def __len__(self) -> int:
        return sum(1 for i in self._inserts.values() if not i.removed)

    # --- the session side ----------------------------------------------------------

    def _alive(self, insert: Insert) -> bool:
        """The request is still in the session (the notebook may have deleted it)."""
        number = insert.number
        return number in self.session.breakpoints or number in self.session.watchpoints

    def _create(self, key: InsertKey) -> int:
        session = self.session
        if key.type is BreakpointType.SOFTWARE:
            return session.breakpoints.add(key.address).number
        if key.type is BreakpointType.HARDWARE:
            return self._hardware(key.address).number
        if not 1 <= key.kind <= MAX_WATCH:
            raise BreakpointError(f"cannot watch {key.kind} bytes (1..{MAX_WATCH})")
        wp: Watchpoint = session.watchpoints.add(key.address, key.kind, access=_ACCESS[key.type])
        return wp.number

    def _hardware(self, address: int) -> Breakpoint:
        """A hardware execute slot, else the best other mechanism."""
        try:
            return self.session.breakpoints.add(address, kind="hw")
        except BreakpointError:
            return self.session.breakpoints.add(address, kind="auto")

    def _delete(self, insert: Insert) -> None:
        session = self.session
        if insert.key.type.is_watchpoint:
            if insert.number in session.watchpoints:
                session.watchpoints.delete(insert.number)
        elif insert.number in session.breakpoints:
            session.breakpoints.delete(insert.number)
