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
from pathlib import Path
from typing import Optional, Sequence

from experiments.c2_bottleneck import pilot as P
from experiments.c2_bottleneck.measure import measure_oracle, measure_task_by_length, measure_translation
from experiments.c2_bottleneck.report import report_section
from experiments.c2_bottleneck.settings import (BottleneckSettings, DATASETS, PRESETS, SETTINGS_FILE, get_preset,
                                                preregistration)
from experiments.c2_bottleneck.verdict import verdict
from experiments.core.execute import run_tasks
from experiments.core.results import ResultsTable
from experiments.core.specs import config_hash
from experiments.core.tables import nan_to_none
from experiments.core.verdicts import Verdict
from modules.errors import ConfigError
from modules.files import atomic_write_text

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


# The contract experiments/lecture.py reads (PRESETS, corpora, run, verdict, report_section, preregistration): this
# module is C2's entry, so the parts kept in settings.py, verdict.py and report.py are named here too.
__all__ = ["PRESETS", "corpora", "main", "pilot_plan", "plan", "preregistration", "report_section", "run", "verdict"]
