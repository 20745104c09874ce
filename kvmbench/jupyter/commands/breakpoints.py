"""Breakpoint and watchpoint commands: break, tbreak, hbreak, thbreak,
sbreak, trace, rbreak, watch, rwatch, awatch, delete, clear, disable,
enable, condition, ignore, commands, and ``info breakpoints``.

Locations are gdb's (GDB manual, "Location Specifications"): ``FUNCTION``
stops after the function's prologue, on the first line of its body, where
gdb stops (:meth:`kvmbench.symbols.program.Program.breakpoint_address`);
``*ADDRESS`` (a C expression) at exactly that byte; ``FILE:LINE`` and
``LINE`` (in the selected frame's file) at the line's first statement.
A tracepoint on a function counts every call, so ``trace FUNCTION`` sits on
its first byte. The engine chooses how each one is served; the line under
gdb's says which mechanism it is.
"""

from __future__ import annotations

import re

from kvmbench.engine.conditions import CompiledCondition
from kvmbench.engine.model import Access, Mechanism
from kvmbench.errors import ExpressionError, KvmbenchError, SymbolError, UsageError
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import BreakpointSpec, WatchSpec, Workbench
from kvmbench.jupyter.display import Text
from kvmbench.symbols.dwarf_eval import MemoryLocation
from kvmbench.symbols.model import SymbolKind
from kvmbench.symbols.types import sizeof

_LINE = re.compile(r"[0-9]+")
_SYMBOL_OFFSET = re.compile(r"[A-Za-z_.$][\w.$]*\s*[+-]\s*(0x[0-9a-fA-F]+|[0-9]+)")


def _split_condition(args: str) -> tuple[str, str | None]:
    text = args.strip()
    if text == "if" or text.startswith("if "):
        return "", text[2:].strip() or None
    match = re.match(r"(.*?)\s+if(?:\s+(.*))?$", text, re.S)
    if match:
        return match.group(1).strip(), (match.group(2) or "").strip() or None
    return text, None


# --- locations ----------------------------------------------------------------------


def resolve_location(wb: Workbench, text: str, *, first_byte: bool = False) -> list[int]:
    """The addresses of gdb's location ``text`` (after the prologue for a
    function unless ``first_byte``)."""
    s = wb.s
    program = s.program
    text = text.strip()
    if not text:
        if not wb.live:
            raise UsageError("No default breakpoint location now selected.")
        return [wb.frame().pc]
    if text.startswith("*"):
        return [wb.value_of(text[1:])]
    if _LINE.fullmatch(text):
        try:
            return program.breakpoint_locations(f"{_default_file(wb)}:{text}")
        except SymbolError as e:
            if str(e).startswith("No line "):
                raise SymbolError(f"No line {text} in the current file.") from None  # gdb's words for LINE
            raise
    file_function = re.fullmatch(r"(?P<file>[^:\s]+):(?P<name>[A-Za-z_]\w*)", text)
    if file_function is not None:
        debug = s.symbols.debug
        if debug is None or debug.resolve_source_file(file_function["file"]) is None:
            raise SymbolError(f"No source file named {file_function['file']}.")
        text = file_function["name"]
    symbol = s.symbols.get_by_name(text)
    if symbol is not None and symbol.kind is SymbolKind.FUNCTION and first_byte:
        return [symbol.address]
    if symbol is not None and symbol.kind is SymbolKind.FUNCTION and (
            not hasattr(program, "line_at") or program.line_at(symbol.address) is None):
        return [_skip_frame_setup(wb, symbol.address)]  # no line table: gdb's prologue analysis
    try:
        if hasattr(program, "breakpoint_locations"):
            return program.breakpoint_locations(text)
    except SymbolError:
        if _SYMBOL_OFFSET.fullmatch(text) or re.fullmatch(r"0x[0-9a-fA-F]+", text):
            return [s.symbols.resolve(text)]  # kvmbench's sym+off and bare addresses
        raise
    return [s.symbols.resolve(text)]


_ENDBR64 = bytes.fromhex("f30f1efa")
_MOV_RSP_RBP = (bytes.fromhex("4889e5"), bytes.fromhex("488bec"))


def _skip_frame_setup(wb: Workbench, start: int) -> int:
    """gdb's amd64_skip_prologue for a function without line information:
    past ``push %rbp; mov %rsp,%rbp`` when it sets up a frame, else its
    first instruction."""
    try:
        code = wb.s.mem.read(start, 12) if wb.live else wb.program.static_frame().read_memory(start, 12)
    except KvmbenchError:
        return start
    at = 4 if code.startswith(_ENDBR64) else 0
    if code[at:at + 1] == b"\x55" and code[at + 1:at + 4] in _MOV_RSP_RBP:
        return start + at + 4
    return start


