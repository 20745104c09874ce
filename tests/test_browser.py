"""The tour notebook in a real JupyterLab, driven by Debian's chromium
through Playwright: Run All, then the debugger panel's Continue and Pause,
its stop reason, hit counts and live plot, with a screenshot to look at.

The server runs on 127.0.0.1 with a token, in a temporary root, with the
kvmbench kernelspec installed into a temporary prefix (JUPYTER_PATH).
Playwright's own browser download is never used."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvmbench.jupyter.install import install

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "test-output"

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (make browser installs it)"),
]


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path


def _notebook_report(page) -> str:  # type: ignore[no-untyped-def]
    """What the notebook shows that explains a wait that timed out: error
    outputs, the kernel's status, open dialogs (saved with a screenshot)."""
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "browser-failure.png"))
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
                          ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    texts = [errors.nth(i).inner_text()[:300] for i in range(min(errors.count(), 5))]
    status = page.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
    dialogs = page.locator(".jp-Dialog-content")
    shown = [dialogs.nth(i).inner_text()[:300] for i in range(dialogs.count())]
    return f"kernel status {status}; error outputs {texts}; dialogs {shown}; see test-output/browser-failure.png"


def _click_toolbar_button(page, button, notebook: str) -> None:  # type: ignore[no-untyped-def]
    """Click ``button`` of ``notebook``'s toolbar. On a loaded machine
    JupyterLab may have put another tab in front of the notebook, or moved
    the button into the toolbar's overflow menu while measuring its width:
    bring the notebook forward and the button out, until a click lands."""
    from playwright.sync_api import Error

    deadline = time.monotonic() + 60
    while True:
        try:
            button.click(timeout=5_000)
            return
        except Error:
            if time.monotonic() > deadline:
                raise
        page.locator(".lm-TabBar-tab", has_text=notebook).first.click()
        opener = page.locator(".jp-Toolbar-responsive-opener:visible")
        if not button.is_visible() and opener.count():
            opener.first.click()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, caps) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    root, prefix = base / "root", base / "prefix"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "tour.ipynb", root / "tour.ipynb")
    install(prefix=str(prefix))
    # Every cell attached and laid out: JupyterLab's default windowing
    # ("contentVisibility") skips rendering offscreen cells, whose outputs
    # then count as invisible to Playwright until scrolled to.
    settings = base / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(os.environ,
               JUPYTER_PATH=str(prefix / "share" / "jupyter"),
               JUPYTER_DATA_DIR=str(base / "data"),
               JUPYTER_CONFIG_DIR=str(base / "config"),
               JUPYTER_RUNTIME_DIR=str(base / "runtime"))
    log = open(base / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.open_browser=False",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         *(["--allow-root"] if os.geteuid() == 0 else []), "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start: " + (base / "server.log").read_text()[-2000:])
                time.sleep(0.3)
        yield Lab(url, token, root)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


@pytest.fixture
def page(lab: Lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_tour_panel_continue_pause_counts_and_plot(lab: Lab, page) -> None:
    from playwright.sync_api import expect

    page.goto(f"{lab.url}/lab/tree/tour.ipynb?token={lab.token}")
    page.locator(".jp-Notebook").wait_for()
    # The notebook names its kernel: wait until kvmbench is up and idle.
    expect(page.locator(".jp-Toolbar-kernelName")).to_contain_text("kvmbench", timeout=30_000)
    expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=30_000)

    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

    panel = page.locator(".kvmbench-panel").first
    try:  # generous: Run All boots three guests and runs fib 15 to its end on a loaded machine
        panel.wait_for(state="attached", timeout=120_000)
    except Exception as e:
        raise AssertionError(f"no panel after Run All: {_notebook_report(page)}") from e
    # Run All finished: the last cell printed the session's state.
    expect(page.locator(".jp-OutputArea-output").filter(has_text="hits so far")).to_have_count(1, timeout=120_000)
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text="Error").count() == 0
    no_news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's news prompt
    if no_news.count():
        no_news.first.click()
    panel.evaluate("element => element.scrollIntoView({block: 'center'})")
    try:
        expect(panel).to_be_visible(timeout=30_000)
    except AssertionError as e:
        hidden = panel.evaluate("""element => { const out = []; for (let e = element; e; e = e.parentElement) {
            const s = getComputedStyle(e); if (s.display === 'none' || s.visibility === 'hidden' || !e.getClientRects().length)
            out.push(e.className + ':' + s.display + '/' + s.visibility + '/' + s.contentVisibility); } return out.slice(0, 6); }""")
        raise AssertionError(f"the panel is not visible ({page.locator('.kvmbench-panel').count()} panels; "
                             f"hidden by {hidden}): {_notebook_report(page)}") from e
    state = panel.locator(".kvmbench-state")
    expect(state).to_have_text("stopped")
    expect(panel.get_by_role("button", name="Pause")).to_be_disabled()

    panel.get_by_role("button", name="Continue").click()
    expect(state).to_have_text("running", timeout=10_000)
    expect(panel.get_by_role("button", name="Continue")).to_be_disabled()
    hits = panel.locator(".kvmbench-hits").first
    expect(hits).not_to_have_text("0", timeout=10_000)
    first = hits.inner_text()
    # The counts move while the guest runs (waited for, not slept for: the machine may be loaded).
    expect(hits).not_to_have_text(first, timeout=20_000)
    plot = panel.locator("img.kvmbench-plot, .kvmbench-plot img, img.kvmbench-plot").first
    expect(plot).to_be_visible(timeout=10_000)
    page.wait_for_function("img => img.naturalWidth > 100", arg=plot.element_handle(), timeout=30_000)

    panel.get_by_role("button", name="Pause").click()
    expect(state).to_have_text("stopped", timeout=5_000)
    expect(panel.locator(".kvmbench-stop-reason")).to_contain_text("Program received signal SIGINT")
    paused_hits = int(hits.inner_text())
    assert 0 < paused_hits < 150049
    expect(panel.locator(".kvmbench-registers")).to_contain_text("rip")
    OUTPUT.mkdir(exist_ok=True)
    panel.screenshot(path=str(OUTPUT / "browser-panel.png"))
    page.screenshot(path=str(OUTPUT / "browser-page.png"))

    # The cells see what the buttons did: same session, same counts.
    text = re.sub(r"\s+", " ", panel.locator(".kvmbench-total-hits").inner_text())
    assert f"{paused_hits} hits logged" == text


