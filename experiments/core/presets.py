"""Named experiment settings: ``quick`` (default, CPU, minutes), ``standard`` (the full protocol, CPU, under 45
minutes; both in the learnable regime of issue 19: ``_learnable_oracle``), ``smoke`` (tests), ``paper`` (GPU), ``coco``.

A preset fixes everything a sweep or an ablation needs; command-line options override single fields. The model
arguments of each family are merged over the family's registry defaults (``experiments.core.families``), and the GAN
families use the very encoder-decoder Transformer of the MLE family as their generator (plus z), so that a
difference between families is a difference of objective, not of architecture.

Learning rates are the rates at ``reference_batch_size``; ``lr_scaling`` rescales them for other batch sizes
(``experiments.core.families.lr_factor``).

The generator of every family gets the same optimiser (``GENERATOR_OPTIMIZER``: class, betas, weight decay,
gradient clipping; the GAN's discriminator keeps its own), so that a difference between families is not a
difference of optimiser; a preset that wants one names it in the family's arguments. No preset sets the Gumbel
``anneal_steps``: beta is annealed over each run's own planned updates (``anneal_fraction``), so every batch
size and budget ends at the same beta.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from experiments.core.families import merge_args
from experiments.core.pilot_file import apply_pilot
from experiments.q3_conditioning.settings import AblationSettings
from modules.errors import ConfigError

ORACLE = "modules.data.OracleDataModule"
TEXT = "modules.data.TextDataModule"


def geometric_temperatures(low: float = 0.3, high: float = 2.5, below: int = 4, above: int = 3) -> list[float]:
    """Temperatures from ``low`` to ``high``, geometric on each side of T = 1 (``below`` steps up to 1, ``above``
    steps beyond it), rounded to 3 decimals. The default, 0.3 0.405 0.548 0.74 1 1.357 1.842 2.5 (ratios about
    1.35), is wide enough that an MLE and a GAN curve overlap in diversity, which Q4's matched comparisons need."""
    if not 0 < low < 1 < high:
        raise ConfigError(f"temperatures need 0 < low < 1 < high, got low={low}, high={high}")
    down = [round(low ** (1 - i / below), 3) for i in range(below)]
    up = [round(high ** (i / above), 3) for i in range(1, above + 1)]
    return down + [1.0] + up


# Every preset's temperature sweep unless it names its own (``gvt temperature`` uses it too).
DEFAULT_TEMPERATURES = geometric_temperatures()


# The generator's optimiser in every experiment preset, for every family: the MLE Transformer's recipe (AdamW,
# beta2 0.98, decay 0.01 on matrices, clipping at norm 1).
GENERATOR_OPTIMIZER = dict(optimizer="adamw", betas=(0.9, 0.98), weight_decay=0.01, gradient_clip=1.0)


def _generator_optimizer_args(adversarial: bool, settings: dict = GENERATOR_OPTIMIZER) -> dict:
    """``GENERATOR_OPTIMIZER`` in a family's arguments: the MLE family's own, a GAN's generator section (TextGAN's
    discriminator keeps its own betas and clipping)."""
    if not adversarial:
        return dict(settings)
    return {"generator": dict(settings)}


def _tiny_transformer(d_model=32, heads=2, enc=1, dec=1, ff=64) -> dict:
    return dict(d_model=d_model, n_heads=heads, n_encoder_layers=enc, n_decoder_layers=dec, d_ff=ff)


