"""The evaluation's CSV store on its own: round trip, rank parts, compatibility, merge."""

from __future__ import annotations

import importlib.util
import re
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest

import upx_core
from upx_core.evaluation import provenance, store
from upx_core.evaluation.protocol import EVAL_MODES


def rows(image_modes, **run) -> pd.DataFrame:
    base = {c: 0 for c in store.COLUMNS} | {"model": "m", "objective": "prob",
                                             "precision": "fp32", "git_commit": "abc",
                                             "optimizer_version": "sha256:000000000000"} | run
    return store.frame([base | {"image_index": i, "mode": m, "seed": 0, "file": f"f{i}"}
                        for i, m in image_modes])


def test_write_read_round_trip_and_sorting(tmp_path):
    df = store.sort_rows(rows([(2, "fntc"), (1, "random"), (1, "ftc")]), EVAL_MODES)
    assert list(zip(df.image_index, df["mode"], strict=True)) == [
        (1, "ftc"), (1, "random"), (2, "fntc")]
    path = tmp_path / "sub" / "e.csv"
    store.write_rows(df, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    back = store.read_rows(path)
    assert list(back.columns) == store.COLUMNS
    assert store.keys(back) == {(1, "ftc", 0), (1, "random", 0), (2, "fntc", 0)}
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an evaluation CSV"):
        store.read_rows(tmp_path / "other.csv")


def test_check_compatible_names_the_column(tmp_path):
    df = rows([(1, "ftc")], iterations=3, lr=0.1)
    run = {c: df[c][0].item() if hasattr(df[c][0], "item") else df[c][0]
           for c in store.RUN_COLUMNS}
    store.check_compatible(df, run, tmp_path / "e.csv")
    store.check_compatible(df, run | {"lr": 0.1 * (1 + 1e-12)}, tmp_path / "e.csv")
    for col, value in (("iterations", 4), ("lr", 0.2), ("model", "n")):
        with pytest.raises(ValueError, match=f"{col}="):
            store.check_compatible(df, run | {col: value}, tmp_path / "e.csv")


def test_parts_are_found_by_rank_and_merged_away(tmp_path):
    out = tmp_path / "e.csv"
    assert store.part_path(out, 3) == tmp_path / "e.csv.rank3.csv"
    store.write_rows(rows([(5, "ftc")]), store.part_path(out, 10))
    store.write_rows(rows([(4, "ftc")]), store.part_path(out, 2))
    (tmp_path / "e.csv.rankX.csv").write_text("")  # not a part
    assert store.part_paths(out) == [store.part_path(out, 2), store.part_path(out, 10)]
    store.write_rows(rows([(4, "fntc")]), out)
    full = store.merge_parts(out, EVAL_MODES)
    assert list(zip(full.image_index, full["mode"], strict=True)) == [
        (4, "ftc"), (4, "fntc"), (5, "ftc")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "e.csv.rankX.csv"]
    assert store.keys(store.read_rows(out)) == store.keys(full)


# --- segments: which code computed a row -----------------------------------------------------

def test_existing_rows_and_a_fresh_start_need_no_process_group(tmp_path):
    # the store reads and removes files; which rank does so, and the barrier, are the protocol's
    out = tmp_path / "e.csv"
    store.write_rows(rows([(1, "ftc")]), out)
    store.write_rows(rows([(2, "ftc")]), store.part_path(out, 1))
    run = {c: rows([(1, "ftc")])[c][0] for c in store.RUN_COLUMNS} | {
        "optimizer_version": "sha256:000000000000"}
    existing, own = store.existing_rows(out, store.part_path(out, 1), run, sharded=True)
    assert store.keys(existing) == {(1, "ftc", 0), (2, "ftc", 0)}
    assert store.keys(own) == {(2, "ftc", 0)}
    existing, own = store.existing_rows(out, out, run, sharded=False)
    assert store.keys(own) == store.keys(existing)
    assert all(df.empty for df in store.existing_rows(None, None, run, sharded=False))
    store.remove_stale(out, with_out=False)  # one process: out is replaced at its first write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv"]
    store.remove_stale(out, with_out=True)
    assert list(tmp_path.iterdir()) == []


def test_a_csv_from_before_the_segment_columns_reads_as_unknown(tmp_path):
    old = rows([(1, "ftc")]).drop(columns=store.SEGMENT_COLUMNS)
    path = tmp_path / "old.csv"
    old.to_csv(path, index=False)
    back = store.read_rows(path)
    assert back["git_commit"].tolist() == back["optimizer_version"].tolist() == ["unknown"]
    assert list(back.columns) == store.COLUMNS
    # a version or commit made only of digits (or digits around one 'e') stays text
    store.write_rows(rows([(1, "ftc")], git_commit="1234", optimizer_version="12e4"), path)
    back = store.read_rows(path)
    assert back["git_commit"].tolist() == ["1234"]
    assert back["optimizer_version"].tolist() == ["12e4"]


def test_check_version_names_both_versions_and_the_flag(tmp_path):
    df = rows([(1, "ftc"), (2, "ftc")], optimizer_version="sha256:aaaaaaaaaaaa")
    store.check_version(df, "sha256:aaaaaaaaaaaa", tmp_path / "e.csv")
    with pytest.raises(ValueError) as err:
        store.check_version(df, "sha256:bbbbbbbbbbbb", tmp_path / "e.csv")
    msg = str(err.value)
    assert "\n" not in msg
    assert "optimizer version sha256:aaaaaaaaaaaa, this run is optimizer version " \
           "sha256:bbbbbbbbbbbb" in msg
    assert "--force-resume" in msg and "force_resume=True" in msg


def test_add_rows_refuses_rows_another_version_wrote_meanwhile_unless_forced(tmp_path):
    # a concurrent writer on the same file running other code: its rows are on disk
    path = tmp_path / "e.csv"
    store.write_rows(rows([(1, "ftc")], optimizer_version="sha256:aaaaaaaaaaaa"), path)
    before = path.read_bytes()
    mine = rows([(2, "ftc")], optimizer_version="sha256:bbbbbbbbbbbb")
    run = {c: mine[c][0] for c in store.RUN_COLUMNS} | {
        "optimizer_version": "sha256:bbbbbbbbbbbb"}
    with pytest.raises(ValueError, match="optimizer version sha256:aaaaaaaaaaaa"):
        store.add_rows(mine, path, run, EVAL_MODES)
    assert path.read_bytes() == before
    both = store.add_rows(mine, path, run, EVAL_MODES, force_resume=True)
    assert dict(zip(both.image_index, both.optimizer_version, strict=True)) == {
        1: "sha256:aaaaaaaaaaaa", 2: "sha256:bbbbbbbbbbbb"}
    pd.testing.assert_frame_equal(store.read_rows(path), both, check_dtype=False)


def _load_provenance(package: Path):
    # provenance.py imports nothing relative at the top: load this copy's own module
    spec = importlib.util.spec_from_file_location(f"prov_{package.parent.name}",
                                                  package / "evaluation" / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_optimizer_version_follows_the_method_folder_not_the_commit(tmp_path):
    package = Path(upx_core.__file__).parent
    here = provenance.optimizer_version()
    assert re.fullmatch(r"sha256:[0-9a-f]{12}", here)
    assert here == provenance.optimizer_version()
    copy = tmp_path / "upx_core"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    prov = _load_provenance(copy)
    assert prov.optimizer_version() == here  # the same source anywhere, in git or not
    (copy / "evaluation" / "tables.py").write_text("# an unrelated edit\n")
    (copy / "cli.py").write_text("# an unrelated edit\n")
    assert prov.optimizer_version() == here
    # every module of method/ counts, the ones that decide a mask's numbers named here so that
    # a module dropped from the hash is caught, and a new module counts without being listed
    method = copy / "method"
    names = sorted(p.name for p in method.glob("*.py"))
    assert {"equations.py", "optimizer.py", "runtime.py", "fold.py", "models.py", "config.py",
            "metrics.py"} <= set(names)
    for name in names:
        path = method / name
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        assert prov.optimizer_version() != here, name
        path.write_text(text)
    assert prov.optimizer_version() == here
    (method / "new_estimator.py").write_text("# a new module\n")
    assert prov.optimizer_version() != here
    (method / "new_estimator.py").unlink()
    seg = prov.segment()
    assert seg["optimizer_version"] == here
    assert seg["git_commit"] == "unknown"  # tmp_path is no git checkout


def test_a_csv_written_before_fntc_norm_existed_reads_as_the_abs_norm(tmp_path):
    from upx_core.evaluation.store import COLUMNS, read_rows

    old = tmp_path / "old.csv"
    row = {c: 0 for c in COLUMNS if c != "fntc_norm"}
    pd.DataFrame([row]).to_csv(old, index=False)
    df = read_rows(old)
    assert df["fntc_norm"].tolist() == ["abs"]
    # every stored run of the book was computed with |dy_k|, and says so when read
    stored = Path(__file__).resolve().parents[1] / "notebooks/results/cpu_200img_prob.csv"
    assert set(read_rows(stored)["fntc_norm"]) == {"abs"}
