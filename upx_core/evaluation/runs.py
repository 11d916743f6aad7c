"""The stored evaluation runs read back and compared (chapter 7): which runs there are and how
they were made, the two objectives on the same images, Tables 1-2 per stratum of confidence and
with the empty masks apart, the default objective's targets, two models on their shared images,
and the facts a run's discussion states.

A run is a table of :func:`upx_core.evaluation.protocol.run_evaluation` rows; ``runs`` maps a
label to one. The statistics themselves are :mod:`upx_core.evaluation.tables`'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .provenance import load_results
from .tables import (
    MODE_LABELS,
    by_confidence,
    mode_mean,
    paired_comparison,
    paired_runs,
    paired_wins,
    ratio_summary,
    run_label,
)

__all__ = ["StoredRuns", "load_stored_runs", "objective_runs", "confidence_correlation",
           "wins_table", "paired_table", "objective_comparison", "strata_table", "ratio_table",
           "run_facts", "live_agreement", "load_default_objective", "found_tables",
           "target_facts", "shared_image_runs", "model_table", "sample_accuracy",
           "published_top1", "PAIRS", "TARGET_BANDS"]

# The comparisons every table of wins and paired differences makes: (mode, mode it beats).
PAIRS = (("ftc", "random"), ("ftc", "baseline"), ("fntc", "random"), ("ftc", "fntc"))


@dataclass
class StoredRuns:
    """The evaluation tables of a results folder, each labelled ``"<run_label> (stored)"``:
    ``runs`` (label -> rows), ``files`` (label -> file stem), ``made`` (one row per run: run,
    file, modes, date, commit, hardware, wall minutes) and ``commands`` (run -> command)."""

    runs: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    made: pd.DataFrame = field(default_factory=pd.DataFrame)
    commands: dict[str, str] = field(default_factory=dict)


def load_stored_runs(folder: str | os.PathLike | None) -> StoredRuns:
    """Every evaluation table in ``folder`` (a CSV with ``model`` and ``mode`` columns) with
    what its JSON sidecar says of how it was made; none when ``folder`` is ``None``."""
    stored, made = StoredRuns(), []
    for name, df, meta in (load_results(folder) if folder else []):
        if "model" not in df or "mode" not in df:
            continue  # not an evaluation table
        label = run_label(df)
        stored.runs[f"{label} (stored)"] = df
        stored.files[f"{label} (stored)"] = name
        made.append({"run": label, "file": f"{name}.csv",
                     "modes": ", ".join(sorted(df["mode"].unique())),
                     "date": str(meta.get("date", "unknown"))[:10],
                     "commit": str(meta.get("git_commit", "unknown"))[:10],
                     "hardware": meta.get("hardware", "unknown (no sidecar JSON)"),
                     "wall (min)": meta["wall_s"] / 60 if "wall_s" in meta else float("nan")})
        stored.commands[label] = meta.get("command", "not recorded")
    stored.made = pd.DataFrame(made)
    return stored


def objective_runs(stored: StoredRuns, prefix: str = "cpu_200img") -> dict[str, tuple]:
    """The stored runs whose file starts with ``prefix`` (the Lite0 runs on the same 200
    images), one per objective: ``{objective: (label, rows)}``."""
    return {df["objective"].iloc[0]: (label, df) for label, df in stored.runs.items()
            if stored.files[label].startswith(prefix)}


def _ftc_spearman(df: pd.DataFrame) -> float:
    ftc = df[df["mode"] == "ftc"][["prob_before", "relative_improvement"]]
    return float(ftc.corr(method="spearman").iloc[0, 1])


def confidence_correlation(runs: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per run, the Spearman correlation of the top class's clean probability f_h(X) and F-TC's
    gain (Eq. 8): ``source``, ``Spearman r``."""
    return pd.DataFrame({"source": list(runs),
                         "Spearman r": [_ftc_spearman(df) for df in runs.values()]})


