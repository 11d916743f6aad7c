"""What ``upx explain`` leaves behind: the folder it writes (result.json, mask.npy, pictures)
and the summary it prints, with a note when the target barely moved or no pixel was found."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from .io import atomic_directory
from .metrics import consistency, relative_improvement, undesirable_pixel_ratio
from .plotting import explanation_grid, heatmap_figure, to_numpy_image
from .result import UPXResult

__all__ = ["write_explanation"]


def _png(fig_or_array) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    if hasattr(fig_or_array, "savefig"):
        fig_or_array.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig_or_array)
    else:
        plt.imsave(buf, fig_or_array, format="png")
    return buf.getvalue()


def write_explanation(result: UPXResult, image, args, path: Path, out: Path, wall: float,
                      extra: dict | None = None) -> int:
    """Write ``out`` whole or not at all and print the summary; ``args`` are explain's parsed
    flags, ``extra`` more fields for result.json (the black box's queries, say)."""
    settings, config = result.settings, result.config
    before = result.target_prob_before[0]
    after = result.target_prob_after[0]
    rel = relative_improvement(before, after)
    ratio = undesirable_pixel_ratio(result.masks_upsampled[0, :, 0], args.threshold)
    summary = result.describe(0, 0)
    summary.pop("setting")
    summary.update({
        "image": str(path),
        "model": args.model,
        "mode": args.mode,
        "seeds": list(args.seeds),
        "prob_after": [float(v) for v in after],
        "prob_after_mean": float(after.mean()),
        "relative_improvement": [float(v) for v in rel],
        "phi": float(rel.mean()),
        "threshold": args.threshold,
        "ratio": [float(v) for v in ratio],
        "ratio_mean": float(ratio.mean()),
        "consistency": (consistency(result.masks_upsampled[0], args.threshold)
                        if len(settings) > 1 else None),
        "top5_after": [result.named(*(t[0, k] for t in result.top5_after()))
                       for k in range(len(settings))],
        "settings": [dataclasses.asdict(s) for s in settings],
        "wall_s": wall,
        **(extra or {}),
    })
    with atomic_directory(out, force=args.force, protect=[path]) as tmp:
        (tmp / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        np.save(tmp / "mask.npy", result.masks[0, :, 0].numpy())
        (tmp / "heatmap.png").write_bytes(_png(heatmap_figure(result, image)))
        (tmp / "perturbed.png").write_bytes(_png(to_numpy_image(result.perturbed[0, 0])))
        (tmp / "explanation.png").write_bytes(_png(explanation_grid(
            result, image.unsqueeze(0), show_perturbed=True)))

    name = summary["target_name"]
    print(f"image        {path.name}")
    print(f"target       {name} ({summary['target']}), mode {args.mode}, model {summary['model']}")
    print(f"p(target)    {float(before[0]):.4f} -> " + ", ".join(f"{float(a):.4f}" for a in after)
          + f"  (seeds {' '.join(map(str, args.seeds))})")
    print(f"phi (Eq. 8)  {summary['phi']:.2f}  (relative improvement of the target, mean)")
    print(f"ratio        {100 * summary['ratio_mean']:.2f} % of pixels with 1 - M' > "
          f"{args.threshold}")
    empty = float(ratio.max()) == 0
    if summary["consistency"] is not None:
        c = summary["consistency"]
        # two empty regions are not a perfect agreement: IoU says nothing then
        iou = "n/a" if empty else f"{c['iou']:.3f}"
        print(f"consistency  Pearson {c['pearson']:.3f}, IoU {iou} over {len(settings)} trials")
    for line in notes(name, float(before[0]), float(after.max()), empty, args.mode,
                       config.objective, args.threshold):
        print(f"note         {line}")
    if "queries" in summary:
        print(f"queries      {summary['queries']} per mask (query-only: no gradient was taken)")
    print(f"wrote        {out}/ (result.json, mask.npy, heatmap.png, perturbed.png, "
          f"explanation.png) in {wall:.1f} s")
    return 0



def notes(name: str, before: float, best_after: float, empty: bool, mode: str,
           objective: str, threshold: float) -> list[str]:
    """What the summary tells a user whose target barely moved, and why it did not.

    Two causes call for different remedies: a target the model is already sure of has little
    left to gain (blur is then too expensive: a lower --lambda2 helps, the log-probability does
    not, since its pull differs from the probability's by 1/f_k ~ 1 there); a target the model
    gives little probability pulls weakly under the probability objective (f_k (1 - f_k) is
    small), which --objective log_prob removes.
    """
    notes = []
    if empty:
        notes.append(f"no undesirable pixels found: no pixel has 1 - M' > {threshold} in any "
                     "trial")
    if mode == "deletion" or best_after - before >= 0.01:
        return notes
    if before >= 0.9:
        notes.append(f"p({name}) barely moved: the model is already sure ({before:.3f}), so "
                     "little is left to gain against the cost of blurring; a lower --lambda2 "
                     "makes blur cheaper (--objective log_prob changes little this close to 1)")
    elif objective == "prob" and before < 0.3:
        notes.append(f"p({name}) barely moved: a target the model gives little probability "
                     "pulls weakly against the penalties; try --objective log_prob "
                     "(book/implementation-notes.md)")
    else:
        notes.append(f"p({name}) barely moved: the penalties outweigh what blurring gains here; "
                     "try a lower --lambda2 or --lambda1")
    return notes
