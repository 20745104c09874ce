"""A scripted fake Target: the engine's rules tested without /dev/kvm.

Memory is one bytearray, identity mapped (virtual == physical); registers a
dict. Each :meth:`FakeTarget.resume` runs the next step of a script: a
function that may change registers and memory, as the guest would, and
returns the event the target reports. Every call is logged, so a test can
say exactly what the engine asked of its target. One test per real backend
(tests/test_engine_*.py on real guests) keeps the fake honest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from kvmbench.arch.displacement import Displacement
from kvmbench.arch.profiles import X86_64
from kvmbench.backends.capabilities import Feature, HostCapabilities, ProbeResult
from kvmbench.backends.target import (
    CONTINUE,
    Exited,
    Halted,
    ProbeHits,
    ProbeInstalled,
    Resume,
    ResumeMode,
    SlotHit,
    SlotProgram,
    SoftwareTrap,
    Stepped,
    StubAccess,
    TargetCapabilities,
    TargetEvent,
    TrapExecuted,
)
from kvmbench.errors import GuestMemoryError, ProbeRefused, UsageError
from kvmbench.symbols.model import Symbol, SymbolKind
from kvmbench.symbols.table import SymbolTable

HLT = SoftwareTrap("hlt trap", 0xF4)
REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")

Step = Callable[["FakeTarget", Resume], TargetEvent]


def features(*missing: Feature) -> HostCapabilities:
    return HostCapabilities.from_results(
        "fake host", [ProbeResult(f, f not in missing, "not on the fake") for f in Feature])


def capabilities(*missing: Feature) -> TargetCapabilities:
    """What kvmbench's VMM offers (slots, hlt traps, write traps), less
    ``missing``; no in-guest probes."""
    return TargetCapabilities(name="fake", features=features(*missing), slot_profile=X86_64,
                              software_traps=(HLT,), write_traps=True, physical_memory=True,
                              probes_unavailable="the fake target runs no trampolines")


class FakeTarget:
    """A target whose guest is a script."""

    def __init__(self, size: int = 1 << 20, *, script: Sequence[Step] = (),
                 capabilities_: TargetCapabilities | None = None) -> None:
        self.memory = bytearray(size)
        self.regs: dict[str, int] = dict.fromkeys(REGISTERS, 0)
        self.regs["rsp"] = 0x8000
        self.script = list(script)
        self.log: list[tuple[str, object]] = []
        self.capabilities = capabilities_ or capabilities()
        self.slots: list[SlotProgram] = []
        self.trap_opcodes: frozenset[int] = frozenset()
        self.write_trap_pages: frozenset[int] = frozenset()
        self.handed_back: list[TargetEvent] = []
        self.closed = False
        self.console = ""

    # registers
    def read_register(self, name: str) -> int:
        key = "rflags" if name == "eflags" else name
        if key in ("fs_base", "gs_base"):
            return 0
        if key not in self.regs:
            raise UsageError(f"no register named {name!r}")
        return self.regs[key]

    def write_register(self, name: str, value: int) -> None:
        self.log.append(("write_register", (name, value)))
        self.regs["rflags" if name == "eflags" else name] = value

    def read_registers(self) -> Mapping[str, int]:
        return dict(self.regs)

    @property
    def pc(self) -> int:
        return self.regs["rip"]

    def set_pc(self, pc: int) -> None:
        self.log.append(("set_pc", pc))
        self.regs["rip"] = pc

    # memory
    def _check(self, address: int, length: int) -> None:
        if address < 0 or address + length > len(self.memory):
            raise GuestMemoryError(f"{address:#x}+{length} is outside the fake's memory")

    def read_memory(self, address: int, length: int) -> bytes:
        self._check(address, length)
        return bytes(self.memory[address:address + length])

    def write_memory(self, address: int, data: bytes) -> None:
        self._check(address, len(data))
        self.memory[address:address + len(data)] = data

    def translate(self, address: int) -> int:
        self._check(address, 1)
        return address

    read_physical = read_memory
    write_physical = write_memory

    def contains_physical(self, address: int, length: int = 1) -> bool:
        return 0 <= address and address + length <= len(self.memory)

    def flush_translations(self) -> None:
        pass

    def flush_console(self) -> None:
        pass

    # mechanisms
    def set_debug_slots(self, slots: Sequence[SlotProgram]) -> None:
        self.log.append(("set_debug_slots", tuple(slots)))
        self.slots = list(slots)

    def set_software_traps(self, opcodes: frozenset[int], intercept_guest_traps: bool) -> None:
        self.trap_opcodes = opcodes

    def set_write_traps(self, pages: frozenset[int]) -> None:
        self.log.append(("set_write_traps", pages))
        self.write_trap_pages = pages

    def insert_stub_breakpoint(self, address: int, kind: str) -> bool:
        return False

    def remove_stub_breakpoint(self, address: int, kind: str) -> None:
        pass

    def insert_stub_watchpoint(self, address: int, length: int, access: StubAccess) -> bool:
        return False

    def remove_stub_watchpoint(self, address: int, length: int, access: StubAccess) -> None:
        pass

    # in-guest probes: not offered
    def install_probe(self, displacement: Displacement) -> ProbeInstalled:
        raise ProbeRefused("the fake target runs no trampolines")

    def remove_probe(self, key: int) -> None:
        raise AssertionError("no probe was installed on the fake target")

    def drain_probes(self) -> ProbeHits:
        return ProbeHits([], [], [])

    def probe_guard_pages(self) -> frozenset[int]:
        return frozenset()

    def probe_area_mapped(self) -> bool:
        return False

    # running
    def resume(self, how: Resume = CONTINUE) -> TargetEvent:
        self.log.append(("resume", how))
        if not self.script:
            return Exited(0)
        return self.script.pop(0)(self, how)

    def hand_back(self, event: TargetEvent) -> TargetEvent | None:
        self.log.append(("hand_back", event))
        self.handed_back.append(event)
        if isinstance(event, TrapExecuted):
            self.regs["rip"] = event.pc + 1
        return None

    def pause(self) -> None:
        self.log.append(("pause", None))

    def close(self) -> None:
        self.closed = True

    # helpers for scripts
    def resumes(self) -> list[Resume]:
        return [how for what, how in self.log if what == "resume"]  # type: ignore[misc]


def fake_symbols(**functions: tuple[int, int]) -> SymbolTable:
    """A symbol table of functions given as name=(address, size)."""
    return SymbolTable([Symbol(name, address, size, SymbolKind.FUNCTION)
                        for name, (address, size) in functions.items()])


# --- script steps ------------------------------------------------------------------


def trap_at(pc: int) -> Step:
    """The guest runs into the trap at ``pc`` (rip left on it)."""
    def step(t: FakeTarget, how: Resume) -> TargetEvent:
        t.regs["rip"] = pc
        return TrapExecuted(pc)
    return step


def slot_hit(pc: int, slot: int = 0) -> Step:
    """Hardware slot ``slot`` fires for the instruction at ``pc``."""
    def step(t: FakeTarget, how: Resume) -> TargetEvent:
        t.regs["rip"] = pc
        return SlotHit((slot,), pc)
    return step


def stepped_to(pc: int) -> Step:
    def step(t: FakeTarget, how: Resume) -> TargetEvent:
        assert how.mode is ResumeMode.STEP, f"expected a step, got {how}"
        t.regs["rip"] = pc
        return Stepped(pc)
    return step


def exits(code: int = 0) -> Step:
    def step(t: FakeTarget, how: Resume) -> TargetEvent:
        return Exited(code)
    return step


def halts() -> Step:
    def step(t: FakeTarget, how: Resume) -> TargetEvent:
        return Halted(t.pc)
    return step


def then(action: Callable[[FakeTarget], None], step: Step) -> Step:
    """Run ``action`` on the guest's state, then ``step``."""
    def run(t: FakeTarget, how: Resume) -> TargetEvent:
        action(t)
        return step(t, how)
    return run
