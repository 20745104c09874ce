"""Real gdb (Debian's, batch mode) and real lldb against ``kvmbench
gdbserver`` started by the test; every answer compared with kvmbench's own
API on the same guest."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kvmbench
from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import StopReason
from kvmbench.engine.session import Session

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed"),
]

CLIENT_TIMEOUT = 120


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    port: int
    guest: str
    args: tuple[str, ...]
    console_path: Path

    @property
    def image(self) -> Path:
        return kvmbench.resolve_image(self.guest)

    @property
    def console(self) -> str:
        return self.console_path.read_text()


def start_server(tmp: Path, guest: str, *args: str) -> ServerProcess:
    """``kvmbench gdbserver GUEST ARGS --listen 127.0.0.1:0``, its port read
    from the line it prints."""
    console = tmp / f"{guest}-console.txt"
    errors = tmp / f"{guest}-stderr.txt"
    process = subprocess.Popen(
        [sys.executable, "-m", "kvmbench", "gdbserver", guest, *args, "--listen", "127.0.0.1:0"],
        stdout=console.open("w"), stderr=errors.open("w"), text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", errors.read_text())
        if match:
            return ServerProcess(process, int(match.group(1)), guest, args, console)
        if process.poll() is not None:
            raise AssertionError(f"kvmbench gdbserver exited: {errors.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("kvmbench gdbserver printed no address")


def stop_server(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(5)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    servers: list[ServerProcess] = []

    def start(guest: str, *args: str) -> ServerProcess:
        server = start_server(tmp_path, guest, *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop_server(server)


def run_gdb(server: ServerProcess, commands: list[str], tmp: Path) -> str:
    """gdb -batch over ``commands`` after ``target remote``; its whole output."""
    script = tmp / "commands.gdb"
    script.write_text("\n".join([f"target remote 127.0.0.1:{server.port}", *commands, ""]))
    done = subprocess.run(["gdb", "-batch", "-nx", "-x", str(script), str(server.image)],
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    return done.stdout + done.stderr


def api_session(guest: str, *args: str, caps=None) -> Session:  # type: ignore[no-untyped-def]
    return kvmbench.open(guest, list(args), capabilities=caps)


def gdb_loop(count: int, body: list[str]) -> list[str]:
    return ["set $i = 0", f"while $i < {count}", *body, "set $i = $i + 1", "end"]


# --- breakpoints ------------------------------------------------------------------------

CALLMIX_ROUNDS = "200"
FUNCTIONS = [f"f{i}" for i in range(8)]
STOPS = 70


def test_eight_hbreaks_at_once_all_hit_as_the_api_sees_them(server_factory, tmp_path, caps, skip_unless) -> None:
    skip_unless(Feature.HW_EXECUTE)
    server = server_factory("callmix", CALLMIX_ROUNDS)
    output = run_gdb(server, [f"hbreak *{f}" for f in FUNCTIONS] + gdb_loop(STOPS, ["continue"])
                     + ["info breakpoints", "monitor info mechanisms"], tmp_path)
    gdb_stops = re.findall(r"Breakpoint \d+, (f\d) \(\)", output)

    with api_session("callmix", CALLMIX_ROUNDS, caps=caps) as s:
        numbers = {s.breakpoints.add(f).number: f for f in FUNCTIONS}
        api_stops = []
        for _ in range(STOPS):
            stop = s.cont()
            assert stop.reason is StopReason.BREAKPOINT
            api_stops.append(numbers[stop.breakpoint])
    assert gdb_stops == api_stops
    assert set(gdb_stops) == set(FUNCTIONS)  # every one of the 8 was hit
    for number, function in enumerate(FUNCTIONS, start=1):
        hits = api_stops.count(function)
        assert re.search(rf"^{number}\s+hw breakpoint .* in {function} at .*\n\s+breakpoint already hit "
                         rf"{hits} time", output, re.M), output
    # four debug slots, the other four served by another mechanism
    assert len(re.findall(r"\bDR[0-3]\b.*hardware slot requested", output)) == 4, output


def test_break_tbreak_bt_x_registers_stepping_and_exit_match_the_api(server_factory, tmp_path, caps) -> None:
    server = server_factory("fib", "12")
    output = run_gdb(server, [
        "tbreak *main", "continue", "info breakpoints",
        "break *fib", "continue", "continue",
        "bt", "x/4gx $rsp", "info registers rip rsp rbp rdi",
        "delete",
        "stepi", "p/x $pc", "stepi", "p/x $pc", "stepi", "p/x $pc", "stepi", "p/x $pc",
        "nexti", "p/x $pc",
        "finish",
        "set var $rax = 4242", "p $rax",
        "continue",
    ], tmp_path)

    with api_session("fib", "12", caps=caps) as s:
        main, fib = s.symbols.resolve("main"), s.symbols.resolve("fib")
        s.breakpoints.add("main", temporary=True)
        assert s.cont().pc == main
        bp = s.breakpoints.add("fib")
        s.cont()
        assert s.cont().pc == fib  # the second call: fib(11) from fib(12)
        frames = s.backtrace()
        stack = s.mem.read(s.regs.rsp, 32)
        regs = {n: s.regs[n] for n in ("rip", "rsp", "rbp", "rdi")}
        s.breakpoints.delete(bp.number)
        steps = [s.stepi().pc for _ in range(4)]
        steps.append(s.nexti().pc)
        finished = s.finish()

    assert "Temporary breakpoint 1, main" in output
    assert f"Temporary breakpoint 1, {main:#018x}" in output or "Temporary breakpoint 1, main" in output
    # bt: gdb's frames are the API's pcs (frame 0 is the pc itself)
    bt_pcs = [int(pc, 16) for pc in re.findall(r"^#\d+\s+(0x[0-9a-f]+) in ", output, re.M)]
    assert [fib] + bt_pcs == frames[: len(bt_pcs) + 1]
    # x/4gx $rsp
    words = [int(w, 16) for w in re.findall(r"^0x[0-9a-f]+:\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", output, re.M)
             for w in w]  # type: ignore[misc]
    assert words == [int.from_bytes(stack[i:i + 8], "little") for i in range(0, 32, 8)]
    for name, value in regs.items():
        assert re.search(rf"^{name}\s+{value:#x}\b", output, re.M), (name, value, output)
    printed = [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", output, re.M)]
    assert printed == steps
    assert finished.reason is StopReason.FINISH
    assert re.search(rf"Value returned is \$\d+ = {finished.return_value}\b", output), output
    assert re.search(r"^\$\d+ = 4242$", output, re.M)
    assert "[Inferior 1 (Remote target) exited normally]" in output
    # rax held fib(11) = 89 when it was set: fib(12) added fib(10) = 55 to 4242
    assert server.console.endswith("fib(12) = 4297\n")


def test_set_var_writes_guest_memory_the_api_reads_back(server_factory, tmp_path, caps) -> None:
    server = server_factory("callmix", "30")
    output = run_gdb(server, ["set var lcg_state = 12345", "p lcg_state", "p/x calls",
                              "monitor stop", "break *next_random", "continue",
                              "p lcg_state", "detach"], tmp_path)
    assert re.search(r"^\$1 = 12345$", output, re.M)
    assert re.search(r"^\$3 = 12345$", output, re.M)  # the guest saw the write
    # the API, on the same guest after the same write, draws the same numbers
    with api_session("callmix", "30", caps=caps) as s:
        s.mem.write_int(s.symbols.resolve("lcg_state"), 12345, 4)
        s.cont()
        expected = s.console
    with api_session("callmix", "30", caps=caps) as s:
        s.cont()
        assert s.console != expected  # the write mattered
    # a second gdb runs the served guest on to its exit: same console
    run_gdb(server, ["continue"], tmp_path)
    assert server.console == expected


def test_six_watchpoints_at_once_stop_where_the_api_stops(server_factory, tmp_path, caps) -> None:
    server = server_factory("callmix", "12")
    watches = ["watch calls[0]", "watch calls[1]", "rwatch calls[2]", "awatch calls[3]",
               "watch calls[4]", "watch lcg_state"]
    count = 12
    output = run_gdb(server, watches + gdb_loop(count, ["continue"]) + ["info watchpoints"], tmp_path)
    gdb_stops = re.findall(
        r"^Hardware (?:read |access \(read/write\) )?watchpoint (\d+): (\S+)\n\n?(?:Value = (\d+)|Old value = (\d+)\nNew value = (\d+))",
        output, re.M)

    with api_session("callmix", "12", caps=caps) as s:
        calls, state = s.symbols.resolve("calls"), s.symbols.resolve("lcg_state")
        wps = [s.watchpoints.add(calls, 8), s.watchpoints.add(calls + 8, 8),
               s.watchpoints.add(calls + 16, 8, access="read"),
               s.watchpoints.add(calls + 24, 8, access="access"),
               s.watchpoints.add(calls + 32, 8), s.watchpoints.add(state, 4)]
        names = {wp.number: expr.split(" ", 1)[1] for wp, expr in zip(wps, watches)}
        api_stops = []
        for _ in range(count):
            stop = s.cont()
            assert stop.reason is StopReason.WATCHPOINT, stop
            api_stops.append((names[stop.watchpoint], stop.new_value))
    assert len(gdb_stops) == count, output
    assert [(expr, int(value or new)) for _, expr, value, _, new in gdb_stops] == api_stops
    assert {expr for expr, _ in api_stops} >= {"calls[0]", "lcg_state"}


def test_monitor_trace_counts_what_the_api_counts(server_factory, tmp_path, caps) -> None:
    server = server_factory("fib", "12")
    output = run_gdb(server, ["monitor trace fib", "break *printf", "continue", "monitor hits",
                              "monitor info mechanisms", "kill"], tmp_path)
    with api_session("fib", "12", caps=caps) as s:
        tp = s.breakpoints.trace("fib")
        s.breakpoints.add("printf")
        s.cont()
        expected = tp.hit_count
    assert expected == 465
    assert re.search(rf"^1\s+tracepoint\s+fib\s+{expected}\s", output, re.M), output
    assert "hardware slots:" in output
    server.process.wait(10)  # gdb's kill ends the command-line server
    assert server.process.returncode == 0


# --- lldb -----------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("lldb") is None, reason="lldb is not installed")
def test_lldb_attaches_reads_breaks_continues_and_steps(server_factory, tmp_path, caps) -> None:
    server = server_factory("fib", "10")
    with api_session("fib", "10", caps=caps) as s:
        fib = s.symbols.resolve("fib")
    done = subprocess.run(
        ["lldb", "--batch", "--no-lldbinit",
         "-o", f"target create {server.image}", "-o", f"gdb-remote 127.0.0.1:{server.port}",
         "-o", "register read rip rsp",
         "-o", f"breakpoint set --address {fib:#x}",
         "-o", "continue", "-o", "register read rip rsp rdi",
         "-o", "memory read --format x --size 8 --count 2 $rsp",
         "-o", "thread step-inst", "-o", "register read rip",
         "-o", "breakpoint delete 1", "-o", "continue"],
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    output = done.stdout
    with api_session("fib", "10", caps=caps) as s:
        start = {n: s.regs[n] for n in ("rip", "rsp")}
        s.breakpoints.add("fib")
        s.cont()
        at_fib = {n: s.regs[n] for n in ("rip", "rsp", "rdi")}
        stack = s.mem.read(s.regs.rsp, 16)
        s.breakpoints.delete(1)
        stepped = s.stepi().pc
    reads = re.findall(r"^\s+(\w+) = (0x[0-9a-f]+)", output, re.M)
    values = [(n, int(v, 16)) for n, v in reads]
    assert values[:2] == list(start.items())
    assert values[2:5] == list(at_fib.items())
    assert values[5] == ("rip", stepped)
    words = re.findall(r"^0x[0-9a-f]+: (0x[0-9a-f]+) (0x[0-9a-f]+)", output, re.M)[0]
    assert [int(w, 16) for w in words] == [int.from_bytes(stack[i:i + 8], "little") for i in (0, 8)]
    assert "stop reason = breakpoint 1.1" in output
    assert "Process 1 exited with status = 0" in output
    assert server.console.endswith("fib(10) = 55\n")
