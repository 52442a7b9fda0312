"""The experiments layer's parts on their own: results table, plan, budgets, estimators, verdict rules (fast)."""

import json
import math
import multiprocessing

import pytest
import torch
from pathlib import Path

from experiments.core import verdicts as V
from experiments.core.families import get_family, lr_factor, register_family
from experiments.core.plan import PlanMismatch, register
from experiments.core.presets import get_preset
from experiments.core.results import ResultsTable
from experiments.core.scaling import updates_for
from experiments.core.stats import log_t_interval, seeds_needed, t_interval, t_quantile
from experiments.q2_batch_size.noise_scale import estimate_from_norms
from experiments.q2_batch_size.sweep import sweep_specs
from experiments.q4_temperature.temperature import dominated_fraction, lower_envelope, matched_gap

ROOT = Path(__file__).resolve().parents[1]


# ---- results table --------------------------------------------------------------------------------------------


def test_results_table_adds_each_key_once_and_round_trips_nan(tmp_path):
    table = ResultsTable(tmp_path)
    assert table.add({"key": "a", "x": 1.0, "nested": {"y": float("nan")}})
    assert not table.add({"key": "a", "x": 2.0})  # a finished row is never doubled
    assert table.add({"key": "b", "x": float("inf")})
    rows = table.rows()
    assert [r["key"] for r in rows] == ["a", "b"] and rows[0]["x"] == 1.0
    assert math.isnan(rows[0]["nested"]["y"]) and rows[1]["x"] == math.inf
    for line in (tmp_path / "results.jsonl").read_text().splitlines():
        json.loads(line)  # standard JSON, no bare NaN
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("key")
    assert not list(tmp_path.glob("*.tmp"))


def _add_rows(args):
    folder, worker = args
    table = ResultsTable(folder)
    return sum(table.add({"key": f"k{i}", "worker": worker}) for i in range(20))


def test_concurrent_writers_never_double_or_lose_a_row(tmp_path):
    with multiprocessing.get_context("fork").Pool(3) as pool:
        added = pool.map(_add_rows, [(str(tmp_path), w) for w in range(3)])
    rows = ResultsTable(tmp_path).rows()
    assert sum(added) == 20 and sorted(r["key"] for r in rows) == sorted(f"k{i}" for i in range(20))
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 20


def test_plan_accepts_a_grown_grid_and_refuses_changed_settings(tmp_path):
    preset = get_preset("smoke")
    plan = register(tmp_path, "batch-size", "smoke", preset.sweep, "p")
    preset.sweep.seeds = [0, 1, 2, 3]
    again = register(tmp_path, "batch-size", "smoke", preset.sweep, "p")
    assert again["group"] == plan["group"] and again["experiments"]["batch-size"]["grid"]["seeds"] == [0, 1, 2, 3]
    preset.sweep.budget_value += 1
    with pytest.raises(PlanMismatch, match="budget_value"):
        register(tmp_path, "batch-size", "smoke", preset.sweep, "p")


# ---- budgets, learning rates, specs ------------------------------------------------------------------------


def test_budgets_and_lr_scaling():
    assert updates_for("samples", 1024, 1) == 1024 and updates_for("samples", 1024, 3) == 342
    assert updates_for("steps", 100, 64) == 100
    with pytest.raises(ValueError):
        updates_for("samples", 0, 4)
    assert lr_factor(64, 16, "none") == 1.0 and lr_factor(64, 16, "linear") == 4.0
    assert lr_factor(4, 16, "sqrt") == pytest.approx(0.5)


