"""``upx explain`` beside other work: OpenMP's default wait policy against upx's, per load.

Runs ``upx explain sample:tusker --target "African elephant" --seeds 0 1 2`` (1 image x 3
trials, ``--iterations`` Adam steps) as a fresh process, with 0, 1 and 2 busy background
processes (bounded busy loops this script starts before each run and stops after it), under
each thread policy:

- ``default``: OpenMP's own (``UPX_THREAD_POLICY=off``, no ``OMP_WAIT_POLICY``): what upx did
  before ``upx_core/threads.py``;
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once; upx's setting for a few hours of
  2026-12-06, until it measured 24-38 % slower idle), torch's default thread count;
- ``one-thread`` (optional): ``OMP_NUM_THREADS=1`` and OpenMP's default wait policy;
- ``spin10k``: ``GOMP_SPINCOUNT=10000``, a short spin before sleeping: upx's setting
  (``upx_core/threads.py``).

The policies alternate within each load (A B B A ...), repeats interleaved, so a drift of the
machine's speed falls on all of them alike; the ratios are taken within this one run. A run that
passes ``--timeout`` is stopped and counted as at least that long.

    python benchmarks/thread_policy.py --repeats 2 \
        --out benchmarks/results/thread-policy-cpu-<date>.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's upx_core, for its provenance helpers

POLICIES = {
    "default": {"UPX_THREAD_POLICY": "off"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one-thread": {"UPX_THREAD_POLICY": "off", "OMP_NUM_THREADS": "1"},
    # spin briefly (libgomp's default is 300,000 rounds idle, 1,000 when oversubscribed), then sleep
    "spin10k": {"UPX_THREAD_POLICY": "off", "GOMP_SPINCOUNT": "10000"},
    "spin2k": {"UPX_THREAD_POLICY": "off", "GOMP_SPINCOUNT": "2000"},
}
# what a policy's run must not inherit from this process's environment
CLEARED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "UPX_THREAD_POLICY",
           "MKL_NUM_THREADS")


def _spin(deadline: float) -> None:
    x = 0
    while time.monotonic() < deadline:  # bounded: a killed parent never leaves it running
        x += 1


def busy(n: int, seconds: float) -> list[mp.Process]:
    """``n`` processes that keep one core busy each for at most ``seconds``."""
    procs = [mp.Process(target=_spin, args=(time.monotonic() + seconds,), daemon=True)
             for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def run_explain(policy: str, iterations: int, timeout: float, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(POLICIES[policy])
    cmd = [sys.executable, "-m", "upx_core.cli", "explain", "sample:tusker", "--target",
           "African elephant", "--seeds", "0", "1", "2", "--iterations", str(iterations),
           "--objective", "log_prob", "--no-progress", "--force", "--out", str(out)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"policy": policy, "wall_s": timeout, "timed_out": True, "loadavg_1m": load}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return {"policy": policy, "wall_s": wall, "timed_out": False, "loadavg_1m": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2],
                    help="busy background processes per condition (default: 0 1 2)")
    ap.add_argument("--policies", nargs="+", choices=POLICIES, default=["default", "spin10k"])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds after which a run is stopped and counted as that long")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from upx_core.evaluation.provenance import provenance

    runs = []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for load in args.loads:
                order = args.policies if (rep + load) % 2 == 0 else args.policies[::-1]
                for policy in order:
                    procs = busy(load, args.timeout + 60)
                    try:
                        time.sleep(1.0 if load else 0.0)  # the busy loops are running
                        row = run_explain(policy, args.iterations, args.timeout,
                                          Path(tmp) / "out")
                    finally:
                        for p in procs:
                            p.kill()
                            p.join()
                    row.update(load=load, repeat=rep)
                    runs.append(row)
                    print(f"load {load} {policy:10s} {row['wall_s']:7.1f} s"
                          f"{' (timed out)' if row['timed_out'] else ''}"
                          f"  loadavg {row['loadavg_1m']:.2f}", flush=True)

    summary = {}
    for load in args.loads:
        med = {p: statistics.median(r["wall_s"] for r in runs
                                    if r["load"] == load and r["policy"] == p)
               for p in args.policies}
        summary[str(load)] = {"median_wall_s": med}
    idle = summary[str(args.loads[0])]["median_wall_s"]
    for load in args.loads:
        med = summary[str(load)]["median_wall_s"]
        summary[str(load)]["vs_own_idle"] = {p: med[p] / idle[p] for p in args.policies}
        summary[str(load)]["vs_default_same_load"] = {p: med[p] / med["default"]
                                                       for p in args.policies
                                                       if "default" in med}
    command = " ".join(["python", "benchmarks/thread_policy.py", *sys.argv[1:]])
    meta = provenance(command, time.time() - start, iterations=args.iterations,
                      repeats=args.repeats)
    out = {**meta, "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
