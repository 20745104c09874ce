"""Completion and inspection for command lines: command words, ``info``
subcommands, guest symbols (and the selected frame's locals), register
names, breakpoint numbers; Shift-Tab on a command word shows its help, on
a symbol its address, size, section and source line. None means "not
ours": the kernel falls back to IPython's."""

from __future__ import annotations

import html
import re
import typing as t

import kvmbench
from kvmbench.errors import KvmbenchError
from kvmbench.jupyter.commands import COMMANDS, INFO_TOPICS, Workbench, find, help_text
from kvmbench.jupyter.commands.inspection import GENERAL_REGISTERS

_REGISTER_NAMES = tuple(dict.fromkeys((*GENERAL_REGISTERS, "pc", "sp", "fp", "rflags")))
_NUMBERED = {"delete", "disable", "enable", "condition", "ignore", "commands", "undisplay"}
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


def command_names(prefix: str) -> list[str]:
    """Command names a word may complete to (canonical names; an alias alone as itself)."""
    names = sorted({e.name for n, e in COMMANDS.items() if e.name.startswith(prefix)})
    return names or sorted(n for n in COMMANDS if n.startswith(prefix))


def _command_of(line: str) -> str | None:
    """The command a line starts with (``%`` optional), if any."""
    match = re.match(r"\s*%{0,2}([A-Za-z_][\w-]*)(?=\s|/|$)", line)
    if match is None:
        return None
    entry = find(match.group(1))
    return entry.name if entry is not None else None


def _symbols(wb: Workbench, token: str) -> list[str]:
    session = wb.session
    if session is None:
        return []
    names = set(session.symbols.iter_names(token))
    if wb.live:
        try:
            frame = session.source_frame()
            for block in frame.iter_blocks():
                names.update(v.name for v in block.variables if v.name and v.name.startswith(token))
        except KvmbenchError:
            pass
    return sorted(names)


def complete(wb: Workbench, code: str, cursor_pos: int | None) -> dict[str, t.Any] | None:
    line, column, offset = _line_at(code, cursor_pos)
    before = line[:column]
    cursor = offset + column
    in_gdb_cell = code.lstrip().startswith("%%gdb") and not line.lstrip().startswith("%%")
    first = re.fullmatch(r"\s*(%?)([A-Za-z_][\w-]*)?", before)
    if first is not None:
        prefix = first.group(2) or ""
        names = command_names(prefix)
        if not names or (not prefix and not first.group(1) and not in_gdb_cell):
            return None
        escape = first.group(1)
        reply = _reply([escape + n for n in names], cursor - len(prefix) - len(escape), cursor)
        reply["metadata"]["kvmbench_first_word"] = not escape and not in_gdb_cell
        return reply
    name = _command_of(line)
    if name is None:
        return None
    word = _WORD.search(before)
    token = word.group(0) if word else ""
    start = cursor - len(token)
    args = before.split()[1:]
    if name == "guest":
        return _reply([g for g in kvmbench.GUEST_NAMES if g.startswith(token)], start, cursor)
    if name == "help":
        return _reply(command_names(token), start, cursor)
    if name == "info" and (not args or (len(args) == 1 and not before.endswith(" "))):
        return _reply([i for i in INFO_TOPICS if i.startswith(token)], start, cursor)
    if token.startswith("$"):
        return _reply(["$" + r for r in _REGISTER_NAMES if r.startswith(token[1:])], start, cursor)
    session = wb.session
    if session is None:
        return _reply([], start, cursor)
    if name in _NUMBERED:
        numbers = [str(bp.number) for bp in session.breakpoints] + [str(wp.number) for wp in session.watchpoints]
        return _reply([n for n in numbers if n.startswith(token)], start, cursor)
    return _reply(_symbols(wb, token), start, cursor)


def inspect(wb: Workbench, code: str, cursor_pos: int) -> dict[str, t.Any] | None:
    """Shift-Tab: a command word's help, or the guest symbol at the cursor."""
    line, column, _ = _line_at(code, cursor_pos)
    left = re.search(r"[\w.-]*$", line[:column])
    right = re.match(r"[\w.-]*", line[column:])
    name = (left.group(0) if left else "") + (right.group(0) if right else "")
    if not name:
        return None
    start = column - len(left.group(0) if left else "")
    head = line[:start].strip()
    if head in ("", "%", "%%") or (code.lstrip().startswith("%%gdb") and head == ""):
        entry = find(name)
        if entry is not None:
            return _bundle(help_text(entry.name))
    session = wb.session
    if session is None:
        return None
    sym = session.symbols.get_by_name(name)
    if sym is None:
        return None
    source = sym.source or session.symbols.get_source_location(sym.address)
    lines = [f"{sym.name}: {sym.kind.value} at {sym.address:#x}",
             f"size {sym.size} bytes, section {sym.section or '?'}"]
    if source is not None:
        lines.append(f"source {source}")
    try:
        lines.append(wb.evaluator(None).whatis(sym.name))
    except KvmbenchError:
        pass
    bps = [bp for bp in session.breakpoints if bp.address == sym.address]
    for bp in bps:
        lines.append(f"breakpoint {bp.number} via {bp.served_by}, {bp.hit_count} hits")
    return _bundle("\n".join(lines))


def _bundle(text: str) -> dict[str, t.Any]:
    return {"status": "ok", "found": True, "metadata": {},
            "data": {"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"}}
