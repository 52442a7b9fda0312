"""What both LightningModule families share: the vocabulary in checkpoints, evaluation by sampling, metrics.

A family subclass provides ``self.generator`` (a net with the step protocol of ``modules.sampling``) and its
training step; validation and test are the same code for every family, so their numbers are comparable:

- ``{stage}/nll_test_per_token`` and ``_per_sentence``: the model's NLL of the held-out split (coverage).
  On oracle data (fixed length, no end token in the oracle) only the L words are scored, as in the
  SeqGAN/Texygen benchmark; on text the end token counts too.
- ``{stage}/nll_oracle_per_token`` and ``_per_sentence`` (oracle data only): the oracle's NLL of generated
  samples (quality).
- ``{stage}/model_entropy_per_token``: the model's own NLL of the samples it drew for the sample metrics, at the
  temperature they were drawn at: an estimate of its per-token entropy (compare with the oracle's).
- ``{stage}/bleu{n}`` of samples against the split's references, ``{stage}/self_bleu{n}`` among samples,
  ``{stage}/distinct{n}`` (Texygen definitions; see modules/metrics).

Every likelihood here, and the MLE training loss, is computed under the distribution the model samples from:
the banned ids (PAD, BOS, UNK, NULL, the label tokens; the end token before the minimum length, i.e. everywhere
on oracle data) removed and the softmax renormalised over the rest (``modules.sampling.sampling_log_probs``),
one rule for every family. The scored targets (``scored_targets``) are those the sampler can produce, within the
generation length: padding, the end token after the L words of oracle data, and UNK targets of text data (which
no model can generate) are left out, the same for every model. Per token = the summed NLL / the tokens scored.

A model with a latent z (a GAN with ``z_dim > 0``) defines p(y) = E_z p(y | z), which no single z gives: its
NLLs are -log mean_k p(y | z_k) over K = ``nll_z_samples`` seeded draws (logsumexp). On average that is still
an upper bound on -log p(y), tightening as K grows (K = 1 is E_z[-log p(y | z)]); at test time the estimate is
also logged at K = 1, 8 and 64, those up to ``nll_z_samples`` (``test/nll_test_per_token_z1``, ``_z8``, ``_z64``
and the per-sentence ones), to show how far it has converged.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch

from modules.data.base import check_same_vocab
from modules.data.batch import Batch
from modules.data.vocab import BOS_ID, PAD_ID, Vocab, tokenizer_from_state_dict
from modules.errors import CheckpointError, ConfigError
from modules.files import atomic_write_text
from modules.models.configs import EvaluationConfig, as_config
from modules.metrics import BLEU, DistinctN, SelfBLEU, SequenceNLL
from modules.sampling import (
    DEFAULT_BANNED_IDS,
    check_sampling_args,
    generate,
    position_banned_mask,
    sampling_log_probs,
    target_log_probs,
)

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "gan_vs_transformer"
# z draws at which a model with z also logs its test NLL (test/nll_test_per_token_z1, ...): the bound tightening.
# Only the levels up to the model's own nll_z_samples are logged, so a preset that lowers K for speed pays for no more.
TEST_Z_SAMPLES = (1, 8, 64)
# teacher-forced scoring of K z draws runs in chunks of at most this many logits (rows x positions x vocabulary)
SCORE_CHUNK_LOGITS = 2**24


def _as_tuple(value):
    """random.setstate needs tuples; a checkpoint round trip may give lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def mle_loss(logits: torch.Tensor, targets: torch.Tensor, *, banned: torch.Tensor, scored: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """Token-level cross-entropy with teacher forcing under the distribution the model samples from: the one
    loss of the MLE family, and the generator's pretraining loss in the GAN family.

    logits (B, T, V), targets (B, T); banned (T, V) the sampler's banned ids per position
    (``GeneratorModule.banned_positions``); scored (B, T) the targets that count (``scored_targets``: never a
    banned one). The mean over scored targets of -log p(target), with p the softmax over the allowed ids only
    (``sampling_log_probs``): what MLE trains is exactly the distribution ``generate`` draws from and NLL_test
    scores, so no capacity goes into pushing down ids that are never sampled.
    label_smoothing eps: the target distribution is (1 - eps) on the target plus eps spread evenly over the ids
    allowed at that position (PyTorch's rule, restricted to what can be produced).
    """
    logp = sampling_log_probs(logits, banned)  # (B, T, V), -inf at banned ids
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T), inf at unscored (banned) targets
    if label_smoothing > 0:
        allowed = ~banned.expand(logp.shape)  # (B, T, V)
        uniform_nll = -logp.masked_fill(~allowed, 0.0).sum(-1) / allowed.sum(-1).clamp(min=1)  # (B, T)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform_nll
    return nll.masked_fill(~scored, 0.0).sum() / scored.sum().clamp(min=1)


