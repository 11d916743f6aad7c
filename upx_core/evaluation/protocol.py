"""The paper's quantitative protocol (Sect. 4.4): phi of Eq. 8 (Table 1) and the share of
undesirable pixels (Table 2), over a seeded random selection of the ImageNet sample images.

One row per (image, mode, seed). The target of every mask is h, the clean image's top class,
as Eq. 8 defines it. Images go through :func:`~upx_core.method.optimizer.optimize_masks` in batches
of ``batch_images`` images x all (mode, seed) settings. With ``out_csv`` every batch is written
atomically through :mod:`upx_core.evaluation.store`, so a crash leaves either the previous or the
new file, never half a row; a restarted run skips the (image, mode, seed) rows already there.

Mode ``random`` is a baseline without optimization: for each image and seed, the learned F-TC
mask's values are moved to random places. The pixels of the upsampled mask M' are ranked by a
smooth random field (a seeded uniform coarse mask, upsampled like M) and given M''s values in
the same order, so the random mask has exactly the same histogram as M' (the same number of
pixels above the threshold, the same amount of blur), only placed at random.

Under ``torchrun --nproc_per_node N`` each rank takes ``indices[rank::N]`` and writes its rows
to ``<out_csv>.rank<R>.csv``; rank 0 then merges everything into ``out_csv`` and returns the
whole table, the other ranks return their own part. The command line is ``upx evaluate``
(``torchrun --nproc_per_node N -m upx_core.cli evaluate ...``).
"""

from __future__ import annotations

import logging
import operator
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data import load_image, sample_filenames, sample_path
from ..errors import RankFailedError
from ..method.config import EVAL_MODES, MaskSetting, OptimConfig
from ..method.equations import upsample_mask
from ..method.metrics import relative_improvement, undesirable_pixel_ratio
from ..method.optimizer import optimize_masks
from ..method.runtime import on_device, perturbed_probs, resolve_amp, resolve_device
from . import store
from .distributed import process_group
from .provenance import segment
from .store import COLUMNS, RUN_COLUMNS, part_path

__all__ = ["EVAL_MODES", "COLUMNS", "select_images", "run_evaluation", "random_mask_like",
           "part_path"]

log = logging.getLogger(__name__)

PENALTIES = ("lambda1", "lambda2", "beta", "gamma")  # per mask (MaskSetting), same for all here


def select_images(n: int, seed: int = 0, total: int = 1000) -> list[int]:
    """``n`` distinct class indices out of ``range(total)``, drawn with ``random.Random(seed)``,
    sorted. The same (n, seed, total) always gives the same list."""
    for name, v in (("n", n), ("seed", seed), ("total", total)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if n > total:
        raise ValueError(f"cannot select {n} images out of {total}")
    return sorted(random.Random(seed).sample(range(total), n))


def random_mask_like(mask_up: torch.Tensor, generator: torch.Generator,
                     mask_size: int = 28) -> torch.Tensor:
    """M' with its values moved to random, spatially smooth places (the ``random`` baseline).

    ``mask_up``: one upsampled mask ``[..., H, W]``. The pixels are ranked by a random field
    (``U(0, 1)`` on a ``mask_size`` grid, bilinearly upsampled as M is) and the k-th lowest
    field value gets the k-th lowest value of M': the result has exactly M''s histogram.
    """
    h, w = mask_up.shape[-2:]
    coarse = torch.rand(1, 1, mask_size, mask_size, generator=generator)
    field = upsample_mask(coarse, (h, w)).flatten().to(mask_up.device)
    values = mask_up.flatten().sort().values
    out = torch.empty_like(values)
    out[field.argsort(stable=True)] = values
    return out.view(mask_up.shape)


def _random_generator(seed: int, image_index: int) -> torch.Generator:
    # One stream per (trial seed, image): the same mask whatever the batch or rank layout.
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + image_index)


def _check_modes(modes) -> tuple[str, ...]:
    if isinstance(modes, str):
        modes = (modes,)
    modes = tuple(modes)
    if not modes:
        raise ValueError("modes is empty")
    bad = [m for m in modes if m not in EVAL_MODES]
    if bad:
        raise ValueError(f"unknown mode(s) {bad}; choose from {', '.join(EVAL_MODES)}")
    if len(set(modes)) != len(modes):
        raise ValueError(f"modes has duplicates: {modes}")
    if "random" in modes and "ftc" not in modes:
        raise ValueError("mode 'random' needs 'ftc' in modes: its area comes from the F-TC mask")
    return modes


