"""The stack: backtrace (bt N, bt -N, bt full), frame, up, down, and
``info frame``, ``info locals``, ``info args`` (see :mod:`.inspection`).

Frames are gdb's (:meth:`kvmbench.engine.session.Session.frame_list`):
unwound with CFI where the image has it, inlined calls as frames of their
own, ending at ``main``; arguments and locals from DWARF locations. The
selected frame is where ``print``, ``info locals``, ``finish`` and ``list``
work; every stop selects frame 0 again.
"""

from __future__ import annotations

import re

from kvmbench.errors import KvmbenchError, SessionStateError, UsageError
from kvmbench.expressions.frames import info_args, info_locals
from kvmbench.jupyter.commands.registry import command
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.jupyter.display import Text
from kvmbench.symbols.cfi import RuleKind
from kvmbench.symbols.frames import SourceFrame
from kvmbench.symbols.unwind import UnwindMethod

#: gdb's register order for "Saved registers" (amd64 register numbers).
_SAVED_ORDER = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")


def _require_stack(wb: Workbench) -> None:
    if wb.session is None or not wb.live:
        raise SessionStateError("No stack.")


def _locals_text(wb: Workbench, frame: SourceFrame, indent: str = "        ") -> str:
    """``bt full``'s locals: indented eight spaces (gdb's "No locals." is not)."""
    text = info_locals(wb.program, frame)
    if text in ("No locals.", "No symbol table info available."):
        return text
    return "\n".join(indent + line for line in text.splitlines())


@command("backtrace", "bt", "where", stopped=False, family="stack")
def _backtrace(wb: Workbench, args: str) -> object:
    """backtrace [full] [N | -N]: the frames of the call chain (N innermost, -N outermost); full adds each frame's locals."""
    _require_stack(wb)
    words = args.split()
    full = False
    count: int | None = None
    for word in words:
        if word in ("full", "-full"):
            full = True
        elif re.fullmatch(r"-?\d+", word):
            count = int(word)
        else:
            raise UsageError(f'No symbol "{word}" in current context.')
    frames = wb.s.frame_list()
    shown = list(frames)
    more = False
    if count is not None and count >= 0:
        more = len(shown) > count
        shown = shown[:count]
    elif count is not None:
        shown = shown[count:]
    lines = []
    for frame in shown:
        lines.append(wb.frame_line(frame))
        if full:
            lines.append(_locals_text(wb, frame))
    if more:
        lines.append("(More stack frames follow...)")
    elif frames.stop_reason is not None and (count is None or count < 0 or count >= len(frames)):
        lines.append(f"Backtrace stopped: {frames.stop_reason}")
    return Text("\n".join(lines))


def _select_and_show(wb: Workbench, level: int) -> Text:
    frame = wb.s.select_frame(level)
    wb.lister.center_on_frame(frame)
    return Text("\n".join(wb.frame_text(frame, with_level=True)))


@command("frame", "f", stopped=False, family="stack")
def _frame(wb: Workbench, args: str) -> object:
    """frame [N | level N | function NAME]: select frame N and show it (no N: show the selected frame)."""
    _require_stack(wb)
    words = args.split()
    if not words:
        return _select_and_show(wb, wb.s.selected_frame)
    if words[0] == "level" and len(words) == 2:
        words = words[1:]
    if words[0] == "function" and len(words) == 2:
        for frame in wb.s.frame_list():
            if frame.name == words[1]:
                return _select_and_show(wb, frame.level)
        raise UsageError(f'No frame for function "{words[1]}".')
    try:
        level = int(words[0], 0)
    except ValueError:
        raise UsageError(f'Invalid frame specification "{args.strip()}".') from None
    frames = wb.s.frame_list(level + 1)
    if not 0 <= level < len(frames):
        raise UsageError("No frame at level " + words[0] + ".")
    return _select_and_show(wb, level)


def _relative(wb: Workbench, args: str, direction: int) -> object:
    _require_stack(wb)
    text = args.strip()
    try:
        count = int(text, 0) if text else 1
    except ValueError:
        raise UsageError(f'No symbol "{text}" in current context.') from None
    s = wb.s
    frames = s.frame_list(s.selected_frame + max(count, 0) + 2)
    target = s.selected_frame + direction * count
    if target >= len(frames):
        if not text or s.selected_frame == len(frames) - 1:
            raise UsageError("Initial frame selected; you cannot go up.")
        target = len(frames) - 1
    if target < 0:
        if not text or s.selected_frame == 0:
            raise UsageError("Bottom (innermost) frame selected; you cannot go down.")
        target = 0
    return _select_and_show(wb, target)


@command("up", stopped=False, family="stack")
def _up(wb: Workbench, args: str) -> object:
    """up [N]: select the frame N levels outward (the caller) and show it."""
    return _relative(wb, args, +1)