def _default_file(wb: Workbench) -> str:
    """gdb's default source file: the selected frame's, else the one ``list`` shows, else main's."""
    if wb.live:
        try:
            frame = wb.frame()
            if frame.location is not None:
                return frame.location.file
        except KvmbenchError:
            pass
    current = wb.lister.current_file
    if current is not None:
        return current
    program = wb.program
    main = wb.s.symbols.get_by_name("main")
    location = program.line_at(main.address) if main is not None and hasattr(program, "line_at") else None
    if location is None:
        raise SymbolError('No symbol table is loaded.  Use the "file" command.')
    return location.file


def where_text(wb: Workbench, address: int) -> str:
    """``: file src/fib.c, line 12.`` for gdb's breakpoint message ('' without line info)."""
    location = wb.program.line_at(address) if hasattr(wb.program, "line_at") else None
    if location is None:
        return ""
    return f": file {location.file}, line {location.line}."


_WORDS = {"break": "Breakpoint", "tbreak": "Temporary breakpoint", "hbreak": "Hardware assisted breakpoint",
          "thbreak": "Temporary hardware assisted breakpoint", "sbreak": "Breakpoint", "trace": "Tracepoint"}
_OPTIONS = {"break": {}, "tbreak": {"temporary": True}, "hbreak": {"kind": "hw"},
            "thbreak": {"kind": "hw", "temporary": True}, "sbreak": {"kind": "sw"},
            "trace": {"tracepoint": True}}


def add_breakpoint(wb: Workbench, args: str, command_name: str = "break") -> Text:
    """Set a breakpoint as gdb's ``break`` does; gdb's message, then how it is served."""
    location, condition = _split_condition(args)
    addresses = resolve_location(wb, location, first_byte=command_name == "trace")
    if condition is not None:
        CompiledCondition(condition)  # gdb refuses a condition that does not parse, first
    s = wb.s
    lines = []
    served = []
    for address in addresses:
        bp = s.breakpoints.add(address, condition=condition, **_OPTIONS[command_name])  # type: ignore[arg-type]
        _label(bp, location)
        wb.breakpoint_specs[bp.number] = BreakpointSpec(bp.number, location or f"*{address:#x}",
                                                        command_name, condition, [], (address,))
        wb.last_breakpoint = bp.number
        if not lines:
            lines.append(f"{_WORDS[command_name]} {bp.number} at {address:#x}{where_text(wb, address)}")
        served.append(f"{bp.number}: {bp.served_by}")
    if len(addresses) > 1:
        lines[0] += f" ({len(addresses)} locations, numbered {addresses and served[0].split(':')[0]}"
        lines[0] += f"-{served[-1].split(':')[0]})"
    lines.append(f"(served by {', '.join(v.split(': ', 1)[1] for v in served)})")
    return Text("\n".join(lines))


def _label(request: object, location: str) -> None:
    """Name the engine's request as the user did (``fib``, not the address
    after its prologue): what tables, the hit log and gdb's monitor show."""
    if location:
        request.location = location  # type: ignore[attr-defined]


def restore_breakpoint(wb: Workbench, spec: BreakpointSpec) -> None:
    """Set ``spec`` again in a new run, with its number."""
    s = wb.s
    for address in resolve_location(wb, spec.location, first_byte=spec.command == "trace"):
        s.number_next(spec.number)
        bp = s.breakpoints.add(address, condition=spec.condition, **_OPTIONS[spec.command])  # type: ignore[arg-type]
        _label(bp, spec.location)
        wb.breakpoint_specs[bp.number] = BreakpointSpec(bp.number, spec.location, spec.command,
                                                        spec.condition, list(spec.commands), (address,))
        break


@command("break", "b", "br", "bre", "brea", family="breakpoints")
def _break(wb: Workbench, args: str) -> object:
    """break [LOCATION] [if CONDITION]: stop at LOCATION (FUNCTION, FILE:LINE, LINE, *ADDRESS).

    A function's breakpoint is after its prologue, as gdb's; CONDITION is a
    C expression in the frame that hits (``break fib if n == 3``). The
    engine serves it with a hardware slot or a software trap and says which."""
    return add_breakpoint(wb, args, "break")


