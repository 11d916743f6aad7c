"""Fig. 2 against Fig. 3: are F-TC's trials more alike than Eq. 3's, under either reading of
"trial"?

The paper shows Eq. 3's masks changing from trial to trial (Fig. 2) and F-TC's staying put
(Fig. 3) without saying what a trial is. Two readings, each with three trials per image:

- ``init``: another random start M0 = 1 - 0.5 U(0, 1) per seed (the book's default);
- ``noise``: every trial starts at M = 1 and Gaussian noise (std 0.045 in pixel units) is
  added to the perturbed image at every step, seeded per trial (jacobgil's implementation of
  Fong & Vedaldi's masks, which the paper builds on).

For Eq. 3 (``baseline``) and F-TC, the paper's probability objective and hyperparameters, 200
iterations, the same images and seeds for both modes. Every mask's M is stored
(``masks.npz``), with its phi and ratio (``masks.csv``), and every pair of trials of an image is
compared (``pairs.csv``: Pearson r of 1 - M', IoU of the regions 1 - M' > 0.6, NaN and
``both_empty`` when both regions are empty; :func:`upx_core.method.metrics.consistency_pairs`).
Images go in chunks; a stopped run resumes from the masks it stored.

    python benchmarks/trial_consistency.py --n 16 --out notebooks/results/trial-consistency
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from upx_core import OptimConfig, load_image, load_model, optimize_masks, sample_path
from upx_core.evaluation.protocol import select_images
from upx_core.evaluation.provenance import provenance
from upx_core.method.config import settings_grid
from upx_core.method.equations import upsample_mask
from upx_core.method.metrics import consistency_pairs, relative_improvement, undesirable_pixel_ratio

THRESHOLD = 0.6
JACOBGIL_NOISE = 0.045  # his std 0.2 on normalized inputs, times ImageNet's stds (~0.226)
READINGS = {"init": {}, "noise": {"init_noise": 0.0, "perturb_noise": JACOBGIL_NOISE}}
MODES = ("baseline", "ftc")


def _key(reading: str, mode: str, image: int, seed: int) -> str:
    return f"{reading}/{mode}/{image}/{seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="images: select_images(n, 0)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=4, help="images per optimizer call")
    ap.add_argument("--out", type=Path, required=True, help="folder of the results")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    npz, rows_csv = args.out / "masks.npz", args.out / "masks.csv"
    masks = dict(np.load(npz)) if npz.exists() else {}
    rows = pd.read_csv(rows_csv).to_dict("records") if rows_csv.exists() else []
    model = load_model("efficientnet_lite0")
    images = select_images(args.n, 0)
    settings = settings_grid(modes=MODES, seeds=tuple(args.seeds))
    start = time.time()
    for reading, changes in READINGS.items():
        config = OptimConfig(iterations=args.iterations, **changes)
        for c in range(0, len(images), args.chunk):
            chunk = [i for i in images[c:c + args.chunk]
                     if any(_key(reading, s.mode, i, s.seed) not in masks for s in settings)]
            if not chunk:
                continue
            print(f"{reading}: images {chunk}", file=sys.stderr, flush=True)
            x = torch.stack([load_image(sample_path(i)) for i in chunk])
            r = optimize_masks(model, x, settings=settings, config=config, device="cpu")
            up = upsample_mask(r.masks.flatten(0, 1), x.shape[-2:]).view(
                *r.masks.shape[:2], *x.shape[-2:])
            for b, image in enumerate(chunk):
                for k, s in enumerate(settings):
                    masks[_key(reading, s.mode, image, s.seed)] = r.masks[b, k, 0].numpy()
                    rows.append({
                        "reading": reading, "mode": s.mode, "image_index": image,
                        "seed": s.seed, "prob_before": float(r.target_prob_before[b, k]),
                        "prob_after": float(r.target_prob_after[b, k]),
                        "relative_improvement": float(relative_improvement(
                            r.target_prob_before[b, k], r.target_prob_after[b, k])),
                        "ratio": float(undesirable_pixel_ratio(up[b, k], THRESHOLD))})
            np.savez_compressed(npz, **masks)  # masks first: a row always has its mask
            pd.DataFrame(rows).to_csv(rows_csv, index=False)

    pairs = []
    for reading in READINGS:
        for mode in MODES:
            for image in images:
                m = torch.stack([torch.from_numpy(masks[_key(reading, mode, image, s)])
                                 for s in args.seeds])
                up = upsample_mask(m.unsqueeze(1), (224, 224)).squeeze(1)
                for p in consistency_pairs(up, THRESHOLD):
                    pairs.append({"reading": reading, "mode": mode, "image_index": image,
                                  "seed_a": args.seeds[p["i"]], "seed_b": args.seeds[p["j"]],
                                  "pearson": p["pearson"], "iou": p["iou"],
                                  "both_empty": p["both_empty"]})
    pd.DataFrame(pairs).to_csv(args.out / "pairs.csv", index=False)
    record = args.out / "trial-consistency.json"
    previous = json.loads(record.read_text()) if record.exists() else {}
    command = shlex.join(["python", "benchmarks/trial_consistency.py", *sys.argv[1:]])
    meta = provenance(command, time.time() - start + float(previous.get("wall_s") or 0.0),
                      images=images, seeds=args.seeds, iterations=args.iterations,
                      readings=READINGS, threshold=THRESHOLD,
                      note="wall_s sums the segments of a resumed run")
    record.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out} ({len(rows)} masks, {len(pairs)} pairs)")


if __name__ == "__main__":
    main()