def _families(arch: dict, *, lr: float, g_lr: float, d_lr: float, z_dim: int, dropout: float, eval_samples: int,
              discriminator: Optional[dict] = None) -> dict[str, dict]:
    """Model arguments per family: the MLE family's flat ones, the GANs' in sections (``modules.models.configs``);
    both with the same ``evaluation`` section."""
    evaluation = dict(num_eval_samples=eval_samples, num_logged_samples=10)
    gan_common = merge_args(_generator_optimizer_args(adversarial=True), {
        "generator": dict(arch="transformer", z_dim=z_dim, dropout=dropout, lr=g_lr, **arch),
        "discriminator": {**dict(emb_dim=32, filter_sizes=(2, 3, 4), num_filters=32, lr=d_lr), **(discriminator or {})},
        "game": dict(loss="rsgan", d_steps=1, max_temperature=100.0, temperature_schedule="exp", pretrain_epochs=0),
        "evaluation": dict(evaluation),
    })
    return {
        "transformer": dict(lr=lr, dropout=dropout, warmup_steps=0, schedule="constant",
                            **_generator_optimizer_args(adversarial=False), **arch, evaluation=dict(evaluation)),
        # the MLE-with-z negative control: the MLE family reading the GAN generator's z
        "transformer-z": dict(lr=lr, dropout=dropout, warmup_steps=0, schedule="constant", z_dim=z_dim,
                              **_generator_optimizer_args(adversarial=False), **arch, evaluation=dict(evaluation)),
        "gan-gumbel": copy.deepcopy(gan_common),
        # REINFORCE with the standard loss and its sigmoid reward, as SeqGAN and ScratchGAN train it; under RSGAN
        # the reward could only be relativistic. So the two estimators differ in their loss as well, and the
        # report says that a Gumbel-vs-REINFORCE difference confounds the estimator with the loss.
        "gan-reinforce": merge_args(gan_common, {"game": {"loss": "standard"}}),
        # the null GAN: gan-gumbel with D frozen at its initialisation (family defaults set the difference)
        "gan-frozen-d": copy.deepcopy(gan_common),
    }


def _pretrained_arms(models: dict[str, dict], gan_lr: Optional[float] = None) -> dict[str, dict]:
    """Model arguments of the arms that start from the shared MLE checkpoint: each is its from-scratch family's
    (same architecture, same optimiser settings), the GANs without MLE pretraining of their own; ``gan_lr``: the
    GAN arms' generator and discriminator rate instead of the from-scratch GAN's (fine-tuning a trained
    generator wants the small rates of SeqGAN / RelGAN's adversarial phase)."""
    rates = {"generator": {"lr": gan_lr}, "discriminator": {"lr": gan_lr}} if gan_lr else {}
    gan = lambda name: merge_args(models[name], {"game": {"pretrain_epochs": 0}, **rates})  # noqa: E731
    return {"gan-gumbel-pt": gan("gan-gumbel"), "gan-reinforce-pt": gan("gan-reinforce"),
            "mle-continued": copy.deepcopy(models["transformer"]),
            # the Q2 controls (their difference, D frozen, D on shuffled labels or D reading the minibatch std,
            # is the family's default)
            "gan-frozen-d-pt": gan("gan-gumbel"), "gan-shuffled-d-pt": gan("gan-gumbel"),
            "gan-mbstd-pt": gan("gan-gumbel")}


