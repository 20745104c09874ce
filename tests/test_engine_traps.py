"""Trap ownership and self-modifying code: the guest's own int3s reach its
handler (or stop the session when asked), and breakpoints survive the guest
rewriting the code under them."""

from __future__ import annotations

import shutil

import pytest
from conftest import assemble

from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import Mechanism, StopReason


def test_guest_int3s_reach_its_handler_alongside_our_breakpoints(open_guest) -> None:
    s = open_guest("int3guest", [6])
    ours = [s.breakpoints.trace("do_int3"), s.breakpoints.trace("bp_handler")]
    stop = s.cont()
    assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
    assert "int3 count = 6" in s.console
    assert [b.hit_count for b in ours] == [6, 6]


def test_caught_guest_int3_stops_and_continuing_delivers_it(open_guest) -> None:
    s = open_guest("int3guest", [3])
    s.catch_guest_traps = True
    handler = s.breakpoints.trace("bp_handler")
    site = s.symbols.get_by_name("int3_site").address
    caught = 0
    while (stop := s.cont()).reason is StopReason.GUEST_TRAP:
        caught += 1
        assert stop.pc == site
        assert handler.hit_count == caught - 1  # not delivered yet
    assert stop.exit_code == 0, stop.describe()
    assert caught == 3 and handler.hit_count == 3
    assert "int3 count = 3" in s.console


def test_breakpoint_on_rewritten_code_hits_the_new_code(open_guest) -> None:
    s = open_guest("selfmod")
    entry = s.breakpoints.add("patched")
    s.cont()  # past the guest's check of patch_site's opcode
    site = s.symbols.get_by_name("patch_site").address
    traps = [s.breakpoints.add("patch_site", kind="sw")]
    if s.capabilities.works(Feature.HW_EXECUTE):
        traps.append(s.breakpoints.add("patch_site", kind="hw"))
    s.breakpoints.delete(entry.number)
    seen = []
    while (stop := s.cont()).reason is StopReason.BREAKPOINT:
        code = s.mem.read(site, 5)
        seen.append(code)
        assert code[0] == 0xB8  # never the trap byte
        if stop.mechanism is not Mechanism.HW_EXECUTE or len(traps) == 1:
            s.stepi()
            assert s.regs.rax & 0xFFFFFFFF == code[1]  # the new immediate ran
    assert stop.exit_code == 0, s.console
    assert "patched() = 3" in s.console
    immediates = sorted({c[1] for c in seen})
    assert immediates == [1, 2, 3]
    assert all(t.hit_count == 3 for t in traps)


# A guest that installs a vector-0x20 handler, starts the 1 ms timer, and
# executes hlt until five ticks arrived; it exits with how many hlts it ran.
_HLT_LOOP = """
  lea handler(%rip), %rbx
  lea idt+0x200(%rip), %rdi
  mov %bx, (%rdi)
  movw $8, 2(%rdi)
  movb $0x8e, 5(%rdi)
  shr $16, %rbx
  mov %bx, 6(%rdi)
  shr $16, %rbx
  mov %ebx, 8(%rdi)
  lidt idtr(%rip)
  mov $0xf6, %dx
  mov $1000, %eax
  out %eax, (%dx)
  xor %ecx, %ecx
  sti
1:
  hlt
  inc %ecx
  cmpq $5, ticks(%rip)
  jb 1b
  cli
  mov %ecx, %eax
  mov $0xf4, %dx
  out %eax, (%dx)
handler:
  incq ticks(%rip)
  iretq
.data
.align 16
ticks: .quad 0
idtr: .word 4095
  .quad idt
.align 16
idt: .fill 4096, 1, 0
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_a_guest_hlt_waits_for_the_next_interrupt(open_guest, tmp_path) -> None:
    s = open_guest(str(assemble(tmp_path, _HLT_LOOP)))
    stop = s.cont()
    assert stop.reason is StopReason.EXITED
    # Each hlt is woken by exactly one tick: it does not return early.
    assert stop.exit_code == 5
