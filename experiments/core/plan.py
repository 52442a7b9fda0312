"""The plan of a run folder (``sweep.json``): which experiments it holds, with which settings, in which W&B group.

A folder can hold one batch-size sweep and one conditioning ablation (so one report answers Q1-Q4). Rerunning a
command resumes it. Growing the grid (more seeds, batch sizes or families) is allowed; changing any other
setting is refused, because the rows already there would silently mix two experiments.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from experiments.core.results import read_plan, write_plan

GRID_FIELDS = {"families", "batch_sizes", "seeds", "conditions", "strengths", "z_dims"}
# Settings that do not change any number a run produces may differ between invocations.
FREE_FIELDS = {"threads"}


class PlanMismatch(ValueError):
    pass


def _settings_without_grid(settings) -> dict:
    return {k: v for k, v in asdict(settings).items() if k not in GRID_FIELDS | FREE_FIELDS}


def _normalize(x):
    # JSON turns tuples into lists; compare like with like.
    if isinstance(x, dict):
        return {k: _normalize(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_normalize(v) for v in x]
    return x


def register(run_dir: str | Path, experiment: str, preset: str, settings, project: str,
             group: Optional[str] = None) -> dict:
    """Record ``experiment``'s settings in the folder's plan (or check them against it); returns the plan.

    ``group``: the W&B group of a new folder (default: the folder's name and a random suffix)."""
    run_dir = Path(run_dir)
    plan = read_plan(run_dir) or {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "group": group or f"{run_dir.resolve().name}-{uuid.uuid4().hex[:6]}",
        "project": project,
        "experiments": {},
    }
    if group and plan["group"] != group:
        raise PlanMismatch(f"{run_dir} already logs to the W&B group {plan['group']!r}, not {group!r}; "
                           "give a new --out folder")
    new = _normalize(_settings_without_grid(settings))
    grid = {k: v for k, v in asdict(settings).items() if k in GRID_FIELDS}
    old = plan["experiments"].get(experiment)
    if old is not None:
        differ = sorted(k for k in set(new) | set(old["settings"]) if new.get(k) != old["settings"].get(k))
        if differ:
            raise PlanMismatch(
                f"{run_dir} already holds a {experiment} experiment with other settings ({', '.join(differ)}); "
                "resume it with the same options, or give a new --out folder"
            )
        grid = {k: sorted(set(map(_hashable, old["grid"].get(k, []))) | set(map(_hashable, v)), key=str)
                for k, v in grid.items()}
    plan["experiments"][experiment] = {"preset": preset, "settings": new, "grid": _normalize(grid)}
    write_plan(run_dir, plan)
    return plan


def _hashable(x):
    return tuple(x) if isinstance(x, list) else x