@dataclass
class SweepSettings:
    """The batch-size sweep (Q1, Q2, Q4 and the noise scale)."""

    data: dict
    models: dict[str, dict]
    families: list[str]
    batch_sizes: list[int]
    seeds: list[int]
    budget: str = "samples"  # samples: equal training samples seen; steps: equal generator updates
    budget_value: int = 1024
    lr_scaling: str = "sqrt"
    reference_batch_size: int = 16
    temperatures: list[float] = field(default_factory=lambda: list(DEFAULT_TEMPERATURES))
    temperature_batch_sizes: Optional[list[int]] = None  # None: the reference batch size only
    noise_batch_sizes: Optional[list[int]] = None  # None: the reference batch size only
    noise: dict = field(default_factory=lambda: dict(b_small=2, micro_batches=8, rounds=4))
    curve_points: int = 100
    trainer: dict = field(default_factory=lambda: dict(accelerator="cpu", devices=1))
    save_checkpoints: bool = True
    # torch threads per run: tiny models are overhead-bound, and one thread per run keeps results identical
    # whether runs go one at a time or in parallel workers; None leaves torch's default (large models).
    threads: Optional[int] = 1
    # Families that start from the shared MLE checkpoint (gan-gumbel-pt, gan-reinforce-pt, mle-continued): the
    # samples of its pretrain run (once per seed, MLE family, reference batch size), and the batch sizes at which
    # the arms then run for the sweep's budget (None: the reference batch size only).
    pretrain_budget: Optional[int] = None
    pretrained_batch_sizes: Optional[list[int]] = None
    # Per pretrained family, its own batch sizes instead of pretrained_batch_sizes (e.g. {"gan-mbstd-pt": [16]}).
    pretrained_family_batch_sizes: Optional[dict[str, list[int]]] = None
    # Batch sizes at which every pretrained arm (that runs there) also runs for as many generator updates as the
    # reference batch size makes under the sweep's budget (a steps budget; kind "equal-updates", row field
    # equal_updates_of): the equal-update comparison, reported descriptively beside the equal-samples arms.
    equal_update_batch_sizes: Optional[list[int]] = None
    # The held-out loss curve and its roughness (experiments.q1_game.game: dict(points, rows)) on every pretrained and
    # equal-update arm; None: not measured.
    held_out: Optional[dict] = None
    # Q1's game checkpoints (experiments.q1_game.game: dict(count, rows, num_samples, num_test)) on the sweep's runs at
    # checkpoint_batch_sizes (None: the reference batch size only); None: not measured.
    checkpoints: Optional[dict] = None
    checkpoint_batch_sizes: Optional[list[int]] = None
    # The committed learning-rate pilot (``experiments.core.pilot``; read from configs/pilot/<preset>.json by
    # ``get_preset``): {"file", "sha256", "multipliers": {family: {batch size: m}}, "choices": [...]}. A run whose
    # (family, batch size) has a multiplier gets its learning rates times m on top of ``lr_scaling``; None: none.
    lr_pilot: Optional[dict] = None
    # How runs train (experiments.core.runner.engine_of): "vectorised" (the seeds of one configuration as one vectorised
    # model wherever it allows, else Lightning's loop) or "lightning" (Lightning's fit loop, one run at a time)
    engine: str = "vectorised"


@dataclass
class Preset:
    name: str
    description: str
    sweep: SweepSettings
    ablation: Optional[AblationSettings]
    workers: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _z_draws(models: dict[str, dict], k: int) -> dict[str, dict]:
    """Every family's NLLs marginal over ``k`` z draws (``evaluation.nll_z_samples``; no effect without z). The CPU
    presets take 8 instead of the default 64: each draw is a forward pass of the test split at every evaluation and
    temperature point, and the report shows the bound at 1 and 8 draws side by side (how far K still matters)."""
    for args in models.values():
        args.setdefault("evaluation", {})["nll_z_samples"] = k
    return models


# The learnable regime of the verdict presets (issue 19). The small oracle's logits times 2 (entropy about 1.6
# nats/token instead of 3.3, still far from its bigram: counted on 65k sentences the bigram's J is about 4.0) and
# fresh oracle samples every epoch instead of one 2,000-sentence split that the MLE model overfits (its J stalled
# at about 2.6 there, above the bigram). The counted baselines are fitted on as many fresh sentences as the shared
# MLE checkpoint trains on. docs/figures/learning_curve_<preset>.png shows where each family crosses the bigram.
LEARNABLE_PRETRAIN = 65_536
# The MLE rate: 4e-3 reaches J about 3.5 at 65k samples where 2e-3 reaches 3.9 (probe on this oracle); the GAN
# arms from the checkpoint at the from-scratch GAN's 3e-3 left it in every seed (J 3.9 -> 10-25, the first learning
# curve), so they fine-tune at RelGAN's 1e-4 and the pilot moves it from there.
LEARNABLE_MLE_LR = 4e-3
LEARNABLE_ARM_GAN_LR = 1e-4
STANDARD_ARM_RATE = 0.5  # the standard preset's arms from the checkpoint, relative to the quick rates (_standard)


def _learnable_oracle(baseline_samples: int = LEARNABLE_PRETRAIN) -> dict:
    return {"class_path": ORACLE, "init_args": {"preset": "small", "sharpness": 2.0, "train_samples": "fresh",
                                                "baseline_samples": baseline_samples}}


