"""The listening socket: one client at a time, over one session.

:class:`GdbServer` listens on TCP (loopback unless told otherwise: a
debugger that can write guest memory is a remote shell into the guest, so
another address is taken only when named, with a warning). The first
client is served; while it is attached, every other one is answered with
one error packet that says who holds the session, and closed. When the
client detaches or disconnects its breakpoints and watchpoints are
removed and the session stays as it is, for the next client (or the
notebook that shares it).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Callable

from kvmbench.engine.model import Stop
from kvmbench.engine.session import Session
from kvmbench.errors import UsageError
from kvmbench.gdbserver.connection import Connection
from kvmbench.gdbserver.stub import GdbStub
from kvmbench.rsp.framing import ACK, encode_packet

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1234
#: How long a refused client is given to send its first packet.
_REFUSE_TIMEOUT = 2.0
#: A whole packet, $data#checksum, in what a refused client sent.
_FIRST_PACKET = re.compile(rb"\$[^#]*#[0-9a-fA-F]{2}")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (loopback); ``[v6]:PORT``."""
    text = text.strip()
    host, port_text = DEFAULT_HOST, text
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise UsageError(f"--listen {text!r}: expected [ADDRESS]:PORT")
        host, port_text = inside, rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        host = host or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--listen {text!r}: {port_text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--listen {text!r}: port {port} is not 0..65535")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GdbServer:
    """Serves ``session`` to GDB remote clients on ``host:port`` (port 0:
    any free port; :attr:`address` tells which).

    ``on_stop`` is called (on the client's thread) with every stop a
    client's run ended in; ``kill_ends_session``: a client's ``k`` ends the
    server (the command line's own session) instead of only detaching.
    """

    def __init__(
        self,
        session: Session,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        on_stop: Callable[[Stop], None] | None = None,
        kill_ends_session: bool = False,
        log_packets: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.session = session
        self.on_stop = on_stop
        self.kill_ends_session = kill_ends_session
        self.log_packets = log_packets
        self.loopback = is_loopback(host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
        except OSError as e:
            self._listener.close()
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self._listener.listen(4)
        self._lock = threading.Lock()
        self._client: Connection | None = None
        self._client_address = ""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Clients attached so far (refused ones not counted).
        self.clients_served = 0
        #: Set when a client's ``k`` asked the command-line server to end.
        self.killed = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def attached(self) -> str | None:
        """The attached client's address, or None."""
        with self._lock:
            return self._client_address if self._client is not None else None

    # --- accepting ---------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept clients until :meth:`stop` (or a ``k`` that ends the session)."""
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                break  # the listener was closed by stop()
            if self._stopping.is_set():
                sock.close()
                break
            with self._lock:
                busy = self._client is not None
            if busy:
                threading.Thread(target=self._refuse, args=(sock, peer), daemon=True,
                                 name="gdbserver-refuse").start()
                continue
            self._attach(sock, peer)

    def start(self) -> "GdbServer":
        """Accept clients on a background thread (the notebook's way)."""
        self._thread = threading.Thread(target=self.serve_forever, name="gdbserver", daemon=True)
        self._thread.start()
        return self

    def _attach(self, sock: socket.socket, peer: object) -> None:
        stub = GdbStub(self.session, on_stop=self.on_stop, kill_ends_session=self.kill_ends_session)
        connection = Connection(sock, stub, self.log_packets)
        with self._lock:
            self._client = connection
            self._client_address = _format_peer(peer)
            self.clients_served += 1
        log.info("gdbserver: client %s attached", self._client_address)
        threading.Thread(target=self._serve_client, args=(connection,), daemon=True,
                         name="gdbserver-client").start()

    def _serve_client(self, connection: Connection) -> None:
        try:
            connection.serve()
        finally:
            with self._lock:
                self._client = None
            log.info("gdbserver: client %s left", self._client_address)
            if connection.end_session:
                self.killed.set()
                self.stop()

    def _refuse(self, sock: socket.socket, peer: object) -> None:
        """Answer the first packet of a second client with why, then close."""
        message = (f"E.kvmbench gdbserver: another debugger ({self._client_address}) is attached; "
                   "one client at a time")
        try:
            sock.settimeout(_REFUSE_TIMEOUT)
            data = b""
            while _FIRST_PACKET.search(data) is None:  # gdb may send its "+" on its own first
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            sock.sendall(ACK + encode_packet(message.encode()))
            # Closing with the client's next packet unread would reset the
            # connection before it reads why: let it close first.
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop accepting and drop the client (its requests are removed)."""
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            client = self._client
        if client is not None:
            client.stub.interrupt()
            client.close()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


def _format_peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "a client"