def test_sweep_specs_scale_rates_and_key_runs_by_config():
    preset = get_preset("smoke")
    preset.sweep.families = ["transformer", "gan-gumbel"]
    specs = sweep_specs(preset.sweep, {"wandb_mode": "disabled"})
    assert len(specs) == 2 * 2 * 2 and len({s["key"] for s in specs}) == len(specs)
    by = {(s["family"], s["batch_size"], s["seed"]): s for s in specs}
    t1, t8 = by[("transformer", 1, 0)], by[("transformer", 8, 0)]
    assert t1["model"]["lr"] == pytest.approx(t8["model"]["lr"] / math.sqrt(8))
    g1 = by[("gan-gumbel", 1, 0)]
    assert g1["model"]["game"]["max_g_updates"] == g1["budget"]["updates"] == 32
    assert g1["model"]["generator"]["lr"] == pytest.approx(by[("gan-gumbel", 8, 0)]["model"]["generator"]["lr"]
                                                           / math.sqrt(8))  # lr_args are paths into the sections
    assert g1["model"]["discriminator"]["lr"] == pytest.approx(by[("gan-gumbel", 8, 0)]["model"]["discriminator"]["lr"]
                                                               / math.sqrt(8))
    assert "temperatures" in t8["measure"] and "noise" in t8["measure"] and not t1["measure"]
    # the key changes with anything that changes the numbers, not with tracking
    other = sweep_specs(preset.sweep, {"wandb_mode": "offline", "group": "x"})
    assert [s["key"] for s in other] == [s["key"] for s in specs]
    preset.sweep.budget_value = 64
    assert sweep_specs(preset.sweep, {})[0]["key"] != specs[0]["key"]


def test_family_registry_resolves_gan_families_and_rejects_unknown_arguments():
    assert get_family("gan-reinforce").class_path == "modules.models.TextGAN"
    assert get_family("gan-reinforce").defaults == {"game": {"estimator": "reinforce"}}
    # a section merges into the family's defaults; a misspelled key inside a section is named with its section
    gan = get_family("gan-reinforce").init_kwargs({"game": {"d_steps": 2}})
    assert gan["game"] == {"estimator": "reinforce", "d_steps": 2}
    with pytest.raises(ValueError, match=r"game\.d_stepz"):
        get_family("gan-reinforce").init_kwargs({"game": {"d_stepz": 2}})
    with pytest.raises(ValueError, match="unknown family"):
        get_family("vae")
    fam = register_family("test-transformer-ls", "modules.models.TransformerSeq2Seq", {"label_smoothing": 0.1})
    assert fam.init_kwargs({"lr": 1e-3}) == {"label_smoothing": 0.1, "lr": 1e-3}
    with pytest.raises(ValueError, match="no argument"):
        fam.init_kwargs({"learning_rate": 1e-3})


# ---- statistics and estimators ---------------------------------------------------------------------------------


def test_t_interval_matches_known_values():
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.high - iv.mean == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert not t_interval([1.0]).defined and t_interval([None, float("nan")]).n == 0
    g = log_t_interval([10.0, 1000.0])
    assert g.mean == pytest.approx(100.0) and g.low < 100 < g.high


def test_noise_scale_estimator_recovers_a_known_noise_scale():
    """Per-example gradients g_i = G + noise with known |G|^2 and tr(Sigma): B_simple = tr(Sigma) / |G|^2."""
    gen = torch.Generator().manual_seed(0)
    dim, G = 50, torch.full((50,), 0.2)  # |G|^2 = 2
    sigma = 1.5  # tr(Sigma) = 50 * 2.25 = 112.5 -> B_simple = 56.25
    b, k, rounds = 2, 16, 400
    small, big = [], []
    for _ in range(rounds):
        grads = [G + sigma * torch.randn(b, dim, generator=gen).mean(0) for _ in range(k)]
        small.append(sum(float(g.dot(g)) for g in grads) / k)
        mean = torch.stack(grads).mean(0)
        big.append(float(mean.dot(mean)))
    est = estimate_from_norms(small, big, b, b * k)
    assert est["grad_norm_sq"] == pytest.approx(2.0, rel=0.1)
    assert est["trace_sigma"] == pytest.approx(112.5, rel=0.05)
    assert est["b_simple"] == pytest.approx(56.25, rel=0.15) and est["b_simple_se"] < 10


def test_noise_scale_is_nan_when_no_signal_is_detectable():
    est = estimate_from_norms([1.0, 1.0], [0.4, 0.4], 1, 2)  # |G|^2 estimate = 2*0.4 - 1 < 0
    assert math.isnan(est["b_simple"]) and est["trace_sigma"] > 0


def test_dominated_fraction_geometry():
    curve = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]  # lower-left is better
    assert dominated_fraction(curve, [(2.5, 2.5), (3.5, 1.5)]) == 1.0  # above the polyline, both dominated
    assert dominated_fraction(curve, [(1.5, 2.0), (0.5, 0.5)]) == 0.0  # below it
    assert dominated_fraction(curve, [(1.5, 2.5), (0.5, 4.0)]) == 0.5  # on a segment counts; far left does not


