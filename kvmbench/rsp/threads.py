"""Thread ids and the packets about threads: ``H``, ``T``, ``qC``,
``qfThreadInfo``/``qsThreadInfo``.

GDB manual, "Packets" (thread-id syntax): a thread id is a hex number,
``-1`` for all threads or ``0`` for any thread; with the ``multiprocess``
feature it is ``pPID.TID``, or ``pPID`` for all threads of a process. A
gdbstub for a virtual machine reports its vCPUs as threads (QEMU 7.2:
``p01.01``, ``p01.02``...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import format_hex_int, parse_hex_int, show

ALL = -1
ANY = 0


@dataclass(frozen=True, slots=True)
class ThreadId:
    """A thread: ``tid`` (``ALL`` = -1, ``ANY`` = 0), and ``pid`` when the
    multiprocess syntax ``pPID.TID`` is in use (None otherwise)."""

    tid: int
    pid: int | None = None

    def __str__(self) -> str:
        return format_thread_id(self).decode()


ALL_THREADS = ThreadId(ALL)
ANY_THREAD = ThreadId(ANY)


def _parse_id_part(text: bytes, what: str) -> int:
    if text == b"-1":
        return ALL
    return parse_hex_int(text, what)


def parse_thread_id(text: bytes) -> ThreadId:
    """``p1.2``, ``p1`` (all of process 1), ``-1``, ``0`` or ``1a``."""
    if text.startswith(b"p"):
        pid_text, dot, tid_text = text[1:].partition(b".")
        pid = _parse_id_part(pid_text, "process id")
        return ThreadId(_parse_id_part(tid_text, "thread id") if dot else ALL, pid)
    return ThreadId(_parse_id_part(text, "thread id"))


def _format_id_part(value: int) -> bytes:
    if value == ALL:
        return b"-1"
    if value < 0:
        raise RspError(f"thread id {value} is neither -1 (all) nor a thread")
    return format_hex_int(value)


def format_thread_id(thread: ThreadId) -> bytes:
    """The wire form of ``thread`` (``pPID.TID`` when it has a pid)."""
    tid = _format_id_part(thread.tid)
    if thread.pid is None:
        return tid
    return b"p" + _format_id_part(thread.pid) + b"." + tid


# --- H: set the thread for later operations --------------------------------------


@dataclass(frozen=True, slots=True)
class SetThread:
    """``Hg`` (registers and memory) or ``Hc`` (continue and step) thread."""

    operation: str
    thread: ThreadId


def build_set_thread(operation: str, thread: ThreadId) -> bytes:
    """``Hg<id>`` or ``Hc<id>``."""
    if operation not in ("g", "c"):
        raise RspError(f"H takes 'g' or 'c', not {operation!r}")
    return b"H" + operation.encode() + format_thread_id(thread)


def parse_set_thread(packet: bytes) -> SetThread:
    if len(packet) < 3 or packet[:1] != b"H" or packet[1:2] not in (b"g", b"c"):
        raise RspError(f"not an Hg/Hc packet: {show(packet)}")
    return SetThread(packet[1:2].decode(), parse_thread_id(packet[2:]))


# --- T: is the thread alive ------------------------------------------------------


def build_thread_alive(thread: ThreadId) -> bytes:
    """``T<id>``: the stub answers OK if the thread is alive, E NN if not."""
    return b"T" + format_thread_id(thread)


def parse_thread_alive(packet: bytes) -> ThreadId:
    if packet[:1] != b"T" or len(packet) < 2:
        raise RspError(f"not a T (thread alive) packet: {show(packet)}")
    return parse_thread_id(packet[1:])


# --- qC: the current thread ------------------------------------------------------


def build_current_thread_reply(thread: ThreadId) -> bytes:
    return b"QC" + format_thread_id(thread)


def parse_current_thread_reply(reply: bytes) -> ThreadId:
    if not reply.startswith(b"QC") or len(reply) < 3:
        raise RspError(f"not a qC reply: {show(reply)}")
    return parse_thread_id(reply[2:])


# --- qfThreadInfo / qsThreadInfo -------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadListChunk:
    """One reply to ``qfThreadInfo`` or ``qsThreadInfo``: ``m`` ids (ask
    ``qsThreadInfo`` for more) or ``l`` (the list is complete)."""

    threads: tuple[ThreadId, ...]
    last: bool


def build_thread_list_reply(threads: Iterable[ThreadId], last: bool) -> bytes:
    """``m<id>,<id>...`` or, for the end of the list, ``l``."""
    ids = [format_thread_id(t) for t in threads]
    if last:
        if ids:
            raise RspError("the last thread list reply ('l') carries no ids")
        return b"l"
    if not ids:
        raise RspError("a thread list reply 'm' needs at least one id")
    return b"m" + b",".join(ids)


def parse_thread_list_reply(reply: bytes) -> ThreadListChunk:
    if reply == b"l":
        return ThreadListChunk((), True)
    if reply.startswith(b"l"):
        # gdbserver never sends ids with 'l', but the manual's grammar allows it.
        return ThreadListChunk(tuple(parse_thread_id(t) for t in reply[1:].split(b",")), True)
    if reply.startswith(b"m") and len(reply) > 1:
        return ThreadListChunk(tuple(parse_thread_id(t) for t in reply[1:].split(b",")), False)
    raise RspError(f"not a thread list reply: {show(reply)}")
