"""What ``upx explain`` leaves behind: the folder it writes (result.json, mask.npy, pictures)
and the summary it prints, with a note when the target barely moved or no pixel was found."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from .files import OutputDir, atomic_directory
from .method.config import OptimConfig
from .method.metrics import consistency, relative_improvement, undesirable_pixel_ratio
from .method.modes import MODE_REGISTRY
from .method.result import UPXResult
from .plotting import explanation_grid, heatmap_figure, to_numpy_image

__all__ = ["write_explanation", "MODE_WORDS", "FOLDER_README"]

# What each mode looks for, in words a user without the paper reads (the paper's name after).
MODE_WORDS = {name: mode.looks_for for name, mode in MODE_REGISTRY.items()}

# README.txt of every folder upx explain writes: what each file holds, without the paper.
FOLDER_README = """\
Written by upx explain {version}. What each file holds:

result.json      the run: class, probabilities before and after, the scores below, every
                 setting. Keys name their units: relative_improvement_percent is how much the
                 target's probability rose, in percent of where it started (the paper's phi,
                 Eq. 8); ratio_fraction is the fraction (0..1) of pixels blurred by more than
                 the threshold (the paper's Table 2 ratio).
mask.npy         the optimized masks as a NumPy array [trials, {m}, {m}], one per seed, at the
                 mask's own {m} x {m} resolution: 1 keeps a pixel, 0 replaces it by its blur
                 (the paper's M). The pictures and upx_core's attribute() show the opposite,
                 1 - M', at the image's {h} x {w} pixels: upsample with
                 upx_core.method.equations.upsample_mask and subtract from 1 to get them.
heatmap.png      how strongly each pixel is blurred (1 - M', high = undesirable) over the image.
perturbed.png    the image with its undesirable pixels blurred (first trial).
explanation.png  every trial: the undesirable pixels over the image, and the blurred image.
"""


def upx_version() -> str:
    """upx's installed version, or "unknown" when it runs from a source tree not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("upx")
    except PackageNotFoundError:
        return "unknown"


def _png(fig_or_array) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    if hasattr(fig_or_array, "savefig"):
        fig_or_array.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig_or_array)
    else:
        plt.imsave(buf, fig_or_array, format="png")
    return buf.getvalue()


def write_explanation(result: UPXResult, image, path: Path, out: OutputDir | Path, model: str,
                      threshold: float, wall: float, extra: dict | None = None) -> None:
    """Write ``out`` whole or not at all and print the summary of ``result`` (one image, one
    mask per trial, all of one mode): ``image`` as the model saw it, read from ``path``;
    ``model`` its name, ``threshold`` Table 2's; ``wall`` the seconds it took; ``extra`` more
    fields for result.json (the black box's queries, say)."""
    settings, config = result.settings, result.config
    mode, seeds = settings[0].mode, [s.seed for s in settings]
    before = result.target_prob_before[0]
    after = result.target_prob_after[0]
    improvement = relative_improvement(before, after)
    ratio = undesirable_pixel_ratio(result.masks_upsampled[0, :, 0], threshold)
    summary = result.describe(0, 0)
    summary.pop("setting")
    empty = float(ratio.max()) == 0
    agreement = (consistency(result.masks_upsampled[0], threshold)
                 if len(settings) > 1 else None)
    if agreement is not None and empty:
        agreement["iou"] = None  # two empty regions are not a perfect agreement: IoU says nothing
    from .evaluation.provenance import git_commit

    summary.update({
        "upx_version": upx_version(),
        "git_commit": git_commit(),
        "image": str(path),
        "model": model,
        "mode": mode,
        "seeds": seeds,
        "prob_after": [float(v) for v in after],
        "prob_after_mean": float(after.mean()),
        "relative_improvement_percent": [float(v) for v in improvement],
        "relative_improvement_percent_mean": float(improvement.mean()),
        "threshold": threshold,
        "ratio_fraction": [float(v) for v in ratio],
        "ratio_fraction_mean": float(ratio.mean()),
        "consistency": agreement,
        "mask_npy": (f"[trials, {config.mask_size}, {config.mask_size}]: M per seed, 1 keeps a "
                     "pixel, 0 blurs it; the pictures show 1 - M' at the image size "
                     "(README.txt)"),
        "top5_after": [result.named(*(t[0, k] for t in result.top5_after()))
                       for k in range(len(settings))],
        "settings": [dataclasses.asdict(s) for s in settings],
        "wall_s": wall,
        **(extra or {}),
    })
    with atomic_directory(out, protect=[path]) as tmp:
        (tmp / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        h, w = result.image_size
        (tmp / "README.txt").write_text(FOLDER_README.format(
            version=summary["upx_version"], m=config.mask_size, h=h, w=w))
        np.save(tmp / "mask.npy", result.masks[0, :, 0].numpy())
        (tmp / "heatmap.png").write_bytes(_png(heatmap_figure(result, image)))
        (tmp / "perturbed.png").write_bytes(_png(to_numpy_image(result.perturbed[0, 0])))
        (tmp / "explanation.png").write_bytes(_png(explanation_grid(
            result, image.unsqueeze(0), show_perturbed=True)))

    name = summary["target_name"]
    print(f"image        {path.name}")
    print(f"target       {name} ({summary['target']}), model {summary['model']}")
    print(f"looked for   {MODE_WORDS[mode]} (--mode {mode})")
    if result.queries is None:  # a black box's arithmetic is its own
        print(f"arithmetic   {arithmetic(config)}")
    print(f"p(target)    {float(before[0]):.4f} -> " + ", ".join(f"{float(a):.4f}" for a in after)
          + f"  (seeds {' '.join(map(str, seeds))})")
    print(f"gain         {summary['relative_improvement_percent_mean']:+.2f} % relative "
          "improvement of p(target), mean over trials (phi, Eq. 8)")
    print(f"undesirable  {summary['ratio_fraction_mean']:.4f} of the pixels, blurred by more "
          f"than {threshold} (ratio, Table 2; 1 - M' > {threshold})")
    if agreement is not None:
        iou = "n/a" if agreement["iou"] is None else f"{agreement['iou']:.3f}"
        print(f"trials agree Pearson {agreement['pearson']:.3f}, IoU {iou} over "
              f"{len(settings)} trials (consistency)")
    for line in notes(name, float(before[0]), float(after.max()), empty, mode,
                       config.objective, threshold):
        print(f"note         {line}")
    if "queries" in summary:
        print(f"queries      {summary['queries']} per mask (query-only: no gradient was taken; "
              f"estimator {summary['estimator']})")
    print(f"wrote        {out}/ (README.txt says what each file holds: result.json, mask.npy, "
          f"heatmap.png, perturbed.png, explanation.png) in {wall:.1f} s")


def arithmetic(config: OptimConfig) -> str:
    """How the classifier computed, in words, with the flag that changes it."""
    layout = ", channels-last" if config.channels_last else ""
    if config.amp == "bf16":
        return (f"bfloat16 classifier{layout}, mask and losses in float32 (--amp fp32: float32 "
                "throughout)")
    return f"float32{layout} (--amp)"


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
        notes.append("no undesirable pixels found: no pixel is blurred by more than "
                     f"{threshold} in any trial (1 - M' > {threshold})")
    if MODE_REGISTRY[mode].crucial or best_after - before >= 0.01:  # it lowers the target
        return notes
    if before >= 0.9:
        # under the probability, say that the log-probability (upx explain's default) is no
        # remedy here; under the log-probability there is nothing to switch to
        aside = (" (--objective log_prob changes little this close to 1)"
                 if objective == "prob" else "")
        notes.append(f"p({name}) barely moved: the model is already sure ({before:.3f}), so "
                     "little is left to gain against the cost of blurring; a lower --lambda2 "
                     f"makes blur cheaper{aside}")
    elif objective == "prob" and before < 0.3:
        notes.append(f"p({name}) barely moved: a target the model gives little probability "
                     "pulls weakly against the penalties; try --objective log_prob "
                     "(book/implementation-notes.md)")
    else:
        notes.append(f"p({name}) barely moved: the penalties outweigh what blurring gains here; "
                     "try a lower --lambda2 or --lambda1")
    return notes
