"""gdb-style commands: each a parser plus a call into the engine.

A :class:`Workbench` holds the kernel's session; :data:`COMMANDS` maps every
spelling (``break``, ``b``, ``br``...) to one :class:`Command`. Handlers
return display objects (:mod:`kvmbench.jupyter.display`) or None; errors are
:class:`~kvmbench.errors.KvmbenchError` whose one-line ``str()`` the front
end prints. Preconditions (a guest is open, it is stopped) are declared once
in :func:`command` and checked in :meth:`Workbench.execute`.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import kvmbench
from kvmbench.arch import instructions
from kvmbench.engine.model import Stop, StopReason
from kvmbench.engine.session import RunState, Session
from kvmbench.engine.views import Registers
from kvmbench.errors import KvmbenchError, SessionStateError, UsageError
from kvmbench.jupyter import expressions
from kvmbench.jupyter.display import DisasmLine, StopView, Table, Text

#: Registers shown on a stop card, in gdb's `info registers` order.
CARD_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
INFO_TOPICS = ("breakpoints", "watchpoints", "registers", "mechanisms", "symbols", "slots")


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    handler: Callable[["Workbench", str], object]
    needs_guest: bool
    needs_stopped: bool
    #: Runs the guest: executed off the event loop (see :mod:`.transform`).
    runs_guest: bool
    help: str


COMMANDS: dict[str, Command] = {}


def command(name: str, *aliases: str, guest: bool = True, stopped: bool = True,
            runs: bool = False) -> Callable[[Callable[["Workbench", str], object]], Callable[["Workbench", str], object]]:
    """Register a command under ``name`` and its ``aliases``, with its preconditions."""

    def register(handler: Callable[["Workbench", str], object]) -> Callable[["Workbench", str], object]:
        doc = (handler.__doc__ or "").strip().splitlines()
        entry = Command(name, aliases, handler, guest, stopped and guest, runs, doc[0] if doc else "")
        for spelling in (name, *aliases):
            COMMANDS[spelling] = entry
        return handler

    return register


def split_command(line: str) -> tuple[str, str]:
    """('x', '/4gx $rsp') from 'x/4gx $rsp'; ('break', 'fib') from '%break fib'."""
    text = line.strip().lstrip("%")
    match = re.match(r"([A-Za-z_][\w-]*)(.*)", text, re.S)
    if match is None:
        raise UsageError(f"not a command: {line.strip()!r}")
    return match.group(1), match.group(2).strip() if not match.group(2).startswith("/") else match.group(2)


def lookup(name: str) -> Command:
    entry = COMMANDS.get(name)
    if entry is None:
        raise UsageError(f"unknown command {name!r} (try 'help')")
    return entry


class Workbench:
    """The kernel's debugging state: the session and what the last stop showed."""

    def __init__(self, on_console: Callable[[str], None] | None = None,
                 on_session: Callable[[Session | None], None] | None = None) -> None:
        self.session: Session | None = None
        self._on_console = on_console
        self._on_session = on_session
        self._last_registers: dict[str, int] = {}
        #: The last %guest's words (name and arguments): what a restart boots.
        self.guest_command: list[str] = []

    # --- dispatch ----------------------------------------------------------------

    def check(self, entry: Command) -> None:
        if not entry.needs_guest:
            return
        if self.session is None:
            raise SessionStateError("no guest: boot one first with %guest NAME [ARGS] (e.g. %guest fib 10)")
        if entry.needs_stopped:
            state = self.session.state
            if state is RunState.RUNNING:
                raise SessionStateError("the guest is running; interrupt the kernel to pause it")
            if state is not RunState.STOPPED and entry.runs_guest:
                raise SessionStateError(f"the guest has {state.value}; boot it again with %guest")

    def execute(self, line: str) -> object:
        """Run one command line (no run-control special casing: blocks)."""
        name, args = split_command(line)
        entry = lookup(name)
        self.check(entry)
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
        if session is not None:
            if session.state is RunState.RUNNING:
                session.pause()
            try:
                session.close()
            except KvmbenchError:
                pass  # still running: the vCPU thread ends with the process
        if self._on_session is not None:
            self._on_session(None)

    # --- helpers -----------------------------------------------------------------

    @property
    def s(self) -> Session:
        assert self.session is not None
        return self.session

    def value_of(self, text: str) -> int:
        """An address or value: an expression, else any location the symbols know."""
        s = self.s
        try:
            return expressions.evaluate(text, lambda r: s.regs[r], s.symbols.resolve,
                                        lambda a: s.mem.read_int(a, 8))
        except UsageError:
            if "$" in text:
                raise
            return s.symbols.resolve(text.strip())

    def describe_address(self, address: int) -> str:
        return self.s.symbols.format_address(address)

    def annotate(self, address: int) -> str:
        """'0x1019c5 <fib>', or just the number where no symbol covers it."""
        name = self.s.symbols.format_address(address)
        return f"{address:#x}" if name.startswith("0x") else f"{address:#x} <{name}>"

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

    def _around(self, pc: int, before: int = 3, after: int = 5) -> list[DisasmLine]:
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
            lines = self.disassembly(pc, after + 1, pc)
            index = 0
        return lines[max(0, index - before): index + after + 1]

    def stop_view(self, stop: Stop) -> StopView:
        s = self.s
        headline = self._headline(stop)
        if not stop.alive or stop.pc is None:
            self._last_registers = {}
            return StopView(stop, headline)
        regs_now = s.regs.snapshot()
        shown = {name: regs_now[name] for name in CARD_REGISTERS if name in regs_now}
        changed = frozenset(n for n, v in shown.items()
                            if n in self._last_registers and self._last_registers[n] != v)
        self._last_registers = shown
        source = s.symbols.get_source_location(stop.pc)
        source_text = None
        debug = s.symbols.debug
        if source is not None and debug is not None:
            try:
                source_text = debug.get_source_line(
                    source.file, source.line, (s.image.parent.parent, s.image.parent.parent / "src"))
            except Exception:  # noqa: BLE001 - a missing source file only loses a line of the card
                source_text = None
        return StopView(stop, headline, s.symbols.format_address(stop.pc),
                        str(source) if source else None, source_text,
                        self._around(stop.pc), shown, changed)

    def _headline(self, stop: Stop) -> str:
        s = self.s
        if stop.reason is StopReason.BREAKPOINT and stop.breakpoint is not None:
            bp = s.breakpoints.get(stop.breakpoint)
            where = f" ({bp.location})" if bp is not None else ""
            how = stop.mechanism.value if stop.mechanism else "?"
            slot = f" {bp.slot}" if bp is not None and bp.slot else ""
            hits = f", hit {bp.hit_count}" if bp is not None else ""
            return f"breakpoint {stop.breakpoint}{where} via{slot} {how}{hits}"
        if stop.reason is StopReason.WATCHPOINT and stop.watchpoint is not None:
            wp = s.watchpoints.get(stop.watchpoint)
            where = f" ({wp.location})" if wp is not None else ""
            how = f" via {wp.served_by}" if wp is not None else ""
            return f"watchpoint {stop.watchpoint}{where}{how}: {stop.old_value} -> {stop.new_value}"
        if stop.reason is StopReason.FINISH:
            value = stop.return_value
            return f"returned: value {value} ({value:#x})" if value is not None else "returned"
        return stop.describe()

    # --- run control (blocking: the kernel calls these off its event loop) -------

    def run(self, name: str, args: str) -> StopView:
        """Run a run-control command to its stop; blocks the calling thread."""
        entry = lookup(name)
        self.check(entry)
        result = entry.handler(self, args)
        assert isinstance(result, StopView)
        return result


