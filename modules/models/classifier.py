"""Language model and sentence classifier on one body: the two stages of transfer learning (ULMFiT).

``LanguageModel`` trains a body (``modules/nets/classifier.py``: the RNN family's LSTM or the Transformer's
encoder blocks, causal) to predict the next token of a sentence; pretraining on a general corpus and adapting to
the target domain are two fits of the same module on different data. ``SentenceClassifier`` puts a new head on a
body of the same architecture, either freshly initialised (from scratch) or loaded from a language model
(``load_body``), and trains it on labelled sentences.

Both read the package's ``Batch`` (``modules.data.batch``): the sentence is ``batch.tgt`` (BOS words EOS), its
padding ``batch.tgt_pad_mask``; the classifier's class is ``batch.label``. Neither ever reads ``batch.src`` (a
labelled data module puts the label token there).

Logged metrics:

- ``LanguageModel``: ``train/loss`` = mean NLL per scored next token, the MLE family's one loss (``mle_loss``,
  under the distribution the model could sample from: PAD, BOS, UNK, NULL and label tokens banned and never
  scored); ``{val,test}/nll_per_token``, the same quantity on a held-out split (nats per token, EOS counted).
- ``SentenceClassifier``: ``train/loss`` (mean cross-entropy per sentence), ``{val,test}/accuracy`` (fraction of
  sentences whose argmax class is the label), ``{val,test}/loss``.

Optimiser of both: ``optimizer`` (adamw or adam) with ``lr``, ``betas`` and ``weight_decay`` on matrices only,
the package's one generator rule (``generator_optimizer``), gradients clipped by norm at ``gradient_clip``; the
experiments pass ``experiments.core.presets.GENERATOR_OPTIMIZER``. The language model's learning rate is constant. The
classifier can fine-tune by ULMFiT's recipe (``modules.ulmfit``): ``lr_factor`` (discriminative learning rates,
2.6 in ULMFiT: layer group l of G gets ``lr / lr_factor ** (G - 1 - l)``; 1 = one rate), ``schedule="stlr"``
(slanted triangular over ``total_updates``, ``cut_frac``, ``ratio``; else constant) and ``unfreeze_every``
(gradual unfreezing: the head alone first, one more group below it every that many updates; 0 = all train from
the start). The defaults are the plain recipe (one constant rate, nothing frozen).
"""

from __future__ import annotations

from typing import Literal, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from modules.data.batch import Batch
from modules.data.vocab import BOS_ID, NULL_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID
from modules.errors import ConfigError
from modules.metrics import SequenceNLL
from modules.models.base import mle_loss
from modules.models.transformer_seq2seq import OPTIMIZERS, check_mle_settings, generator_optimizer
from modules.nets.classifier import BODY_KINDS, ClassifierNet, LanguageModelNet, make_body
from modules.sampling import target_log_probs
from modules import ulmfit

# Never a next token: PAD, BOS, UNK, NULL and every id between the special tokens and the words (label tokens).
_NEVER_PRODUCED = (PAD_ID, BOS_ID, UNK_ID, NULL_ID)


class _BodyModule(pl.LightningModule):
    """What both stages share: the body's settings and the optimiser."""

    def __init__(self, vocab_size: int, body: str, body_args: Optional[dict], lr: float, optimizer: str,
                 betas: tuple[float, float], weight_decay: float, gradient_clip: float):
        super().__init__()
        if body not in BODY_KINDS:
            raise ConfigError(f"model.body must be one of {', '.join(BODY_KINDS)}, got {body!r}")
        if vocab_size < len(SPECIAL_TOKENS) + 1:
            raise ConfigError(f"model.vocab_size={vocab_size} leaves no room for words besides the special tokens")
        check_mle_settings(lr, 0.0, 0, optimizer, weight_decay, gradient_clip)

    def _make_body(self):
        hp = self.hparams
        try:
            return make_body(hp.body, hp.vocab_size, **dict(hp.body_args or {}))
        except (TypeError, ValueError) as err:  # an unknown or bad size setting, named
            raise ConfigError(f"model.body_args for body {hp.body!r}: {err}") from None

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.gradient_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.hparams.gradient_clip)
            self.log("train/grad_norm", norm, batch_size=1)

    def optimizer_settings(self) -> dict:
        hp = self.hparams
        return {"class": hp.optimizer, "lr": float(hp.lr), "betas": [float(b) for b in hp.betas],
                "weight_decay": float(hp.weight_decay), "gradient_clip": float(hp.gradient_clip)}

    def configure_optimizers(self):
        hp = self.hparams
        return generator_optimizer(hp.optimizer, self.named_parameters(), hp.lr, hp.betas, hp.weight_decay)


