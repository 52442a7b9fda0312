"""Verdicts on Q1-Q4, decided from the results rows by one rule, fixed in advance and quoted in the report.

**The rule** (``rule``), the same for every question. Each question names one *primary cell*: a statistic per
seed, oriented so that the claim predicts a positive value, and a *smallest effect of interest* (SESOI, the
question's ``margin``) below which an effect would not matter. With the t-interval of the primary cell over
seeds:

- **supported**: the interval's lower bound lies above 0 and the estimate is at least the SESOI;
- **not supported**: the interval's upper bound lies below the SESOI (an effect that matters is excluded);
- **inconclusive**: anything else, and also with fewer than ``min_seeds`` seeds, with a sample whose seeds are
  all equal (no honest interval), where a cell was not run, or where a precondition fails (a family whose J
  does not beat the counted bigram's is "not usable": its success or failure says nothing about its objective).

**Holm** (``holm``): the verdicts are one family of tests at level ``alpha`` (default 5%). The questions that can
be decided are ordered by the p-value of their primary cell (against 0 when the estimate is at least the SESOI,
against the SESOI otherwise); the k-th of m is decided on intervals at level 1 - alpha / (m - k + 1), and the
first one that stays inconclusive stops the procedure (the rest are inconclusive, saying so). Every interval of
a question is printed at the level its verdict used.

**Learning** is the drop in J = KL(p || q) + KL(q || p) per token (``experiments.core.baselines``), which a model
cannot improve by sharpening alone; rows need ``model_entropy_per_token`` and the oracle's entropy for it.

The questions (cells named as in ``verdicts.json``):

- **Q1** primary ``rho_difference``: per seed at the reference batch size, Spearman's rho between a player's own
  held-out loss and J across the pre-registered checkpoints, MLE minus GAN (SESOI 0.5). Rows carry the
  checkpoints as ``game_checkpoints`` (a list of ``{update, J, held_out_loss, g_loss_vs_final_d, ...}``: the MLE's
  held-out cross-entropy, or G's loss against the D of the same checkpoint, on a fixed held-out batch with fixed
  noise; ``g_loss_vs_final_d``: G re-scored against the final D, frozen). Null: the same statistic with each
  run's checkpoint order permuted.
- **Q2** primary ``gan_batch1_loss`` = G_ref * r - G_1, where E = the drop in J per seed, G_B = E_GAN(B) -
  E_frozen-D(B) (the game's own effect) and r = ``retained`` (1/2): how far the GAN's game effect at batch 1
  falls short of half its effect at the reference. Preconditions: the MLE contrast C_MLE = E_MLE(1) -
  r E_MLE(ref) above 0 (below 0: not supported), and G_ref supported by the rule (a game effect to lose).
- **Q3** primary ``dependence_difference``: own-MI dependence on the condition (``mi_self / mi_oracle``), MLE
  minus GAN, per seed, at the pre-registered setting (SESOI 0.5). **Q3z** primary ``z_insensitivity`` = 1 -
  Hamming(z only) / Hamming(sampling noise only) (SESOI 0.5).
- **Q4a** primary ``gan_advantage_t1``: NLL_oracle per token of the MLE family minus the GAN's at T = 1
  (SESOI 0.1 nats). **Q4b** primary ``quality_at_matched_diversity``: the mean, over the NLL_test range both
  temperature curves span, of the GAN's best NLL_oracle minus the MLE's at equal NLL_test (SESOI 0.1 nats);
  curves that do not overlap make it inconclusive, saying so. A GAN worse on both axes is "not usable", not
  "dominated".

Cells whose arm is missing from the run folder are ``not run``; such a question is inconclusive with that reason.
Rows kept out of every verdict are dropped in one place, ``verdict_rows``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Optional

from experiments.core.baselines import j_score, learning, missing_j_reason, usable
from experiments.core.families import get_arg
from experiments.core.stats import Interval, finite, log_t_interval, seeds_needed, t_interval, t_p_value
from experiments.q4_temperature.temperature import axis_range, costs, dominated_fraction, matched_gap
from modules.errors import ConfigError

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
NOT_RUN = "not run"
CHECKPOINTS = "game_checkpoints"  # the row field Q1 reads (see the module docstring)

DEFAULT_SESOI = {"Q1": 0.5, "Q2": 0.1, "Q3": 0.5, "Q3z": 0.5, "Q4a": 0.1, "Q4b": 0.1}
SESOI_UNITS = {"Q1": "difference of Spearman rho", "Q2": "nats/token of J", "Q3": "share of the data's MI",
               "Q3z": "share of the sampling-noise change", "Q4a": "nats/token", "Q4b": "nats/token"}


@dataclass(frozen=True)
class VerdictSettings:
    """Everything that decides a verdict besides the runs themselves: part of the pre-registration hash.

    A run folder's plan may override any of these under ``"verdicts"`` (``from_plan``)."""

    alpha: float = 0.05  # family-wise error rate over all verdicts (Holm)
    min_seeds: int = 3
    sesoi: dict = field(default_factory=lambda: dict(DEFAULT_SESOI))
    # Q1, Q3, Q4 compare the GAN started from the shared MLE checkpoint with the MLE family trained on from the
    # same checkpoint for the same samples (SeqGAN's, RelGAN's and Caccia et al.'s protocol; like with like: one
    # start, one budget, one optimiser, two objectives): rows of kind ``compared_kind`` (the ablation's own, for Q3).
    # The from-scratch families are reported beside them.
    mle_family: str = "mle-continued"
    gan_family: str = "gan-gumbel-pt"  # the primary GAN of Q1, Q3, Q4; others are reported beside it
    compared_kind: str = "pretrained-arm"
    # Q2's arms, all started from the one shared MLE checkpoint per seed (kind "pretrained-arm")
    q2_mle: str = "mle-continued"
    q2_gan: str = "gan-gumbel-pt"
    q2_null: str = "gan-shuffled-d-pt"
    q2_minibatch_std: str = "gan-mbstd-pt"
    # Q2 is inconclusive ("the null failed") when its null arm diverged or collapsed in more than this share of the
    # seeds at a batch size the primary cell reads: a broken null cannot tell a game effect from a failure
    null_failure_limit: float = 0.25
    retained: float = 0.5
    q3_min_oracle_mi: float = 0.05  # settings whose oracle carries less information (nats) are skipped
    min_checkpoints: int = 5
    permutations: int = 200

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_plan(cls, plan: Optional[dict]) -> "VerdictSettings":
        overrides = dict((plan or {}).get("verdicts") or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"the plan's verdict settings {unknown} are unknown; known: {sorted(known)}")
        if "sesoi" in overrides:
            overrides["sesoi"] = {**DEFAULT_SESOI, **overrides["sesoi"]}
        return replace(cls(), **overrides)


