"""Breakpoint and watchpoint commands: break, hbreak, tbreak, trace, watch,
rwatch, awatch, delete, disable, enable, condition, ignore."""

from __future__ import annotations

import re

from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import Mechanism
from kvmbench.errors import UsageError
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.jupyter.display import Text


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
    text = (f"{label} {wp.number}: {wp.location} ({wp.length} bytes at {wp.address:#x}) "
            f"via {wp.served_by}; value {value}")
    if wp.mechanism is Mechanism.STEP_COMPARE:
        # The last resort: say what it costs before the user runs into it.
        probed = wb.s.capabilities.results.get(Feature.SINGLE_STEP)
        cost = f", about {probed.median_us:.0f} us a step" if probed and probed.median_us else ""
        text += ("\nnote: this host has no cheaper way to watch this, so the guest is "
                 f"single-stepped while the watch is on (slow{cost})")
    return Text(text)


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
            raise UsageError(f"not a breakpoint number: {word!r}")
        numbers.append(int(word))
    return numbers


def _all_numbers(wb: Workbench) -> list[int]:
    return sorted([bp.number for bp in wb.s.breakpoints] + [wp.number for wp in wb.s.watchpoints])


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
    numbers = _numbers(args, _all_numbers(wb)) if args.strip() else _all_numbers(wb)
    for n in numbers:
        _delete_one(wb, n)
    return None


@command("disable", "disa", "dis")
def _disable(wb: Workbench, args: str) -> object:
    """disable N...: keep breakpoints but do not stop at them."""
    every = [bp.number for bp in wb.s.breakpoints]
    numbers = _numbers(args, every) if args.strip() else every
    for n in numbers:
        wb.s.breakpoints.disable(n)
    return None


@command("enable", "en")
def _enable(wb: Workbench, args: str) -> object:
    """enable N...: re-arm disabled breakpoints."""
    every = [bp.number for bp in wb.s.breakpoints]
    numbers = _numbers(args, every) if args.strip() else every
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
