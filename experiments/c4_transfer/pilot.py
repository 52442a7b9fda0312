"""C4's learning-rate pilot (issue 21 item 4): one peak rate per body and arm, chosen before the verdict runs.

Each arm trains a different thing (a pretrained body under ULMFiT's recipe, an MR-only language model's body, a
random body), so one shared rate would favour whichever arm it happens to suit. The pilot runs every rate of
``TransferSettings.pilot["lrs"]`` for each body and arm at the pilot sizes (``pilot["sizes"]``) on the pilot seed
(``pilot["seed"]``: never a verdict seed, with its own language models and labelled subsets), with the verdict's
budget, recipe and early stopping; rows of kind ``pilot``. Per body and arm the rate with the best validation
accuracy (MR's validation split, the kept weights'; mean over the pilot sizes) is chosen; ties go to the first rate
listed. Test accuracy is recorded in the rows but never read here.

The choice is written (``experiments.c4_transfer.transfer.write_choices``, beside the pilot's jobs ``pilot_jobs``) to ``OUT/pilot.json`` (every rate's validation accuracy, the choice) and, with C4's settings,
to ``OUT/preregistration.json`` (``transfer.preregistration``) before any verdict classifier runs; the verdict
classifiers' specs (and so their keys) carry the chosen rate. Without a pilot (``pilot`` None) every arm gets
``finetune.lr``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from modules.errors import ConfigError


def choose_rates(settings, rows: list[dict]) -> dict:
    """-> {"lr": {body: {arm: rate}}, "val_accuracy": {body: {arm: {rate: mean validation accuracy}}}} from the
    pilot's rows (module docstring); without a pilot, ``finetune.lr`` everywhere. A (body, arm, rate) whose pilot
    rows are missing or not finite is refused: the verdict must not run on a choice the pilot did not make."""
    fixed = float(settings.finetune["lr"])
    if settings.pilot is None:
        return {"lr": {b: {a: fixed for a in settings.arms} for b in settings.bodies}, "val_accuracy": None}
    sizes = [str(s) for s in settings.pilot["sizes"]]
    chosen, table = {}, {}
    for body in settings.bodies:
        chosen[body], table[body] = {}, {}
        for arm in settings.arms:
            scores = {}
            for lr in settings.pilot["lrs"]:
                vals = [r.get("val_accuracy") for r in rows if r.get("kind") == "pilot" and r["body"] == body
                        and r["arm"] == arm and math.isclose(r["lr"], lr) and r["size"] in sizes]
                if len(vals) != len(sizes) or any(v is None or not math.isfinite(v) for v in vals):
                    raise ConfigError(f"transfer.pilot: the {body} {arm} pilot at lr {lr} has {len(vals)} of "
                                      f"{len(sizes)} finished runs with a validation accuracy (see the run folder's "
                                      "errors); rerun to finish it before the verdict runs")
                scores[lr] = sum(vals) / len(vals)
            best = max(scores.values())
            chosen[body][arm] = next(lr for lr, v in scores.items() if v == best)  # ties: the first listed
            table[body][arm] = {str(lr): v for lr, v in scores.items()}
    return {"lr": chosen, "val_accuracy": table}


def read_choices(out: Path):
    """The pilot's choices written in ``out`` (``{body: {arm: rate}}``), or None where there are none."""
    path = Path(out) / "pilot.json"
    return json.loads(path.read_text())["lr"] if path.is_file() else None


__all__ = ["choose_rates", "read_choices"]
