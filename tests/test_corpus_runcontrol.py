"""finish, until, advance and backtrace inside frameless -O2/-Os functions,
where rbp is data: they answer right (the caller's true return address) or
refuse with a one-line KvmbenchError, and they never plant a trap at an
address taken from rbp.

The true return address is read where it is certain: at the function's
first instruction it is at [rsp] (System V ABI); the test then steps one
instruction into the function, where a frame-pointer walk would read
[rbp + 8]. Three shapes of rbp: a fake frame whose "return address" is a
real function (frameless_walk, called through call_with_decoy_rbp), a
running sum (hot_leaf from hot_loop), and whatever the caller left
(local_array, a sub-rsp frame). The VMM's own memory (page tables, GDT,
IDT, stubs, boot arguments: below the image) and the guest's code must be
byte-identical afterwards, and the run's output identical to an
undisturbed one.
"""

from __future__ import annotations

import pytest
from corpus import (
    code_bytes,
    cont,
    corpus_dir,  # noqa: F401 - fixture
    elf_symbols,
    finish_run,
    one_line,
    open_case,
    run_case,
    undisturbed,
)

from kvmbench.backends.kvm import layout
from kvmbench.engine.model import StopReason
from kvmbench.errors import KvmbenchError

#: (guest, case, function, the function to stop in first, so the call
#: comes from it); -Os only for the decoy, to keep the run short.
FRAMES = [
    pytest.param("entries-O2", "frameless", "frameless_walk", None, id="O2-decoy-frame"),
    pytest.param("entries-Os", "frameless", "frameless_walk", None, id="Os-decoy-frame"),
    pytest.param("entries-O2", "entries", "hot_leaf", "hot_loop", id="O2-rbp-is-a-sum"),
    pytest.param("entries-O2", "entries", "local_array", None, id="O2-sub-rsp-frame"),
]
COMMANDS = ["finish", "advance", "until", "backtrace"]


def _raw_code(s, guest: str) -> bytes:  # type: ignore[no-untyped-def]
    """The guest's code as it is in memory, trap bytes included."""
    start = elf_symbols(guest)["_start"].address
    end = elf_symbols(guest)["corpus_text_end"].address
    return s.target.read_physical(s.target.translate(start), end - start)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("guest", "case", "function", "caller"), FRAMES)
def test_run_control_in_a_frameless_function_is_right_or_refuses(
        open_guest, corpus_dir, guest, case, function, caller, command) -> None:
    s = open_case(open_guest, guest, case, 3)
    if caller is not None:
        s.breakpoints.add(caller, temporary=True)
        assert cont(s).reason is StopReason.BREAKPOINT
    entry = s.breakpoints.add(function, temporary=True)
    stop = cont(s)
    assert stop.reason is StopReason.BREAKPOINT and stop.pc == entry.address
    true_return = s.mem.read_u64(s.regs.rsp)
    s.stepi()
    assert s.regs.rip != entry.address
    vmm_before = s.target.read_physical(0, layout.IMAGE_BASE)
    start = elf_symbols(guest)["_start"].address
    pristine = code_bytes(guest, start, elf_symbols(guest)["corpus_text_end"].address - start)
    end = elf_symbols(guest)["corpus_case_end"].address
    try:
        rbp_says: int | None = s.mem.read_u64(s.regs.rbp + 8)
    except KvmbenchError:
        rbp_says = None

    try:
        if command == "backtrace":
            frames = s.backtrace()
        else:
            run = {"finish": s.finish, "advance": lambda: s.advance(end),
                   "until": lambda: s.until(end)}[command]
            stop = run()
    except KvmbenchError as e:
        assert one_line(e), str(e)
    else:
        if command == "backtrace":
            assert frames[0] == s.regs.rip
            assert len(frames) == 1 or frames[1] == true_return, (
                f"backtrace says {s.symbols.format_address(frames[1])} called it, not "
                f"{s.symbols.format_address(true_return)}")
        else:
            # finish stops at the return; advance/until stop at the return
            # (the frame ended first) -- never anywhere else.
            assert stop.reason in (StopReason.FINISH, StopReason.LOCATION), stop.describe()
            assert stop.pc == true_return, (
                f"{command} stopped at {s.symbols.format_address(stop.pc or 0)}, not at the "
                f"caller {s.symbols.format_address(true_return)} (rbp + 8 holds "
                f"{rbp_says if rbp_says is None else hex(rbp_says)})")
    assert s.target.read_physical(0, layout.IMAGE_BASE) == vmm_before
    assert _raw_code(s, guest) == pristine, "a trap byte was left in the code"
    run_case(s)
    finish_run(s)
    assert s.console == undisturbed(guest, case, 3)
