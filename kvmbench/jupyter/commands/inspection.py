"""Looking at the stopped guest: info, x, print, disassemble, backtrace."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator

from kvmbench.arch import instructions
from kvmbench.engine.views import Registers
from kvmbench.errors import UsageError
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.jupyter.display import Table, Text

INFO_TOPICS = ("breakpoints", "watchpoints", "registers", "mechanisms", "symbols", "slots")


def _condition_text(cond: object) -> str:
    if cond is None:
        return ""
    return cond if isinstance(cond, str) else getattr(cond, "__name__", "callable")


def _breakpoint_rows(wb: Workbench) -> list[list[object]]:
    rows: list[list[object]] = []
    for bp in wb.s.breakpoints:
        kind = "trace" if bp.tracepoint else ("tbreak" if bp.temporary else ("hbreak" if bp.kind.value == "hw" else "break"))
        rows.append([bp.number, kind, "y" if bp.enabled else "n", f"{bp.address:#x}",
                     wb.describe_address(bp.address), bp.served_by, bp.hit_count,
                     _condition_text(bp.condition)])
    for wp in wb.s.watchpoints:
        kind = {"write": "watch", "read": "rwatch", "access": "awatch"}[wp.access.value]
        rows.append([wp.number, kind, "y" if wp.enabled else "n", f"{wp.address:#x}",
                     f"{wp.location} ({wp.length} bytes)", wp.served_by, wp.hit_count,
                     _condition_text(wp.condition)])
    rows.sort(key=lambda r: int(r[0]))  # type: ignore[call-overload]
    return rows


@command("info", "i", stopped=False)
def _info(wb: Workbench, args: str) -> object:
    """info breakpoints|watchpoints|registers [REG...]|mechanisms|symbols [PREFIX]|slots"""
    words = args.split()
    if not words:
        raise UsageError("usage: info " + "|".join(INFO_TOPICS))
    topic = next((t for t in INFO_TOPICS if t.startswith(words[0].lower())), None)
    if words[0].lower() in ("b", "br"):
        topic = "breakpoints"
    if topic is None:
        raise UsageError(f"unknown info topic {words[0]!r}; try: " + ", ".join(INFO_TOPICS))
    rest = words[1:]
    if topic in ("breakpoints", "watchpoints"):
        return Table(["Num", "Type", "Enb", "Address", "What", "Served by", "Hits", "Condition"],
                     _breakpoint_rows(wb), title="Breakpoints and watchpoints")
    if topic == "registers":
        wb.s.regs.snapshot()  # raises while running
        names = [Registers.canonical(r) for r in rest] if rest else list(wb.s.regs)
        rows = []
        for name in names:
            value = wb.s.regs[name]
            rows.append([name, f"{value:#x}", value if name not in ("rip",) else wb.describe_address(value)])
        return Table(["Register", "Hex", "Natural"], rows)
    if topic == "slots":
        used, total, holders = wb.s.slot_usage()
        return Table(["Slot", "Holder"], [list(h) for h in holders],
                     title=f"hardware debug slots: {used} of {total} in use")
    if topic == "mechanisms":
        rows = []
        for bp in wb.s.breakpoints:
            rows.append([bp.number, bp.location, bp.kind.value, bp.served_by, bp.reason])
        for wp in wb.s.watchpoints:
            rows.append([wp.number, wp.location, f"{wp.access.value} watch", wp.served_by, wp.reason])
        used, total, _ = wb.s.slot_usage()
        return Table(["Num", "Location", "Asked", "Served by", "Why"], rows,
                     title="How each request is served", footer=f"hardware debug slots: {used} of {total} in use")
    prefix = rest[0] if rest else ""
    rows = []
    for name in sorted(wb.s.symbols.iter_names(prefix)):
        sym = wb.s.symbols.get_by_name(name)
        if sym is None:
            continue
        rows.append([name, f"{sym.address:#x}", sym.size, sym.kind.value, sym.section or ""])
    return Table(["Name", "Address", "Size", "Kind", "Section"], rows[:500],
                 footer=f"{len(rows)} symbols" + (" (first 500 shown)" if len(rows) > 500 else ""))


_SIZES = {"b": 1, "h": 2, "w": 4, "g": 8}
#: What one x may show: a cell's output is read by a person, not a program.
MAX_EXAMINE_BYTES = 64 << 10
MAX_EXAMINE_STRINGS = 1024
MAX_EXAMINE_INSTRUCTIONS = 4096


def parse_x_format(fmt: str) -> tuple[int, str, int | None]:
    """gdb's /FMT: count, format letter and unit size (None: the format's default)."""
    match = re.fullmatch(r"(\d{0,12})([a-z]*)", fmt)
    if match is None:
        raise UsageError(f"malformed format /{fmt}: expected /[COUNT][FORMAT][SIZE], e.g. /4gx")
    count = int(match.group(1)) if match.group(1) else 1
    letter, size = "x", None
    for ch in match.group(2):
        if ch in _SIZES:
            size = _SIZES[ch]
        elif ch in "xduotcsia":
            letter = ch
        else:
            raise UsageError(f"malformed format /{fmt}: unknown letter {ch!r} "
                             "(formats x d u o t c s i a, sizes b h w g)")
    if count < 1:
        raise UsageError("the count must be at least 1")
    return count, letter, size


@command("x")
def _examine(wb: Workbench, args: str) -> object:
    """x/FMT ADDR: examine memory (count, format x d u o t c s i a, size b h w g).

    As in gdb, the format and size carry over from the last ``x``, and
    ``x`` without an address goes on after the last unit shown."""
    fmt = ""
    text = args.strip()
    if text.startswith("/"):
        fmt, _, text = text[1:].partition(" ")
    count, letter, size = parse_x_format(fmt)
    letters = set(fmt.lstrip("0123456789"))
    last_letter, last_size = wb.examine_format
    if not letters & set("xduotcsia"):
        letter = last_letter
    if not letters & set(_SIZES) and letter not in "ac":
        size = last_size
    if text.strip():
        address = wb.value_of(text)
    elif wb.examine_next is not None:
        address = wb.examine_next
    else:
        raise UsageError("usage: x/FMT ADDRESS (no earlier x to continue from)")
    s = wb.s
    limit = {"i": MAX_EXAMINE_INSTRUCTIONS, "s": MAX_EXAMINE_STRINGS}.get(
        letter, MAX_EXAMINE_BYTES // (size or {"a": 8, "c": 1}.get(letter, 4)))
    if count > limit:
        unit = {"i": "instructions", "s": "strings"}.get(letter, "units of this size")
        raise UsageError(f"x shows at most {limit} {unit} at a time, not {count}")
    if letter == "i":
        lines = wb.disassembly(address, count)
        after = lines[-1].address + len(bytes.fromhex(lines[-1].bytes_hex)) if lines else address
        wb.examine_format, wb.examine_next = (letter, size), after
        return Text("\n".join(f"   {d.address:#x} <{d.location}>:  {d.text}" for d in lines))
    if letter == "s":
        out = []
        for _ in range(count):
            raw = s.mem.read(address, 256)
            end = raw.find(b"\0")
            chunk = raw if end < 0 else raw[:end]
            out.append(f"{wb.annotate(address)}:  {chunk.decode('latin-1')!r}")
            address += len(chunk) + 1
        wb.examine_format, wb.examine_next = (letter, size), address
        return Text("\n".join(out))
    if size is None:
        size = {"a": 8, "c": 1}.get(letter, 4)
    data = s.mem.read(address, count * size)
    wb.examine_format, wb.examine_next = (letter, size), address + count * size
    values = [int.from_bytes(data[i:i + size], "little") for i in range(0, len(data), size)]
    per_line = {1: 8, 2: 8, 4: 4, 8: 2}[size]
    lines_out = []
    for i in range(0, len(values), per_line):
        here = address + i * size
        cells = [_format_unit(wb, v, letter, size) for v in values[i:i + per_line]]
        lines_out.append(f"{wb.annotate(here)}:\t" + "\t".join(cells))
    return Text("\n".join(lines_out))


def _format_unit(wb: Workbench, value: int, letter: str, size: int) -> str:
    bits = size * 8
    if letter == "x":
        return f"{value:#0{size * 2 + 2}x}"
    if letter == "d":
        return str(value - (1 << bits) if value >> (bits - 1) else value)
    if letter == "u":
        return str(value)
    if letter == "o":
        return f"0{value:o}"
    if letter == "t":
        return f"{value:0{bits}b}"
    if letter == "c":
        ch = chr(value & 0xFF)
        return f"{value & 0xFF} {ch!r}" if ch in string.printable else f"{value & 0xFF} '\\x{value & 0xFF:02x}'"
    return wb.annotate(value)  # a


@command("print", "p", "inspect")
def _print(wb: Workbench, args: str) -> object:
    """p[/x] EXPR: evaluate EXPR ($registers, symbols, *ADDR, arithmetic)."""
    text = args.strip()
    fmt = ""
    if text.startswith("/"):
        fmt, _, text = text[1:].partition(" ")
    value = wb.value_of(text)
    if fmt == "x":
        return Text(f"{value:#x}")
    if fmt in ("a",):
        return Text(f"{value:#x} <{wb.describe_address(value)}>")
    if fmt:
        raise UsageError(f"unsupported print format /{fmt} (use /x or /a)")
    shown = f"{value} ({value & 0xFFFF_FFFF_FFFF_FFFF:#x})"
    if wb.s.symbols.get_containing(value) is not None:
        shown += f" <{wb.describe_address(value)}>"
    return Text(shown)


@command("disassemble", "disas", "disass")
def _disas(wb: Workbench, args: str) -> object:
    """disas [ADDR|SYMBOL]: disassemble a function (default: the one at pc)."""
    s = wb.s
    pc = s.pc
    target = wb.value_of(args) if args.strip() else pc
    sym = s.symbols.get_containing(target)
    if sym is None and args.strip():
        sym = s.symbols.get_by_name(args.strip())
    if sym is not None and sym.size:
        code = s.mem.read(sym.address, sym.size)
        insns = instructions.disassemble(code, sym.address)
        lines = wb.disassembly(sym.address, len(insns), pc)
        title = f"Dump of assembler code for function {sym.name}:"
    else:
        lines = wb.disassembly(target, 16, pc)
        title = f"Dump of assembler code from {target:#x}:"
    body = "\n".join(f"{'=>' if d.current else '  '} {d.address:#x} <{d.location}>:\t{d.text}" for d in lines)
    return Text(f"{title}\n{body}\nEnd of assembler dump.")


def iter_frames(wb: Workbench, limit: int = 64) -> Iterator[tuple[int, int]]:
    """(frame number, pc) of the guest's call chain (:meth:`Session.backtrace`)."""
    yield from enumerate(wb.s.backtrace(limit))


@command("backtrace", "bt", "where")
def _backtrace(wb: Workbench, args: str) -> object:
    """bt: the call chain, walking rbp frame pointers."""
    lines = []
    for n, pc in iter_frames(wb):
        source = wb.s.symbols.get_source_location(pc if n == 0 else pc - 1)
        at = f" at {source}" if source else ""
        lines.append(f"#{n:<2} {pc:#018x} in {wb.describe_address(pc)}{at}")
    return Text("\n".join(lines))