@command("tbreak", "tb", "tbr", family="breakpoints")
def _tbreak(wb: Workbench, args: str) -> object:
    """tbreak [LOCATION] [if CONDITION]: a breakpoint deleted at its first stop."""
    return add_breakpoint(wb, args, "tbreak")


@command("hbreak", "hb", "hbr", family="breakpoints")
def _hbreak(wb: Workbench, args: str) -> object:
    """hbreak [LOCATION] [if CONDITION]: a breakpoint in a hardware debug slot (DR0-DR3)."""
    return add_breakpoint(wb, args, "hbreak")


@command("thbreak", family="breakpoints")
def _thbreak(wb: Workbench, args: str) -> object:
    """thbreak [LOCATION] [if CONDITION]: a temporary hardware breakpoint."""
    return add_breakpoint(wb, args, "thbreak")


@command("sbreak", "sb", family="breakpoints")
def _sbreak(wb: Workbench, args: str) -> object:
    """sbreak [LOCATION] [if CONDITION]: a software-trap breakpoint (kvmbench)."""
    return add_breakpoint(wb, args, "sbreak")


@command("trace", "tr", "tp", family="breakpoints")
def _trace(wb: Workbench, args: str) -> object:
    """trace LOCATION [if CONDITION]: count hits at LOCATION without stopping (a function's first byte: every call counts)."""
    if not args.strip():
        raise UsageError("Argument required (a location).")
    return add_breakpoint(wb, args, "trace")


@command("rbreak", family="breakpoints")
def _rbreak(wb: Workbench, args: str) -> object:
    """rbreak REGEX: a breakpoint on every function whose name matches REGEX."""
    s = wb.s
    try:
        pattern = re.compile(args.strip())
    except re.error as e:
        raise UsageError(f"Invalid regexp: {e}") from None
    out = []
    names = sorted({sym.name for sym in s.symbols.functions if pattern.search(sym.name)})
    for name in names:
        out.append(add_breakpoint(wb, name, "break").body.splitlines()[0])
        out.append(_signature(wb, name))
    return Text("\n".join(out)) if out else None


def _signature(wb: Workbench, name: str) -> str:
    """gdb's one-line declaration of a function (``long fib(long);``)."""
    try:
        text = wb.evaluator(None).whatis(name)[len("type = "):]
    except KvmbenchError:
        return f"<function, no debug info> {name};"
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        if text[i] == ")":
            depth += 1
        elif text[i] == "(":
            depth -= 1
            if depth == 0:
                return f"{text[:i].rstrip()} {name}{text[i:]};".replace("* ", "*")
    return f"{text} {name};"


# --- watchpoints --------------------------------------------------------------------


def _watch_target(wb: Workbench, expression: str) -> tuple[int, int, object]:
    """(address, length, C type) of the lvalue a watch expression names."""
    evaluator = wb.evaluator()
    value = evaluator.evaluate(expression)
    location = value.location
    if value.bitfield is not None or not isinstance(location, MemoryLocation):
        if location is None:
            raise ExpressionError(f"Cannot watch constant value `{expression}'.")
        raise UsageError(f"kvmbench watches memory: `{expression}' is not in memory here "
                         "(a register or an optimized-out value)")
    size = sizeof(value.type) or 0
    if size <= 0:
        raise UsageError(f"cannot watch `{expression}': its type has no size")
    return location.address, size, value.type


def _add_watch(wb: Workbench, args: str, access: str) -> object:
    text, condition = _split_condition(args)
    words = text.split(None, 1)
    if words and words[0] in ("-l", "-location"):
        text = words[1] if len(words) > 1 else ""
    if not text.strip():
        raise UsageError("Argument required (expression to compute).")
    if condition is not None:
        CompiledCondition(condition)
    address, size, ctype = _watch_target(wb, text.strip())
    wp = wb.s.watchpoints.add(address, length=size, access=access, condition=condition)
    _label(wp, text.strip())
    wb.watch_specs[wp.number] = WatchSpec(wp.number, text.strip(), access, ctype, condition)
    wb.last_breakpoint = wp.number
    hardware = wp.mechanism is Mechanism.HW_DATA
    label = {"write": "watchpoint", "read": "read watchpoint", "access": "access (read/write) watchpoint"}[access]
    label = ("Hardware " + label) if hardware else label[0].upper() + label[1:]
    lines = [f"{label} {wp.number}: {text.strip()}",
             f"({wp.length} bytes at {wp.address:#x}, served by {wp.served_by})"]
    if wp.mechanism is Mechanism.STEP_COMPARE:
        from kvmbench.backends.capabilities import Feature

        probed = wb.s.capabilities.results.get(Feature.SINGLE_STEP)
        cost = f", about {probed.median_us:.0f} us a step" if probed and probed.median_us else ""
        lines.append("note: this host has no cheaper way to watch this, so the guest is "
                     f"single-stepped while the watch is on (slow{cost})")
    return Text("\n".join(lines))


