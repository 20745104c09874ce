"""Run control: continue, stepi, nexti, finish, until, advance (each run
off the kernel's event loop, see :mod:`kvmbench.jupyter.transform`)."""

from __future__ import annotations

from kvmbench.errors import UsageError
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Workbench


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
