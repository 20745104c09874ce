"""``qSupported``: the features each side announces, both ways.

GDB manual, "General Query Packets" > ``qSupported``: gdb sends
``qSupported:f1;f2...`` with its own features; the stub replies with
``f1;f2...``. Each feature is ``name+`` (supported), ``name-`` (not),
``name=value``, or, from gdb only, ``name?`` (tell me). ``PacketSize`` (hex)
is the largest packet the stub takes.

A stub's reply must be built from what it implements, never from a fixed
list: :func:`announced_packets` picks, from the packets a server really
handles, those whose support is announced through ``qSupported``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import format_hex_int, parse_hex_int, show

#: True ``+``, False ``-``, None ``?`` (a query, from gdb), or a ``=value``.
FeatureValue = bool | str | None

#: Packets a stub announces in its qSupported reply, and the feature name it
#: announces them under (GDB manual, the table of stub features under
#: ``qSupported``); support for every other packet is found by trying it.
ANNOUNCED_AS: Mapping[str, str] = MappingProxyType({
    **{name: name for name in (
        "QStartNoAckMode", "QNonStop", "QPassSignals", "QProgramSignals", "QCatchSyscalls",
        "QThreadEvents", "QDisableRandomization", "QAgent", "QAllow",
        "QEnvironmentHexEncoded", "QEnvironmentReset", "QEnvironmentUnset",
        "QSetWorkingDir", "QStartupWithShell",
        "qXfer:auxv:read", "qXfer:exec-file:read", "qXfer:features:read",
        "qXfer:libraries:read", "qXfer:libraries-svr4:read", "qXfer:memory-map:read",
        "qXfer:osdata:read", "qXfer:siginfo:read", "qXfer:siginfo:write",
        "qXfer:threads:read", "qXfer:traceframe-info:read",
        "qXfer:btrace:read", "qXfer:btrace-conf:read",
    )},
    "bc": "ReverseContinue",
    "bs": "ReverseStep",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Features:
    """One side's announced features, in the order they came."""

    values: Mapping[str, FeatureValue] = field(default_factory=dict)

    def supported(self, name: str) -> bool:
        """Announced as ``name+`` (or with a value)."""
        value = self.values.get(name)
        return value is True or isinstance(value, str)

    def value(self, name: str) -> str | None:
        """The ``name=value`` value, or None."""
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    @property
    def packet_size(self) -> int | None:
        """``PacketSize``: the most packet data the stub takes, or None."""
        text = self.value("PacketSize")
        return None if text is None else parse_hex_int(text.encode(), "PacketSize")


def parse_features(text: bytes) -> Features:
    """``f1;f2;...`` (either side's list)."""
    values: dict[str, FeatureValue] = {}
    for item in text.split(b";"):
        if not item:
            continue
        name, equals, value = item.partition(b"=")
        if equals:
            if not name:
                raise RspError(f"feature without a name: {show(item)}")
            values[name.decode("ascii", "replace")] = value.decode("ascii", "replace")
            continue
        mark = item[-1:]
        if mark not in (b"+", b"-", b"?") or len(item) < 2:
            raise RspError(f"feature is neither name+, name-, name? nor name=value: {show(item)}")
        values[item[:-1].decode("ascii", "replace")] = {b"+": True, b"-": False, b"?": None}[mark]
    return Features(values)


def format_features(values: Mapping[str, FeatureValue]) -> bytes:
    parts = []
    for name, value in values.items():
        if not name or any(c in name for c in ";=#$}*"):
            raise RspError(f"cannot announce a feature named {name!r}")
        if value is True:
            parts.append(f"{name}+")
        elif value is False:
            parts.append(f"{name}-")
        elif value is None:
            parts.append(f"{name}?")
        else:
            if ";" in value or any(c in value for c in "#$}*"):
                raise RspError(f"feature {name}'s value {value!r} cannot be sent")
            parts.append(f"{name}={value}")
    return ";".join(parts).encode("ascii")


def build_qsupported(features: Mapping[str, FeatureValue]) -> bytes:
    """The client's ``qSupported[:features]`` packet."""
    text = format_features(features)
    return b"qSupported:" + text if text else b"qSupported"


def parse_qsupported(packet: bytes) -> Features:
    """The client's features from its ``qSupported`` packet (server side)."""
    if packet == b"qSupported":
        return Features({})
    if not packet.startswith(b"qSupported:"):
        raise RspError(f"not a qSupported packet: {show(packet)}")
    return parse_features(packet[len(b"qSupported:"):])


def announced_packets(implemented: Iterable[str]) -> dict[str, FeatureValue]:
    """``feature: True`` for each implemented packet that qSupported announces
    (``bc`` as ``ReverseContinue``...); the others are left out."""
    return {ANNOUNCED_AS[name]: True for name in implemented if name in ANNOUNCED_AS}


def build_qsupported_reply(packet_size: int, features: Mapping[str, FeatureValue]) -> bytes:
    """The stub's reply: ``PacketSize`` first, then ``features`` (what the
    stub implements: see :func:`announced_packets`)."""
    if packet_size <= 0:
        raise RspError(f"PacketSize must be positive, not {packet_size}")
    values: dict[str, FeatureValue] = {"PacketSize": format_hex_int(packet_size).decode()}
    values.update(features)
    return format_features(values)


def parse_qsupported_reply(reply: bytes) -> Features:
    """The stub's features (client side). An empty reply is a stub that
    does not know qSupported: it announces nothing."""
    return parse_features(reply)
