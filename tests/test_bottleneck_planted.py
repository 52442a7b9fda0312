"""Verdict C2 on planted rows: an effect each way, a null, too few seeds and failed preconditions reach supported,
not supported and inconclusive, each for the stated reason."""

import pytest

from experiments.bottleneck import C2_SESOI, LEARNED_ACCURACY, verdict
from experiments.verdicts import INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED

SHORT, LONG = 4, 32
NOISE = (0.0, 0.012, -0.009, 0.02, -0.015)  # per-seed jitter, so no interval has zero width


def rows_for(accuracy: dict, seeds=(0, 1, 2), middle: bool = True, **extra) -> list[dict]:
    """Reverse-task rows: ``accuracy[(family, length)]`` is the token accuracy planted at seed 0; other seeds add
    a small jitter at the long length. A middle length is added between the two (the verdict must use the extremes only)."""
    out = []
    for (family, length), value in accuracy.items():
        for i, seed in enumerate(seeds):
            jitter = NOISE[i % len(NOISE)] * (1 if family == "rnn" else -1) * (length == LONG)
            acc = value + jitter
            out.append({"key": f"reverse-L{length}__{family}__seed{seed}", "kind": "bottleneck", "dataset": "reverse",
                        "src_len": length, "family": family, "seed": seed, "token_accuracy": acc,
                        "exact_match": acc ** 4, "chance_token_accuracy": 1 / 16, "updates": 600,
                        "underpowered": False, **extra})
            if middle and length == SHORT:
                out.append({**out[-1], "key": out[-1]["key"].replace(f"L{SHORT}", "L16"), "src_len": 16,
                            "token_accuracy": 0.0})
    return out


def planted(rnn_short, rnn_long, attn_short, attn_long, **kwargs):
    return rows_for({("rnn", SHORT): rnn_short, ("rnn", LONG): rnn_long,
                     ("rnn-attention", SHORT): attn_short, ("rnn-attention", LONG): attn_long}, **kwargs)


def test_bottleneck_effect_is_supported():
    v = verdict(planted(0.95, 0.30, 0.98, 0.90))
    assert v.question == "C2" and v.margin == C2_SESOI
    assert v.verdict == SUPPORTED, v.reason
    cell = v.primary_cell
    assert len(cell.values) == 3
    assert cell.interval.mean == pytest.approx((0.95 - 0.30) - (0.98 - 0.90), abs=0.02)


def test_attention_losing_more_is_not_supported():
    v = verdict(planted(0.95, 0.90, 0.98, 0.40))
    assert v.verdict == NOT_SUPPORTED, v.reason
    assert v.primary_cell.interval.mean < 0


def test_equal_drops_are_not_supported():
    v = verdict(planted(0.95, 0.70, 0.95, 0.70))
    assert v.verdict == NOT_SUPPORTED, v.reason
    assert v.primary_cell.interval.high < C2_SESOI


def test_an_effect_above_zero_but_below_the_sesoi_is_inconclusive():
    v = verdict(planted(0.95, 0.80, 0.95, 0.88))  # drops 0.15 vs 0.07: a difference of 0.08 (< 0.1)
    assert v.verdict == INCONCLUSIVE, v.reason
    assert v.reason.endswith("above 0 but the estimate is below the SESOI")


def test_too_few_seeds_is_inconclusive():
    v = verdict(planted(0.95, 0.30, 0.98, 0.90, seeds=(0, 1)))
    assert v.verdict == INCONCLUSIVE
    assert "too few seeds (2 < 3)" in v.reason


def test_min_seeds_is_the_callers():
    assert verdict(planted(0.95, 0.30, 0.98, 0.90, seeds=(0, 1, 2)), min_seeds=4).verdict == INCONCLUSIVE


@pytest.mark.parametrize("family, rows", [
    ("rnn-attention", planted(0.95, 0.30, 0.20, 0.10)),  # attention never learned reverse
    ("rnn", planted(0.30, 0.10, 0.98, 0.90)),  # the baseline never learned it: nothing to lose with length
])
def test_a_model_that_did_not_learn_the_shortest_length_gates_the_verdict(family, rows):
    v = verdict(rows)
    assert v.verdict == INCONCLUSIVE
    assert v.reason.startswith(f"{family} did not learn the reverse task at the shortest length {SHORT}")
    assert str(LEARNED_ACCURACY) in v.reason
    assert v.primary_cell.precondition_met is False


def test_no_runs_is_inconclusive_not_run():
    v = verdict([])
    assert v.verdict == INCONCLUSIVE
    assert v.reason.startswith("not run")
    assert v.primary_cell.status == NOT_RUN


def test_underpowered_runs_are_not_judged():
    v = verdict(planted(0.95, 0.30, 0.98, 0.90, underpowered=True))
    assert v.verdict == INCONCLUSIVE and v.reason.startswith("not run")


def test_seeds_are_paired_not_pooled():
    rows = planted(0.95, 0.30, 0.98, 0.90, seeds=(7, 3, 5))
    rows = [r for r in rows if not (r["family"] == "rnn" and r["src_len"] == LONG and r["seed"] == 5)]
    v = verdict(rows, min_seeds=2)
    assert len(v.primary_cell.values) == 2  # seed 5 has no rnn drop, so no pair


def test_secondary_cells_are_reported_not_decided():
    rows = planted(0.95, 0.30, 0.98, 0.90) + [
        {**r, "key": r["key"].replace("rnn", "transformer"), "family": "transformer"}
        for r in planted(0.95, 0.30, 0.98, 0.90) if r["family"] == "rnn-attention"]
    v = verdict(rows)
    assert v.verdict == SUPPORTED
    assert "drop_difference_transformer" in v.cells
    assert all(cell.margin is None for name, cell in v.cells.items() if name != v.primary)