def z_marginal_log_probs(per_draw: torch.Tensor) -> torch.Tensor:
    """(K, B) log p(y | z_k) at K draws z_k ~ p(z) -> (B,) log mean_k p(y | z_k) (logsumexp, no underflow).

    The Monte-Carlo estimate of log p(y) = log E_z p(y | z). Its expectation lies below log p(y) (Jensen) and
    rises to it as K grows, so its negation is an upper bound on the NLL that tightens with K; K = 1 gives
    E_z[-log p(y | z)], the loosest. A model without z has K = 1 and its exact log p(y)."""
    return torch.logsumexp(per_draw, dim=0) - math.log(per_draw.size(0))


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
            raise ConfigError(f"prediction.samples_per_condition must be >= 1, got {samples_per_condition}")
        try:
            check_sampling_args(temperature=temperature, top_k=top_k, top_p=top_p)
        except ConfigError as err:
            raise ConfigError(f"prediction.{err}") from None
        if not file or Path(file).name != file:
            raise ConfigError(f"prediction.file must be a plain file name (it goes under <run>/predictions/), got {file!r}")
        self.samples_per_condition, self.seed, self.file = samples_per_condition, seed, file
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p


class GeneratorModule(pl.LightningModule):
    """Base of ``TransformerSeq2Seq`` and ``TextGAN``.

    Evaluation settings, the same for every family: ``evaluation`` (``modules.models.configs.EvaluationConfig``,
    nested YAML ``model.init_args.evaluation.<setting>``), kept as ``self.evaluation``.
    """

    family = "base"

    def __init__(self, vocab_size: int, evaluation: Optional[EvaluationConfig] = None):
        super().__init__()
        if vocab_size < 6:
            raise ConfigError(f"model.vocab_size={vocab_size} leaves no room for words besides the 5 special tokens")
        self.evaluation = as_config(EvaluationConfig, evaluation, "evaluation")
        self.vocab: Optional[Vocab] = None
        self.tokenizer = None
        self._data_info: dict[str, Any] = {}
        self.nll_test = torch.nn.ModuleDict({s: SequenceNLL() for s in ("val", "test")})
        self.nll_oracle = torch.nn.ModuleDict({s: SequenceNLL() for s in ("val", "test")})
        self.model_entropy = torch.nn.ModuleDict({s: SequenceNLL() for s in ("val", "test")})
        self.nll_test_z = torch.nn.ModuleDict({f"z{k}": SequenceNLL() for k in TEST_Z_SAMPLES})  # test, with z
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
            raise ConfigError(
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
            raise CheckpointError(f"this checkpoint is of the {info['family']!r} family, not {self.family!r}")
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

    @property
    def has_latent(self) -> bool:
        """Whether the generator reads a latent z (then every NLL is a Monte-Carlo marginal over z)."""
        return False

    @property
    def test_z_levels(self) -> tuple[int, ...]:
        """The draw counts (of TEST_Z_SAMPLES, up to nll_z_samples) at which the test NLL is also logged."""
        return tuple(k for k in TEST_Z_SAMPLES if k <= self.nll_z_samples)

    @property
    def nll_z_samples(self) -> int:
        """K, the z draws each NLL marginalises over (1 for a model without z)."""
        return int(self.evaluation.nll_z_samples) if self.has_latent else 1

    @property
    def banned_ids(self) -> list[int]:
        """Ids the model never generates: PAD, BOS, UNK, NULL and the label tokens."""
        return self.vocab.non_output_ids if self.vocab is not None else list(DEFAULT_BANNED_IDS)

    @contextmanager
    def generator_in_eval_mode(self):
        """Dropout off inside the block (sampling and scoring); the generator's mode is restored after."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            yield
        finally:
            self.generator.train(was_training)

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
        with self.generator_in_eval_mode():
            return generate(
                self.generator, src.to(self.device), src_pad_mask.to(self.device),
                max_new_tokens=max_len, min_new_tokens=min_len, temperature=temperature, top_k=top_k,
                top_p=top_p, greedy=greedy, z=z, generator=generator,
                banned_ids=self.vocab.non_output_ids,
            )

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

    # ---- likelihoods: the distribution the model samples from, for every family ------------------------------
    def banned_positions(self, length: int) -> torch.Tensor:
        """(length, V) bool: the ids ``sample`` can never produce at each position (the sampler's rule)."""
        min_len, _ = self.generation_lengths()
        return position_banned_mask(self.hparams.vocab_size, length, min_len, self.banned_ids, device=self.device)

    def scored_targets(self, targets: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
        """(B, T) targets -> (B, T) bool, the targets every NLL and the MLE loss count: not padding, within the
        generation length (oracle data: the L words, not the end token after them, which the sampler never
        writes), and producible by the sampler (on text data UNK is not: it counts for no model)."""
        T = targets.size(1)
        _, max_len = self.generation_lengths()
        positions = torch.arange(T, device=targets.device).unsqueeze(0)  # (1, T)
        producible = ~banned[positions, targets]  # (B, T)
        return targets.ne(PAD_ID) & positions.lt(max_len) & producible

    def score_targets(self, logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced (B, T, V) logits, (B, T) targets -> (log p(target) (B, T), scored (B, T)), p being the
        distribution ``sample`` draws from at ``temperature``; log p is 0 where a target is not scored."""
        banned = self.banned_positions(targets.size(1)).to(logits.device)
        token_lp, _ = target_log_probs(logits, targets, banned, temperature)
        scored = self.scored_targets(targets, banned)
        return token_lp.masked_fill(~scored, 0.0), scored

    def teacher_forced_loss(self, logits: torch.Tensor, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
        """``mle_loss`` of the batch's targets under this model's sampling rule (the MLE and pretraining loss)."""
        banned = self.banned_positions(batch.tgt_out.size(1)).to(logits.device)
        scored = self.scored_targets(batch.tgt_out, banned)
        return mle_loss(logits, batch.tgt_out, banned=banned, scored=scored, label_smoothing=label_smoothing)

    def sequence_log_probs(self, src: torch.Tensor, src_pad_mask: torch.Tensor, targets: torch.Tensor,
                           z: Optional[torch.Tensor] = None,
                           temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(targets | src, z), teacher-forced, summed over the scored targets (``score_targets``) -> (N,),
        and the number of scored targets (N,). targets (N, T): words, end token, padding (a batch's tgt_out, or
        samples as ``sample`` returns them). The caller chooses train or eval mode."""
        bos = torch.full((targets.size(0), 1), BOS_ID, dtype=targets.dtype, device=targets.device)
        tgt_in = torch.cat([bos, targets[:, :-1]], dim=1)  # (N, T)
        logits = self.generator(src, src_pad_mask, tgt_in, z=z)  # (N, T, V)
        token_lp, scored = self.score_targets(logits, targets, temperature)
        return token_lp.sum(dim=1), scored.sum(dim=1)

    def z_draw_log_probs(self, src: torch.Tensor, src_pad_mask: torch.Tensor, targets: torch.Tensor,
                         num_draws: int, generator: torch.Generator,
                         temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(targets | src, z_k) at ``num_draws`` draws z_k from ``generator`` -> (K, N), and the scored
        targets per row (N,). A model without z gives (1, N), its exact log-likelihood, whatever num_draws.

        The K draws are scored as one batch of K x N rows (row k N + n: draw k of row n), in chunks of at most
        SCORE_CHUNK_LOGITS logits; the z are drawn before chunking, so the chunk size changes no number."""
        if not self.has_latent:
            lp, counts = self.sequence_log_probs(src, src_pad_mask, targets, temperature=temperature)
            return lp.unsqueeze(0), counts
        N, T = targets.shape
        z = self.latent(num_draws * N, generator).to(targets.device).view(num_draws, N, -1)  # (K, N, z_dim)
        draws_per_chunk = max(1, SCORE_CHUNK_LOGITS // (N * T * self.hparams.vocab_size))
        per_draw = []
        for k0 in range(0, num_draws, draws_per_chunk):
            k = min(draws_per_chunk, num_draws - k0)
            rep = lambda x: x.repeat(k, *([1] * (x.dim() - 1)))  # noqa: E731  (N, ...) -> (k N, ...)
            lp, counts = self.sequence_log_probs(rep(src), rep(src_pad_mask), rep(targets),
                                                 z=z[k0 : k0 + k].reshape(k * N, -1), temperature=temperature)
            per_draw.append(lp.view(k, N))
        return torch.cat(per_draw, dim=0), counts[:N]

    # ---- validation / test: NLL_test per batch, sample metrics at epoch end --------------------------------
    def score_batch_draws(self, batch: Batch, batch_idx: int = 0, num_draws: Optional[int] = None,
                          temperature: float = 1.0, seed: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B) log p(tgt | src, z_k) over the scored tokens at K = ``num_draws`` (default ``nll_z_samples``)
        z draws, and (B,) scored tokens; (1, B) for a model without z."""
        # z is drawn from its own generator, seeded (seed or eval_seed) + batch_idx: evaluation is repeatable
        # and never advances the training RNG, so a resumed run trains exactly like an uninterrupted one.
        base = self.evaluation.eval_seed if seed is None else seed
        gen = torch.Generator(device=self.device).manual_seed(base + batch_idx)
        return self.z_draw_log_probs(batch.src, batch.src_pad_mask, batch.tgt_out,
                                     num_draws or self.nll_z_samples, gen, temperature)

    def score_batch(self, batch: Batch, batch_idx: int = 0, temperature: float = 1.0,
                    seed: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) log p(tgt | src) summed over scored tokens (marginal over z by ``nll_z_samples`` draws for a
        model with z), (B,) number of scored tokens."""
        per_draw, counts = self.score_batch_draws(batch, batch_idx, temperature=temperature, seed=seed)
        return z_marginal_log_probs(per_draw), counts

    def _eval_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        K = self.nll_z_samples
        z_levels = stage == "test" and self.has_latent  # the bound at K = 1, 8, 64 too, from the same draws
        per_draw, counts = self.score_batch_draws(batch, batch_idx, K)
        self.nll_test[stage].update(z_marginal_log_probs(per_draw), counts)
        if z_levels:
            for k in self.test_z_levels:
                self.nll_test_z[f"z{k}"].update(z_marginal_log_probs(per_draw[:k]), counts)

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
        if stage == "test" and self.has_latent:
            for k in self.test_z_levels:
                metric = self.nll_test_z[f"z{k}"]
                name = f"z{k}"
                at_k = metric.compute()
                self.log(f"test/nll_test_per_token_{name}", at_k["per_token"].float())
                self.log(f"test/nll_test_per_sentence_{name}", at_k["per_sentence"].float())
                metric.reset()
        if not torch.isfinite(nll["per_token"]):
            log.warning("%s/nll_test is not finite: the model diverged; its samples are not evaluated", stage)
            return
        if self.evaluation.num_eval_samples > 0 and self.datamodule is not None:
            self.log_dict(self.sample_metrics(stage), sync_dist=False)

    def sample_metrics(self, stage: str, temperature: Optional[float] = None, num_samples: Optional[int] = None) -> dict:
        """Generate samples from the split's conditions and compute every sample metric on them, the model's own
        NLL of them (``model_entropy_per_token``: at the temperature they were drawn at) included."""
        dm = self.datamodule
        n = num_samples or self.evaluation.num_eval_samples
        temperature = temperature or self.evaluation.eval_temperature
        src_all, mask_all, _ = dm.conditions(stage, n)
        refs = self._references(stage)
        self_bleu, distinct = SelfBLEU(max_n=self.evaluation.bleu_max_n), DistinctN()
        for metric in (refs, self_bleu, distinct):
            metric.update([])  # typed, empty: a rank that draws no chunk below still takes part in the gather
        rows = []
        # Chunk i is always drawn with the noise of seed (eval_seed + i), whichever rank draws it, so the
        # samples, and every metric of them, are the same under DDP as in one process. Metric states are
        # gathered across ranks, never averaged per rank.
        chunk = self.evaluation.eval_batch_size
        world, rank = self.trainer.world_size, self.trainer.global_rank
        for index in range(rank, math.ceil(n / chunk), world):
            src, mask = src_all[index * chunk : (index + 1) * chunk], mask_all[index * chunk : (index + 1) * chunk]
            gen = torch.Generator(device=self.device).manual_seed(self.evaluation.eval_seed + index)
            out = self.sample(src, mask, temperature=temperature, generator=gen)
            seqs = self.decode_samples(out.tokens, out.lengths)
            refs.update(seqs)
            self_bleu.update(seqs)
            distinct.update(seqs)
            if hasattr(dm, "oracle_log_prob"):
                self.nll_oracle[stage].update(dm.oracle_log_prob(out.tokens[:, : dm.seq_len], src), dm.seq_len)
            # the z draws for the marginal continue this chunk's generator stream: independent of the z the
            # samples were drawn with, and the same whichever rank scores the chunk
            self.model_entropy[stage].update(*self.own_sample_log_probs(src, mask, out.tokens, temperature, gen))
            if len(rows) < self.evaluation.num_logged_samples:
                for s, ids in zip(src.tolist(), seqs):
                    rows.append([self.to_text([t for t in s if t != PAD_ID]), self.to_text(ids)])
        results = {}
        for metric in (refs, self_bleu, distinct):
            results.update({f"{stage}/{k}": v.float() for k, v in metric.compute().items()})
            metric.reset()
        entropy = self.model_entropy[stage].compute()
        results[f"{stage}/model_entropy_per_token"] = entropy["per_token"].float()
        self.model_entropy[stage].reset()
        if hasattr(dm, "oracle_log_prob"):
            nll = self.nll_oracle[stage].compute()
            results[f"{stage}/nll_oracle_per_token"] = nll["per_token"].float()
            results[f"{stage}/nll_oracle_per_sentence"] = nll["per_sentence"].float()
            self.nll_oracle[stage].reset()
        self._log_samples(stage, rows[: self.evaluation.num_logged_samples])
        return results

    @torch.no_grad()
    def own_sample_log_probs(self, src: torch.Tensor, src_pad_mask: torch.Tensor, tokens: torch.Tensor,
                             temperature: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's log-likelihood of samples it drew at ``temperature`` (tokens as ``sample`` returns them),
        under that same tempered distribution and marginal over ``nll_z_samples`` fresh z draws from
        ``generator`` -> (N,) summed over the scored tokens, (N,) scored tokens. Their mean negation per token
        estimates the model's entropy per token."""
        with self.generator_in_eval_mode():
            per_draw, counts = self.z_draw_log_probs(src.to(self.device), src_pad_mask.to(self.device),
                                                     tokens.to(self.device), self.nll_z_samples, generator,
                                                     temperature)
        return z_marginal_log_probs(per_draw), counts

    def _references(self, stage: str) -> BLEU:
        # References are indexed once per split (the index is the expensive part of BLEU).
        if stage not in self._ref_metrics:
            self._ref_metrics[stage] = BLEU(self.datamodule.reference_ids(stage), max_n=self.evaluation.bleu_max_n)
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
