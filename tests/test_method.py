"""Tests that fail when the method fails (issue 9, item 6).

The other optimizer tests check the machinery (batching, seeds, shapes, validation). These check
what the method is for, on the real EfficientNet-Lite0 and real sample images:

- end to end, with every default: F-TC raises the top class of the "wool" sample image (the
  model sees a Christmas stocking) by most of what was left to gain, through a small but
  non-empty set of undesirable pixels; and the same bounds fail on a control run in which the
  mask cannot move (the check can fail);
- the defaults the book's chapters and implementation notes rely on are the defaults;
- Table 2's thresholded relative improvement, end to end, against a hand computation;
- each mode's defining property after 200 iterations, against the baseline (Eq. 3) on the same
  input: F-NTC holds the target logit (Eq. 6-7), F-TC the mean non-target logit (Eq. 4-5).

Every bound below was measured on two or three floating-point paths (the numbers beside them);
see the commit messages for the commands. No bound was widened to let a failing run pass.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torchvision.transforms.v2.functional import center_crop

from upx_core import MaskSetting, OptimConfig, load_image, optimize_masks, sample_path
from upx_core.book.chapter import chapter_config
from upx_core.cli import _config, build_parser
from upx_core.evaluation.protocol import run_evaluation
from upx_core.method.config import EXPLAIN_OBJECTIVE
from upx_core.method.equations import blur, perturb, upsample_mask
from upx_core.method.metrics import consistency, relative_improvement, undesirable_pixel_ratio
from upx_core.method.runtime import perturbed_probs

WOOL = 911  # the "wool" sample image; the model's top class for it is the Christmas stocking
CHRISTMAS_STOCKING = 496
ACORN = 988  # the acorn sample image and its top class
THRESHOLD = 0.6  # Table 2
# The control's L1 weight: its pull (lambda2 / 784 per cell) swamps the probability's gradient,
# so M returns to 1 within a few Adam steps and stays there.
CONTROL_LAMBDA2 = 1e4


def run(model, images, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("progress", False)
    return optimize_masks(model, images, **kw)


# --- end to end: the method works where the paper says it does ----------------------------------

def method_failures(before: float, after: float, ratio: float) -> list[str]:
    """What is wrong with a mask that should have raised the stocking; empty if nothing.

    Measured for F-TC with every default on the full 224 x 224 image, trial 0, batched with the
    control (the fixture below): before 0.2485 on every path; after 0.9322 / phi 90.97 / ratio
    0.0216 (AVX2 kernels, one thread), 0.9328 / 91.05 / 0.0226 (ATEN_CPU_CAPABILITY=default, one
    thread), 0.9290 / 90.55 / 0.0228 (AVX2, two threads). The notebooks' 48-image evaluation
    (another batch) has 0.9372 / 91.6 / 0.0227.
    """
    gain = float(relative_improvement(before, after))
    failures = []
    if not after > 0.8:
        failures.append(f"final probability {after:.4f} <= 0.8 (before {before:.4f})")
    if not gain > 70:
        failures.append(f"relative improvement (Eq. 8) {gain:.2f} % <= 70 %")
    # Non-empty: a quarter of the smallest measured share. Small: Table 2's "below 4 %".
    if not ratio > 0.005:
        failures.append(f"undesirable-pixel ratio {ratio:.4f} <= 0.005: (nearly) empty mask")
    if not ratio < 0.04:
        failures.append(f"undesirable-pixel ratio {ratio:.4f} >= 0.04: not a small set")
    return failures


@pytest.fixture(scope="module")
def stocking(model):
    """The method with every default (Adam 200 x lr 0.1, the paper's lambdas and gamma, mean
    reduction, probability objective, seeded start), and in the same batch the control: the same
    setting with a huge lambda2, whose mask cannot leave M = 1. 22-27 s at one thread."""
    x = load_image(sample_path(WOOL))
    settings = [MaskSetting(mode="ftc"), MaskSetting(mode="ftc", lambda2=CONTROL_LAMBDA2)]
    return x, run(model, x, settings=settings)


def _outcome(r, k: int) -> tuple[float, float, float]:
    ratio = undesirable_pixel_ratio(r.masks_upsampled[0, k, 0], THRESHOLD)
    return float(r.target_prob_before[0, k]), float(r.target_prob_after[0, k]), float(ratio)


def test_ftc_with_the_defaults_raises_the_stocking_through_a_few_pixels(model, stocking):
    """Sect. 4.3-4.4: blurring a small set of undesirable pixels raises the top class.

    The earlier tusker test (30 iterations) passed with no gain and an empty mask (final 0.8313
    against 0.8288, issue 9; a peak in the loss history met its other check). This one needs
    the *final* mask to work.
    """
    x, r = stocking
    assert r.config == OptimConfig()  # nothing overridden: the book's defaults
    assert int(r.targets[0, 0]) == CHRISTMAS_STOCKING  # the image's top class, as in Eq. 8
    before, after, ratio = _outcome(r, 0)
    assert before < 0.3  # 0.2485: much left to gain
    assert method_failures(before, after, ratio) == []
    # prob_after is the final mask's probability, not a value from the history: recompute it
    # through the unfolded model (folding changes float32 rounding only, ~1e-6 here)
    with torch.no_grad():
        again = perturbed_probs(model, x[None], r.masks_upsampled[:, 0])[0, CHRISTMAS_STOCKING]
    assert abs(float(again) - after) < 1e-3
    # the counted pixels carry most of the gain: blurring only them (Table 2's pixels, the mask
    # binarized) gives phi 74.0 / 78.4 / 69.7 on the three paths above
    only = (1.0 - r.masks_upsampled[:, 0] <= THRESHOLD).float()
    with torch.no_grad():
        p_only = float(perturbed_probs(model, x[None], only)[0, CHRISTMAS_STOCKING])
    assert float(relative_improvement(before, p_only)) > 50


def test_the_end_to_end_bounds_fail_when_the_method_finds_nothing(stocking):
    """The control: with lambda2 = 1e4 the mask stays at 1, and every bound of the test above
    that asks for a gain or a non-empty mask fails on it. The old test's history-peak check
    still passes on it."""
    _, r = stocking
    before, after, ratio = _outcome(r, 1)
    assert float(r.masks[0, 1].min()) > 0.999  # 0.99994 on all three paths
    assert ratio == 0
    assert abs(float(relative_improvement(before, after))) < 0.01  # 5e-5 .. 2e-4 measured
    failures = method_failures(before, after, ratio)
    assert len(failures) == 3, failures  # probability, Eq. 8, empty mask; not "too large"
    # What the old test accepted as evidence: the history reached 0.4246 on the way (the
    # random start blurs half the image a little), though the final mask did nothing.
    assert float(r.term("prob")[:, 0, 1].max()) > before + 0.02


# --- the defaults the book relies on --------------------------------------------------------------

def test_the_book_readings_are_the_defaults():
    """book/implementation-notes.md, Decisions 1-5 and the model section, read as defaults."""
    c = OptimConfig()
    assert c.reduction == "mean"  # Decision 1: TV and L1 averaged, not summed
    assert c.objective == "prob"  # Decision 2: f_k is the softmax probability
    assert c.init_noise == 0.5  # Decision 3: trial s starts at 1 - 0.5 U(0, 1), seeded
    assert c.ftc_form == "mean"  # Decision 4: Eq. 4's norm of the mean shift, literally
    assert c.fold_batchnorm is True  # "optimize_masks does this on a copy of the model"
    # float32, as every measurement of the book was; a script's numbers do not depend on its CPU
    assert c.amp is None and c.channels_last is False
    # Sect. 4.1 (also checked in test_optimizer): Adam, lr 0.1, 200 iterations, 28 x 28 mask,
    # sigma 5 with an 11 x 11 kernel; lambda1 1.7, lambda2 3.0, beta 2, gamma 0.3; mode F-TC
    assert (c.iterations, c.lr, c.mask_size, c.sigma, c.kernel_size) == (200, 0.1, 28, 5.0, 11)
    s = MaskSetting()
    assert (s.mode, s.seed, s.lambda1, s.lambda2, s.beta, s.gamma, s.target) == (
        "ftc", 0, 1.7, 3.0, 2.0, 0.3, None)
    # Decision 5: Table 2's threshold 0.6, wherever a threshold has a default
    for fn in (undesirable_pixel_ratio, consistency, run_evaluation):
        assert inspect.signature(fn).parameters["threshold"].default == THRESHOLD, fn
    # the command line and the chapters start from the same defaults
    parser = build_parser()
    explain = parser.parse_args(["explain", "sample:tusker", "--out", "o"])
    # for a user's target upx explain uses the log-probability (chapter 7 measures why), and
    # the fastest arithmetic that passed the precision gate where the device has it
    assert _config(explain) == c.replace(objective=EXPLAIN_OBJECTIVE, amp="auto") != c
    assert EXPLAIN_OBJECTIVE == "log_prob"
    assert _config(parser.parse_args(["evaluate", "--out", "o.csv"])) == c
    for argv in (["explain", "sample:tusker", "--out", "o"], ["evaluate", "--out", "o.csv"]):
        args = parser.parse_args(argv)
        assert (args.lambda1, args.lambda2, args.beta, args.gamma) == (1.7, 3.0, 2.0, 0.3)
        assert args.threshold == THRESHOLD
    assert parser.parse_args(["explain", "x", "--out", "o"]).mode == "ftc"
    assert chapter_config(iterations=None, lr=None, init_noise=None, objective=None,
                          gamma=None) == (c, {})


def test_thresholded_relative_improvement_blurs_only_the_counted_pixels(model):
    """Table 2's companion column, end to end: run_evaluation's
    ``relative_improvement_thresholded`` equals Eq. 8 computed by hand with M'' = 1 where
    1 - M' <= 0.6 and 0 elsewhere (Eq. 1 with M''), to the last bit."""
    cfg = OptimConfig(iterations=30)  # enough for some pixels to pass 0.6 (see below)
    rows = run_evaluation(model, [WOOL], modes=("ftc",), seeds=(0,), config=cfg,
                          device="cpu", progress=False)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["threshold"] == THRESHOLD  # the default
    # the same optimizer call as run_evaluation's: the same masks, bit for bit. run_evaluation
    # stacks its images (contiguous); load_image returns a strided view of the decoded HWC
    # array, with which the 30 steps round differently (final 0.9204 against 0.9224, measured).
    x = load_image(sample_path(WOOL)).contiguous()
    r = run(model, x[None], settings=MaskSetting(mode="ftc"), config=cfg, keep_images=False)
    assert float(r.target_prob_after[0, 0]) == row["prob_after"]
    mask_up = upsample_mask(r.masks[0], (224, 224))
    counted = (1.0 - mask_up) > THRESHOLD
    assert float(counted.float().mean()) == row["ratio"]
    # some pixels blurred, most not, so the check has teeth: ratio 0.0219 (AVX2, one thread),
    # 0.0241 (ATEN_CPU_CAPABILITY=default), 0.0221 (AVX2, two threads)
    assert 0 < row["ratio"] < 0.5
    m2 = (~counted).float()
    with torch.no_grad():
        q = perturb(x[None], blur(x[None], cfg.sigma, cfg.kernel_size), m2)
        p = torch.softmax(model(q), dim=1)[0, CHRISTMAS_STOCKING]
    by_hand = float(relative_improvement(r.target_prob_before[0, 0], p))
    assert row["relative_improvement_thresholded"] == by_hand
    # ...and it is not Eq. 8 under M' itself (thresholded 69.53 / 70.62 / 69.19 against
    # 89.67 / 91.22 / 90.09 on the three paths), nor under a mask thresholded on M' instead of
    # 1 - M' (-32.8 on AVX2): the two mix-ups the hand computation rules out
    assert by_hand != pytest.approx(row["relative_improvement"], abs=1.0)
    with torch.no_grad():
        wrong = perturbed_probs(model, x[None], (mask_up <= THRESHOLD).float())
    assert by_hand != pytest.approx(
        float(relative_improvement(r.target_prob_before[0, 0], wrong[0, CHRISTMAS_STOCKING])),
        abs=1.0)


