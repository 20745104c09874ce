"""Tracepoints the target counts itself: the "plugin counter" mechanism.

A target with ``exec_counting`` (QEMU TCG with kvmbench's plugin) counts
executions of chosen addresses without ever stopping the guest, and its
counts can be read at any time. The engine serves an unconditional
tracepoint that way when it can (the planner's ``counting`` choice), and
turns the target's counts into the tracepoints' hit counts and the hit
log's totals: at every stop of a run, and whenever :meth:`ExecCounters.sync`
is called (any thread). Such a hit has no time, pc row or caller of its own
in the hit log; what needs those (a callers plot) needs a mechanism that
stops.

Exactness: a count moves from 0 at the first resume after the address was
added, and the target counts each execution of the instruction once,
whatever else stops there (a Z0 breakpoint at the same address stops the
guest before the instruction runs; stepping off it runs it once).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from kvmbench.engine.model import Breakpoint

if TYPE_CHECKING:
    from kvmbench.engine.session import Session


class ExecCounters:
    """The breakpoints the target counts for one session."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        #: Counted breakpoints by address (several may share one).
        self._users: dict[int, list[Breakpoint]] = {}
        #: The target's count of each breakpoint's address when it was last synced.
        self._seen: dict[int, int] = {}
        self._lock = threading.Lock()

    def eligible(self, bp: Breakpoint) -> bool:
        """Whether ``bp`` only counts: a tracepoint without a condition
        (a condition must be evaluated at each hit, which needs a stop)."""
        return bp.tracepoint and bp.condition is None and not bp.internal

    def arm(self, bp: Breakpoint) -> None:
        """Count ``bp``'s address from the next resume (raises
        BreakpointError when the target counts no more addresses)."""
        target = self._session.target
        with self._lock:
            if bp.address not in self._users:
                target.count_executions([bp.address])
                self._users[bp.address] = []
                start = 0
            else:
                self._sync_locked()
                start = target.execution_counts().get(bp.address, 0)
            self._users[bp.address].append(bp)
            self._seen[bp.number] = start

    def disarm(self, bp: Breakpoint) -> None:
        """Stop counting for ``bp``, its hits so far kept."""
        with self._lock:
            self._sync_locked()
            users = self._users.get(bp.address, [])
            if bp in users:
                users.remove(bp)
            self._seen.pop(bp.number, None)
            if not users and bp.address in self._users:
                del self._users[bp.address]
                self._session.target.stop_counting([bp.address])

    def sync(self) -> None:
        """Bring the counted breakpoints' hit counts (and the hit log's
        totals) up to the target's counts; safe from any thread."""
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if not self._users:
            return
        counts = self._session.target.execution_counts()
        hits = self._session.hits
        for address, users in self._users.items():
            now = counts.get(address, 0)
            for bp in users:
                new = now - self._seen[bp.number]
                if new > 0:
                    bp.hit_count += new
                    hits.add_counted(bp.number, new)
                self._seen[bp.number] = now

    def counts(self, address: int) -> bool:
        """Whether the target counts executions of ``address`` for us: then
        the instruction must really execute there, never be emulated."""
        return address in self._users

    @property
    def addresses(self) -> list[int]:
        """The addresses the target counts for this session."""
        return list(self._users)
