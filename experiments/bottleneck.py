"""C2, ``gvt ablate bottleneck``: the context vector is the bottleneck of an RNN seq2seq; attention removes it.

The lecture's claim: in a seq2seq without attention the decoder sees the source only through the encoder's final
hidden state (one vector of fixed size, whatever the source's length), so quality falls as sources grow; a
decoder that attends over every encoder state does not have that bottleneck.

What runs: the families ``rnn`` (LSTM encoder-decoder, no attention), ``rnn-attention`` (additive attention) and
``transformer``, each at an equal budget (the same number of training updates at the same batch size, so the
same number of training samples; the same optimiser settings; roughly matched parameter counts, recorded in
every row as ``num_parameters``) and the same seeds, on

- **reverse** (``modules.data.tasks.TaskDataModule``): random sequences of ``task_num_words`` words at each
  source length in ``task_lengths`` (every example of a run has that length). Scored by greedy decoding through
  the shared sampler (``greedy_task_scores``): ``exact_match`` (the whole output right) and ``token_accuracy``
  (the share of the target's words and its end token predicted at their position), means over the test split;
  chance token accuracy is about 1 / num_words. Also ``nll_test_per_token`` (teacher-forced).
- **oracle** (``modules.data.OracleDataModule``, condition ``source``): at each source length in
  ``oracle_lengths`` (its ``source_len``; the targets keep the oracle's length). ``nll_test_per_token`` (the
  model's NLL of the test targets given their sources), ``nll_oracle_per_token`` (the oracle's NLL of the
  model's samples), both from the shared evaluation (``trainer.test``), and ``excess_nll_per_token`` = NLL_test
  minus the oracle's own entropy per token (its KL to the oracle per token): the entropy changes with the source
  length, so only the excess is comparable across lengths.
- **multi30k** (de -> en, read by ``modules.data.TextDataModule`` from ``$GVT_DATA_DIR/multi30k``; nothing is
  written there): one run per family and seed, its test split bucketed by source length in tokens
  (``multi30k_buckets``). Per bucket: ``nll_test_per_token`` and ``bleu4`` (corpus BLEU-4, Papineni et al., of
  the greedy translations against their own references, on whitespace words of the detokenized text:
  ``modules.metrics.bleu.corpus_bleu``; not sacreBLEU's tokenization, so not comparable with published numbers).

Every run is one row of ``OUT/results.jsonl`` (``experiments.results.ResultsTable``: atomic, one row per key),
keyed by its settings' hash; rerunning the command skips finished runs (resumable). Each run seeds everything
from its seed (``pl.seed_everything``; the task's data are drawn with ``task_seed`` = the seed, the same data for
every family at a seed), runs on 1 torch thread, so a run is reproduced exactly by its seed on CPU.

**Verdict C2** (``verdict``; the rule of ``experiments.verdicts``): per seed on reverse, the drop of ``rnn``'s
token accuracy from the shortest to the longest length minus the same drop of ``rnn-attention`` (paired by
seed; positive: the model without attention loses more with length). SESOI ``C2_SESOI`` = 0.1 token accuracy.
Gate: both RNN families must learn the task at the shortest length (mean token accuracy at least
``LEARNED_ACCURACY``, far above chance); otherwise the drop says nothing about a bottleneck (a model that never
learned has nothing to lose). The transformer's drop, the exact-match drops, the oracle's excess NLL and the
Multi30k BLEU by bucket are secondary cells (reported, not decided).
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

from experiments.execute import run_tasks
from experiments.report import nan_to_none
from experiments.results import ResultsTable
from experiments.runner import config_hash
from experiments.stats import finite, t_interval
from experiments.verdicts import (INCONCLUSIVE, NOT_RUN, Cell, Verdict, VerdictSettings, _not_run, _standard,
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


@dataclass
class BottleneckSettings:
    """Every knob of the bottleneck ablation (a preset is one of these; ``PRESETS``)."""

    families: tuple[str, ...] = FAMILIES
    seeds: tuple[int, ...] = (0, 1, 2)
    datasets: tuple[str, ...] = DATASETS
    batch_size: int = 32
    threads: int = 1  # torch threads per run (numbers are identical however runs are spread over workers)
    # reverse task: every example of a run has one source length
    task: str = "reverse"
    task_lengths: tuple[int, ...] = (4, 8, 16, 32)
    task_num_words: int = 16
    task_num_train: int = 4000
    task_num_test: int = 200
    task_updates: int = 600
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
    # Optimiser and regularisation, the same for every family (the settings all three take).
    shared: dict = field(default_factory=lambda: {
        "lr": 3e-3, "warmup_steps": 50, "schedule": "constant", "weight_decay": 0.0, "betas": (0.9, 0.98),
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
        for name in ("batch_size", "task_updates", "oracle_updates", "multi30k_updates", "task_num_words",
                     "task_num_train", "task_num_test", "oracle_num_train", "oracle_num_test", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bottleneck.{name} must be >= 1, got {getattr(self, name)}")
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
    """The lecture preset: about 10 minutes on 2 CPU cores (2 workers, 1 thread each), 3 seeds."""
    return BottleneckSettings()


def smoke() -> BottleneckSettings:
    """For tests: seconds. Two lengths per synthetic data set, tiny nets, a handful of updates; Multi30k is
    left out (its data alone take seconds to read and tokenize; the tests run it on a small corpus of their own)."""
    return BottleneckSettings(
        seeds=(0,), datasets=("reverse", "oracle"), batch_size=8, task_lengths=(3, 5), task_num_words=6,
        task_num_train=64, task_num_test=16, task_updates=30, oracle_lengths=(2, 4), oracle_num_train=64,
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
    """The lecture's corpus contract (``experiments.corpus_check``): Multi30k, where the settings name it, is not
    needed for C2's verdict (the reverse task decides it); without it ``run`` leaves its buckets out."""
    if "multi30k" not in settings.datasets:
        return {}
    from experiments.corpus_check import text_data_files

    return {"multi30k": {"files": text_data_files(multi30k_data(settings, multi30k_root)), "needed": False,
                         "part": "The Multi30k buckets"}}


