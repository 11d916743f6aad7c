"""How torch's CPU threads wait: the OpenMP policy upx sets before torch loads.

torch's CPU kernels run on an OpenMP team (GNU libgomp in the pip wheels). Between two parallel
regions an idle worker spins for a while before it sleeps, so that the next region starts
without a wake-up. On a machine whose cores are all busy with other work, that spinning is
what makes the optimizer slow: a worker that spins holds a core the descheduled worker it waits
for needs, and every barrier of every layer of 200 Adam steps waits a time slice. Measured with
two busy processes on a 2-core machine (``benchmarks/thread_policy.py``, tabled in
``benchmarks/README.md``), ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) takes that cost away,
and idle it costs nothing measurable.

libgomp reads its policy once, when torch's C library loads it, so it must be in the
environment before ``import torch``: ``import upx_core`` (which loads no torch) sets it, as do
the ``upx`` command, the Makefile (``make book``, ``make test``, ``make lab``) and CI. Code that
imports torch before upx_core sets it itself (``OMP_WAIT_POLICY=PASSIVE python ...``). A value
the user set wins, and ``UPX_THREAD_POLICY=off`` keeps OpenMP's own default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

__all__ = ["THREAD_POLICY", "apply_thread_policy"]

# The environment upx runs torch under, unless the user set these.
THREAD_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_thread_policy(environ: MutableMapping[str, str] | None = None) -> bool:
    """Put :data:`THREAD_POLICY` into ``environ`` (``os.environ``) where the user set nothing.

    Returns whether the policy is what torch will run under in this process: ``False`` when
    ``UPX_THREAD_POLICY=off``, when the user set another value, or when torch was already
    imported into it (libgomp has read its environment by then; the variables are still set,
    for child processes).
    """
    env = os.environ if environ is None else environ
    if env.get("UPX_THREAD_POLICY", "").lower() == "off":
        return False
    for name, value in THREAD_POLICY.items():
        env.setdefault(name, value)
    agreed = all(env[name] == value for name, value in THREAD_POLICY.items())
    return agreed and (environ is not None or "torch" not in sys.modules)