def wins_table(runs: Mapping[str, pd.DataFrame],
               pairs: Sequence[tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """One row per run, one column per pair ``"A > B"``: the share of (image, trial) on which
    mode A's relative improvement beats mode B's (:func:`paired_wins`); pairs a run lacks
    are left out (NaN)."""
    return pd.DataFrame({
        src: {f"{MODE_LABELS[a]} > {MODE_LABELS[b]}": paired_wins(df, a, b) for a, b in pairs
              if {a, b} <= set(df["mode"])}
        for src, df in runs.items()}).T


def paired_table(runs: Mapping[str, pd.DataFrame],
                 pairs: Sequence[tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """:func:`paired_comparison` of each pair in each run: one row per (run, comparison)."""
    return pd.DataFrame([
        {"run": src, "comparison": f"{MODE_LABELS[a]} - {MODE_LABELS[b]}",
         **paired_comparison(df, a, b)}
        for src, df in runs.items() for a, b in pairs if {a, b} <= set(df["mode"])])


def objective_comparison(a: pd.DataFrame, b: pd.DataFrame,
                         labels: tuple[str, str] = ("log-probability", "probability"),
                         modes: Sequence[str] = ("ftc", "fntc", "baseline")) -> pd.DataFrame:
    """Run ``a`` against run ``b`` on the images both hold (:func:`paired_runs`), per mode and
    measure (phi in points, the ratio in % of the image): both runs' means (named ``labels``),
    the mean difference a - b with its interval, the share of images where a is higher and
    the sign test. Indexed (mode, measure)."""
    rows = []
    for mode in modes:
        for measure, column, scale in (("phi (points)", "relative_improvement", 1),
                                       ("ratio (% of the image)", "ratio", 100)):
            r = paired_runs(a, b, mode, column)
            rows.append({"mode": MODE_LABELS[mode], "measure": measure, "images": r["images"],
                         labels[1]: scale * r["mean_b"], labels[0]: scale * r["mean_a"],
                         "difference": scale * r["mean_difference"],
                         "ci_low": scale * r["ci_low"], "ci_high": scale * r["ci_high"],
                         "share higher": r["share_a_higher"], "sign-test p": r["sign_test_p"]})
    return pd.DataFrame(rows).set_index(["mode", "measure"])


def strata_table(runs: Mapping[str, pd.DataFrame],
                 modes: Sequence[str] = ("ftc", "fntc")) -> pd.DataFrame:
    """:func:`by_confidence` of each run on the images every run holds, with an ``objective``
    column naming the run (``runs``' keys); only ``modes``."""
    shared = set.intersection(*(set(df["image_index"]) for df in runs.values()))
    strata = pd.concat([by_confidence(df[df["image_index"].isin(shared)]).assign(objective=name)
                        for name, df in runs.items()])
    return strata[strata["mode"].isin([MODE_LABELS[m] for m in modes])]


def ratio_table(runs: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """:func:`ratio_summary` of each run, indexed (run, mode), the empty masks in percent."""
    ratios = pd.concat([ratio_summary(df).assign(run=run_label(df))
                        for df in runs.values()]).set_index(["run", "mode"])
    ratios["empty_share"] *= 100
    return ratios


def run_facts(df: pd.DataFrame) -> dict[str, float]:
    """What the discussion of a run states, as numbers: F-TC's, F-NTC's, the random
    placement's and Eq. 3's phi (``*_phi``, Eq. 8 %), F-TC's thresholded phi and its share of
    F-TC's phi, the mean ratios (fractions, and ``*_pct`` in %), the shares of images where one
    mode beats another, F-TC's Spearman r with f_h(X), and of the images above 0.9 the share
    that gain less than 10 %."""
    ftc = df[df["mode"] == "ftc"]
    sure = ftc[ftc["prob_before"] > 0.9]
    facts = {
        "ftc_phi": mode_mean(df, "ftc"), "fntc_phi": mode_mean(df, "fntc"),
        "random_phi": mode_mean(df, "random"), "baseline_phi": mode_mean(df, "baseline"),
        "ftc_thr_phi": mode_mean(df, "ftc", "relative_improvement_thresholded"),
        "ftc_ratio": mode_mean(df, "ftc", "ratio"), "fntc_ratio": mode_mean(df, "fntc", "ratio"),
        "ftc_beats_random_share": paired_wins(df, "ftc", "random"),
        "eq3_beats_ftc_share": paired_wins(df, "baseline", "ftc"),
        "spearman": _ftc_spearman(df),
        "sure_small_gain_share": float((sure["relative_improvement"] < 10).mean()),
    }
    facts["thr_share"] = facts["ftc_thr_phi"] / facts["ftc_phi"]
    facts["ftc_ratio_pct"] = 100 * facts["ftc_ratio"]
    facts["fntc_ratio_pct"] = 100 * facts["fntc_ratio"]
    facts["eq3_wins_pct"] = 100 * facts["eq3_beats_ftc_share"]
    facts["ftc_beats_random"] = int(round(facts["ftc_beats_random_share"] * len(ftc)))
    return facts


KEYS = ["image_index", "mode", "seed"]
CONFIG_COLUMNS = ["model", "objective", "iterations", "lr", "init_noise", "reduction",
                  "ftc_form", "mask_size", "sigma", "kernel_size", "threshold"]


def live_agreement(live: pd.DataFrame,
                   runs: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """For each stored run with rows of the live run's settings (:data:`CONFIG_COLUMNS`) and
    images: per mode, phi of the live and the stored rows on the shared (image, mode, seed),
    and the shared images. Runs sharing nothing are left out."""
    agreement = {}
    for src, df in runs.items():
        shared = live.merge(df, on=KEYS + CONFIG_COLUMNS, suffixes=(" live", " stored"))
        if not shared.empty:
            table = shared.groupby("mode")[["relative_improvement live",
                                            "relative_improvement stored"]].mean()
            table["images"] = shared.groupby("mode")["image_index"].nunique()
            agreement[src] = table
    return agreement


# The groups of benchmarks/default_objective.py, in its order.
TARGET_BANDS = ["top, p < 0.5", "top, p 0.5-0.9", "top, p > 0.9", "class ranked 2",
                "class ranked 3"]


def load_default_objective(folder: str | os.PathLike | None) -> pd.DataFrame:
    """The stored default-objective run(s) in ``folder`` (every CSV, one row per (image,
    target rank, objective)); empty when there are none."""
    files = sorted(Path(folder).glob("*.csv")) if folder and Path(folder).is_dir() else []
    return pd.concat([pd.read_csv(f) for f in files]) if files else pd.DataFrame()


def found_tables(targets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per group of targets (:data:`TARGET_BANDS` and all) and objective: ``"n of m"`` targets
    for which F-TC found a mask, and the mean ratio of the masks (per group)."""
    found_n = targets.pivot_table(index="band", columns="objective", values="found",
                                  aggfunc="sum").reindex(TARGET_BANDS)
    all_n = targets.pivot_table(index="band", columns="objective", values="found",
                                aggfunc="count").reindex(TARGET_BANDS)
    found_n.loc["all targets"], all_n.loc["all targets"] = found_n.sum(), all_n.sum()
    found = found_n.astype(int).astype(str) + " of " + all_n.astype(int).astype(str)
    mean_ratio = targets.pivot_table(index="band", columns="objective",
                                     values="ratio").reindex(TARGET_BANDS)
    return found, mean_ratio


def target_facts(targets: pd.DataFrame) -> dict[str, float]:
    """What chapter 7 states of the default-objective run: how many runner-up (rank 2-3) and
    top targets there are and were found per objective (``*_log`` is the log-probability),
    how many only the probability found (``prob_only``), the runner-ups' mask sizes and their
    ratio between objectives, overall and among found masks, the found shares of runner-ups
    (``runner_share_*``) and the larger found share of the sure top classes (f_h(X) > 0.9)."""
    wide = targets.pivot_table(index=["image_index", "rank"], columns="objective",
                               values="found")
    runner, top = targets[targets["rank"] > 1], targets[targets["rank"] == 1]
    runner_found = runner.groupby("objective")["found"].sum()
    top_found = top.groupby("objective")["found"].sum()
    size = runner.groupby("objective")["ratio"].mean()
    size_found = runner[runner["found"] == 1].groupby("objective")["ratio"].mean()
    runner_share = runner.groupby("objective")["found"].mean()
    sure = top[top["band"] == "top, p > 0.9"].groupby("objective")["found"].mean()
    return {"images": targets["image_index"].nunique(),
            "runner_targets": runner["image_index"].nunique() * 2,
            "top_targets": top["image_index"].nunique(),
            "runner_found_prob": int(runner_found["prob"]),
            "runner_found_log": int(runner_found["log_prob"]),
            "top_found_prob": int(top_found["prob"]),
            "top_found_log": int(top_found["log_prob"]),
            "prob_only": int(((wide["prob"] == 1) & (wide["log_prob"] == 0)).sum()),
            "runner_size_log_pct": 100 * size["log_prob"],
            "runner_size_log": float(size["log_prob"]),
            "runner_size_factor": size["log_prob"] / size["prob"],
            "runner_size_found_factor": size_found["log_prob"] / size_found["prob"],
            "runner_share_prob": float(runner_share["prob"]),
            "runner_share_log": float(runner_share["log_prob"]),
            "sure_found_max": float(sure.max())}


def shared_image_runs(runs: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Per objective run by more than one model: the rows of every model on the images all of
    them hold, labelled ``"<objective>, <n> shared images"`` (duplicate rows of runs that
    overlap counted once)."""
    rows = pd.concat(list(runs.values()), ignore_index=True).drop_duplicates(
        ["model", "objective", "image_index", "mode", "seed"])
    shared = {}
    for obj, part in rows.groupby("objective"):
        image_sets = [set(p["image_index"]) for _, p in part.groupby("model")]
        if len(image_sets) > 1:
            common = set.intersection(*image_sets)
            shared[f"{obj}, {len(common)} shared images"] = (
                part[part["image_index"].isin(common)].sort_values("model"))
    return shared


def model_table(shared: Mapping[str, pd.DataFrame],
                pairs: Sequence[tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """One row per (shared-image run, model): the mean clean probability f_h(X) of the top
    class and the share of images on which one mode beats another (:data:`PAIRS`)."""
    return pd.DataFrame({
        (src, model): {
            "mean f_h(X), clean": df.loc[df["mode"] == "ftc", "prob_before"].mean(),
            **{f"{MODE_LABELS[a]} > {MODE_LABELS[b]}": paired_wins(df, a, b) for a, b in pairs},
        }
        for src, both in shared.items() for model, df in both.groupby("model")}).T


def sample_accuracy(folder: str | os.PathLike | None, model_name: str, mean: list[float],
                    std: list[float], images: int = 1000) -> list[float]:
    """Top-1 accuracies stored in ``folder``'s ``accuracy-samples-*.json`` (oldest file first)
    for ``model_name`` on ``images`` sample images with this normalization (``mean``,
    ``std``, as the model applies it)."""
    files = sorted(Path(folder).glob("accuracy-samples-*.json")) if folder else []
    return [r["top1"] / r["images"] for f in files for r in json.loads(f.read_text())["runs"]
            if r["model"] == model_name and r["images"] == images and r["mean"] == mean
            and r["std"] == std]


def published_top1() -> dict[str, float]:
    """The paper's two models' top-1 accuracy (%) on ImageNet's validation set, as torchvision
    publishes it with their weights (no download)."""
    import torchvision.models as tvm

    return {name: weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
            for name, weights in (("vgg19", tvm.VGG19_Weights.IMAGENET1K_V1),
                                  ("resnet18", tvm.ResNet18_Weights.IMAGENET1K_V1))}
