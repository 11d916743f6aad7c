"""Measure the readings the paper leaves open; the table goes into book/implementation-notes.md.

For each reading (TV/L1 reduction, objective, F-TC form, trial start, and jacobgil's readings of
Fong & Vedaldi's mask: noise on Q, TV without root, Gaussian+median blur), optimize masks on a
fixed seeded subset of the sample images (target: the top class, as in Eq. 8) and report phi,
the undesirable-pixel ratio, and the consistency of the trials.

Images: ``upx_core.evaluation.protocol.select_images(--n, --select-seed)``, the choice ``upx
evaluate`` makes (with --select-seed 0 the same images as this script's earlier
``random.Random(0)``). Trials: mode ``m`` runs trial ``s`` from seed ``s + 100 * MODES.index(m)``,
so two modes never start from the same M0 (which would inflate their agreement).

Columns: ``phi`` (Eq. 8), ``ratio_pct`` (Table 2: 1 - M' > 0.6), ``ratio_minmax_pct`` (1 - M'
min-max rescaled to [0, 1] per mask before the threshold; a constant map counts as no pixel;
jacobgil's save() rescales by (M' - min) / max, the same when min M' = 0), ``phi_thresholded``
(Eq. 8 with only the thresholded pixels blurred, M' binarized), ``pearson`` and ``iou`` (the
trials' consistency). ``<out stem>_per_image.csv`` holds one row per (reading, mode, image),
the trials averaged, for a bootstrap over images.
Usage: python benchmarks/interpretation_sweep.py --n 8 --iterations 200 --out sweep.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
import torch

from upx_core import (
    MaskSetting,
    OptimConfig,
    consistency,
    load_image,
    load_model,
    optimize_masks,
    relative_improvement,
    sample_path,
    undesirable_pixel_ratio,
)
from upx_core.data import sample_filenames
from upx_core.evaluation.protocol import select_images
from upx_core.method.config import MODES
from upx_core.method.runtime import perturbed_probs

THRESHOLD = 0.6
JACOBGIL_NOISE = 0.045  # his std 0.2 on normalized inputs, times ImageNet's stds (~0.226)
READINGS = {
    # name: (config changes, setting changes)
    "mean/prob (default)": ({}, {}),
    "sum/prob (paper literal)": ({"reduction": "sum"}, {}),
    "mean/log_prob": ({"objective": "log_prob"}, {}),
    "mean/logit": ({"objective": "logit"}, {}),
    "mean/prob, F-TC vector": ({"ftc_form": "vector"}, {}),
    "mean/prob, start M=1": ({"init_noise": 0.0}, {}),
    "mean/prob, noise 0.045 per iteration": ({"perturb_noise": JACOBGIL_NOISE}, {}),
    "mean/prob, TV without root": ({"tv_root": False}, {}),
    "mean/prob, Gaussian+median blur": ({"blur": "gaussian+median"}, {}),
    "jacobgil (noise, no root, Gaussian+median, start M=1)": (
        {"perturb_noise": JACOBGIL_NOISE, "tv_root": False, "blur": "gaussian+median",
         "init_noise": 0.0}, {}),
}
SEED_STRIDE = 100  # mode m's trial s starts from seed s + SEED_STRIDE * MODES.index(m)


def minmax_ratio(masks_up: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """The share of pixels whose 1 - M', min-max rescaled to [0, 1] per mask, exceeds
    ``threshold``; ``[..., H, W]`` -> ``[...]``. A constant mask has no such pixel."""
    u = (1.0 - masks_up).flatten(-2)
    lo, hi = u.amin(dim=-1, keepdim=True), u.amax(dim=-1, keepdim=True)
    span = hi - lo
    scaled = torch.where(span > 0, (u - lo) / span.clamp_min(1e-12), torch.zeros_like(u))
    return (scaled > threshold).float().mean(dim=-1)


def thresholded_phi(model, images, r, cfg, threshold: float = THRESHOLD) -> torch.Tensor:
    """Eq. 8's relative improvement ``[B, K]`` with only the pixels where 1 - M' > threshold
    blurred (M' set to 0 there and to 1 elsewhere), measured as ``perturbed_probs`` does."""
    b, k = r.targets.shape
    binary = ((1.0 - r.masks_upsampled) <= threshold).float().flatten(0, 1)
    with torch.no_grad():
        probs = torch.cat([
            perturbed_probs(model, images[i].expand(k, -1, -1, -1), binary[i * k:(i + 1) * k],
                            cfg) for i in range(b)])
    after = probs.gather(1, r.targets.reshape(-1, 1)).view(b, k)
    return relative_improvement(r.target_prob_before, after)


def _nanmean(values) -> float:
    return float(pd.Series(values, dtype=float).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8, help="number of images (default: %(default)s)")
    ap.add_argument("--select-seed", type=int, default=0,
                    help="seed of the image choice, select_images(n, seed) (default: 0)")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="trials; mode m runs seed s + 100 * MODES.index(m)")
    ap.add_argument("--modes", nargs="+", default=["baseline", "ftc", "fntc"], choices=MODES)
    ap.add_argument("--readings", nargs="*", default=list(READINGS), choices=list(READINGS))
    ap.add_argument("--out", default="sweep.csv")
    args = ap.parse_args()
    out = Path(args.out)
    per_image_out = out.with_name(f"{out.stem}_per_image.csv")
    torch.manual_seed(0)
    idx = select_images(args.n, args.select_seed, total=len(sample_filenames()))
    model = load_model("efficientnet_lite0")
    images = torch.stack([load_image(sample_path(i)) for i in idx])
    settings = [MaskSetting(mode=m, seed=s + SEED_STRIDE * MODES.index(m))
                for m in args.modes for s in args.seeds]
    t = len(args.seeds)
    rows, per_image = [], []
    for name in args.readings:
        cfg_changes, set_changes = READINGS[name]
        cfg = OptimConfig(iterations=args.iterations, **cfg_changes)
        reading_settings = [dataclasses.replace(s, **set_changes) for s in settings]
        t0 = time.time()
        r = optimize_masks(model, images, settings=reading_settings, config=cfg, progress=False)
        wall = time.time() - t0
        up = r.masks_upsampled
        ratio = undesirable_pixel_ratio(up, THRESHOLD)[..., 0]
        ratio_mm = minmax_ratio(up, THRESHOLD)[..., 0]
        rel = relative_improvement(r.target_prob_before, r.target_prob_after)
        rel_thr = thresholded_phi(model, images, r, cfg)
        for mi, mode in enumerate(args.modes):
            ks = list(range(mi * t, (mi + 1) * t))
            cons = [consistency(up[b, ks]) if t > 1 else {"pearson": float("nan"),
                                                          "iou": float("nan")}
                    for b in range(len(idx))]
            for b, image in enumerate(idx):
                per_image.append({
                    "reading": name, "mode": mode, "image": image,
                    "phi": float(rel[b, ks].mean()),
                    "phi_thresholded": float(rel_thr[b, ks].mean()),
                    "ratio_pct": float(ratio[b, ks].mean() * 100),
                    "ratio_minmax_pct": float(ratio_mm[b, ks].mean() * 100),
                    "pearson": cons[b]["pearson"], "iou": cons[b]["iou"], "seeds": t,
                })
            rows.append({
                "reading": name, "mode": mode,
                "phi": float(rel[:, ks].mean()),
                "ratio_pct": float(ratio[:, ks].mean() * 100),
                "ratio_minmax_pct": float(ratio_mm[:, ks].mean() * 100),
                "phi_thresholded": float(rel_thr[:, ks].mean()),
                "pearson": _nanmean([c["pearson"] for c in cons]),
                "iou": _nanmean([c["iou"] for c in cons]),
                "n_images": len(idx), "seeds": t,
                "iterations": args.iterations, "wall_s": wall,
            })
        # after every reading, so a long sweep that is stopped keeps what it measured
        pd.DataFrame(rows).to_csv(out, index=False)
        pd.DataFrame(per_image).to_csv(per_image_out, index=False)
        print(pd.DataFrame(rows).to_string(index=False), flush=True)
    print(f"images: {idx}")
    trial_seeds = {m: [s.seed for s in settings if s.mode == m] for m in args.modes}
    print(f"trial seeds per mode: {trial_seeds}")


if __name__ == "__main__":
    main()
