"""Run the book's chapters under other floating-point paths and compare their claims.

200 Adam steps amplify rounding: the same trial on another CPU (other vector kernels), with
another number of threads, with batch-norm folding off or in another batch follows another
trajectory. A claim of the book must hold on all of them. Each path runs the chapters headless
(papermill, full parameters) with ``out_dir`` set, so every chapter writes its ``claims.csv``
(:class:`upx_core.book.claims.Claims`); this script gathers them into one table, claim by path.

    python benchmarks/arithmetic_paths.py --chapters 04 05 06 --paths other-simd one-thread
    python benchmarks/arithmetic_paths.py --record --table benchmarks/results/paths.md

Paths:
  default      this machine as it is (the book build's path)
  avx2         ATEN_CPU_CAPABILITY=avx2: the AVX2 kernels (differs from default on AVX-512 CPUs)
  no-simd      ATEN_CPU_CAPABILITY=default: ATen's scalar kernels, another machine's rounding
  other-simd   avx2 where this CPU has AVX-512, else no-simd: always a path unlike the default
  one-thread   OMP_NUM_THREADS=1 (and the chapters' ``threads`` parameter)
  unfolded     batch-norm folding off (the chapters' ``fold_batchnorm`` parameter)

Without ``--record`` the first failed claim stops its chapter and the script exits 1: this is
the check ``.ci/run`` runs. With ``--record`` (``UPX_CLAIMS=record``) every claim is computed
on every path, failed or not, for the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def has_avx512() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512f" in flags


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def path_definitions() -> dict[str, tuple[dict[str, str], dict]]:
    """Each path: the environment it runs in and the chapter parameters it sets."""
    other = "avx2" if has_avx512() else "default"
    return {
        "default": ({}, {}),
        "avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, {}),
        "no-simd": ({"ATEN_CPU_CAPABILITY": "default"}, {}),
        "other-simd": ({"ATEN_CPU_CAPABILITY": other}, {}),
        "one-thread": ({"OMP_NUM_THREADS": "1"}, {"threads": 1}),
        "unfolded": ({}, {"fold_batchnorm": False}),
    }


def declared_parameters(notebook: Path) -> str:
    import json

    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(c["source"]) for c in cells
                   if "parameters" in c.get("metadata", {}).get("tags", []))


def run_chapter(notebook: Path, path: str, env: dict[str, str], params: dict, out: Path,
                record: bool) -> tuple[int, float]:
    declared = declared_parameters(notebook)
    missing = [k for k in params if f"{k} =" not in declared]
    if missing:  # papermill would inject them silently, and the path would not be the path
        raise SystemExit(f"{notebook.name} has no parameter {', '.join(missing)} for path {path}")
    shutil.rmtree(out, ignore_errors=True)  # chapter 7 resumes from its CSV: start afresh
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(out / notebook.name),
           "--cwd", str(NOTEBOOKS), "-p", "out_dir", str(out), "--no-progress-bar"]
    for key, value in params.items():
        cmd += ["-p", key, str(value)]
    run_env = {**os.environ, **env}
    if record:
        run_env["UPX_CLAIMS"] = "record"
    start = time.time()
    proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True)
    wall = time.time() - start
    (out / "papermill.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode, wall


def gather(roots: list[Path], paths: list[str], chapters: list[Path]) -> pd.DataFrame:
    """Every ``ROOT/PATH/CHAPTER/claims.csv``; a later root wins for the same path and chapter."""
    found = {}
    for root in roots:
        for path in paths:
            for nb in chapters:
                csv = root / path / nb.stem / "claims.csv"
                if csv.exists():
                    found[(path, nb.stem)] = csv
    frames = [pd.read_csv(csv).assign(path=path) for (path, _), csv in found.items()]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def wide_table(claims: pd.DataFrame, paths: list[str]) -> pd.DataFrame:
    def shown(r):
        value = r["value"]
        try:
            text = f"{float(value):.4g}"
        except (TypeError, ValueError):
            text = str(value)
        return text if str(r["holds"]) == "True" else f"**{text} (fails)**"

    claims = claims.assign(cell=claims.apply(shown, axis=1))
    wide = claims.pivot_table(index=["chapter", "claim", "bound"], columns="path",
                              values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(columns=[p for p in paths if p in set(claims["path"])])
    return wide.fillna("not run")


def main(argv: list[str] | None = None) -> int:
    defs = path_definitions()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chapters", nargs="+", default=["02", "03", "04", "05", "06", "07", "08"],
                    help="chapter numbers (notebooks/NN_*.ipynb)")
    ap.add_argument("--paths", nargs="+", default=["default", "no-simd", "one-thread",
                                                   "unfolded"], choices=sorted(defs))
    ap.add_argument("--work", type=Path, default=ROOT / "_build" / "paths",
                    help="where the executed notebooks and their claims go")
    ap.add_argument("--record", action="store_true",
                    help="compute every claim on every path instead of stopping at a failure")
    ap.add_argument("--table", type=Path, help="write the claim-by-path table (markdown) here")
    ap.add_argument("--note", default=None, help="a sentence for the table's header")
    ap.add_argument("--gather", type=Path, nargs="+", default=[],
                    help="run nothing: build the table from these earlier --work folders "
                         "(later ones win)")
    args = ap.parse_args(argv)

    chapters = []
    for number in args.chapters:
        found = sorted(NOTEBOOKS.glob(f"{number}_*.ipynb"))
        if len(found) != 1:
            ap.error(f"no single chapter notebooks/{number}_*.ipynb")
        chapters.append(found[0])

    failed = []
    walls = {}
    for path in [] if args.gather else args.paths:
        env, params = defs[path]
        for nb in chapters:
            out = args.work / path / nb.stem
            rc, wall = run_chapter(nb, path, env, params, out, args.record)
            walls[(path, nb.stem)] = wall
            status = "ok" if rc == 0 else f"FAILED (see {out / 'papermill.log'})"
            print(f"{path:11s} {nb.stem:18s} {wall:6.0f} s  {status}", flush=True)
            if rc:
                failed.append((path, nb.stem))
                log = (out / "papermill.log").read_text().strip().splitlines()
                claim_lines = [ln for ln in log if "ClaimError" in ln or "claim" in ln]
                print("    " + (claim_lines[-1] if claim_lines else log[-1] if log else ""))

    claims = gather(args.gather or [args.work], args.paths, chapters)
    if not claims.empty:
        failing = claims[claims["holds"].astype(str) != "True"]
        print(f"{len(claims)} claim checks on {len(args.paths)} paths")
        print(f"claims: {len(claims) - len(failing)} passed, {len(failing)} failed")
        for _, r in failing.iterrows():
            print(f"  FAILS on {r['path']}: {r['chapter']}: {r['claim']} = {r['value']} "
                  f"(needs {r['bound']})")
        if args.table:
            command = "python benchmarks/arithmetic_paths.py " + " ".join(argv or sys.argv[1:])
            header = [
                "# The book's claims on several floating-point paths",
                "",
                f"Made by `{command}` on {dt.date.today().isoformat()}, {cpu_name()}, "
                f"{os.cpu_count()} cores, torch's default capability "
                f"{'AVX-512' if has_avx512() else 'AVX2'}.",
                "",
                "Each cell is the claim's value on that path; a failed claim is in bold. Paths: "
                + "; ".join(f"`{p}` {' '.join(f'{k}={v}' for k, v in defs[p][0].items()) or ''}"
                            f"{' ' + str(defs[p][1]) if defs[p][1] else ''}".rstrip()
                            for p in args.paths) + ".",
                "",
                ("Chapter wall times (s): " + "; ".join(
                    f"{p} {nb}: {w:.0f}" for (p, nb), w in walls.items()) + ".") if walls else
                "Gathered from earlier runs' claims.csv files (" + ", ".join(
                    str(g) for g in args.gather) + ").",
                "",
                *([args.note, ""] if args.note else []),
            ]
            table = wide_table(claims, args.paths).reset_index()
            args.table.parent.mkdir(parents=True, exist_ok=True)
            args.table.write_text("\n".join(header) + "\n" + table.to_markdown(index=False) + "\n")
            print(f"wrote {args.table}")
    if failed:
        print("chapters that failed:", ", ".join(f"{c} ({p})" for p, c in failed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
