"""A run's identity: its spec (``make_spec``), the hash of the settings that change its numbers and its key.

Light on purpose (no torch, no Lightning): the parent process of a sweep imports it to plan and to key runs."""

from __future__ import annotations

import hashlib
import json
from typing import Optional

from experiments.core.families import get_arg, z_dim_path


# Settings that change nothing about a run's numbers are left out of its identity.
_NOT_HASHED = ("tracking", "key", "threads", "plan_hash")


def config_hash(spec: dict) -> str:
    ident = {k: v for k, v in spec.items() if k not in _NOT_HASHED}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_key(spec: dict) -> str:
    parts = [spec["family"], f"bs{spec['batch_size']}"]
    if spec.get("kind") == "pretrain":  # apart from the sweep's own run of the same family and batch size
        parts.insert(0, "pretrain")
    if spec.get("kind") == "equal-updates":  # apart from the arm of the same batch size at equal samples
        parts.append(f"steps{spec['budget']['updates']}")
    if spec.get("kind") == "ablation":
        data = spec["data"]["init_args"]
        z_dim = get_arg(spec["model"], z_dim_path(spec["family"]), 0)
        parts.append(f"{data.get('condition', 'none')}-s{data.get('condition_strength', 0)}-z{z_dim}")
    parts += [f"seed{spec['seed']}", config_hash(spec)]
    return "__".join(parts)


def make_spec(kind: str, settings, *, family: str, batch_size: int, seed: int, data: dict, model: dict,
              updates: int, lr_factor: float, measure: dict, tracking: dict, budget: Optional[dict] = None,
              save_checkpoint: Optional[bool] = None, **extra) -> dict:
    """One run of a sweep or an ablation, keyed; ``settings`` gives what every run of an experiment shares.

    ``budget`` / ``save_checkpoint`` override the experiment's (a pretrain run has its own budget and always
    keeps its checkpoint). ``extra`` may hold ``init_from={"key": K}``: the run starts from run K's generator
    weights (see ``load_init_from``), and K is then part of this run's identity.
    """
    spec = {
        "kind": kind,
        "family": family,
        "batch_size": batch_size,
        "seed": seed,
        "data": data,
        "model": model,
        "budget": budget or {"kind": settings.budget, "value": settings.budget_value, "updates": updates},
        "lr_factor": lr_factor,
        "trainer": dict(settings.trainer),
        "measure": measure,
        "curve_points": settings.curve_points,
        "save_checkpoint": settings.save_checkpoints if save_checkpoint is None else save_checkpoint,
        "tracking": dict(tracking),
        "threads": settings.threads,
        "engine": getattr(settings, "engine", "vectorised"),
        **extra,
    }
    spec["key"] = run_key(spec)
    return spec


def init_from_key(spec: dict) -> Optional[str]:
    """The key of the run that ``spec`` starts from (its ``init_from``), or None for a run from scratch."""
    init = spec.get("init_from")
    if init is None:
        return None
    if not isinstance(init, dict) or set(init) != {"key"} or not isinstance(init["key"], str) or not init["key"]:
        raise ValueError(f'init_from must be {{"key": "<key of a run in the same run folder>"}}, got {init!r}')
    return init["key"]
