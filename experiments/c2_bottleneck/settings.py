"""C2's settings: the data sets, families, SESOI and gates, the presets (lecture, smoke) and the pre-registration
(the runs: experiments.c2_bottleneck.bottleneck)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Callable, Optional

from experiments.c2_bottleneck import pilot as P
from modules.errors import ConfigError


DATASETS = ("reverse", "oracle", "multi30k")
FAMILIES = ("rnn", "rnn-attention", "transformer")
SETTINGS_FILE = "bottleneck.json"

# The SESOI of C2, in token accuracy (a share of output positions): a difference of 0.1 in how much accuracy the
# two RNNs lose with length is one output word in ten. Smaller differences would not tell a bottleneck from the
# ordinary extra difficulty of longer outputs for both models; the test split's own sampling error of a mean
# token accuracy (hundreds of examples of >= 4 words) is below 0.01, far under it.
C2_SESOI = 0.1
# "Learned the task": mean token accuracy at the shortest length at least this (chance is about 1 / num_words,
# 0.06 at 16 words). Below it a drop with length measures an unfinished training, not a bottleneck.
LEARNED_ACCURACY = 0.8
# The controls without a bottleneck: each must hold its accuracy from the shortest to the longest length. Their
# allowed drop is the SESOI: a model without a bottleneck that loses as much accuracy with length as the smallest
# bottleneck effect that matters shows that length alone (budget, optimisation) moves accuracy by that much, and
# the difference of drops could then be that, not the bottleneck.
CONTROL_FAMILIES = ("rnn-attention", "transformer")
CONTROL_MAX_DROP = C2_SESOI


@dataclass
class BottleneckSettings:
    """Every knob of the bottleneck ablation (a preset is one of these; ``PRESETS``)."""

    families: tuple[str, ...] = FAMILIES
    seeds: tuple[int, ...] = (0, 1, 2)
    datasets: tuple[str, ...] = DATASETS
    batch_size: int = 32
    threads: int = 1  # torch threads per run (numbers are identical however runs are spread over workers)
    # reverse task: trained on every length from the shortest to the longest of task_lengths (uniform), tested
    # at each of task_lengths (task_num_test sources of exactly that length per bucket)
    task: str = "reverse"
    task_lengths: tuple[int, ...] = (4, 8, 16, 32)
    task_num_words: int = 16
    task_num_train: int = 10000
    task_num_val: int = 200
    task_num_test: int = 200
    # to convergence on validation under a cap: a greedy validation every task_val_every updates, stop after
    # task_patience checks without improvement or at task_max_updates (the cap), test the best check's weights
    task_max_updates: int = 3000
    task_val_every: int = 150
    task_patience: int = 4
    # learning-rate pilot: every rate of the grid per family, on seeds apart from the verdict's
    pilot_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    pilot_seeds: tuple[int, ...] = (100,)
    # source-conditioned oracle (OracleDataModule "small" preset otherwise)
    oracle_lengths: tuple[int, ...] = (4, 16, 64)
    oracle_num_train: int = 2000
    oracle_num_test: int = 500
    oracle_updates: int = 300
    oracle_eval_samples: int = 200
    oracle_entropy_samples: int = 2000
    # Multi30k de -> en
    multi30k_updates: int = 300
    # upper bounds of the source-length buckets, in BPE tokens (with 1,000 pieces the test sources' median is about
    # 21 tokens; these give buckets of roughly 200-300 pairs each, the shortest about 190)
    multi30k_buckets: tuple[int, ...] = (15, 20, 26)
    multi30k_max_len: Optional[int] = None  # None: every pair is kept (a cap would empty the longest bucket)
    multi30k_bpe_vocab_size: int = 1000
    multi30k_max_test: Optional[int] = None  # score only the first N test pairs (None: all 1,000)
    # Optimiser and regularisation, the same for every family (the settings all three take); the learning rate
    # is each family's own, chosen by the pilot.
    shared: dict = field(default_factory=lambda: {
        "warmup_steps": 50, "schedule": "constant", "weight_decay": 0.0, "betas": (0.9, 0.98),
        "gradient_clip": 1.0, "dropout": 0.0, "label_smoothing": 0.0})
    # Net sizes per family: the RNN without attention is given a wider LSTM so that its parameter count matches
    # the attention model's (the attention layers add about 4 H^2); the Transformer's width and depth are chosen
    # to land near the same count (the rows record each run's count).
    models: dict = field(default_factory=lambda: {
        "rnn": {"emb_dim": 32, "hidden_dim": 76, "num_layers": 1},
        "rnn-attention": {"emb_dim": 32, "hidden_dim": 64, "num_layers": 1},
        "transformer": {"d_model": 64, "n_heads": 4, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64},
    })

    def check(self) -> "BottleneckSettings":
        unknown = sorted(set(self.datasets) - set(DATASETS))
        if unknown:
            raise ConfigError(f"bottleneck.datasets: unknown {unknown}; choose from {', '.join(DATASETS)}")
        missing = sorted(set(self.families) - set(self.models))
        if missing:
            raise ConfigError(f"bottleneck.models has no net settings for {missing}")
        for name in ("batch_size", "task_max_updates", "task_val_every", "task_patience", "oracle_updates",
                     "multi30k_updates", "task_num_words", "task_num_train", "task_num_val", "task_num_test",
                     "oracle_num_train", "oracle_num_test", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bottleneck.{name} must be >= 1, got {getattr(self, name)}")
        if self.task_val_every > self.task_max_updates:
            raise ConfigError(f"bottleneck.task_val_every ({self.task_val_every}) must be <= task_max_updates "
                              f"({self.task_max_updates}): no validation would run before the cap")
        if not self.pilot_lrs or min(self.pilot_lrs) <= 0:
            raise ConfigError(f"bottleneck.pilot_lrs must be learning rates > 0, got {list(self.pilot_lrs)}")
        if not self.pilot_seeds:
            raise ConfigError("bottleneck.pilot_seeds: give at least one pilot seed")
        shared_seeds = sorted(set(self.pilot_seeds) & set(self.seeds))
        if shared_seeds:
            raise ConfigError(f"bottleneck.pilot_seeds {shared_seeds} are also verdict seeds: the pilot must choose "
                              f"the rates on data the verdict runs do not use")
        if "lr" in self.shared:
            raise ConfigError("bottleneck.shared must not set lr: each family's rate is chosen by the pilot "
                              "(bottleneck.pilot_lrs)")
        for name in ("task_lengths", "oracle_lengths"):
            lengths = getattr(self, name)
            if not lengths or min(lengths) < 1 or list(lengths) != sorted(set(lengths)):
                raise ConfigError(f"bottleneck.{name} must be increasing lengths >= 1, got {list(lengths)}")
        if list(self.multi30k_buckets) != sorted(set(self.multi30k_buckets)) or min(self.multi30k_buckets, default=1) < 1:
            raise ConfigError(f"bottleneck.multi30k_buckets must be increasing bounds >= 1, got "
                              f"{list(self.multi30k_buckets)}")
        if not self.seeds:
            raise ConfigError("bottleneck.seeds: give at least one seed")
        return self

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def lecture() -> BottleneckSettings:
    """The lecture preset: 3 seeds; a pilot of 3 rates per family on 1 seed; reverse capped at 3,000 updates (its
    cost: docs/experiments.md, C2)."""
    return BottleneckSettings()


def smoke() -> BottleneckSettings:
    """For tests: seconds. Two lengths per synthetic data set, tiny nets, a handful of updates; Multi30k is
    left out (its data alone take seconds to read and tokenize; the tests run it on a small corpus of their own)."""
    return BottleneckSettings(
        seeds=(0,), datasets=("reverse", "oracle"), batch_size=8, task_lengths=(3, 5), task_num_words=6,
        task_num_train=64, task_num_val=16, task_num_test=16, task_max_updates=30, task_val_every=10,
        task_patience=2, pilot_lrs=(3e-3, 1e-2), pilot_seeds=(100,), oracle_lengths=(2, 4), oracle_num_train=64,
        oracle_num_test=16, oracle_updates=30, oracle_eval_samples=16, oracle_entropy_samples=50,
        multi30k_updates=30, multi30k_buckets=(4, 8), multi30k_bpe_vocab_size=300, multi30k_max_test=40,
        models={"rnn": {"emb_dim": 8, "hidden_dim": 12, "num_layers": 1},
                "rnn-attention": {"emb_dim": 8, "hidden_dim": 8, "num_layers": 1},
                "transformer": {"d_model": 8, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
                                "d_ff": 8}})


PRESETS: dict[str, Callable[[], BottleneckSettings]] = {"lecture": lecture, "smoke": smoke}


def get_preset(name: str) -> BottleneckSettings:
    if name not in PRESETS:
        raise ConfigError(f"unknown bottleneck preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# ---- the pre-registration ------------------------------------------------------------------------------------


def preregistration(preset: str) -> dict:
    """C2's settings (the pilot's grid and seeds, the cap and patience among them), selection rule, SESOI and gates
    as one JSON-able dict, for the lecture's pre-registration hash. The rates the pilot chooses are its outcome,
    written to ``OUT/pilot.json`` before any verdict run starts."""
    return {"question": "C2", "preset": preset, "settings": get_preset(preset).to_dict(), "sesoi": C2_SESOI,
            "primary": "token accuracy drop shortest->longest reverse length, rnn - rnn-attention, paired by seed",
            "pilot_rule": P.RULE,
            "gates": {"learned_accuracy": LEARNED_ACCURACY, "control_families": list(CONTROL_FAMILIES),
                      "control_max_drop": CONTROL_MAX_DROP}}
