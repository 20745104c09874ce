"""Where the guest stopped: the C source around the current line beside
the disassembly around pc (click a line to toggle a breakpoint there),
the frame's arguments and locals, registers (changes since the previous
stop highlighted), a memory view (bytes changed since the previous stop
highlighted), gdb's backtrace and the end of the guest's console.

Only a stopped guest can be read, so everything here is updated once per
stop; while the guest runs it shows the last stop, marked stale."""

from __future__ import annotations

import html
import typing as t

import ipywidgets as w

from kvmbench.engine.session import RunState, Session
from kvmbench.errors import KvmbenchError
from kvmbench.expressions.frames import info_args, info_locals
from kvmbench.jupyter.commands import CARD_REGISTERS

if t.TYPE_CHECKING:
    from kvmbench.jupyter.widgets.panel import Panel

MEMORY_BYTES = 64
BACKTRACE_FRAMES = 10
#: Source lines shown before and after the current one.
SOURCE_CONTEXT = 5
_STALE = "opacity:0.45"
_MONO = "font-family:monospace;font-size:12px"
_CHANGED = "color:#c00;font-weight:bold"


class ContextView:
    def __init__(self, panel: "Panel") -> None:
        self.panel = panel
        self.registers = w.HTML()
        self.registers_note = w.HTML()
        self.source = w.HTML()
        self.locals = w.HTML()
        self.disassembly = w.VBox(layout=w.Layout(width="100%"))
        self.memory_address = w.Text(value="$rsp", description="memory at", continuous_update=False,
                                     layout=w.Layout(width="20em"))
        self.memory_address.observe(lambda _: self.panel.attempt(self._memory_moved), "value")
        self.memory = w.HTML()
        self.backtrace = w.HTML()
        self.console = w.HTML()
        self.widget = w.VBox([
            w.HBox([w.VBox([w.HTML("<b>Source</b>"), self.source], layout=w.Layout(width="50%")),
                    w.VBox([w.HTML("<b>Disassembly</b> <i>(click a line to toggle a breakpoint)</i>"),
                            self.disassembly], layout=w.Layout(width="50%"))]),
            w.HTML("<b>Arguments and locals</b>"), self.locals,
            w.HBox([w.HTML("<b>Registers</b>&nbsp;"), self.registers_note]), self.registers,
            self.memory_address, self.memory,
            w.HTML("<b>Backtrace</b>"), self.backtrace,
            w.HTML("<b>Console</b>"), self.console])
        self._stop_key: tuple[object, ...] | None = None
        self._registers: dict[str, int] = {}
        self._memory: tuple[int, bytes] | None = None
        self._console_len = -1

    # --- refresh -------------------------------------------------------------------

    def refresh(self, session: Session | None) -> None:
        if session is None:
            self._stop_key = None
            for view in (self.registers, self.memory, self.backtrace, self.console, self.source,
                         self.locals, self.registers_note):
                view.value = ""
            self.disassembly.children = ()
            return
        self._mark_stale(session.state is RunState.RUNNING)
        text = session.console
        if len(text) != self._console_len:
            self._console_len = len(text)
            tail = "\n".join(text.rstrip("\n").splitlines()[-6:])
            self.console.value = f"<pre style='{_MONO};margin:0'>{html.escape(tail) or '(nothing yet)'}</pre>"
        if session.state is not RunState.STOPPED:
            return
        bp_key = tuple((bp.address, bp.enabled) for bp in session.breakpoints)
        key = (id(session), id(session.last_stop), session.pc, bp_key)
        if key == self._stop_key:
            return
        new_stop = self._stop_key is None or key[:3] != self._stop_key[:3]
        self._stop_key = key
        if new_stop:
            self._show_registers(session)
            self._show_memory(session, compare=True)
            self._show_backtrace()
            self._show_source(session)
            self._show_locals()
        self._show_disassembly(session)

    def _mark_stale(self, stale: bool) -> None:
        """While the guest runs its registers cannot be read: the last stop's
        values stay, greyed and labelled."""
        note = "<span class='kvmbench-stale-note' style='color:#888'>(stale: the guest is running; " \
               "these are the last stop's)</span>" if stale else ""
        if self.registers_note.value != note:
            self.registers_note.value = note
        for view in (self.registers, self.locals, self.source):
            if stale:
                view.add_class("kvmbench-stale")
                view.layout.opacity = None
            else:
                view.remove_class("kvmbench-stale")

    def _show_source(self, session: Session) -> None:
        """The C source around the frame's line, the current line marked."""
        wb = self.panel.workbench
        try:
            frame = session.source_frame(0)
        except KvmbenchError:
            frame = None
        debug = session.symbols.debug
        location = frame.location if frame is not None else None
        lines = debug.get_source_lines(location.file) if location is not None and debug is not None else None
        if location is None or lines is None:
            self.source.value = "<i>no source line here</i>"
            return
        first = max(location.line - SOURCE_CONTEXT, 1)
        last = min(location.line + SOURCE_CONTEXT, len(lines))
        rows = []
        for number in range(first, last + 1):
            text = html.escape(lines[number - 1])
            if number == location.line:
                rows.append(f"<div class='kvmbench-current-line' style='background:#fff3c4;font-weight:bold'>"
                            f"&#9654;{number:>4}  {text}</div>")
            else:
                rows.append(f"<div> {number:>4}  {text}</div>")
        del wb
        self.source.value = (f"<div class='kvmbench-source' style='{_MONO};white-space:pre'>"
                             f"<div style='color:#555'>{html.escape(location.file)}</div>{''.join(rows)}</div>")

    def _show_locals(self) -> None:
        wb = self.panel.workbench
        try:
            frame = wb.frame(0)
            text = info_args(wb.program, frame) + "\n" + info_locals(wb.program, frame)
        except KvmbenchError as error:
            text = str(error)
        self.locals.value = f"<pre class='kvmbench-locals' style='{_MONO};margin:0'>{html.escape(text)}</pre>"

    def _show_registers(self, session: Session) -> None:
        now = session.regs.snapshot()
        shown = {name: now[name] for name in CARD_REGISTERS if name in now}
        changed = {n for n, v in shown.items() if n in self._registers and self._registers[n] != v}
        self._registers = shown
        cells = [f"<td>{name}</td><td class='{'kvmbench-changed' if name in changed else ''}' "
                 f"style='{_CHANGED if name in changed else ''}'>{value:#018x}</td>"
                 for name, value in shown.items()]
        rows = ["<tr>" + "".join(cells[i:i + 2]) + "</tr>" for i in range(0, len(cells), 2)]
        self.registers.value = f"<table class='kvmbench-registers' style='{_MONO}'>{''.join(rows)}</table>"

    def _show_disassembly(self, session: Session) -> None:
        wb = self.panel.workbench
        lines = wb.disassembly_around(session.pc)  # the stop card's own window around pc
        width = max((len(self._line_text(d)) for d in lines), default=0)
        buttons = []
        for d in lines:
            button = w.Button(description=self._line_text(d).ljust(width),
                              tooltip=f"toggle a breakpoint at {d.address:#x}",
                              layout=w.Layout(width="auto", height="22px", margin="0"))
            button.style.font_family = "monospace"
            button.style.font_size = "12px"
            button.style.button_color = "#fff3c4" if d.current else ("#fde0e0" if d.breakpoint else "#f7f7f7")
            button.add_class("kvmbench-disasm-line")
            button.on_click(lambda _, address=d.address: self.panel.attempt(lambda: self.toggle_breakpoint(address)))
            buttons.append(button)
        self.disassembly.children = buttons

    @staticmethod
    def _line_text(d: t.Any) -> str:
        mark = "▶" if d.current else ("●" if d.breakpoint else " ")
        return f"{mark} {d.address:#x} <{d.location}>  {d.text}"

    def toggle_breakpoint(self, address: int) -> None:
        """Delete the breakpoints at ``address``, or add one there."""
        session = self.panel.require_session()
        here = [bp.number for bp in session.breakpoints if bp.address == address]
        if here:
            for number in here:
                session.breakpoints.delete(number)
        else:
            session.breakpoints.add(f"{address:#x}")

    def _memory_moved(self) -> None:
        session = self.panel.require_session()
        session.regs.snapshot()  # raises while running: the inline error says why
        self._show_memory(session, compare=False)

    def _show_memory(self, session: Session, compare: bool) -> None:
        try:
            address = self.panel.workbench.address_of(self.memory_address.value)
            data = session.mem.read(address, MEMORY_BYTES)
        except KvmbenchError as error:
            self.memory.value = f"<span style='color:#c00'>{html.escape(str(error))}</span>"
            self._memory = None
            if not compare:
                raise
            return
        before = self._memory[1] if compare and self._memory and self._memory[0] == address else None
        self._memory = (address, data)
        lines = []
        for offset in range(0, len(data), 8):
            cells = []
            for i in range(offset, min(offset + 8, len(data))):
                byte = f"{data[i]:02x}"
                if before is not None and before[i] != data[i]:
                    byte = f"<span class='kvmbench-changed' style='{_CHANGED}'>{byte}</span>"
                cells.append(byte)
            lines.append(f"{address + offset:#014x}  {' '.join(cells)}")
        self.memory.value = f"<pre class='kvmbench-memory' style='{_MONO};margin:0'>{chr(10).join(lines)}</pre>"

    def _show_backtrace(self) -> None:
        wb = self.panel.workbench
        try:
            lines = [html.escape(wb.frame_line(frame)) for frame in wb.s.frame_list(BACKTRACE_FRAMES + 1)]
            if len(lines) > BACKTRACE_FRAMES:
                lines[BACKTRACE_FRAMES - 1:] = [f"... {len(lines) - BACKTRACE_FRAMES + 1} more frames (bt shows all)"]
        except KvmbenchError as error:
            lines = [html.escape(str(error))]
        self.backtrace.value = f"<pre class='kvmbench-backtrace' style='{_MONO};margin:0'>{chr(10).join(lines)}</pre>"