# --- session ------------------------------------------------------------------


@command("guest", "boot", guest=False)
def _guest(wb: Workbench, args: str) -> object:
    """guest NAME [ARGS...]: boot a bundled guest (or an ELF path), stopped at its first instruction."""
    words = shlex.split(args)
    if not words:
        raise UsageError("usage: guest NAME [ARGS...]; bundled guests: " + ", ".join(kvmbench.GUEST_NAMES))
    if wb.session is not None:
        wb.close()
    wb.session = kvmbench.open(words[0], args=words[1:], on_console=wb._on_console)
    wb.guest_command = words
    wb._last_registers = {}
    if wb._on_session is not None:
        wb._on_session(wb.session)
    return Text(f"{words[0]}: stopped at {wb.session.pc:#x} <{wb.describe_address(wb.session.pc)}>")


@command("kill", stopped=False)
def _kill(wb: Workbench, args: str) -> object:
    """kill: close the guest."""
    wb.close()
    return Text("guest closed")


# --- breakpoints ------------------------------------------------------------------


def _split_condition(args: str) -> tuple[str, str | None]:
    match = re.match(r"(.*?)\s+if\s+(.*)$", args.strip(), re.S)
    if match:
        return match.group(1).strip(), match.group(2).strip()
    if args.strip().startswith("if "):
        raise UsageError("a location is required before 'if'")
    return args.strip(), None


