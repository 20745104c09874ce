"""Looking at data: print, output, set var, ptype, whatis, display,
undisplay, x, echo, call.

Expressions are C with gdb's semantics over the program's DWARF types
(:class:`kvmbench.expressions.Evaluator`), in the selected frame:
``p n``, ``p *p``, ``p arr[2]``, ``p s.f``, ``p/x $rax``, ``p $rax = 5``,
``set var counter = 0``, ``x/4gx $sp``. The value history (``$1``, ``$``)
is kept across cells. Before the guest runs (or after it exited) they read
the image's own data, as ``gdb ELF`` does without a process.
"""

from __future__ import annotations

import re

from kvmbench.errors import ExpressionError, KvmbenchError, UsageError
from kvmbench.expressions.format import PrintOptions, format_char, format_string, parse_format
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Display, Workbench
from kvmbench.jupyter.display import Text

_SIGINFO = re.compile(r"\$_siginfo\b")
#: gdb settings accepted and ignored (they shape gdb's own terminal output).
_QUIET_SETTINGS = ("width", "height", "confirm", "pagination", "verbose", "print", "logging",
                   "disassembly-flavor", "style", "backtrace", "step-mode", "breakpoint",
                   "can-use-hw-watchpoints", "listsize", "history", "prompt", "editing")


def _split_format(args: str) -> tuple[str, str]:
    text = args.strip()
    if text.startswith("/"):
        spec, _, rest = text[1:].partition(" ")
        return spec, rest.strip()
    return "", text


def _no_siginfo(text: str) -> None:
    if _SIGINFO.search(text):
        raise ExpressionError("Unable to read siginfo")


@command("print", "p", "inspect", stopped=False, family="data")
def _print(wb: Workbench, args: str) -> object:
    """print[/FMT] EXPRESSION: the value of a C expression (p n, p *ptr, p arr[1], p s.f, p/x $rax, p $rax = 5).

    FMT is one of gdb's output formats: x d u o t c a f s z. Without an
    expression, the last value again."""
    spec, text = _split_format(args)
    _no_siginfo(text)
    fmt = parse_format(spec) if spec else None
    evaluator = wb.evaluator()
    if not text:
        text = "$"  # gdb prints the last value again ("The history is empty." before any)
    return Text(evaluator.print(text, fmt))


@command("output", stopped=False, family="data")
def _output(wb: Workbench, args: str) -> object:
    """output[/FMT] EXPRESSION: the value alone (no $N =, no newline)."""
    spec, text = _split_format(args)
    _no_siginfo(text)
    fmt = parse_format(spec, "output") if spec else None
    evaluator = wb.evaluator()
    return Text(evaluator.print(text, fmt, record=False))


@command("call", stopped=False, family="data")
def _call(wb: Workbench, args: str) -> object:
    """call EXPRESSION: print it unless void (calling guest functions is not supported)."""
    spec, text = _split_format(args)
    fmt = parse_format(spec, "call") if spec else None
    return Text(wb.evaluator().print(text, fmt))


@command("set", stopped=False, family="data")
def _set(wb: Workbench, args: str) -> object:
    """set var EXPRESSION: assign (set var counter = 0, set var $rax = 1); gdb's display settings are accepted."""
    text = args.strip()
    match = re.match(r"(var|variable)\b\s*(.*)$", text, re.S)
    if match:
        text = match.group(2)
    else:
        word = text.split(None, 1)[0] if text else ""
        if word in _QUIET_SETTINGS:
            return None
        if word in ("args",):
            return None
    if not text:
        raise UsageError("Argument required (expression to compute).")
    wb.evaluator().evaluate(text)
    return None


@command("ptype", stopped=False, family="data")
def _ptype(wb: Workbench, args: str) -> object:
    """ptype EXPRESSION|TYPE: the type, structs and unions expanded."""
    spec, text = _split_format(args)
    return Text(wb.evaluator().ptype(text))


@command("whatis", stopped=False, family="data")
def _whatis(wb: Workbench, args: str) -> object:
    """whatis EXPRESSION|TYPE: the type's name."""
    return Text(wb.evaluator().whatis(args.strip()))


