"""Q1's verdict (the rule and Holm: experiments.core.verdicts).

- **Q1** primary ``rho_difference``: per seed at the reference batch size, Spearman's rho between a player's own
  held-out loss and J across the pre-registered checkpoints, MLE minus GAN (SESOI 0.5). Rows carry the
  checkpoints as ``game_checkpoints`` (a list of ``{update, J, held_out_loss, g_loss_vs_final_d, ...}``: the MLE's
  held-out cross-entropy, or G's loss against the D of the same checkpoint, on a fixed held-out batch with fixed
  noise; ``g_loss_vs_final_d``: G re-scored against the final D, frozen). Null: the same statistic with each
  run's checkpoint order permuted.
"""

from __future__ import annotations

import math
import random
from typing import Optional

from experiments.core.families import get_arg
from experiments.core.stats import finite, t_interval
from experiments.core.verdicts import (CHECKPOINTS, Cell, NOT_RUN, Verdict, VerdictSettings, _by, _gate_usable,
                                       _not_run, _standard, gan_families, paired, per_seed, verdict_rows)


# ---- Q1 ------------------------------------------------------------------------------------------------------


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share their average rank
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 3:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(xs: list[float], ys: list[float]) -> float:
    return pearson(_ranks(list(xs)), _ranks(list(ys)))


def _checkpoint_pairs(row: dict, key: str) -> list[tuple[float, float]]:
    return [(p[key], p["J"]) for p in row.get(CHECKPOINTS) or [] if finite(p.get(key)) and finite(p.get("J"))]


def _diff(xs):
    return [b - a for a, b in zip(xs, xs[1:])]


def loss_coupling(curve: list[dict]) -> float:
    """Correlation of the step-to-step changes of the G and D losses. Descriptive only: it is negative even for
    frozen networks, because D's and G's losses share the same real rows."""
    pts = [(p["train/g_loss"], p["train/d_loss"]) for p in curve
           if finite(p.get("train/g_loss")) and finite(p.get("train/d_loss"))]
    if len(pts) < 5:
        return math.nan
    return pearson(_diff([g for g, _ in pts]), _diff([d for _, d in pts]))


