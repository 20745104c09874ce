"""``kvmbench gdbserver GUEST [ARGS...] [--listen HOST:PORT]``.

Boots the guest stopped at its first instruction and serves it until a
client kills it (``k``), the guest is gone and the client left, or the
user interrupts the server. The guest's console goes to standard output;
the listening address and attach instructions to standard error.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

import kvmbench
from kvmbench.errors import KvmbenchError
from kvmbench.gdbserver.server import GdbServer, parse_listen


def _log_packet(direction: str, data: bytes) -> None:
    sys.stderr.write(f"gdbserver {direction} {data[:200]!r}\n")
    sys.stderr.flush()


def run_gdbserver(guest: str, args: Sequence[str], listen: str, *, log_packets: bool = False) -> int:
    host, port = parse_listen(listen)

    def echo(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    session = kvmbench.open(guest, list(args), on_console=echo)
    try:
        server = GdbServer(session, host, port, kill_ends_session=True,
                           log_packets=_log_packet if log_packets else None)
        bound_host, bound_port = server.address
        if not server.loopback:
            print(f"kvmbench gdbserver: warning: listening on {bound_host}, not loopback: anyone "
                  "who can reach this port can read and write the guest", file=sys.stderr)
        print(f"kvmbench gdbserver: {guest} stopped at {session.pc:#x}; listening on "
              f"{bound_host}:{bound_port}", file=sys.stderr)
        print(f"  gdb {session.image} -ex 'target remote {bound_host}:{bound_port}'", file=sys.stderr)
        sys.stderr.flush()
        previous = signal.signal(signal.SIGTERM, lambda *_: server.stop())
        try:
            server.serve_forever()
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.stop()
    finally:
        if session.state.value == "running":
            session.pause()
        try:
            session.close()
        except KvmbenchError:
            pass
    return 0