def restore_watchpoint(wb: Workbench, spec: WatchSpec) -> None:
    address, size, ctype = _watch_target(wb, spec.expression)
    wb.s.number_next(spec.number)
    wp = wb.s.watchpoints.add(address, length=size, access=spec.access, condition=spec.condition)
    _label(wp, spec.expression)
    wb.watch_specs[wp.number] = WatchSpec(wp.number, spec.expression, spec.access, ctype,
                                          spec.condition, list(spec.commands))


@command("watch", "wa", family="breakpoints")
def _watch(wb: Workbench, args: str) -> object:
    """watch [-l] EXPRESSION [if CONDITION]: stop when the guest writes the memory EXPRESSION names (watch counter, watch arr[3], watch s.field, watch -l *p)."""
    return _add_watch(wb, args, "write")


@command("rwatch", "rw", family="breakpoints")
def _rwatch(wb: Workbench, args: str) -> object:
    """rwatch [-l] EXPRESSION: stop when the guest reads it."""
    return _add_watch(wb, args, "read")


@command("awatch", "aw", family="breakpoints")
def _awatch(wb: Workbench, args: str) -> object:
    """awatch [-l] EXPRESSION: stop when the guest reads or writes it."""
    return _add_watch(wb, args, "access")


# --- numbers ----------------------------------------------------------------------------


def _numbers(args: str, existing: list[int] | None = None) -> list[int]:
    """The numbers ``args`` names: N or ranges N-M, as gdb takes them. A
    range stands for the ``existing`` numbers inside it (never expanded: a
    range of a billion costs nothing); a lone N must exist to be acted on,
    which the caller checks."""
    numbers: list[int] = []
    for word in args.replace(",", " ").split():
        match = re.fullmatch(r"(\d{1,19})-(\d{1,19})", word)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if low > high:
                raise UsageError(f"inverted breakpoint range {word!r}")
            numbers.extend(n for n in existing or () if low <= n <= high)
            continue
        if not re.fullmatch(r"\d{1,19}", word):
            raise UsageError(f'Convenience variable must have integer value.\nArgs must be numbers or \'$\' variables.'
                             if word.startswith("$") else f"Arguments must be breakpoint numbers, not {word!r}.")
        numbers.append(int(word))
    return numbers


def _all_numbers(wb: Workbench) -> list[int]:
    return sorted([bp.number for bp in wb.s.breakpoints] + [wp.number for wp in wb.s.watchpoints])


def _forget(wb: Workbench, number: int) -> None:
    wb.breakpoint_specs.pop(number, None)
    wb.watch_specs.pop(number, None)


def _delete_one(wb: Workbench, number: int) -> None:
    s = wb.s
    if number in s.breakpoints:
        s.breakpoints.delete(number)
    elif s.watchpoints.get(number) is not None:
        s.watchpoints.delete(number)
    else:
        raise UsageError(f"No breakpoint number {number}.")
    _forget(wb, number)


@command("delete", "d", "del", guest=False, family="breakpoints")
def _delete(wb: Workbench, args: str) -> object:
    """delete [N...]: delete breakpoints and watchpoints (all without N); delete display [N...]."""
    words = args.split(None, 1)
    if words and "display".startswith(words[0]) and len(words[0]) >= 2:
        from kvmbench.jupyter.commands.data import undisplay

        return undisplay(wb, words[1] if len(words) > 1 else "")
    if words and "breakpoints".startswith(words[0]):
        args = words[1] if len(words) > 1 else ""
    if wb.session is None:  # killed: the breakpoints kept for the next run
        kept = sorted([*wb.breakpoint_specs, *wb.watch_specs])
        for n in _numbers(args, kept) if args.strip() else kept:
            if n not in kept:
                raise UsageError(f"No breakpoint number {n}.")
            _forget(wb, n)
        return None
    numbers = _numbers(args, _all_numbers(wb)) if args.strip() else _all_numbers(wb)
    for n in numbers:
        _delete_one(wb, n)
    return None


