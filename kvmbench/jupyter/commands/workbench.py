"""The kernel's debugging state and the one place commands are executed.

The :class:`Workbench` holds what gdb keeps between commands: the session,
the value history (``$1``), the breakpoints as the user asked for them (so
that ``run`` boots the guest again with them, as gdb keeps breakpoints
across ``run``), the auto-display list, the last ``list`` and ``x``.
It also turns every stop into what gdb prints for it (``Breakpoint 1, fib
(n=3) at src/fib.c:12`` and the source line), runs breakpoint command lists
and the displays, and keeps the stop card's kvmbench facts (mechanism,
registers, disassembly) beside that text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kvmbench.arch import instructions
from kvmbench.engine.model import Stop, StopReason
from kvmbench.engine.session import RunState, Session
from kvmbench.errors import ExpressionError, KvmbenchError, SessionStateError
from kvmbench.expressions import Evaluator, Value, ValueHistory
from kvmbench.expressions.frames import frame_line
from kvmbench.jupyter.commands.registry import Command, lookup, split_command
from kvmbench.jupyter.display import DisasmLine, StopView
from kvmbench.symbols.frames import SourceFrame
from kvmbench.symbols.types import ArrayType, FunctionType, strip_typedefs

#: Registers shown on a stop card, in gdb's `info registers` order.
CARD_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")

#: Stops of a breakpoint command list's ``continue`` chain kept in one cell's output.
MAX_TRANSCRIPT = 200


@dataclass
class BreakpointSpec:
    """A breakpoint as the user asked for it (what ``run`` sets again)."""

    number: int
    location: str
    command: str  # break, tbreak, hbreak, sbreak, trace
    condition: str | None = None
    commands: list[str] = field(default_factory=list)
    addresses: tuple[int, ...] = ()

    @property
    def temporary(self) -> bool:
        return self.command in ("tbreak", "thbreak")


@dataclass
class WatchSpec:
    """A watchpoint as the user asked for it."""

    number: int
    expression: str
    access: str  # write, read, access
    value_type: object = None  # the expression's C type, for Old/New value
    condition: str | None = None
    commands: list[str] = field(default_factory=list)


@dataclass
class Display:
    """One ``display`` expression (gdb's auto-display list)."""

    number: int
    expression: str
    format: str = ""  # "/x" for print formats, "/4xg" for x formats
    enabled: bool = True
    #: The function whose frames the expression's locals belong to (None: global).
    function: object = None

    @property
    def examines(self) -> bool:
        letters = self.format.lstrip("/").lstrip("0123456789")
        return bool(letters) and (any(c in "is" for c in letters) or any(c in "bhwg" for c in letters)
                                  or self.format.lstrip("/")[:1].isdigit())


@dataclass
class Ran:
    """What a run-control command did: its stop, and gdb's lines around the
    stop's own (``Run till exit from ...`` before, ``Value returned ...`` after)."""

    stop: Stop
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FrameMark:
    """Where the guest was before a run: the frame's id and function (gdb's
    step_frame_id and step_start_function, which decide how a stop prints)."""

    frame: tuple[int | None, int] | None
    function: int | None


class Workbench:
    """The kernel's debugging state: the session and what gdb keeps between commands."""

    def __init__(self, on_console: Callable[[str], None] | None = None,
                 on_session: Callable[[Session | None], None] | None = None) -> None:
        self.session: Session | None = None
        self.on_console = on_console
        self._on_session = on_session
        self._last_registers: dict[str, int] = {}
        #: The last %guest's words (name and arguments): what ``run`` boots.
        self.guest_command: list[str] = []
        #: gdb's memory for ``x``: last format letter, unit size, next address.
        self.examine_format: tuple[str, int | None] = ("x", None)
        self.examine_next: int | None = None
        self.history = ValueHistory()
        self.convenience: dict[str, Value] = {}
        self.breakpoint_specs: dict[int, BreakpointSpec] = {}
        self.watch_specs: dict[int, WatchSpec] = {}
        self.displays: list[Display] = []
        self._next_display = 1
        self._lister: object | None = None
        self._missing_sources: set[str] = set()
        self._image: object | None = None
        #: The last breakpoint or watchpoint set (what a bare `commands` is for).
        self.last_breakpoint: int | None = None

    # --- dispatch ----------------------------------------------------------------

    def check(self, entry: Command) -> None:
        if not entry.needs_guest:
            return
        if self.session is None:
            raise SessionStateError("The program is not being run.  Boot a guest first: %guest NAME [ARGS]")
        if entry.needs_stopped:
            state = self.session.state
            if state is RunState.RUNNING:
                raise SessionStateError("the guest is running; interrupt the kernel to pause it")
            if state is not RunState.STOPPED and entry.runs_guest:
                raise SessionStateError("The program is not being run.")

    def execute(self, line: str) -> object:
        """Run one command line (no run-control special casing: blocks)."""
        name, args = split_command(line)
        entry = lookup(name)
        self.check(entry)
        if entry.runs_guest:
            return self.run(name, args)
        return entry.handler(self, args)

    @property
    def running(self) -> bool:
        return self.session is not None and self.session.state is RunState.RUNNING

    def pause(self) -> bool:
        """Pause a running guest (any thread); True when there was one."""
        session = self.session
        if session is None or session.state is not RunState.RUNNING:
            return False
        session.pause()
        return True

    def close(self) -> None:
        session, self.session = self.session, None
        self._lister = None
        if session is not None:
            if session.state is RunState.RUNNING:
                session.pause()
            try:
                session.close()
            except KvmbenchError:
                pass  # still running: the vCPU thread ends with the process
        if self._on_session is not None:
            self._on_session(None)

    # --- the session and its program ------------------------------------------------

    @property
    def s(self) -> Session:
        if self.session is None:
            raise SessionStateError("The program is not being run.  Boot a guest first: %guest NAME [ARGS]")
        return self.session

    @property
    def program(self):  # type: ignore[no-untyped-def]
        return self.s.program

    @property
    def live(self) -> bool:
        """The guest is stopped with registers to read (gdb: a process exists)."""
        return self.session is not None and self.session.state is RunState.STOPPED

    def require_live(self) -> None:
        session = self.s
        if session.state is RunState.RUNNING:
            raise SessionStateError("the guest is running; interrupt the kernel to pause it")
        if session.state is not RunState.STOPPED:
            raise SessionStateError("The program is not being run.")

    def frame(self, level: int | None = None) -> SourceFrame:
        """The selected frame (or frame ``level``), gdb's words when there is none."""
        if not self.live:
            raise SessionStateError("No stack.")
        return self.s.source_frame(level)

    def evaluator(self, frame: SourceFrame | None | bool = True) -> Evaluator:
        """An evaluator in the selected frame (``frame=True``), a given one, or
        with no process (``None``: statics from the image, as ``gdb ELF``)."""
        program = self.program
        if frame is True:
            frame = self.s.source_frame() if self.live else None
        if frame is None:
            return Evaluator(program, None, history=self.history, convenience=self.convenience)
        return Evaluator(program, frame, self.s.frames.context, history=self.history,
                         convenience=self.convenience, live=True)

    def value_of(self, text: str) -> int:
        """An address or a number: a C expression (arrays and functions give
        their address, as gdb's ``x`` takes them)."""
        text = text.strip()
        if not text:
            raise ExpressionError("Argument required (expression to compute).")
        value = self.evaluator().evaluate(text)
        real = strip_typedefs(value.type)
        if isinstance(real, (ArrayType, FunctionType)) and value.address is not None:
            return value.address
        try:
            return value.as_int() & 0xFFFF_FFFF_FFFF_FFFF
        except KvmbenchError as e:
            raise ExpressionError(str(e)) from None

    def address_of(self, text: str) -> int:
        """An address to show memory at: a data symbol's own address
        (``counter``: where it is), else the value of the C expression
        (``$rsp``, ``&arr[2]``, ``p->next``)."""
        symbol = self.s.symbols.get_by_name(text.strip())
        if symbol is not None:
            return symbol.address
        return self.value_of(text)

    @property
    def lister(self):  # type: ignore[no-untyped-def]
        """gdb's ``list`` state for this session's program."""
        if self._lister is None:
            from kvmbench.jupyter.commands.source import LiveLister

            self._lister = LiveLister(self.program, self.value_of)
        return self._lister

    def describe_address(self, address: int) -> str:
        return self.s.symbols.format_address(address)

    def annotate(self, address: int) -> str:
        """'0x1019c5 <fib>', or just the number where no symbol covers it."""
        name = self.s.program.symbolize(address)
        return f"{address:#x}" if name is None else f"{address:#x} <{name}>"

    # --- boot and the breakpoints kept across it ---------------------------------

    def boot(self, words: list[str], target: str = "kvm") -> Session:
        """Boot a guest (closing the current one) on ``target`` (kvm, qemu,
        auto); breakpoints of the same image are set again, as gdb keeps
        them across ``run``."""
        import kvmbench

        image = kvmbench.resolve_image(words[0])
        same_image = self._image is not None and image.resolve() == self._image
        if self.session is not None:
            self.close()
        session = kvmbench.open(words[0], args=words[1:], target=target, on_console=self.on_console)
        self.session = session
        self._image = image.resolve()
        self.guest_command = words + (["--target", target] if target != "kvm" else [])
        self._last_registers = {}
        self.examine_next = None
        if self._on_session is not None:
            self._on_session(session)
        if same_image:
            self._restore_requests()
        else:
            self.breakpoint_specs.clear()
            self.watch_specs.clear()
            self.displays = [d for d in self.displays if d.function is None]
        return session

    def _restore_requests(self) -> None:
        from kvmbench.jupyter.commands.breakpoints import restore_breakpoint, restore_watchpoint

        specs = sorted([*self.breakpoint_specs.values(), *self.watch_specs.values()], key=lambda x: x.number)
        self.breakpoint_specs, self.watch_specs = {}, {}
        top = max((spec.number for spec in specs), default=0)
        for spec in specs:
            try:
                if isinstance(spec, BreakpointSpec):
                    restore_breakpoint(self, spec)
                else:
                    restore_watchpoint(self, spec)
            except KvmbenchError:
                continue  # a watch on a frame's local has no meaning in a new run (gdb deletes it)
        self.s.continue_numbering(top + 1)

    # --- disassembly for the card ---------------------------------------------------

    def disassembly(self, start: int, count: int, current: int | None = None) -> list[DisasmLine]:
        s = self.s
        code = s.mem.read(start, count * 15) if count else b""
        armed = {bp.address for bp in s.breakpoints if bp.enabled}
        lines = []
        for insn in instructions.disassemble(code, start, count):
            text = f"{insn.mnemonic} {insn.op_str}".strip()
            if insn.branch_target is not None:
                text += f"  <{s.symbols.format_address(insn.branch_target)}>"
            lines.append(DisasmLine(insn.address, s.symbols.format_address(insn.address),
                                    insn.bytes.hex(" "), text, insn.address == current,
                                    insn.address in armed))
        return lines

    def disassembly_around(self, pc: int, before: int = 3, after: int = 5) -> list[DisasmLine]:
        """Instructions around ``pc``: decoded from the function start when it
        is near (x86 cannot be decoded backwards), else from pc."""
        s = self.s
        sym = s.symbols.get_containing(pc)
        start = pc
        if sym is not None and 0 <= pc - sym.address <= 256:
            start = sym.address
        try:
            lines = self.disassembly(start, 64 if start != pc else after + 1, pc)
        except KvmbenchError:
            return []
        index = next((i for i, d in enumerate(lines) if d.address == pc), None)
        if index is None:
            try:
                lines = self.disassembly(pc, after + 1, pc)
            except KvmbenchError:
                return []
            index = 0
        return lines[max(0, index - before): index + after + 1]

    # --- gdb's text for frames and lines ---------------------------------------------

    def source_line(self, file: str, line: int) -> str:
        """``12\\t    return n;`` as gdb prints a source line (or its note when the file is missing)."""
        debug = self.s.symbols.debug
        lines = debug.get_source_lines(file) if debug is not None else None
        if lines is None:
            if file in self._missing_sources:
                return f"{line}\tin {file}"
            self._missing_sources.add(file)
            return f"{line}\t{file}: No such file or directory."
        if not 1 <= line <= len(lines):
            return f"Line number {line} out of range; {file} has {len(lines)} lines."
        return f"{line}\t{lines[line - 1]}"

    def frame_text(self, frame: SourceFrame, *, with_level: bool = False, source: bool = True) -> list[str]:
        """gdb's print_stack_frame with SRC_AND_LOC: the frame line, then its source line."""
        program = self.program
        lines = [frame_line(program, frame, with_level=with_level)]
        if source and frame.location is not None:
            lines.append(self.source_line(frame.location.file, frame.location.line))
        return lines

    def frame_line(self, frame: SourceFrame, *, with_level: bool = True) -> str:
        return frame_line(self.program, frame, with_level=with_level)

    def mark(self) -> FrameMark | None:
        """The frame the guest is in now, for deciding how the next stop prints."""
        if not self.live:
            return None
        try:
            frames = self.s.frames
            innermost = frames.program.unwinder.innermost(frames.context)
            symbol = self.s.symbols.get_containing(innermost.pc)
            return FrameMark(frames.frame_id(innermost), symbol.address if symbol is not None else None)
        except KvmbenchError:
            return None

    def _same_place(self, mark: FrameMark | None, stop: Stop | None = None) -> bool:
        """gdb's test for printing only the source line after a step: the
        frame is the one the step was stepping in (a source step tells which,
        it may have moved to the caller) and the function is the one it
        started in."""
        now = self.mark()
        if now is None:
            return False
        if stop is not None and "step_frame" in stop.extra:
            return (now.frame == stop.extra["step_frame"]
                    and now.function == stop.extra.get("step_function"))
        return mark is not None and mark == now

    def stop_lines(self, stop: Stop, mark: FrameMark | None = None) -> list[str]:
        """What gdb prints for ``stop`` (print_stop_event)."""
        s = self.s
        if stop.reason is StopReason.EXITED:
            code = stop.exit_code or 0
            name = self.guest_command[0] if self.guest_command else "guest"
            how = "exited normally" if code == 0 else f"exited with code {code:02o}"
            return [f"[Inferior 1 (guest {name}) {how}]"]
        if stop.reason is StopReason.CRASHED:
            return [f"Program terminated: {stop.detail or 'the guest crashed'}.", "The program no longer exists."]
        lines: list[str] = []
        try:
            frame = s.source_frame(0)
        except KvmbenchError:
            frame = None
        if stop.reason is StopReason.BREAKPOINT and stop.breakpoint is not None:
            spec = self.breakpoint_specs.get(stop.breakpoint)
            if stop.detail:
                lines.append(f"Error in testing condition for breakpoint {stop.breakpoint}: {stop.detail}")
            word = "Temporary breakpoint" if spec is not None and spec.temporary else "Breakpoint"
            if frame is not None:
                text = self.frame_text(frame)
                lines.append(f"{word} {stop.breakpoint}, {text[0]}")
                lines += text[1:]
            else:
                lines.append(f"{word} {stop.breakpoint}, {stop.pc:#018x}")
            return lines
        if stop.reason is StopReason.WATCHPOINT and stop.watchpoint is not None:
            lines += self._watch_lines(stop)
        elif stop.reason is StopReason.PAUSED:
            lines.append("Program received signal SIGINT, Interrupt.")
        elif stop.reason is StopReason.GUEST_TRAP:
            lines.append("Program received signal SIGTRAP, Trace/breakpoint trap.")
            if stop.detail:
                lines.append(f"({stop.detail})")
        elif stop.reason is StopReason.HALTED:
            lines.append(stop.detail or "the guest halted")
        if frame is None:
            return lines + [f"{stop.pc:#018x} in ?? ()"]
        if stop.reason is StopReason.STEP and self._same_place(mark, stop):
            # SRC_LINE: the same frame and function: just the line (its pc when mid-statement).
            if frame.location is None:
                return lines + [frame_line(self.program, frame, with_level=False)]
            text = self.source_line(frame.location.file, frame.location.line)
            entry = s.symbols.debug.get_line_entry(frame.pc) if s.symbols.debug is not None else None
            if entry is None or entry.address != frame.pc or not entry.is_stmt:
                text = f"{frame.pc:#018x}\t{text}"
            return lines + [text]
        return lines + self.frame_text(frame)

    def _watch_lines(self, stop: Stop) -> list[str]:
        s = self.s
        spec = self.watch_specs.get(stop.watchpoint)  # type: ignore[arg-type]
        wp = s.watchpoints.get(stop.watchpoint)  # type: ignore[arg-type]
        expression = spec.expression if spec is not None else (wp.location if wp is not None else "?")
        access = spec.access if spec is not None else (wp.access.value if wp is not None else "write")
        label = {"write": "Watchpoint", "read": "Read watchpoint",
                 "access": "Access (read/write) watchpoint"}[access]
        old, new = self._watch_value(spec, wp, stop.old_value), self._watch_value(spec, wp, stop.new_value)
        lines = ["", f"{label} {stop.watchpoint}: {expression}", ""]
        if access == "read":
            lines.append(f"Value = {new}")
        elif access == "access" and stop.old_value == stop.new_value:
            lines.append(f"Value = {new}")
        else:
            lines += [f"Old value = {old}", f"New value = {new}"]
        return lines[1:]

    def _watch_value(self, spec: WatchSpec | None, wp: object, number: int | None) -> str:
        if number is None:
            return "<unknown>"
        ctype = spec.value_type if spec is not None else None
        if ctype is None:
            return str(number)
        from kvmbench.expressions.values import value_from_bytes

        size = getattr(wp, "length", 8)
        value = value_from_bytes(ctype, number.to_bytes(size, "little"))  # type: ignore[arg-type]
        try:
            return self.evaluator(None).format(value, top_level=False)
        except KvmbenchError:
            return str(number)

    def headline(self, stop: Stop) -> str:
        """The stop card's first line: gdb's line for the stop."""
        try:
            lines = [line for line in self.stop_lines(stop) if line]
        except KvmbenchError:
            lines = []
        return lines[0] if lines else stop.describe()

    def note(self, stop: Stop) -> str:
        """kvmbench's own line under gdb's: how the stop was served."""
        s = self.s
        if stop.reason is StopReason.BREAKPOINT and stop.breakpoint is not None:
            bp = s.breakpoints.get(stop.breakpoint)
            if bp is None:
                return f"via {stop.mechanism.value}" if stop.mechanism else ""
            return f"breakpoint {bp.number} via {bp.served_by}, hit {bp.hit_count}"
        if stop.reason is StopReason.WATCHPOINT and stop.watchpoint is not None:
            wp = s.watchpoints.get(stop.watchpoint)
            by = f" by {s.symbols.format_address(stop.writer)}" if stop.writer is not None else ""
            return f"watchpoint {stop.watchpoint} via {wp.served_by if wp else '?'}{by}"
        return ""

    # --- stop cards ---------------------------------------------------------------------

    def stop_view(self, stop: Stop, lines: list[str] | None = None) -> StopView:
        """The stop card: gdb's text for the stop (``lines``, else computed
        as for a stop without a frame change), then kvmbench's facts."""
        s = self.s
        if lines is None:
            try:
                lines = self.stop_lines(stop)
            except KvmbenchError as e:
                lines = [stop.describe(), str(e)]
        note = self.note(stop)
        if not stop.alive or stop.pc is None or s.state is not RunState.STOPPED:
            self._last_registers = {}
            return StopView(stop, tuple(lines), note=note)
        regs_now = s.regs.snapshot()
        shown = {name: regs_now[name] for name in CARD_REGISTERS if name in regs_now}
        changed = frozenset(n for n, v in shown.items()
                            if n in self._last_registers and self._last_registers[n] != v)
        self._last_registers = shown
        source = s.symbols.get_source_location(stop.pc)
        return StopView(stop, tuple(lines), note=note, location=s.symbols.format_address(stop.pc),
                        source=str(source) if source else None,
                        disassembly=tuple(self.disassembly_around(stop.pc)), registers=shown,
                        changed=changed)

    # --- displays ---------------------------------------------------------------------

    def display_lines(self, display: Display) -> list[str] | None:
        """One display's lines at this stop (None: not in its scope here)."""
        from kvmbench.jupyter.commands.data import display_text

        return display_text(self, display)

    def do_displays(self) -> list[str]:
        """Every enabled display, as gdb shows them at a stop."""
        out: list[str] = []
        if not self.live:
            return out
        for display in self.displays:
            if not display.enabled:
                continue
            lines = self.display_lines(display)
            if lines:
                out += lines
        return out

    # --- run control (blocking: the kernel calls these off its event loop) -------

    def run(self, name: str, args: str) -> StopView:
        """Run a run-control command to its stop, then the displays and the
        stop's breakpoint commands as gdb runs them (a command that resumes
        the guest ends the list and runs); blocks the calling thread."""
        entry = lookup(name)
        self.check(entry)
        transcript: list[str] = []
        dropped = 0
        while True:
            mark = self.mark()
            ran = entry.handler(self, args)
            if isinstance(ran, StopView):  # a command that shows its own view (a Linux shell's output)
                self._after_stop(ran.stop)
                return ran
            assert isinstance(ran, Ran)
            stop = ran.stop
            commands = self._commands_for(stop)
            silent = bool(commands) and commands[0].strip() == "silent"
            try:
                shown = [] if silent else ran.before + self.stop_lines(stop, mark) + ran.after
            except KvmbenchError as e:
                shown = ran.before + [stop.describe(), str(e)]
            self._after_stop(stop)
            if stop.alive:
                shown += self.do_displays()
            resume: tuple[Command, str] | None = None
            for line in (commands[1:] if silent else commands):
                if not line.strip() or line.strip().startswith("#"):
                    continue
                word, rest = split_command(line)
                command = lookup(word)
                if command.runs_guest:
                    resume = (command, rest)
                    break
                try:
                    out = command.handler(self, rest)
                except KvmbenchError as e:
                    shown.append(str(e))
                    break
                if out is not None:
                    shown.append(out.text() if hasattr(out, "text") else str(out))
            transcript += shown
            if len(transcript) > MAX_TRANSCRIPT:
                dropped += len(transcript) - MAX_TRANSCRIPT
                transcript = transcript[-MAX_TRANSCRIPT:]
            alive = self.session is not None and self.session.state is RunState.STOPPED
            if resume is None or not alive:
                if dropped:
                    transcript.insert(0, f"({dropped} earlier lines not shown)")
                return self.stop_view(stop, transcript)
            entry, args = resume

    def _after_stop(self, stop: Stop) -> None:
        """What gdb does at every stop: every temporary breakpoint hit there
        is gone (not only the one the stop names), ``list`` centres on the
        stop's line."""
        session = self.session
        if session is None:
            return
        if stop.reason is StopReason.BREAKPOINT and stop.pc is not None and session.state is RunState.STOPPED:
            for bp in list(session.breakpoints):
                if bp.temporary and bp.address == stop.pc and bp.hit_count and bp.number != stop.breakpoint:
                    session.breakpoints.delete(bp.number)
        self.breakpoint_specs = {n: spec for n, spec in self.breakpoint_specs.items() if n in session.breakpoints}
        self.watch_specs = {n: spec for n, spec in self.watch_specs.items()
                            if session.watchpoints.get(n) is not None}
        if self.live and self.s.symbols.debug is not None:
            try:
                self.lister.center_on_frame(self.s.source_frame(0))
            except KvmbenchError:
                pass

    def _commands_for(self, stop: Stop) -> list[str]:
        if stop.reason is StopReason.BREAKPOINT and stop.breakpoint is not None:
            spec = self.breakpoint_specs.get(stop.breakpoint)
            return list(spec.commands) if spec is not None else []
        if stop.reason is StopReason.WATCHPOINT and stop.watchpoint is not None:
            spec = self.watch_specs.get(stop.watchpoint)  # type: ignore[assignment]
            return list(spec.commands) if spec is not None else []
        return []


__all__ = ["CARD_REGISTERS", "BreakpointSpec", "Display", "FrameMark", "Ran", "WatchSpec", "Workbench"]
