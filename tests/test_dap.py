"""The guest debug adapter (JupyterLab's debugger panel), in process: DAP
requests about a real fib 10 guest stopped at a breakpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmbench.jupyter.commands import Workbench
from kvmbench.jupyter.dap import (
    ARGUMENTS_BASE,
    GLOBALS_REF,
    LOCALS_BASE,
    MAX_ELEMENTS,
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


def test_a_guest_stopped_before_the_debugger_starts_shows_its_stack_at_once(workbench):
    # JupyterLab reads debugInfo before it starts the debugger and fetches
    # the call stack then only if a thread is already stopped.
    workbench.execute("break fib")
    workbench.run("continue", "")
    adapter = GuestDebugAdapter(workbench)
    body = Client(adapter, [])("debugInfo")["body"]
    assert body["isStarted"] is False and body["stoppedThreads"] == [THREAD_ID]


def test_threads_are_vcpus(stopped):
    assert stopped.ok("threads")["threads"] == [{"id": THREAD_ID, "name": "vCPU 0"}]


def test_stack_trace_is_gdbs_frames_with_guest_relative_sources(stopped):
    frames = stopped.ok("stackTrace", threadId=THREAD_ID)["stackFrames"]
    assert [f["name"] for f in frames] == ["fib", "main"]  # gdb's frames end at main
    top = frames[0]
    assert top["line"] == FIB_BODY_LINE
    assert top["source"] == {"name": "fib.c", "path": "src/fib.c"}  # no host path
    assert int(top["instructionPointerReference"], 16) == stopped.adapter.workbench.s.pc
    assert frames[1]["source"]["path"] == "src/fib.c" and frames[1]["line"] > FIB_BODY_LINE


def test_stack_trace_pages_by_start_frame_and_levels(stopped):
    everything = stopped.ok("stackTrace", threadId=THREAD_ID)
    page = stopped.ok("stackTrace", threadId=THREAD_ID, startFrame=1, levels=1)
    assert page["stackFrames"] == everything["stackFrames"][1:2]
    assert page["totalFrames"] == everything["totalFrames"]


def test_scopes_are_locals_arguments_registers_and_globals(stopped):
    scopes = stopped.ok("scopes", frameId=2)["scopes"]
    assert [s["name"] for s in scopes] == ["Locals", "Arguments", "Registers", "Global variables"]
    assert [s.get("presentationHint") for s in scopes[:3]] == ["locals", "arguments", "registers"]
    assert scopes[0]["variablesReference"] == LOCALS_BASE + 1
    assert scopes[1]["variablesReference"] == ARGUMENTS_BASE + 1


def test_arguments_and_locals_are_the_frames_variables_as_gdb_prints_them(stopped):
    arguments = stopped.ok("variables", variablesReference=ARGUMENTS_BASE)["variables"]
    assert [(v["name"], v["value"]) for v in arguments] == [("n", "10 (long)")]
    fib_locals = stopped.ok("variables", variablesReference=LOCALS_BASE)["variables"]
    assert [(v["name"], v["value"]) for v in fib_locals] == [("n", "10 (long)")]  # its argument: fib has no other
    main_locals = stopped.ok("variables", variablesReference=LOCALS_BASE + 1)["variables"]
    assert [v["name"] for v in main_locals] == ["argc", "argv", "n", "result"]
    assert main_locals[2]["value"] == "10 (long)"
    main_args = stopped.ok("variables", variablesReference=ARGUMENTS_BASE + 1)["variables"]
    assert [(v["name"], v["value"]) for v in main_args][0] == ("argc", "2 (int)")


def test_arrays_and_structs_expand_into_their_elements_and_members(stopped):
    variables = stopped.ok("variables", variablesReference=GLOBALS_REF)["variables"]
    idt = next(v for v in variables if v["name"] == "idt")  # static struct idt_gate idt[256]
    assert idt["variablesReference"] != 0 and idt["value"].endswith("(struct idt_gate [256])")
    elements = stopped.ok("variables", variablesReference=idt["variablesReference"])["variables"]
    assert [e["name"] for e in elements[:3]] == ["[0]", "[1]", "[2]"]
    assert len(elements) == MAX_ELEMENTS
    members = stopped.ok("variables", variablesReference=elements[0]["variablesReference"])["variables"]
    evaluator = stopped.adapter.workbench.evaluator()
    expected = [m.name for m in evaluator.evaluate("idt[0]").type.members]  # type: ignore[attr-defined]
    assert [m["name"] for m in members] == expected
    assert all(m["variablesReference"] == 0 for m in members)


def test_registers_are_hex_strings_of_the_live_registers(stopped):
    variables = stopped.ok("variables", variablesReference=REGISTERS_BASE)["variables"]
    by_name = {v["name"]: v["value"] for v in variables}
    regs = stopped.adapter.workbench.s.regs
    assert all(isinstance(v, str) for v in by_name.values())
    assert by_name["rip"] == f"{regs.rip:#x}"
    assert by_name["rdi"] == f"{regs.rdi:#x}"


def test_caller_frame_registers_are_the_callers_own(stopped):
    frames = stopped.ok("stackTrace", threadId=THREAD_ID)["stackFrames"]
    variables = stopped.ok("variables", variablesReference=REGISTERS_BASE + 1)["variables"]
    by_name = {v["name"]: v["value"] for v in variables}
    assert by_name["rip"] == frames[1]["instructionPointerReference"]
    assert int(by_name["rsp"], 16) > stopped.adapter.workbench.s.regs.rsp  # unwound from CFI


def test_values_are_typed_as_strings_so_jupyterlab_shows_them(stopped):
    # JupyterLab renders a variable of any type but "str" by its type name.
    for ref in (REGISTERS_BASE, GLOBALS_REF, ARGUMENTS_BASE):
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
    body = dap.ok("setBreakpoints", source={"path": "src/fib.c"}, breakpoints=[{"line": FIB_BODY_LINE}])
    [answer] = body["breakpoints"]
    assert answer["verified"] is True and answer["line"] == FIB_BODY_LINE
    session = dap.adapter.workbench.s
    assert [bp.location for bp in session.breakpoints] == [f"src/fib.c:{FIB_BODY_LINE}"]
    assert session.breakpoints[answer["id"]].address == int(answer["instructionReference"], 16)


def test_set_breakpoints_replaces_that_files_breakpoints(dap):
    dap.ok("setBreakpoints", source={"path": str(FIB_C)}, breakpoints=[{"line": FIB_BODY_LINE}])
    dap.ok("setBreakpoints", source={"path": str(FIB_C)}, breakpoints=[])
    assert list(dap.adapter.workbench.s.breakpoints) == []


def test_breakpoints_set_in_cells_are_the_sidebars_and_not_doubled(dap):
    wb = dap.adapter.workbench
    wb.execute("break fib")  # a cell's breakpoint, on fib.c's body line
    listed = dap.ok("debugInfo")["breakpoints"]
    assert {"source": "src/fib.c", "breakpoints": [{"line": FIB_BODY_LINE}]} in listed
    # JupyterLab sends the sidebar's breakpoints back when it starts: no second one.
    dap.ok("setBreakpoints", source={"path": "src/fib.c"}, breakpoints=[{"line": FIB_BODY_LINE}])
    assert len(wb.s.breakpoints) == 1
    dap.ok("setBreakpoints", source={"path": "src/fib.c"}, breakpoints=[])  # removed in the sidebar
    assert len(wb.s.breakpoints) == 0


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


def test_next_moves_one_source_line_and_step_in_enters_the_call(stopped):
    stopped.adapter.workbench.execute("delete")
    stopped.ok("stepIn", threadId=THREAD_ID)  # fib(n - 1): into the call, past its prologue
    stopped.adapter.wait(30)
    assert stopped.events[-1]["event"] == "stopped" and stopped.events[-1]["body"]["reason"] == "step"
    frames = stopped.ok("stackTrace", threadId=THREAD_ID)["stackFrames"]
    assert [(f["name"], f["line"]) for f in frames[:2]] == [("fib", FIB_BODY_LINE), ("fib", FIB_BODY_LINE)]
    stopped.ok("next", threadId=THREAD_ID)  # over both recursive calls: the closing brace
    stopped.adapter.wait(30)
    top = stopped.ok("stackTrace", threadId=THREAD_ID)["stackFrames"][0]
    assert (top["name"], top["line"]) == ("fib", FIB_BODY_LINE + 1)
    stopped.ok("stepOut", threadId=THREAD_ID)
    stopped.adapter.wait(30)
    assert len(stopped.ok("stackTrace", threadId=THREAD_ID)["stackFrames"]) == 2


def test_requests_about_the_stack_fail_cleanly_without_a_guest(workbench, dap):
    workbench.close()
    reply = dap("stackTrace", threadId=THREAD_ID)
    assert reply["success"] is False and "no guest" in reply["message"]
    assert dap.ok("threads")["threads"] == []


def test_unknown_requests_are_refused(dap):
    reply = dap("evaluate", expression="1")
    assert reply["success"] is False
