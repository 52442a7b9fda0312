"""The MLE family: an encoder-decoder Transformer trained cooperatively end to end with one loss."""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from modules.data.batch import Batch
from modules.errors import ConfigError
from modules.models.base import GeneratorModule
from modules.models.configs import EvaluationConfig, config_dict
from modules.models.noise import UpdateNoise
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig


def warmup_schedule(warmup_steps: int, total_steps: int, schedule: str):
    """Multiplier of the base learning rate at optimizer step ``step``: linear warmup, then constant or cosine."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def generator_optimizer(kind: str, named_parameters, lr: float, betas, weight_decay: float,
                        stacked: int = 0) -> torch.optim.Optimizer:
    """The generator's optimizer, one rule for every family: Adam (L2 penalty in the gradient) or AdamW (decoupled
    decay); weight decay applies to matrices only (>= 2 dims), never to biases, norms' gains or other vectors.
    Without weight decay all parameters form one group (the layout of checkpoints written before this rule).
    ``stacked``: leading dimensions that stack copies of each parameter (vectorised seeds: 1), not counted as the
    parameter's own."""
    if kind not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    named = list(named_parameters)
    if weight_decay > 0:
        groups = [{"params": [p for _, p in named if p.dim() - stacked >= 2], "weight_decay": weight_decay},
                  {"params": [p for _, p in named if p.dim() - stacked < 2], "weight_decay": 0.0}]
    else:
        groups = [{"params": [p for _, p in named], "weight_decay": 0.0}]
    return OPTIMIZERS[kind](groups, lr=lr, betas=tuple(betas))


def check_mle_settings(lr: float, label_smoothing: float, warmup_steps: int, optimizer: str, weight_decay: float,
                       gradient_clip: float) -> None:
    """The MLE families' training settings (TransformerSeq2Seq, RNNSeq2Seq), each refused by name."""
    if lr <= 0:
        raise ConfigError(f"model.lr must be > 0, got {lr}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"model.label_smoothing must lie in [0, 1), got {label_smoothing}")
    if warmup_steps < 0:
        raise ConfigError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"model.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if weight_decay < 0 or gradient_clip < 0:
        raise ConfigError(f"model.weight_decay and model.gradient_clip must be >= 0, got {weight_decay}, "
                         f"{gradient_clip}")


class TransformerSeq2Seq(GeneratorModule):
    """Encoder-decoder Transformer, one loss: token cross-entropy with teacher forcing (padding ignored).

    Logged: ``train/loss`` (= ``train/mle_loss``, mean NLL per scored target token under the distribution the model
    samples from, see ``mle_loss``; label smoothing included when set), ``train/lr``, and the shared evaluation
    metrics of ``GeneratorModule``.

    Optimiser: ``optimizer`` (adamw or adam) with ``lr``, ``betas`` and ``weight_decay`` on matrices only
    (``generator_optimizer``, the rule the GAN generator shares), gradients clipped by norm at ``gradient_clip``.

    ``z_dim > 0`` (the ``transformer-z`` family): the net reads a latent z ~ N(0, I) exactly as the GAN generator
    does (one extra memory slot), drawn afresh for every training row, for evaluation and for sampling. MLE gives
    z nothing to explain (the data do not depend on it), so this is the negative control for the z probes of Q3:
    whatever dependence on z it shows is what an objective that never rewards using z leaves. Its NLLs are then
    marginal over ``evaluation.nll_z_samples`` z draws, exactly as a GAN's with z (``GeneratorModule.z_draw_log_probs``).
    """

    family = "transformer"

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        n_heads: int = 4,
        n_encoder_layers: int = 2,
        n_decoder_layers: int = 2,
        d_ff: int = 512,
        dropout: float = 0.1,
        max_len: int = 256,
        positional: Literal["sinusoidal", "learned"] = "sinusoidal",
        tie_embeddings: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 100,
        schedule: Literal["constant", "cosine"] = "cosine",
        label_smoothing: float = 0.0,
        gradient_clip: float = 1.0,
        optimizer: Literal["adam", "adamw"] = "adamw",
        z_dim: int = 0,
        evaluation: EvaluationConfig = EvaluationConfig(),
    ):
        super().__init__(vocab_size, evaluation)
        check_mle_settings(lr, label_smoothing, warmup_steps, optimizer, weight_decay, gradient_clip)
        if z_dim < 0:
            raise ConfigError(f"model.z_dim must be >= 0 (0: no latent input), got {z_dim}")
        self.save_hyperparameters(ignore=["evaluation"])
        self.save_hyperparameters({"evaluation": config_dict(self.evaluation)})  # a plain dict, as TextGAN's
        self.generator = EncoderDecoderTransformer(
            TransformerConfig(
                vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, n_encoder_layers=n_encoder_layers,
                n_decoder_layers=n_decoder_layers, d_ff=d_ff, dropout=dropout, max_len=max_len,
                positional=positional, tie_embeddings=tie_embeddings, z_dim=z_dim,
            )
        )

    @property
    def has_latent(self) -> bool:
        return self.hparams.z_dim > 0

    def latent(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """z ~ N(0, I) of shape (batch_size, z_dim), drawn from ``generator`` when given (as ``TextGAN.latent``);
        None when z_dim = 0."""
        if self.hparams.z_dim == 0:
            return None
        device = generator.device if generator is not None else self.device
        return torch.randn(batch_size, self.hparams.z_dim, generator=generator, device=device)

    def draw_noise(self, batch_size: int, generator: Optional[torch.Generator] = None) -> UpdateNoise:
        """The random numbers of one update (``modules.models.noise``): z for every row (``transformer-z``), or
        nothing. (Dropout, when set, is drawn inside the net.)"""
        return UpdateNoise(z=self.latent(batch_size, generator))

    def training_loss(self, batch: Batch, noise: UpdateNoise) -> torch.Tensor:
        """The one loss of an update: mean NLL per scored target token, teacher forced (``teacher_forced_loss``)."""
        logits = self.generator(batch.src, batch.src_pad_mask, batch.tgt_in, z=noise.z)  # (B, T-1, V)
        return self.teacher_forced_loss(logits, batch, self.hparams.label_smoothing)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch, self.draw_noise(len(batch)))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/mle_loss", loss, batch_size=len(batch))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.gradient_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.hparams.gradient_clip)
            self.log("train/grad_norm", norm, batch_size=1)

    def generator_optimizer_settings(self) -> dict:
        """The generator's optimiser as ``configure_optimizers`` builds it (recorded in every results row)."""
        hp = self.hparams
        return {"class": hp.optimizer, "lr": float(hp.lr), "betas": [float(b) for b in hp.betas],
                "weight_decay": float(hp.weight_decay), "gradient_clip": float(hp.gradient_clip)}

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = generator_optimizer(hp.optimizer, self.generator.named_parameters(), hp.lr, hp.betas,
                                        hp.weight_decay)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        total = int(total) if math.isfinite(total) else 10_000
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_schedule(self.hparams.warmup_steps, total, self.hparams.schedule)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
