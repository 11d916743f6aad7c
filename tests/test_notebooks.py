"""Every chapter runs headless through papermill with tiny parameters (one image, a few
iterations), so a broken cell shows up in ``make test`` and not only in the 11-minute book build.

The chapters' claims are asserted only at full size (their asserts are guarded by
``iterations >= 100``); here each notebook must run end to end, with its parameters passed the
way papermill passes them, and draw its figures.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# One image (or the fewest a chapter's comparison needs) and a few iterations each.
TINY = {
    "01_perturbation": {"sigmas": [1.0, 5.0], "kernel_sizes": [3, 11]},
    "02_objective": {"image_names": ["banana"], "seeds": [0, 1], "iterations": 3, "threads": 1},
    "03_ftc_fntc": {"image_names": ["mobile home", "schooner"], "seeds": [0, 1],
                    "iterations": 3, "threads": 1, "fntc_images": 2},
    # the random-box controls of chapters 4-5 with 8 boxes (the book: 200)
    "04_elephants": {"iterations": 3, "device": "cpu", "n_random_boxes": 8},
    "05_ski_chocolate": {"iterations": 3, "device": "cpu", "n_random_boxes": 8},
    "06_abaya": {"iterations": 3, "device": "cpu"},
    "07_evaluation": {"n_images": 1, "batch_images": 1, "iterations": 3, "device": "cpu"},
    # the stored masks are drawn, not recomputed; the live check recomputes one of them
    "08_explore": {"check_modes": ["ftc"], "live_iterations": 2, "threads": 1},
    "09_blackbox": {"live_queries": 42, "iterations": 4, "threads": 1},
    "10_readings": {},  # stored runs only
}


def test_every_chapter_has_tiny_parameters():
    assert sorted(TINY) == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def _parameters(path: Path) -> str:
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    return "".join(cells[0]["source"])


@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs_headless_with_tiny_parameters(name, tmp_path):
    source = NOTEBOOKS / f"{name}.ipynb"
    declared = _parameters(source)
    for key in TINY[name]:
        assert f"{key} =" in declared, f"{name} has no parameter {key!r}"
    parameters = dict(TINY[name])
    saved = tmp_path / "saved"
    if "out_dir =" in declared:  # chapters that can save their figures and tables must do so
        parameters["out_dir"] = str(saved)
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(source), str(out), parameters=parameters, cwd=str(NOTEBOOKS),
        kernel_name="python3", progress_bar=False, log_output=False,
    )
    if "out_dir" in parameters:
        assert sorted(p.suffix for p in saved.iterdir()) and \
            {p.stat().st_size > 0 for p in saved.iterdir()} == {True}, f"{name} saved nothing"
    executed = json.loads(out.read_text())
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code"
               for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # Chapter 8's pictures live inside its widgets (a Stack of PNGs), the others' are plain PNGs.
    shown = {"image/png", "application/vnd.jupyter.widget-view+json"}
    assert any(shown & set(o.get("data", {})) for o in outputs), f"{name} drew no figure"
    # every {glue:text} key once: myst-nb warns on a key glued twice, which fails the -W build
    glued = [o["metadata"]["scrapbook"]["name"] for o in outputs
             if "scrapbook" in o.get("metadata", {})]
    assert len(glued) == len(set(glued)), \
        f"{name} glues {sorted({k for k in glued if glued.count(k) > 1})} more than once"
    # myst-nb wraps *every* display output of a figure cell in its own numbered figure with the
    # cell's name, so a figure cell shows exactly one thing (a second is a duplicate label).
    for cell in executed["cells"]:
        if _figure(cell):
            displayed = [o for o in cell.get("outputs", [])
                         if o.get("output_type") in ("display_data", "execute_result")]
            assert len(displayed) <= 1, \
                f"{name}: figure cell {_figure(cell)['name']} shows {len(displayed)} outputs"
            assert all("image/png" in o["data"] for o in displayed), \
                f"{name}: figure cell {_figure(cell)['name']} shows something other than a figure"


# What a reader meets (issue 12): code is hidden behind a toggle, figures are numbered and
# captioned. Chapter 8 (widgets) is not held to this.
READER_CHAPTERS = [n for n in sorted(TINY) if n != "08_explore"]


def _figure(cell: dict) -> dict | None:
    return cell.get("metadata", {}).get("mystnb", {}).get("figure")


def test_chapters_hide_their_code_and_caption_their_figures():
    names = []
    for name in READER_CHAPTERS:
        nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            tags = cell.get("metadata", {}).get("tags", [])
            hides_source = "hide-input" in tags or "hide-cell" in tags  # hide-cell: both
            assert ("parameters" in tags) != hides_source, \
                f"{name} cell {i}: every code cell but the parameters one hides its source"
            assert not cell.get("outputs"), f"{name} cell {i}: stored with outputs"
            fig = _figure(cell)
            if fig:
                assert fig.get("name", "").startswith("fig-"), f"{name} cell {i}: figure name"
                assert len(fig.get("caption", "")) > 20, f"{name} cell {i}: no caption"
                names.append(fig["name"])
    assert len(names) == len(set(names)), "a figure name occurs twice (a duplicate label)"


def _ends_in_a_check(source: str) -> bool:
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    body = ast.parse("\n".join(lines)).body
    last = body[-1] if body else None
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and getattr(last.value.func, "attr", getattr(last.value.func, "id", "")) == "check"):
        return False
    after = lines[last.end_lineno - 1][last.end_col_offset:]
    return not after.lstrip().startswith(";")  # IPython shows no value after a semicolon


def test_no_cell_shows_a_claim_checks_return_value():
    """A claim check left as a cell's last expression prints a stray ``True`` under a table of
    the book (issue 27 section 6 found two in chapter 8; chapters 5 and 7 had three more)."""
    stray = [f"{path.stem} cell {i}" for path in sorted(NOTEBOOKS.glob("*.ipynb"))
             for i, cell in enumerate(json.loads(path.read_text())["cells"])
             if cell["cell_type"] == "code" and _ends_in_a_check("".join(cell["source"]))]
    assert not stray, f"these cells end in a claim check a reader sees as 'True': {stray}"


# Every "Try this" suggestion of these chapters runs (issue 27): each bullet's `name = value`
# assignments, read from the chapter's own "## Try this" section, on top of its tiny parameters.
# At 100+ iterations a reader's changed parameters would note a failed claim, not raise it
# (Claims(strict=False), upx_core.book.chapter.changed_parameters).
TRY_THIS_CHAPTERS = ("01_perturbation", "02_objective", "03_ftc_fntc", "04_elephants",
                     "05_ski_chocolate", "06_abaya")


def _try_this(name: str) -> list[dict]:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    text = next(("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"
                 and "".join(c["source"]).lstrip().startswith("## Try this")), "")
    suggestions = []
    for bullet in re.split(r"\n- ", text)[1:]:
        found = re.findall(r"`(\w+) = ([^`]+)`", bullet)
        if found:
            suggestions.append({key: ast.literal_eval(value) for key, value in found})
    return suggestions


TRY_THIS = [(name, i, suggestion) for name in TRY_THIS_CHAPTERS
            for i, suggestion in enumerate(_try_this(name))]


def test_try_this_suggestions_are_found():
    assert {name for name, _, _ in TRY_THIS} == {  # ch. 1 has none
        "02_objective", "03_ftc_fntc", "04_elephants", "05_ski_chocolate", "06_abaya"}
    assert {"image_names": ["schooner"], "modes": ["baseline", "ftc"],
            "seeds": [0, 1, 2, 3, 4]} in [s for _, _, s in TRY_THIS]
    # chapter 4's husky (a ClaimError at the tusker ranking before) and one-target run (a
    # KeyError on the Indian elephant's column before)
    assert {"image_name": "Siberian husky",
            "targets": ["Siberian husky", "Eskimo dog", "malamute"]} in [s for _, _, s in TRY_THIS]
    assert {"targets": ["African elephant"], "hyperparameters": {"lambda2": 6.0}} in \
        [s for _, _, s in TRY_THIS]


@pytest.mark.parametrize(("name", "i", "suggestion"), TRY_THIS,
                         ids=[f"{n}-{i}" for n, i, _ in TRY_THIS])
def test_try_this_runs(name, i, suggestion, tmp_path):
    declared = _parameters(NOTEBOOKS / f"{name}.ipynb")
    for key in suggestion:
        assert f"{key} =" in declared, f"{name}'s Try this sets {key!r}, not a parameter"
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters={**TINY[name], **suggestion},
        cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False, log_output=False,
    )
    executed = json.loads(out.read_text())
    assert not [o for c in executed["cells"] for o in c.get("outputs", [])
                if o.get("output_type") == "error"]


def _literals(source: str) -> dict:
    """The names a cell assigns to literals (a parameters cell), or its BOOK_RUN dict."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return found


def test_book_run_copies_the_parameters_cell():
    """A chapter whose claims are strict only in the book's own run keeps a copy of its
    parameters (BOOK_RUN); the copy is the parameters cell, every parameter that changes what
    the chapter computes (not where or how fast: device, threads, out_dir)."""
    checked = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        setup = [src for src in code if "BOOK_RUN = " in src]
        if not setup:
            continue
        params = _literals(_parameters(path))
        book = _literals(re.sub(r"^[%!].*$", "", setup[0], flags=re.M))["BOOK_RUN"]
        assert book == {k: v for k, v in params.items()
                        if k not in ("device", "threads", "out_dir")}, path.name
        checked.append(path.stem)
    assert {"02_objective", "03_ftc_fntc"} <= set(checked)
