"""Planted effects for verdict C4 (experiments.c4_transfer.verdict): synthetic classifier rows with a known
difference between the pretrained and the scratch arm reach every outcome of the rule, and the gate."""

import math

import pytest

from experiments.c4_transfer.settings import SESOI
from experiments.c4_transfer.verdict import labels_to_match, verdict
from experiments.core.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED

SIZES = {"50": 50, "100": 100, "500": 500, "all": 7464}
# small, fixed per-seed wobbles (no randomness in a test): the intervals are never of zero width
WOBBLE = [0.004, -0.006, 0.002, -0.003, 0.005, -0.001, 0.003, -0.004]


# counted baselines that the learned(0.60) classifier beats at every size (its "all" accuracy is 0.72)
BASELINES = {"naive_bayes": {"50": 0.55, "100": 0.57, "500": 0.62, "all": 0.68},
             "logistic": {"50": 0.53, "100": 0.56, "500": 0.60, "all": 0.66}}


def baseline_rows_for(seeds, accuracy=BASELINES):
    return [{"key": f"baseline__{m}__n{size}__seed{seed}", "kind": "baseline", "method": m, "seed": seed,
             "size": size, "n_labels": SIZES[size], "accuracy": acc}
            for seed in seeds for m, by_size in accuracy.items() for size, acc in by_size.items()]


def rows_for(seeds, pretrained, scratch, majority=0.5, body="lstm", primary_size=100, baselines=BASELINES):
    """Classifier rows: ``pretrained(size, k)`` / ``scratch(size, k)`` give the accuracy of seed index k; the
    counted baselines' rows (``baselines``; None: none) beside them."""
    rows = [] if baselines is None else baseline_rows_for(seeds, baselines)
    for k, seed in enumerate(seeds):
        for size, n in SIZES.items():
            for arm, fn in (("pretrained", pretrained), ("scratch", scratch)):
                rows.append({"key": f"clf__{body}__{arm}__n{size}__seed{seed}", "kind": "classifier", "body": body,
                             "arm": arm, "seed": seed, "size": size, "n_labels": n, "accuracy": fn(size, k),
                             "majority_accuracy": majority, "primary_body": body, "primary_size": primary_size,
                             "updates": 60, "num_test": 2132})
    return rows


def learned(base):  # a classifier that learns: accuracy grows with the labelled-set size
    return lambda size, k: {"50": base, "100": base + 0.02, "500": base + 0.06, "all": base + 0.12}[size] + WOBBLE[k]


def shifted(fn, delta_at_100, wobble_scale=0.0):
    def acc(size, k):
        extra = delta_at_100 if size == "100" else 0.0
        return fn(size, k) + extra + wobble_scale * WOBBLE[(k + 3) % len(WOBBLE)]
    return acc


SEEDS5 = [0, 1, 2, 3, 4]


@pytest.mark.parametrize("delta, noise, expected, why", [
    (0.12, 1.0, SUPPORTED, "above 0 and at least the SESOI"),  # transfer helps a lot at 100 labels
    (-0.08, 1.0, NOT_SUPPORTED, "excludes every effect"),  # scratch is better: the opposite effect
    (0.0, 1.0, NOT_SUPPORTED, "excludes every effect"),  # no difference: the interval excludes the SESOI
    (0.04, 4.0, INCONCLUSIVE, "above 0 but the estimate is below the SESOI"),
])
def test_planted_difference_reaches_each_outcome(delta, noise, expected, why):
    scratch = learned(0.60)
    pretrained = shifted(learned(0.60), delta, wobble_scale=noise)
    v = verdict(rows_for(SEEDS5, pretrained, scratch))
    assert v.question == "C4"
    assert v.verdict == expected, v.reason
    assert why in v.reason


def test_wide_interval_reaching_both_sides_is_inconclusive():
    noisy = lambda size, k: learned(0.60)(size, k) + (0.1 * (-1) ** k if size == "100" else 0.0)  # noqa: E731
    v = verdict(rows_for([0, 1, 2], shifted(noisy, 0.02), learned(0.60)))
    assert v.verdict == INCONCLUSIVE
    assert "both below 0 and the SESOI" in v.reason


def test_primary_cell_holds_the_paired_per_seed_differences():
    pretrained = shifted(learned(0.60), 0.10, wobble_scale=1.0)
    scratch = learned(0.60)
    v = verdict(rows_for(SEEDS5, pretrained, scratch))
    cell = v.primary_cell
    planted = [pretrained("100", k) - scratch("100", k) for k in range(5)]
    assert cell.values == pytest.approx(planted)
    assert v.margin == SESOI == cell.margin


def test_too_few_seeds_is_inconclusive():
    v = verdict(rows_for([0, 1], shifted(learned(0.60), 0.2, 1.0), learned(0.60)))
    assert v.verdict == INCONCLUSIVE
    assert "too few seeds" in v.reason