def q1(rows: list[dict], curves: dict[str, list[dict]], ref_bs: int,
       settings: Optional[VerdictSettings] = None) -> Verdict:
    settings = settings or VerdictSettings()
    rows = verdict_rows(rows)
    claim = ("A GAN is a game of two networks with two losses; a Transformer is a cooperation of encoder and "
             "decoder with one loss.")
    margin = settings.sesoi["Q1"]
    rule_text = (f"A player's own loss cannot measure its progress in a game (it is scored against a moving "
                 f"opponent), while a cooperative loss does. Per seed at batch size {ref_bs} (never pooled across "
                 f"batch sizes), over at least {settings.min_checkpoints} pre-registered checkpoints: Spearman's rho "
                 f"between the player's own loss on a fixed held-out batch with fixed noise (MLE: held-out cross-"
                 f"entropy; GAN: G's loss against the D of the same checkpoint) and J. Primary cell: "
                 f"rho_MLE - rho_GAN ({settings.mle_family} vs {settings.gan_family}), paired by seed, SESOI "
                 f"{margin}. Both families must be usable (J's interval below the counted bigram's). Null: each run's checkpoint "
                 f"order permuted ({settings.permutations} permutations). Mechanism: G re-scored against the final D.")
    at_ref = _by(_by(rows, kind=settings.compared_kind), batch_size=ref_bs)
    mle_rows, gan_rows = _by(at_ref, family=settings.mle_family), _by(at_ref, family=settings.gan_family)

    def rho(key):
        def fn(row):
            pts = _checkpoint_pairs(row, key)
            return spearman([a for a, _ in pts], [b for _, b in pts]) if len(pts) >= settings.min_checkpoints else None
        return fn

    rho_m, rho_g = per_seed(mle_rows, rho("held_out_loss")), per_seed(gan_rows, rho("held_out_loss"))
    rho_final_d = per_seed(gan_rows, rho("g_loss_vs_final_d"))
    have = any(r.get(CHECKPOINTS) for r in mle_rows) and any(r.get(CHECKPOINTS) for r in gan_rows)
    primary = "rho_difference"
    extra: dict = {"null": NOT_RUN}
    if not have:
        why = ("not run: no checkpoint re-scoring in this run folder (rows without "
               f"`{CHECKPOINTS}` for {settings.mle_family} and {settings.gan_family} at batch size {ref_bs})")
        cells = {primary: _not_run("rho_MLE - rho_GAN", why, margin), "rho_mle": _not_run("rho_MLE", why),
                 "rho_gan": _not_run("rho_GAN", why), "rho_gan_final_d": _not_run("rho of G vs the final D", why)}
        gate = why
    else:
        cells = {primary: Cell("rho_MLE - rho_GAN", paired(rho_m, rho_g), margin),
                 "rho_mle": Cell(f"rho_MLE ({settings.mle_family})", list(rho_m.values())),
                 "rho_gan": Cell(f"rho_GAN ({settings.gan_family})", list(rho_g.values())),
                 "rho_gan_final_d": Cell("rho of G's loss against the final D, frozen", list(rho_final_d.values()))}
        met, gate = _gate_usable((mle_rows, settings.mle_family), (gan_rows, settings.gan_family))
        cells[primary].precondition_met = met
        cells[primary].precondition = gate or "both families usable"
        extra["null"] = _q1_null(mle_rows, gan_rows, settings)
    details = []
    if extra["null"] != NOT_RUN:
        null = extra["null"]
        details.append(f"- null (checkpoint order permuted, {null['permutations']} times): mean difference "
                       f"{null['mean']:.3g}, 95% of permutations within [{null['interval'][0]:.3g}, "
                       f"{null['interval'][1]:.3g}]")
    for fam in gan_families(at_ref):
        fam_rows = _by(at_ref, family=fam)
        r = t_interval(loss_coupling(curves.get(x["key"], [])) for x in fam_rows)
        acc_r = t_interval(get_arg(x, "losses.train/d_acc_real") for x in fam_rows)
        acc_f = t_interval(get_arg(x, "losses.train/d_acc_fake") for x in fam_rows)
        details.append(f"- {fam} (descriptive, not evidence: mechanically negative even for frozen nets): r(dG, dD) "
                       f"{r.fmt()}; D accuracy over the last 10% of training: real {acc_r.fmt(2)}, fake "
                       f"{acc_f.fmt(2)}")
    return _standard("Q1", claim, rule_text, margin, primary, cells, gate, details, settings, **extra)


def _q1_null(mle_rows, gan_rows, settings: VerdictSettings) -> dict:
    """The primary statistic's mean over seeds with every run's checkpoint order permuted (no association)."""
    pairs_m = {r["seed"]: _checkpoint_pairs(r, "held_out_loss") for r in mle_rows}
    pairs_g = {r["seed"]: _checkpoint_pairs(r, "held_out_loss") for r in gan_rows}
    seeds = [s for s in sorted(pairs_m) if s in pairs_g and len(pairs_m[s]) >= settings.min_checkpoints
             and len(pairs_g[s]) >= settings.min_checkpoints]
    if not seeds:
        return {"permutations": 0, "mean": math.nan, "interval": [math.nan, math.nan]}
    rng = random.Random(0)

    def shuffled_rho(pts):
        losses = [a for a, _ in pts]
        rng.shuffle(losses)
        return spearman(losses, [b for _, b in pts])

    means = []
    for _ in range(settings.permutations):
        diffs = [shuffled_rho(pairs_m[s]) - shuffled_rho(pairs_g[s]) for s in seeds]
        diffs = [d for d in diffs if finite(d)]
        if diffs:
            means.append(sum(diffs) / len(diffs))
    means.sort()
    if not means:
        return {"permutations": 0, "mean": math.nan, "interval": [math.nan, math.nan]}
    q = lambda p: means[min(len(means) - 1, int(p * len(means)))]  # noqa: E731
    return {"permutations": len(means), "mean": sum(means) / len(means), "interval": [q(0.025), q(0.975)]}
