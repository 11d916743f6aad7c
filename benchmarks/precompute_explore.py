"""The masks behind chapter 8's static explorer: five case-study images, four modes, and one
knob varied at a time around the paper's defaults (issue 12).

Knobs (each varied alone, the others at Sect. 4.1's values lambda1 1.7, lambda2 3, gamma 0.3,
seed 0, objective prob): lambda1, lambda2, gamma (F-TC and F-NTC only: the other modes have no
gamma), seed (the trial) and objective (an OptimConfig field, so a second optimize call). The
default setting is computed once per (image, mode, objective) and listed under every knob.

Writes to ``--out`` (default ``notebooks/results/explore``):
  masks.npz     the coarse 28 x 28 masks M, float32, one array per unique mask (``m0``, ...)
  explore.csv   one row per (image, mode, knob, value): target, mask id, probabilities, ratio
  explore.json  provenance (command, hardware, commit, optimizer_version, wall time, config)

``--live-picture PATH`` instead saves what chapter 8's live explorer shows after one press of
*Optimize* with its default controls on the umbrella (its picture, with its status line as
the title): the static book shows that picture in place of the widget, which needs a kernel.

Resumable: each (image, objective) batch is kept in ``<out>/.parts`` until all are done, and a
rerun skips the batches already there. Usage (from the repository root)::

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
from upx_core.evaluation.provenance import optimizer_version, provenance, save_results
from upx_core.method.metrics import undesirable_pixel_ratio

IMAGES = {  # sample file name -> target class, as chapters 4-6 use them
    "n01871265_tusker": "African elephant",
    "n04228054_ski": "ski",
    "n07836838_chocolate_sauce": "chocolate sauce",
    "n02667093_abaya": "abaya",
    "n03776460_mobile_home": "mobile home",
}
MODES = ("baseline", "ftc", "fntc", "deletion")
DEFAULTS = {"lambda1": 1.7, "lambda2": 3.0, "gamma": 0.3, "seed": 0, "objective": "prob"}
KNOBS = {
    "lambda1": (0.5, 1.7, 5.0),
    "lambda2": (1.0, 3.0, 9.0),
    "gamma": (0.1, 0.3, 1.0),
    "seed": (0, 1, 2),
    "objective": ("prob", "log_prob"),
}
GAMMA_MODES = ("ftc", "fntc")


def knob_rows(modes=MODES, knobs=KNOBS) -> list[dict]:
    """Every (mode, knob, value) the explorer shows, with the full setting it stands for."""
    rows = []
    for mode in modes:
        for knob, values in knobs.items():
            if knob == "gamma" and mode not in GAMMA_MODES:
                continue
            for value in values:
                rows.append({"mode": mode, "knob": knob, "value": value,
                             **{**DEFAULTS, knob: value}})
    return rows


def setting_key(row: dict) -> tuple:
    gamma = row["gamma"] if row["mode"] in GAMMA_MODES else DEFAULTS["gamma"]
    return (row["mode"], float(row["lambda1"]), float(row["lambda2"]), float(gamma),
            int(row["seed"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="notebooks/results/explore")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--images", nargs="*", default=list(IMAGES))
    parser.add_argument("--live-picture", default=None,
                        help="save the live explorer's picture here and stop")
    args = parser.parse_args(argv)
    if args.live_picture:
        return live_picture(Path(args.live_picture), args.model)
    out = Path(args.out)
    parts = out / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    rows = knob_rows()
    objectives = list(KNOBS["objective"])
    computed_s = 0.0
    for name in args.images:
        x = load_sample(name, model)
        for objective in objectives:
            part = parts / f"{name}__{objective}.pt"
            if part.exists():
                continue
            keys = sorted({setting_key(r) for r in rows if r["objective"] == objective})
            settings = [MaskSetting(mode=m, lambda1=l1, lambda2=l2, gamma=g, seed=s)
                        for m, l1, l2, g, s in keys]
            config = OptimConfig(iterations=args.iterations, objective=objective)
            t0 = time.perf_counter()
            r = optimize_masks(model, x, targets=IMAGES[name], settings=settings, config=config,
                               device="cpu", progress=False, keep_images=False)
            dt = time.perf_counter() - t0
            computed_s += dt
            ratio = undesirable_pixel_ratio(r.masks_upsampled[0]).flatten()
            torch.save({"keys": keys, "masks": r.masks[0, :, 0].float().clone(),
                        "before": r.target_prob_before[0].clone(),
                        "after": r.target_prob_after[0].clone(), "ratio": ratio.clone(),
                        "seconds": dt, "target": r.class_name(int(r.targets[0, 0]))}, part)
            print(f"{name} {objective}: {len(keys)} masks in {dt:.0f} s", flush=True)
    masks, table = {}, []
    for name in args.images:
        for objective in objectives:
            p = torch.load(parts / f"{name}__{objective}.pt")
            index = {key: k for k, key in enumerate(p["keys"])}
            for row in (r for r in rows if r["objective"] == objective):
                k = index[setting_key(row)]
                mask_id = f"{name}|{objective}|{k}"
                if mask_id not in masks:
                    masks[mask_id] = p["masks"][k].numpy().astype(np.float32)
                table.append({"image": name, "target": p["target"], "mode": row["mode"],
                              "knob": row["knob"], "value": row["value"],
                              "lambda1": row["lambda1"], "lambda2": row["lambda2"],
                              "gamma": setting_key(row)[3], "seed": row["seed"],
                              "objective": objective, "mask_id": mask_id,
                              "prob_before": float(p["before"][k]),
                              "prob_after": float(p["after"][k]),
                              "ratio": float(p["ratio"][k]), "batch_s": round(p["seconds"], 1)})
    ids = {mask_id: f"m{i}" for i, mask_id in enumerate(masks)}
    np.savez_compressed(out / "masks.npz", **{ids[k]: v for k, v in masks.items()})
    df = pd.DataFrame(table)
    df["mask_id"] = df["mask_id"].map(ids)
    batch_s = sum(torch.load(f)["seconds"] for f in parts.glob("*.pt"))
    meta = provenance(
        "PYTHONPATH=. python " + " ".join(["benchmarks/precompute_explore.py", *sys.argv[1:]]),
        wall_s=time.perf_counter() - start,
        optimizer_version=optimizer_version(), model=args.model,
        config=OptimConfig(iterations=args.iterations).to_dict(), defaults=DEFAULTS,
        knobs={k: list(v) for k, v in KNOBS.items()}, masks=len(masks),
        optimize_s=round(batch_s, 1), threads=torch.get_num_threads(),
        note="wall_s covers this invocation only; optimize_s sums every batch's optimizer time",
    )
    save_results(df, out / "explore.csv", meta)
    shutil.rmtree(parts)
    print(f"{len(masks)} masks, {len(df)} rows, optimizer {batch_s:.0f} s -> {out}")
    return 0


def live_picture(path: Path, model_name: str) -> int:
    """One press of the live explorer's *Optimize*, as chapter 8 builds the explorer."""
    import re

    from upx_core.book.widgets import live_explorer

    model = load_model(model_name, device="cpu")
    explorer = live_explorer(model, load_sample("umbrella", model), target="umbrella",
                             iterations=50, device="cpu")
    explorer.controls["mode"].value = "ftc"
    result = explorer.update()
    from upx_core.book.widgets import result_pictures

    status = re.sub(r"<[^>]+>", "", explorer.status.value).replace("&rarr;", "->")
    status = status.replace("&gt;", ">")
    picture = result_pictures(result, explorer.image, titles=[f"live explorer, defaults, "
                                                              f"Optimize pressed: {status}"],
                              dpi=100, colorbar=True)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(picture)
    print(f"{path}: {status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
