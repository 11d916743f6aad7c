"""How close the query-only F-TC mask comes to the white-box one, per query budget (issue 11).

For the case-study images and targets, one white-box F-TC mask per image (seed 0, the paper's
200 iterations, ``optimize_masks``) and one query-only mask per image and budget
(``optimize_masks_blackbox`` on EfficientNet-Lite0 exported to ONNX and run by ONNX Runtime,
the same seed, 200 iterations, as many antithetic directions as the budget allows). Reported
per (image, budget): Pearson r of the upsampled 1 - M' with the white-box one, phi (Eq. 8) and
its share of the white-box phi, the Table 2 ratio, queries used and seconds. Also the raw
query throughput (images/s) of ONNX Runtime and of torch under inference_mode at several batch
sizes. Two references bound what a query-only mask can reach: white-box masks of other seeds
(``--white-seeds``; how far the white-box mask itself is reproducible) and the oracle
estimator (``--oracle-samples``, :func:`upx_core.method.oracle.oracle_masks`): the query-only
optimizer's own loop, directions and seeds, with each finite difference replaced by the exact
directional derivative u . grad L from autograd, so that only the sampling of directions is
left (no finite-difference step, no clipping of M +/- sigma u, no rounding of the model's
answers). Everything goes to ``--out``/quality.json
with the hardware and commit, and the 28 x 28 masks (white-box and per backend and budget) to
``--out``/masks.npz, which the book's black-box chapter draws.

Usage: python benchmarks/blackbox_quality.py --budgets 1000 4000 16000 \
    --out notebooks/results/blackbox
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from blackbox_throughput import throughput  # benchmarks/, the script's own folder

from upx_core import MaskSetting, OptimConfig, load_model, optimize_masks
from upx_core.book.chapter import load_sample
from upx_core.evaluation.provenance import provenance
from upx_core.method.blackbox import optimize_masks_blackbox, samples_for_budget, torch_predictor
from upx_core.method.equations import upsample_mask
from upx_core.method.metrics import consistency, relative_improvement, undesirable_pixel_ratio
from upx_core.method.models import class_index
from upx_core.method.onnxbox import export_onnx, onnx_predictor
from upx_core.method.oracle import oracle_masks
from upx_core.method.runtime import keep_freed_memory

CASES = [("n01871265_tusker", "African elephant"), ("n04228054_ski", "ski"),
         ("n02667093_abaya", "abaya"), ("n03776460_mobile_home", "mobile home")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--torch-budget", type=int, default=1000,
                    help="the budget also run through torch (seconds per mask, same masks); "
                         "0: none")
    ap.add_argument("--objective", default="prob", choices=["prob", "log_prob", "logit"],
                    help="OptimConfig.objective of both optimizers (default: the paper's)")
    ap.add_argument("--basis", type=int, default=None,
                    help="draw the search directions from a BASIS x BASIS smooth basis "
                         "(optimize_masks_blackbox's basis; default: all mask cells)")
    ap.add_argument("--white-seeds", type=int, nargs="*", default=[1, 2],
                    help="more white-box trials, compared with seed 0's (none: skip)")
    ap.add_argument("--oracle-samples", type=int, nargs="*", default=[2, 9, 39, 160, 640],
                    help="directions per iteration of the oracle estimator (none: skip); 2, 9 "
                         "and 39 are those of the default budgets (samples_for_budget), so the "
                         "oracle draws exactly the estimator's directions there (the stored "
                         "run drew 40 against 39: blackbox_fair.py redoes it with 39)")
    ap.add_argument("--out", required=True, help="folder for quality.json and masks.npz")
    args = ap.parse_args()
    keep_freed_memory()
    t_start = time.time()
    model = load_model("efficientnet_lite0")
    images = torch.stack([load_sample(name, model) for name, _ in CASES])
    targets = [class_index(t, model.categories) for _, t in CASES]
    config = OptimConfig(iterations=args.iterations, objective=args.objective)
    setting = MaskSetting(mode="ftc", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_onnx(model, Path(tmp) / "lite0.onnx")
        ort = onnx_predictor(onnx_file)
        rates = {"onnxruntime": throughput(ort, args.batch_sizes),
                 "torch_inference_mode": throughput(torch_predictor(model, "logits"),
                                                    args.batch_sizes)}
        print(json.dumps(rates, indent=1), flush=True)
        t0 = time.perf_counter()
        white = optimize_masks(model, images, targets=targets, settings=setting, config=config,
                               progress=False)
        white_s = (time.perf_counter() - t0) / len(CASES)
        white_phi = relative_improvement(white.target_prob_before, white.target_prob_after)[:, 0]
        white_ratio = undesirable_pixel_ratio(white.masks_upsampled[:, 0, 0])
        rows, masks = [], {"white": white.masks[:, 0, 0].numpy()}
        for seed in args.white_seeds:
            other = optimize_masks(model, images, targets=targets, config=config, progress=False,
                                   settings=MaskSetting(mode="ftc", seed=seed))
            masks[f"white_seed{seed}"] = other.masks[:, 0, 0].numpy()
            phi = relative_improvement(other.target_prob_before, other.target_prob_after)[:, 0]
            for b, (name, target) in enumerate(CASES):
                pair = torch.stack([other.masks_upsampled[b, 0], white.masks_upsampled[b, 0]])
                rows.append({"image": name, "target": target, "backend": f"white seed {seed}",
                             "budget": None, "objective": args.objective,
                             "pearson_vs_white": consistency(pair)["pearson"],
                             "phi": float(phi[b]), "white_phi": float(white_phi[b])})
                print(json.dumps(rows[-1]), flush=True)
        for samples in args.oracle_samples:
            t0 = time.perf_counter()
            final, probs_after = oracle_masks(model, images, targets, setting, config, samples,
                                              args.basis)
            seconds = (time.perf_counter() - t0) / len(CASES)
            up = upsample_mask(final, tuple(images.shape[-2:]))
            idx = torch.tensor(targets).view(-1, 1)
            phi = relative_improvement(white.target_prob_before[:, 0],
                                       probs_after.gather(1, idx)[:, 0])
            ratio = undesirable_pixel_ratio(up[:, 0])
            budget = 2 + 2 * samples * config.iterations
            masks[f"oracle_{budget}"] = final[:, 0].numpy()
            for b, (name, target) in enumerate(CASES):
                pair = torch.stack([up[b], white.masks_upsampled[b, 0]])
                rows.append({"image": name, "target": target, "backend": "oracle",
                             "budget": budget, "samples": samples, "basis": args.basis,
                             "objective": args.objective,
                             "pearson_vs_white": consistency(pair)["pearson"],
                             "phi": float(phi[b]), "white_phi": float(white_phi[b]),
                             "ratio": float(ratio[b]), "white_ratio": float(white_ratio[b]),
                             "seconds_per_mask": seconds})
                print(json.dumps(rows[-1]), flush=True)
        runs = [("onnxruntime", ort, b) for b in args.budgets]
        if args.torch_budget:
            runs.append(("torch", torch_predictor(model, "logits"), args.torch_budget))
        for backend, predict, budget in runs:
            # the stored run's estimator, named now that tracking is the default
            samples = samples_for_budget(budget, config.iterations, "antithetic")
            t0 = time.perf_counter()
            res = optimize_masks_blackbox(predict, images, targets=targets, settings=setting,
                                          config=config, queries=budget, samples=samples,
                                          basis=args.basis, outputs="logits", progress=False,
                                          estimator="antithetic")
            per_mask_s = (time.perf_counter() - t0) / len(CASES)
            phi = relative_improvement(res.target_prob_before, res.target_prob_after)[:, 0]
            ratio = undesirable_pixel_ratio(res.masks_upsampled[:, 0, 0])
            masks[f"{backend}_{budget}"] = res.masks[:, 0, 0].numpy()
            for b, (name, target) in enumerate(CASES):
                pair = torch.stack([res.masks_upsampled[b, 0], white.masks_upsampled[b, 0]])
                rows.append({
                    "image": name, "target": target, "backend": backend, "budget": budget,
                    "samples": samples, "basis": args.basis, "objective": args.objective,
                    "queries": int(res.queries[b, 0]),
                    "pearson_vs_white": consistency(pair)["pearson"],
                    "phi": float(phi[b]), "white_phi": float(white_phi[b]),
                    "phi_share": float(phi[b] / white_phi[b]) if white_phi[b] > 0 else None,
                    "ratio": float(ratio[b]),
                    "white_ratio": float(white_ratio[b]),
                    "seconds_per_mask": per_mask_s, "white_seconds_per_mask": white_s,
                })
                print(json.dumps(rows[-1]), flush=True)
    record = {"provenance": provenance(" ".join(["python", *sys.argv]),
                                      wall_s=time.time() - t_start),
              "cases": CASES, "throughput": rates, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "masks.npz", **masks)
    (out / "quality.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
