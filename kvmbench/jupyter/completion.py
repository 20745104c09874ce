"""Completion and inspection for command lines: command names, guest
symbols, register names, breakpoint numbers; shift-tab on a symbol shows its
address, size, section and source line. None means "not ours": the kernel
falls back to IPython's."""

from __future__ import annotations

import html
import re
import typing as t

import kvmbench
from kvmbench.arch.x86_64 import KVM_REGS_FIELDS
from kvmbench.jupyter.commands import COMMANDS, INFO_TOPICS, Workbench

_REGISTER_NAMES = tuple(KVM_REGS_FIELDS) + ("pc", "sp", "fp", "eflags")
_NUMBERED = {"delete", "disable", "enable", "condition", "ignore"}
_WORD = re.compile(r"[\w$.:+]*$")


def _line_at(code: str, cursor_pos: int | None) -> tuple[str, int, int]:
    """The line holding the cursor, the cursor's column, the line's offset."""
    if cursor_pos is None:
        cursor_pos = len(code)
    start = code.rfind("\n", 0, cursor_pos) + 1
    end = code.find("\n", cursor_pos)
    line = code[start: end if end >= 0 else len(code)]
    return line, cursor_pos - start, start


def _reply(matches: list[str], start: int, end: int) -> dict[str, t.Any]:
    return {"matches": matches, "cursor_start": start, "cursor_end": end, "metadata": {}, "status": "ok"}


def _command_of(line: str) -> tuple[str, bool] | None:
    """(command name, escaped with %) when ``line`` starts a command."""
    match = re.match(r"\s*(%{0,2})([A-Za-z_]\w*)", line)
    if match is None:
        return None
    name = match.group(2)
    if name in COMMANDS or (match.group(1) and name == "gdb"):
        return name, bool(match.group(1))
    return None


def complete(wb: Workbench, code: str, cursor_pos: int | None) -> dict[str, t.Any] | None:
    line, column, offset = _line_at(code, cursor_pos)
    before = line[:column]
    cursor = offset + column
    in_gdb_cell = code.lstrip().startswith("%%gdb") and not line.lstrip().startswith("%%")
    # The first word: command names (after % or in a %%gdb cell).
    first = re.fullmatch(r"\s*(%?)([A-Za-z_]\w*)?", before)
    if first is not None and (first.group(1) or in_gdb_cell):
        prefix = first.group(2) or ""
        # Canonical names only (gdb completes 'brea' to 'break', not to its aliases),
        # unless the prefix is an alias alone ('si').
        names = sorted({e.name for n, e in COMMANDS.items() if e.name.startswith(prefix)})
        names = names or sorted(n for n in COMMANDS if n.startswith(prefix))
        if in_gdb_cell and not first.group(1):
            pass
        elif not first.group(1):
            return None
        if not names:
            return None
        escape = first.group(1)
        return _reply([escape + n for n in names], cursor - len(prefix) - len(escape), cursor)
    found = _command_of(line)
    if found is None:
        return None
    name = COMMANDS[found[0]].name if found[0] in COMMANDS else found[0]
    word = _WORD.search(before)
    token = word.group(0) if word else ""
    start = cursor - len(token)
    if name == "guest":
        return _reply([g for g in kvmbench.GUEST_NAMES if g.startswith(token)], start, cursor)
    if name == "info" and len(before.split()) <= 2 and not before.endswith(" " * 2):
        args = before.split()[1:] if before.split() else []
        if len(args) == 0 or (len(args) == 1 and not before.endswith(" ")):
            return _reply([i for i in INFO_TOPICS if i.startswith(token)], start, cursor)
    if token.startswith("$"):
        return _reply(["$" + r for r in _REGISTER_NAMES if r.startswith(token[1:])], start, cursor)
    session = wb.session
    if session is None:
        return _reply([], start, cursor)
    if name in _NUMBERED:
        numbers = [str(bp.number) for bp in session.breakpoints] + [str(wp.number) for wp in session.watchpoints]
        return _reply([n for n in numbers if n.startswith(token)], start, cursor)
    return _reply(sorted(session.symbols.iter_names(token)), start, cursor)


def inspect(wb: Workbench, code: str, cursor_pos: int) -> dict[str, t.Any] | None:
    """Guest symbol at the cursor: address, size, section, source line."""
    session = wb.session
    if session is None:
        return None
    line, column, _ = _line_at(code, cursor_pos)
    left = re.search(r"[\w.]*$", line[:column])
    right = re.match(r"[\w.]*", line[column:])
    name = (left.group(0) if left else "") + (right.group(0) if right else "")
    if not name:
        return None
    sym = session.symbols.get_by_name(name)
    if sym is None:
        return None
    source = sym.source or session.symbols.get_source_location(sym.address)
    lines = [f"{sym.name}: {sym.kind.value} at {sym.address:#x}",
             f"size {sym.size} bytes, section {sym.section or '?'}"]
    if source is not None:
        lines.append(f"source {source}")
    bps = [bp for bp in session.breakpoints if bp.address == sym.address]
    for bp in bps:
        lines.append(f"breakpoint {bp.number} via {bp.served_by}, {bp.hit_count} hits")
    text = "\n".join(lines)
    return {"status": "ok", "found": True, "metadata": {},
            "data": {"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"}}
