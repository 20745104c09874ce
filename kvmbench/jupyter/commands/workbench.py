"""The kernel's debugging state and the one place commands are executed."""

from __future__ import annotations

from collections.abc import Callable

from kvmbench.arch import instructions
from kvmbench.engine.model import Stop, StopReason
from kvmbench.engine.session import RunState, Session
from kvmbench.errors import KvmbenchError, SessionStateError, UsageError
from kvmbench.jupyter import expressions
from kvmbench.jupyter.commands.registry import Command, lookup, split_command
from kvmbench.jupyter.display import DisasmLine, StopView

#: Registers shown on a stop card, in gdb's `info registers` order.
CARD_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")


class Workbench:
    """The kernel's debugging state: the session and what the last stop showed."""

    def __init__(self, on_console: Callable[[str], None] | None = None,
                 on_session: Callable[[Session | None], None] | None = None) -> None:
        self.session: Session | None = None
        self.on_console = on_console
        self._on_session = on_session
        self._last_registers: dict[str, int] = {}
        #: The last %guest's words (name and arguments): what a restart boots.
        self.guest_command: list[str] = []
        #: gdb's memory for ``x``: last format letter, unit size, next address.
        self.examine_format: tuple[str, int | None] = ("x", None)
        self.examine_next: int | None = None

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

    def disassembly_around(self, pc: int, before: int = 3, after: int = 5) -> list[DisasmLine]:
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
        headline = self.headline(stop)
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
                        self.disassembly_around(stop.pc), shown, changed)

    def headline(self, stop: Stop) -> str:
        """The stop card's first line: why the guest stopped, and how it was served."""
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
            by = f" by {s.symbols.format_address(stop.writer)}" if stop.writer is not None else ""
            return (f"watchpoint {stop.watchpoint}{where}{how}: "
                    f"{stop.old_value} -> {stop.new_value}{by}")
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
