"""Q2's verdict (the rule and Holm: experiments.core.verdicts), and the noise-scale table beside it.

- **Q2** primary ``gan_batch1_loss`` = G_ref * r - G_1, where E = the drop in J per seed, G_B = E_GAN(B) -
  E_frozen-D(B) (the game's own effect) and r = ``retained`` (1/2): how far the GAN's game effect at batch 1
  falls short of half its effect at the reference. Preconditions: the MLE contrast C_MLE = E_MLE(1) -
  r E_MLE(ref) above 0 (below 0: not supported), and G_ref supported by the rule (a game effect to lose).
"""

from __future__ import annotations

from typing import Optional

from experiments.core.baselines import learning, missing_j_reason
from experiments.core.families import get_arg
from experiments.core.stats import Interval, log_t_interval, t_interval
from experiments.core.verdicts import (Cell, INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED, Verdict, VerdictSettings,
                                       _by, _gate_usable, _not_run, failure_rate, families_of, paired, per_seed, rule,
                                       verdict_rows)


# ---- Q2 ------------------------------------------------------------------------------------------------------


def q2(rows: list[dict], ref_bs: int, settings: Optional[VerdictSettings] = None) -> Verdict:
    settings = settings or VerdictSettings()
    rows = verdict_rows(rows)
    claim = ("A GAN learns a population-level match, so tiny batches (down to one sample) make its training "
             "meaningless; a Transformer trains at batch size 1, only noisier.")
    margin, r = settings.sesoi["Q2"], settings.retained
    mle, gan, null = settings.q2_mle, settings.q2_gan, settings.q2_null
    # the arms may be sweep runs or arms started from the shared MLE checkpoint (kind "pretrained-arm")
    pool = [x for x in rows if x.get("kind") in ("sweep", "pretrained-arm")]
    sweep = [x for x in pool if x["family"] in (mle, gan, null)]
    sizes = sorted({x["batch_size"] for x in sweep})
    b_min = sizes[0] if sizes else None
    rule_text = (f"E = learning (drop in J) per seed at an equal sample budget. The game's own effect G_B = "
                 f"E_{gan}(B) - E_{null}(B) (the null: the same GAN whose discriminator trains as often on shuffled "
                 f"labels; inconclusive, 'the null failed', when it diverged or collapsed in more than "
                 f"{settings.null_failure_limit:.0%} of the seeds at a batch size read here). Primary "
                 f"cell: G_ref * {r} - G_min (the GAN's game effect at the smallest batch size falling short of "
                 f"{r} of its effect at the reference, {ref_bs}), paired by seed, SESOI {margin} nats/token. Not "
                 f"supported if the MLE contrast C_MLE = E_{mle}(min) - {r} E_{mle}(ref) lies below 0 or the primary "
                 f"cell below 0 (C_GAN > 0: the GAN keeps its game effect); otherwise the rule on the primary cell "
                 f"decides, once C_MLE lies above 0 and G_ref is supported by the rule (there is a game effect to "
                 f"lose). The GAN must be usable at the reference (J's interval below the counted bigram's).")
    primary = "gan_batch1_loss"
    E = {(fam, b): per_seed(_by(sweep, family=fam, batch_size=b), learning)
         for fam in (mle, gan, null) for b in {b_min, ref_bs} if b is not None}
    missing = [f"{fam} at batch size {b}" for fam in (mle, gan, null) for b in sorted({b_min, ref_bs} - {None})
               if not _by(sweep, family=fam, batch_size=b)]
    gate = None
    if not sweep or len(sizes) < 2 or ref_bs not in sizes:
        gate = "no batch-size sweep with the reference and a smaller batch size"
    elif missing:
        gate = f"not run: {', '.join(missing)}"
    cells: dict[str, Cell] = {}

    def cell(name, description, values, fams, cell_margin=None):
        absent = [f for f in fams if not _by(sweep, family=f)]
        if gate is not None and not gate.startswith("not run"):
            cells[name] = _not_run(description, gate, cell_margin)
        elif absent:
            cells[name] = _not_run(description, f"not run: {', '.join(absent)}", cell_margin)
        else:
            cells[name] = Cell(description, values, cell_margin)

    def game_effect(b) -> dict[int, float]:  # G_B per seed
        return {s: x - E[(null, b)][s] for s, x in E.get((gan, b), {}).items() if s in E.get((null, b), {})}

    cell("mle_contrast", f"C_MLE = E(min) - {r} E(ref), {mle}",
         paired(E.get((mle, b_min), {}), E.get((mle, ref_bs), {}), lambda a, b: a - r * b), [mle])
    cell("gan_effect_ref", f"G_ref = E_{gan} - E_{null} at batch size {ref_bs}", list(game_effect(ref_bs).values()),
         [gan, null], margin)
    cell("gan_effect_min", f"G_min = E_{gan} - E_{null} at batch size {b_min}", list(game_effect(b_min).values()),
         [gan, null])
    cell(primary, f"G_ref * {r} - G_min", paired(game_effect(ref_bs), game_effect(b_min), lambda a, b: r * a - b),
         [gan, null], margin)
    met = None
    if gate is None and not cells[primary].values:
        gate = missing_j_reason(_by(sweep, family=gan))
    if gate is None:
        gate = _failed_null(sweep, null, [b_min, ref_bs], settings.null_failure_limit)
        met = False if gate else None
    if gate is None:
        met, gate = _gate_usable((_by(sweep, family=gan, batch_size=ref_bs), f"{gan} at batch size {ref_bs}"))
    if cells[primary].status != NOT_RUN:
        cells[primary].precondition_met = met
        cells[primary].precondition = gate or f"{gan} usable at batch size {ref_bs}"

    details = []
    for fam in families_of(pool):
        parts = []
        for b in sorted({x["batch_size"] for x in _by(pool, family=fam)}):
            bs_rows = _by(pool, family=fam, batch_size=b)
            fails = sum(bool(x.get("diverged") or x.get("collapsed")) for x in bs_rows)
            parts.append(f"bs {b}: {t_interval(per_seed(bs_rows, learning).values()).fmt(3)}"
                         + (f", {fails}/{len(bs_rows)} failed" if fails else ""))
        details.append(f"- {fam}: learning (drop in J) " + "; ".join(parts))
    by_bs = {b: {"samples": (_by(sweep, batch_size=b)[0].get("samples_seen")),
                 "steps": _by(sweep, batch_size=b)[0].get("updates")} for b in sizes}
    budgets = {"samples": {str(b): v["samples"] for b, v in by_bs.items()},
               "steps": {str(b): v["steps"] for b, v in by_bs.items()}}
    controls = {"null": _arm_summary(sweep, null, sizes),
                "minibatch_std": _mbstd_control(pool, settings, ref_bs),
                "accumulation": NOT_RUN}
    confounds = _q2_confounds(sweep, E, gan, null, [b for b in (b_min, ref_bs) if b is not None])
    details += [f"- confound: {c}" for c in confounds]
    v = Verdict("Q2", claim, INCONCLUSIVE, "", rule_text, details, margin=margin, primary=primary, cells=cells,
                gate=gate, extra={"budgets": budgets, "controls": controls, "retained": r, "confounds": confounds},
                decide=_q2_decide)
    return v.at_level(1.0 - settings.alpha, settings.min_seeds)