# ---- intervals, seeds, curves and the pre-registration -----------------------------------------------------------


@pytest.mark.parametrize("p, df, table", [(0.975, 10, 2.228), (0.995, 2, 9.925), (0.995, 5, 4.032),
                                          (0.9995, 3, 12.924), (0.95, 30, 1.697)])
def test_t_quantile_matches_printed_tables(p, df, table):
    assert t_quantile(p, df) == pytest.approx(table, abs=1e-3)
    assert t_quantile(1 - p, df) == pytest.approx(-table, abs=1e-3)


def test_a_holm_level_widens_the_interval():
    xs = [1.0, 2.0, 3.0, 2.5]
    assert t_interval(xs, level=1 - 0.05 / 6).low < t_interval(xs).low
    assert t_interval(xs, level=1 - 0.05 / 6).level == pytest.approx(1 - 0.05 / 6)


def test_seeds_needed_halves_the_sesoi():
    # t(0.975, 17) = 2.110: 2.110 / sqrt(18) = 0.497 <= 0.5, while t(0.975, 16) = 2.120: 2.120 / sqrt(17) = 0.514
    assert seeds_needed(pilot_std=1.0, sesoi=1.0) == 18
    assert seeds_needed(pilot_std=2.0, sesoi=1.0) > 18 and seeds_needed(1.0, 2.0) < 18
    assert seeds_needed(1.0, 1.0, level=1 - 0.05 / 6) > 18  # a Holm-adjusted level needs more
    with pytest.raises(ValueError, match="same value"):
        seeds_needed(0.0, 1.0)
    with pytest.raises(ValueError, match="smallest effect"):
        seeds_needed(1.0, 0.0)


def test_lower_envelope_keeps_the_best_quality_reached_at_each_diversity():
    # sharpening (first points) trades coverage for quality; past T = 1 both get worse (the curve folds back)
    curve = [(5.0, 1.0), (4.0, 2.0), (4.5, 3.0)]
    env = lower_envelope(curve, per_segment=4)
    at = lambda x: env[1][max(i for i, v in enumerate(env[0]) if v <= x + 1e-9)]  # noqa: E731
    # at x = 4.5 the interpolated first segment reaches 1.5; the folded-back point (4.5, 3) never counts
    assert at(4.0) == pytest.approx(2.0) and at(4.5) == pytest.approx(1.5) and at(5.0) == pytest.approx(1.0)


def test_matched_gap_measures_vertical_and_horizontal_offsets():
    line = [(4.0, 7.0), (5.0, 6.0), (6.0, 5.0)]
    worse = [(x, y + 0.5) for x, y in line]
    assert matched_gap(line, worse, "diversity") == pytest.approx(0.5)
    assert matched_gap(worse, line, "diversity") == pytest.approx(-0.5)
    assert matched_gap(line, worse, "quality") == pytest.approx(0.5)  # the line is at slope -1
    assert matched_gap(line, [(x + 10, y) for x, y in line], "diversity") is None  # never a common diversity


def test_preregistration_hash_pins_seeds_budgets_and_sesois():
    plan = {"created": "today", "group": "g1", "experiments": {"batch-size": {
        "preset": "quick", "settings": {"budget_value": 512, "models": {"transformer": {"lr": 0.002}}},
        "grid": {"seeds": [0, 1, 2]}}}}
    base = V.preregistration(plan, V.VerdictSettings())["hash"]
    assert V.preregistration({**plan, "created": "tomorrow", "group": "g2"}, V.VerdictSettings())["hash"] == base
    more_seeds = json.loads(json.dumps(plan))
    more_seeds["experiments"]["batch-size"]["grid"]["seeds"] = [0, 1, 2, 3]
    other_lr = json.loads(json.dumps(plan))
    other_lr["experiments"]["batch-size"]["settings"]["models"]["transformer"]["lr"] = 0.004
    other_sesoi = V.VerdictSettings(sesoi={**V.DEFAULT_SESOI, "Q2": 0.2})
    assert len({base, V.preregistration(more_seeds, V.VerdictSettings())["hash"],
                V.preregistration(other_lr, V.VerdictSettings())["hash"],
                V.preregistration(plan, other_sesoi)["hash"]}) == 4


