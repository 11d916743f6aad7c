"""The stored query-only run read back (``benchmarks/blackbox_quality.py``, chapter 9): how close
the query-only F-TC mask comes to the white-box one per query budget, the oracle estimator and
the other white-box seeds beside it, and what each budget cost.

The run's folder holds ``quality.json`` (its rows, cases, throughput and provenance) and
``masks.npz`` (the 28 x 28 masks M of every backend and budget, one per case).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..method.equations import upsample_mask

__all__ = ["QualityRun", "load_quality_run", "FOUND_PHI"]

# A white-box mask "finds something" when it raises its target by at least this phi (Eq. 8, %).
FOUND_PHI = 10.0


@dataclass(frozen=True)
class QualityRun:
    """One stored run: ``rows`` (one per image, backend and budget), ``masks`` (name ->
    ``[cases, m, m]``), ``cases`` (sample, target) pairs, ``throughput`` (backend -> batch size ->
    images/s) and ``meta`` (its provenance)."""

    rows: pd.DataFrame
    masks: dict[str, np.ndarray]
    cases: list[tuple[str, str]]
    throughput: dict[str, dict[str, float]]
    meta: dict

    def _backend(self, name: str) -> pd.DataFrame:
        return self.rows[self.rows["backend"] == name].astype({"budget": int})

    @cached_property
    def onnx(self) -> pd.DataFrame:
        """The query-only masks through ONNX Runtime, one row per (image, budget)."""
        return self._backend("onnxruntime")

    @cached_property
    def oracle(self) -> pd.DataFrame:
        """The oracle estimator (exact directional derivatives), one row per (image, budget)."""
        return self._backend("oracle")

    @cached_property
    def seeds(self) -> pd.DataFrame:
        """The other white-box trials (``white seed 1``, ...), compared with seed 0."""
        return self.rows[self.rows["backend"].str.startswith("white seed")]

    @property
    def objective(self) -> str:
        return str(self.rows["objective"].iloc[0])

    @cached_property
    def budgets(self) -> list[int]:
        """The query-only budgets, smallest first."""
        return sorted(int(b) for b in self.onnx["budget"].unique())

    @property
    def top(self) -> int:
        return self.budgets[-1]

    @cached_property
    def timing(self) -> pd.Series:
        """Seconds per query-only mask, indexed (backend, budget) for ONNX Runtime and torch."""
        timed = self.rows[self.rows["backend"].isin(["onnxruntime", "torch"])]
        return (timed.astype({"budget": int}).groupby(["backend", "budget"])["seconds_per_mask"]
                .first().rename("s per mask"))

    @cached_property
    def found(self) -> list[str]:
        """The targets whose white-box mask finds something (phi >= :data:`FOUND_PHI`), sorted."""
        return sorted(self.onnx.loc[self.onnx["white_phi"] >= FOUND_PHI, "target"].unique())

    def at_budget(self, budget: int, rows: pd.DataFrame | None = None) -> pd.DataFrame:
        """The query-only rows (or ``rows``) of one budget, indexed by target."""
        rows = self.onnx if rows is None else rows
        return rows[rows["budget"] == budget].set_index("target")

    @cached_property
    def seed_agreement(self) -> pd.DataFrame:
        """Pearson r of each other white-box seed's map with seed 0's: target x backend."""
        return self.seeds.pivot(index="target", columns="backend", values="pearson_vs_white")

    @cached_property
    def oracle_agreement(self) -> pd.DataFrame:
        """The oracle's Pearson r with white-box seed 0: target x budget."""
        return self.oracle.pivot(index="target", columns="budget", values="pearson_vs_white")

    def table(self) -> pd.DataFrame:
        """The query-only masks against white-box seed 0, per target and budget: r, phi and the
        white-box phi, phi's share of it, and both ratios in percent."""
        t = self.onnx.assign(phi_share=self.onnx["phi"] / self.onnx["white_phi"],
                             ratio_pct=100 * self.onnx["ratio"],
                             white_ratio_pct=100 * self.onnx["white_ratio"])
        t = t[["target", "budget", "pearson_vs_white", "phi", "white_phi", "phi_share",
               "ratio_pct", "white_ratio_pct"]].sort_values(["target", "budget"])
        return t.rename(columns={
            "pearson_vs_white": "r vs white-box", "white_phi": "white-box phi",
            "phi_share": "phi share", "ratio_pct": "ratio %",
            "white_ratio_pct": "white-box ratio %"})

    def undesirable(self, name: str, size: tuple[int, int]) -> torch.Tensor:
        """1 - M' of the stored masks ``name`` (``"white"``, ``"onnxruntime_16000"``, ...),
        upsampled to ``size``: ``[cases, H, W]``."""
        m = torch.from_numpy(self.masks[name]).float()[:, None]
        return 1 - upsample_mask(m, size)[:, 0]


def load_quality_run(folder: str | os.PathLike) -> QualityRun:
    """The run stored in ``folder`` (``quality.json`` and ``masks.npz``)."""
    folder = Path(folder)
    stored = json.loads((folder / "quality.json").read_text())
    with np.load(folder / "masks.npz") as masks:
        arrays = {k: masks[k] for k in masks.files}
    return QualityRun(rows=pd.DataFrame(stored["rows"]), masks=arrays,
                      cases=[tuple(c) for c in stored["cases"]],
                      throughput=stored["throughput"], meta=stored["provenance"])
