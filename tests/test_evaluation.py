"""The Table 1/2 protocol: image selection, rows, Eq. 8, resume, atomic CSV, random baseline.

Most checks use a tiny convolutional classifier on 64 x 64 crops (fast on two busy cores); the
protocol's own check runs EfficientNet-Lite0 with its shipped weights on 2 images x {F-TC,
F-NTC} for 3 iterations.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from upx_core import OptimConfig, load_image, load_model, sample_path
from upx_core.data import sample_filenames
from upx_core.evaluation import protocol as ev
from upx_core.evaluation import provenance
from upx_core.evaluation.protocol import (
    COLUMNS,
    random_mask_like,
    run_evaluation,
    select_images,
)
from upx_core.evaluation.tables import summary_table
from upx_core.method.models import Classifier

DATA = Path(os.environ.get("UPX_DATA_DIR", Path(__file__).resolve().parents[2] / "shared"
                           / "imagenet-samples"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="no sample images (UPX_DATA_DIR)")
pytestmark = needs_data

TINY = OptimConfig(iterations=3)


def tiny_model() -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 1000))
    return Classifier(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_size=64,
                      resize_size=72, name="tiny")


class CountingModel:
    """Counts forward calls of a module through a hook."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- select_images ---------------------------------------------------------------------------

def test_select_images_is_seeded_sorted_and_distinct():
    a = select_images(50, seed=3)
    assert a == select_images(50, seed=3)
    assert a == sorted(a) and len(set(a)) == 50 and all(0 <= i < 1000 for i in a)
    assert a != select_images(50, seed=4)
    assert select_images(1000) == list(range(1000))
    assert select_images(0) == []
    assert select_images(5, total=5) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot select"):
        select_images(1001)
    with pytest.raises(ValueError):
        select_images(-1)


# --- the protocol on the real model ----------------------------------------------------------

@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory):
    model = load_model("efficientnet_lite0")
    out = tmp_path_factory.mktemp("lite0") / "eval.csv"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on busy shared cores two threads can be many times slower
    try:
        df = run_evaluation(model, [101, 1], modes=("ftc", "fntc"), config=TINY, out_csv=out,
                            device="cpu", progress=False, batch_images=2)
    finally:
        torch.set_num_threads(threads)
    return model, out, df


def test_rows_columns_targets_and_eq8(lite0_run):
    model, out, df = lite0_run
    assert list(df.columns) == COLUMNS
    assert len(df) == 4
    assert list(zip(df.image_index, df["mode"], df.seed, strict=True)) == [
        (1, "ftc", 0), (1, "fntc", 0), (101, "ftc", 0), (101, "fntc", 0)]
    assert (df.file == [sample_filenames()[i] for i in df.image_index]).all()
    assert (df.model == "efficientnet_lite0").all() and (df.iterations == 3).all()
    # The target is h of Eq. 8: the clean image's top class, with its probability before.
    for i in (1, 101):
        with torch.no_grad():
            p = torch.softmax(model(load_image(sample_path(i)).unsqueeze(0)), dim=1)[0]
        rows = df[df.image_index == i]
        assert (rows.target == int(p.argmax())).all()
        assert (rows.target_name == model.categories[int(p.argmax())]).all()
        assert rows.prob_before.to_numpy() == pytest.approx(float(p.max()), abs=1e-5)
    # relative_improvement is Eq. 8 of the row's own probabilities.
    eq8 = (df.prob_after - df.prob_before) / (1 - df.prob_before) * 100
    assert df.relative_improvement.to_numpy() == pytest.approx(eq8.to_numpy(), rel=1e-9)
    assert df.ratio.between(0, 1).all()
    # The CSV holds the same rows, numbers exactly (repr round trip).
    disk = pd.read_csv(out)
    pd.testing.assert_frame_equal(disk[["prob_before", "prob_after", "ratio"]],
                                  df[["prob_before", "prob_after", "ratio"]])


def test_resume_on_a_complete_csv_never_calls_the_model(lite0_run, capsys):
    model, out, df = lite0_run
    mtime = out.stat().st_mtime_ns
    counter = CountingModel(model)
    try:
        again = run_evaluation(model, [1, 101], modes=("ftc", "fntc"), config=TINY,
                               out_csv=out, device="cpu", progress=True)
    finally:
        counter.handle.remove()
    assert counter.calls == 0
    assert out.stat().st_mtime_ns == mtime
    assert "0 of 4 rows (0 images) to do" in capsys.readouterr().err
    pd.testing.assert_frame_equal(again, pd.read_csv(out, keep_default_na=False))


