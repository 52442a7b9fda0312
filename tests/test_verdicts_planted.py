"""The verdict rule and every question's rule built on it, fed planted effects: each way, a null, too few seeds.

Rows are synthetic: their metrics are planted so that J (NLL_test - H(oracle) + NLL_oracle - H(model)) and the
per-seed statistics take known values; the counted unigram's and bigram's J are planted in ``reference`` as the
report attaches them (the usability gate is the bigram's). Every question must reach all three outcomes, each for
the reason planted.
"""

import math
import random

import pytest

from experiments.core import verdicts as V
from experiments.core.report import all_verdicts
from experiments.core.stats import t_interval
from experiments.q1_game.rule import q1
from experiments.q2_batch_size.rule import q2
from experiments.q3_conditioning.rule import q3_condition, q3_latent
from experiments.q4_temperature.rule import q4

SESOI = V.DEFAULT_SESOI
H_ORACLE, H_MODEL, UNIGRAM_J, BIGRAM_J = 3.3, 4.0, 3.5, 3.3
REF_BS = 16
ARMS = V.VerdictSettings()  # the compared families (from the shared MLE checkpoint) and Q2's arms
MLE, GAN, COMPARED = ARMS.mle_family, ARMS.gan_family, ARMS.compared_kind


def noisy(effect: float, n: int = 8, noise: float = 0.03, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [effect + noise * rng.gauss(0, 1) for _ in range(n)]


# ---- the rule itself ------------------------------------------------------------------------------------------

RULE_CASES = {
    "effect well above the SESOI": (noisy(3.0), 1.0, V.SUPPORTED, "at least the SESOI"),
    "null effect": (noisy(0.0), 1.0, V.NOT_SUPPORTED, "excludes"),
    "effect the other way": (noisy(-2.0), 1.0, V.NOT_SUPPORTED, "excludes"),
    "effect real but too small to matter": (noisy(0.3), 1.0, V.NOT_SUPPORTED, "excludes"),
    "effect above 0 with a SESOI-sized interval": (noisy(0.9, noise=0.5), 1.0, V.INCONCLUSIVE, "below the SESOI"),
    "straddles 0 and the SESOI": (noisy(0.5, noise=2.0), 1.0, V.INCONCLUSIVE, "reaches both"),
    "too few seeds": (noisy(3.0, n=2), 1.0, V.INCONCLUSIVE, "too few seeds"),
    "all seeds equal": ([1.0, 1.0, 1.0, 1.0], 0.5, V.INCONCLUSIVE, "no honest interval"),
}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_rule_on_planted_effects(case):
    values, margin, expected, why = RULE_CASES[case]
    verdict, reason = V.rule(values, margin)
    assert verdict == expected and why in reason, reason


def test_rule_reaches_all_three_outcomes():
    assert {V.rule(v, m)[0] for v, m, _, _ in RULE_CASES.values()} == {V.SUPPORTED, V.NOT_SUPPORTED, V.INCONCLUSIVE}


def test_a_zero_variance_sample_never_prints_a_zero_width_interval():
    iv = t_interval([1.0, 1.0, 1.0])
    assert not iv.defined and "[1, 1]" not in iv.fmt() and "no interval" in iv.fmt()
    assert iv.to_json()["interval"] is None


# ---- Holm across the verdicts ---------------------------------------------------------------------------------


def _verdict(question: str, values, margin: float = 1.0, gate=None) -> V.Verdict:
    v = V.Verdict(question, "claim", V.INCONCLUSIVE, "", "rule", margin=margin, primary="p",
                  cells={"p": V.Cell("planted", list(values), margin)}, gate=gate)
    return v.at_level(0.95)


# Decided at 95% on its own (lower bound just above 0), but not at the 97.5% a two-question Holm family needs.
BORDERLINE = [1.1, -0.1, 2.0, 0.9, 1.7, 0.3]  # p = 0.03 against 0


def test_holm_adjusts_each_questions_level_and_stops_at_the_first_undecided():
    assert _verdict("A", BORDERLINE, margin=0.5).verdict == V.SUPPORTED
    a, b = _verdict("A", BORDERLINE, margin=0.5), _verdict("B", [x + 0.02 for x in BORDERLINE], margin=0.5)
    V.holm([a, b], alpha=0.05)
    assert {a.level, b.level} == {1 - 0.05 / 2, 1 - 0.05 / 1}
    first, second = sorted([a, b], key=lambda v: v.holm["rank"])
    assert first.verdict == V.INCONCLUSIVE  # at 97.5% its interval reaches below 0
    assert second.verdict == V.INCONCLUSIVE and "stopped at" in second.reason  # decided alone, not after a stop
    assert first.cells["p"].interval.low < t_interval(first.cells["p"].values).low  # wider than the 95% one


def test_holm_decides_strong_effects_and_counts_only_decidable_questions():
    strong = _verdict("A", noisy(3.0))
    null = _verdict("B", noisy(0.0))
    gated = _verdict("C", noisy(3.0), gate="not run: planted")
    V.holm([strong, null, gated], alpha=0.05)
    assert strong.verdict == V.SUPPORTED and null.verdict == V.NOT_SUPPORTED
    assert gated.verdict == V.INCONCLUSIVE and gated.reason == "not run: planted"
    assert strong.holm["of"] == 2 and gated.holm["rank"] is None
    assert sorted([strong.level, null.level]) == [1 - 0.05, 1 - 0.05 / 2]


# ---- rows with planted metrics --------------------------------------------------------------------------------


def reference(tempered=None) -> dict:
    return {"oracle_entropy_per_token": H_ORACLE, "unigram": {"j": UNIGRAM_J}, "bigram": {"j": BIGRAM_J},
            "unigram_tempered": tempered or []}


def stage(j: float, nll_oracle: float = None) -> dict:
    """Metrics whose J is ``j``: NLL_test - H(oracle) and NLL_oracle - H(model) share it (or NLL_oracle is set)."""
    nll_oracle = H_MODEL + j / 2 if nll_oracle is None else nll_oracle
    return {"nll_test_per_token": H_ORACLE + j - (nll_oracle - H_MODEL), "nll_oracle_per_token": nll_oracle,
            "model_entropy_per_token": H_MODEL}


def row(family, seed, j_final, *, bs=REF_BS, j_init=4.0, kind="sweep", adversarial=None, nll_oracle=None, **extra):
    adversarial = family.startswith("gan") if adversarial is None else adversarial
    j_final += 0.01 * math.sin(7 * seed + len(family))  # seeds never agree to the last digit
    return {"key": f"{family}-{bs}-{seed}-{kind}", "kind": kind, "family": family, "batch_size": bs, "seed": seed,
            "adversarial": adversarial, "init": stage(j_init), "final": stage(j_final, nll_oracle),
            "diverged": False, "collapsed": False, "reference": reference(), **extra}


def test_planted_rows_have_the_planted_j():
    from experiments.core.baselines import j_score, learning

    r = row("transformer", 0, 3.1, nll_oracle=5.0)
    assert j_score(r) == pytest.approx(3.1, abs=0.01) and learning(r) == pytest.approx(0.9, abs=0.01)


# ---- Q1 -----------------------------------------------------------------------------------------------------------


def q1_rows(gan_tracks: bool, seeds=range(8), mle_j=3.0, gan_j=3.1) -> list[dict]:
    rows = []
    for s in seeds:
        rng = random.Random(100 + s)
        js = [4.0 - 0.1 * k for k in range(8)]  # J falls over the checkpoints
        gan_order = js if gan_tracks else rng.sample(js, len(js))  # a loss unrelated to progress
        rows.append(row(MLE, s, mle_j, kind=COMPARED, game_checkpoints=[
            {"update": k, "J": j, "held_out_loss": j + 0.08 * rng.gauss(0, 1)} for k, j in enumerate(js)]))
        rows.append(row(GAN, s, gan_j, kind=COMPARED, game_checkpoints=[
            {"update": k, "J": j, "held_out_loss": g + 0.08 * rng.gauss(0, 1), "g_loss_vs_final_d": j}
            for k, (j, g) in enumerate(zip(js, gan_order))]))
    return rows


def _strip(rows, field):
    return [{k: v for k, v in r.items() if k != field} for r in rows]


Q1_CASES = {
    "MLE loss tracks J, GAN loss does not": (q1_rows(gan_tracks=False), V.SUPPORTED, "at least the SESOI"),
    "both track J (null: no difference)": (q1_rows(gan_tracks=True), V.NOT_SUPPORTED, "excludes"),
    "too few seeds": (q1_rows(gan_tracks=False, seeds=range(2)), V.INCONCLUSIVE, "too few seeds"),
    "GAN not usable": (q1_rows(gan_tracks=False, gan_j=3.9), V.INCONCLUSIVE, "not usable"),
    "GAN no better than the bigram": (q1_rows(gan_tracks=False, gan_j=BIGRAM_J), V.INCONCLUSIVE,
                                      "not clearly below the counted bigram's"),
    "checkpoint arm not run": (_strip(q1_rows(gan_tracks=False), "game_checkpoints"), V.INCONCLUSIVE, "not run"),
}


@pytest.mark.parametrize("case", list(Q1_CASES))
def test_q1_on_planted_rows(case):
    rows, expected, why = Q1_CASES[case]
    v = q1(rows, {}, REF_BS)
    assert v.verdict == expected and why in v.reason, v.reason
    assert v.margin == SESOI["Q1"] and v.primary == "rho_difference"


def test_q1_null_from_permuted_checkpoints_is_centred_on_zero():
    v = q1(q1_rows(gan_tracks=True), {}, REF_BS)
    null = v.extra["null"]
    assert null["permutations"] == V.VerdictSettings().permutations
    assert abs(null["mean"]) < 0.1 and null["interval"][0] < 0 < null["interval"][1]
    assert v.cells["rho_difference"].interval.mean == pytest.approx(0.0, abs=0.05)  # observed: both rho ~ 1


# ---- Q2 -----------------------------------------------------------------------------------------------------------


def q2_rows(gan_min: float, mle_min: float = 0.9, null=True, seeds=range(8), null_failures: int = 0) -> list[dict]:
    """Learning E (drop in J from 4.0) per family and batch size, with seed noise; the null arm diverged in its first
    ``null_failures`` seeds at batch size 1."""
    arms = V.VerdictSettings()  # Q2's arm names (the pretrained arms)
    mle, gan, frozen = arms.q2_mle, arms.q2_gan, arms.q2_null
    learning = {(mle, 1): mle_min, (mle, 16): 1.0, (gan, 1): gan_min, (gan, 16): 0.8, (frozen, 1): 0.2,
                (frozen, 16): 0.2}
    rows = []
    for (fam, bs), e in learning.items():
        if fam == frozen and not null:
            continue
        for s, x in zip(seeds, noisy(e, n=len(seeds), seed=hash((fam, bs)) % 1000)):
            rows.append(row(fam, s, 4.0 - x, bs=bs, updates=512 // bs, samples_seen=512,
                            diverged=fam == frozen and bs == 1 and s < null_failures))
    return rows


Q2_CASES = {
    "GAN loses its game effect at batch 1, MLE does not": (q2_rows(gan_min=0.2), V.SUPPORTED, "at least the SESOI"),
    "GAN keeps its game effect at batch 1": (q2_rows(gan_min=0.8), V.NOT_SUPPORTED, "keeps its game effect"),
    "MLE fails at batch 1": (q2_rows(gan_min=0.2, mle_min=0.1), V.NOT_SUPPORTED, "MLE family loses"),
    "null arm not run": (q2_rows(gan_min=0.2, null=False), V.INCONCLUSIVE, f"not run: {V.VerdictSettings().q2_null}"),
    "null arm failed in 3/8 seeds": (q2_rows(gan_min=0.2, null_failures=3), V.INCONCLUSIVE, "the null failed"),
    "null arm failed in 2/8 seeds (not more than a quarter)": (q2_rows(gan_min=0.2, null_failures=2), V.SUPPORTED,
                                                               "at least the SESOI"),
    "too few seeds": (q2_rows(gan_min=0.2, seeds=range(2)), V.INCONCLUSIVE, "too few seeds"),
}


@pytest.mark.parametrize("case", list(Q2_CASES))
def test_q2_on_planted_rows(case):
    rows, expected, why = Q2_CASES[case]
    v = q2(rows, REF_BS)
    assert v.verdict == expected and why in v.reason, v.reason
    assert v.primary == "gan_batch1_loss" and v.margin == SESOI["Q2"]


def test_q2_needs_a_game_effect_at_the_reference_to_lose():
    rows = q2_rows(gan_min=0.2)
    for r in rows:
        if r["family"] == V.VerdictSettings().q2_null and r["batch_size"] == 16:  # the frozen-D arm moves as far as the GAN
            r["final"] = stage(3.2 + 0.01 * math.sin(r["seed"]))
    v = q2(rows, REF_BS)
    assert v.verdict == V.INCONCLUSIVE and "no game effect" in v.reason, v.reason


def test_q2_names_no_confound_when_the_arms_are_sound():
    assert q2(q2_rows(gan_min=0.2), REF_BS).extra["confounds"] == []


def test_q2_names_a_failed_null_arm_and_a_gan_that_lost_ground_as_confounds():
    arms = V.VerdictSettings()
    rows = q2_rows(gan_min=-0.8)
    for r in rows:
        if r["family"] == arms.q2_null and r["batch_size"] == 16 and r["seed"] < 3:
            r["diverged"] = True
    v = q2(rows, REF_BS)
    confounds = v.extra["confounds"]
    assert len(confounds) == 2, confounds
    assert any("failed (diverged or collapsed) in 3/8 seeds at batch size 16" in c for c in confounds), confounds
    assert any(f"{arms.q2_gan} itself made J worse at batch size 1" in c for c in confounds), confounds
    assert any(line.startswith("- confound:") for line in v.details)


def test_q2_arms_are_settings_by_name():
    arms = V.VerdictSettings()
    names = {arms.q2_mle: "transformer", arms.q2_gan: "gan-gumbel", arms.q2_null: "gan-frozen-d"}
    rows = [{**r, "family": names[r["family"]], "kind": "sweep"} for r in q2_rows(gan_min=0.2)]
    assert q2(rows, REF_BS).verdict == V.INCONCLUSIVE  # the default arms (from the checkpoint) are not in these rows
    settings = V.VerdictSettings(q2_mle="transformer", q2_gan="gan-gumbel", q2_null="gan-frozen-d")
    assert q2(rows, REF_BS, settings).verdict == V.SUPPORTED


def test_q2_json_has_budgets_and_controls():
    v = q2(q2_rows(gan_min=0.2), REF_BS).to_json()
    assert v["budgets"] == {"samples": {"1": 512, "16": 512}, "steps": {"1": 512, "16": 32}}
    assert set(v["controls"]) == {"null", "minibatch_std", "accumulation"}
    assert v["controls"]["minibatch_std"] == V.NOT_RUN and v["controls"]["null"]["family"] == V.VerdictSettings().q2_null
    for cell in v["cells"].values():
        assert {"estimate", "interval", "n", "precondition_met"} <= set(cell)


# ---- Q3 -----------------------------------------------------------------------------------------------------------


def q3_rows(mle_dep: float, gan_dep: float, z_ratio: float = 0.1, gan_j=3.1, seeds=range(8)) -> list[dict]:
    rows = []
    for s in seeds:
        for fam, dep, z in ((MLE, mle_dep, 0), (GAN, gan_dep, 8)):
            probes = {"mi_self_fraction": dep + 0.02 * math.sin(s + z), "mi_oracle": 0.8,
                      "change_noise": 0.9, "change_z": 0.9 * (z_ratio + 0.02 * math.cos(s)) if z else math.nan}
            rows.append(row(fam, s, gan_j if z else 3.0, kind="ablation", z_dim=z, condition="label",
                            condition_strength=1.0, probes=probes))
    return rows


Q3_CASES = {
    "MLE tied to c, GAN not": (q3_rows(0.9, 0.1), V.SUPPORTED, "at least the SESOI"),
    "both tied to c": (q3_rows(0.9, 0.85), V.NOT_SUPPORTED, "excludes"),
    "GAN not usable (learned nothing)": (q3_rows(0.9, 0.0, gan_j=3.9), V.INCONCLUSIVE, "not usable"),
    "too few seeds": (q3_rows(0.9, 0.1, seeds=range(2)), V.INCONCLUSIVE, "too few seeds"),
    "no ablation": ([], V.INCONCLUSIVE, "not run"),
}


@pytest.mark.parametrize("case", list(Q3_CASES))
def test_q3_on_planted_rows(case):
    rows, expected, why = Q3_CASES[case]
    v = q3_condition(rows)
    assert v.verdict == expected and why in v.reason, v.reason


Q3Z_CASES = {
    "z barely moves the output": (q3_rows(0.9, 0.1, z_ratio=0.1), V.SUPPORTED, "at least the SESOI"),
    "z moves it like sampling noise": (q3_rows(0.9, 0.1, z_ratio=0.95), V.NOT_SUPPORTED, "excludes"),
    "GAN not usable": (q3_rows(0.9, 0.1, z_ratio=0.1, gan_j=3.9), V.INCONCLUSIVE, "not usable"),
    "too few seeds": (q3_rows(0.9, 0.1, seeds=range(2)), V.INCONCLUSIVE, "too few seeds"),
}


@pytest.mark.parametrize("case", list(Q3Z_CASES))
def test_q3_latent_on_planted_rows(case):
    rows, expected, why = Q3Z_CASES[case]
    v = q3_latent(rows)
    assert v.verdict == expected and why in v.reason, v.reason


# ---- Q4 -----------------------------------------------------------------------------------------------------------

TEMPS = (0.3, 0.55, 1.0, 1.6, 2.5)


def curve(quality_shift=0.0, coverage_shift=0.0) -> list[dict]:
    """Sharpening (T < 1) trades coverage (NLL_test up) for quality (NLL_oracle down)."""
    return [{"temperature": t, "nll_test_per_token": 4.5 + coverage_shift + 2.0 * math.log(t) ** 2,
             "nll_oracle_per_token": 6.0 + quality_shift + 1.5 * math.log(t)} for t in TEMPS]


def q4_rows(gan_quality: float, gan_coverage: float = 0.0, gan_j=3.1, seeds=range(8)) -> list[dict]:
    rows = []
    for s in seeds:
        jitter = 0.02 * math.sin(3 * s)
        rows.append(row(MLE, s, 3.0, kind=COMPARED, nll_oracle=6.0, temperature=curve()))
        rows.append(row(GAN, s, gan_j, kind=COMPARED, nll_oracle=6.0 + gan_quality + jitter,
                        temperature=curve(gan_quality + jitter, gan_coverage)))
    return rows


def temps_of(r):
    return r.get("temperature", [])


Q4A_CASES = {
    "GAN looks better at T = 1": (q4_rows(-0.5), V.SUPPORTED, "at least the SESOI"),
    "GAN looks worse at T = 1": (q4_rows(+0.5), V.NOT_SUPPORTED, "excludes"),
    "GAN not usable": (q4_rows(-0.5, gan_j=3.9), V.INCONCLUSIVE, "not usable"),
    "too few seeds": (q4_rows(-0.5, seeds=range(2)), V.INCONCLUSIVE, "too few seeds"),
}


@pytest.mark.parametrize("case", list(Q4A_CASES))
def test_q4a_on_planted_rows(case):
    rows, expected, why = Q4A_CASES[case]
    v = q4(rows, temps_of, REF_BS)[0]
    assert v.verdict == expected and why in v.reason, v.reason


Q4B_CASES = {
    "MLE better at matched diversity": (q4_rows(+0.5), V.SUPPORTED, "at least the SESOI"),
    "GAN better at matched diversity": (q4_rows(-0.5), V.NOT_SUPPORTED, "excludes"),
    "same curve (null)": (q4_rows(0.0), V.NOT_SUPPORTED, "excludes"),
    "curves never overlap": (q4_rows(+0.5, gan_coverage=50.0), V.INCONCLUSIVE, "do not overlap"),
    "GAN worse on both axes and not usable": (q4_rows(+0.5, gan_coverage=0.5, gan_j=3.9), V.INCONCLUSIVE,
                                              "GAN not usable"),
    "too few seeds": (q4_rows(+0.5, seeds=range(2)), V.INCONCLUSIVE, "too few seeds"),
}


@pytest.mark.parametrize("case", list(Q4B_CASES))
def test_q4b_on_planted_rows(case):
    rows, expected, why = Q4B_CASES[case]
    v = q4(rows, temps_of, REF_BS)[1]
    assert v.verdict == expected and why in v.reason, v.reason


def test_q4b_matched_quality_gap_is_the_planted_shift():
    v = q4(q4_rows(+0.5), temps_of, REF_BS)[1]
    assert v.cells["quality_at_matched_diversity"].interval.mean == pytest.approx(0.5, abs=0.02)
    assert v.cells["diversity_at_matched_quality"].interval.mean > 0  # a worse-quality curve needs more coverage


@pytest.mark.parametrize("cases", [RULE_CASES, Q1_CASES, Q2_CASES, Q3_CASES, Q3Z_CASES, Q4A_CASES, Q4B_CASES],
                         ids=["rule", "Q1", "Q2", "Q3", "Q3z", "Q4a", "Q4b"])
def test_every_question_is_planted_to_reach_all_three_outcomes(cases):
    assert {case[-2] for case in cases.values()} == {V.SUPPORTED, V.NOT_SUPPORTED, V.INCONCLUSIVE}


def test_all_verdicts_decide_together_and_serialise():
    import json

    rows = q2_rows(gan_min=0.2) + q4_rows(+0.5)
    vs = all_verdicts(rows, {}, temps_of, REF_BS)
    assert [v.question for v in vs] == ["Q1", "Q2", "Q3", "Q3z", "Q4a", "Q4b"]
    testable = [v for v in vs if v.holm.get("rank")]
    assert testable and all(v.level > 0.95 or v.holm["rank"] == len(testable) for v in testable)
    for v in vs:
        out = json.loads(json.dumps(v.to_json(), default=str))
        assert {"verdict", "rule", "margin", "cells"} <= set(out)
    assert "null" in vs[0].to_json() and {"budgets", "controls"} <= set(vs[1].to_json())


def _verdict_on(values, margin=1.0):
    cell = V.Cell("planted", values=list(values), margin=margin)
    return V.Verdict("Qx", "claim", V.INCONCLUSIVE, "", "rule", margin=margin, primary="p",
                     cells={"p": cell}).at_level(0.95)


def test_power_check_meets_the_target_only_with_a_narrow_interval():
    narrow = _verdict_on([1.0 + 0.01 * i for i in range(8)]).power()
    wide = _verdict_on([1.0, -1.0, 2.0, 0.5, 3.0]).power()
    assert narrow["met"] and narrow["half_width"] <= 0.5 and narrow["seeds_needed"] <= 8
    assert not wide["met"] and wide["half_width"] > 0.5 and wide["seeds_needed"] > 5
    iv = t_interval([1.0, -1.0, 2.0, 0.5, 3.0])
    assert wide["half_width"] == pytest.approx((iv.high - iv.low) / 2)


def test_power_check_is_absent_without_a_spread_or_a_margin():
    assert _verdict_on([1.0, 1.0, 1.0]).power() is None
    no_margin = _verdict_on([1.0, 2.0, 3.0])
    no_margin.margin = None
    assert no_margin.power() is None
    assert "power" in _verdict_on([1.0, 2.0, 3.0]).to_json()


# ---- verdicts.json: decided, or why not ------------------------------------------------------------------------


def test_each_verdict_says_whether_it_is_decided_and_why_not():
    strong, wide = _verdict("A", noisy(3.0)), _verdict("B", [0.5, -0.8, 1.9, 0.2, -0.4, 1.5])
    gated = q2(q2_rows(gan_min=0.2, null_failures=3), REF_BS)
    V.holm([strong, wide], alpha=0.05)
    assert strong.to_json()["decided"] is True and strong.to_json()["undecided_because"] is None
    spread = wide.to_json()["undecided_because"]
    assert wide.to_json()["decided"] is False and spread["kind"] == "spread"
    assert spread["seeds_needed"] > 8 and f"needs {spread['seeds_needed']} seeds" in spread["text"]
    because = gated.to_json()["undecided_because"]
    assert gated.to_json()["decided"] is False and because["kind"] == "gate" and "the null failed" in because["text"]
