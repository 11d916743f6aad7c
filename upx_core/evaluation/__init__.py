"""Tables 1-2: the paper's protocol over many images, its resumable store, and the tables and
intervals read from stored runs. Imports the method, never the book."""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["EVAL_MODES", "run_evaluation", "select_images"], "protocol"),
    **dict.fromkeys(["summary_table", "paired_comparison", "paired_runs", "by_confidence",
                     "ratio_summary"], "tables"),
    **dict.fromkeys(["agreement_summary", "agreement_paired"], "trials"),
    **dict.fromkeys(["optimizer_version", "save_results", "load_results"],
                    "provenance"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
