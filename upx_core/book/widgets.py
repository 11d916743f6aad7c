"""The book's widgets: a kernel-free explorer over precomputed pictures for nested choices
(:func:`tree_explorer`; linked in the browser, so it works in the static HTML), a live one that
runs the optimizer (:class:`LiveExplorer`, needs a kernel),
the pictures they show (:func:`result_pictures`), and a result rebuilt from stored masks
(:func:`stored_result`).

Needs ``ipywidgets`` (the ``book`` extra); nothing else in ``upx_core`` imports this module.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

try:
    import ipywidgets as widgets
except ImportError as err:  # pragma: no cover
    raise ImportError("upx_core.book.widgets needs ipywidgets: pip install 'upx[book]'") from err

from ..method.config import MODES, MaskSetting, OptimConfig
from ..method.equations import blur_for, perturb, upsample_mask
from ..method.metrics import undesirable_pixel_ratio
from ..method.optimizer import optimize_masks
from ..method.result import UPXResult
from ..plotting import show_explanation
from ..report import notes

__all__ = ["figure_png", "result_pngs", "result_pictures", "stored_result", "tree_explorer",
           "LiveExplorer", "live_explorer"]


def figure_png(fig: Figure, dpi: int = 80, format: str = "png", quality: int = 75) -> bytes:  # noqa: A002
    """A figure as PNG (or ``format="jpeg"`` or ``"webp"``, at ``quality``) bytes; works
    without pyplot: nothing is shown or kept open."""
    buf = io.BytesIO()
    extra = {}
    if format == "jpeg":
        extra = {"pil_kwargs": {"quality": quality}}
    elif format == "webp":  # method 6: the slowest encoder, the smallest file at a quality
        extra = {"pil_kwargs": {"quality": quality, "method": 6}}
    fig.savefig(buf, format=format, dpi=dpi, **extra)
    return buf.getvalue()


def result_pictures(result: UPXResult, image: torch.Tensor, b: int = 0,
                    titles: Sequence[str] | None = None, dpi: int = 72, format: str = "png",  # noqa: A002
                    quality: int = 75, colorbar: bool = False,
                    width: float = 8.2) -> list[bytes]:
    """One picture per setting of image ``b``, in the paper's layout (:func:`show_explanation`):
    image, undesirable pixels over it, perturbed image with target probability before -> after.

    ``titles`` head each figure (a setting's label is longer than a panel is wide); ``colorbar``
    adds the heatmap's scale; ``format`` is ``"png"``, ``"jpeg"`` or ``"webp"`` (at
    ``quality``). The figure is ``width`` inches wide (``dpi=100`` and 8.2 inches give 820
    pixels); a narrower figure keeps the text's size in points, so it is larger beside the
    panels. Figures are built without pyplot, so nothing is displayed in a notebook.
    """
    if image.dim() == 4:
        image = image[b]
    # the panels are square: their height follows the width, the titles' and labels' does not
    height = (width - 1.0) / 3 + (0.8 if titles is not None else 0.5) + (0.2 if colorbar else 0.0)
    pictures = []
    for k in range(result.targets.shape[1]):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, 3)
        if titles is not None:
            fig.suptitle(titles[k], fontsize=11)
        show_explanation(result, image, b=b, k=k, axes=axes, colorbar=colorbar)
        pictures.append(figure_png(fig, dpi, format=format, quality=quality))
    return pictures


def result_pngs(result: UPXResult, image: torch.Tensor, b: int = 0,
                titles: Sequence[str] | None = None, dpi: int = 72) -> list[bytes]:
    """:func:`result_pictures` as PNGs, without colour bars."""
    return result_pictures(result, image, b=b, titles=titles, dpi=dpi)


def stored_result(image: torch.Tensor, masks: torch.Tensor, target: int, prob_before: float,
                  probs_after: Sequence[float], settings: Sequence[MaskSetting],
                  config: OptimConfig | None = None,
                  categories: Sequence[str] | None = None) -> UPXResult:
    """An :class:`UPXResult` for one image rebuilt from K stored coarse masks ``[K, m, m]`` and
    their stored target probabilities, so the paper's figure can be drawn without optimizing.

    The perturbed images are recomputed from the masks (Eq. 1 with ``config``'s blur); only
    the target's probability is known, so every other class gets probability 0 (top-5s and
    ``describe`` of such a result say nothing) and the loss history is empty.
    """
    config = config or OptimConfig()
    image = image if image.dim() == 3 else image[0]
    masks = torch.as_tensor(masks, dtype=torch.float32).reshape(-1, 1, *masks.shape[-2:])
    k = masks.shape[0]
    n = max(len(categories or ()), target + 1)
    before, after = torch.zeros(1, n), torch.zeros(1, k, n)
    before[0, target] = float(prob_before)
    after[0, :, target] = torch.as_tensor([float(p) for p in probs_after])
    size = tuple(image.shape[-2:])
    with torch.no_grad():
        perturbed = perturb(image[None], blur_for(image[None], config), upsample_mask(masks, size))
    return UPXResult(config=config, settings=list(settings),
                     targets=torch.full((1, k), target, dtype=torch.long), masks=masks[None],
                     probs_before=before, probs_after=after, history=torch.zeros(0, 1, k, 1),
                     image_size=size, perturbed=perturbed[None],
                     categories=list(categories) if categories else None)


def _leaf(value, format: str, layout: widgets.Layout, made: dict) -> widgets.Widget:  # noqa: A002
    """One widget per distinct picture or text (``made`` keeps them): a picture that several
    choices share, as the paper's values are under every knob, is embedded once."""
    if value not in made:
        made[value] = (widgets.Image(value=value, format=format, layout=layout)
                       if isinstance(value, bytes) else widgets.HTML(str(value)))
    return made[value]


