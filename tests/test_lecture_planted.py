"""Planted effects for the C3 verdict function (experiments/c3_attention/claim.py) and Holm across the lecture's claims:
scored rows with a known effect, each way, a null, too few seeds and a failed precondition reach all three
outcomes; also an alignment above chance that a positional pattern explains, and the masking test. C1's rule has its
own planted effects (tests/test_parallel_verdict.py)."""

import random

import pytest

from experiments.c1_parallel.verdict import c1_verdict
from experiments.c3_attention.claim import C3_SESOI, MIN_TASK_ACCURACY, baseline_of, c3_verdict
from experiments.core import verdicts as V
from tests.test_parallel_verdict import timings

# ---- C3 ---------------------------------------------------------------------------------------------------------

def scored_rows(delta: float, *, seeds=5, noise=0.03, token_accuracy=0.97, tasks=("copy", "reverse", "sort"),
                families=("rnn-attention", "transformer"), seed=0, family_delta=None, positional=None,
                flips=(0.8, 0.1)) -> list[dict]:
    """Rows as ``score_task_run`` writes them. Positional baseline per task: 1 on copy and reverse (the diagonal,
    the anti-diagonal), about chance on sort unless ``positional`` ({task: baseline - chance}) says otherwise;
    alignment accuracy = max(chance, positional) + delta + noise on sort, a near-perfect 0.97 on the positional
    tasks (which no alignment can beat there). ``flips``: the masking test's (attended, random) change rates."""
    rng = random.Random(seed)
    rows = []
    for family in families:
        d = (family_delta or {}).get(family, delta)
        for task in tasks:
            for s in range(seeds):
                chance = 0.15 + 0.01 * rng.random()
                pos = 1.0 if task in ("copy", "reverse") else chance - 0.005
                if positional and task in positional:
                    pos = chance + positional[task]
                acc = 0.97 if task in ("copy", "reverse") else max(chance, pos) + d
                rows.append({"family": family, "task": task, "seed": s, "token_accuracy": token_accuracy,
                             "exact_match": 0.9, "alignment_chance": chance, "alignment_positional": pos,
                             "alignment_accuracy": min(1.0, max(0.0, acc + rng.gauss(0.0, noise))),
                             "mask_flip_attended": flips[0], "mask_flip_random": flips[1]})
    return rows


@pytest.mark.parametrize("delta, noise, expected", [
    (0.6, 0.03, V.SUPPORTED),
    (-0.1, 0.03, V.NOT_SUPPORTED),  # attention that avoids the true position: below the baseline
    (0.0, 0.03, V.NOT_SUPPORTED),  # a precise null
    (0.0, 0.5, V.INCONCLUSIVE),  # a noisy null
])
def test_c3_outcomes(delta, noise, expected):
    v = c3_verdict(scored_rows(delta, noise=noise))
    assert v.verdict == expected, v.reason
    assert v.primary == "alignment_above_baseline" and v.margin == C3_SESOI


def test_c3_primary_cell_is_alignment_minus_the_larger_baseline_on_the_primary_tasks_per_seed():
    # sort's positional baseline planted below chance (finite-sample noise can do that): chance is the larger
    rows = scored_rows(0.5, positional={"sort": -0.02})
    v = c3_verdict(rows)
    mine = [r for r in rows if r["family"] == "rnn-attention" and r["task"] == "sort"]
    expected = [r["alignment_accuracy"] - r["alignment_chance"] for r in sorted(mine, key=lambda r: r["seed"])]
    assert v.primary_cell.values == pytest.approx(expected)
    assert baseline_of({"alignment_chance": 0.2, "alignment_positional": 0.5}) == 0.5
    # over two primary tasks: the mean per seed, each against its own larger baseline
    both = c3_verdict(rows, primary_tasks=("sort", "copy"))
    copy = {r["seed"]: r["alignment_accuracy"] - 1.0 for r in rows if r["family"] == "rnn-attention"
            and r["task"] == "copy"}
    assert both.primary_cell.values == pytest.approx([(e + copy[s]) / 2 for s, e in enumerate(expected)])


def test_c3_an_alignment_above_chance_that_position_explains_is_not_supported():
    # the old quantity (alignment - chance) is large on copy; the rule decides against the positional baseline
    rows = scored_rows(0.6)
    v = c3_verdict(rows, primary_tasks=("copy",))
    assert v.verdict == V.NOT_SUPPORTED, v.reason
    assert v.cells["alignment_rnn-attention_copy"].interval.mean > 0.7  # far above chance ...
    assert v.primary_cell.interval.mean < 0  # ... but not above the diagonal
    assert any("not above the positional baseline" in d and "copy is a positional task" in d for d in v.details)
    # a content task whose positions turn out fixed after all (planted: positional baseline 0.5 above chance)
    explained = scored_rows(0.0, positional={"sort": 0.5})
    v = c3_verdict(explained)
    assert v.verdict == V.NOT_SUPPORTED and v.cells["alignment_rnn-attention_sort"].interval.mean > 0.45
    assert any("rnn-attention, sort" in d for d in v.details)
    assert any("a fixed positional pattern explains this alignment" in d for d in v.details)
    noisy = c3_verdict(scored_rows(0.0, positional={"sort": 0.5}, noise=0.4))
    assert noisy.verdict == V.INCONCLUSIVE