# ---- the rule --------------------------------------------------------------------------------------------------


def rule(values, margin: float, level: float = 0.95, min_seeds: int = 3) -> tuple[str, str]:
    """The one verdict rule of the module docstring on per-seed ``values``: (verdict, reason)."""
    iv = t_interval(values, level)
    if iv.n < min_seeds:
        return INCONCLUSIVE, f"too few seeds ({iv.n} < {min_seeds})"
    if iv.zero_spread:
        return INCONCLUSIVE, f"all {iv.n} seeds gave {iv.mean:.3g}: no spread, so no honest interval"
    where = f"{iv.fmt(3)} at {level:.4g}, SESOI {margin:g}"
    if iv.low > 0 and iv.mean >= margin:
        return SUPPORTED, f"{where}: above 0 and at least the SESOI"
    if iv.high < margin:
        return NOT_SUPPORTED, f"{where}: excludes every effect of the SESOI's size"
    if iv.low > 0:
        return INCONCLUSIVE, f"{where}: above 0 but the estimate is below the SESOI"
    return INCONCLUSIVE, f"{where}: reaches both below 0 and the SESOI"


def decision_p_value(values, margin: float) -> float:
    """The smallest family-wise level at which ``rule`` decides: the t test against 0 if the estimate is at least
    the SESOI (supported is then possible), else against the SESOI (not supported is then possible)."""
    iv = t_interval(values)
    if not iv.defined:
        return math.nan
    return t_p_value(values, 0.0 if iv.mean >= margin else margin)


