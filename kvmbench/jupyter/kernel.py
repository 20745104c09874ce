"""The kvmbench Jupyter kernel: IPython plus a guest debug session.

Small on purpose: protocol handling stays in ipykernel. This class puts the
workbench into the user namespace, registers the gdb-style magics and the
input transformer, pauses the guest on an interrupt request, and answers
completion and inspection for guest symbols before falling back to IPython.
JupyterLab's debugger panel is answered about the guest (kvmbench.jupyter.dap):
this replaces ipykernel's debugpy debugger, so Python cells are not debuggable
in this kernel.
"""

from __future__ import annotations

import asyncio
import sys
import time
import typing as t

from ipykernel.ipkernel import IPythonKernel
from IPython.core.magic import no_var_expand
from IPython.display import display

import kvmbench
from kvmbench.engine.session import RunState, Session
from kvmbench.jupyter import completion
from kvmbench.jupyter.commands import COMMANDS, Workbench
from kvmbench.jupyter.dap import GuestDebugAdapter
from kvmbench.jupyter.display import StopView
from kvmbench.jupyter.transform import make_transformer


def one_line_error(error: BaseException) -> BaseException:
    """Make IPython show ``error`` as its one line instead of a traceback
    (IPython honours ``_render_traceback_`` on the exception instance).
    The cell still ends with status "error", so Run All stops there as gdb
    stops a script at its first failing command."""
    name = type(error).__name__
    line = f"\x1b[0;31m{name}\x1b[0m: {error}" if str(error) else name
    error._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    return error


