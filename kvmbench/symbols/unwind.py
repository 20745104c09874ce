"""Unwinding: from one frame's registers to its caller's, as gdb's ``bt`` does.

Frame 0 is the stop: the target's registers. Each caller is computed from
the frame it called: with the CFI row at that frame's pc (DWARF 5, 6.4)
where there is one, else with frame pointers (System V psABI 3.2.2: the
caller's rbp at [rbp], the return address at [rbp+8]) after a look at the
function's first bytes, so a stop on ``push %rbp`` or before it still
finds the caller, as gdb's amd64 prologue analyser does. Each
:class:`Frame` says which method produced it.

The walk ends, like gdb's, at a return address of 0 or one the CFI marks
undefined (outermost frame), at a frame-pointer chain that reaches rbp 0,
or with a reason when the stack does not make sense: a caller's CFA that
does not lie above its callee's ("previous frame inner to this frame
(corrupt stack?)"), or memory that cannot be read.

A caller's registers (:class:`CallerFrameContext`) are computed on demand:
callee-saved registers from their rules, rsp from the CFA, rip from the
return address; registers without a rule have the callee's values (gdb's
assumption for x86-64, where gcc does not describe call-clobbered
registers).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import MappingProxyType

from kvmbench.errors import ExpressionError, GuestMemoryError, KvmbenchError, RegisterUnavailable
from kvmbench.symbols.cfi import CallFrameInfo, CfaRule, CfiSection, FrameRules, RegisterRule, RuleKind
from kvmbench.symbols.dwarf_eval import ExpressionEnvironment, evaluate_value
from kvmbench.symbols.frame import FrameContext
from kvmbench.symbols.registers import register_width

#: Frames a backtrace walks at most unless told otherwise (gdb's default
#: ``backtrace limit`` is unlimited; a corrupt stack could loop for long).
DEFAULT_LIMIT = 1024

_PUSH_RBP = b"\x55"
_RET = b"\xc3"
# mov %rsp,%rbp in both encodings (89 /r and 8b /r), as gdb's amd64
# prologue analyser accepts them.
_MOV_RSP_RBP = (b"\x48\x89\xe5", b"\x48\x8b\xec")


class UnwindMethod(enum.Enum):
    """How a frame's registers were found."""

    INNERMOST = "registers"  # frame 0: the target's own registers
    DEBUG_FRAME = "CFI (.debug_frame)"
    EH_FRAME = "CFI (.eh_frame)"
    PROLOGUE = "prologue analysis"  # no CFI, pc in or before the frame setup, or frameless
    FRAME_POINTER = "frame pointer"  # no CFI: the rbp chain
    TAIL_CALL = "tail call"  # a caller that tail-called its callee: from DWARF call sites
    KERNEL = "the kernel's unwind data (drgn)"  # a Linux kernel's ORC or CFI, through drgn

    @classmethod
    def for_section(cls, section: CfiSection | None) -> UnwindMethod:
        """The method a row of ``section`` stands for."""
        if section is CfiSection.DEBUG_FRAME:
            return cls.DEBUG_FRAME
        if section is CfiSection.EH_FRAME:
            return cls.EH_FRAME
        return cls.FRAME_POINTER


