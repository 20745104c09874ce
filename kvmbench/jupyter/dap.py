"""The Debug Adapter Protocol over the guest: JupyterLab's debugger panel.

JupyterLab's debugger speaks DAP inside ``debug_request`` / ``debug_reply``
messages on the control channel and ``debug_event`` messages on IOPub (JEP
47). :class:`GuestDebugAdapter` answers those requests about the live
*guest*, not the Python interpreter:

* threads: one per vCPU ("vCPU 0" is thread 1; DAP ids start at 1);
* stackTrace: gdb's frames (CFI unwinding, inlined calls as frames), with
  their DWARF source file as the guest names it (``src/fib.c``, relative
  to the guest's source folder: no host paths) and line;
* scopes / variables: "Locals" and "Arguments" of the frame (DWARF
  locations, values as gdb prints them, structs, arrays and pointers to
  structs expandable), "Registers" and "Globals";
* source: the guest's C source, found as the stop card finds it;
* setBreakpoints: gutter breakpoints in a guest source file are the
  session's breakpoints on that file: those set from cells show in the
  sidebar too (debugInfo), and removing one there deletes it;
* continue / next / stepIn / stepOut / pause: gdb's continue, next, step,
  finish (by source line) and pause, run on a worker thread;
* ``stopped`` / ``continued`` events whenever the guest stops or runs,
  whether a notebook cell or the panel made it run; a guest already
  stopped when the debugger is switched on shows its call stack at once.

While the kvmbench kernel runs, this *replaces* ipykernel's debugpy-backed
debugger: Python code in cells cannot be stepped through (a breakpoint set
in a cell is answered unverified). The guest is what this kernel debugs.

Pure protocol handling: requests are dicts in, responses dicts out, events
go to the ``send_event`` callback. Everything the guest is asked goes
through the :class:`~kvmbench.jupyter.commands.Workbench` and its session.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmbench.engine.model import Stop, StopReason
from kvmbench.engine.session import RunState
from kvmbench.errors import KvmbenchError
from kvmbench.jupyter.commands.registry import lookup
from kvmbench.jupyter.commands.workbench import CARD_REGISTERS, Workbench
from kvmbench.symbols.types import ArrayType, PointerType, StructType, strip_typedefs, whatis

#: DAP thread id of vCPU 0 (JupyterLab treats 0 as "no thread").
THREAD_ID = 1
#: variablesReference of the Globals scope; a frame's Registers scope is
#: REGISTERS_BASE + the frame's index, its Locals LOCALS_BASE + index, its
#: Arguments ARGUMENTS_BASE + index; expandable values get references from
#: VALUES_BASE on, valid until the guest runs.
GLOBALS_REF = 1
REGISTERS_BASE = 1000
LOCALS_BASE = 2000
ARGUMENTS_BASE = 3000
VALUES_BASE = 100_000
#: Frame ids per stop (see GuestDebugAdapter._generation).
FRAME_IDS = 1000
#: Array elements shown under an expanded array.
MAX_ELEMENTS = 100

#: DAP run-control requests and the workbench command each one runs
#: (by source line; by instruction where there is no line information).
RUN_COMMANDS = {"continue": "continue", "next": "next", "stepIn": "step", "stepOut": "finish"}

#: The DAP requests answered (each by the method named "_" + request).
REQUESTS = frozenset({
    "initialize", "attach", "configurationDone", "disconnect", "setExceptionBreakpoints",
    "debugInfo", "dumpCell", "threads", "stackTrace", "scopes", "variables",
    "inspectVariables", "richInspectVariables", "source", "setBreakpoints",
    "continue", "next", "stepIn", "stepOut", "pause",
})

_STOP_REASONS = {
    StopReason.BREAKPOINT: "breakpoint",
    StopReason.WATCHPOINT: "data breakpoint",
    StopReason.STEP: "step",
    StopReason.FINISH: "step",
    StopReason.LOCATION: "goto",
    StopReason.PAUSED: "pause",
    StopReason.GUEST_TRAP: "exception",
}

#: JupyterLab's variables view shows a variable's ``value`` only when its
#: ``type`` is "str" (an "int" goes through parseInt(value, 10), which turns
#: 0x-prefixed values into 0; any other type is shown instead of the value),
#: so values go out typed as strings and the C type rides in the value.
_SHOWN_AS_VALUE = "str"


class DapError(Exception):
    """A request that cannot be answered: becomes ``success: false``."""


def cell_file_name(code: str) -> str:
    """Where ipykernel would dump a cell (JupyterLab computes the same
    Murmur2 name from debugInfo's hashSeed and tmpFilePrefix)."""
    from ipykernel.compiler import get_file_name

    return str(get_file_name(code))


class GuestDebugAdapter:
    """DAP requests about the guest in ``workbench``; events to ``send_event``."""

    def __init__(self, workbench: Workbench,
                 send_event: Callable[[dict[str, Any]], None] = lambda event: None) -> None:
        self.workbench = workbench
        self.send_event = send_event
        self.started = False
        self._seq = 0
        self._lock = threading.Lock()
        #: DAP source path -> engine breakpoint numbers set from it.
        self._breakpoints: dict[str, list[int]] = {}
        #: DAP source path -> the breakpoints as last answered (debugInfo).
        self._breakpoint_lines: dict[str, list[dict[str, Any]]] = {}
        self._runner: threading.Thread | None = None
        #: variablesReference -> (frame level, C expression) of expandable values.
        self._values: dict[int, tuple[int, str]] = {}
        #: True while a run the panel started is on (its events belong to the
        #: panel's request, not to the last cell: JupyterLab resets its
        #: variables view to the globals on events of a cell's execution).
        self.panel_run = False
        #: The stop re-announced since the debugger started (see _inspectVariables).
        self._announced = False
        #: Frame ids are generation * FRAME_IDS + level + 1: new ones at every
        #: stop, so the panel never keeps a frame (and its variables) of an
        #: earlier stop.
        self._generation = 0

    # --- messages ------------------------------------------------------------

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def event(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one DAP event (and return it)."""
        message = {"type": "event", "seq": self._next_seq(), "event": name, "body": body or {}}
        self.send_event(message)
        return message

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one DAP request."""
        command = request.get("command", "")
        response: dict[str, Any] = {
            "type": "response", "seq": self._next_seq(), "request_seq": request.get("seq", 0),
            "command": command, "success": True,
        }
        handler = getattr(self, "_" + command) if command in REQUESTS else None
        if handler is None:
            response.update(success=False, message=f"{command!r} is not supported by the kvmbench guest debugger")
            return response
        try:
            body = handler(request.get("arguments") or {})
        except (DapError, KvmbenchError) as error:
            response.update(success=False, message=str(error))
            return response
        response["body"] = body if body is not None else {}
        if command == "initialize":
            self.event("initialized")
        return response

    # --- notifications from the kernel's run path ----------------------------------

    def on_running(self) -> None:
        self._values.clear()
        self._generation += 1
        if self.started:
            self.event("continued", {"threadId": THREAD_ID, "allThreadsContinued": True})

    def on_stopped(self, stop: Stop | None = None) -> None:
        """The guest stopped (or is gone: then the thread exits)."""
        if not self.started:
            return
        stop = stop if stop is not None else (self.workbench.session.last_stop
                                               if self.workbench.session is not None else None)
        if stop is not None and not stop.alive:
            self.event("thread", {"reason": "exited", "threadId": THREAD_ID})
            return
        body: dict[str, Any] = {"reason": "pause", "threadId": THREAD_ID, "allThreadsStopped": True}
        if stop is not None:
            body["reason"] = _STOP_REASONS.get(stop.reason, "pause")
            body["description"] = self.workbench.headline(stop) if self.workbench.session else stop.describe()
            if stop.breakpoint is not None:
                body["hitBreakpointIds"] = [stop.breakpoint]
        self.event("stopped", body)

    # --- guest state -----------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        session = self.workbench.session
        return session is not None and session.state is RunState.STOPPED

    def _require_stopped(self) -> None:
        session = self.workbench.session
        if session is None:
            raise DapError("no guest: boot one with %guest NAME")
        if session.state is not RunState.STOPPED:
            raise DapError(f"the guest is {session.state.value}")

    def _search_dirs(self) -> list[Path]:
        session = self.workbench.s
        guests = session.image.parent.parent
        debug = session.symbols.debug
        extra = [Path(p) for p in getattr(debug, "search_path", ())] if debug is not None else []
        return [Path.cwd(), guests, guests / "src", *extra]

    def source_path(self, file: str) -> str | None:
        """The file on this machine for a DWARF file name (``src/fib.c``)."""
        if posixpath.isabs(file):
            return file if os.path.isfile(file) else None
        for directory in self._search_dirs():
            for name in (file, posixpath.basename(file)):
                candidate = directory / name
                if candidate.is_file():
                    return str(candidate.resolve())
        return None

    def dwarf_file(self, path: str) -> str | None:
        """The DWARF file name a DAP source path stands for, if any."""
        debug = self.workbench.s.symbols.debug
        if debug is None:
            return None
        files = list(debug.iter_source_files())
        normal = posixpath.normpath(path)
        for name in files:
            if normal == name or normal.endswith("/" + posixpath.normpath(name)):
                return name
        for name in files:
            if posixpath.basename(name) == posixpath.basename(normal):
                found = self.source_path(name)
                if found is not None and os.path.realpath(found) == os.path.realpath(path):
                    return name
        return None

    def _source_ref(self, file: str) -> dict[str, Any]:
        """A guest source as the panel names it: the DWARF file name, relative
        to the guest's source folder (``src/fib.c``), never a host path; the
        panel asks for its text with a ``source`` request."""
        return {"name": posixpath.basename(file), "path": file}

    # --- requests --------------------------------------------------------------------

    def _initialize(self, args: dict[str, Any]) -> dict[str, Any]:
        self.started = True
        self._announced = False
        return {
            "supportsConfigurationDoneRequest": True,
            "supportsSetVariable": False,
            "supportsConditionalBreakpoints": False,
            "supportsStepBack": False,
            "supportsTerminateRequest": False,
            "supportsLoadedSourcesRequest": False,
        }

    def _attach(self, args: dict[str, Any]) -> dict[str, Any]:
        self.started = True
        return {}

    def _configurationDone(self, args: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _disconnect(self, args: dict[str, Any]) -> dict[str, Any]:
        self.started = False
        return {}

    def _setExceptionBreakpoints(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"breakpoints": []}

    def _debugInfo(self, args: dict[str, Any]) -> dict[str, Any]:
        from ipykernel.compiler import get_tmp_directory, get_tmp_hash_seed

        return {
            "isStarted": self.started,
            "hashMethod": "Murmur2",
            "hashSeed": get_tmp_hash_seed(),
            "tmpFilePrefix": get_tmp_directory() + os.sep,
            "tmpFileSuffix": ".py",
            "breakpoints": self._all_breakpoint_lines(),
            # A guest already stopped when the debugger is switched on: the
            # panel fetches the call stack at once.
            "stoppedThreads": [THREAD_ID] if self.stopped else [],
            "richRendering": False,
            "exceptionPaths": [],
            "copyToGlobals": False,
        }

    def _dumpCell(self, args: dict[str, Any]) -> dict[str, Any]:
        code = args.get("code", "")
        name = cell_file_name(code)
        os.makedirs(os.path.dirname(name), exist_ok=True)
        with open(name, "w", encoding="utf-8") as f:
            f.write(code)
        return {"sourcePath": name}

    def _threads(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.workbench.session is None or self.workbench.s.state not in (RunState.STOPPED, RunState.RUNNING):
            return {"threads": []}
        return {"threads": [{"id": THREAD_ID, "name": "vCPU 0"}]}

    def frames(self) -> list[dict[str, Any]]:
        """gdb's frames as DAP stack frames (ids from 1)."""
        self._require_stopped()
        session = self.workbench.s
        out = []
        for frame in session.frame_list():
            name = frame.name or f"{frame.pc:#x}"
            item: dict[str, Any] = {
                "id": self._generation * FRAME_IDS + frame.level + 1, "name": name, "line": 0, "column": 0,
                "instructionPointerReference": f"{frame.pc:#x}",
            }
            if frame.location is not None:
                item.update(source=self._source_ref(frame.location.file), line=frame.location.line, column=1)
            else:
                item["presentationHint"] = "subtle"
            out.append(item)
        return out

    def _stackTrace(self, args: dict[str, Any]) -> dict[str, Any]:
        frames = self.frames()
        start = int(args.get("startFrame") or 0)
        levels = int(args.get("levels") or 0)
        shown = frames[start:start + levels] if levels else frames[start:]
        return {"stackFrames": shown, "totalFrames": len(frames)}

    def _scopes(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require_stopped()
        index = (int(args.get("frameId", 1)) - 1) % FRAME_IDS
        if index < 0:
            raise DapError(f"no frame {index + 1}")
        return {"scopes": [
            {"name": "Locals", "presentationHint": "locals",
             "variablesReference": LOCALS_BASE + index, "expensive": False},
            {"name": "Arguments", "presentationHint": "arguments",
             "variablesReference": ARGUMENTS_BASE + index, "expensive": False},
            {"name": "Registers", "presentationHint": "registers",
             "variablesReference": REGISTERS_BASE + index, "expensive": False},
            # Not "Globals": JupyterLab names the kernel's variables so, keeps the
            # scope chosen by name, and would stay on it instead of the frame's Locals.
            {"name": "Global variables", "variablesReference": GLOBALS_REF, "expensive": False},
        ]}

    def registers(self, index: int = 0) -> list[dict[str, Any]]:
        self._require_stopped()
        s = self.workbench.s
        if index == 0:
            values = s.regs.snapshot()
            names = [n for n in CARD_REGISTERS if n in values] + sorted(set(values) - set(CARD_REGISTERS))
        else:
            frames = s.frame_list(index + 1)
            if index >= len(frames):
                raise DapError(f"no frame {index + 1}")
            context = frames[index].physical.context
            values, names = {}, []
            for name in CARD_REGISTERS:
                try:
                    values[name] = context.read_register("eflags" if name == "rflags" else name)
                    names.append(name)
                except KvmbenchError:
                    continue
        return [{"name": name, "value": f"{values[name]:#x}", "type": _SHOWN_AS_VALUE,
                 "evaluateName": f"${name}", "variablesReference": 0} for name in names]

    # --- variables -----------------------------------------------------------------

    def _frame(self, index: int):  # type: ignore[no-untyped-def]
        frames = self.workbench.s.frame_list(index + 2)
        if not 0 <= index < len(frames):
            raise DapError(f"no frame {index + 1}")
        return frames[index]

    def _variable(self, level: int, name: str, expression: str) -> dict[str, Any]:
        """One variable as the panel shows it: gdb's value text, its C type,
        and a reference when it has parts to expand."""
        wb = self.workbench
        frame = self._frame(level)
        evaluator = wb.evaluator(frame)
        reference = 0
        try:
            value = evaluator.evaluate(expression)
            text = evaluator.format(value, top_level=False)
            type_name = whatis(value.type)
            if _children_of(value.type):
                reference = VALUES_BASE + len(self._values)
                self._values[reference] = (level, expression)
        except KvmbenchError as error:
            text, type_name = f"<error: {error}>", ""
        shown = f"{text} ({type_name})" if type_name else text
        return {"name": name, "value": shown, "type": _SHOWN_AS_VALUE, "evaluateName": expression,
                "variablesReference": reference}

    def locals(self, index: int) -> list[dict[str, Any]]:
        """The Locals scope: the frame's arguments, then its locals in gdb's
        ``info locals`` order (a C debugger's Locals view holds both; the
        Arguments scope has the arguments alone)."""
        self._require_stopped()
        from kvmbench.expressions.frames import iter_locals

        frame = self._frame(index)
        if frame.function is None:
            return []
        return self.arguments(index) + [self._variable(index, v.name, v.name)
                                        for v in iter_locals(frame) if v.name]

    def arguments(self, index: int) -> list[dict[str, Any]]:
        self._require_stopped()
        frame = self._frame(index)
        if frame.function is None:
            return []
        return [self._variable(index, v.name, v.name) for v in frame.function.variables
                if v.is_argument and v.name]

    def children(self, reference: int) -> list[dict[str, Any]]:
        """The parts of an expandable value: members, elements, a pointer's target."""
        self._require_stopped()
        if reference not in self._values:
            raise DapError("that value is gone: the guest ran since")
        level, expression = self._values[reference]
        evaluator = self.workbench.evaluator(self._frame(level))
        value = evaluator.evaluate(expression)
        return [self._variable(level, name, part) for name, part in _parts(value.type, expression)]

    def globals(self) -> list[dict[str, Any]]:
        self._require_stopped()
        s = self.workbench.s
        debug = s.symbols.debug
        if debug is None:
            return []
        out = []
        for name, var in sorted(debug.get_globals().items()):
            item = self._variable(0, name, name)
            item["memoryReference"] = f"{var.address:#x}"
            out.append(item)
        return out

    def _variables(self, args: dict[str, Any]) -> dict[str, Any]:
        ref = int(args.get("variablesReference", 0))
        if ref == GLOBALS_REF:
            return {"variables": self.globals()}
        if ref >= VALUES_BASE:
            return {"variables": self.children(ref)}
        if ref >= ARGUMENTS_BASE:
            return {"variables": self.arguments(ref - ARGUMENTS_BASE)}
        if ref >= LOCALS_BASE:
            return {"variables": self.locals(ref - LOCALS_BASE)}
        if ref >= REGISTERS_BASE:
            return {"variables": self.registers(ref - REGISTERS_BASE)}
        return {"variables": []}

    def _inspectVariables(self, args: dict[str, Any]) -> dict[str, Any]:
        """The variables panel while nothing is stopped in a frame: the globals.

        JupyterLab asks this right after it switched the debugger on, also
        when the guest was already stopped, and then shows these instead of
        the frame's scopes: the stop is announced again (once per start),
        so the panel goes back to the stopped frame's Locals."""
        if self.stopped and self.started and not self._announced:
            self._announced = True
            self._generation += 1  # new frame ids: the panel fetches the frame's scopes again
            self.on_stopped()
        return {"variables": self.globals() if self.stopped else []}

    def _richInspectVariables(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"data": {}, "metadata": {}}

    def _source(self, args: dict[str, Any]) -> dict[str, Any]:
        path = (args.get("source") or {}).get("path", "")
        return {"content": self.source_text(path), "mimeType": "text/x-csrc"}

    def source_text(self, path: str) -> str:
        """The text of a guest source file (or a dumped cell) at ``path``."""
        if self.workbench.session is not None:
            file = self.dwarf_file(path)
            if file is not None:
                found = self.source_path(file)
                if found is not None:
                    return Path(found).read_text(encoding="utf-8", errors="replace")
        if path.startswith(tempfile.gettempdir()) and os.path.isfile(path):
            return Path(path).read_text(encoding="utf-8", errors="replace")
        raise DapError(f"source unavailable: {path}")

    def _file_breakpoints(self, file: str) -> dict[int, list[int]]:
        """The session's breakpoints in DWARF file ``file``, by line."""
        session = self.workbench.s
        lines: dict[int, list[int]] = {}
        for bp in session.breakpoints:
            if bp.tracepoint or bp.internal:
                continue
            where = session.symbols.get_source_location(bp.address)
            if where is not None and where.file == file:
                lines.setdefault(where.line, []).append(bp.number)
        return lines

    def _all_breakpoint_lines(self) -> list[dict[str, Any]]:
        """Every breakpoint with a source line, by file (debugInfo: the sidebar's list)."""
        answered = {path: lines for path, lines in self._breakpoint_lines.items()}
        session = self.workbench.session
        if session is not None and session.state is not RunState.CLOSED:
            try:
                debug = session.symbols.debug
                files = {} if debug is None else {
                    (loc.file) for bp in session.breakpoints
                    if not bp.tracepoint and (loc := session.symbols.get_source_location(bp.address)) is not None}
                for file in files:
                    answered[file] = [{"line": line} for line in sorted(self._file_breakpoints(file))]
            except KvmbenchError:
                pass
        return [{"source": path, "breakpoints": lines} for path, lines in answered.items()]

    def _setBreakpoints(self, args: dict[str, Any]) -> dict[str, Any]:
        path = (args.get("source") or {}).get("path", "")
        wanted = args.get("breakpoints")
        if wanted is None:
            wanted = [{"line": line} for line in args.get("lines", [])]
        session = self.workbench.session
        file = self.dwarf_file(path) if session is not None else None
        if file is None:
            why = "no guest" if session is None else "not a source file of the guest"
            self._breakpoint_lines[path] = [{"line": bp["line"]} for bp in wanted]
            return {"breakpoints": [{"verified": False, "line": bp["line"], "message": why} for bp in wanted]}
        if session.state is not RunState.STOPPED:
            raise DapError(f"the guest is {session.state.value}; pause it to change breakpoints")
        from kvmbench.jupyter.commands.breakpoints import add_breakpoint

        existing = self._file_breakpoints(file)
        lines_wanted = {int(bp["line"]) for bp in wanted}
        wb = self.workbench
        for line, numbers in existing.items():
            if line not in lines_wanted:
                for number in numbers:
                    if number in session.breakpoints:
                        session.breakpoints.delete(number)
                    wb.breakpoint_specs.pop(number, None)
        answers = []
        for bp in wanted:
            line = int(bp["line"])
            numbers = self._file_breakpoints(file).get(line)
            if not numbers:
                try:
                    add_breakpoint(wb, f"{file}:{line}", "break")
                except KvmbenchError as error:
                    answers.append({"verified": False, "line": line, "message": str(error)})
                    continue
                numbers = [n for ns in self._file_breakpoints(file).values() for n in ns
                           if n == wb.last_breakpoint] or [wb.last_breakpoint]
            engine_bp = session.breakpoints.get(numbers[0])
            where = session.symbols.get_source_location(engine_bp.address) if engine_bp is not None else None
            answers.append({"id": numbers[0], "verified": True,
                            "line": where.line if where is not None else line,
                            "source": self._source_ref(file),
                            "instructionReference": f"{engine_bp.address:#x}" if engine_bp else ""})
        self._breakpoints[path] = [a["id"] for a in answers if a.get("verified")]
        self._breakpoint_lines[path] = [{"line": a["line"]} for a in answers]
        return {"breakpoints": answers}

    # --- run control ---------------------------------------------------------------

    def start_run(self, command: str) -> None:
        """Run ``command`` on a worker thread; events tell when it stops."""
        self._require_stopped()
        session = self.workbench.s
        debug = session.symbols.debug
        if command in ("next", "step") and (debug is None or debug.get_line_entry(session.pc) is None):
            command = {"next": "nexti", "step": "stepi"}[command]  # no line here: by instruction
        if self._runner is not None and self._runner.is_alive():
            raise DapError("the guest is already running")
        self.workbench.check(lookup(command))

        def run() -> None:
            stop = None
            try:
                stop = self.workbench.run(command, "").stop
            except KvmbenchError:
                pass
            try:
                self.on_stopped(stop)
            finally:
                self.panel_run = False

        self.panel_run = True
        self.on_running()
        self._runner = threading.Thread(target=run, name=f"dap-{command}", daemon=True)
        self._runner.start()

    def _continue(self, args: dict[str, Any]) -> dict[str, Any]:
        self.start_run(RUN_COMMANDS["continue"])
        return {"allThreadsContinued": True}

    def _next(self, args: dict[str, Any]) -> dict[str, Any]:
        self.start_run(RUN_COMMANDS["next"])
        return {}

    def _stepIn(self, args: dict[str, Any]) -> dict[str, Any]:
        self.start_run(RUN_COMMANDS["stepIn"])
        return {}

    def _stepOut(self, args: dict[str, Any]) -> dict[str, Any]:
        self.start_run(RUN_COMMANDS["stepOut"])
        return {}

    def _pause(self, args: dict[str, Any]) -> dict[str, Any]:
        self.workbench.pause()
        return {}

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a run started by a DAP request to stop (tests)."""
        if self._runner is not None:
            self._runner.join(timeout)



def _children_of(ctype: object) -> bool:
    """Whether a value of this C type has parts the panel can expand."""
    real = strip_typedefs(ctype)  # type: ignore[arg-type]
    if isinstance(real, (StructType, ArrayType)):
        return True
    if isinstance(real, PointerType):
        return isinstance(strip_typedefs(real.target), StructType)
    return False


def _parts(ctype: object, expression: str) -> list[tuple[str, str]]:
    """(name, C expression) of each part of a value of this type."""
    real = strip_typedefs(ctype)  # type: ignore[arg-type]
    if isinstance(real, StructType):
        return [(m.name, f"({expression}).{m.name}") for m in real.members if m.name]
    if isinstance(real, ArrayType):
        count = real.count if real.count is not None else 0
        return [(f"[{i}]", f"({expression})[{i}]") for i in range(min(count, MAX_ELEMENTS))]
    if isinstance(real, PointerType):
        return [(f"*{expression}", f"*({expression})")]
    return []
