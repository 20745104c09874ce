"""``info`` (gdb's subcommands and kvmbench's own), info registers, and disassemble."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from kvmbench.arch import instructions
from kvmbench.errors import KvmbenchError, SessionStateError, UsageError
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.jupyter.display import Table, Text

#: gdb's `info registers` set on amd64, in its order.
GENERAL_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                     "r11", "r12", "r13", "r14", "r15", "rip", "eflags", "cs", "ss", "ds", "es",
                     "fs", "gs", "fs_base", "gs_base")
_X87 = ("st0", "st1", "st2", "st3", "st4", "st5", "st6", "st7",
        "fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
_SSE = tuple(f"xmm{i}" for i in range(16)) + ("mxcsr",)


#: eflags fields as gdb's amd64 description has them (SDM vol. 1, 3.4.3; no IOPL).
_EFLAGS = (("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9), ("DF", 10),
           ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19),
           ("VIP", 20), ("ID", 21))


def eflags_text(value: int) -> str:
    """``[ ZF IF ]`` as gdb prints a flags register: the flags that are set."""
    parts = [name for name, bit in _EFLAGS if value >> bit & 1]
    return "[ " + "".join(f"{part} " for part in parts) + "]"  # "[ ]" when none is set


def _registers_text(wb: Workbench, names: list[str]) -> str:
    """gdb's ``info registers`` lines: name, raw hex, natural value."""
    wb.require_live()
    evaluator = wb.evaluator()
    lines = []
    for name in names:
        key = name.lstrip("$")
        try:
            value = evaluator.evaluate("$" + key)
            raw = value.as_int() & ((1 << (8 * max(value.size, 1))) - 1)
            natural = eflags_text(raw) if key in ("eflags", "ps") else evaluator.format(value, top_level=False)
        except KvmbenchError:
            try:
                raw = wb.s.frames.context.read_register(key)
            except KvmbenchError:
                raise UsageError(f"Invalid register `{key}'") from None
            natural = str(raw)
        # gdb's columns: the raw value at 15, the natural one at 35 (default_print_one_register_info).
        lines.append(f"{key:<15}{f'{raw:#x}':<20}{natural}")
    return "\n".join(lines)


def _extended_text(wb: Workbench, names: tuple[str, ...]) -> list[str]:
    context = wb.s.frames.context
    out = []
    for name in names:
        try:
            raw = context.read_register(name)
        except KvmbenchError:
            return []
        out.append(f"{name:<15}{f'{raw:#x}':<20}(raw)")
    return out


def info_registers_text(wb: Workbench, args: str, *, everything: bool = False) -> str:
    names = args.split()
    if names:
        return _registers_text(wb, names)
    text = _registers_text(wb, list(GENERAL_REGISTERS))
    if not everything:
        return text
    extra = _extended_text(wb, _X87) + _extended_text(wb, _SSE)
    if not extra:
        return text + "\n(this target has no x87 or SSE registers to show)"
    return text + "\n" + "\n".join(extra) + "\n(x87 and SSE registers shown raw)"


def _breakpoints(wb: Workbench, args: str) -> str:
    from kvmbench.jupyter.commands.breakpoints import breakpoints_text

    return breakpoints_text(wb)


def _watchpoints(wb: Workbench, args: str) -> str:
    from kvmbench.jupyter.commands.breakpoints import breakpoints_text

    return breakpoints_text(wb, watch_only=True)


def _mechanisms(wb: Workbench, args: str) -> object:
    rows = []
    for bp in wb.s.breakpoints:
        rows.append([bp.number, bp.location, bp.kind.value, bp.served_by, bp.reason])
    for wp in wb.s.watchpoints:
        rows.append([wp.number, wp.location, f"{wp.access.value} watch", wp.served_by, wp.reason])
    used, total, _ = wb.s.slot_usage()
    return Table(["Num", "Location", "Asked", "Served by", "Why"], rows,
                 title="How each request is served", footer=f"hardware debug slots: {used} of {total} in use")


def _slots(wb: Workbench, args: str) -> object:
    used, total, holders = wb.s.slot_usage()
    return Table(["Slot", "Holder"], [list(h) for h in holders],
                 title=f"hardware debug slots: {used} of {total} in use")


def _symbols(wb: Workbench, args: str) -> object:
    prefix = args.split()[0] if args.split() else ""
    rows = []
    for name in sorted(wb.s.symbols.iter_names(prefix)):
        sym = wb.s.symbols.get_by_name(name)
        if sym is None:
            continue
        rows.append([name, f"{sym.address:#x}", sym.size, sym.kind.value, sym.section or ""])
    return Table(["Name", "Address", "Size", "Kind", "Section"], rows[:500],
                 footer=f"{len(rows)} symbols" + (" (first 500 shown)" if len(rows) > 500 else ""))


def _threads(wb: Workbench, args: str) -> str:
    s = wb.s
    if not wb.live:
        return "No threads."
    frame = wb.frame(0)
    return "  Id   Target Id         Frame \n* 1    vCPU 0            " + wb.frame_line(frame, with_level=False)


