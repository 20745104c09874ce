"""Frames as gdb numbers them: physical frames with inlined calls expanded.

The unwinder (:mod:`kvmbench.symbols.unwind`) finds physical frames, one
per machine call. gdb shows more: a call that the compiler inlined is a
frame of its own (DWARF 5, 3.3.8.2 "Inlined Subroutines"), sharing the
registers of the function it was inlined into, whose source line is then
the call site. :func:`source_frames` turns a backtrace into that list of
:class:`SourceFrame`; each one knows its function, innermost block, source
location and the :class:`~kvmbench.symbols.locations.FrameView` its
variables are evaluated in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from kvmbench.symbols.locations import FrameView
from kvmbench.symbols.model import SourceLocation, Symbol
from kvmbench.symbols.unwind import Backtrace, Frame, UnwindMethod
from kvmbench.symbols.units import CallSite, DebugUnits, Scope, ScopeKind

#: How many tail calls in a row are searched for between two frames.
MAX_TAIL_CALLS = 4


@dataclass(eq=False)
class SourceFrame:
    """One frame of gdb's ``bt``.

    ``function`` is the function (or inlined function) executing, None
    where there is no DWARF; ``block`` the innermost scope at the pc;
    ``symbol`` the ELF symbol at the pc (for frames without DWARF);
    ``location`` the source line (the call site in a frame whose callee
    was inlined into it). ``inlined_callee`` is true when the next inner
    frame is an inlined call within this one (gdb then shows no address).
    """

    level: int
    physical: Frame
    function: Scope | None
    block: Scope | None
    symbol: Symbol | None
    location: SourceLocation | None
    view: FrameView = field(repr=False)
    inlined_callee: bool = False

    @property
    def pc(self) -> int:
        """The frame's pc (the return address for callers)."""
        return self.physical.pc

    @property
    def lookup_pc(self) -> int:
        """The pc symbols and lines are looked up with (pc - 1 in callers)."""
        return self.physical.lookup_pc

    @property
    def is_tail_call(self) -> bool:
        """Whether this frame was recovered from a tail call site (gdb's TAILCALL_FRAME)."""
        return self.physical.method is UnwindMethod.TAIL_CALL

    @property
    def is_inlined(self) -> bool:
        """Whether this frame is an inlined call (gdb's INLINE_FRAME)."""
        return self.function is not None and self.function.kind is ScopeKind.INLINED_FUNCTION

    @property
    def name(self) -> str | None:
        """The function's name: from DWARF, else from the ELF symbol."""
        if self.function is not None and self.function.name is not None:
            return self.function.name
        return self.symbol.name if self.symbol is not None else None

    def iter_blocks(self) -> Iterator[Scope]:
        """The blocks from the innermost at the pc out to this frame's function (gdb's order)."""
        return blocks_to_function(self.block)


def blocks_to_function(block: Scope | None) -> Iterator[Scope]:
    """``block`` and its parents out to the function holding it (gdb's order)."""
    scope = block
    while scope is not None:
        yield scope
        if scope.is_function:
            return
        scope = scope.parent


@dataclass(frozen=True)
class FrameList:
    """gdb's frames, innermost first, and why the walk stopped early (None: outermost reached)."""

    frames: tuple[SourceFrame, ...]
    stop_reason: str | None

    def __iter__(self) -> Iterator[SourceFrame]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> SourceFrame:
        return self.frames[index]


def source_frames(
    backtrace: Backtrace,
    units: DebugUnits | None,
    *,
    line_at: Callable[[int], SourceLocation | None],
    symbol_at: Callable[[int], Symbol | None],
) -> FrameList:
    """Expand ``backtrace``'s physical frames into gdb's frames.

    ``line_at(pc)`` is the line table (addr2line), ``symbol_at(pc)`` the
    ELF symbol containing a pc.
    """
    views: list[FrameView] = []
    physical = _with_tail_calls(list(backtrace.frames), units) if units is not None else list(backtrace.frames)
    for index, frame in enumerate(physical):
        function = units.function_at(frame.lookup_pc) if units is not None else None
        view = FrameView(
            context=frame.context,
            pc=frame.lookup_pc,
            cfa=frame.cfa,
            function=function,
            return_address=frame.pc if frame.level > 0 else None,
        )
        views.append(view)
    for index, view in enumerate(views):
        view.caller = _caller_of(views, index)

    frames: list[SourceFrame] = []
    for frame, view in zip(physical, views, strict=True):
        pc = frame.lookup_pc
        scope = units.scope_at(pc) if units is not None else None
        symbol = symbol_at(pc)
        chain: list[tuple[Scope, Scope]] = []
        while scope is not None:
            function = scope.function()
            chain.append((function, scope))
            scope = function.parent if function.kind is ScopeKind.INLINED_FUNCTION else None
        if not chain:
            frames.append(SourceFrame(len(frames), frame, None, None, symbol, line_at(pc), view))
            continue
        for depth, (function, block) in enumerate(chain):
            location = line_at(pc) if depth == 0 else chain[depth - 1][0].call_site
            frames.append(SourceFrame(
                len(frames), frame, function, block, symbol, location, view,
                inlined_callee=depth > 0,
            ))
    return FrameList(tuple(frames), backtrace.stop_reason)


def _caller_of(views: list[FrameView], index: int) -> Callable[[], FrameView | None]:
    def caller() -> FrameView | None:
        return views[index + 1] if index + 1 < len(views) else None

    return caller


def _with_tail_calls(frames: list[Frame], units: DebugUnits) -> list[Frame]:
    """Insert the frames of tail calls between callers and callees, as gdb does.

    A caller's call site says whom it called (DW_AT_call_origin); when the
    frame below runs another function, that callee reached it by tail
    calls (DW_AT_call_tail_call sites). The chain is added when exactly
    one exists (gdb's call_site_find_chain keeps only what is certain).
    The added frames have the pc just after their tail call and the
    registers of the frame below.
    """
    result: list[Frame] = []
    for index, frame in enumerate(frames):
        result.append(frame)
        if index + 1 >= len(frames):
            break
        caller = frames[index + 1]
        site = units.call_site(caller.pc)
        callee = units.function_at(frame.lookup_pc)
        if site is None or site.origin_name is None or callee is None or callee.name is None:
            continue
        if site.origin_name == callee.name:
            continue
        chain = _tail_chain(units, site.origin_name, callee.name)
        for tail_site in reversed(chain or []):
            # The frame's context is the callee's caller view: registers
            # as the callee will return with them.
            result.append(Frame(frame.level + 1, tail_site.return_pc, frame.cfa, UnwindMethod.TAIL_CALL,
                                caller.context, None))
    return result


def _tail_chain(units: DebugUnits, start: str, target: str) -> list[CallSite] | None:
    """The unique chain of tail-call sites leading from function ``start`` to ``target``."""
    found: list[list[CallSite]] = []
    paths: list[tuple[str, list[CallSite]]] = [(start, [])]
    for _ in range(MAX_TAIL_CALLS):
        next_paths = []
        for name, path in paths:
            for site in units.tail_calls_from(name):
                if site.origin_name is None or any(s is site for s in path):
                    continue
                if site.origin_name == target:
                    found.append([*path, site])
                else:
                    next_paths.append((site.origin_name, [*path, site]))
        paths = next_paths
    return found[0] if len(found) == 1 else None
