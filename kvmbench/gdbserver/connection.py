"""One client's connection: bytes in, packets answered, replies out.

Two threads (GDB manual, "Remote Protocol" > "Overview" and "Interrupts"):

- the reader receives, decodes (:class:`kvmbench.rsp.stream.PacketDecoder`),
  acknowledges packets (``+``, or ``-`` for one that cannot be taken)
  until no-ack mode is agreed, resends the last reply on a ``-``, answers
  every packet that does not run the guest itself (no thread hand-off on
  the way: gdb sends four of them for every breakpoint hit it counts),
  and turns the 0x03 byte into :meth:`GdbStub.interrupt` at once, even
  while a ``continue`` is running;
- the caller's thread (:meth:`Connection.serve`) takes the packets that
  run the guest (``c``, ``s``, ``vCont``) and sends their stop replies.
  While one runs, the reader still answers what comes (a well-behaved
  client sends nothing but 0x03; the engine refuses reads of a running
  guest) so that an interrupt is never stuck behind a packet.

A client that closes the socket, breaks it, or sends nothing but garbage
past a limit ends the connection; its breakpoints are removed, and the
session lives on.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable

from kvmbench.gdbserver.stub import Detach, GdbStub
from kvmbench.rsp.framing import ACK, NACK, encode_packet
from kvmbench.rsp.stream import Ack, BadPacket, Garbage, Interrupt, Nack, Notification, Packet, PacketDecoder

log = logging.getLogger(__name__)

#: Bytes of garbage (outside any packet) a client may send before it is
#: taken for something that does not speak the protocol.
GARBAGE_LIMIT = 1 << 16
#: Packets queued and not yet answered, at most (gdb waits for each reply;
#: a client that floods is cut off instead of growing the queue).
QUEUE_LIMIT = 256
_END = object()


class Connection:
    """Serves ``stub`` over ``sock`` until the client leaves.

    ``log_packets``: a callable given ("<-" or "->", data) for every packet
    (the server's ``--log``)."""

    def __init__(self, sock: socket.socket, stub: GdbStub,
                 log_packets: Callable[[str, bytes], None] | None = None) -> None:
        self.sock = sock
        self.stub = stub
        self.log_packets = log_packets
        self._send_lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue()
        self._decoder = PacketDecoder(max_packet=2 * 0x4000)
        self._last_reply = b""
        self._garbage = 0
        self._closed = threading.Event()
        self._detached = False
        #: True once the session should end (``k`` on the command-line server).
        self.end_session = False
        stub.send_output = self._send_packet
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # a Unix socket has no Nagle to turn off

    # --- sending -------------------------------------------------------------

    def _send_raw(self, data: bytes) -> None:
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self._closed.set()

    def _send_packet(self, data: bytes) -> None:
        if self.log_packets is not None:
            self.log_packets("->", data)
        framed = encode_packet(data)
        self._last_reply = framed
        self._send_raw(framed)

    # --- receiving (the reader thread) ------------------------------------------

    def _read(self) -> None:
        try:
            while not self._closed.is_set():
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                if not self._take(data):
                    break
        finally:
            self._closed.set()
            self.stub.interrupt()  # a client gone mid-run must not leave the guest running
            self._queue.put(_END)

    def _take(self, data: bytes) -> bool:
        """Handle received bytes; False to end the connection."""
        for event in self._decoder.feed(data):
            if isinstance(event, Packet):
                if not self.stub.no_ack:
                    self._send_raw(ACK)
                if self.log_packets is not None:
                    self.log_packets("<-", event.data)
                if not self.stub.is_resume(event.data):
                    if not self._answer(event.data):
                        return False
                    continue
                if self._queue.qsize() >= QUEUE_LIMIT:
                    log.warning("gdbserver: client floods packets without reading replies; closing")
                    return False
                self.stub.note_queued(event.data)
                self._queue.put(event.data)
            elif isinstance(event, Interrupt):
                self.stub.interrupt()
            elif isinstance(event, BadPacket):
                if not self.stub.no_ack:
                    self._send_raw(NACK)
            elif isinstance(event, Nack):
                if self._last_reply:
                    self._send_raw(self._last_reply)
            elif isinstance(event, Garbage):
                self._garbage += len(event.data)
                if self._garbage > GARBAGE_LIMIT:
                    log.warning("gdbserver: client sends no protocol; closing")
                    return False
            elif isinstance(event, (Ack, Notification)):
                pass
        return True

    def _answer(self, packet: bytes) -> bool:
        """Answer one packet; False when the client detached or killed."""
        try:
            reply = self.stub.handle(packet)
        except Detach as detach:
            if detach.reply is not None:
                self._send_packet(detach.reply)
            self.end_session = detach.end_session
            self._detached = True
            return False
        except Exception:  # noqa: BLE001 - one bad packet must not end the server
            log.exception("gdbserver: internal error answering %r", packet[:64])
            reply = b"E03"
        self._send_packet(reply)
        if self.stub.no_ack_requested and not self.stub.no_ack:
            self.stub.no_ack = True
        return True

    # --- serving (the caller's thread) -----------------------------------------------

    def serve(self) -> None:
        """Answer packets until the client leaves; then remove its requests."""
        reader = threading.Thread(target=self._read, name="gdbserver-reader", daemon=True)
        reader.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                assert isinstance(item, bytes)
                if self._closed.is_set() or not self._answer(item):
                    break
        finally:
            self.stub.release()
            self.close()
            reader.join(timeout=2)

    def close(self) -> None:
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