@command("clear", stopped=False, family="breakpoints")
def _clear(wb: Workbench, args: str) -> object:
    """clear [LOCATION]: delete the breakpoints at LOCATION (default: the selected frame's line)."""
    addresses = set(resolve_location(wb, args))
    doomed = [bp.number for bp in wb.s.breakpoints if bp.address in addresses]
    if not doomed:
        raise UsageError(f"No breakpoint at {args.strip() or 'this line'}.")
    for n in doomed:
        _delete_one(wb, n)
    word = "breakpoint" if len(doomed) == 1 else "breakpoints"
    return Text(f"Deleted {word} {' '.join(map(str, doomed))} ")


def _enable_or_disable(wb: Workbench, args: str, enabled: bool) -> object:
    words = args.split(None, 1)
    if words and "display".startswith(words[0]) and len(words[0]) >= 2:
        from kvmbench.jupyter.commands.data import enable_display

        return enable_display(wb, words[1] if len(words) > 1 else "", enabled)
    every = _all_numbers(wb)
    numbers = _numbers(args, every) if args.strip() else every
    s = wb.s
    for n in numbers:
        if n in s.breakpoints:
            (s.breakpoints.enable if enabled else s.breakpoints.disable)(n)
        elif s.watchpoints.get(n) is not None:
            (s.watchpoints.enable if enabled else s.watchpoints.disable)(n)
        else:
            raise UsageError(f"No breakpoint number {n}.")
    return None


@command("disable", "disa", "dis", stopped=False, family="breakpoints")
def _disable(wb: Workbench, args: str) -> object:
    """disable [N...]: keep breakpoints but do not stop at them; disable display [N...]."""
    return _enable_or_disable(wb, args, False)


@command("enable", "en", stopped=False, family="breakpoints")
def _enable(wb: Workbench, args: str) -> object:
    """enable [N...]: re-arm disabled breakpoints; enable display [N...]."""
    return _enable_or_disable(wb, args, True)


@command("condition", "cond", stopped=False, family="breakpoints")
def _condition(wb: Workbench, args: str) -> object:
    """condition N [EXPRESSION]: stop at N only when the C EXPRESSION is true (none: always)."""
    words = args.split(None, 1)
    if not words:
        raise UsageError("Argument required (breakpoint number).")
    number = _numbers(words[0])[0]
    s = wb.s
    condition = words[1].strip() if len(words) > 1 else None
    if number in s.breakpoints:
        s.breakpoints.set_condition(number, condition)
        spec = wb.breakpoint_specs.get(number)
    elif s.watchpoints.get(number) is not None:
        raise UsageError("kvmbench sets a watchpoint's condition when it is created: watch EXPR if COND")
    else:
        raise UsageError(f"No breakpoint number {number}.")
    if spec is not None:
        spec.condition = condition
    return Text(f"Breakpoint {number} now unconditional.") if condition is None else None


@command("ignore", stopped=False, family="breakpoints")
def _ignore(wb: Workbench, args: str) -> object:
    """ignore N COUNT: pass breakpoint N COUNT times before stopping."""
    words = args.split()
    if len(words) != 2:
        raise UsageError("Argument required (a breakpoint number).")
    number, count = _numbers(words[0])[0], _numbers(words[1])[0]
    if number not in wb.s.breakpoints:
        raise UsageError(f"No breakpoint number {number}.")
    wb.s.breakpoints.set_ignore_count(number, count)
    if count == 0:
        return Text(f"Will stop next time breakpoint {number} is reached.")
    if count == 1:
        return Text(f"Will ignore next crossing of breakpoint {number}.")
    return Text(f"Will ignore next {count} crossings of breakpoint {number}.")


@command("commands", "comm", stopped=False, family="breakpoints")
def _commands(wb: Workbench, args: str) -> object:
    """commands [N]\\n...\\nend: command lines run when breakpoint N (default: the last one set) stops; `silent` first hides the stop, a `continue` resumes."""
    first, _, body = args.partition("\n")
    numbers = _numbers(first, _all_numbers(wb)) if first.strip() else [getattr(wb, "last_breakpoint", None)]
    if numbers == [None]:
        raise UsageError("No breakpoints specified.")
    lines = [line.strip() for line in body.splitlines()]
    if lines and lines[-1] == "end":
        lines = lines[:-1]
    for number in numbers:
        spec = wb.breakpoint_specs.get(number) or wb.watch_specs.get(number)  # type: ignore[arg-type]
        if spec is None:
            raise UsageError(f"No breakpoint number {number}.")
        spec.commands = [line for line in lines if line]
    return None


