"""Chapter 8 as a JupyterLab user meets it (issue 28): JupyterLab runs headless, Debian's
chromium opens the chapter through Playwright, *Run All* executes it, *Optimize* of the live
explorer gives a new picture and status line, and no markdown cell shows a raw MyST role
(jupyterlab-myst, in the ``book`` extra, renders them as the book does).

It needs no built book (unlike tests/test_book_browser.py's ``browser`` tests), so it runs in
``make test``. The chapter runs on a copy with tiny parameters (one image in the precomputed
explorer, one mode recomputed, 2 live iterations), as tests/test_notebooks.py runs it. The
screenshots go to ``UPX_SCREENSHOT_DIR`` (default ``_build/screenshots``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "08_explore.ipynb"
TINY = {"check_modes": ["ftc"], "live_iterations": 2, "threads": 1,
        "explorer_images": ["n07836838_chocolate_sauce"],
        "results_dir": str(ROOT / "notebooks" / "results" / "explore")}
RAW_ROLES = ("{numref}", "{doc}", "{ref}", "{eq}", "{glue")


def _tiny_copy(folder: Path) -> Path:
    """The chapter with its parameters overridden in a cell after the tagged one, as papermill
    injects them (the copy sits outside notebooks/, so it names its results folder)."""
    nb = json.loads(CHAPTER.read_text())
    at = next(i for i, c in enumerate(nb["cells"])
              if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(f"{name} = {value!r}\n" for name, value in TINY.items())
    nb["cells"].insert(at + 1, {"cell_type": "code", "id": "injected-parameters",
                                "metadata": {"tags": ["injected-parameters"]},
                                "execution_count": None, "outputs": [], "source": source})
    path = folder / CHAPTER.name
    path.write_text(json.dumps(nb))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a tiny copy of chapter 8, with its own config,
    settings (every cell attached to the page, no news prompt) and runtime folders."""
    pytest.importorskip("jupyterlab")
    work = tmp_path / "work"
    work.mkdir()
    _tiny_copy(work)
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # 'none': every cell is in the DOM, so the test reads all of them without scrolling
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    labconfig = tmp_path / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    port = _free_port()
    # nothing of the user's Jupyter folders is read or written (the lab's extensions and the
    # python3 kernel come from the environment's own share/jupyter)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={work}", "--LabApp.extension_manager=readonly",
         f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(480):
            if server.poll() is not None:
                pytest.fail("JupyterLab exited:\n" + (tmp_path / "server.log").read_text())
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                time.sleep(0.25)
        else:
            pytest.fail("JupyterLab did not answer in 120 s")
        yield url
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def page(chromium):
    from upx_core import sample_path

    try:
        for name in ("umbrella", "chocolate sauce"):  # the images the tiny chapter loads
            sample_path(name)
    except RuntimeError as err:  # offline without UPX_DATA_DIR
        pytest.skip(str(err))
    tab = chromium.new_page(viewport={"width": 1280, "height": 1000})
    try:
        yield tab
    finally:
        tab.close()


# Resolves when the notebook's own press of Optimize has shown its result, or any cell shows
# an error (then the test fails with it instead of waiting out the timeout).
_RAN_OR_FAILED = """() => {
  const errors = document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
  if ([...errors].some(e => /Error|Traceback/.test(e.innerText))) return true;
  const status = document.querySelector('.upx-live-explorer .upx-live-status');
  return !!status && status.innerText.includes('→');
}"""

_LIVE = """() => {
  const img = document.querySelector('.upx-live-explorer img.upx-live-picture');
  const status = document.querySelector('.upx-live-explorer .upx-live-status');
  return {src: img ? img.src : '', width: img ? img.naturalWidth : 0,
          shown: !!img && img.checkVisibility(), status: status ? status.innerText : ''};
}"""


