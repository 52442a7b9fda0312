"""Model families an experiment can train: ``name -> (LightningModule class path, default init kwargs)``.

A family is a class plus the arguments that make it that family, so ``gan-gumbel`` and ``gan-reinforce`` are one
class (``modules.models.TextGAN``) with a different ``estimator``. Register your own with ``register_family``;
every experiment accepts it by name (``--families transformer,my-family``).

A family with ``init_from="pretrain"`` starts from the generator weights of its seed's shared MLE checkpoint (the
sweep's ``pretrain`` run, made once per seed at the reference batch size; see ``experiments.batch_size_sweep``)
instead of from random weights. ``gan-gumbel-pt`` and ``gan-reinforce-pt`` train it adversarially,
``mle-continued`` by MLE for the same samples, ``gan-frozen-d-pt`` (the null GAN) and ``gan-mbstd-pt`` (D with the
minibatch-std feature) are the controls of the batch-size question: a further arm from the same checkpoint is one
``register_family(..., init_from="pretrain")`` line plus its model arguments in the preset.

Budgets are counted in generator updates. The MLE family's updates are its optimizer steps; a GAN's are read
from its ``g_updates`` counter, because Lightning's ``global_step`` counts the discriminator's steps as well.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Optional

from modules.errors import ConfigError


@dataclass(frozen=True)
class Family:
    name: str
    class_path: str
    defaults: dict = field(default_factory=dict)
    adversarial: bool = False
    # Learning-rate arguments that batch-size scaling multiplies (the MLE family has one, a GAN two).
    lr_args: tuple[str, ...] = ("lr",)
    # "pretrain": every run of this family starts from its seed's pretrain run (the run spec's ``init_from``).
    init_from: Optional[str] = None
    # The conditioning ablation's z_dims grid applies (the GANs, and the MLE-with-z control ``transformer-z``).
    latent: bool = False

    @property
    def takes_latent(self) -> bool:
        return self.adversarial or self.latent

    def load_class(self):
        module_name, _, class_name = self.class_path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, class_name)
        except (ImportError, AttributeError) as err:
            raise FamilyUnavailable(
                f"family {self.name!r} needs {self.class_path}, which cannot be imported ({err})"
            ) from err

    def available(self) -> bool:
        try:
            self.load_class()
            return True
        except FamilyUnavailable:
            return False

    def accepted_args(self) -> set[str]:
        return set(inspect.signature(self.load_class().__init__).parameters) - {"self"}

    def init_kwargs(self, overrides: dict) -> dict:
        """The family's defaults under ``overrides``; arguments the class does not take are an error, not
        silently dropped (a misspelled setting would otherwise leave a sweep quietly running the default)."""
        kwargs = {**self.defaults, **overrides}
        unknown = sorted(set(kwargs) - self.accepted_args())
        if unknown:
            raise ConfigError(f"family {self.name!r} ({self.class_path}) takes no argument(s) {unknown}")
        return kwargs


class FamilyUnavailable(ImportError):
    pass


FAMILIES: dict[str, Family] = {}


# What a family's ``init_from`` may name.
INIT_SOURCES = ("pretrain",)


def register_family(name: str, class_path: str, defaults: dict | None = None, *, adversarial: bool = False,
                    lr_args: tuple[str, ...] = ("lr",), init_from: Optional[str] = None,
                    latent: bool = False) -> Family:
    if init_from is not None and init_from not in INIT_SOURCES:
        raise ConfigError(f"family {name!r}: init_from must be one of {INIT_SOURCES} or None, got {init_from!r}")
    family = Family(name, class_path, dict(defaults or {}), adversarial, tuple(lr_args), init_from, latent)
    FAMILIES[name] = family
    return family


register_family("transformer", "modules.models.TransformerSeq2Seq")
# The lecture's road to the Transformer (issue 13): the LSTM seq2seq without attention (the context-vector
# bottleneck) and with additive attention; same loss and evaluation as the Transformer.
register_family("rnn", "modules.models.RNNSeq2Seq", {"attention": "none"})
register_family("rnn-attention", "modules.models.RNNSeq2Seq", {"attention": "additive"})
register_family("gan-gumbel", "modules.models.TextGAN", {"estimator": "gumbel"}, adversarial=True,
                lr_args=("g_lr", "d_lr"))
register_family("gan-reinforce", "modules.models.TextGAN", {"estimator": "reinforce"}, adversarial=True,
                lr_args=("g_lr", "d_lr"))
# The null GAN: gan-gumbel with the discriminator frozen at its initialisation (never updated; its loss still
# logged), so that "the GAN learned from the game" can be told from "the generator moved anyway". In the
# presets' model dicts, not yet in their default family lists.
register_family("gan-frozen-d", "modules.models.TextGAN", {"estimator": "gumbel", "freeze_discriminator": True},
                adversarial=True, lr_args=("g_lr", "d_lr"))
# The classic text-GAN generator (an LSTM) under both estimators: not in the default sweeps, available by name.
register_family("gan-gumbel-lstm", "modules.models.TextGAN", {"estimator": "gumbel", "generator": "lstm"},
                adversarial=True, lr_args=("g_lr", "d_lr"))
register_family("gan-reinforce-lstm", "modules.models.TextGAN", {"estimator": "reinforce", "generator": "lstm"},
                adversarial=True, lr_args=("g_lr", "d_lr"))
# Started from the seed's shared MLE checkpoint (the pretrain run): the two GANs trained adversarially from there
# (no MLE pretraining of their own), and the same checkpoint trained on by MLE for the same samples (the control
# that says whether the adversarial phase helped or hurt). Not in the conditioning ablation: pretraining without
# z teaches the generator to ignore z.
register_family("gan-gumbel-pt", "modules.models.TextGAN", {"estimator": "gumbel", "generator": "transformer",
                                                          "pretrain_epochs": 0},
                adversarial=True, lr_args=("g_lr", "d_lr"), init_from="pretrain")
register_family("gan-reinforce-pt", "modules.models.TextGAN", {"estimator": "reinforce",
                                                                "generator": "transformer", "pretrain_epochs": 0},
                adversarial=True, lr_args=("g_lr", "d_lr"), init_from="pretrain")
register_family("mle-continued", "modules.models.TransformerSeq2Seq", init_from="pretrain")
# The Q2 controls from the same checkpoint: the null GAN (D frozen at its initialisation) and the Gumbel GAN whose
# D reads the minibatch standard deviation (a population statistic: the one mechanism by which a GAN's loss is not
# a mean of per-example terms, so that batch size can matter beyond gradient noise).
register_family("gan-frozen-d-pt", "modules.models.TextGAN", {"estimator": "gumbel", "generator": "transformer",
                                                               "pretrain_epochs": 0, "freeze_discriminator": True},
                adversarial=True, lr_args=("g_lr", "d_lr"), init_from="pretrain")
register_family("gan-mbstd-pt", "modules.models.TextGAN", {"estimator": "gumbel", "generator": "transformer",
                                                            "pretrain_epochs": 0, "minibatch_std": True},
                adversarial=True, lr_args=("g_lr", "d_lr"), init_from="pretrain")
# The MLE Transformer given a latent z it has no use for (MLE never rewards depending on z): the negative control
# for the z probes of Q3. In the conditioning ablation's z_dims grid (z_dim 0 would be `transformer` itself).
register_family("transformer-z", "modules.models.TransformerSeq2Seq", {"z_dim": 8}, latent=True)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"unknown family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def generator_updates(model: Any, trainer: Any) -> int:
    """Generator updates done so far (the unit of every budget)."""
    count = getattr(model, "g_updates", None)
    if count is None:
        return int(trainer.global_step)
    return int(count.item() if hasattr(count, "item") else count)


def lr_factor(batch_size: int, reference: int, scaling: str) -> float:
    """Multiplier of the preset's learning rates at ``batch_size``.

    ``none``: the same rate at every batch size. ``linear``: rate proportional to the batch size (Goyal et al.
    2017; keeps the update per sample constant for SGD). ``sqrt``: proportional to its square root (keeps the
    update's noise scale constant; the usual rule for Adam, Malladi et al. 2022). All relative to the rate set at
    ``reference`` batch size.
    """
    if scaling == "none":
        return 1.0
    ratio = batch_size / reference
    if scaling == "linear":
        return ratio
    if scaling == "sqrt":
        return ratio ** 0.5
    raise ConfigError(f"lr scaling must be none, linear or sqrt, got {scaling!r}")
