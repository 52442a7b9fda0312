"""A family's model arguments at a batch size and budget (learning rates scaled by the rule, a GAN told its update
budget), and the check that a pretrained arm's generator matches the checkpoint it starts from. Shared by the
batch-size sweep (Q1, Q2, Q4), the conditioning ablation (Q3) and C3's runs."""

from __future__ import annotations

import copy
import inspect
import math

from experiments.core.families import MAX_G_UPDATES, get_arg, get_family, lr_factor, set_arg
from modules.errors import ConfigError


def updates_for(budget: str, value: int, batch_size: int) -> int:
    if value < 1:
        raise ConfigError(f"the budget must be >= 1, got {value}")
    if budget == "samples":
        return max(1, math.ceil(value / batch_size))
    if budget == "steps":
        return int(value)
    raise ConfigError(f"budget must be 'samples' or 'steps', got {budget!r}")


def model_args(family_name: str, models: dict, batch_size: int, reference: int, scaling: str,
               updates: int, multiplier: float = 1.0) -> tuple[dict, float]:
    """The family's model arguments at this batch size: learning rates scaled (by the ``scaling`` rule, times the
    pilot's ``multiplier``), the GAN told its budget. Returns the arguments and the scaling rule's factor."""
    family = get_family(family_name)
    args = copy.deepcopy(models.get(family_name, {}))
    factor = lr_factor(batch_size, reference, scaling)
    for path in family.lr_args:  # dotted paths into the nested arguments
        if get_arg(args, path) is not None:
            set_arg(args, path, get_arg(args, path) * factor * multiplier)
    if family.adversarial:
        set_arg(args, MAX_G_UPDATES, updates)  # also what its cosine schedule (if any) spreads over
    family.init_kwargs(args)  # fail now, not in the middle of a sweep, on a setting the class does not take
    return args, factor


PRETRAIN_FAMILY = "transformer"  # the MLE family whose pretrain run every pretrained arm starts from
# The arguments that shape a generator net; a pretrained arm must match its checkpoint in each of them (the MLE
# family's flat arguments, a GAN's in its generator section).
GENERATOR_SHAPE = ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff", "max_len", "positional",
                   "tie_embeddings")


def _generator_shape(family_name: str, model: dict) -> dict:
    family = get_family(family_name)
    args = family.init_kwargs(model)
    section = family.sections().get("generator")
    if section is not None:  # the generator's settings sit in their section, defaults from its dataclass
        return {name: getattr(section(**args.get("generator", {})), name) for name in GENERATOR_SHAPE}
    defaults = {name: p.default for name, p in inspect.signature(family.load_class().__init__).parameters.items()}
    return {name: args.get(name, defaults.get(name)) for name in GENERATOR_SHAPE}


def check_pretrained_arm(family: str, model: dict, pretrain: dict) -> None:
    ours, theirs = _generator_shape(family, model), _generator_shape(PRETRAIN_FAMILY, pretrain["model"])
    differ = {k: (ours[k], theirs[k]) for k in GENERATOR_SHAPE if ours[k] != theirs[k]}
    where = "model.generator." if "generator" in get_family(family).sections() else "model."
    if differ:
        raise ConfigError(f"family {family!r} starts from the {PRETRAIN_FAMILY} pretrain run but its generator "
                         f"differs: " + ", ".join(f"{where}{k} {a} vs {b}" for k, (a, b) in differ.items()))
