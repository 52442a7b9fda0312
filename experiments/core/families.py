"""Model families an experiment can train: ``name -> (LightningModule class path, default init kwargs)``.

A family is a class plus the arguments that make it that family, so ``gan-gumbel`` and ``gan-reinforce`` are one
class (``modules.models.TextGAN``) with a different ``estimator``. Register your own with ``register_family``;
every experiment accepts it by name (``--families transformer,my-family``).

A family with ``init_from="pretrain"`` starts from the generator weights of its seed's shared MLE checkpoint (the
sweep's ``pretrain`` run, made once per seed at the reference batch size; see ``experiments.q2_batch_size.sweep``)
instead of from random weights. ``gan-gumbel-pt`` and ``gan-reinforce-pt`` train it adversarially,
``mle-continued`` by MLE for the same samples, ``gan-frozen-d-pt`` (the null GAN) and ``gan-mbstd-pt`` (D with the
minibatch-std feature) are the controls of the batch-size question: a further arm from the same checkpoint is one
``register_family(..., init_from="pretrain")`` line plus its model arguments in the preset.

Budgets are counted in generator updates. The MLE family's updates are its optimizer steps; a GAN's are read
from its ``g_updates`` counter, because Lightning's ``global_step`` counts the discriminator's steps as well.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from modules.errors import ConfigError

# Where the GAN family keeps the settings experiments read or set (dotted paths into a model's nested arguments;
# see ``modules.models.configs``). A family without one (the MLE Transformer) has no such setting.
Z_DIM, MAX_G_UPDATES, ESTIMATOR, LOSS = "generator.z_dim", "game.max_g_updates", "game.estimator", "game.loss"
GAN_LR_ARGS = ("generator.lr", "discriminator.lr")
GAN = "modules.models.TextGAN"


def z_dim_path(family_name: str) -> str:
    """Where a family's latent size sits in its arguments: the GAN's generator section, or the MLE family's own
    ``z_dim`` (``transformer-z``)."""
    return Z_DIM if get_family(family_name).adversarial else "z_dim"


def get_arg(args: dict, path: str, default: Any = None) -> Any:
    """``args["generator"]["z_dim"]`` for path ``generator.z_dim``; ``default`` where any level is missing."""
    node: Any = args
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_arg(args: dict, path: str, value: Any) -> None:
    """Set a dotted path in nested model arguments, making the sections on the way."""
    *sections, last = path.split(".")
    node = args
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = value


def merge_args(base: dict, overrides: dict) -> dict:
    """``overrides`` over ``base``, section by section (a nested dict merges into the section, a value replaces)."""
    out = copy.deepcopy(base)
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = merge_args(out[name], value)
        else:
            out[name] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Family:
    name: str
    class_path: str
    defaults: dict = field(default_factory=dict)
    adversarial: bool = False
    # Learning-rate arguments (dotted paths) that batch-size scaling multiplies (the MLE family has one, a GAN two).
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

    def sections(self) -> dict[str, type]:
        """The class's arguments typed as a settings dataclass (``generator``, ``game``, ...): nested sections."""
        cls = self.load_class()
        hints = typing.get_type_hints(cls.__init__)
        return {name: hint for name, hint in hints.items() if dataclasses.is_dataclass(hint)}

    def init_kwargs(self, overrides: dict) -> dict:
        """The family's defaults under ``overrides`` (merged section by section); arguments the class does not
        take, at the top or inside a section, are an error, not silently dropped (a misspelled setting would
        otherwise leave a sweep quietly running the default)."""
        kwargs = merge_args(self.defaults, overrides)
        unknown = sorted(set(kwargs) - self.accepted_args())
        sections = self.sections()
        for name, value in kwargs.items():
            if name in sections and isinstance(value, dict):
                known = {f.name for f in dataclasses.fields(sections[name])}
                unknown += [f"{name}.{key}" for key in sorted(set(value) - known)]
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
# GAN families' defaults are nested like TextGAN's settings (modules.models.configs): {section: {setting: value}}
register_family("gan-gumbel", GAN, {"game": {"estimator": "gumbel"}}, adversarial=True, lr_args=GAN_LR_ARGS)
register_family("gan-reinforce", GAN, {"game": {"estimator": "reinforce"}}, adversarial=True, lr_args=GAN_LR_ARGS)
# The null GAN: gan-gumbel with the discriminator frozen at its initialisation (never updated; its loss still
# logged), so that "the GAN learned from the game" can be told from "the generator moved anyway". In the
# presets' model dicts, not yet in their default family lists.
register_family("gan-frozen-d", GAN, {"game": {"estimator": "gumbel"}, "discriminator": {"frozen": True}},
                adversarial=True, lr_args=GAN_LR_ARGS)