@pytest.mark.parametrize("failing_arm", ["pretrained", "scratch"])
def test_a_classifier_at_chance_fails_the_precondition(failing_arm):
    good = shifted(learned(0.60), 0.15, wobble_scale=1.0)
    at_chance = lambda size, k: 0.5 + WOBBLE[k] / 4  # noqa: E731  never above the majority class
    arms = {"pretrained": good, "scratch": learned(0.60)}
    arms[failing_arm] = at_chance
    v = verdict(rows_for(SEEDS5, arms["pretrained"], arms["scratch"]))
    assert v.verdict == INCONCLUSIVE
    assert "precondition failed" in v.reason and failing_arm in v.reason
    assert v.primary_cell.precondition_met is False


def test_missing_primary_size_is_not_run():
    rows = [r for r in rows_for(SEEDS5, learned(0.7), learned(0.6)) if r["size"] != "100"]
    v = verdict(rows)
    assert v.verdict == INCONCLUSIVE
    assert v.reason.startswith("not run")


def test_no_rows_is_inconclusive():
    v = verdict([])
    assert v.verdict == INCONCLUSIVE


def test_equal_differences_give_no_interval():
    same = lambda size, k: 0.7  # noqa: E731
    v = verdict(rows_for([0, 1, 2], lambda size, k: 0.8, same))
    assert v.verdict == INCONCLUSIVE
    assert "no spread" in v.reason


def test_min_seeds_and_alpha_are_the_callers():
    rows = rows_for([0, 1, 2], shifted(learned(0.60), 0.12, 1.0), learned(0.60))
    assert verdict(rows, min_seeds=3).verdict == SUPPORTED
    assert verdict(rows, min_seeds=4).verdict == INCONCLUSIVE


def test_secondary_cells_cover_every_other_size_without_a_margin():
    pretrained, scratch = shifted(learned(0.60), 0.12, 1.0), learned(0.60)
    v = verdict(rows_for(SEEDS5, pretrained, scratch))
    assert set(v.cells) == {"difference_n50", "difference_n100", "difference_n500", "difference_nall"}
    assert v.primary == "difference_n100"
    assert all(c.margin is None for name, c in v.cells.items() if name != v.primary)
    planted = [pretrained("500", k) - scratch("500", k) for k in range(5)]
    assert v.cells["difference_n500"].values == pytest.approx(planted)


@pytest.mark.parametrize("scratch_at, expected", [
    ({"50": 0.60, "100": 0.62, "500": 0.67, "all": 0.72}, "all"),  # the pretrained classifier has 0.70 at 100
    ({"50": 0.60, "100": 0.64, "500": 0.71, "all": 0.76}, "500"),
    ({"50": 0.70, "100": 0.72, "500": 0.75, "all": 0.80}, "50"),
])
def test_labels_to_match_is_the_first_size_where_scratch_catches_up(scratch_at, expected):
    pretrained = lambda size, k: 0.70 if size == "100" else 0.9  # noqa: E731
    rows = rows_for([0], pretrained, lambda size, k: scratch_at[size])
    assert labels_to_match(rows, "lstm", "100") == {0: expected}


def test_labels_to_match_says_none_when_scratch_never_catches_up():
    rows = rows_for([0], lambda size, k: 0.95, lambda size, k: 0.6)
    assert labels_to_match(rows, "lstm", "100") == {0: None}


def test_other_body_is_reported_beside_the_primary():
    rows = rows_for(SEEDS5, shifted(learned(0.6), 0.12, 1.0), learned(0.6))
    rows += rows_for(SEEDS5, learned(0.6), learned(0.6), body="transformer", primary_size=100)
    for r in rows:
        r["primary_body"] = "lstm"
    v = verdict(rows)
    assert v.verdict == SUPPORTED
    assert "difference_n100_transformer" in v.cells
    assert not any(math.isnan(x) for x in v.cells["difference_n100_transformer"].values)


# ---- the counted-baseline gate -------------------------------------------------------------------------------


@pytest.mark.parametrize("failing_arm", ["pretrained", "scratch"])
def test_an_arm_that_learns_but_not_past_naive_bayes_fails_the_gate(failing_arm):
    # both arms learn (far above chance and majority), but one ends at 0.70 with all labels, below Naive Bayes' 0.74
    strong_baselines = {"naive_bayes": {**BASELINES["naive_bayes"], "all": 0.74}, "logistic": BASELINES["logistic"]}
    arms = {"pretrained": shifted(learned(0.64), 0.12, 1.0), "scratch": learned(0.64)}  # "all": 0.76
    arms[failing_arm] = lambda size, k: learned(0.58)(size, k)  # "all": 0.70
    v = verdict(rows_for(SEEDS5, arms["pretrained"], arms["scratch"], baselines=strong_baselines))
    assert v.verdict == INCONCLUSIVE
    assert "precondition failed" in v.reason and failing_arm in v.reason and "naive_bayes 0.740" in v.reason
    assert "margin -0.040" in v.reason  # the failing arm's mean 0.700 minus the baseline's 0.740, printed
    assert v.primary_cell.precondition_met is False


