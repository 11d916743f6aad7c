"""What an optimizer run returns: masks, probabilities and the full record of how they came."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .config import MaskSetting, OptimConfig
from .equations import upsample_mask

__all__ = ["TERMS", "UPXResult"]

# The loss history's parts (equations.loss_terms): the f-term (Eq. 3, 5 or 7's first term), R_M's
# TV and L1 norms, R_F (R_F-TC or R_F-NTC), the total loss, and the target probability f_k(Q).
TERMS = ("f_term", "tv", "l1", "r_factors", "total", "prob")


@dataclass(repr=False)
class UPXResult:
    """Masks for B images x K settings; tensors are on the CPU, indexed ``[b, k, ...]``.

    masks: coarse masks M, ``[B, K, 1, m, m]`` (1 keeps a pixel, 0 blurs it).
    targets: the class k each mask raised, ``[B, K]``.
    probs_before: softmax of the clean image, ``[B, C]``; probs_after: of Q, ``[B, K, C]``
    (every class); ``target_prob_before`` and ``target_prob_after``: the target's, ``[B, K]``.
    history: loss terms per iteration, ``[T, B, K, len(TERMS)]`` (before each Adam step).
    perturbed: Q(X; M', h), ``[B, K, 3, H, W]``, when the run kept them.
    config and settings: everything needed to run it again.
    queries: forward evaluations each mask used, ``[B, K]``, from the query-only optimizer
    (:func:`upx_core.method.blackbox.optimize_masks_blackbox`); ``None`` from the gradient
    optimizer.
    """

    config: OptimConfig
    settings: list[MaskSetting]
    targets: torch.Tensor
    masks: torch.Tensor
    probs_before: torch.Tensor
    probs_after: torch.Tensor
    history: torch.Tensor
    image_size: tuple[int, int]
    perturbed: torch.Tensor | None = None
    categories: list[str] | None = None
    device: str = "cpu"
    queries: torch.Tensor | None = None

    def __repr__(self) -> str:
        """One line: what the result holds, not its tensors (print() of a dataclass dumped the
        masks and 1,000 class names)."""
        b, k = self.targets.shape
        modes = sorted({s.mode for s in self.settings})
        names = sorted({self.class_name(int(t)) for t in self.targets.flatten()})
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        prob = self.target_prob_after
        h, w = self.image_size
        return (f"UPXResult({b} image{'s' * (b != 1)} x {k} setting{'s' * (k != 1)}, "
                f"mode {'/'.join(modes)}, target {shown}, p(target) "
                f"{float(self.target_prob_before.mean()):.4f} -> {float(prob.mean()):.4f} "
                f"(mean), masks {self.config.mask_size}x{self.config.mask_size} for "
                f"{h}x{w} images, {self.config.iterations} iterations"
                + ("" if self.queries is None else f", {int(self.queries.max())} queries/mask")
                + ")")

    @classmethod
    def build(cls, *, masks, history, probs_after, perturbed, targets, settings, **kw):
        b, k = targets.shape
        return cls(
            masks=masks.view(b, k, *masks.shape[1:]),
            history=history.view(history.shape[0], b, k, history.shape[-1]),
            probs_after=probs_after.view(b, k, -1),
            perturbed=None if perturbed is None else perturbed.view(b, k, *perturbed.shape[1:]),
            targets=targets,
            settings=list(settings),
            **kw,
        )

    @property
    def masks_upsampled(self) -> torch.Tensor:
        """M' = Inp(M) at the image size, ``[B, K, 1, H, W]``."""
        b, k = self.targets.shape
        up = upsample_mask(self.masks.flatten(0, 1), self.image_size)
        return up.view(b, k, 1, *self.image_size)

    @property
    def undesirable(self) -> torch.Tensor:
        """The map of undesirable pixels, 1 - M', ``[B, K, 1, H, W]`` (1: fully blurred)."""
        return 1.0 - self.masks_upsampled

    @property
    def target_prob_before(self) -> torch.Tensor:
        """f_k(X) for each mask's target, ``[B, K]``."""
        b, k = self.targets.shape
        return self.probs_before.unsqueeze(1).expand(b, k, -1).gather(
            2, self.targets.unsqueeze(2)).squeeze(2)

    @property
    def target_prob_after(self) -> torch.Tensor:
        """f_k(Q(X; M', h)) for each mask's target, ``[B, K]``."""
        return self.probs_after.gather(2, self.targets.unsqueeze(2)).squeeze(2)

    def top5_before(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, indices) of the clean image's top 5, each ``[B, 5]``."""
        return self.probs_before.topk(min(5, self.probs_before.shape[-1]), dim=-1)

    def top5_after(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, indices) of the perturbed image's top 5, each ``[B, K, 5]``."""
        return self.probs_after.topk(min(5, self.probs_after.shape[-1]), dim=-1)

    def term(self, name: str) -> torch.Tensor:
        """One loss term over the iterations, ``[T, B, K]``; ``name`` from :data:`TERMS`."""
        if name not in TERMS:
            raise ValueError(f"unknown term {name!r}; one of {', '.join(TERMS)}")
        return self.history[..., TERMS.index(name)]

    def class_name(self, index: int) -> str:
        return self.categories[index] if self.categories else str(index)

    def named(self, probs: torch.Tensor, indices: torch.Tensor) -> list[list]:
        """``[[class name, probability], ...]`` for matching probabilities and class indices, e.g.
        a row of :meth:`top5_after`."""
        return [[self.class_name(int(i)), float(p)] for p, i in zip(probs, indices, strict=True)]

    def describe(self, b: int = 0, k: int = 0) -> dict:
        """A JSON-ready summary of mask (b, k): class, probabilities, top-5s, config."""
        pb, ib = self.top5_before()
        pa, ia = self.top5_after()
        t = int(self.targets[b, k])
        return {
            "target": t,
            "target_name": self.class_name(t),
            "prob_before": float(self.target_prob_before[b, k]),
            "prob_after": float(self.target_prob_after[b, k]),
            "top5_before": self.named(pb[b], ib[b]),
            "top5_after": self.named(pa[b, k], ia[b, k]),
            "setting": dataclasses.asdict(self.settings[k]),
            "config": self.config.to_dict(),
            "device": self.device,
            **({} if self.queries is None else {"queries": int(self.queries[b, k])}),
        }
