"""A gdbstub written for the client's tests: it answers like a small,
well-behaved stub (one vCPU, a page of memory, our own target.xml, no-ack
mode offered), one method per packet kind, so a test overrides only the
packet it wants answered badly, and it logs every packet it received.

A method returns the reply's data (framed here), ``Raw(bytes)`` to send
bytes as they are (broken framing, bad checksums, garbage), ``HANG_UP``
to drop the connection, or None to send nothing. ``corrupt = N`` spoils
the checksum of the next N packets sent, as line noise would; a ``-``
from the client gets the last packet sent again.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from kvmbench.rsp import breakpoints, features, memory, registers, resume, xfer
from kvmbench.rsp.framing import encode_packet
from kvmbench.rsp.layout import X86_64
from kvmbench.rsp.stream import Interrupt, Nack, Packet, PacketDecoder
from kvmbench.rsp.target_xml import build_target_xml

MEMORY_BASE = 0x1000
THREAD = b"p1.1"


@dataclass(frozen=True)
class Raw:
    data: bytes


HANG_UP = Raw(b"")

# Packet prefixes, longest first, and the method that answers each.
_DISPATCH = [
    (b"qSupported", "packet_qSupported"), (b"QStartNoAckMode", "packet_QStartNoAckMode"),
    (b"qXfer:features:read:", "packet_qXfer_features"), (b"vCont?", "packet_vCont_query"),
    (b"vCont;", "packet_vCont"), (b"qfThreadInfo", "packet_qfThreadInfo"),
    (b"qsThreadInfo", "packet_qsThreadInfo"), (b"qC", "packet_qC"), (b"?", "packet_question"),
    (b"g", "packet_g"), (b"G", "packet_G"), (b"p", "packet_p"), (b"P", "packet_P"), (b"m", "packet_m"),
    (b"M", "packet_M"), (b"X", "packet_X"), (b"Z", "packet_Z"), (b"z", "packet_z"), (b"H", "packet_H"),
    (b"c", "packet_c"), (b"s", "packet_s"), (b"D", "packet_D"), (b"k", "packet_k"),
]  # fmt: skip


class ScriptedStub:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "stub.sock"
        self.log: list[bytes] = []
        self.received = bytearray()
        self.no_ack = False
        self.running = False
        self.memory = bytearray(range(256)) * 16
        self.regs: dict[str, int | None] = {name: 0 for name in X86_64.names}
        self.breakpoints: set[tuple[int, int, int]] = set()
        self.corrupt = 0
        self._last_sent = b""
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen(1)
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    # --- serving ------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self._conn = conn
        decoder = PacketDecoder()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.received += data
                for event in decoder.feed(data):
                    if isinstance(event, Nack):
                        reply = Raw(self._last_sent) if self._last_sent else None
                    elif isinstance(event, Interrupt):
                        # A real stub ignores 0x03 while the target is stopped.
                        reply = self.on_interrupt() if self.running else None
                        self.running = False
                    elif isinstance(event, Packet):
                        self.log.append(event.data)
                        if not self.no_ack:
                            conn.sendall(b"+")
                        reply = self.handle(event.data)
                        # A resume left unanswered leaves the target running.
                        self.running = reply is None and event.data[:1] in (b"v", b"c", b"s")
                    else:
                        continue
                    if not self.send(reply):
                        return

    def send(self, reply: bytes | Raw | None) -> bool:
        """Send a reply; False once the connection is dropped."""
        assert self._conn is not None
        if reply is None:
            return True
        if reply is HANG_UP:
            self._conn.shutdown(socket.SHUT_RDWR)
            return False
        if not isinstance(reply, Raw):
            self._last_sent = encode_packet(reply)
            reply = Raw(self._last_sent)
        data = reply.data
        if self.corrupt > 0 and data.startswith(b"$"):
            self.corrupt -= 1
            data = data[:-2] + (b"00" if data[-2:] != b"00" else b"01")
        self._conn.sendall(data)
        return True

    def handle(self, packet: bytes) -> bytes | Raw | None:
        for prefix, method in _DISPATCH:
            if packet.startswith(prefix):
                return getattr(self, method)(packet)
        return b""

    def close(self) -> None:
        for sock in (self._conn, self._listener):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        self._thread.join(5)

    # --- the packets, answered as a small stub would -------------------------------

    def packet_qSupported(self, packet: bytes) -> bytes | Raw | None:
        return features.build_qsupported_reply(
            0x1000, features.announced_packets(["QStartNoAckMode", "qXfer:features:read"])
        )

    def packet_QStartNoAckMode(self, packet: bytes) -> bytes | Raw | None:
        self.no_ack = True
        return b"OK"

    def target_xml(self) -> bytes:
        return build_target_xml(X86_64)

    def packet_qXfer_features(self, packet: bytes) -> bytes | Raw | None:
        request = xfer.parse_xfer_read(packet)
        if request.annex != "target.xml":
            return b"E00"
        return xfer.build_xfer_reply(self.target_xml(), request.offset, request.length)

    def packet_vCont_query(self, packet: bytes) -> bytes | Raw | None:
        return b"vCont;c;C;s;S"

    def stop_reply(self) -> bytes:
        return b"T05thread:" + THREAD + b";"

    def packet_vCont(self, packet: bytes) -> bytes | Raw | None:
        resume.parse_vcont(packet)
        return self.stop_reply()

    def packet_c(self, packet: bytes) -> bytes | Raw | None:
        return self.stop_reply()

    def packet_s(self, packet: bytes) -> bytes | Raw | None:
        return self.stop_reply()

    def on_interrupt(self) -> bytes | Raw | None:
        return b"T02thread:" + THREAD + b";"

    def packet_qfThreadInfo(self, packet: bytes) -> bytes | Raw | None:
        return b"m" + THREAD

    def packet_qsThreadInfo(self, packet: bytes) -> bytes | Raw | None:
        return b"l"

    def packet_qC(self, packet: bytes) -> bytes | Raw | None:
        return b"QC" + THREAD

    def packet_question(self, packet: bytes) -> bytes | Raw | None:
        return self.stop_reply()

    def packet_g(self, packet: bytes) -> bytes | Raw | None:
        return registers.build_registers_reply(self.regs, X86_64)

    def packet_G(self, packet: bytes) -> bytes | Raw | None:
        self.regs.update(registers.parse_write_registers(packet, X86_64))
        return b"OK"

    def packet_p(self, packet: bytes) -> bytes | Raw | None:
        reg = X86_64.by_number(registers.parse_read_register(packet))
        return b"E00" if reg is None else registers.build_register_reply(self.regs[reg.name], reg)

    def packet_P(self, packet: bytes) -> bytes | Raw | None:
        write = registers.parse_write_register(packet)
        reg = X86_64.by_number(write.regnum)
        if reg is None or len(write.value) != reg.size:
            return b"E00"
        self.regs[reg.name] = int.from_bytes(write.value, "little")
        return b"OK"

    def _span(self, address: int, length: int) -> slice | None:
        start = address - MEMORY_BASE
        if start < 0 or start + length > len(self.memory):
            return None
        return slice(start, start + length)

    def packet_m(self, packet: bytes) -> bytes | Raw | None:
        read = memory.parse_read_memory(packet)
        span = self._span(read.address, read.length)
        return b"E14" if span is None else memory.build_memory_reply(bytes(self.memory[span]))

    def packet_M(self, packet: bytes) -> bytes | Raw | None:
        write = memory.parse_write_memory(packet)
        span = self._span(write.address, len(write.data))
        if span is None:
            return b"E14"
        self.memory[span] = write.data
        return b"OK"

    def packet_X(self, packet: bytes) -> bytes | Raw | None:
        write = memory.parse_write_binary(packet)
        span = self._span(write.address, len(write.data))
        if span is None:
            return b"E14"
        self.memory[span] = write.data
        return b"OK"

    def packet_Z(self, packet: bytes) -> bytes | Raw | None:
        request = breakpoints.parse_breakpoint(packet)
        self.breakpoints.add((request.type, request.address, request.kind))
        return b"OK"

    def packet_z(self, packet: bytes) -> bytes | Raw | None:
        request = breakpoints.parse_breakpoint(packet)
        key = (request.type, request.address, request.kind)
        if key not in self.breakpoints:
            return b"E01"
        self.breakpoints.discard(key)
        return b"OK"

    def packet_H(self, packet: bytes) -> bytes | Raw | None:
        return b"OK"

    def packet_D(self, packet: bytes) -> bytes | Raw | None:
        return b"OK"

    def packet_k(self, packet: bytes) -> bytes | Raw | None:
        return HANG_UP
