"""``runtime.keep_freed_memory``: large blocks stay on glibc's heap (what the Makefile's
MALLOC_* variables do for the book), and a caller's own MALLOC_* setting wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# In a fresh process: allocate 300 MiB and ask glibc where it put it (mallinfo2: hblkhd is
# the memory served by mmap, arena the heap); torch's
# own import already holds some of both, so the probe reports what the one block added.
PROBE = """
import ctypes
from upx_core.method.runtime import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks "
                "fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2()
block = libc.malloc(ctypes.c_size_t(300 << 20))
after = libc.mallinfo2()
print(applied, (after.hblkhd - before.hblkhd) >> 20, (after.arena - before.arena) >> 20)
"""

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def _probe(**env: str) -> tuple[str, int, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


@glibc_only
def test_large_block_goes_to_the_heap():
    applied, mmapped_mib, heap_mib = _probe()
    assert applied == "True"
    assert mmapped_mib == 0
    assert heap_mib >= 300


@glibc_only
def test_a_callers_malloc_setting_wins():
    # glibc's own default threshold (128 KiB): the 300 MiB block is mmapped as without upx
    applied, mmapped_mib, _ = _probe(MALLOC_MMAP_THRESHOLD_="131072")
    assert applied == "False"
    assert mmapped_mib == 300