def test_gate_reads_the_better_baseline_whichever_it_is():
    # logistic regression is the stronger baseline here (0.75 with all labels): both arms at 0.72 fail against it
    baselines = {"naive_bayes": BASELINES["naive_bayes"], "logistic": {**BASELINES["logistic"], "all": 0.75}}
    v = verdict(rows_for(SEEDS5, shifted(learned(0.60), 0.12, 1.0), learned(0.60), baselines=baselines))
    assert v.verdict == INCONCLUSIVE
    assert "logistic 0.750" in v.reason


def test_gate_holds_when_both_arms_beat_the_baselines_and_prints_their_margins():
    v = verdict(rows_for(SEEDS5, shifted(learned(0.60), 0.12, 1.0), learned(0.60)))
    assert v.verdict == SUPPORTED
    cell = v.primary_cell
    assert cell.precondition_met is True
    assert "naive_bayes 0.680" in cell.precondition and "logistic 0.660" in cell.precondition
    assert "margin +0.040" in cell.precondition  # both arms' mean 0.720 at "all" minus 0.680


def test_a_null_effect_that_passes_the_gate_is_still_not_supported():
    v = verdict(rows_for(SEEDS5, learned(0.60), learned(0.60)))  # identical but for the wobble: no transfer effect
    assert v.primary_cell.precondition_met is True
    assert v.verdict in (NOT_SUPPORTED, INCONCLUSIVE)
    assert v.verdict != SUPPORTED


def test_gate_reads_the_largest_size_not_a_smaller_one():
    # at 500 labels the arms (0.66) are below Naive Bayes' 0.70, but with all labels (0.72) they are above 0.68
    baselines = {"naive_bayes": {**BASELINES["naive_bayes"], "500": 0.70}, "logistic": BASELINES["logistic"]}
    v = verdict(rows_for(SEEDS5, shifted(learned(0.60), 0.12, 1.0), learned(0.60), baselines=baselines))
    assert v.verdict == SUPPORTED


def test_no_baseline_rows_is_inconclusive_not_a_verdict():
    v = verdict(rows_for(SEEDS5, shifted(learned(0.60), 0.12, 1.0), learned(0.60), baselines=None))
    assert v.verdict == INCONCLUSIVE
    assert "no counted baseline rows" in v.reason


def test_too_few_seeds_still_inconclusive_when_the_gate_holds():
    v = verdict(rows_for([0, 1], shifted(learned(0.60), 0.2, 1.0), learned(0.60)))
    assert v.verdict == INCONCLUSIVE
    assert "too few seeds" in v.reason


# ---- the adaptation-only arm -----------------------------------------------------------------------------------


def with_adapt_only(rows, adapt_only):
    """``rows`` plus an adapt_only arm's classifier rows (``adapt_only(size, k)``), beside the other two."""
    extra = []
    seeds = sorted({r["seed"] for r in rows if r["kind"] == "classifier"})
    for k, seed in enumerate(seeds):
        for size, n in SIZES.items():
            extra.append({"key": f"clf__lstm__adapt_only__n{size}__seed{seed}", "kind": "classifier", "body": "lstm",
                          "arm": "adapt_only", "seed": seed, "size": size, "n_labels": n,
                          "accuracy": adapt_only(size, k), "majority_accuracy": 0.5, "primary_body": "lstm",
                          "primary_size": 100, "updates": 60, "num_test": 2132})
    return rows + extra


def test_adapt_only_cells_hold_the_planted_shares_of_each_stage():
    scratch = learned(0.60)
    adapt = shifted(learned(0.60), 0.06, wobble_scale=1.0)
    pretrained = shifted(learned(0.60), 0.10, wobble_scale=0.5)
    v = verdict(with_adapt_only(rows_for(SEEDS5, pretrained, scratch), adapt))
    assert v.cells["adapt_only_minus_scratch_n100"].values == pytest.approx(
        [adapt("100", k) - scratch("100", k) for k in range(5)])
    assert v.cells["pretrained_minus_adapt_only_n100"].values == pytest.approx(
        [pretrained("100", k) - adapt("100", k) for k in range(5)])
    assert v.verdict == SUPPORTED  # the primary cell is still pretrained - scratch


