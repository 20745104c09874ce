"""The connection to a gdbstub: addresses, the socket, packets with their
acknowledgements, timeouts.

Addresses are ``HOST:PORT`` (``[::1]:PORT`` for IPv6) or ``unix:PATH``.
Until no-ack mode is agreed every packet received is acknowledged with
``+``, a packet that arrives broken is asked for again with ``-`` (a few
times, then the stub is given up on), and a ``-`` from the stub resends
our last packet (GDB manual, "Overview"). Every wait has a deadline, so a
stub that stops talking raises :class:`~kvmbench.errors.RemoteTimeout`
instead of hanging; a closed connection is reported as such.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Sequence

from kvmbench.errors import RemoteConnectionError, RemoteProtocolError, RemoteTimeout, UsageError
from kvmbench.rsp.framing import ACK, INTERRUPT, NACK, encode_packet
from kvmbench.rsp.hexdata import show
from kvmbench.rsp.stream import Ack, BadPacket, Garbage, Nack, Packet, PacketDecoder, StreamEvent

#: Packets the stub may send broken, in a row, before we give up on it.
MAX_BAD_PACKETS = 3
#: Our packet resent at most this often when the stub nacks it.
MAX_RESENDS = 3
#: Bytes of garbage between two packets before the stub is given up on.
MAX_GARBAGE = 64 * 1024
_RECV_SIZE = 64 * 1024
#: Unacknowledged packets remembered for a resend (a stub that never acks
#: must not make the list grow).
_UNACKED_KEPT = 64


def parse_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """(socket family, socket address) of ``HOST:PORT`` or ``unix:PATH``."""
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if not path:
            raise UsageError(f"{address!r}: unix: needs a socket path")
        return socket.AF_UNIX, path
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{address!r} is neither HOST:PORT nor unix:PATH")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


class PacketChannel:
    """Packets to and from one stub over one socket.

    One thread at a time sends packets and receives; :meth:`send_interrupt`
    and :meth:`close` may be called from any thread.
    """

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.address = address
        self.no_ack = False
        self._sock = sock
        self._decoder = PacketDecoder()
        self._events: deque[StreamEvent] = deque()
        self._send_lock = threading.Lock()
        #: Our framed packets the stub has not acknowledged yet, oldest
        #: first (ack mode): a ``-`` asks for the oldest again.
        self._unacked: deque[bytes] = deque(maxlen=_UNACKED_KEPT)
        self._last_sent = b""
        self._closed = False

    @classmethod
    def connect(cls, address: str, timeout: float) -> "PacketChannel":
        family, sockaddr = parse_address(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        except socket.timeout:
            sock.close()
            raise RemoteTimeout(f"{address}: no answer to connect within {timeout:g} s") from None
        except OSError as e:
            sock.close()
            raise RemoteConnectionError(f"{address}: cannot connect: {e.strerror or e}") from None
        if family != socket.AF_UNIX:
            # Small packets, one round trip each: do not let Nagle hold them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, address)

    # --- sending ----------------------------------------------------------------

    def _send_raw(self, data: bytes) -> None:
        with self._send_lock:
            if self._closed:
                raise RemoteConnectionError(f"{self.address}: the connection is closed")
            try:
                self._sock.sendall(data)
            except OSError as e:
                raise RemoteConnectionError(f"{self.address}: connection lost while sending ({e.strerror or e})") from None

    def send(self, data: bytes) -> None:
        """Send one packet (framed and escaped here)."""
        self.send_many((data,))

    def send_many(self, packets: Sequence[bytes]) -> None:
        """Send packets back to back in one write: the stub answers them in
        order (GDB manual, "Overview": a stub handles one packet at a time),
        and their round trips overlap."""
        framed = [encode_packet(data) for data in packets]
        if not self.no_ack:
            self._unacked.extend(framed)
        self._last_sent = framed[-1]
        self._send_raw(b"".join(framed))

    def send_interrupt(self) -> None:
        """The 0x03 byte: stop the running target (any thread)."""
        self._send_raw(INTERRUPT)

    # --- receiving ----------------------------------------------------------------

    def receive(self, deadline: float | None, waiting_for: str) -> bytes | None:
        """The next packet's data, or None if the stub closed the connection.

        ``deadline`` is a ``time.monotonic()`` time (None: no limit);
        ``waiting_for`` names what is awaited in the errors.
        """
        bad = resent = garbage = 0
        while True:
            while self._events:
                event = self._events.popleft()
                if isinstance(event, Packet):
                    if not self.no_ack:
                        self._send_raw(ACK)
                    return event.data
                if isinstance(event, BadPacket):
                    bad += 1
                    if self.no_ack or bad > MAX_BAD_PACKETS:
                        raise RemoteProtocolError(
                            f"{self.address}: broken packet while waiting for {waiting_for}: "
                            f"{event.reason} ({show(event.raw)})"
                        )
                    self._send_raw(NACK)
                elif isinstance(event, Ack):
                    if self._unacked:
                        self._unacked.popleft()
                elif isinstance(event, Nack):
                    resent += 1
                    if resent > MAX_RESENDS or not (self._unacked or self._last_sent):
                        raise RemoteProtocolError(f"{self.address}: the stub keeps refusing our packet (nack) while {waiting_for}")
                    # The oldest packet not acknowledged is the one refused; a
                    # stub that acked before refusing means the last one.
                    self._send_raw(self._unacked[0] if self._unacked else self._last_sent)
                elif isinstance(event, Garbage):
                    garbage += len(event.data)
                    if garbage > MAX_GARBAGE:
                        raise RemoteProtocolError(
                            f"{self.address}: {garbage} bytes that are no packet while waiting for {waiting_for}"
                        )
                # Interrupts and notifications need nothing from us.
            data = self._recv(deadline, waiting_for)
            if not data:
                return None
            self._events.extend(self._decoder.feed(data))

    def _recv(self, deadline: float | None, waiting_for: str) -> bytes:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise RemoteTimeout(f"{self.address}: no {waiting_for} in time")
        try:
            self._sock.settimeout(remaining)
            return self._sock.recv(_RECV_SIZE)
        except socket.timeout:
            raise RemoteTimeout(f"{self.address}: no {waiting_for} in time") from None
        except OSError:
            return b""  # reset or shut down: the connection is gone

    def close(self) -> None:
        """Close the connection; a thread blocked in :meth:`receive` sees it closed."""
        with self._send_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
