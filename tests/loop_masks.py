"""Masks of the three optimizers on small fixed cases, for tests/test_loop.py (issue 23 section 1).

The white-box optimizer, the query-only optimizer and the black-box benchmark's oracle each ran
their own Adam loop until they shared one. This script computed their masks with the three
loops (``--write``: tests/data/loop-masks-before.npz) before the change, and computes them again
with whatever the code is now (``--out FILE``), so that the shared loop is held bit for bit to
the loops it replaced. The cases are EfficientNet-Lite0 on two 32 x 32 sample images, 10
iterations, with each option that changes the loop's path on at least one case (chunked batches,
perturbation noise, NaN checks every few steps, smooth directions, logits, chunked queries).

Run it through :func:`run_on_path` (or as the test does): the arithmetic path it runs on, the
environment and torch flags of :data:`PATHS`, is what makes the results reproducible; see
tests/test_loop.py for why each setting is there.

    python tests/loop_masks.py --write            # store (only before the loop change)
    python tests/loop_masks.py --out /tmp/now.pt  # recompute (torch.save of the tensors)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "tests" / "data" / "loop-masks-before.npz"

# Each path: the environment of the subprocess, and whether torch's CPU-specific convolution
# libraries (oneDNN, NNPACK) are switched off in it. "portable": ATen's scalar kernels, MKL's
# SSE2 branch (conditional numerical reproducibility), one thread, no oneDNN/NNPACK: nothing
# chosen by the CPU's vector width or cache sizes. "native": this machine's own kernels at one
# thread, the path a user gets (it depends on the CPU).
PATHS = {
    "portable": ({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
                  "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, True),
    "native": ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, False),
}
IMAGES = (101, 386)  # the tusker and the African elephant sample images
SIZE = 32
ITERATIONS = 10
SETTINGS_TEXT = (
    "EfficientNet-Lite0 (packaged weights), sample images 101 and 386 at load_image(path, 32, "
    "32), OptimConfig(iterations=10) unless said. white: optimize_masks, settings_grid(('ftc', "
    "'fntc'), seeds=(0, 1)), top classes. white_noise: optimize_masks, [MaskSetting('baseline', "
    "0), MaskSetting('ftc', 1, lambda2=2.0)], targets (386, 101), perturb_noise 0.05, "
    "check_every 4, objective log_prob, batch_size 3. query: optimize_masks_blackbox("
    "torch_predictor(model), settings [MaskSetting('ftc', 0), MaskSetting('fntc', 1)], "
    "queries 82, samples 4, sigma 0.1, outputs probs). query_basis: torch_predictor(model, "
    "'logits'), [MaskSetting('ftc', 2)], targets (386, 101), queries 200, samples 3, sigma 0.05, "
    "basis 7, outputs logits, batch_size 8 (iterations capped at 10). oracle: "
    "benchmarks/blackbox_quality.oracle_masks(model, images, (386, 101), MaskSetting('ftc', 0), "
    "config, samples 4); oracle_basis: the same with samples 3, basis 7, objective log_prob."
)


def compute() -> dict:
    """Every case's tensors, keyed ``case/field``; runs on the current process's path."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from blackbox_quality import oracle_masks

    from upx_core import (
        MaskSetting,
        OptimConfig,
        load_image,
        load_model,
        optimize_masks,
        optimize_masks_blackbox,
        sample_path,
        settings_grid,
        torch_predictor,
    )

    model = load_model("efficientnet_lite0")
    images = torch.stack([load_image(sample_path(i), SIZE, SIZE) for i in IMAGES])
    config = OptimConfig(iterations=ITERATIONS)
    out = {}

    def keep(case, result):
        out[f"{case}/masks"] = result.masks
        out[f"{case}/history"] = result.history
        out[f"{case}/probs_after"] = result.probs_after
        if result.queries is not None:
            out[f"{case}/queries"] = result.queries

    keep("white", optimize_masks(model, images, settings=settings_grid(("ftc", "fntc"), (0, 1)),
                                 config=config, progress=False))
    keep("white_noise", optimize_masks(
        model, images, targets=[386, 101], batch_size=3, progress=False,
        settings=[MaskSetting("baseline", 0), MaskSetting("ftc", 1, lambda2=2.0)],
        config=config.replace(perturb_noise=0.05, check_every=4, objective="log_prob")))
    keep("query", optimize_masks_blackbox(
        torch_predictor(model), images, settings=[MaskSetting("ftc", 0), MaskSetting("fntc", 1)],
        config=config, queries=82, samples=4, sigma=0.1, outputs="probs", progress=False,
        estimator="antithetic"))
    keep("query_basis", optimize_masks_blackbox(
        torch_predictor(model, "logits"), images, targets=[386, 101],
        settings=MaskSetting("ftc", 2), config=config, queries=200, samples=3, sigma=0.05,
        basis=7, outputs="logits", batch_size=8, progress=False, estimator="antithetic"))
    for case, samples, basis, cfg in (("oracle", 4, None, config),
                                      ("oracle_basis", 3, 7, config.replace(objective="log_prob"))):
        final, probs = oracle_masks(model, images, [386, 101], MaskSetting("ftc", 0), cfg,
                                    samples, basis)
        out[f"{case}/masks"], out[f"{case}/probs_after"] = final, probs
    return out


def machine() -> dict:
    """What decides the native path's arithmetic: CPU, vector capability, torch version."""
    import torch

    cpu, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key == "model name" and cpu == platform.processor():
                cpu = line.split(":", 1)[1].strip()
            if key == "flags" and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    vector = sorted(f for f in flags.split() if f.startswith(("avx", "fma", "amx", "sse4")))
    return {"cpu": cpu, "vector_flags": vector, "torch": str(torch.__version__),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "platform": platform.platform()}


def run_on_path(path: str, out_file: Path, timeout: float = 900) -> None:
    """Run :func:`compute` in a fresh interpreter on ``path`` (:data:`PATHS`) into ``out_file``:
    the environment must be set before torch loads."""
    env = {**os.environ, "GOMP_SPINCOUNT": "10000", **PATHS[path][0]}
    subprocess.run([sys.executable, __file__, "--out", str(out_file), "--path", path],
                   env=env, check=True, timeout=timeout, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write this run's tensors here (a subprocess of run_on_path)")
    ap.add_argument("--path", choices=sorted(PATHS), default="native")
    ap.add_argument("--write", action="store_true", help=f"store both paths in {STORED}")
    args = ap.parse_args()
    import torch

    if args.write:
        import json
        import tempfile

        import numpy as np

        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        arrays, meta = {}, {"settings": SETTINGS_TEXT, "machine": machine(), "paths": {},
                            "commit": commit}
        with tempfile.TemporaryDirectory() as tmp:
            for path, (env, off) in PATHS.items():
                run_on_path(path, Path(tmp) / f"{path}.pt")
                run = torch.load(Path(tmp) / f"{path}.pt")
                meta["paths"][path] = {"env": env, "convolution_libraries_off": off,
                                       "capability": run["capability"], "threads": 1}
                arrays.update({f"{path}/{k}": v.numpy() for k, v in run["tensors"].items()})
        STORED.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(STORED, meta=np.array(json.dumps(meta)), **arrays)
        print(f"wrote {STORED} ({STORED.stat().st_size} bytes)")
        return
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if PATHS[args.path][1]:
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
    tensors = compute()
    torch.save({"tensors": tensors, "capability": torch.backends.cpu.get_cpu_capability()},
               args.out)


if __name__ == "__main__":
    main()
