"""Typed settings of the model families, nested in a config as ``model.init_args.<section>.<setting>``.

``EvaluationConfig`` is shared by every family (``GeneratorModule``); ``TextGAN`` adds ``GeneratorConfig``,
``DiscriminatorConfig`` and ``GameConfig``. Each section accepts an instance or a plain dict (what a checkpoint's
hyperparameters and the experiment presets hold); a dict with a key the section lacks is an error naming it.

Where TextGAN's former flat arguments went (``FLAT_TO_NESTED``, old name -> section.setting):

=======================  ==========================  =======================  ==========================
old flat argument        nested place                old flat argument        nested place
=======================  ==========================  =======================  ==========================
generator                generator.arch              discriminator            discriminator.arch
z_dim                    generator.z_dim             d_emb_dim                discriminator.emb_dim
g_emb_dim                generator.emb_dim           d_hidden_dim             discriminator.hidden_dim
g_hidden_dim             generator.hidden_dim        d_filter_sizes           discriminator.filter_sizes
g_num_layers             generator.num_layers        d_num_filters            discriminator.num_filters
d_model, n_heads,        generator.<same name>       d_heads                  discriminator.n_heads
n_encoder_layers,                                    d_layers                 discriminator.n_layers
n_decoder_layers, d_ff,                              d_dropout                discriminator.dropout
max_len, positional,                                 minibatch_std            discriminator.minibatch_std
tie_embeddings                                       d_lr                     discriminator.lr
g_dropout                generator.dropout           betas                    discriminator.betas
g_lr                     generator.lr                gradient_clip            discriminator.gradient_clip
g_optimizer              generator.optimizer         freeze_discriminator     discriminator.frozen
g_betas                  generator.betas             num_eval_samples, ...    evaluation.<same name>
g_weight_decay           generator.weight_decay      (eval_temperature, eval_batch_size, eval_seed,
g_gradient_clip          generator.gradient_clip      bleu_max_n, num_logged_samples, nll_z_samples)
everything else          game.<same name>            (loss, gp_weight, estimator, d_steps, ...)
=======================  ==========================  =======================  ==========================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from modules.errors import ConfigError

OPTIMIZER_NAMES = ("adam", "adamw")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class EvaluationConfig:
    """Evaluation, the same for every family (``model.init_args.evaluation``).

    num_eval_samples: samples generated at each validation/test epoch end for the sample metrics.
    eval_temperature: sampling temperature for those samples (1.0: the model's own distribution).
    eval_batch_size: generation batch size.
    eval_seed: seeds the evaluation sampler (every epoch and family draw the same noise) and the z draws of the
        NLLs (batch i: eval_seed + i), so evaluation never touches the training RNG.
    bleu_max_n: BLEU/Self-BLEU orders 2..bleu_max_n.
    num_logged_samples: sample texts written to the samples table per evaluation.
    nll_z_samples: K, the z draws every NLL of a model with a latent z marginalises over (no effect without z).
    """

    num_eval_samples: int = 200
    eval_temperature: float = 1.0
    eval_batch_size: int = 256
    eval_seed: int = 1234
    bleu_max_n: int = 5
    num_logged_samples: int = 20
    nll_z_samples: int = 64

    def __post_init__(self):
        _check(self.num_eval_samples >= 0,
               f"model.evaluation.num_eval_samples must be >= 0, got {self.num_eval_samples}")
        _check(self.eval_temperature > 0, f"model.evaluation.eval_temperature must be > 0, got {self.eval_temperature}")
        _check(self.nll_z_samples >= 1,
               f"model.evaluation.nll_z_samples must be >= 1 (z draws per NLL), got {self.nll_z_samples}")


@dataclass
class GeneratorConfig:
    """The GAN generator and its optimiser (``model.init_args.generator``).

    arch: "lstm" (emb_dim, hidden_dim, num_layers) or "transformer" (d_model, n_heads, n_encoder_layers,
        n_decoder_layers, d_ff, dropout, positional, tie_embeddings); both with a latent z of size z_dim (0 =
        none). max_len bounds sequence positions (generator, discriminator, REINFORCE baseline).
    optimizer (adam / adamw), lr, betas (None: discriminator.betas), weight_decay (matrices only), gradient_clip
        (by norm; None: discriminator.gradient_clip): the adversarial optimiser, the MLE family's rule
        (``generator_optimizer``).
    """

    arch: Literal["transformer", "lstm"] = "lstm"
    z_dim: int = 0
    emb_dim: int = 32
    hidden_dim: int = 32
    num_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    n_encoder_layers: int = 1
    n_decoder_layers: int = 2
    d_ff: int = 512
    dropout: float = 0.1
    max_len: int = 256
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    tie_embeddings: bool = True
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    betas: Optional[tuple[float, float]] = None
    weight_decay: float = 0.0
    gradient_clip: Optional[float] = None

    def __post_init__(self):
        _check(self.arch in ("transformer", "lstm"),
               f"model.generator.arch must be 'transformer' or 'lstm', got {self.arch!r}")
        _check(self.lr > 0, f"model.generator.lr must be > 0, got {self.lr}")
        _check(self.optimizer in OPTIMIZER_NAMES,
               f"model.generator.optimizer must be one of {', '.join(OPTIMIZER_NAMES)}, got {self.optimizer!r}")
        _check(self.weight_decay >= 0, f"model.generator.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.gradient_clip is None or self.gradient_clip >= 0,
               f"model.generator.gradient_clip must be >= 0 or None (= discriminator.gradient_clip), "
               f"got {self.gradient_clip}")


@dataclass
class DiscriminatorConfig:
    """The discriminator and its Adam optimiser (``model.init_args.discriminator``).

    arch: "cnn" (filter_sizes x num_filters, highway), "transformer" (n_layers blocks, n_heads, feed-forward
        2 hidden_dim) or "lstm" (n_layers, hidden_dim; per-token outputs); all embed with emb_dim, drop out
        dropout, and add the minibatch-std feature if minibatch_std.
    lr, betas, gradient_clip (by norm, 0 = none): D's Adam. frozen: D never updated (its random initial function
        stays the opponent). labels: "true" (D learns real from fake) or "shuffled" (the null GAN of Q2: in each of
        D's updates every row's real and fake sequence swap places with probability 1/2, so D trains as often and
        moves as much, but on labels that carry no information about the population).
    """

    arch: Literal["cnn", "transformer", "lstm"] = "cnn"
    emb_dim: int = 64
    hidden_dim: int = 64
    filter_sizes: tuple[int, ...] = (2, 3, 4, 5)
    num_filters: int = 64
    n_heads: int = 4
    n_layers: int = 1
    dropout: float = 0.25
    minibatch_std: bool = False
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    gradient_clip: float = 5.0
    frozen: bool = False
    labels: Literal["true", "shuffled"] = "true"

    def __post_init__(self):
        _check(self.lr > 0, f"model.discriminator.lr must be > 0, got {self.lr}")
        _check(self.labels in ("true", "shuffled"),
               f"model.discriminator.labels must be 'true' or 'shuffled', got {self.labels!r}")
        _check(self.gradient_clip >= 0, f"model.discriminator.gradient_clip must be >= 0, got {self.gradient_clip}")


@dataclass
class GameConfig:
    """The adversarial game (``model.init_args.game``).

    loss: "standard" (non-saturating), "rsgan", "hinge" or "wgan-gp" (gp_weight).
    estimator: "gumbel" (max_temperature, temperature_schedule, anneal_fraction, anneal_steps, straight_through)
        or "reinforce" (discount, baseline_horizon_samples, rollouts); see ``modules.models.gan_estimators``.
    d_steps: D updates per G update. lr_schedule, warmup_steps: both players' LambdaLR schedules.
    pretrain_epochs, pretrain_lr: MLE pretraining of G. max_g_updates: stop after that many G updates.
    """

    loss: Literal["standard", "rsgan", "hinge", "wgan-gp"] = "rsgan"
    gp_weight: float = 10.0
    estimator: Literal["gumbel", "reinforce"] = "gumbel"
    max_temperature: float = 100.0
    temperature_schedule: Literal["exp", "linear", "constant"] = "exp"
    anneal_steps: Optional[int] = None
    anneal_fraction: float = 1.0
    straight_through: bool = False
    discount: float = 0.95
    baseline_horizon_samples: float = 160.0
    rollouts: int = 0
    d_steps: int = 1
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    pretrain_epochs: int = 0
    pretrain_lr: float = 1e-2
    max_g_updates: Optional[int] = None

    def __post_init__(self):
        _check(self.estimator in ("gumbel", "reinforce"),
               f"model.game.estimator must be 'gumbel' or 'reinforce', got {self.estimator!r}")
        _check(self.d_steps >= 1, f"model.game.d_steps must be >= 1, got {self.d_steps}")
        _check(self.pretrain_lr > 0, f"model.game.pretrain_lr must be > 0, got {self.pretrain_lr}")
        for name in ("pretrain_epochs", "rollouts", "warmup_steps"):
            _check(getattr(self, name) >= 0, f"model.game.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.anneal_steps is None or self.anneal_steps >= 0,
               f"model.game.anneal_steps must be >= 0 or None (anneal over anneal_fraction of the run), "
               f"got {self.anneal_steps}")
        _check(0.0 < self.anneal_fraction <= 1.0,
               f"model.game.anneal_fraction must lie in (0, 1], got {self.anneal_fraction}")
        _check(self.max_temperature >= 1.0,
               f"model.game.max_temperature must be >= 1 (beta grows from 1), got {self.max_temperature}")
        _check(0.0 <= self.discount <= 1.0, f"model.game.discount must lie in [0, 1], got {self.discount}")
        _check(self.baseline_horizon_samples > 0,
               f"model.game.baseline_horizon_samples must be > 0 (samples the REINFORCE baseline averages), "
               f"got {self.baseline_horizon_samples}")
        _check(self.max_g_updates is None or self.max_g_updates >= 0,
               f"model.game.max_g_updates must be >= 0, got {self.max_g_updates}")


def as_config(cls, value, section: str):
    """An instance of the dataclass ``cls`` from an instance (copied), a dict or None (the defaults).
    An unknown key is an error naming ``model.<section>.<key>`` and the keys the section takes."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return dataclasses.replace(value)
    if not isinstance(value, dict):
        raise ConfigError(f"model.{section} must be a {cls.__name__} or a dict, got {type(value).__name__}")
    check_keys(cls, value, section)
    return cls(**value)


