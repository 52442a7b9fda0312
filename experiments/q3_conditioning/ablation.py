"""The conditioning ablation (Q3): families x condition (none, label, source) x condition strength x z_dim x
seeds, on the conditional oracles, each run followed by the probes of ``experiments.q3_conditioning.probes`` (mutual information
against the oracle's true MI, condition accuracy, output change under z / condition / sampling-noise changes,
and the swapped-condition test).

``z_dim`` applies to the adversarial families and to ``transformer-z``, the MLE Transformer given a latent z it has
no use for (the negative control for z; its z_dim 0 is skipped: that is the ``transformer`` family); the condition
``none`` has no strength (its oracle ignores any condition) and runs only for families with ``z_dim > 0``: it
measures how much the output depends on z alone (without z or a condition there is nothing to vary).

Families that start from the shared MLE checkpoint (``init_from``, e.g. ``gan-gumbel-pt``, ``mle-continued``) run
only where the ablation has a ``pretrain_budget``: then each seed and conditional setting gets its own shared
conditional checkpoint (kind ``ablation-pretrain``: the MLE family trained on that setting's conditional data for
``pretrain_budget`` samples at the ablation's batch size), and those families start from it, as the sweep's arms
start from the sweep's checkpoint. (Without one they are left out: a checkpoint of unconditional data would answer
another question.) Confound, reported beside Q3z: the checkpoint's generator was trained without z, so a GAN arm
starts out ignoring z; the MLE arm keeps no z at all.
"""

from __future__ import annotations

import copy

from experiments.core.families import get_family, set_arg, z_dim_path
from experiments.core.scaling import PRETRAIN_FAMILY, check_pretrained_arm, model_args, updates_for
from experiments.core.specs import make_spec
from experiments.q3_conditioning.settings import AblationSettings
from modules.errors import ConfigError


def conditional_data(settings: AblationSettings, condition: str, strength) -> dict:
    """The ablation's data config at one conditional setting."""
    data = copy.deepcopy(settings.data)
    init = data.setdefault("init_args", {})
    init["condition"] = condition
    if condition != "none":
        init["condition_strength"] = strength
    if condition == "label":
        init["num_classes"] = settings.num_classes
    if condition == "source":
        init["source_len"] = settings.source_len
    return data


def ablation_pretrain_spec(settings: AblationSettings, seed: int, data: dict, tracking: dict) -> dict:
    """The seed's shared conditional checkpoint at one setting: the MLE family on ``data`` for
    ``pretrain_budget`` samples at the ablation's batch size, checkpoint kept."""
    if settings.pretrain_budget is None or settings.pretrain_budget < 1:
        raise ConfigError(f"ablation.pretrain_budget must be >= 1 samples, got {settings.pretrain_budget}")
    updates = updates_for("samples", settings.pretrain_budget, settings.batch_size)
    model, _ = model_args(PRETRAIN_FAMILY, settings.models, settings.batch_size, settings.batch_size, "none", updates)
    return make_spec("ablation-pretrain", settings, family=PRETRAIN_FAMILY, batch_size=settings.batch_size, seed=seed,
                     data=data, model=model, updates=updates, lr_factor=1.0, measure={}, tracking=tracking,
                     budget={"kind": "samples", "value": settings.pretrain_budget, "updates": updates},
                     save_checkpoint=True, lr_scaling="none")


def ablation_specs(settings: AblationSettings, tracking: dict) -> list[dict]:
    for c in settings.conditions:
        if c not in ("none", "label", "source"):
            raise ConfigError(f"conditions must be none, label or source, got {c!r}")
    if settings.data.get("class_path", "").rsplit(".", 1)[-1] != "OracleDataModule":
        raise ConfigError("the conditioning ablation needs the oracle data (its p(y | c) is what makes MI exact)")
    updates = updates_for(settings.budget, settings.budget_value, settings.batch_size)
    specs = []
    for seed in settings.seeds:
        checkpoints: dict[tuple, dict] = {}  # (condition, strength) -> this seed's conditional checkpoint
        for family_name in settings.families:
            family = get_family(family_name)
            if family.init_from is not None and settings.pretrain_budget is None:
                continue  # see the module docstring
            for condition in settings.conditions:
                for strength in (settings.strengths if condition != "none" else [None]):
                    for z_dim in (settings.z_dims if family.takes_latent else [None]):
                        if condition == "none" and not z_dim:
                            continue  # no condition and no z: nothing for the probes to vary
                        if family.latent and not family.adversarial and not z_dim:
                            continue  # transformer-z without z is the transformer family itself
                        data = conditional_data(settings, condition, strength)
                        models = copy.deepcopy(settings.models)
                        if z_dim is not None:
                            set_arg(models.setdefault(family_name, {}), z_dim_path(family_name), z_dim)
                        model, _ = model_args(family_name, models, settings.batch_size, settings.batch_size,
                                              "none", updates)
                        extra = {}
                        if family.init_from is not None:
                            if (condition, strength) not in checkpoints:
                                checkpoints[(condition, strength)] = ablation_pretrain_spec(settings, seed, data,
                                                                                            tracking)
                                specs.append(checkpoints[(condition, strength)])
                            start = checkpoints[(condition, strength)]
                            check_pretrained_arm(family_name, model, start)
                            extra["init_from"] = {"key": start["key"]}
                        specs.append(make_spec(
                            "ablation", settings, family=family_name, batch_size=settings.batch_size, seed=seed,
                            data=data, model=model, updates=updates, lr_factor=1.0,
                            measure={"probes": dict(settings.probes)}, tracking=tracking, lr_scaling="none", **extra,
                        ))
    return specs
