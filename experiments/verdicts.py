"""Verdicts on Q1-Q4, decided from the results rows by fixed rules stated here (and quoted in the report).

Every rule compares a 95% t-interval over seeds (``experiments.stats``) with a threshold fixed in advance:

- **supported**: the interval lies wholly on the side the claim predicts;
- **not supported**: it lies wholly on the other side (the data contradict the claim);
- **inconclusive**: anything else: the interval straddles the threshold, too few seeds, a precondition fails
  (e.g. a family learned nothing at the reference batch size, so its small-batch failure means nothing), or
  the experiment is missing from the run folder.

Where a question is decided in several cells (one per GAN family, or per family and ablation setting), the
cells are combined as: supported if at least half the cells are supported and none is not supported;
not supported if at least half are not supported and none is supported; inconclusive otherwise.
Nothing here knows which answer the lecture expects; the thresholds are symmetric where the claim allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from experiments.stats import Interval, finite, log_t_interval, t_interval
from experiments.temperature import costs, dominated_fraction

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

# Q2: share of the reference batch size's learning that batch size B_min must keep to "train" (and lose to be
# "meaningless"), and the failure rate (diverged or collapsed seeds) that makes a batch size meaningless.
Q2_RETAINED = 0.5
Q2_FAILURE_RATE = 0.5
# Q3: share of the oracle's true MI that is "clearly tied" (above) or "depends little" (below).
Q3_MI_FRACTION = 0.5
Q3_MIN_ORACLE_MI = 0.05  # settings where the oracle itself carries less information (nats) are skipped
Q3_MEASURE = "mi_self_fraction"  # the model's own dependence on c, relative to the data's (experiments.probes)
# Q3 (z): output change when only z changes, relative to the change when only the sampling noise changes.
Q3_Z_RATIO = 0.5
# Q4: share of a GAN's temperature curve that the MLE curve must dominate.
Q4_DOMINATED = 0.5
# Q1: the fraction of the curve averaged at its start and end to measure the MLE loss decrease.
Q1_WINDOW = 0.1
# Runs planned with fewer generator updates than this are reported (flagged ``underpowered`` in their row) but
# kept out of every verdict: Adam's moments, its bias correction and any warmup count updates, not samples, so
# a run of a handful of updates measures an unfinished optimisation, not its batch size.
MIN_VERDICT_UPDATES = 30


def is_underpowered(row: dict) -> bool:
    """The row's ``underpowered`` flag; rows written before the flag existed are judged by their update count."""
    if "underpowered" in row:
        return bool(row["underpowered"])
    return finite(row.get("updates")) and row["updates"] < MIN_VERDICT_UPDATES


def verdict_rows(rows: list[dict]) -> list[dict]:
    """The rows every verdict is decided on: all rows but the underpowered ones (``MIN_VERDICT_UPDATES``)."""
    return [r for r in rows if not is_underpowered(r)]


@dataclass
class Verdict:
    question: str
    claim: str
    verdict: str
    evidence: str  # one line for the table
    rule: str
    details: list[str] = field(default_factory=list)  # Markdown lines for the question's section


