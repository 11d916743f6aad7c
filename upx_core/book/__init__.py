"""What only the book's chapters use: their start, their checked sentences, their analyses and
explorers. Nothing outside this folder imports from it."""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Claims", "ClaimError"], "claims"),
    **dict.fromkeys(["chapter_config", "load_sample", "glue", "styled", "show_source"],
                    "chapter"),
    "logit_decomposition": "analysis",
    **dict.fromkeys(["share_control", "blur_control"], "regions"),
    **dict.fromkeys(["tree_explorer", "live_explorer"], "widgets"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