@dataclass
class Cell:
    """One statistic per seed (a paired difference where the description says so), with its precondition."""

    description: str
    values: list[float] = field(default_factory=list)
    margin: Optional[float] = None  # the SESOI its rule uses; None: reported, not decided
    precondition_met: Optional[bool] = True  # None: unknown (a needed metric is missing)
    precondition: str = ""
    status: str = "run"  # or NOT_RUN
    level: float = 0.95

    @property
    def interval(self) -> Interval:
        return t_interval(self.values, self.level)

    def fmt(self, digits: int = 3) -> str:
        return NOT_RUN if self.status == NOT_RUN else self.interval.fmt(digits)

    def to_json(self) -> dict:
        iv = self.interval.to_json()
        return {"description": self.description, "status": self.status, "estimate": iv["estimate"],
                "interval": iv["interval"], "n": iv["n"], "level": self.level, "margin": self.margin,
                "precondition_met": self.precondition_met, "precondition": self.precondition,
                "values": self.values}


@dataclass
class Verdict:
    question: str
    claim: str
    verdict: str
    evidence: str  # one line for the table
    rule: str
    details: list[str] = field(default_factory=list)  # Markdown lines for the question's section
    margin: Optional[float] = None
    primary: Optional[str] = None
    cells: dict[str, Cell] = field(default_factory=dict)
    reason: str = ""
    level: float = 0.95
    gate: Optional[str] = None  # why it cannot be decided whatever the level (not run, not usable, ...)
    extra: dict = field(default_factory=dict)  # Q1: null; Q2: budgets, controls
    holm: dict = field(default_factory=dict)
    decide: Optional[Callable[["Verdict", float, int], tuple[str, str]]] = field(default=None, repr=False)

    @property
    def primary_cell(self) -> Optional[Cell]:
        return self.cells.get(self.primary) if self.primary else None

    def testable(self, min_seeds: int) -> bool:
        cell = self.primary_cell
        return (self.gate is None and cell is not None and cell.status != NOT_RUN
                and cell.interval.n >= min_seeds and cell.interval.defined)

    @property
    def p_value(self) -> float:
        cell = self.primary_cell
        return decision_p_value(cell.values, self.margin) if cell is not None and self.margin is not None else math.nan

    def at_level(self, level: float, min_seeds: int = 3) -> "Verdict":
        """Re-decide at interval level ``level`` (every cell's interval is then shown at it)."""
        self.level = level
        for cell in self.cells.values():
            cell.level = level
        cell = self.primary_cell
        seeds = cell.interval.n if cell is not None and cell.status != NOT_RUN else 0
        if 0 < seeds < min_seeds:  # the most basic reason first: no other check means anything with so few
            self.verdict, self.reason = INCONCLUSIVE, f"too few seeds ({seeds} < {min_seeds})"
        elif self.gate is not None:
            self.verdict, self.reason = INCONCLUSIVE, self.gate
        elif self.decide is not None:
            self.verdict, self.reason = self.decide(self, level, min_seeds)
        elif self.primary_cell is None:
            self.verdict, self.reason = INCONCLUSIVE, "no primary cell"
        else:
            self.verdict, self.reason = rule(self.primary_cell.values, self.margin, level, min_seeds)
        self.evidence = self._evidence()
        return self

    def _evidence(self) -> str:
        cell = self.primary_cell
        head = f"{cell.description}: {cell.fmt(2)}" if cell is not None else ""
        margin = f"; SESOI {self.margin:g}" if self.margin is not None else ""
        return f"{head}{margin} -> {self.reason}" if head else self.reason

    def power(self) -> Optional[dict]:
        """Did the run have the seeds issue 10 sizes for? The primary cell's interval half-width (at the level the
        verdict was decided at) against the target, half the SESOI, and the seeds its observed spread would need
        (``experiments.core.stats.seeds_needed``); None when there is no primary cell with a spread or no SESOI."""
        cell = self.primary_cell
        if cell is None or cell.status == NOT_RUN or self.margin is None or not self.margin > 0:
            return None
        iv = t_interval(cell.values, self.level)
        if not iv.defined:
            return None
        try:
            needed: Optional[int] = seeds_needed(iv.std, self.margin, level=self.level)
        except ValueError:
            needed = None  # more than any run could afford
        half = (iv.high - iv.low) / 2.0
        return {"seeds": iv.n, "std": iv.std, "half_width": half, "target_half_width": self.margin / 2.0,
                "met": half <= self.margin / 2.0, "seeds_needed": needed, "level": self.level}

    def to_json(self) -> dict:
        out = {"question": self.question, "claim": self.claim, "verdict": self.verdict, "reason": self.reason,
               "rule": self.rule, "margin": self.margin, "primary": self.primary, "level": self.level,
               "holm": self.holm, "cells": {name: cell.to_json() for name, cell in self.cells.items()},
               "evidence": self.evidence, "details": self.details, "power": self.power()}
        out.update(self.decision())
        out.update(self.extra)
        return out

    def decision(self) -> dict:
        """``decided`` (supported or not supported) and, where it is not, ``undecided_because``: the gate that
        failed (with its margin, in its text), the Holm step that stopped it, or the spread, with the seeds the
        primary cell's spread needs (``power``)."""
        if self.verdict in (SUPPORTED, NOT_SUPPORTED):
            return {"decided": True, "undecided_because": None}
        power = self.power() or {}
        if self.gate:
            kind = "gate"
        elif self.reason.startswith("Holm"):
            kind = "holm"
        else:
            kind = "spread"
        needed = power.get("seeds_needed")
        seeds = f"; its spread needs {needed} seeds (it has {power.get('seeds')})" if needed and not power.get("met") else ""
        return {"decided": False, "undecided_because": {"kind": kind, "text": f"{self.gate or self.reason}{seeds}",
                                                         "seeds_needed": needed}}


