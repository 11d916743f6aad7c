"""The library's batched mask optimizer against a straightforward reference, on one machine.

The reference is written here as public snippets do it: one image at a time, the model's
parameters left requiring grad (so the backward also computes, and accumulates, weight
gradients nobody uses), a plain Adam loop on a 28 x 28 mask with the loss of Eq. 1 + Eq. 5
(F-TC) spelled out again below. The library (``upx_core.method.optimizer.optimize_masks``) freezes
the weights, optimizes B masks in one forward/backward per iteration, and (by default here) runs
channels-last. Both start from the same M0 (``upx_core.method.optimizer.initial_mask``), see the
same images, and run the same iterations with the same hyperparameters.

Before any number is reported, the two must agree: on the first 4 images, after
--check-iterations (2) iterations, max |M_lib - M_ref| < --tol (1e-3); the first Adam step
moves every cell by exactly +-lr whatever the gradient's size, so step 2 is the first that
weighs the gradients, and a wrong loss term or weight moves cells by O(lr) there. Not bitwise:
a batched or channels-last convolution sums in another order than a single-image one
(oneDNN/cuDNN choose kernels by shape and layout), so gradients differ in the last bits. Not
after all iterations either: Adam's step m/sqrt(v) is scale-free, and where a cell's gradient
changes sign it divides a near-cancellation by the gradient size, so last-bit differences grow
into visible ones at a few cells within ~10 iterations. Measured here on EfficientNet-Lite0 (4
images, 10 iterations): library vs reference 4.3e-2, and the library against itself, one image
per call vs 4 per call, 1.8e-2: the problem's own sensitivity, not a difference between the
implementations. The timed runs report max, mean and the share of cells over 1e-3 as well.

Weights are random (``load_model(name, pretrained=False)``): timing does not depend on them.
Images are the first B of ``select_images`` (real samples; random noise if none are found).

Reports per (model, batch size B): wall and CPU seconds, masks/s, ms per iteration (per mask
and per batch of B masks), peak memory (CPU: the process's peak RSS above its RSS before the
run, /proc/self/status VmHWM after resetting it through /proc/self/clear_refs; CUDA:
torch.cuda.max_memory_allocated above the memory allocated before), and ref/lib speed ratios.
Times are wall-clock and process CPU time: on a shared, oversubscribed CPU the CPU time is the
steadier measure of work (use --threads 1 there: busy cores make 2 OpenMP threads wait on each
other, which both times count). Writes benchmarks/results/<device>-<YYYY-MM-DD>.json.

    python benchmarks/bench_optimizer.py --models efficientnet_lite0 resnet18 vgg19 \\
        --batch-sizes 1 8 32 --iterations 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

from upx_core import (
    MaskSetting,
    OptimConfig,
    load_image,
    load_model,
    optimize_masks,
    sample_path,
)
from upx_core.evaluation import provenance
from upx_core.evaluation.protocol import select_images
from upx_core.method.optimizer import initial_mask
from upx_core.method.runtime import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision_gate import VARIANTS, compiled_folded  # noqa: E402  (the gate's variants)

ROOT = Path(__file__).resolve().parents[1]
# The paper's hyperparameters (Sect. 4.1) with the library's default readings of the rest.
LR, MASK, SIGMA, KSIZE = 0.1, 28, 5.0, 11
LAMBDA1, LAMBDA2, BETA, GAMMA, INIT_NOISE = 1.7, 3.0, 2.0, 0.3, 0.5


# --- the reference ---------------------------------------------------------------------------

def reference_mask(model, image: torch.Tensor, seed: int, iterations: int) -> torch.Tensor:
    """One image, Eq. 1 + Eq. 5, plain Adam; weights requiring grad. Returns M ``[1, m, m]``."""
    x = image.unsqueeze(0)
    blurred = gaussian_blur(x, kernel_size=[KSIZE, KSIZE], sigma=[SIGMA, SIGMA])
    with torch.no_grad():
        clean = model(x)
    k = int(clean.argmax(dim=1))
    mask = initial_mask(seed, MASK, INIT_NOISE).unsqueeze(0).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([mask], lr=LR)
    others = torch.ones(clean.shape[1], dtype=torch.bool, device=x.device)
    others[k] = False
    for _ in range(iterations):
        up = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        q = x * up + blurred * (1 - up)  # Eq. 1
        logits = model(q)
        p_k = torch.softmax(logits, dim=1)[0, k]
        # R_M (Eq. 3): TV_beta as a mean over the (m-1)^2 cells (root only where positive, so
        # a flat patch has gradient 0, not NaN), L1 as a mean over the m^2 cells.
        m = mask[0, 0]
        dy = (m[1:, :-1] - m[:-1, :-1]).abs()
        dx = (m[:-1, 1:] - m[:-1, :-1]).abs()
        inner = dy**BETA + dx**BETA
        tv = torch.where(inner > 0, inner.clamp_min(1e-30) ** (1 / BETA), 0.0).mean()
        l1 = (1 - m).abs().mean()
        # R_F-TC (Eq. 4): gamma * |mean of the non-target logits' shift|.
        ftc = GAMMA * ((logits - clean)[0, others].mean()).abs()
        loss = -p_k + LAMBDA1 * tv + LAMBDA2 * l1 + ftc  # Eq. 5, minimized
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            mask.clamp_(0, 1)
    with torch.no_grad():  # the final probability, as the library reports it
        up = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        model(x * up + blurred * (1 - up))
    return mask.detach()[0]


def run_reference(model, images, iterations):
    for p in model.parameters():
        p.requires_grad_(True)
    masks = []
    for img in images:
        masks.append(reference_mask(model, img, 0, iterations))
        for p in model.parameters():
            p.grad = None
    return torch.stack(masks)


def run_library(model, images, iterations, variant, batch_size):
    """The library on ``variant`` (``precision_gate.VARIANTS``: precision, layout, compile)."""
    fields, compiled = VARIANTS[variant]
    cfg = OptimConfig(iterations=iterations, lr=LR, mask_size=MASK, sigma=SIGMA,
                      kernel_size=KSIZE, init_noise=INIT_NOISE, check_every=max(10, iterations),
                      **fields)
    if compiled:  # the folded copy, compiled once per model (compile time: see warm-up)
        model, cfg = _compiled(model), cfg.replace(fold_batchnorm=False)
    setting = MaskSetting("ftc", seed=0, lambda1=LAMBDA1, lambda2=LAMBDA2, beta=BETA,
                          gamma=GAMMA)
    r = optimize_masks(model, images, settings=[setting], config=cfg, device=images.device,
                       batch_size=batch_size, keep_images=False, progress=False)
    return r.masks[:, 0]


_COMPILED: dict[int, torch.nn.Module] = {}


def _compiled(model):
    if id(model) not in _COMPILED:
        probe = torch.rand(2, 3, 64, 64, device=next(model.parameters()).device)
        _COMPILED[id(model)] = compiled_folded(model, probe)
    return _COMPILED[id(model)]


# --- measuring -------------------------------------------------------------------------------

def _fix_malloc() -> str | None:
    """Make glibc return freed tensors to the OS, so that a case's peak RSS is its own.

    glibc raises its mmap threshold after the first large free and then keeps freed tensors
    in the heap: the RSS stays at the highest level seen so far and a later case would show no
    growth. A fixed 128 KiB threshold (which also stops that adjustment) unmaps them on free.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(-3, 128 * 1024) != 1:  # M_MMAP_THRESHOLD
            return None
        libc.malloc_trim(0)
        return "glibc M_MMAP_THRESHOLD = 128 KiB (freed tensors leave the RSS)"
    except (OSError, AttributeError):
        return None


