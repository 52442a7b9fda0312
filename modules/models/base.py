"""What both LightningModule families share: the vocabulary in checkpoints, evaluation by sampling, metrics.

A family subclass provides ``self.generator`` (a net with the step protocol of ``modules.sampling``) and its
training step; validation and test are the same code for every family, so their numbers are comparable:

- ``{stage}/nll_test_per_token`` and ``_per_sentence``: the model's NLL of the held-out split (coverage).
  On oracle data (fixed length, no end token in the oracle) only the L words are scored, as in the
  SeqGAN/Texygen benchmark; on text the end token counts too.
- ``{stage}/nll_oracle_per_token`` and ``_per_sentence`` (oracle data only): the oracle's NLL of generated
  samples (quality).
- ``{stage}/bleu{n}`` of samples against the split's references, ``{stage}/self_bleu{n}`` among samples,
  ``{stage}/distinct{n}`` (Texygen definitions; see modules/metrics).

Prediction (``gvt predict``, ``Trainer.predict``) is shared too: samples for every condition of the predict split
(the test split), drawn as ``PredictionSettings`` say, written to ``<run folder>/predictions/<file>``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import sys
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from modules.data.base import check_same_vocab
from modules.data.batch import Batch
from modules.data.vocab import EOS_ID, PAD_ID, Vocab, tokenizer_from_state_dict
from modules.files import atomic_write_text
from modules.metrics import BLEU, DistinctN, SelfBLEU, SequenceNLL
from modules.sampling import check_sampling_args, generate

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "gan_vs_transformer"


def _as_tuple(value):
    """random.setstate needs tuples; a checkpoint round trip may give lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) targets -> (B, T) log p(target)."""
    return F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def mle_loss(logits: torch.Tensor, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Token-level cross-entropy with teacher forcing, padding ignored: the one loss of the MLE family, and
    the generator's pretraining loss in the GAN family."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        batch.tgt_out.reshape(-1),
        ignore_index=PAD_ID,
        label_smoothing=label_smoothing,
    )


class PredictionSettings:
    """What ``gvt predict`` draws (the ``prediction:`` section of a config, e.g. ``--prediction.temperature 0.8``).

    For each condition of the predict split (the test split's conditions, in order; ``--trainer.limit_predict_batches``
    takes fewer), ``samples_per_condition`` samples are drawn and written as CSV rows to
    ``<run folder>/predictions/<file>`` with the columns ``condition_index`` (the condition's position in the
    split), ``condition`` (the label name, the source sentence, or empty for unconditional data), ``sample_index``
    (0 .. samples_per_condition - 1) and ``sample`` (the detokenized text).

    Args:
        samples_per_condition: samples drawn for each condition.
        temperature: sampling temperature (1: the model's own distribution).
        top_k: sample among the k most likely tokens only (None: all).
        top_p: nucleus sampling: among the most likely tokens holding probability top_p (None: all).
        seed: batch i of the predict split is drawn with seed + i: the same checkpoint, data and settings give the
            same file (with the same number of processes).
        file: the CSV file name (under DDP each process writes ``<stem>_rank<r>.csv``, its shard of the split).
    """

    def __init__(
        self,
        samples_per_condition: int = 1,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
        file: str = "predictions.csv",
    ):
        if samples_per_condition < 1:
            raise ValueError(f"prediction.samples_per_condition must be >= 1, got {samples_per_condition}")
        try:
            check_sampling_args(temperature=temperature, top_k=top_k, top_p=top_p)
        except ValueError as err:
            raise ValueError(f"prediction.{err}") from None
        if not file or Path(file).name != file:
            raise ValueError(f"prediction.file must be a plain file name (it goes under <run>/predictions/), got {file!r}")
        self.samples_per_condition, self.seed, self.file = samples_per_condition, seed, file
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p


class GeneratorModule(pl.LightningModule):
    """Base of ``TransformerSeq2Seq`` and ``TextGAN``.

    Evaluation args (shared by every family):
        num_eval_samples: samples generated at each validation/test epoch end for the sample metrics.
        eval_temperature: sampling temperature for those samples (1.0: the model's own distribution).
        eval_batch_size: generation batch size.
        eval_seed: seeds the evaluation sampler, so every epoch and every family draw with the same noise.
        bleu_max_n: BLEU/Self-BLEU orders 2..bleu_max_n.
        num_logged_samples: sample texts written to the samples table per evaluation.
    """

    family = "base"

    def __init__(
        self,
        vocab_size: int,
        num_eval_samples: int = 200,
        eval_temperature: float = 1.0,
        eval_batch_size: int = 256,
        eval_seed: int = 1234,
        bleu_max_n: int = 5,
        num_logged_samples: int = 20,
    ):
        super().__init__()
        if vocab_size < 6:
            raise ValueError(f"model.vocab_size={vocab_size} leaves no room for words besides the 5 special tokens")
        if num_eval_samples < 0:
            raise ValueError(f"model.num_eval_samples must be >= 0, got {num_eval_samples}")
        if eval_temperature <= 0:
            raise ValueError(f"model.eval_temperature must be > 0, got {eval_temperature}")
        self.vocab: Optional[Vocab] = None
        self.tokenizer = None
        self._data_info: dict[str, Any] = {}
        self.nll_test = torch.nn.ModuleDict({s: SequenceNLL() for s in ("val", "test")})
        self.nll_oracle = torch.nn.ModuleDict({s: SequenceNLL() for s in ("val", "test")})
        self._ref_metrics: dict[str, BLEU] = {}
        # Not a hyperparameter of the model: `gvt predict` sets it from the config's `prediction:` section.
        self.prediction = PredictionSettings()
        self._predictions: list[dict] = []
        self._predicted_conditions = 0

    # ---- vocabulary and data, shared with the data module ------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if self.vocab is not None:
            check_same_vocab(self.vocab, dm.vocab, where="checkpoint")
        if len(dm.vocab) != self.hparams.vocab_size:
            raise ValueError(
                f"model.vocab_size={self.hparams.vocab_size} but the data's vocabulary has {len(dm.vocab)} tokens"
            )
        self.vocab, self.tokenizer = dm.vocab, dm.tokenizer
        self._data_info = {
            "condition": dm.condition,
            "fixed_length": getattr(dm, "seq_len", None),
            "max_length": dm.max_target_length,
            "num_classes": dm.num_classes,
        }

    @property
    def datamodule(self):
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # `gvt validate/test --ckpt_path` (LightningCLI) finds the family from this, also for checkpoints of
        # models built in Python rather than by the CLI.
        cls = type(self)
        checkpoint.setdefault("hyper_parameters", {}).setdefault("_class_path", f"{cls.__module__}.{cls.__qualname__}")
        # The training RNG (dropout, Gumbel noise, z, REINFORCE samples), so a resumed run draws what an
        # uninterrupted one would have drawn. Tensors and tuples only: loadable with weights_only=True.
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.vocab is None:
            return
        checkpoint[CHECKPOINT_KEY] = {
            "family": self.family,
            "vocab": self.vocab.state_dict(),
            "tokenizer": self.tokenizer.state_dict(),
            "data": dict(self._data_info),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng_states")
        if rng is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            torch.set_rng_state(rng["torch"])
            random.setstate(_as_tuple(rng["python"]))
        info = checkpoint.get(CHECKPOINT_KEY)
        if info is None:
            return
        if info["family"] != self.family:
            raise ValueError(f"this checkpoint is of the {info['family']!r} family, not {self.family!r}")
        saved = Vocab.from_state_dict(info["vocab"])
        if self.vocab is not None:  # resuming a fit: the data module's vocabulary is already attached
            check_same_vocab(saved, self.vocab, where="checkpoint")
        self.vocab = saved
        self.tokenizer = tokenizer_from_state_dict(info["tokenizer"])
        self._data_info = dict(info["data"])

    # ---- generation shared by every family --------------------------------------------------------------
    def generation_lengths(self) -> tuple[int, int]:
        """(min_new_tokens, max_new_tokens): exactly L words on oracle data, else up to the longest target."""
        fixed = self._data_info.get("fixed_length")
        if fixed:
            return fixed, fixed
        return 0, self._data_info.get("max_length", 50) + 1

    def latent(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """z for the generator; None for nets without a latent input."""
        return None

    @torch.no_grad()
    def sample(
        self,
        src: torch.Tensor,
        src_pad_mask: torch.Tensor,
        *,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        greedy: bool = False,
        generator: Optional[torch.Generator] = None,
        z: Optional[torch.Tensor] = None,
    ):
        """Generate one sample per condition row; returns ``modules.sampling.SampleOutput``."""
        min_len, max_len = self.generation_lengths()
        if z is None:
            z = self.latent(src.size(0), generator)
        was_training = self.generator.training
        self.generator.eval()
        try:
            return generate(
                self.generator, src.to(self.device), src_pad_mask.to(self.device),
                max_new_tokens=max_len, min_new_tokens=min_len, temperature=temperature, top_k=top_k,
                top_p=top_p, greedy=greedy, z=z, generator=generator,
                banned_ids=self.vocab.non_output_ids,
            )
        finally:
            self.generator.train(was_training)

    def decode_samples(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist())]

    def to_text(self, ids: list[int]) -> str:
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def condition_text(self, src_ids: list[int]) -> str:
        """A condition as a user gives it to ``gvt sample --condition``: the label name, the source sentence, or
        "" for unconditional data."""
        kind = self._data_info.get("condition", "none")
        if kind == "none":
            return ""
        ids = [t for t in src_ids if t != PAD_ID]
        if kind == "label":
            return self.vocab.labels[self.vocab.label_ids.index(ids[0])]
        return self.to_text(ids)

    # ---- prediction: samples for each condition of the predict split, to CSV ----------------------------------
    def on_predict_epoch_start(self) -> None:
        self._predictions, self._predicted_conditions = [], 0

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        """Draw ``prediction.samples_per_condition`` samples for each condition of the batch; returns the CSV rows."""
        settings = self.prediction
        k = settings.samples_per_condition
        # The k samples of a condition are adjacent rows; each row gets its own noise (and z, for a GAN with z).
        src = batch.src.repeat_interleave(k, dim=0)  # (B*k, S)
        src_pad_mask = batch.src_pad_mask.repeat_interleave(k, dim=0)  # (B*k, S)
        gen = torch.Generator(device=self.device).manual_seed(settings.seed + batch_idx)
        out = self.sample(src, src_pad_mask, temperature=settings.temperature, top_k=settings.top_k,
                          top_p=settings.top_p, generator=gen)
        texts = [self.to_text(ids) for ids in self.decode_samples(out.tokens, out.lengths)]
        # Under DDP the predict split is sharded as rank, rank + world, ... (UnrepeatedDistributedSampler)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        rows = []
        for i, src_ids in enumerate(batch.src.tolist()):
            condition = self.condition_text(src_ids)
            index = rank + world * (self._predicted_conditions + i)
            rows += [{"condition_index": index, "condition": condition, "sample_index": j, "sample": texts[i * k + j]}
                     for j in range(k)]
        self._predicted_conditions += len(batch)
        self._predictions.extend(rows)
        return rows

    def on_predict_epoch_end(self) -> None:
        settings = self.prediction
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "predictions"  # every rank calls it
        name = settings.file
        if self.trainer.world_size > 1:
            name = f"{Path(name).stem}_rank{self.trainer.global_rank}{Path(name).suffix}"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["condition_index", "condition", "sample_index", "sample"])
        writer.writeheader()
        writer.writerows(self._predictions)
        atomic_write_text(folder / name, buf.getvalue())
        print(f"wrote {len(self._predictions)} samples for {self._predicted_conditions} conditions to {folder / name}",
              file=sys.stderr)

    # ---- validation / test: NLL_test per batch, sample metrics at epoch end --------------------------------
    def score_batch(self, batch: Batch, batch_idx: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) log p(tgt | src) summed over scored tokens, (B,) number of scored tokens."""
        # A latent z (GAN with z_dim > 0) is drawn from its own seeded generator: evaluation is repeatable and
        # never advances the training RNG, so a resumed run trains exactly like an uninterrupted one.
        gen = torch.Generator(device=self.device).manual_seed(self.hparams.eval_seed + batch_idx)
        z = self.latent(len(batch), gen)
        logits = self.generator(batch.src, batch.src_pad_mask, batch.tgt_in, z=z)
        token_lp = token_log_probs(logits, batch.tgt_out)  # (B, T-1)
        scored = ~batch.tgt_pad_mask[:, 1:]
        if self._data_info.get("fixed_length"):
            scored = scored & batch.tgt_out.ne(EOS_ID)  # the oracle benchmark scores the L words only
        return token_lp.masked_fill(~scored, 0.0).sum(dim=1), scored.sum(dim=1)

    def _eval_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        log_probs, counts = self.score_batch(batch, batch_idx)
        self.nll_test[stage].update(log_probs, counts)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _eval_epoch_end(self, stage: str) -> None:
        nll = self.nll_test[stage].compute()
        self.log(f"{stage}/nll_test_per_token", nll["per_token"].float())
        self.log(f"{stage}/nll_test_per_sentence", nll["per_sentence"].float())
        self.nll_test[stage].reset()
        if not torch.isfinite(nll["per_token"]):
            log.warning("%s/nll_test is not finite: the model diverged; its samples are not evaluated", stage)
            return
        if self.hparams.num_eval_samples > 0 and self.datamodule is not None:
            self.log_dict(self.sample_metrics(stage), sync_dist=False)

    def sample_metrics(self, stage: str, temperature: Optional[float] = None, num_samples: Optional[int] = None) -> dict:
        """Generate samples from the split's conditions and compute every sample metric on them."""
        dm = self.datamodule
        n = num_samples or self.hparams.num_eval_samples
        temperature = temperature or self.hparams.eval_temperature
        src_all, mask_all, _ = dm.conditions(stage, n)
        refs = self._references(stage)
        self_bleu, distinct = SelfBLEU(max_n=self.hparams.bleu_max_n), DistinctN()
        for metric in (refs, self_bleu, distinct):
            metric.update([])  # typed, empty: a rank that draws no chunk below still takes part in the gather
        rows = []
        # Chunk i is always drawn with the noise of seed (eval_seed + i), whichever rank draws it, so the
        # samples, and every metric of them, are the same under DDP as in one process. Metric states are
        # gathered across ranks, never averaged per rank.
        chunk = self.hparams.eval_batch_size
        world, rank = self.trainer.world_size, self.trainer.global_rank
        for index in range(rank, math.ceil(n / chunk), world):
            src, mask = src_all[index * chunk : (index + 1) * chunk], mask_all[index * chunk : (index + 1) * chunk]
            gen = torch.Generator(device=self.device).manual_seed(self.hparams.eval_seed + index)
            out = self.sample(src, mask, temperature=temperature, generator=gen)
            seqs = self.decode_samples(out.tokens, out.lengths)
            refs.update(seqs)
            self_bleu.update(seqs)
            distinct.update(seqs)
            if hasattr(dm, "oracle_log_prob"):
                self.nll_oracle[stage].update(dm.oracle_log_prob(out.tokens[:, : dm.seq_len], src), dm.seq_len)
            if len(rows) < self.hparams.num_logged_samples:
                for s, ids in zip(src.tolist(), seqs):
                    rows.append([self.to_text([t for t in s if t != PAD_ID]), self.to_text(ids)])
        results = {}
        for metric in (refs, self_bleu, distinct):
            results.update({f"{stage}/{k}": v.float() for k, v in metric.compute().items()})
            metric.reset()
        if hasattr(dm, "oracle_log_prob"):
            nll = self.nll_oracle[stage].compute()
            results[f"{stage}/nll_oracle_per_token"] = nll["per_token"].float()
            results[f"{stage}/nll_oracle_per_sentence"] = nll["per_sentence"].float()
            self.nll_oracle[stage].reset()
        self._log_samples(stage, rows[: self.hparams.num_logged_samples])
        return results

    def _references(self, stage: str) -> BLEU:
        # References are indexed once per split (the index is the expensive part of BLEU).
        if stage not in self._ref_metrics:
            self._ref_metrics[stage] = BLEU(self.datamodule.reference_ids(stage), max_n=self.hparams.bleu_max_n)
        metric = self._ref_metrics[stage]
        metric.reset()
        return metric

    def _log_samples(self, stage: str, rows: list[list[str]]) -> None:
        if not rows or self.trainer is None or not self.trainer.is_global_zero:
            return
        step = self.global_step
        for logger in self.loggers:
            if hasattr(logger, "log_table"):  # WandbLogger
                try:
                    logger.log_table(key=f"{stage}/samples", columns=["condition", "sample"], data=rows, step=step)
                except Exception as err:  # tracking must never take the run down
                    log.warning("could not log the samples table to W&B: %s", err)
        if not self.loggers:  # logging turned off (e.g. fast_dev_run): write nothing into the working directory
            return
        # The first logger's folder, not trainer.log_dir: that one is a collective call under DDP, and only
        # rank 0 gets here.
        folder = Path(getattr(self.loggers[0], "log_dir", None) or self.trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stage}_step{step:07d}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["condition", "sample"])
            writer.writerows(rows)
