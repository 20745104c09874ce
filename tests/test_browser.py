"""The tour notebook in a real JupyterLab, driven by Debian's chromium
through Playwright: Run All, then the debugger panel's Continue and Pause,
its stop reason, hit counts and live plot, with a screenshot to look at.

The server runs on 127.0.0.1 with a token, in a temporary root, with the
kvmbench kernelspec installed into a temporary prefix (JUPYTER_PATH).
Playwright's own browser download is never used."""

from __future__ import annotations

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
    pytest.mark.timeout(180),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (make browser installs it)"),
]


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path


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
    panel.wait_for(state="attached", timeout=60_000)
    # Run All finished: the last cell printed the session's state.
    expect(page.locator(".jp-OutputArea-output").filter(has_text="hits so far")).to_have_count(1, timeout=60_000)
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text="Error").count() == 0
    no_news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's news prompt
    if no_news.count():
        no_news.first.click()
    panel.scroll_into_view_if_needed()
    state = panel.locator(".kvmbench-state")
    expect(state).to_have_text("stopped")
    expect(panel.get_by_role("button", name="Pause")).to_be_disabled()

    panel.get_by_role("button", name="Continue").click()
    expect(state).to_have_text("running", timeout=10_000)
    expect(panel.get_by_role("button", name="Continue")).to_be_disabled()
    hits = panel.locator(".kvmbench-hits").first
    expect(hits).not_to_have_text("0", timeout=10_000)
    first = int(hits.inner_text())
    time.sleep(1.5)  # let the counts and the plot refresh a few times
    assert int(hits.inner_text()) > first, "hit counts do not move while the guest runs"
    plot = panel.locator("img.kvmbench-plot, .kvmbench-plot img, img.kvmbench-plot").first
    expect(plot).to_be_visible(timeout=10_000)
    assert plot.evaluate("img => img.naturalWidth") > 100

    panel.get_by_role("button", name="Pause").click()
    expect(state).to_have_text("stopped", timeout=5_000)
    expect(panel.locator(".kvmbench-stop-reason")).to_contain_text("paused")
    paused_hits = int(hits.inner_text())
    assert 0 < paused_hits < 150049
    expect(panel.locator(".kvmbench-registers")).to_contain_text("rip")
    time.sleep(1.0)  # the plot's last refresh after the stop
    OUTPUT.mkdir(exist_ok=True)
    panel.screenshot(path=str(OUTPUT / "browser-panel.png"))
    page.screenshot(path=str(OUTPUT / "browser-page.png"))

    # The cells see what the buttons did: same session, same counts.
    text = re.sub(r"\s+", " ", panel.locator(".kvmbench-total-hits").inner_text())
    assert f"{paused_hits} hits logged" == text


def test_jupyterlab_debugger_panel_shows_the_stopped_guest(lab: Lab, page) -> None:
    import nbformat
    from playwright.sync_api import expect

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "kvmbench", "display_name": "KVM guest (kvmbench)",
                                       "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(code)
                      for code in ("%guest fib 10", "break fib", "continue")]
    nbformat.write(notebook, lab.root / "debugger.ipynb")

    # A workspace of its own: the shared server would otherwise restore the
    # tour's tab from the test before, and toolbar and menus would act on it.
    page.goto(f"{lab.url}/lab/workspaces/debugger/tree/debugger.ipynb?reset&token={lab.token}")
    page.locator(".jp-Notebook").wait_for()
    expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=30_000)
    bug = page.locator(".jp-DebuggerBugButton").first
    # The toggle is live once JupyterLab has asked the kernel whether it debugs.
    expect(bug).not_to_have_attribute("title", re.compile("Select a kernel"), timeout=30_000)
    bug.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

    # Stopped at fib's entry: the guest's own stack, its C source, its registers.
    callstack = page.locator(".jp-DebuggerCallstack")
    expect(callstack).to_contain_text("_start", timeout=60_000)
    frames = [line.split()[0] for line in callstack.inner_text().splitlines()
              if line.strip() and not line.startswith("/")]
    assert frames[:3] == ["fib", "main", "_start"], frames
    expect(page.locator(".lm-TabBar-tabLabel").filter(has_text="fib.c")).to_have_count(1)
    variables = page.locator(".jp-DebuggerVariables")
    expect(variables).to_contain_text("rip")
    assert re.search(r"rip:?\s*0x[0-9a-f]+", variables.inner_text()), variables.inner_text()[:200]
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "browser-debugger.png"))
