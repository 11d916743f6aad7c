"""A fair comparison of the query-only masks with the white-box ones (issue 26, section 1).

``benchmarks/blackbox_quality.py`` compared each query-only mask with the white-box mask of seed
0 by raw phi (Eq. 8) and Pearson r. Raw phi rewards a mask that blurs more, and one seed per
budget hides the run-to-run noise. This script reads that run's stored masks and adds, on the
same four case studies, model (EfficientNet-Lite0 exported to ONNX, queried through ONNX
Runtime) and objective:

- the area-matched phi of every stored map: phi when only the top 1, 2 and 5 % of the pixels of
  its 1 - M' are blurred (:func:`upx_core.method.baselines.area_matched_phi`), and when as many
  pixels are blurred as the white-box seed 0 mask blurs in all (the mean of its 1 - M');
- the ceiling: Pearson r between the white-box maps of seeds 0, 1 and 2, and every map's r with
  white-box seed 0 as a share of that ceiling (the mean r of seeds 1 and 2 with seed 0);
- two query-only baselines at equal budgets: the blur-occlusion sweep (785 queries) and RISE
  masks weighted by the target's gain (``--rise-budgets``, ``--rise-seeds``), with the gain of
  the stored run's objective;
- the oracle (:func:`upx_core.method.oracle.oracle_masks`) with exactly the estimator's
  directions at each stored budget (``samples_for_budget``: 2, 9 and 39 per iteration; the
  stored run's oracle drew 40 against the 16,000-query estimator's 39, so their directions
  parted after the first iteration);
- more query-only masks (``--seeds``, ``--seed-budgets``), the estimator's trial seed
  (``MaskSetting.seed``, which also seeds its directions), so each budget has several seeds;
  ``--estimator tracking`` makes them with the running estimate of
  :mod:`upx_core.method.tracking` (maps named ``tracking_<budget>_seed<s>``) instead of the
  stored run's antithetic differences (``onnxruntime_<budget>_seed<s>``).

Everything goes to ``--out``/fair.json (rows, provenance, seconds per part) and the maps it made
to ``--out``/fair_maps.npz (28 x 28, one per case).

Usage: python benchmarks/blackbox_fair.py --out notebooks/results/blackbox
       python benchmarks/blackbox_fair.py --only-seeds --seed-budgets 16000 \
           --out notebooks/results/blackbox
       python benchmarks/blackbox_fair.py --only-seeds --estimator tracking --seeds 0 1 2 \
           --seed-budgets 1000 4000 --out notebooks/results/blackbox
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from upx_core import MaskSetting, OptimConfig, load_model
from upx_core.book.chapter import load_sample
from upx_core.evaluation.blackbox_run import load_quality_run
from upx_core.evaluation.provenance import provenance
from upx_core.files import atomic_write_bytes
from upx_core.method.baselines import area_matched_phi, occlusion_map, rise_maps
from upx_core.method.blackbox import ESTIMATORS, optimize_masks_blackbox, samples_for_budget
from upx_core.method.equations import upsample_mask
from upx_core.method.metrics import pearson, relative_improvement, undesirable_pixel_ratio
from upx_core.method.models import class_index
from upx_core.method.onnxbox import export_onnx, onnx_predictor
from upx_core.method.oracle import oracle_masks
from upx_core.method.runtime import keep_freed_memory

FRACTIONS = (0.01, 0.02, 0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stored", default="notebooks/results/blackbox",
                    help="the folder of blackbox_quality.py's quality.json and masks.npz")
    ap.add_argument("--rise-budgets", type=int, nargs="*", default=[1000, 4000])
    ap.add_argument("--rise-seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2],
                    help="more query-only trial seeds (seed 0 is the stored run's)")
    ap.add_argument("--seed-budgets", type=int, nargs="*", default=[1000, 4000])
    ap.add_argument("--estimator", choices=ESTIMATORS, default="antithetic",
                    help="the query-only estimator of the --seeds masks (default: the stored "
                         "run's, %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime's intra-op threads")
    ap.add_argument("--only-seeds", action="store_true",
                    help="run only the extra query-only seeds and add their rows and maps to "
                         "the fair.json and fair_maps.npz already in --out (its provenance "
                         "keeps the first run's and lists this one under 'more')")
    ap.add_argument("--out", required=True, help="folder for fair.json and fair_maps.npz")
    args = ap.parse_args()
    keep_freed_memory()
    t_start = time.time()
    stored = load_quality_run(args.stored)
    model = load_model("efficientnet_lite0")
    cases = stored.cases
    images = torch.stack([load_sample(name, model) for name, _ in cases])
    targets = torch.tensor([class_index(t, model.categories) for _, t in cases])
    size = tuple(images.shape[-2:])
    config = OptimConfig(iterations=200, objective=stored.objective)
    gain = "log_prob" if stored.objective == "log_prob" else "prob"
    white = stored.undesirable("white", size)
    # the white-box seed 0 mask's blurred area: the mean of its 1 - M' (Eq. 3's L1 per pixel)
    white_area = white.mean(dim=(1, 2)).tolist()
    maps = {name: 1 - torch.from_numpy(m).float() for name, m in stored.masks.items()}
    rows, seconds, made = [], {}, {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first = None
    if args.only_seeds:  # a later part of the same comparison, added to the first run's
        first = json.loads((out / "fair.json").read_text())
        rows, seconds = first["rows"], first["seconds"]
        with np.load(out / "fair_maps.npz") as held:
            made = {k: held[k] for k in held.files}

    def save() -> None:
        this = provenance(" ".join(["python", *sys.argv]), wall_s=time.time() - t_start)
        if first is not None:
            this = {**first["provenance"],
                    "more": [*first["provenance"].get("more", []), this]}
        record = {"provenance": this,
                  "cases": cases, "fractions": list(FRACTIONS), "gain": gain,
                  "white_area": white_area,
                  "backend": "onnxruntime", "seconds": seconds, "rows": rows}
        # each file whole or not at all: a run stopped mid-write keeps the last complete save
        buf = io.BytesIO()
        np.savez_compressed(buf, **made)
        atomic_write_bytes(out / "fair_maps.npz", buf.getvalue())
        atomic_write_bytes(out / "fair.json", (json.dumps(record, indent=1) + "\n").encode())

    def score(name: str, undesirable: torch.Tensor, **extra) -> None:
        """Area-matched phi and r with white-box seed 0 of one map per case ``[B, m, m]``; a list
        in ``extra`` gives one value per case (``mean_blur``: the mean of 1 - M', Eq. 3's L1
        per pixel, for masks)."""
        amp = area_matched_phi(predict, images, undesirable, targets, FRACTIONS, config)
        at_white = [float(area_matched_phi(predict, images[b:b + 1], undesirable[b:b + 1],
                                           targets[b:b + 1], [white_area[b]], config)[0, 0])
                    for b in range(len(cases))]
        up = upsample_mask(undesirable[:, None].float(), size)[:, 0]
        for b, (image, target) in enumerate(cases):
            each = {k: v[b] if isinstance(v, list) else v for k, v in extra.items()}
            rows.append({"map": name, "image": image, "target": target, **each,
                         "pearson_vs_white": pearson(up[b], white[b]),
                         **{f"phi_top{round(100 * f)}": float(amp[b, i])
                            for i, f in enumerate(FRACTIONS)},
                         "phi_white_area": at_white[b]})
            print(json.dumps(rows[-1]), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        predict = onnx_predictor(export_onnx(model, Path(tmp) / "lite0.onnx"),
                                 threads=args.threads)
        t0 = time.perf_counter()
        for name, m in ({} if args.only_seeds else maps).items():
            score(name, m, kind="stored", mean_blur=upsample_mask(
                m[:, None], size).mean(dim=(1, 2, 3)).tolist())
        if not args.only_seeds:
            seconds["stored_maps"] = time.perf_counter() - t0
            save()

        for budget in [] if args.only_seeds else stored.budgets:
            samples = samples_for_budget(budget, config.iterations, "antithetic")
            t0 = time.perf_counter()
            final, _ = oracle_masks(model, images, targets, MaskSetting(mode="ftc", seed=0),
                                    config, samples)
            seconds[f"oracle_same_{budget}"] = time.perf_counter() - t0
            made[f"oracle_same_{budget}"] = final[:, 0].numpy()
            score(f"oracle_same_{budget}", 1 - final[:, 0], kind="oracle, same directions",
                  queries=budget, samples=samples, seed=0)
        if not args.only_seeds:
            save()
            t0 = time.perf_counter()
            occ, queries = occlusion_map(predict, images, targets, gain, config)
            seconds["occlusion"] = time.perf_counter() - t0
            made["occlusion"] = occ[:, 0].numpy()
            score("occlusion", occ[:, 0], kind="occlusion", queries=queries, seed=None)
            save()

        for seed in [] if args.only_seeds else args.rise_seeds:
            t0 = time.perf_counter()
            rise = rise_maps(predict, images, targets, args.rise_budgets, seed=seed, gain=gain,
                             config=config)
            seconds[f"rise_seed{seed}"] = time.perf_counter() - t0
            for budget, m in rise.items():
                made[f"rise_{budget}_seed{seed}"] = m[:, 0].numpy()
                score(f"rise_{budget}_seed{seed}", m[:, 0], kind="rise", queries=budget,
                      seed=seed)
            save()

        for seed in args.seeds:
            for budget in args.seed_budgets:
                t0 = time.perf_counter()
                res = optimize_masks_blackbox(
                    predict, images, targets=targets.tolist(),
                    settings=MaskSetting(mode="ftc", seed=seed), config=config, queries=budget,
                    samples=samples_for_budget(budget, config.iterations, args.estimator),
                    outputs="logits", progress=False, estimator=args.estimator)
                prefix = "onnxruntime" if args.estimator == "antithetic" else args.estimator
                name = f"{prefix}_{budget}_seed{seed}"
                seconds[name] = time.perf_counter() - t0
                made[name] = res.masks[:, 0, 0].numpy()
                phi = relative_improvement(res.target_prob_before, res.target_prob_after)[:, 0]
                ratio = undesirable_pixel_ratio(res.masks_upsampled[:, 0, 0])
                start = len(rows)
                score(name, 1 - res.masks[:, 0, 0], kind=f"query-only, {args.estimator}",
                      queries=budget, seed=seed,
                      mean_blur=(1 - res.masks_upsampled[:, 0, 0]).mean(dim=(1, 2)).tolist())
                for b in range(len(cases)):
                    rows[start + b].update(phi=float(phi[b]), ratio=float(ratio[b]),
                                           queries_used=int(res.queries[b, 0]))
                save()
    save()


if __name__ == "__main__":
    main()
