"""``%gdbserver`` in the notebook's command layer: gdb and the notebook
share one session, each refused while the other runs the guest, a stop
from either side seen by both."""

from __future__ import annotations

import re
import sys
import threading
import time

import pytest

from kvmbench.engine.model import RunState, StopReason
from kvmbench.errors import SessionStateError
from kvmbench.jupyter.commands import Workbench
from kvmbench.jupyter.commands.gdbserver import server_of
from kvmbench.rsp.hexdata import from_hex, to_hex
from kvmbench.rsp.stops import Stopped, parse_stop_reply

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_gdbserver_protocol import RawClient, wait_until  # noqa: E402


@pytest.fixture
def workbench(caps):  # type: ignore[no-untyped-def]
    wb = Workbench()
    yield wb
    wb.execute("gdbserver stop")
    wb.close()


def start(wb: Workbench, guest: str) -> RawClient:
    wb.execute(f"guest {guest}")
    text = wb.execute("gdbserver 0").text()
    port = int(re.search(r"127\.0\.0\.1:(\d+)", text).group(1))
    return RawClient(("127.0.0.1", port))


def test_gdb_and_the_notebook_share_the_session_and_its_breakpoints(workbench) -> None:
    client = start(workbench, "fib 8")
    try:
        workbench.execute("break fib")
        reply = client.ask(b"qRcmd," + to_hex(b"hits"))
        text = b""
        while reply != b"OK":
            text += from_hex(reply[1:])
            reply = client.reply()
        assert b"fib" in text  # the notebook's breakpoint, seen from gdb
        stop = parse_stop_reply(client.ask(b"c"))
        assert isinstance(stop, Stopped)
        assert workbench.s.last_stop.reason is StopReason.BREAKPOINT  # gdb's run, the notebook's view
        assert "gdbserver on" in workbench.execute("gdbserver status").text()
    finally:
        client.close()


def test_the_notebook_refuses_to_run_while_gdb_runs_the_guest_and_its_pause_reaches_gdb(workbench, capsys) -> None:
    client = start(workbench, "spin")
    try:
        client.send(b"c")
        assert wait_until(lambda: workbench.s.state is RunState.RUNNING)
        with pytest.raises(SessionStateError, match="running"):
            workbench.run("stepi", "")
        with pytest.raises(SessionStateError, match="running"):
            workbench.execute("info registers")
        assert workbench.pause()  # the stop button
        reply = parse_stop_reply(client.reply())
        assert isinstance(reply, Stopped) and reply.signal == 2
        assert "gdb: paused" in capsys.readouterr().out  # and the notebook shows gdb's stop
    finally:
        client.close()
    assert workbench.s.state is RunState.STOPPED


def test_gdb_is_refused_while_a_notebook_cell_runs_the_guest(workbench) -> None:
    client = start(workbench, "spin")
    runner = threading.Thread(target=workbench.run, args=("continue", ""))
    try:
        runner.start()
        assert wait_until(lambda: workbench.s.state is RunState.RUNNING)
        assert client.ask(b"c").startswith(b"E")
        assert client.ask(b"m100000,4").startswith(b"E")
    finally:
        workbench.pause()
        runner.join(10)
        client.close()


def test_gdb_stops_are_printed_in_the_notebook(workbench, capsys) -> None:
    client = start(workbench, "fib 5")
    try:
        fib = workbench.s.symbols.resolve("fib")
        assert client.ask(b"Z0,%x,1" % fib) == b"OK"
        client.ask(b"c")
        time.sleep(0.05)
        assert re.search(r"gdb: breakpoint \d+ .*<fib>", capsys.readouterr().out)
    finally:
        client.close()