def _add_break(wb: Workbench, args: str, **options: object) -> object:
    location, condition = _split_condition(args)
    if not location:
        location = f"{wb.s.pc:#x}"
    bp = wb.s.breakpoints.add(location, condition=condition, **options)
    what = "Tracepoint" if bp.tracepoint else ("Temporary breakpoint" if bp.temporary else "Breakpoint")
    extra = f", if {condition}" if condition else ""
    return Text(f"{what} {bp.number} at {bp.address:#x} <{wb.describe_address(bp.address)}> "
                f"via {bp.served_by}{extra}")


@command("break", "b", "br", "brea")
def _break(wb: Workbench, args: str) -> object:
    """break LOC [if COND]: stop at LOC; the engine picks a hardware slot or a software trap."""
    return _add_break(wb, args)


@command("hbreak", "hb", "hbr")
def _hbreak(wb: Workbench, args: str) -> object:
    """hbreak LOC [if COND]: a breakpoint in a hardware debug slot (DR0-DR3)."""
    return _add_break(wb, args, kind="hw")


@command("sbreak", "sb")
def _sbreak(wb: Workbench, args: str) -> object:
    """sbreak LOC [if COND]: a software-trap breakpoint."""
    return _add_break(wb, args, kind="sw")


@command("tbreak", "tbr")
def _tbreak(wb: Workbench, args: str) -> object:
    """tbreak LOC [if COND]: a breakpoint deleted at its first stop."""
    return _add_break(wb, args, temporary=True)


@command("trace", "tr")
def _trace(wb: Workbench, args: str) -> object:
    """trace LOC [if COND]: count hits at LOC without stopping."""
    return _add_break(wb, args, tracepoint=True)


def _add_watch(wb: Workbench, args: str, access: str) -> object:
    location, condition = _split_condition(args)
    words = location.split()
    if not words:
        raise UsageError("usage: watch LOC [LEN]")
    length = None
    if len(words) > 1:
        try:
            length = int(words[-1], 0)
        except ValueError:
            raise UsageError(f"watch length must be a number, not {words[-1]!r}") from None
        words = words[:-1]
    where = " ".join(words)
    wp = wb.s.watchpoints.add(where, length=length, access=access, condition=condition)
    label = {"write": "Watchpoint", "read": "Read watchpoint", "access": "Access watchpoint"}[access]
    value = int.from_bytes(wp.value, "little") if wp.value else None
    return Text(f"{label} {wp.number}: {wp.location} ({wp.length} bytes at {wp.address:#x}) "
                f"via {wp.served_by}; value {value}")


@command("watch", "wa")
def _watch(wb: Workbench, args: str) -> object:
    """watch LOC [LEN]: stop when the guest writes LOC."""
    return _add_watch(wb, args, "write")


@command("rwatch", "rw")
def _rwatch(wb: Workbench, args: str) -> object:
    """rwatch LOC [LEN]: stop when the guest reads LOC."""
    return _add_watch(wb, args, "read")


@command("awatch", "aw")
def _awatch(wb: Workbench, args: str) -> object:
    """awatch LOC [LEN]: stop when the guest reads or writes LOC."""
    return _add_watch(wb, args, "access")


def _numbers(args: str) -> list[int]:
    numbers = []
    for word in args.replace(",", " ").split():
        if re.fullmatch(r"\d+-\d+", word):
            low, high = map(int, word.split("-"))
            numbers.extend(range(low, high + 1))
            continue
        try:
            numbers.append(int(word))
        except ValueError:
            raise UsageError(f"not a breakpoint number: {word!r}") from None
    return numbers


