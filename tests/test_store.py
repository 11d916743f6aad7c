"""The evaluation's CSV store on its own: round trip, rank parts, compatibility, merge."""

from __future__ import annotations

import stat

import pandas as pd
import pytest

from upx_core import store
from upx_core.evaluation import EVAL_MODES


def rows(image_modes, **run) -> pd.DataFrame:
    base = {c: 0 for c in store.COLUMNS} | {"model": "m", "objective": "prob",
                                             "precision": "fp32"} | run
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
