"""The modes: one registry entry per loss the optimizer can minimize, and its one function.

Each :class:`Mode` says what a mask of that mode is, in the words every table, figure and summary
uses, and gives the two mode-specific parts of its loss (Eq. 3, 5, 7): the first term, built
from the target's gain f_k and the other classes' mass sum_{i != k} f_i (as the objective reads
them: probabilities, log-probabilities or logits), and the factor regularizer R_F-TC or R_F-NTC,
or None. ``loss_terms`` (:mod:`upx_core.method.equations`) adds R_M, which every mode shares.
Adding a mode is one entry of :data:`MODE_REGISTRY` and one function.

This module imports no torch, so that the command line can list the modes without it; the loss
functions receive the tensors they combine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MODE_REGISTRY", "LossParts", "Mode"]


class LossParts(Protocol):
    """What a mode's loss function combines, per mask ``[N]``: ``gain`` (f_k as the objective
    reads it), ``others`` (sum_{i != k} f_i, likewise), and the factor regularizers of Eq. 4
    and Eq. 6 as methods, computed only by the modes that call them."""

    gain: Any
    others: Any

    def ftc(self) -> Any: ...

    def fntc(self) -> Any: ...


@dataclass(frozen=True)
class Mode:
    """One mode. ``label``: its name in tables (``baseline (Eq. 3)``); ``title``: in a figure's
    panel title (``Eq. 3``); ``looks_for``: what ``upx explain`` says it looked for;
    ``crucial``: its blurred pixels are the ones the class needs (deletion), not undesirable
    ones; ``loss``: ``LossParts -> (first term, factor regularizer or None)``."""

    name: str
    label: str
    title: str
    looks_for: str
    loss: Callable[[LossParts], tuple[Any, Any | None]]
    crucial: bool = False


def _baseline(p: LossParts):
    """Eq. 3: -f_k(Q), no factor regularizer."""
    return -p.gain, None


def _ftc(p: LossParts):
    """Eq. 5: -f_k(Q) + R_F-TC."""
    return -p.gain, p.ftc()


def _fntc(p: LossParts):
    """Eq. 7: sum_{i != k} f_i(Q) + R_F-NTC."""
    return p.others, p.fntc()


def _deletion(p: LossParts):
    """Fong and Vedaldi's deletion game (the paper's ref. [3]): +f_k(Q), the target lowered."""
    return p.gain, None


# The order is each mode's index in a batch (``loss_terms``'s ``mode`` tensor).
MODE_REGISTRY: dict[str, Mode] = {m.name: m for m in (
    Mode("baseline", "baseline (Eq. 3)", "Eq. 3",
         "pixels whose blur raises the target (Eq. 3)", _baseline),
    Mode("ftc", "F-TC", "F-TC",
         "pixels that hinder the target itself, other classes held (F-TC, Eq. 5)", _ftc),
    Mode("fntc", "F-NTC", "F-NTC",
         "pixels that favour the other classes (F-NTC, Eq. 7)", _fntc),
    Mode("deletion", "deletion", "deletion",
         "pixels whose blur lowers the target (Fong & Vedaldi's deletion)", _deletion,
         crucial=True),
)}
