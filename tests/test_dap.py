"""The guest debug adapter (JupyterLab's debugger panel), in process: DAP
requests about a real fib 10 guest stopped at a breakpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmbench.jupyter.commands import Workbench
from kvmbench.jupyter.dap import (
    GLOBALS_REF,
    REGISTERS_BASE,
    THREAD_ID,
    GuestDebugAdapter,
)

pytestmark = pytest.mark.timeout(120)

FIB_C = Path(__file__).resolve().parent.parent / "kvmbench" / "guests" / "src" / "fib.c"
#: fib.c's `return n < 2 ? n : fib(n - 1) + fib(n - 2);`
FIB_BODY_LINE = next(i for i, text in enumerate(FIB_C.read_text().splitlines(), 1) if "return n < 2" in text)


class Client:
    def __init__(self, adapter: GuestDebugAdapter, events: list[dict]) -> None:
        self.adapter, self.events, self.seq = adapter, events, 0

    def __call__(self, command: str, **arguments: object) -> dict:
        self.seq += 1
        reply = self.adapter.handle({"type": "request", "seq": self.seq, "command": command,
                                     "arguments": arguments})
        assert reply["type"] == "response" and reply["request_seq"] == self.seq
        assert reply["command"] == command
        return reply

    def ok(self, command: str, **arguments: object) -> dict:
        reply = self(command, **arguments)
        assert reply["success"], reply
        return reply["body"]

    def event_names(self) -> list[str]:
        return [e["event"] for e in self.events]


@pytest.fixture
def workbench():
    wb = Workbench()
    wb.execute("guest fib 10")
    yield wb
    wb.close()


@pytest.fixture
def dap(workbench):
    events: list[dict] = []
    client = Client(GuestDebugAdapter(workbench, events.append), events)
    client.ok("initialize", adapterID="kvmbench")
    client.ok("attach")
    return client


@pytest.fixture
def stopped(workbench, dap):
    """Stopped in fib (frame 0), called from main."""
    workbench.execute(f"break fib.c:{FIB_BODY_LINE}")
    workbench.run("continue", "")
    return dap


def test_initialize_sends_initialized_event(dap):
    assert dap.event_names() == ["initialized"]


def test_debug_info_reports_murmur_hashing_and_the_stopped_vcpu(stopped):
    body = stopped.ok("debugInfo")
    assert body["isStarted"] is True
    assert body["hashMethod"] == "Murmur2"
    assert body["tmpFileSuffix"] == ".py"
    assert body["stoppedThreads"] == [THREAD_ID]


def test_threads_are_vcpus(stopped):
    assert stopped.ok("threads")["threads"] == [{"id": THREAD_ID, "name": "vCPU 0"}]


def test_stack_trace_is_the_symbolized_guest_stack_with_source(stopped):
    frames = stopped.ok("stackTrace", threadId=THREAD_ID)["stackFrames"]
    assert [f["name"] for f in frames[:2]] == ["fib", "main"]
    top = frames[0]
    assert top["line"] == FIB_BODY_LINE
    assert Path(top["source"]["path"]) == FIB_C
    assert top["source"]["name"] == "fib.c"
    assert int(top["instructionPointerReference"], 16) == stopped.adapter.workbench.s.pc
    assert frames[1]["source"]["name"] == "fib.c" and frames[1]["line"] > FIB_BODY_LINE


def test_stack_trace_pages_by_start_frame_and_levels(stopped):
    everything = stopped.ok("stackTrace", threadId=THREAD_ID)
    page = stopped.ok("stackTrace", threadId=THREAD_ID, startFrame=1, levels=1)
    assert page["stackFrames"] == everything["stackFrames"][1:2]
    assert page["totalFrames"] == everything["totalFrames"]


def test_scopes_are_registers_and_globals(stopped):
    scopes = stopped.ok("scopes", frameId=1)["scopes"]
    assert [s["name"] for s in scopes] == ["Registers", "Globals"]
    assert scopes[0]["variablesReference"] == REGISTERS_BASE
    assert scopes[1]["variablesReference"] == GLOBALS_REF


def test_registers_are_hex_strings_of_the_live_registers(stopped):
    variables = stopped.ok("variables", variablesReference=REGISTERS_BASE)["variables"]
    by_name = {v["name"]: v["value"] for v in variables}
    regs = stopped.adapter.workbench.s.regs
    assert all(isinstance(v, str) for v in by_name.values())
    assert by_name["rip"] == f"{regs.rip:#x}"
    assert by_name["rdi"] == f"{regs.rdi:#x}"


def test_caller_frame_registers_show_its_return_address(stopped):
    frames = stopped.ok("stackTrace", threadId=THREAD_ID)["stackFrames"]
    variables = stopped.ok("variables", variablesReference=REGISTERS_BASE + 1)["variables"]
    assert variables[0]["name"] == "rip"
    assert variables[0]["value"] == frames[1]["instructionPointerReference"]


def test_globals_are_dwarf_globals_with_current_values(stopped):
    variables = stopped.ok("variables", variablesReference=GLOBALS_REF)["variables"]
    by_name = {v["name"]: v for v in variables}
    globals_ = stopped.adapter.workbench.s.symbols.debug.get_globals()
    assert set(by_name) == set(globals_)
    idt = by_name["idt"]
    assert idt["value"].endswith(f"({globals_['idt'].type_name})")
    first = stopped.adapter.workbench.s.mem.read(globals_["idt"].address, 4).hex(" ")
    assert idt["value"].startswith(first)


def test_values_are_typed_as_strings_so_jupyterlab_shows_them(stopped):
    # JupyterLab renders a variable of any type but "str" by its type name.
    for ref in (REGISTERS_BASE, GLOBALS_REF):
        variables = stopped.ok("variables", variablesReference=ref)["variables"]
        assert variables and all(v["type"] == "str" for v in variables)


def test_source_returns_the_guest_c_file(stopped):
    frames = stopped.ok("stackTrace", threadId=THREAD_ID)["stackFrames"]
    body = stopped.ok("source", source=frames[0]["source"])
    assert body["content"] == FIB_C.read_text()


def test_source_refuses_files_outside_the_guest(stopped):
    reply = stopped("source", source={"path": "/etc/passwd"})
    assert reply["success"] is False


def test_set_breakpoints_from_the_gutter_are_engine_breakpoints(dap):
    body = dap.ok("setBreakpoints", source={"path": str(FIB_C)}, breakpoints=[{"line": FIB_BODY_LINE}])
    [answer] = body["breakpoints"]
    assert answer["verified"] is True and answer["line"] == FIB_BODY_LINE
    session = dap.adapter.workbench.s
    assert [bp.location for bp in session.breakpoints] == [f"src/fib.c:{FIB_BODY_LINE}"]
    assert session.breakpoints[answer["id"]].address == int(answer["instructionReference"], 16)


def test_set_breakpoints_replaces_that_files_breakpoints(dap):
    dap.ok("setBreakpoints", source={"path": str(FIB_C)}, breakpoints=[{"line": FIB_BODY_LINE}])
    dap.ok("setBreakpoints", source={"path": str(FIB_C)}, breakpoints=[])
    assert list(dap.adapter.workbench.s.breakpoints) == []


def test_set_breakpoints_in_a_python_cell_are_unverified(dap):
    path = dap.ok("dumpCell", code="x = 1\n")["sourcePath"]
    [answer] = dap.ok("setBreakpoints", source={"path": path}, breakpoints=[{"line": 1}])["breakpoints"]
    assert answer["verified"] is False
    assert list(dap.adapter.workbench.s.breakpoints) == []


def test_continue_runs_to_the_gutter_breakpoint_and_sends_events(dap):
    dap.ok("setBreakpoints", source={"path": str(FIB_C)}, breakpoints=[{"line": FIB_BODY_LINE}])
    dap.ok("configurationDone")
    assert dap.ok("continue", threadId=THREAD_ID)["allThreadsContinued"] is True
    dap.adapter.wait(60)
    assert dap.event_names()[-2:] == ["continued", "stopped"]
    stopped_event = dap.events[-1]["body"]
    assert stopped_event["reason"] == "breakpoint" and stopped_event["threadId"] == THREAD_ID
    top = dap.ok("stackTrace", threadId=THREAD_ID)["stackFrames"][0]
    assert (top["name"], top["line"]) == ("fib", FIB_BODY_LINE)


def test_step_in_is_one_instruction(stopped):
    pc = stopped.adapter.workbench.s.pc
    stopped.ok("stepIn", threadId=THREAD_ID)
    stopped.adapter.wait(30)
    assert stopped.events[-1]["event"] == "stopped"
    assert stopped.events[-1]["body"]["reason"] == "step"
    assert stopped.adapter.workbench.s.pc != pc


def test_requests_about_the_stack_fail_cleanly_without_a_guest(workbench, dap):
    workbench.close()
    reply = dap("stackTrace", threadId=THREAD_ID)
    assert reply["success"] is False and "no guest" in reply["message"]
    assert dap.ok("threads")["threads"] == []


def test_unknown_requests_are_refused(dap):
    reply = dap("evaluate", expression="1")
    assert reply["success"] is False
