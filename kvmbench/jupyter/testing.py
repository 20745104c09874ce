"""Helpers for tests that start real kvmbench kernels: install the kernelspec
into a private prefix and collect what a cell sends."""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmbench.jupyter.install import KERNEL_NAME, install


@contextmanager
def kernelspec_in(prefix: Path) -> Iterator[str]:
    """Install the kernelspec under ``prefix`` and point JUPYTER_PATH at it."""
    install(prefix=str(prefix))
    old = os.environ.get("JUPYTER_PATH")
    share = str(prefix / "share" / "jupyter")
    os.environ["JUPYTER_PATH"] = share + (os.pathsep + old if old else "")
    try:
        yield KERNEL_NAME
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


@contextmanager
def started_kernel(prefix: Path) -> Iterator[tuple[Any, Any]]:
    """(KernelManager, client) of a kvmbench kernel from a kernelspec
    installed under ``prefix``; shut down on exit."""
    from jupyter_client.manager import start_new_kernel

    with kernelspec_in(prefix) as name:
        km, kc = start_new_kernel(kernel_name=name, startup_timeout=60)
        try:
            yield km, kc
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


@dataclass
class CellResult:
    status: str
    stdout: str = ""
    stderr: str = ""
    displays: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All text/plain the cell displayed, joined."""
        return "\n".join(d["data"].get("text/plain", "") for d in self.displays)

    @property
    def html(self) -> str:
        return "\n".join(d["data"].get("text/html", "") for d in self.displays)


def collect(kc: Any, msg_id: str, timeout: float = 30.0) -> CellResult:
    """Everything the cell ``msg_id`` sent on IOPub until it went idle, and its reply status."""
    result = CellResult(status="")
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                result.stdout += content["text"]
            else:
                result.stderr += content["text"]
        elif kind in ("display_data", "execute_result"):
            result.displays.append(content)
        elif kind == "error":
            result.errors.append(content)
        elif kind == "status" and content["execution_state"] == "idle":
            break
        else:
            result.others.append(msg)
    while True:
        try:
            reply = kc.get_shell_msg(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no execute_reply for {msg_id}") from None
        if reply["parent_header"].get("msg_id") == msg_id:
            result.status = reply["content"]["status"]
            return result


def run_cell(kc: Any, code: str, timeout: float = 30.0) -> CellResult:
    return collect(kc, kc.execute(code), timeout)