def test_adapt_only_at_chance_neither_decides_nor_gates_the_primary_cell():
    at_chance = lambda size, k: 0.5 + WOBBLE[k] / 4  # noqa: E731
    rows = rows_for(SEEDS5, shifted(learned(0.60), 0.12, 1.0), learned(0.60))
    v = verdict(with_adapt_only(rows, at_chance))
    assert v.verdict == SUPPORTED and v.primary_cell.precondition_met is True


@pytest.mark.parametrize("failing_arm", ["pretrained", "scratch"])
def test_the_gate_still_holds_both_primary_arms_with_adapt_only_beside_them(failing_arm):
    good, at_chance = shifted(learned(0.60), 0.15, wobble_scale=1.0), (lambda size, k: 0.5 + WOBBLE[k] / 4)
    arms = {"pretrained": good, "scratch": learned(0.60)}
    arms[failing_arm] = at_chance
    v = verdict(with_adapt_only(rows_for(SEEDS5, arms["pretrained"], arms["scratch"]), learned(0.70)))
    assert v.verdict == INCONCLUSIVE and "precondition failed" in v.reason and failing_arm in v.reason


# ---- the learning-rate pilot -----------------------------------------------------------------------------------


def _pilot_settings(**pilot):
    from dataclasses import replace

    from experiments.c4_transfer.settings import smoke

    return replace(smoke(), bodies=["lstm"], pilot={"seed": 1000, "lrs": [1e-3, 3e-3, 1e-2], "sizes": [20, "all"],
                                                    **pilot})


def _pilot_rows(val, test=None):
    """Pilot rows: ``val(arm, lr, size)`` their validation accuracy, ``test`` (default: val) their test accuracy."""
    test = test or val
    return [{"key": f"pilot__lstm__{arm}__n{size}__lr{lr}", "kind": "pilot", "body": "lstm", "arm": arm,
             "seed": 1000, "size": size, "lr": lr, "val_accuracy": val(arm, lr, size),
             "accuracy": test(arm, lr, size)}
            for arm in ("pretrained", "adapt_only", "scratch") for lr in (1e-3, 3e-3, 1e-2) for size in ("20", "all")]


def test_pilot_chooses_each_arms_best_validation_rate():
    from experiments.c4_transfer.pilot import choose_rates

    best = {"pretrained": 1e-3, "adapt_only": 3e-3, "scratch": 1e-2}  # planted: each arm peaks elsewhere
    val = lambda arm, lr, size: 0.7 - (0.05 if lr != best[arm] else 0.0) + (0.03 if size == "all" else 0.0)  # noqa
    choices = choose_rates(_pilot_settings(), _pilot_rows(val))
    assert choices["lr"] == {"lstm": best}
    assert choices["val_accuracy"]["lstm"]["scratch"]["0.01"] == pytest.approx(0.715)


def test_pilot_reads_validation_never_test_accuracy():
    from experiments.c4_transfer.pilot import choose_rates

    val = lambda arm, lr, size: 0.7 if lr == 3e-3 else 0.6  # noqa: E731
    test = lambda arm, lr, size: 0.9 if lr == 1e-2 else 0.5  # noqa: E731  the test split prefers another rate
    choices = choose_rates(_pilot_settings(), _pilot_rows(val, test))
    assert set(choices["lr"]["lstm"].values()) == {3e-3}


def test_pilot_averages_over_its_sizes_and_breaks_ties_by_the_first_rate():
    from experiments.c4_transfer.pilot import choose_rates

    # 1e-2 is best at 20 labels but worst at all labels; 1e-3 and 3e-3 tie on the mean
    table = {(1e-3, "20"): 0.6, (1e-3, "all"): 0.8, (3e-3, "20"): 0.6, (3e-3, "all"): 0.8, (1e-2, "20"): 0.75,
             (1e-2, "all"): 0.5}
    choices = choose_rates(_pilot_settings(), _pilot_rows(lambda arm, lr, size: table[(lr, size)]))
    assert set(choices["lr"]["lstm"].values()) == {1e-3}


def test_pilot_with_missing_runs_refuses_to_choose():
    from experiments.c4_transfer.pilot import choose_rates
    from modules.errors import ConfigError

    rows = [r for r in _pilot_rows(lambda arm, lr, size: 0.7) if not (r["arm"] == "scratch" and r["lr"] == 1e-2
                                                                       and r["size"] == "all")]
    with pytest.raises(ConfigError, match="the lstm scratch pilot at lr 0.01 has 1 of 2 finished runs"):
        choose_rates(_pilot_settings(), rows)


def test_no_pilot_gives_every_arm_the_fixed_rate():
    from dataclasses import replace

    from experiments.c4_transfer.settings import smoke
    from experiments.c4_transfer.pilot import choose_rates

    settings = replace(smoke(), pilot=None)
    choices = choose_rates(settings, [])
    assert choices["lr"]["lstm"] == {a: settings.finetune["lr"] for a in settings.arms}
