"""Which objective finds undesirable pixels for a user's target: the measurement behind the
default of ``upx explain`` and ``UndesirablePixels.attribute`` (issue 9, item 7).

For each of N sample images (``select_images(N, seed)``) and each of its three most probable
classes as the target, one F-TC mask (trial 0, the paper's hyperparameters) per objective
(probability, log-probability). A mask *finds* something when it blurs at least one pixel past
the threshold (1 - M' > 0.6) and raises the target by phi >= 10 % (Eq. 8).

Resumable: rows are appended to ``--out`` after every chunk, and a rerun skips what is there.
Usage: python benchmarks/default_objective.py --n 50 --out benchmarks/results/default-objective.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from upx_core import MaskSetting, OptimConfig, load_model, optimize_masks
from upx_core.book.chapter import load_sample
from upx_core.evaluation.protocol import select_images
from upx_core.evaluation.provenance import provenance, save_results
from upx_core.method.config import OBJECTIVES
from upx_core.method.metrics import found_mask, relative_improvement, undesirable_pixel_ratio

RANKS = (1, 2, 3)
THRESHOLD = 0.6


def confidence_band(rank: int, prob: float) -> str:
    """The target's group: the top class at low, middle or high confidence, or a runner-up."""
    if rank > 1:
        return f"class ranked {rank}"
    return "top, p < 0.5" if prob < 0.5 else ("top, p 0.5-0.9" if prob < 0.9 else "top, p > 0.9")


def measure(model, indices: list[int], objective: str, iterations: int) -> list[dict]:
    images = torch.stack([load_sample(i, model) for i in indices])
    with torch.no_grad():
        probs = torch.softmax(model(images), dim=1)
    order = probs.argsort(dim=1, descending=True)[:, : len(RANKS)]
    batch = images.repeat_interleave(len(RANKS), dim=0)
    targets = order.flatten().tolist()
    config = OptimConfig(iterations=iterations, objective=objective)
    r = optimize_masks(model, batch, targets=targets, settings=[MaskSetting(mode="ftc")],
                       config=config, progress=False)
    before, after = r.target_prob_before[:, 0], r.target_prob_after[:, 0]
    phi = relative_improvement(before, after)
    ratio = undesirable_pixel_ratio(r.masks_upsampled[:, 0], THRESHOLD)
    rows = []
    for j, target in enumerate(targets):
        image, rank = indices[j // len(RANKS)], RANKS[j % len(RANKS)]
        p0 = float(before[j])
        rows.append({
            "image_index": image, "rank": rank, "target": target, "objective": objective,
            "band": confidence_band(rank, p0), "prob_before": p0, "prob_after": float(after[j]),
            "phi": float(phi[j]), "ratio": float(ratio[j]),
            "found": bool(found_mask(ratio[j], phi[j])),
        })
    return rows


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Share of masks that found something, per target group and objective."""
    table = df.pivot_table(index="band", columns="objective", values="found", aggfunc="mean")
    table.loc["all targets"] = df.groupby("objective")["found"].mean()
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--select-seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=8, help="images per optimizer call")
    ap.add_argument("--objectives", nargs="+", default=["prob", "log_prob"], choices=OBJECTIVES)
    ap.add_argument("--first", type=int, default=None,
                    help="only the first FIRST images of the selection (a budget: each mask "
                         "costs about 15 s here)")
    ap.add_argument("--note", default="", help="this segment, for the sidecar's note")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model = load_model("efficientnet_lite0")
    indices = select_images(args.n, args.select_seed)[: args.first]
    old = pd.read_csv(args.out) if args.out.is_file() else pd.DataFrame()
    # a resumed run keeps what the sidecar said of its earlier segments, and their time
    sidecar = args.out.with_suffix(".json")
    before = json.loads(sidecar.read_text()) if len(old) and sidecar.is_file() else {}
    note = " ".join(filter(None, [before.get("note", ""), args.note]))
    earlier_s = float(before.get("wall_s") or 0.0)
    rows = old.to_dict("records")
    start = time.time()
    for objective in args.objectives:
        done = set(old.loc[old["objective"] == objective, "image_index"]) if len(old) else set()
        todo = [i for i in indices if i not in done]
        for s in range(0, len(todo), args.chunk):
            rows += measure(model, todo[s:s + args.chunk], objective, args.iterations)
            df = pd.DataFrame(rows)
            save_results(df, args.out, provenance(
                f"python benchmarks/default_objective.py --n {args.n} --select-seed "
                f"{args.select_seed} --iterations {args.iterations} --first {args.first} "
                f"--objectives {' '.join(args.objectives)} --out {args.out}",
                wall_s=earlier_s + time.time() - start, images=indices, note=note))
            print(f"{objective}: {len(df[df.objective == objective])} masks, "
                  f"{time.time() - start:.0f} s", flush=True)
    print(summary(pd.DataFrame(rows)).round(3).to_string())


if __name__ == "__main__":
    main()
