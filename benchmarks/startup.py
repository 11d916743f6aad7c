"""How long ``upx explain IMAGE --iterations 1`` takes from start to exit, and when its first line
comes (issue 22 section 2): the command's own exit (``upx_core.cli.run``: flush, then leave
without Python's teardown of torch, torchvision and timm) against the usual one (``sys.exit``
after ``main``), interleaved A B B A ..., each a fresh process, wall seconds to the process's
end. Writes a JSON with the hardware, commit and the load average around each run.

    python benchmarks/startup.py --repeats 4 --out benchmarks/results/startup-cpu-<date>.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's upx_core, for its provenance helpers

ARGS = ["explain", "sample:tusker", "--iterations", "1", "--seeds", "0"]  # as a user types it
WAYS = {
    "sys.exit": ["-c", "import sys; from upx_core.cli import main; sys.exit(main(sys.argv[1:]))"],
    "run": ["-m", "upx_core.cli"],
}


def timed(way: str, out: Path) -> dict:
    """One fresh process: wall seconds to its end, and to its first line of output (stdout and
    stderr, where the progress lines go)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *WAYS[way], *ARGS, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = None
    lines = []
    for line in proc.stdout:
        if first is None:
            first = time.perf_counter() - start
        lines.append(line)
    code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0 or not any(line.startswith("wrote") for line in lines):
        raise SystemExit(f"{way}: exit {code}\n{''.join(lines)}")
    return {"way": way, "wall_s": wall, "first_line_s": first, "loadavg": os.getloadavg()[0]}


def main() -> None:
    from upx_core.evaluation.provenance import provenance
    from upx_core.files import atomic_write_bytes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for way in (list(WAYS) if i % 2 == 0 else list(WAYS)[::-1]):
                runs.append(timed(way, Path(tmp) / "out"))
                print(json.dumps(runs[-1]), flush=True)
    summary = {way: {"median_wall_s": statistics.median(r["wall_s"] for r in runs
                                                         if r["way"] == way),
                     "median_first_line_s": statistics.median(r["first_line_s"] for r in runs
                                                              if r["way"] == way)}
               for way in WAYS}
    command = shlex.join(["python", "benchmarks/startup.py", *sys.argv[1:]])
    record = {**provenance(command, time.perf_counter() - t0), "args": ARGS,
              "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(record, indent=1) + "\n").encode())
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
