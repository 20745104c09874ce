"""JupyterLab's debugger protocol against a real kvmbench kernel
(jupyter_client): debug_request on the control channel is answered about the
guest, and run control sends stopped/continued as debug_event on IOPub."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from kvmbench.jupyter.testing import collect, run_cell, started_kernel

pytestmark = pytest.mark.timeout(180)

FIB_C = Path(__file__).resolve().parent.parent / "kvmbench" / "guests" / "src" / "fib.c"
FIB_BODY_LINE = next(i for i, text in enumerate(FIB_C.read_text().splitlines(), 1) if "return n < 2" in text)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    with started_kernel(Path(tmp_path_factory.mktemp("kernelspec"))) as started:
        yield started


class Debugger:
    """A DAP client over a kernel's control channel, as JupyterLab's is."""

    def __init__(self, kc) -> None:
        self.kc, self.seq = kc, 0

    def __call__(self, command: str, **arguments: object) -> dict:
        self.seq += 1
        msg = self.kc.session.msg("debug_request", {"type": "request", "seq": self.seq,
                                                    "command": command, "arguments": arguments})
        self.kc.control_channel.send(msg)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = self.kc.get_control_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                assert reply["msg_type"] == "debug_reply"
                return reply["content"]
        raise TimeoutError(command)

    def ok(self, command: str, **arguments: object) -> dict:
        content = self(command, **arguments)
        assert content["success"], content
        assert content["request_seq"] == self.seq
        return content.get("body", {})

    def event(self, name: str, timeout: float = 30) -> dict:
        """The next debug_event called ``name`` on IOPub (others are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if msg["msg_type"] == "debug_event" and msg["content"]["event"] == name:
                return msg["content"]
        raise TimeoutError(f"no {name} event")


@pytest.fixture(scope="module")
def dap(kernel):
    kc = kernel[1]
    debugger = Debugger(kc)
    debugger.ok("initialize", clientID="test", adapterID="kvmbench", pathFormat="path",
                linesStartAt1=True, columnsStartAt1=True)
    debugger.ok("attach")
    assert debugger.ok("debugInfo")["isStarted"] is True
    debugger.ok("configurationDone")
    return debugger


def _drain(kc) -> None:
    while True:
        try:
            kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            return


def test_debug_info_advertises_murmur2_cell_hashing(dap):
    body = dap.ok("debugInfo")
    assert body["hashMethod"] == "Murmur2" and isinstance(body["hashSeed"], int)
    assert body["tmpFilePrefix"] and body["tmpFileSuffix"] == ".py"


def test_cell_breakpoint_stops_with_a_stopped_event_and_guest_stack(kernel, dap):
    kc = kernel[1]
    assert run_cell(kc, "%guest fib 10").status == "ok"
    assert run_cell(kc, f"%break fib.c:{FIB_BODY_LINE}").status == "ok"
    _drain(kc)
    msg_id = kc.execute("%continue")
    result = collect(kc, msg_id)
    assert result.status == "ok", result.errors
    events = [m["content"] for m in result.others if m["msg_type"] == "debug_event"]
    assert [e["event"] for e in events] == ["continued", "stopped"]
    assert events[1]["body"]["reason"] == "breakpoint" and events[1]["body"]["threadId"] == 1

    assert dap.ok("threads")["threads"] == [{"id": 1, "name": "vCPU 0"}]
    frames = dap.ok("stackTrace", threadId=1)["stackFrames"]
    assert [f["name"] for f in frames[:2]] == ["fib", "main"]
    assert frames[0]["line"] == FIB_BODY_LINE and frames[0]["source"]["path"] == "src/fib.c"

    scopes = {s["name"]: s for s in dap.ok("scopes", frameId=frames[0]["id"])["scopes"]}
    assert list(scopes) == ["Locals", "Arguments", "Registers", "Global variables"]
    arguments = dap.ok("variables", variablesReference=scopes["Arguments"]["variablesReference"])["variables"]
    assert [(v["name"], v["value"]) for v in arguments] == [("n", "10 (long)")]
    registers = dap.ok("variables", variablesReference=scopes["Registers"]["variablesReference"])["variables"]
    rip = next(v for v in registers if v["name"] == "rip")
    assert rip["value"] == frames[0]["instructionPointerReference"]
    globals_ = dap.ok("variables", variablesReference=scopes["Global variables"]["variablesReference"])["variables"]
    assert "idt" in {v["name"] for v in globals_}

    source = dap.ok("source", source=frames[0]["source"])
    assert source["content"] == FIB_C.read_text()


def test_gutter_breakpoint_and_continue_from_the_panel(kernel, dap):
    kc = kernel[1]
    assert run_cell(kc, "%guest fib 10").status == "ok"
    assert run_cell(kc, "delete").status == "ok"  # the same image kept the last test's
    body = dap.ok("setBreakpoints", source={"path": str(FIB_C)}, breakpoints=[{"line": FIB_BODY_LINE}],
                  lines=[FIB_BODY_LINE])
    [answer] = body["breakpoints"]
    assert answer["verified"] is True and answer["line"] == FIB_BODY_LINE
    info = run_cell(kc, "print([bp.location for bp in session.breakpoints])")
    assert info.stdout.strip() == f"['src/fib.c:{FIB_BODY_LINE}']"
    _drain(kc)

    assert dap.ok("continue", threadId=1)["allThreadsContinued"] is True
    stopped = dap.event("stopped")
    assert stopped["body"]["reason"] == "breakpoint"
    assert dap.ok("debugInfo")["stoppedThreads"] == [1]
    top = dap.ok("stackTrace", threadId=1)["stackFrames"][0]
    assert (top["name"], top["line"]) == ("fib", FIB_BODY_LINE)
    hits = run_cell(kc, f"print(session.breakpoints[{answer['id']}].hit_count)")
    assert hits.stdout.strip() == "1"


def test_kernel_keeps_running_python_after_debug_requests(kernel, dap):
    kc = kernel[1]
    dap.ok("threads")
    assert run_cell(kc, "print(6 * 7)").stdout == "42\n"


def test_next_from_the_panel_moves_one_line_in_the_same_frame(kernel, dap):
    kc = kernel[1]
    assert run_cell(kc, "%guest fib 10").status == "ok"
    assert run_cell(kc, "delete").status == "ok"
    assert run_cell(kc, "break fib.c:20\ntbreak fib").status == "ok"
    assert run_cell(kc, "continue").status == "ok"
    _drain(kc)
    assert dap.ok("stackTrace", threadId=1)["stackFrames"][0]["line"] == FIB_BODY_LINE

    dap.ok("next", threadId=1)
    assert dap.event("stopped")["body"]["reason"] == "step"
    frames = dap.ok("stackTrace", threadId=1)["stackFrames"]
    assert [(f["name"], f["line"]) for f in frames[:2]] == [("fib", FIB_BODY_LINE + 1), ("main", 18)]
