"""The batch-size sweep (Q1, Q2, Q4, noise scale): families x batch sizes x seeds on one data module.

Budget:
- ``samples``: every run sees the same number of training samples; a run at batch size B makes
  ceil(budget / B) generator updates (for a GAN: generator updates, each after ``d_steps`` discriminator
  updates on the same batch; for the MLE family: optimizer steps).
- ``steps``: every run makes the same number of generator updates (and so sees B times more samples at B).

Learning rates are the preset's rates at the reference batch size, scaled by ``lr_scaling`` (none, linear, sqrt),
times the committed learning-rate pilot's multiplier of the (family, batch size) where it chose one
(``settings.lr_pilot``, ``experiments.core.pilot``; the spec's ``lr_multiplier``).
Runs at the reference batch size also get the gradient noise scale and a temperature curve (configurable).

Pretrained arms: a family registered with ``init_from="pretrain"`` (``gan-gumbel-pt``, ``gan-reinforce-pt``,
``mle-continued``) starts from its seed's shared MLE checkpoint. That checkpoint is one run of kind ``pretrain``
per seed: the MLE family (``PRETRAIN_FAMILY``) at the reference batch size for ``pretrain_budget`` samples, with a
temperature curve (the hand-over model's). Each arm then runs at ``pretrained_batch_sizes`` (default: the
reference batch size) for the sweep's own budget, as a run of kind ``pretrained-arm`` whose spec says
``init_from: {"key": <the pretrain run's key>}`` (temperature curve where the sweep measures one; no noise
scale). Pretraining happens once, at one batch size, so an MLE phase at batch size 1 never hides inside an arm's
result; the arms' rows are kept apart from the sweep's (``kind``), so they are compared with each other
(``experiments.core.report``), not with the from-scratch families. ``pretrained_family_batch_sizes`` gives a family its
own batch sizes (the minibatch-std arm ``gan-mbstd-pt`` at the reference only), and at ``equal_update_batch_sizes``
each arm runs once more for the reference batch size's number of updates (kind ``equal-updates``, a steps budget,
row field ``equal_updates_of``), reported descriptively beside the equal-samples arms.

Measurements along a run (``experiments.q1_game.game``): the held-out loss curve and its roughness on every pretrained and
equal-update arm (``held_out``), and Q1's game checkpoints on the sweep's runs and the pretrained arms (which Q1 compares) at ``checkpoint_batch_sizes``
(``checkpoints``; default the reference batch size).
"""

from __future__ import annotations

import copy

from experiments.core.families import get_family
from experiments.core.presets import SweepSettings
from experiments.core.scaling import PRETRAIN_FAMILY, check_pretrained_arm, model_args, updates_for
from experiments.core.specs import make_spec
from modules.errors import ConfigError


def pilot_multiplier(settings: SweepSettings, family: str, batch_size: int):
    """The learning-rate multiplier the committed pilot chose for (family, batch size), or None where the pilot
    (``settings.lr_pilot``) has none: those runs keep the scaling rule's rates and their keys."""
    chosen = ((settings.lr_pilot or {}).get("multipliers") or {}).get(family) or {}
    value = chosen.get(str(batch_size))
    return None if value is None else float(value)


def _multiplier_field(multiplier) -> dict:
    # only where the pilot chose one, so that the keys of runs without a pilot stay what they were
    return {} if multiplier is None else {"lr_multiplier": multiplier}


def pretrain_spec(settings: SweepSettings, seed: int, tracking: dict) -> dict:
    """The seed's shared MLE checkpoint: the MLE family at the reference batch size for ``pretrain_budget``
    samples, checkpoint kept, with the sweep's temperature curve (the hand-over model's curve)."""
    if settings.pretrain_budget is None or settings.pretrain_budget < 1:
        raise ConfigError(f"sweep.pretrain_budget must be >= 1 samples when a family starts from the pretrain run, "
                         f"got {settings.pretrain_budget}")
    ref = settings.reference_batch_size
    updates = updates_for("samples", settings.pretrain_budget, ref)
    model, _ = model_args(PRETRAIN_FAMILY, settings.models, ref, ref, "none", updates)
    measure = {"temperatures": list(settings.temperatures)} if settings.temperatures else {}
    return make_spec(
        "pretrain", settings, family=PRETRAIN_FAMILY, batch_size=ref, seed=seed, data=copy.deepcopy(settings.data),
        model=model, updates=updates, lr_factor=1.0, measure=measure, tracking=tracking,
        budget={"kind": "samples", "value": settings.pretrain_budget, "updates": updates}, save_checkpoint=True,
        lr_scaling=settings.lr_scaling, reference_batch_size=ref,
    )


def pretrained_batch_sizes(settings: SweepSettings, family: str) -> list[int]:
    """The batch sizes a pretrained arm runs at: its own entry in ``pretrained_family_batch_sizes``, else
    ``pretrained_batch_sizes``, else the reference batch size."""
    own = (settings.pretrained_family_batch_sizes or {}).get(family)
    if own is not None:
        return sorted(own)
    return sorted(settings.pretrained_batch_sizes or [settings.reference_batch_size])


