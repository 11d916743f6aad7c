"""The ``upx`` command end to end on a real sample image, and its handling of bad input."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from upx_core.cli import build_parser, main
from upx_core.data import sample_path
from upx_core.evaluation.protocol import EVAL_MODES
from upx_core.method.config import AMP_FLAGS, FTC_FORMS, MODES, OBJECTIVES, REDUCTIONS
from upx_core.method.models import MODEL_NAMES

FAST = ["--iterations", "4", "--no-progress"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "upx_core.cli", *args],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )


def test_explain_tusker_three_seeds(tmp_path: Path) -> None:
    out = tmp_path / "tusker"
    proc = run_cli("explain", "sample:tusker", "--target", "African elephant",
                   "--seeds", "0", "1", "2", "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    # plain words first, the paper's symbols after them
    lines = {line[:12].strip(): line[13:] for line in proc.stdout.splitlines()}
    assert lines["looked for"].startswith("pixels that hinder the target itself")
    assert lines["gain"].endswith("% relative improvement of p(target), mean over trials "
                                  "(phi, Eq. 8)")
    assert " of the pixels, blurred by more than 0.6 (ratio, Table 2" in lines["undesirable"]
    assert lines["trials agree"].startswith("Pearson ")
    assert sorted(p.name for p in out.iterdir()) == [
        ".upx-output", "README.txt", "explanation.png", "heatmap.png", "mask.npy",
        "perturbed.png", "result.json"]
    readme = (out / "README.txt").read_text()
    assert "[trials, 28, 28]" in readme and "1 keeps a pixel" in readme and "224 x 224" in readme
    summary = json.loads((out / "result.json").read_text())
    # one convention, the unit in the key: a fraction as upx evaluate's table, phi in percent
    ratio = summary["ratio_fraction_mean"]
    assert 0 <= ratio <= 1 and f"{ratio:.4f} of the pixels" in lines["undesirable"]
    assert f"{summary['relative_improvement_percent_mean']:+.2f} %" in lines["gain"]
    assert "ratio" not in summary and "phi" not in summary
    assert summary["upx_version"] == __import__("importlib.metadata").metadata.version("upx")
    assert summary["git_commit"] and "1 keeps a pixel" in summary["mask_npy"]
    assert summary["target"] == 386 and summary["target_name"] == "African elephant"
    assert len(summary["prob_after"]) == 3 and 0 < summary["prob_before"] < 1
    assert summary["consistency"]["pearson"] <= 1.0
    assert summary["config"]["iterations"] == 4
    # --amp auto (the default) records what it chose: bfloat16 with channels-last where this
    # CPU computes bfloat16 natively, float32 elsewhere, and says so
    import torch

    from upx_core.method.runtime import bf16_supported

    native = bf16_supported(torch.device("cpu"))
    assert (summary["config"]["amp"], summary["config"]["channels_last"]) == (
        ("bf16", True) if native else (None, False))
    assert lines["arithmetic"].startswith("bfloat16 classifier, channels-last" if native
                                          else "float32 (--amp)")
    masks = np.load(out / "mask.npy")
    assert masks.shape == (3, 28, 28) and masks.min() >= 0 and masks.max() <= 1
    with Image.open(out / "perturbed.png") as img:
        assert img.size == (224, 224)  # the perturbed image itself, pixel for pixel
    with Image.open(out / "heatmap.png") as img:
        # a picture with a title, a caption and the colour bar: wider than the image it shows
        assert img.size[0] > 224 + 60 and img.size[1] > 224
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_explain_refuses_existing_folder_and_force_replaces(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    # --force replaces only a folder that upx wrote: make this one by a run
    assert main(["explain", "sample:101", "--out", str(out), "--iterations", "2",
                 "--no-progress"]) == 0
    (out / "keep.txt").write_text("mine")
    assert main(["explain", "sample:101", "--out", str(out), *FAST]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    # a file the user added is never deleted: --force refuses while it is there
    assert main(["explain", "sample:101", "--out", str(out), "--force", *FAST]) == 2
    assert "would delete keep.txt" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert main(["explain", "sample:101", "--out", str(out), "--force", *FAST]) == 0
    assert (out / "result.json").exists()


def test_two_empty_masks_have_no_iou(tmp_path: Path) -> None:
    # no pixel can be blurred by more than 1: every trial's region is empty
    out = tmp_path / "empty"
    assert main(["explain", "sample:tusker", "--seeds", "0", "1", "--threshold", "1",
                 "--out", str(out), "--iterations", "2", "--no-progress"]) == 0
    summary = json.loads((out / "result.json").read_text())
    assert summary["ratio_fraction"] == [0.0, 0.0]
    assert summary["consistency"]["iou"] is None  # the summary's "n/a", not a perfect 1.0


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.JPEG"
    data = sample_path("African elephant").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (10, 10), "red").save(tiny)
    img = "sample:tusker"
    return {
        "missing file": ([str(tmp_path / "nope.jpg")], "not found"),
        "non-image": ([str(text)], "not an image"),
        "truncated": ([str(truncated)], "cannot decode"),
        "smaller than mask": ([str(tiny)], "smaller than the 28x28 mask"),
        "unknown class": ([img, "--target", "african elefant"], "African elephant"),
        "index out of range": ([img, "--target", "1000"], "out of range"),
        "even kernel": ([img, "--kernel-size", "4"], "kernel_size"),
        "zero kernel": ([img, "--kernel-size", "0"], "kernel_size"),
        "sigma": ([img, "--sigma", "0"], "sigma"),
        "iterations": ([img, "--iterations", "0"], "iterations"),
        "negative lambda": ([img, "--lambda1", "-1"], "lambda1"),
        "nan lambda": ([img, "--lambda2", "nan"], "lambda2"),
        "nan gamma": ([img, "--gamma", "nan"], "gamma"),
        "folder as image": ([str(tmp_path)], "is a folder, not an image file"),
        "duplicate seeds": ([img, "--seeds", "0", "1", "0"], "--seeds repeats 0"),
        "huge seed": ([img, "--seeds", str(2**70)], "seed must be an integer in 0..2**64 - 1"),
        "negative target": ([img, "--target", "-1"], "class index -1 is out of range 0..999"),
        "float target": ([img, "--target", "386.0"], "'386.0' is not an integer"),
        "empty target": ([img, "--target", ""], "target is empty"),
        "misspelt target": ([img, "--target", "elefant"],
                            "closest: 'Indian elephant', 'African elephant'"),
        "unknown model": ([img, "--model", "vgg16"], "unknown model 'vgg16'"),
        # the query-only flags would be ignored by a white-box run: refused, not dropped
        "queries without a black box": ([img, "--queries", "100"],
                                        "--queries applies only to a query-only run"),
        "estimator without a black box": ([img, "--estimator", "antithetic"],
                                          "--estimator applies only to a query-only run"),
        "onnx flags without a black box": (
            [img, "--outputs", "probs", "--input-size", "224"],
            "--input-size --outputs describe your own model file: add --onnx or --model-file"),
        "mean for a built-in model": ([img, "--black-box", "--mean", "0.5", "0.5", "0.5"],
                                      "--mean describes your own model file"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs(Path("/tmp")).keys()))
def test_bad_input_is_one_line_error(tmp_path: Path, capsys, case: str) -> None:
    args, expected = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    code = main(["explain", *args, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("upx: error: ") and "\n" not in err and expected in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_clear(tmp_path: Path) -> None:
    proc = run_cli("explain", "sample:tusker", "--device", "cuda", "--out",
                   str(tmp_path / "o"), *FAST)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("upx: error: device 'cuda' requested but no CUDA GPU is "
                                   "available")
    assert "Traceback" not in proc.stderr


def test_the_plan_is_checked_once_into_plain_values(tmp_path: Path) -> None:
    from upx_core.cli import _config
    from upx_core.cli_plan import DEFAULT_QUERIES, plan_explain
    from upx_core.files import OutputDir

    args = build_parser().parse_args([
        "explain", "sample:tusker", "--target", "African elephant", "--seeds", "0", "2",
        "--black-box", "--out", str(tmp_path / "o")])
    said: list[str] = []
    plan = plan_explain(args, _config(args), announce=said.append)
    assert said == ["loading efficientnet_lite0 ..."]
    assert plan.target == 386 and plan.seeds == (0, 2)  # a name resolved once, to its index
    assert [(s.mode, s.seed) for s in plan.settings] == [("ftc", 0), ("ftc", 2)]
    assert plan.query_only and plan.queries == DEFAULT_QUERIES
    assert plan.image == sample_path("tusker") and plan.picture.size[0] > 0
    assert plan.out == OutputDir(tmp_path / "o", False, (plan.image,))
    assert not (tmp_path / "o").exists()


def test_a_bug_keeps_its_traceback_and_upx_errors_stay_one_line(tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    import upx_core.cli_models
    from upx_core.errors import SetupError

    def failing(error):
        def model_and_run(plan):
            raise error
        return model_and_run

    argv = ["explain", "sample:tusker", "--out", str(tmp_path / "out"), *FAST]
    # a RuntimeError of torch's own is a bug: not dressed as bad input
    monkeypatch.setattr(upx_core.cli_models, "model_and_run", failing(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(argv)
    monkeypatch.setattr(upx_core.cli_models, "model_and_run",
                        failing(SetupError("needs a package: pip install it")))
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == "upx: error: needs a package: pip install it"
    assert not (tmp_path / "out").exists()


def test_evaluate_penalty_flags_reach_the_masks(tmp_path: Path, capsys) -> None:
    # EfficientNet-Lite0 on one image, F-TC, 3 iterations: only --lambda2 differs.
    common = ["evaluate", "--n", "1", "--select-seed", "3", "--modes", "ftc", "--iterations",
              "3", "--threshold", "0.3", "--device", "cpu", "--no-progress"]
    paper, no_l1 = tmp_path / "paper.csv", tmp_path / "no_l1.csv"
    assert main([*common, "--out", str(paper)]) == 0
    assert main([*common, "--lambda2", "0", "--out", str(no_l1)]) == 0
    a, b = pd.read_csv(paper), pd.read_csv(no_l1)
    assert a.lambda2.tolist() == [3.0] and b.lambda2.tolist() == [0.0]
    assert a.image_index.tolist() == b.image_index.tolist()
    assert b.prob_after[0] != a.prob_after[0] and b.ratio[0] > a.ratio[0]
    capsys.readouterr()
    # resuming the paper run with another lambda2 is refused in one line, the file untouched
    before = paper.read_bytes()
    assert main([*common, "--lambda2", "0", "--out", str(paper)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("upx: error: ") and "lambda2" in err and "\n" not in err
    # in the command's words: its flags, not the Python API's parameters
    assert "--no-resume" in err and "--out" in err, err
    assert "resume=False" not in err and "out_csv" not in err, err
    assert paper.read_bytes() == before
    missing = tmp_path / "no-such-folder"
    assert main([*common, "--images", str(missing), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"upx: error: --images folder does not exist: {missing}", err


def test_evaluate_force_resume_reaches_the_run(tmp_path: Path, capsys) -> None:
    # EfficientNet-Lite0, F-TC, 2 iterations: image 3 is stored as if by other mask code
    from upx_core.evaluation.provenance import optimizer_version

    out, other = tmp_path / "e.csv", "sha256:000000000000"
    common = ["evaluate", "--modes", "ftc", "--iterations", "2", "--device", "cpu",
              "--no-progress", "--out", str(out)]
    assert main([*common, "--indices", "3"]) == 0
    disk = pd.read_csv(out, keep_default_na=False)
    disk["optimizer_version"] = other
    disk.to_csv(out, index=False)
    before = out.read_bytes()
    capsys.readouterr()
    assert main([*common, "--indices", "3", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("upx: error: ") and "\n" not in err, err
    assert other in err and optimizer_version() in err and "--force-resume" in err
    assert "force_resume=True" not in err and "out_csv" not in err, err
    assert out.read_bytes() == before
    assert main([*common, "--indices", "3", "4", "--force-resume"]) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert dict(zip(df.image_index, df.optimizer_version, strict=True)) == {
        3: other, 4: optimizer_version()}
    with pytest.raises(SystemExit):  # starting afresh and forcing a resume exclude each other
        build_parser().parse_args(["evaluate", "--no-resume", "--force-resume", "--out", "o"])


def _options(parser: argparse.ArgumentParser) -> dict[str, dict[str, argparse.Action]]:
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o: a for a in sub._actions for o in a.option_strings}
            for name, sub in subs.choices.items()}


def test_every_flag_has_help_and_choices_come_from_the_constants() -> None:
    options = _options(build_parser())
    for name, opts in options.items():
        for flag, action in opts.items():
            assert action.help, f"upx {name} {flag} has no help text"
    ex, ev = options["explain"], options["evaluate"]
    assert tuple(ex["--mode"].choices) == MODES
    assert tuple(ev["--modes"].choices) == EVAL_MODES
    for opts in (ex, ev):
        assert opts["--model"].choices is None  # load_model's one-line error, not argparse's
        assert all(name in opts["--model"].help for name in MODEL_NAMES)
        assert tuple(opts["--objective"].choices) == OBJECTIVES
        assert tuple(opts["--reduction"].choices) == REDUCTIONS
        assert tuple(opts["--ftc-form"].choices) == FTC_FORMS
        assert tuple(opts["--amp"].choices) == AMP_FLAGS
    assert (ex["--amp"].default, ev["--amp"].default) == ("auto", "fp32")
    # the flags of the former ``python -m upx_core.evaluation.protocol``, under their names
    assert ev["--images"] is ev["--data-root"] and ev["--no-progress"] is ev["--quiet"]
    for flag in ("--indices", "--random-weights", "--batch-size", "--channels-last", "--amp",
                 "--n", "--select-seed", "--batch-images", "--no-resume", "--force-resume",
                 "--device"):
        assert flag in ev, flag


def test_evaluate_parses_every_flag_into_the_run() -> None:
    from upx_core.cli import _config, _penalties

    args = build_parser().parse_args([
        "evaluate", "--data-root", "d", "--indices", "1", "2", "--out", "o.csv", "--amp",
        "bf16", "--channels-last", "--batch-size", "4", "--random-weights", "--quiet",
        "--lr", "0.05", "--ftc-form", "vector", "--lambda1", "0.5", "--beta", "1.5",
        "--gamma", "0.6", "--lambda2", "2", "--modes", "ftc", "random",
        "--fntc-norm", "squared"])
    assert (args.images, args.indices, args.batch_size, args.modes) == (
        "d", [1, 2], 4, ["ftc", "random"])
    assert args.random_weights and args.no_progress
    config = _config(args)
    assert (config.amp, config.channels_last, config.lr, config.ftc_form,
            config.fntc_norm) == ("bf16", True, 0.05, "vector", "squared")
    assert _penalties(args) == {"lambda1": 0.5, "lambda2": 2.0, "beta": 1.5, "gamma": 0.6}
    with pytest.raises(SystemExit):  # --n and --indices exclude each other
        build_parser().parse_args(["evaluate", "--n", "2", "--indices", "1", "--out", "o"])


def test_evaluate_records_every_run_flag_in_the_csv(tmp_path: Path) -> None:
    import torch

    from upx_core.method.runtime import bf16_supported

    out = tmp_path / "e.csv"
    data = os.environ["UPX_DATA_DIR"]
    # bf16 runs on a CPU with native bfloat16 only; elsewhere it is refused (test_optimizer)
    precision = "bf16" if bf16_supported(torch.device("cpu")) else "fp32"
    assert main([
        "evaluate", "--data-root", data, "--indices", "101", "--modes", "ftc", "random",
        "--seeds", "0", "1", "--iterations", "2", "--lr", "0.05", "--objective", "log_prob",
        "--reduction", "sum", "--ftc-form", "vector", "--fntc-norm", "squared",
        "--init-noise", "0.2", "--mask-size",
        "14", "--sigma", "3", "--kernel-size", "7", "--lambda1", "0.5", "--lambda2", "0.01",
        "--beta", "1.5", "--gamma", "0.6", "--threshold", "0.4",
        *(["--amp", "bf16"] if precision == "bf16" else []), "--channels-last",
        "--batch-size", "1", "--batch-images", "1", "--device", "cpu",
        "--quiet", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(zip(df.image_index, df["mode"], df.seed, strict=True)) == [
        (101, "ftc", 0), (101, "ftc", 1), (101, "random", 0), (101, "random", 1)]
    want = {"iterations": 2, "lr": 0.05, "objective": "log_prob", "reduction": "sum",
            "ftc_form": "vector", "fntc_norm": "squared", "init_noise": 0.2,
            "mask_size": 14, "sigma": 3.0,
            "kernel_size": 7, "lambda1": 0.5, "lambda2": 0.01, "beta": 1.5, "gamma": 0.6,
            "threshold": 0.4, "precision": precision, "channels_last": True, "device": "cpu",
            "model": "efficientnet_lite0"}
    for col, value in want.items():
        assert df[col].tolist() == [value] * 4, col


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("target, expected", [
    ("photo", "is the input image"),
    ("photos", "contains the input image"),
    ("root", "contains the input image"),
    ("notes", "is a file, not an output folder"),
    ("thesis", "--force replaces only a folder that upx wrote"),
])
def test_force_never_deletes_the_input_its_siblings_a_file_or_a_foreign_folder(
        tmp_path: Path, capsys, target: str, expected: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = photos / "photo.JPEG"
    photo.write_bytes(sample_path("tusker").read_bytes())
    (photos / "sibling.JPEG").write_bytes(sample_path("African elephant").read_bytes())
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "draft.tex").write_text("years of work")
    out = {"photo": photo, "photos": photos, "root": tmp_path, "notes": tmp_path / "notes.txt",
           "thesis": tmp_path / "thesis"}[target]
    before = _tree(tmp_path)
    code = main(["explain", str(photo), "--out", str(out), "--force", "--iterations", "2",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("upx: error: ") and "\n" not in err and expected in err, err
    assert _tree(tmp_path) == before


def test_output_location_is_checked_before_the_model_loads(tmp_path: Path) -> None:
    """Every bad --out fails with one line and exit 2, without loading the model (timm, which
    builds it, is never imported) and without leaving anything behind."""
    photo = tmp_path / "photo.JPEG"
    photo.write_bytes(sample_path("tusker").read_bytes())
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root: permissions do not stop it, sysfs does
        read_only = Path("/sys")
    cases = {
        str(photo / "out"): "photo.JPEG is a file",
        str(photo / "deeper" / "out"): "photo.JPEG is a file",
        str(read_only / "out"): "is not writable",
        str(read_only / "new" / "out"): "is not writable",
    }
    script = (
        "import json, sys\n"
        "from upx_core.cli import main\n"
        "codes = [main(['explain', sys.argv[1], '--out', out, '--iterations', '2',"
        " '--no-progress']) for out in sys.argv[2:]]\n"
        "print(json.dumps({'codes': codes, 'timm': 'timm' in sys.modules}))\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", script, str(photo), *cases],
                              capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    finally:
        if read_only != Path("/sys"):
            read_only.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"codes": [2] * len(cases), "timm": False}
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(cases) and "Traceback" not in proc.stderr
    for line, expected in zip(lines, cases.values(), strict=True):
        assert line.startswith("upx: error: cannot create output folder ") and expected in line
    assert sorted(os.listdir(tmp_path)) == ["photo.JPEG", "ro"]


def test_importing_the_command_loads_no_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, upx_core.cli; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_method_imports_neither_torchvision_nor_matplotlib() -> None:
    # torchvision (for one blur and the class names) and matplotlib cost about 1.5 s of every
    # start; the optimizer needs neither, and plotting loads matplotlib when it draws
    code = ("import sys, upx_core.method.equations, upx_core.method.models, upx_core.method.fold, "
            "upx_core.method.optimizer, upx_core.plotting\n"
            "from upx_core.method.models import class_index\n"
            "assert class_index('African elephant') == 386\n"
            "print(sorted(m for m in ('torchvision', 'matplotlib', 'timm') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_version_prints_the_package_version_without_torch() -> None:
    import upx_core

    proc = subprocess.run([sys.executable, "-m", "upx_core.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == f"upx {upx_core.__version__}\n", proc
    code = ("import sys\nfrom upx_core.cli import main\ntry:\n    main(['--version'])\n"
            "except SystemExit as end:\n    print(end.code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.splitlines() == [f"upx {upx_core.__version__}", "0 False"], proc


@pytest.mark.parametrize("quiet", [[], ["--quiet"], ["--no-progress"]])
def test_explain_says_what_it_loads_before_torch_loads(tmp_path: Path, quiet) -> None:
    # the first seconds of upx explain are torch's import and the model's: a user sees a line
    # saying so at once (not after them), unless they asked for quiet; stderr keeps stdout clean
    (tmp_path / "taken").mkdir()  # not upx's: refused once torch has loaded, before the model
    code = (
        "import json, sys\n"
        "class Err:\n"
        "    lines = []\n"
        "    def write(self, s):\n"
        "        if s.strip():\n"
        "            self.lines.append([s.strip(), 'torch' in sys.modules])\n"
        "    def flush(self):\n"
        "        pass\n"
        "sys.stderr = Err()\n"
        "from upx_core.cli import main\n"
        "code = main(['explain', 'sample:tusker', '--out', sys.argv[1], *sys.argv[2:]])\n"
        "print(json.dumps([code, Err.lines]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "taken"), *quiet],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    code, lines = json.loads(proc.stdout)
    assert code == 2 and lines[-1][0].startswith("upx: error: output folder "), lines
    assert lines[-1][1] is True  # the error came after torch loaded
    assert lines[:-1] == ([] if quiet else [["loading efficientnet_lite0 ...", False]])


@pytest.mark.parametrize("argv", [
    ["--help"], ["explain", "--help"], ["evaluate", "--help"],
    ["explain", "sample:tusker", "--seeds", "0", "0", "--out", "unused"],
    ["explain", "sample:tusker", "--threshold", "2", "--out", "unused"],
    ["explain", "sample:tusker", "--model", "vgg16", "--out", "unused"],
])
def test_help_and_argument_errors_load_no_torch(argv) -> None:
    # the start-up cost of upx is torch's import (seconds); help and typos need none of it
    code = "\n".join([
        "import sys", "from upx_core.cli import main", "try:", f"    main({argv!r})",
        "except SystemExit:", "    pass", "print('torch' in sys.modules, file=sys.stderr)"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_ctrl_c_while_torch_loads_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "upx_core.cli", "explain", "sample:tusker", "--out", str(out),
         "--iterations", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        # a Ctrl-C reaches upx from a terminal; under a make started in the background SIGINT
        # arrives ignored and Python keeps ignoring it: give the child a terminal's disposition
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 120
    try:
        # Wait until torch's library is loading: the start-up, not the optimization.
        while "libtorch" not in maps.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, "torch never started loading"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "upx: interrupted; no partial output was kept"
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_system_oserror_reads_as_one_line(tmp_path: Path) -> None:
    from upx_core.cli import _one_line

    (tmp_path / "photo.png").write_bytes(b"pixels")
    with pytest.raises(NotADirectoryError) as err:
        os.mkdir(tmp_path / "photo.png" / "out")
    assert _one_line(err.value) == f"Not a directory: {tmp_path / 'photo.png' / 'out'}"
    assert _one_line(ValueError("two\nlines")) == "two lines"


def test_notes_tell_little_left_to_gain_from_weak_pull_and_say_when_nothing_was_found():
    from upx_core.report import notes as _notes

    # espresso at p = 0.953: nothing to gain, and log_prob would not help
    sure = _notes("espresso", 0.953, 0.9531, True, "ftc", "prob", 0.6)
    assert sure[0].startswith("no undesirable pixels found")
    assert "already sure (0.953)" in sure[1] and "--lambda2" in sure[1]
    assert "changes little" in sure[1]
    # under the log-probability (upx explain's default) there is no objective to switch to
    sure_log = _notes("espresso", 0.953, 0.9531, True, "ftc", "log_prob", 0.6)
    assert "--lambda2" in sure_log[1] and "--objective" not in sure_log[1]
    # African elephant at p = 0.034 under the probability objective: the weak pull
    weak = _notes("African elephant", 0.0343, 0.0344, True, "ftc", "prob", 0.6)
    assert "pulls weakly" in weak[1] and "--objective log_prob" in weak[1]
    # in between, or already under log_prob: the penalties
    mid = _notes("tabby", 0.166, 0.1660, False, "ftc", "log_prob", 0.6)
    assert mid == ["p(tabby) barely moved: the penalties outweigh what blurring gains here; "
                   "try a lower --lambda2 or --lambda1"]
    # a target that moved, and a deletion mask (whose target is meant to fall), get no advice
    assert _notes("ski", 0.92, 0.95, False, "ftc", "prob", 0.6) == []
    assert _notes("abaya", 0.87, 0.05, False, "deletion", "prob", 0.6) == []


def test_an_interrupted_evaluate_says_its_rows_are_kept() -> None:
    from upx_core.cli import _what_was_kept, build_parser

    ev = build_parser().parse_args(["evaluate", "--out", "t.csv"])
    assert _what_was_kept(ev) == ("the rows finished so far are in t.csv; run the same command "
                                  "again to resume")
    ex = build_parser().parse_args(["explain", "x.png", "--out", "o"])
    assert _what_was_kept(ex) == _what_was_kept(None) == "no partial output was kept"


def test_evaluate_checks_its_output_before_the_model_loads(tmp_path: Path, capsys) -> None:
    # each case used to fail only at the first write, after a batch had been optimized
    folder = tmp_path / "results"
    folder.mkdir()
    not_csv = tmp_path / "photo.csv"
    not_csv.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\xfe")
    other_csv = tmp_path / "other.csv"
    other_csv.write_text("a,b\n1,2\n")
    in_file = tmp_path / "file.txt"
    in_file.write_text("x")
    cases = {
        folder: "is a folder",
        not_csv: "is not an evaluation CSV",
        other_csv: "is not an evaluation CSV",
        in_file / "out.csv": "is a file",
    }
    for out, message in cases.items():
        code = main(["evaluate", "--indices", "3", "--iterations", "2", "--device", "cpu",
                     "--no-progress", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (out, err)
    assert other_csv.read_text() == "a,b\n1,2\n"  # nothing was written


def test_black_box_explain_through_torch_and_onnx_runtime(tmp_path: Path) -> None:
    # the torch black box: the same outputs, the model queried under inference_mode
    proc = run_cli("explain", "sample:tusker", "--black-box", "--queries", "42",
                   "--target", "African elephant", "--out", str(tmp_path / "torch"), *FAST)
    assert proc.returncode == 0, proc.stderr
    # the budget spent whole: 4 iterations x (a centre + 9 directions) + the clean and the final
    assert "queries      42 per mask" in proc.stdout and "estimator tracking)" in proc.stdout
    # export the model, then explain the ONNX file: no flag needed for upx's own export
    onnx_file = tmp_path / "lite0.onnx"
    proc = run_cli("export-onnx", str(onnx_file))
    assert proc.returncode == 0, proc.stderr
    assert run_cli("export-onnx", str(onnx_file)).returncode == 2  # exists: refused
    # the file holds its normalization: another one is a contradiction, refused in one line
    proc = run_cli("explain", "sample:tusker", "--onnx", str(onnx_file), "--queries", "42",
                   "--mean", "0.485", "0.456", "0.406", "--out", str(tmp_path / "bad"), *FAST)
    assert proc.returncode == 2 and "--mean 0.485 0.456 0.406 contradicts it" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    proc = run_cli("explain", "sample:tusker", "--onnx", str(onnx_file), "--queries", "42",
                   "--target", "African elephant", "--out", str(tmp_path / "onnx"), *FAST)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "onnx" / "result.json").read_text())
    assert summary["black_box"] == "onnxruntime" and summary["queries"] == 42
    assert summary["estimator"] == "tracking"
    assert summary["model"] == str(onnx_file) and summary["target"] == 386
    # the same seed, the same queries: ONNX Runtime and torch agree up to float rounding
    torch_summary = json.loads((tmp_path / "torch" / "result.json").read_text())
    assert abs(summary["prob_before"] - torch_summary["prob_before"]) < 1e-4


def test_black_box_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not onnx")
    cases = {
        "missing": (["--onnx", str(tmp_path / "none.onnx")], "does not exist"),
        "garbage": (["--onnx", str(garbage)], "cannot read ONNX model"),
        "budget": (["--black-box", "--queries", "0"], "--queries must be a positive"),
    }
    for name, (flags, message) in cases.items():
        out = tmp_path / name
        proc = run_cli("explain", "sample:tusker", "--out", str(out), *flags, *FAST)
        assert proc.returncode == 2, (name, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, name
        assert not out.exists(), name


def test_a_missing_image_is_answered_before_torch_loads(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from upx_core.cli import main\n"
        "codes = [main(['explain', p, '--out', sys.argv[1]]) for p in sys.argv[2:]]\n"
        "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out"),
                           str(tmp_path / "typo.jpg"), str(tmp_path)],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"codes": [2, 2], "torch": False}
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"upx: error: image file not found: {tmp_path / 'typo.jpg'}",
                     f"upx: error: {tmp_path} is a folder, not an image file"]


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_without_the_onnx_extra_the_error_says_what_to_install(tmp_path: Path, capsys,
                                                              monkeypatch, missing) -> None:
    # a None entry in sys.modules makes ``import onnxruntime`` fail as if it were not installed
    monkeypatch.setitem(sys.modules, missing, None)
    argv = (["export-onnx", str(tmp_path / "m.onnx")] if missing == "onnx" else
            ["explain", "sample:tusker", "--onnx", str(tmp_path / "m.onnx"), "--out",
             str(tmp_path / "out"), *FAST])
    if missing == "onnxruntime":
        (tmp_path / "m.onnx").write_bytes(b"")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"upx: error: ONNX support needs the package {missing}: pip install "
                   "'upx[onnx]' (or pip install onnx onnxruntime)"), err


def _tiny_network(softmax: bool = False):
    """A small ImageNet-shaped network (1000 outputs), as a user would export their own."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1000)]
    return nn.Sequential(*layers, *([nn.Softmax(dim=1)] if softmax else [])).eval()


