"""``gvt sweep learning-curve``: validation J against samples per family, with the counted baselines."""

import json

import pytest

from experiments.cli import main as cli_main
from experiments.core.presets import get_preset
from experiments.q2_batch_size import learning_curve as LC
from modules.errors import ConfigError


def test_the_curve_runs_every_family_at_every_budget_on_the_validation_split():
    preset = get_preset("smoke", pilot=False)
    specs = LC.curve_specs(preset, [16, 64], seeds=[1000, 1001], families=["transformer", "mle-continued"])
    pretrain = {s["seed"]: s for s in specs if s["kind"] == "pretrain"}
    arms = [s for s in specs if s["kind"] != "pretrain"]
    assert sorted(pretrain) == [1000, 1001] and len(arms) == 2 * 2 * 2
    assert {s["eval_split"] for s in specs} == {"val"} and all(s["measure"] == {} for s in specs)
    assert {s["batch_size"] for s in arms} == {preset.sweep.reference_batch_size}
    assert sorted({(s["family"], s["budget"]["value"]) for s in arms}) == [
        ("mle-continued", 16), ("mle-continued", 64), ("transformer", 16), ("transformer", 64)]
    for s in arms:
        if s["family"] == "mle-continued":
            assert s["init_from"]["key"] == pretrain[s["seed"]]["key"]
        assert "lr_multiplier" not in s  # the curve comes before the pilot: the rule's rates


@pytest.mark.parametrize("budgets, families, match", [
    ([], None, "budgets must be sample counts"), ([0, 16], None, "budgets must be sample counts"),
    ([16], ["transformer", "no-such-family"], "no-such-family"),
])
def test_bad_curve_settings_are_named(budgets, families, match):
    with pytest.raises(ConfigError, match=match):
        LC.curve_specs(get_preset("smoke", pilot=False), budgets, seeds=[1000], families=families)


def test_the_smoke_curve_writes_its_figure_and_shows_learning(tmp_path):
    summary = LC.run_learning_curve("smoke", budgets=[8, 512], seeds=[1000],
                                    families=["transformer", "mle-continued"], out=tmp_path, workers=1,
                                    echo=lambda m: None)
    assert json.loads((tmp_path / "learning_curve.json").read_text()) == summary
    assert (tmp_path / "learning_curve.png").stat().st_size > 10_000
    curves = summary["curves"]
    assert set(curves) == {"transformer", "mle-continued", LC.CHECKPOINT}
    scratch = {p["samples"]: p["mean_j"] for p in curves["transformer"]}
    assert set(scratch) == {8, 512} and scratch[512] < scratch[8]  # 64 updates teach it more than one
    assert [p["samples"] for p in curves[LC.CHECKPOINT]] == [get_preset("smoke").sweep.pretrain_budget]
    ref = summary["reference"]
    assert ref["bigram"] < ref["unigram"] and summary["split"] == "val"


def test_gvt_sweep_learning_curve_names_a_bad_budget(capsys):
    assert cli_main("sweep", ["learning-curve", "--preset", "smoke", "--budgets", "many"]) == 2
    assert "--budgets and --seeds take integers" in capsys.readouterr().err