def combine(cells: list[str]) -> str:
    decided = [c for c in cells if c != INCONCLUSIVE]
    if not cells:
        return INCONCLUSIVE
    s, n = decided.count(SUPPORTED), decided.count(NOT_SUPPORTED)
    if s * 2 >= len(cells) and n == 0:
        return SUPPORTED
    if n * 2 >= len(cells) and s == 0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _by(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _get(row: dict, path: str):
    value = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def per_seed(rows: list[dict], fn: Callable[[dict], Optional[float]]) -> dict[int, float]:
    out = {}
    for r in rows:
        v = fn(r)
        if finite(v):
            out[r["seed"]] = float(v)
    return out


def families_of(rows) -> list[str]:
    seen = []
    for r in rows:
        if r["family"] not in seen:
            seen.append(r["family"])
    return seen


def mle_families(rows) -> list[str]:
    return [f for f in families_of(rows) if not _by(rows, family=f)[0].get("adversarial")]


def gan_families(rows) -> list[str]:
    return [f for f in families_of(rows) if _by(rows, family=f)[0].get("adversarial")]


# ---- Q1 ------------------------------------------------------------------------------------------------------


def _diff(xs):
    return [b - a for a, b in zip(xs, xs[1:])]


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 3:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def loss_coupling(curve: list[dict]) -> float:
    """Correlation of the step-to-step changes of the G and D losses (negative: they pull against each other)."""
    pts = [(p["train/g_loss"], p["train/d_loss"]) for p in curve
           if finite(p.get("train/g_loss")) and finite(p.get("train/d_loss"))]
    if len(pts) < 5:
        return math.nan
    return pearson(_diff([g for g, _ in pts]), _diff([d for _, d in pts]))


def loss_decrease(curve: list[dict], key: str = "train/loss") -> float:
    """Relative decrease of a loss from the first to the last ``Q1_WINDOW`` of its curve."""
    xs = [p[key] for p in curve if finite(p.get(key))]
    if len(xs) < 4:
        return math.nan
    w = max(1, int(len(xs) * Q1_WINDOW))
    first, last = sum(xs[:w]) / w, sum(xs[-w:]) / w
    return (first - last) / abs(first) if first else math.nan


def q1(rows: list[dict], curves: dict[str, list[dict]], ref_bs: int) -> Verdict:
    claim = ("A GAN is a game of two networks with two losses; a Transformer is a cooperation of encoder and "
             "decoder with one loss.")
    rule = ("Every run of the batch-size sweep (all batch sizes and seeds) is one replicate. Per GAN run, the "
            "Pearson correlation r of the step-to-step changes of the G and D losses (a game: the losses pull "
            "against each other, r < 0); per MLE run, the relative decrease of its one loss from the first to the "
            f"last {Q1_WINDOW:.0%} of training (a cooperation: one loss that training descends, decrease > 0). "
            "Supported if every GAN family's r interval lies below 0 and the MLE decrease interval above 0; not "
            "supported if a GAN family's r interval lies above 0 or the MLE decrease interval below 0.")
    sweep = _by(rows, kind="sweep")
    details, evidence, cells = [], [], []
    mle_ok = None
    for fam in mle_families(sweep):
        iv = t_interval(loss_decrease(curves.get(r["key"], [])) for r in _by(sweep, family=fam))
        details.append(f"- {fam}: relative decrease of its single loss {iv.fmt()}")
        evidence.append(f"{fam} loss decrease {iv.fmt(2)}")
        mle_ok = SUPPORTED if iv.above(0) else NOT_SUPPORTED if iv.below(0) else INCONCLUSIVE
    for fam in gan_families(sweep):
        fam_rows = _by(sweep, family=fam)
        iv = t_interval(loss_coupling(curves.get(r["key"], [])) for r in fam_rows)
        at_ref = _by(fam_rows, batch_size=ref_bs) or fam_rows
        acc_r = t_interval(_get(r, "losses.train/d_acc_real") for r in at_ref)
        acc_f = t_interval(_get(r, "losses.train/d_acc_fake") for r in at_ref)
        details.append(f"- {fam}: r(dG, dD) {iv.fmt()}; D accuracy over the last {Q1_WINDOW:.0%} of training at "
                       f"batch size {ref_bs}: real {acc_r.fmt(2)}, fake {acc_f.fmt(2)}")
        evidence.append(f"{fam} r(dG,dD) {iv.fmt(2)}")
        cells.append(SUPPORTED if iv.below(0) else NOT_SUPPORTED if iv.above(0) else INCONCLUSIVE)
    if mle_ok is None or not cells:
        verdict = INCONCLUSIVE
        evidence.append("needs both an MLE and a GAN family in the sweep")
    elif NOT_SUPPORTED in cells or mle_ok == NOT_SUPPORTED:
        verdict = NOT_SUPPORTED
    elif all(c == SUPPORTED for c in cells) and mle_ok == SUPPORTED:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return Verdict("Q1", claim, verdict, "; ".join(evidence), rule, details)


# ---- Q2 ------------------------------------------------------------------------------------------------------


def learning(row: dict) -> Optional[float]:
    """NLL_oracle per token gained over the untrained model (positive: better samples than at the start)."""
    a, b = _get(row, "init.nll_oracle_per_token"), _get(row, "final.nll_oracle_per_token")
    return a - b if finite(a) and finite(b) else None


def quality_gain(row: dict) -> Optional[float]:
    """Learning on oracle data; on real text, the BLEU-3 gained over the untrained model."""
    g = learning(row)
    if g is not None:
        return g
    a, b = _get(row, "init.bleu3"), _get(row, "final.bleu3")
    return b - a if finite(a) and finite(b) else None


def failure_rate(rows) -> float:
    return sum(bool(r.get("diverged") or r.get("collapsed")) for r in rows) / len(rows) if rows else math.nan


def q2(rows: list[dict], ref_bs: int) -> Verdict:
    claim = ("A GAN learns a population-level match, so tiny batches (down to one sample) make its training "
             "meaningless; a Transformer trains at batch size 1, only noisier.")
    sweep = _by(rows, kind="sweep")
    sizes = sorted({r["batch_size"] for r in sweep})
    rule = (f"Learning = untrained minus final NLL_oracle per token (BLEU-3 gain on text), per seed, at an equal "
            f"budget. Retained = learning at the smallest batch size / learning at the reference batch size "
            f"({ref_bs}), per seed. A family is usable if its learning interval at the reference lies above 0 and "
            f"fewer than {Q2_FAILURE_RATE:.0%} of its seeds diverged or collapsed there. It trains at the smallest "
            f"batch if the retained interval lies above {Q2_RETAINED} and under {Q2_FAILURE_RATE:.0%} of seeds "
            f"fail; it is meaningless there if the retained interval lies below {Q2_RETAINED} or at least "
            f"{Q2_FAILURE_RATE:.0%} of seeds fail. Supported if the MLE family trains and every GAN family is "
            "usable and meaningless at the smallest batch; not supported if the (usable) MLE family is meaningless "
            "or a usable GAN family trains there; inconclusive otherwise.")
    if not sweep or len(sizes) < 2 or ref_bs not in sizes:
        return Verdict("Q2", claim, INCONCLUSIVE, "no batch-size sweep with two batch sizes and the reference", rule)
    b_min = sizes[0]
    details, evidence, status = [], [], {}
    for fam in families_of(sweep):
        ref_rows, min_rows = _by(sweep, family=fam, batch_size=ref_bs), _by(sweep, family=fam, batch_size=b_min)
        ref_learn = per_seed(ref_rows, quality_gain)
        min_learn = per_seed(min_rows, quality_gain)
        iv_ref = t_interval(ref_learn.values())
        retained = t_interval([min_learn[s] / ref_learn[s] for s in min_learn
                               if s in ref_learn and ref_learn[s] != 0])
        fail_ref, fail_min = failure_rate(ref_rows), failure_rate(min_rows)
        noise_min = t_interval(per_seed(min_rows, lambda r: _get(r, "final.nll_oracle_per_token")).values())
        noise_ref = t_interval(per_seed(ref_rows, lambda r: _get(r, "final.nll_oracle_per_token")).values())
        usable = iv_ref.above(0) and fail_ref < Q2_FAILURE_RATE
        if not usable:
            state = "not usable"
        elif fail_min >= Q2_FAILURE_RATE or retained.below(Q2_RETAINED):
            state = "meaningless"
        elif retained.above(Q2_RETAINED):
            state = "trains"
        else:
            state = "unclear"
        status[fam] = state
        details.append(
            f"- {fam}: learning at bs {ref_bs} {iv_ref.fmt()}, at bs {b_min} {t_interval(min_learn.values()).fmt()}; "
            f"retained {retained.fmt()}; failed seeds {fail_min:.0%} at bs {b_min}, {fail_ref:.0%} at bs {ref_bs}; "
            f"seed std of final NLL_oracle {noise_min.std:.3g} at bs {b_min} vs {noise_ref.std:.3g} at bs {ref_bs} "
            f"-> **{state}** at bs {b_min}")
        evidence.append(f"{fam}: retained {retained.fmt(2)}, {fail_min:.0%} failed -> {state}")
    mle, gans = mle_families(sweep), gan_families(sweep)
    mle_state = status.get(mle[0]) if mle else None
    gan_states = [status[g] for g in gans]
    if mle_state is None or not gans:
        verdict = INCONCLUSIVE
    elif mle_state == "meaningless" or "trains" in gan_states:
        verdict = NOT_SUPPORTED
    elif mle_state == "trains" and all(s == "meaningless" for s in gan_states):
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return Verdict("Q2", claim, verdict, "; ".join(evidence), rule, details)


# ---- Q3 ------------------------------------------------------------------------------------------------------


def _setting(row) -> tuple:
    return row["condition"], row.get("condition_strength")


def q3_condition(rows: list[dict]) -> Verdict:
    claim = ("Without special tricks a GAN's output depends little on its input (here: the condition); a "
             "Transformer's output is clearly tied to its input.")
    rule = (f"Per setting (condition, strength) with an oracle MI above {Q3_MIN_ORACLE_MI} nats: dependence = the "
            "model's own I(c; y) (its likelihood q(y | c) in the oracle's estimator) / the oracle's I(c; y), per "
            "seed. A cell (GAN family and z_dim vs the MLE family) is supported if the MLE interval lies above "
            f"{Q3_MI_FRACTION} and the GAN interval below it; not supported if the GAN interval lies above "
            f"{Q3_MI_FRACTION} or the MLE interval below it. Cells are combined by the rule in the preamble. "
            "Whether the dependence is the right one (the oracle's MI bound on the samples, condition accuracy) "
            "is reported beside it.")
    abl = [r for r in _by(rows, kind="ablation") if r["condition"] != "none" and "probes" in r]
    abl = [r for r in abl if finite(r["probes"].get("mi_oracle")) and r["probes"]["mi_oracle"] > Q3_MIN_ORACLE_MI]
    if not abl:
        return Verdict("Q3", claim, INCONCLUSIVE, "no conditioning ablation in this run folder "
                       "(`gvt ablate conditioning --out RUN_DIR`)", rule)
    details, cells, evidence, short = [], [], [], []
    for setting in sorted({_setting(r) for r in abl}, key=str):
        rs = [r for r in abl if _setting(r) == setting]
        mle = [r for r in rs if not r.get("adversarial")]
        mle_iv = t_interval(per_seed(mle, lambda r: r["probes"].get(Q3_MEASURE)).values())
        line = [f"- {setting[0]}, strength {setting[1]}: dependence of the MLE family {mle_iv.fmt()}"]
        for fam in gan_families(rs):
            for z in sorted({r["z_dim"] for r in _by(rs, family=fam)}):
                iv = t_interval(per_seed(_by(rs, family=fam, z_dim=z), lambda r: r["probes"].get(Q3_MEASURE)).values())
                if not mle:
                    cell = INCONCLUSIVE
                elif mle_iv.above(Q3_MI_FRACTION) and iv.below(Q3_MI_FRACTION):
                    cell = SUPPORTED
                elif iv.above(Q3_MI_FRACTION) or mle_iv.below(Q3_MI_FRACTION):
                    cell = NOT_SUPPORTED
                else:
                    cell = INCONCLUSIVE
                cells.append(cell)
                line.append(f"{fam} z{z} {iv.fmt()} ({cell})")
                short.append(f"{setting[0]} {setting[1]}: MLE {mle_iv.fmt(2)} vs {fam} z{z} {iv.fmt(2)}")
        details.append("; ".join(line))
    verdict = combine(cells)
    evidence.append(f"{cells.count(SUPPORTED)} of {len(cells)} cells supported, {cells.count(NOT_SUPPORTED)} not "
                    "supported; " + "; ".join(short))
    return Verdict("Q3", claim, verdict, "; ".join(evidence), rule, details)


def q3_latent(rows: list[dict]) -> Verdict:
    claim = "Without special tricks a GAN's output depends little on its latent vector z."
    rule = ("Per GAN family, condition and z_dim > 0: z-ratio = Hamming distance between paired samples when only z "
            "changes / when only the sampling noise changes (same condition, common random numbers), per seed. "
            f"A cell is supported if its interval lies below {Q3_Z_RATIO}, not supported if above.")
    abl = [r for r in _by(rows, kind="ablation") if r.get("adversarial") and (r.get("z_dim") or 0) > 0 and "probes" in r]
    if not abl:
        return Verdict("Q3z", claim, INCONCLUSIVE, "no GAN run with z_dim > 0 in a conditioning ablation", rule)
    details, cells = [], []
    keys = sorted({(r["family"], r["condition"], r.get("condition_strength"), r["z_dim"]) for r in abl}, key=str)
    for fam, cond, strength, z in keys:
        rs = [r for r in abl if (r["family"], r["condition"], r.get("condition_strength"), r["z_dim"]) ==
              (fam, cond, strength, z)]
        iv = t_interval(per_seed(rs, lambda r: r["probes"]["change_z"] / r["probes"]["change_noise"]
                                 if r["probes"].get("change_noise") else None).values())
        cell = SUPPORTED if iv.below(Q3_Z_RATIO) else NOT_SUPPORTED if iv.above(Q3_Z_RATIO) else INCONCLUSIVE
        cells.append(cell)
        details.append(f"- {fam}, {cond}" + (f" (strength {strength})" if strength is not None else "")
                       + f", z_dim {z}: z-ratio {iv.fmt()} ({cell})")
    verdict = combine(cells)
    return Verdict("Q3z", claim, verdict, f"{cells.count(SUPPORTED)} of {len(cells)} cells supported, "
                   f"{cells.count(NOT_SUPPORTED)} not supported", rule, details)


# ---- Q4 ------------------------------------------------------------------------------------------------------


def q4(rows: list[dict], temperature_of: Callable[[dict], list[dict]], ref_bs: int) -> tuple[Verdict, Verdict]:
    claim_a = "Judged at one temperature (T = 1), a GAN can look better than MLE on sample quality."
    claim_b = ("Across a temperature sweep, MLE dominates: its quality-diversity curve lies below/left of the "
               "GAN's (Caccia et al. 2018).")
    rule_a = ("At the reference batch size, per seed: NLL_oracle per token of the MLE family minus the GAN's at T = 1 "
              "(on text: the GAN's BLEU-5 minus the MLE's). Supported if the interval lies above 0 for at least one "
              "GAN family; not supported if it lies below 0 for every GAN family.")
    rule_b = (f"At the reference batch size, per seed: the fraction of a GAN's temperature points (NLL_test, "
              f"NLL_oracle; on text Self-BLEU-5, BLEU-5) weakly dominated by the MLE curve of the same seed "
              f"(piecewise linear between temperatures). A GAN family is a supported cell if the interval lies "
              f"above {Q4_DOMINATED}, not supported if below; cells combined as in the preamble.")
    sweep = _by(rows, kind="sweep", batch_size=ref_bs)
    mle, gans = mle_families(sweep), gan_families(sweep)
    if not mle or not gans:
        missing = "needs an MLE and a GAN family at the reference batch size"
        return (Verdict("Q4a", claim_a, INCONCLUSIVE, missing, rule_a), Verdict("Q4b", claim_b, INCONCLUSIVE, missing, rule_b))
    mle_rows = _by(sweep, family=mle[0])

    def quality(r):
        if finite(_get(r, "final.nll_oracle_per_token")):
            return -_get(r, "final.nll_oracle_per_token")
        return _get(r, "final.bleu5")

    details_a, cells_a, ev_a = [], [], []
    mle_q = per_seed(mle_rows, quality)
    for fam in gans:
        gq = per_seed(_by(sweep, family=fam), quality)
        iv = t_interval([gq[s] - mle_q[s] for s in gq if s in mle_q])
        cells_a.append(SUPPORTED if iv.above(0) else NOT_SUPPORTED if iv.below(0) else INCONCLUSIVE)
        details_a.append(f"- {fam}: GAN quality advantage at T = 1 {iv.fmt()} ({cells_a[-1]})")
        ev_a.append(f"{fam} advantage {iv.fmt(2)}")
    if SUPPORTED in cells_a:
        verdict_a = SUPPORTED
    elif all(c == NOT_SUPPORTED for c in cells_a):
        verdict_a = NOT_SUPPORTED
    else:
        verdict_a = INCONCLUSIVE

    details_b, cells_b, ev_b = [], [], []
    mle_curves = {r["seed"]: temperature_of(r) for r in mle_rows}
    for fam in gans:
        fracs = []
        reverse = []
        for r in _by(sweep, family=fam):
            g, m = temperature_of(r), mle_curves.get(r["seed"])
            if len(g) >= 2 and m and len(m) >= 2:
                fracs.append(dominated_fraction(costs(m), costs(g)))
                reverse.append(dominated_fraction(costs(g), costs(m)))
        iv, rev = t_interval(fracs), t_interval(reverse)
        cells_b.append(SUPPORTED if iv.above(Q4_DOMINATED) else NOT_SUPPORTED if iv.below(Q4_DOMINATED)
                       else INCONCLUSIVE)
        details_b.append(f"- {fam}: share of its points dominated by MLE {iv.fmt()}; share of MLE's points "
                         f"dominated by it {rev.fmt()} ({cells_b[-1]})")
        ev_b.append(f"{fam} dominated {iv.fmt(2)}")
    return (Verdict("Q4a", claim_a, verdict_a, "; ".join(ev_a), rule_a, details_a),
            Verdict("Q4b", claim_b, combine(cells_b), "; ".join(ev_b), rule_b, details_b))


def noise_table(rows: list[dict], ref_bs: int) -> list[tuple[str, str, Interval]]:
    """(family, loss, B_simple over seeds: geometric mean and interval) at the reference batch size (or wherever
    it was measured)."""
    out = []
    noisy = [r for r in _by(rows, kind="sweep") if "noise" in r]
    at_ref = [r for r in noisy if r["batch_size"] == ref_bs]
    noisy = at_ref or noisy
    for fam in families_of(noisy):
        losses = sorted({k for r in _by(noisy, family=fam) for k in r["noise"]})
        for loss in losses:
            iv = log_t_interval(per_seed(_by(noisy, family=fam), lambda r: _get(r, f"noise.{loss}.b_simple")).values())
            out.append((fam, loss, iv))
    return out
