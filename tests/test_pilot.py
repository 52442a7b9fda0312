"""The learning-rate pilot (issue 10 item 5; experiments.core.pilot): seeds apart from the verdict seeds, the choice by
the lowest mean validation J, the committed multipliers in the specs, validation-split evaluation, and the pilot
file's place in the pre-registration hash."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest

from experiments.core import pilot as P
from experiments.core import pilot_file
from experiments.core.families import get_arg, get_family, set_arg
from experiments.core.presets import get_preset
from experiments.q2_batch_size.sweep import sweep_specs
from modules.errors import ConfigError


def _write_pilot(path, preset="smoke", seeds=(100,), choices=None):
    choices = choices if choices is not None else [{"family": "transformer", "batch_size": 1, "multiplier": 2.0,
                                                     "mean_j": {"0.5": 4.0, "1": 3.9, "2": 3.5}}]
    path.write_text(json.dumps({"preset": preset, "seeds": list(seeds), "choices": choices}))
    return path


# ---- seeds -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset, seeds, overlap", [("smoke", [0], [0]), ("smoke", [5, 1], [1]),
                                                    ("quick", [2, 1000], [2]), ("standard", [7], [7])])
def test_pilot_seeds_overlapping_the_verdict_seeds_are_refused(preset, seeds, overlap):
    with pytest.raises(ValueError, match=re.escape(f"pilot seeds {overlap} are among the verdict seeds")):
        P.pilot_specs(get_preset(preset, pilot=False), seeds)


def test_pilot_seeds_overlapping_the_ablation_seeds_are_refused():
    preset = get_preset("smoke", pilot=False)
    preset.sweep.seeds, preset.ablation.seeds = [0], [50]
    with pytest.raises(ValueError, match=r"pilot seeds \[50\]"):
        P.check_seeds([50], preset)


def test_gvt_sweep_pilot_refuses_overlapping_seeds(capsys, tmp_path):
    from experiments.cli import main

    code = main("sweep", ["pilot", "--preset", "smoke", "--seeds", "1", "--out", str(tmp_path / "run"),
                          "--pilot-file", str(tmp_path / "smoke.json")])
    assert code == 2
    assert "pilot seeds [1] are among the verdict seeds" in capsys.readouterr().err
    assert not (tmp_path / "smoke.json").exists() and not (tmp_path / "run").exists()


def test_a_committed_pilot_on_verdict_seeds_is_refused(tmp_path):
    path = _write_pilot(tmp_path / "smoke.json", seeds=(0,))
    with pytest.raises(ValueError, match="verdict seeds"):
        P.apply_pilot(get_preset("smoke", pilot=False), path)


def test_a_pilot_file_of_another_preset_is_refused(tmp_path):
    path = _write_pilot(tmp_path / "smoke.json", preset="quick")
    with pytest.raises(ValueError, match="pilot of preset 'quick', not of 'smoke'"):
        P.apply_pilot(get_preset("smoke", pilot=False), path)


# ---- the choice ------------------------------------------------------------------------------------------------


def _rows(cells):
    """Planted pilot rows: {(family, batch, multiplier): {seed: J}}."""
    return [{"kind": "sweep", "family": f, "batch_size": b, "lr_multiplier": m, "seed": s, "j": j}
            for (f, b, m), per_seed in cells.items() for s, j in per_seed.items()]


def test_choice_is_the_lowest_mean_validation_j():
    # the single best seed (3.0 at x0.5) is not the best mean (x2: 3.95 < 4.0 < 4.05)
    rows = _rows({("gan-gumbel", 1, 0.5): {10: 3.0, 11: 5.0}, ("gan-gumbel", 1, 1.0): {10: 3.5, 11: 4.6},
                  ("gan-gumbel", 1, 2.0): {10: 4.2, 11: 3.7},
                  ("gan-gumbel", 16, 0.5): {10: 2.0, 11: 2.2}, ("gan-gumbel", 16, 1.0): {10: 2.5, 11: 2.5},
                  ("gan-gumbel", 16, 2.0): {10: 2.4, 11: 2.9}})
    choices = {(c["family"], c["batch_size"]): c for c in P.choose(rows)}
    assert choices[("gan-gumbel", 1)]["multiplier"] == 2.0
    assert choices[("gan-gumbel", 16)]["multiplier"] == 0.5
    assert choices[("gan-gumbel", 1)]["mean_j"] == pytest.approx({"0.5": 4.0, "1": 4.05, "2": 3.95})
    assert choices[("gan-gumbel", 1)]["seeds"] == [10, 11]


def test_a_diverged_seed_loses_its_multiplier():
    rows = _rows({("transformer", 1, 0.5): {10: 4.0, 11: 4.0}, ("transformer", 1, 1.0): {10: 3.9, 11: 4.1},
                  ("transformer", 1, 2.0): {10: 1.0, 11: None}})
    (choice,) = P.choose(rows)
    assert choice["multiplier"] == 1.0 and choice["mean_j"]["2"] is None


def test_a_tie_goes_to_the_rule_s_own_rate():
    rows = _rows({("transformer", 8, 0.5): {3: 2.0}, ("transformer", 8, 1.0): {3: 2.0}, ("transformer", 8, 2.0): {3: 2.0}})
    assert P.choose(rows)[0]["multiplier"] == 1.0


def test_a_cell_missing_a_seed_is_an_error():
    rows = _rows({("transformer", 8, 0.5): {3: 2.0, 4: 2.0}, ("transformer", 8, 1.0): {3: 2.0}})
    with pytest.raises(ValueError, match="lacks seeds"):
        P.choose(rows)


# ---- the committed multipliers in the specs --------------------------------------------------------------------


def _specs(preset):
    preset.sweep.families = ["transformer", "gan-gumbel", "gan-gumbel-pt"]
    preset.sweep.pretrained_batch_sizes = [1, 8]
    return {(s["kind"], s["family"], s["batch_size"], s["seed"]): s for s in sweep_specs(preset.sweep, {})}


def _without(model: dict, paths: list[str]) -> dict:
    """The model arguments with the learning rates at ``paths`` blanked (what must not change)."""
    out = copy.deepcopy(model)
    for path in paths:
        set_arg(out, path, None)
    return out


@pytest.mark.parametrize("family, batch_size, multiplier", [("transformer", 1, 2.0), ("gan-gumbel", 8, 0.5),
                                                            ("gan-gumbel-pt", 1, 2.0)])
def test_a_pilot_file_scales_exactly_the_named_cell(tmp_path, family, batch_size, multiplier):
    path = _write_pilot(tmp_path / "smoke.json", choices=[{"family": family, "batch_size": batch_size,
                                                           "multiplier": multiplier}])
    before = _specs(get_preset("smoke", pilot=False))
    after = _specs(P.apply_pilot(get_preset("smoke", pilot=False), path))
    assert before.keys() == after.keys()
    named = 0
    for ident, old in before.items():
        new = after[ident]
        lr_args = [a for a in get_family(old["family"]).lr_args if get_arg(old["model"], a) is not None]
        assert lr_args
        if ident[1:3] == (family, batch_size):
            named += 1
            for a in lr_args:  # dotted paths into the nested arguments (a GAN's two rates)
                assert get_arg(new["model"], a) / get_arg(old["model"], a) == pytest.approx(multiplier, rel=1e-12)
            assert new["lr_multiplier"] == multiplier and new["key"] != old["key"]
            assert _without(new["model"], lr_args) == _without(old["model"], lr_args)
        else:
            assert new["model"] == old["model"] and "lr_multiplier" not in new
            if old["kind"] != "pretrained-arm":  # an arm's key names its pretrain run's, which is unchanged
                assert new["key"] == old["key"]
    assert named == len(get_preset("smoke", pilot=False).sweep.seeds)


def test_get_preset_reads_the_committed_pilot_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pilot_file, "PILOT_DIR", tmp_path)  # where presets look for the committed files
    assert get_preset("smoke").sweep.lr_pilot is None
    _write_pilot(tmp_path / "smoke.json")
    pilot = get_preset("smoke").sweep.lr_pilot
    assert pilot["multipliers"] == {"transformer": {"1": 2.0}}
    assert pilot["sha256"] == P.file_sha256(tmp_path / "smoke.json")
    assert get_preset("smoke", pilot=False).sweep.lr_pilot is None


def test_the_report_prints_the_multipliers(tmp_path):
    from dataclasses import asdict

    path = _write_pilot(tmp_path / "smoke.json")
    settings = asdict(P.apply_pilot(get_preset("smoke", pilot=False), path).sweep)
    text = "\n".join(P.report_section({"experiments": {"batch-size": {"settings": settings}}}))
    assert "| transformer | 1 | **2** | 4.000 | 3.900 | 3.500 |" in text
    assert P.report_section({"experiments": {"batch-size": {"settings": {"lr_pilot": None}}}}) == []


def test_choices_at_an_end_of_the_grid_are_named():
    rows = _rows({("transformer", 8, 0.5): {3: 2.5}, ("transformer", 8, 1.0): {3: 2.0}, ("transformer", 8, 2.0): {3: 2.2},
                  ("gan-gumbel", 8, 0.5): {3: 1.0}, ("gan-gumbel", 8, 1.0): {3: 2.0}, ("gan-gumbel", 8, 2.0): {3: 3.0}})
    assert P.edge_choices(P.choose(rows)) == ["gan-gumbel at 8"]


# ---- the pre-registration hash ---------------------------------------------------------------------------------


def _prereg_hash(run_dir, preset):
    from experiments.core.plan import register
    from experiments.core.verdicts import VerdictSettings, preregistration

    plan = register(run_dir, "batch-size", preset.name, preset.sweep, "gan-vs-transformer", group="g")
    return preregistration(plan, VerdictSettings())["hash"]


@pytest.mark.parametrize("change", ["multiplier", "evidence only"])
def test_the_preregistration_hash_changes_with_the_pilot_file(tmp_path, change):
    base = dict(family="transformer", batch_size=1, multiplier=2.0, mean_j={"0.5": 4.0, "1": 3.9, "2": 3.5})
    other = {**base, "multiplier": 0.5} if change == "multiplier" else {**base, "mean_j": {"0.5": 4.0, "1": 3.9,
                                                                                           "2": 3.6}}
    hashes = []
    for i, choice in enumerate([base, other]):
        (tmp_path / f"p{i}").mkdir()
        path = _write_pilot(tmp_path / f"p{i}" / "smoke.json", choices=[choice])
        hashes.append(_prereg_hash(tmp_path / f"run{i}", P.apply_pilot(get_preset("smoke", pilot=False), path)))
    without = _prereg_hash(tmp_path / "run-none", get_preset("smoke", pilot=False))
    assert len({*hashes, without}) == 3


# ---- validation-split evaluation -------------------------------------------------------------------------------


def test_pilot_runs_evaluate_on_the_validation_split(tmp_path, monkeypatch):
    """The smoke preset, one tiny family, one multiplier: the run reads the val split, never the test split."""
    from modules.data.base import SequenceDataModule
    from experiments.core.runner import run_one

    read = []
    for split in ("val", "test"):
        original = getattr(SequenceDataModule, f"{split}_dataloader")

        def spy(self, _original=original, _split=split):
            read.append(_split)
            if _split == "test":
                raise AssertionError("a pilot run read the test split")
            return _original(self)

        monkeypatch.setattr(SequenceDataModule, f"{split}_dataloader", spy)
    preset = get_preset("smoke", pilot=False)
    preset.sweep.batch_sizes = [8]
    specs = P.pilot_specs(preset, seeds=[100], multipliers=[1.0])
    assert [(s["family"], s["eval_split"], s["measure"]) for s in specs] == [("transformer", "val", {})]
    row = run_one(specs[0], tmp_path)
    assert row["eval_split"] == "val" and read == ["val", "val"]  # the init and the final evaluation
    assert math.isfinite(row["final"]["nll_test_per_token"]) and "model_entropy_per_token" in row["final"]
    logged = (tmp_path / "runs" / specs[0]["key"]).rglob("metrics.csv")
    header = next(iter(logged)).read_text().splitlines()[0]
    assert "val/nll_test_per_token" in header and "test/nll_test_per_token" not in header


@pytest.mark.slow
def test_the_smoke_pilot_writes_its_choices(tmp_path):
    target = tmp_path / "smoke.json"
    data = P.run_pilot("smoke", seeds=[100], out=tmp_path / "run", target=target, wandb_mode="disabled",
                       echo=lambda m: None)
    assert data == json.loads(target.read_text())
    assert data["seeds"] == [100] and data["run_dir"] == str(tmp_path / "run")
    assert {(c["family"], c["batch_size"]) for c in data["choices"]} == {("transformer", 1), ("transformer", 8)}
    for c in data["choices"]:
        assert {"0.5", "1", "2"} <= set(c["mean_j"]) and f"{c['multiplier']:g}" in c["mean_j"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) >= 6 and {r["eval_split"] for r in rows} == {"val"}
    assert {0.5, 1.0, 2.0} <= {r["lr_multiplier"] for r in rows}
    assert data["extension"]["still_at_an_end"] == P.edge_choices(data["choices"])
    preset = P.apply_pilot(get_preset("smoke", pilot=False), target)
    chosen = {(s["family"], s["batch_size"]): s["lr_multiplier"] for s in sweep_specs(preset.sweep, {})}
    assert chosen == {(c["family"], c["batch_size"]): c["multiplier"] for c in data["choices"]}


# ---- the grid extended at its ends -----------------------------------------------------------------------------


def _choice(family, batch_size, means):
    best = min(means, key=lambda m: (means[m] if means[m] is not None else math.inf, abs(math.log(m))))
    return {"family": family, "batch_size": batch_size, "multiplier": best,
            "mean_j": {f"{m:g}": v for m, v in means.items()}}


@pytest.mark.parametrize("means, expected", [
    ({0.5: 1.0, 1.0: 2.0, 2.0: 3.0}, 0.25),  # best at the low end: half it
    ({0.5: 3.0, 1.0: 2.0, 2.0: 1.0}, 4.0),  # best at the high end: double it
    ({0.5: 3.0, 1.0: 1.0, 2.0: 2.0}, None),  # interior: done
    ({1 / 16: 1.0, 0.125: 2.0, 0.25: 3.0}, None),  # at the cap: done
    ({0.5: 1.0, 1.0: None, 2.0: None}, 0.25),  # diverged at the other multipliers
])
def test_a_cell_at_an_end_of_its_grid_gets_the_next_multiplier_that_way(means, expected):
    more = P.extensions([_choice("transformer", 8, means)])
    assert more == ({} if expected is None else {("transformer", 8): expected})


def _planted_pilot(tmp_path, monkeypatch, **kw) -> tuple[dict, list[dict]]:
    """The smoke pilot with planted validation J: the transformer's best rate at x0.125, the GAN's beyond every
    cap (J keeps falling with the rate)."""
    ran: list[dict] = []

    class Done:
        failed: list = []

    def fake_execute(specs, out, **kw):
        ran.extend(specs)
        return Done()

    def planted_rows(out, specs):
        return [{**s, "j": (math.log2(s["lr_multiplier"]) + 3) ** 2 if s["family"] == "transformer"
                 else -math.log2(s["lr_multiplier"])} for s in specs if s["kind"] != "pretrain"]

    monkeypatch.setattr(P, "execute", fake_execute)
    monkeypatch.setattr(P, "pilot_rows", planted_rows)
    preset = get_preset("smoke", pilot=False)
    monkeypatch.setattr(P, "get_preset", lambda name, pilot: preset)
    preset.sweep.families = ["transformer", "gan-gumbel"]
    preset.sweep.batch_sizes = [8]
    data = P.run_pilot("smoke", seeds=[100], out=tmp_path / "run", target=tmp_path / "smoke.json",
                       wandb_mode="disabled", echo=lambda m: None, **kw)
    return data, ran


@pytest.mark.parametrize("rounds, transformer_best, tried", [
    (0, 0.5, {"0.5", "1", "2"}), (1, 0.25, {"0.25", "0.5", "1", "2"}), (2, 0.125, {"0.125", "0.25", "0.5", "1", "2"}),
])
def test_max_rounds_stops_the_extension_and_lists_the_cells_still_at_an_end(tmp_path, monkeypatch, rounds,
                                                                            transformer_best, tried):
    data, _ = _planted_pilot(tmp_path, monkeypatch, max_rounds=rounds)
    chosen = {c["family"]: c for c in data["choices"]}
    assert chosen["transformer"]["multiplier"] == transformer_best
    assert set(chosen["transformer"]["mean_j"]) == tried
    assert data["extension"]["max_rounds"] == rounds
    assert data["extension"]["still_at_an_end"] == ["gan-gumbel at 8", "transformer at 8"]


def test_a_negative_max_rounds_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--max-rounds must be >= 0"):
        P.run_pilot("smoke", seeds=[100], out=tmp_path / "run", max_rounds=-1, echo=lambda m: None)


def test_the_pilot_extends_the_grid_until_the_optimum_is_interior_or_the_cap(tmp_path, monkeypatch):
    """Planted validation J: the transformer's best rate lies at x0.125, the GAN's beyond every cap (J keeps
    falling with the rate). The pilot must find the first and report the second as still at an end."""
    data, ran = _planted_pilot(tmp_path, monkeypatch)
    chosen = {c["family"]: c for c in data["choices"]}
    assert chosen["transformer"]["multiplier"] == 0.125
    assert set(chosen["transformer"]["mean_j"]) == {"0.0625", "0.125", "0.25", "0.5", "1", "2"}
    assert chosen["gan-gumbel"]["multiplier"] == 16.0
    assert data["extension"]["still_at_an_end"] == ["gan-gumbel at 8"]
    assert len({s["key"] for s in ran}) == len(ran)  # no run twice


def test_plan_only_writes_the_preregistration_to_commit(tmp_path, capsys):
    from experiments.cli import main as cli_main
    from experiments.core.results import read_plan
    from experiments.core.verdicts import VerdictSettings, preregistration

    target = tmp_path / "prereg.json"
    assert cli_main("sweep", ["all", "--preset", "smoke", "--plan-only", "--out", str(tmp_path / "run"),
                              "--prereg-file", str(target)]) == 0
    written = json.loads(target.read_text())
    plan = read_plan(tmp_path / "run")
    assert written["hash"] == preregistration(plan, VerdictSettings.from_plan(plan))["hash"]
    assert f"pre-registration hash: {written['hash']}" in capsys.readouterr().err
    assert cli_main("sweep", ["all", "--preset", "smoke", "--out", str(tmp_path / "run2"),
                              "--prereg-file", str(target)]) == 2


def test_the_choice_table_leaves_untried_multipliers_blank_and_names_diverged_ones():
    choices = [{"family": "a", "batch_size": 1, "multiplier": 1.0, "mean_j": {"0.5": None, "1": 2.0, "2": 3.0}},
               {"family": "b", "batch_size": 1, "multiplier": 0.25, "mean_j": {"0.25": 1.0, "0.5": 2.0, "1": 3.0,
                                                                              "2": 4.0}}]
    lines = P.choice_table(choices)
    assert lines[2] == "| a | 1 | **1** |  | diverged | 2.000 | 3.000 |"
    assert lines[3] == "| b | 1 | **0.25** | 1.000 | 2.000 | 3.000 | 4.000 |"
