"""C2, ``gvt ablate bottleneck``: the context vector is the bottleneck of an RNN seq2seq; attention removes it.

The lecture's claim: in a seq2seq without attention the decoder sees the source only through the encoder's final
hidden state (one vector of fixed size, whatever the source's length), so quality falls as sources grow; a
decoder that attends over every encoder state does not have that bottleneck.

What runs: the families ``rnn`` (LSTM encoder-decoder, no attention), ``rnn-attention`` (additive attention) and
``transformer`` (roughly matched parameter counts, recorded in every row as ``num_parameters``), each at its own
learning rate, chosen by a pilot (``experiments.c2_bottleneck.pilot``: a small grid ``pilot_lrs`` on the pilot seeds
``pilot_seeds``, apart from the verdict's seeds; the choice is in ``OUT/pilot.json`` and in every row as ``lr``),
and otherwise the same optimiser settings (``shared``), batch size and seeds, on

- **reverse** (``modules.data.tasks.TaskDataModule``), the primary data set: one model per family and seed,
  trained on sources of every length from the shortest to the longest of ``task_lengths`` (uniform over that
  range), to convergence on validation under a stated cap: every ``task_val_every`` updates the validation split
  (mixed lengths) is greedily decoded, training stops after ``task_patience`` checks without a better validation
  token accuracy or at ``task_max_updates``, and the best check's weights are scored (each row records
  ``best_step``, ``stopped_at`` and ``hit_cap``). The families' budgets may differ (each stops when it stops
  improving); the rows record each run's ``updates`` and ``samples_seen``. Evaluation is bucketed by length: for
  each length L of ``task_lengths`` a test set of ``task_num_test`` sources of exactly L words, none of them in the
  training or validation split (``by_length`` in the row), scored by greedy decoding through the shared sampler
  (``greedy_task_scores``): ``exact_match`` (the whole output right) and ``token_accuracy`` (the share of the
  target's words and its end token predicted at their position); chance token accuracy is about 1 / num_words.
  Also ``nll_test_per_token`` (teacher-forced).
- **oracle** (``modules.data.OracleDataModule``, condition ``source``): at each source length in
  ``oracle_lengths`` (its ``source_len``; the targets keep the oracle's length), ``oracle_updates`` updates at the
  family's piloted rate. ``nll_test_per_token`` (the model's NLL of the test targets given their sources),
  ``nll_oracle_per_token`` (the oracle's NLL of the model's samples), both from the shared evaluation
  (``trainer.test``), and ``excess_nll_per_token`` = NLL_test minus the oracle's own entropy per token (its KL to
  the oracle per token): the entropy changes with the source length, so only the excess is comparable across
  lengths.
- **multi30k** (de -> en, read by ``modules.data.TextDataModule`` from ``$GVT_DATA_DIR/multi30k``; nothing is
  written there): one run per family and seed (``multi30k_updates`` at the piloted rate), its test split bucketed
  by source length in tokens (``multi30k_buckets``). Per bucket: ``nll_test_per_token`` and ``bleu4`` (corpus
  BLEU-4, Papineni et al., of the greedy translations against their own references, on whitespace words of the
  detokenized text: ``modules.metrics.bleu.corpus_bleu``; not sacreBLEU's tokenization, so not comparable with
  published numbers).

The oracle and Multi30k are secondary (reported, not decided): they keep fixed budgets, and the rate their runs use
is the one piloted on reverse.

Every run is one row of ``OUT/results.jsonl`` (``experiments.core.results.ResultsTable``: atomic, one row per key),
keyed by its settings' hash; rerunning the command skips finished runs (resumable), the pilot's too (rows of kind
``bottleneck_pilot``). Each run seeds everything from its seed (``pl.seed_everything``; the task's data are drawn
with ``task_seed`` = the seed, the same data for every family at a seed), runs on 1 torch thread, so a run is
reproduced exactly by its seed on CPU.

**Verdict C2** (``verdict``; the rule of ``experiments.core.verdicts``): per seed on reverse, the drop of ``rnn``'s
token accuracy from the shortest to the longest length minus the same drop of ``rnn-attention`` (paired by
seed; positive: the model without attention loses more with length). SESOI ``C2_SESOI`` = 0.1 token accuracy.
Gates, in this order (any failing one makes C2 inconclusive, its margin in the reason):

1. both RNN families learned the task at the shortest length (mean token accuracy at least ``LEARNED_ACCURACY``,
   far above chance): a model that never learned has nothing to lose with length;
2. every control without a bottleneck that ran (``CONTROL_FAMILIES``: ``rnn-attention`` and ``transformer``) holds
   its accuracy at the longest length: it learned the shortest (``LEARNED_ACCURACY``) and its mean drop from the
   shortest to the longest length is at most ``CONTROL_MAX_DROP``. Where a model without a bottleneck also loses
   accuracy with length, the drop mixes the bottleneck with budget and optimisation difficulty, and the
   difference of drops cannot be read as the bottleneck alone.

The transformer's drop, the exact-match drops, the oracle's excess NLL and the Multi30k BLEU by bucket are secondary
cells (reported, not decided).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from experiments.c2_bottleneck import pilot as P
from experiments.core.execute import run_tasks
from experiments.core.report import nan_to_none
from experiments.core.results import ResultsTable
from experiments.core.runner import config_hash
from experiments.core.stats import finite, t_interval
from experiments.core.verdicts import (INCONCLUSIVE, NOT_RUN, Cell, Verdict, VerdictSettings, _not_run, _standard,
                                  paired, per_seed, verdict_rows)
from modules.errors import ConfigError
from modules.files import atomic_write_text

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


# ---- the runs ------------------------------------------------------------------------------------------------


def multi30k_data(settings: BottleneckSettings, root: Optional[str] = None) -> dict:
    """Multi30k de -> en as ``TextDataModule`` settings (the files under ``root``, default
    ``$GVT_DATA_DIR/multi30k``; read only)."""
    root = root or "$GVT_DATA_DIR/multi30k"
    return {"class_path": "modules.data.TextDataModule", "init_args": {
        "format": "parallel", "root": root,
        "train": {"src": "train.de.gz", "tgt": "train.en.gz"},
        "val": {"src": "val.de.gz", "tgt": "val.en.gz"},
        "test": {"src": "test_2016_flickr.de.gz", "tgt": "test_2016_flickr.en.gz"},
        "tokenizer": "bpe", "bpe_vocab_size": settings.multi30k_bpe_vocab_size,
        "max_len": settings.multi30k_max_len}}


def _multi30k_folder(root: Optional[str]) -> Path:
    from modules.data.corpora import expand_path

    return Path(expand_path(root or "$GVT_DATA_DIR/multi30k"))


def multi30k_available(root: Optional[str] = None) -> bool:
    files = multi30k_data(BottleneckSettings(), root)["init_args"]
    folder = _multi30k_folder(root)
    return all((folder / files[split][side]).is_file() for split in ("train", "val", "test") for side in ("src", "tgt"))


def corpora(settings: BottleneckSettings, multi30k_root: Optional[str] = None) -> dict[str, dict]:
    """The lecture's corpus contract (``experiments.core.corpus_check``): Multi30k, where the settings name it, is not
    needed for C2's verdict (the reverse task decides it); without it ``run`` leaves its buckets out."""
    if "multi30k" not in settings.datasets:
        return {}
    from experiments.core.corpus_check import text_data_files

    return {"multi30k": {"files": text_data_files(multi30k_data(settings, multi30k_root)), "needed": False,
                         "part": "The Multi30k buckets"}}


