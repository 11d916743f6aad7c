"""Chapter 8's kernel-free explorer (upx_core.book.widgets.tree_explorer): two knobs moved
together, the view it opens on, and a page that carries each picture once."""

from __future__ import annotations

import pytest

widgets = pytest.importorskip("ipywidgets")

from upx_core.book.widgets import tree_explorer  # noqa: E402

L1, L2 = (0.5, 1.7, 5.0), (1.0, 3.0, 9.0)


def _tree() -> dict:
    """image -> mode -> knob -> value(s) -> picture; the lambdas are one knob over their grid,
    whose middle is the same picture as the seed knob's first value (the paper's values)."""
    tree = {}
    for im in ("chocolate sauce", "ski"):
        for m in ("baseline", "ftc"):
            paper = f"{im}|{m}|paper".encode()
            grid = {a: {b: paper if (a, b) == (1.7, 3.0) else f"{im}|{m}|{a}|{b}".encode()
                        for b in L2} for a in L1}
            seeds = {s: paper if s == 0 else f"{im}|{m}|seed{s}".encode() for s in (0, 1)}
            tree.setdefault(im, {})[m] = {("λ₁", "λ₂"): grid, "seed": seeds}
    return tree


def test_a_tuple_knob_has_a_slider_per_name_linked_to_nested_stacks():
    box = tree_explorer(_tree(), ["image", "mode", "knob", "value"], format="webp")
    c = box.controls
    assert [label for label, _ in c["knob"].options] == ["λ₁ × λ₂", "seed"]
    s1, s2 = c["value"][("λ₁", "λ₂")]
    assert s1.description == "λ₁ =" and s1.options == ("0.5", "1.7", "5")
    assert s2.description == "λ₂ =" and s2.options == ("1", "3", "9")
    assert isinstance(c["value"]["seed"], widgets.SelectionSlider)
    sliders = box.children[-2]  # the chosen knob's sliders: a VBox of two for the grid
    assert isinstance(sliders.children[0], widgets.VBox)
    assert list(sliders.children[0].children) == [s1, s2]
    grid = box.children[-1].children[1].children[0].children[0]  # ski, baseline, the grid
    outer = {(ln.source[0].model_id, ln.target[0].model_id) for ln in box.links}
    assert (s1.model_id, grid.model_id) in outer
    assert all((s2.model_id, inner.model_id) in outer for inner in grid.children)
    picture = grid.children[2].children[0]  # lambda1 5, lambda2 1
    assert bytes(picture.value) == b"ski|baseline|5.0|1.0" and picture.format == "webp"


def test_start_opens_on_the_chosen_view_and_the_paper_s_values():
    box = tree_explorer(_tree(), ["image", "mode", "knob", "value"], format="webp",
                        start={"image": "ski", "mode": "ftc",
                               "value": {("λ₁", "λ₂"): (1.7, 3.0), "seed": 1}})
    c = box.controls
    assert (c["image"].value, c["mode"].value, c["knob"].value) == (1, 1, 0)
    s1, s2 = c["value"][("λ₁", "λ₂")]
    assert (s1.value, s2.value) == ("1.7", "3") and c["value"]["seed"].value == "1"
    pictures = box.children[-1]
    assert pictures.selected_index == 1  # ski
    modes = pictures.children[1]
    assert modes.selected_index == 1  # F-TC
    grid = modes.children[1].children[0]
    assert grid.selected_index == 1 and grid.children[1].selected_index == 1
    assert bytes(grid.children[1].children[1].value) == b"ski|ftc|paper"
    with pytest.raises(ValueError, match="not an option"):
        tree_explorer(_tree(), ["image", "mode", "knob", "value"], start={"image": "abaya"})
    with pytest.raises(ValueError, match="not a value"):
        tree_explorer(_tree(), ["image", "mode", "knob", "value"],
                      start={"value": {"seed": 7}})


def test_a_picture_two_knobs_share_is_one_widget_and_layouts_are_shared():
    box = tree_explorer(_tree(), ["image", "mode", "knob", "value"], format="webp")
    modes = box.children[-1].children[0]  # chocolate sauce
    knobs = modes.children[0]  # baseline: the grid, the seed
    in_grid = knobs.children[0].children[1].children[1]  # lambda1 1.7, lambda2 3
    under_seed = knobs.children[1].children[0]  # seed 0
    assert in_grid is under_seed

    def walk(w):
        yield w
        for child in getattr(w, "children", ()):
            yield from walk(child)

    images = [w for w in walk(box.children[-1]) if isinstance(w, widgets.Image)]
    assert len(images) > 8 and len({id(w.layout) for w in images}) == 1
    stacks = [box.children[-1], modes, knobs, knobs.children[0]]
    assert len({id(s.layout) for s in stacks}) == 1
