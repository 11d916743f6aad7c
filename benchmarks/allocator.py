"""Does glibc's allocator slow the optimizer down? Time one optimize_masks call with the default
malloc settings and with large allocations kept on the heap, in fresh processes, and check that
the masks are bit for bit the same (memory placement must not change arithmetic).

Large batches spend most of their time in the kernel here (``top``: 75 % system time at 96 masks):
glibc returns every tensor above its mmap threshold to the OS when it is freed and page-faults
it back in at the next iteration. MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ keep it.
Usage: python benchmarks/allocator.py --images 12 --iterations 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

KEEP_ON_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(2**34), "MALLOC_TRIM_THRESHOLD_": str(2**34),
                "MALLOC_TOP_PAD_": str(2**30)}


def child(images: int, iterations: int, out: str) -> None:
    import torch

    from upx_core import MaskSetting, OptimConfig, load_model, optimize_masks
    from upx_core.book.chapter import load_sample

    model = load_model("efficientnet_lite0")
    x = torch.stack([load_sample(i, model) for i in range(images)])
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    r = optimize_masks(model, x, settings=[MaskSetting()], progress=False,
                       config=OptimConfig(iterations=iterations))
    after = resource.getrusage(resource.RUSAGE_SELF)
    torch.save(r.masks, out)
    print(json.dumps({"wall_s": time.perf_counter() - start,
                      "user_s": after.ru_utime - before.ru_utime,
                      "sys_s": after.ru_stime - before.ru_stime,
                      "minor_faults": after.ru_minflt - before.ru_minflt}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.images, args.iterations, args.child)
        return
    import torch

    rows = {}
    for name, extra in (("default malloc", {}), ("large blocks kept on the heap", KEEP_ON_HEAP)):
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), **extra}
        out = f"/tmp/upx-allocator-{len(rows)}.pt"
        proc = subprocess.run([sys.executable, __file__, "--images", str(args.images),
                               "--iterations", str(args.iterations), "--child", out],
                              env=env, capture_output=True, text=True, check=True)
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1]) | {"masks": out}
        print(name, {k: round(v, 2) for k, v in rows[name].items() if k != "masks"}, flush=True)
    a, b = (torch.load(r["masks"]) for r in rows.values())
    print("masks bit for bit equal:", torch.equal(a, b))
    base, kept = rows.values()
    print(f"speed-up in wall time: {base['wall_s'] / kept['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