def test_preregistration_hash_does_not_depend_on_the_grids_order():
    def plan(families, sizes, seeds):
        return {"experiments": {"batch-size": {"preset": "quick", "settings": {"budget_value": 512},
                                               "grid": {"families": families, "batch_sizes": sizes, "seeds": seeds}}}}
    base = V.preregistration(plan(["transformer", "gan-gumbel"], [4, 16, 64], [0, 1]), V.VerdictSettings())
    shuffled = V.preregistration(plan(["gan-gumbel", "transformer"], [64, 4, 16], [1, 0]), V.VerdictSettings())
    assert shuffled["hash"] == base["hash"]
    assert base["settings"]["experiments"]["batch-size"]["grid"]["batch_sizes"] == [4, 16, 64]  # by value, not text
    assert V.preregistration(plan(["transformer", "gan-gumbel"], [4, 16, 32], [0, 1]),
                             V.VerdictSettings())["hash"] != base["hash"]  # another cell is another registration
    assert V.preregistration_hash(shuffled["settings"]) == base["hash"]


@pytest.mark.parametrize("report_dir, preset", [("example_report", "quick"), ("standard_report", "standard")])
def test_each_committed_report_was_judged_by_its_committed_preregistration(report_dir, preset):
    # the report's recorded settings and the file committed before its run, re-hashed: one registration
    report = json.loads((ROOT / "docs" / report_dir / "verdicts.json").read_text())["preregistration"]
    committed = json.loads((ROOT / "configs/preregistration" / f"{preset}.json").read_text())
    assert V.preregistration_hash(report["settings"]) == committed["hash"]
    assert V.preregistration_hash(committed["settings"]) == committed["hash"]


def test_verdict_settings_come_from_the_plan_and_reject_unknown_names():
    s = V.VerdictSettings.from_plan({"verdicts": {"sesoi": {"Q2": 0.2}, "min_seeds": 4}})
    assert s.sesoi["Q2"] == 0.2 and s.sesoi["Q1"] == V.DEFAULT_SESOI["Q1"] and s.min_seeds == 4
    with pytest.raises(ValueError, match="sesio"):
        V.VerdictSettings.from_plan({"verdicts": {"sesio": {}}})


def test_usable_compares_the_upper_bound_of_j_with_the_counted_bigram():
    from experiments.core.baselines import usable

    def rows(j, spread=0.01):
        return [{"family": "gan-gumbel", "adversarial": True, "seed": s,
                 "reference": {"oracle_entropy_per_token": 3.0, "unigram": {"j": 4.5}, "bigram": {"j": 3.5}},
                 "final": {"nll_test_per_token": 3.0 + j / 2 + spread * s, "nll_oracle_per_token": 5.0 + j / 2,
                           "model_entropy_per_token": 5.0}} for s in range(4)]

    ok, why, iv = usable(rows(3.0))
    assert ok is True and "bigram" in why and "margin" in why and iv.high < 3.5
    ok, why, _ = usable(rows(4.0))  # below the unigram, above the bigram: not enough
    assert ok is False and "GAN not usable" in why and "bigram" in why
    ok, why, iv = usable(rows(3.45, spread=0.1))  # the interval straddles the bigram: not shown to be better
    assert ok is None and iv.low < 3.5 < iv.high and "above it" in why
    no_entropy = rows(3.0)
    for r in no_entropy:
        del r["final"]["model_entropy_per_token"]
    ok, why, _ = usable(no_entropy)
    assert ok is None and "model_entropy_per_token" in why
    no_bigram = rows(3.0)
    for r in no_bigram:
        del r["reference"]["bigram"]
    ok, why, _ = usable(no_bigram)
    assert ok is None and "no bigram baseline" in why


def test_progress_line_shows_the_models_own_mi_and_labels_the_oracle_bound():
    from experiments.core.execute import _summary

    row = {"key": "gan-gumbel__bs16__label-s1.0-z8__seed0__abc", "final": {"nll_oracle_per_token": 7.0},
           "wall_time_s": 1.0, "probes": {"mi_self": 0.011, "mi_oracle": 1.386, "accuracy": 0.239,
                                          "chance_accuracy": 0.25, "mi_model": -1.276}}
    line = _summary(row)
    assert "own MI 0.011/1.386" in line and "condition accuracy 0.24 (chance 0.25)" in line
    assert "oracle bound -1.276" in line and "MI -1.276/" not in line
