"""What every chapter of the book starts with: its parameters read, its configuration built,
its sample image loaded, its output folder made, its tables styled.

A chapter's parameters cell sets hyperparameters to ``None`` for "the library default", and
papermill passes lists as text; :func:`chapter_config` and :func:`as_list` turn that cell into
the library's objects, so each chapter keeps prose, parameters, calls and figures.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from ..data import load_image, sample_path
from ..method.config import MaskSetting, OptimConfig
from .claims import Claims

__all__ = [
    "as_list",
    "not_none",
    "output_dir",
    "chapter_config",
    "load_sample",
    "styled",
    "find_results_dir",
    "glue",
    "changed_parameters",
    "config_changes",
    "chapter_claims",
    "save_figure",
    "save_table",
    "show_source",
]

PENALTY_FIELDS = ("lambda1", "lambda2", "beta", "gamma")


def as_list(value) -> list:
    """A notebook parameter as a list, however it was passed.

    ``papermill -p seeds "[0, 1]"`` passes the *string* ``"[0, 1]"`` (``-p`` only infers
    numbers and booleans; ``-y "seeds: [0, 1]"`` passes a list). A string is read as JSON
    (``"[0, 1]"``, ``'["ftc", "fntc"]'``) or else as comma-separated items, each a number if it
    reads as one (``"0, 1"``, ``"[ftc, fntc]"``); a scalar becomes a one-element list; lists and
    tuples are copied.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            items = [t.strip().strip("'\"") for t in text.strip("[]").split(",")]
            return [_number_or_text(t) for t in items if t]
        return parsed if isinstance(parsed, list) else [parsed]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def not_none(**values) -> dict:
    """The notebook parameters that were set: ``values`` without those that are ``None``.

    A chapter's hyperparameters default to ``None`` ("the library's default"), so
    ``OptimConfig(**not_none(lr=lr, init_noise=init_noise))`` passes only what a reader changed.
    """
    return {k: v for k, v in values.items() if v is not None}


