"""The registry of modes (upx_core/method/modes.py): each entry's loss parts, the names every
table, figure and summary takes from it, and a new entry reaching the optimizer's loss."""

from __future__ import annotations

import pytest
import torch

from upx_core.evaluation.tables import MODE_LABELS, MODE_ORDER
from upx_core.method import modes as modes_module
from upx_core.method.config import MODES, OptimConfig
from upx_core.method.equations import loss_terms
from upx_core.method.modes import MODE_REGISTRY, Mode
from upx_core.plotting import MODE_NAMES, heatmap_title
from upx_core.report import MODE_WORDS


class _Parts:
    gain = torch.tensor([0.25])
    others = torch.tensor([0.75])

    def ftc(self):
        return torch.tensor([0.125])

    def fntc(self):
        return torch.tensor([0.5])


@pytest.mark.parametrize("name, term, penalty", [
    ("baseline", -0.25, None),   # Eq. 3: -f_k
    ("ftc", -0.25, 0.125),       # Eq. 5: -f_k + R_F-TC
    ("fntc", 0.75, 0.5),         # Eq. 7: sum_{i != k} f_i + R_F-NTC
    ("deletion", 0.25, None),    # ref. [3]: +f_k
])
def test_each_mode_combines_its_parts_as_its_equation(name, term, penalty):
    got_term, got_penalty = MODE_REGISTRY[name].loss(_Parts())
    assert float(got_term) == term
    assert (got_penalty is None) if penalty is None else float(got_penalty) == penalty


def test_every_name_comes_from_the_registry():
    assert MODES == ("baseline", "ftc", "fntc", "deletion") == tuple(MODE_REGISTRY)
    assert {m: MODE_LABELS[m] for m in MODES} == {
        "baseline": "baseline (Eq. 3)", "ftc": "F-TC", "fntc": "F-NTC", "deletion": "deletion"}
    assert MODE_NAMES == {"baseline": "Eq. 3", "ftc": "F-TC", "fntc": "F-NTC",
                          "deletion": "deletion"}
    assert set(MODE_WORDS) == set(MODES)
    assert MODE_ORDER[:4] == ("ftc", "fntc", "baseline", "random") and set(MODE_ORDER) == {
        *MODES, "random"}
    assert list(MODE_LABELS) == list(MODE_ORDER)  # figures list the labels in this order
    assert heatmap_title("deletion") == "crucial pixels (deletion)"
    assert heatmap_title("fntc") == "undesirable pixels (F-NTC)"


def test_a_new_entry_is_a_mode_of_the_loss(monkeypatch):
    """One entry and one function: a mode that doubles Eq. 3's pull is minimized as written,
    beside the built-in modes in one batch, and the others are unchanged."""
    double = Mode("double", "double (2 x Eq. 3)", "2 x Eq. 3", "pixels, twice",
                  lambda p: (-2 * p.gain, None))
    monkeypatch.setitem(modes_module.MODE_REGISTRY, "double", double)
    logits = torch.tensor([[1.0, 2.0, 0.5], [1.0, 2.0, 0.5]])
    mask = torch.ones(2, 1, 4, 4)
    target, mode = torch.tensor([1, 1]), torch.tensor([0, 4])  # baseline, double
    ones = torch.ones(2)
    out = loss_terms(logits, logits, mask, target, mode, ones, ones, ones, ones,
                     OptimConfig(objective="prob"))
    p_k = torch.softmax(logits[0], dim=0)[1]
    assert float(out["f_term"][0]) == pytest.approx(float(-p_k), abs=1e-7)
    assert float(out["f_term"][1]) == pytest.approx(float(-2 * p_k), abs=1e-7)
    assert out["r_factors"].tolist() == [0.0, 0.0]
