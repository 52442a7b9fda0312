"""The GAN family: a generator and a discriminator, two losses, two optimizers, an adversarial game."""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from modules.data.batch import Batch
from modules.models.base import GeneratorModule
from modules.models.gan_estimators import (
    RELATIVISTIC_REWARD_LOSSES,
    after_end_mask,
    discounted_returns,
    fit_length,
    gumbel_temperature,
    gumbel_unroll,
    real_for_discriminator,
    real_logit_reference,
    reinforce_loss,
    rewards_for_loss,
    rollout_values,
    sample_with_log_probs,
    terminal_rewards,
    update_sample_baseline,
)
from modules.models.gan_losses import (
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    penalty_onehots,
)
from modules.models.transformer_seq2seq import OPTIMIZERS, generator_optimizer, warmup_schedule
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
            RelGAN "temperature" (an inverse temperature), goes from 1 at the first adversarial update to
            `max_temperature` at the last update of the first `anneal_fraction` of the run's planned adversarial
            updates (`_adversarial_updates_planned`: max_g_updates, else the trainer's limits), so every batch
            size and budget ends at the same beta; `anneal_steps` (an explicit override for single runs) instead
            reaches max at update number `anneal_steps` (counting from 0). `temperature_schedule`: exp / linear /
            constant. beta is a function of `g_updates` and the settings only, so a resumed run continues the
            schedule where it stopped. D is trained on the same relaxed one-hots (detached) against the hard
            one-hots of real data.
        reinforce: tokens are sampled at temperature 1 (the shared sampler's rules) and the policy gradient
            goes through the log-probabilities of the very distributions they were drawn from, kept in the
            sampling pass (`gan_estimators.sample_with_log_probs`: a teacher-forced re-score would draw fresh
            dropout masks, i.e. score another policy). D scores the samples; the reward depends only on what
            the D loss determines (`gan_estimators.rewards_for_loss`): 2 sigmoid(D) - 1 under `standard`
            (SeqGAN / ScratchGAN), the logit D under `hinge`, and relativistic D(fake) - mean D(real rows of the
            batch) under `rsgan` and `wgan-gp`, whose D is defined only up to a common shift. Rewards come per
            token with the LSTM discriminator (dense, ScratchGAN; the relativistic mean is then per position),
            else one terminal reward per sequence; returns are discounted (`discount`); with `rollouts` > 0 the
            return of each token is instead SeqGAN's Monte-Carlo value (mean reward of `rollouts` completions
            of its prefix). Advantage = return - baseline, the baseline being a per-position, bias-corrected
            moving average of past returns over about `baseline_horizon_samples` samples (a return n samples
            old weighs exp(-n / horizon), whatever the batch size), 0 before any history, updated only after
            the batch's advantages are taken (`gan_estimators.update_sample_baseline`); it lives in
            checkpointed buffers (`reinforce_baseline`, `baseline_weight`).

    Real and fake sequences reach D in one layout: (B, L) with L the generation length, words, the end token
    when there is one within L, then padding (masked and zeroed inside D). On fixed-length oracle data that
    is exactly L words for both (the oracle has no end token).

    Optimizers: G's (`g_lr`) and a second one of the same kind for G's pretraining (`pretrain_lr`: RelGAN
    pretrains with a far larger rate than it trains adversarially, and the pretraining moments should not leak
    into the game) follow the MLE family's rule (`generator_optimizer`): `g_optimizer` adam or adamw, `g_betas`,
    `g_weight_decay` on matrices only, gradients clipped by norm at `g_gradient_clip` (None: D's `betas` and
    `gradient_clip`). D has its own Adam (`d_lr`, `betas`, `gradient_clip`; 0 = no clipping). G and D have
    LambdaLR schedulers (`lr_schedule`, `warmup_steps` counted in their own updates), stepped by hand. Clipping
    goes through `self.clip_gradients`.

    Null GAN (`freeze_discriminator`): D stays at its initialisation; everything else runs as usual (the d_steps
    fake batches are generated and D's loss, accuracy and gradient norm are computed and logged, so the RNG
    stream and the compute match the trained-D run), but D's optimizer and scheduler are never stepped. It
    measures how far the generator moves without a game.

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
        estimator: "gumbel" (max_temperature, temperature_schedule, anneal_fraction, anneal_steps,
            straight_through) or "reinforce" (discount, baseline_horizon_samples, rollouts).
        g_lr, d_lr, betas, d_steps, gradient_clip, lr_schedule, warmup_steps: the adversarial optimisation;
            g_optimizer, g_betas, g_weight_decay, g_gradient_clip: the generator's optimiser (see above).
        freeze_discriminator: the null GAN (D never updated).
        pretrain_epochs, pretrain_lr: MLE pretraining of G. max_g_updates: stop after that many G updates.
        nll_z_samples: K, the z draws every NLL of a generator with z marginalises over (see above).

    DDP: D and G live in one module, and each step backpropagates through only one of them, so use
    `strategy="ddp_find_unused_parameters_true"`. The minibatch-std feature and the fake batches are per
    device: D judges populations of the local batch size. The REINFORCE baseline is a buffer each device
    feeds with its local batch's returns, so its horizon counts local samples.
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
        anneal_steps: Optional[int] = None,
        anneal_fraction: float = 1.0,
        straight_through: bool = False,
        discount: float = 0.95,
        baseline_horizon_samples: float = 160.0,
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
        g_optimizer: Literal["adam", "adamw"] = "adam",
        g_betas: Optional[tuple[float, float]] = None,
        g_weight_decay: float = 0.0,
        g_gradient_clip: Optional[float] = None,
        freeze_discriminator: bool = False,
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
        if pretrain_epochs < 0 or rollouts < 0 or warmup_steps < 0 or gradient_clip < 0 or g_weight_decay < 0:
            raise ValueError("model.pretrain_epochs, rollouts, warmup_steps, gradient_clip and g_weight_decay "
                             "must be >= 0")
        if anneal_steps is not None and anneal_steps < 0:
            raise ValueError(f"model.anneal_steps must be >= 0 or None (anneal over anneal_fraction of the run), "
                             f"got {anneal_steps}")
        if not 0.0 < anneal_fraction <= 1.0:
            raise ValueError(f"model.anneal_fraction must lie in (0, 1], got {anneal_fraction}")
        if g_optimizer not in OPTIMIZERS:
            raise ValueError(f"model.g_optimizer must be one of {', '.join(OPTIMIZERS)}, got {g_optimizer!r}")
        if g_gradient_clip is not None and g_gradient_clip < 0:
            raise ValueError(f"model.g_gradient_clip must be >= 0 or None (= gradient_clip), got {g_gradient_clip}")
        if max_temperature < 1.0:
            raise ValueError(f"model.max_temperature must be >= 1 (beta grows from 1), got {max_temperature}")
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"model.discount must lie in [0, 1], got {discount}")
        if not baseline_horizon_samples > 0:
            raise ValueError(f"model.baseline_horizon_samples must be > 0 (samples the REINFORCE baseline averages), "
                             f"got {baseline_horizon_samples}")
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
        self.register_buffer("reinforce_baseline", torch.zeros(max_len))  # the baseline per position
        self.register_buffer("baseline_weight", torch.zeros(max_len))  # its history's total weight, 0 = none

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
    def anneal_horizon(self) -> int:
        """The first generator update (counting from 0) at which beta reaches max_temperature: `anneal_steps`
        when set, else the last update of the first `anneal_fraction` of the planned adversarial updates."""
        hp = self.hparams
        if hp.anneal_steps is not None:
            return int(hp.anneal_steps)
        return max(1, round(hp.anneal_fraction * self._adversarial_updates_planned())) - 1

    def gumbel_beta(self, update: int) -> float:
        """The Gumbel-softmax beta of generator update number `update` (counting from 0): a pure function of
        the count and the settings, so exact resume holds."""
        hp = self.hparams
        return gumbel_temperature(update, hp.max_temperature, self.anneal_horizon, hp.temperature_schedule)

    @property
    def temperature(self) -> float:
        """The Gumbel-softmax beta for the next generator update."""
        return self.gumbel_beta(self.g_updates)

    @property
    def final_beta(self) -> Optional[float]:
        """The beta of the last generator update made (None: not the gumbel estimator, or no update yet)."""
        if self.hparams.estimator != "gumbel" or self.g_updates == 0:
            return None
        return self.gumbel_beta(self.g_updates - 1)

    @property
    def baseline_initialized(self) -> bool:
        """True once some returns have entered the REINFORCE baseline."""
        return bool(self.baseline_weight.gt(0).any())

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
    def generator_optimizer_settings(self) -> dict:
        """The generator's adversarial optimiser as `configure_optimizers` builds it (recorded in every results
        row; the pretraining optimizer is the same with `pretrain_lr`)."""
        hp = self.hparams
        betas = hp.g_betas if hp.g_betas is not None else hp.betas
        clip = hp.g_gradient_clip if hp.g_gradient_clip is not None else hp.gradient_clip
        return {"class": hp.g_optimizer, "lr": float(hp.g_lr), "betas": [float(b) for b in betas],
                "weight_decay": float(hp.g_weight_decay), "gradient_clip": float(clip)}

    def configure_optimizers(self):
        hp = self.hparams
        g = self.generator_optimizer_settings()
        g_opt = generator_optimizer(g["class"], self.generator.named_parameters(), hp.g_lr, g["betas"],
                                    g["weight_decay"])
        d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=hp.d_lr, betas=tuple(hp.betas))
        mle_opt = generator_optimizer(g["class"], self.generator.named_parameters(), hp.pretrain_lr, g["betas"],
                                      g["weight_decay"])
        total = self._adversarial_updates_planned()
        g_sched = torch.optim.lr_scheduler.LambdaLR(g_opt, warmup_schedule(hp.warmup_steps, total, hp.lr_schedule))
        d_sched = torch.optim.lr_scheduler.LambdaLR(
            d_opt, warmup_schedule(hp.warmup_steps, total * hp.d_steps, hp.lr_schedule))
        # no "interval": under manual optimization Lightning only stores these; training_step steps them
        return [g_opt, d_opt, mle_opt], [g_sched, d_sched]

    def _adversarial_updates_planned(self) -> int:
        """The adversarial generator updates this run plans (what the cosine LR schedule and the Gumbel anneal
        spread over): max_g_updates when set, else what the trainer's limits allow: the adversarial epochs'
        batches, and Lightning's max_steps, which counts optimizer steps (one per pretraining batch, 1 + d_steps
        per adversarial batch). 10,000 when neither is known (no trainer, or unbounded epochs with pretraining)."""
        hp = self.hparams
        if hp.max_g_updates:
            return int(hp.max_g_updates)
        if self._trainer is None:
            return 10_000
        trainer = self.trainer
        max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
        limits, pretrain_steps = [], 0 if hp.pretrain_epochs == 0 else None
        if max_epochs and max_epochs > 0:
            estimate = trainer.estimated_stepping_batches  # also loads the training data when not yet loaded
            per_epoch = trainer.num_training_batches
            if math.isfinite(estimate) and math.isfinite(per_epoch):
                limits.append(per_epoch * max(0, max_epochs - hp.pretrain_epochs))
                pretrain_steps = per_epoch * min(hp.pretrain_epochs, max_epochs)
        if max_steps is not None and max_steps >= 0 and pretrain_steps is not None:
            limits.append(max(0, max_steps - pretrain_steps) // (1 + hp.d_steps))
        return max(1, int(min(limits))) if limits else 10_000

    def _step(self, opt, loss: torch.Tensor, params) -> torch.Tensor:
        """Backward, measure the gradient norm (before clipping), clip, step (D's optimizer: not under
        freeze_discriminator). -> the norm."""
        opt.zero_grad()
        self.manual_backward(loss)
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) if grads else loss.new_zeros(())
        is_d = opt is self.optimizers()[1]
        if is_d and self.hparams.freeze_discriminator:
            return norm.detach()  # the null GAN: D's gradient is measured, never applied
        clip = self.hparams.gradient_clip if is_d else self.generator_optimizer_settings()["gradient_clip"]
        if clip > 0:
            self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
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
                if not self.hparams.freeze_discriminator:
                    d_sched.step()

        with self.toggled_optimizer(g_opt):
            if self.hparams.estimator == "gumbel":
                g_loss, extra = self._gumbel_generator_loss(batch, real, real_pad, L)
            else:
                g_loss, extra = self._reinforce_generator_loss(batch, real, real_pad, L)
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
    def _fake_for_discriminator(self, batch: Batch, L: int,
                                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fakes in the form G's update will show them: relaxed one-hots (gumbel) or sampled ids (reinforce).
        ``generator``: draw z and the Gumbel or sampling noise from it (fixed-noise measurements) instead of
        the training RNG."""
        min_len, _ = self.generation_lengths()
        z = self.latent(len(batch), generator)
        if self.hparams.estimator == "gumbel":
            out = gumbel_unroll(self.generator, batch.src, batch.src_pad_mask, length=L, min_length=min_len,
                                temperature=self.temperature, banned_ids=self.banned_ids, z=z,
                                straight_through=self.hparams.straight_through, generator=generator)
            return out.onehots, out.pad_mask  # (B, L, V), (B, L)
        tokens, pad = self._sample_tokens(batch, L, z, generator)
        return tokens, pad

    def _discriminator_loss(self, batch, real, real_pad, fake, fake_pad):
        D = self.discriminator
        # real and fake are scored in separate calls so that the minibatch-std feature sees one population
        d_real = D(real, batch.src, batch.src_pad_mask, real_pad)  # (B,)
        d_fake = D(fake, batch.src, batch.src_pad_mask, fake_pad)  # (B,)
        loss = discriminator_loss(self.hparams.loss, d_real, d_fake)
        if self.hparams.loss == "wgan-gp":
            # the penalty is taken with respect to what D reads, the (soft) one-hots (B, L, V), through D's
            # embedding, so the embedding matrix is held to the Lipschitz constraint too
            either = real_pad & fake_pad  # interpolants are real wherever either end is
            penalty = gradient_penalty(lambda x: D(x, batch.src, batch.src_pad_mask, either),
                                       penalty_onehots(real, real_pad, D.vocab_size),
                                       penalty_onehots(fake, fake_pad, D.vocab_size))
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
    def _sample_tokens(self, batch: Batch, L: int, z,
                       generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample at temperature 1 with the shared sampler. -> ids (B, L), pad_mask (B, L)"""
        min_len, _ = self.generation_lengths()
        out = generate(self.generator, batch.src, batch.src_pad_mask, max_new_tokens=L, min_new_tokens=min_len,
                       z=z, banned_ids=self.banned_ids, generator=generator)
        tokens = fit_length(out.tokens, L)  # the sampler stops early when every row has ended
        return tokens, after_end_mask(tokens) | tokens.eq(PAD_ID)

    @torch.no_grad()
    def sequence_returns(self, batch: Batch, tokens: torch.Tensor, pad: torch.Tensor, z, real: torch.Tensor,
                         real_pad: torch.Tensor) -> torch.Tensor:
        """(B, L) the return of every sampled token (see the class docstring for the reward definitions).
        real, real_pad (B, L): the batch's real rows, which relativistic rewards are measured against."""
        D, hp = self.discriminator, self.hparams
        src, src_mask = batch.src, batch.src_pad_mask
        relativistic = hp.loss in RELATIVISTIC_REWARD_LOSSES
        per_token = D.per_token and hp.rollouts == 0
        reference = None
        if relativistic:
            score_real = D.token_logits if per_token else D
            real_logits = score_real(real, src, src_mask, real_pad)  # (B, L) per token, else (B,)
            reference = real_logit_reference(real_logits, real_pad)  # (L,) per token, else a scalar
        if hp.rollouts > 0:
            min_len, _ = self.generation_lengths()
            return rollout_values(
                self.generator, src, src_mask, tokens, num_rollouts=hp.rollouts, min_length=min_len,
                banned_ids=self.banned_ids, z=z,
                score_fn=lambda ids, p, s, sm: rewards_for_loss(hp.loss, D(ids, s, sm, p), reference),
            )
        if per_token:
            rewards = rewards_for_loss(hp.loss, D.token_logits(tokens, src, src_mask, pad), reference)
            rewards = rewards.masked_fill(pad, 0.0)
        else:
            rewards = terminal_rewards(rewards_for_loss(hp.loss, D(tokens, src, src_mask, pad), reference), pad)
        return discounted_returns(rewards, pad, hp.discount)

    def _reinforce_generator_loss(self, batch, real, real_pad, L):
        z = self.latent(len(batch))
        min_len, _ = self.generation_lengths()
        # drawn with gradients: the log-probs in the loss are those of the distributions the tokens came from
        policy = sample_with_log_probs(self.generator, batch.src, batch.src_pad_mask, length=L, min_length=min_len,
                                       banned_ids=self.banned_ids, z=z)
        tokens, pad = policy.tokens, policy.pad_mask  # (B, L)
        with torch.no_grad():
            returns = self.sequence_returns(batch, tokens, pad, z, real, real_pad)  # (B, L)
            # the baseline before this batch enters it: it never depends on the samples it is subtracted from
            advantages = (returns - self.reinforce_baseline[:L]).masked_fill(pad, 0.0)  # (B, L)
            baseline, weight = update_sample_baseline(self.reinforce_baseline, self.baseline_weight, returns, pad,
                                                      self.hparams.baseline_horizon_samples)
            self.reinforce_baseline.copy_(baseline)
            self.baseline_weight.copy_(weight)
        valid = (~pad).float()
        mean_return = (returns * valid).sum() / valid.sum().clamp(min=1.0)
        return reinforce_loss(policy.log_probs, advantages, pad), {"train/mean_return": mean_return}

    # ---- checkpoints --------------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        if "baseline_initialized" in state:  # a checkpoint from before the baseline's weight was kept
            started = bool(state.pop("baseline_initialized"))
            state.setdefault("baseline_weight", torch.full_like(state["reinforce_baseline"], float(started)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # the counters live in the state_dict (buffers); this copy is for people reading a checkpoint
        checkpoint["text_gan"] = {"g_updates": self.g_updates, "mle_updates": self.mle_updates,
                                  "gumbel_temperature": self.temperature}