def _failed_null(sweep: list[dict], null: str, sizes: list[int], limit: float) -> Optional[str]:
    """"the null failed: ..." when the null arm diverged or collapsed in more than ``limit`` of its seeds at one of
    ``sizes`` (the batch sizes the primary cell reads); else None. Q2 is then inconclusive, never decided: a null
    that broke cannot tell the game's effect from its own failure."""
    for b in sorted(set(sizes)):
        null_rows = _by(sweep, family=null, batch_size=b)
        if null_rows and failure_rate(null_rows) > limit:
            fails = round(failure_rate(null_rows) * len(null_rows))
            return (f"the null failed: {null} diverged or collapsed in {fails}/{len(null_rows)} seeds at batch size "
                    f"{b} (more than {limit:.0%})")
    return None


def _q2_confounds(sweep: list[dict], E: dict, gan: str, null: str, sizes: list[int]) -> list[str]:
    """What G_B = E_GAN - E_null means in this run, when it is not "what the game taught": the null arm failed
    (diverged or collapsed), or the GAN itself lost ground (E < 0), so that G_B is harm avoided, not learning."""
    out = []
    for b in sorted(set(sizes)):
        null_rows = _by(sweep, family=null, batch_size=b)
        fails = sum(bool(x.get("diverged") or x.get("collapsed")) for x in null_rows)
        if fails:
            out.append(f"the null arm {null} failed (diverged or collapsed) in {fails}/{len(null_rows)} seeds at "
                       f"batch size {b}, so G_{b} compares the GAN with a broken generator")
        gan_e = t_interval(E.get((gan, b), {}).values())
        if gan_e.defined and gan_e.high < 0:
            out.append(f"{gan} itself made J worse at batch size {b} (learning {gan_e.fmt(3)}): its game effect there "
                       f"is harm avoided relative to a random discriminator, not learning")
    return out


