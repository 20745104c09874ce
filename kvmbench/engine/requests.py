"""The user's requests as collections: ``session.breakpoints`` and
``session.watchpoints``. They number requests as gdb does (one sequence for
both), parse what the user typed, and leave serving to the session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from kvmbench.engine.conditions import CompiledCondition
from kvmbench.engine.model import Access, Breakpoint, Condition, Kind, Mechanism, StopOn, Watchpoint
from kvmbench.engine.planner import parse_mechanism
from kvmbench.errors import UsageError

if TYPE_CHECKING:
    from kvmbench.engine.session import Session


class RequestNumbers:
    """Numbering shared by breakpoints and watchpoints, as gdb does."""

    def __init__(self) -> None:
        self.next_number = 1

    def take(self) -> int:
        number = self.next_number
        self.next_number += 1
        return number


class Breakpoints:
    """``session.breakpoints``: add, delete, enable, disable, iterate."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        self._by_number: dict[int, Breakpoint] = {}

    def add(
        self,
        location: str | int,
        *,
        kind: Kind | str = Kind.AUTO,
        condition: Condition = None,
        ignore_count: int = 0,
        temporary: bool = False,
        tracepoint: bool = False,
        enabled: bool = True,
        mechanism: Mechanism | str | None = None,
    ) -> Breakpoint:
        """A breakpoint at a symbol, ``symbol+offset``, ``file.c:line`` or address.

        Symbols break at their first instruction (gdb's ``break *fib``), so a
        tracepoint counts every call and sees the caller's return address.
        ``mechanism`` ("hlt trap", "hardware execute slot"...) serves it by
        exactly that mechanism, or fails saying why the host cannot.
        """
        return self._session._add_breakpoint(
            location, parse_kind(kind), condition, ignore_count, temporary, tracepoint, enabled,
            None if mechanism is None else parse_mechanism(mechanism),
        )

    def trace(self, location: str | int, **options: object) -> Breakpoint:
        """A tracepoint: counts hits and never stops."""
        return self.add(location, tracepoint=True, **options)  # type: ignore[arg-type]

    def delete(self, number: int) -> None:
        self._session._delete_breakpoint(self[number])

    def enable(self, number: int) -> None:
        self._session._set_enabled(self[number], True)

    def disable(self, number: int) -> None:
        self._session._set_enabled(self[number], False)

    def set_condition(self, number: int, condition: Condition) -> None:
        bp = self[number]
        self._session._conditions[bp.number] = (
            CompiledCondition(condition) if condition is not None else None
        )
        bp.condition = condition

    def set_ignore_count(self, number: int, count: int) -> None:
        if count < 0:
            raise UsageError("ignore count must not be negative")
        self[number].ignore_count = count

    def __getitem__(self, number: int) -> Breakpoint:
        bp = self._by_number.get(number)
        if bp is None:
            raise UsageError(f"no breakpoint number {number}")
        return bp

    def get(self, number: int) -> Breakpoint | None:
        return self._by_number.get(number)

    def __iter__(self) -> Iterator[Breakpoint]:
        return iter(sorted(self._by_number.values(), key=lambda b: b.number))

    def __len__(self) -> int:
        return len(self._by_number)

    def __contains__(self, number: object) -> bool:
        return number in self._by_number


class Watchpoints:
    """``session.watchpoints``: add, delete, enable, disable, iterate."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        self._by_number: dict[int, Watchpoint] = {}

    def add(
        self,
        location: str | int,
        length: int | None = None,
        *,
        access: Access | str = Access.WRITE,
        kind: Kind | str = Kind.AUTO,
        condition: Condition = None,
        ignore_count: int = 0,
        tracepoint: bool = False,
        mechanism: Mechanism | str | None = None,
        stop_on: StopOn | str = StopOn.CHANGE,
    ) -> Watchpoint:
        """Watch ``length`` bytes (default: the symbol's size, else 8).

        A write watch counts every storing instruction; it stops when the
        value changed (``stop_on="change"``, gdb's rule) or at every store
        (``stop_on="store"``). Read and access watches stop at every access.
        ``mechanism`` ("page trap", "single-step compare", "hardware data
        slot") serves it by exactly that mechanism or fails saying why.
        """
        return self._session._add_watchpoint(
            location, length, parse_access(access), parse_kind(kind), condition, ignore_count,
            tracepoint, None if mechanism is None else parse_mechanism(mechanism),
            parse_stop_on(stop_on),
        )

    def delete(self, number: int) -> None:
        self._session._delete_watchpoint(self[number])

    def __getitem__(self, number: int) -> Watchpoint:
        wp = self._by_number.get(number)
        if wp is None:
            raise UsageError(f"no watchpoint number {number}")
        return wp

    def get(self, number: int) -> Watchpoint | None:
        return self._by_number.get(number)

    def __iter__(self) -> Iterator[Watchpoint]:
        return iter(sorted(self._by_number.values(), key=lambda w: w.number))

    def __len__(self) -> int:
        return len(self._by_number)


def parse_kind(kind: Kind | str) -> Kind:
    try:
        return kind if isinstance(kind, Kind) else Kind(kind.lower())
    except ValueError:
        raise UsageError(f"breakpoint kind must be auto, hw or sw, not {kind!r}") from None


def parse_access(access: Access | str) -> Access:
    try:
        return access if isinstance(access, Access) else Access(access.lower())
    except ValueError:
        raise UsageError(f"watch access must be write, read or access, not {access!r}") from None


def parse_stop_on(stop_on: StopOn | str) -> StopOn:
    try:
        return stop_on if isinstance(stop_on, StopOn) else StopOn(str(stop_on).lower())
    except ValueError:
        raise UsageError(f"stop_on must be 'change' or 'store', not {stop_on!r}") from None
