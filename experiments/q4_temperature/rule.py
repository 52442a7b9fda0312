"""Q4a and Q4b's verdicts (the rule and Holm: experiments.core.verdicts).

- **Q4a** primary ``gan_advantage_t1``: NLL_oracle per token of the MLE family minus the GAN's at T = 1
  (SESOI 0.1 nats). **Q4b** primary ``quality_at_matched_diversity``: the mean, over the NLL_test range both
  temperature curves span, of the GAN's best NLL_oracle minus the MLE's at equal NLL_test (SESOI 0.1 nats);
  curves that do not overlap make it inconclusive, saying so. A GAN worse on both axes is "not usable", not
  "dominated".
"""

from __future__ import annotations

from typing import Callable, Optional

from experiments.core.families import get_arg
from experiments.core.stats import finite, t_interval
from experiments.core.verdicts import (Cell, NOT_RUN, Verdict, VerdictSettings, _by, _gate_usable, _not_run, _standard,
                                       _usability, gan_families, paired, per_seed, verdict_rows)
from experiments.q4_temperature.temperature import axis_range, costs, dominated_fraction, matched_gap


# ---- Q4 ------------------------------------------------------------------------------------------------------


def q4(rows: list[dict], temperature_of: Callable[[dict], list[dict]], ref_bs: int,
       settings: Optional[VerdictSettings] = None) -> tuple[Verdict, Verdict]:
    settings = settings or VerdictSettings()
    rows = verdict_rows(rows)
    claim_a = "Judged at one temperature (T = 1), a GAN can look better than MLE on sample quality."
    claim_b = ("Across a temperature sweep, MLE dominates: its quality-diversity curve lies below/left of the "
               "GAN's (Caccia et al. 2018).")
    ma, mb = settings.sesoi["Q4a"], settings.sesoi["Q4b"]
    mle, gan = settings.mle_family, settings.gan_family
    rule_a = (f"At batch size {ref_bs}, per seed: NLL_oracle per token of {mle} minus {gan}'s at T = 1 (positive: "
              f"the GAN's samples look better), paired by seed, SESOI {ma} nats. Both families must be usable (J's "
              f"interval below the counted bigram's); oracle data only.")
    rule_b = (f"At batch size {ref_bs}, per seed, on the curves (NLL_test, NLL_oracle) across temperatures, "
              f"interpolated between neighbouring temperatures: quality at matched diversity = the mean over the "
              f"NLL_test range both curves span of the GAN's best NLL_oracle minus the MLE's at equal NLL_test "
              f"(primary, SESOI {mb} nats); diversity at matched quality likewise with the axes swapped (reported). "
              f"No overlap in a seed leaves it out; fewer than {settings.min_seeds} overlapping seeds is "
              f"inconclusive. Both families must be usable: a GAN not better than the bigram on J is 'not usable', "
              f"not 'dominated'. The tempered unigram's curve is the floor both are compared with.")
    sweep = _by(rows, kind=settings.compared_kind, batch_size=ref_bs)
    mle_rows, gan_rows = _by(sweep, family=mle), _by(sweep, family=gan)
    missing = [f for f, x in ((mle, mle_rows), (gan, gan_rows)) if not x]
    oracle = any(finite(get_arg(r, "final.nll_oracle_per_token")) for r in sweep)
    gate = (f"not run: {', '.join(missing)} at batch size {ref_bs}" if missing
            else None if oracle else "needs oracle data (NLL_oracle and J)")
    met = None
    if gate is None:
        met, gate = _gate_usable((gan_rows, f"{gan} at batch size {ref_bs}"),
                                 (mle_rows, f"{mle} at batch size {ref_bs}"))
    nll_o = lambda r: get_arg(r, "final.nll_oracle_per_token")  # noqa: E731
    if missing:
        cells_a = {"gan_advantage_t1": _not_run("MLE - GAN NLL_oracle at T = 1", gate, ma)}
    else:
        cells_a = {"gan_advantage_t1": Cell(f"NLL_oracle {mle} - {gan} at T = 1",
                                            paired(per_seed(mle_rows, nll_o), per_seed(gan_rows, nll_o)), ma,
                                            met, gate or "both families usable")}
    details_a = []
    for fam in gan_families(sweep):
        iv = t_interval(paired(per_seed(mle_rows, nll_o), per_seed(_by(sweep, family=fam), nll_o)))
        ok, why = _usability(_by(sweep, family=fam), fam)
        details_a.append(f"- {fam}: NLL_oracle advantage over {mle} at T = 1 {iv.fmt()}; {why}")
    va = _standard("Q4a", claim_a, rule_a, ma, "gan_advantage_t1", cells_a, gate, details_a, settings)

    primary = "quality_at_matched_diversity"
    quality, diversity, no_overlap, floor = {}, {}, [], {}
    mle_curves = {r["seed"]: temperature_of(r) for r in mle_rows}
    for r in gan_rows:
        g, m = temperature_of(r), mle_curves.get(r["seed"])
        if len(g) < 2 or not m or len(m) < 2:
            continue
        cg, cm = costs(g), costs(m)
        q, d = matched_gap(cm, cg, "diversity"), matched_gap(cm, cg, "quality")
        if q is None:
            (xg, xm) = axis_range(cg, 0), axis_range(cm, 0)
            no_overlap.append(f"seed {r['seed']}: GAN NLL_test [{xg[0]:.3g}, {xg[1]:.3g}] vs MLE "
                              f"[{xm[0]:.3g}, {xm[1]:.3g}]")
        else:
            quality[r["seed"]] = q
        if d is not None:
            diversity[r["seed"]] = d
        uni = get_arg(r, "reference.unigram_tempered") or []
        if len(uni) >= 2:
            gap = matched_gap(costs(g), [(p["nll_test_per_token"], p["nll_oracle_per_token"]) for p in uni],
                              "diversity")
            if gap is not None:
                floor[r["seed"]] = gap
    gate_b = gate
    curves_run = bool(quality or no_overlap)
    if gate_b is None and not curves_run:
        gate_b = f"not run: no temperature curves for {mle} and {gan} at batch size {ref_bs}"
    if gate_b is None and no_overlap and len(quality) < settings.min_seeds:
        gate_b = (f"the curves do not overlap in NLL_test in {len(no_overlap)} seed(s) ({'; '.join(no_overlap)}), "
                  f"leaving {len(quality)} < {settings.min_seeds}")
    if not curves_run:
        cells_b = {primary: _not_run("GAN - MLE NLL_oracle at matched NLL_test", gate_b or NOT_RUN, mb)}
    else:
        cells_b = {
            primary: Cell("GAN - MLE NLL_oracle at matched NLL_test", list(quality.values()), mb,
                          met if gate_b == gate else False, gate_b or "both families usable; curves overlap"),
            "diversity_at_matched_quality": Cell("GAN - MLE NLL_test at matched NLL_oracle",
                                                 list(diversity.values())),
            "gan_vs_tempered_unigram": Cell("tempered unigram - GAN NLL_oracle at matched NLL_test "
                                            "(positive: the GAN beats the floor)", list(floor.values())),
        }
    details_b = [f"- no overlap: {x}" for x in no_overlap]
    for fam in gan_families(sweep):
        fracs, reverse = [], []
        for r in _by(sweep, family=fam):
            g, m = temperature_of(r), mle_curves.get(r["seed"])
            if len(g) >= 2 and m and len(m) >= 2:
                fracs.append(dominated_fraction(costs(m), costs(g)))
                reverse.append(dominated_fraction(costs(g), costs(m)))
        if fracs:
            details_b.append(f"- {fam} (descriptive): share of its temperature points dominated by the MLE curve "
                             f"{t_interval(fracs).fmt()}; share of the MLE's dominated by it "
                             f"{t_interval(reverse).fmt()}")
    vb = _standard("Q4b", claim_b, rule_b, mb, primary, cells_b, gate_b, details_b, settings)
    return va, vb