def _delete_one(wb: Workbench, number: int) -> None:
    s = wb.s
    if number in s.breakpoints:
        s.breakpoints.delete(number)
    elif s.watchpoints.get(number) is not None:
        s.watchpoints.delete(number)
    else:
        raise UsageError(f"no breakpoint or watchpoint number {number}")


@command("delete", "d", "del")
def _delete(wb: Workbench, args: str) -> object:
    """delete [N...]: delete breakpoints and watchpoints (all without N)."""
    numbers = _numbers(args)
    if not numbers:
        numbers = [bp.number for bp in wb.s.breakpoints] + [wp.number for wp in wb.s.watchpoints]
    for n in numbers:
        _delete_one(wb, n)
    return None


@command("disable", "disa", "dis")
def _disable(wb: Workbench, args: str) -> object:
    """disable N...: keep breakpoints but do not stop at them."""
    numbers = _numbers(args) or [bp.number for bp in wb.s.breakpoints]
    for n in numbers:
        wb.s.breakpoints.disable(n)
    return None


@command("enable", "en")
def _enable(wb: Workbench, args: str) -> object:
    """enable N...: re-arm disabled breakpoints."""
    numbers = _numbers(args) or [bp.number for bp in wb.s.breakpoints]
    for n in numbers:
        wb.s.breakpoints.enable(n)
    return None


@command("condition", "cond")
def _condition(wb: Workbench, args: str) -> object:
    """condition N [EXPR]: stop at N only when EXPR holds (no EXPR: always)."""
    words = args.split(None, 1)
    if not words:
        raise UsageError("usage: condition N [EXPR]")
    number = _numbers(words[0])[0]
    wb.s.breakpoints.set_condition(number, words[1] if len(words) > 1 else None)
    return None


@command("ignore")
def _ignore(wb: Workbench, args: str) -> object:
    """ignore N COUNT: pass breakpoint N COUNT times before stopping."""
    words = args.split()
    if len(words) != 2:
        raise UsageError("usage: ignore N COUNT")
    number, count = _numbers(words[0])[0], _numbers(words[1])[0]
    wb.s.breakpoints.set_ignore_count(number, count)
    return Text(f"Will ignore next {count} crossings of breakpoint {number}.")


# --- run control ----------------------------------------------------------------------


def _count(args: str) -> int:
    text = args.strip()
    if not text:
        return 1
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"not a count: {text!r}") from None


@command("continue", "c", "cont", "fg", runs=True)
def _continue(wb: Workbench, args: str) -> object:
    """continue [N]: run until a breakpoint, watchpoint, interrupt or exit (N: ignore the current breakpoint N-1 more times)."""
    if args.strip():
        n = _count(args)
        last = wb.s.last_stop
        if last is not None and last.breakpoint is not None and n > 1:
            wb.s.breakpoints.set_ignore_count(last.breakpoint, n - 1)
    return wb.stop_view(wb.s.cont())


@command("stepi", "si", runs=True)
def _stepi(wb: Workbench, args: str) -> object:
    """stepi [N]: execute N instructions, into calls."""
    return wb.stop_view(wb.s.stepi(_count(args)))


@command("nexti", "ni", runs=True)
def _nexti(wb: Workbench, args: str) -> object:
    """nexti [N]: execute N instructions, over calls."""
    return wb.stop_view(wb.s.nexti(_count(args)))


@command("finish", "fin", runs=True)
def _finish(wb: Workbench, args: str) -> object:
    """finish: run until the current function returns; shows the return value."""
    return wb.stop_view(wb.s.finish())


@command("until", "u", runs=True)
def _until(wb: Workbench, args: str) -> object:
    """until [LOC]: run to LOC in this frame (no LOC: past a backward jump)."""
    return wb.stop_view(wb.s.until(args.strip() or None))


@command("advance", runs=True)
def _advance(wb: Workbench, args: str) -> object:
    """advance LOC: run until LOC is reached in any frame."""
    if not args.strip():
        raise UsageError("usage: advance LOC")
    return wb.stop_view(wb.s.advance(args.strip()))


# --- inspection ---------------------------------------------------------------------------


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


