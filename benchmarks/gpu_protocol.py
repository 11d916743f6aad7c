"""The paper's protocol at full size on one GPU, timed: what ``benchmarks/gpu.sh`` runs after
``bench_optimizer.py``.

1. protocol: EfficientNet-Lite0 (shipped ImageNet weights), ``select_images(1000)`` x {F-TC,
   F-NTC}, 200 iterations, through ``upx_core.evaluation.protocol.run_evaluation`` (bf16 autocast
   and channels-last on CUDA): CSV of every row, Table 1/2 summary, wall time, masks/s.
2. timing: ResNet-18 and VGG-19 with random weights (timing only), the same optimizer on
   real images without a CSV.
3. precision: 20 images, fp32 vs bf16 (+ channels-last) phi per mode, same images and seeds;
   the target is |phi_bf16 - phi_fp32| < 0.5 points.
4. sync check (CUDA): ``torch.cuda.set_sync_debug_mode("warn")`` counts the synchronizing
   calls in the iteration loop at two iteration counts with the same number of NaN checks.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` counts one forward of one 224 x 224 image;
an optimizer step is reported as 3 x that (the usual forward + backward approximation) and also
as counted (forward + backward with frozen weights, which skips the weight-gradient GEMMs and is
nearer 2 x). Achieved TFLOP/s = FLOPs per mask-iteration x masks x iterations / wall time, so
it includes data loading, the clean and final forwards and the CSV writes: a lower bound. The
card's peak is its datasheet dense figure (bf16 for bf16 runs, TF32 for fp32 convolutions).
``--tiny`` runs every step with a few images and iterations (on the CPU too).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from upx_core import MaskSetting, OptimConfig, load_image, load_model, sample_path
from upx_core.evaluation.protocol import run_evaluation, select_images
from upx_core.evaluation.tables import summary_table
from upx_core.method import loop as loop_mod
from upx_core.method import optimizer as opt_mod
from upx_core.method.equations import blur_for, perturb, upsample_mask
from upx_core.method.runtime import channels_last_weights, forward, frozen, resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_optimizer import git_commit, hardware  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Datasheet dense peaks, TFLOP/s (no sparsity): (bf16, tf32, fp32).
PEAKS = [
    ("H100 PCIe", (756.0, 378.0, 51.2)),
    ("H100 NVL", (835.5, 417.5, 60.0)),
    ("H100", (989.4, 494.7, 66.9)),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    ("H200", (989.4, 494.7, 66.9)),
    ("A100", (312.0, 156.0, 19.5)),
    ("L40S", (362.1, 183.0, 91.6)),
]


def card_peak(dev: torch.device) -> dict | None:
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    for key, (bf16, tf32, fp32) in PEAKS:
        if all(part in name for part in key.split()):
            return {"name": name, "matched": key, "bf16": bf16, "tf32": tf32, "fp32": fp32}
    return {"name": name, "matched": None}


def flops_per_mask_iteration(model, dev, config: OptimConfig) -> dict:
    """FLOPs of one forward of one image, and of one counted optimizer step (fwd + bwd)."""
    model.to(dev)
    x = torch.rand(1, 3, 224, 224, device=dev)
    with frozen(model), channels_last_weights(model, config.channels_last):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            forward(model, x, config)
        fwd = fc.get_total_flops()
        mask = torch.ones(1, 1, config.mask_size, config.mask_size, device=dev,
                          requires_grad=True)
        hx = blur_for(x, config)
        with FlopCounterMode(display=False) as fc:
            q = perturb(x, hx, upsample_mask(mask, (224, 224)))
            forward(model, q, config).logsumexp(1).sum().backward()
        step = fc.get_total_flops()
    return {"forward": int(fwd), "step_x3": int(3 * fwd), "step_counted": int(step)}


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_gib(dev):
    return round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None


def throughput(masks: int, iterations: int, wall: float, flops: dict, peak: dict | None,
               precision: str) -> dict:
    out = {"masks": masks, "iterations": iterations, "wall_s": round(wall, 2),
           "masks_per_s": round(masks / wall, 3),
           "mask_iterations_per_s": round(masks * iterations / wall, 1)}
    for kind in ("step_x3", "step_counted"):
        tflops = flops[kind] * masks * iterations / wall / 1e12
        out[f"tflops_{kind}"] = round(tflops, 2)
        if peak and peak.get("matched"):
            ref = peak["bf16"] if precision == "bf16" else peak["tf32"]
            out[f"pct_of_peak_{kind}"] = round(100 * tflops / ref, 2)
    return out


def step_protocol(args, dev, cfg, peak, prefix) -> dict:
    model = load_model("efficientnet_lite0")
    flops = flops_per_mask_iteration(model, dev, cfg)
    idx = select_images(args.n_images)
    csv = args.out_dir / f"{prefix}-protocol-efficientnet_lite0.csv"
    _reset_peak(dev)
    t0 = time.perf_counter()
    df = run_evaluation(model, idx, modes=("ftc", "fntc"), config=cfg, device=dev,
                        batch_images=args.batch_images, out_csv=csv, resume=False,
                        progress=not args.quiet)
    _sync(dev)
    wall = time.perf_counter() - t0
    table = summary_table(df)
    table.to_csv(args.out_dir / f"{prefix}-protocol-summary.csv")
    print(table.to_string(), flush=True)
    res = throughput(len(df), cfg.iterations, wall, flops, peak, cfg.amp or "fp32")
    res.update({"model": "efficientnet_lite0", "images": len(idx), "modes": ["ftc", "fntc"],
                "flops_per_mask_iteration": flops, "peak_mem_gib": _peak_gib(dev),
                "csv": str(csv.relative_to(ROOT)) if csv.is_relative_to(ROOT) else str(csv),
                "summary": {f"{m}/{mode}": float(v) for (m, mode), v in table.iloc[0].items()}})
    print(f"protocol: {res['masks']} masks x {cfg.iterations} it in {res['wall_s']} s, "
          f"{res['masks_per_s']} masks/s, {res['tflops_step_x3']} TFLOP/s (3 x fwd)", flush=True)
    return res


def step_timing(args, dev, cfg, peak) -> list[dict]:
    out = []
    idx = select_images(args.n_timing)
    for name in args.timing_models:
        model = load_model(name, pretrained=False).to(dev)
        images = torch.stack([load_image(sample_path(i), model.input_size, model.resize_size)
                              for i in idx])
        flops = flops_per_mask_iteration(model, dev, cfg)
        settings = [MaskSetting("ftc"), MaskSetting("fntc")]
        opt_mod.optimize_masks(model, images[:2], settings=settings,  # warm-up
                               config=cfg.replace(iterations=2), device=dev, progress=False)
        _reset_peak(dev)
        t0 = time.perf_counter()
        for s in range(0, len(images), args.batch_images):
            opt_mod.optimize_masks(model, images[s:s + args.batch_images], settings=settings,
                                   config=cfg, device=dev, keep_images=False, progress=False)
        _sync(dev)
        wall = time.perf_counter() - t0
        res = throughput(len(images) * 2, cfg.iterations, wall, flops, peak, cfg.amp or "fp32")
        res.update({"model": name, "weights": "random (timing only)",
                    "flops_per_mask_iteration": flops, "peak_mem_gib": _peak_gib(dev)})
        print(f"timing {name}: {res['masks']} masks x {cfg.iterations} it in {res['wall_s']} s,"
              f" {res['masks_per_s']} masks/s, {res['tflops_step_x3']} TFLOP/s (3 x fwd), "
              f"{res['tflops_step_counted']} counted", flush=True)
        out.append(res)
        del model, images
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def step_precision(args, dev, cfg) -> dict:
    model = load_model("efficientnet_lite0")
    idx = select_images(args.n_precision)
    phis = {}
    for label, c in (("fp32", cfg.replace(amp=None, channels_last=False)),
                     ("bf16", cfg.replace(amp="bf16", channels_last=True))):
        df = run_evaluation(model, idx, modes=("ftc", "fntc"), config=c, device=dev,
                            batch_images=args.batch_images, progress=False)
        phis[label] = df.groupby("mode")["relative_improvement"].mean().to_dict()
    diff = {m: phis["bf16"][m] - phis["fp32"][m] for m in phis["fp32"]}
    ok = all(abs(d) < 0.5 for d in diff.values())
    print(f"precision ({len(idx)} images): phi fp32 {phis['fp32']}, bf16 {phis['bf16']}, "
          f"diff {diff} -> {'within' if ok else 'NOT within'} 0.5 points", flush=True)
    return {"images": idx, "phi": phis, "diff": diff, "within_0_5_points": ok,
            "note": "bf16 autocast is a no-op on the CPU" if dev.type != "cuda" else None}


def step_sync_check(dev) -> dict | None:
    if dev.type != "cuda":
        return None
    model = load_model("efficientnet_lite0", pretrained=False)
    x = torch.rand(2, 3, 224, 224)
    counts = {}
    real = loop_mod.descend

    def counted(*a, **kw):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            return real(*a, **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    loop_mod.descend = counted
    try:
        for iterations in (20, 40):
            cfg = OptimConfig(iterations=iterations, check_every=iterations // 2)
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                opt_mod.optimize_masks(model, x, config=cfg, device=dev, keep_images=False,
                                       progress=False)
            counts[iterations] = sum("synchroniz" in str(m.message) for m in w)
    finally:
        loop_mod.descend = real
    ok = counts[20] == counts[40]
    print(f"sync check: {counts} synchronizing calls in the loop at 20 and 40 iterations "
          f"(2 NaN checks each) -> {'no per-iteration sync' if ok else 'PER-ITERATION SYNC'}",
          flush=True)
    return {"sync_warnings": counts, "no_per_iteration_sync": ok}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--steps", nargs="+", default=["protocol", "timing", "precision", "sync"])
    args = ap.parse_args(argv)
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    if args.tiny:
        args.n_images, args.iterations, args.batch_images = 4, 2, 2
        args.n_timing, args.n_precision = 2, 2
        args.timing_models = ["resnet18"]
    else:
        args.n_images, args.iterations, args.batch_images = 1000, 200, 200 if cuda else 8
        args.n_timing, args.n_precision = 256, 20
        args.timing_models = ["resnet18", "vgg19"]
    args.out_dir = Path(args.out_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cfg = OptimConfig(iterations=args.iterations, amp="bf16" if cuda else None,
                      channels_last=True)
    peak = card_peak(dev)
    prefix = f"{dev.type}-{datetime.date.today().isoformat()}" + ("-tiny" if args.tiny else "")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "device": str(dev), "hardware": hardware(dev), "card_peak_tflops": peak,
              "torch": torch.__version__, "git_commit": git_commit(),
              "config": cfg.to_dict(), "tiny": args.tiny}
    t0 = time.perf_counter()
    if "protocol" in args.steps:
        report["protocol"] = step_protocol(args, dev, cfg, peak, prefix)
    if "timing" in args.steps:
        report["timing"] = step_timing(args, dev, cfg, peak)
    if "precision" in args.steps:
        report["precision"] = step_precision(args, dev, cfg)
    if "sync" in args.steps:
        report["sync_check"] = step_sync_check(dev)
    report["total_wall_s"] = round(time.perf_counter() - t0, 1)
    out = args.out_dir / f"{prefix}-protocol.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out} ({report['total_wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