@command("down", "do", stopped=False, family="stack")
def _down(wb: Workbench, args: str) -> object:
    """down [N]: select the frame N levels inward and show it."""
    return _relative(wb, args, -1)


# --- info frame, locals, args --------------------------------------------------------


def info_locals_text(wb: Workbench) -> str:
    _require_stack(wb)
    return info_locals(wb.program, wb.frame())


def info_args_text(wb: Workbench) -> str:
    _require_stack(wb)
    return info_args(wb.program, wb.frame())


def _language(wb: Workbench, pc: int) -> str | None:
    units = getattr(wb.program, "units", None)
    unit = units.unit_at(pc) if units is not None else None
    if unit is None:
        return None
    attribute = unit.top.attributes.get("DW_AT_language")
    code = attribute.value if attribute is not None else None
    if code == 0x8001:
        return "asm"
    if code in (0x1, 0x2, 0xC, 0x1D, 0x2C):  # C89, C, C99, C11, C17 (DWARF 5, 7.12)
        return "c"
    if code in (0x4, 0x1A, 0x21, 0x2B):
        return "c++"
    return "minimal"


def info_frame_text(wb: Workbench) -> str:
    """gdb's ``info frame`` for the selected frame (tail-call frames as gdb shows them)."""
    _require_stack(wb)
    s = wb.s
    frames = s.frame_list(s.selected_frame + 2)
    frame = frames[s.selected_frame]
    physical = frame.physical
    program = wb.program
    cfa = physical.cfa
    tail = frame.is_tail_call
    outer = frames[frame.level + 1] if frame.level + 1 < len(frames) else None
    inner = frames[frame.level - 1] if frame.level > 0 else None
    lines = [f"Stack level {frame.level}, frame at {cfa:#x}:" if cfa is not None
             else f"Stack level {frame.level}, frame at <unknown>:"]
    where = f" ({frame.location.file}:{frame.location.line})" if frame.location is not None else ""
    # gdb's "saved rip" is the pc of the frame this one returns to, tail
    # calls skipped from a tail-call frame (frame_unwind_caller_pc).
    saved = ""
    if outer is not None and not tail:
        saved = f"; saved rip = {outer.pc:#x}"
    else:
        real = frame
        level = frame.level
        while real.is_tail_call and level + 1 < len(frames):
            level += 1
            real = frames[level]
        try:
            caller = program.unwinder.caller(real.physical)
        except KvmbenchError:
            caller = None
        if caller is not None:
            saved = f"; saved rip = {caller.pc:#x}"
    lines.append(f" rip = {frame.pc:#x} in {frame.name or '??'}{where}{saved}")
    links = []
    if tail:
        links.append("tail call frame")
    elif outer is not None and outer.physical.cfa is not None:
        links.append(f"called by frame at {outer.physical.cfa:#x}")
    if inner is not None and inner.physical.cfa is not None:
        links.append(f"caller of frame at {inner.physical.cfa:#x}")
    if links:
        lines.append(" " + ", ".join(links))
    language = _language(wb, frame.lookup_pc)
    if language is not None:
        lines.append(f" source language {language}.")
    below_tail = outer is not None and outer.is_tail_call
    previous_sp = (cfa - 8) if below_tail and cfa is not None else cfa
    if tail:
        lines.append(" Arglist at unknown address.")
        lines.append(f" Locals at unknown address, Previous frame's sp is {cfa:#x}")
    else:
        try:
            base = program.amd64_frame_base(physical)
            args = ", ".join(_arguments(wb, frame))
            lines.append(f" Arglist at {base:#x}, args: {args}")
            lines.append(f" Locals at {base:#x}, Previous frame's sp is {previous_sp:#x}" if cfa is not None
                         else f" Locals at {base:#x},")
        except KvmbenchError:
            pass
    saved_regs = [] if tail or below_tail else _saved_registers(physical)
    if saved_regs:
        lines.append(" Saved registers:")
        lines.append("  " + ", ".join(f"{reg} at {address:#x}" for reg, address in saved_regs))
    return "\n".join(lines)


def _arguments(wb: Workbench, frame: SourceFrame) -> list[str]:
    from kvmbench.expressions.frames import frame_arguments

    return frame_arguments(wb.program, frame)


def _saved_registers(frame: object) -> list[tuple[str, int]]:
    """Registers this frame's CFI row saves in memory, with their slots."""
    rules = getattr(frame, "rules", None)
    cfa = getattr(frame, "cfa", None)
    if rules is None or cfa is None or getattr(frame, "method", None) is UnwindMethod.TAIL_CALL:
        return []
    out = []
    for name in _SAVED_ORDER:
        key = rules.return_address if name == "rip" else name
        rule = rules.registers.get(key)
        if rule is not None and rule.kind is RuleKind.OFFSET:
            out.append((name, (cfa + rule.offset) & 0xFFFF_FFFF_FFFF_FFFF))
    return out
