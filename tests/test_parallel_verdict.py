"""Planted effects for C1's rule (experiments/c1_parallel/verdict.py): synthetic timing records with a known effect, no
real timing. A robust effect, one carried by the longest length alone (each way), a null, the opposite direction,
a marginal estimate, too few replicates and failed gates reach the outcomes the rule promises."""

import math
import random

import pytest

from experiments.c1_parallel.verdict import (MIN_LENGTHS, PRIMARY, SESOI, WITHOUT_LONGEST, C1Verdict, c1_verdict,
                                          thread_scaling_line)
from experiments.core import verdicts as V
from experiments.core.stats import t_p_value

LENGTHS = (16, 32, 64, 128, 256)


def timings(slope_lstm: float, slope_transformer: float, *, replicates: int = 6, repeats: int = 2,
            noise: float = 0.02, replicate_noise: float = 0.0, params=(1_000_000, 1_000_000), threads=(1,),
            seed: int = 0, slopes_at=None, jump_at_longest=None, lengths=LENGTHS, speedup=None,
            device=None) -> dict:
    """A C1 record as ``measure_replicates`` writes it: step times t = c * L^slope per family, log-normal noise per
    step and, with ``replicate_noise``, a per-process slope offset. ``slopes_at``: {threads: (lstm, transformer)};
    ``jump_at_longest``: {family: factor} on every step at the longest length; ``speedup``: {family: factor} by
    which each doubling of threads divides the times."""
    rng = random.Random(seed)
    out = []
    for r in range(replicates):
        offset = {f: rng.gauss(0.0, replicate_noise) for f in ("lstm", "transformer")}
        for t in threads:
            a, b = (slopes_at or {}).get(t, (slope_lstm, slope_transformer))
            for k in range(repeats):
                for L in lengths:
                    for family, slope in (("lstm", a), ("transformer", b)):
                        sec = 1e-3 * L ** (slope + offset[family]) * math.exp(rng.gauss(0.0, noise))
                        if L == lengths[-1]:
                            sec *= (jump_at_longest or {}).get(family, 1.0)
                        sec /= (speedup or {}).get(family, 1.0) ** math.log2(t)
                        out.append({"replicate": r, "threads": t, "family": family, "length": L, "repeat": k,
                                    "seconds": sec})
    return {"settings": {"batch_size": 16, "device": "cpu", "replicates": replicates},
            "device": device or {"type": "cpu", "name": "x86_64", "cores": 2, "spec": "cpu"}, "hidden_dim": 10,
            "parameters": {"lstm": params[0], "transformer": params[1]}, "timings": out}


def test_a_robust_effect_is_supported():
    v = c1_verdict(timings(1.0, 0.3))
    assert v.verdict == V.SUPPORTED, v.reason
    assert v.primary == PRIMARY and v.margin == SESOI and isinstance(v, C1Verdict)
    assert v.primary_cell.interval.low >= SESOI
    assert v.cells[WITHOUT_LONGEST].interval.mean == pytest.approx(0.7, abs=0.05)
    assert "lower bound at or above the SESOI, and without L = 256 still at or above it" in v.reason


def test_an_effect_carried_by_the_longest_length_alone_is_inconclusive():
    """Equal growth up to L = 128, then a 4x jump of the LSTM alone at 256 (as one process once showed)."""
    v = c1_verdict(timings(1.0, 1.0, noise=0.01, jump_at_longest={"lstm": 4.0}))
    assert v.primary_cell.interval.low >= SESOI  # the full fit alone would say supported
    assert v.cells[WITHOUT_LONGEST].interval.mean == pytest.approx(0.0, abs=0.05)
    assert v.verdict == V.INCONCLUSIVE
    assert "would be supported, but it rests on the longest length: without L = 256 the estimate is" in v.reason


def test_a_null_carried_by_the_longest_length_alone_is_inconclusive():
    """The LSTM grows faster up to 128, the Transformer's jump at 256 hides it: not supported rests on one length."""
    v = c1_verdict(timings(1.5, 1.0, noise=0.01, jump_at_longest={"transformer": 8.0}))
    assert v.primary_cell.interval.high < SESOI
    assert v.cells[WITHOUT_LONGEST].interval.mean == pytest.approx(0.5, abs=0.05)
    assert v.verdict == V.INCONCLUSIVE and "would be not supported, but it rests on the longest length" in v.reason


@pytest.mark.parametrize("lstm, transformer", [
    (1.0, 1.0),  # a precise null excludes the SESOI, with and without the longest length
    (1.06, 1.26),  # the opposite direction (as measured once on a 1-thread CPU)
])
def test_a_null_and_the_opposite_direction_are_not_supported(lstm, transformer):
    v = c1_verdict(timings(lstm, transformer))
    assert v.verdict == V.NOT_SUPPORTED, v.reason
    assert "upper bound below the SESOI, and without L = 256 still below it" in v.reason


def test_a_noisy_null_is_inconclusive():
    v = c1_verdict(timings(1.0, 1.0, replicate_noise=0.4))
    assert v.verdict == V.INCONCLUSIVE and "the interval reaches the SESOI" in v.reason


def test_a_marginal_estimate_whose_lower_bound_is_below_the_sesoi_is_inconclusive():
    """Like the report's 0.253 [0.224, 0.281]: the Q1-Q4 rule would call it supported (above 0, estimate >= the
    SESOI); C1's rule needs the lower bound at the SESOI."""
    record = timings(1.26, 1.0, replicate_noise=0.02, seed=3)
    v = c1_verdict(record)
    iv = v.primary_cell.interval
    assert iv.low < SESOI <= iv.mean and iv.low > 0
    assert V.rule(v.primary_cell.values, SESOI, v.level)[0] == V.SUPPORTED
    assert v.verdict == V.INCONCLUSIVE and "the interval reaches the SESOI" in v.reason


