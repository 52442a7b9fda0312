"""The verdicts' common part: one rule, fixed in advance and quoted in the report, Holm across the questions, the
rows a verdict reads, and the pre-registration.

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

Each question's verdict is in its sub-package (cells named as in ``verdicts.json``): Q1 in
``experiments.q1_game.rule``, Q2 in ``experiments.q2_batch_size.rule``, Q3 and Q3z in
``experiments.q3_conditioning.rule``, Q4a and Q4b in ``experiments.q4_temperature.rule``; the report
(``experiments.core.report``) decides them together.

Cells whose arm is missing from the run folder are ``not run``; such a question is inconclusive with that reason.
Rows kept out of every verdict are dropped in one place, ``verdict_rows``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Optional

from experiments.core.baselines import j_score, usable
from experiments.core.stats import Interval, finite, seeds_needed, t_interval, t_p_value
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


# ---- the pre-registration -------------------------------------------------------------------------------


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


__all__ = ["Cell", "INCONCLUSIVE", "NOT_RUN", "NOT_SUPPORTED", "SUPPORTED", "Verdict", "VerdictSettings",
           "canonical_grid", "holm", "j_score", "preregistration", "preregistration_hash", "rule"]