def tree_explorer(tree: dict, names: Sequence[str], format: str = "jpeg",  # noqa: A002
                  format_value=None, dropdown: Sequence[str] = (),
                  start: dict | None = None) -> widgets.Box:
    """A kernel-free explorer over a nested dict of pictures: ``tree[a][b]...[v]`` is the
    picture (bytes, shown as ``ipywidgets.Image`` of ``format``) or an HTML text of one choice.

    ``names`` name the levels, outermost first. Every level but the last has one control
    (``ToggleButtons``, or a ``Dropdown`` for names in ``dropdown``), whose options must be the
    same in every branch. The last level's options may depend on the choice at the level above
    it (the knob decides which values there are): one ``SelectionSlider`` per such choice, which
    shows the value, not its step; a Stack shows the slider of the chosen knob. A knob named by
    a tuple of names varies that many values together: ``tree[...][("l1", "l2")][v1][v2]`` is
    a picture, its button reads ``l1 × l2``, and it has one slider per name (in a ``VBox``).

    ``start`` picks the choice shown first: ``{level name: option}``, and for the last level
    ``{knob: value}`` (a tuple of values for a tuple knob); unnamed levels start at their first
    option. The controls are ``jslink``-ed in the browser to the ``selected_index`` of nested
    ``ipywidgets.Stack``s, so the explorer needs no kernel. The box keeps its links in
    ``box.links`` and its controls in ``box.controls`` (level name -> widget; the last level's
    name -> {knob: slider, or a tuple of sliders for a tuple knob}). The page embeds every
    widget's state, a kilobyte for each ``Layout``: the pictures share one, the Stacks another,
    and a picture two choices share is one widget in both Stacks.
    """
    names = list(names)
    if len(names) < 2:
        raise ValueError("tree_explorer needs at least two levels (a knob and its values)")
    fmt = format_value or (lambda v: f"{v:g}" if isinstance(v, float) else str(v))
    start = dict(start or {})
    value_name = names[-1]
    picture_layout, stack_layout, made = widgets.Layout(), widgets.Layout(), {}

    def level_options(branches: list[dict], what: str) -> list:
        options = list(branches[0])
        if any(list(b) != options for b in branches):
            raise ValueError(f"level {what!r} has different options in different branches; "
                             "only the last level may depend on the one above")
        return options

    def first(name: str, options: list) -> int:
        if name not in start:
            return 0
        if start[name] not in options:
            raise ValueError(f"start: {start[name]!r} is not an option of {name!r}: {options}")
        return options.index(start[name])

    branches, controls, links, chosen = [tree], {}, [], {}
    for name in names[:-1]:
        options = level_options(branches, name)
        chosen[name] = first(name, options)
        kind = widgets.Dropdown if name in dropdown else widgets.ToggleButtons
        labels = [(" × ".join(map(fmt, o)) if isinstance(o, tuple) else fmt(o), i)
                  for i, o in enumerate(options)]
        controls[name] = kind(options=labels, value=chosen[name], description=name,
                              style={"description_width": "initial"})
        branches = [b[o] for b in branches for o in options]
    knobs = list(tree_path_options(tree, len(names) - 2))
    unknown = set(start.get(value_name, {})) - set(knobs)
    if unknown:
        raise ValueError(f"start: no knob {sorted(unknown, key=str)} among {knobs}")
    values, sliders, starts = {}, {}, {}
    for j, knob in enumerate(knobs):
        axes = knob if isinstance(knob, tuple) else (knob,)
        nodes = [b for i, b in enumerate(branches) if i % len(knobs) == j]
        values[knob] = []
        for axis in axes:  # along each axis, the options of every node one level down
            values[knob].append(level_options(nodes, f"{fmt(knob)}: {fmt(axis)}"))
            nodes = [n[o] for n in nodes for o in values[knob][-1]]
        wanted = start.get(value_name, {}).get(knob)
        if wanted is None:
            starts[knob] = [0] * len(axes)
        else:
            wanted = wanted if isinstance(knob, tuple) else (wanted,)
            if len(wanted) != len(axes):
                raise ValueError(f"start: {fmt(knob)} takes {len(axes)} values, got {wanted!r}")
            for axis, opts, v in zip(axes, values[knob], wanted, strict=True):
                if v not in opts:
                    raise ValueError(f"start: {v!r} is not a value of {fmt(axis)}: {opts}")
            starts[knob] = [opts.index(v) for opts, v in zip(values[knob], wanted, strict=True)]
        sliders[knob] = tuple(
            widgets.SelectionSlider(options=[fmt(v) for v in opts], index=i0,
                                    description=f"{fmt(axis)} =", continuous_update=True,
                                    style={"description_width": "initial"})
            for axis, opts, i0 in zip(axes, values[knob], starts[knob], strict=True))
    slider_stack = widgets.Stack(
        [s[0] if len(s) == 1 else widgets.VBox(list(s)) for s in sliders.values()],
        selected_index=chosen[names[-2]])
    links.append(widgets.jslink((controls[names[-2]], "index"),
                                (slider_stack, "selected_index")))

    def values_stack(node, knob, axis: int) -> widgets.Stack:
        last = axis == len(values[knob]) - 1
        children = [_leaf(node[v], format, picture_layout, made) if last
                    else values_stack(node[v], knob, axis + 1) for v in values[knob][axis]]
        stack = widgets.Stack(children, selected_index=starts[knob][axis], layout=stack_layout)
        links.append(widgets.jslink((sliders[knob][axis], "index"), (stack, "selected_index")))
        return stack

    def build(node, depth: int) -> widgets.Stack:
        if depth == len(names) - 2:  # the knob level: each child is a Stack over its values
            children = [values_stack(node[knob], knob, 0) for knob in node]
        else:
            children = [build(node[key], depth + 1) for key in node]
        stack = widgets.Stack(children, selected_index=chosen[names[depth]], layout=stack_layout)
        links.append(widgets.jslink((controls[names[depth]], "index"),
                                    (stack, "selected_index")))
        return stack

    pictures = build(tree, 0)
    box = widgets.VBox([*controls.values(), slider_stack, pictures])
    box.links = links
    box.controls = {**controls,
                    value_name: {k: s[0] if len(s) == 1 else s for k, s in sliders.items()}}
    return box


