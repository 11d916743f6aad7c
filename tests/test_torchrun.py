"""``torchrun --nproc_per_node 2 -m upx_core.cli evaluate``: gloo on the CPU, 4 images x {F-TC,
F-NTC}, 3 iterations. The merged CSV must hold the rows of a single-process run (numbers within
1e-5 on probabilities and the ratio: the two ranks batch other images together, and a batched
convolution may sum in another order), and a second launch with resume must do no
optimization at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist

from upx_core import OptimConfig, load_model
from upx_core.evaluation.protocol import run_evaluation

DATA = Path(os.environ.get("UPX_DATA_DIR", Path(__file__).resolve().parents[2] / "shared"
                           / "imagenet-samples"))
INDICES = [1, 101, 407, 950]
pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason="no sample images (UPX_DATA_DIR)"),
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch.distributed with gloo is not available"),
]


def _torchrun(out: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "upx_core.cli", "evaluate", "--indices", *map(str, INDICES), "--iterations", "3",
        "--batch-images", "2", "--device", "cpu", "--out", str(out),
    ]
    env = {**os.environ, "UPX_DATA_DIR": str(DATA), "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_torchrun_two_ranks_equal_one_process_and_resume(tmp_path):
    out = tmp_path / "eval.csv"
    proc = _torchrun(out)
    assert "rank 0/2: 4 of 4 rows (2 images) to do" in proc.stderr
    assert "rank 1/2: 4 of 4 rows (2 images) to do" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.csv"]  # parts merged away
    merged = pd.read_csv(out, keep_default_na=False)
    assert list(zip(merged.image_index, merged["mode"], strict=True)) == [
        (i, m) for i in INDICES for m in ("ftc", "fntc")]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run (torchrun sets OMP_NUM_THREADS=1); on busy
    try:  # cores two threads can be many times slower than one
        single = run_evaluation(load_model("efficientnet_lite0"), INDICES, config=OptimConfig(
            iterations=3), device="cpu", progress=False, batch_images=2)
    finally:
        torch.set_num_threads(threads)
    text = ["image_index", "mode", "seed", "file", "model", "target", "target_name"]
    pd.testing.assert_frame_equal(merged[text], single[text])
    numbers = ["prob_before", "prob_after", "ratio"]
    pd.testing.assert_frame_equal(merged[numbers], single[numbers], rtol=0, atol=1e-5)
    # Eq. 8 divides by the residual 1 - f_h(X) and scales by 100: 1e-5 on the probabilities
    # is 1e-3 / (1 - f_h(X)) points of relative improvement.
    slack = 1e-3 / (1 - single.prob_before)
    assert ((merged.relative_improvement - single.relative_improvement).abs() <= slack).all()

    mtime = out.stat().st_mtime_ns
    again = _torchrun(out)
    assert "rank 0/2: 0 of 4 rows (0 images) to do" in again.stderr
    assert "rank 1/2: 0 of 4 rows (0 images) to do" in again.stderr
    assert out.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.csv"]