def parse_x_format(fmt: str) -> tuple[int, str, int | None]:
    """gdb's /FMT: count, format letter and unit size (None: the format's default)."""
    match = re.fullmatch(r"(\d*)([a-z]*)", fmt)
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
    """x/FMT ADDR: examine memory (count, format x d u o t c s i a, size b h w g)."""
    fmt = ""
    text = args.strip()
    if text.startswith("/"):
        fmt, _, text = text[1:].partition(" ")
    if not text.strip():
        raise UsageError("usage: x/FMT ADDRESS")
    count, letter, size = parse_x_format(fmt)
    address = wb.value_of(text)
    s = wb.s
    if letter == "i":
        return Text("\n".join(f"   {d.address:#x} <{d.location}>:  {d.text}"
                              for d in wb.disassembly(address, count)))
    if letter == "s":
        lines = []
        for _ in range(count):
            raw = s.mem.read(address, 256)
            end = raw.find(b"\0")
            chunk = raw if end < 0 else raw[:end]
            lines.append(f"{wb.annotate(address)}:  {chunk.decode('latin-1')!r}")
            address += len(chunk) + 1
        return Text("\n".join(lines))
    if size is None:
        size = {"a": 8, "c": 1}.get(letter, 4)
    data = s.mem.read(address, count * size)
    values = [int.from_bytes(data[i:i + size], "little") for i in range(0, len(data), size)]
    per_line = {1: 8, 2: 8, 4: 4, 8: 2}[size]
    lines = []
    for i in range(0, len(values), per_line):
        here = address + i * size
        cells = [_format_unit(wb, v, letter, size) for v in values[i:i + per_line]]
        lines.append(f"{wb.annotate(here)}:\t" + "\t".join(cells))
    return Text("\n".join(lines))


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
    """(frame number, pc) from rip up the rbp chain: [rbp] is the caller's
    rbp, [rbp+8] the return address (System V frame pointers)."""
    s = wb.s
    yield 0, s.pc
    rbp = s.regs.rbp
    for n in range(1, limit):
        if rbp == 0 or rbp % 8:
            return
        try:
            saved_rbp = s.mem.read_int(rbp, 8)
            ret = s.mem.read_int(rbp + 8, 8)
        except KvmbenchError:
            return
        if ret == 0 or s.symbols.get_containing(ret) is None:
            return
        yield n, ret
        if saved_rbp <= rbp:
            return
        rbp = saved_rbp


@command("backtrace", "bt", "where")
def _backtrace(wb: Workbench, args: str) -> object:
    """bt: the call chain, walking rbp frame pointers."""
    lines = []
    for n, pc in iter_frames(wb):
        source = wb.s.symbols.get_source_location(pc if n == 0 else pc - 1)
        at = f" at {source}" if source else ""
        lines.append(f"#{n:<2} {pc:#018x} in {wb.describe_address(pc)}{at}")
    return Text("\n".join(lines))


@command("panel", guest=False, stopped=False)
def _panel(wb: Workbench, args: str) -> object:
    """panel: a live debugger panel (run buttons, breakpoint and watch tables, registers, hit plots)."""
    from kvmbench.jupyter.widgets import panel  # ipywidgets only when asked for

    return panel(wb)


@command("probe", guest=False)
def _probe(wb: Workbench, args: str) -> object:
    """probe: what this host's KVM really delivers (the capability table)."""
    if wb.session is not None:
        caps = wb.session.capabilities
    else:
        from kvmbench.backends.kvm.probe import probe_host
        caps = probe_host()
    rows = []
    for feature, result in caps.results.items():
        cost = f"{result.median_us:.1f} us" if result.median_us is not None else ""
        rows.append([feature.value, "yes" if result.works else "no", cost, result.detail])
    return Table(["Feature", "Works", "Cost", "Detail"], rows, title=f"host: {caps.host}")


@command("help", "h", guest=False)
def _help(wb: Workbench, args: str) -> object:
    """help: the commands and their abbreviations."""
    seen: dict[str, Command] = {}
    for entry in COMMANDS.values():
        seen.setdefault(entry.name, entry)
    rows = [[e.name, " ".join(e.aliases), e.help] for e in seen.values()]
    return Table(["Command", "Aliases", "What"], rows)


def run_control_names() -> frozenset[str]:
    return frozenset(n for n, e in COMMANDS.items() if e.runs_guest)

