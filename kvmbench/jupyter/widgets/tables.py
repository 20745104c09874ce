"""The panel's breakpoint and watchpoint tables: an add row (symbol
completion from the guest's symbols), then one row of widgets per request,
rebuilt only when the set of requests changes and updated in place on
every refresh (an unchanged value sends no comm message)."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

import ipywidgets as w

from kvmbench.engine.model import Breakpoint, StopReason, Watchpoint
from kvmbench.engine.session import Session
from kvmbench.errors import UsageError

if t.TYPE_CHECKING:
    from kvmbench.jupyter.widgets.panel import Panel

_CELL = {"font_family": "monospace", "font_size": "12px"}


def _label(text: str = "", width: str | None = None) -> w.Label:
    label = w.Label(text, style=_CELL)
    if width:
        label.layout.width = width
    return label


def _header(names: t.Sequence[str]) -> list[w.Widget]:
    return [w.HTML(f"<b>{name}</b>") for name in names]


def parse_length(text: str) -> int | None:
    """A watch length from the table's text box: empty means the symbol's size."""
    text = text.strip()
    if not text:
        return None
    try:
        length = int(text, 0)
    except ValueError:
        raise UsageError(f"watch length must be a number, not {text!r}") from None
    if length <= 0:
        raise UsageError(f"watch length must be positive, not {length}")
    return length


def _location(text: str) -> str:
    text = text.strip()
    if not text:
        raise UsageError("enter a symbol or an address first")
    return text


@dataclass
class _BreakRow:
    number: int
    enabled: w.Checkbox
    condition: w.Text
    hits: w.Label
    served_by: w.Label
    delete: w.Button
    cells: list[w.Widget]


class BreakpointTable:
    COLUMNS = ("#", "location", "address", "kind", "on", "condition", "hits", "served by", "")

    def __init__(self, panel: "Panel") -> None:
        self.panel = panel
        self.location = w.Combobox(placeholder="symbol or address", ensure_option=False,
                                   layout=w.Layout(width="12em"))
        self.kind = w.Dropdown(options=["auto", "hw", "sw"], value="auto", layout=w.Layout(width="6em"))
        self.condition = w.Text(placeholder="condition, e.g. $rdi == 3", layout=w.Layout(width="13em"))
        self.trace = w.Checkbox(value=False, description="trace", indent=False,
                                tooltip="count hits without stopping", layout=w.Layout(width="5em"))
        self.add_button = w.Button(description="Add breakpoint", icon="plus", layout=w.Layout(width="12em"))
        self.add_button.on_click(lambda _: self.panel.attempt(self.add))
        self.grid = w.GridBox(layout=w.Layout(
            grid_template_columns="2em 8em 6.5em 6.5em 2em 8em 4.5em 7em 3em", grid_gap="0 6px"))
        self.slots = w.HTML()
        self.widget = w.VBox([
            w.HTML("<b>Breakpoints</b>"),
            w.HBox([self.location, self.kind, self.condition, self.trace, self.add_button]),
            self.grid, self.slots])
        self._rows: dict[int, _BreakRow] = {}
        self._shape: tuple[object, ...] | None = None
        self._symbols_for: int | None = None

    # --- actions (through Panel.attempt: errors show inline) -------------------

    def add(self) -> Breakpoint:
        session = self.panel.require_session()
        bp = session.breakpoints.add(_location(self.location.value), kind=self.kind.value,
                                     condition=self.condition.value.strip() or None,
                                     tracepoint=self.trace.value)
        self.location.value = ""
        self.condition.value = ""
        return bp

    def _set_enabled(self, number: int, enabled: bool) -> None:
        session = self.panel.require_session()
        (session.breakpoints.enable if enabled else session.breakpoints.disable)(number)

    def _set_condition(self, number: int, text: str) -> None:
        self.panel.require_session().breakpoints.set_condition(number, text.strip() or None)

    def _delete(self, number: int) -> None:
        self.panel.require_session().breakpoints.delete(number)

    # --- refresh -------------------------------------------------------------------

    def refresh(self, session: Session | None) -> None:
        if session is not None and self._symbols_for != id(session) and session.state.value == "stopped":
            self._symbols_for = id(session)
            self.location.options = tuple(sorted({s.name for s in session.symbols.functions()}))
        bps = list(session.breakpoints) if session is not None else []
        shape = (id(session), tuple(bp.number for bp in bps))
        if shape != self._shape:
            self._shape = shape
            self._rows = {bp.number: self._row(bp) for bp in bps}
            self.grid.children = _header(self.COLUMNS) + [c for r in self._rows.values() for c in r.cells]
        for bp in bps:
            row = self._rows[bp.number]
            with self.panel.syncing():
                row.enabled.value = bp.enabled
                condition = bp.condition if isinstance(bp.condition, str) else ""
                if row.condition.value != condition and not row.condition.disabled:
                    row.condition.value = condition or ""
            row.hits.value = str(bp.hit_count)
            row.served_by.value = bp.served_by
        if session is None:
            self.slots.value = ""
            return
        used, total, holders = session.slot_usage()
        held = ", ".join(f"{slot}: {owner}" for slot, owner in holders)
        self.slots.value = (f"<span class='kvmbench-slots'>hardware debug slots: <b>{used} of {total}</b> in use"
                            f"{' (' + held + ')' if held else ''}</span>")

    def _row(self, bp: Breakpoint) -> _BreakRow:
        number = bp.number
        enabled = w.Checkbox(value=bp.enabled, indent=False, layout=w.Layout(width="2em"))
        condition = w.Text(value=bp.condition if isinstance(bp.condition, str) else "",
                           continuous_update=False, placeholder="always", layout=w.Layout(width="8em"))
        delete = w.Button(icon="trash", tooltip=f"delete breakpoint {number}", layout=w.Layout(width="3em"))
        kind = bp.kind.value + (" trace" if bp.tracepoint else "") + (" temp" if bp.temporary else "")

        def on_enabled(change: dict[str, t.Any]) -> None:
            if self.panel.is_syncing:
                return
            if not self.panel.attempt(lambda: self._set_enabled(number, change["new"])):
                with self.panel.syncing():
                    enabled.value = change["old"]

        def on_condition(change: dict[str, t.Any]) -> None:
            if self.panel.is_syncing:
                return
            if not self.panel.attempt(lambda: self._set_condition(number, change["new"])):
                with self.panel.syncing():
                    condition.value = change["old"]

        enabled.observe(on_enabled, "value")
        condition.observe(on_condition, "value")
        delete.on_click(lambda _: self.panel.attempt(lambda: self._delete(number)))
        hits, served = _label(str(bp.hit_count)), _label(bp.served_by)
        hits.add_class("kvmbench-hits")
        cells = [_label(str(number)), _label(bp.location), _label(f"{bp.address:#x}"),
                 _label(kind),
                 enabled, condition, hits, served, delete]
        return _BreakRow(number, enabled, condition, hits, served, delete, cells)


@dataclass
class _WatchRow:
    number: int
    hits: w.Label
    served_by: w.Label
    values: w.Label
    writer: w.Label
    cells: list[w.Widget]


class WatchTable:
    COLUMNS = ("#", "location", "address", "len", "access", "served by", "hits", "old → new", "writer", "")

    def __init__(self, panel: "Panel") -> None:
        self.panel = panel
        self.location = w.Combobox(placeholder="variable or address", ensure_option=False,
                                   layout=w.Layout(width="16em"))
        self.length = w.Text(placeholder="length", layout=w.Layout(width="6em"))
        self.access = w.Dropdown(options=["write", "read", "access"], value="write",
                                 layout=w.Layout(width="7em"))
        self.add_button = w.Button(description="Add watchpoint", icon="eye", layout=w.Layout(width="12em"))
        self.add_button.on_click(lambda _: self.panel.attempt(self.add))
        self.grid = w.GridBox(layout=w.Layout(
            grid_template_columns="2em 7em 6.5em 3em 4em 6em 4em 8em 8em 3em", grid_gap="0 6px"))
        self.widget = w.VBox([
            w.HTML("<b>Watchpoints</b>"),
            w.HBox([self.location, self.length, self.access, self.add_button]),
            self.grid])
        self._rows: dict[int, _WatchRow] = {}
        self._shape: tuple[object, ...] | None = None
        self._symbols_for: int | None = None
        #: number -> (hit count seen, value then, old -> new text)
        self._seen: dict[int, tuple[int, int, str]] = {}

    def add(self) -> Watchpoint:
        session = self.panel.require_session()
        location = _location(self.location.value)
        length = parse_length(self.length.value)
        wp = session.watchpoints.add(location, length, access=self.access.value)
        self.location.value = ""
        self.length.value = ""
        return wp

    def _delete(self, number: int) -> None:
        self.panel.require_session().watchpoints.delete(number)

    def refresh(self, session: Session | None) -> None:
        if session is not None and self._symbols_for != id(session) and session.state.value == "stopped":
            self._symbols_for = id(session)
            self.location.options = tuple(sorted({s.name for s in session.symbols.objects()}))
        wps = list(session.watchpoints) if session is not None else []
        shape = (id(session), tuple(wp.number for wp in wps))
        if shape != self._shape:
            self._shape = shape
            self._rows = {wp.number: self._row(wp) for wp in wps}
            self._seen = {n: v for n, v in self._seen.items() if n in self._rows}
            self.grid.children = _header(self.COLUMNS) + [c for r in self._rows.values() for c in r.cells]
        stop = session.last_stop if session is not None else None
        for wp in wps:
            row = self._rows[wp.number]
            value = int.from_bytes(wp.value, "little")
            count, before, shown = self._seen.get(wp.number, (0, value, ""))
            if wp.hit_count != count:
                shown = f"{before} → {value}"
            if (stop is not None and stop.reason is StopReason.WATCHPOINT and stop.watchpoint == wp.number
                    and stop.old_value is not None):
                shown = f"{stop.old_value} → {stop.new_value}"  # exact, from the stop itself
            self._seen[wp.number] = (wp.hit_count, value, shown)
            row.values.value = shown or f"{value}"
            row.hits.value = str(wp.hit_count)
            row.served_by.value = wp.served_by
            if wp.last_writer is not None and session is not None:
                row.writer.value = session.symbols.format_address(wp.last_writer)

    def _row(self, wp: Watchpoint) -> _WatchRow:
        number = wp.number
        delete = w.Button(icon="trash", tooltip=f"delete watchpoint {number}", layout=w.Layout(width="3em"))
        delete.on_click(lambda _: self.panel.attempt(lambda: self._delete(number)))
        hits, served, values, writer = _label(), _label(), _label(), _label()
        cells = [_label(str(number)), _label(wp.location), _label(f"{wp.address:#x}"), _label(str(wp.length)),
                 _label(wp.access.value), served, hits, values, writer, delete]
        return _WatchRow(number, hits, served, values, writer, cells)
