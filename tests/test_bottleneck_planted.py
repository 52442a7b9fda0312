"""Verdict C2 on planted rows: an effect each way, a null, too few seeds and failed gates (a model that did not
learn, a control without a bottleneck that also loses accuracy with length) reach supported, not supported and
inconclusive, each for the stated reason."""

import pytest

from experiments.c2_bottleneck.pilot import PILOT_KIND
from experiments.c2_bottleneck.settings import C2_SESOI, CONTROL_MAX_DROP, LEARNED_ACCURACY
from experiments.c2_bottleneck.verdict import verdict
from experiments.core.verdicts import INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED

SHORT, MIDDLE, LONG = 4, 16, 32
NOISE = (0.0, 0.012, -0.009, 0.02, -0.015)  # per-seed jitter of rnn's long length, so no interval has zero width


def rows_for(accuracy: dict, seeds=(0, 1, 2), **extra) -> list[dict]:
    """Reverse rows as the runs write them (one per family and seed, tested per length bucket):
    ``accuracy[family] = (at SHORT, at LONG)``; rnn's long length gets a small jitter per seed. A middle bucket of
    accuracy 0 is added (the verdict must use the extremes only)."""
    out = []
    for family, (short, long) in accuracy.items():
        for i, seed in enumerate(seeds):
            at_long = long + (NOISE[i % len(NOISE)] if family == "rnn" else 0.0)
            by_length = {str(n): {"token_accuracy": a, "exact_match": a ** 4, "num_test": 200}
                         for n, a in ((SHORT, short), (MIDDLE, 0.0), (LONG, at_long))}
            out.append({"key": f"reverse__{family}__seed{seed}", "kind": "bottleneck", "dataset": "reverse",
                        "src_len": None, "family": family, "seed": seed, "by_length": by_length,
                        "lengths": [SHORT, MIDDLE, LONG], "chance_token_accuracy": 1 / 16, "updates": 600,
                        "underpowered": False, **extra})
    return out


def planted(rnn_short, rnn_long, attn_short, attn_long, transformer=(0.99, 0.97), **kwargs):
    accuracy = {"rnn": (rnn_short, rnn_long), "rnn-attention": (attn_short, attn_long)}
    if transformer is not None:
        accuracy["transformer"] = transformer
    return rows_for(accuracy, **kwargs)


def test_bottleneck_effect_with_a_control_that_holds_is_supported():
    v = verdict(planted(0.95, 0.30, 0.98, 0.93))
    assert v.question == "C2" and v.margin == C2_SESOI
    assert v.verdict == SUPPORTED, v.reason
    cell = v.primary_cell
    assert len(cell.values) == 3 and cell.precondition_met is True
    assert cell.interval.mean == pytest.approx((0.95 - 0.30) - (0.98 - 0.93), abs=0.02)
    assert any(line.startswith("- control gate, rnn-attention") and "margin +0.05" in line for line in v.details)


def test_attention_losing_more_is_not_supported():
    v = verdict(planted(0.95, 0.95, 0.98, 0.90))  # rnn loses nothing, attention 0.08 (within its allowance)
    assert v.verdict == NOT_SUPPORTED, v.reason
    assert v.primary_cell.interval.mean < 0


def test_equal_drops_are_not_supported():
    v = verdict(planted(0.95, 0.92, 0.95, 0.92))
    assert v.verdict == NOT_SUPPORTED, v.reason
    assert v.primary_cell.interval.high < C2_SESOI


def test_an_effect_above_zero_but_below_the_sesoi_is_inconclusive():
    v = verdict(planted(0.95, 0.80, 0.95, 0.88))  # drops 0.15 vs 0.07: a difference of 0.08 (< 0.1)
    assert v.verdict == INCONCLUSIVE, v.reason
    assert v.reason.endswith("above 0 but the estimate is below the SESOI")


