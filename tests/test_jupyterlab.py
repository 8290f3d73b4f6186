"""The series as readers use it: each notebook opened in a real JupyterLab, in headless Chromium, and run with
"Run > Run All Cells" (`pytest -m browser`; plain `pytest` runs it too).

One JupyterLab server (a subprocess on a free 127.0.0.1 port, a random token, its root a temporary copy of
notebooks/ with the outputs cleared) serves the four notebooks, run one after another, 01 to 04, in one temporary
workspace in the smoke profile (04 evaluates the checkpoint 03 trains). For each notebook the test asserts that
every code cell ran and the kernel ended idle, that no cell has an error output (in the saved .ipynb and in the
page), that the kernel ran in the smoke profile, and that the page shows every figure the run produced (the
image/png outputs of the saved notebook; at least one), and that the folded asides (``<details>``) render
folded and open on a click. In 04 it moves the interactive viewer's frame slider
with the keyboard and asserts that the picture the kernel sends back changes.

Needs the Debian `chromium` package (/usr/bin/chromium) and the `playwright` package (the dev extra); it never
downloads a browser. Without either it is skipped, with its reason.
"""

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
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (the dev extra)")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_dataset_exploration", "02_model_setup", "03_training", "04_evaluation", "05_your_own_data",
             "06_using_the_model"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 180      # the server answering /api/status
KERNEL_READY_S = 180      # a notebook opened and its kernel idle
RUN_TIMEOUT_S = 900       # Run All Cells of one notebook (03 trains: ~35 s in smoke on 2 idle cores)
VIEWER_UPDATE_S = 60      # the viewer's picture redrawn by the kernel after a slider move

