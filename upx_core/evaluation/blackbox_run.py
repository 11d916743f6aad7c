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

__all__ = ["FairRun", "QualityRun", "load_fair_run", "load_quality_run", "FOUND_PHI"]

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


def _method(name: str) -> tuple[str, int | None, int | None]:
    """(method, queries, seed) of a map's name in fair.json (``onnxruntime_4000_seed1`` ->
    ``("query-only", 4000, 1)``); methods this comparison leaves out give ``("", None, None)``."""
    parts = name.split("_")
    seed = int(parts[-1][4:]) if parts[-1].startswith("seed") else 0
    if parts[0] == "white":
        return "white-box", None, seed
    if parts[0] == "onnxruntime":
        return "query-only", int(parts[1]), seed
    if parts[0] == "tracking":
        return "query-only, tracking", int(parts[1]), seed
    if name.startswith("oracle_same_"):
        return "oracle, same directions", int(parts[2]), 0
    if parts[0] == "rise":
        return "RISE", int(parts[1]), seed
    if name == "occlusion":
        return "occlusion", None, None
    return "", None, None  # torch_1000 (the same masks as ONNX Runtime's), the stored oracle


@dataclass(frozen=True)
class FairRun:
    """``benchmarks/blackbox_fair.py``'s stored comparison (``fair.json``): one row per map and
    case with its area-matched phi (``phi_top1``, ``phi_top2``, ``phi_top5``: phi, Eq. 8, with
    only the top 1, 2, 5 % of the map's pixels blurred; ``phi_white_area``: as many as the
    white-box seed 0 mask blurs in all) and its Pearson r with white-box seed 0;
    ``quality``: the stored run whose masks it read (raw phi of seed 0's masks)."""

    rows: pd.DataFrame
    quality: QualityRun
    meta: dict
    seconds: dict[str, float]

    @cached_property
    def maps(self) -> pd.DataFrame:
        """The rows with their ``method``, ``queries`` and ``seed``, the left-out maps dropped;
        occlusion's queries filled in, the raw phi of the white-box masks and of seed 0's
        query-only masks from the stored run."""
        parts = pd.DataFrame([_method(n) for n in self.rows["map"]],
                             columns=["method", "budget", "trial"], index=self.rows.index)
        rows = pd.concat([self.rows, parts], axis=1)
        rows = rows[rows["method"] != ""].copy()
        if "queries" in rows:  # occlusion's m x m + 1
            rows.loc[rows["method"] == "occlusion", "budget"] = rows["queries"]
        q = self.quality
        stored = q.onnx.set_index(["target", "budget"])["phi"]
        zero = (rows["method"] == "query-only") & (rows["trial"] == 0)
        rows.loc[zero, "phi"] = [stored[(t, int(b))] for t, b in
                                 zip(rows.loc[zero, "target"], rows.loc[zero, "budget"],
                                     strict=True)]
        white = q.onnx.groupby("target")["white_phi"].first()
        seeds = q.seeds.set_index(["target", "backend"])["phi"]
        is_white = rows["method"] == "white-box"
        rows.loc[is_white, "phi"] = [
            white[t] if s == 0 else seeds[(t, f"white seed {int(s)}")]
            for t, s in zip(rows.loc[is_white, "target"], rows.loc[is_white, "trial"],
                            strict=True)]
        return rows

    @cached_property
    def ceiling(self) -> pd.Series:
        """Per target, the mean Pearson r of white-box seeds 1 and 2 with seed 0: how well a
        map can agree with seed 0's when it is another optimum of the same loss."""
        other = self.maps[(self.maps["method"] == "white-box") & (self.maps["trial"] > 0)]
        return other.groupby("target")["pearson_vs_white"].mean().rename("ceiling")

    def summary(self, targets: list[str] | None = None) -> pd.DataFrame:
        """Per target, method and budget: the trials, Pearson r with white-box seed 0 (median,
        min, max over trials; white-box seed 0 left out, being itself), its median as a share
        of :attr:`ceiling`, the median raw phi of the masks (Eq. 8 with the mask itself) and
        their mean blur (the mean of 1 - M'), and the median area-matched phi at 1, 2 and 5 %
        and at the white-box seed 0 mask's own blurred area (the mean of its 1 - M')."""
        rows = self.maps if targets is None else self.maps[self.maps["target"].isin(targets)]
        rows = rows.assign(budget=rows["budget"].fillna(0).astype(int))
        keys = ["target", "method", "budget"]
        r = rows[~((rows["method"] == "white-box") & (rows["trial"] == 0))]
        r = r.groupby(keys)["pearson_vs_white"].agg(["median", "min", "max"])
        r.columns = ["r median", "r min", "r max"]
        phi = rows.groupby(keys)[["phi_top1", "phi_top2", "phi_top5", "phi_white_area"]].median()
        phi.columns = ["phi top 1 %", "phi top 2 %", "phi top 5 %", "phi white-box area"]
        trials = rows.groupby(keys)["map"].count().rename("maps")
        raw = rows.groupby(keys)[["phi", "mean_blur"]].median()
        raw.columns = ["phi", "mean blur"]
        out = pd.concat([trials, r, raw, phi], axis=1).reset_index()
        out["r / ceiling"] = out["r median"] / out["target"].map(self.ceiling)
        order = {m: i for i, m in enumerate(["white-box", "query-only", "query-only, tracking",
                                             "oracle, same directions",
                                             "occlusion", "RISE"])}
        out = out.sort_values(["target", "method", "budget"],
                              key=lambda c: c.map(order) if c.name == "method" else c)
        return out[["target", "method", "budget", "maps", "r median", "r min", "r max",
                    "r / ceiling", "phi", "mean blur", "phi top 1 %", "phi top 2 %", "phi top 5 %",
                    "phi white-box area"]]


def load_fair_run(folder: str | os.PathLike) -> FairRun:
    """The fair comparison stored in ``folder`` (``fair.json``, beside the run it read)."""
    folder = Path(folder)
    stored = json.loads((folder / "fair.json").read_text())
    return FairRun(rows=pd.DataFrame(stored["rows"]), quality=load_quality_run(folder),
                   meta=stored["provenance"], seconds=stored["seconds"])
