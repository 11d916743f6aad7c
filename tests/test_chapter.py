"""upx_core.book.chapter (what every chapter starts with) and upx_core.book.claims (what it
checks)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from upx_core import MaskSetting, OptimConfig, load_model
from upx_core.book.chapter import (
    as_list,
    changed_parameters,
    chapter_config,
    load_sample,
    not_none,
    output_dir,
    show_source,
    styled,
)
from upx_core.book.claims import ClaimError, Claims


def test_as_list_reads_papermill_strings():
    assert as_list("[0, 1]") == [0, 1]
    assert as_list("0, 1") == [0, 1]
    assert as_list("[ftc, fntc]") == ["ftc", "fntc"]
    assert as_list('["mobile home", "tusker"]') == ["mobile home", "tusker"]
    assert as_list([0.5, 3.0]) == [0.5, 3.0]
    assert as_list((1, 2)) == [1, 2]
    assert as_list("[0.5, 3]") == [0.5, 3]
    assert as_list("'mobile home', tusker") == ["mobile home", "tusker"]
    assert as_list(3) == [3]


def test_not_none_keeps_only_set_parameters():
    assert not_none(lr=None, lambda1=0.0, seed=0, mode="ftc") == {"lambda1": 0.0, "seed": 0,
                                                                  "mode": "ftc"}
    assert not_none() == {}


def test_output_dir_makes_the_folder_or_gives_none(tmp_path):
    assert output_dir(None) is None and output_dir("") is None
    out = output_dir(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir()
    assert output_dir(str(out)) == out  # an existing folder is fine


def test_styled_table_rounds_pads_and_hides_index():
    import pandas as pd

    html = styled(pd.DataFrame({"mode": ["ftc"], "p": [0.123456]}), precision=2,
                  caption="cap").to_html()
    assert "0.12" in html and "0.123" not in html
    assert "padding" in html and "cap" in html
    assert "row0_col0" in html and ">0<" not in html  # no index column


def test_chapter_config_splits_parameters_and_keeps_defaults():
    config, penalties = chapter_config(iterations=50, lr=None, fold_batchnorm=False,
                                       lambda1=None, lambda2=6.0, gamma=0.1)
    assert config == OptimConfig(iterations=50, fold_batchnorm=False)
    assert penalties == {"lambda2": 6.0, "gamma": 0.1}
    assert MaskSetting(**penalties).lambda1 == MaskSetting().lambda1
    assert chapter_config() == (OptimConfig(), {})


def test_chapter_config_takes_the_hyperparameters_dict_or_its_papermill_text():
    config, penalties = chapter_config({"lr": 0.05, "lambda2": 6.0}, iterations=50)
    assert config == OptimConfig(iterations=50, lr=0.05) and penalties == {"lambda2": 6.0}
    text = chapter_config('{"lr": 0.05, "lambda2": 6.0}', iterations=50)
    assert text == (config, penalties)
    assert chapter_config({}, iterations=None) == chapter_config("") == (OptimConfig(), {})
    with pytest.raises(ValueError, match="iterations set both"):
        chapter_config({"iterations": 10}, iterations=50)
    with pytest.raises(TypeError, match="lrr"):
        chapter_config({"lrr": 0.05})


def test_chapter_config_names_a_bad_parameter():
    with pytest.raises(ValueError, match="lambda2"):
        chapter_config(lambda2=-1.0)
    with pytest.raises(ValueError, match="iterations"):
        chapter_config(iterations=0)
    with pytest.raises(TypeError, match="itreations"):
        chapter_config(itreations=10)


def test_load_sample_at_the_model_size():
    model = load_model("efficientnet_lite0")
    x = load_sample("tusker", model)
    assert x.shape == (3, model.input_size, model.input_size)
    assert 0 <= float(x.min()) and float(x.max()) <= 1


def test_claims_record_and_raise_with_the_bound(tmp_path):
    claims = Claims("99_test", out=tmp_path)
    assert claims.check("a ratio", 0.004, below=0.01)
    assert claims.check("an order", "a > b", equals="a > b")
    assert claims.check("a range", 0.5, above=0.2, below=0.8)
    with pytest.raises(ClaimError, match=r"'a gain' does not hold: 12.5, needs > 20"):
        claims.check("a gain", 12.5, above=20)
    table = pd.read_csv(tmp_path / "claims.csv")  # written before the failure was raised
    assert list(table["claim"]) == ["a ratio", "an order", "a range", "a gain"]
    assert list(table["holds"]) == [True, True, True, False]
    assert table.loc[2, "bound"] == "> 0.2 and < 0.8"


def test_claims_bounds_are_strict_or_inclusive_as_named():
    claims = Claims("99_test", active=False)
    assert not claims.check("strict", 1.0, above=1.0)
    assert claims.check("inclusive", 1.0, at_least=1.0)
    assert not claims.check("nan never holds", float("nan"), below=1.0)
    assert not claims.check("a string is no number", "3", below=5)
    with pytest.raises(ValueError, match="give a bound"):
        claims.check("no bound", 1.0)


def test_inactive_or_recording_claims_never_raise(monkeypatch):
    assert Claims("99_test", active=False).check("tiny run", 0.0, above=1) is False
    monkeypatch.setenv("UPX_CLAIMS", "record")
    recording = Claims("99_test")
    assert recording.check("surveyed", 0.0, above=1) is False
    assert recording.table()["holds"].tolist() == [False]


def test_glue_shows_nothing_and_glues_strings_without_quotes(monkeypatch):
    import sys
    import types

    from upx_core.book.chapter import glue

    glued = {}
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: glued.update({name: (value, display)})
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    assert glue("top", "plunger") is None
    assert repr(glued["top"][0]) == "plunger" and glued["top"][1] is False
    glue("p", torch.tensor(0.25))
    assert glued["p"][0] == 0.25 and isinstance(glued["p"][0], float)
    glue("n", 3)
    assert glued["n"][0] == 3


def test_styled_shows_missing_values_as_a_dash():
    html = styled(pd.DataFrame({"phi": [48.7, float("nan")]}), precision=1).to_html()
    assert "48.7" in html and "\u2014" in html and "nan" not in html


def test_changed_parameters_reads_values_as_the_chapter_does():
    book = {"image_names": ["mobile home", "schooner"], "seeds": [0, 1, 2], "iterations": None,
            "hyperparameters": {}}
    same = {"image_names": ["mobile home", "schooner"], "seeds": "[0, 1, 2]",
            "iterations": None, "hyperparameters": "{}"}  # papermill -p passes text
    assert changed_parameters(same, book) == []
    reader = dict(same, image_names=["schooner"], hyperparameters='{"gamma": 0.2}')
    assert changed_parameters(reader, book) == ["image_names", "hyperparameters"]
    assert changed_parameters(dict(same, iterations=50), book) == ["iterations"]
    assert changed_parameters({}, book) == list(book)


def test_a_readers_run_records_a_failed_claim_and_goes_on(tmp_path, capsys):
    claims = Claims("03_ftc_fntc", out=tmp_path, strict=False)
    assert claims.check("ratio of the mask", 0.2, below=0.01) is False
    assert "note: with these parameters, claim 'ratio of the mask' does not hold" in \
        capsys.readouterr().out
    assert list(pd.read_csv(tmp_path / "claims.csv")["holds"]) == [False]
    with pytest.raises(ClaimError, match="ratio of the mask"):  # the book's run stays strict
        Claims("03_ftc_fntc").check("ratio of the mask", 0.2, below=0.01)


def test_show_source_is_the_librarys_own_code():
    import inspect

    from upx_core.method.equations import fntc_penalty, ftc_penalty

    text = show_source(ftc_penalty, fntc_penalty).data
    assert text.startswith("```python\ndef ftc_penalty(") and text.endswith("\n```")
    assert inspect.getsource(ftc_penalty).rstrip() in text
    assert inspect.getsource(fntc_penalty).rstrip() in text


def test_styled_shows_shares_in_percent():
    df = pd.DataFrame({"mode": ["ftc"], "ratio": [0.0123], "pearson": [0.5]})
    html = styled(df, percent=["ratio", "absent"]).to_html()
    assert "ratio %" in html and "1.230" in html and "0.012" not in html
    assert list(df.columns) == ["mode", "ratio", "pearson"]  # the caller's frame is untouched


def test_save_figure_and_table_write_only_with_an_output_folder(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from upx_core.book.chapter import save_figure, save_table

    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    table = pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]})
    for out in (None, ""):
        assert save_figure(fig, out, "f.png") is None and save_table(table, out, "t.csv") is None
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "new" / "folder"  # made when missing, as a chapter's out_dir string
    save_figure(fig, str(out), "f.png", dpi=50)
    save_table(table, out, "t.csv")
    from PIL import Image

    assert Image.open(out / "f.png").size == (100, 50)  # 2 x 1 inches at 50 dpi
    assert (out / "t.csv").read_text() == "a,b\n1,0.5\n2,0.25\n"
    save_table(table, out, "i.csv", index=True)
    assert (out / "i.csv").read_text().splitlines()[1] == "0,1,0.5"


def test_chapter_claims_are_strict_only_in_the_book_run(tmp_path, capsys):
    from upx_core.book.chapter import chapter_claims

    book = {"seeds": [0, 1], "iterations": 200}
    same = chapter_claims("ch", values={"seeds": "[0, 1]", "iterations": 200}, book_run=book)
    assert same.strict and same.chapter == "ch" and capsys.readouterr().out == ""
    with pytest.raises(ClaimError):
        same.check("x", 1, above=2)
    changed = chapter_claims("ch", out=tmp_path, values={"seeds": [0], "iterations": 5},
                             book_run=book)
    assert capsys.readouterr().out == ("Changed from the book's run: seeds, iterations; a claim "
                                       "that does not hold is noted, not raised.\n")
    assert not changed.strict and changed.check("x", 1, above=2) is False
    assert (tmp_path / "claims.csv").is_file()
    quiet = chapter_claims("ch", active=False)  # no book run given: strict, but inactive
    assert quiet.strict and not quiet.active and quiet.check("x", 1, above=2) is False


def test_config_changes_names_what_differs_from_the_defaults():
    from upx_core.book.chapter import config_changes

    assert config_changes(OptimConfig()) == {}
    default = OptimConfig().objective
    other = "log_prob" if default == "prob" else "prob"
    assert config_changes(OptimConfig(iterations=3, objective=other)) == {
        "iterations": 3, "objective": other}
    assert config_changes(OptimConfig(lr=OptimConfig().lr)) == {}  # a default set is no change
    assert list(config_changes(OptimConfig(sigma=2.0, iterations=5))) == ["iterations", "sigma"]