# --- info breakpoints -------------------------------------------------------------------


def breakpoints_text(wb: Workbench, watch_only: bool = False) -> str:
    """gdb's ``info breakpoints`` (and under each entry kvmbench's mechanism)."""
    if wb.session is None:
        return _kept_text(wb, watch_only)
    s = wb.s
    rows: list[tuple[int, list[str]]] = []
    for bp in s.breakpoints if not watch_only else ():
        spec = wb.breakpoint_specs.get(bp.number)
        kind = "tracepoint" if bp.tracepoint else ("hw breakpoint" if bp.kind.value == "hw" else "breakpoint")
        disp = "del" if bp.temporary else "keep"
        lines = [f"{bp.number:<7} {kind:<14} {disp:<4} {'y' if bp.enabled else 'n':<3} "
                 f"0x{bp.address:016x} {_what(wb, bp.address)}"]
        if bp.condition is not None:
            lines.append(f"\tstop only if {bp.condition if isinstance(bp.condition, str) else getattr(bp.condition, '__name__', 'callable')}")
        if bp.hit_count:
            noun = "tracepoint" if bp.tracepoint else "breakpoint"
            lines.append(f"\t{noun} already hit {bp.hit_count} time{'s' if bp.hit_count != 1 else ''}")
        if bp.ignore_count:
            lines.append(f"\tWill ignore next {bp.ignore_count} crossings of breakpoint.")
        for line in spec.commands if spec is not None else ():
            lines.append(f"        {line}")
        lines.append(f"\tserved by {bp.served_by}")
        rows.append((bp.number, lines))
    for wp in s.watchpoints:
        spec = wb.watch_specs.get(wp.number)
        hardware = wp.mechanism is Mechanism.HW_DATA
        kind = {Access.WRITE: "hw watchpoint" if hardware else "watchpoint",
                Access.READ: "read watchpoint", Access.ACCESS: "acc watchpoint"}[wp.access]
        what = spec.expression if spec is not None else wp.location
        lines = [f"{wp.number:<7} {kind:<14} {'keep':<4} {'y' if wp.enabled else 'n':<3} {'':18} {what}"]
        if wp.condition is not None:
            lines.append(f"\tstop only if {wp.condition}")
        if wp.hit_count:
            lines.append(f"\tbreakpoint already hit {wp.hit_count} time{'s' if wp.hit_count != 1 else ''}")
        for line in spec.commands if spec is not None else ():
            lines.append(f"        {line}")
        lines.append(f"\tserved by {wp.served_by} ({wp.length} bytes at {wp.address:#x})")
        rows.append((wp.number, lines))
    if not rows:
        return "No watchpoints." if watch_only else "No breakpoints or watchpoints."
    rows.sort()
    header = "Num     Type           Disp Enb Address            What"
    return "\n".join([header] + [line for _, lines in rows for line in lines])


def _what(wb: Workbench, address: int) -> str:
    program = wb.program
    location = program.line_at(address) if hasattr(program, "line_at") else None
    symbol = wb.s.symbols.get_containing(address)
    if location is not None and symbol is not None:
        return f"in {symbol.name} at {location.file}:{location.line}"
    name = program.symbolize(address)
    return f"<{name}>" if name is not None else ""


def _kept_text(wb: Workbench, watch_only: bool) -> str:
    """``info breakpoints`` with no guest: the breakpoints kept for the next run."""
    rows: list[tuple[int, str]] = []
    for spec in wb.breakpoint_specs.values() if not watch_only else ():
        kind = "tracepoint" if spec.command == "trace" else (
            "hw breakpoint" if spec.command in ("hbreak", "thbreak") else "breakpoint")
        disp = "del" if spec.temporary else "keep"
        address = f"0x{spec.addresses[0]:016x}" if spec.addresses else f"{'<PENDING>':<18}"
        rows.append((spec.number, f"{spec.number:<7} {kind:<14} {disp:<4} {'y':<3} {address} {spec.location}"))
    for spec in wb.watch_specs.values():
        kind = {"write": "watchpoint", "read": "read watchpoint", "access": "acc watchpoint"}[spec.access]
        rows.append((spec.number, f"{spec.number:<7} {kind:<14} {'keep':<4} {'y':<3} {'':18} {spec.expression}"))
    if not rows:
        return "No watchpoints." if watch_only else "No breakpoints or watchpoints."
    header = "Num     Type           Disp Enb Address            What"
    return "\n".join([header] + [text for _, text in sorted(rows)])
