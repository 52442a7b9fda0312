"""C2's training protocol on the reverse task: the learning-rate pilot, its choice, and early stopping on
validation token accuracy.

Why a pilot: one learning rate for every family, tuned for none, lets a family's drop with length measure how badly
that rate suits it (the first lecture run: the Transformer, which has no bottleneck, lost the most accuracy at
L = 32). So each family's rate is chosen by its own pilot: the family is trained at every rate of
``BottleneckSettings.pilot_lrs`` on the pilot seeds (``pilot_seeds``, apart from the verdict's seeds: the pilot's
data are drawn from its own seed, so no verdict run's data took part in the choice), by exactly the protocol of
the verdict runs (mixed lengths, early stopping under the cap), and the rate with the highest mean best validation
token accuracy over the pilot seeds is kept (``choose_rates``; a tie goes to the smaller rate, the more
conservative). The test split is never read by the pilot. The choices are written to ``OUT/pilot.json`` and every
verdict run records the rate it ran at (``lr``).

Early stopping (``task_accuracy_callback`` + ``modules.callbacks.KeepBestOnValidation``): every ``task_val_every``
updates the model greedily decodes the validation split (mixed lengths) and ``val/token_accuracy`` is logged;
training stops after ``task_patience`` checks without a strict improvement, or at the cap ``task_max_updates``,
and the weights of the best check are the ones scored on the test split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from experiments.core.stats import finite
from modules.files import atomic_write_text

PILOT_KIND = "bottleneck_pilot"
PILOT_FILE = "pilot.json"
MONITOR = "val/token_accuracy"
RULE = ("per family: the rate of the grid with the highest mean (over the pilot seeds) best validation token "
        "accuracy, each pilot run trained like a verdict run (mixed lengths, early stopping under the cap); "
        "ties go to the smaller rate; the test split is not read")


def task_accuracy_callback(dm, monitor: str = MONITOR):
    """A Lightning callback that logs the greedy token accuracy of ``dm``'s validation split as ``monitor`` at each
    validation epoch end (before ``KeepBestOnValidation`` reads it in ``on_validation_end``)."""
    import pytorch_lightning as pl

    from modules.data.tasks import greedy_task_scores

    class TaskAccuracyOnValidation(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            scores = greedy_task_scores(pl_module, dm, "val")
            pl_module.log(monitor, float(scores.token_accuracy.mean()), prog_bar=False)

    return TaskAccuracyOnValidation()


def pilot_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("kind") == PILOT_KIND]


def choose_rates(rows: list[dict], families) -> dict[str, dict]:
    """Per family with pilot rows: ``{"lr", "val_token_accuracy", "grid": {lr: mean}, "seeds"}`` (module
    docstring). A run whose validation accuracy is not finite (it diverged) counts as 0: it is never chosen over a
    run that learned something."""
    out = {}
    for family in families:
        frows = [r for r in pilot_rows(rows) if r.get("family") == family]
        if not frows:
            continue
        grid: dict[float, list[float]] = {}
        for r in frows:
            value = r.get("val_token_accuracy")
            grid.setdefault(float(r["lr"]), []).append(float(value) if finite(value) else 0.0)
        means = {lr: sum(v) / len(v) for lr, v in sorted(grid.items())}
        best = max(means.values())
        lr = min(lr for lr, m in means.items() if m == best)
        out[family] = {"lr": lr, "val_token_accuracy": best, "grid": {str(k): v for k, v in means.items()},
                       "seeds": sorted({int(r["seed"]) for r in frows})}
    return out


def write_pilot(out: Path, settings_dict: dict, rows: list[dict], choice: dict) -> Path:
    path = Path(out) / PILOT_FILE
    record = {"rule": RULE, "grid": settings_dict.get("pilot_lrs"), "pilot_seeds": settings_dict.get("pilot_seeds"),
              "cap_updates": settings_dict.get("task_max_updates"), "chosen": choice,
              "runs": [{k: r.get(k) for k in ("family", "lr", "seed", "val_token_accuracy", "best_step", "stopped_at",
                                              "hit_cap", "diverged")} for r in pilot_rows(rows)]}
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    return path


def read_pilot(out: Path) -> Optional[dict]:
    path = Path(out) / PILOT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def pilot_lines(rows: list[dict], families) -> list[str]:
    """The pilot as a Markdown table: best validation token accuracy per family and rate (mean over the pilot
    seeds), the chosen rate in bold; [] without pilot rows."""
    choice = choose_rates(rows, families)
    if not choice:
        return []
    rates = sorted({float(r["lr"]) for r in pilot_rows(rows)})
    seeds = sorted({int(r["seed"]) for r in pilot_rows(rows)})
    lines = [f"Learning-rate pilot (seeds {', '.join(map(str, seeds))}, apart from the verdict's; {RULE}): best "
             f"validation token accuracy per rate, the chosen rate in bold.", "",
             "| family | " + " | ".join(f"lr {lr:g}" for lr in rates) + " |", "|---|" + "---|" * len(rates)]
    for family, c in choice.items():
        cells = []
        for lr in rates:
            value = c["grid"].get(str(lr))
            text = "-" if value is None or not math.isfinite(value) else f"{value:.3f}"
            cells.append(f"**{text}**" if lr == c["lr"] else text)
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return lines + [""]


def choice_text(rows: list[dict], families) -> str:
    choice = choose_rates(rows, families)
    if not choice:
        return "learning rates: no pilot rows here"
    return "learning rates chosen by the pilot: " + ", ".join(
        f"{f} {c['lr']:g} (val token accuracy {c['val_token_accuracy']:.3f})" for f, c in choice.items())
