"""The GAN family: a generator and a discriminator, two losses, two optimizers, an adversarial game."""

from __future__ import annotations

import math
from typing import Optional

import torch

from modules.data.batch import Batch
from modules.errors import ConfigError
from modules.models.base import GeneratorModule
from modules.models.configs import (DiscriminatorConfig, EvaluationConfig, GameConfig, GeneratorConfig, as_config,
                                    config_dict)
from modules.models.gan_estimators import (ReinforceEstimator, build_estimator, gumbel_temperature, swap_rows,
                                           real_for_discriminator)
from modules.models.gan_losses import penalised_discriminator_loss, update_log
from modules.models.noise import UpdateNoise
from modules.models.transformer_seq2seq import generator_optimizer, warmup_schedule
from modules.nets.discriminators import build_discriminator
from modules.nets.lstm_generator import LSTMGenerator
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig


class TextGAN(GeneratorModule):
    """Text GAN: generator G (the encoder-decoder Transformer with a latent z, or an LSTM) against a
    discriminator D (CNN, Transformer encoder, or per-token LSTM), trained with Lightning's manual optimization.

    Settings come in four sections (``modules.models.configs``, YAML ``model.init_args.<section>``): ``generator``
    and ``discriminator`` (net and optimiser each), ``game`` (loss, estimator, schedules, budgets), ``evaluation``
    (every family's). ``configs.FLAT_TO_NESTED`` maps each former flat argument (``g_lr``, ...) to its place.

    One training batch, top down (``training_step``): ``game.d_steps`` D updates, each against fresh fakes made
    by the estimator and the batch's real sequences; then one G update on the estimator's generator loss
    (``self.estimator.generator_loss``, chosen once from ``game.estimator``: ``GumbelEstimator`` or
    ``ReinforceEstimator`` in ``gan_estimators``, which document how each crosses the discrete tokens). Each player
    update first draws its noise (``draw_noise``: z, token noise, D's dropout masks), then computes its loss from it
    (``discriminator_update_loss``, ``generator_update_loss``; shared with vectorised seeds and the noise scale).
    Epochs [0, pretrain_epochs) are MLE pretraining of G instead (the MLE family's loss; D idle).

    Budgets are in generator updates: ``g_updates`` counts adversarial G updates (samples seen = g_updates x batch
    size), ``mle_updates`` pretraining updates (checkpointed buffers); ``game.max_g_updates`` stops training.
    Gumbel beta (RelGAN's inverse temperature, ``temperature``) goes from 1 to ``game.max_temperature`` over the
    first ``anneal_fraction`` of the planned adversarial updates (``anneal_horizon``), the same at every batch size
    and budget; a function of ``g_updates`` and the settings, so a resumed run continues the schedule.

    Real and fake sequences reach D in one layout (``gan_estimators.real_for_discriminator``). Optimizers: G's and
    one for pretraining (``game.pretrain_lr``) follow the MLE family's rule (``generator_optimizer``); D has its own
    Adam; LambdaLR schedulers (``lr_schedule``, ``warmup_steps`` in their own updates) stepped by hand; clipping by
    norm via ``self.clip_gradients``. Null GAN (``discriminator.frozen``): D's loss, accuracy and gradient norm are
    computed and logged as usual (same RNG stream and compute) but its optimizer and scheduler never step.

    Logged each step: ``train/g_loss``, ``train/d_loss``, ``train/d_acc_real``, ``train/d_acc_fake``
    (``gan_losses.discriminator_accuracy``), ``train/g_grad_norm``, ``train/d_grad_norm`` (before clipping),
    ``train/g_updates`` and the estimator's extras (``train/gumbel_temperature`` or ``train/mean_return``);
    pretraining: ``train/mle_loss``, ``train/g_grad_norm``, ``train/mle_updates``. With z_dim > 0 every NLL is a
    marginal over ``evaluation.nll_z_samples`` draws of z (``GeneratorModule``).

    DDP: each step backpropagates through only one of G and D: ``strategy="ddp_find_unused_parameters_true"``.
    """

    family = "gan"

    def __init__(
        self,
        vocab_size: int,
        generator: GeneratorConfig = GeneratorConfig(),
        discriminator: DiscriminatorConfig = DiscriminatorConfig(),
        game: GameConfig = GameConfig(),
        evaluation: EvaluationConfig = EvaluationConfig(),
    ):
        g = as_config(GeneratorConfig, generator, "generator")
        d = as_config(DiscriminatorConfig, discriminator, "discriminator")
        game = as_config(GameConfig, game, "game")
        super().__init__(vocab_size, evaluation)
        self.g_config, self.d_config, self.game = g, d, game
        # plain dicts in the checkpoint and the loggers; the constructor takes them back
        self.save_hyperparameters({"vocab_size": vocab_size, "generator": config_dict(g),
                                   "discriminator": config_dict(d), "game": config_dict(game),
                                   "evaluation": config_dict(self.evaluation)})
        self.automatic_optimization = False

        if g.arch == "transformer":
            self.generator = EncoderDecoderTransformer(TransformerConfig(
                vocab_size=vocab_size, d_model=g.d_model, n_heads=g.n_heads, n_encoder_layers=g.n_encoder_layers,
                n_decoder_layers=g.n_decoder_layers, d_ff=g.d_ff, dropout=g.dropout, max_len=g.max_len,
                positional=g.positional, tie_embeddings=g.tie_embeddings, z_dim=g.z_dim,
            ))
        else:
            self.generator = LSTMGenerator(vocab_size, g.emb_dim, g.hidden_dim, g.num_layers, z_dim=g.z_dim)
        self.discriminator = build_discriminator(
            d.arch, vocab_size, emb_dim=d.emb_dim, hidden_dim=d.hidden_dim, filter_sizes=d.filter_sizes,
            num_filters=d.num_filters, n_heads=d.n_heads, n_layers=d.n_layers, dropout=d.dropout,
            max_len=g.max_len, minibatch_std=d.minibatch_std,
        )
        self.estimator = build_estimator(game, g.max_len)  # chosen once: its G loss is all training_step calls
        self.register_buffer("g_update_count", torch.zeros((), dtype=torch.long))  # buffers: in every checkpoint
        self.register_buffer("mle_update_count", torch.zeros((), dtype=torch.long))

    def on_fit_start(self) -> None:
        if (L := self.generation_lengths()[1]) > self.g_config.max_len:
            raise ConfigError(f"sequences of up to {L} tokens are generated but model.generator.max_len="
                             f"{self.g_config.max_len}; raise model.generator.max_len")

    # ---- training: D steps, then the estimator's G loss ----------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if self.in_pretraining:
            self._pretrain_step(batch)
            return
        max_g = self.game.max_g_updates
        if max_g is not None and self.g_updates >= max_g:
            self.trainer.should_stop = True
            return
        g_opt, d_opt, _ = self.optimizers()
        g_sched, d_sched = self.lr_schedulers()

        for _ in range(self.game.d_steps):
            with self.toggled_optimizer(d_opt):
                d_loss, d_real, d_fake = self.discriminator_update_loss(batch, self.draw_noise(len(batch)))
                d_norm = self._step(d_opt, d_loss, self.discriminator.parameters())
                if not self.d_config.frozen:
                    d_sched.step()

        with self.toggled_optimizer(g_opt):
            g_loss, extras = self.generator_update_loss(batch, self.draw_noise(len(batch)))
            g_norm = self._step(g_opt, g_loss, self.generator.parameters())
            g_sched.step()
        self.g_update_count += 1
        self.log_dict(update_log(self.game.loss, g_loss, d_loss, d_real, d_fake, g_norm, d_norm, self.g_updates,
                                 extras), on_step=True, on_epoch=False, batch_size=len(batch))
        self.log_dict({"g_loss": g_loss.detach(), "d_loss": d_loss.detach()}, prog_bar=True, logger=False,
                      batch_size=len(batch))

    def discriminator_loss(self, batch, real, real_pad, fake, fake_pad, dropout=None):
        """D's loss on real (B, L) ids and fakes (ids or (B, L, V) one-hots) -> (loss, d_real, d_fake detached).
        ``dropout``: D's two dropout masks (``UpdateNoise.d_dropout``), or None (D draws its own)."""
        return penalised_discriminator_loss(self.game.loss, self.discriminator, batch.src, batch.src_pad_mask,
                                            real, real_pad, fake, fake_pad, self.game.gp_weight, dropout)

    def draw_noise(self, batch_size: int, generator: Optional[torch.Generator] = None) -> UpdateNoise:
        """One player update's random numbers (``modules.models.noise``); from ``generator`` or the training RNG."""
        return self.estimator.draw(self, batch_size, self.generation_lengths()[1], generator)

    def discriminator_update_loss(self, batch: Batch, noise: UpdateNoise, fakes=None):
        """D's loss of one update -> (loss, d_real, d_fake detached), on fakes without gradient to G: ``fakes``
        (relaxed one-hots or ids, pad mask) that G made from this update's noise, else made here."""
        if fakes is None:
            with torch.no_grad():
                fakes = self.estimator.fakes(self, batch, self.generation_lengths()[1], noise=noise)
        fake, fake_pad = fakes[0].detach(), fakes[1]
        real, real_pad = real_for_discriminator(batch.tgt, self.generation_lengths()[1])  # (B, L)
        if noise.swap is not None:  # shuffled labels: D learns nothing about the population
            real, real_pad, fake, fake_pad = swap_rows(real, real_pad, fake, fake_pad, noise.swap,
                                                       self.hparams.vocab_size)
        return self.discriminator_loss(batch, real, real_pad, fake, fake_pad, noise.d_dropout)

    def generator_update_loss(self, batch: Batch, noise: UpdateNoise, fakes=None) -> tuple[torch.Tensor, dict]:
        """G's loss of one update (the estimator's) -> (loss, logged extras); ``fakes`` as D's, with gradients."""
        real, real_pad = real_for_discriminator(batch.tgt, self.generation_lengths()[1])  # (B, L)
        return self.estimator.generator_loss(self, batch, real, real_pad, real.size(1), noise, fakes)

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

    def _step(self, opt, loss: torch.Tensor, params) -> torch.Tensor:
        """Backward, measure the gradient norm (before clipping), clip, step (D's optimizer: not when frozen).
        -> the norm."""
        opt.zero_grad()
        self.manual_backward(loss)
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) if grads else loss.new_zeros(())
        is_d = opt is self.optimizers()[1]
        if is_d and self.d_config.frozen:
            return norm.detach()  # the null GAN: D's gradient is measured, never applied
        clip = self.d_config.gradient_clip if is_d else self.generator_optimizer_settings()["gradient_clip"]
        if clip > 0:
            self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt.step()
        return norm.detach()

    # ---- counters and schedules ---------------------------------------------------------------------------
    @property
    def g_updates(self) -> int:
        """Adversarial generator updates so far (the budget unit of the GAN family)."""
        return int(self.g_update_count)

    @property
    def mle_updates(self) -> int:  # MLE pretraining updates so far
        return int(self.mle_update_count)

    @property
    def anneal_horizon(self) -> int:
        """The first generator update (from 0) at which beta reaches max_temperature: `anneal_steps` when set,
        else the last update of the first `anneal_fraction` of the planned adversarial updates."""
        if self.game.anneal_steps is not None:
            return int(self.game.anneal_steps)
        return max(1, round(self.game.anneal_fraction * self._adversarial_updates_planned())) - 1

    def gumbel_beta(self, update: int) -> float:
        """The Gumbel-softmax beta of generator update number `update` (from 0): a pure function of the count
        and the settings, so exact resume holds."""
        return gumbel_temperature(update, self.game.max_temperature, self.anneal_horizon,
                                  self.game.temperature_schedule)

    @property
    def temperature(self) -> float:
        """The Gumbel-softmax beta for the next generator update."""
        return self.gumbel_beta(self.g_updates)

    @property
    def final_beta(self) -> Optional[float]:
        """The beta of the last generator update made (None: not the gumbel estimator, or no update yet)."""
        if self.game.estimator != "gumbel" or self.g_updates == 0:
            return None
        return self.gumbel_beta(self.g_updates - 1)

    @property
    def in_pretraining(self) -> bool:
        return self.current_epoch < self.game.pretrain_epochs

    @property
    def has_latent(self) -> bool:
        return self.g_config.z_dim > 0

    def latent(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """z ~ N(0, I) of shape (batch_size, z_dim), drawn from `generator` when given; None when z_dim = 0."""
        if self.g_config.z_dim == 0:
            return None
        device = generator.device if generator is not None else self.device
        return torch.randn(batch_size, self.g_config.z_dim, generator=generator, device=device)

    # ---- optimizers ---------------------------------------------------------------------------------------
    def generator_optimizer_settings(self) -> dict:
        """The generator's adversarial optimiser as `configure_optimizers` builds it (recorded in every results
        row; the pretraining optimizer is the same with `game.pretrain_lr`)."""
        g, d = self.g_config, self.d_config
        betas = g.betas if g.betas is not None else d.betas
        clip = g.gradient_clip if g.gradient_clip is not None else d.gradient_clip
        return {"class": g.optimizer, "lr": float(g.lr), "betas": [float(b) for b in betas],
                "weight_decay": float(g.weight_decay), "gradient_clip": float(clip)}

    def configure_optimizers(self):
        g, game = self.generator_optimizer_settings(), self.game
        g_opt = generator_optimizer(g["class"], self.generator.named_parameters(), g["lr"], g["betas"],
                                    g["weight_decay"])
        d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=self.d_config.lr,
                                 betas=tuple(self.d_config.betas))
        mle_opt = generator_optimizer(g["class"], self.generator.named_parameters(), game.pretrain_lr, g["betas"],
                                      g["weight_decay"])
        total = self._adversarial_updates_planned()  # G updates; D makes d_steps per G update

        lr_at = lambda n: warmup_schedule(game.warmup_steps, n, game.lr_schedule)  # noqa: E731
        g_sched, d_sched = (torch.optim.lr_scheduler.LambdaLR(o, lr_at(n)) for o, n in ((g_opt, total),
                                                                                       (d_opt, total * game.d_steps)))
        # no "interval": under manual optimization Lightning only stores these; training_step steps them
        return [g_opt, d_opt, mle_opt], [g_sched, d_sched]

    def _adversarial_updates_planned(self) -> int:
        """The adversarial G updates this run plans (the cosine schedule and Gumbel anneal spread over them):
        max_g_updates when set, else the trainer's limits (the adversarial epochs' batches; max_steps, which counts
        one step per pretraining batch, 1 + d_steps per adversarial one); 10,000 when neither is known."""
        game = self.game
        if game.max_g_updates:
            return int(game.max_g_updates)
        if self._trainer is None:
            return 10_000
        trainer = self.trainer
        max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
        limits, pretrain_steps = [], 0 if game.pretrain_epochs == 0 else None
        if max_epochs and max_epochs > 0:
            estimate = trainer.estimated_stepping_batches  # also loads the training data when not yet loaded
            per_epoch = trainer.num_training_batches
            if math.isfinite(estimate) and math.isfinite(per_epoch):
                limits.append(per_epoch * max(0, max_epochs - game.pretrain_epochs))
                pretrain_steps = per_epoch * min(game.pretrain_epochs, max_epochs)
        if max_steps is not None and max_steps >= 0 and pretrain_steps is not None:
            limits.append(max(0, max_steps - pretrain_steps) // (1 + game.d_steps))
        return max(1, int(min(limits))) if limits else 10_000

    # ---- checkpoints --------------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        ReinforceEstimator.upgrade_old_state(checkpoint.get("state_dict", {}), "estimator.",
                                             keep=isinstance(self.estimator, ReinforceEstimator))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # (the counters are buffers; this copy is for people reading it)
        checkpoint["text_gan"] = {"g_updates": self.g_updates, "mle_updates": self.mle_updates,
                                  "gumbel_temperature": self.temperature}