# The classic text-GAN generator (an LSTM) under both estimators: not in the default sweeps, available by name.
register_family("gan-gumbel-lstm", GAN, {"game": {"estimator": "gumbel"}, "generator": {"arch": "lstm"}},
                adversarial=True, lr_args=GAN_LR_ARGS)
register_family("gan-reinforce-lstm", GAN, {"game": {"estimator": "reinforce"}, "generator": {"arch": "lstm"}},
                adversarial=True, lr_args=GAN_LR_ARGS)
# Started from the seed's shared MLE checkpoint (the pretrain run): the two GANs trained adversarially from there
# (no MLE pretraining of their own), and the same checkpoint trained on by MLE for the same samples (the control
# that says whether the adversarial phase helped or hurt). Not in the conditioning ablation: pretraining without
# z teaches the generator to ignore z.
register_family("gan-gumbel-pt", GAN, {"game": {"estimator": "gumbel", "pretrain_epochs": 0},
                                       "generator": {"arch": "transformer"}},
                adversarial=True, lr_args=GAN_LR_ARGS, init_from="pretrain")
register_family("gan-reinforce-pt", GAN, {"game": {"estimator": "reinforce", "pretrain_epochs": 0},
                                          "generator": {"arch": "transformer"}},
                adversarial=True, lr_args=GAN_LR_ARGS, init_from="pretrain")
register_family("mle-continued", "modules.models.TransformerSeq2Seq", init_from="pretrain")
# The Q2 controls from the same checkpoint: the null GAN (D frozen at its initialisation) and the Gumbel GAN whose
# D reads the minibatch standard deviation (a population statistic: the one mechanism by which a GAN's loss is not
# a mean of per-example terms, so that batch size can matter beyond gradient noise).
register_family("gan-frozen-d-pt", GAN, {"game": {"estimator": "gumbel", "pretrain_epochs": 0},
                                         "generator": {"arch": "transformer"}, "discriminator": {"frozen": True}},
                adversarial=True, lr_args=GAN_LR_ARGS, init_from="pretrain")
# The null GAN of Q2 (issue 14): the same Gumbel GAN from the checkpoint, its D trained as often on labels shuffled
# row by row (discriminator.labels: shuffled). G keeps a moving opponent and a gradient of the same kind, but the
# opponent learns nothing about the population. (The frozen-D null above plays G against one fixed random function,
# which G climbs to its maximum: it diverged or collapsed in most seeds of the standard report.)
register_family("gan-shuffled-d-pt", GAN, {"game": {"estimator": "gumbel", "pretrain_epochs": 0},
                                           "generator": {"arch": "transformer"},
                                           "discriminator": {"labels": "shuffled"}},
                adversarial=True, lr_args=GAN_LR_ARGS, init_from="pretrain")
register_family("gan-mbstd-pt", GAN, {"game": {"estimator": "gumbel", "pretrain_epochs": 0},
                                      "generator": {"arch": "transformer"}, "discriminator": {"minibatch_std": True}},
                adversarial=True, lr_args=GAN_LR_ARGS, init_from="pretrain")
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