def _check_arm_settings(settings: SweepSettings) -> None:
    for name, sizes in (settings.pretrained_family_batch_sizes or {}).items():
        if get_family(name).init_from != "pretrain":
            raise ConfigError(f"sweep.pretrained_family_batch_sizes names {name!r}, which does not start from the "
                             f"pretrain run (only pretrained arms take batch sizes there)")
        if not sizes:
            raise ConfigError(f"sweep.pretrained_family_batch_sizes[{name!r}] is empty")
    for name, value in (("held_out", settings.held_out), ("checkpoints", settings.checkpoints)):
        need = {"held_out": ("points", "rows"), "checkpoints": ("count", "rows", "num_samples", "num_test")}[name]
        if value is not None:
            missing = [k for k in need if k not in value]
            if missing or any(int(value[k]) < 1 for k in need if k in value):
                raise ConfigError(f"sweep.{name} must be None or a dict of {', '.join(need)} (each >= 1), got {value}")
    if settings.checkpoints is not None and settings.checkpoints["count"] < 2:
        raise ConfigError(f"sweep.checkpoints.count must be >= 2 (first and last update), got "
                         f"{settings.checkpoints['count']}")


def sweep_specs(settings: SweepSettings, tracking: dict) -> list[dict]:
    sizes = [*settings.batch_sizes, *(settings.pretrained_batch_sizes or []),
             *(b for v in (settings.pretrained_family_batch_sizes or {}).values() for b in v),
             *(settings.equal_update_batch_sizes or [])]
    for b in sizes:
        if b < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {b}")
    _check_arm_settings(settings)
    temp_bs = settings.temperature_batch_sizes
    temp_bs = [settings.reference_batch_size] if temp_bs is None else temp_bs
    noise_bs = settings.noise_batch_sizes
    noise_bs = [settings.reference_batch_size] if noise_bs is None else noise_bs
    checkpoint_bs = settings.checkpoint_batch_sizes
    checkpoint_bs = [settings.reference_batch_size] if checkpoint_bs is None else checkpoint_bs
    specs = []
    # seeds outermost: after each seed the table holds a complete replicate, so a partial sweep is reportable
    pretrained = [f for f in settings.families if get_family(f).init_from == "pretrain"]
    for seed in settings.seeds:
        pretrain = pretrain_spec(settings, seed, tracking) if pretrained else None
        if pretrain is not None:
            specs.append(pretrain)
        for family in settings.families:
            if family in pretrained:
                specs += _pretrained_arm_specs(settings, family, seed, pretrain, temp_bs, checkpoint_bs, tracking)
                continue
            for batch_size in sorted(settings.batch_sizes):
                updates = updates_for(settings.budget, settings.budget_value, batch_size)
                multiplier = pilot_multiplier(settings, family, batch_size)
                model, factor = model_args(family, settings.models, batch_size, settings.reference_batch_size,
                                           settings.lr_scaling, updates, multiplier or 1.0)
                measure = {}
                if batch_size in temp_bs and settings.temperatures:
                    measure["temperatures"] = list(settings.temperatures)
                if batch_size in noise_bs and settings.noise:
                    measure["noise"] = dict(settings.noise)
                if batch_size in checkpoint_bs and settings.checkpoints:
                    measure["checkpoints"] = dict(settings.checkpoints)
                specs.append(make_spec(
                    "sweep", settings, family=family, batch_size=batch_size, seed=seed,
                    data=copy.deepcopy(settings.data), model=model, updates=updates, lr_factor=factor,
                    measure=measure, tracking=tracking, lr_scaling=settings.lr_scaling,
                    reference_batch_size=settings.reference_batch_size, **_multiplier_field(multiplier),
                ))
    return specs


def _pretrained_arm_specs(settings: SweepSettings, family: str, seed: int, pretrain: dict, temp_bs: list[int],
                          checkpoint_bs: list[int], tracking: dict) -> list[dict]:
    """The arm at each of its batch sizes for the sweep's budget (kind ``pretrained-arm``; with Q1's game
    checkpoints at ``checkpoint_bs``: Q1 compares these arms), then, at the ``equal_update_batch_sizes`` among
    those, for the reference batch size's updates (kind ``equal-updates``)."""
    specs = []
    ref = settings.reference_batch_size
    sizes = pretrained_batch_sizes(settings, family)
    ref_updates = updates_for(settings.budget, settings.budget_value, ref)
    equal_updates = [b for b in sorted(settings.equal_update_batch_sizes or [])
                     if b in sizes and b != ref and settings.budget == "samples"]  # a steps budget has them already
    for kind, batch_size in [("pretrained-arm", b) for b in sizes] + [("equal-updates", b) for b in equal_updates]:
        if kind == "pretrained-arm":
            updates = updates_for(settings.budget, settings.budget_value, batch_size)
            budget, extra = None, {}
        else:
            updates = ref_updates
            budget, extra = {"kind": "steps", "value": ref_updates, "updates": ref_updates}, {"equal_updates_of": ref}
        multiplier = pilot_multiplier(settings, family, batch_size)  # equal-update runs: their batch size's
        model, factor = model_args(family, settings.models, batch_size, ref, settings.lr_scaling, updates,
                                   multiplier or 1.0)
        check_pretrained_arm(family, model, pretrain)
        measure = {}
        if batch_size in temp_bs and settings.temperatures and kind == "pretrained-arm":
            measure["temperatures"] = list(settings.temperatures)
        if settings.held_out:
            measure["held_out"] = dict(settings.held_out)
        if batch_size in checkpoint_bs and settings.checkpoints and kind == "pretrained-arm":
            measure["checkpoints"] = dict(settings.checkpoints)
        specs.append(make_spec(
            kind, settings, family=family, batch_size=batch_size, seed=seed, data=copy.deepcopy(settings.data),
            model=model, updates=updates, lr_factor=factor, measure=measure, tracking=tracking, budget=budget,
            lr_scaling=settings.lr_scaling, reference_batch_size=ref, init_from={"key": pretrain["key"]}, **extra,
            **_multiplier_field(multiplier),
        ))
    return specs