@pytest.mark.parametrize("kind", ["torch.export", "TorchScript"])
def test_explain_a_pytorch_model_file_with_its_preprocessing(tmp_path: Path, capsys,
                                                              kind: str) -> None:
    import torch

    from upx_core.data import load_image
    from upx_core.method.models import Classifier

    net, example = _tiny_network(), torch.rand(1, 3, 64, 64)
    path = tmp_path / ("net.pt2" if kind == "torch.export" else "net.pt")
    if kind == "torch.export":  # traced for batch 1, as torch.export does by default
        torch.export.save(torch.export.export(net, (example,)), path)
    else:
        torch.jit.save(torch.jit.script(net), path)
    flags = ["--model-file", str(path), "--mean", "0.5", "0.4", "0.3", "--std", "0.2", "0.25",
             "0.3", "--input-size", "64", "--target", "7", "--seeds", "0", "1"]
    out = tmp_path / "out"
    assert main(["explain", "sample:tusker", *flags, "--out", str(out), *FAST]) == 0, \
        capsys.readouterr().err
    summary = json.loads((out / "result.json").read_text())
    assert summary["model"] == str(path) and summary["target"] == 7
    # the file's model with the flags' preprocessing: the probability the Python API gives
    reference = Classifier(net, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), input_size=64,
                           resize_size=73)
    with torch.no_grad():
        p = torch.softmax(reference(load_image(sample_path("tusker"), 64, 73)[None]), 1)
    assert summary["prob_before"] == pytest.approx(float(p[0, 7]), abs=1e-5)
    assert np.load(out / "mask.npy").shape == (2, 28, 28)


def test_a_model_file_returning_probabilities_needs_outputs_probs(tmp_path: Path,
                                                                  capsys) -> None:
    import torch

    path = tmp_path / "softmax.pt"
    torch.jit.save(torch.jit.script(_tiny_network(softmax=True)), path)
    flags = ["--model-file", str(path), "--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5",
             "0.5", "--input-size", "64", "--target", "7"]
    assert main(["explain", "sample:tusker", *flags, "--out", str(tmp_path / "a"), *FAST]) == 2
    assert "outputs are probabilities" in capsys.readouterr().err
    assert main(["explain", "sample:tusker", *flags, "--outputs", "probs", "--out",
                 str(tmp_path / "b"), *FAST]) == 0
    weights = tmp_path / "weights.pt"  # a state_dict: no network in it
    torch.save(_tiny_network().state_dict(), weights)
    flags[1] = str(weights)
    assert main(["explain", "sample:tusker", *flags, "--out", str(tmp_path / "c"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "is not a TorchScript or torch.export model file" in err and "\n" not in err.strip()
    assert main(["explain", "sample:tusker", *flags[:2], "--out", str(tmp_path / "d")]) == 2
    assert "--model-file needs --mean and --std" in capsys.readouterr().err