def test_penalties_reach_the_masks_and_guard_the_csv(model, tmp_path):
    # EfficientNet-Lite0, the tusker image, F-TC, 3 iterations; only lambda2 (L1) differs.
    kw = dict(modes=("ftc",), config=TINY, threshold=0.3, device="cpu", progress=False)
    paper = run_evaluation(model, [101], out_csv=tmp_path / "paper.csv", **kw)
    no_l1 = run_evaluation(model, [101], penalties={"lambda2": 0.0},
                           out_csv=tmp_path / "no_l1.csv", **kw)
    assert paper.lambda2.tolist() == [3.0] and no_l1.lambda2.tolist() == [0.0]
    for df in (paper, no_l1):
        assert (df.lambda1.tolist(), df.beta.tolist(), df.gamma.tolist()) == ([1.7], [2.0], [0.3])
    assert no_l1.prob_before[0] == paper.prob_before[0]
    # Without the L1 pull towards M = 1 the mask blurs more (0.20 of the pixels past 1 - M' >
    # 0.3 against 0.007 when measured) and raises the target more (0.911 against 0.886).
    assert no_l1.ratio[0] > paper.ratio[0] + 0.05
    assert no_l1.prob_after[0] > paper.prob_after[0]
    assert pd.read_csv(tmp_path / "no_l1.csv").lambda2.tolist() == [0.0]
    # A CSV written with other penalties is not resumed.
    with pytest.raises(ValueError, match="lambda2=3.0, this run has lambda2=0.0"):
        run_evaluation(model, [101], penalties={"lambda2": 0.0}, out_csv=tmp_path / "paper.csv",
                       **kw)
    with pytest.raises(ValueError, match="unknown penalties"):
        run_evaluation(model, [101], penalties={"lambda3": 1.0}, **kw)
    with pytest.raises(ValueError, match="beta"):
        run_evaluation(model, [101], penalties={"beta": 0.5}, **kw)


# --- resume, atomic writes, errors (tiny model) ----------------------------------------------

def test_resume_computes_only_the_missing_rows(tmp_path, monkeypatch):
    model, out = tiny_model(), tmp_path / "e.csv"
    first = run_evaluation(model, [3], config=TINY, out_csv=out, device="cpu", progress=False)
    calls = []
    real = ev.optimize_masks

    def spy(model, images, **kw):
        calls.append((images.shape[0], [(s.mode, s.seed) for s in kw["settings"]]))
        return real(model, images, **kw)

    monkeypatch.setattr(ev, "optimize_masks", spy)
    df = run_evaluation(model, [3, 7], config=TINY, out_csv=out, device="cpu", progress=False,
                        seeds=(0, 1))
    # image 3 has (ftc, 0) and (fntc, 0) already: only seed 1 is run for it, in a batch of
    # its own; image 7 needs all four.
    assert len(df) == 8 and len(pd.read_csv(out)) == 8
    assert not df.duplicated(subset=["image_index", "mode", "seed"]).any()
    assert calls == [(1, [("ftc", 1), ("fntc", 1)]),
                     (1, [("ftc", 0), ("ftc", 1), ("fntc", 0), ("fntc", 1)])]
    old = df[(df.image_index == 3) & (df.seed == 0)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, first, check_dtype=False)


def test_resume_false_starts_afresh(tmp_path):
    model, out = tiny_model(), tmp_path / "e.csv"
    run_evaluation(model, [3, 4], config=TINY, out_csv=out, device="cpu", progress=False)
    run_evaluation(model, [5], config=TINY, out_csv=out, device="cpu", progress=False,
                   resume=False)
    assert sorted(pd.read_csv(out).image_index.unique()) == [5]


def test_resume_refuses_another_config(tmp_path):
    model, out = tiny_model(), tmp_path / "e.csv"
    run_evaluation(model, [3], config=TINY, out_csv=out, device="cpu", progress=False)
    with pytest.raises(ValueError, match="iterations"):
        run_evaluation(model, [3], config=OptimConfig(iterations=4), out_csv=out,
                       device="cpu", progress=False)
    with pytest.raises(ValueError, match="threshold"):
        run_evaluation(model, [3], config=TINY, out_csv=out, device="cpu", progress=False,
                       threshold=0.5)


