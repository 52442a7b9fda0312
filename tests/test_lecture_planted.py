"""Planted effects for the C3 verdict function (experiments/lecture.py) and Holm across the lecture's claims:
scored rows with a known effect, each way, a null, too few seeds and a failed precondition reach all three
outcomes. C1's rule has its own planted effects (tests/test_parallel_verdict.py)."""

import random

import pytest

from experiments import verdicts as V
from experiments.lecture import C3_SESOI, MIN_TASK_ACCURACY, c1_verdict, c3_verdict
from tests.test_parallel_verdict import timings

# ---- C3 ---------------------------------------------------------------------------------------------------------

def scored_rows(delta: float, *, seeds=5, noise=0.03, token_accuracy=0.97, tasks=("copy", "reverse"),
                families=("rnn-attention", "transformer"), seed=0, family_delta=None) -> list[dict]:
    """Rows as ``score_task_run`` writes them: alignment accuracy = chance + delta + noise."""
    rng = random.Random(seed)
    rows = []
    for family in families:
        d = (family_delta or {}).get(family, delta)
        for task in tasks:
            for s in range(seeds):
                chance = 0.15 + 0.01 * rng.random()
                rows.append({"family": family, "task": task, "seed": s, "token_accuracy": token_accuracy,
                             "exact_match": 0.9, "alignment_chance": chance,
                             "alignment_accuracy": min(1.0, max(0.0, chance + d + rng.gauss(0.0, noise)))})
    return rows


@pytest.mark.parametrize("delta, noise, expected", [
    (0.6, 0.03, V.SUPPORTED),
    (-0.1, 0.03, V.NOT_SUPPORTED),  # attention that avoids the true position: below chance
    (0.0, 0.03, V.NOT_SUPPORTED),  # a precise null
    (0.0, 0.5, V.INCONCLUSIVE),  # a noisy null
])
def test_c3_outcomes(delta, noise, expected):
    v = c3_verdict(scored_rows(delta, noise=noise))
    assert v.verdict == expected, v.reason
    assert v.primary == "alignment_above_chance" and v.margin == C3_SESOI


def test_c3_primary_cell_is_the_mean_over_tasks_per_seed():
    rows = scored_rows(0.5)
    v = c3_verdict(rows)
    mine = [r for r in rows if r["family"] == "rnn-attention"]
    expected = [sum(r["alignment_accuracy"] - r["alignment_chance"] for r in mine if r["seed"] == s) / 2
                for s in range(5)]
    assert v.primary_cell.values == pytest.approx(expected)


def test_c3_decides_on_the_primary_family_only():
    rows = scored_rows(0.0, family_delta={"transformer": 0.7})
    assert c3_verdict(rows).verdict == V.NOT_SUPPORTED
    assert c3_verdict(rows, primary_family="transformer").verdict == V.SUPPORTED


def test_c3_too_few_seeds_is_inconclusive():
    v = c3_verdict(scored_rows(0.6, seeds=2))
    assert v.verdict == V.INCONCLUSIVE and "too few seeds (2 < 3)" in v.reason


def test_c3_a_model_that_did_not_solve_the_task_fails_the_gate():
    rows = scored_rows(0.6)
    rows[1]["token_accuracy"] = MIN_TASK_ACCURACY - 0.3  # rnn-attention, copy, seed 1
    v = c3_verdict(rows)
    assert v.verdict == V.INCONCLUSIVE and "did not solve the task: copy seed 1" in v.reason
    assert v.primary_cell.precondition_met is False


def test_c3_a_missing_task_fails_the_gate():
    v = c3_verdict(scored_rows(0.6, tasks=("copy",)))
    assert v.verdict == V.INCONCLUSIVE and "no runs on reverse" in v.reason


def test_c3_not_run():
    v = c3_verdict([], why_not_run="not run: left out")
    assert v.verdict == V.INCONCLUSIVE and v.primary_cell.status == V.NOT_RUN


def test_holm_across_the_lecture_claims_keeps_strong_effects_and_stops_at_the_first_undecided():
    strong = [c1_verdict(timings(1.0, 0.3)), c3_verdict(scored_rows(0.6)), c1_verdict(None), c3_verdict([])]
    for v, q in zip(strong[2:], ("C2", "C4")):
        v.question = q
    V.holm(strong)
    assert [v.verdict for v in strong] == [V.SUPPORTED, V.SUPPORTED, V.INCONCLUSIVE, V.INCONCLUSIVE]
    assert {v.holm["of"] for v in strong[:2]} == {2}  # only the testable claims form the family
    assert sorted(v.level for v in strong[:2]) == pytest.approx([0.95, 0.975])  # Holm's step-down levels
