"""Concurrency (issue 9, "Must show"): another thread inserts and removes
breakpoints and watchpoints thousands of times while the main thread
continues the guest through its breakpoint hits. Each change made while the
guest runs is either refused with SessionStateError or applied (by pausing
and resuming); nothing else may happen: no other error, no guest death, no
trap byte visible through the session, and the guest's results and
checksums are identical to an undisturbed run.
"""

from __future__ import annotations

import random
import threading
import time

from corpus import (
    code_bytes,
    cont,
    corpus_dir,  # noqa: F401 - fixture
    elf_symbols,
    finish_run,
    open_case,
    undisturbed,
)

from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import Breakpoint, Mechanism, StopReason
from kvmbench.errors import SessionStateError

GUEST = "checksum-O2"
ROUNDS = 60
#: Insert/remove attempts of the other thread (each attempt is one call);
#: the main thread paces its stops so they spread over the whole run.
ATTEMPTS = 2400
DATA = ("state_a", "state_b", "buf_in", "buf_out")


def test_requests_changed_from_another_thread_while_the_guest_runs(open_guest, caps,
                                                                   corpus_dir) -> None:
    symbols = elf_symbols(GUEST)
    code_start = symbols["_start"].address
    code_length = symbols["corpus_text_end"].address - code_start
    pristine = code_bytes(GUEST, code_start, code_length)
    functions = [symbols[f].address for f in ("mix", "step_b", "copy_bytes", "sum_bytes", "tail")]
    mechanisms = [None, Mechanism.HLT_TRAP if caps.works(Feature.HLT_TRAP) else Mechanism.INT3]
    if caps.works(Feature.HW_EXECUTE):
        mechanisms.append(Mechanism.HW_EXECUTE)

    s = open_case(open_guest, GUEST, "checksum", ROUNDS)
    hits = s.breakpoints.add("step_a")
    end = s.breakpoints.add("corpus_case_end")
    done = threading.Event()
    unexpected: list[BaseException] = []
    outcomes = {"applied": 0, "refused": 0}
    progress = [0]

    def call(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        """One change; True if applied, False if refused as the rule allows."""
        try:
            fn(*args, **kwargs)
        except SessionStateError:
            outcomes["refused"] += 1
            return False
        outcomes["applied"] += 1
        return True

    def churn() -> None:
        rng = random.Random(9)
        try:
            attempts = 0
            while attempts < ATTEMPTS and not done.is_set():
                made = []

                def add() -> None:
                    if rng.random() < 0.6:
                        made.append(s.breakpoints.trace(rng.choice(functions),
                                                        mechanism=rng.choice(mechanisms)))
                    else:
                        made.append(s.watchpoints.add(rng.choice(DATA), 8, tracepoint=True))

                attempts += 1
                progress[0] = attempts
                if not call(add):
                    continue
                request = made[0]
                remove = (s.breakpoints.delete if isinstance(request, Breakpoint)
                          else s.watchpoints.delete)
                while not call(remove, request.number):
                    attempts += 1
                    progress[0] = attempts
                    if done.is_set():
                        return
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            unexpected.append(e)

    other = threading.Thread(target=churn, name="churn")
    other.start()
    stops = 0
    try:
        while True:
            stop = cont(s)
            assert stop.alive, f"the guest died: {stop.describe()}"
            assert stop.reason is StopReason.BREAKPOINT, stop.describe()
            assert s.mem.read(code_start, code_length) == pristine, "a trap byte is visible"
            if stop.breakpoint == end.number:
                break
            assert stop.breakpoint == hits.number
            stops += 1
            # Let the other thread change things while stopped too, and keep
            # the guest from ending before it made its attempts.
            deadline = time.monotonic() + 10
            while (progress[0] < stops * ATTEMPTS // ROUNDS and other.is_alive()
                   and time.monotonic() < deadline):
                time.sleep(0.0005)
    finally:
        done.set()
        other.join(timeout=30)
    assert not other.is_alive(), "the other thread hung"
    assert not unexpected, f"a change from another thread failed: {unexpected[0]!r}"
    assert outcomes["applied"] + outcomes["refused"] >= ATTEMPTS - ATTEMPTS // ROUNDS
    counts = finish_run(s)
    assert stops == hits.hit_count == counts["calls_step_a"] == ROUNDS
    assert s.console == undisturbed(GUEST, "checksum", ROUNDS)
