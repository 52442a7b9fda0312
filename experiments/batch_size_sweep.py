"""The batch-size sweep (Q1, Q2, Q4, noise scale): families x batch sizes x seeds on one data module.

Budget:
- ``samples``: every run sees the same number of training samples; a run at batch size B makes
  ceil(budget / B) generator updates (for a GAN: generator updates, each after ``d_steps`` discriminator
  updates on the same batch; for the MLE family: optimizer steps).
- ``steps``: every run makes the same number of generator updates (and so sees B times more samples at B).

Learning rates are the preset's rates at the reference batch size, scaled by ``lr_scaling`` (none, linear, sqrt).
Runs at the reference batch size also get the gradient noise scale and a temperature curve (configurable).
"""

from __future__ import annotations

import copy
import math

from experiments.families import get_family, lr_factor
from experiments.presets import SweepSettings
from experiments.runner import make_spec


def updates_for(budget: str, value: int, batch_size: int) -> int:
    if value < 1:
        raise ValueError(f"the budget must be >= 1, got {value}")
    if budget == "samples":
        return max(1, math.ceil(value / batch_size))
    if budget == "steps":
        return int(value)
    raise ValueError(f"budget must be 'samples' or 'steps', got {budget!r}")


def model_args(family_name: str, models: dict, batch_size: int, reference: int, scaling: str,
               updates: int) -> tuple[dict, float]:
    """The family's model arguments at this batch size: learning rates scaled, the GAN told its budget."""
    family = get_family(family_name)
    args = copy.deepcopy(models.get(family_name, {}))
    factor = lr_factor(batch_size, reference, scaling)
    for name in family.lr_args:
        if name in args:
            args[name] = args[name] * factor
    accepted = family.accepted_args()
    if "max_g_updates" in accepted and family.adversarial:
        args["max_g_updates"] = updates  # also what its cosine schedule (if any) spreads over
    family.init_kwargs(args)  # fail now, not in the middle of a sweep, on a setting the class does not take
    return args, factor


def sweep_specs(settings: SweepSettings, tracking: dict) -> list[dict]:
    for b in settings.batch_sizes:
        if b < 1:
            raise ValueError(f"batch sizes must be >= 1, got {b}")
    temp_bs = settings.temperature_batch_sizes
    temp_bs = [settings.reference_batch_size] if temp_bs is None else temp_bs
    noise_bs = settings.noise_batch_sizes
    noise_bs = [settings.reference_batch_size] if noise_bs is None else noise_bs
    specs = []
    # seeds outermost: after each seed the table holds a complete replicate, so a partial sweep is reportable
    for seed in settings.seeds:
        for family in settings.families:
            for batch_size in sorted(settings.batch_sizes):
                updates = updates_for(settings.budget, settings.budget_value, batch_size)
                model, factor = model_args(family, settings.models, batch_size, settings.reference_batch_size,
                                           settings.lr_scaling, updates)
                measure = {}
                if batch_size in temp_bs and settings.temperatures:
                    measure["temperatures"] = list(settings.temperatures)
                if batch_size in noise_bs and settings.noise:
                    measure["noise"] = dict(settings.noise)
                specs.append(make_spec(
                    "sweep", settings, family=family, batch_size=batch_size, seed=seed,
                    data=copy.deepcopy(settings.data), model=model, updates=updates, lr_factor=factor,
                    measure=measure, tracking=tracking, lr_scaling=settings.lr_scaling,
                    reference_batch_size=settings.reference_batch_size,
                ))
    return specs