def holm(verdicts: list[Verdict], alpha: float = 0.05, min_seeds: int = 3) -> list[Verdict]:
    """Decide ``verdicts`` together at family-wise level ``alpha`` (Holm's step-down; module docstring)."""
    testable = sorted((v for v in verdicts if v.testable(min_seeds)), key=lambda v: v.p_value)
    m = len(testable)
    stopped_at = None
    for k, v in enumerate(testable):
        level = 1.0 - alpha / (m - k)
        v.at_level(level, min_seeds)
        v.holm = {"rank": k + 1, "of": m, "p_value": v.p_value, "alpha": alpha / (m - k)}
        if stopped_at is not None:
            v.verdict = INCONCLUSIVE
            v.reason = f"Holm's step-down stopped at {stopped_at} (undecided), so no later question is decided"
            v.evidence = v._evidence()
        elif v.verdict == INCONCLUSIVE:
            stopped_at = v.question
    for v in verdicts:
        if not v.testable(min_seeds):
            v.at_level(1.0 - alpha, min_seeds)
            v.holm = {"rank": None, "of": m, "p_value": None, "alpha": alpha}
    return verdicts


# ---- rows ------------------------------------------------------------------------------------------------------


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
    """The rows every verdict is decided on: all rows but the underpowered ones (``MIN_VERDICT_UPDATES``). The one
    place where rows are kept out of every verdict (they stay in the report's tables); every question calls it."""
    return [r for r in rows if not is_underpowered(r)]