def test_amp_auto_rows_record_what_it_chose_and_do_not_mix_with_the_other(tmp_path):
    """``amp="auto"`` rows say ``bf16`` (channels-last) where the CPU computes bfloat16
    natively and ``fp32`` elsewhere; a float32 run does not resume bfloat16 rows."""
    from upx_core.method.runtime import bf16_supported

    model, out = tiny_model(), tmp_path / "e.csv"
    native = bf16_supported(torch.device("cpu"))
    df = run_evaluation(model, [3], config=TINY.replace(amp="auto"), out_csv=out,
                        device="cpu", progress=False)
    assert set(df.precision) == {"bf16" if native else "fp32"}
    assert set(df.channels_last) == {native}
    if native:
        with pytest.raises(ValueError, match="precision"):
            run_evaluation(model, [3], config=TINY, out_csv=out, device="cpu", progress=False)
    else:  # the same float32 rows: nothing to compute again
        assert len(run_evaluation(model, [3], config=TINY, out_csv=out, device="cpu",
                                  progress=False)) == len(df)


def test_a_crash_in_batch_two_leaves_batch_one_whole(tmp_path):
    # A data folder whose third image (the second batch) is a truncated JPEG.
    data = tmp_path / "data"
    data.mkdir()
    names = sample_filenames()
    for i in (10, 11, 12):
        shutil.copy(DATA / names[i], data / names[i])
    (data / names[12]).write_bytes((DATA / names[12]).read_bytes()[:300])
    out = tmp_path / "out" / "e.csv"
    with pytest.raises(ValueError, match="cannot decode|not an image"):
        run_evaluation(tiny_model(), [10, 11, 12], config=TINY, out_csv=out, device="cpu",
                       progress=False, batch_images=2, data_root=data)
    df = pd.read_csv(out)
    assert sorted(set(df.image_index)) == [10, 11] and len(df) == 4
    assert _files(out.parent) == ["e.csv"]  # no temporary file left behind


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "e.csv"
    model = tiny_model()
    run_evaluation(model, [10], config=TINY, out_csv=out, device="cpu", progress=False)
    before = out.read_bytes()
    real = pd.DataFrame.to_csv

    def half_then_fail(self, fh, **kw):
        real(self.iloc[:1], fh, **kw)  # part of the new file reaches the disk ...
        raise OSError("disk full")  # ... and then the write fails

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        run_evaluation(model, [10, 11], config=TINY, out_csv=out, device="cpu",
                       progress=False)
    assert out.read_bytes() == before
    assert _files(tmp_path) == ["e.csv"]


def test_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="needs 'ftc'"):
        run_evaluation(model, [1], modes=("fntc", "random"), progress=False)
    with pytest.raises(ValueError, match="unknown mode"):
        run_evaluation(model, [1], modes=("ftc", "nope"), progress=False)
    with pytest.raises(ValueError, match="out of range"):
        run_evaluation(model, [1, 1000], progress=False)
    with pytest.raises(ValueError, match="duplicates"):
        run_evaluation(model, [1, 1], progress=False)
    with pytest.raises(ValueError, match="batch_images"):
        run_evaluation(model, [1], batch_images=0, progress=False)


# --- the random baseline ---------------------------------------------------------------------

def test_random_mask_keeps_the_histogram():
    up = torch.rand(1, 64, 64) ** 3
    r = random_mask_like(up, torch.Generator().manual_seed(0), 28)
    assert r.shape == up.shape
    assert torch.equal(r.flatten().sort().values, up.flatten().sort().values)
    assert not torch.equal(r, up)
    again = random_mask_like(up, torch.Generator().manual_seed(0), 28)
    assert torch.equal(r, again)


def test_random_rows_match_the_ftc_area(tmp_path):
    # A start M0 in [0, 1] and small steps, so that the F-TC masks have pixels above 0.3.
    cfg = OptimConfig(iterations=2, init_noise=1.0, lr=0.01)
    kw = dict(modes=("ftc", "random"), seeds=(0, 1), config=cfg, threshold=0.3, device="cpu",
              progress=False)
    df = run_evaluation(tiny_model(), [20, 21, 22], batch_images=2, **kw)
    assert len(df) == 12
    ftc = df[df["mode"] == "ftc"].reset_index(drop=True)
    rnd = df[df["mode"] == "random"].reset_index(drop=True)
    assert (ftc.ratio > 0).all()
    # Tolerance: one coarse cell, (64/28)^2 pixels of the 64 x 64 image; the rank matching of
    # random_mask_like makes the two counts exactly equal, so this never needs its slack.
    cell = (64 / 28) ** 2 / (64 * 64)
    assert (rnd.ratio - ftc.ratio).abs().max() <= cell
    assert (rnd.ratio == ftc.ratio).all()
    assert (rnd.target == ftc.target).all() and (rnd.prob_before == ftc.prob_before).all()
    assert (rnd.prob_after != ftc.prob_after).all()
    eq8 = (rnd.prob_after - rnd.prob_before) / (1 - rnd.prob_before) * 100
    assert rnd.relative_improvement.to_numpy() == pytest.approx(eq8.to_numpy(), rel=1e-9)
    # The same numbers whatever the batch layout (seeded per image and trial).
    df1 = run_evaluation(tiny_model(), [20, 21, 22], batch_images=3, **kw)
    cols = ["prob_after", "ratio"]
    pd.testing.assert_frame_equal(df1[cols], df[cols], atol=1e-5, rtol=0)


