"""Resuming: ``c``, ``s``, ``vCont?`` and ``vCont``.

GDB manual, "Packets": ``c [addr]`` continues and ``s [addr]`` steps one
instruction (at ``addr`` if given) the thread chosen by ``Hc``.
``vCont?`` asks which ``vCont`` actions the stub has (reply
``vCont[;action...]``). ``vCont;action[:thread-id];...`` resumes threads
each with their own action: ``c`` continue, ``C sig`` continue with a
signal, ``s`` step, ``S sig`` step with a signal, ``t`` stop, ``r
start,end`` step while in the range; the leftmost action that matches a
thread applies, and an action without a thread id applies to all others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import is_hex, parse_hex_int, show
from kvmbench.rsp.threads import ThreadId, format_thread_id, parse_thread_id

#: vCont actions and whether they carry an argument after the letter.
VCONT_ACTIONS = {"c": None, "C": "signal", "s": None, "S": "signal", "t": None, "r": "range"}


@dataclass(frozen=True, slots=True)
class VContAction:
    """One action of a ``vCont`` packet: ``action`` for ``thread`` (None: every
    thread no earlier action names)."""

    action: str
    thread: ThreadId | None = None
    signal: int | None = None
    range: tuple[int, int] | None = None


def build_continue(address: int | None = None) -> bytes:
    return b"c" if address is None else b"c%x" % address


def build_step(address: int | None = None) -> bytes:
    return b"s" if address is None else b"s%x" % address


def parse_continue_or_step(packet: bytes) -> tuple[str, int | None]:
    """``("c" | "s", address or None)`` of a ``c`` or ``s`` packet."""
    letter, rest = packet[:1], packet[1:]
    if letter not in (b"c", b"s"):
        raise RspError(f"not a c/s packet: {show(packet)}")
    return letter.decode(), parse_hex_int(rest, "resume address") if rest else None


def build_vcont_query() -> bytes:
    return b"vCont?"


def build_vcont_actions_reply(actions: Iterable[str]) -> bytes:
    """``vCont;c;C;s;S`` listing the actions a stub implements."""
    listed = list(actions)
    unknown = [a for a in listed if a not in VCONT_ACTIONS]
    if unknown:
        raise RspError(f"not vCont actions: {unknown}")
    return b"vCont" + b"".join(b";" + a.encode() for a in listed)


def parse_vcont_actions_reply(reply: bytes) -> frozenset[str]:
    """The actions in a ``vCont?`` reply (empty: no ``vCont`` at all)."""
    if reply == b"":
        return frozenset()
    if reply != b"vCont" and not reply.startswith(b"vCont;"):
        raise RspError(f"not a vCont? reply: {show(reply)}")
    return frozenset(a.decode("ascii", "replace") for a in reply.split(b";")[1:] if a)


def _format_action(action: VContAction) -> bytes:
    if action.action not in VCONT_ACTIONS:
        raise RspError(f"{action.action!r} is not a vCont action")
    text = action.action.encode()
    argument = VCONT_ACTIONS[action.action]
    if argument == "signal":
        if action.signal is None or not 0 <= action.signal <= 0xFF:
            raise RspError(f"vCont {action.action} needs a signal 0..255, not {action.signal}")
        text += b"%02x" % action.signal
    elif argument == "range":
        if action.range is None or not 0 <= action.range[0] <= action.range[1]:
            raise RspError(f"vCont r needs start <= end, not {action.range}")
        text += b"%x,%x" % action.range
    if action.thread is not None:
        text += b":" + format_thread_id(action.thread)
    return text


def build_vcont(actions: Sequence[VContAction]) -> bytes:
    """``vCont;action[:thread];...``."""
    if not actions:
        raise RspError("vCont needs at least one action")
    return b"vCont" + b"".join(b";" + _format_action(a) for a in actions)


def _parse_action(text: bytes) -> VContAction:
    body, colon, thread_text = text.partition(b":")
    thread = parse_thread_id(thread_text) if colon else None
    letter = body[:1].decode("ascii", "replace")
    if letter not in VCONT_ACTIONS:
        raise RspError(f"unknown vCont action {show(body)}")
    argument, rest = VCONT_ACTIONS[letter], body[1:]
    if argument == "signal":
        if len(rest) != 2 or not is_hex(rest):
            raise RspError(f"vCont {letter} needs a two-digit signal: {show(body)}")
        return VContAction(letter, thread, signal=int(rest, 16))
    if argument == "range":
        start, comma, end = rest.partition(b",")
        if not comma:
            raise RspError(f"vCont r needs start,end: {show(body)}")
        return VContAction(letter, thread, range=(parse_hex_int(start, "range start"), parse_hex_int(end, "range end")))
    if rest:
        raise RspError(f"vCont {letter} takes no argument: {show(body)}")
    return VContAction(letter, thread)


def parse_vcont(packet: bytes) -> tuple[VContAction, ...]:
    if not packet.startswith(b"vCont;"):
        raise RspError(f"not a vCont packet: {show(packet)}")
    return tuple(_parse_action(a) for a in packet[len(b"vCont;"):].split(b";"))
