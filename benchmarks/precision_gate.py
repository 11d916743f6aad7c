"""The quality gate for a faster arithmetic: does it keep the masks that float32 gives?

Each variant (a precision and memory layout of the classifier, or a compiled classifier)
optimizes the F-TC mask of the same images with the paper's hyperparameters and 200 iterations
(objective log_prob, the objective of the 48-image stored run and of ``upx explain``), batch
composition and seed fixed; then each is compared with the float32 reference (contiguous
layout, eager):

- mean phi (Eq. 8) within ``--phi-points`` (0.5) points of float32's,
- every mask's Pearson r of 1 - M' with float32's mask of the same image >= ``--pearson``
  (0.95); a mask that is flat in both (nothing found) agrees when they differ by < 1e-3,
- the mean Table 2 ratio within ``--ratio-rel`` (10 %) of float32's, relative.

Each variant's phi is measured with its own classifier (under bf16, the probabilities before
and after are bf16's too), as ``upx explain`` would report them. A variant that fails any of
them is not a default (``upx_core.config``'s choice). The
channels-last float32 variant is itself a control: float32 on another summation order, which
shows how far 200 Adam steps move a mask when only rounding changes.

    python benchmarks/precision_gate.py --n 48 --variants fp32 fp32+cl bf16 bf16+cl \\
        --out benchmarks/results/precision-gate-cpu-<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

from upx_core import MaskSetting, OptimConfig, load_image, load_model, optimize_masks, provenance
from upx_core.data import sample_path
from upx_core.evaluation import select_images
from upx_core.fold import fold_batchnorm
from upx_core.metrics import consistency, relative_improvement, undesirable_pixel_ratio
from upx_core.runtime import bf16_supported, frozen

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


def run_variant(model, images, name: str, config: OptimConfig, batch: int) -> dict:
    fields, compiled = VARIANTS[name]
    cfg = config.replace(**fields)
    net = model
    if compiled:
        net, cfg = compiled_folded(model, images[:2]), cfg.replace(fold_batchnorm=False)
    masks, before, after, wall = [], [], [], 0.0
    for i in range(0, len(images), batch):
        t0 = time.perf_counter()
        r = optimize_masks(net, images[i:i + batch], settings=[MaskSetting("ftc", seed=0)],
                           config=cfg, keep_images=False, progress=False)
        wall += time.perf_counter() - t0
        masks.append(r.masks_upsampled[:, 0])
        before.append(r.target_prob_before[:, 0])
        after.append(r.target_prob_after[:, 0])
        print(f"  {name}: {min(i + batch, len(images))}/{len(images)} images, {wall:.0f} s",
              flush=True)
    up = torch.cat(masks)
    ri = relative_improvement(torch.cat(before), torch.cat(after))
    return {"masks_up": up, "relative_improvement": ri,
            "ratio": undesirable_pixel_ratio(up), "wall_s": wall}


def gate(ref: dict, run: dict, phi_points: float, min_r: float, ratio_rel: float) -> dict:
    rs = []
    for a, b in zip(ref["masks_up"], run["masks_up"], strict=True):
        r = consistency(torch.stack([a, b]))["pearson"]
        if r != r:  # flat in one of them: agreement only if they are the same mask
            r = 1.0 if float((a - b).abs().max()) < 1e-3 else 0.0
        rs.append(r)
    rs_t = torch.tensor(rs)
    phi_ref = float(ref["relative_improvement"].mean())
    phi = float(run["relative_improvement"].mean())
    ratio_ref, ratio = float(ref["ratio"].mean()), float(run["ratio"].mean())
    checks = {
        "phi": abs(phi - phi_ref) <= phi_points,
        "pearson": bool((rs_t >= min_r).all()),
        "ratio": abs(ratio - ratio_ref) <= ratio_rel * ratio_ref,
    }
    return {"phi": phi, "phi_fp32": phi_ref, "phi_diff": phi - phi_ref,
            "ratio_pct": 100 * ratio, "ratio_fp32_pct": 100 * ratio_ref,
            "ratio_rel_diff": (ratio - ratio_ref) / ratio_ref if ratio_ref else float("nan"),
            "pearson_min": float(rs_t.min()), "pearson_median": float(rs_t.median()),
            "masks_pearson_below": int((rs_t < min_r).sum()), "pearson_per_mask": rs,
            "checks": checks, "passed": all(checks.values())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=48, help="images: select_images(n, seed=0)")
    ap.add_argument("--variants", nargs="+", default=["fp32", "fp32+cl", "bf16", "bf16+cl"],
                    choices=list(VARIANTS))
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8, help="images per optimizer call")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--phi-points", type=float, default=0.5)
    ap.add_argument("--pearson", type=float, default=0.95)
    ap.add_argument("--ratio-rel", type=float, default=0.10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
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
        runs[name] = run_variant(model, images, name, config, args.batch)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "hardware": provenance.hardware(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "git_commit": provenance.git_commit(ROOT),
        "images": indices, "mode": "ftc", "seed": 0, "objective": "log_prob",
        "iterations": args.iterations, "batch": args.batch,
        "bounds": {"phi_points": args.phi_points, "pearson_min": args.pearson,
                   "ratio_rel": args.ratio_rel},
        "variants": {},
    }
    ref = runs["fp32"]
    print(f"{'variant':<9}{'s':>7}{'x fp32':>8}{'phi':>8}{'dphi':>7}{'ratio %':>9}{'rel':>7}"
          f"{'r min':>7}{'r med':>7}{'<r':>4}  gate")
    for name in names:
        g = gate(ref, runs[name], args.phi_points, args.pearson, args.ratio_rel)
        g["wall_s"] = runs[name]["wall_s"]
        g["speedup_vs_fp32"] = ref["wall_s"] / runs[name]["wall_s"]
        report["variants"][name] = g
        print(f"{name:<9}{g['wall_s']:>7.0f}{g['speedup_vs_fp32']:>8.2f}{g['phi']:>8.2f}"
              f"{g['phi_diff']:>7.2f}{g['ratio_pct']:>9.3f}{g['ratio_rel_diff']:>7.1%}"
              f"{g['pearson_min']:>7.3f}{g['pearson_median']:>7.3f}"
              f"{g['masks_pearson_below']:>4}  {'pass' if g['passed'] else 'FAIL'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