def _data(settings: BottleneckSettings, dataset: str, length: Optional[int], seed: int,
          multi30k_root: Optional[str]) -> dict:
    if dataset == "reverse":  # every length of the preset's range in one model's data
        return {"class_path": "modules.data.TaskDataModule", "init_args": {
            "task": settings.task, "num_words": settings.task_num_words, "min_len": min(settings.task_lengths),
            "max_len": max(settings.task_lengths), "num_train": settings.task_num_train,
            "num_val": settings.task_num_val, "num_test": settings.task_num_test, "task_seed": seed}}
    if dataset == "oracle":
        return {"class_path": "modules.data.OracleDataModule", "init_args": {
            "preset": "small", "condition": "source", "source_len": length, "num_train": settings.oracle_num_train,
            "num_val": 1, "num_test": settings.oracle_num_test, "oracle_seed": 0}}
    return multi30k_data(settings, multi30k_root)


def _spec(settings: BottleneckSettings, kind: str, dataset: str, length: Optional[int], family: str, seed: int,
          lr: float, multi30k_root: Optional[str]) -> dict:
    if dataset == "reverse":
        # no sample metrics at the validations: early stopping reads the greedy token accuracy alone
        model = {**settings.shared, **settings.models[family], "lr": lr,
                 "evaluation": {"num_eval_samples": 0, "num_logged_samples": 0}}
        updates = settings.task_max_updates
        train = {"max_updates": settings.task_max_updates, "val_every": settings.task_val_every,
                 "patience": settings.task_patience, "eval_lengths": list(settings.task_lengths),
                 "test": kind == "bottleneck"}  # the pilot never reads the test split
    else:
        model = {**settings.shared, **settings.models[family], "lr": lr}
        updates = settings.oracle_updates if dataset == "oracle" else settings.multi30k_updates
        train = None
    spec = {
        "kind": kind, "dataset": dataset, "src_len": length, "family": family, "seed": int(seed),
        "batch_size": settings.batch_size, "updates": updates, "train": train,
        "data": _data(settings, dataset, length, int(seed), multi30k_root), "model": model,
        "measure": {"oracle_eval_samples": settings.oracle_eval_samples,
                    "oracle_entropy_samples": settings.oracle_entropy_samples,
                    "buckets": list(settings.multi30k_buckets), "max_test": settings.multi30k_max_test},
        "threads": settings.threads,
    }
    spec = json.loads(json.dumps(spec))  # tuples -> lists: the hash of a spec read back is the same
    where = dataset if length is None else f"{dataset}-L{length}"
    prefix = "pilot__" if kind == P.PILOT_KIND else ""
    spec["key"] = f"{prefix}{where}__{family}__lr{lr:g}__seed{seed}__{config_hash(spec)}"
    return spec


def pilot_plan(settings: BottleneckSettings) -> list[dict]:
    """The learning-rate pilot: one reverse run per (family, rate of ``pilot_lrs``, pilot seed)."""
    settings.check()
    return [_spec(settings, P.PILOT_KIND, "reverse", None, family, seed, float(lr), None)
            for family in settings.families for lr in settings.pilot_lrs for seed in settings.pilot_seeds]


def plan(settings: BottleneckSettings, rates: dict[str, float], multi30k_root: Optional[str] = None) -> list[dict]:
    """The verdict's runs: one spec per (data set, source length (the oracle's; reverse trains on all lengths in
    one run), family, seed), each family at its rate ``rates[family]`` (the pilot's choice; a family without one is
    not planned): plain JSON, keyed by its hash."""
    settings.check()
    specs = []
    for dataset in settings.datasets:
        lengths = settings.oracle_lengths if dataset == "oracle" else (None,)
        for length in lengths:
            for seed in settings.seeds:
                for family in settings.families:
                    if family in rates:
                        specs.append(_spec(settings, "bottleneck", dataset, length, family, int(seed),
                                           float(rates[family]), multi30k_root))
    return specs


def bucket_of(length: int, bounds: Sequence[int]) -> str:
    """The name of the bucket of a source length: ``<=10``, ``11-15``, ..., ``>20`` for bounds (10, 15, 20)."""
    lower = 1
    for bound in bounds:
        if length <= bound:
            return f"<={bound}" if lower == 1 else f"{lower}-{bound}"
        lower = bound + 1
    return f">{bounds[-1]}" if bounds else "all"