@command("echo", guest=False, family="data")
def _echo(wb: Workbench, args: str) -> object:
    """echo TEXT: print TEXT (C escapes: \\n, \\t, \\\\)."""
    text = args.encode("latin-1", "backslashreplace").decode("unicode_escape")
    return Text(text.rstrip("\n"))


# --- display ---------------------------------------------------------------------------


def _is_examine(spec: str) -> bool:
    letters = spec.lstrip("0123456789")
    return bool(spec) and (spec[:1].isdigit() or any(c in "is" for c in letters)
                           or any(c in "bhwg" for c in letters))


def display_text(wb: Workbench, display: Display) -> list[str] | None:
    """gdb's do_one_display: ``1: n = 3``, ``2: /x argc = 0x2``, ``3: x/2xg $sp`` and the memory."""
    frame = wb.frame() if wb.live else None
    if display.function is not None and (frame is None or frame.function is not display.function):
        return None  # out of the block the expression's locals belong to
    spec = display.format.lstrip("/")
    if _is_examine(spec):
        head = f"{display.number}: x/{spec} {display.expression}"
        try:
            body = examine(wb, f"/{spec} {display.expression}").body
        except KvmbenchError as e:
            body = f"<error: {e}>"
        return [head, body]
    shown = f"/{spec} " if spec else ""
    try:
        evaluator = wb.evaluator()
        value = evaluator.evaluate(display.expression)
        text = evaluator.format(value, parse_format(spec) if spec else None)
    except KvmbenchError as e:
        text = f"<error: {e}>"
    return [f"{display.number}: {shown}{display.expression} = {text}"]


@command("display", "disp", stopped=False, family="data")
def _display(wb: Workbench, args: str) -> object:
    """display[/FMT] EXPRESSION: show EXPRESSION at every stop (no argument: show them all now)."""
    spec, text = _split_format(args)
    if not text:
        lines = wb.do_displays()
        return Text("\n".join(lines)) if lines else None
    _no_siginfo(text)
    function = None
    if wb.live:
        frame = wb.frame()
        wb.evaluator()._parse(text)  # gdb refuses what does not parse in this frame
        try:
            wb.evaluator(None).evaluate(text) if not _is_examine(spec) else None
        except KvmbenchError:
            wb.evaluator().evaluate(text)  # not even here: gdb's error, no display
            function = frame.function  # its names are this function's locals
    display = Display(wb._next_display, text, f"/{spec}" if spec else "", True, function)
    wb._next_display += 1
    wb.displays.append(display)
    if not wb.live:
        return None
    lines = display_text(wb, display)
    return Text("\n".join(lines)) if lines else None


def undisplay(wb: Workbench, args: str) -> object:
    if not args.strip():
        wb.displays.clear()
        return None
    for word in args.replace(",", " ").split():
        if not word.isdigit():
            raise UsageError(f"Arguments must be display numbers, not {word!r}.")
        number = int(word)
        if not any(d.number == number for d in wb.displays):
            raise UsageError(f"No display number {number}.")
        wb.displays = [d for d in wb.displays if d.number != number]
    return None


@command("undisplay", guest=False, family="data")
def _undisplay(wb: Workbench, args: str) -> object:
    """undisplay [N...]: stop showing displays (all without N)."""
    return undisplay(wb, args)


def enable_display(wb: Workbench, args: str, enabled: bool) -> object:
    numbers = {int(w) for w in args.replace(",", " ").split() if w.isdigit()}
    for display in wb.displays:
        if not numbers or display.number in numbers:
            display.enabled = enabled
    return None


def info_display_text(wb: Workbench) -> str:
    if not wb.displays:
        return "There are no auto-display expressions now."
    lines = ["Auto-display expressions now in effect:", "Num Enb Expression"]
    for d in wb.displays:
        shown = f"{d.format} {d.expression}" if d.format else d.expression
        lines.append(f"{d.number}:   {'y' if d.enabled else 'n'}  {shown}")
    return "\n".join(lines)


# --- x -----------------------------------------------------------------------------------

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
        elif ch in "xduotcsiaz":
            letter = ch
        else:
            raise UsageError(f'Undefined output format "{ch}".')
    if count < 1:
        raise UsageError("the count must be at least 1")
    return count, letter, size


