"""Which route F-NTC took on every image it moved in chapter 7's 200-image probability run.

Eq. 6-7 intend F-NTC to raise the target only by lowering the competitors while the target's
own logit y_k holds. The stored run (``notebooks/results/cpu_200img_prob.csv``, one trial per
image, the paper's hyperparameters) has F-NTC raising the target by more than 10 % (phi > 10,
Eq. 8) on some images; this script recomputes F-NTC on all of them from the same start (trial
0, the probability objective, the library's defaults) and splits each change of the target's
log-odds into its two routes with :func:`upx_core.book.analysis.logit_decomposition`:
``d_target_logit`` (y_k) and ``d_lse_others`` (the log-sum-exp of the others). Chapter 3 reads
the table (``routes.csv``) and its provenance (``routes.json``).

    python benchmarks/fntc_routes.py --out notebooks/results/fntc-routes
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from upx_core import OptimConfig, load_model
from upx_core.book.masks import recompute_routes
from upx_core.evaluation.provenance import provenance, save_results

STORED = Path("notebooks/results/cpu_200img_prob.csv")
MOVED = 10.0  # phi in percent: "raised the target by more than 10 %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stored", type=Path, default=STORED, help="the 200-image run's CSV")
    ap.add_argument("--chunk", type=int, default=8, help="images per optimizer call")
    ap.add_argument("--out", type=Path, required=True, help="folder of routes.csv/.json")
    args = ap.parse_args()

    stored = pd.read_csv(args.stored).query("mode == 'fntc'")
    moved = stored[stored["relative_improvement"] > MOVED].reset_index(drop=True)
    model = load_model("efficientnet_lite0")
    config = OptimConfig(objective="prob")
    start = time.perf_counter()
    parts = []
    for first in range(0, len(moved), args.chunk):
        rows = moved.iloc[first:first + args.chunk]
        parts.append(recompute_routes(model, rows, config))
        print(f"{first + len(rows)}/{len(moved)} images", file=sys.stderr, flush=True)
    table = pd.concat(parts, ignore_index=True)
    command = shlex.join(["python", "benchmarks/fntc_routes.py", *sys.argv[1:]])
    save_results(table, args.out / "routes.csv",
                 provenance(command, time.perf_counter() - start, stored=str(args.stored),
                            images_stored=len(stored), images_moved=len(moved),
                            config=config.to_dict()))


if __name__ == "__main__":
    main()
