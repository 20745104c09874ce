"""A debug session over one guest: the engine's front door.

A :class:`Session` drives one :class:`~kvmbench.backends.target.Target`
(kvmbench's VMM, a GDB stub) and composes the engine's parts: serving
requests (:mod:`~kvmbench.engine.serving`), run control
(:mod:`~kvmbench.engine.runcontrol`), stop classification
(:mod:`~kvmbench.engine.stops`), the store path
(:mod:`~kvmbench.engine.stores`), step-compare
(:mod:`~kvmbench.engine.stepcompare`), counting
(:mod:`~kvmbench.engine.counting`), in-guest probes
(:mod:`~kvmbench.engine.probes`), the target's own counters
(:mod:`~kvmbench.engine.execcounters`) and frames (:mod:`~kvmbench.engine.frames`).

Threads: run control (``cont``, ``stepi``...) blocks the calling thread.
:meth:`Session.pause` may be called from any other thread. Changes from
another thread while the guest runs (breakpoints, watchpoints, register
and memory writes) are applied by pausing the guest, applying them and
resuming it, invisibly to the run; reads while it runs are refused with
:class:`~kvmbench.errors.SessionStateError`. A change and the start of a
run never interleave.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kvmbench.backends.capabilities import HostCapabilities
from kvmbench.backends.target import Target
from kvmbench.engine.counting import Counting
from kvmbench.engine.execcounters import ExecCounters
from kvmbench.engine.frames import Frames
from kvmbench.engine.hitlog import HitLog
from kvmbench.engine.model import Kind, Mechanism, RunState, Stop, StopReason, Watchpoint
from kvmbench.engine.probes import Probes
from kvmbench.engine.requests import Breakpoints, RequestNumbers, Watchpoints
from kvmbench.engine.runcontrol import RunControl
from kvmbench.engine.serving import Serving
from kvmbench.engine.sourcestep import SourceStepping
from kvmbench.engine.stepcompare import StepCompare
from kvmbench.engine.stores import Stores
from kvmbench.engine.views import EngineMemory, Memory, Registers
from kvmbench.errors import (
    BreakpointError,
    GuestError,
    GuestMemoryError,
    SessionStateError,
    UsageError,
)
from kvmbench.symbols.frames import FrameList, SourceFrame
from kvmbench.symbols.table import SymbolTable

__all__ = ["RunState", "Session"]

T = TypeVar("T")

_CANONICAL_LIMIT = 1 << 47
#: How long a change from another thread waits for the running guest to pause.
CHANGE_TIMEOUT = 10.0


class _Change:
    """A change another thread asked for while the guest runs."""

    def __init__(self, apply: Callable[[], object]) -> None:
        self.apply = apply
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.apply()
        except BaseException as e:  # handed to the thread that asked
            self.error = e
        finally:
            self.done.set()


def _canonical(address: int) -> bool:
    """x86-64 addresses are canonical: bits 63..47 all equal (SDM vol. 1, 3.3.7.1)."""
    return address < _CANONICAL_LIMIT or address >= (1 << 64) - _CANONICAL_LIMIT


class Session:
    """A live guest under the debugger. Create with :func:`kvmbench.open`."""

    def __init__(
        self,
        target: Target,
        symbols: SymbolTable | Callable[[], SymbolTable],
        image: Path | None = None,
    ) -> None:
        self.target = target
        # A loader is called on first use: parsing DWARF costs more than
        # booting the guest, and running needs no symbols.
        self._symbols = symbols
        self.image = image
        self.hits = HitLog()
        self.serving = Serving(target)
        self.probes = Probes(self)
        self.serving.probes = self.probes
        #: Tracepoints the target counts itself (the plugin counter).
        self.exec_counters = ExecCounters(self)
        self.serving.exec_counters = self.exec_counters
        self.breakpoints = Breakpoints(self)
        self.watchpoints = Watchpoints(self)
        self.counting = Counting(self)
        self.frames = Frames(self)
        self.stores = Stores(self)
        self.stepcompare = StepCompare(self)
        self.runcontrol = RunControl(self)
        self.sourcestep = SourceStepping(self)
        #: gdb's selected frame (``frame N``, ``up``, ``down``); 0 after every stop.
        self.selected_frame = 0
        self._numbers = RequestNumbers()
        self.state = RunState.STOPPED
        self.last_stop: Stop | None = None
        #: The pc of the last stop the user saw; resuming from it never
        #: reports a breakpoint there (its hit was reported).
        self.reported_pc: int | None = target.pc
        self._lock = threading.RLock()
        self._changes: list[_Change] = []
        self._pause_wanted = False
        self._runner: int | None = None
        self.regs = Registers(target, self._require_inspectable, self._change)
        self.mem = Memory(target, self.serving.patches, self._require_inspectable, self._change)
        # The engine's own view, used while the guest is formally running.
        self._mem = EngineMemory(target, self.serving.patches)

    # --- state ----------------------------------------------------------------------

    def _require_stopped(self) -> None:
        if self.state is RunState.RUNNING:
            raise SessionStateError("the guest is running; pause it first")
        if self.state is RunState.CLOSED:
            raise SessionStateError("the session is closed")
        if self.state is not RunState.STOPPED:
            raise SessionStateError(f"the guest has {self.state.value}; boot it again")

    def _require_inspectable(self) -> None:
        """Reads need a guest that is not running (an exited or crashed one
        still has its memory and registers) and a session not closed."""
        if self.state is RunState.RUNNING and threading.get_ident() != self._runner:
            raise SessionStateError("the guest is running; pause it first")
        if self.state is RunState.CLOSED:
            raise SessionStateError("the session is closed")

    def _change(self, apply: Callable[[], T]) -> T:
        """Apply a change to what is armed, the registers or memory: now if
        the guest is stopped (atomically with the start of any run), else by
        pausing the running guest, applying it and resuming."""
        with self._lock:
            if self.state is RunState.CLOSED:
                raise SessionStateError("the session is closed")
            if self.state is not RunState.RUNNING or threading.get_ident() == self._runner:
                return apply()
            change = _Change(apply)
            self._changes.append(change)
            self.target.pause()
        if not change.done.wait(CHANGE_TIMEOUT):
            with self._lock:
                if change in self._changes:
                    self._changes.remove(change)
                    raise SessionStateError("the running guest did not pause to apply the change")
            change.done.wait()
        if change.error is not None:
            raise change.error
        return change.result  # type: ignore[return-value]

    def apply_while_paused(self) -> bool:
        """The target paused during a run: apply the changes other threads
        queued. True if the run should go on (nobody asked for the pause)."""
        with self._lock:
            changes, self._changes = self._changes, []
            wanted, self._pause_wanted = self._pause_wanted, False
        for change in changes:
            change.run()
        if changes:
            self.serving.invalidate()
        return not wanted

    @property
    def symbols(self) -> SymbolTable:
        """The guest image's symbols (ELF, DWARF), loaded on first use."""
        if not isinstance(self._symbols, SymbolTable):
            self._symbols = self._symbols()
        return self._symbols

    @property
    def program(self):  # type: ignore[no-untyped-def]
        """The image as a source-level debugger reads it
        (:class:`~kvmbench.symbols.program.Program`: CFI, DWARF scopes and
        types), loaded on first use."""
        return self.frames.program

    @property
    def capabilities(self) -> HostCapabilities:
        """What the target's host was probed to deliver."""
        return self.target.capabilities.features

    @property
    def console(self) -> str:
        """Everything the guest printed."""
        return self.target.console

    @property
    def pc(self) -> int:
        return self.regs.rip

    @property
    def catch_guest_traps(self) -> bool:
        """Stop at traps the guest raises itself instead of handing them over."""
        return self.serving.catch_guest_traps

    @catch_guest_traps.setter
    def catch_guest_traps(self, value: bool) -> None:
        def change() -> None:
            self.serving.catch_guest_traps = bool(value)
            self.serving.invalidate()

        self._change(change)

    def close(self) -> None:
        """Restore patched code, free the guest and every fd. Idempotent."""
        with self._lock:
            if self.state is RunState.RUNNING:
                raise SessionStateError("pause the guest before closing the session")
            if self.state is RunState.CLOSED:
                return
            self.state = RunState.CLOSED
        try:
            if not self.target.closed:
                self.serving.remove_all()
        finally:
            self.target.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- locations --------------------------------------------------------------------

    def _resolve(self, location: str | int) -> tuple[str, int]:
        if isinstance(location, int):
            if not 0 <= location < 1 << 64:
                raise UsageError(f"{location:#x} is not a 64-bit address")
            return f"{location:#x}", location
        text = location.strip()
        if not text:
            raise UsageError("empty location")
        return text, self.symbols.resolve(text)

    def _reserved(self, physical: int, length: int) -> str | None:
        for start, end, what in self.target.capabilities.reserved:
            if start < physical + length and physical < end:
                return what
        return None

    def _check_code_address(self, address: int, kind: Kind = Kind.AUTO,
                            mechanism: Mechanism | None = None) -> None:
        """Refuse code addresses no mechanism can serve. A hardware slot
        matches linear addresses, so ``hw`` may wait on a page that is not
        mapped yet (code a kernel loads later); a software trap cannot."""
        if not _canonical(address):
            raise BreakpointError(f"cannot break at {address:#x}: not a canonical x86-64 address")
        hardware = kind is Kind.HW or mechanism in (Mechanism.HW_EXECUTE,
                                                    Mechanism.STUB_HW_BREAKPOINT)
        if not self.target.capabilities.physical_memory:
            return  # the stub checks its own breakpoints
        try:
            physical = self.target.translate(address)
        except GuestMemoryError as e:
            if hardware:
                return
            raise BreakpointError(
                f"cannot break at {address:#x}: {e} (a hardware breakpoint can wait for it: hbreak)"
            ) from None
        if not self.target.contains_physical(physical):
            raise BreakpointError(f"cannot break at {address:#x}: outside guest memory")
        owner = self._reserved(physical, 1)
        if owner is not None and not hardware:
            raise BreakpointError(
                f"cannot plant a trap at {address:#x}: it is the VMM's {owner} (hbreak can watch it)")

    def _check_data_range(self, address: int, length: int,
                          mechanism: Mechanism | None = None) -> None:
        if not _canonical(address) or not _canonical(address + length - 1):
            raise BreakpointError(f"cannot watch {address:#x}+{length}: not canonical x86-64 addresses")
        if not self.target.capabilities.physical_memory:
            return
        for offset in range(0, length, 4096):
            self._check_data_piece(address + offset, min(4096, length - offset), mechanism)
        self._check_data_piece(address + length - 1, 1, mechanism)

    def _check_data_piece(self, address: int, length: int, mechanism: Mechanism | None) -> None:
        try:
            physical = self.target.translate(address)
        except GuestMemoryError as e:
            raise BreakpointError(f"cannot watch {address:#x}: {e}") from None
        if not self.target.contains_physical(physical, min(length, 4096 - (physical & 0xFFF))):
            raise BreakpointError(f"cannot watch {address:#x}+{length}: outside guest memory")
        owner = self._reserved(physical, length)
        if owner is not None and mechanism is not Mechanism.HW_DATA:
            raise BreakpointError(
                f"cannot watch {address:#x}+{length} by trapping its page: it is the VMM's "
                f"{owner} (a hardware data slot can: kind='hw')")

    # --- memory the engine touches for the guest --------------------------------------

    def read_watched(self, wp: Watchpoint) -> bytes:
        """The watched bytes as the guest sees them now."""
        return self._mem.read(wp.address, wp.length)

    # --- requests --------------------------------------------------------------------

    def continue_numbering(self, next_number: int) -> None:
        """Number the next breakpoint or watchpoint ``next_number`` (or later):
        a front end that sets a run's breakpoints again keeps their numbers,
        as gdb keeps them across ``run``."""
        if isinstance(next_number, bool) or not isinstance(next_number, int) or next_number < 1:
            raise UsageError(f"a breakpoint number is a positive integer, not {next_number!r}")
        self._numbers.next_number = max(self._numbers.next_number, next_number)

    def number_next(self, number: int) -> None:
        """Give the next request exactly ``number`` (unused, above the last);
        see :meth:`continue_numbering`."""
        taken = {bp.number for bp in self.breakpoints} | {wp.number for wp in self.watchpoints}
        if number in taken:
            raise UsageError(f"breakpoint number {number} is taken")
        self._numbers.next_number = number

    def slot_usage(self) -> tuple[int, int, list[tuple[str, str]]]:
        """(used, total, [(slot, holder)]) of the hardware debug slots."""
        slots = self.serving.slots
        if slots is None:
            return 0, 0, []
        holders = [(h.slot, str(h.owner)) for h in slots.holders()]
        return slots.used, slots.total, holders

    # --- run control -------------------------------------------------------------------

    def pause(self) -> None:
        """Stop a running guest (from any thread); the running call returns a
        ``paused`` stop. A breakpoint condition that never returns is
        interrupted. Does nothing when the guest is not running."""
        with self._lock:
            if self.state is RunState.RUNNING:
                self._pause_wanted = True
                self.target.pause()
                self.counting.interrupt()

    def cont(self) -> Stop:
        """Run until a breakpoint, watchpoint, pause, exit or crash."""
        return self._run(self.runcontrol.cont)

    def stepi(self, count: int = 1) -> Stop:
        """Execute ``count`` instructions (stepping into calls)."""
        count = _step_count(count)
        return self._run(lambda: self.runcontrol.stepi(count))

    def nexti(self, count: int = 1) -> Stop:
        """Execute ``count`` instructions, running called functions to their return."""
        count = _step_count(count)
        return self._run(lambda: self.runcontrol.nexti(count))

    def finish(self, frame: int | None = None) -> Stop:
        """Run until a function returns to its caller: the selected frame's
        (gdb's ``finish``), or frame number ``frame`` of :meth:`frame_list`.
        The stop carries the return value (rax). Refused where the caller
        cannot be found without guessing (a frameless function past its
        entry, without CFI)."""
        level = self.selected_frame if frame is None else frame
        if level == 0:
            return self._run(self.runcontrol.finish)
        physical = self.source_frame(level).physical.level
        return self._run(lambda: self.sourcestep.finish(physical))

    def step(self, count: int = 1) -> Stop:
        """gdb's ``step [N]``: run to the start of another source line,
        entering called functions that have line information."""
        count = _step_count(count)
        return self._run(lambda: self.sourcestep.lines(count, over=False))

    def next(self, count: int = 1) -> Stop:
        """gdb's ``next [N]``: run to the start of another source line in this
        frame or an outer one, running called functions to their return."""
        count = _step_count(count)
        return self._run(lambda: self.sourcestep.lines(count, over=True))

    def until_line(self) -> Stop:
        """gdb's ``until`` without an argument: ``next``, but never stopping in
        a line before the current one (a loop's jump back runs on)."""
        return self._run(lambda: self.sourcestep.line(over=True, from_entry=True))

    # --- frames ---------------------------------------------------------------------

    def frame_list(self, limit: int = 1024, *, past_main: bool = False) -> FrameList:
        """gdb's frames of the stopped guest, innermost first (inlined calls
        expanded; ending at ``main`` unless ``past_main``)."""
        self._require_inspectable()
        return self.frames.source_frames(limit, past_main=past_main)

    def source_frame(self, level: int | None = None) -> SourceFrame:
        """Frame ``level`` (default: the selected one) as gdb numbers frames."""
        level = self.selected_frame if level is None else level
        # One physical frame more: a frame's entry values come from its caller's call site.
        frames = self.frame_list(level + 2)
        if not 0 <= level < len(frames):
            raise UsageError("No frame at level " + str(level) + ".")
        return frames[level]

    def select_frame(self, level: int) -> SourceFrame:
        """Make frame ``level`` the selected one (gdb's ``frame N``)."""
        frame = self.source_frame(level)
        self.selected_frame = level
        return frame

    def advance(self, location: str | int) -> Stop:
        """Run until ``location`` is reached (in any frame) or the current
        function returns, as gdb's ``advance``."""
        return self._run(lambda: self._run_to_location(location, same_frame=False))

    def until(self, location: str | int | None = None) -> Stop:
        """gdb's ``until``: with a location, run until it is reached in the
        current frame or the frame returns; without, step over the current
        instruction but do not stop in a loop that jumps backwards."""
        if location is not None:
            return self._run(lambda: self._run_to_location(location, same_frame=True))
        return self._run(self.runcontrol.until_next)

    def _run_to_location(self, location: str | int, same_frame: bool) -> Stop:
        from kvmbench.engine.requests import _check_location

        text, address = self._resolve(_check_location(location))
        self._check_code_address(address)
        return self.runcontrol.run_to_location(address, text, same_frame)

    def backtrace(self, limit: int = 64) -> list[int]:
        """The pcs of the guest's call chain, innermost first; it ends at the
        first frame whose caller cannot be verified."""
        self._require_inspectable()
        return self.frames.backtrace(limit)

    def _run(self, body: Callable[[], Stop]) -> Stop:
        """Run ``body`` with the guest marked running; every stop goes through here."""
        with self._lock:
            self._require_stopped()
            self.state = RunState.RUNNING
            self._pause_wanted = False
            self._runner = threading.get_ident()
        target = self.target
        # Translations are cached while the guest runs (a hit costs no page
        # walk); the user may have edited page tables since the last stop.
        target.flush_translations()
        stop: Stop | None = None
        try:
            try:
                stop = body()
            except GuestError as e:
                stop = Stop(StopReason.CRASHED, e.rip, detail=str(e))
            # Out of a probe's trampoline, and its hits counted.
            stop = self.probes.after_stop(stop)
        finally:
            with self._lock:
                self._runner = None
                self.selected_frame = 0
                if stop is None or stop.reason not in (StopReason.EXITED, StopReason.CRASHED):
                    self.state = RunState.STOPPED
                elif stop.reason is StopReason.EXITED:
                    self.state = RunState.EXITED
                else:
                    self.state = RunState.CRASHED
                changes, self._changes = self._changes, []
                for change in changes:  # queued while the run was ending
                    change.run()
            if not target.closed:
                target.flush_console()
                target.flush_translations()  # the guest may have changed its page tables
                self.exec_counters.sync()  # what the target counted during the run
        if stop.breakpoint is not None:
            bp = self.breakpoints.get(stop.breakpoint)
            if bp is not None and bp.temporary:
                self.breakpoints.delete(bp.number)
        self.reported_pc = stop.pc
        self.last_stop = stop
        return stop


def _step_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int):
        raise UsageError(f"a step count is an integer, not {count!r}")
    if count < 1:
        raise UsageError("step count must be at least 1")
    return count
