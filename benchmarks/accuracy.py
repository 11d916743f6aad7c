"""Top-1/top-5 accuracy of a model on the 1000 ImageNet sample images (one per class).

Usage: python benchmarks/accuracy.py --model efficientnet_lite0 [--mean 0.485 0.456 0.406 --std ...]
       [--out benchmarks/results/accuracy-samples-cpu.json]

``--out`` adds this run (model, normalization, counts, command, machine, commit) to a JSON file
of runs, replacing an earlier run of the same model and normalization, so the implementation
notes' accuracy tables are read from it and held by tests/test_stored_results.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from upx_core import load_image, load_model, sample_path
from upx_core.data import sample_filenames
from upx_core.evaluation.provenance import provenance
from upx_core.files import atomic_write_bytes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--mean", type=float, nargs=3, default=None)
    ap.add_argument("--std", type=float, nargs=3, default=None)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None,
                    help="a JSON file of runs to add this one to (replacing the same model and "
                         "normalization)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    model = load_model(args.model)
    if args.mean:
        model.mean.copy_(torch.tensor(args.mean).view(1, 3, 1, 1))
    if args.std:
        model.std.copy_(torch.tensor(args.std).view(1, 3, 1, 1))
    n = len(sample_filenames())
    top1 = top5 = 0
    with torch.no_grad():
        for begin in tqdm(range(0, n, args.batch)):
            idx = list(range(begin, min(begin + args.batch, n)))
            x = torch.stack([load_image(sample_path(i), model.input_size, model.resize_size)
                             for i in idx])
            pred = model(x).topk(5, dim=1).indices
            labels = torch.tensor(idx).view(-1, 1)
            top1 += int((pred[:, :1] == labels).sum())
            top5 += int((pred == labels).any(dim=1).sum())
    mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
    print(f"{args.model} mean={mean} std={std}"
          f": top-1 {100 * top1 / n:.1f} %, top-5 {100 * top5 / n:.1f} % on {n} sample images")
    if args.out:
        command = "python benchmarks/accuracy.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        run = {"model": args.model, "input_size": model.input_size,
               "resize_size": model.resize_size, "mean": [round(v, 6) for v in mean],
               "std": [round(v, 6) for v in std], "images": n, "top1": top1, "top5": top5,
               **provenance(command, time.perf_counter() - start)}
        runs = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
        same = [r for r in runs if (r["model"], r["mean"], r["std"])
                == (run["model"], run["mean"], run["std"])]
        runs = [r for r in runs if r not in same] + [run]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, (json.dumps({"runs": runs}, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
