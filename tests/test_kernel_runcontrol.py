"""Run control through a real kvmbench kernel (jupyter_client): interrupts
pause the guest, comm messages flow while it runs, bad input costs one line."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from kvmbench.jupyter.testing import collect, kernelspec_in, run_cell, started_kernel

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    with started_kernel(Path(tmp_path_factory.mktemp("kernelspec"))) as started:
        yield started


@pytest.fixture
def kc(kernel):
    return kernel[1]


def _one_error_line(result) -> str:
    assert result.status == "error"
    assert len(result.errors) == 1
    lines = result.errors[0]["traceback"]
    assert len(lines) == 1, lines
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[0])


def test_commands_before_any_guest_give_one_error_line(kernel):
    km, kc = kernel
    run_cell(kc, "workbench.close()")
    text = _one_error_line(run_cell(kc, "break fib"))
    assert "no guest" in text and "%guest" in text
    assert run_cell(kc, "1 + 1").status == "ok"


def test_interrupt_pauses_a_running_guest_within_a_second(kernel):
    km, kc = kernel
    assert run_cell(kc, "%guest spin").status == "ok"
    msg_id = kc.execute("%continue")
    time.sleep(0.5)  # let the guest run
    sent = time.monotonic()
    km.interrupt_kernel()
    result = collect(kc, msg_id, timeout=10)
    elapsed = time.monotonic() - sent
    assert result.status == "ok", result.errors
    assert elapsed < 1.0
    assert result.text.startswith("paused")
    assert "kvmbench-stop" in result.html
    after = run_cell(kc, "print(session.state.value)")
    assert after.status == "ok" and after.stdout.strip() == "stopped"


def test_comm_messages_are_answered_while_the_guest_runs(kernel):
    km, kc = kernel
    setup = run_cell(kc, "\n".join([
        "def _echo_target(comm, open_msg):",
        "    comm.on_msg(lambda msg: comm.send({'echo': msg['content']['data']['ping']}))",
        "get_ipython().kernel.comm_manager.register_target('kvmbench-echo', _echo_target)",
        "%guest spin",
    ]))
    assert setup.status == "ok", setup.errors
    run_id = kc.execute("continue")
    time.sleep(0.3)
    comm_id = uuid.uuid4().hex
    kc.shell_channel.send(kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "kvmbench-echo", "data": {}}))
    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"ping": 42}}))
    deadline = time.monotonic() + 5
    echoed = None
    while time.monotonic() < deadline and echoed is None:
        msg = kc.get_iopub_msg(timeout=5)
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            echoed = msg["content"]["data"]["echo"]
    assert echoed == 42
    km.interrupt_kernel()
    result = collect(kc, run_id, timeout=10)
    assert result.status == "ok" and result.text.startswith("paused")


def test_unknown_command_is_one_error_line(kc):
    result = run_cell(kc, "%frobnicate 3")
    assert result.status == "error"
    message = result.stderr + "".join(e["evalue"] for e in result.errors)
    assert "frobnicate" in message and "not found" in message
    assert len(message.strip().splitlines()) == 1
    assert run_cell(kc, "1").status == "ok"


def test_unknown_symbol_is_one_error_line(kc):
    run_cell(kc, "%guest fib 10")
    text = _one_error_line(run_cell(kc, "break no_such_function"))
    assert "no_such_function" in text


def test_malformed_x_format_is_one_error_line(kc):
    run_cell(kc, "%guest fib 10")
    text = _one_error_line(run_cell(kc, "x/4q $rsp"))
    assert "malformed format" in text


def test_tracing_fib_10_counts_177_calls(kc):
    assert run_cell(kc, "%guest fib 10").status == "ok"
    assert run_cell(kc, "%trace fib").status == "ok"
    result = run_cell(kc, "%continue")
    assert result.status == "ok", result.errors
    assert "fib(10) = 55" in result.stdout
    assert "exited with code 0" in result.text
    hits = run_cell(kc, "print(session.breakpoints[1].hit_count, session.hits.count(1))")
    assert hits.stdout.split() == ["177", "177"]


def test_stop_card_shows_mechanism_source_and_disassembly(kc):
    run_cell(kc, "%guest fib 10")
    run_cell(kc, "%break fib")
    result = run_cell(kc, "%c")
    assert result.status == "ok"
    assert "breakpoint 1 (fib) via hlt trap" in result.text
    assert "src/fib.c:" in result.text
    assert "=> 0x" in result.text
    assert "kvmbench-stop" in result.html


def test_shutdown_closes_a_running_guest(tmp_path):
    with kernelspec_in(tmp_path) as name:
        km, kc = start_new_kernel(kernel_name=name, startup_timeout=60)
        try:
            run_cell(kc, "%guest spin")
            kc.execute("%continue")
            time.sleep(0.3)
        finally:
            kc.stop_channels()
            started = time.monotonic()
            km.shutdown_kernel(now=False)
        assert time.monotonic() - started < 5
        assert not km.is_alive()


def test_a_guest_under_qemu_runs_from_the_notebook(kernel):
    km, kc = kernel
    assert run_cell(kc, "%guest fib 10 --target qemu").status == "ok"
    assert run_cell(kc, "trace fib").status == "ok"
    result = run_cell(kc, "%continue")
    assert result.status == "ok", result.errors
    assert "exited with code 0" in result.text
    check = run_cell(kc, "print(session.breakpoints[1].hit_count, session.target.capabilities.name)")
    assert check.stdout.split() == ["177", "qemu", "(tcg)"]


def test_attaching_to_a_stub_that_is_not_there_costs_one_line_and_the_kernel_goes_on(kernel, tmp_path):
    km, kc = kernel
    text = _one_error_line(run_cell(kc, f"%attach unix:{tmp_path / 'nobody.sock'}"))
    assert "cannot connect" in text
    assert run_cell(kc, "%guest hello").status == "ok"


def test_attaching_to_a_stub_that_hangs_up_costs_one_line(kernel, stub_factory):
    from gdbstub_scripted import HANG_UP

    km, kc = kernel
    stub = stub_factory(packet_qSupported=lambda self, packet: HANG_UP)
    text = _one_error_line(run_cell(kc, f"%attach {stub.address}"))
    assert stub.address in text
    assert run_cell(kc, "1 + 1").status == "ok"