# --- each mode's defining property, converged, against the baseline ----------------------------

@pytest.fixture(scope="module")
def acorn_modes(model):
    """Baseline (Eq. 3), F-TC (Eq. 5) and F-NTC (Eq. 7), trial 0, every other default, on an
    80 x 80 center crop of the acorn image (to keep it cheap); and the logits of the clean crop
    and of each final Q. 15-16 s at one thread (AVX2), 26 s on the scalar kernels."""
    x = center_crop(load_image(sample_path(ACORN)), [80, 80]).contiguous()
    settings = [MaskSetting(mode=m) for m in ("baseline", "ftc", "fntc")]
    r = run(model, x, settings=settings)
    assert r.config.iterations == 200 and r.targets[0].tolist() == [ACORN] * 3
    with torch.no_grad():
        clean = model(x[None])[0]
        after = model(r.perturbed[0])
    shift = after - clean  # [mode, class]
    other = torch.ones(shift.shape[1], dtype=torch.bool)
    other[ACORN] = False
    gain = relative_improvement(r.target_prob_before[0], r.target_prob_after[0])
    return {
        mode: {"dy_k": float(shift[k, ACORN]), "mean_other": float(shift[k, other].mean()),
               "phi": float(gain[k])}
        for k, mode in enumerate(("baseline", "ftc", "fntc"))
    }