def _program(wb: Workbench, args: str) -> str:
    s = wb.s
    state = s.state.value
    if not wb.live:
        return "The program being debugged is not being run."
    last = s.last_stop
    why = f"It stopped at {wb.annotate(s.pc)}" + (f" ({last.reason.value})." if last is not None else ".")
    return f"\tUsing the running image of guest {s.image.name if s.image else '?'} ({state}).\n{why}"


def _topics() -> dict[str, Callable[[Workbench, str], object]]:
    from kvmbench.jupyter.commands import data, frames, source

    return {
        "breakpoints": _breakpoints, "watchpoints": _watchpoints,
        "registers": lambda wb, a: info_registers_text(wb, a),
        "all-registers": lambda wb, a: info_registers_text(wb, a, everything=True),
        "frame": lambda wb, a: frames.info_frame_text(wb),
        "locals": lambda wb, a: frames.info_locals_text(wb),
        "args": lambda wb, a: frames.info_args_text(wb),
        "display": lambda wb, a: data.info_display_text(wb),
        "line": source.info_line_text, "source": lambda wb, a: source.info_source_text(wb),
        "symbol": source.info_symbol_text, "address": source.info_address_text,
        "scope": source.info_scope_text, "functions": source.info_functions_text,
        "variables": source.info_variables_text, "types": source.info_types_text,
        "threads": _threads, "program": _program, "mechanisms": _mechanisms, "slots": _slots,
        "symbols": _symbols,
        "sharedlibrary": lambda wb, a: "No shared libraries loaded at this time.",
        "signals": _unsupported_info, "inferiors": lambda wb, a: (
            "  Num  Description       Connection           Executable        \n"
            f"* 1    guest             kvmbench             {wb.s.image}"),
    }


def _unsupported_info(wb: Workbench, args: str) -> str:
    raise UsageError("You can't do that when your target is `kvmbench'")


#: gdb's abbreviations that resolve to one subcommand although the prefix is shared.
_INFO_ALIASES = {"b": "breakpoints", "br": "breakpoints", "break": "breakpoints", "r": "registers",
                 "reg": "registers", "f": "frame", "s": "stack", "stack": "stack", "sym": "symbol",
                 "func": "functions", "var": "variables", "wat": "watchpoints", "lo": "locals",
                 "ar": "args", "disp": "display"}

INFO_TOPICS = tuple(sorted(["breakpoints", "watchpoints", "registers", "all-registers", "frame", "locals",
                            "args", "display", "line", "source", "symbol", "address", "scope", "functions",
                            "variables", "types", "threads", "program", "mechanisms", "slots", "symbols",
                            "sharedlibrary", "signals", "inferiors"]))


def info_topic(word: str) -> str:
    """The ``info`` subcommand ``word`` names (gdb's unique prefixes)."""
    word = word.lower()
    if word in INFO_TOPICS:
        return word
    if word in _INFO_ALIASES:
        return _INFO_ALIASES[word]
    matches = [t for t in INFO_TOPICS if t.startswith(word)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f'Ambiguous info command "{word}": {", ".join(matches)}.')
    raise UsageError(f'Undefined info command: "{word}".  Try "help info".')


@command("info", "i", "inf", guest=False, family="status")
def _info(wb: Workbench, args: str) -> object:
    """info SUBCOMMAND: breakpoints, frame, locals, args, registers [REG], all-registers, display, line, source, symbol ADDR, address NAME, scope LOC, functions|variables|types [REGEX], threads; kvmbench's mechanisms, slots, symbols [PREFIX]."""
    word, _, rest = args.strip().partition(" ")
    if not word:
        raise UsageError('List of info subcommands: ' + ", ".join(INFO_TOPICS) + '.  Try "help info".')
    topic = info_topic(word)
    if topic == "stack":
        return wb.execute("backtrace " + rest)
    result = _topics()[topic](wb, rest.strip())
    return Text(result) if isinstance(result, str) else result


# --- disassemble ----------------------------------------------------------------------


@command("disassemble", "disas", "disass", stopped=False, family="data")
def _disas(wb: Workbench, args: str) -> object:
    """disassemble [ADDRESS|FUNCTION]: the function's instructions (default: the selected frame's)."""
    s = wb.s
    pc = wb.frame().pc if wb.live else None
    text = args.strip()
    if text.startswith("/"):
        _, _, text = text.partition(" ")
    if text:
        target = wb.value_of(text)
    elif pc is not None:
        target = pc
    else:
        raise SessionStateError("No frame selected.")
    sym = s.symbols.get_containing(target)
    if sym is not None and sym.size:
        code = s.mem.read(sym.address, sym.size)
        insns = instructions.disassemble(code, sym.address)
        lines = wb.disassembly(sym.address, len(insns), pc)
        title = f"Dump of assembler code for function {sym.name}:"
    else:
        lines = wb.disassembly(target, 16, pc)
        title = f"Dump of assembler code from {target:#x}:"
    body = "\n".join(f"{'=>' if d.current else '  '} 0x{d.address:016x} <+{d.address - (sym.address if sym else target)}>:\t{d.text}"
                     for d in lines)
    return Text(f"{title}\n{body}\nEnd of assembler dump.")


def iter_frames(wb: Workbench, limit: int = 64) -> Iterator[tuple[int, int]]:
    """(frame number, pc) of the guest's call chain (:meth:`Session.backtrace`)."""
    yield from enumerate(wb.s.backtrace(limit))
