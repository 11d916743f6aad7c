"""The book's widgets: a kernel-free explorer over precomputed pictures (:func:`static_explorer`,
linked in the browser, so it works in the static HTML), a live one that runs the optimizer
(:class:`LiveExplorer`, needs a kernel), and the pictures both show (:func:`result_pngs`).

Needs ``ipywidgets`` (the ``book`` extra); nothing else in ``upx_core`` imports this module.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

try:
    import ipywidgets as widgets
except ImportError as err:  # pragma: no cover
    raise ImportError("upx_core.widgets needs ipywidgets: pip install 'upx[book]'") from err

from .config import MODES, MaskSetting, OptimConfig, ParamGrid
from .metrics import undesirable_pixel_ratio
from .optimizer import optimize_masks
from .plotting import show_explanation
from .result import UPXResult

__all__ = ["figure_png", "result_pngs", "static_explorer", "LiveExplorer", "live_explorer"]


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
        fig = Figure(figsize=(8.2, 3.2 if titles is not None else 2.9), layout="constrained")
        axes = fig.subplots(1, 3)
        if titles is not None:
            fig.suptitle(titles[k], fontsize=11)
        show_explanation(result, image, b=b, k=k, axes=axes)
        pngs.append(figure_png(fig, dpi))
    return pngs


def static_explorer(grid: ParamGrid, pngs: Sequence[bytes], format_value=None) -> widgets.Box:
    """A widget over precomputed PNGs that needs no kernel: controls are ``jslink``-ed in the
    browser to :class:`ipywidgets.Stack` containers of :class:`ipywidgets.Image`.

    One axis: an ``IntSlider`` (the step index) picks the image, and a linked Stack of HTML
    labels shows that step's value. Two axes: ``ToggleButtons`` pick the first axis' value
    (an outer Stack, one child per value) and the slider picks the second (each inner Stack).
    The returned box keeps its ``jslink`` objects in ``box.links``.
    """
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


def _live_controls(setting: MaskSetting, config: OptimConfig, iterations: int, categories,
                   target: int) -> dict:
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


class LiveExplorer(widgets.VBox):
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
        self.button = widgets.Button(description="Optimize", button_style="primary",
                                      icon="play")
        self.status = widgets.HTML("Set the controls and press <i>Optimize</i>.")
        # Hidden until the first run, so the static book shows no empty image.
        self.picture = widgets.Image(format="png", layout=widgets.Layout(display="none"))
        self.result: UPXResult | None = None
        self.button.on_click(lambda _button: self.update())
        c = self.controls
        left = widgets.VBox([c["target"], c["seed"], c["lambda1"], c["lambda2"], c["beta"],
                              c["gamma"]])
        right = widgets.VBox([c["lr"], c["iterations"], c["sigma"], c["kernel_size"],
                               c["mask_size"]])
        super().__init__([c["mode"], widgets.HBox([left, right]),
                          widgets.HBox([self.button, self.status]), self.picture])

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
            f"{r.class_name(int(r.targets[0, 0]))}: {float(r.target_prob_before[0, 0]):.3f} "
            f"&rarr; {float(r.target_prob_after[0, 0]):.3f}; undesirable pixels "
            f"(1 - M' &gt; 0.6): {100 * ratio:.1f} %"
        )
        return r


def live_explorer(model: nn.Module, image: torch.Tensor, target=None, iterations: int = 50,
                  setting: MaskSetting | None = None, config: OptimConfig | None = None,
                  device: str = "cpu") -> LiveExplorer:
    """Build a :class:`LiveExplorer` for one image (``target``: index or name; ``None``: the
    model's top class). ``iterations`` is the default of its slider, lower than the paper's 200
    so a preview takes seconds; ``setting`` and ``config`` give the other controls' defaults."""
    return LiveExplorer(model, image, target=target, iterations=iterations, setting=setting,
                        config=config, device=device)