def _check_ints(name: str, values, upper: int | None = None) -> list[int]:
    if isinstance(values, int):
        values = [values]
    out = []
    for v in values:
        try:
            if isinstance(v, bool):
                raise TypeError
            v = operator.index(v)  # int, numpy integer; not float or str
        except TypeError:
            raise ValueError(f"{name} must be integers, got {v!r}") from None
        if v < 0 or (upper is not None and v >= upper):
            bound = f"0..{upper - 1}" if upper is not None else ">= 0"
            raise ValueError(f"{name}: {v} is out of range {bound}")
        out.append(v)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicates")
    return out


def _check_penalties(penalties: dict | None) -> dict:
    """Every mask's lambda1, lambda2, beta and gamma: the paper's, overridden by ``penalties``."""
    given = dict(penalties or {})
    unknown = sorted(set(given) - set(PENALTIES))
    if unknown:
        raise ValueError(f"unknown penalties {unknown}; choose from {', '.join(PENALTIES)}")
    paper = MaskSetting()
    out = {name: given.get(name, getattr(paper, name)) for name in PENALTIES}
    MaskSetting(**out)  # the same checks as for one mask
    return {name: float(v) for name, v in out.items()}


def _run_values(model_name: str, config: OptimConfig, threshold: float,
                penalties: dict) -> dict:
    return {
        "model": model_name, "threshold": threshold, "iterations": config.iterations,
        "lr": config.lr, "mask_size": config.mask_size, "sigma": config.sigma,
        "kernel_size": config.kernel_size, "objective": config.objective,
        "reduction": config.reduction, "ftc_form": config.ftc_form,
        "fntc_norm": config.fntc_norm,
        "init_noise": config.init_noise, **penalties, "precision": config.amp or "fp32",
    }


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return store.sort_rows(df, EVAL_MODES)


def _say(msg: str, progress: bool) -> None:
    log.info(msg)
    if progress:
        print(msg, file=sys.stderr, flush=True)


