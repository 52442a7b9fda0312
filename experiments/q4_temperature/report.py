"""Q4's part of the report: the counted unigram across the sweep's temperatures (the quality-diversity plot's floor)."""

from __future__ import annotations

from pathlib import Path

from experiments.core.baselines import references_of
from experiments.core.tables import baseline_cells
from experiments.core.verdicts import Verdict

SECTIONS = {"Q4a": ("qd", "Q4: quality vs diversity across temperatures"),  # question -> (figure, title)
            "Q4b": (None, None)}  # one section for both


def before_figure(v: Verdict) -> list[str]:
    return []


def after_figure(v: Verdict, rows: list[dict], figures: dict[str, Path]) -> list[str]:
    if v.question != "Q4b":
        return []
    return ["The counted unigram across the same temperatures (the floor of the quality-diversity plot):", ""] + \
        tempered_unigram_table(rows) + [""]


def tempered_unigram_table(rows: list[dict]) -> list[str]:
    """The counted unigram at each temperature of the sweep: the quality-diversity curve of a model that learned
    word frequencies and nothing else."""
    refs = [ref for ref in references_of([r for r in rows if r["kind"] == "sweep"]) if ref.get("unigram_tempered")]
    if not refs:
        return []
    lines = ["| T | NLL_test | NLL_oracle | H | J |", "|---:|---:|---:|---:|---:|"]
    for p in refs[0]["unigram_tempered"]:
        lines.append(f"| {p['temperature']:g} | " + " | ".join(baseline_cells(p, ["nll_test_per_token",
                                                                                    "nll_oracle_per_token",
                                                                                    "entropy_per_token", "j"])) + " |")
    return lines
