"""Forward queries per second of a black box: ONNX Runtime against torch (issue 11).

EfficientNet-Lite0 exported to ONNX (``upx_core.method.onnxbox.export_onnx``) and run by an ONNX
Runtime CPU session (``onnx_predictor``), against the same model in torch under
``inference_mode`` (``torch_predictor``), at several batch sizes: the speed that decides how
long a query-only mask takes (``optimize_masks_blackbox`` spends almost all its time there).
Each (backend, batch size) is warmed up once, then timed for ``--seconds`` on random
224 x 224 images; the backends alternate per batch size, so a change of load hits all alike.
``--precisions`` adds torch variants with the white-box optimizer's options (issue 13): batch
norm folded, channels-last, and bfloat16 autocast where the CPU computes it natively.
Writes ``--out`` (JSON) with the hardware, commit, threads and images/s.

Usage: python benchmarks/blackbox_throughput.py --out benchmarks/results/blackbox-throughput.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from upx_core import OptimConfig, load_model
from upx_core.evaluation.provenance import provenance
from upx_core.files import atomic_write_bytes
from upx_core.method.blackbox import torch_predictor
from upx_core.method.fold import fold_batchnorm
from upx_core.method.onnxbox import export_onnx, onnx_predictor
from upx_core.method.runtime import bf16_supported, forward, frozen, keep_freed_memory

# --precisions: torch backends beside the plain one, as (amp, channels_last) on a folded copy
TORCH_VARIANTS = {"torch_folded": (None, False), "torch_folded_cl": (None, True),
                  "torch_bf16_folded_cl": ("bf16", True), "torch_bf16_folded": ("bf16", False)}


def folded_predictor(model, amp: str | None, channels_last: bool):
    """Logits of a batch-norm-folded copy of ``model`` under inference_mode, through
    ``runtime.forward`` with these options: the optimizer's forward pass, without gradients."""
    with frozen(model):
        folded, _ = fold_batchnorm(model, torch.rand(2, 3, 224, 224))
    folded.eval()
    if channels_last:
        folded.to(memory_format=torch.channels_last)
    config = OptimConfig(amp=amp, channels_last=channels_last)

    def predict(images):
        with torch.inference_mode():
            return forward(folded, torch.as_tensor(images, dtype=torch.float32), config)

    return predict


def images_per_second(predict, batch_size: int, seconds: float) -> float:
    """Images per second of ``predict`` on one random batch, after one warm-up call."""
    x = torch.rand(batch_size, 3, 224, 224)
    predict(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        predict(x)
        n += batch_size
    return n / (time.perf_counter() - t0)


def throughput(predict, batch_sizes, seconds: float = 3.0) -> dict[int, float]:
    """Images per second of ``predict`` per batch size."""
    return {bs: images_per_second(predict, bs, seconds) for bs in batch_sizes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case")
    ap.add_argument("--precisions", action="store_true",
                    help="also time torch folded + channels-last, in float32 and bfloat16")
    ap.add_argument("--out", type=Path, required=True, help="the results JSON")
    args = ap.parse_args()
    keep_freed_memory()
    start = time.time()
    model = load_model("efficientnet_lite0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"onnxruntime": onnx_predictor(export_onnx(model, Path(tmp) / "m.onnx")),
                    "torch_inference_mode": torch_predictor(model, "logits")}
        if args.precisions:
            for name, (amp, cl) in TORCH_VARIANTS.items():
                if amp is None or bf16_supported(torch.device("cpu")):
                    backends[name] = folded_predictor(model, amp, cl)
        for bs in args.batch_sizes:
            for name, predict in backends.items():
                rate = images_per_second(predict, bs, args.seconds)
                rows.append({"backend": name, "batch_size": bs, "images_per_s": rate})
                print(f"{name:22s} batch {bs:3d}: {rate:7.1f} images/s", flush=True)
    record = {"provenance": provenance(shlex.join(["python", *sys.argv]),
                                       wall_s=time.time() - start,
                                       threads=torch.get_num_threads()),
              "model": "efficientnet_lite0", "input_size": 224, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(record, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
