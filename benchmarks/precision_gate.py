"""The quality gate for a faster arithmetic: is its explanation as faithful and as
reproducible as float32's?

Each variant (a precision and memory layout of the classifier, or a compiled classifier)
optimizes the F-TC masks of the same images with the paper's hyperparameters and 200
iterations (objective log_prob, the objective of chapter 7's stored runs and of
``upx explain``), batch composition fixed, for every trial seed of ``--seeds``; then it is
compared with the float32 reference (contiguous layout, eager) on the same images:

- faithful: the paired per-image difference of phi (Eq. 8; each image's trials averaged) within
  ``--phi-points`` (1) point of float32's, and the mean Table 2 ratio within ``--ratio-rel``
  (10 %) of float32's, relative;
- reproducible: the agreement of the variant's own trials (per image, the mean Pearson r of
  1 - M' over its pairs of seeds) no lower than float32's: the 95 % bootstrap interval of the
  paired per-image difference (variant minus float32) must reach 0 or above.

A mask of a variant is not required to equal float32's mask of the same seed: channels-last
float32, which changes only the order of sums, failed that on 13 of 48 images (stored
2026-12-02 run), so that bound measured how 200 Adam steps amplify rounding, not what a user
gets. Each mask's Pearson r with float32's mask of its seed is still reported (``pearson_*``).
Each variant's phi is measured with its own classifier (under bf16, the probabilities before
and after are bf16's too), as ``upx explain`` would report them. A variant that fails any check
is not a default (``upx_core.method.config``'s choice).

    python benchmarks/precision_gate.py --n 48 --seeds 0 1 2 \\
        --variants fp32 fp32+cl bf16 bf16+cl --out benchmarks/results/precision-gate-cpu-<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

from upx_core import MaskSetting, OptimConfig, load_image, load_model, optimize_masks
from upx_core.data import sample_path
from upx_core.evaluation import provenance
from upx_core.evaluation.protocol import select_images
from upx_core.evaluation.tables import bootstrap_interval
from upx_core.method.fold import fold_batchnorm
from upx_core.method.metrics import (
    consistency,
    consistency_pairs,
    relative_improvement,
    undesirable_pixel_ratio,
)
from upx_core.method.runtime import bf16_supported, frozen

ROOT = Path(__file__).resolve().parents[1]
# name -> (OptimConfig fields, compile the folded classifier)
VARIANTS = {
    "fp32": ({}, False),
    "fp32+cl": ({"channels_last": True}, False),
    "bf16": ({"amp": "bf16"}, False),
    "bf16+cl": ({"amp": "bf16", "channels_last": True}, False),
    "compile": ({}, True),
}


def compiled_folded(model: torch.nn.Module, probe: torch.Tensor) -> torch.nn.Module:
    """``torch.compile`` of the batch-norm-folded copy the optimizer would use; optimize with
    ``fold_batchnorm=False`` so that it is not folded again."""
    with frozen(model):
        folded, _ = fold_batchnorm(model, probe)
    return torch.compile(folded)


def run_variant(model, images, name: str, config: OptimConfig, batch: int,
                seeds: list[int]) -> dict:
    """Every image's F-TC mask for every seed: ``masks_up`` ``[N, S, H, W]``, and per mask the
    relative improvement and the ratio ``[N, S]``."""
    fields, compiled = VARIANTS[name]
    cfg = config.replace(**fields)
    net = model
    if compiled:
        net, cfg = compiled_folded(model, images[:2]), cfg.replace(fold_batchnorm=False)
    settings = [MaskSetting("ftc", seed=s) for s in seeds]
    masks, before, after, wall = [], [], [], 0.0
    for i in range(0, len(images), batch):
        t0 = time.perf_counter()
        r = optimize_masks(net, images[i:i + batch], settings=settings, config=cfg,
                           keep_images=False, progress=False)
        wall += time.perf_counter() - t0
        masks.append(r.masks_upsampled[:, :, 0])
        before.append(r.target_prob_before)
        after.append(r.target_prob_after)
        print(f"  {name}: {min(i + batch, len(images))}/{len(images)} images, {wall:.0f} s",
              flush=True)
    up = torch.cat(masks)
    ri = relative_improvement(torch.cat(before), torch.cat(after))
    return {"masks_up": up, "relative_improvement": ri,
            "ratio": undesirable_pixel_ratio(up), "wall_s": wall}


def trial_agreement(masks_up: torch.Tensor) -> list[float]:
    """Per image, the mean Pearson r of 1 - M' over its pairs of trials (NaN when no pair has
    a defined r: every trial found nothing)."""
    out = []
    for trials in masks_up:
        rs = [p["pearson"] for p in consistency_pairs(trials) if p["pearson"] == p["pearson"]]
        out.append(sum(rs) / len(rs) if rs else float("nan"))
    return out


def _paired(diff: list[float]) -> dict:
    x = torch.tensor(diff, dtype=torch.float64)
    x = x[~torch.isnan(x)]
    lo, hi = bootstrap_interval(x.tolist())
    return {"mean": float(x.mean()), "ci_low": lo, "ci_high": hi, "images": int(x.numel())}


def gate(ref: dict, run: dict, phi_points: float, ratio_rel: float) -> dict:
    rs = []  # each mask against float32's mask of the same image and seed: reported only
    for a_trials, b_trials in zip(ref["masks_up"], run["masks_up"], strict=True):
        for a, b in zip(a_trials, b_trials, strict=True):
            r = consistency(torch.stack([a, b]))["pearson"]
            if r != r:  # flat in one of them: agreement only if they are the same mask
                r = 1.0 if float((a - b).abs().max()) < 1e-3 else 0.0
            rs.append(r)
    rs_t = torch.tensor(rs)
    phi_diff = _paired((run["relative_improvement"].mean(1)
                        - ref["relative_improvement"].mean(1)).tolist())
    ratio_ref, ratio = float(ref["ratio"].mean()), float(run["ratio"].mean())
    agree_ref, agree = trial_agreement(ref["masks_up"]), trial_agreement(run["masks_up"])
    agreement = _paired([b - a for a, b in zip(agree_ref, agree, strict=True)])
    checks = {
        "phi": abs(phi_diff["mean"]) <= phi_points,
        "ratio": abs(ratio - ratio_ref) <= ratio_rel * ratio_ref,
        "trial_agreement": agreement["ci_high"] >= 0,
    }
    return {"phi": float(run["relative_improvement"].mean()),
            "phi_fp32": float(ref["relative_improvement"].mean()),
            "phi_diff": phi_diff["mean"], "phi_diff_interval": phi_diff,
            "ratio_pct": 100 * ratio, "ratio_fp32_pct": 100 * ratio_ref,
            "ratio_rel_diff": (ratio - ratio_ref) / ratio_ref if ratio_ref else float("nan"),
            "trial_agreement": float(torch.tensor(agree).nanmean()),
            "trial_agreement_fp32": float(torch.tensor(agree_ref).nanmean()),
            "trial_agreement_diff": agreement,
            "pearson_min": float(rs_t.min()), "pearson_median": float(rs_t.median()),
            "pearson_per_mask": rs, "checks": checks, "passed": all(checks.values())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=48, help="images: select_images(n, seed=0)")
    ap.add_argument("--variants", nargs="+", default=["fp32", "fp32+cl", "bf16", "bf16+cl"],
                    choices=list(VARIANTS))
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8, help="images per optimizer call")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="trials per image; two or more for the agreement check")
    ap.add_argument("--phi-points", type=float, default=1.0)
    ap.add_argument("--ratio-rel", type=float, default=0.10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if len(set(args.seeds)) < 2:
        print("upx: error: --seeds needs two or more trials for the agreement check",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["fp32", *[v for v in args.variants if v != "fp32"]]
    if any(VARIANTS[v][0].get("amp") for v in names) and not bf16_supported(torch.device("cpu")):
        print("upx: error: bf16 variants need a CPU with native bfloat16 (avx512_bf16 or AMX)",
              file=sys.stderr)
        return 2
    model = load_model("efficientnet_lite0")
    indices = select_images(args.n, seed=0)
    images = torch.stack([load_image(sample_path(i), model.input_size, model.resize_size)
                          for i in indices])
    config = OptimConfig(iterations=args.iterations, objective="log_prob")
    runs = {}
    for name in names:
        runs[name] = run_variant(model, images, name, config, args.batch, args.seeds)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "hardware": provenance.hardware(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "git_commit": provenance.git_commit(ROOT),
        "images": indices, "mode": "ftc", "seeds": args.seeds, "objective": "log_prob",
        "iterations": args.iterations, "batch": args.batch,
        "bounds": {"phi_points": args.phi_points, "ratio_rel": args.ratio_rel,
                   "trial_agreement": "paired interval reaches 0 or above"},
        "variants": {},
    }
    ref = runs["fp32"]
    print(f"{'variant':<9}{'s':>7}{'x fp32':>8}{'phi':>8}{'dphi':>7}{'ratio %':>9}{'rel':>7}"
          f"{'agree':>7}{'d agree [95 %]':>22}  gate")
    for name in names:
        g = gate(ref, runs[name], args.phi_points, args.ratio_rel)
        g["wall_s"] = runs[name]["wall_s"]
        g["speedup_vs_fp32"] = ref["wall_s"] / runs[name]["wall_s"]
        report["variants"][name] = g
        d = g["trial_agreement_diff"]
        print(f"{name:<9}{g['wall_s']:>7.0f}{g['speedup_vs_fp32']:>8.2f}{g['phi']:>8.2f}"
              f"{g['phi_diff']:>7.2f}{g['ratio_pct']:>9.3f}{g['ratio_rel_diff']:>7.1%}"
              f"{g['trial_agreement']:>7.3f}{d['mean']:>8.3f} [{d['ci_low']:.3f}, "
              f"{d['ci_high']:.3f}]  {'pass' if g['passed'] else 'FAIL'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
