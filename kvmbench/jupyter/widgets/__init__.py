"""ipywidgets for the kvmbench kernel: ``%panel`` (or ``panel(session)``)
shows a debugger panel bound to the live guest session."""

from __future__ import annotations

import asyncio
import weakref

from kvmbench.engine.session import Session
from kvmbench.jupyter.commands import Workbench
from kvmbench.jupyter.widgets.panel import Panel
from kvmbench.jupyter.widgets.render import PlotRenderer

__all__ = ["Panel", "PlotRenderer", "panel"]

#: One panel per workbench: ``%panel`` again shows the same live panel (a
#: second view of the same widget models) instead of a second updater.
_PANELS: "weakref.WeakKeyDictionary[Workbench, Panel]" = weakref.WeakKeyDictionary()


def _kernel_workbench() -> Workbench | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None) if shell is not None else None
    workbench = getattr(kernel, "workbench", None)
    return workbench if isinstance(workbench, Workbench) else None


def panel(target: Session | Workbench | None = None, *,
          loop: asyncio.AbstractEventLoop | None = None) -> Panel:
    """The debugger panel for ``target``: the kernel's workbench by default;
    a Session that is the kernel's own binds to the kernel's workbench (so
    the panel follows ``%guest``), any other Session gets a workbench of its own."""
    workbench = _kernel_workbench()
    if isinstance(target, Workbench):
        workbench = target
    elif isinstance(target, Session) and (workbench is None or workbench.session is not target):
        workbench = Workbench()
        workbench.session = target
    if workbench is None:
        raise RuntimeError("panel() needs a session or the kvmbench kernel")
    existing = _PANELS.get(workbench)
    if existing is not None and not existing.closed:
        return existing
    made = Panel(workbench, loop=loop)
    _PANELS[workbench] = made
    return made