# JupyterLab marks a queued or running cell "[*]:", an executed one "[n]:", one not run "[ ]:".
PROMPT_DONE = re.compile(r"^\[\d+\]:$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRACEBACK = "Traceback (most recent call last)"
FIGURES = '.jp-OutputArea-output[data-mime-type="image/png"] img'
WIDGET = "application/vnd.jupyter.widget-view+json"
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
# The bytes behind an <img> (the viewer's Image widget shows a blob: URL made anew on each redraw), hashed.
IMG_DIGEST_JS = """async img => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, b => b.toString(16).padStart(2, "0")).join("");
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cell(index: int, cell: dict) -> str:
    """A cell as JupyterLab's status bar counts it (Cell n/N, from 1), with its first line."""
    source = "".join(cell.get("source", "")).strip()
    return f"cell {index + 1} ({source.splitlines()[0][:100] if source else '(empty)'!r})"


def _copy_notebooks(dest: Path) -> None:
    """The checkout's notebooks, outputs and execution counts cleared, so everything shown comes from this run."""
    shutil.copytree(ROOT / "notebooks", dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for path in dest.glob("*.ipynb"):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_lab_config(config_dir: Path) -> None:
    """No news, update or announcement toast over the notebook (a fresh JupyterLab asks whether to fetch news)."""
    (config_dir / "labconfig").mkdir(parents=True)
    (config_dir / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(
        {"fetchNews": "false", "checkForUpdates": False}))


@dataclass
class Lab:
    """A running JupyterLab server and a headless Chromium; runs the notebooks in order, each once."""

    base_url: str
    token: str
    root: Path
    workspace: Path
    artifacts: Path
    browser: object
    done: dict[str, str | None] = field(default_factory=dict)   # notebook -> None (passed) or why it failed
    seconds: dict[str, float] = field(default_factory=dict)

    def api(self, method: str, path: str):
        request = urllib.request.Request(f"{self.base_url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def run_earlier(self, name: str) -> None:
        """The notebooks before `name` in the series, in this workspace (04 needs the checkpoint 03 writes)."""
        for earlier in NOTEBOOKS[:NOTEBOOKS.index(name)]:
            if earlier not in self.done:
                try:
                    self.run(earlier)
                except (Exception, pytest.fail.Exception) as exc:  # pytest's failure is no Exception
                    self.done.setdefault(earlier, str(exc))
            if self.done[earlier] is not None:
                pytest.fail(f"{name} runs after {earlier} in the same workspace, and {earlier} failed: "
                            f"{self.done[earlier]}", pytrace=False)

    def run(self, name: str) -> None:
        start = time.monotonic()
        page = self.browser.new_page(viewport={"width": 1400, "height": 900})
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        try:
            run = NotebookRun(self, name, page, page_errors)
            run.run_all_and_check()
            if not any(self.workspace.iterdir()):
                run.fail(f"nothing written into its SEG_WORKSPACE ({self.workspace}): did the kernel get it?")
            if name == "04_evaluation":
                run.check_viewer()
        except (Exception, pytest.fail.Exception) as exc:
            self.done[name] = str(exc)
            shot = self.artifacts / f"{name}-failure.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                print(f"{name}: screenshot of the page at the failure: {shot}")
            except Exception as shot_exc:  # the screenshot is only a diagnostic
                print(f"{name}: no screenshot: {shot_exc}")
            raise
        finally:
            page.close()
            try:
                self.shut_down_kernels()
            except OSError as exc:  # the server is gone: the next notebook says so
                print(f"{name}: could not shut its kernel down: {exc}")
            self.seconds[name] = time.monotonic() - start
            print(f"{name}: {self.seconds[name]:.0f} s in JupyterLab")
        self.done[name] = None


@dataclass
class NotebookRun:
    lab: Lab
    name: str
    page: object
    page_errors: list[str]
    source: dict = field(default_factory=dict)   # the notebook as opened (outputs cleared)

    @property
    def path(self) -> Path:
        return self.lab.root / f"{self.name}.ipynb"

    def fail(self, what: str) -> None:
        extra = f"\n(JavaScript errors on the page: {self.page_errors[:5]})" if self.page_errors else ""
        pytest.fail(f"{self.name}.ipynb in JupyterLab: {what}{extra}", pytrace=False)

    def wait(self, condition, timeout_s: float, what: str, every_s: float = 0.5):
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(every_s)

    def kernel_status(self) -> str | None:
        indicator = self.page.locator(".jp-Notebook-ExecutionIndicator")
        return indicator.first.get_attribute("data-status") if indicator.count() else None

    def prompts(self) -> list[str]:
        # text, not inner text: cells out of view (JupyterLab's content-visibility) have no inner text
        return [p.strip() for p in self.page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_text_contents()]

    def kernel_ready(self) -> bool:
        """The server has this notebook's kernel idle and the page shows it idle (the page's indicator also reads
        idle before any kernel is attached, so it alone is not enough)."""
        sessions = self.lab.api("GET", "/api/sessions")
        return (any(s["path"] == self.path.name and (s.get("kernel") or {}).get("execution_state") == "idle"
                    for s in sessions)
                and self.kernel_status() == "idle")

    def run_all_and_check(self) -> None:
        page = self.page
        self.source = json.loads(self.path.read_text(encoding="utf-8"))
        page.goto(f"{self.lab.base_url}/lab/tree/{self.path.name}?reset&token={self.lab.token}")
        for _ in range(2):  # twice, a second apart
            self.wait(self.kernel_ready, KERNEL_READY_S, "the notebook to open and its kernel to be idle")
            time.sleep(1)
        dialogs = page.locator(".jp-Dialog").all_inner_texts()
        if dialogs:
            self.fail(f"a dialog is open before anything ran: {dialogs}")

        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        self.wait(lambda: any(p == "[*]:" or PROMPT_DONE.match(p) for p in self.prompts()), 60,
                  "Run All Cells to queue the cells")
        self.wait_until_finished()

        nb = self.save()
        self.check_saved(nb)
        self.check_page(nb)
        self.check_folded_blocks(nb)

    def wait_until_finished(self) -> None:
        """Until the kernel is idle with no cell queued or running, twice in a row a second apart."""
        deadline, settled = time.monotonic() + RUN_TIMEOUT_S, 0
        while settled < 2:
            status, prompts = self.kernel_status(), self.prompts()
            if status in ("dead", "unknown", "autorestarting", "restarting"):
                self.fail(f"the kernel is {status} (it died or restarted) while running the cells; prompts: {prompts}")
            settled = settled + 1 if status == "idle" and "[*]:" not in prompts else 0
            if time.monotonic() > deadline:
                code = [(i, c) for i, c in enumerate(self.source["cells"]) if c["cell_type"] == "code"]
                busy = [_cell(*code[k]) for k, p in enumerate(prompts) if p == "[*]:" and k < len(code)]
                self.fail(f"not finished after {RUN_TIMEOUT_S} s: kernel {status}, cells still queued or running: "
                          f"{busy}")
            time.sleep(1)

    def save(self) -> dict:
        """Ctrl+S, then the .ipynb read back from the temporary folder once JupyterLab has written it."""
        before = self.path.stat().st_mtime_ns
        self.page.locator(".jp-Notebook").first.focus()
        self.page.keyboard.press("Control+s")
        dirty = self.page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty")
        self.wait(lambda: self.path.stat().st_mtime_ns != before and dirty.count() == 0, 60,
                  "Ctrl+S to save the notebook")
        return json.loads(self.path.read_text(encoding="utf-8"))

    def check_saved(self, nb: dict) -> None:
        code = [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
        errors = [f"{_cell(i, c)}: {o.get('ename')}: {o.get('evalue')}\n"
                  + ANSI.sub("", "\n".join(o.get("traceback", [])[-12:]))
                  for i, c in code for o in c["outputs"] if o["output_type"] == "error"]
        if errors:
            self.fail("error output in the saved notebook:\n" + "\n\n".join(errors))
        not_run = [_cell(i, c) for i, c in code
                   if "".join(c["source"]).strip() and c["execution_count"] is None]
        if not_run:
            self.fail(f"code cells that did not run: {not_run}")
        printed = "".join("".join(o.get("text", "")) for _, c in code for o in c["outputs"]
                          if o["output_type"] == "stream")
        if "profile: smoke" not in printed:
            self.fail("no 'profile: smoke' in its printed output: the kernel did not get SEG_PROFILE=smoke "
                      "(or the setup cell no longer prints cfg.describe())")

    def check_page(self, nb: dict) -> None:
        page = self.page
        prompts = self.prompts()
        stuck = [p for p in prompts if not PROMPT_DONE.match(p) and p != "[ ]:"]
        if stuck:
            self.fail(f"cells with a prompt other than [n] after the run: {stuck}")
        tracebacks = [t for t in page.locator(STDERR).all_text_contents() if TRACEBACK in t]
        if tracebacks:
            self.fail("the page shows a traceback:\n" + "\n\n".join(t[-2000:] for t in tracebacks))

        # A widget's output may carry a PNG still for pages without widgets (viz.interactive_viewer); a live
        # JupyterLab draws the widget instead, so that still is not a figure here.
        expected = sum("image/png" in o.get("data", {}) and WIDGET not in o.get("data", {})
                       for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
        if expected == 0:
            self.fail("the run produced no figure (no image/png output in the saved notebook)")
        # JupyterLab attaches cells to the page lazily (its windowing); all of them before counting.
        cells = page.locator(".jp-Notebook .jp-Cell")
        self.wait(lambda: cells.count() == len(nb["cells"]), 60,
                  f"all {len(nb['cells'])} cells on the page (it has {cells.count()})")
        figures = page.locator(FIGURES)
        if figures.count() != expected:
            self.fail(f"the page shows {figures.count()} figures, the saved run has {expected} image/png outputs")
        loaded = "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length"
        self.wait(lambda: figures.evaluate_all(loaded) == expected, 60,
                  f"the {expected} figures to load (loaded: {figures.evaluate_all(loaded)})")

    def check_folded_blocks(self, nb: dict) -> None:
        """The asides a first reading skips (``<details>`` in markdown, the exercises' hints among them) render
        folded, and the first one opens on a click of its summary, its content then shown."""
        expected = sum("".join(c["source"]).count("<details>") for c in nb["cells"] if c["cell_type"] == "markdown")
        if expected == 0:
            self.fail("no folded block (<details>) in the notebook's markdown: each has at least the exercises' hints")
        blocks = self.page.locator(".jp-RenderedMarkdown details")
        self.wait(lambda: blocks.count() == expected, 60,
                  f"the {expected} folded blocks to render as <details> (found {blocks.count()})")
        if any(blocks.evaluate_all("ds => ds.map(d => d.open)")):
            self.fail("a folded block is open before anyone clicked it")
        first = blocks.first
        body = first.locator(":scope > :not(summary)").first
        if body.is_visible():
            self.fail("the first folded block shows its content before it is opened")
        first.locator("summary").first.click()
        self.wait(lambda: first.evaluate("d => d.open") and body.is_visible(), 10,
                  "the first folded block to open, its content shown, on a click of its summary")

    def check_viewer(self) -> None:
        """The interactive viewer (ipywidgets, a live kernel): the frame slider moved, the picture changes."""
        page = self.page

        def control(kind: str, label: str):
            """An ipywidgets control by its class (widget-hslider, widget-dropdown) and its description."""
            return page.locator(f".{kind}").filter(
                has=page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(label)}$")))

        frame = page.locator(".jp-OutputArea-output").locator(control("widget-hslider", "frame"))
        if frame.count() != 1:
            widgets = page.locator(".jp-OutputArea-output .jupyter-widgets").count()
            self.fail(f"expected one interactive viewer with a 'frame' slider, found {frame.count()} "
                      f"({widgets} rendered ipywidgets on the page; 0 means the widgets did not render: "
                      "is jupyterlab_widgets installed?)")
        viewer = page.locator(".widget-vbox").filter(has=control("widget-hslider", "frame")).last
        for kind, label in (("widget-hslider", "opacity"), ("widget-dropdown", "class")):
            if viewer.locator(control(kind, label)).count() != 1:
                self.fail(f"the viewer has no {label!r} control")
        picture = viewer.locator("img.widget-image")
        if picture.count() != 1:
            self.fail(f"the viewer shows {picture.count()} pictures, expected 1")
        handle = frame.get_by_role("slider")
        if float(handle.get_attribute("aria-valuemax")) < 1:
            self.fail("the viewer has a single frame: nothing to move to")
        self.wait(lambda: picture.get_attribute("src"), 30, "the viewer's first picture")
        src, digest = picture.get_attribute("src"), picture.evaluate(IMG_DIGEST_JS)
        start = float(handle.get_attribute("aria-valuenow"))

        handle.scroll_into_view_if_needed()
        handle.focus()
        handle.press("ArrowRight")
        self.wait(lambda: float(handle.get_attribute("aria-valuenow")) == start + 1, 10,
                  f"the frame slider to move from {start:g} to {start + 1:g} on ArrowRight")
        self.wait(lambda: picture.get_attribute("src") != src, VIEWER_UPDATE_S,
                  "the viewer's picture to be redrawn after the frame slider moved (the kernel answers through "
                  "the widget's comm)")
        new_digest = picture.evaluate(IMG_DIGEST_JS)
        if new_digest == digest:
            self.fail("the viewer redrew the same picture for the next frame")
        self.wait(lambda: picture.evaluate("img => img.complete && img.naturalWidth > 0"), 10,
                  "the new picture to load")


def _stop_server(proc: subprocess.Popen, runtime_dir: Path) -> None:
    """SIGTERM to the server's process group (it shuts its kernels down), SIGKILL if it lingers; then any kernel
    of this server still alive (kernels run in sessions of their own: found by this server's runtime folder)."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(runtime_dir) in cmdline and "ipykernel" in cmdline:
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="module")
def lab(module_tmp) -> Lab:
    base = module_tmp("jupyterlab")
    root, workspace, config = base / "notebooks", base / "workspace", base / "jupyter-config"
    workspace.mkdir()
    _copy_notebooks(root)
    _write_lab_config(config)
    # What the server and so every kernel gets: the smoke profile, a workspace of its own, Jupyter's config, data
    # and runtime files and IPython's profile in this temporary folder; and the reader's inline figures
    # (conftest.py sets MPLBACKEND=Agg for nbval, which would turn off ipykernel's inline backend).
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "CITYSCAPES_DATASET", "JUPYTER_TOKEN")}
    env.update(SEG_PROFILE="smoke", SEG_WORKSPACE=str(workspace), JUPYTER_CONFIG_DIR=str(config),
               JUPYTER_DATA_DIR=str(base / "jupyter-data"), JUPYTER_RUNTIME_DIR=str(base / "jupyter-runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(config / "lab" / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(config / "lab" / "workspaces"), IPYTHONDIR=str(base / "ipython"))
    port, token = _free_port(), secrets.token_hex(24)
    log_path = base / "jupyterlab.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
             "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--LabApp.news_url=None", "--LabApp.extension_manager=readonly"],
            cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    lab_ = None
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}",
                            pytrace=False)
            try:
                urllib.request.urlopen(urllib.request.Request(
                    f"{base_url}/api/status", headers={"Authorization": f"token {token}"}), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n"
                                f"{log_path.read_text()[-3000:]}", pytrace=False)
                time.sleep(0.5)
        with sync_api.sync_playwright() as playwright:
            # a fresh profile (playwright's temporary one); Chromium's other files under this folder, not ~
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                env={**os.environ, "XDG_CONFIG_HOME": str(base / "xdg-config"),
                     "XDG_CACHE_HOME": str(base / "xdg-cache")})
            try:
                lab_ = Lab(base_url, token, root, workspace, base, browser)
                yield lab_
            finally:
                browser.close()
    finally:
        _stop_server(proc, base / "jupyter-runtime")
        shutil.rmtree(workspace, ignore_errors=True)  # 03's checkpoints: over 1 GB
        if lab_ is not None and lab_.seconds:
            print(f"JupyterLab runs: {', '.join(f'{k} {v:.0f} s' for k, v in lab_.seconds.items())}")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(lab: Lab, name: str) -> None:
    lab.run_earlier(name)
    lab.run(name)
