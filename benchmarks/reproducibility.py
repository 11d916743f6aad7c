"""What is bit-reproducible and what is not: one mask, computed along several arithmetic paths.

Trial 0 of F-TC on one sample image (chocolate sauce, where F-TC finds a clear mask) is
computed in a fresh process per path (the paths of ``arithmetic_paths.py``: another run of the
default, ATen's scalar kernels, one thread,
batch-norm folding off, and the image sharing its batch with three others), after 10 and after
200 iterations, and compared with the default run: the largest difference of M, and the
Pearson correlation of 1 - M'.

    python benchmarks/reproducibility.py --out benchmarks/results/reproducibility-cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arithmetic_paths import cpu_name, has_avx512  # noqa: E402

IMAGE = "chocolate sauce"
NEIGHBOURS = ["ski", "umbrella", "schooner"]


def worker(out: Path, fold: bool, batch: bool, iterations: list[int]) -> None:
    import numpy as np
    import torch

    from upx_core import MaskSetting, OptimConfig, load_model, optimize_masks
    from upx_core.book.chapter import load_sample

    model = load_model("efficientnet_lite0")
    names = [IMAGE, *NEIGHBOURS] if batch else [IMAGE]
    images = torch.stack([load_sample(n, model) for n in names])
    for n in iterations:
        res = optimize_masks(model, images, settings=[MaskSetting(mode="ftc", seed=0)],
                             config=OptimConfig(iterations=n, fold_batchnorm=fold),
                             progress=False)
        np.save(out / f"mask_{n}.npy", res.masks[0, 0].numpy())
        np.save(out / f"up_{n}.npy", res.masks_upsampled[0, 0, 0].numpy())


PATHS = {
    "default (again)": ({}, {}),
    "no-simd": ({"ATEN_CPU_CAPABILITY": "default"}, {}),
    "one-thread": ({"OMP_NUM_THREADS": "1"}, {}),
    "unfolded": ({}, {"fold": False}),
    "batch of 4": ({}, {"batch": True}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", nargs="+", type=int, default=[10, 200])
    ap.add_argument("--out", type=Path, help="results JSON")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--unfolded", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, fold=not args.unfolded, batch=args.batch,
               iterations=args.iterations)
        return 0

    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="upx-repro-"))

    def run(name: str, env: dict, flags: dict) -> Path:
        folder = tmp / name.replace(" ", "_").replace("(", "").replace(")", "")
        folder.mkdir()
        cmd = [sys.executable, __file__, "--worker", str(folder), "--iterations",
               *map(str, args.iterations)]
        if flags.get("fold") is False:
            cmd.append("--unfolded")
        if flags.get("batch"):
            cmd.append("--batch")
        subprocess.run(cmd, env={**os.environ, **env}, check=True)
        return folder

    reference = run("default", {}, {})
    rows = []
    for name, (env, flags) in PATHS.items():
        folder = run(name, env, flags)
        for n in args.iterations:
            a, b = (np.load(f / f"mask_{n}.npy") for f in (reference, folder))
            ua, ub = (1 - np.load(f / f"up_{n}.npy").ravel() for f in (reference, folder))
            r = float(np.corrcoef(ua, ub)[0, 1]) if ua.std() > 0 and ub.std() > 0 else 1.0
            rows.append({"path": name, "iterations": n, "max_abs_dM": float(np.abs(a - b).max()),
                         "identical": bool(np.array_equal(a, b)), "pearson_1-M'": r})
            print(f"{name:16s} {n:4d} it  max|dM| {rows[-1]['max_abs_dM']:.2e}  "
                  f"identical {rows[-1]['identical']!s:5s}  Pearson {r:.4f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python benchmarks/reproducibility.py " + " ".join(argv or sys.argv[1:]),
            "date": dt.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "avx512": has_avx512(), "image": IMAGE, "mode": "ftc", "seed": 0,
            "neighbours_in_batch": NEIGHBOURS, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
