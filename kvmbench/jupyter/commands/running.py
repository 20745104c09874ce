"""Running the guest: run, start, continue, step, next, stepi, nexti,
finish, until, advance (each run off the kernel's event loop, see
:mod:`kvmbench.jupyter.transform`).

Each handler returns a :class:`~kvmbench.jupyter.commands.workbench.Ran`;
the workbench prints the stop as gdb does, runs the displays and the
breakpoint's command list.
"""

from __future__ import annotations

from kvmbench.engine.model import StopReason
from kvmbench.engine.session import RunState
from kvmbench.errors import ExpressionError, KvmbenchError, SessionStateError, UsageError
from kvmbench.expressions.values import value_from_bytes, value_from_int
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Ran, Workbench
from kvmbench.symbols.types import FloatType, StructType, VoidType, sizeof, strip_typedefs, whatis


def _count(args: str, what: str = "count") -> int:
    text = args.strip()
    if not text:
        return 1
    try:
        count = int(text, 0)
    except ValueError:
        raise ExpressionError(f'No symbol "{text}" in current context.') from None
    if count < 1:
        raise UsageError(f"the {what} must be at least 1")
    return count


def _no_guest_running(wb: Workbench) -> None:
    if wb.session is not None and wb.session.state is RunState.RUNNING:
        raise SessionStateError("the guest is running; interrupt the kernel to pause it")


def _again(wb: Workbench, args: str) -> tuple[list[str], str]:
    """The last boot's words and target, with new guest arguments if given."""
    from kvmbench.jupyter.commands.guest import split_target

    words, target = split_target(list(wb.guest_command))
    if args.strip():
        words = [words[0], *args.split()]
    return words, target


@command("run", "r", guest=False, runs=True, family="running")
def _run(wb: Workbench, args: str) -> Ran:
    """run [ARGS]: boot the guest again from its first instruction and run it.

    The breakpoints, watchpoints on globals, displays and their commands
    are kept, as gdb keeps them across ``run``; ARGS replace the guest's
    arguments (none given: the last ones)."""
    _no_guest_running(wb)
    if not wb.guest_command:
        raise SessionStateError("No executable file specified.  Boot a guest first: %guest NAME [ARGS]")
    wb.boot(*_again(wb, args))
    return Ran(wb.s.cont())


@command("start", guest=False, runs=True, family="running")
def _start(wb: Workbench, args: str) -> Ran:
    """start [ARGS]: boot the guest again and stop at the start of main (a temporary breakpoint)."""
    from kvmbench.jupyter.commands.breakpoints import add_breakpoint

    _no_guest_running(wb)
    if not wb.guest_command:
        raise SessionStateError("No executable file specified.  Boot a guest first: %guest NAME [ARGS]")
    wb.boot(*_again(wb, args))
    text = add_breakpoint(wb, "main", "tbreak").body
    return Ran(wb.s.cont(), before=[text])


@command("continue", "c", "cont", "fg", runs=True, family="running")
def _continue(wb: Workbench, args: str) -> Ran:
    """continue [N]: run until a breakpoint, watchpoint, interrupt or exit (N: ignore the current breakpoint N-1 more times)."""
    before = []
    if args.strip():
        n = _count(args)
        last = wb.s.last_stop
        if last is not None and last.breakpoint is not None and n > 1:
            wb.s.breakpoints.set_ignore_count(last.breakpoint, n - 1)
            before.append(f"Will ignore next {n - 1} crossings of breakpoint {last.breakpoint}.  Continuing.")
    return Ran(wb.s.cont(), before=before)


def _no_lines(wb: Workbench) -> list[str]:
    """gdb's note when a step starts where there is no line information."""
    s = wb.s
    debug = s.symbols.debug
    if debug is not None and debug.get_line_entry(s.pc) is not None:
        return []
    symbol = s.symbols.get_containing(s.pc)
    if symbol is None:
        return []
    return [f"Single stepping until exit from function {symbol.name},",
            "which has no line number information."]


@command("step", "s", runs=True, family="running")
def _step(wb: Workbench, args: str) -> Ran:
    """step [N]: run to the start of the next source line, entering called functions that have line information."""
    before = _no_lines(wb)
    return Ran(wb.s.step(_count(args)), before=before)


@command("next", "n", runs=True, family="running")
def _next(wb: Workbench, args: str) -> Ran:
    """next [N]: run to the next source line in this function, running called functions to their return."""
    before = _no_lines(wb)
    return Ran(wb.s.next(_count(args)), before=before)