class LanguageModel(_BodyModule):
    """A body trained to predict the next token (pretraining and domain adaptation)."""

    def __init__(
        self,
        vocab_size: int,
        body: Literal["lstm", "transformer"] = "lstm",
        body_args: Optional[dict] = None,
        lr: float = 2e-3,
        optimizer: Literal["adam", "adamw"] = "adamw",
        betas: tuple[float, float] = (0.9, 0.98),
        weight_decay: float = 0.01,
        gradient_clip: float = 1.0,
    ):
        super().__init__(vocab_size, body, body_args, lr, optimizer, betas, weight_decay, gradient_clip)
        self.save_hyperparameters()
        self.net = LanguageModelNet(self._make_body(), vocab_size)
        banned = torch.zeros(vocab_size, dtype=torch.bool)
        banned[list(_NEVER_PRODUCED)] = True  # the data's label tokens join in setup
        self.register_buffer("banned", banned, persistent=False)  # (V,)
        self.nll = torch.nn.ModuleDict({s: SequenceNLL() for s in ("val", "test")})

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        if len(dm.vocab) != self.hparams.vocab_size:
            raise ConfigError(f"model.vocab_size={self.hparams.vocab_size} but the data's vocabulary has "
                              f"{len(dm.vocab)} tokens")
        self.banned[dm.vocab.label_ids] = True

    @property
    def body(self):
        return self.net.body

    def _token_scores(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> logits (B, T-1, V) for tgt[:, 1:], the targets (B, T-1), and which targets are scored (B, T-1)."""
        logits = self.net(batch.tgt_in, batch.tgt_pad_mask[:, :-1])
        targets = batch.tgt_out
        scored = targets.ne(PAD_ID) & ~self.banned[targets]  # UNK and padding count for no model
        return logits, targets, scored

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits, targets, scored = self._token_scores(batch)
        loss = mle_loss(logits, targets, banned=self.banned, scored=scored)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _evaluate(self, batch: Batch, stage: str) -> None:
        logits, targets, scored = self._token_scores(batch)
        token_logp, _ = target_log_probs(logits, targets, self.banned)  # (B, T), the sampling distribution's
        token_logp = token_logp.masked_fill(~scored, 0.0)
        self.nll[stage].update(token_logp.sum(dim=1), scored.sum(dim=1))

    def _log_nll(self, stage: str) -> None:
        self.log(f"{stage}/nll_per_token", self.nll[stage].compute()["per_token"].float())
        self.nll[stage].reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_nll("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_nll("test")


class SentenceClassifier(_BodyModule):
    """A new classification head on a body; ``load_body`` starts the body from a language model's."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        body: Literal["lstm", "transformer"] = "lstm",
        body_args: Optional[dict] = None,
        head_dropout: float = 0.1,
        lr: float = 1e-3,
        optimizer: Literal["adam", "adamw"] = "adamw",
        betas: tuple[float, float] = (0.9, 0.98),
        weight_decay: float = 0.01,
        gradient_clip: float = 1.0,
        lr_factor: float = 1.0,
        schedule: Literal["constant", "stlr"] = "constant",
        total_updates: int = 0,
        cut_frac: float = ulmfit.ULMFIT_CUT_FRAC,
        ratio: float = ulmfit.ULMFIT_RATIO,
        unfreeze_every: int = 0,
    ):
        super().__init__(vocab_size, body, body_args, lr, optimizer, betas, weight_decay, gradient_clip)
        if num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= head_dropout < 1.0:
            raise ConfigError(f"model.head_dropout must lie in [0, 1), got {head_dropout}")
        if lr_factor < 1.0:
            raise ConfigError(f"model.lr_factor must be >= 1 (1: one rate for every layer), got {lr_factor}")
        if schedule not in ("constant", "stlr"):
            raise ConfigError(f"model.schedule must be 'constant' or 'stlr', got {schedule!r}")
        if schedule == "stlr" and (total_updates < 1 or not 0.0 < cut_frac < 1.0 or ratio < 1.0):
            raise ConfigError(f"model.schedule='stlr' needs total_updates >= 1, 0 < cut_frac < 1 and ratio >= 1, got "
                              f"{total_updates}, {cut_frac}, {ratio}")
        if unfreeze_every < 0:
            raise ConfigError(f"model.unfreeze_every must be >= 0 (0: nothing frozen), got {unfreeze_every}")
        self.save_hyperparameters()
        self.net = ClassifierNet(self._make_body(), num_classes, head_dropout)
        self.groups = ulmfit.layer_groups(self.net)  # bottom (embedding) to top (head)
        # torchmetrics states: summed over processes under DDP, so every number is the whole split's
        self.accuracy = torch.nn.ModuleDict({s: MulticlassAccuracy(num_classes, average="micro")
                                             for s in ("val", "test")})
        self.mean_loss = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})

    @property
    def body(self):
        return self.net.body

    def load_body(self, state_dict: dict) -> None:
        """Start the body from a language model's (``LanguageModel.body.state_dict()``), strictly: the two must
        have the same architecture and vocabulary."""
        try:
            self.net.body.load_state_dict(state_dict, strict=True)
        except RuntimeError as err:
            raise ConfigError(f"the language model's body does not fit this classifier's body: {err}") from None

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(batch.tgt, batch.tgt_pad_mask)  # (B, num_classes)

    def _labels(self, batch: Batch) -> torch.Tensor:
        if batch.label is None:
            raise ValueError("a classifier needs labelled batches (batch.label is None)")
        return batch.label

    def optimizer_settings(self) -> dict:
        hp = self.hparams
        return {**super().optimizer_settings(), "lr_factor": float(hp.lr_factor), "group_lrs": self.group_lrs(),
                "schedule": hp.schedule, "total_updates": int(hp.total_updates), "cut_frac": float(hp.cut_frac),
                "ratio": float(hp.ratio), "unfreeze_every": int(hp.unfreeze_every)}

    def group_lrs(self) -> list[float]:
        """The peak learning rate of each layer group, bottom to top (discriminative when ``lr_factor`` > 1)."""
        return ulmfit.discriminative_lrs(self.hparams.lr, len(self.groups), self.hparams.lr_factor)

    def configure_optimizers(self):
        hp = self.hparams
        decay = hp.weight_decay
        param_groups = []
        for group, lr in zip(self.groups, self.group_lrs()):
            # the package's one weight-decay rule (generator_optimizer), inside each layer group
            param_groups += [{"params": [p for _, p in group if p.dim() >= 2], "weight_decay": decay, "lr": lr},
                             {"params": [p for _, p in group if p.dim() < 2], "weight_decay": 0.0, "lr": lr}]
        optimizer = OPTIMIZERS[hp.optimizer]([g for g in param_groups if g["params"]], lr=hp.lr, betas=tuple(hp.betas))
        if hp.schedule != "stlr":
            return optimizer
        total, cut_frac, ratio = int(hp.total_updates), float(hp.cut_frac), float(hp.ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: ulmfit.stlr(step, total, cut_frac, ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.hparams.unfreeze_every > 0:  # gradual unfreezing, by the update about to be taken
            n = ulmfit.trainable_groups(self.global_step, len(self.groups), self.hparams.unfreeze_every)
            ulmfit.freeze_to(self.groups, n)

    def on_train_end(self) -> None:
        ulmfit.freeze_to(self.groups, len(self.groups))  # a finished classifier has no frozen layer left

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), self._labels(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _evaluate(self, batch: Batch, stage: str) -> None:
        logits, labels = self(batch), self._labels(batch)
        self.accuracy[stage].update(logits.argmax(dim=-1), labels)
        self.mean_loss[stage].update(F.cross_entropy(logits.float(), labels, reduction="none"))

    def _log_accuracy(self, stage: str) -> None:
        self.log(f"{stage}/accuracy", self.accuracy[stage].compute())
        self.log(f"{stage}/loss", self.mean_loss[stage].compute())
        self.accuracy[stage].reset()
        self.mean_loss[stage].reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_accuracy("test")


__all__ = ["LanguageModel", "SentenceClassifier"]
