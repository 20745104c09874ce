"""``monitor`` commands (``qRcmd``): kvmbench's own features from gdb and lldb.

Each command is a parser plus calls on the :class:`~kvmbench.engine.session.Session`
API, returning the text the client prints (GDB manual, "General Query
Packets" > ``qRcmd``: the output goes back in ``O`` packets, then ``OK``).

- ``trace LOC``: a counted tracepoint at LOC (never stops the guest);
- ``hits``: every request's hit count and mechanism;
- ``info mechanisms``: how each request is served and why, and the slots;
- ``delete N``: delete request N (a tracepoint, or a notebook's breakpoint);
- ``stop``: the last stop, as the session saw it (whoever caused it);
- ``help``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from kvmbench.engine.model import Breakpoint, Watchpoint
from kvmbench.engine.session import Session
from kvmbench.errors import UsageError

Handler = Callable[[Session, list[str]], str]
COMMANDS: dict[str, tuple[Handler, str]] = {}


def _command(name: str, usage: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (handler, usage)
        return handler

    return register


def run_monitor(session: Session, line: str) -> str:
    """The output of one monitor command line (ends in a newline)."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise UsageError(f"monitor: {e}") from None
    if not words:
        words = ["help"]
    name = words[0]
    if name == "info" and len(words) > 1:
        name, words = f"info {words[1]}", words[1:]
    entry = COMMANDS.get(name)
    if entry is None:
        raise UsageError(f"unknown monitor command {words[0]!r} (try 'monitor help')")
    text = entry[0](session, words[1:])
    return text if text.endswith("\n") else text + "\n"


def _requests(session: Session) -> list[Breakpoint | Watchpoint]:
    items: list[Breakpoint | Watchpoint] = [b for b in session.breakpoints if not b.internal]
    items += list(session.watchpoints)
    return sorted(items, key=lambda r: r.number)


def _what(request: Breakpoint | Watchpoint) -> str:
    if isinstance(request, Watchpoint):
        return f"{request.access.value} watch"
    return "tracepoint" if request.tracepoint else "breakpoint"


def _table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


@_command("trace", "trace LOC: count every hit of LOC without stopping")
def _trace(session: Session, args: list[str]) -> str:
    if len(args) != 1:
        raise UsageError("usage: monitor trace LOC")
    location: str | int = args[0]
    if args[0].startswith("*"):
        location = int(args[0][1:], 0)
    bp = session.breakpoints.trace(location)
    return f"tracepoint {bp.number} at {bp.address:#x} ({bp.location}) served by {bp.served_by}"


@_command("hits", "hits: hit counts of every breakpoint, tracepoint and watchpoint")
def _hits(session: Session, args: list[str]) -> str:
    rows = [(str(r.number), _what(r), r.location, str(r.hit_count), r.served_by)
            for r in _requests(session)]
    if not rows:
        return "no breakpoints, tracepoints or watchpoints"
    return _table(rows, ("num", "type", "location", "hits", "mechanism"))


@_command("info mechanisms", "info mechanisms: how each request is served, and why; the debug slots")
def _mechanisms(session: Session, args: list[str]) -> str:
    rows = [(str(r.number), _what(r), r.location, r.served_by, r.reason) for r in _requests(session)]
    used, total, holders = session.slot_usage()
    lines = [_table(rows, ("num", "type", "location", "mechanism", "why"))] if rows else \
        ["no breakpoints, tracepoints or watchpoints"]
    lines.append(f"hardware slots: {used} of {total} in use"
                 + "".join(f"; {slot}: {holder}" for slot, holder in holders))
    return "\n".join(lines)


@_command("delete", "delete N: delete breakpoint, tracepoint or watchpoint N")
def _delete(session: Session, args: list[str]) -> str:
    if len(args) != 1 or not args[0].isdigit():
        raise UsageError("usage: monitor delete N")
    number = int(args[0])
    if number in session.watchpoints:
        session.watchpoints.delete(number)
    else:
        session.breakpoints.delete(number)
    return f"deleted {number}"


@_command("stop", "stop: the last stop of the guest, whoever caused it")
def _stop(session: Session, args: list[str]) -> str:
    stop = session.last_stop
    if stop is None:
        return f"no stop yet: the guest is {session.state.value}"
    where = session.symbols.format_address(stop.pc) if stop.pc is not None else ""
    return f"{stop.describe()}" + (f" <{where}>" if where else "")


@_command("help", "help: these commands")
def _help(session: Session, args: list[str]) -> str:
    return "kvmbench monitor commands:\n" + "\n".join(f"  {usage}" for _, usage in COMMANDS.values())