# --- summary ---------------------------------------------------------------------------------

def test_summary_table_layout():
    df = pd.DataFrame({
        "model": ["m"] * 4 + ["n"] * 2,
        "mode": ["ftc", "fntc", "ftc", "fntc", "ftc", "fntc"],
        "image_index": [1, 1, 2, 2, 1, 1],
        "relative_improvement": [10.0, 20.0, 30.0, 40.0, 1.0, 2.0],
        "ratio": [0.01, 0.02, 0.03, 0.04, 0.1, 0.2],
        "relative_improvement_thresholded": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    })
    t = summary_table(df)
    assert list(t.index) == ["m", "n"]
    assert list(t.columns) == [("phi", "ftc"), ("phi", "fntc"), ("ratio_fraction", "ftc"),
                               ("ratio_fraction", "fntc"), ("phi_thresholded", "ftc"),
                               ("phi_thresholded", "fntc"), ("n", "ftc"), ("n", "fntc")]
    assert t.loc["m", ("phi_thresholded", "fntc")] == 3.0
    assert t.loc["m", ("phi", "ftc")] == 20.0 and t.loc["m", ("phi", "fntc")] == 30.0
    assert t.loc["m", ("ratio_fraction", "fntc")] == pytest.approx(0.03)  # as result.json
    assert t.loc["m", ("n", "ftc")] == 2 and t.loc["n", ("n", "fntc")] == 1


def test_single_process_run_folds_in_parts_of_a_stopped_torchrun(tmp_path):
    out, model = tmp_path / "e.csv", tiny_model()
    run_evaluation(model, [30, 31], config=TINY, out_csv=out, device="cpu", progress=False)
    full = pd.read_csv(out, keep_default_na=False)
    # as if rank 1 of a stopped run had written image 31 and the merge never happened
    full[full.image_index == 31].to_csv(ev.part_path(out, 1), index=False)
    full[full.image_index == 30].to_csv(out, index=False)
    counter = CountingModel(model)
    df = run_evaluation(model, [30, 31], config=TINY, out_csv=out, device="cpu",
                        progress=False)
    counter.handle.remove()
    assert counter.calls == 0
    assert _files(tmp_path) == ["e.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(out, keep_default_na=False), full)
    assert len(df) == 4


def test_thresholded_mask_blurs_only_the_counted_pixels():
    mask_up = torch.tensor([[[[1.0, 0.5], [0.39, 0.4]]]])  # 1 - M' = 0, .5, .61, .6
    assert torch.equal(ev.thresholded(mask_up, 0.6), torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]]))


