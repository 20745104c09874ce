"""Turning engine data into what a notebook shows: HTML for JupyterLab, plain
text for terminals. Nothing here talks to the engine: the command layer
gathers the data (:class:`StopView`, rows of a table) and this module only
formats it."""

from __future__ import annotations

import abc
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvmbench.engine.model import Stop, StopReason

_CSS_CARD = "font-family:monospace;font-size:12px;border:1px solid #bbb;border-radius:4px;padding:4px 8px;margin:2px 0"
_CSS_CHANGED = "color:#c00;font-weight:bold"
_REASON_COLOUR = {
    StopReason.BREAKPOINT: "#1565c0",
    StopReason.WATCHPOINT: "#6a1b9a",
    StopReason.PAUSED: "#ef6c00",
    StopReason.EXITED: "#2e7d32",
    StopReason.CRASHED: "#c62828",
}


@dataclass(frozen=True)
class DisasmLine:
    """One instruction as shown: ``current`` marks the pc."""

    address: int
    location: str  # "fib+12"
    bytes_hex: str
    text: str  # mnemonic and operands, call targets symbolized
    current: bool = False
    breakpoint: bool = False


class _PlainText(abc.ABC):
    """Terminal clients (and ``repr``) get :meth:`text`; notebooks get HTML."""

    @abc.abstractmethod
    def text(self) -> str:
        """The plain-text rendering."""

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: object, cycle: bool) -> None:
        p.text(self.text())  # type: ignore[attr-defined]


@dataclass(frozen=True, repr=False)
class StopView(_PlainText):
    """Everything a stop card shows, gathered by the command layer: gdb's
    lines for the stop first (``Breakpoint 1, fib (n=3) at src/fib.c:12``,
    the source line, displays), then kvmbench's own facts (how the stop
    was served, the disassembly around the pc, the registers)."""

    stop: Stop
    lines: Sequence[str] = ()
    note: str = ""  # "breakpoint 1 via hlt trap, hit 3"
    location: str | None = None  # "fib+4"
    source: str | None = None  # "src/fib.c:11"
    disassembly: Sequence[DisasmLine] = ()
    registers: dict[str, int] = field(default_factory=dict)
    changed: frozenset[str] = frozenset()

    @property
    def reason(self) -> str:
        return self.stop.reason.value

    @property
    def headline(self) -> str:
        """gdb's first line for the stop."""
        for line in self.lines:
            if line.strip():
                return line
        return self.stop.describe()

    @property
    def gdb_text(self) -> str:
        """Exactly what gdb prints for the stop."""
        return "\n".join(self.lines)

    def text(self) -> str:
        lines = list(self.lines)
        if self.note:
            lines.append(f"  [{self.note}]")
        for d in self.disassembly:
            mark = "=>" if d.current else ("b " if d.breakpoint else "  ")
            lines.append(f"{mark} {d.address:#x} <{d.location}>:  {d.text}")
        if self.registers:
            cells = []
            for name, value in self.registers.items():
                star = "*" if name in self.changed else " "
                cells.append(f"{name:>6}{star}{value:#018x}")
            for i in range(0, len(cells), 3):
                lines.append("  " + "  ".join(cells[i:i + 3]))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = _REASON_COLOUR.get(self.stop.reason, "#333")
        parts = [f'<div class="kvmbench-stop" style="{_CSS_CARD}">']
        if self.lines:
            head, *rest = self.lines
            parts.append(f'<div class="kvmbench-stop-headline" style="color:{colour};font-weight:bold">'
                         f"{html.escape(head)}</div>")
            if rest:
                parts.append("<pre class='kvmbench-stop-text' style='margin:2px 0'>"
                             + html.escape("\n".join(rest)) + "</pre>")
        if self.note or (self.location and self.stop.pc is not None):
            where = ""
            if self.location and self.stop.pc is not None:
                where = f"{self.stop.pc:#x} &lt;{html.escape(self.location)}&gt;"
            note = html.escape(self.note)
            parts.append(f"<div style='color:#555'>{note}{' &middot; ' if note and where else ''}{where}</div>")
        if self.disassembly:
            rows = []
            for d in self.disassembly:
                style = "background:#fff3c4;font-weight:bold" if d.current else ""
                mark = "&#9654;" if d.current else ("&#9679;" if d.breakpoint else "")
                rows.append(
                    f"<tr style='{style}'><td style='color:#c00'>{mark}</td><td>{d.address:#x}</td>"
                    f"<td>&lt;{html.escape(d.location)}&gt;</td><td style='color:#888'>{d.bytes_hex}</td>"
                    f"<td>{html.escape(d.text)}</td></tr>")
            parts.append("<table style='font-family:monospace;font-size:12px'>" + "".join(rows) + "</table>")
        if self.registers:
            cells = []
            for name, value in self.registers.items():
                style = _CSS_CHANGED if name in self.changed else ""
                cells.append(f"<td>{name}</td><td style='{style}'>{value:#x}</td>")
            rows = ["<tr>" + "".join(cells[i:i + 6]) + "</tr>" for i in range(0, len(cells), 6)]
            parts.append("<table style='font-family:monospace;font-size:12px'>" + "".join(rows) + "</table>")
        parts.append("</div>")
        return "".join(parts)


@dataclass(frozen=True, repr=False)
class Table(_PlainText):
    """A titled table (info breakpoints, info registers, the probe table...)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[object]]
    title: str = ""
    footer: str = ""

    def text(self) -> str:
        cells = [[str(h) for h in self.headers]] + [[str(c) for c in r] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        lines = [self.title] if self.title else []
        for row in cells:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if not self.rows:
            lines.append("(none)")
        if self.footer:
            lines.append(self.footer)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(str(h))}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>" for c in r) + "</tr>"
            for r in self.rows)
        title = f"<div><b>{html.escape(self.title)}</b></div>" if self.title else ""
        footer = f"<div>{html.escape(self.footer)}</div>" if self.footer else ""
        empty = "<div><i>(none)</i></div>" if not self.rows else ""
        return (f"<div class='kvmbench-table'>{title}<table style='font-family:monospace;font-size:12px'>"
                f"<tr>{head}</tr>{body}</table>{empty}{footer}</div>")


@dataclass(frozen=True, repr=False)
class Text(_PlainText):
    """Preformatted text (x, disas, bt, p): monospace in HTML too."""

    body: str

    def text(self) -> str:
        return self.body

    def _repr_html_(self) -> str:
        return f"<pre class='kvmbench-text' style='margin:0'>{html.escape(self.body)}</pre>"
