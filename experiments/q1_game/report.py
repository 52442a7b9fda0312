"""Q1's part of the report: its section's title and figure, and the permutation null beside its cells."""

from __future__ import annotations

from pathlib import Path

from experiments.core.verdicts import Verdict

SECTIONS = {"Q1": ("losses", "Q1: two losses in a game vs one cooperative loss")}  # question -> (figure, title)


def before_figure(v: Verdict) -> list[str]:
    if not isinstance(v.extra.get("null"), dict):
        return []
    null = v.extra["null"]
    return [f"Null (checkpoint order permuted, {null['permutations']} times): {null['mean']:.3g}, 95% within "
            f"[{null['interval'][0]:.3g}, {null['interval'][1]:.3g}].", ""]


def after_figure(v: Verdict, rows: list[dict], figures: dict[str, Path]) -> list[str]:
    return []
