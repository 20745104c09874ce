"""Stepping by source line, as gdb's ``step``, ``next``, ``until`` and ``finish`` do.

The rules are gdb's (infrun.c, process_event_stop_test), over the line
table (:class:`~kvmbench.symbols.dwarf.DebugInfo`) and the frames of
:mod:`kvmbench.engine.frames`:

- A step runs through the *step range*: the line-table row holding the pc,
  [its start, the next row); a function without line information is one
  range ("Single stepping until exit from function F, which has no line
  number information."). Instructions are single-stepped, interrupts held.
- Leaving the range into a function the stepping frame called ("stepped
  into subroutine": the new frame's caller is the stepping frame): ``next``
  runs to the return address; ``step`` runs to the end of the callee's
  prologue (gdb's handle_step_into_function) if the callee has line
  information, else returns from it like ``next``. Running to a return
  address plants a trap only where :meth:`Frames.verified_caller` says the
  caller is certain; the trap counts only in the caller's frame (the stack
  pointer back above the callee's frame), so recursion is stepped over.
- Elsewhere outside the range: at the start of a statement of another line,
  the step ends; in the middle of a line (a return into the caller, a jump
  into a loop's condition) the range becomes that line and stepping goes
  on, as gdb does so that ``for (;;)`` lines step well.
- ``until`` is ``next`` whose range starts at the function's entry, so a
  jump back into the loop does not stop.
- An interrupt the step delivered anyway (the VMM had queued one before the
  step) is never stepped into: the handler runs to its return with a trap
  at the interrupted instruction, and stepping goes on.

Breakpoints the steps arrive at count as the engine counts them, and one
that stops ends the step with its own stop, as in gdb.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmbench.arch import instructions
from kvmbench.engine.model import Stop, StopReason
from kvmbench.errors import FrameUnknown, GuestMemoryError, KvmbenchError, SymbolError, UsageError
from kvmbench.symbols.unwind import Frame

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

_MASK64 = (1 << 64) - 1
_ENDBR64 = bytes.fromhex("f30f1efa")
_PUSH_RBP = b"\x55"
_MOV_RSP_RBP = (bytes.fromhex("4889e5"), bytes.fromhex("488bec"), bytes.fromhex("89e5"),
                bytes.fromhex("8bec"))
#: DW_LANG_Mips_Assembler (DWARF 5, 7.12): gdb skips no prologue in assembly.
_DW_LANG_ASSEMBLER = 0x8001

FrameId = tuple[int | None, int]


@dataclass
class _Range:
    """What one step is stepping through (gdb's thread control state)."""

    start: int
    end: int
    frame: FrameId
    #: (file, line) the step started from; None when a line is to be ignored.
    line: tuple[str, int] | None


class SourceStepping:
    """The source-level run loops of one session (called with the session marked running)."""

    def __init__(self, session: "Session") -> None:
        self._s = session

    # --- facts --------------------------------------------------------------------

    @property
    def _debug(self):  # type: ignore[no-untyped-def]
        return self._s.symbols.debug

    def _line(self, pc: int):  # type: ignore[no-untyped-def]
        """gdb's sal for ``pc`` (find_pc_line), None where there is no line."""
        debug = self._debug
        return debug.get_line_entry(pc) if debug is not None else None

    def _line_end(self, pc: int, start: int) -> int:
        debug = self._debug
        end = debug.get_line_end(pc) if debug is not None else None
        return end if end is not None else start

    def _innermost(self) -> Frame:
        frames = self._s.frames
        return frames.program.unwinder.innermost(frames.context)

    def _frame_id(self, frame: Frame) -> FrameId:
        return self._s.frames.frame_id(frame)

    def _caller_id(self, frame: Frame) -> FrameId | None:
        try:
            caller = self._s.frames.program.unwinder.caller(frame)
        except KvmbenchError:
            return None
        return self._frame_id(caller) if caller is not None else None

    def _function_start(self, pc: int) -> int | None:
        symbol = self._s.symbols.get_containing(pc)
        return symbol.address if symbol is not None else None

    # --- one instruction ---------------------------------------------------------------

    def _expected(self, pc: int) -> set[int] | None:
        """Where the instruction at ``pc`` can go; None where it cannot be told."""
        s = self._s
        try:
            insn = instructions.decode(s._mem.read(pc, 15), pc)
        except (GuestMemoryError, UsageError):
            return None
        if insn.is_interrupt or (insn.is_branch and insn.branch_target is None and not insn.is_ret):
            return None
        if insn.mnemonic.startswith(("iret", "sysret", "hlt")):
            return None
        if insn.is_ret:
            try:
                return {int.from_bytes(s._mem.read(s.target.read_register("rsp"), 8), "little")}
            except (GuestMemoryError, UsageError):
                return None
        expected = {insn.next_address}
        if insn.branch_target is not None:
            expected.add(insn.branch_target)
        if insn.repeat:
            expected.add(pc)
        return expected

    def instruction(self) -> Stop:
        """One instruction, never into an interrupt handler; a breakpoint it
        arrives at counts (and may stop)."""
        s = self._s
        pc = s.target.pc
        rsp = s.target.read_register("rsp")
        expected = self._expected(pc)
        stop = s.runcontrol.stepi(1)
        if stop.reason is not StopReason.STEP:
            return stop
        here = s.target.pc
        if expected is not None and here not in expected:
            resumed = self._interrupted(rsp, expected | {pc})
            if resumed is not None:
                if resumed.reason is not StopReason.STEP:
                    return resumed
                here = s.target.pc
                if here == pc:  # the interrupt came before the instruction ran
                    return self.instruction()
        if here != pc:
            arrived = s.runcontrol.arrive(here)
            s.reported_pc = here  # its hit is counted: resuming from here steps off it
            if arrived is not None:
                return arrived
        return stop

    def _interrupted(self, rsp_before: int, expected: set[int]) -> Stop | None:
        """The step ran into an interrupt or exception handler: run it to its
        return to the interrupted instruction. None when the stack shows no
        interrupt frame (the step went somewhere else on its own).

        The frame is found on the handler's stack between rsp and where the
        interrupted code's stack was: an interrupted rip the step could have
        gone to (or the instruction itself), a selector, and a saved rsp
        next to the one before the step (SDM vol. 3, 6.14.2)."""
        s = self._s
        rsp = s.target.read_register("rsp")
        slot = rsp
        while slot <= rsp_before and slot - rsp <= 64 * 8:
            try:
                rip, cs, _, saved_rsp = (int.from_bytes(s._mem.read(slot + 8 * k, 8), "little")
                                         for k in range(4))
            except GuestMemoryError:
                return None
            if rip in expected and cs < 0x10000 and abs(saved_rsp - rsp_before) <= 16:
                return s.runcontrol.run_to(
                    rip, StopReason.STEP, lambda: s.target.read_register("rsp") >= saved_rsp)
            slot += 8
        return None

    # --- running to a return address ------------------------------------------------

    def _return_from(self, frame: Frame) -> Stop:
        """Run until ``frame`` returns to its caller (a verified caller only)."""
        s = self._s
        caller = s.frames.verified_caller(frame)
        if caller is None:
            raise FrameUnknown("cannot step over a call from the outermost frame")
        top = frame.cfa if frame.cfa is not None else caller.context.read_register("rsp")
        return s.runcontrol.run_to(caller.pc, StopReason.STEP,
                                   lambda: s.target.read_register("rsp") >= top)

    def _prologue_end(self, function: int, end: int) -> int:
        """Where ``step`` stops in a function it entered (gdb's handle_step_into_function)."""
        s = self._s
        target = function
        units = getattr(s.frames.program, "units", None)
        unit = units.unit_at(function) if units is not None else None
        language = unit.top.attributes.get("DW_AT_language") if unit is not None else None
        if language is None or language.value != _DW_LANG_ASSEMBLER:
            # amd64_skip_prologue for gcc code: past push %rbp; mov %rsp,%rbp
            # when both are there, else the first instruction (frameless).
            try:
                code = s._mem.read(function, 12)
            except GuestMemoryError:
                code = b""
            at = 4 if code.startswith(_ENDBR64) else 0
            if code[at:at + 1] == _PUSH_RBP:
                for mov in _MOV_RSP_RBP:
                    if code[at + 1:at + 1 + len(mov)] == mov:
                        target = function + at + 1 + len(mov)
                        break
        sal = self._line(target)
        if sal is not None:
            line_end = self._debug.get_line_end(target)
            if line_end is not None and sal.address != target and line_end < end:
                target = line_end
        return target

    # --- a source step ----------------------------------------------------------------

    def _range_at(self, pc: int, frame: Frame, *, from_entry: bool) -> tuple[_Range, str]:
        """The step range at ``pc``; a message when the function has no lines."""
        sal = self._line(pc)
        message = ""
        if sal is None:
            symbol = self._s.symbols.get_containing(pc)
            if symbol is None:
                raise SymbolError("Cannot find bounds of current function")
            start, end = symbol.address, max(symbol.end, symbol.address + 1)
            message = (f"Single stepping until exit from function {symbol.name},\n"
                       "which has no line number information.")
            line = None
        else:
            start, end = sal.address, self._line_end(pc, sal.address)
            line = (sal.location.file, sal.location.line)
        if from_entry:
            function = self._function_start(pc)
            if function is not None:
                start = function
        return _Range(start, end, self._frame_id(frame), line), message

    def line(self, *, over: bool, from_entry: bool = False) -> Stop:
        """One ``step`` (``over=False``), ``next`` or ``until`` (``from_entry``)."""
        s = self._s
        frame = self._innermost()
        here, message = self._range_at(s.target.pc, frame, from_entry=from_entry)
        start_function = self._function_start(s.target.pc)
        outermost = self._caller_id(frame) is None
        stop = self.instruction()
        while True:
            if stop.reason is not StopReason.STEP:
                return stop
            pc = s.target.pc
            if here.start <= pc < here.end:
                stop = self.instruction()
                continue
            frame = self._innermost()
            current = self._frame_id(frame)
            if current != here.frame and self._caller_id(frame) == here.frame and (
                    not outermost or start_function != self._function_start(pc)):
                # Stepped into a subroutine.
                function = self._function_start(pc)
                if not over and function is not None and self._line(function) is not None:
                    symbol = s.symbols.get_containing(pc)
                    end = max(symbol.end, function + 1) if symbol is not None else function + 1
                    target = self._prologue_end(function, end)
                    if target == pc:
                        return self._ended(stop, message, here, start_function)
                    stop = s.runcontrol.run_to(target, StopReason.STEP, lambda: True)
                    return self._ended(stop, message, here, start_function)
                stop = self._return_from(frame)
                continue
            sal = self._line(pc)
            if not over and sal is None and s.symbols.get_containing(pc) is None:
                # Stepped into code nothing describes: return from it if that is certain.
                try:
                    stop = self._return_from(frame)
                except FrameUnknown:
                    return self._ended(stop, message, here, start_function)
                continue
            if sal is None:
                return self._ended(stop, message, here, start_function)
            refresh = True
            line: tuple[str, int] | None = (sal.location.file, sal.location.line)
            if pc == sal.address and line != here.line:
                if sal.is_stmt:
                    return self._ended(stop, message, here, start_function)
                if current == here.frame:
                    refresh = False
                else:
                    line = None
            here.start, here.end = sal.address, self._line_end(pc, sal.address)
            if refresh:
                here.frame, here.line = current, line
            stop = self.instruction()

    def _ended(self, stop: Stop, message: str, here: _Range | None = None,
               start_function: int | None = None) -> Stop:
        """The step's stop, with what decides how gdb prints it (the frame the
        step ended up stepping in, and the function it started in)."""
        if stop.reason is not StopReason.STEP:
            return stop
        extra = dict(stop.extra)
        if message:
            extra["message"] = message
        if here is not None:
            extra["step_frame"] = here.frame
            extra["step_function"] = start_function
        return Stop(stop.reason, stop.pc, extra=extra)

    def lines(self, count: int, *, over: bool) -> Stop:
        """``step N`` / ``next N``: N lines, ended early by any other stop."""
        stop = self.line(over=over)
        for _ in range(count - 1):
            if stop.reason is not StopReason.STEP:
                break
            stop = self.line(over=over)
        return stop

    # --- finish from any frame -----------------------------------------------------

    def finish(self, level: int) -> Stop:
        """Run until physical frame ``level`` returns; the stop carries rax."""
        s = self._s
        frame = s.frames.physical_frame(level)
        caller = s.frames.verified_caller(frame)
        if caller is None:
            raise FrameUnknown('"finish" not meaningful in the outermost frame.')
        top = caller.context.read_register("rsp")
        stop = s.runcontrol.run_to(caller.pc, StopReason.FINISH,
                                   lambda: s.target.read_register("rsp") >= top)
        if stop.reason is StopReason.FINISH:
            stop = Stop(StopReason.FINISH, stop.pc, return_value=s.target.read_register("rax"),
                        extra={"frame": level})
        return stop

