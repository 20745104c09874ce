"""The guest's own hlt keeps its meaning with every mechanism armed: with its
timer running it waits for the next tick (never returns early), and after
cli it can never wake, which kvmbench reports (session and CLI) instead of
looping or running past it.

Ground truth: the halt guest counts its hlts, those a tick's handler ended
(halt_woken_by_tick) and those that returned without one (halt_spurious,
0 on any CPU).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from corpus import (
    BREAK_MECHANISMS,
    READ_MECHANISMS,
    WRITE_MECHANISMS,
    cont,
    corpus_dir,  # noqa: F401 - fixture
    elf_symbols,
    finish_run,
    guest_path,
    open_case,
    require,
    run_case,
    undisturbed,
)

from kvmbench.engine.model import Access, StopReason

#: (what is armed, mechanism): every mechanism the corpus knows.
ARMED = ([pytest.param("break", p.values[0], id=f"break-{p.id}") for p in BREAK_MECHANISMS]
         + [pytest.param("write", p.values[0], id=f"write-{p.id}") for p in WRITE_MECHANISMS]
         + [pytest.param("read", p.values[0], id=f"read-{p.id}") for p in READ_MECHANISMS])
HALT_TIMEOUT = 10.0  # 8 ticks of 500 us; anything near this is a hang


def _arm(s, what: str, mechanism) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Tracepoints by ``mechanism``: {ground-truth counter: request}."""
    if what == "break":
        return {"count_hlt": s.breakpoints.trace("site_hlt", mechanism=mechanism),
                "count_halt_loop": s.breakpoints.trace("site_halt_loop", mechanism=mechanism)}
    access = Access.WRITE if what == "write" else Access.READ
    counter = "stores_halt_var" if what == "write" else "reads_halt_var"
    return {counter: s.watchpoints.add("halt_var", access=access, mechanism=mechanism,
                                       tracepoint=True)}


@pytest.mark.parametrize(("what", "mechanism"), ARMED)
def test_the_guests_hlt_waits_for_its_timer_with_each_mechanism_armed(
        open_guest, caps, corpus_dir, what, mechanism) -> None:
    require(caps, mechanism, Access.READ if what == "read" else Access.WRITE)
    s = open_case(open_guest, "halt", "halt")
    requests = _arm(s, what, mechanism)
    run_case(s)
    hits = {counter: r.hit_count for counter, r in requests.items()}  # type: ignore[attr-defined]
    counts = finish_run(s)
    assert counts["halt_spurious"] == 0, "a hlt returned without an interrupt"
    assert counts["halt_woken_by_tick"] == counts["count_hlt"] == 8
    assert hits == {counter: counts[counter] for counter in hits}
    assert s.console == undisturbed("halt", "halt")


@pytest.mark.parametrize("case", ["clihlt", "clihlt_timer"])
@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
def test_cli_hlt_stops_with_a_clear_message_and_stays_halted(open_guest, caps, corpus_dir,
                                                             case, mechanism) -> None:
    """A tracepoint on the hlt itself, by each mechanism: it executes once,
    and every cont() reports the halt again instead of running past it."""
    require(caps, mechanism)
    s = open_case(open_guest, "halt", case)
    bp = s.breakpoints.trace("site_cli_hlt", mechanism=mechanism)
    hlt = elf_symbols("halt")["site_cli_hlt"].address
    for _ in range(2):
        stop = cont(s, timeout=HALT_TIMEOUT)
        assert stop.reason is StopReason.HALTED, stop.describe()
        assert "hlt" in stop.describe() and "\n" not in stop.describe()
        assert stop.pc in (hlt, hlt + 1), s.symbols.format_address(stop.pc or 0)
    assert bp.hit_count == 1


@pytest.mark.parametrize("case", ["clihlt", "clihlt_timer"])
def test_kvmbench_run_ends_on_cli_hlt_with_one_message(corpus_dir, case) -> None:
    command = [sys.executable, "-m", "kvmbench", "run", str(guest_path("halt")), case]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, env=env)
    except subprocess.TimeoutExpired as e:
        output = (e.stderr or b"")[-300:]
        pytest.fail(f"kvmbench run kept running on cli; hlt (last output: {output!r})")
    assert done.returncode != 0
    messages = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(messages) == 1 and "hlt" in messages[0], done.stderr[-500:]