def _run_all(page, shots: Path) -> None:
    """Run > Run All Cells once the notebook's kernel is idle and the notebook has focus, and
    see that it queued the cells. A CI run on busy cores clicked it while the lab was still
    attaching the kernel: the command did nothing and all prompts stayed ``[ ]:`` for 15 min.
    One more press is allowed when the first queued nothing in 2 min."""
    idle = '.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]'
    try:
        page.wait_for_selector(idle, timeout=300_000)
    except Exception:
        page.screenshot(path=str(shots / "lab_08_no_kernel.png"), full_page=True)
        dialogs = page.locator(".jp-Dialog").all_inner_texts()
        pytest.fail(f"the chapter's kernel was not idle in 5 min; dialogs: {dialogs} "
                    "(screenshot lab_08_no_kernel.png)")
    started = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                   .some(p => /\\[(\\*|\\d+)\\]/.test(p.innerText))"""
    for _ in range(2):
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()  # the notebook is current
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(started, timeout=120_000, polling=500)
            return
        except Exception:
            continue
    page.screenshot(path=str(shots / "lab_08_run_all_failed.png"), full_page=True)
    pytest.fail("Run All Cells queued no cell, twice (screenshot lab_08_run_all_failed.png)")


def test_chapter_8_in_jupyterlab(lab, page):
    shots = Path(os.environ.get("UPX_SCREENSHOT_DIR") or ROOT / "_build" / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    # generous waits: on busy shared cores the lab's first load alone took over a minute
    page.set_default_timeout(180_000)
    page.goto(f"{lab}/lab/tree/{CHAPTER.name}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
    _run_all(page, shots)
    try:
        page.wait_for_function(_RAN_OR_FAILED, timeout=900_000, polling=500)
    except Exception:  # say how far Run All got, and keep the page to look at
        page.screenshot(path=str(shots / "lab_08_run_all_failed.png"), full_page=True)
        prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
        pytest.fail(f"Run All did not reach the live explorer's result in 15 min; the code "
                    f"cells' prompts: {prompts} (screenshot lab_08_run_all_failed.png)")
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    failed = [t for t in errors.all_inner_texts() if "Error" in t or "Traceback" in t]
    assert not failed, "a cell failed under Run All:\n" + "\n".join(failed)[:3000]

    first = page.evaluate(_LIVE)
    assert first["shown"] and first["width"] > 0, first
    live = page.locator(".upx-live-explorer")
    live.get_by_role("button", name="log_prob", exact=True).click()  # the objective control
    live.get_by_role("button", name="Optimize").click()
    page.wait_for_function(
        """(old) => {
             const img = document.querySelector('.upx-live-explorer img.upx-live-picture');
             const s = document.querySelector('.upx-live-explorer .upx-live-status').innerText;
             return img.src !== old.src && img.naturalWidth > 0 && s !== old.status
                    && s.includes('→');
           }""",
        arg=first, timeout=300_000, polling=250)
    after = page.evaluate(_LIVE)
    assert after["shown"] and after["status"].startswith("umbrella:"), after
    live.scroll_into_view_if_needed()
    live.screenshot(path=str(shots / "lab_08_live_explorer.png"))

    cells = page.locator(".jp-MarkdownCell")
    n_markdown = sum(c["cell_type"] == "markdown"
                     for c in json.loads(CHAPTER.read_text())["cells"])
    assert cells.count() == n_markdown
    assert page.locator(".jp-MarkdownCell.jp-mod-rendered").count() == n_markdown
    texts = cells.all_inner_texts()
    raw = [(role, text[:200]) for text in texts for role in RAW_ROLES if role in text]
    assert not raw, f"markdown cells show raw MyST roles: {raw}"
    # rendered by MyST: the role {doc}`01_perturbation` became a link with its target's name
    assert page.locator(".jp-MarkdownCell a", has_text="01_perturbation").count() >= 1
    cells.first.screenshot(path=str(shots / "lab_08_markdown.png"))