def check_keys(cls, value: dict, section: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"model.{section} takes no setting(s) {unknown}; known: {', '.join(sorted(known))}")


def config_dict(config) -> dict:
    """A section as a plain dict (tuples as lists are fine: ``as_config`` takes either)."""
    return dataclasses.asdict(config)


# The table above as data: TextGAN's former flat argument -> (section, setting), for converting old configs.
FLAT_TO_NESTED: dict[str, tuple[str, str]] = {
    "generator": ("generator", "arch"), "g_emb_dim": ("generator", "emb_dim"),
    "g_hidden_dim": ("generator", "hidden_dim"), "g_num_layers": ("generator", "num_layers"),
    "g_dropout": ("generator", "dropout"), "g_lr": ("generator", "lr"), "g_optimizer": ("generator", "optimizer"),
    "g_betas": ("generator", "betas"), "g_weight_decay": ("generator", "weight_decay"),
    "g_gradient_clip": ("generator", "gradient_clip"),
    **{name: ("generator", name) for name in ("z_dim", "d_model", "n_heads", "n_encoder_layers", "n_decoder_layers",
                                              "d_ff", "max_len", "positional", "tie_embeddings")},
    "discriminator": ("discriminator", "arch"), "d_emb_dim": ("discriminator", "emb_dim"),
    "d_hidden_dim": ("discriminator", "hidden_dim"), "d_filter_sizes": ("discriminator", "filter_sizes"),
    "d_num_filters": ("discriminator", "num_filters"), "d_heads": ("discriminator", "n_heads"),
    "d_layers": ("discriminator", "n_layers"), "d_dropout": ("discriminator", "dropout"),
    "minibatch_std": ("discriminator", "minibatch_std"), "d_lr": ("discriminator", "lr"),
    "betas": ("discriminator", "betas"), "gradient_clip": ("discriminator", "gradient_clip"),
    "freeze_discriminator": ("discriminator", "frozen"),
    **{f.name: ("game", f.name) for f in dataclasses.fields(GameConfig)},
    **{f.name: ("evaluation", f.name) for f in dataclasses.fields(EvaluationConfig)},
}


def nest_flat_args(flat: dict) -> dict:
    """TextGAN's former flat arguments -> the nested sections (``vocab_size`` stays on top); for converting old
    configs and arm definitions. An unknown name is an error."""
    nested: dict = {}
    for name, value in flat.items():
        if name == "vocab_size":
            nested[name] = value
            continue
        if name not in FLAT_TO_NESTED:
            raise ConfigError(f"model.{name} is not a TextGAN setting (known: {', '.join(sorted(FLAT_TO_NESTED))})")
        section, setting = FLAT_TO_NESTED[name]
        nested.setdefault(section, {})[setting] = value
    return nested