def _data(settings: BottleneckSettings, dataset: str, length: Optional[int], seed: int,
          multi30k_root: Optional[str]) -> dict:
    if dataset == "reverse":
        return {"class_path": "modules.data.TaskDataModule", "init_args": {
            "task": settings.task, "num_words": settings.task_num_words, "min_len": length, "max_len": length,
            "num_train": settings.task_num_train, "num_val": 1, "num_test": settings.task_num_test,
            "task_seed": seed}}
    if dataset == "oracle":
        return {"class_path": "modules.data.OracleDataModule", "init_args": {
            "preset": "small", "condition": "source", "source_len": length, "num_train": settings.oracle_num_train,
            "num_val": 1, "num_test": settings.oracle_num_test, "oracle_seed": 0}}
    return multi30k_data(settings, multi30k_root)


def plan(settings: BottleneckSettings, multi30k_root: Optional[str] = None) -> list[dict]:
    """One spec per (data set, source length, family, seed): plain JSON, keyed by its hash."""
    settings.check()
    specs = []
    for dataset in settings.datasets:
        lengths = {"reverse": settings.task_lengths, "oracle": settings.oracle_lengths}.get(dataset, (None,))
        updates = {"reverse": settings.task_updates, "oracle": settings.oracle_updates,
                   "multi30k": settings.multi30k_updates}[dataset]
        for length in lengths:
            for seed in settings.seeds:
                for family in settings.families:
                    spec = {
                        "kind": "bottleneck", "dataset": dataset, "src_len": length, "family": family,
                        "seed": int(seed), "batch_size": settings.batch_size, "updates": updates,
                        "data": _data(settings, dataset, length, int(seed), multi30k_root),
                        "model": {**settings.shared, **settings.models[family]},
                        "measure": {"oracle_eval_samples": settings.oracle_eval_samples,
                                    "oracle_entropy_samples": settings.oracle_entropy_samples,
                                    "buckets": list(settings.multi30k_buckets),
                                    "max_test": settings.multi30k_max_test},
                        "threads": settings.threads,
                    }
                    spec = json.loads(json.dumps(spec))  # tuples -> lists: the hash of a spec read back is the same
                    where = dataset if length is None else f"{dataset}-L{length}"
                    spec["key"] = f"{where}__{family}__seed{seed}__{config_hash(spec)}"
                    specs.append(spec)
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

    from experiments.datamodules import build_datamodule
    from experiments.families import get_family
    from experiments.runner import BudgetCallback, _finish_wandb, _quiet_lightning

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
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=loggers, callbacks=[budget.as_lightning()],
                             max_steps=updates, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             log_every_n_steps=max(1, updates // 20), default_root_dir=str(folder))
        fit_start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        fit_time = time.perf_counter() - fit_start
        if spec["dataset"] == "reverse":
            metrics = measure_task(model, dm)
        elif spec["dataset"] == "oracle":
            metrics = measure_oracle(model, dm, trainer, spec["measure"])
        else:
            metrics = measure_translation(model, dm, spec["measure"])
    row = {
        "key": spec["key"], "kind": "bottleneck", "dataset": spec["dataset"], "src_len": spec["src_len"],
        "family": family.name, "seed": spec["seed"], "batch_size": spec["batch_size"],
        "config_hash": config_hash(spec), "updates": int(trainer.global_step),
        "samples_seen": int(trainer.global_step) * int(spec["batch_size"]),
        "underpowered": int(spec["updates"]) < _min_updates(),
        "num_parameters": sum(p.numel() for p in model.generator.parameters()),
        "optimizer": model.generator_optimizer_settings(), "final_train_loss": _last_loss(budget.curve),
        "diverged": budget.nonfinite is not None, "fit_time_s": fit_time, **metrics,
        "wall_time_s": time.perf_counter() - start,
        # CPU seconds of this run's process: what the run costs on an idle core, however loaded the machine was
        "cpu_time_s": time.process_time() - cpu_start,
    }
    if loggers:
        _finish_wandb(loggers, row)
    return row


def _min_updates() -> int:
    from experiments.verdicts import MIN_VERDICT_UPDATES

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
    if row["dataset"] == "reverse":
        what = f"token acc {row['token_accuracy']:.3f}  exact {row['exact_match']:.3f}"
    elif row["dataset"] == "oracle":
        what = f"excess NLL {row['excess_nll_per_token']:.3f}  NLL_oracle {row['nll_oracle_per_token']:.3f}"
    else:
        what = f"BLEU-4 {row['bleu4']:.2f}  NLL_test {row['nll_test_per_token']:.3f}"
    return f"{where:<16} {row['family']:<14} seed {row['seed']}  {what}  ({row['wall_time_s']:.1f}s)"


def run(settings: BottleneckSettings, out: Path, *, workers: int = 2, wandb_mode: str = "offline",
        echo=print, multi30k_root: Optional[str] = None) -> list[dict]:
    """Run the plan of ``settings`` into ``out`` (resumably: runs whose row is in ``out/results.jsonl`` are not
    run again) and return the rows of this plan. A run that raises is recorded in ``out/errors.jsonl`` and left
    out; the others go on."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if "multi30k" in settings.datasets and not multi30k_available(multi30k_root):
        # the corpora are inputs, not part of the package: without them the other data sets still run
        echo(f"bottleneck: multi30k not run: no corpus at {_multi30k_folder(multi30k_root)} (set GVT_DATA_DIR)")
        settings = dataclasses.replace(settings, datasets=tuple(d for d in settings.datasets if d != "multi30k"))
    specs = plan(settings, multi30k_root)
    atomic_write_text(out / SETTINGS_FILE, json.dumps({"settings": settings.to_dict(),
                                                      "keys": [s["key"] for s in specs]}, indent=1) + "\n")
    done = ResultsTable(out).keys()
    pending = [s for s in specs if s["key"] not in done]
    if len(pending) < len(specs):
        echo(f"bottleneck: {len(specs) - len(pending)} of {len(specs)} runs already in {out / 'results.jsonl'}")
    failed = []
    if pending:
        bar = tqdm(total=len(pending), desc="bottleneck", unit="run", dynamic_ncols=True, file=sys.stderr)

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
        echo(f"bottleneck: {len(failed)} run(s) failed (see {out / 'errors.jsonl'}); run the command again to retry")
    keys = {s["key"] for s in specs}
    return [r for r in ResultsTable(out).rows() if r["key"] in keys]


# ---- summaries -----------------------------------------------------------------------------------------------


def _rows(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def lengths_of(rows: list[dict], dataset: str) -> list[int]:
    return sorted({r["src_len"] for r in _rows(rows, dataset=dataset) if r.get("src_len") is not None})


def families_in(rows: list[dict]) -> list[str]:
    present = {r["family"] for r in rows}
    return [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES))


def metric(name: str) -> Callable[[dict], Optional[float]]:
    return lambda r: r.get(name)


def bucket_metric(bucket: str, name: str) -> Callable[[dict], Optional[float]]:
    return lambda r: ((r.get("buckets") or {}).get(bucket) or {}).get(name)


def drop(rows: list[dict], family: str, dataset: str, fn, short: int, long: int) -> dict[int, float]:
    """Per seed: ``fn`` at the shortest length minus at the longest (positive: worse at the longer one, for a
    higher-is-better ``fn``)."""
    at = lambda length: per_seed(_rows(rows, dataset=dataset, family=family, src_len=length), fn)  # noqa: E731
    a, b = at(short), at(long)
    return {s: a[s] - b[s] for s in sorted(a) if s in b}


# ---- the verdict ---------------------------------------------------------------------------------------------


def verdict(rows: list[dict], *, alpha: float = 0.05, min_seeds: int = 3) -> Verdict:
    """Verdict C2 (module docstring): the primary cell ``drop_difference`` (rnn's token-accuracy drop from the
    shortest to the longest reverse length minus rnn-attention's, per seed), SESOI ``C2_SESOI``, gated on both
    RNNs having learned the task at the shortest length."""
    settings = VerdictSettings(alpha=alpha, min_seeds=min_seeds)
    rows = verdict_rows(rows)  # runs planned with too few updates are reported, never judged
    claim = ("In seq2seq the encoder's final hidden state (the context vector) is the bottleneck; attention over "
             "all encoder states removes it.")
    lengths = lengths_of(rows, "reverse")
    primary = "drop_difference"
    rule_text = (f"Reverse task, per seed: token accuracy of greedy decoding at the shortest source length minus at "
                 f"the longest (the drop), rnn's drop minus rnn-attention's, paired by seed (positive: the model "
                 f"without attention loses more with length). SESOI {C2_SESOI} token accuracy (one output word in "
                 f"ten). Gate: rnn and rnn-attention must have learned the task at the shortest length (mean token "
                 f"accuracy >= {LEARNED_ACCURACY}; chance is about 1 / number of words). Other families, exact "
                 f"match, the oracle and Multi30k are reported beside it.")
    acc = metric("token_accuracy")
    if len(lengths) < 2 or not all(_rows(rows, dataset="reverse", family=f) for f in ("rnn", "rnn-attention")):
        why = ("not run: needs rnn and rnn-attention on the reverse task at two source lengths or more "
               "(`gvt ablate bottleneck`)")
        return _standard("C2", claim, rule_text, C2_SESOI, primary,
                         {primary: _not_run("rnn drop - rnn-attention drop (token accuracy)", why, C2_SESOI)},
                         why, [], settings)
    short, long = lengths[0], lengths[-1]
    gate = None
    for family in ("rnn-attention", "rnn"):
        at_short = _rows(rows, dataset="reverse", family=family, src_len=short)
        mean = t_interval(per_seed(at_short, acc).values()).mean
        chance = at_short[0].get("chance_token_accuracy", math.nan) if at_short else math.nan
        if not (mean >= LEARNED_ACCURACY):
            gate = (f"{family} did not learn the reverse task at the shortest length {short}: mean token accuracy "
                    f"{mean:.3g} < {LEARNED_ACCURACY} (chance {chance:.3g}); a drop from there measures an "
                    f"unfinished training, not a bottleneck")
            break
    drops = {f: drop(rows, f, "reverse", acc, short, long) for f in families_in(_rows(rows, dataset="reverse"))}
    cells = {primary: Cell(f"token accuracy drop L={short}->{long}: rnn - rnn-attention",
                           paired(drops["rnn"], drops["rnn-attention"]), C2_SESOI, gate is None,
                           gate or f"both RNNs learned the task at L={short}")}
    for family, values in drops.items():
        cells[f"drop {family}"] = Cell(f"token accuracy drop L={short}->{long}, {family}", list(values.values()))
    if "transformer" in drops:
        cells["drop_difference_transformer"] = Cell(f"token accuracy drop L={short}->{long}: rnn - transformer",
                                                    paired(drops["rnn"], drops["transformer"]))
    exact = {f: drop(rows, f, "reverse", metric("exact_match"), short, long) for f in ("rnn", "rnn-attention")}
    cells["exact_match_drop_difference"] = Cell(f"exact match drop L={short}->{long}: rnn - rnn-attention",
                                                paired(exact["rnn"], exact["rnn-attention"]))
    oracle_lengths = lengths_of(rows, "oracle")
    if len(oracle_lengths) >= 2:
        o_short, o_long = oracle_lengths[0], oracle_lengths[-1]
        # excess NLL grows when quality falls: the rise, long minus short, is minus the "drop"
        rise = {f: {s: -v for s, v in drop(rows, f, "oracle", metric("excess_nll_per_token"), o_short,
                                              o_long).items()} for f in ("rnn", "rnn-attention")}
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
    details = [f"- reverse, {f}: token accuracy " + "; ".join(
        f"L={n} {t_interval(per_seed(_rows(rows, dataset='reverse', family=f, src_len=n), acc).values()).fmt()}"
        for n in lengths) for f in families_in(_rows(rows, dataset="reverse"))]
    return _standard("C2", claim, rule_text, C2_SESOI, primary, cells, gate, details, settings)


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
    return [(str(n), t_interval(per_seed(_rows(frows, src_len=n), metric(name)).values()))
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
    rows = [r for r in rows if r.get("kind") == "bottleneck"]
    lines = ["## C2: the context vector is the bottleneck; attention removes it", ""]
    if not rows:
        return lines + ["not run: no bottleneck runs (`gvt ablate bottleneck`)", ""], {}
    lines += ["Families trained at an equal budget (same updates, batch size and optimiser settings) and the same "
              "seeds at each source length; every cell is the mean over seeds with its 95% t-interval over seeds "
              "(n = seeds).", ""]
    params = {f: sorted({r["num_parameters"] for r in _rows(rows, family=f, dataset="reverse")})
              for f in families_in(rows)}
    if any(params.values()):
        lines += ["Parameters on the reverse task: " + ", ".join(f"{f} {'/'.join(str(p) for p in v)}"
                                                              for f, v in params.items() if v) + ".", ""]
    figures = {}
    notes = {
        "reverse": "Reverse task, greedy decoding: token accuracy = share of the target's words and end token "
                   "right at their position; exact match = whole output right. Chance token accuracy is about "
                   "1 / number of words.",
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
    wall = sum(r.get("wall_time_s", 0.0) for r in rows)
    cpu = sum(r.get("cpu_time_s", 0.0) for r in rows)
    lines += [f"{len(rows)} runs, {wall / 60:.1f} min of run time in all (summed over workers)"
              + (f", {cpu / 60:.1f} min of CPU time." if cpu else "."), ""]
    return lines, figures


# ---- the command ---------------------------------------------------------------------------------------------


def write_report(rows: list[dict], out: Path, v: Verdict, settings: BottleneckSettings) -> Path:
    from experiments.report import cells_table, verdict_table_text

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
        "C2: rnn, rnn-attention and transformer at an equal budget on reverse, the source-conditioned oracle and "
        "Multi30k, quality against source length; writes OUT/report/report.md and OUT/report/verdicts.json."))
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
    print(f"report: {path} ({len(rows)} runs, {time.perf_counter() - start:.0f} s)")
    return 0


__all__ = ["BottleneckSettings", "C2_SESOI", "LEARNED_ACCURACY", "PRESETS", "main", "plan", "report_section",
           "run", "verdict"]
