"""Top-1/top-5 accuracy of a model on the 1000 ImageNet sample images (one per class).

Usage: python benchmarks/accuracy.py --model efficientnet_lite0 [--mean 0.485 0.456 0.406 --std ...]
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm

from upx_core import load_image, load_model, sample_path
from upx_core.data import sample_filenames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--mean", type=float, nargs=3, default=None)
    ap.add_argument("--std", type=float, nargs=3, default=None)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    model = load_model(args.model)
    if args.mean:
        model.mean.copy_(torch.tensor(args.mean).view(1, 3, 1, 1))
    if args.std:
        model.std.copy_(torch.tensor(args.std).view(1, 3, 1, 1))
    n = len(sample_filenames())
    top1 = top5 = 0
    with torch.no_grad():
        for start in tqdm(range(0, n, args.batch)):
            idx = list(range(start, min(start + args.batch, n)))
            x = torch.stack([load_image(sample_path(i), model.input_size, model.resize_size)
                             for i in idx])
            pred = model(x).topk(5, dim=1).indices
            labels = torch.tensor(idx).view(-1, 1)
            top1 += int((pred[:, :1] == labels).sum())
            top5 += int((pred == labels).any(dim=1).sum())
    print(f"{args.model} mean={model.mean.flatten().tolist()} std={model.std.flatten().tolist()}"
          f": top-1 {100 * top1 / n:.1f} %, top-5 {100 * top5 / n:.1f} % on {n} sample images")


if __name__ == "__main__":
    main()
