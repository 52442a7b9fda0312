"""Pieces every report section uses: the counted baselines' rows, and values made JSON-safe."""

from __future__ import annotations

import math

from experiments.core.baselines import references_of
from experiments.core.stats import finite


def baseline_cells(b: dict, keys: list[str]) -> list[str]:
    return [f"{b[k]:.3f}" if finite(b.get(k)) else "-" for k in keys]


def baseline_rows(rows: list[dict], keys: list[str], width: int, lead: int) -> list[str]:
    """Table rows for the counted baselines of ``rows``' data: ``lead`` label columns, then ``keys`` (baseline
    fields or "-"), padded with "-" to ``width`` columns in all."""
    out = []
    for ref in references_of(rows):
        for b in (ref["unigram"], ref["bigram"]):
            label = f"*{b['name']} (counted, add-{b['k']:g})*"
            cells = [label] + ["-"] * (lead - 1) + baseline_cells(b, keys)
            out.append("| " + " | ".join(cells + ["-"] * (width - len(cells))) + " |")
    return out


def nan_to_none(value):
    """``value`` with every non-finite float (nested in dicts, lists, tuples) as None: what JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value
