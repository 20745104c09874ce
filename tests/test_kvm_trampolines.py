"""The probe area's layout and counting code, read back with capstone: the
instructions it promises (no flags written, no stack below rsp, only the
header and the ring addressed), the guard page right past the ring, and
the bench row's arithmetic."""

from __future__ import annotations

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from capstone import x86 as cs_x86

from kvmbench.backends.kvm import layout, trampolines
from kvmbench.bench.probes import ProbeBench

_CS = Cs(CS_ARCH_X86, CS_MODE_64)
_CS.detail = True
T = trampolines


def _code(key: int = 7) -> list:  # type: ignore[type-arg]
    code = T.counting_code(key)
    insns = list(_CS.disasm(code, T.AREA))
    assert sum(i.size for i in insns) == len(code) == T.COUNTING_SIZE
    return insns


def test_the_counting_code_is_what_the_module_says() -> None:
    text = [f"{i.mnemonic} {i.op_str}".rstrip() for i in _code(7)]
    assert text == [
        f"mov qword ptr [{T.SAVE_RAX:#x}], rax",
        f"mov qword ptr [{T.SAVE_RDX:#x}], rdx",
        "rdtsc",
        f"mov rdx, qword ptr [{T.HEAD:#x}]",
        f"mov dword ptr [rdx + {T.RING:#x}], eax",
        f"mov dword ptr [rdx + {T.RING + 4:#x}], 7",
        "mov rax, qword ptr [rsp]",
        f"mov qword ptr [rdx + {T.RING + 8:#x}], rax",
        f"lea rdx, [rdx + {T.ENTRY_SIZE:#x}]",
        f"mov qword ptr [{T.HEAD:#x}], rdx",
        f"mov rdx, qword ptr [{T.SAVE_RDX:#x}]",
        f"mov rax, qword ptr [{T.SAVE_RAX:#x}]",
    ]
    assert T.hit_instructions() == len(text) + 2  # and the jumps there and back


def test_the_counting_code_writes_no_flag_and_nothing_on_the_stack() -> None:
    for insn in _code():
        assert insn.eflags == 0, f"{insn.mnemonic} {insn.op_str} changes flags"
        for op in insn.operands:
            if op.type == cs_x86.X86_OP_MEM and op.access & 2:  # a store
                assert op.mem.base != cs_x86.X86_REG_RSP
        assert insn.mnemonic not in ("push", "pop", "pushfq", "popfq", "call")


def test_every_store_goes_to_the_header_or_the_ring() -> None:
    data = range(T.HEADER, T.GUARD)
    for insn in _code():
        for op in insn.operands:
            if op.type == cs_x86.X86_OP_MEM and op.access & 2:
                assert op.mem.disp in data, f"{insn.mnemonic} {insn.op_str}"


def test_the_rewind_point_is_the_load_of_head_and_the_guard_follows_the_ring() -> None:
    rewound = next(i for i in _code() if i.address == T.AREA + T.REWIND_OFFSET)
    assert (rewound.mnemonic, rewound.op_str) == ("mov", f"rdx, qword ptr [{T.HEAD:#x}]")
    after_store = [i for i in _code() if i.address < T.AREA + T.HEAD_STORED_OFFSET][-1]
    assert after_store.op_str == f"qword ptr [{T.HEAD:#x}], rdx"
    assert T.GUARD == T.RING + T.RING_ENTRIES * T.ENTRY_SIZE and T.GUARD % T.PAGE == 0
    assert T.GUARD + T.PAGE <= layout.PROBE_AREA_ADDR + layout.PROBE_AREA_SIZE
    assert layout.PROBE_AREA_ADDR + layout.PROBE_AREA_SIZE <= layout.MAX_MEM_SIZE  # identity mapped
    assert T.COUNTING_SIZE + 64 <= T.SLOT_SIZE  # room for the copies and the jump back


def test_interrupts_are_deferred_only_inside_counting_code() -> None:
    area = T.ProbeArea(machine=None)  # type: ignore[arg-type]  # no machine is asked
    area._next_slot = 2  # two trampolines written
    assert area.defers_interrupt(T.AREA) and area.defers_interrupt(T.AREA + T.SLOT_SIZE + 3)
    assert not area.defers_interrupt(T.AREA + T.COUNTING_SIZE)  # the displaced copies
    assert not area.defers_interrupt(T.AREA + 2 * T.SLOT_SIZE)  # no trampoline there
    assert not area.defers_interrupt(0x100000)


def test_the_bench_row_computes_its_ratios() -> None:
    bench = ProbeBench(n=15, calls=1000, untraced_s=[1.0, 1.2, 1.1], probe_s=[2.2, 2.0, 2.1],
                       exit_s=[5.0, 5.1, 4.9], exit_mechanism="hlt trap", hit_instructions=14,
                       guest_instructions=10_000)
    assert round(bench.probe_ratio, 3) == round(2.1 / 1.1, 3)
    assert round(bench.per_hit_us(bench.probe_s), 3) == 1000.0
    assert bench.instruction_ratio == 1 + 1000 * 14 / 10_000
    assert "a hit adds 14 guest instructions" in bench.describe()