def _proc_status(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024


def measure(fn, dev: torch.device) -> dict:
    """Wall and CPU time and peak memory of ``fn()``; returns its result under ``out``."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
            base = _proc_status("VmRSS")
        except OSError:
            base = None
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = None if base is None else _proc_status("VmHWM") - base
    return {"out": out, "wall_s": wall, "cpu_s": cpu,
            "peak_mem_mb": None if peak is None else round(peak / 2**20, 1)}


def summarize(m: dict, n_masks: int, iterations: int) -> dict:
    return {
        "wall_s": round(m["wall_s"], 3),
        "cpu_s": round(m["cpu_s"], 3),
        "masks_per_s": round(n_masks / m["wall_s"], 4),
        "ms_per_iter_per_mask": round(1000 * m["wall_s"] / (iterations * n_masks), 2),
        "ms_per_iter_per_batch": round(1000 * m["wall_s"] / iterations, 2),
        "peak_mem_mb": m["peak_mem_mb"],
    }


def load_images(n: int, size: int, resize: int) -> tuple[torch.Tensor, str]:
    try:
        idx = select_images(n)
        return torch.stack([load_image(sample_path(i), size, resize) for i in idx]), \
            f"sample images {idx}"
    except (OSError, RuntimeError, ValueError) as err:
        print(f"no sample images ({err}); using random noise images", file=sys.stderr)
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 3, size, size, generator=g), "random noise images"


def hardware(dev: torch.device) -> dict:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_avg_1_5_15": list(os.getloadavg())}
    with open("/proc/cpuinfo") as fh:
        names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
    info["cpu"] = names[0] if names else platform.processor()
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def git_commit() -> str:
    return provenance.git_commit(ROOT) or "unknown"


def print_table(rows: list[dict], variants: list[str]) -> None:
    head = (f"{'model':<19}{'B':>4}{'ref ms/it/mask':>16}"
            + "".join(f"{v + ' ms/it/mask':>20}{'x wall':>8}{'x cpu':>7}" for v in variants)
            + f"{'max|dM|':>10}{'>1e-3':>7}{'ref MB':>8}"
            + "".join(f"{v + ' MB':>11}" for v in variants))
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['model']:<19}{r['batch']:>4}{r['ref']['ms_per_iter_per_mask']:>16.1f}"
        for v in variants:
            line += (f"{r[v]['ms_per_iter_per_mask']:>20.1f}{r['speedup_wall_' + v]:>8.2f}"
                     f"{r['speedup_cpu_' + v]:>7.2f}")
        line += (f"{r['max_abs_mask_diff_' + variants[0]]:>10.1e}"
                 f"{100 * r['share_cells_over_1e-3_' + variants[0]]:>6.1f}%{_mb(r['ref']):>8}")
        line += "".join(f"{_mb(r[v]):>11}" for v in variants)
        print(line)


def _mb(d: dict) -> str:
    return "-" if d["peak_mem_mb"] is None else f"{d['peak_mem_mb']:.0f}"


# --- main ------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet_lite0", "resnet18", "vgg19"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--variants", nargs="+", default=["fp32+cl"], choices=list(VARIANTS),
                    help="library variants to time: precision (fp32, bf16: autocast on CUDA or "
                         "a CPU with native bfloat16), +cl channels-last, compile (torch.compile "
                         "of the folded classifier); the first is checked against the reference "
                         "(default: fp32+cl)")
    ap.add_argument("--mask-batch-size", type=int, default=None,
                    help="masks per forward pass in the library (default: all / from memory)")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="max |M_lib - M_ref| allowed in the check (fp32 library run)")
    ap.add_argument("--check-iterations", type=int, default=2)
    ap.add_argument("--max-case-seconds", type=float, default=240.0,
                    help="skip a (model, B) case whose estimated ref + lib time exceeds this")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", default=None, help="JSON path (default results/<device>-<date>)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    malloc_note = _fix_malloc() if dev.type == "cpu" else None
    variants = list(dict.fromkeys(args.variants))
    date = datetime.date.today().isoformat()
    out = (Path(args.out) if args.out
           else ROOT / "benchmarks" / "results" / f"{dev.type}-{date}.json")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": str(dev),
        "hardware": hardware(dev),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "malloc": malloc_note,
        "git_commit": git_commit(),
        "settings": {
            "iterations": args.iterations, "batch_sizes": args.batch_sizes,
            "library": {"variants": {v: {"config": VARIANTS[v][0], "compiled": VARIANTS[v][1]}
                                     for v in variants},
                        "frozen_weights": True, "mask_batch_size": args.mask_batch_size},
            "reference": "one image at a time, weights requiring grad, plain Adam, fp32",
            "loss": "Eq. 1 + Eq. 5 (F-TC), lr 0.1, lambda1 1.7, lambda2 3.0, beta 2, gamma 0.3,"
                    " 28x28 mask, blur sigma 5 / size 11, M0 = initial_mask(0, 28, 0.5)",
            "weights": "random (load_model(name, pretrained=False)): timing only",
            "check": f"max |M_lib - M_ref| < {args.tol:g} after {args.check_iterations} "
                     "iterations on 4 images (see the module docstring for why not after all)",
        },
        "checks": {},
        "results": [],
        "skipped": [],
    }
    failed = False
    for name in args.models:
        model = load_model(name, pretrained=False).to(dev)
        size, resize = model.input_size, model.resize_size
        images, source = load_images(max(args.batch_sizes), size, resize)
        report["images"] = source
        images = images.to(dev)
        # Warm-up: kernel selection and allocator growth happen outside the timings.
        run_reference(model, images[:1], 1)
        report["warmup_s"] = report.get("warmup_s", {})
        for v in variants:  # a compiled variant compiles here: its cost is reported apart
            t0 = time.perf_counter()
            run_library(model, images[:2], 1, v, args.mask_batch_size)
            report["warmup_s"][f"{name}/{v}"] = round(time.perf_counter() - t0, 2)
        # The gate: equal masks after --check-iterations on the first 4 images.
        xc = images[:4]
        ref_c = run_reference(model, xc, args.check_iterations)
        check = {"images": len(xc), "iterations": args.check_iterations, "tolerance": args.tol}
        for v in variants:
            lib_c = run_library(model, xc, args.check_iterations, v, args.mask_batch_size)
            check["max_abs_mask_diff_" + v] = float((lib_c.to(ref_c.device) - ref_c).abs().max())
        check["passed"] = check["max_abs_mask_diff_" + variants[0]] < args.tol
        failed |= not check["passed"]
        report["checks"][name] = check
        print(f"{name} check ({len(xc)} images, {args.check_iterations} iterations): max|dM| "
              f"{check['max_abs_mask_diff_' + variants[0]]:.1e} -> "
              f"{'ok' if check['passed'] else 'FAILED'}"
              f" (tolerance {args.tol:g})", flush=True)
        per_mask_s = None  # from the last case: (ref + lib variants) seconds per mask-iteration
        for b in sorted(args.batch_sizes):
            if per_mask_s is not None:
                estimate = per_mask_s * b * args.iterations
                if estimate > args.max_case_seconds:
                    msg = (f"skipped {name} batch {b}: estimated {estimate:.0f} s > "
                           f"--max-case-seconds {args.max_case_seconds:.0f}")
                    print(msg, flush=True)
                    report["skipped"].append(msg)
                    continue
            x = images[:b]
            ref = measure(lambda m=model, x=x: run_reference(m, x, args.iterations), dev)
            row = {"model": name, "batch": b, "ref": summarize(ref, b, args.iterations)}
            total = ref["wall_s"]
            for v in variants:
                lib = measure(lambda m=model, x=x, v=v: run_library(
                    m, x, args.iterations, v, args.mask_batch_size), dev)
                total += lib["wall_s"]
                row[v] = summarize(lib, b, args.iterations)
                row["speedup_wall_" + v] = round(ref["wall_s"] / lib["wall_s"], 3)
                row["speedup_cpu_" + v] = round(ref["cpu_s"] / lib["cpu_s"], 3)
                diff = (lib["out"].to(ref["out"].device) - ref["out"]).abs()
                row["max_abs_mask_diff_" + v] = float(diff.max())
                row["mean_abs_mask_diff_" + v] = float(diff.mean())
                row["share_cells_over_1e-3_" + v] = float((diff > 1e-3).float().mean())
            per_mask_s = total / (b * args.iterations)
            report["results"].append(row)
            print(f"{name} B={b}: ref {row['ref']['wall_s']:.1f} s, "
                  + ", ".join(f"{v} {row[v]['wall_s']:.1f} s x{row['speedup_wall_' + v]:.2f}"
                              for v in variants), flush=True)
        del model, images
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    report["hardware"]["load_avg_1_5_15_end"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"{dev} ({report['hardware'].get('gpu', report['hardware']['cpu'])}), "
          f"{report['torch_threads']} thread(s), {args.iterations} iterations; x = reference "
          "time / library time; max|dM| and >1e-3: max |M_lib - M_ref| and the share of cells "
          f"over 1e-3 after the {args.iterations} iterations")
    for name, c in report["checks"].items():
        print(f"check {name}: max|dM| {c['max_abs_mask_diff_' + variants[0]]:.1e} after "
              f"{c['iterations']}"
              f" iterations (tolerance {args.tol:g}): {'ok' if c['passed'] else 'FAILED'}")
    print_table(report["results"], variants)
    for msg in report["skipped"]:
        print(msg)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if failed:
        print(f"FAILED: library and reference masks differ by more than {args.tol:g} after "
              f"{args.check_iterations} iterations", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