def _quick() -> Preset:
    arch = _tiny_transformer()
    models = _families(arch, lr=LEARNABLE_MLE_LR, g_lr=3e-3, d_lr=3e-3, z_dim=8, dropout=0.0, eval_samples=200)
    models.update(_pretrained_arms(models, gan_lr=LEARNABLE_ARM_GAN_LR))
    _z_draws(models, 8)
    data = _learnable_oracle()
    return Preset(
        name="quick",
        description="sharpened small oracle (vocab 200, length 12, logits x2) with fresh samples every epoch, tiny "
                    "Transformer (d_model 32) as both the MLE model and the GAN generator, 3 seeds; one shared MLE "
                    "checkpoint per seed (65536 samples, below the counted bigram) from which the compared arms "
                    "(MLE continued, Gumbel GAN, shuffled-D null) train 1024 samples at batch sizes 1 and 16, "
                    "equal-update runs at 1, game checkpoints at 16; the from-scratch MLE and Gumbel GAN at 16 and "
                    "64 beside them; label-conditioning ablation from its own conditional checkpoint per seed",
        # Budgets from docs/figures/learning_curve_quick.png: the MLE model passes the counted bigram (J 4.03) only
        # after about 40k samples from scratch (J 4.48 at 16k, 3.71 at 65k), the GAN arms from its checkpoint stay
        # below the bigram for 1-16k samples, the shuffled-D null only up to about 2-4k (J 4.15 at 4096, 5.67 at
        # 16384), and the from-scratch GANs stay near J 10 at every budget the CPU allows (reported beside).
        sweep=SweepSettings(data=data, models=models, families=["transformer", "gan-gumbel", "gan-gumbel-pt",
                                                                "mle-continued", "gan-shuffled-d-pt"],
                            batch_sizes=[16, 64], seeds=[0, 1, 2], budget="samples", budget_value=1024,
                            lr_scaling="sqrt", reference_batch_size=16,
                            noise=dict(b_small=2, micro_batches=8, rounds=8), pretrain_budget=LEARNABLE_PRETRAIN,
                            pretrained_batch_sizes=[1, 16], equal_update_batch_sizes=[1],
                            held_out=dict(points=16, rows=32),
                            checkpoints=dict(count=8, rows=64, num_samples=128, num_test=128)),
        ablation=AblationSettings(data=data, models=models, families=["mle-continued", "gan-gumbel-pt"],
                                  conditions=["label"], strengths=[1.0], z_dims=[8], seeds=[0, 1, 2],
                                  batch_size=16, budget="samples", budget_value=1024,
                                  pretrain_budget=LEARNABLE_PRETRAIN),
        workers=2,
    )


