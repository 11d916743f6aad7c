"""The shared mask loop (upx_core/method/loop.py) against the three loops it replaced, bit for bit.

Until issue 23 section 1 the white-box optimizer, the query-only optimizer and
benchmarks/blackbox_quality.py's oracle each ran an Adam loop of their own. Before they were
merged, tests/loop_masks.py computed six small cases with those loops (masks, loss histories,
final probabilities, queries: tests/data/loop-masks-before.npz, its ``meta`` says how and on
which machine); here the same script runs on the current code and every tensor must be equal.

Why equal and not close: 10 Adam steps amplify last-bit differences. On the Intel Xeon
(AVX-512) that wrote the file, the old code's masks moved by up to 4e-2 between its AVX-512 and
AVX2 kernels and by 1.5e-3 between AVX-512 and ATen's scalar kernels (one thread each). A
tolerance that lets another CPU pass would let a changed loop pass too, and a tight one fails on
another CPU. So the comparison runs on an arithmetic path that does not depend on the CPU, and
stays exact:

- ``portable`` (compared everywhere): ``ATEN_CPU_CAPABILITY=default`` (ATen's scalar kernels,
  the same instructions on every x86-64 CPU), ``MKL_CBWR=COMPATIBLE`` for the GEMMs (MKL's
  conditional numerical reproducibility on SSE2 without the approximate rcpps/rsqrtps, which
  Intel and AMD round differently: the one fixed branch MKL offers on non-Intel CPUs too), one
  thread (no reduction split by thread count), oneDNN and NNPACK off (convolutions become
  im2col + MKL GEMM instead of kernels chosen by the CPU's vector width and cache sizes). The
  variables must be set before torch loads, hence a subprocess. Checked on the recording
  machine: two runs bit-identical; ``MKL_ENABLE_INSTRUCTIONS=AVX2`` and
  ``ONEDNN_MAX_CPU_ISA=AVX2`` changed no bit; ``ONEDNN_VERBOSE`` showed no oneDNN primitive
  run, ``MKL_VERBOSE`` every GEMM in ``CNR:COMPATIBLE``. Not run on an AMD EPYC (none was at
  hand). What is left to the machine: glibc's expf/logf, whose FMA variant every CPU CI uses
  (Xeon, EPYC) takes, and torch, pinned in pyproject.
- ``native`` (compared on the recording machine only): the CPU's own kernels at one thread,
  the path users run. Its arithmetic is the CPU's, so on another CPU model, another set of
  vector extensions or another torch it is skipped, not compared with a tolerance (see above).

Scalar kernels make the portable run slow (about 25 s of CPU for the six cases).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from loop_masks import STORED, machine, run_on_path

STORED_DATA = np.load(STORED)
META = json.loads(str(STORED_DATA["meta"]))


def differences(path: str, tmp_path) -> list[str]:
    """Every stored tensor of ``path`` that the current code does not reproduce exactly."""
    out = tmp_path / f"{path}.pt"
    run_on_path(path, out)
    now = torch.load(out)["tensors"]
    stored = {k.split("/", 1)[1]: v for k, v in STORED_DATA.items() if k.startswith(path + "/")}
    assert sorted(now) == sorted(stored)
    bad = []
    for key, before in stored.items():
        before = torch.from_numpy(before)
        if not torch.equal(now[key], before):
            diff = (now[key].double() - before.double()).abs().max()
            bad.append(f"{key}: max |now - before| {float(diff):.3g}")
    return bad


def test_the_portable_path_reproduces_the_old_loops_bit_for_bit(tmp_path):
    assert differences("portable", tmp_path) == []


def test_the_native_path_reproduces_them_on_the_recording_machine(tmp_path):
    here, there = machine(), META["machine"]
    same = [k for k in ("cpu", "vector_flags", "torch", "capability") if here[k] == there[k]]
    if len(same) < 4:
        pytest.skip(f"another machine than the recording one ({there['cpu']}, "
                    f"{there['capability']}, torch {there['torch']}): its native arithmetic "
                    "differs; the portable path is compared instead")
    assert differences("native", tmp_path) == []