@command("stepi", "si", runs=True, family="running")
def _stepi(wb: Workbench, args: str) -> Ran:
    """stepi [N]: execute N instructions, into calls."""
    return Ran(wb.s.stepi(_count(args)))


@command("nexti", "ni", runs=True, family="running")
def _nexti(wb: Workbench, args: str) -> Ran:
    """nexti [N]: execute N instructions, running called functions to their return."""
    return Ran(wb.s.nexti(_count(args)))


@command("finish", "fin", runs=True, family="running")
def _finish(wb: Workbench, args: str) -> Ran:
    """finish: run until the selected frame returns ("Run till exit from #N ..."); prints the value returned."""
    if args.strip():
        raise UsageError("The \"finish\" command does not take any arguments.")
    s = wb.s
    level = s.selected_frame
    frames = s.frame_list(level + 2)
    if level + 1 >= len(frames):
        raise UsageError('"finish" not meaningful in the outermost frame.')
    frame = frames[level]
    before = [f"Run till exit from {wb.frame_line(frame)}"]
    function = frame.function
    stop = s.finish(level)
    after: list[str] = []
    if stop.reason is StopReason.FINISH and function is not None:
        returned = _value_returned(wb, function)
        if returned is not None:
            after.append(returned)
    return Ran(stop, before=before, after=after)


def _value_returned(wb: Workbench, function: object) -> str | None:
    """gdb's ``Value returned is $1 = 55`` for the function's DWARF return type
    (System V psABI 3.2.3: integers and pointers in rax, floats in xmm0)."""
    ftype = getattr(function, "function_type", None)
    rtype = getattr(ftype, "return_type", None)
    if rtype is None:
        return None
    real = strip_typedefs(rtype)
    if isinstance(real, VoidType):
        return None
    size = sizeof(rtype) or 0
    s = wb.s
    try:
        if isinstance(real, FloatType) and size in (4, 8):
            raw = s.target.read_register("xmm0")
            value = value_from_bytes(rtype, raw.to_bytes(16, "little")[:size])
        elif isinstance(real, StructType):
            if size > 16:
                return f"Value returned has type: {whatis(rtype)}. Cannot determine contents"
            data = s.regs.rax.to_bytes(8, "little") + s.regs.rdx.to_bytes(8, "little")
            value = value_from_bytes(rtype, data[:size])
        elif size <= 8:
            value = value_from_int(rtype, s.regs.rax & ((1 << (8 * size)) - 1) if size else s.regs.rax)
        else:
            return None
        evaluator = wb.evaluator(None)
        number = wb.history.record(value)
        return f"Value returned is ${number} = {evaluator.format(value)}"
    except KvmbenchError:
        return None


def _location_addresses(wb: Workbench, text: str) -> int:
    from kvmbench.jupyter.commands.breakpoints import resolve_location

    addresses = resolve_location(wb, text)
    return addresses[0]


@command("until", "u", runs=True, family="running")
def _until(wb: Workbench, args: str) -> Ran:
    """until [LOCATION]: without LOCATION, `next`, but never stopping in a line before this one (a loop runs to its end); with it, run until LOCATION in this frame or until the frame returns."""
    s = wb.s
    if not args.strip():
        if _no_lines(wb):
            # gdb's until_next_command without a line: the range is [function, pc),
            # so one instruction (calls run over, a jump back runs on).
            return Ran(s.until())
        return Ran(s.until_line())
    return Ran(s.until(_location_addresses(wb, args.strip())))


@command("advance", runs=True, family="running")
def _advance(wb: Workbench, args: str) -> Ran:
    """advance LOCATION: run until LOCATION is reached in any frame, or the current frame returns."""
    if not args.strip():
        raise UsageError("Argument required (a location).")
    return Ran(wb.s.advance(_location_addresses(wb, args.strip())))


@command("kill", "k", stopped=False, family="running")
def _kill(wb: Workbench, args: str) -> object:
    """kill: end the guest (its breakpoints are kept for the next run)."""
    from kvmbench.jupyter.display import Text

    session = wb.s
    if session.state is RunState.RUNNING:
        session.pause()
    name = wb.guest_command[0] if wb.guest_command else "guest"
    specs = (dict(wb.breakpoint_specs), dict(wb.watch_specs))
    wb.close()
    wb.breakpoint_specs, wb.watch_specs = specs
    return Text(f"[Inferior 1 (guest {name}) killed]")
