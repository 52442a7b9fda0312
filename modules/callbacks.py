"""Callbacks shared by every family."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch

from modules.files import atomic_write_text

log = logging.getLogger(__name__)


class DivergenceMonitor(pl.Callback):
    """A NaN or inf training loss is a result, not a crash.

    After each training batch the monitored losses (``train/loss`` for the MLE family, ``train/g_loss`` and
    ``train/d_loss`` for the GAN) are checked; on the first non-finite value the run stops cleanly
    (``trainer.should_stop``), a checkpoint of the last state is kept as ``diverged.ckpt``, and
    ``divergence.json`` records the step, the loss at fault and the last finite metrics. ``self.diverged``
    tells callers (the sweep) what happened.
    """

    def __init__(self, monitor: tuple[str, ...] = ("train/loss", "train/g_loss", "train/d_loss"),
                 save_checkpoint: bool = True):
        self.monitor = tuple(monitor)
        self.save_checkpoint = save_checkpoint
        self.diverged = False
        self.record: Optional[dict[str, Any]] = None
        self._last_finite: dict[str, float] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        if self.diverged:
            return
        metrics = {k: v for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        watched = [k for k in self.monitor if k in metrics]
        bad = []
        if watched:  # one host sync per step for all watched losses together
            finite = torch.isfinite(torch.stack([metrics[k].detach().float().reshape(()) for k in watched])).tolist()
            bad = [k for k, ok in zip(watched, finite) if not ok]
        if isinstance(outputs, torch.Tensor) and outputs.numel() == 1 and not torch.isfinite(outputs):
            bad.append("training_step output")
        # Every rank must agree, or one would stop (and save, a collective call) while the others go on.
        if not trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            self._last_finite = {k: v.detach() for k, v in metrics.items()}  # read out only if the run diverges
            return
        self.diverged = True
        self.record = {
            "diverged": True,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "batch_idx": batch_idx,
            "non_finite": bad or ["loss on another rank"],
            "last_finite_metrics": {k: v for k, t in self._last_finite.items() if math.isfinite(v := float(t))},
        }
        log.warning("training diverged at step %d (%s is not finite); stopping this run cleanly",
                    trainer.global_step, ", ".join(bad))
        trainer.should_stop = True
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        if self.save_checkpoint:
            path = folder / "checkpoints" / "diverged.ckpt"
            path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(path, weights_only=False)  # optimiser states too: a resume needs them
            self.record["checkpoint"] = str(path)
        if trainer.is_global_zero:
            write_json_atomic(folder / "divergence.json", self.record)


class FlushLogsOnCheckpoint(pl.Callback):
    """Write buffered log rows (the CSV logger keeps up to 100 steps in memory) whenever a checkpoint is saved, so
    a killed run keeps the logs of everything its checkpoint holds. The step being checkpointed is logged just
    after the checkpoint is written; a kill in between loses that one step's log rows, not its training."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()


class KeepBestOnValidation(pl.Callback):
    """Early stopping that ends on the best weights: after each validation, keep (in memory) the weights with the
    best ``monitor`` so far; stop after ``patience`` validations without improvement (None: never for that), or as
    soon as the monitored value reaches ``target`` (at most it for "min", at least it for "max"; None: no target);
    never stop for patience before update ``min_steps`` (a schedule that is still unfreezing layers gets to finish).
    At the end of fit load the kept weights back, so a later ``trainer.test`` scores the model selected on
    validation, never on test. ``best``, ``best_step``, ``checks``, ``reached`` (the step the target was met,
    None if never) and ``history`` ([step, value] per validation) say what was chosen and why training ended."""

    def __init__(self, monitor: str = "val/accuracy", mode: str = "max", patience: Optional[int] = 4,
                 target: Optional[float] = None, min_steps: int = 0):
        if mode not in ("max", "min"):
            raise ValueError(f"KeepBestOnValidation: mode must be 'max' or 'min', got {mode!r}")
        if patience is not None and int(patience) < 1:
            raise ValueError(f"KeepBestOnValidation: patience must be >= 1 or None, got {patience!r}")
        self.monitor, self.mode = monitor, mode
        self.patience = None if patience is None else int(patience)
        self.target, self.min_steps = target, int(min_steps)
        self.best: Optional[float] = None
        self.reached: Optional[int] = None
        self.best_step, self.checks, self._stale, self._state = 0, 0, 0, None
        self.history: list[list] = []

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _meets_target(self, value: float) -> bool:
        return self.target is not None and (value <= self.target if self.mode == "min" else value >= self.target)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.checks += 1
        self.history.append([int(trainer.global_step), value])
        if self._better(value):  # strict: a tie keeps the earlier (fewer updates) weights
            self.best, self.best_step, self._stale = value, int(trainer.global_step), 0
            self._state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        else:
            self._stale += 1
        if self._meets_target(value) and self.reached is None:
            self.reached = int(trainer.global_step)
            trainer.should_stop = True
        elif (self.patience is not None and self._stale >= self.patience
              and int(trainer.global_step) >= self.min_steps):
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._state is not None:
            pl_module.load_state_dict(self._state)


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))