@pytest.mark.parametrize("rows, family, drop", [
    (planted(0.95, 0.30, 0.98, 0.70), "rnn-attention", 0.28),  # attention loses with length too
    (planted(0.95, 0.30, 0.98, 0.93, transformer=(0.99, 0.11)), "transformer", 0.88),  # the first lecture run
])
def test_a_control_that_also_drops_makes_the_verdict_inconclusive(rows, family, drop):
    v = verdict(rows)
    assert v.verdict == INCONCLUSIVE
    assert v.reason.startswith(f"the control without a bottleneck {family} does not hold its accuracy")
    assert f"drop L={SHORT}->{LONG} {drop:.3g} > {CONTROL_MAX_DROP}" in v.reason
    assert f"gate margin {CONTROL_MAX_DROP - drop:+.3g}" in v.reason
    assert v.primary_cell.precondition_met is False
    assert v.decision()["undecided_because"]["kind"] == "gate"


@pytest.mark.parametrize("attn_long, holds", [(0.98 - CONTROL_MAX_DROP + 0.005, True),
                                              (0.98 - CONTROL_MAX_DROP - 0.005, False)])
def test_the_control_gate_is_at_its_stated_margin(attn_long, holds):
    v = verdict(planted(0.95, 0.30, 0.98, attn_long))
    assert (v.verdict == SUPPORTED) is holds, v.reason


def test_a_control_that_never_learned_does_not_pass_the_gate_by_having_nothing_to_lose():
    v = verdict(planted(0.95, 0.30, 0.98, 0.93, transformer=(0.2, 0.2)))
    assert v.verdict == INCONCLUSIVE
    assert v.reason.startswith(f"control transformer did not learn the reverse task at the shortest length {SHORT}")


def test_without_a_transformer_the_attention_control_alone_is_gated():
    assert verdict(planted(0.95, 0.30, 0.98, 0.93, transformer=None)).verdict == SUPPORTED
    assert verdict(planted(0.95, 0.30, 0.98, 0.70, transformer=None)).verdict == INCONCLUSIVE


def test_too_few_seeds_is_inconclusive():
    v = verdict(planted(0.95, 0.30, 0.98, 0.93, seeds=(0, 1)))
    assert v.verdict == INCONCLUSIVE
    assert "too few seeds (2 < 3)" in v.reason


def test_min_seeds_is_the_callers():
    assert verdict(planted(0.95, 0.30, 0.98, 0.93, seeds=(0, 1, 2)), min_seeds=4).verdict == INCONCLUSIVE


@pytest.mark.parametrize("family, rows", [
    ("rnn-attention", planted(0.95, 0.30, 0.20, 0.10)),  # attention never learned reverse
    ("rnn", planted(0.30, 0.10, 0.98, 0.93)),  # the baseline never learned it: nothing to lose with length
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
    v = verdict(planted(0.95, 0.30, 0.98, 0.93, underpowered=True))
    assert v.verdict == INCONCLUSIVE and v.reason.startswith("not run")


def test_seeds_are_paired_not_pooled():
    rows = planted(0.95, 0.30, 0.98, 0.93, seeds=(7, 3, 5))
    rows = [r for r in rows if not (r["family"] == "rnn" and r["seed"] == 5)]
    v = verdict(rows, min_seeds=2)
    assert len(v.primary_cell.values) == 2  # seed 5 has no rnn drop, so no pair


def test_one_length_runs_are_still_read():
    """Rows of the earlier design (one run per source length, ``src_len``) give the same verdict."""
    rows = []
    for r in planted(0.95, 0.30, 0.98, 0.93):
        for n, scores in r["by_length"].items():
            rows.append({k: v for k, v in r.items() if k not in ("by_length", "lengths")}
                        | {"key": f"{r['key']}L{n}", "src_len": int(n), **scores})
    assert verdict(rows).verdict == SUPPORTED


def test_secondary_cells_are_reported_not_decided_and_the_pilot_is_stated_not_judged():
    pilot = [{"key": f"p{f}{lr}", "kind": PILOT_KIND, "dataset": "reverse", "family": f, "seed": 100, "lr": lr,
              "val_token_accuracy": acc, "underpowered": False}
             for f in ("rnn", "rnn-attention", "transformer") for lr, acc in ((1e-3, 0.5), (3e-3, 0.2))]
    v = verdict(planted(0.95, 0.30, 0.98, 0.93) + pilot)
    assert v.verdict == SUPPORTED
    assert "drop_difference_transformer" in v.cells
    assert all(cell.margin is None for name, cell in v.cells.items() if name != v.primary)
    assert "- learning rates chosen by the pilot: rnn 0.001 (val token accuracy 0.500)" in v.details[0]
