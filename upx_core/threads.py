"""How torch's CPU threads wait: the OpenMP setting upx makes before torch loads.

torch's CPU kernels run on an OpenMP team (GNU libgomp in the pip wheels). Between two parallel
regions an idle worker spins before it sleeps, so that the next region starts without a
wake-up; libgomp's default is 300,000 spin rounds. On a machine whose cores are busy with other
work, that spinning is what makes the optimizer slow: a worker that spins holds a core that the
descheduled worker it waits for needs, and every barrier of every layer of 200 Adam steps can
wait a time slice. A short spin (``GOMP_SPINCOUNT=10000``) keeps the quick hand-over when the
cores are free and gives the core up soon when they are not. Measured with
``benchmarks/thread_policy.py`` on a 2-core machine (``benchmarks/README.md``): idle, within 4 %
of libgomp's default; beside two busy processes, 2.1-2.4 times its idle time, where the
default took more than 6.9 and 9.7 times its idle time in two of its five loaded runs.
``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) was the steadiest under load but cost 24-38 % idle,
so it is not the default; set it yourself on a machine that is always busy.

libgomp reads these once, when torch's C library loads it, so they must be in the environment
before ``import torch``: ``import upx_core`` (which loads no torch) sets them, as do the ``upx``
command, the Makefile (``make book``, ``make test``, ``make lab``) and CI. Code that imports
torch before upx_core sets them itself (``GOMP_SPINCOUNT=10000 python ...``). A value the user
set wins (``OMP_WAIT_POLICY`` included: libgomp then takes the user's), and
``UPX_THREAD_POLICY=off`` keeps OpenMP's own default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

__all__ = ["THREAD_POLICY", "apply_thread_policy"]

# The environment upx runs torch under, unless the user set these.
THREAD_POLICY = {"GOMP_SPINCOUNT": "10000"}
# A wait policy of the user's decides how libgomp waits: upx then adds nothing.
USER_POLICY = ("OMP_WAIT_POLICY",)


def apply_thread_policy(environ: MutableMapping[str, str] | None = None) -> bool:
    """Put :data:`THREAD_POLICY` into ``environ`` (``os.environ``) where the user set nothing.

    Returns whether the policy is what torch will run under in this process: ``False`` when
    ``UPX_THREAD_POLICY=off``, when the user set another value or an ``OMP_WAIT_POLICY``, or
    when torch was already imported into it (libgomp has read its environment by then; the
    variables are still set, for child processes).
    """
    env = os.environ if environ is None else environ
    if env.get("UPX_THREAD_POLICY", "").lower() == "off" or any(v in env for v in USER_POLICY):
        return False
    for name, value in THREAD_POLICY.items():
        env.setdefault(name, value)
    agreed = all(env[name] == value for name, value in THREAD_POLICY.items())
    return agreed and (environ is not None or "torch" not in sys.modules)
