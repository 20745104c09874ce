"""jupyter_kernel_test's conformance suite against the installed kvmbench
kernelspec, plus the kernel's own completion and inspection of guest symbols."""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path

import jupyter_kernel_test

from kvmbench.jupyter.install import KERNEL_NAME, install
from kvmbench.jupyter.testing import run_cell


class KvmbenchKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    code_page_something = "print?"
    code_generate_error = "raise Exception('boom')"
    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": "session.symbols.get_by_name('fib').name", "result": "'fib'"},
    ]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
        {"code": "p $rip", "mime": "text/plain"},
        {"code": "info registers rip", "mime": "text/html"},
    ]
    code_history_pattern = "6 *"
    # "range" is left out: IPython reports the current session as 0 in range
    # replies (its history manager does, for the plain IPython kernel too).
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "print"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n", "%break fib"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x += 1"]
    invalid_code_samples = ["import = 7q"]

    completion_samples = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "%brea", "matches": {"%break"}},
        {"text": "%hbre", "matches": {"%hbreak"}},
        {"text": "%break fi", "matches": {"fib"}},
        {"text": "x/4gx $rs", "matches": {"$rsi", "$rsp"}},
        {"text": "%info reg", "matches": {"registers"}},
        {"text": "%guest cou", "matches": {"counter"}},
    ]

    _prefix: tempfile.TemporaryDirectory

    @classmethod
    def setUpClass(cls) -> None:
        cls._prefix = tempfile.TemporaryDirectory()
        install(prefix=cls._prefix.name)
        cls._old_path = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = str(Path(cls._prefix.name) / "share" / "jupyter")
        super().setUpClass()
        assert run_cell(cls.kc, "%guest fib 10").status == "ok"

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        if cls._old_path is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = cls._old_path
        cls._prefix.cleanup()

    def test_kvmbench_inspect_guest_symbol(self) -> None:
        self.flush_channels()
        msg_id = self.kc.inspect("%break fib", cursor_pos=len("%break fi"))
        reply = self.get_non_kernel_info_reply(timeout=10)
        assert reply is not None and reply["parent_header"]["msg_id"] == msg_id
        content = reply["content"]
        self.assertTrue(content["found"])
        text = content["data"]["text/plain"]
        self.assertIn("fib: function at 0x", text)
        self.assertIn("size", text)
        self.assertIn("src/fib.c", text)

    def test_kvmbench_complete_breakpoint_numbers(self) -> None:
        self.flush_channels()
        assert run_cell(self.kc, "%tbreak main").status == "ok"
        number = run_cell(self.kc, "print(max(b.number for b in session.breakpoints))").stdout.strip()
        msg_id = self.kc.complete("%delete ")
        reply = self.get_non_kernel_info_reply(timeout=10)
        assert reply is not None and reply["parent_header"]["msg_id"] == msg_id
        self.assertIn(number, reply["content"]["matches"])
        run_cell(self.kc, f"%delete {number}")

    def test_kvmbench_command_error_keeps_kernel(self) -> None:
        self.flush_channels()
        result = run_cell(self.kc, "x/4gx no_such_symbol")
        self.assertEqual(result.status, "error")
        self.assertEqual(len(result.errors[0]["traceback"]), 1)
        self.assertEqual(run_cell(self.kc, "print(6 * 7)").stdout, "42\n")


if __name__ == "__main__":
    unittest.main()
