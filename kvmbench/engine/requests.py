"""The user's requests as collections: ``session.breakpoints`` and
``session.watchpoints``. They number requests as gdb does (one sequence for
both), check and parse what the user passed, own the registry of requests
and their conditions, and leave serving to :mod:`kvmbench.engine.serving`.

Every change goes through :meth:`Session._change`: applied at once while
the guest is stopped, or by pausing a running guest and resuming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from kvmbench.engine.conditions import CompiledCondition
from kvmbench.engine.model import Access, Breakpoint, Condition, Kind, Mechanism, StopOn, Watchpoint
from kvmbench.engine.planner import parse_mechanism
from kvmbench.errors import UsageError

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

#: Longest watched range: a page trap keeps a value copy of it, and
#: single-step compare reads it back after every step.
MAX_WATCH_LENGTH = 1 << 20


class RequestNumbers:
    """Numbering shared by breakpoints and watchpoints, as gdb does."""

    def __init__(self) -> None:
        self.next_number = 1

    def take(self) -> int:
        number = self.next_number
        self.next_number += 1
        return number


def _check_location(location: object) -> str | int:
    if isinstance(location, bool) or not isinstance(location, (str, int)):
        raise UsageError(f"a location is a symbol, 'symbol+offset', 'file.c:line' or an "
                         f"address, not {location!r}")
    return location


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} is an integer, not {value!r}")
    if value < 0:
        raise UsageError(f"{what} must not be negative")
    return value


def _check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{what} is True or False, not {value!r}")
    return value


def _compile(condition: Condition) -> CompiledCondition | None:
    return CompiledCondition(condition) if condition is not None else None


class Breakpoints:
    """``session.breakpoints``: add, delete, enable, disable, iterate."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        self._by_number: dict[int, Breakpoint] = {}
        self._conditions: dict[int, CompiledCondition | None] = {}

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
        exactly that mechanism, or fails saying why the target cannot.
        """
        session = self._session
        location = _check_location(location)
        kind = parse_kind(kind)
        requested = None if mechanism is None else parse_mechanism(mechanism)
        ignore_count = _check_count(ignore_count, "an ignore count")
        temporary = _check_flag(temporary, "temporary")
        tracepoint = _check_flag(tracepoint, "tracepoint")
        enabled = _check_flag(enabled, "enabled")
        compiled = _compile(condition)

        def change() -> Breakpoint:
            text, address = session._resolve(location)
            session._check_code_address(address, kind, requested)
            if compiled is not None:
                compiled.check_names(session.frames.program, address)
            bp = Breakpoint(
                number=session._numbers.next_number, location=text, address=address, kind=kind,
                condition=condition, ignore_count=ignore_count, temporary=temporary,
                tracepoint=tracepoint, enabled=enabled, requested=requested,
            )
            if enabled:
                session.serving.serve_breakpoint(bp)
            session._numbers.take()
            self._by_number[bp.number] = bp
            self._conditions[bp.number] = compiled
            return bp

        return session._change(change)

    def trace(self, location: str | int, **options: object) -> Breakpoint:
        """A tracepoint: counts hits and never stops."""
        return self.add(location, tracepoint=True, **options)  # type: ignore[arg-type]

    def delete(self, number: int) -> None:
        bp = self[number]

        def change() -> None:
            session = self._session
            session.serving.unserve_breakpoint(bp)
            session.serving.replan(session.watchpoints)
            self._by_number.pop(bp.number, None)
            self._conditions.pop(bp.number, None)
            session.hits.forget(bp.number)

        self._session._change(change)

    def enable(self, number: int) -> None:
        self._set_enabled(self[number], True)

    def disable(self, number: int) -> None:
        self._set_enabled(self[number], False)

    def _set_enabled(self, bp: Breakpoint, enabled: bool) -> None:
        serving = self._session.serving

        def change() -> None:
            if enabled and not bp.enabled:
                serving.serve_breakpoint(bp)
            elif not enabled and bp.enabled:
                serving.unserve_breakpoint(bp)
                serving.replan(self._session.watchpoints)
            bp.enabled = enabled

        self._session._change(change)

    def set_condition(self, number: int, condition: Condition) -> None:
        bp = self[number]
        compiled = _compile(condition)

        def change() -> None:
            # A condition is evaluated at each hit, which needs a stop: a
            # request that only counted is served again by what stops.
            reserve = condition is not None and bp.mechanism is not None and bp.mechanism.counts_only
            if reserve and bp.requested is bp.mechanism:
                raise UsageError(f"{bp} is served by the {bp.mechanism.value} asked for, "
                                 "which only counts: it cannot evaluate a condition")
            if compiled is not None:
                compiled.check_names(self._session.frames.program, bp.address)
            self._conditions[bp.number] = compiled
            bp.condition = condition
            if reserve:
                self._session.serving.unserve_breakpoint(bp)
                self._session.serving.serve_breakpoint(bp)

        self._session._change(change)

    def set_ignore_count(self, number: int, count: int) -> None:
        bp = self[number]
        count = _check_count(count, "an ignore count")

        def change() -> None:
            bp.ignore_count = count

        self._session._change(change)

    def condition_of(self, number: int) -> CompiledCondition | None:
        return self._conditions.get(number)

    def __getitem__(self, number: int) -> Breakpoint:
        bp = self._by_number.get(number) if isinstance(number, int) else None
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
        self._conditions: dict[int, CompiledCondition | None] = {}

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
        session = self._session
        location = _check_location(location)
        if length is not None:
            length = _check_count(length, "a watch length")
            if length == 0:
                raise UsageError("watch length must be positive, not 0")
            if length > MAX_WATCH_LENGTH:
                raise UsageError(f"watch length {length} is more than {MAX_WATCH_LENGTH} bytes")
        access = parse_access(access)
        kind = parse_kind(kind)
        requested = None if mechanism is None else parse_mechanism(mechanism)
        stop = parse_stop_on(stop_on)
        ignore_count = _check_count(ignore_count, "an ignore count")
        tracepoint = _check_flag(tracepoint, "tracepoint")
        compiled = _compile(condition)

        def change() -> Watchpoint:
            text, address = session._resolve(location)
            size = length
            if size is None:
                symbol = session.symbols.get_by_name(text) if isinstance(location, str) else None
                size = symbol.size if symbol is not None and symbol.size else 8
                size = min(size, MAX_WATCH_LENGTH)
            session._check_data_range(address, size, requested)
            wp = Watchpoint(
                number=session._numbers.next_number, location=text, address=address, length=size,
                access=access, kind=kind, condition=condition, ignore_count=ignore_count,
                tracepoint=tracepoint, requested=requested, stop_on=stop,
            )
            wp.value = session._mem.read(address, size)
            session.serving.serve_watch(wp)
            session._numbers.take()
            self._by_number[wp.number] = wp
            self._conditions[wp.number] = compiled
            return wp

        return session._change(change)

    def delete(self, number: int) -> None:
        wp = self[number]

        def change() -> None:
            session = self._session
            session.serving.unserve_watch(wp)
            self._by_number.pop(wp.number, None)
            self._conditions.pop(wp.number, None)
            session.hits.forget(wp.number)
            session.serving.replan(self)

        self._session._change(change)

    def enable(self, number: int) -> None:
        self._set_enabled(self[number], True)

    def disable(self, number: int) -> None:
        self._set_enabled(self[number], False)

    def _set_enabled(self, wp: Watchpoint, enabled: bool) -> None:
        session = self._session

        def change() -> None:
            if enabled and not wp.enabled:
                wp.value = session.read_watched(wp)
                session.serving.serve_watch(wp)
            elif not enabled and wp.enabled:
                session.serving.unserve_watch(wp)
                session.serving.replan(self)
            wp.enabled = enabled

        session._change(change)

    def condition_of(self, number: int) -> CompiledCondition | None:
        return self._conditions.get(number)

    def __getitem__(self, number: int) -> Watchpoint:
        wp = self._by_number.get(number) if isinstance(number, int) else None
        if wp is None:
            raise UsageError(f"no watchpoint number {number}")
        return wp

    def get(self, number: int) -> Watchpoint | None:
        return self._by_number.get(number)

    def __iter__(self) -> Iterator[Watchpoint]:
        return iter(sorted(self._by_number.values(), key=lambda w: w.number))

    def __len__(self) -> int:
        return len(self._by_number)

    def __contains__(self, number: object) -> bool:
        return number in self._by_number


def parse_kind(kind: Kind | str) -> Kind:
    try:
        return kind if isinstance(kind, Kind) else Kind(str(kind).lower())
    except ValueError:
        raise UsageError(f"breakpoint kind must be auto, hw or sw, not {kind!r}") from None


def parse_access(access: Access | str) -> Access:
    try:
        return access if isinstance(access, Access) else Access(str(access).lower())
    except ValueError:
        raise UsageError(f"watch access must be write, read or access, not {access!r}") from None


def parse_stop_on(stop_on: StopOn | str) -> StopOn:
    try:
        return stop_on if isinstance(stop_on, StopOn) else StopOn(str(stop_on).lower())
    except ValueError:
        raise UsageError(f"stop_on must be 'change' or 'store', not {stop_on!r}") from None
