"""The OpenMP wait policy: set before torch loads, the user's own value kept, and off on request."""

from __future__ import annotations

import os
import subprocess
import sys

from upx_core.threads import THREAD_POLICY, apply_thread_policy


def test_the_policy_fills_what_the_user_left_unset():
    env: dict[str, str] = {}
    assert apply_thread_policy(env) is True
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"} == THREAD_POLICY


def test_a_value_the_user_set_wins_and_is_reported_as_not_upx_s():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_thread_policy(env) is False
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_upx_thread_policy_off_keeps_openmp_s_default():
    env = {"UPX_THREAD_POLICY": "off"}
    assert apply_thread_policy(env) is False
    assert env == {"UPX_THREAD_POLICY": "off"}


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "UPX_THREAD_POLICY")}
    return {**env, **extra}


def test_importing_upx_core_sets_it_before_torch_loads():
    code = ("import sys, os, upx_core; assert 'torch' not in sys.modules; "
            "import torch; print(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["PASSIVE"]


def test_after_torch_it_is_set_for_children_but_not_in_force():
    code = ("import torch, os; from upx_core.threads import apply_thread_policy; "
            "print(apply_thread_policy(), os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "PASSIVE"]
