"""The hit log: exact per-request totals plus a bounded ring of recent hits.

Rows are (request number, time in ns, pc, caller or writer pc), in the
order they were recorded: an in-guest probe's hits are recorded when its
ring is drained, with the times they happened, so across mechanisms the
times are not in order. The ring lives in preallocated ``array`` columns so
recording a hit allocates nothing; plots read the columns as they are.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from dataclasses import dataclass

DEFAULT_CAPACITY = 1 << 16


@dataclass(frozen=True)
class HitRows:
    """A snapshot of the ring, oldest first, as parallel columns."""

    number: list[int]
    time_ns: list[int]
    pc: list[int]
    caller: list[int]

    def __len__(self) -> int:
        return len(self.number)


class HitLog:
    """Per-breakpoint and per-watchpoint hit counts and recent hits."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("hit log capacity must be positive")
        self.capacity = capacity
        self._number = array("q", bytes(8 * capacity))
        self._time = array("q", bytes(8 * capacity))
        self._pc = array("Q", bytes(8 * capacity))
        self._caller = array("Q", bytes(8 * capacity))
        self._next = 0
        self._recorded = 0
        self.totals: Counter[int] = Counter()
        self.start_ns = time.perf_counter_ns()

    def record(self, number: int, pc: int, caller: int, time_ns: int | None = None) -> None:
        """Count one hit of request ``number`` at ``pc`` (caller: return address
        for breakpoints, the writer's pc for watchpoints), made now or at
        ``time_ns`` (``time.perf_counter_ns``'s clock: an in-guest probe's
        hits are recorded when they are drained, with the time they happened)."""
        i = self._next
        self._number[i] = number
        self._time[i] = time.perf_counter_ns() if time_ns is None else time_ns
        self._pc[i] = pc
        self._caller[i] = caller
        self._next = 0 if i + 1 == self.capacity else i + 1
        self._recorded += 1
        self.totals[number] += 1

    def record_many(self, numbers: list[int], pcs: list[int], callers: list[int],
                    times_ns: list[int]) -> None:
        """:meth:`record` for many hits at once, oldest first, as columns
        (an in-guest probe's ring at a drain: thousands of hits)."""
        count = len(numbers)
        if count == 0:
            return
        self._recorded += count
        self.totals.update(numbers)
        keep = min(count, self.capacity)  # older ones the ring would drop at once
        start = count - keep
        i = self._next
        first = min(keep, self.capacity - i)
        for column, values, kind in ((self._number, numbers, "q"), (self._time, times_ns, "q"),
                                     (self._pc, pcs, "Q"), (self._caller, callers, "Q")):
            column[i:i + first] = array(kind, values[start:start + first])
            if keep > first:
                column[0:keep - first] = array(kind, values[start + first:count])
        self._next = (i + keep) % self.capacity

    def add_counted(self, number: int, hits: int) -> None:
        """Add ``hits`` of request ``number`` that a counter kept (the target
        counted them without a stop): totals only, no rows in the ring."""
        self.totals[number] += hits

    @property
    def recorded(self) -> int:
        """Hits recorded since the log was created (including ones the ring dropped)."""
        return self._recorded

    def count(self, number: int) -> int:
        return self.totals[number]

    def rows(self, number: int | None = None) -> HitRows:
        """The hits still in the ring, oldest first; only ``number``'s if given."""
        n = min(self._recorded, self.capacity)
        start = (self._next - n) % self.capacity
        order = [(start + k) % self.capacity for k in range(n)]
        cols = [[col[i] for i in order] for col in (self._number, self._time, self._pc, self._caller)]
        if number is not None:
            keep = [k for k, num in enumerate(cols[0]) if num == number]
            cols = [[c[k] for k in keep] for c in cols]
        return HitRows(*cols)

    def forget(self, number: int) -> None:
        """Drop a deleted request's total (its ring rows age out on their own)."""
        self.totals.pop(number, None)

    def plot(self, kind: str, *args: object, **kwargs: object) -> object:
        """A matplotlib Figure of these hits: ``kind`` is one of
        ``kvmbench.plots.KINDS`` (per-request, over-time, callers, writers);
        pass ``symbolize=session.symbols.format_address`` to name addresses.
        matplotlib is imported only here: the engine does not need it."""
        from kvmbench import plots

        return plots.plot(self, kind, *args, **kwargs)

    def clear(self) -> None:
        self._next = 0
        self._recorded = 0
        self.totals.clear()
        self.start_ns = time.perf_counter_ns()
