"""The OpenMP spin setting: set before torch loads, the user's own value kept, off on request."""

from __future__ import annotations

import os
import subprocess
import sys

from upx_core.threads import THREAD_POLICY, apply_thread_policy


def test_the_policy_fills_what_the_user_left_unset():
    env: dict[str, str] = {}
    assert apply_thread_policy(env) is True
    assert env == {"GOMP_SPINCOUNT": "10000"} == THREAD_POLICY


def test_a_value_the_user_set_wins_and_is_reported_as_not_upx_s():
    env = {"GOMP_SPINCOUNT": "300000"}
    assert apply_thread_policy(env) is False
    assert env == {"GOMP_SPINCOUNT": "300000"}
    # a wait policy of the user's decides how libgomp waits: nothing is added to it
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    assert apply_thread_policy(env) is False
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_upx_thread_policy_off_keeps_openmp_s_default():
    env = {"UPX_THREAD_POLICY": "off"}
    assert apply_thread_policy(env) is False
    assert env == {"UPX_THREAD_POLICY": "off"}


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "UPX_THREAD_POLICY")}
    return {**env, **extra}


def test_importing_upx_core_sets_it_before_torch_loads():
    code = ("import sys, os, upx_core; assert 'torch' not in sys.modules; "
            "import torch; print(os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["10000"]


def test_after_torch_it_is_set_for_children_but_not_in_force():
    code = ("import torch, os; from upx_core.threads import apply_thread_policy; "
            "print(apply_thread_policy(), os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "10000"]