def _standard() -> Preset:
    # The full protocol in the learnable regime (issue 19): 8 paired seeds; one shared MLE checkpoint per seed; the
    # compared arms at 2048 samples; Q2's dose-response, the arms at batch sizes 1, 2, 4, 8, 16 and 64 at equal
    # samples and (kind equal-updates) at the reference batch size's 128 updates; REINFORCE and the minibatch-std
    # control at 16; the from-scratch families at 4-64 beside them; the conditioning ablation from its own
    # conditional checkpoints, with the from-scratch MLE and GAN beside; temperatures 0.3-2.5.
    arch = _tiny_transformer()
    models = _families(arch, lr=LEARNABLE_MLE_LR, g_lr=3e-3, d_lr=3e-3, z_dim=8, dropout=0.0, eval_samples=200)
    # The arms from the checkpoint start from half the quick preset's rates: in a first pilot pass around the quick
    # rates (174 runs, 2048 samples) every such cell but REINFORCE's chose x0.5, the end of the grid, so the pilot's
    # grid is centred there (REINFORCE's arm, interior at x1, keeps its rate). The shared checkpoint is untouched:
    # it trains with the from-scratch MLE family's rate.
    models.update(_pretrained_arms(models, gan_lr=LEARNABLE_ARM_GAN_LR * STANDARD_ARM_RATE))
    models["mle-continued"]["lr"] = LEARNABLE_MLE_LR * STANDARD_ARM_RATE
    models["gan-reinforce-pt"] = merge_args(models["gan-reinforce-pt"], {"generator": {"lr": LEARNABLE_ARM_GAN_LR},
                                                                       "discriminator": {"lr": LEARNABLE_ARM_GAN_LR}})
    data = _learnable_oracle()
    _z_draws(models, 8)
    seeds = list(range(8))
    return Preset(
        name="standard",
        description="the full protocol in the quick preset's regime (sharpened small oracle, fresh samples, the "
                    "quick models), 8 paired seeds: one shared MLE checkpoint per seed (65536 samples), the compared "
                    "arms from it at 2048 samples at batch sizes 1, 2, 4, 8, 16 and 64 and at equal updates "
                    "(REINFORCE and minibatch-std GAN at 16), game checkpoints at 16, the from-scratch families at "
                    "4-64 beside them; label-conditioning ablation from its own conditional checkpoints; "
                    "temperatures 0.3-2.5",
        sweep=SweepSettings(data=data, models=models, families=["transformer", "gan-gumbel", "gan-reinforce",
                                                                "gan-gumbel-pt", "gan-reinforce-pt", "mle-continued",
                                                                "gan-shuffled-d-pt", "gan-mbstd-pt"],
                            batch_sizes=[4, 16, 64], seeds=seeds, budget="samples", budget_value=2048,
                            lr_scaling="sqrt", reference_batch_size=16,
                            temperatures=[0.3, 0.405, 0.548, 0.74, 1.0, 1.357, 1.842, 2.5],
                            noise=dict(b_small=2, micro_batches=8, rounds=8), pretrain_budget=LEARNABLE_PRETRAIN,
                            pretrained_batch_sizes=[1, 2, 4, 8, 16, 64],
                            pretrained_family_batch_sizes={"gan-reinforce-pt": [16], "gan-mbstd-pt": [16]},
                            equal_update_batch_sizes=[1, 2, 4, 8, 64], held_out=dict(points=32, rows=64),
                            checkpoints=dict(count=8, rows=64, num_samples=256, num_test=256)),
        ablation=AblationSettings(data=data, models=models,
                                  families=["mle-continued", "gan-gumbel-pt", "transformer", "gan-gumbel"],
                                  conditions=["label"], strengths=[1.0], z_dims=[8], seeds=seeds,
                                  batch_size=16, budget="samples", budget_value=2048,
                                  pretrain_budget=LEARNABLE_PRETRAIN),
        workers=2,
    )


def _smoke() -> Preset:
    arch = _tiny_transformer(d_model=16, heads=2, ff=32)
    models = _families(arch, lr=3e-3, g_lr=1e-3, d_lr=1e-3, z_dim=4, dropout=0.0, eval_samples=32,
                       discriminator=dict(filter_sizes=(2, 3), num_filters=8, emb_dim=8))
    for m in models.values():
        m["evaluation"]["bleu_max_n"] = 3
    models.update(_pretrained_arms(models))
    data = {"class_path": ORACLE, "init_args": {"preset": "small", "num_train": 200, "num_val": 40, "num_test": 64}}
    return Preset(
        name="smoke",
        description="a few tiny runs on a cut-down small oracle, for tests (well under a minute)",
        sweep=SweepSettings(data=data, models=models, families=["transformer"], batch_sizes=[1, 8], seeds=[0, 1],
                            budget="samples", budget_value=32, lr_scaling="sqrt", reference_batch_size=8,
                            temperatures=[0.7, 1.0, 1.5], noise=dict(b_small=1, micro_batches=4, rounds=2),
                            curve_points=20, save_checkpoints=True, pretrain_budget=64),
        ablation=AblationSettings(data=data, models=models, families=["transformer"], conditions=["label"],
                                  strengths=[0.1], z_dims=[0], seeds=[0, 1], batch_size=8, budget="samples",
                                  budget_value=64, probes=dict(num=32, contrast=4), curve_points=10),
        workers=1,
    )