def _by(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def per_seed(rows: list[dict], fn: Callable[[dict], Optional[float]]) -> dict[int, float]:
    out = {}
    for r in rows:
        v = fn(r)
        if finite(v):
            out[r["seed"]] = float(v)
    return out


def paired(a: dict[int, float], b: dict[int, float], fn=lambda x, y: x - y) -> list[float]:
    """``fn(a[s], b[s])`` for every seed s in both, in seed order."""
    return [fn(a[s], b[s]) for s in sorted(a) if s in b]


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


def failure_rate(rows) -> float:
    return sum(bool(r.get("diverged") or r.get("collapsed")) for r in rows) / len(rows) if rows else math.nan


def _usability(rows: list[dict], name: str) -> tuple[Optional[bool], str]:
    """(usable, reason) of one cell's rows, with the family named."""
    if not rows:
        return None, f"{name}: not run"
    ok, why, _ = usable(rows)
    return ok, f"{name}: {why}"


def _gate_usable(*groups: tuple[list[dict], str]) -> tuple[Optional[bool], Optional[str]]:
    """(True, None) when every group of rows is usable, else (False or None for unknown, the first reason)."""
    for rows, name in groups:
        ok, why = _usability(rows, name)
        if ok is not True:
            return ok, why
    return True, None


def _not_run(description: str, why: str, margin: Optional[float] = None) -> Cell:
    return Cell(description, margin=margin, status=NOT_RUN, precondition_met=None, precondition=why)


def _standard(question: str, claim: str, rule_text: str, margin: float, primary: str, cells: dict[str, Cell],
              gate: Optional[str], details: list[str], settings: "VerdictSettings", **extra) -> Verdict:
    v = Verdict(question, claim, INCONCLUSIVE, "", rule_text, details, margin=margin, primary=primary, cells=cells,
                gate=gate, extra=extra)
    return v.at_level(1.0 - settings.alpha, settings.min_seeds)


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


# ---- Q3 ------------------------------------------------------------------------------------------------------


def _setting(row) -> tuple:
    return row["condition"], row.get("condition_strength")


def _q3_rows(rows, settings: VerdictSettings) -> list[dict]:
    abl = [r for r in _by(rows, kind="ablation") if r["condition"] != "none" and "probes" in r]
    return [r for r in abl
            if finite(r["probes"].get("mi_oracle")) and r["probes"]["mi_oracle"] > settings.q3_min_oracle_mi]


def primary_setting(abl: list[dict]) -> Optional[tuple]:
    """The pre-registered Q3 setting: label conditioning if the grid has it (else source), at its largest strength
    (where the data depend on the condition most)."""
    settings_ = {_setting(r) for r in abl}
    for cond in ("label", "source"):
        strengths = [s for c, s in settings_ if c == cond]
        if strengths:
            return cond, max(strengths, key=lambda s: s if s is not None else -1)
    return None


def _primary_z(rows: list[dict], family: str, positive: bool = False) -> Optional[int]:
    zs = [r.get("z_dim") or 0 for r in _by(rows, family=family)]
    zs = [z for z in zs if z > 0] if positive else zs
    return max(zs) if zs else None


def q3_condition(rows: list[dict], settings: Optional[VerdictSettings] = None) -> Verdict:
    settings = settings or VerdictSettings()
    rows = verdict_rows(rows)
    claim = ("Without special tricks a GAN's output depends little on its input (here: the condition); a "
             "Transformer's output is clearly tied to its input.")
    margin = settings.sesoi["Q3"]
    rule_text = (f"Dependence = the model's own I(c; y) (its likelihood q(y | c) in the oracle's estimator) / the "
                 f"oracle's I(c; y), per seed. Primary cell: dependence of {settings.mle_family} minus that of "
                 f"{settings.gan_family} (its largest z_dim), paired by seed, at the pre-registered setting (label "
                 f"conditioning if present, else source, at the largest strength; settings whose oracle MI is below "
                 f"{settings.q3_min_oracle_mi} nats are skipped), SESOI {margin}. Both families must be usable there "
                 f"(J's interval below the counted bigram's). Other settings and families are reported beside it.")
    primary = "dependence_difference"
    abl = _q3_rows(rows, settings)
    setting = primary_setting(abl)
    dep = lambda r: r["probes"].get("mi_self_fraction")  # noqa: E731
    if setting is None:
        why = "not run: no conditioning ablation in this run folder (`gvt ablate conditioning --out RUN_DIR`)"
        cells = {primary: _not_run("MLE - GAN dependence", why, margin)}
        return _standard("Q3", claim, rule_text, margin, primary, cells, why, [], settings)
    rs = [r for r in abl if _setting(r) == setting]
    mle_rows = _by(rs, family=settings.mle_family)
    z = _primary_z(rs, settings.gan_family)
    gan_rows = _by(rs, family=settings.gan_family, z_dim=z) if z is not None else []
    label = f"{setting[0]}, strength {setting[1]}"
    missing = [f for f, x in ((settings.mle_family, mle_rows), (settings.gan_family, gan_rows)) if not x]
    if missing:
        gate = f"not run: {', '.join(missing)} at {label}"
        cells = {primary: _not_run("MLE - GAN dependence", gate, margin)}
    else:
        met, gate = _gate_usable((mle_rows, settings.mle_family), (gan_rows, f"{settings.gan_family} z{z}"))
        cells = {primary: Cell(f"dependence {settings.mle_family} - {settings.gan_family} z{z} ({label})",
                               paired(per_seed(mle_rows, dep), per_seed(gan_rows, dep)), margin,
                               met, gate or "both families usable")}
    details = []
    for s in sorted({_setting(r) for r in abl}, key=str):
        srows = [r for r in abl if _setting(r) == s]
        line = []
        for fam in families_of(srows):
            for zz in sorted({r.get("z_dim") or 0 for r in _by(srows, family=fam)}):
                frows = [r for r in _by(srows, family=fam) if (r.get("z_dim") or 0) == zz]
                name = fam + (f" z{zz}" if frows[0].get("adversarial") else "")
                ok, _ = _usability(frows, name)
                cells.setdefault(f"dependence {name} ({s[0]} {s[1]})",
                                 Cell(f"dependence of {name} ({s[0]}, strength {s[1]})",
                                      list(per_seed(frows, dep).values()), None, ok,
                                      "usable" if ok else "not known to be usable"))
                line.append(f"{name} {t_interval(per_seed(frows, dep).values()).fmt()}"
                            + ("" if ok else " (not usable)" if ok is False else " (usability unknown)"))
        details.append(f"- {s[0]}, strength {s[1]}{' (primary)' if s == setting else ''}: dependence "
                       + "; ".join(line))
    return _standard("Q3", claim, rule_text, margin, primary, cells, gate, details, settings)


def q3_latent(rows: list[dict], settings: Optional[VerdictSettings] = None) -> Verdict:
    settings = settings or VerdictSettings()
    rows = verdict_rows(rows)
    claim = "Without special tricks a GAN's output depends little on its latent vector z."
    margin = settings.sesoi["Q3z"]
    rule_text = (f"z-ratio = Hamming distance between paired samples when only z changes / when only the sampling "
                 f"noise changes (same condition, common random numbers), per seed. Primary cell: 1 - z-ratio of "
                 f"{settings.gan_family} at its largest z_dim at Q3's setting, SESOI {margin} (z moves the output at "
                 f"most half as much as sampling noise). The GAN must be usable (J's interval below the bigram's).")
    primary = "z_insensitivity"
    abl = [r for r in _q3_rows(rows, settings) if r.get("adversarial") and (r.get("z_dim") or 0) > 0]
    setting = primary_setting(_q3_rows(rows, settings))
    insensitivity = lambda r: (1.0 - r["probes"]["change_z"] / r["probes"]["change_noise"]  # noqa: E731
                               if finite(r["probes"].get("change_z")) and r["probes"].get("change_noise") else None)
    rs = [r for r in abl if _setting(r) == setting]
    z = _primary_z(rs, settings.gan_family, positive=True)
    gan_rows = _by(rs, family=settings.gan_family, z_dim=z) if z else []
    if not gan_rows:
        gate = f"not run: no {settings.gan_family} run with z_dim > 0 in a conditioning ablation"
        cells = {primary: _not_run("1 - z-ratio", gate, margin)}
    else:
        met, gate = _gate_usable((gan_rows, f"{settings.gan_family} z{z}"))
        cells = {primary: Cell(f"1 - z-ratio, {settings.gan_family} z{z} ({setting[0]}, strength {setting[1]})",
                               list(per_seed(gan_rows, insensitivity).values()), margin, met, gate or "GAN usable")}
    details = []
    for fam, cond, strength, zz in sorted({(r["family"], r["condition"], r.get("condition_strength"), r["z_dim"])
                                           for r in abl}, key=str):
        frows = [r for r in abl if (r["family"], r["condition"], r.get("condition_strength"), r["z_dim"]) ==
                 (fam, cond, strength, zz)]
        iv = t_interval(per_seed(frows, insensitivity).values())
        details.append(f"- {fam}, {cond} (strength {strength}), z_dim {zz}: 1 - z-ratio {iv.fmt()}")
    return _standard("Q3z", claim, rule_text, margin, primary, cells, gate, details, settings)


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


# ---- all of them ---------------------------------------------------------------------------------------------


def all_verdicts(rows: list[dict], curves: dict[str, list[dict]], temperature_of: Callable[[dict], list[dict]],
                 ref_bs: int, settings: Optional[VerdictSettings] = None) -> list[Verdict]:
    """Q1, Q2, Q3, Q3z, Q4a, Q4b decided together (Holm across them)."""
    settings = settings or VerdictSettings()
    vs = [q1(rows, curves, ref_bs, settings), q2(rows, ref_bs, settings), q3_condition(rows, settings),
          q3_latent(rows, settings), *q4(rows, temperature_of, ref_bs, settings)]
    return holm(vs, settings.alpha, settings.min_seeds)


def preregistration(plan: Optional[dict], settings: VerdictSettings) -> dict:
    """The settings that define a verdict run - each experiment's preset, settings (budgets, learning rates, their
    scaling and the learning-rate pilot's file hash, temperatures, data) and grid (families, batch sizes, seeds),
    and the verdict settings (SESOIs, alpha, primary cells) - and their hash. The hash is printed in the report and verdicts.json;
    committing it before the verdict run pins what the run may be judged by."""
    experiments = {name: {"preset": exp.get("preset"), "settings": exp.get("settings"),
                          "grid": canonical_grid(exp.get("grid"))}
                   for name, exp in ((plan or {}).get("experiments") or {}).items()}
    # the committed learning-rate pilot's file hash (experiments.core.pilot), also inside the settings: named here
    pilots = {name: ((exp.get("settings") or {}).get("lr_pilot") or {}).get("sha256")
              for name, exp in experiments.items()}
    defined = {"experiments": experiments, "verdicts": settings.to_dict()}
    if any(pilots.values()):  # (absent without a pilot, so that the hashes of runs without one stay as they were)
        defined["lr_pilot"] = {k: v for k, v in pilots.items() if v}
    return {"hash": preregistration_hash(defined), "settings": defined}


def _grid_order(value) -> tuple:
    # numbers by value, then text: the order is a property of the set, not of how the plan was built
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str))


def canonical_grid(grid: Optional[dict]) -> Optional[dict]:
    """A grid (families, batch sizes, seeds) with every list in one fixed order. A grid is a set of cells: the plan
    written before a run lists it in the preset's order, the plan of a resumed or merged run in another, and both
    must give one pre-registration hash."""
    if grid is None:
        return None
    return {k: sorted(v, key=_grid_order) if isinstance(v, list) else v for k, v in grid.items()}


def preregistration_hash(defined: dict) -> str:
    """The hash of a pre-registration's settings (``preregistration(...)["settings"]``), with each experiment's grid
    in canonical order, so that a committed file's settings can be re-hashed and compared with a report's."""
    experiments = {name: {**exp, "grid": canonical_grid(exp.get("grid"))} if isinstance(exp, dict) else exp
                   for name, exp in (defined.get("experiments") or {}).items()}
    canonical = {**defined, "experiments": experiments}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


__all__ = ["Cell", "INCONCLUSIVE", "NOT_RUN", "NOT_SUPPORTED", "SUPPORTED", "Verdict", "VerdictSettings",
           "all_verdicts", "canonical_grid", "holm", "j_score", "preregistration", "preregistration_hash", "rule"]