def test_c3_decides_on_the_primary_family_only():
    rows = scored_rows(0.0, family_delta={"transformer": 0.7})
    assert c3_verdict(rows).verdict == V.NOT_SUPPORTED
    assert c3_verdict(rows, primary_family="transformer").verdict == V.SUPPORTED


def test_c3_too_few_seeds_is_inconclusive():
    v = c3_verdict(scored_rows(0.6, seeds=2))
    assert v.verdict == V.INCONCLUSIVE and "too few seeds (2 < 3)" in v.reason


def test_c3_a_model_that_did_not_solve_a_task_fails_the_gate_even_off_the_primary_task():
    rows = scored_rows(0.6)
    rows[1]["token_accuracy"] = MIN_TASK_ACCURACY - 0.3  # rnn-attention, copy, seed 1
    v = c3_verdict(rows)
    assert v.verdict == V.INCONCLUSIVE and "did not solve the task: copy seed 1" in v.reason
    assert v.primary_cell.precondition_met is False


def test_c3_a_missing_task_fails_the_gate():
    v = c3_verdict(scored_rows(0.6, tasks=("copy", "sort")))
    assert v.verdict == V.INCONCLUSIVE and "no runs on reverse" in v.reason
    v = c3_verdict(scored_rows(0.6, tasks=("copy", "reverse")))
    assert v.verdict == V.INCONCLUSIVE and "no runs on sort" in v.reason
    v = c3_verdict(scored_rows(0.6, tasks=("copy", "reverse")), tasks=("copy", "reverse"))  # no primary task run
    assert v.verdict == V.INCONCLUSIVE and "no runs on the primary tasks sort" in v.reason


def test_c3_rows_without_the_positional_baseline_fail_the_gate():
    rows = scored_rows(0.6)
    for r in rows:
        r.pop("alignment_positional")
    v = c3_verdict(rows)
    assert v.verdict == V.INCONCLUSIVE and "positional baseline is missing for sort" in v.reason


def test_c3_not_run():
    v = c3_verdict([], why_not_run="not run: left out")
    assert v.verdict == V.INCONCLUSIVE and v.primary_cell.status == V.NOT_RUN


MORE, NOT_SHOWN, UNSEPARATED = ("changes the output more often than a random one",
                                "is not shown to be what the output depends on", "does not separate the two")


@pytest.mark.parametrize("flips, reading, noisy_reading", [
    ((0.8, 0.1), MORE, MORE),
    ((0.1, 0.1), NOT_SHOWN, UNSEPARATED),  # no difference at all; with spread, an interval around 0
    ((0.05, 0.4), NOT_SHOWN, NOT_SHOWN),  # attention points away from what the output depends on
])
def test_c3_reports_the_masking_test_without_deciding_on_it(flips, reading, noisy_reading):
    v = c3_verdict(scored_rows(0.6, flips=flips))
    assert v.verdict == V.SUPPORTED  # the masking test is reported beside the verdict, not part of it
    cell = v.cells["masking_rnn-attention_sort"]
    assert cell.margin is None and cell.values == pytest.approx([flips[0] - flips[1]] * 5)
    assert any(d.startswith("  - masking test (rnn-attention, sort)") and reading in d for d in v.details)
    noisy = scored_rows(0.6, flips=flips)
    rng = random.Random(2)
    for r in noisy:  # with seed-to-seed spread the interval decides the reading
        r["mask_flip_attended"] += rng.gauss(0.0, 0.01)
    v = c3_verdict(noisy)
    assert any(d.startswith("  - masking test (rnn-attention, sort)") and noisy_reading in d for d in v.details)


def test_c3_masking_that_does_not_separate_is_said_so():
    rows = scored_rows(0.6)
    rng = random.Random(1)
    for r in rows:
        r["mask_flip_attended"], r["mask_flip_random"] = 0.3 + rng.gauss(0, 0.2), 0.3
    v = c3_verdict(rows)
    assert any(d.startswith("  - masking test (rnn-attention, sort)") and UNSEPARATED in d for d in v.details)


def test_holm_across_the_lecture_claims_keeps_strong_effects_and_stops_at_the_first_undecided():
    strong = [c1_verdict(timings(1.0, 0.3)), c3_verdict(scored_rows(0.6)), c1_verdict(None), c3_verdict([])]
    for v, q in zip(strong[2:], ("C2", "C4")):
        v.question = q
    V.holm(strong)
    assert [v.verdict for v in strong] == [V.SUPPORTED, V.SUPPORTED, V.INCONCLUSIVE, V.INCONCLUSIVE]
    assert {v.holm["of"] for v in strong[:2]} == {2}  # only the testable claims form the family
    assert sorted(v.level for v in strong[:2]) == pytest.approx([0.95, 0.975])  # Holm's step-down levels
