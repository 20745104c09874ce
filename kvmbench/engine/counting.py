"""Counting hits: conditions, ignore counts, tracepoints, the hit log, and
the stop a hit makes.

Counting rules (README, "What each mechanism guarantees"): a breakpoint
counts once per execution of its instruction while its condition holds; a
watchpoint counts once per accessing instruction. A write watch stops only
when the value changed (gdb's ``watch``) unless it stops at every store;
read and access watches stop at every access. An ignore count skips stops,
not counts.

A condition runs in the thread that runs the guest. It may never return (a
Python callable can loop): :meth:`Counting.interrupt` raises into it from
another thread, so pause() and the notebook's stop button still work.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmbench.engine.model import Access, Breakpoint, Mechanism, Stop, StopOn, StopReason, Watchpoint
from kvmbench.engine.stops import BreakpointHit
from kvmbench.errors import ConditionError

if TYPE_CHECKING:
    from kvmbench.engine.session import Session


@dataclass
class Internal:
    """A breakpoint run control sets for itself (finish, until, nexti)."""

    breakpoint: Breakpoint
    reason: StopReason
    #: True when the hit is in the frame run control waits for.
    in_frame: Callable[[], bool]


class _ConditionInterrupted(BaseException):
    """Raised into a condition that a pause interrupts (never escapes Counting)."""


class Counting:
    """Counts hits for one session and turns them into stops."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        self.internal: dict[int, Internal] = {}
        self._evaluating: int | None = None  # thread id inside a condition
        self._interrupted = False
        self._lock = threading.Lock()

    # --- conditions --------------------------------------------------------------------

    def condition_holds(self, number: int) -> bool:
        session = self._session
        condition = session.breakpoints.condition_of(number)
        if condition is None:
            condition = session.watchpoints.condition_of(number)
            if condition is None:
                return True
        from kvmbench.engine.conditions import ConditionNames

        names = ConditionNames(self._session)
        try:
            with self._lock:
                self._evaluating, self._interrupted = threading.get_ident(), False
            try:
                return condition.evaluate(self._session, names)
            finally:
                self._stop_interrupting()
        except _ConditionInterrupted:
            self._stop_interrupting()
            raise ConditionError(
                f"condition {condition.source!r} was interrupted by a pause") from None

    def _stop_interrupting(self) -> None:
        with self._lock:
            if self._evaluating is not None and self._interrupted:
                # Withdraw an exception raised into us but not delivered yet.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._evaluating), None)
            self._evaluating = None

    def interrupt(self) -> bool:
        """Interrupt a condition being evaluated (from another thread).
        Returns True if one was."""
        with self._lock:
            thread = self._evaluating
            if thread is None or self._interrupted or thread == threading.get_ident():
                return False
            self._interrupted = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread), ctypes.py_object(_ConditionInterrupted))
            return True

    # --- breakpoints -----------------------------------------------------------------

    def breakpoint_hit(self, hit: BreakpointHit) -> Stop | None:
        """Count a hit of our breakpoints at ``hit.pc``; the stop it makes, if any."""
        session = self._session
        pc, mechanism = hit.pc, hit.mechanism
        stop_for: Breakpoint | None = None
        internal_stop: Stop | None = None
        caller: int | None = None
        for bp in hit.requests:
            if bp.internal:
                internal = self.internal.get(bp.number)
                if internal is not None and internal.in_frame():
                    internal_stop = Stop(internal.reason, pc, mechanism=mechanism)
                continue
            if not bp.enabled:
                continue
            try:
                if not self.condition_holds(bp.number):
                    continue
            except ConditionError as e:
                return Stop(StopReason.BREAKPOINT, pc, breakpoint=bp.number,
                            mechanism=mechanism, detail=str(e))
            bp.hit_count += 1
            if caller is None:
                caller = session.frames.return_address_at_entry()
            session.hits.record(bp.number, pc, caller)
            if bp.tracepoint:
                continue
            if bp.ignore_count > 0:
                bp.ignore_count -= 1
                continue
            if stop_for is None:
                stop_for = bp
        if stop_for is not None:
            return Stop(StopReason.BREAKPOINT, pc, breakpoint=stop_for.number, mechanism=mechanism)
        return internal_stop

    # --- watchpoints -----------------------------------------------------------------

    def watch_hit(self, wp: Watchpoint, *, writer: int | None, old: bytes, new: bytes,
                  hit: bool | None, access_address: int | None = None) -> Stop | None:
        """Report what one instruction did to ``wp``'s bytes.

        ``hit``: the mechanism saw the instruction make the access the watch
        is for (a store for a write watch, a read for a read watch); None
        when it cannot tell, and only a changed value then counts as a
        store. ``old``/``new``: the value before and after the instruction.
        """
        session = self._session
        wp.value = new
        if hit is None:
            hit = old != new and wp.access is not Access.READ
        if not hit:
            return None
        if wp.access is Access.READ and wp.mechanism is Mechanism.HW_DATA and old != new:
            # x86 has no read-only slots: an access slot that saw the value
            # change saw a write, which a read watch ignores (gdb does so).
            return None
        try:
            if not self.condition_holds(wp.number):
                return None
        except ConditionError as e:
            return Stop(StopReason.WATCHPOINT, session.target.pc, watchpoint=wp.number,
                        mechanism=wp.mechanism, detail=str(e), writer=writer)
        wp.last_writer = writer
        wp.hit_count += 1
        session.hits.record(wp.number, writer or 0, writer or 0)
        if wp.tracepoint:
            return None
        # Every store counts; a write watch stops only when the value
        # changed, as gdb's `watch` does, unless asked to stop at every store.
        if wp.access is Access.WRITE and wp.stop_on is StopOn.CHANGE and new == old:
            return None
        if wp.ignore_count > 0:
            wp.ignore_count -= 1
            return None
        # pc is where the guest stands (past the access); writer is who made it.
        return Stop(StopReason.WATCHPOINT, session.target.pc, watchpoint=wp.number,
                    mechanism=wp.mechanism, old_value=int.from_bytes(old, "little"),
                    new_value=int.from_bytes(new, "little"),
                    access_address=access_address if access_address is not None else wp.address,
                    writer=writer)
