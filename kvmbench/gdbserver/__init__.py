"""A GDB remote server over a kvmbench session: gdb, lldb, IDEs and their
front ends (pwndbg, GEF) drive the engine through the GDB remote protocol.

A front end beside :mod:`kvmbench.jupyter`: it imports the engine's
:class:`~kvmbench.engine.session.Session` and :mod:`kvmbench.rsp`, nothing
of the backends. Every hardware breakpoint and watchpoint a client asks
for is a request to the engine's planner, so a fifth ``hbreak`` or a
seventh ``watch`` is served by another mechanism instead of failing.

- :mod:`~kvmbench.gdbserver.server`: the listening socket, one client at a time
- :mod:`~kvmbench.gdbserver.connection`: one client's bytes, acks and interrupts
- :mod:`~kvmbench.gdbserver.stub`: each packet answered from the session
- :mod:`~kvmbench.gdbserver.inserts`: the client's Z/z as session requests
- :mod:`~kvmbench.gdbserver.registers`: the guest's registers in gdb's layout
- :mod:`~kvmbench.gdbserver.stopreply`: a session stop as a stop reply
- :mod:`~kvmbench.gdbserver.monitor`: ``monitor`` commands (qRcmd)
- :mod:`~kvmbench.gdbserver.lldb`: the packets lldb asks beyond gdb's

Who drives a shared session (the notebook's ``%gdbserver``): whoever
starts a run owns it until it stops. While gdb's client runs the guest,
the notebook refuses run commands and reads (the engine's
SessionStateError) but its stop button pauses the guest and gdb sees the
stop (``SIGINT``). While a notebook cell runs it, gdb's ``c``, ``s`` and
reads get an error reply. A stop of a gdb run is handed to ``on_stop``,
which the notebook shows; a stop of a notebook run reaches gdb when gdb
next reads registers (after ``flushregs``, or its next stop: gdb in
all-stop mode takes no stop it did not ask for).
"""

from kvmbench.gdbserver.server import GdbServer, parse_listen
from kvmbench.gdbserver.stub import GdbStub

__all__ = ["GdbServer", "GdbStub", "parse_listen"]