def test_jupyterlab_debugger_shows_fibs_locals_and_next_moves_one_c_line(lab: Lab, page) -> None:
    import nbformat
    from playwright.sync_api import expect

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "kvmbench", "display_name": "KVM guest (kvmbench)",
                                       "language": "python"}
    # fib's breakpoint is temporary, so Next then runs over both recursive
    # calls to the next line; main's stays, for the sidebar.
    notebook.cells = [nbformat.v4.new_code_cell(code)
                      for code in ("%guest fib 10", "break fib.c:20\ntbreak fib", "continue")]
    nbformat.write(notebook, lab.root / "debugger.ipynb")

    # A workspace of its own: the shared server would otherwise restore the
    # tour's tab from the test before, and toolbar and menus would act on it.
    page.goto(f"{lab.url}/lab/workspaces/debugger/tree/debugger.ipynb?reset&token={lab.token}")
    page.locator(".jp-Notebook").wait_for()
    expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=30_000)
    bug = page.locator(".jp-DebuggerBugButton").first
    # The toggle is live once JupyterLab has asked the kernel whether it
    # debugs: the kernel is connected, so Run All runs in it.
    expect(bug).not_to_have_attribute("title", re.compile("Select a kernel"), timeout=30_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    expect(page.locator(".jp-OutputArea-output").filter(
        has_text="Temporary breakpoint 2, fib (n=10) at src/fib.c:12")).to_have_count(1, timeout=60_000)

    # The debugger switched on while the guest is stopped: the stack at once,
    # the cells' breakpoint in its sidebar, fib's variables in Locals.
    _click_toolbar_button(page, bug, "debugger.ipynb")
    callstack = page.locator(".jp-DebuggerCallstack")
    frames = callstack.get_by_role("listitem")
    # Expected with retries, not read once: JupyterLab may clear and refill
    # the stack while it asks the kernel again.
    expect(frames).to_have_text([re.compile(r"^\s*fib\s*src/fib\.c:12\s*$"), re.compile(r"^\s*main\s*src/")],
                                timeout=60_000)
    expect(page.locator(".lm-TabBar-tabLabel").filter(has_text="fib.c")).to_have_count(1)
    expect(page.locator(".jp-DebuggerBreakpoints")).to_contain_text("fib.c", timeout=30_000)
    variables = page.locator(".jp-DebuggerVariables")
    # The panel opens on the first scope, Locals: fib's argument n, as gdb prints it.
    expect(variables).to_contain_text(re.compile(r"n\s*:?\s*10 \(long\)"), timeout=30_000)
    expect(variables).not_to_contain_text("booted_by_pvh", timeout=30_000)  # not the globals
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "browser-debugger.png"))

    # Next: one C line on, in the same frame.
    next_button = page.locator("[title^='Next']:visible").first
    expect(next_button).to_be_enabled(timeout=30_000)  # the debugger knows the thread is stopped
    next_button.click()  # the callstack toolbar's Next (F10)
    expect(frames).to_have_text([re.compile(r"^\s*fib\s*src/fib\.c:13\s*$"), re.compile(r"^\s*main\s*src/")],
                                timeout=60_000)
    expect(variables).to_contain_text(re.compile(r"n\s*:?\s*10 \(long\)"), timeout=30_000)  # still fib(10)'s
    page.screenshot(path=str(OUTPUT / "browser-debugger-next.png"))