class KvmbenchKernel(IPythonKernel):
    implementation = "kvmbench"
    implementation_version = kvmbench.__version__
    language_info = dict(IPythonKernel.language_info)
    help_links = [
        {"text": "GDB manual", "url": "https://sourceware.org/gdb/current/onlinedocs/gdb/"},
        {"text": "KVM API", "url": "https://docs.kernel.org/virt/kvm/api.html"},
    ]

    @property
    def banner(self) -> str:  # type: ignore[override]
        return (f"kvmbench {kvmbench.__version__}: a debugging workbench for KVM guests\n"
                f"%guest NAME [ARGS] boots one of: {', '.join(kvmbench.GUEST_NAMES)}; "
                "then break, continue, x/FMT, info, help.\n" + (super().banner or ""))

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        self.workbench = Workbench(on_console=self._on_console, on_session=self._on_session)
        self.dap = GuestDebugAdapter(self.workbench, self._publish_guest_event)
        shell = self.shell
        assert shell is not None
        shell.user_ns.update(
            kvmbench=kvmbench,
            session=None,
            workbench=self.workbench,
            _kvmbench_run=self._run,
            _kvmbench_command=self._command,
        )
        shell.user_ns_hidden.update(
            {"_kvmbench_run": self._run, "_kvmbench_command": self._command, "workbench": self.workbench})
        shell.input_transformers_cleanup.append(make_transformer(shell.user_ns))
        self._register_magics()

    def _publish_guest_event(self, event: dict[str, t.Any]) -> None:
        """A DAP event on IOPub, parented to what caused it: the panel's own
        debug_request for runs the panel started (ipykernel would give the
        last cell's execute_request)."""
        if not self.session:
            return
        parent = self.get_parent("control") if self.dap.panel_run else self.get_parent()
        self.session.send(self.iopub_socket, "debug_event", event, parent=parent,
                          ident=self._topic("debug_event"))

    # --- namespace and output --------------------------------------------------

    def _on_session(self, session: Session | None) -> None:
        assert self.shell is not None
        self.shell.user_ns["session"] = session

    @staticmethod
    def _on_console(text: str) -> None:
        """Guest console output, called on the vCPU's thread. ipykernel 7's
        OutStream takes the parent header from a ContextVar, and the worker
        thread runs in a copy of the cell's context (asyncio.to_thread), so
        the text lands in the running cell; OutStream hands it to the IOPub
        thread itself."""
        sys.stdout.write(text)

    def _register_magics(self) -> None:
        shell = self.shell
        assert shell is not None
        for spelling in COMMANDS:
            def magic(line: str, _name: str = spelling) -> None:
                self._command(_name, line)
            magic.__doc__ = COMMANDS[spelling].handler.__doc__
            shell.register_magic_function(no_var_expand(magic), "line", spelling)

        def gdb(line: str, cell: str) -> None:
            """%%gdb: a cell of gdb commands, one per line (run-control ones
            too, off the event loop: the input transformer rewrites the cell)."""
            for text in cell.splitlines():
                if text.strip() and not text.strip().startswith("#"):
                    self._command(None, text)
        shell.register_magic_function(gdb, "cell", "gdb")

    # --- commands ------------------------------------------------------------------

    def _command(self, name: str | None, args: str) -> None:
        """Run a (non-blocking or synchronously called) command and display its
        result; ``name=None``: ``args`` is a whole line (an unknown word gets
        gdb's ``Undefined command``)."""
        try:
            line = args if name is None else f"{name} {args}" if not args.startswith("/") else name + args
            result = self.workbench.execute(line)
        except Exception as error:  # noqa: BLE001 - user input never ends in a traceback
            raise one_line_error(error) from None
        if result is not None:
            display(result)

    async def _run(self, name: str, args: str) -> None:
        """Run-control: the blocking engine call runs on a worker thread while
        this coroutine, awaited at the cell's top level, leaves the kernel's
        event loop free for comm messages and interrupts."""
        workbench = self.workbench
        self.dap.on_running()
        job = asyncio.ensure_future(asyncio.to_thread(workbench.run, name, args))
        try:
            view = await asyncio.shield(job)
        except (KeyboardInterrupt, asyncio.CancelledError):
            # A SIGINT-mode interrupt: the guest must not run on unobserved.
            workbench.pause()
            view = await job
        except Exception as error:  # noqa: BLE001 - see _command
            if self.dap.stopped:
                self.dap.on_stopped()
            raise one_line_error(error) from None
        self.dap.on_stopped(view.stop)
        sys.stdout.flush()
        display(view)

    # --- protocol hooks ------------------------------------------------------------

    async def interrupt_request(self, stream: t.Any, ident: t.Any, parent: t.Any) -> None:
        """With interrupt_mode "message" the stop button arrives here (on the
        control thread); ipykernel would SIGINT the process. A running guest is
        paused instead, and the awaiting cell returns with a "paused" card."""
        if self.workbench.pause():
            self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)
            return
        await super().interrupt_request(stream, ident, parent)

    async def do_debug_request(self, msg: dict[str, t.Any]) -> dict[str, t.Any]:
        """JupyterLab's debugger (DAP on the control channel), about the guest."""
        return self.dap.handle(msg)

    async def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, t.Any]:
        reply = completion.complete(self.workbench, code, cursor_pos)
        if reply is None:
            return super().do_complete(code, cursor_pos)
        if reply["metadata"].pop("kvmbench_first_word", False):
            # A line's first word is a command or Python: offer both.
            python = super().do_complete(code, cursor_pos)
            if python.get("cursor_start") == reply["cursor_start"]:
                reply["matches"] = list(dict.fromkeys([*reply["matches"], *python.get("matches", [])]))
        return reply

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0,
                         omit_sections: t.Any = ()) -> dict[str, t.Any]:
        reply = completion.inspect(self.workbench, code, cursor_pos)
        if reply is not None:
            return reply
        return super().do_inspect(code, cursor_pos, detail_level, omit_sections)

    async def do_shutdown(self, restart: bool) -> dict[str, t.Any]:
        self._close_session()
        return super().do_shutdown(restart)

    def _close_session(self, timeout: float = 2.0) -> None:
        workbench = self.workbench
        if workbench.pause():
            deadline = time.monotonic() + timeout
            session = workbench.session
            while session is not None and session.state is RunState.RUNNING and time.monotonic() < deadline:
                time.sleep(0.01)
        workbench.close()


__all__ = ["KvmbenchKernel", "StopView"]