def run_evaluation(
    model,
    image_indices: Sequence[int],
    modes: Sequence[str] = ("ftc", "fntc"),
    seeds: Sequence[int] = (0,),
    config: OptimConfig | None = None,
    threshold: float = 0.6,
    batch_images: int = 8,
    device: str | torch.device = "auto",
    out_csv: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    data_root: str | os.PathLike | None = None,
    batch_size: int | None = None,
    penalties: dict | None = None,
    force_resume: bool = False,
) -> pd.DataFrame:
    """Evaluate every (image, mode, seed) of the protocol; one DataFrame row each.

    model: a :class:`~upx_core.method.models.Classifier` (or a name for :func:`load_model`).
    image_indices: sample-image class indices (see :func:`select_images`).
    modes: any of ``baseline``, ``ftc``, ``fntc``, ``deletion`` and ``random`` (needs ``ftc``).
    seeds: the trials; each (mode, seed) is one :class:`MaskSetting`.
    penalties: the regularizer weights of every mask, any of ``lambda1``, ``lambda2``, ``beta``
        and ``gamma`` (Eq. 3-7; ``None`` or a missing key: the paper's). They are run settings
        like ``config``: a CSV written with other penalties is not resumed.
    threshold: Table 2's threshold on the undesirable magnitude 1 - M'.
    batch_images: images per optimizer call (each with all its settings).
    out_csv: write the rows there after every batch (atomically); with ``resume`` the rows
        already in it (or in ``<out_csv>.rank*.csv`` parts of a stopped torchrun) are kept and
        not computed again, and a file written with another model or config is an error.
        ``resume=False`` starts the file afresh. Each row records the ``git_commit`` and
        ``optimizer_version`` that computed it; rows of another optimizer version (or of none,
        from before it was recorded) are refused unless ``force_resume``, which keeps them.
    batch_size: masks per forward pass, passed to ``optimize_masks`` (``None``: all at once
        on the CPU, a size that fits the free memory on CUDA).
    Returns the rows of the requested (image, mode, seed) keys, sorted by them; under torchrun,
    rank 0 returns all of them and the other ranks their own shard.
    """
    from ..method.models import load_model

    config = resolve_amp(config or OptimConfig(), resolve_device(device))  # rows: what it chose
    modes = _check_modes(modes)
    seeds = _check_ints("seeds", seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    indices = _check_ints("image_indices", image_indices, upper=len(sample_filenames()))
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if not isinstance(batch_images, int) or batch_images <= 0:
        raise ValueError(f"batch_images must be a positive integer, got {batch_images!r}")
    if isinstance(model, str):
        model = load_model(model, device="cpu")
    model_name = str(getattr(model, "name", type(model).__name__))
    run = {**_run_values(model_name, config, float(threshold), _check_penalties(penalties)),
           **segment()}  # the segment: recorded in each row, its version checked on resume
    out = Path(out_csv) if out_csv is not None else None

    with process_group(device) as dist_info:
        mine = indices[dist_info.rank::dist_info.world]
        work = None if out is None else (part_path(out, dist_info.rank)
                                         if dist_info.active else out)
        if out is not None and not resume:  # afresh: no rank reads before rank 0 cleared
            if dist_info.rank == 0:
                store.remove_stale(out, with_out=dist_info.active)
            dist_info.barrier()
        existing, own = store.existing_rows(out if resume else None, work, run,
                                            dist_info.active, force_resume)
        wanted = {(i, m, s) for i in mine for m in modes for s in seeds}
        missing = wanted - store.keys(existing)
        todo = [i for i in mine if any((i, m, s) in missing for m in modes for s in seeds)]
        who = f"rank {dist_info.rank}/{dist_info.world}: " if dist_info.active else ""
        _say(f"upx evaluate {model_name}: {who}{len(missing)} of {len(wanted)} rows "
             f"({len(todo)} images) to do", progress)

        new: list[dict] = []
        error: BaseException | None = None
        try:
            new = _evaluate(model, todo, missing, modes, seeds, config, run, batch_images,
                            dist_info, work, own, progress and not dist_info.active, data_root,
                            batch_size, resume, force_resume)
        except BaseException as err:  # told to the other ranks before re-raising
            error = err
        if dist_info.any_true(error is not None) and error is None:
            raise RankFailedError("upx evaluate: another rank failed; see its error")
        if error is not None:
            raise error

        mine_df = store.select(store.concat([existing, store.frame(new)]), wanted)
        if not dist_info.active:
            if out is not None and store.part_paths(out):
                store.merge_parts(out, EVAL_MODES)  # parts left by a stopped torchrun run
            return _sorted(mine_df)
        dist_info.barrier()  # every part file is complete
        if out is None:
            parts = dist_info.gather(mine_df.to_dict("records"))
            if dist_info.rank != 0:
                return _sorted(mine_df)
            rows = [r for part in parts for r in part]
            return _sorted(store.frame(rows))
        full = store.merge_parts(out, EVAL_MODES) if dist_info.rank == 0 else None
        dist_info.barrier()  # the merged file is in place before anyone returns
        if dist_info.rank != 0:
            return _sorted(mine_df)
        every = {(i, m, s) for i in indices for m in modes for s in seeds}
        return _sorted(store.select(full, every))


def _evaluate(model, todo, missing, modes, seeds, config, run, batch_images, dist_info,
              work, own, progress, data_root, batch_size, resume, force_resume) -> list[dict]:
    if not todo:
        return []
    dev = dist_info.device
    new: list[dict] = []
    bar = tqdm(total=len(todo), unit="image", disable=not progress, desc="upx evaluate")
    # Images that miss the same (mode, seed) pairs share batches, so a batch runs no setting
    # that one of its images has already done (after a crash every left image misses all).
    groups: dict[frozenset, list[int]] = {}
    for i in todo:
        groups.setdefault(frozenset((m, s) for (j, m, s) in missing if j == i), []).append(i)
    batches = [g[k:k + batch_images] for g in groups.values()
               for k in range(0, len(g), batch_images)]
    # on the device once, instead of once per optimize_masks call
    with on_device(model, dev):
        try:
            for n, batch in enumerate(batches):
                rows = _evaluate_batch(model, batch, missing, modes, seeds, config, run, dev,
                                       progress, data_root, batch_size)
                new.extend(rows)
                if work is not None:
                    # merged under a lock with what is on disk now, so a run writing the same
                    # file at the same time keeps its rows; a fresh run replaces the old file
                    # at its first write (own is empty then)
                    store.add_rows(store.concat([own, store.frame(new)]), work, run,
                                   EVAL_MODES, replace=(n == 0 and not resume),
                                   force_resume=force_resume)
                bar.update(len(batch))
        finally:
            bar.close()
    return new


def _evaluate_batch(model, batch, missing, modes, seeds, config, run, dev, progress,
                    data_root, batch_size) -> list[dict]:
    input_size = int(getattr(model, "input_size", 224))
    resize_size = int(getattr(model, "resize_size", 256))
    names = sample_filenames()
    images = torch.stack([
        load_image(sample_path(i, data_root), input_size, resize_size, min_size=config.mask_size)
        for i in batch
    ])
    in_batch = set(batch)
    need = {(m, s) for (i, m, s) in missing if i in in_batch}
    need_random = {s for (m, s) in need if m == "random"}
    pairs = [(m, s) for m in modes if m != "random" for s in seeds
             if (m, s) in need or (m == "ftc" and s in need_random)]
    settings = [MaskSetting(mode=m, seed=s, **{p: run[p] for p in PENALTIES}) for m, s in pairs]
    result = optimize_masks(model, images, targets=None, settings=settings, config=config,
                            device=dev, batch_size=batch_size, keep_images=False,
                            progress=progress)
    mask_up = result.masks_upsampled  # [B, K, 1, H, W]
    ratio = undesirable_pixel_ratio(mask_up, run["threshold"])[..., 0]  # [B, K]
    before, after = result.target_prob_before, result.target_prob_after
    improvements = relative_improvement(before, after)
    b_count, k_count = result.targets.shape
    after_thr = _target_probs(
        model, images, torch.arange(b_count).repeat_interleave(k_count),
        thresholded(mask_up.flatten(0, 1), run["threshold"]), result.targets.flatten(),
        config, dev, batch_size,
    ).view(b_count, k_count)
    improvements_thr = relative_improvement(before, after_thr)
    categories = result.categories

    def row(b, mode, seed, target, p_before, p_after, improvement, r, improvement_t):
        return {
            "image_index": batch[b], "mode": mode, "seed": seed, "file": names[batch[b]],
            "model": run["model"], "target": target,
            "target_name": categories[target] if categories else str(target),
            "prob_before": p_before, "prob_after": p_after, "ratio": r,
            "relative_improvement": improvement, "relative_improvement_thresholded": improvement_t,
            **{c: run[c] for c in RUN_COLUMNS if c != "model"},
            "channels_last": config.channels_last,
            "device": str(dev), **{c: run[c] for c in store.SEGMENT_COLUMNS},
        }

    rows = []
    for b, i in enumerate(batch):
        for k, (m, s) in enumerate(pairs):
            if (i, m, s) in missing:
                rows.append(row(b, m, s, int(result.targets[b, k]), float(before[b, k]),
                                float(after[b, k]), float(improvements[b, k]),
                                float(ratio[b, k]), float(improvements_thr[b, k])))
    wanted_random = [(b, i, s) for b, i in enumerate(batch) for s in seeds
                     if (i, "random", s) in missing]
    if wanted_random:
        rows += _random_rows(model, images, mask_up, result, pairs, wanted_random, config, run,
                             dev, row, batch_size)
    return rows


def _target_probs(model, images, img_idx, masks_up, targets, config, dev, batch_size):
    """f_k(Q(X; M', h)) for given upsampled masks ``[N, 1, H, W]``, one forward each."""
    chunk = batch_size or 64
    probs = []
    for start in range(0, len(img_idx), chunk):
        sel = slice(start, start + chunk)
        p = perturbed_probs(model, images[img_idx[sel]].to(dev), masks_up[sel].to(dev), config)
        probs.append(p.gather(1, targets[sel].view(-1, 1).to(dev)).squeeze(1).cpu())
    return torch.cat(probs)


def thresholded(mask_up: torch.Tensor, threshold: float) -> torch.Tensor:
    """The mask with only Table 2's undesirable pixels blurred: M'' = 0 where 1 - M' > t, else 1.

    Evaluating Eq. 8 under M'' asks whether the pixels the ratio counts carry the gain, or the
    faint blur below the threshold (which the ratio does not count) does.
    """
    return ((1.0 - mask_up) <= threshold).to(mask_up.dtype)


def _random_rows(model, images, mask_up, result, pairs, wanted, config, run, dev, row,
                 batch_size) -> list[dict]:
    """The ``random`` baseline: each F-TC mask's values at random places, one forward each."""
    ftc_k = {s: k for k, (m, s) in enumerate(pairs) if m == "ftc"}
    rand_up = torch.stack([
        random_mask_like(mask_up[b, ftc_k[s], 0], _random_generator(s, i), config.mask_size)
        for b, i, s in wanted
    ]).unsqueeze(1)
    img_idx = torch.tensor([b for b, _, _ in wanted])
    targets = torch.tensor([int(result.targets[b, ftc_k[s]]) for b, _, s in wanted])
    after = _target_probs(model, images, img_idx, rand_up, targets, config, dev, batch_size)
    after_thr = _target_probs(model, images, img_idx, thresholded(rand_up, run["threshold"]),
                              targets, config, dev, batch_size)
    before = torch.stack([result.target_prob_before[b, ftc_k[s]] for b, _, s in wanted])
    improvements = relative_improvement(before, after)
    improvements_thr = relative_improvement(before, after_thr)
    ratio = undesirable_pixel_ratio(rand_up[:, 0], run["threshold"])
    return [
        row(b, "random", s, int(targets[j]), float(before[j]), float(after[j]),
            float(improvements[j]), float(ratio[j]), float(improvements_thr[j]))
        for j, (b, _, s) in enumerate(wanted)
    ]
