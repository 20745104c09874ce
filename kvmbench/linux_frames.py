"""Kernel frames as drgn unwinds them, for every frame command.

A Linux kernel is built without frame pointers and its vmlinux carries no
.eh_frame: the engine's frame-pointer rules go wrong after the first frame.
drgn unwinds through the kernel's own ORC data (or DWARF CFI) once it has
the kernel's DWARF, so a :class:`KernelUnwinder` takes the outer frames
from drgn's stack trace of the stopped CPU; frame 0 stays the engine's
(the live registers), and without DWARF the engine's rules serve as before.
``bt``, ``frame N``, ``up``/``down``, ``info frame`` and ``finish`` all go
through the program's unwinder, so they all see the same frames.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from kvmbench.errors import KvmbenchError, RegisterUnavailable
from kvmbench.symbols.frame import FrameContext
from kvmbench.symbols.unwind import DEFAULT_LIMIT, Backtrace, Frame, UnwindMethod, Unwinder

if TYPE_CHECKING:
    from kvmbench.linux_session import LinuxSession


class KernelFrameContext:
    """An outer kernel frame's registers, as drgn recovered them; memory is
    the live guest's (:class:`~kvmbench.symbols.frame.FrameContext`)."""

    def __init__(self, frames: list[Any], index: int, live: FrameContext) -> None:
        self.frames = frames
        self.index = index
        self.live = live

    def read_register(self, name: str) -> int:
        try:
            return int(self.frames[self.index].register(name))
        except (LookupError, ValueError):
            raise RegisterUnavailable(f"<not saved> ${name} in frame {self.index}") from None

    def write_register(self, name: str, value: int) -> None:
        raise KvmbenchError(f"Cannot write ${name} of frame {self.index}: drgn unwound it, "
                            "and only the innermost frame's registers are writable")

    def read_memory(self, address: int, length: int) -> bytes:
        return self.live.read_memory(address, length)

    def write_memory(self, address: int, data: bytes) -> None:
        self.live.write_memory(address, data)


class KernelUnwinder(Unwinder):
    """The engine's unwinder with outer frames from drgn where the kernel's
    DWARF is loaded (``session.vmlinux``)."""

    def __init__(self, session: "LinuxSession", base: Unwinder) -> None:
        super().__init__(base.cfi, base.functions)
        self._session = session

    def _outer(self, live: FrameContext) -> list[Any] | None:
        """drgn's physical frames of the stopped CPU that lie in kernel code
        (past them drgn may go on from garbage), or None without DWARF."""
        session = self._session
        if session.vmlinux is None:
            return None
        try:
            frames = [f for f in session.stack_trace() if not f.is_inline]
        except (KvmbenchError, LookupError, ValueError):
            return None
        return list(itertools.takewhile(lambda f: session.in_kernel_code(f.pc), frames))

    def _drgn_frame(self, frames: list[Any], index: int, live: FrameContext) -> Frame:
        cfa = int(frames[index + 1].sp) if index + 1 < len(frames) else None
        return Frame(index, int(frames[index].pc), cfa, UnwindMethod.KERNEL,
                     KernelFrameContext(frames, index, live), None)

    def caller(self, frame: Frame) -> Frame | None:
        context = frame.context
        if isinstance(context, KernelFrameContext):
            if context.index + 1 >= len(context.frames):
                return None
            return self._drgn_frame(context.frames, context.index + 1, context.live)
        if frame.level == 0:
            frames = self._outer(context)
            if frames is not None:
                return self._drgn_frame(frames, 1, context) if len(frames) > 1 else None
        return super().caller(frame)

    def backtrace(self, context: FrameContext, limit: int = DEFAULT_LIMIT) -> Backtrace:
        frames = self._outer(context)
        if frames is None:
            return super().backtrace(context, limit)
        innermost = self.innermost(context)
        outer = [self._drgn_frame(frames, i, context) for i in range(1, min(limit, len(frames)))]
        return Backtrace((innermost, *outer), None)
