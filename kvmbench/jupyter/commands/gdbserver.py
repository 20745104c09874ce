"""``%gdbserver [PORT]``: serve the notebook's session to gdb or lldb.

The server (:class:`kvmbench.gdbserver.GdbServer`) runs on background
threads and shares the notebook's session. Who drives it when:

- whoever starts a run owns it until the guest stops: while gdb's client
  has the guest running, the notebook refuses run commands and reads
  ("the guest is running"), and its stop button (or ``%gdbserver`` pause
  through ``workbench.pause()``) pauses the guest: gdb sees the stop as
  SIGINT. While a notebook cell runs the guest, gdb's ``c``/``s`` and its
  reads get an error reply;
- gdb's breakpoints are the session's own requests: they show in ``info
  breakpoints`` (and gdb's ``monitor hits`` shows the notebook's), and
  they are removed when gdb detaches;
- every stop a gdb run ends in is printed under the ``%gdbserver`` cell
  ("gdb: breakpoint 2 at ..."); a stop of a notebook run reaches gdb the
  next time it reads registers (gdb in all-stop mode takes no stop it did
  not ask for: ``flushregs`` in gdb, or ``monitor stop`` to see it).

``%gdbserver`` with no port listens on 127.0.0.1:1234 (``0``: any free
port); ``%gdbserver status``, ``%gdbserver stop``. A new ``%guest`` closes
the session the server serves: run ``%gdbserver`` again.
"""

from __future__ import annotations

import contextvars
import sys
import weakref
from collections.abc import Callable

from kvmbench.engine.model import Stop
from kvmbench.gdbserver import GdbServer, parse_listen
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.jupyter.display import Text

#: The server of each workbench (weak: a workbench that goes away takes
#: nothing with it; a kernel has one workbench).
_SERVERS: "weakref.WeakKeyDictionary[Workbench, GdbServer]" = weakref.WeakKeyDictionary()


def server_of(wb: Workbench) -> GdbServer | None:
    """The workbench's running server, if any."""
    return _SERVERS.get(wb)


def _stop_printer(wb: Workbench) -> Callable[[Stop], None]:
    """Print each gdb-caused stop under the cell that started the server:
    the cell's context carries its output destination (ipykernel's parent
    header is a ContextVar), and the client's thread runs in a copy of it."""
    context = contextvars.copy_context()

    def show(stop: Stop) -> None:
        def write() -> None:
            where = ""
            if stop.pc is not None and wb.session is not None:
                try:
                    where = f" <{wb.describe_address(stop.pc)}>"
                except Exception:  # noqa: BLE001 - a stop line must never fail
                    where = ""
            sys.stdout.write(f"gdb: {stop.describe()}{where}\n")
            sys.stdout.flush()

        context.copy().run(write)

    return show


def stop_server(wb: Workbench) -> bool:
    server = _SERVERS.pop(wb, None)
    if server is None:
        return False
    server.stop()
    return True


@command("gdbserver", stopped=False)
def _gdbserver(wb: Workbench, args: str) -> object:
    """gdbserver [[HOST:]PORT | status | stop]: serve this guest to gdb/lldb (default 127.0.0.1:1234)."""
    word = args.strip()
    server = server_of(wb)
    if word == "stop":
        return Text("gdbserver stopped" if stop_server(wb) else "no gdbserver is running")
    if word == "status":
        if server is None:
            return Text("no gdbserver is running")
        host, port = server.address
        client = server.attached
        return Text(f"gdbserver on {host}:{port}; " + (f"client {client} attached" if client else "no client"))
    if server is not None and server.session is wb.session and not word:
        host, port = server.address
        return Text(f"gdbserver already on {host}:{port}")
    host, port = parse_listen(word or "1234")
    if server is not None:
        stop_server(wb)
    server = GdbServer(wb.s, host, port, on_stop=_stop_printer(wb)).start()
    _SERVERS[wb] = server
    bound_host, bound_port = server.address
    lines = [f"gdbserver on {bound_host}:{bound_port}, serving this notebook's guest",
             f"  gdb {wb.s.image} -ex 'target remote {bound_host}:{bound_port}'",
             f"  lldb {wb.s.image} -o 'gdb-remote {bound_host}:{bound_port}'"]
    if not server.loopback:
        lines.insert(0, f"warning: {bound_host} is not loopback: anyone who reaches this port "
                        "can read and write the guest")
    return Text("\n".join(lines))


__all__ = ["server_of", "stop_server"]