def bucket_names(bounds: Sequence[int]) -> list[str]:
    return [bucket_of(b, bounds) for b in bounds] + ([f">{bounds[-1]}"] if bounds else ["all"])


def _nll_per_example(model, examples, batch_size: int = 256):
    """Teacher-forced log p(target | source) per example under the model's sampling distribution (the shared
    ``GeneratorModule.score_batch``) -> (summed NLL (N,), scored tokens (N,))."""
    import torch

    from modules.data.batch import collate

    nll, tokens = [], []
    with torch.no_grad(), model.generator_in_eval_mode():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start:start + batch_size]).to(model.device)
            log_p, count = model.score_batch(batch, start // batch_size)
            nll.append(-log_p.double())
            tokens.append(count)
    return torch.cat(nll), torch.cat(tokens)


def _greedy_translations(model, examples, batch_size: int = 256) -> list[list[int]]:
    from modules.data.batch import pad_sequences
    from modules.data.vocab import PAD_ID

    out = []
    for start in range(0, len(examples), batch_size):
        src = pad_sequences([ex.src for ex in examples[start:start + batch_size]])
        samples = model.sample(src, src.eq(PAD_ID), greedy=True)
        out += model.decode_samples(samples.tokens, samples.lengths)
    return out


def measure_task(model, dm) -> dict:
    from modules.data.tasks import greedy_task_scores

    scores = greedy_task_scores(model, dm, "test")
    nll, tokens = _nll_per_example(model, dm.examples("test"))
    return {"exact_match": float(scores.exact_match.mean()), "token_accuracy": float(scores.token_accuracy.mean()),
            "chance_token_accuracy": 1.0 / dm.num_words, "nll_test_per_token": float(nll.sum() / tokens.sum()),
            "num_test": int(scores.exact_match.numel())}


def length_test_sets(data: dict, dm, lengths: Sequence[int], batch_size: int, seed: int) -> dict[int, object]:
    """Per length L, a data module whose test split holds sources of exactly L words, none of them in ``dm``'s
    training or validation split: the same settings and ``task_seed`` draw the same training and validation
    examples first, and the test sources are then drawn unique against them."""
    from experiments.core.datamodules import build_datamodule

    out = {}
    for length in lengths:
        spec = {**data, "init_args": {**data["init_args"], "test_min_len": int(length), "test_max_len": int(length)}}
        at = build_datamodule(spec, batch_size, seed)
        at.prepare()
        if at.examples("train") != dm.examples("train") or at.examples("val") != dm.examples("val"):
            raise RuntimeError(f"the test set of length {length} was not drawn after the run's own training data: "
                               "its sources could be in the training split")
        out[int(length)] = at
    return out


def measure_task_by_length(model, data: dict, dm, lengths: Sequence[int], batch_size: int, seed: int) -> dict:
    """``by_length``: the reverse scores (``measure_task``) of each length's test set, and their mean over the
    lengths."""
    by_length = {str(n): measure_task(model, at)
                 for n, at in length_test_sets(data, dm, lengths, batch_size, seed).items()}
    mean = lambda k: sum(b[k] for b in by_length.values()) / len(by_length)  # noqa: E731
    return {"by_length": by_length, "lengths": [int(n) for n in lengths], "token_accuracy": mean("token_accuracy"),
            "exact_match": mean("exact_match"), "chance_token_accuracy": 1.0 / dm.num_words,
            "num_test": sum(b["num_test"] for b in by_length.values())}


def measure_oracle(model, dm, trainer, measure: dict) -> dict:
    model.evaluation.num_eval_samples = int(measure["oracle_eval_samples"])
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    metrics = {k.split("/", 1)[1]: float(v) for k, v in result.items() if k.startswith("test/")}
    entropy, entropy_se = dm.entropy_per_token(num_samples=int(measure["oracle_entropy_samples"]))
    out = {"nll_test_per_token": metrics["nll_test_per_token"],
           "nll_oracle_per_token": metrics.get("nll_oracle_per_token", math.nan),
           "oracle_entropy_per_token": entropy, "oracle_entropy_se": entropy_se,
           "excess_nll_per_token": metrics["nll_test_per_token"] - entropy, "num_test": len(dm.examples("test"))}
    return out


def measure_translation(model, dm, measure: dict) -> dict:
    """Per source-length bucket of the test split: NLL_test per token and corpus BLEU-4 of greedy translations."""
    from modules.metrics.bleu import corpus_bleu

    examples = dm.examples("test")[:measure.get("max_test")]
    bounds = measure["buckets"]
    nll, tokens = _nll_per_example(model, examples)
    hypotheses = _greedy_translations(model, examples)
    words = lambda ids: model.to_text(ids).split()  # noqa: E731
    buckets = {}
    for name in bucket_names(bounds):
        index = [i for i, ex in enumerate(examples) if bucket_of(len(ex.src), bounds) == name]
        if not index:
            buckets[name] = {"num_test": 0, "nll_test_per_token": math.nan, "bleu4": math.nan}
            continue
        bleu = corpus_bleu([words(hypotheses[i]) for i in index], [words(examples[i].tgt) for i in index])
        buckets[name] = {"num_test": len(index), "nll_test_per_token": float(nll[index].sum() / tokens[index].sum()),
                         "bleu4": bleu}
    all_bleu = corpus_bleu([words(h) for h in hypotheses], [words(ex.tgt) for ex in examples])
    return {"nll_test_per_token": float(nll.sum() / tokens.sum()), "bleu4": all_bleu, "num_test": len(examples),
            "buckets": buckets, "bucket_names": list(buckets)}  # (the table stores dicts with sorted keys)


def run_spec(spec: dict, out: str | Path, wandb_mode: str = "disabled") -> dict:
    """Train and measure one run of the plan; returns its row (the caller adds it to the table)."""
    import pytorch_lightning as pl
    import torch

    from experiments.core.datamodules import build_datamodule
    from experiments.core.families import get_family
    from experiments.core.runner import BudgetCallback, _finish_wandb, _quiet_lightning

    start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out)
    folder = out / "runs" / spec["key"]
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(spec.get("threads") or 1))
    family = get_family(spec["family"])
    with _quiet_lightning():
        pl.seed_everything(int(spec["seed"]), workers=True, verbose=False)
        dm = build_datamodule(spec["data"], int(spec["batch_size"]), int(spec["seed"]))
        dm.prepare()
        model = family.load_class()(vocab_size=dm.vocab_size, **family.init_kwargs(spec["model"]))
        loggers = False
        if wandb_mode != "disabled":
            from modules.tracking import Tracking

            loggers = Tracking(name=spec["key"], group="bottleneck", job_type=family.name,
                               tags=[family.name, spec["dataset"], f"seed{spec['seed']}"], wandb_mode=wandb_mode,
                               ).loggers(save_dir=str(out / "runs"), family=family.name, config=spec)
        updates = int(spec["updates"])
        budget = BudgetCallback(updates, int(spec["batch_size"]), every=max(1, updates // 20))
        callbacks, validation, keep_best = [budget.as_lightning()], dict(limit_val_batches=0), None
        if spec.get("train"):  # reverse: to convergence on validation under the cap (experiments.c2_bottleneck.pilot)
            from modules.callbacks import KeepBestOnValidation

            keep_best = KeepBestOnValidation(P.MONITOR, "max", patience=int(spec["train"]["patience"]))
            callbacks += [P.task_accuracy_callback(dm), keep_best]
            validation = dict(val_check_interval=int(spec["train"]["val_every"]), check_val_every_n_epoch=None)
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=loggers, callbacks=callbacks, max_steps=updates,
                             max_epochs=-1, num_sanity_val_steps=0, **validation, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             log_every_n_steps=max(1, updates // 20), default_root_dir=str(folder))
        fit_start = time.perf_counter()
        trainer.fit(model, datamodule=dm)  # with keep_best, ends on the best validation's weights
        fit_time = time.perf_counter() - fit_start
        stopping = {}
        if keep_best is not None:
            stopping = {"best_step": keep_best.best_step, "val_token_accuracy": keep_best.best,
                        "val_checks": keep_best.checks, "stopped_at": int(trainer.global_step),
                        "max_updates": updates, "hit_cap": int(trainer.global_step) >= updates}
        if spec["dataset"] == "reverse" and not spec["train"]["test"]:
            metrics = {}  # a pilot run: its validation accuracy is all the choice reads
        elif spec["dataset"] == "reverse":
            metrics = measure_task_by_length(model, spec["data"], dm, spec["train"]["eval_lengths"],
                                             int(spec["batch_size"]), int(spec["seed"]))
        elif spec["dataset"] == "oracle":
            metrics = measure_oracle(model, dm, trainer, spec["measure"])
        else:
            metrics = measure_translation(model, dm, spec["measure"])
    row = {
        "key": spec["key"], "kind": spec.get("kind", "bottleneck"), "dataset": spec["dataset"],
        "src_len": spec["src_len"], "family": family.name, "seed": spec["seed"], "batch_size": spec["batch_size"],
        "lr": float(spec["model"]["lr"]),
        "config_hash": config_hash(spec), "updates": int(trainer.global_step),
        "samples_seen": int(trainer.global_step) * int(spec["batch_size"]),
        "underpowered": int(spec["updates"]) < _min_updates(),
        "num_parameters": sum(p.numel() for p in model.generator.parameters()),
        "optimizer": model.generator_optimizer_settings(), "final_train_loss": _last_loss(budget.curve),
        "diverged": budget.nonfinite is not None, "fit_time_s": fit_time, **stopping, **metrics,
        "wall_time_s": time.perf_counter() - start,
        # CPU seconds of this run's process: what the run costs on an idle core, however loaded the machine was
        "cpu_time_s": time.process_time() - cpu_start,
    }
    if loggers:
        _finish_wandb(loggers, row)
    return row


def _min_updates() -> int:
    from experiments.core.verdicts import MIN_VERDICT_UPDATES

    return MIN_VERDICT_UPDATES


def _last_loss(curve: list[dict]) -> float:
    losses = [p["train/loss"] for p in curve if "train/loss" in p]
    return float(losses[-1]) if losses else math.nan


def _run_and_record(spec: dict, out: str, wandb_mode: str) -> tuple[str, bool, str]:
    """In a worker (or in-process): one run, its row added to the table (or its error to errors.jsonl)."""
    table = ResultsTable(out)
    try:
        row = run_spec(spec, out, wandb_mode)
    except Exception as err:  # recorded and retried by the next invocation; the other runs go on
        table.add_error(spec["key"], "".join(traceback.format_exception(err))[-4000:])
        return spec["key"], False, f"{type(err).__name__}: {err}"
    table.add(row)
    return spec["key"], True, _summary(row)


def _summary(row: dict) -> str:
    where = row["dataset"] + (f" L={row['src_len']}" if row.get("src_len") else "")
    if row.get("kind") == P.PILOT_KIND:
        where = f"pilot lr {row['lr']:g}"
        what = f"val token acc {row['val_token_accuracy'] or math.nan:.3f}  best at {row['best_step']}"
    elif row["dataset"] == "reverse":
        what = "token acc " + " ".join(f"L{n} {b['token_accuracy']:.3f}" for n, b in row["by_length"].items()) + (
            f"  stopped at {row['stopped_at']}" + (" (cap)" if row["hit_cap"] else ""))
    elif row["dataset"] == "oracle":
        what = f"excess NLL {row['excess_nll_per_token']:.3f}  NLL_oracle {row['nll_oracle_per_token']:.3f}"
    else:
        what = f"BLEU-4 {row['bleu4']:.2f}  NLL_test {row['nll_test_per_token']:.3f}"
    return f"{where:<16} {row['family']:<14} seed {row['seed']}  {what}  ({row['wall_time_s']:.1f}s)"


def _run_specs(specs: list[dict], out: Path, what: str, workers: int, wandb_mode: str, echo) -> None:
    """Run the specs whose row is not yet in ``out/results.jsonl``; a run that raises is recorded in
    ``out/errors.jsonl`` and left out, the others go on."""
    from tqdm.auto import tqdm

    done = ResultsTable(out).keys()
    pending = [s for s in specs if s["key"] not in done]
    if len(pending) < len(specs):
        echo(f"bottleneck: {len(specs) - len(pending)} of {len(specs)} {what} runs already in {out / 'results.jsonl'}")
    failed = []
    if pending:
        bar = tqdm(total=len(pending), desc=f"bottleneck {what}", unit="run", dynamic_ncols=True, file=sys.stderr)

        def settle(spec: dict, result) -> list:
            if isinstance(result, Exception):  # the worker process itself died (a run's own error is in result)
                ok, message = False, f"{spec['key']}: worker died: {result}"
            else:
                _, ok, message = result
            bar.update(1)
            bar.write(("  " if ok else "  FAILED ") + message, file=sys.stderr)
            if not ok:
                failed.append(message)
            return []

        try:
            run_tasks(pending, functools.partial(_run_and_record, out=str(out), wandb_mode=wandb_mode), settle,
                      workers)
        finally:
            bar.close()
    if failed:
        echo(f"bottleneck: {len(failed)} {what} run(s) failed (see {out / 'errors.jsonl'}); run the command again "
             "to retry")


def run(settings: BottleneckSettings, out: Path, *, workers: int = 2, wandb_mode: str = "offline",
        echo=print, multi30k_root: Optional[str] = None) -> list[dict]:
    """The pilot, then the verdict's runs at the pilot's rates, into ``out`` (resumably: runs whose row is in
    ``out/results.jsonl`` are not run again); returns the rows of both (the pilot's are of kind
    ``bottleneck_pilot``). The pilot's choice is written to ``out/pilot.json``; a family whose pilot runs all
    failed is left out of the verdict's runs, saying so."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings.check()
    if "multi30k" in settings.datasets and not multi30k_available(multi30k_root):
        # the corpora are inputs, not part of the package: without them the other data sets still run
        echo(f"bottleneck: multi30k not run: no corpus at {_multi30k_folder(multi30k_root)} (set GVT_DATA_DIR)")
        settings = dataclasses.replace(settings, datasets=tuple(d for d in settings.datasets if d != "multi30k"))
    pilot = pilot_plan(settings)
    _run_specs(pilot, out, "pilot", workers, wandb_mode, echo)
    pilot_keys = {s["key"] for s in pilot}
    pilot_rows = [r for r in ResultsTable(out).rows() if r["key"] in pilot_keys]
    choice = P.choose_rates(pilot_rows, settings.families)
    P.write_pilot(out, settings.to_dict(), pilot_rows, choice)
    missing = [f for f in settings.families if f not in choice]
    if missing:
        echo(f"bottleneck: no finished pilot run for {', '.join(missing)}: left out of the verdict's runs")
    echo("bottleneck: " + P.choice_text(pilot_rows, settings.families))
    specs = plan(settings, {f: c["lr"] for f, c in choice.items()}, multi30k_root)
    atomic_write_text(out / SETTINGS_FILE, json.dumps({"settings": settings.to_dict(), "rates": choice,
                                                      "keys": [s["key"] for s in pilot + specs]}, indent=1) + "\n")
    _run_specs(specs, out, "verdict", workers, wandb_mode, echo)
    keys = {s["key"] for s in specs}
    return pilot_rows + [r for r in ResultsTable(out).rows() if r["key"] in keys]


# ---- summaries -----------------------------------------------------------------------------------------------


def _rows(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def lengths_of(rows: list[dict], dataset: str) -> list[int]:
    """The source lengths measured: the length buckets of mixed-length runs (``by_length``) and the lengths of
    one-length runs (``src_len``)."""
    found = set()
    for r in _rows(rows, dataset=dataset):
        if r.get("by_length"):
            found |= {int(n) for n in r["by_length"]}
        elif r.get("src_len") is not None:
            found.add(r["src_len"])
    return sorted(found)


def at_length(rows: list[dict], dataset: str, family: str, length: int, name: str) -> dict[int, float]:
    """Per seed: metric ``name`` at source ``length``, from a mixed-length run's bucket or a one-length run."""
    def value(r: dict) -> Optional[float]:
        if r.get("by_length"):
            return (r["by_length"].get(str(length)) or {}).get(name)
        return r.get(name) if r.get("src_len") == length else None

    return per_seed(_rows(rows, dataset=dataset, family=family), value)


def families_in(rows: list[dict]) -> list[str]:
    present = {r["family"] for r in rows}
    return [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES))


def bucket_metric(bucket: str, name: str) -> Callable[[dict], Optional[float]]:
    return lambda r: ((r.get("buckets") or {}).get(bucket) or {}).get(name)


def drop(rows: list[dict], family: str, dataset: str, name: str, short: int, long: int) -> dict[int, float]:
    """Per seed: metric ``name`` at the shortest length minus at the longest (positive: worse at the longer one,
    for a higher-is-better metric)."""
    a, b = (at_length(rows, dataset, family, n, name) for n in (short, long))
    return {s: a[s] - b[s] for s in sorted(a) if s in b}


# ---- the verdict ---------------------------------------------------------------------------------------------


RULE_TEXT = (f"Reverse task, one model per family and seed trained on mixed lengths at its piloted learning rate to "
             f"convergence on validation (under the cap), tested per length bucket. Per seed: token accuracy of "
             f"greedy decoding at the shortest source length minus at the longest (the drop), rnn's drop minus "
             f"rnn-attention's, paired by seed (positive: the model without attention loses more with length). "
             f"SESOI {C2_SESOI} token accuracy (one output word in ten). Gates: (1) rnn and rnn-attention learned "
             f"the task at the shortest length (mean token accuracy >= {LEARNED_ACCURACY}; chance is about 1 / "
             f"number of words); (2) every control without a bottleneck ({', '.join(CONTROL_FAMILIES)}, those run) "
             f"holds its accuracy: it learned the shortest length and its mean drop to the longest is at most "
             f"{CONTROL_MAX_DROP} (else the drop mixes the bottleneck with budget and optimisation difficulty). "
             f"Other families, exact match, the oracle and Multi30k are reported beside it.")


def _mean(values: dict[int, float]) -> float:
    return t_interval(list(values.values())).mean if values else math.nan


def _learned_gate(rows: list[dict], family: str, short: int) -> Optional[str]:
    mean = _mean(at_length(rows, "reverse", family, short, "token_accuracy"))
    if mean >= LEARNED_ACCURACY:
        return None
    chance = next((r.get("chance_token_accuracy") for r in _rows(rows, dataset="reverse", family=family)), math.nan)
    return (f"{family} did not learn the reverse task at the shortest length {short}: mean token accuracy "
            f"{mean:.3g} < {LEARNED_ACCURACY} (chance {chance if chance is not None else math.nan:.3g}); a drop "
            f"from there measures an unfinished training, not a bottleneck")


def control_gate(rows: list[dict], short: int, long: int) -> tuple[Optional[str], list[str]]:
    """Gate (2) of the module docstring: (the failure, or None; one line per control with its drop and margin)."""
    lines, failure = [], None
    for family in [f for f in CONTROL_FAMILIES if _rows(rows, dataset="reverse", family=f)]:
        at_short = _mean(at_length(rows, "reverse", family, short, "token_accuracy"))
        mean_drop = _mean(drop(rows, family, "reverse", "token_accuracy", short, long))
        margin = CONTROL_MAX_DROP - mean_drop
        lines.append(f"- control gate, {family}: token accuracy L={short} {at_short:.3g}, mean drop to L={long} "
                     f"{mean_drop:.3g} (allowed {CONTROL_MAX_DROP}; margin {margin:+.3g})")
        if failure is not None:
            continue
        learned = _learned_gate(rows, family, short)
        if learned is not None:
            failure = f"control {learned}"
        elif not (mean_drop <= CONTROL_MAX_DROP):
            failure = (f"the control without a bottleneck {family} does not hold its accuracy at the longest length: "
                       f"mean token accuracy drop L={short}->{long} {mean_drop:.3g} > {CONTROL_MAX_DROP} (gate "
                       f"margin {margin:+.3g}); the drop mixes the bottleneck with budget and optimisation difficulty")
    return failure, lines


def _stopping_lines(rows: list[dict]) -> list[str]:
    lines = []
    for family in families_in(_rows(rows, dataset="reverse")):
        frows = [r for r in _rows(rows, dataset="reverse", family=family) if "stopped_at" in r]
        if frows:
            cap = frows[0].get("max_updates")
            lines.append(f"- {family}: lr {frows[0].get('lr', math.nan):g}; stopped at "
                         + ", ".join(f"{r['stopped_at']} (best {r['best_step']})" for r in frows)
                         + f" updates; {sum(bool(r.get('hit_cap')) for r in frows)} of {len(frows)} at the cap {cap}")
    return lines


def verdict(rows: list[dict], *, alpha: float = 0.05, min_seeds: int = 3) -> Verdict:
    """Verdict C2 (module docstring): the primary cell ``drop_difference`` (rnn's token-accuracy drop from the
    shortest to the longest reverse length minus rnn-attention's, per seed), SESOI ``C2_SESOI``, gated on both
    RNNs having learned the task at the shortest length and on the controls without a bottleneck holding their
    accuracy at the longest. ``rows`` may hold the pilot's rows: its choice is stated, never judged."""
    settings = VerdictSettings(alpha=alpha, min_seeds=min_seeds)
    pilot = P.pilot_rows(rows)
    rows = verdict_rows([r for r in rows if r.get("kind", "bottleneck") == "bottleneck"])  # underpowered: reported
    claim = ("In seq2seq the encoder's final hidden state (the context vector) is the bottleneck; attention over "
             "all encoder states removes it.")
    lengths = lengths_of(rows, "reverse")
    primary = "drop_difference"
    if len(lengths) < 2 or not all(_rows(rows, dataset="reverse", family=f) for f in ("rnn", "rnn-attention")):
        why = ("not run: needs rnn and rnn-attention on the reverse task at two source lengths or more "
               "(`gvt ablate bottleneck`)")
        return _standard("C2", claim, RULE_TEXT, C2_SESOI, primary,
                         {primary: _not_run("rnn drop - rnn-attention drop (token accuracy)", why, C2_SESOI)},
                         why, [], settings)
    short, long = lengths[0], lengths[-1]
    gate = _learned_gate(rows, "rnn-attention", short) or _learned_gate(rows, "rnn", short)
    control_failure, control_lines = control_gate(rows, short, long)
    gate = gate or control_failure
    drops = {f: drop(rows, f, "reverse", "token_accuracy", short, long)
             for f in families_in(_rows(rows, dataset="reverse"))}
    cells = {primary: Cell(f"token accuracy drop L={short}->{long}: rnn - rnn-attention",
                           paired(drops["rnn"], drops["rnn-attention"]), C2_SESOI, gate is None,
                           gate or f"both RNNs learned the task at L={short}; the controls hold at L={long}")}
    for family, values in drops.items():
        cells[f"drop {family}"] = Cell(f"token accuracy drop L={short}->{long}, {family}", list(values.values()))
    if "transformer" in drops:
        cells["drop_difference_transformer"] = Cell(f"token accuracy drop L={short}->{long}: rnn - transformer",
                                                    paired(drops["rnn"], drops["transformer"]))
    exact = {f: drop(rows, f, "reverse", "exact_match", short, long) for f in ("rnn", "rnn-attention")}
    cells["exact_match_drop_difference"] = Cell(f"exact match drop L={short}->{long}: rnn - rnn-attention",
                                                paired(exact["rnn"], exact["rnn-attention"]))
    oracle_lengths = lengths_of(rows, "oracle")
    if len(oracle_lengths) >= 2:
        o_short, o_long = oracle_lengths[0], oracle_lengths[-1]
        # excess NLL grows when quality falls: the rise, long minus short, is minus the "drop"
        rise = {f: {s: -v for s, v in drop(rows, f, "oracle", "excess_nll_per_token", o_short, o_long).items()}
                for f in ("rnn", "rnn-attention")}
        cells["oracle_excess_nll_rise_difference"] = Cell(
            f"oracle: rise of NLL_test - H per token from source length {o_short} to {o_long}, rnn - rnn-attention",
            paired(rise["rnn"], rise["rnn-attention"]))
    m30k = _rows(rows, dataset="multi30k")
    if m30k:
        names = [b for b in _bucket_order(m30k) if any(finite(bucket_metric(b, "bleu4")(r)) for r in m30k)]
        if len(names) >= 2:
            fn_short, fn_long = bucket_metric(names[0], "bleu4"), bucket_metric(names[-1], "bleu4")
            loss = {}
            for f in ("rnn", "rnn-attention"):
                frows = _rows(m30k, family=f)
                a, b = per_seed(frows, fn_short), per_seed(frows, fn_long)
                loss[f] = {s: a[s] - b[s] for s in a if s in b}
            cells["multi30k_bleu_drop_difference"] = Cell(
                f"Multi30k: BLEU-4 drop from source bucket {names[0]} to {names[-1]}, rnn - rnn-attention",
                paired(loss["rnn"], loss["rnn-attention"]))
    families = families_in(_rows(rows, dataset="reverse"))
    details = [f"- {P.choice_text(pilot, families)}"]
    details += [f"- reverse, {f}: token accuracy " + "; ".join(
        f"L={n} {t_interval(list(at_length(rows, 'reverse', f, n, 'token_accuracy').values())).fmt()}"
        for n in lengths) for f in families]
    details += control_lines + _stopping_lines(rows)
    return _standard("C2", claim, RULE_TEXT, C2_SESOI, primary, cells, gate, details, settings)


def _bucket_order(rows: list[dict]) -> list[str]:
    for r in rows:
        if r.get("buckets"):
            return list(r.get("bucket_names") or r["buckets"])
    return []


# ---- the report section --------------------------------------------------------------------------------------


METRICS = {  # data set -> (row field, label, higher is better)
    "reverse": [("token_accuracy", "token accuracy", True), ("exact_match", "exact match", True)],
    "oracle": [("excess_nll_per_token", "NLL_test - H (nats/token)", False),
               ("nll_oracle_per_token", "NLL_oracle (nats/token)", False)],
    "multi30k": [("bleu4", "BLEU-4", True), ("nll_test_per_token", "NLL_test (nats/token)", False)],
}


def _points(rows: list[dict], dataset: str, family: str, name: str) -> list[tuple[str, object]]:
    """(x label, interval over seeds) along source length (or bucket for Multi30k)."""
    frows = _rows(rows, dataset=dataset, family=family)
    if dataset == "multi30k":
        return [(b, t_interval(per_seed(frows, bucket_metric(b, name)).values())) for b in _bucket_order(frows)]
    return [(str(n), t_interval(list(at_length(frows, dataset, family, n, name).values())))
            for n in lengths_of(frows, dataset)]


def plot_dataset(rows: list[dict], dataset: str, path: Path) -> Path:
    """Quality against source length per family (mean over seeds, bars: the 95% t-interval)."""
    from matplotlib.figure import Figure

    metrics = METRICS[dataset]
    fig = Figure(figsize=(5.0 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (name, label, _) in zip(axes, metrics):
        for family in families_in(_rows(rows, dataset=dataset)):
            points = _points(rows, dataset, family, name)
            xs = list(range(len(points)))
            means = [iv.mean for _, iv in points]
            err = [[iv.mean - iv.low if iv.defined else 0.0 for _, iv in points],
                   [iv.high - iv.mean if iv.defined else 0.0 for _, iv in points]]
            ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, label=family)
            ax.set_xticks(xs, [x for x, _ in points])
        ax.set_xlabel("source bucket (tokens)" if dataset == "multi30k" else "source length")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"C2, {dataset}: quality against source length (mean over seeds, 95% interval)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _table(rows: list[dict], dataset: str, name: str, label: str) -> list[str]:
    families = families_in(_rows(rows, dataset=dataset))
    columns = [x for x, _ in _points(rows, dataset, families[0], name)] if families else []
    head = "source bucket (tokens)" if dataset == "multi30k" else "source length"
    lines = [f"{label} by {head}:", "", "| family | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for family in families:
        lines.append(f"| {family} | " + " | ".join(iv.fmt(3) for _, iv in _points(rows, dataset, family, name))
                     + " |")
    return lines + [""]


def report_section(rows: list[dict], out: Path) -> tuple[list[str], dict[str, Path]]:
    """The C2 section (tables with seed intervals, what the numbers mean) and its figures, written into ``out``;
    never the verdict table itself."""
    out = Path(out)
    pilot = P.pilot_rows(rows)
    rows = [r for r in rows if r.get("kind") == "bottleneck"]
    lines = ["## C2: the context vector is the bottleneck; attention removes it", ""]
    if not rows:
        return lines + ["not run: no bottleneck runs (`gvt ablate bottleneck`)", ""], {}
    lines += ["Each family at its own learning rate (the pilot's choice, below) and otherwise the same optimiser "
              "settings, batch size and seeds. On reverse one model per family and seed is trained on every "
              "length of the range (uniform) to convergence on validation (greedy token accuracy of the mixed-"
              "length validation split; early stopping with patience, under a cap in updates; the best check's "
              "weights are tested) and tested on one test set per length; the oracle and Multi30k keep fixed "
              "budgets. Every cell is the mean over seeds with its 95% t-interval over seeds (n = seeds).", ""]
    lines += P.pilot_lines(pilot, families_in(rows))
    stopping = _stopping_lines(rows)
    if stopping:
        lines += ["Early stopping on reverse (updates at which each seed's run stopped, and its best check):", "",
                  *stopping, ""]
    params = {f: sorted({r["num_parameters"] for r in _rows(rows, family=f, dataset="reverse")
                         if "num_parameters" in r})
              for f in families_in(rows)}
    if any(params.values()):
        lines += ["Parameters on the reverse task: " + ", ".join(f"{f} {'/'.join(str(p) for p in v)}"
                                                              for f, v in params.items() if v) + ".", ""]
    figures = {}
    notes = {
        "reverse": "Reverse task, one model per family and seed trained on mixed lengths, tested per length "
                   "bucket (sources of exactly that length, none seen in training), greedy decoding: token "
                   "accuracy = share of the target's words and end token right at their position; exact match = "
                   "whole output right. Chance token accuracy is about 1 / number of words.",
        "oracle": "Source-conditioned oracle: NLL_test - H = the model's NLL of held-out targets minus the "
                  "oracle's own entropy per token (its KL to the oracle per token; the entropy changes with the "
                  "source length, the excess is comparable); NLL_oracle = the oracle's NLL of the model's samples.",
        "multi30k": "Multi30k de->en, test split bucketed by source length in BPE tokens: corpus BLEU-4 of greedy "
                    "translations (whitespace words of the detokenized text, not sacreBLEU's tokenization) and "
                    "NLL_test per token.",
    }
    for dataset in DATASETS:
        drows = _rows(rows, dataset=dataset)
        if not drows:
            lines += [f"### {dataset}", "", "not run in this folder", ""]
            continue
        lines += [f"### {dataset}", "", notes[dataset], ""]
        if dataset == "multi30k":
            counts = {b: drows[0]["buckets"][b].get("num_test") for b in _bucket_order(drows)}
            lines += ["Test pairs per bucket: " + ", ".join(f"{b}: {n}" for b, n in counts.items()) + ".", ""]
        for name, label, _ in METRICS[dataset]:
            lines += _table(rows, dataset, name, label)
        figures[f"bottleneck_{dataset}"] = plot_dataset(rows, dataset, out / f"bottleneck_{dataset}.png")
        lines += [f"![{dataset}](bottleneck_{dataset}.png)", ""]
    wall = sum(r.get("wall_time_s", 0.0) for r in rows + pilot)
    cpu = sum(r.get("cpu_time_s", 0.0) for r in rows + pilot)
    lines += [f"{len(rows)} runs and {len(pilot)} pilot runs, {wall / 60:.1f} min of run time in all (summed over "
              "workers)" + (f", {cpu / 60:.1f} min of CPU time." if cpu else "."), ""]
    return lines, figures


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


# ---- the command ---------------------------------------------------------------------------------------------


def write_report(rows: list[dict], out: Path, v: Verdict, settings: BottleneckSettings) -> Path:
    from experiments.core.report import cells_table, verdict_table_text

    folder = Path(out) / "report"
    lines, _ = report_section(rows, folder)
    text = ["# The context-vector bottleneck (C2)", "", "```", verdict_table_text([v], alpha=1 - v.level), "```", "",
            f"**C2 {v.verdict}.** {v.claim}", "", f"Rule: {v.rule}", "", *cells_table(v), "", *v.details, "", *lines]
    atomic_write_text(folder / "report.md", "\n".join(text) + "\n")
    atomic_write_text(folder / "verdicts.json", json.dumps(nan_to_none({
        "questions": {"C2": v.to_json()}, "settings": settings.to_dict()}), indent=1) + "\n")
    return folder / "report.md"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gvt ablate bottleneck", description=(
        "C2: rnn, rnn-attention and transformer, each at the learning rate its pilot chose, on reverse (mixed "
        "lengths, early stopping on validation under a cap, tested per length), the source-conditioned oracle and "
        "Multi30k, quality against source length; writes OUT/pilot.json, OUT/report/report.md and "
        "OUT/report/verdicts.json."))
    parser.add_argument("--preset", default="lecture", choices=sorted(PRESETS))
    parser.add_argument("--out", default="runs/bottleneck", help="run folder (resumable; default runs/bottleneck)")
    parser.add_argument("--seeds", nargs="+", help="seeds, e.g. 0,1,2 (default: the preset's)")
    parser.add_argument("--datasets", nargs="+", help=f"of {', '.join(DATASETS)} (default: the preset's)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"])
    args = parser.parse_args(list(argv))
    os.environ.setdefault("WANDB_SILENT", "true")
    settings = get_preset(args.preset)
    try:
        if args.seeds:
            settings.seeds = tuple(int(s) for part in args.seeds for s in part.split(",") if s)
        if args.datasets:
            settings.datasets = tuple(d for part in args.datasets for d in part.split(",") if d)
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        settings.check()
    except (ConfigError, ValueError) as err:
        print(f"gvt ablate bottleneck: error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows = run(settings, Path(args.out), workers=args.workers, wandb_mode=args.wandb_mode)
    v = verdict(rows)
    path = write_report(rows, Path(args.out), v, settings)
    print(f"C2 {v.verdict}: {v.evidence}")
    print(f"report: {path} ({len(rows)} runs with the pilot's, {time.perf_counter() - start:.0f} s)")
    return 0


__all__ = ["BottleneckSettings", "C2_SESOI", "CONTROL_FAMILIES", "CONTROL_MAX_DROP", "LEARNED_ACCURACY", "PRESETS",
           "control_gate", "main", "pilot_plan", "plan", "preregistration", "report_section", "run", "verdict"]
