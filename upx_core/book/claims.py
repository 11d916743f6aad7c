"""The book's claims: each sentence with a number, an order or a comparison, checked and kept.

A chapter states a claim in words and checks it with the bound those words state::

    claims = Claims("05_ski_chocolate", out=out)
    claims.check("ski: mean junction-box share over trials (log_prob)", share, above=0.5)

Each check is one row of :meth:`Claims.table` (claim, value, bound, holds), written to
``out/claims.csv`` after every check when the chapter saves its outputs, so a run that stops at
a failed claim still records it. ``benchmarks/arithmetic_paths.py`` runs the chapters under
other floating-point paths (CPU kernels, threads, batch-norm folding) and compares these tables
claim by claim: a claim of the book has to hold on every path, not on one trajectory.

A failed check raises :class:`AssertionError` naming the claim, its value and its bound. With
``active=False`` (the chapters' tiny test runs, whose values mean nothing) or with the
environment variable ``UPX_CLAIMS=record`` (the path survey, which wants every value, not the
first failure) checks are recorded and never raise. With ``strict=False`` (a reader's run
with changed parameters, :func:`upx_core.book.chapter.changed_parameters`) a failed check is
recorded and printed as a note, and the chapter goes on.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..files import atomic_write_bytes

__all__ = ["Claim", "Claims", "ClaimError"]

RECORD_ENV = "UPX_CLAIMS"


class ClaimError(AssertionError):
    """A claim of the book that its numbers do not support."""


@dataclass(frozen=True)
class Claim:
    chapter: str
    claim: str
    value: float | int | str | bool
    bound: str
    holds: bool


def _number(value):
    """Plain Python scalars, so the table and the message print them readably."""
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        value = value.item()
    return value


class Claims:
    """The claims of one chapter, checked one by one and kept in a table."""

    def __init__(self, chapter: str, out: str | os.PathLike | None = None,
                 active: bool = True, strict: bool = True) -> None:
        self.chapter = chapter
        self.out = Path(out) if out is not None else None
        self.active = active
        self.strict = strict
        self.record_only = os.environ.get(RECORD_ENV, "").strip().lower() == "record"
        self._rows: list[Claim] = []

    def check(self, claim: str, value, *, above=None, below=None, at_least=None, at_most=None,
              equals=None) -> bool:
        """Record ``value`` against the bound its sentence states; raise if it does not hold.

        ``above``/``below`` are strict (``>``/``<``), ``at_least``/``at_most`` inclusive;
        several bounds must all hold. ``equals`` compares exactly (class names, orders, counts).
        """
        value = _number(value)
        bounds = {"> ": above, "< ": below, ">= ": at_least, "<= ": at_most, "== ": equals}
        given = {op: _number(b) for op, b in bounds.items() if b is not None}
        if not given:
            raise ValueError(f"claim {claim!r}: give a bound (above, below, at_least, at_most "
                             "or equals)")
        holds = all(self._holds(op, value, b) for op, b in given.items())
        bound = " and ".join(f"{op}{b!r}" if isinstance(b, str) else f"{op}{b:g}"
                             if isinstance(b, float) else f"{op}{b}" for op, b in given.items())
        self._rows.append(Claim(self.chapter, claim, value, bound, bool(holds)))
        self._save()
        if not holds and self.active and not self.record_only:
            shown = f"{value:.4g}" if isinstance(value, float) else repr(value)
            message = f"claim {claim!r} does not hold: {shown}, needs {bound}"
            if not self.strict:  # a reader's parameters: the book's sentence is about its own
                print(f"note: with these parameters, {message} (the book's run holds it)")
                return False
            raise ClaimError(f"{self.chapter}: {message}")
        return bool(holds)

    @staticmethod
    def _holds(op: str, value, bound) -> bool:
        if op == "== ":
            return value == bound
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        return {"> ": value > bound, "< ": value < bound, ">= ": value >= bound,
                "<= ": value <= bound}[op]

    def table(self) -> pd.DataFrame:
        """Every claim checked so far: chapter, claim, value, bound, holds."""
        columns = ["chapter", "claim", "value", "bound", "holds"]
        return pd.DataFrame([asdict(r) for r in self._rows], columns=columns)

    def _save(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.out / "claims.csv", self.table().to_csv(index=False).encode())