def test_two_runs_writing_one_csv_at_once_keep_both_runs_rows(tmp_path):
    # `upx evaluate --modes ftc` and `--modes fntc` on the same CSV, started together: each
    # reads the (empty) file before the other writes, so a plain rewrite kept only the last
    # writer's rows. Every write now merges with the file under a lock.
    out = tmp_path / "both.csv"
    common = [sys.executable, "-m", "upx_core.cli", "evaluate", "--indices", "3", "4",
              "--batch-images", "1", "--iterations", "2", "--device", "cpu", "--no-progress",
              "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*common, "--modes", mode], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for mode in ("ftc", "fntc")]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    df = pd.read_csv(out)
    assert sorted(zip(df["image_index"], df["mode"], strict=True)) == [
        (3, "fntc"), (3, "ftc"), (4, "fntc"), (4, "ftc")]
    assert not df.duplicated(["image_index", "mode", "seed"]).any()


# --- segments: a resumed run records which code computed each row ----------------------------

OTHER = "sha256:000000000000"  # an optimizer version this code never has


def _here() -> dict:
    return {"git_commit": provenance.git_commit() or "unknown",
            "optimizer_version": provenance.optimizer_version()}


def _segments(df: pd.DataFrame) -> dict:
    return {(i, m): (c, v) for i, m, c, v in zip(df.image_index, df["mode"], df.git_commit,
                                                   df.optimizer_version, strict=True)}


def test_a_resumed_run_records_each_segments_commit(tmp_path):
    model, out = tiny_model(), tmp_path / "e.csv"
    first = run_evaluation(model, [3], config=TINY, out_csv=out, device="cpu", progress=False)
    here = _here()
    assert _segments(first) == {(3, m): tuple(here.values()) for m in ("ftc", "fntc")}
    # as if the first segment had run at another commit whose mask modules were the same
    disk = pd.read_csv(out, keep_default_na=False)
    disk["git_commit"] = "0123abc"
    disk.to_csv(out, index=False)
    df = run_evaluation(model, [3, 7], config=TINY, out_csv=out, device="cpu", progress=False)
    want = {(3, "ftc"): ("0123abc", here["optimizer_version"]),
            (3, "fntc"): ("0123abc", here["optimizer_version"]),
            (7, "ftc"): tuple(here.values()), (7, "fntc"): tuple(here.values())}
    assert _segments(df) == want
    assert _segments(pd.read_csv(out, keep_default_na=False)) == want


def test_resume_refuses_rows_of_another_optimizer_version_unless_forced(tmp_path):
    model, out = tiny_model(), tmp_path / "e.csv"
    run_evaluation(model, [3], config=TINY, out_csv=out, device="cpu", progress=False)
    disk = pd.read_csv(out, keep_default_na=False)
    disk["optimizer_version"] = OTHER
    disk.to_csv(out, index=False)
    before = out.read_bytes()
    kw = dict(config=TINY, out_csv=out, device="cpu", progress=False)
    with pytest.raises(ValueError) as err:
        run_evaluation(model, [3, 7], **kw)
    msg = str(err.value)
    here = _here()
    assert "\n" not in msg
    assert f"optimizer version {OTHER}, this run is optimizer version " \
           f"{here['optimizer_version']}" in msg and "--force-resume" in msg
    assert out.read_bytes() == before
    # a part left by a stopped torchrun is checked too
    part = ev.part_path(out, 1)
    disk.assign(image_index=8).to_csv(part, index=False)
    disk["optimizer_version"] = here["optimizer_version"]
    disk.to_csv(out, index=False)
    with pytest.raises(ValueError, match=f"{part.name} holds rows of optimizer version {OTHER}"):
        run_evaluation(model, [3, 7], **kw)
    part.unlink()
    disk["optimizer_version"] = OTHER
    disk.to_csv(out, index=False)
    # forced: image 3's rows are kept as they are, with their own version; 7 is computed
    counter = CountingModel(model)
    try:
        df = run_evaluation(model, [3, 7], force_resume=True, **kw)
    finally:
        counter.handle.remove()
    assert counter.calls > 0
    want = {(3, "ftc"): (here["git_commit"], OTHER), (3, "fntc"): (here["git_commit"], OTHER),
            (7, "ftc"): tuple(here.values()), (7, "fntc"): tuple(here.values())}
    assert _segments(df) == want
    stored = pd.read_csv(out, keep_default_na=False)
    assert _segments(stored) == want
    pd.testing.assert_frame_equal(stored[stored.image_index == 3].reset_index(drop=True), disk)


def test_resume_refuses_a_csv_written_before_versions_were_recorded(tmp_path):
    model, out = tiny_model(), tmp_path / "e.csv"
    run_evaluation(model, [3], config=TINY, out_csv=out, device="cpu", progress=False)
    old = pd.read_csv(out, keep_default_na=False).drop(columns=["git_commit",
                                                                "optimizer_version"])
    old.to_csv(out, index=False)
    before = out.read_bytes()
    kw = dict(config=TINY, out_csv=out, device="cpu", progress=False)
    with pytest.raises(ValueError, match="holds rows of optimizer version unknown, this run"):
        run_evaluation(model, [3, 7], **kw)
    assert out.read_bytes() == before
    df = run_evaluation(model, [3, 7], force_resume=True, **kw)
    here = _here()
    assert _segments(df) == {(3, "ftc"): ("unknown", "unknown"),
                             (3, "fntc"): ("unknown", "unknown"),
                             (7, "ftc"): tuple(here.values()),
                             (7, "fntc"): tuple(here.values())}
    assert list(pd.read_csv(out).columns) == COLUMNS
