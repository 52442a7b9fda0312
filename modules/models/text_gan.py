"""The GAN family: a generator and a discriminator, two losses, two optimizers, an adversarial game."""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from modules.data.batch import Batch
from modules.models.base import GeneratorModule
from modules.models.gan_estimators import (
    after_end_mask,
    discounted_returns,
    fit_length,
    gumbel_temperature,
    gumbel_unroll,
    policy_log_probs,
    real_for_discriminator,
    reinforce_loss,
    rewards_from_logits,
    rollout_values,
    terminal_rewards,
    update_baseline,
)
from modules.models.gan_losses import (
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)
from modules.models.transformer_seq2seq import warmup_schedule
from modules.nets.discriminators import build_discriminator
from modules.nets.lstm_generator import LSTMGenerator
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig
from modules.sampling import DEFAULT_BANNED_IDS, PAD_ID, generate


class TextGAN(GeneratorModule):
    """Text GAN: generator G (the encoder-decoder Transformer with a latent z, or an LSTM) against a
    discriminator D (CNN, Transformer encoder, or per-token LSTM), trained with Lightning's manual
    optimization.

    Phases:
        epochs [0, pretrain_epochs): MLE pretraining of G with the MLE family's loss (`mle_loss`, under the
        distribution G samples from); D is idle.
        afterwards, for every training batch: `d_steps` D updates (each against freshly generated fakes and
        the batch's real sequences), then one G update. 0 pretraining epochs = adversarial from scratch.

    Budgets: Lightning's `trainer.global_step` counts every optimizer step (D steps included), so it is
    not a budget here. Budgets are in generator updates: `g_updates` counts adversarial G updates (one per
    training batch, so samples seen = g_updates x batch size), `mle_updates` counts pretraining updates;
    both are saved in checkpoints, and `max_g_updates` stops training at a given count.

    Crossing the discrete tokens (`estimator`):
        gumbel: G is unrolled with gradients for exactly the generation length; each step's Gumbel-perturbed
            logits o + g give the hard token argmax(o + g) (fed back to G) and the relaxed one-hot
            softmax(beta (o + g)) that D reads through its embedding (one-hots @ embedding matrix). beta, the
            RelGAN "temperature" (an inverse temperature), goes from 1 to `max_temperature` over
            `anneal_steps` generator updates (`temperature_schedule` exp / linear / constant); it is a
            function of `g_updates`, so a resumed run continues the schedule where it stopped.
            D is trained on the same relaxed one-hots (detached) against the hard one-hots of real data.
        reinforce: tokens are sampled (no gradient) with the shared sampler, D scores them, and the policy
            gradient goes through teacher-forced log-probs of the sampled tokens. Rewards r = 2 sigmoid(D) - 1:
            per token with the LSTM discriminator (dense, ScratchGAN), else one terminal reward per sequence;
            returns are discounted (`discount`); with `rollouts` > 0 the return of each token is instead
            SeqGAN's Monte-Carlo value (mean reward of `rollouts` completions of its prefix). Advantage =
            return - baseline, a per-position moving average (`baseline_decay`) kept in a checkpointed buffer.

    Real and fake sequences reach D in one layout: (B, L) with L the generation length, words, the end token
    when there is one within L, then padding (masked and zeroed inside D). On fixed-length oracle data that
    is exactly L words for both (the oracle has no end token).

    Optimizers: Adam for G (`g_lr`), Adam for D (`d_lr`), and a third Adam for G's pretraining
    (`pretrain_lr`: RelGAN pretrains with a far larger rate than it trains adversarially, and the pretraining
    moments should not leak into the game). Each has `betas`; G and D have LambdaLR schedulers (`lr_schedule`,
    `warmup_steps` counted in their own updates), stepped by hand. Gradients are clipped by norm
    (`gradient_clip`, 0 = off) through `self.clip_gradients`.

    Logged each step: `train/g_loss`, `train/d_loss`, `train/d_acc_real`, `train/d_acc_fake` (see
    `gan_losses.discriminator_accuracy`), `train/g_grad_norm`, `train/d_grad_norm` (before clipping),
    `train/gumbel_temperature` (gumbel), `train/mean_return` (reinforce), `train/g_updates`; during
    pretraining `train/mle_loss`, `train/g_grad_norm`, `train/mle_updates`.
    Validation/test metrics are GeneratorModule's. With z_dim > 0, NLL_test (and the model's entropy) is
    -log mean_k p(x | z_k) over `nll_z_samples` seeded draws of z per sequence, the Monte-Carlo marginal over z:
    on average still an upper bound on -log p(x), tighter as K grows; the test stage also logs it at K = 1, 8, 64.

    Args (besides GeneratorModule's evaluation args):
        generator: "lstm" (g_emb_dim, g_hidden_dim, g_num_layers) or "transformer" (d_model, n_heads,
            n_encoder_layers, n_decoder_layers, d_ff, g_dropout, positional, tie_embeddings), both with a latent
            z of size z_dim (0 = none). max_len bounds sequence positions (generator, D, baseline).
        discriminator: "cnn" (d_filter_sizes x d_num_filters, highway), "transformer" (d_layers blocks,
            d_heads, feed-forward 2 d_hidden_dim) or "lstm" (d_layers, d_hidden_dim; per-token outputs); all
            embed with d_emb_dim, drop out d_dropout, and add the minibatch-std feature if minibatch_std.
        loss: "standard" (non-saturating), "rsgan", "hinge" or "wgan-gp" (gp_weight).
        estimator: "gumbel" (max_temperature, temperature_schedule, anneal_steps, straight_through) or
            "reinforce" (discount, baseline_decay, rollouts).
        g_lr, d_lr, betas, d_steps, gradient_clip, lr_schedule, warmup_steps: the adversarial optimisation.
        pretrain_epochs, pretrain_lr: MLE pretraining of G. max_g_updates: stop after that many G updates.
        nll_z_samples: K, the z draws every NLL of a generator with z marginalises over (see above).

    DDP: D and G live in one module, and each step backpropagates through only one of them, so use
    `strategy="ddp_find_unused_parameters_true"`. The minibatch-std feature and the fake batches are per
    device: D judges populations of the local batch size.
    """

    family = "gan"

    def __init__(
        self,
        vocab_size: int,
        # generator
        generator: Literal["transformer", "lstm"] = "lstm",
        z_dim: int = 0,
        g_emb_dim: int = 32,
        g_hidden_dim: int = 32,
        g_num_layers: int = 1,
        d_model: int = 128,
        n_heads: int = 4,
        n_encoder_layers: int = 1,
        n_decoder_layers: int = 2,
        d_ff: int = 512,
        g_dropout: float = 0.1,
        max_len: int = 256,
        positional: Literal["sinusoidal", "learned"] = "sinusoidal",
        tie_embeddings: bool = True,
        # discriminator
        discriminator: Literal["cnn", "transformer", "lstm"] = "cnn",
        d_emb_dim: int = 64,
        d_hidden_dim: int = 64,
        d_filter_sizes: tuple[int, ...] = (2, 3, 4, 5),
        d_num_filters: int = 64,
        d_heads: int = 4,
        d_layers: int = 1,
        d_dropout: float = 0.25,
        minibatch_std: bool = False,
        # the game
        loss: Literal["standard", "rsgan", "hinge", "wgan-gp"] = "rsgan",
        gp_weight: float = 10.0,
        estimator: Literal["gumbel", "reinforce"] = "gumbel",
        max_temperature: float = 100.0,
        temperature_schedule: Literal["exp", "linear", "constant"] = "exp",
        anneal_steps: int = 2000,
        straight_through: bool = False,
        discount: float = 0.95,
        baseline_decay: float = 0.9,
        rollouts: int = 0,
        # optimisation
        g_lr: float = 1e-4,
        d_lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        d_steps: int = 1,
        gradient_clip: float = 5.0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        warmup_steps: int = 0,
        pretrain_epochs: int = 0,
        pretrain_lr: float = 1e-2,
        max_g_updates: Optional[int] = None,
        # evaluation (GeneratorModule)
        num_eval_samples: int = 200,
        eval_temperature: float = 1.0,
        eval_batch_size: int = 256,
        eval_seed: int = 1234,
        bleu_max_n: int = 5,
        num_logged_samples: int = 20,
        nll_z_samples: int = 64,
    ):
        super().__init__(vocab_size, num_eval_samples, eval_temperature, eval_batch_size, eval_seed, bleu_max_n,
                         num_logged_samples)
        for name, value in dict(g_lr=g_lr, d_lr=d_lr, pretrain_lr=pretrain_lr).items():
            if value <= 0:
                raise ValueError(f"model.{name} must be > 0, got {value}")
        if d_steps < 1:
            raise ValueError(f"model.d_steps must be >= 1, got {d_steps}")
        if pretrain_epochs < 0 or rollouts < 0 or warmup_steps < 0 or anneal_steps < 0 or gradient_clip < 0:
            raise ValueError("model.pretrain_epochs, rollouts, warmup_steps, anneal_steps and gradient_clip "
                             "must be >= 0")
        if max_temperature < 1.0:
            raise ValueError(f"model.max_temperature must be >= 1 (beta grows from 1), got {max_temperature}")
        if not 0.0 <= discount <= 1.0 or not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"model.discount must lie in [0, 1] and baseline_decay in [0, 1), "
                             f"got {discount}, {baseline_decay}")
        if max_g_updates is not None and max_g_updates < 0:
            raise ValueError(f"model.max_g_updates must be >= 0, got {max_g_updates}")
        if nll_z_samples < 1:
            raise ValueError(f"model.nll_z_samples must be >= 1 (z draws per NLL), got {nll_z_samples}")
        self.save_hyperparameters()
        self.automatic_optimization = False

        if generator == "transformer":
            self.generator = EncoderDecoderTransformer(TransformerConfig(
                vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, n_encoder_layers=n_encoder_layers,
                n_decoder_layers=n_decoder_layers, d_ff=d_ff, dropout=g_dropout, max_len=max_len,
                positional=positional, tie_embeddings=tie_embeddings, z_dim=z_dim,
            ))
        elif generator == "lstm":
            self.generator = LSTMGenerator(vocab_size, g_emb_dim, g_hidden_dim, g_num_layers, z_dim=z_dim)
        else:
            raise ValueError(f"model.generator must be 'transformer' or 'lstm', got {generator!r}")
        self.discriminator = build_discriminator(
            discriminator, vocab_size, emb_dim=d_emb_dim, hidden_dim=d_hidden_dim, filter_sizes=d_filter_sizes,
            num_filters=d_num_filters, n_heads=d_heads, n_layers=d_layers, dropout=d_dropout, max_len=max_len,
            minibatch_std=minibatch_std,
        )
        # counters and the REINFORCE baseline are buffers, so every checkpoint carries them
        self.register_buffer("g_update_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("mle_update_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("reinforce_baseline", torch.zeros(max_len))
        self.register_buffer("baseline_initialized", torch.zeros((), dtype=torch.bool))

    def on_fit_start(self) -> None:
        _, L = self.generation_lengths()
        if L > self.hparams.max_len:
            raise ValueError(f"sequences of up to {L} tokens are generated but model.max_len={self.hparams.max_len}; "
                             "raise model.max_len")

    # ---- counters and schedules ---------------------------------------------------------------------------
    @property
    def g_updates(self) -> int:
        """Adversarial generator updates so far (the budget unit of the GAN family)."""
        return int(self.g_update_count)

    @property
    def mle_updates(self) -> int:
        return int(self.mle_update_count)

    @property
    def temperature(self) -> float:
        """The Gumbel-softmax beta for the next generator update."""
        hp = self.hparams
        return gumbel_temperature(self.g_updates, hp.max_temperature, hp.anneal_steps, hp.temperature_schedule)

    @property
    def in_pretraining(self) -> bool:
        return self.current_epoch < self.hparams.pretrain_epochs

    @property
    def banned_ids(self) -> list[int]:
        return self.vocab.non_output_ids if self.vocab is not None else list(DEFAULT_BANNED_IDS)

    def latent(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """z ~ N(0, I) of shape (batch_size, z_dim), drawn from `generator` when given; None when z_dim = 0."""
        if self.hparams.z_dim == 0:
            return None
        device = generator.device if generator is not None else self.device
        return torch.randn(batch_size, self.hparams.z_dim, generator=generator, device=device)

    # ---- optimizers ---------------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        betas = tuple(hp.betas)
        g_opt = torch.optim.Adam(self.generator.parameters(), lr=hp.g_lr, betas=betas)
        d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=hp.d_lr, betas=betas)
        mle_opt = torch.optim.Adam(self.generator.parameters(), lr=hp.pretrain_lr, betas=betas)
        total = self._adversarial_updates_planned()
        g_sched = torch.optim.lr_scheduler.LambdaLR(g_opt, warmup_schedule(hp.warmup_steps, total, hp.lr_schedule))
        d_sched = torch.optim.lr_scheduler.LambdaLR(
            d_opt, warmup_schedule(hp.warmup_steps, total * hp.d_steps, hp.lr_schedule))
        # no "interval": under manual optimization Lightning only stores these; training_step steps them
        return [g_opt, d_opt, mle_opt], [g_sched, d_sched]

    def _adversarial_updates_planned(self) -> int:
        """The generator updates a cosine schedule spreads over: max_g_updates, or the adversarial epochs'
        batches."""
        if self.hparams.max_g_updates:
            return int(self.hparams.max_g_updates)
        if self._trainer is None:
            return 10_000
        max_epochs = self.trainer.max_epochs
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or not max_epochs or max_epochs < 0:
            return 10_000
        return max(1, int(total * max(0, max_epochs - self.hparams.pretrain_epochs) / max_epochs))

    def _step(self, opt, loss: torch.Tensor, params) -> torch.Tensor:
        """Backward, measure the gradient norm (before clipping), clip, step. -> the norm."""
        opt.zero_grad()
        self.manual_backward(loss)
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) if grads else loss.new_zeros(())
        if self.hparams.gradient_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip, gradient_clip_algorithm="norm")
        opt.step()
        return norm.detach()

    # ---- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if self.in_pretraining:
            self._pretrain_step(batch)
            return
        max_g = self.hparams.max_g_updates
        if max_g is not None and self.g_updates >= max_g:
            self.trainer.should_stop = True
            return
        g_opt, d_opt, _ = self.optimizers()
        g_sched, d_sched = self.lr_schedulers()
        B = len(batch)
        _, L = self.generation_lengths()
        real, real_pad = real_for_discriminator(batch.tgt, L)  # (B, L)

        for _ in range(self.hparams.d_steps):
            with self.toggled_optimizer(d_opt):
                with torch.no_grad():
                    fake, fake_pad = self._fake_for_discriminator(batch, L)
                d_loss, d_real, d_fake = self._discriminator_loss(batch, real, real_pad, fake, fake_pad)
                d_norm = self._step(d_opt, d_loss, self.discriminator.parameters())
                d_sched.step()

        with self.toggled_optimizer(g_opt):
            if self.hparams.estimator == "gumbel":
                g_loss, extra = self._gumbel_generator_loss(batch, real, real_pad, L)
            else:
                g_loss, extra = self._reinforce_generator_loss(batch, L)
            g_norm = self._step(g_opt, g_loss, self.generator.parameters())
            g_sched.step()
        self.g_update_count += 1

        acc_real, acc_fake = discriminator_accuracy(self.hparams.loss, d_real, d_fake)
        metrics = {
            "train/g_loss": g_loss.detach(), "train/d_loss": d_loss.detach(),
            "train/d_acc_real": acc_real, "train/d_acc_fake": acc_fake,
            "train/g_grad_norm": g_norm, "train/d_grad_norm": d_norm,
            "train/g_updates": float(self.g_updates), **extra,
        }
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=B)
        self.log_dict({"g_loss": g_loss.detach(), "d_loss": d_loss.detach()}, prog_bar=True, logger=False,
                      batch_size=B)

    def _pretrain_step(self, batch: Batch) -> None:
        _, _, mle_opt = self.optimizers()
        with self.toggled_optimizer(mle_opt):
            logits = self.generator(batch.src, batch.src_pad_mask, batch.tgt_in, z=self.latent(len(batch)))
            loss = self.teacher_forced_loss(logits, batch)  # (B, T-1, V) -> mean NLL per scored target token
            norm = self._step(mle_opt, loss, self.generator.parameters())
        self.mle_update_count += 1
        self.log_dict({"train/mle_loss": loss.detach(), "train/g_grad_norm": norm,
                       "train/mle_updates": float(self.mle_updates)}, on_step=True, on_epoch=False,
                      batch_size=len(batch))
        self.log("mle_loss", loss.detach(), prog_bar=True, logger=False, batch_size=len(batch))

    # ---- discriminator side -------------------------------------------------------------------------------
    def _fake_for_discriminator(self, batch: Batch, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fakes in the form G's update will show them: relaxed one-hots (gumbel) or sampled ids (reinforce)."""
        min_len, _ = self.generation_lengths()
        z = self.latent(len(batch))
        if self.hparams.estimator == "gumbel":
            out = gumbel_unroll(self.generator, batch.src, batch.src_pad_mask, length=L, min_length=min_len,
                                temperature=self.temperature, banned_ids=self.banned_ids, z=z,
                                straight_through=self.hparams.straight_through)
            return out.onehots, out.pad_mask  # (B, L, V), (B, L)
        tokens, pad = self._sample_tokens(batch, L, z)
        return tokens, pad

    def _discriminator_loss(self, batch, real, real_pad, fake, fake_pad):
        D = self.discriminator
        # real and fake are scored in separate calls so that the minibatch-std feature sees one population
        d_real = D(real, batch.src, batch.src_pad_mask, real_pad)  # (B,)
        d_fake = D(fake, batch.src, batch.src_pad_mask, fake_pad)  # (B,)
        loss = discriminator_loss(self.hparams.loss, d_real, d_fake)
        if self.hparams.loss == "wgan-gp":
            either = real_pad & fake_pad  # interpolants are real wherever either end is
            penalty = gradient_penalty(
                lambda e: D.score_embedded(e, batch.src, batch.src_pad_mask, either), D.embed(real), D.embed(fake))
            loss = loss + self.hparams.gp_weight * penalty
        return loss, d_real.detach(), d_fake.detach()

    # ---- generator side: Gumbel-softmax -------------------------------------------------------------------
    def _gumbel_generator_loss(self, batch, real, real_pad, L):
        min_len, _ = self.generation_lengths()
        beta = self.temperature
        out = gumbel_unroll(self.generator, batch.src, batch.src_pad_mask, length=L, min_length=min_len,
                            temperature=beta, banned_ids=self.banned_ids, z=self.latent(len(batch)),
                            straight_through=self.hparams.straight_through)
        d_fake = self.discriminator(out.onehots, batch.src, batch.src_pad_mask, out.pad_mask)  # (B,)
        d_real = None
        if self.hparams.loss == "rsgan":  # D's parameters are frozen by the toggle: no gradient reaches them
            d_real = self.discriminator(real, batch.src, batch.src_pad_mask, real_pad)
        return generator_loss(self.hparams.loss, d_real, d_fake), {"train/gumbel_temperature": beta}

    # ---- generator side: REINFORCE ------------------------------------------------------------------------
    def _sample_tokens(self, batch: Batch, L: int, z) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample at temperature 1 with the shared sampler. -> ids (B, L), pad_mask (B, L)"""
        min_len, _ = self.generation_lengths()
        out = generate(self.generator, batch.src, batch.src_pad_mask, max_new_tokens=L, min_new_tokens=min_len,
                       z=z, banned_ids=self.banned_ids)
        tokens = fit_length(out.tokens, L)  # the sampler stops early when every row has ended
        return tokens, after_end_mask(tokens) | tokens.eq(PAD_ID)

    @torch.no_grad()
    def sequence_returns(self, batch: Batch, tokens: torch.Tensor, pad: torch.Tensor, z) -> torch.Tensor:
        """(B, L) the return of every sampled token (see the class docstring for the reward definitions)."""
        D, hp = self.discriminator, self.hparams
        src, src_mask = batch.src, batch.src_pad_mask
        if hp.rollouts > 0:
            min_len, _ = self.generation_lengths()
            return rollout_values(
                self.generator, src, src_mask, tokens, num_rollouts=hp.rollouts, min_length=min_len,
                banned_ids=self.banned_ids, z=z,
                score_fn=lambda ids, p, s, sm: rewards_from_logits(D(ids, s, sm, p)),
            )
        if D.per_token:
            rewards = rewards_from_logits(D.token_logits(tokens, src, src_mask, pad)).masked_fill(pad, 0.0)
        else:
            rewards = terminal_rewards(rewards_from_logits(D(tokens, src, src_mask, pad)), pad)
        return discounted_returns(rewards, pad, hp.discount)

    def _reinforce_generator_loss(self, batch, L):
        z = self.latent(len(batch))
        with torch.no_grad():
            tokens, pad = self._sample_tokens(batch, L, z)
            returns = self.sequence_returns(batch, tokens, pad, z)  # (B, L)
            if not bool(self.baseline_initialized):  # no history yet: the first batch's mean starts it
                self.reinforce_baseline.copy_(update_baseline(self.reinforce_baseline, returns, pad, 0.0, False))
                self.baseline_initialized.fill_(True)
            advantages = (returns - self.reinforce_baseline[:L]).masked_fill(pad, 0.0)  # (B, L)
            # updated after use, so the baseline never depends on the samples it is subtracted from
            self.reinforce_baseline.copy_(
                update_baseline(self.reinforce_baseline, returns, pad, self.hparams.baseline_decay, True))
        min_len, _ = self.generation_lengths()
        logp = policy_log_probs(self.generator, batch.src, batch.src_pad_mask, tokens, pad, min_length=min_len,
                                banned_ids=self.banned_ids, z=z)  # (B, L), with gradients
        valid = (~pad).float()
        mean_return = (returns * valid).sum() / valid.sum().clamp(min=1.0)
        return reinforce_loss(logp, advantages, pad), {"train/mean_return": mean_return}

    # ---- checkpoints --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # the counters live in the state_dict (buffers); this copy is for people reading a checkpoint
        checkpoint["text_gan"] = {"g_updates": self.g_updates, "mle_updates": self.mle_updates,
                                  "gumbel_temperature": self.temperature}
