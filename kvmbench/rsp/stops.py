"""Stop replies: what ``?``, ``c``, ``s`` and ``vCont`` are answered with.

GDB manual, "Stop Reply Packets":

- ``S AA``: stopped with signal AA; ``T AA n1:r1;n2:r2;...``: the same with
  key:value pairs: a hex register number and its value in target byte
  order (expedited registers), ``thread``, ``core``, the stop reasons
  ``watch``/``rwatch``/``awatch`` (with the data address), ``swbreak`` and
  ``hwbreak`` (value empty), and others a reader may skip;
- ``W AA[;process:PID]``: the process exited with status AA;
  ``X AA[;process:PID]``: it was killed by signal AA;
- ``O XX...``: console output (hex), while the target keeps running;
- ``N``: no thread is left resumed; ``w AA;TID``: a thread exited.

Signal numbers are gdb's own (include/gdb/signals.def): 2 is SIGINT (an
interrupt), 5 is SIGTRAP (breakpoints, watchpoints and steps).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import from_hex, is_hex, parse_hex_int, show, to_hex
from kvmbench.rsp.threads import ThreadId, format_thread_id, parse_thread_id

GDB_SIGINT = 2
GDB_SIGTRAP = 5


class WatchKind(enum.Enum):
    """Which access a watchpoint stop reports (the key of its pair)."""

    WRITE = "watch"
    READ = "rwatch"
    ACCESS = "awatch"


@dataclass(frozen=True, slots=True)
class WatchHit:
    kind: WatchKind
    address: int


@dataclass(frozen=True, slots=True)
class Stopped:
    """``S``/``T``: the target stopped with ``signal``.

    ``registers`` maps register numbers to their raw bytes; ``other`` keeps
    the pairs this library does not interpret (``library``, ``fork``,
    ``create``...) in their order.
    """

    signal: int
    thread: ThreadId | None = None
    core: int | None = None
    registers: Mapping[int, bytes] = field(default_factory=dict)
    watch: WatchHit | None = None
    swbreak: bool = False
    hwbreak: bool = False
    other: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Exited:
    """``W``: the process exited with ``status``."""

    status: int
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class Terminated:
    """``X``: the process was killed by ``signal``."""

    signal: int
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class ConsoleOutput:
    """``O``: text the target printed; the target is still running."""

    text: bytes


@dataclass(frozen=True, slots=True)
class NoResumed:
    """``N``: there are no resumed threads left to wait for."""


@dataclass(frozen=True, slots=True)
class ThreadExited:
    """``w``: ``thread`` exited with ``status``."""

    status: int
    thread: ThreadId


StopReply = Stopped | Exited | Terminated | ConsoleOutput | NoResumed | ThreadExited

_WATCH_KEYS = {kind.value.encode(): kind for kind in WatchKind}


def _signal(text: bytes, what: str) -> int:
    if len(text) != 2 or not is_hex(text):
        raise RspError(f"{what} needs a two-digit hex number, got {show(text)}")
    return int(text, 16)


def _parse_pairs(text: bytes, signal: int) -> Stopped:
    thread = core = watch = None
    swbreak = hwbreak = False
    registers: dict[int, bytes] = {}
    other: list[tuple[bytes, bytes]] = []
    for pair in text.split(b";"):
        if not pair:
            continue  # the trailing ';' most stubs send
        key, colon, value = pair.partition(b":")
        if not colon:
            raise RspError(f"stop reply pair without ':': {show(pair)}")
        if key == b"thread":
            thread = parse_thread_id(value)
        elif key == b"core":
            core = parse_hex_int(value, "core")
        elif key in _WATCH_KEYS:
            watch = WatchHit(_WATCH_KEYS[key], parse_hex_int(value, "watch address"))
        elif key == b"swbreak":
            swbreak = True
        elif key == b"hwbreak":
            hwbreak = True
        elif is_hex(key):
            registers[int(key, 16)] = from_hex(value)
        else:
            other.append((key, value))
    return Stopped(signal, thread, core, registers, watch, swbreak, hwbreak, tuple(other))


def _parse_process(tail: bytes) -> int | None:
    if not tail:
        return None
    key, _, value = tail.partition(b":")
    if not tail.startswith(b";") or key != b";process":
        raise RspError(f"exit reply tail is not ';process:PID': {show(tail)}")
    return parse_hex_int(value, "process id")


def parse_stop_reply(reply: bytes) -> StopReply:
    """The typed form of a stop reply; :class:`RspError` if it is none."""
    kind, body = reply[:1], reply[1:]
    if kind == b"S":
        return Stopped(_signal(body, "S"))
    if kind == b"T":
        return _parse_pairs(body[2:], _signal(body[:2], "T"))
    if kind == b"W":
        return Exited(_signal(body[:2], "W"), _parse_process(body[2:]))
    if kind == b"X":
        return Terminated(_signal(body[:2], "X"), _parse_process(body[2:]))
    if kind == b"O" and body and is_hex(body):
        return ConsoleOutput(from_hex(body))
    if reply == b"N":
        return NoResumed()
    if kind == b"w":
        status, semicolon, thread = body.partition(b";")
        if not semicolon:
            raise RspError(f"thread exit reply without a thread: {show(reply)}")
        return ThreadExited(_signal(status, "w"), parse_thread_id(thread))
    raise RspError(f"not a stop reply: {show(reply)}")


def build_stop_reply(reply: StopReply) -> bytes:
    """The wire form of ``reply`` (``T`` for every :class:`Stopped`)."""
    if isinstance(reply, Stopped):
        if not 0 <= reply.signal <= 0xFF:
            raise RspError(f"signal {reply.signal} is not 0..255")
        parts = [b"T%02x" % reply.signal]
        for regnum in sorted(reply.registers):
            parts.append(b"%x:%s;" % (regnum, to_hex(reply.registers[regnum])))
        if reply.thread is not None:
            parts.append(b"thread:%s;" % format_thread_id(reply.thread))
        if reply.core is not None:
            parts.append(b"core:%x;" % reply.core)
        if reply.watch is not None:
            parts.append(b"%s:%x;" % (reply.watch.kind.value.encode(), reply.watch.address))
        if reply.swbreak:
            parts.append(b"swbreak:;")
        if reply.hwbreak:
            parts.append(b"hwbreak:;")
        for key, value in reply.other:
            parts.append(key + b":" + value + b";")
        return b"".join(parts)
    if isinstance(reply, (Exited, Terminated)):
        code = reply.status if isinstance(reply, Exited) else reply.signal
        text = (b"W" if isinstance(reply, Exited) else b"X") + b"%02x" % (code & 0xFF)
        return text + (b";process:%x" % reply.pid if reply.pid is not None else b"")
    if isinstance(reply, ConsoleOutput):
        if not reply.text:
            raise RspError("console output 'O' needs at least one byte")
        return b"O" + to_hex(reply.text)
    if isinstance(reply, NoResumed):
        return b"N"
    if isinstance(reply, ThreadExited):
        return b"w%02x;%s" % (reply.status & 0xFF, format_thread_id(reply.thread))
    raise RspError(f"not a stop reply: {reply!r}")