def output_dir(path: str | os.PathLike | None) -> Path | None:
    """A chapter's ``out_dir`` parameter as a folder that exists, or ``None`` when unset."""
    if not path:
        return None
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _number_or_text(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def styled(df: pd.DataFrame, precision: int = 3, caption: str | None = None,
           index: bool = False, percent: Sequence[str] = ()):
    """A DataFrame as a padded HTML table for the book: numbers rounded to ``precision``,
    missing values as a dash, the index hidden unless ``index``, an optional caption.
    ``percent`` names shares (0-1) shown in percent, as ``"ratio %"``: the book states the
    ratio in one unit everywhere."""
    shown = [c for c in percent if c in df.columns]
    if shown:
        df = df.assign(**{c: 100 * df[c] for c in shown}).rename(
            columns={c: f"{c} %" for c in shown})
    sty = df.style.format(precision=precision, na_rep="\u2014").set_table_styles(
        [{"selector": "th, td", "props": "padding: 0.2em 0.5em; text-align: right;"}])
    if not index:
        sty = sty.hide(axis="index")
    if caption:
        sty = sty.set_caption(caption)
    return sty


class _Text(str):
    """A string whose repr is itself, so ``{glue:text}`` shows ``plunger``, not ``'plunger'``."""

    def __repr__(self) -> str:
        return str(self)


def glue(name: str, value) -> None:
    """Hand ``value`` to the book's prose as ``{glue:text}`name``` (myst-nb), showing nothing.

    Numbers keep their type, so the prose can format them (``{glue:text}`name:.2f```); a string
    is glued as itself, without quotes. Outside a Jupyter Book build (papermill, Colab without
    myst-nb) it does nothing. Returns nothing, so a cell that ends with it shows nothing.
    """
    try:
        from myst_nb import glue as nb_glue
    except ImportError:
        return
    shown = _Text(value) if isinstance(value, str) else value
    if hasattr(shown, "item") and getattr(shown, "ndim", 1) == 0:
        shown = shown.item()  # numpy and torch scalars as plain Python numbers
    nb_glue(name, shown, display=False)


def chapter_config(hyperparameters: Mapping | str | None = None,
                   **parameters) -> tuple[OptimConfig, dict]:
    """A chapter's hyperparameters as ``(OptimConfig, penalties)``; ``None`` keeps a default.

    ``hyperparameters`` is the chapter's one dictionary parameter (``{"lr": 0.05}``, or its JSON
    text as ``papermill -p`` passes it); ``parameters`` are the chapter's own named parameters
    (``iterations=...``), which a reader may also set. ``lambda1``, ``lambda2``, ``beta`` and
    ``gamma`` are per-mask weights (the keyword arguments of :class:`MaskSetting`, returned as
    ``penalties``); every other name is a field of :class:`OptimConfig` (``iterations``, ``lr``,
    ``init_noise``, ``objective``, ``fold_batchnorm``, ...). An unknown name is a ``TypeError``,
    as a misspelt keyword is; a name set in both places is a ``ValueError``.
    """
    if isinstance(hyperparameters, str):
        hyperparameters = json.loads(hyperparameters) if hyperparameters.strip() else {}
    extra = dict(hyperparameters or {})
    values = not_none(**parameters)
    both = sorted(set(extra) & set(values))
    if both:
        raise ValueError(f"{', '.join(both)} set both in hyperparameters and as a parameter")
    values.update(not_none(**extra))
    penalties = {k: values.pop(k) for k in PENALTY_FIELDS if k in values}
    MaskSetting(**penalties)  # checks the weights now, with the parameter's name in the error
    return OptimConfig(**values), penalties


def load_sample(name: int | str, model: torch.nn.Module) -> torch.Tensor:
    """An ImageNet sample image (class index, class name or file name) at ``model``'s size."""
    return load_image(sample_path(name), input_size=getattr(model, "input_size", 224),
                      resize_size=getattr(model, "resize_size", 256))


def find_results_dir(name: str = "results") -> Path | None:
    """The stored-results folder, whether a notebook runs from ``notebooks/`` (the book build)
    or from the repository root (papermill in CI): ``./name`` or ``./notebooks/name``."""
    for candidate in (Path.cwd() / name, Path.cwd() / "notebooks" / name):
        if candidate.is_dir():
            return candidate
    return None


_MISSING = object()


def changed_parameters(values: Mapping, book: Mapping) -> list[str]:
    """The names whose value in ``values`` differs from the book's run (``book``), in order.

    A chapter's claims are strict in the book's own run and only recorded in a reader's
    (:class:`upx_core.book.claims.Claims`'s ``strict``). A value compares as the chapter reads it:
    against a list, through :func:`as_list` (papermill passes ``"[0, 1]"``); against a dict,
    JSON text is parsed (``-p hyperparameters '{}'``). A name missing from ``values`` counts as
    changed.
    """
    changed = []
    for name, default in book.items():
        value = values.get(name, _MISSING)
        if isinstance(default, list) and value is not _MISSING and value is not None:
            value = as_list(value)
        elif isinstance(default, dict) and isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if value is _MISSING or value != default:
            changed.append(name)
    return changed


def config_changes(config: OptimConfig) -> dict:
    """The fields of ``config`` that differ from the library's defaults (``OptimConfig()``),
    in field order: what a chapter's run changed."""
    defaults = OptimConfig()
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(defaults, f.name)}


def chapter_claims(chapter: str, out: str | os.PathLike | None = None, active: bool = True,
                   values: Mapping | None = None, book_run: Mapping | None = None) -> Claims:
    """The chapter's :class:`Claims`, strict only in the book's own run.

    ``book_run`` is the chapter's copy of its parameters cell and ``values`` its ``globals()``;
    when :func:`changed_parameters` finds a difference, the changed names are printed and a
    claim that fails is noted instead of raised (the book's sentences are about its own run).
    ``active=False`` (a tiny test run) records every claim and raises none.
    """
    changed = changed_parameters(values or {}, book_run) if book_run is not None else []
    if changed:
        print(f"Changed from the book's run: {', '.join(changed)}; a claim that does not hold is "
              "noted, not raised.")
    return Claims(chapter, out=out, active=active, strict=not changed)


def save_figure(fig, out: str | os.PathLike | None, name: str, dpi: int = 120) -> None:
    """Write ``fig`` to ``out/name`` when the chapter saves its outputs (``out`` set), else
    nothing. Returns nothing, so a figure cell ending with it shows only its figure."""
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(out) / name, dpi=dpi)


def save_table(table: pd.DataFrame, out: str | os.PathLike | None, name: str,
               index: bool = False) -> None:
    """Write ``table`` as CSV to ``out/name`` when the chapter saves its outputs, else
    nothing."""
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out) / name, index=index)


def show_source(*functions: Callable):
    """The library's own source of ``functions`` as a Python code block (IPython Markdown), so
    a chapter shows the code of an equation beside it and the page cannot drift from the code."""
    from IPython.display import Markdown

    # a method's source comes indented by its class: dedented, it reads as a function
    blocks = [textwrap.dedent(inspect.getsource(f)).rstrip() for f in functions]
    return Markdown("```python\n" + "\n\n\n".join(blocks) + "\n```")