FunctionLookup = Callable[[int], "tuple[int, int] | None"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame of a backtrace.

    ``pc`` is where the frame is executing: the stop pc for frame 0, the
    return address for callers. ``cfa`` is the frame's canonical frame
    address (the caller's rsp before the call), None if it could not be
    computed. ``method`` says how this frame's registers were obtained
    (from the frame it called); ``rules`` is the CFI row (or the
    fallback's made-up one) in force at this frame's pc, from which its
    caller is unwound. ``context`` reads the frame's registers and memory.
    """

    level: int
    pc: int
    cfa: int | None
    method: UnwindMethod
    context: FrameContext
    rules: FrameRules | None

    @property
    def lookup_pc(self) -> int:
        """The pc to look symbols, lines and CFI up with.

        For callers the return address may already belong to the next
        function or line (a call to a noreturn function ends a function),
        so gdb looks up ``pc - 1`` there (``get_frame_address_in_block``).
        """
        return self.pc if self.level == 0 else self.pc - 1


@dataclass(frozen=True)
class Backtrace:
    """Frames innermost first, and why the walk stopped early (None: it reached the outermost frame)."""

    frames: tuple[Frame, ...]
    stop_reason: str | None

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)


class UnwindStopped(KvmbenchError):
    """The caller of a frame cannot be found; str() is gdb's reason."""


class CallerFrameContext:
    """A caller's registers, recovered from its callee's frame and rules.

    Implements :class:`FrameContext`. Memory is the callee's (one address
    space). Writing a register saved in memory writes that stack slot, and
    one kept in the callee (no rule, same value, another register) writes
    there, as gdb's ``frame N`` then ``set var $rbx = ...`` does; values
    computed from the CFA cannot be written.
    """

    def __init__(self, callee: FrameContext, cfa: int, rules: FrameRules) -> None:
        """The caller of a frame with context ``callee``, CFA ``cfa`` and CFI row ``rules``."""
        self.callee = callee
        self.cfa = cfa
        self.rules = rules

    def read_register(self, name: str) -> int:
        """The caller's value of ``name`` (RegisterUnavailable if not saved)."""
        rule = self._rule(name)
        if rule is None:
            return self.callee.read_register(name)
        match rule.kind:
            case RuleKind.UNDEFINED:
                raise RegisterUnavailable(f"register {name} was not saved")
            case RuleKind.SAME_VALUE:
                return self.callee.read_register(name)
            case RuleKind.OFFSET:
                return self._load(self.cfa + rule.offset, name)
            case RuleKind.VAL_OFFSET:
                return (self.cfa + rule.offset) & _MASK64
            case RuleKind.REGISTER:
                assert rule.register is not None
                return self.callee.read_register(rule.register)
            case RuleKind.EXPRESSION:
                return self._load(self._run(rule), name)
            case RuleKind.VAL_EXPRESSION:
                return self._run(rule)
        raise RegisterUnavailable(f"register {name} has an architectural rule kvmbench does not know")

    def write_register(self, name: str, value: int) -> None:
        """Change the caller's ``name`` where it is kept (a stack slot or the callee)."""
        rule = self._rule(name)
        width = register_width(name)
        if rule is None or rule.kind is RuleKind.SAME_VALUE:
            self.callee.write_register(name, value)
        elif rule.kind is RuleKind.OFFSET:
            self.callee.write_memory(self.cfa + rule.offset, (value & _mask(width)).to_bytes(width, "little"))
        elif rule.kind is RuleKind.EXPRESSION:
            self.callee.write_memory(self._run(rule), (value & _mask(width)).to_bytes(width, "little"))
        elif rule.kind is RuleKind.REGISTER:
            assert rule.register is not None
            self.callee.write_register(rule.register, value)
        else:
            # gdb's words for a register whose value is computed, not stored.
            raise ExpressionError("Attempt to assign to an unmodifiable value.")

    def read_memory(self, address: int, length: int) -> bytes:
        """The target's memory (shared by every frame)."""
        return self.callee.read_memory(address, length)

    def write_memory(self, address: int, data: bytes) -> None:
        """Write the target's memory."""
        self.callee.write_memory(address, data)

    def _rule(self, name: str) -> RegisterRule | None:
        rule = self.rules.registers.get(name)
        if rule is None and name == "rsp":
            # The CFA is the caller's stack pointer (psABI 3.6 "DWARF
            # Definition"; gdb's default rule for the stack pointer).
            return RegisterRule(RuleKind.VAL_OFFSET, offset=0)
        if name == "rip" and self.rules.return_address != "rip":
            return self.rules.registers.get(self.rules.return_address)
        return rule

    def _load(self, address: int, name: str) -> int:
        width = register_width(name)
        return int.from_bytes(self.callee.read_memory(address, width), "little")

    def _run(self, rule: RegisterRule) -> int:
        # DW_CFA_expression and DW_CFA_val_expression start with the CFA
        # pushed (DWARF 5, 6.4.2.3), and read the callee's registers.
        env = ExpressionEnvironment(self.callee)
        return evaluate_value(rule.expression, env, initial_stack=(self.cfa,))


_MASK64 = (1 << 64) - 1


def _mask(width: int) -> int:
    return (1 << (width * 8)) - 1


class Unwinder:
    """Walks a stack with an image's CFI, and frame pointers where it has none.

    ``functions(pc)`` gives the ``(start, end)`` of the function holding
    ``pc`` (from the symbol table), for the prologue look of the
    frame-pointer fallback; without it that fallback follows the rbp chain
    only.
    """

    def __init__(self, cfi: CallFrameInfo | None, functions: FunctionLookup | None = None) -> None:
        """Unwind with ``cfi`` (None: frame pointers only)."""
        self.cfi = cfi
        self.functions = functions

    def innermost(self, context: FrameContext) -> Frame:
        """Frame 0 of a stopped target whose registers ``context`` reads."""
        pc = context.read_register("rip")
        return self._frame(0, pc, context, UnwindMethod.INNERMOST)

    def caller(self, frame: Frame) -> Frame | None:
        """The frame that called ``frame``; None if ``frame`` is the outermost.

        Raises :class:`UnwindStopped` (gdb's reason as its message) when
        the caller cannot be found (its return address is unreadable).
        Whether the caller makes sense (its CFA above this one's) is
        :meth:`backtrace`'s check.
        """
        rules = frame.rules
        if rules is None or frame.cfa is None:
            raise UnwindStopped(f"Cannot find the caller of the frame at {frame.pc:#x}")
        return_rule = rules.registers.get(rules.return_address)
        if return_rule is None or return_rule.kind is RuleKind.UNDEFINED:
            return None  # DWARF 5, 6.4.4: an undefined return address ends the stack
        if rules.section is None and rules.registers.get("rbp") is not None:
            # The frame-pointer chain's end: crt0 clears rbp before main.
            try:
                if frame.context.read_register("rbp") == 0 and rules.cfa.register == "rbp":
                    return None
            except RegisterUnavailable:
                return None
        caller_context = CallerFrameContext(frame.context, frame.cfa, rules)
        try:
            pc = caller_context.read_register("rip")
        except GuestMemoryError as exc:
            raise UnwindStopped(_memory_reason(exc)) from exc
        except RegisterUnavailable:
            return None
        if pc == 0:
            return None  # gdb: "zero PC" is the outermost frame
        method = UnwindMethod.for_section(rules.section)
        if rules.section is None and rules.cfa.register != "rbp":
            method = UnwindMethod.PROLOGUE
        return self._frame(frame.level + 1, pc, caller_context, method)

    def backtrace(self, context: FrameContext, limit: int = DEFAULT_LIMIT) -> Backtrace:
        """The frames of the stopped target, innermost first, at most ``limit``."""
        frames = [self.innermost(context)]
        reason: str | None = None
        while len(frames) < limit:
            try:
                caller = self.caller(frames[-1])
            except UnwindStopped as exc:
                reason = str(exc)
                break
            if caller is None:
                break
            frames.append(caller)
            reason = _corruption(frames[-2], caller)
            if reason is not None:
                # gdb shows the odd frame, then refuses to go beyond it
                # (get_prev_frame_always_1: UNWIND_INNER_ID, UNWIND_SAME_ID).
                break
        return Backtrace(tuple(frames), reason)

    def rules_at(self, pc: int, context: FrameContext | None = None) -> FrameRules | None:
        """The CFI row at ``pc``, or the frame-pointer fallback's rules (which read code through ``context``)."""
        rules = self.cfi.find_rules(pc) if self.cfi is not None else None
        if rules is None and context is not None:
            rules = self._fallback_rules(pc, context, innermost=True)
        return rules

    # -- internals -------------------------------------------------------------

    def _frame(self, level: int, pc: int, context: FrameContext, method: UnwindMethod) -> Frame:
        lookup = pc if level == 0 else pc - 1
        rules = self.cfi.find_rules(lookup) if self.cfi is not None else None
        if rules is None:
            rules = self._fallback_rules(lookup, context, innermost=level == 0)
        cfa: int | None = None
        if rules is not None:
            try:
                cfa = _compute_cfa(rules.cfa, context)
            except (GuestMemoryError, RegisterUnavailable, KvmbenchError):
                cfa = None
        return Frame(level, pc, cfa, method, context, rules)

    def _fallback_rules(self, pc: int, context: FrameContext, *, innermost: bool) -> FrameRules:
        """Rules for code without CFI, from its prologue (gdb's amd64_analyze_prologue).

        At the function's first byte the return address is at [rsp]; just
        after ``push %rbp`` at [rsp+8] with the caller's rbp at [rsp]; once
        ``mov %rsp,%rbp`` ran, at [rbp+8] with the caller's rbp at [rbp]. A
        function that does not start with ``push %rbp`` is taken to be
        frameless (return address at [rsp]), as gdb takes it. With no
        function known, the rbp chain is followed. In the innermost frame a
        ``ret`` about to run means the frame is already gone (gdb's
        amd64_stack_frame_destroyed_p).
        """
        bounds = self.functions(pc) if self.functions is not None else None
        start, end = bounds if bounds is not None else (pc, pc + 1)
        state = "frame"
        if innermost and _reads(context, pc, 1) == _RET:
            state = "frameless"
        elif bounds is not None:
            code = _reads(context, start, 4)
            if code[:1] != _PUSH_RBP:
                state = "frameless"
            elif pc == start:
                state = "entry"
            elif pc == start + 1 or (pc < start + 4 and code[1:4] in _MOV_RSP_RBP):
                state = "pushed"
        offset = {"entry": 8, "pushed": 16, "frameless": 8, "frame": 16}[state]
        registers = {"rip": RegisterRule(RuleKind.OFFSET, -8)}
        if state in ("pushed", "frame"):
            registers["rbp"] = RegisterRule(RuleKind.OFFSET, -16)
        cfa_register = "rbp" if state == "frame" else "rsp"
        return FrameRules(
            start=pc, end=pc + 1, cfa=CfaRule(cfa_register, offset),
            registers=MappingProxyType(registers), function_start=start, function_end=end, section=None,
        )


def _corruption(callee: Frame, caller: Frame) -> str | None:
    """gdb's reason not to unwind past ``caller``, or None if its CFA makes sense."""
    if caller.cfa is None or callee.cfa is None:
        return None
    if caller.cfa < callee.cfa:
        return "previous frame inner to this frame (corrupt stack?)"
    same_function = (
        caller.rules is not None and callee.rules is not None
        and caller.rules.function_start == callee.rules.function_start
    )
    if caller.cfa == callee.cfa and same_function:
        return "previous frame identical to this frame (corrupt stack?)"
    return None


def _reads(context: FrameContext, address: int, length: int) -> bytes:
    """Code bytes for the prologue look; empty where memory cannot be read."""
    try:
        return context.read_memory(address, length)
    except GuestMemoryError:
        return b""


def _compute_cfa(rule: CfaRule, context: FrameContext) -> int:
    if rule.expression is not None:
        return evaluate_value(rule.expression, ExpressionEnvironment(context))
    if rule.register is None:
        raise UnwindStopped("CFI row without a CFA rule")
    return (context.read_register(rule.register) + rule.offset) & _MASK64


def _memory_reason(exc: GuestMemoryError) -> str:
    text = str(exc)
    return text if text.startswith("Cannot access memory") else f"Cannot access memory: {text}"