def _paper() -> Preset:
    # The SeqGAN/Texygen benchmark: standard oracle (vocab 5000, length 20, 10k samples); the Transformer at the
    # size of configs/experiment/transformer_oracle.yaml; RelGAN-style GAN settings (RSGAN loss, Gumbel beta
    # annealed to 100 exponentially, rates 1e-4; the generator optimiser shared with the MLE family); 5 seeds;
    # 20 epochs' worth of samples at every batch size.
    arch = _tiny_transformer(d_model=128, heads=4, enc=1, dec=2, ff=512)
    models = _families(arch, lr=1e-3, g_lr=1e-4, d_lr=1e-4, z_dim=32, dropout=0.1, eval_samples=2000,
                       discriminator=dict(emb_dim=64, num_filters=64, filter_sizes=(2, 3, 4, 5)))
    models["transformer"]["warmup_steps"] = 0
    models.update(_pretrained_arms(models))
    data = {"class_path": ORACLE, "init_args": {"preset": "standard"}}
    return Preset(
        name="paper",
        description="standard oracle (vocab 5000, length 20, 10k samples), literature model sizes, batch sizes "
                    "1-256, 5 seeds, 20 epochs of samples; meant for a GPU (days on a CPU)",
        # Pretrained arms: one MLE checkpoint per seed after 20 epochs of the 10k oracle samples at batch 64.
        sweep=SweepSettings(data=data, models=models, families=["transformer", "gan-gumbel", "gan-reinforce",
                                                                "gan-gumbel-pt", "gan-reinforce-pt", "mle-continued"],
                            batch_sizes=[1, 2, 4, 8, 16, 32, 64, 128, 256], seeds=[0, 1, 2, 3, 4], budget="samples",
                            budget_value=200_000, lr_scaling="sqrt", reference_batch_size=64, pretrain_budget=200_000,
                            noise=dict(b_small=4, micro_batches=16, rounds=8),
                            trainer=dict(accelerator="auto", devices=1), threads=None),
        ablation=AblationSettings(data=data, models=models, families=["transformer", "gan-gumbel", "gan-reinforce"],
                                  conditions=["none", "label", "source"], strengths=[0.02, 0.05, 0.1, 0.2],
                                  z_dims=[0, 32], seeds=[0, 1, 2, 3, 4], batch_size=64, budget="samples",
                                  budget_value=200_000, num_classes=4, source_len=8,
                                  probes=dict(num=2000, contrast=64), trainer=dict(accelerator="auto", devices=1),
                                  threads=None),
        workers=1,
    )


def _coco() -> Preset:
    # MS COCO captions (unconditional, real text): quality = BLEU, diversity = Self-BLEU. $GVT_DATA_DIR is the
    # corpora folder (default ../shared/data next to the project root); its coco/ holds the Texygen split.
    arch = _tiny_transformer(d_model=128, heads=4, enc=1, dec=2, ff=512)
    models = _families(arch, lr=1e-3, g_lr=1e-4, d_lr=1e-4, z_dim=32, dropout=0.2, eval_samples=1000)
    models.update(_pretrained_arms(models))
    data = {"class_path": TEXT, "init_args": {
        "format": "lines", "train": "$GVT_DATA_DIR/coco/train.txt", "test": "$GVT_DATA_DIR/coco/test.txt",
        "val_fraction": 0.05, "tokenizer": "word", "max_len": 35}}
    return Preset(
        name="coco",
        description="MS COCO captions (real text): BLEU vs Self-BLEU; batch sizes 1-256, 3 seeds; meant for a GPU",
        sweep=SweepSettings(data=data, models=models, families=["transformer", "gan-gumbel", "gan-reinforce",
                                                                "gan-gumbel-pt", "gan-reinforce-pt", "mle-continued"],
                            batch_sizes=[1, 4, 16, 64, 256], seeds=[0, 1, 2], budget="samples", budget_value=100_000,
                            pretrain_budget=100_000,
                            lr_scaling="sqrt", reference_batch_size=64,
                            trainer=dict(accelerator="auto", devices=1), threads=None),
        ablation=None,
    )


PRESETS = {"quick": _quick, "standard": _standard, "smoke": _smoke, "paper": _paper, "coco": _coco}


def get_preset(name: str, *, pilot: bool = True) -> Preset:
    """The preset ``name``; with ``pilot`` (default) its committed learning-rate pilot applied, when there is one
    (``experiments.core.pilot_file.apply_pilot``: configs/pilot/<name>.json)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = copy.deepcopy(PRESETS[name]())
    if pilot:
        apply_pilot(preset)
    return preset


__all__ = ["GENERATOR_OPTIMIZER", "PRESETS", "Preset", "SweepSettings", "get_preset", "replace"]