def _q2_decide(v: Verdict, level: float, min_seeds: int) -> tuple[str, str]:
    c_mle = t_interval(v.cells["mle_contrast"].values, level)
    x = t_interval(v.primary_cell.values, level)
    if x.n < min_seeds or x.zero_spread or c_mle.n < min_seeds:
        return INCONCLUSIVE, f"too few seeds ({min(x.n, c_mle.n)} < {min_seeds})" if min(x.n, c_mle.n) < min_seeds \
            else rule(v.primary_cell.values, v.margin, level, min_seeds)[1]
    if c_mle.below(0):
        return NOT_SUPPORTED, f"the MLE family loses more than its share at the smallest batch: C_MLE {c_mle.fmt(3)}"
    if x.below(0):  # C_GAN = -x > 0
        return NOT_SUPPORTED, (f"the GAN keeps its game effect at the smallest batch (more than {v.extra['retained']} "
                               f"of it at the reference): {x.fmt(3)} at {level:.4g}")
    if not c_mle.above(0):
        return INCONCLUSIVE, f"the MLE family's training at the smallest batch is not shown: C_MLE {c_mle.fmt(3)}"
    g_ref, g_why = rule(v.cells["gan_effect_ref"].values, v.margin, level, min_seeds)
    if g_ref != SUPPORTED:
        return INCONCLUSIVE, f"no game effect shown at the reference batch size to lose (G_ref {g_why})"
    return rule(v.primary_cell.values, v.margin, level, min_seeds)


def _arm_summary(sweep, family: str, sizes) -> object:
    arm = _by(sweep, family=family)
    if not arm:
        return NOT_RUN
    return {"family": family, "learning": {str(b): t_interval(per_seed(_by(arm, batch_size=b), learning).values())
                                           .to_json() for b in sizes if _by(arm, batch_size=b)}}


def _mbstd_control(sweep, settings: VerdictSettings, ref_bs: int) -> object:
    mb = per_seed(_by(sweep, family=settings.q2_minibatch_std, batch_size=ref_bs), learning)
    if not _by(sweep, family=settings.q2_minibatch_std):
        return NOT_RUN
    plain = per_seed(_by(sweep, family=settings.q2_gan, batch_size=ref_bs), learning)
    return {"family": settings.q2_minibatch_std, "description": f"E(minibatch std) - E(plain) at batch size {ref_bs}",
            **t_interval(paired(mb, plain)).to_json()}


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
            iv = log_t_interval(per_seed(_by(noisy, family=fam), lambda r: get_arg(r, f"noise.{loss}.b_simple")).values())
            out.append((fam, loss, iv))
    return out