def tree_path_options(tree: dict, depth: int) -> list:
    """The options at level ``depth`` of a nested dict, read along its first branch."""
    node = tree
    for _ in range(depth):
        node = next(iter(node.values()))
    return list(node)


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
    # the paper's probability, and the log-probability that moves a target the model gives
    # little probability (chapter 7); the config's own objective if it is a third one
    objectives = list(dict.fromkeys(("prob", "log_prob", config.objective)))
    return {
        "mode": widgets.ToggleButtons(options=list(MODES), value=setting.mode,
                                      description="mode", style=style),
        "objective": widgets.ToggleButtons(options=objectives, value=config.objective,
                                           description="objective", style=style),
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
        from ..method.models import class_index, imagenet_categories

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
        # WebP: a notebook saved with its widgets (the book's chapter 8) carries the picture, a
        # fifth of its PNG's weight
        self.picture = widgets.Image(format="webp", layout=widgets.Layout(display="none"))
        self.result: UPXResult | None = None
        self.button.on_click(lambda _button: self.update())
        # CSS handles for readers' styles and the lab test (tests/test_lab.py)
        self.status.add_class("upx-live-status")
        self.picture.add_class("upx-live-picture")
        c = self.controls
        left = widgets.VBox([c["target"], c["seed"], c["lambda1"], c["lambda2"], c["beta"],
                              c["gamma"]])
        right = widgets.VBox([c["lr"], c["iterations"], c["sigma"], c["kernel_size"],
                               c["mask_size"]])
        super().__init__([c["mode"], c["objective"], widgets.HBox([left, right]),
                          widgets.HBox([self.button, self.status]), self.picture])
        self.add_class("upx-live-explorer")

    def current(self) -> tuple[MaskSetting, OptimConfig]:
        """The controls' values as the optimizer's setting and config."""
        v = {name: w.value for name, w in self.controls.items()}
        setting = MaskSetting(mode=v["mode"], seed=int(v["seed"]), lambda1=v["lambda1"],
                              lambda2=v["lambda2"], beta=v["beta"], gamma=v["gamma"],
                              target=int(v["target"]))
        config = self.base_config.replace(
            objective=v["objective"],
            iterations=int(v["iterations"]), lr=float(v["lr"]), sigma=float(v["sigma"]),
            kernel_size=int(v["kernel_size"]), mask_size=int(v["mask_size"]),
        )
        return setting, config

    def update(self) -> UPXResult | None:
        """Optimize one mask with the current controls and show it, with the note ``upx
        explain`` prints when the target barely moved. Any error is shown in the status line
        (a reader sees nothing of the lab's log) and gives ``None``."""
        self.button.disabled = True
        self.status.value = "optimizing..."
        try:
            setting, config = self.current()
            r = optimize_masks(self.model, self.image, settings=[setting], config=config,
                               device=self.device, progress=False)
            picture = result_pictures(r, self.image, dpi=80, format="webp", quality=80,
                                      colorbar=True)[0]
            ratio = float(undesirable_pixel_ratio(r.masks_upsampled[0, 0]).item())
        except Exception as err:  # every error belongs on the screen, not in the lab's log
            message = html.escape(f"{type(err).__name__}: {err}")
            self.status.value = f"<span style='color:#b00'>{message}</span>"
            return None
        finally:
            self.button.disabled = False
        self.result = r
        self.picture.value = picture
        self.picture.layout.display = None
        name = r.class_name(int(r.targets[0, 0]))
        before, after = float(r.target_prob_before[0, 0]), float(r.target_prob_after[0, 0])
        hints = notes(name, before, after, ratio == 0, setting.mode, config.objective, 0.6)
        self.status.value = (
            f"{html.escape(name)}: {before:.3f} &rarr; {after:.3f}; undesirable pixels "
            f"(1 - M' &gt; 0.6): {100 * ratio:.1f} %"
            + "".join(f"<br><i>{html.escape(h)}</i>" for h in hints)
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