def test_fntc_holds_the_target_logit_that_the_baseline_raises(acorn_modes):
    """Eq. 6-7: R_F-NTC = gamma |y_k(Q) - y_k(X)|. Measured (baseline / F-NTC dy_k, F-NTC phi):
    AVX2 one thread 2.441 / -0.417, 65.8; ATEN_CPU_CAPABILITY=default 2.441 / +0.470, 82.6;
    AVX2 two threads 2.414 / +0.329, 80.3. (The sign of F-NTC's small shift differs between
    the paths; its size stays below a fifth of the baseline's.)"""
    base, fntc = acorn_modes["baseline"], acorn_modes["fntc"]
    assert base["dy_k"] > 1.5  # without the regularizer the gain goes through y_k
    assert abs(fntc["dy_k"]) < 0.3 * base["dy_k"]  # measured 0.17x, 0.19x, 0.14x
    assert fntc["phi"] > 30  # ...while F-NTC still raised the target: the mask did move


def test_ftc_holds_the_mean_non_target_logit_that_the_baseline_lowers(acorn_modes):
    """Eq. 4-5: R_F-TC = gamma |mean_{i != k} (y_i(Q) - y_i(X))|. Measured (baseline / F-TC mean
    shift, F-TC dy_k and phi): AVX2 one thread -0.01078 / -0.00162, 2.168, 91.7;
    ATEN_CPU_CAPABILITY=default -0.01095 / -0.00220, 2.206, 91.9; AVX2 two threads
    -0.01066 / -0.00226, 2.223, 91.9.

    On this crop the baseline lowers the non-target logits on average. On the other 80 x 80
    crops measured (images 101, 366, 386, 722, 911) the baseline's mean shift was at most 0.006
    in size, and F-TC's was not always smaller (366: 0.00036 against 0.00021; 722: 0.0053
    against 0.0056): where the baseline leaves the mean in place, F-TC cannot be told from it."""
    base, ftc = acorn_modes["baseline"], acorn_modes["ftc"]
    assert base["mean_other"] < -0.005  # something for the regularizer to hold
    assert abs(ftc["mean_other"]) < 0.5 * abs(base["mean_other"])  # 0.15x, 0.20x, 0.21x
    # F-TC raises the target through its own logit instead, as much as the baseline does
    assert ftc["dy_k"] > 1.5 and ftc["phi"] > 75
