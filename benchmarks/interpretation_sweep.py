"""Measure the readings the paper leaves open; the table goes into book/implementation-notes.md.

For each reading (TV/L1 reduction, probability or log-probability objective, F-TC form, trial
start), optimize masks on a fixed seeded subset of the sample images (target: the top class,
as in Eq. 8) and report phi, the undesirable-pixel ratio, and the consistency of three trials.
Usage: python benchmarks/interpretation_sweep.py --n 8 --iterations 200 --out sweep.csv
"""

from __future__ import annotations

import argparse
import random
import time

import pandas as pd
import torch

from upx_core import (
    OptimConfig,
    consistency,
    load_image,
    load_model,
    optimize_masks,
    relative_improvement,
    sample_path,
    settings_grid,
    undesirable_pixel_ratio,
)
from upx_core.data import sample_filenames

READINGS = {
    # name: (config changes, setting changes)
    "mean/prob (default)": ({}, {}),
    "sum/prob (paper literal)": ({"reduction": "sum"}, {}),
    "mean/log_prob": ({"objective": "log_prob"}, {}),
    "mean/prob, F-TC vector": ({"ftc_form": "vector"}, {}),
    "mean/prob, start M=1": ({"init_noise": 0.0}, {}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--readings", nargs="*", default=list(READINGS))
    ap.add_argument("--out", default="sweep.csv")
    args = ap.parse_args()
    torch.manual_seed(0)
    idx = sorted(random.Random(0).sample(range(len(sample_filenames())), args.n))
    model = load_model("efficientnet_lite0")
    images = torch.stack([load_image(sample_path(i)) for i in idx])
    rows = []
    for name in args.readings:
        cfg_changes, set_changes = READINGS[name]
        cfg = OptimConfig(iterations=args.iterations, **cfg_changes)
        settings = settings_grid(("baseline", "ftc", "fntc"), args.seeds, **set_changes)
        t0 = time.time()
        r = optimize_masks(model, images, settings=settings, config=cfg, progress=False)
        wall = time.time() - t0
        ratio = undesirable_pixel_ratio(r.masks_upsampled)[..., 0]
        rel = relative_improvement(r.target_prob_before, r.target_prob_after)
        up = r.masks_upsampled
        for mi, mode in enumerate(("baseline", "ftc", "fntc")):
            ks = [mi * len(args.seeds) + j for j in range(len(args.seeds))]
            cons = ([consistency(up[b, ks]) for b in range(len(idx))] if len(ks) > 1
                    else [{"pearson": float("nan"), "iou": float("nan")}])
            rows.append({
                "reading": name, "mode": mode,
                "phi": float(rel[:, ks].mean()),
                "ratio_pct": float(ratio[:, ks].mean() * 100),
                "pearson": float(pd.Series([c["pearson"] for c in cons]).mean()),
                "iou": float(pd.Series([c["iou"] for c in cons]).mean()),
                "n_images": len(idx), "seeds": len(args.seeds),
                "iterations": args.iterations, "wall_s": wall,
            })
        # after every reading, so a long sweep that is stopped keeps what it measured
        pd.DataFrame(rows).to_csv(args.out, index=False)
        print(pd.DataFrame(rows).to_string(index=False), flush=True)
    print(f"images: {idx}")


if __name__ == "__main__":
    main()
