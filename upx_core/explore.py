"""Helpers the book's chapters share: parameter grids, logit decomposition, consistency tables,
PNG rendering, and the two hyperparameter explorers (a live one and a static, kernel-free one).

Nothing here optimizes anything itself: every mask comes from :func:`optimize_masks`.
``ipywidgets`` is imported only by the explorer functions, so the rest works without it.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from .config import MODES, MaskSetting, OptimConfig
from .metrics import consistency, undesirable_pixel_ratio
from .optimizer import optimize_masks
from .plotting import show_explanation
from .result import UPXResult

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets

__all__ = [
    "ParamGrid",
    "param_grid",
    "logit_decomposition",
    "consistency_table",
    "plot_logit_decomposition",
    "result_pngs",
    "static_explorer",
    "LiveExplorer",
    "live_explorer",
]

SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(MaskSetting))


# --------------------------------------------------------------------------- parameter grids


@dataclasses.dataclass(frozen=True)
class ParamGrid:
    """A Cartesian grid over :class:`MaskSetting` fields, flattened row-major.

    ``axes`` keeps the order given: the first axis varies slowest, as in ``itertools.product``
    (and ``numpy.ndindex``), so cell ``i`` has multi-index ``np.unravel_index(i, shape)``.
    ``settings[i]`` is the :class:`MaskSetting` of cell ``i``; ``cells[i]`` its axis values.
    """

    axes: dict[str, tuple]
    settings: list[MaskSetting]
    cells: list[dict[str, Any]]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    def __len__(self) -> int:
        return len(self.settings)

    def index(self, **values) -> int:
        """The flat index of the cell with these axis values (every axis must be named)."""
        if set(values) != set(self.axes):
            raise ValueError(f"name every axis: {', '.join(self.axes)}; got {sorted(values)}")
        multi = tuple(list(vals).index(values[name]) for name, vals in self.axes.items())
        return int(np.ravel_multi_index(multi, self.shape))

    def label(self, i: int) -> str:
        """``"mode=ftc, lambda2=3.0"`` for cell ``i``."""
        return ", ".join(f"{k}={v}" for k, v in self.cells[i].items())


def param_grid(axes: Mapping[str, Sequence], **fixed) -> ParamGrid:
    """Every combination of ``axes`` values as MaskSettings, first axis slowest.

    ``axes`` and ``fixed`` name :class:`MaskSetting` fields (``mode``, ``seed``, ``lambda1``,
    ``lambda2``, ``beta``, ``gamma``, ``target``): the fields one batched :func:`optimize_masks`
    call can vary per mask. Shared options (iterations, lr, blur, mask size) belong in
    :class:`OptimConfig` and need one call per value.
    """
    axes = {name: tuple(values) for name, values in axes.items()}
    if not axes:
        raise ValueError("give at least one axis")
    for name in (*axes, *fixed):
        if name not in SETTING_FIELDS:
            raise ValueError(
                f"{name!r} is not a MaskSetting field ({', '.join(SETTING_FIELDS)}); "
                "OptimConfig options are shared by a whole optimize_masks call"
            )
    overlap = set(axes) & set(fixed)
    if overlap:
        raise ValueError(f"{sorted(overlap)} given both as an axis and as fixed")
    for name, values in axes.items():
        if not values:
            raise ValueError(f"axis {name!r} has no values")
        if len(set(values)) != len(values):
            raise ValueError(f"axis {name!r} repeats a value: {values}")
    cells = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    settings = [MaskSetting(**fixed, **cell) for cell in cells]
    return ParamGrid(axes=axes, settings=settings, cells=cells)


# --------------------------------------------------------------------------- analysis tables


def _settings_frame(result: UPXResult, b: int) -> pd.DataFrame:
    rows = []
    for k, s in enumerate(result.settings):
        t = int(result.targets[b, k])
        rows.append({
            "image": b, "k": k, "mode": s.mode, "seed": s.seed, "lambda1": s.lambda1,
            "lambda2": s.lambda2, "beta": s.beta, "gamma": s.gamma, "target": t,
            "target_name": result.class_name(t),
        })
    return pd.DataFrame(rows)


@torch.no_grad()
def logit_decomposition(
    model: nn.Module, images: torch.Tensor, result: UPXResult, device: str = "cpu",
) -> pd.DataFrame:
    """How each mask raised its target: the target's own logit, or the other classes'.

    With y the logits, the target's log-odds split exactly into two parts,

        log(p_k / (1 - p_k)) = y_k - LSE_{i != k}(y_i),

    so the change from X to Q is ``d_target_logit - d_lse_others`` (column ``d_log_odds``).
    A mask that raises p_k through its own class has ``d_target_logit > 0``; one that raises it
    by suppressing competitors has ``d_lse_others < 0``. ``d_mean_others`` is the mean shift of
    the N - 1 other logits, the quantity Eq. 4 (F-TC) penalizes; Eq. 6 (F-NTC) penalizes
    ``d_target_logit``. One row per (image, setting); needs ``result.perturbed``.
    """
    if result.perturbed is None:
        raise ValueError("the result kept no perturbed images: use keep_images=True")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    b_count, k_count = result.targets.shape
    if images.shape[0] != b_count:
        raise ValueError(f"result has {b_count} images, got {images.shape[0]}")
    was_training = model.training
    model.eval()
    try:
        clean = model(images.to(device)).float().cpu()
        perturbed = torch.cat([
            model(chunk.to(device)).float().cpu()
            for chunk in result.perturbed.flatten(0, 1).split(32)
        ]).view(b_count, k_count, -1)
    finally:
        model.train(was_training)
    frames = []
    for b in range(b_count):
        df = _settings_frame(result, b)
        t = result.targets[b]
        y0 = clean[b].expand(k_count, -1)
        y1 = perturbed[b]
        idx = t.view(-1, 1)

        def split(y, idx=idx):
            yk = y.gather(1, idx).squeeze(1)
            others = torch.logsumexp(y.scatter(1, idx, float("-inf")), dim=1)
            mean_others = (y.sum(1) - yk) / (y.shape[1] - 1)
            return yk, others, mean_others

        yk0, lse0, mo0 = split(y0)
        yk1, lse1, mo1 = split(y1)
        df["prob_before"] = result.prob_before[b].numpy()
        df["prob_after"] = result.prob_after[b].numpy()
        df["d_target_logit"] = (yk1 - yk0).numpy()
        df["d_lse_others"] = (lse1 - lse0).numpy()
        df["d_log_odds"] = ((yk1 - lse1) - (yk0 - lse0)).numpy()
        df["d_mean_others"] = (mo1 - mo0).numpy()
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def consistency_table(result: UPXResult, b: int = 0, threshold: float = 0.6) -> pd.DataFrame:
    """Trial consistency per setting group of image ``b``: settings equal but for their seed.

    Columns: trials, mean pairwise Pearson r and IoU of the thresholded maps
    (:func:`upx_core.consistency`), the mean target probability before and after, and the mean
    share of pixels above ``threshold`` (Table 2's ratio). Groups with one trial get NaN
    consistency. Rows keep the order in which the groups first appear.
    """
    groups: dict[tuple, list[int]] = {}
    for k, s in enumerate(result.settings):
        key = dataclasses.replace(s, seed=0), int(result.targets[b, k])
        groups.setdefault(key, []).append(k)
    up = result.masks_upsampled[b]
    rows = []
    for (s, t), ks in groups.items():
        c = consistency(up[ks], threshold) if len(ks) > 1 else {"pearson": float("nan"),
                                                                  "iou": float("nan")}
        rows.append({
            "mode": s.mode, "lambda1": s.lambda1, "lambda2": s.lambda2, "beta": s.beta,
            "gamma": s.gamma, "target_name": result.class_name(t), "trials": len(ks),
            "pearson": c["pearson"], "iou": c["iou"],
            "prob_before": float(result.prob_before[b, ks].mean()),
            "prob_after": float(result.prob_after[b, ks].mean()),
            "ratio": float(undesirable_pixel_ratio(up[ks], threshold).mean()),
        })
    return pd.DataFrame(rows)


def plot_logit_decomposition(df: pd.DataFrame, ax: Axes | None = None,
                             labels: Sequence[str] | None = None) -> Figure:
    """Grouped bars per row of :func:`logit_decomposition`: the target-logit change, minus the
    others' log-sum-exp change, and their sum, the change in the target's log-odds."""
    if ax is None:
        fig = Figure(figsize=(max(5.0, 0.75 * len(df) + 1.5), 3.6), layout="constrained")
        ax = fig.subplots()
    fig = ax.figure
    x = np.arange(len(df))
    w = 0.27
    ax.bar(x - w, df["d_target_logit"], w, label=r"$\Delta y_k$ (target logit)", color="tab:blue")
    ax.bar(x, -df["d_lse_others"], w, label=r"$-\Delta\,\mathrm{LSE}_{i\neq k}\,y_i$ (others)",
           color="tab:orange")
    ax.bar(x + w, df["d_log_odds"], w, label=r"$\Delta \log\frac{p_k}{1-p_k}$ (sum)",
           color="0.4")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels if labels is not None else
                       [f"{m}\ntrial {s}" for m, s in zip(df["mode"], df["seed"], strict=True)],
                       fontsize=8)
    ax.set_ylabel("change from X to Q")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    return fig


# --------------------------------------------------------------------------- PNG rendering


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure as PNG bytes (works without pyplot: nothing is shown or kept open)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def result_pngs(
    result: UPXResult,
    image: torch.Tensor,
    b: int = 0,
    titles: Sequence[str] | None = None,
    dpi: int = 72,
) -> list[bytes]:
    """One PNG per setting of image ``b``, in the paper's layout (:func:`show_explanation`):
    image, undesirable pixels over it, perturbed image with target probability before -> after.

    ``titles`` head each figure (a setting's label is longer than a panel is wide). Figures are
    built without pyplot, so nothing is displayed in a notebook.
    """
    if image.dim() == 4:
        image = image[b]
    pngs = []
    for k in range(result.targets.shape[1]):
        fig = Figure(figsize=(7.5, 3.2 if titles is not None else 2.9))
        axes = fig.subplots(1, 3)
        show_explanation(result, image, b=b, k=k, axes=axes)
        if titles is not None:
            fig.suptitle(titles[k], fontsize=11)
            fig.tight_layout()
        pngs.append(figure_png(fig, dpi))
    return pngs


# --------------------------------------------------------------------------- static explorer


def static_explorer(grid: ParamGrid, pngs: Sequence[bytes], format_value=None) -> ipywidgets.Box:
    """A widget over precomputed PNGs that needs no kernel: controls are ``jslink``-ed in the
    browser to :class:`ipywidgets.Stack` containers of :class:`ipywidgets.Image`.

    One axis: an ``IntSlider`` (the step index) picks the image, and a linked Stack of HTML
    labels shows that step's value. Two axes: ``ToggleButtons`` pick the first axis' value
    (an outer Stack, one child per value) and the slider picks the second (each inner Stack).
    The returned box keeps its ``jslink`` objects in ``box.links``.
    """
    import ipywidgets as widgets

    if len(pngs) != len(grid):
        raise ValueError(f"{len(pngs)} images for a grid of {len(grid)} cells")
    if len(grid.axes) not in (1, 2):
        raise ValueError("static_explorer handles one or two axes; flatten larger grids")
    fmt = format_value or (lambda v: f"{v:g}" if isinstance(v, float) else str(v))
    names = list(grid.axes)
    slider_axis = names[-1]
    slider_values = grid.axes[slider_axis]
    n_slider = len(slider_values)

    def image_stack(start: int) -> widgets.Stack:
        imgs = [widgets.Image(value=p, format="png") for p in pngs[start:start + n_slider]]
        return widgets.Stack(imgs, selected_index=0)

    slider = widgets.IntSlider(value=0, min=0, max=n_slider - 1, step=1,
                               description=f"{slider_axis} step", continuous_update=True,
                               style={"description_width": "initial"})
    labels = widgets.Stack(
        [widgets.HTML(f"<b>{slider_axis} = {fmt(v)}</b>") for v in slider_values],
        selected_index=0,
    )
    links = [widgets.jslink((slider, "value"), (labels, "selected_index"))]
    if len(names) == 1:
        stack = image_stack(0)
        links.append(widgets.jslink((slider, "value"), (stack, "selected_index")))
        box = widgets.VBox([widgets.HBox([slider, labels]), stack])
    else:
        first = grid.axes[names[0]]
        inner = [image_stack(i * n_slider) for i in range(len(first))]
        links += [widgets.jslink((slider, "value"), (s, "selected_index")) for s in inner]
        outer = widgets.Stack(inner, selected_index=0)
        toggle = widgets.ToggleButtons(options=[fmt(v) for v in first], index=0,
                                       description=names[0])
        links.append(widgets.jslink((toggle, "index"), (outer, "selected_index")))
        box = widgets.VBox([toggle, widgets.HBox([slider, labels]), outer])
    box.links = links
    return box


# --------------------------------------------------------------------------- live explorer


def _live_controls(setting: MaskSetting, config: OptimConfig, iterations: int, categories,
                   target: int) -> dict:
    import ipywidgets as widgets

    style = {"description_width": "110px"}  # one width, so the sliders line up
    lay = widgets.Layout(width="340px")

    def fslider(name, value, lo, hi, step):
        return widgets.FloatSlider(value=value, min=lo, max=hi, step=step, description=name,
                                   continuous_update=False, style=style, layout=lay)

    def islider(name, value, lo, hi, step=1):
        return widgets.IntSlider(value=value, min=lo, max=hi, step=step, description=name,
                                 continuous_update=False, style=style, layout=lay)

    options = [(f"{name} ({i})", i) for i, name in enumerate(categories)]
    return {
        "mode": widgets.ToggleButtons(options=list(MODES), value=setting.mode,
                                      description="mode", style=style),
        "target": widgets.Dropdown(options=options, value=target, description="target",
                                   style=style, layout=lay),
        "seed": islider("seed (trial)", setting.seed, 0, 20),
        "lambda1": fslider("lambda1 (TV)", setting.lambda1, 0.0, 10.0, 0.1),
        "lambda2": fslider("lambda2 (L1)", setting.lambda2, 0.0, 20.0, 0.1),
        "beta": fslider("beta", setting.beta, 1.0, 4.0, 0.5),
        "gamma": fslider("gamma", setting.gamma, 0.0, 3.0, 0.05),
        "lr": widgets.FloatLogSlider(value=config.lr, base=10, min=-3, max=0, step=0.1,
                                     description="lr", continuous_update=False, style=style,
                                     layout=lay),
        "iterations": islider("iterations", iterations, 1, 300),
        "sigma": fslider("sigma (blur)", config.sigma, 0.5, 15.0, 0.5),
        "kernel_size": islider("kernel size", config.kernel_size, 3, 51, 2),
        "mask_size": islider("mask size", config.mask_size, 4, 56),
    }


try:  # the class needs ipywidgets at definition time; the rest of the module does not
    import ipywidgets as _widgets
except ImportError:  # pragma: no cover
    _widgets = None


if _widgets is not None:

    class LiveExplorer(_widgets.VBox):
        """A live hyperparameter explorer: every control, an *Optimize* button, and the result
        in the paper's layout. Needs a running kernel (in the static book it does nothing).

        ``controls`` maps names to widgets; :meth:`current` reads them into a
        (:class:`MaskSetting`, :class:`OptimConfig`) pair; :meth:`update` optimizes one mask,
        shows it, and returns the :class:`UPXResult` (also kept in ``self.result``).
        """

        def __init__(self, model: nn.Module, image: torch.Tensor, target=None,
                     iterations: int = 50, setting: MaskSetting | None = None,
                     config: OptimConfig | None = None, device: str = "cpu") -> None:
            from .models import class_index, imagenet_categories

            self.model = model
            self.image = image if image.dim() == 3 else image[0]
            self.device = device
            self.base_config = config or OptimConfig()
            categories = list(getattr(model, "categories", None) or imagenet_categories())
            if target is None:
                with torch.no_grad():
                    target = int(model(self.image[None].to(device)).argmax(1))
            target = class_index(target, categories)
            self.controls = _live_controls(setting or MaskSetting(), self.base_config,
                                           iterations, categories, target)
            self.button = _widgets.Button(description="Optimize", button_style="primary",
                                          icon="play")
            self.status = _widgets.HTML("Set the controls and press <i>Optimize</i>.")
            # Hidden until the first run, so the static book shows no empty image.
            self.picture = _widgets.Image(format="png", layout=_widgets.Layout(display="none"))
            self.result: UPXResult | None = None
            self.button.on_click(lambda _button: self.update())
            c = self.controls
            left = _widgets.VBox([c["target"], c["seed"], c["lambda1"], c["lambda2"], c["beta"],
                                  c["gamma"]])
            right = _widgets.VBox([c["lr"], c["iterations"], c["sigma"], c["kernel_size"],
                                   c["mask_size"]])
            super().__init__([c["mode"], _widgets.HBox([left, right]),
                              _widgets.HBox([self.button, self.status]), self.picture])

        def current(self) -> tuple[MaskSetting, OptimConfig]:
            """The controls' values as the optimizer's setting and config."""
            v = {name: w.value for name, w in self.controls.items()}
            setting = MaskSetting(mode=v["mode"], seed=int(v["seed"]), lambda1=v["lambda1"],
                                  lambda2=v["lambda2"], beta=v["beta"], gamma=v["gamma"],
                                  target=int(v["target"]))
            config = self.base_config.replace(
                iterations=int(v["iterations"]), lr=float(v["lr"]), sigma=float(v["sigma"]),
                kernel_size=int(v["kernel_size"]), mask_size=int(v["mask_size"]),
            )
            return setting, config

        def update(self) -> UPXResult | None:
            """Optimize one mask with the current controls and show it."""
            self.button.disabled = True
            self.status.value = "optimizing..."
            try:
                setting, config = self.current()
                r = optimize_masks(self.model, self.image, settings=[setting], config=config,
                                   device=self.device, progress=False)
            except (ValueError, FloatingPointError) as err:
                self.status.value = f"<span style='color:#b00'>{err}</span>"
                return None
            finally:
                self.button.disabled = False
            self.result = r
            self.picture.value = result_pngs(r, self.image, dpi=80)[0]
            self.picture.layout.display = None
            ratio = float(undesirable_pixel_ratio(r.masks_upsampled[0, 0]).item())
            self.status.value = (
                f"{r.class_name(int(r.targets[0, 0]))}: {float(r.prob_before[0, 0]):.3f} "
                f"&rarr; {float(r.prob_after[0, 0]):.3f}; undesirable pixels "
                f"(1 - M' &gt; 0.6): {100 * ratio:.1f} %"
            )
            return r

else:  # pragma: no cover
    LiveExplorer = None


def live_explorer(model: nn.Module, image: torch.Tensor, target=None, iterations: int = 50,
                  setting: MaskSetting | None = None, config: OptimConfig | None = None,
                  device: str = "cpu") -> LiveExplorer:
    """Build a :class:`LiveExplorer` for one image (``target``: index or name; ``None``: the
    model's top class). ``iterations`` is the default of its slider, lower than the paper's 200
    so a preview takes seconds; ``setting`` and ``config`` give the other controls' defaults."""
    if LiveExplorer is None:  # pragma: no cover
        raise ImportError("the live explorer needs ipywidgets: pip install ipywidgets")
    return LiveExplorer(model, image, target=target, iterations=iterations, setting=setting,
                        config=config, device=device)
