"""The masks behind chapter 8's static explorer: case-study images x four modes x seven knobs
around the paper's values, lambda1 and lambda2 varied together (issues 12, 27).

Knobs (the others at Sect. 4.1's values lambda1 1.7, lambda2 3, beta 2, gamma 0.3, sigma 5
with an 11-pixel kernel, seed 0, objective prob, and ``--iterations`` Adam steps):

  lambda1,lambda2  the 3 x 3 grid of both weights: they pull against each other (TV against
                   L1), so one varied alone hides what the other does to it
  beta             the exponent inside the total variation
  gamma            F-TC and F-NTC only (the other modes have none)
  sigma            the blur, its kernel growing with it (2 sigma + 1 pixels: the paper's 5 and
                   11), since an 11-pixel window caps any sigma past 5 (chapter 1)
  iterations       Adam steps: 50, 100 and the paper's 200
  seed             the trial
  objective        prob (the paper's) or log_prob

Knobs of a mask (lambdas, beta, gamma, seed) share one optimizer call per image and config;
the config's (sigma, iterations, objective) take a call each. A setting that two knobs share
(the paper's values above all) is computed once and listed under every knob.

Writes to ``--out`` (default ``notebooks/results/explore``):
  masks.npz     the coarse 28 x 28 masks M, float32, one array per unique mask (``m0``, ...)
  explore.csv   one row per (image, mode, knob, value): the full setting, mask id,
                probabilities, the share of undesirable pixels
  explore.json  provenance (command, hardware, commit, optimizer_version, times, config)

``--estimate`` prints the masks and Adam steps (mask-iterations) the run would take, and stops.
Resumable: each (image, config) call is kept in ``<out>/.parts`` until all are done, and a
rerun skips the calls already there; parts from another optimizer version are refused. Usage
(from the repository root)::

    PYTHONPATH=. UPX_DATA_DIR=... python benchmarks/precompute_explore.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from upx_core import MaskSetting, OptimConfig, load_model, optimize_masks
from upx_core.book.chapter import load_sample
from upx_core.evaluation.provenance import (
    git_commit,
    optimizer_version,
    provenance,
    save_results,
)
from upx_core.method.metrics import undesirable_pixel_ratio

IMAGES = {  # sample file name -> target class, as chapters 3-6 use them
    "n07836838_chocolate_sauce": "chocolate sauce",
    "n04228054_ski": "ski",
    "n01871265_tusker": "African elephant",
    "n02667093_abaya": "abaya",
    "n03776460_mobile_home": "mobile home",
}
BOOK_IMAGES = ("n07836838_chocolate_sauce", "n04228054_ski")
MODES = ("baseline", "ftc", "fntc", "deletion")
DEFAULTS = {"lambda1": 1.7, "lambda2": 3.0, "beta": 2.0, "gamma": 0.3, "sigma": 5.0,
            "iterations": 100, "seed": 0, "objective": "prob"}
GRID = ("lambda1", "lambda2")
KNOBS = {
    "lambda1": (0.5, 1.7, 5.0),
    "lambda2": (1.0, 3.0, 9.0),
    "beta": (1.0, 2.0, 3.0),
    "gamma": (0.1, 0.3, 1.0),
    "sigma": (2.0, 5.0, 10.0),
    "iterations": (50, 100, 200),
    "seed": (0, 1, 2),
    "objective": ("prob", "log_prob"),
}
CONFIG_KNOBS = ("sigma", "iterations", "objective")
GAMMA_MODES = ("ftc", "fntc")


def kernel_for(sigma: float) -> int:
    """The blur's window grows with sigma, 2 sigma + 1 pixels (odd): 5 -> the paper's 11."""
    return 2 * round(sigma) + 1


def knob_rows(modes=MODES, knobs=KNOBS, defaults=DEFAULTS) -> list[dict]:
    """Every (mode, knob, value) the explorer shows, with the full setting it stands for. The
    lambdas are one knob, ``lambda1,lambda2``, over their grid; its value is ``"l1,l2"``."""
    rows = []
    for mode in modes:
        for l1 in knobs["lambda1"]:
            for l2 in knobs["lambda2"]:
                rows.append({"mode": mode, "knob": ",".join(GRID), "value": f"{l1:g},{l2:g}",
                             **{**defaults, "lambda1": l1, "lambda2": l2}})
        for knob, values in knobs.items():
            if knob in GRID or (knob == "gamma" and mode not in GAMMA_MODES):
                continue
            for value in values:
                rows.append({"mode": mode, "knob": knob, "value": value,
                             **{**defaults, knob: value}})
    return rows


def setting_key(row: dict) -> tuple:
    gamma = row["gamma"] if row["mode"] in GAMMA_MODES else DEFAULTS["gamma"]
    return (row["mode"], float(row["lambda1"]), float(row["lambda2"]), float(row["beta"]),
            float(gamma), int(row["seed"]))


def config_key(row: dict) -> tuple:
    return (row["objective"], float(row["sigma"]), int(row["iterations"]))


def config_for(key: tuple) -> OptimConfig:
    objective, sigma, iterations = key
    return OptimConfig(iterations=iterations, objective=objective, sigma=sigma,
                       kernel_size=kernel_for(sigma))


def part_name(image: str, key: tuple) -> str:
    objective, sigma, iterations = key
    return f"{image}__{objective}__s{sigma:g}__i{iterations}.pt"


def calls(rows: list[dict]) -> dict[tuple, list[tuple]]:
    """The optimizer calls one image takes: config key -> its unique settings, sorted."""
    out: dict[tuple, set] = {}
    for r in rows:
        out.setdefault(config_key(r), set()).add(setting_key(r))
    return {k: sorted(v) for k, v in sorted(out.items())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="notebooks/results/explore")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--images", nargs="*", default=list(BOOK_IMAGES), choices=list(IMAGES))
    parser.add_argument("--batch-size", type=int, default=16,
                        help="masks per forward pass (memory; the masks do not depend on it)")
    parser.add_argument("--estimate", action="store_true",
                        help="print the masks and mask-iterations the run takes, and stop")
    args = parser.parse_args(argv)
    rows = knob_rows()
    per_image = calls(rows)
    n_masks = sum(len(s) for s in per_image.values()) * len(args.images)
    steps = sum(len(s) * key[2] for key, s in per_image.items()) * len(args.images)
    print(f"{len(args.images)} images, {len(per_image)} optimizer calls each: {n_masks} masks, "
          f"{steps} mask-iterations", flush=True)
    if args.estimate:
        return 0
    out = Path(args.out)
    parts = out / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    # Read once, before the first mask: the modules and the checkout may change while this
    # runs, and the code that computes the masks is the code imported now.
    version, commit = optimizer_version(), git_commit()
    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    for name in args.images:
        x = load_sample(name, model)
        for key, keys in per_image.items():
            part = parts / part_name(name, key)
            if part.exists():
                continue
            settings = [MaskSetting(mode=m, lambda1=l1, lambda2=l2, beta=b, gamma=g, seed=s)
                        for m, l1, l2, b, g, s in keys]
            t0 = time.perf_counter()
            r = optimize_masks(model, x, targets=IMAGES[name], settings=settings,
                               config=config_for(key), device="cpu", progress=False,
                               keep_images=False, batch_size=args.batch_size)
            dt = time.perf_counter() - t0
            ratio = undesirable_pixel_ratio(r.masks_upsampled[0]).flatten()
            torch.save({"keys": keys, "masks": r.masks[0, :, 0].float().clone(),
                        "before": r.target_prob_before[0].clone(),
                        "after": r.target_prob_after[0].clone(), "ratio": ratio.clone(),
                        "seconds": dt, "target": r.class_name(int(r.targets[0, 0])),
                        "optimizer_version": version}, part)
            print(f"{name} {key}: {len(keys)} masks in {dt:.0f} s", flush=True)
    masks, table, seconds = {}, [], 0.0
    for name in args.images:
        loaded = {key: torch.load(parts / part_name(name, key)) for key in per_image}
        versions = {p["optimizer_version"] for p in loaded.values()}
        if versions != {version}:
            raise SystemExit(f"{parts}: parts of optimizer versions {sorted(versions)}, this "
                             f"checkout is {version}; delete the folder to recompute")
        seconds += sum(p["seconds"] for p in loaded.values())
        for row in rows:
            key = config_key(row)
            p = loaded[key]
            k = p["keys"].index(setting_key(row))
            mask_id = f"{name}|{part_name(name, key)}|{k}"
            if mask_id not in masks:
                masks[mask_id] = p["masks"][k].numpy().astype(np.float32)
            table.append({"image": name, "target": p["target"], "mode": row["mode"],
                          "knob": row["knob"], "value": row["value"],
                          "lambda1": row["lambda1"], "lambda2": row["lambda2"],
                          "beta": row["beta"], "gamma": setting_key(row)[4],
                          "sigma": row["sigma"], "kernel_size": kernel_for(row["sigma"]),
                          "iterations": row["iterations"], "seed": row["seed"],
                          "objective": row["objective"], "mask_id": mask_id,
                          "prob_before": float(p["before"][k]),
                          "prob_after": float(p["after"][k]),
                          "ratio": float(p["ratio"][k]), "batch_s": round(p["seconds"], 1)})
    ids = {mask_id: f"m{i}" for i, mask_id in enumerate(masks)}
    np.savez_compressed(out / "masks.npz", **{ids[k]: v for k, v in masks.items()})
    df = pd.DataFrame(table)
    df["mask_id"] = df["mask_id"].map(ids)
    meta = provenance(
        "PYTHONPATH=. python " + " ".join(["benchmarks/precompute_explore.py", *sys.argv[1:]]),
        wall_s=time.perf_counter() - start,
        optimizer_version=version, git_commit=commit, model=args.model,
        config=config_for((DEFAULTS["objective"], DEFAULTS["sigma"],
                           DEFAULTS["iterations"])).to_dict(),
        defaults=DEFAULTS, knobs={k: list(v) for k, v in KNOBS.items()},
        kernel_size="2 * sigma + 1", masks=len(masks), mask_iterations=steps,
        optimize_s=round(seconds, 1), threads=torch.get_num_threads(),
        note="wall_s covers this invocation only; optimize_s sums every call's optimizer time",
    )
    save_results(df, out / "explore.csv", meta)
    shutil.rmtree(parts)
    print(f"{len(masks)} masks, {len(df)} rows, optimizer {seconds:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
