"""A finished run's measurements: the evaluation on its split, the divergence and mode-collapse judgement, and the
final training losses."""

from __future__ import annotations

import math
from typing import Optional

from modules.errors import ConfigError
from modules.metrics import DistinctN


DIVERGENCE_NATS = 1.0
COLLAPSE_UNIQUE = 0.5
COLLAPSE_DISTINCT2_RATIO = 0.5
def _metrics(result: dict, split: str = "test") -> dict:
    return {k.split("/", 1)[1]: float(v) for k, v in result.items() if k.startswith(f"{split}/")}


EVAL_SPLITS = ("test", "val")


def eval_split(spec: dict) -> str:
    """The split a run's ``init`` and ``final`` evaluations read: the spec's ``eval_split``, default ``test``.
    The learning-rate pilot's runs say ``val``, so no choice is ever made on the test split."""
    split = spec.get("eval_split", "test")
    if split not in EVAL_SPLITS:
        raise ConfigError(f"eval_split must be one of {EVAL_SPLITS}, got {split!r}")
    return split


def evaluate(trainer, model, dm, split: str) -> dict:
    """The model's metrics on ``split`` (Lightning's ``test/...`` or ``val/...`` names, prefix dropped)."""
    if split == "test":
        return _metrics(trainer.test(model, datamodule=dm, verbose=False)[0], "test")
    # the fit itself runs without validation (limit_val_batches=0): open the val split for this evaluation only
    trainer.limit_val_batches = 1.0
    try:
        return _metrics(trainer.validate(model, datamodule=dm, verbose=False)[0], "val")
    finally:
        trainer.limit_val_batches = 0


def _reference_distinct2(dm, num: int, split: str = "test") -> float:
    metric = DistinctN(n_values=(2,))
    metric.update(dm.reference_ids(split)[:num])
    return float(metric.compute()["distinct2"])


def judge(init: dict, final: dict, nonfinite: Optional[str], ref_distinct2: float) -> dict:
    """The divergence and collapse flags (rules in the module docstring), with the reason for each."""
    diverged, reason = False, ""
    if nonfinite:
        diverged, reason = True, nonfinite
    else:
        for k in ("nll_oracle_per_token", "nll_test_per_token"):
            if k in final and not math.isfinite(final[k]):
                diverged, reason = True, f"final {k} is not finite"
                break
        else:
            a, b = init.get("nll_oracle_per_token"), final.get("nll_oracle_per_token")
            if a is not None and b is not None and b > a + DIVERGENCE_NATS:
                diverged, reason = True, f"NLL_oracle {b:.3f} > untrained {a:.3f} + {DIVERGENCE_NATS}"
    collapsed, why = False, ""
    unique, d2 = final.get("unique_fraction"), final.get("distinct2")
    if unique is not None and math.isfinite(unique) and unique < COLLAPSE_UNIQUE:
        collapsed, why = True, f"unique fraction {unique:.3f} < {COLLAPSE_UNIQUE}"
    elif d2 is not None and math.isfinite(d2) and d2 < COLLAPSE_DISTINCT2_RATIO * ref_distinct2:
        collapsed, why = True, f"distinct-2 {d2:.3f} < {COLLAPSE_DISTINCT2_RATIO} x data's {ref_distinct2:.3f}"
    return {"diverged": diverged, "diverged_reason": reason, "collapsed": collapsed, "collapse_reason": why}


def final_losses(curve: list[dict], tail: float = 0.1) -> dict:
    """Each logged training quantity averaged over the last ``tail`` of the curve (one step is mostly noise)."""
    points = curve[-max(1, int(len(curve) * tail)):]
    keys = {k for p in points for k in p if k.startswith("train/")}
    out = {}
    for k in sorted(keys):
        vals = [p[k] for p in points if k in p]
        out[k] = sum(vals) / len(vals) if vals and all(math.isfinite(v) for v in vals) else math.nan
    return out
