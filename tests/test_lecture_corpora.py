"""`gvt lecture` without the corpora ($GVT_DATA_DIR an empty folder): a part whose verdict needs a missing corpus
is not run and says which file it missed, a descriptive part that needs one is left out and named, every other part
runs, the report is written and the command exits 0."""

import copy
import json
import sys

import pytest

from experiments.core import corpus_check

from experiments import lecture, lecture_settings
from experiments.core import verdicts as V


@pytest.fixture()
def empty_data(tmp_path, monkeypatch):
    folder = tmp_path / "empty_data"
    folder.mkdir()
    monkeypatch.setenv("GVT_DATA_DIR", str(folder))
    return folder


def smoke_with_translation():
    """The smoke preset with translation heatmaps asked for (the lecture preset's Multi30k), so C3 needs a corpus."""
    settings = lecture_settings._smoke()
    settings.c3 = lecture.dataclasses.replace(settings.c3, translation_data=copy.deepcopy(lecture_settings.MULTI30K))
    return settings


def test_the_smoke_lecture_without_corpora_reports_what_did_not_run_and_exits_0(empty_data, tmp_path, monkeypatch):
    monkeypatch.setitem(lecture.PRESETS, "lecture-smoke", smoke_with_translation)
    out = tmp_path / "lecture"
    argv = ["--preset", "lecture-smoke", "--only", "c3,c4", "--out", str(out), "--wandb-mode", "disabled"]
    assert lecture.main(argv) == 0
    data = json.loads((out / "report" / "verdicts.json").read_text())["questions"]
    c4 = f"not run: corpus general not found at {empty_data / 'coco' / 'train.txt'} (set GVT_DATA_DIR)"
    assert data["C4"]["verdict"] == V.INCONCLUSIVE and data["C4"]["reason"] == c4
    assert not data["C3"]["reason"].startswith("not run")  # C3's tasks need no corpus: it ran
    text = (out / "report" / "report.md").read_text()
    heatmaps = (f"Translation heatmaps not run: corpus multi30k not found at "
                f"{empty_data / 'multi30k' / 'train.de.gz'} (set GVT_DATA_DIR).")
    assert "**What did not run**" in text and f"- C4: {c4}" in text and f"- C3: {heatmaps}" in text
    assert f"{c4}; its verdict stays inconclusive." in text  # in C4's own section too
    assert text.count(heatmaps) == 2  # the summary and C3's section
    assert (out / "c3" / "results.jsonl").is_file() and not (out / "c4").exists()
    assert list((out / "report" / "heatmaps").glob("c3_copy_*.png"))  # the task heatmaps were drawn


def test_c4_declares_both_corpora_as_needed(empty_data):
    from experiments.c4_transfer import settings as c4_settings

    why, notes = corpus_check.check(c4_settings.corpora(c4_settings.smoke()))
    assert why == f"not run: corpus general not found at {empty_data / 'coco' / 'train.txt'} (set GVT_DATA_DIR)"
    assert notes == []


def test_c4_with_the_general_corpus_but_no_mr_names_mr(empty_data):
    from experiments.c4_transfer import settings as c4_settings

    for rel in ("coco/train.txt", "multi30k/train.en.gz"):
        (empty_data / rel).parent.mkdir(parents=True, exist_ok=True)
        (empty_data / rel).write_text("a line\n")
    why, _ = corpus_check.check(c4_settings.corpora(c4_settings.smoke()))
    assert why == f"not run: corpus MR not found at {empty_data / 'mr' / 'rt-polarity.neg'} (set GVT_DATA_DIR)"


def test_c2_without_multi30k_runs_the_rest_and_names_the_missing_buckets(empty_data):
    from experiments.c2_bottleneck import bottleneck
    from experiments.c2_bottleneck import settings as c2_settings

    why, notes = corpus_check.check(bottleneck.corpora(c2_settings.lecture()))
    assert why is None  # the reverse task decides C2
    assert notes == [f"The Multi30k buckets not run: corpus multi30k not found at "
                     f"{empty_data / 'multi30k' / 'train.de.gz'} (set GVT_DATA_DIR); the rest of the part ran."]
    assert bottleneck.corpora(c2_settings.smoke()) == {}  # the smoke preset names no corpus


def test_a_part_whose_needed_corpus_is_missing_is_never_started(empty_data, tmp_path, monkeypatch):
    import types

    calls = []
    module = types.ModuleType("fake_c4")
    module.PRESETS = {"smoke": lambda: None}
    module.corpora = lambda settings: {"MR": {"files": ["$GVT_DATA_DIR/mr/x.txt"], "needed": True}}
    module.run = lambda *a, **k: calls.append(a)
    monkeypatch.setitem(sys.modules, lecture.C4_MODULE, module)
    part = lecture.run_delegated("C4", lecture.C4_MODULE, "smoke", tmp_path / "c4", seeds=None, workers=1,
                                 wandb_mode="disabled", echo=lambda m: None)
    assert calls == [] and part["why"] == f"not run: corpus MR not found at {empty_data / 'mr' / 'x.txt'} " \
                                          "(set GVT_DATA_DIR)"
    v = lecture.delegated_verdict("C4", part, 0.05, 3, "left out")
    assert v.verdict == V.INCONCLUSIVE and v.reason == part["why"]


def test_present_corpora_are_not_reported_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("GVT_DATA_DIR", str(tmp_path))
    (tmp_path / "mr").mkdir()
    (tmp_path / "mr" / "x.txt").write_text("text\n")
    assert corpus_check.check({"MR": {"files": ["$GVT_DATA_DIR/mr/x.txt"], "needed": True}}) == (None, [])


def test_text_data_files_lists_every_split_under_its_root():
    files = corpus_check.text_data_files(lecture_settings.MULTI30K)
    assert files == [f"$GVT_DATA_DIR/multi30k/{n}" for n in ("train.de.gz", "train.en.gz", "val.de.gz", "val.en.gz",
                                                             "test_2016_flickr.de.gz", "test_2016_flickr.en.gz")]