def examine(wb: Workbench, args: str) -> Text:
    """gdb's ``x/FMT ADDRESS``."""
    fmt = ""
    text = args.strip()
    if text.startswith("/"):
        fmt, _, text = text[1:].partition(" ")
    count, letter, size = parse_x_format(fmt)
    letters = set(fmt.lstrip("0123456789"))
    last_letter, last_size = wb.examine_format
    if not letters & set("xduotcsiaz"):
        letter = last_letter
    if not letters & set(_SIZES) and letter not in "ac":
        size = last_size if last_letter == letter or letter not in "si" else None
    if text.strip():
        address = wb.value_of(text)
    elif wb.examine_next is not None:
        address = wb.examine_next
    else:
        raise UsageError("Argument required (starting display address).")
    s = wb.s
    limit = {"i": MAX_EXAMINE_INSTRUCTIONS, "s": MAX_EXAMINE_STRINGS}.get(
        letter, MAX_EXAMINE_BYTES // (size or {"a": 8, "c": 1}.get(letter, 4)))
    if count > limit:
        unit = {"i": "instructions", "s": "strings"}.get(letter, "units of this size")
        raise UsageError(f"x shows at most {limit} {unit} at a time, not {count}")
    if letter == "i":
        current = wb.frame(0).pc if wb.live else None
        lines = wb.disassembly(address, count, current)
        after = lines[-1].address + len(bytes.fromhex(lines[-1].bytes_hex)) if lines else address
        wb.examine_format, wb.examine_next = (letter, size), after
        return Text("\n".join(f"{'=> ' if d.current else '   '}{wb.annotate(d.address)}:\t{d.text}"
                              for d in lines))
    if letter == "s":
        out = []
        for _ in range(count):
            raw = _read_string(wb, address)
            out.append(f"{wb.annotate(address)}:\t{format_string(raw, PrintOptions())}")
            address += len(raw) + 1
        wb.examine_format, wb.examine_next = (letter, size), address
        return Text("\n".join(out))
    if size is None:
        size = {"a": 8, "c": 1}.get(letter, 4)
    data = _read(wb, address, count * size)
    wb.examine_format, wb.examine_next = (letter, size), address + count * size
    values = [int.from_bytes(data[i:i + size], "little") for i in range(0, len(data), size)]
    per_line = {1: 8, 2: 8, 4: 4, 8: 2}[size]
    if letter in "dux" and size == 1 and letter != "x":
        per_line = 8
    if letter == "c":
        per_line = 8
    lines_out = []
    for i in range(0, len(values), per_line):
        here = address + i * size
        cells = [_format_unit(wb, v, letter, size) for v in values[i:i + per_line]]
        lines_out.append(f"{wb.annotate(here)}:\t" + "\t".join(cells))
    return Text("\n".join(lines_out))


def _read(wb: Workbench, address: int, length: int) -> bytes:
    if wb.live:
        return wb.s.frames.context.read_memory(address, length)
    return wb.program.static_frame().read_memory(address, length)


def _read_string(wb: Workbench, address: int) -> bytes:
    out = bytearray()
    while len(out) < 4096:
        chunk = _read(wb, address + len(out), 1)
        if chunk == b"\0":
            break
        out += chunk
    return bytes(out)


def _format_unit(wb: Workbench, value: int, letter: str, size: int) -> str:
    bits = size * 8
    if letter in ("x", "z"):
        return f"0x{value:0{size * 2}x}"
    if letter == "d":
        return str(value - (1 << bits) if value >> (bits - 1) else value)
    if letter == "u":
        return str(value)
    if letter == "o":
        return f"0{value:o}" if value else "0"
    if letter == "t":
        return f"{value:0{bits}b}"
    if letter == "c":
        byte = value & 0xFF
        return f"{byte - 256 if byte > 127 else byte} {format_char(byte)}"
    return wb.annotate(value)  # a


@command("x", stopped=False, family="data")
def _examine(wb: Workbench, args: str) -> object:
    """x/FMT ADDRESS: examine memory (count, format x d u o t c s i a, size b h w g).

    As in gdb, the format and size carry over from the last ``x``, and
    ``x`` without an address goes on after the last unit shown."""
    return examine(wb, args)