def test_too_few_replicates_is_inconclusive_however_many_rounds():
    v = c1_verdict(timings(1.0, 0.3, replicates=2, repeats=10))
    assert v.primary_cell.interval.n == 2  # processes, not rounds, are the replicates
    assert v.verdict == V.INCONCLUSIVE and "too few seeds (2 < 3)" in v.reason


def test_rounds_of_one_process_do_not_count_as_replicates():
    """A record from before replicates were processes (no replicate label): one replicate, whatever its rounds."""
    record = timings(1.0, 0.3, replicates=1, repeats=10)
    for t in record["timings"]:
        del t["replicate"]
    v = c1_verdict(record)
    assert v.primary_cell.interval.n == 1 and v.verdict == V.INCONCLUSIVE


def test_too_few_lengths_for_the_leave_longest_out_check_is_inconclusive():
    v = c1_verdict(timings(1.0, 0.3, lengths=(16, 256)))
    assert v.cells[WITHOUT_LONGEST].status == V.NOT_RUN
    assert v.verdict == V.INCONCLUSIVE
    assert f"no slope is left without the longest length (the check needs {MIN_LENGTHS} lengths, measured 2)" in v.reason


def test_the_p_value_is_the_test_against_the_sesoi():
    v = c1_verdict(timings(1.0, 0.3))
    assert v.p_value == pytest.approx(t_p_value(v.primary_cell.values, SESOI))


def test_holm_decides_c1_by_its_own_rule():
    """At Holm's stricter levels C1 is re-decided by its rule, never by the Q1-Q4 rule."""
    strong = c1_verdict(timings(1.0, 0.3))
    carried = c1_verdict(timings(1.0, 1.0, noise=0.01, jump_at_longest={"lstm": 4.0}))
    carried.question = "C2"
    V.holm([strong, carried])
    assert strong.verdict == V.SUPPORTED and carried.verdict == V.INCONCLUSIVE
    assert "rests on the longest length" in carried.reason


def test_the_verdict_names_the_cpu_and_its_threads():
    v = c1_verdict(timings(1.0, 0.3, threads=(1, 2)))
    assert "(CPU (2 cores) with 2 torch thread(s))" in v.reason
    assert any(line.startswith("Confound") for line in v.details)


def test_on_a_gpu_the_verdict_names_it_and_no_cpu_confound_is_stated():
    gpu = {"type": "cuda", "name": "NVIDIA H100", "spec": "cuda"}
    v = c1_verdict(timings(1.0, 0.3, device=gpu))
    assert v.verdict == V.SUPPORTED and "(GPU NVIDIA H100)" in v.reason
    assert not any(line.startswith("Confound") for line in v.details)
    assert not any(name.startswith("thread_speedup") for name in v.cells)
    assert v.extra["c1"]["device"] == gpu


@pytest.mark.parametrize("lstm_gain, transformer_gain", [(1.5, 1.5), (1.2, 1.8)])
def test_on_a_cpu_the_thread_scaling_of_both_nets_is_reported(lstm_gain, transformer_gain):
    record = timings(1.0, 1.0, threads=(1, 2), speedup={"lstm": lstm_gain, "transformer": transformer_gain})
    v = c1_verdict(record)
    assert v.cells["thread_speedup_lstm"].interval.mean == pytest.approx(lstm_gain, rel=0.03)
    assert v.cells["thread_speedup_transformer"].interval.mean == pytest.approx(transformer_gain, rel=0.03)
    line = thread_scaling_line(record)
    assert line in v.details and "from 1 to 2 torch threads" in line
    ratio = v.cells["thread_speedup_ratio"]
    assert ratio.interval.mean == pytest.approx(lstm_gain / transformer_gain, rel=0.03)
    assert f"LSTM gain / Transformer gain {ratio.interval.fmt(2)}" in line


def test_one_thread_count_says_there_is_no_thread_scaling():
    v = c1_verdict(timings(1.0, 0.3))
    assert any("one thread count measured" in line for line in v.details)


def test_the_primary_is_the_largest_thread_count_unless_named():
    record = timings(0, 0, threads=(1, 2), slopes_at={1: (1.0, 1.0), 2: (1.0, 0.3)})
    assert c1_verdict(record).verdict == V.SUPPORTED
    assert c1_verdict(record).cells["slope_difference_threads1"].margin is None  # reported, not decided
    assert c1_verdict(record, threads=1).verdict == V.NOT_SUPPORTED


def test_unmatched_parameter_counts_fail_the_gate():
    v = c1_verdict(timings(1.0, 0.3, params=(1_300_000, 1_000_000)))
    assert v.verdict == V.INCONCLUSIVE and "parameter counts not matched" in v.reason
    assert v.primary_cell.precondition_met is False


def test_a_non_positive_time_fails_the_gate():
    record = timings(1.0, 0.3)
    record["timings"][3]["seconds"] = 0.0
    v = c1_verdict(record)
    assert v.verdict == V.INCONCLUSIVE and "not positive finite" in v.reason


def test_not_run():
    v = c1_verdict(None, why_not_run="not run: left out")
    assert v.verdict == V.INCONCLUSIVE and v.reason == "not run: left out"
    assert v.primary_cell.status == V.NOT_RUN


@pytest.mark.parametrize("load, warned", [(6.2, True), (0.5, False)])
def test_a_busy_machine_is_warned_of_without_changing_the_verdict(load, warned):
    record = timings(1.0, 0.3)
    record["machine"] = record["machine_after"] = {"cpu_count": 2, "load_average_1_5_15": [load, load, load]}
    v = c1_verdict(record)
    assert v.verdict == V.SUPPORTED
    assert any("the machine was busy" in d for d in v.details) == warned
