"""C4, ``gvt ablate transfer``: the ULMFiT recipe against training from scratch, at small labelled-set sizes.

The lecture's claim: transfer learning reached NLP with ULMFiT (Howard & Ruder 2018): pretrain a language model on
a general corpus, adapt it to the target domain, then fine-tune a classifier; it needs far fewer labelled examples
than training from scratch. Tested here on the corpora in ``$GVT_DATA_DIR`` (``../shared/data``):

1. **Data** (``prepare_data``, once per run folder): the general corpus is COCO captions (``coco/train.txt``) plus
   Multi30k English (``multi30k/train.en.gz``); MR (``mr/rt-polarity.{neg,pos}``, Latin-1) is split once into
   train / val / test with ``split_seed`` (stratified by class, ``TextDataModule``'s carving; fixed across seeds).
   One tokenizer (the package's byte-level BPE, lowercased) and one vocabulary (``Vocab``) are fitted on the
   general corpus plus the MR training sentences, so the language model and the classifiers share ids. Sentences
   are truncated to ``max_len`` tokens. The result is cached in ``OUT/data/`` (never in the corpora folder).
2. **Language models** (kind ``lm``, per body and seed, the pilot seed included). For the ``pretrained`` arm: a
   ``LanguageModel`` (``modules.models.classifier``) pretrained on the general corpus until its NLL per token on
   ``data.general_val`` held-out general sentences is at most ``pretrain.target_nll`` (checked every
   ``pretrain.val_every`` updates) or ``pretrain.max_updates`` (the cap); the row's ``stages.pretrain`` says which
   (``stop``: "target" or "cap"), the NLL reached (``val_nll``), its curve, and ``uniform_nll`` (log of the tokens a
   model can produce: the NLL of knowing nothing). Then adapted (continued LM training, fresh optimiser) on the MR
   training sentences (text only, no labels), with early stopping on the NLL of MR's validation sentences
   (``adapt``: ``val_every``, ``patience``, cap ``max_updates``). For the ``adapt_only`` arm (ULMFiT's stage 2
   alone, key prefix ``lm-adapt-only``): the same adaptation from the random initialisation, no general corpus.
   Each row's ``nll_mr_test`` is the NLL per token of the MR test sentences before training, after pretraining
   and after adaptation. Every seed trains its own, so the seed intervals cover pretraining, adaptation and
   fine-tuning alike.
3. **Learning-rate pilot** (kind ``pilot``, ``experiments.c4_transfer.pilot``): per body and arm, each rate of
   ``pilot.lrs`` on the pilot seed at ``pilot.sizes``; the best mean validation accuracy picks the arm's peak rate,
   written to ``OUT/pilot.json`` and ``OUT/preregistration.json`` before any verdict classifier runs.
4. **Classifiers** (kind ``classifier``): for each labelled-set size n in ``label_sizes`` (``all`` = the whole MR
   training split) and each seed, a balanced subset of the MR training split (n/2 per class, seeded by the seed,
   nested: the 50 are among the 100, ...), shared by every arm. Arms: ``pretrained`` and ``adapt_only`` (a
   ``SentenceClassifier`` whose body is that arm's language model's, with a new head) and ``scratch`` (the body
   at its random initialisation). Same seed (so the same head initialisation and batch order), same budget
   (``finetune_updates(n)``: ``epochs`` passes over the subset, clamped to [``min_updates``, ``max_updates``]),
   same early stopping on MR's validation split (the best validation weights are tested; never stopped before the
   last layer group is unfrozen), same optimiser (``experiments.core.presets.GENERATOR_OPTIMIZER``) under
   ``finetune.schedule`` (ULMFiT's slanted triangular rates, ``cut_frac`` 0.1, ``ratio`` 32, over the planned
   updates), each arm at its pilot's peak rate. The arms in ``ulmfit.arms`` (those with a language model) are
   fine-tuned by ULMFiT's recipe (``modules.ulmfit``): discriminative rates (layer group l of G gets
   ``lr / 2.6 ** (G - 1 - l)``; groups: embedding, each layer, head) and gradual unfreezing (the head alone first,
   one more group every ``ulmfit.unfreeze_every`` updates). Scratch trains every layer at one rate from the start:
   its random lower layers hold nothing to protect. Accuracy on the fixed MR test split is the row's
   ``accuracy``; ``majority_accuracy`` is what always answering the training split's most frequent class scores.

Bodies: ``lstm`` (the RNN family's LSTM) and ``transformer`` (the Transformer's encoder blocks, causal); see
``modules/nets/classifier.py``. ``primary_body`` is the one verdict C4 is decided on; the other is reported beside
it.

**Verdict C4** (``verdict``): the primary cell is, per seed, accuracy(pretrained) - accuracy(scratch) at
``primary_size`` (100) labelled examples on the primary body, paired by seed; SESOI ``SESOI`` (0.05 accuracy).
The precondition (gate): at the largest labelled size both arms of that cell beat the counted baselines
(``experiments.c4_transfer.baselines``: multinomial Naive Bayes and logistic regression on bags of words, fitted on the
same subsets): each arm's t interval over seeds lies above the better baseline's mean accuracy. Otherwise the
comparison is between classifiers that do not beat counting words, and C4 is inconclusive, printing each arm's
margin. Secondary cells: the difference at every other size; at ``primary_size``, adapt_only - scratch and
pretrained - adapt_only (what adaptation alone gives, and what the general corpus adds to it); descriptively, the
labels scratch needs to match the pretrained classifier at ``primary_size``.

Presets: ``lecture`` (2 CPU cores), ``gpu`` (larger bodies and pretraining, ``accelerator="auto"``; not yet
measured) and ``smoke`` (tests).

Runs are resumable: a row in ``OUT/results.jsonl`` (``experiments.core.results.ResultsTable``, atomic, locked) is not
redone; the language model's body weights are written (atomically) before its row.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from experiments.c4_transfer.data import (PreparedData, _data_hash, _labelled_examples, _lm_examples, balanced_subset,
                                          load_prepared, prepare_data)
from experiments.c4_transfer.pilot import choose_rates
from experiments.c4_transfer.plan import _size_label, pilot_jobs, plan, plan_lms
from experiments.c4_transfer.report import report_section
from experiments.c4_transfer.settings import (ALL, BODIES, PRESETS, QUESTION, TransferSettings, corpora,
                                              finetune_updates, preregistration, preregistration_of)
from experiments.c4_transfer.verdict import verdict
from experiments.core.execute import run_tasks
from experiments.core.results import ResultsTable
from experiments.core.verdicts import Verdict
from modules.callbacks import KeepBestOnValidation
from modules.errors import ConfigError, GvtError
from modules.files import atomic_open, atomic_write_text

# ---- runs ----------------------------------------------------------------------------------------------------


def _run_folder(out: Path, key: str) -> Path:
    return Path(out) / "runs" / key


def _trainer(updates: int, loggers, folder: Path, val_every: Optional[int] = None, callbacks=(),
             accelerator: str = "cpu"):
    """A trainer for ``updates`` updates; with ``val_every``, a validation every that many updates (across epoch
    ends), else none."""
    import pytorch_lightning as pl

    validation = (dict(val_check_interval=int(val_every), check_val_every_n_epoch=None) if val_every
                  else dict(limit_val_batches=0))
    return pl.Trainer(accelerator=accelerator, devices=1, logger=loggers, max_steps=updates, max_epochs=-1,
                      callbacks=list(callbacks), **validation, num_sanity_val_steps=0, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=max(1, min(50, updates // 10)), default_root_dir=str(folder))


def _loggers(name: str, out: Path, job_type: str, tags: list[str], wandb_mode: str, config: dict):
    from modules.tracking import Tracking

    return Tracking(name=name, group=f"transfer-{Path(out).resolve().name}", job_type=job_type, tags=tags,
                    wandb_mode=wandb_mode).loggers(save_dir=str(Path(out) / "runs"), family=job_type, config=config)


def _finish(loggers, row: dict) -> None:
    """The row's scalars into the W&B run's summary (``result/...``), then close it so the next fit is a new run."""
    from experiments.core.results import flat_scalars

    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        try:
            run = logger.experiment
            run.summary.update({f"result/{k}": v for k, v in flat_scalars(row).items()
                                if isinstance(v, (int, float, bool, str))})
            run.finish()
        except Exception as err:  # tracking must never take a finished run down
            print(f"transfer: could not finish the W&B run: {err}", file=sys.stderr)


def _test(trainer, model, dm) -> dict:
    return {k.split("/", 1)[1]: float(v) for k, v in trainer.test(model, datamodule=dm, verbose=False)[0].items()}


def run_lm(spec: dict, out: str, wandb_mode: str) -> list[dict]:
    """Pretrain (``init`` "general") and adapt one language model; write its body weights, then its row.
    -> [row] (or [] if done). Pretraining stops at the target validation NLL or the cap; adaptation stops early
    on MR's validation NLL; each keeps its best validation weights."""
    import pytorch_lightning as pl
    import torch

    from experiments.core.runner import _quiet_lightning
    from modules.data.vocab import Vocab
    from modules.models.classifier import LanguageModel

    out = Path(out)
    table = ResultsTable(out)
    if spec["key"] in table.keys():
        return []
    start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(int(spec.get("threads") or 1))
    data = load_prepared(Path(spec["data_path"]))
    vocab = Vocab.from_state_dict(data["vocab"])
    folder = _run_folder(out, spec["key"])
    folder.mkdir(parents=True, exist_ok=True)
    held_out = _lm_examples([ids for _, ids in data["mr"]["test"]])  # the target domain's test sentences
    mr_val = _lm_examples([ids for _, ids in data["mr"]["val"]])
    stages = [("adapt", _lm_examples([ids for _, ids in data["mr"]["train"]]), mr_val)]
    if spec.get("init", "general") == "general":
        stages.insert(0, ("pretrain", _lm_examples(data["general"]), _lm_examples(data["general_val"])))
    body, seed = spec["body"], int(spec["seed"])
    nll, updates, stops, fit_time = {}, {}, {}, 0.0
    accelerator = spec.get("accelerator", "cpu")
    with _quiet_lightning():
        pl.seed_everything(seed, workers=True, verbose=False)
        model = None
        for stage, train, val in stages:
            cfg = spec[stage]
            previous = model
            model = LanguageModel(len(vocab), body=body, body_args=spec["body_args"], lr=cfg["lr"], **spec["optimizer"])
            if previous is not None:  # adaptation continues the pretrained weights with a fresh optimiser
                model.net.load_state_dict(previous.net.state_dict())
            dm = PreparedData({"train": train, "val": val, "test": held_out}, vocab, cfg["batch_size"], seed,
                              spec.get("eval_batch_size", 256))
            loggers = _loggers(f"{spec['key']}__{stage}", out, f"lm-{stage}", [body, f"seed{seed}"], wandb_mode,
                               {**spec, "stage": stage})
            # pretraining: to the stated target or the cap (no patience); adaptation: early stopping
            keep = (KeepBestOnValidation("val/nll_per_token", "min", patience=None, target=float(cfg["target_nll"]))
                    if stage == "pretrain" else
                    KeepBestOnValidation("val/nll_per_token", "min", patience=int(cfg["patience"])))
            trainer = _trainer(int(cfg["max_updates"]), loggers, folder, val_every=int(cfg["val_every"]),
                               callbacks=[keep], accelerator=accelerator)
            if previous is None:
                nll["init"] = _test(trainer, model, dm)["nll_per_token"]
                producible = int((~model.banned).sum())  # the label tokens are banned by now (setup ran)
            if cfg["max_updates"] > 0:
                t0 = time.perf_counter()
                trainer.fit(model, datamodule=dm)
                fit_time += time.perf_counter() - t0
            updates[stage] = int(trainer.global_step)
            stops[stage] = {"val_nll": keep.best, "best_step": keep.best_step, "val_checks": keep.checks,
                            "curve": keep.history,
                            "stop": ("target" if keep.reached is not None else
                                     "cap" if trainer.global_step >= cfg["max_updates"] else "patience")}
            if stage == "pretrain":
                stops[stage]["target_nll"] = float(cfg["target_nll"])
            after = {"pretrain": "pretrained", "adapt": "adapted"}[stage]
            nll[after] = _test(trainer, model, dm)["nll_per_token"]
            _finish(loggers, {"key": spec["key"], "stage": stage, "nll_mr_test": nll[after]})
    with atomic_open(folder / "body.pt", "wb") as f:
        torch.save(model.body.state_dict(), f)
    row = {"key": spec["key"], "kind": "lm", "body": body, "seed": seed, "init": spec.get("init", "general"),
           "config_hash": spec["key"].rsplit("__", 1)[1], "nll_mr_test": nll, "updates": updates, "stages": stops,
           "uniform_nll": math.log(producible), "optimizer": model.optimizer_settings(),
           "num_parameters": sum(p.numel() for p in model.body.parameters()),
           "fit_time_s": fit_time, "wall_time_s": time.perf_counter() - start,
           "cpu_time_s": time.process_time() - cpu_start}
    table.add(row)
    return [row]


def run_classifiers(specs: list[dict], out: str, wandb_mode: str) -> list[dict]:
    """The classifier runs of one (body, arm, seed[, rate]), one per labelled-set size; each row is added when
    done. The rows' kind is the spec's (``classifier``, or ``pilot`` for the learning-rate pilot)."""
    import pytorch_lightning as pl
    import torch

    from experiments.core.runner import _quiet_lightning
    from modules.data.vocab import Vocab
    from modules.models.classifier import SentenceClassifier
    from modules.ulmfit import fully_unfrozen_at

    out = Path(out)
    table = ResultsTable(out)
    done = table.keys()
    rows = []
    for spec in specs:
        if spec["key"] in done:
            continue
        start, cpu_start = time.perf_counter(), time.process_time()
        torch.set_num_threads(int(spec.get("threads") or 1))
        data = load_prepared(Path(spec["data_path"]))
        vocab = Vocab.from_state_dict(data["vocab"])
        seed, ft, recipe = int(spec["seed"]), spec["finetune"], spec["recipe"]
        train = balanced_subset(data["mr"]["train"], None if spec["size"] == ALL else int(spec["size"]), seed)
        test = _labelled_examples(data["mr"]["test"])
        counts = [sum(1 for label, _ in data["mr"]["train"] if label == k) for k in range(len(vocab.labels))]
        majority = max(range(len(counts)), key=lambda k: counts[k])
        majority_accuracy = sum(1 for label, _ in data["mr"]["test"] if label == majority) / len(data["mr"]["test"])
        updates = finetune_updates(ft, len(train))
        with _quiet_lightning():
            pl.seed_everything(seed, workers=True, verbose=False)
            model = SentenceClassifier(len(vocab), num_classes=len(vocab.labels), body=spec["body"],
                                       body_args=spec["body_args"], head_dropout=ft["head_dropout"], lr=spec["lr"],
                                       lr_factor=recipe["lr_factor"], schedule=ft.get("schedule", "constant"),
                                       total_updates=updates, cut_frac=ft.get("cut_frac", 0.1),
                                       ratio=ft.get("ratio", 32.0), unfreeze_every=recipe["unfreeze_every"],
                                       **spec["optimizer"])
            if spec["lm"] is not None:
                model.load_body(torch.load(_run_folder(out, spec["lm"]) / "body.pt", weights_only=True))
            # early stopping reads MR's validation split; the test split is scored once, on the kept weights
            dm = PreparedData({"train": _labelled_examples(train), "val": _labelled_examples(data["mr"]["val"]),
                               "test": test}, vocab, ft["batch_size"], seed, spec["eval_batch_size"])
            keep_best = KeepBestOnValidation("val/accuracy", "max", patience=int(ft["patience"]),
                                             min_steps=fully_unfrozen_at(len(model.groups), recipe["unfreeze_every"]))
            loggers = _loggers(spec["key"], out, f"{spec['kind']}-{spec['arm']}",
                               [spec["body"], spec["arm"], f"n{spec['size']}", f"seed{seed}"], wandb_mode, spec)
            trainer = _trainer(updates, loggers, _run_folder(out, spec["key"]), val_every=int(ft["val_every"]),
                               callbacks=[keep_best], accelerator=spec.get("accelerator", "cpu"))
            t0 = time.perf_counter()
            trainer.fit(model, datamodule=dm)
            fit_time = time.perf_counter() - t0
            scores = _test(trainer, model, dm)
        row = {"key": spec["key"], "kind": spec["kind"], "body": spec["body"], "arm": spec["arm"], "seed": seed,
               "size": spec["size"], "n_labels": len(train), "config_hash": spec["key"].rsplit("__", 1)[1],
               "lm": spec["lm"], "lr": spec["lr"], "recipe": recipe, "updates": int(trainer.global_step),
               "planned_updates": updates, "best_step": keep_best.best_step, "val_accuracy": keep_best.best,
               "val_checks": keep_best.checks, "accuracy": scores["accuracy"], "test_loss": scores["loss"],
               "num_test": len(test), "majority_accuracy": majority_accuracy, "primary_body": spec["primary_body"],
               "primary_size": spec["primary_size"], "optimizer": model.optimizer_settings(),
               "fit_time_s": fit_time, "wall_time_s": time.perf_counter() - start,
               "cpu_time_s": time.process_time() - cpu_start}
        _finish(loggers, row)
        table.add(row)
        rows.append(row)
    return rows


def write_choices(settings, out: Path, choices: dict) -> dict:
    """``OUT/pilot.json`` (the choices and every rate's score) and ``OUT/preregistration.json`` (C4's settings,
    SESOI, gates, pilot rule and the chosen rates, with their hash). -> the pre-registration. Refuses a folder
    whose earlier pre-registration chose other rates: the verdict rows there were run at those."""
    out = Path(out)
    prereg = preregistration_of(settings, choices["lr"])
    digest = hashlib.sha256(json.dumps(prereg, sort_keys=True, default=str).encode()).hexdigest()[:16]
    record = {"question": QUESTION, "hash": digest, "preregistration": prereg}
    path = out / "preregistration.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before.get("preregistration", {}).get("lr_choices") != choices["lr"]:
            raise ConfigError(f"{path}: the pilot now chooses {choices['lr']}, but this run folder was "
                              f"pre-registered with {before.get('preregistration', {}).get('lr_choices')}; use a new "
                              "--out folder")
    atomic_write_text(out / "pilot.json", json.dumps(
        {"pilot": settings.pilot, "lr": choices["lr"], "val_accuracy": choices["val_accuracy"]}, indent=2) + "\n")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record


def run(settings: TransferSettings, out: Path, *, workers: int = 2, wandb_mode: str = "offline",
        echo=print) -> list[dict]:
    """Run the ablation into ``out`` (resumably: runs with a row in ``out/results.jsonl`` are not redone) and
    return its rows. First every language model and the learning-rate pilot (``experiments.c4_transfer.pilot``:
    its choices go to ``out/pilot.json`` and ``out/preregistration.json``), then the verdict's classifiers at the
    chosen rates. A classifier job starts once its language model's row is in."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "transfer.json", json.dumps(settings.to_dict(), indent=2, sort_keys=True, default=str)
                      + "\n")
    data_path = prepare_data(settings, out, echo=echo)
    baseline_keys = run_baselines(settings, out, data_path, echo=echo)
    lms = list(plan_lms(settings, data_path).values())
    pilot = pilot_jobs(settings, data_path)

    def phase(name: str, lm_specs: list[dict], jobs: list[list[dict]]) -> None:
        done = ResultsTable(out).keys()
        todo_lms = [s for s in lm_specs if s["key"] not in done]
        todo_jobs = [job for job in ([s for s in job if s["key"] not in done] for job in jobs) if job]
        total = len(todo_lms) + sum(len(job) for job in todo_jobs)
        skipped = len(lm_specs) + sum(len(job) for job in jobs) - total
        if skipped:
            echo(f"transfer ({name}): {skipped} runs already in {out / 'results.jsonl'}; running the other {total}")
        if total:
            bar = tqdm(total=total, desc=f"transfer {name}", unit="run", dynamic_ncols=True, file=sys.stderr)
            try:
                _schedule(todo_lms, todo_jobs, out, workers, wandb_mode, bar, done)
            finally:
                bar.close()

    phase("language models and pilot", lms, pilot)
    pilot_keys = {s["key"] for job in pilot for s in job}
    choices = choose_rates(settings, [r for r in ResultsTable(out).rows() if r["key"] in pilot_keys])
    write_choices(settings, out, choices)
    lms, jobs = plan(settings, data_path, choices["lr"])
    done = ResultsTable(out).keys()
    missing = [job for job in jobs if job[0]["lm"] is not None and job[0]["lm"] not in done]
    for job in missing:  # its language model failed above (the run folder's errors say why); rerun to retry
        echo(f"transfer: not run: {len(job)} {job[0]['body']} {job[0]['arm']} classifiers of seed {job[0]['seed']} "
             f"(no language model {job[0]['lm']})")
    phase("verdict", [], [job for job in jobs if job not in missing])
    keys = {s["key"] for s in lms} | {s["key"] for job in jobs for s in job} | baseline_keys | pilot_keys
    return [r for r in ResultsTable(out).rows() if r["key"] in keys]


def run_baselines(settings: TransferSettings, out: Path, data_path: Path, echo=print) -> set[str]:
    """The counted baselines at every labelled size and seed, in-process (about 2 CPU-minutes for the lecture
    preset, mostly logistic regression on the whole split), each row added to ``out/results.jsonl`` unless there;
    -> their keys."""
    from experiments.c4_transfer.baselines import baseline_rows
    from modules.data.vocab import Vocab

    data = load_prepared(Path(data_path))
    table = ResultsTable(out)
    suffix = _data_hash(settings)
    sizes = [(_size_label(x), None if x == ALL else int(x)) for x in settings.label_sizes]
    keys = {f"baseline__{m}__n{label}__seed{seed}__{suffix}" for m in ("naive_bayes", "logistic")
            for label, _ in sizes for seed in settings.seeds}
    if keys <= table.keys():
        return keys
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = baseline_rows(data["mr"]["train"], data["mr"]["test"], len(Vocab.from_state_dict(data["vocab"])), sizes,
                         settings.seeds, balanced_subset)
    done = table.keys()
    for row in rows:
        row["key"] = f"{row['key']}__{suffix}"
        if row["key"] not in done:
            table.add(row)
    echo(f"transfer: counted baselines (Naive Bayes, logistic regression) in {time.perf_counter() - start:.0f}s "
         f"({time.process_time() - cpu_start:.0f} CPU-s)")
    return keys


def _schedule(lms, jobs, out: Path, workers: int, wandb_mode: str, bar, done: set) -> None:
    waiting: dict[str, list[list[dict]]] = {}  # a language model's key -> the pretrained jobs that need it
    ready = []
    for job in jobs:
        needs = job[0]["lm"]
        if needs is not None and needs not in done:
            waiting.setdefault(needs, []).append(job)
        else:
            ready.append(job)
    tasks = [("lm", spec) for spec in lms] + [("clf", job) for job in ready]  # language models first

    def settle(task, rows_or_error) -> list:
        kind, payload = task
        if isinstance(rows_or_error, Exception):
            key = payload["key"] if kind == "lm" else payload[0]["key"]
            ResultsTable(out).add_error(key, f"{type(rows_or_error).__name__}: {rows_or_error}")
            bar.write(f"  FAILED {key}: {rows_or_error}", file=sys.stderr)
            if kind == "lm":
                for job in waiting.pop(payload["key"], []):
                    bar.write(f"  not run: {len(job)} {job[0]['body']} pretrained classifiers of seed "
                              f"{job[0]['seed']} (their language model failed)", file=sys.stderr)
            return []
        for row in rows_or_error:
            bar.update(1)
            bar.write("  " + _summary(row), file=sys.stderr)
        return [("clf", job) for job in waiting.pop(payload["key"], [])] if kind == "lm" else []

    run_tasks(tasks, functools.partial(_run_task, out=str(out), wandb_mode=wandb_mode), settle, workers)


def _run_task(task: tuple[str, object], out: str, wandb_mode: str) -> list[dict]:
    """One scheduled task (in a worker or in-process): a language model ("lm", its spec) or one seed's classifiers
    ("clf", their specs)."""
    kind, payload = task
    return run_lm(payload, out, wandb_mode) if kind == "lm" else run_classifiers(payload, out, wandb_mode)


def _summary(row: dict) -> str:
    if row["kind"] == "lm":
        n, stop = row["nll_mr_test"], row.get("stages", {}).get("pretrain")
        val = "-" if stop is None or stop["val_nll"] is None else f"{stop['val_nll']:.2f}"
        pre = (f" -> pretrained {n['pretrained']:.2f} (general val {val}, target "
               f"{stop['target_nll']:.2f}, stopped by {stop['stop']} at {row['updates']['pretrain']})" if stop else "")
        return (f"{row['key'].rsplit('__', 1)[0]}  MR test NLL/token {n['init']:.2f}{pre} -> adapted "
                f"{n.get('adapted', float('nan')):.2f} (uniform {row['uniform_nll']:.2f})  {row['wall_time_s']:.1f}s")
    return (f"{row['key'].rsplit('__', 1)[0]}  accuracy {row['accuracy']:.3f} (majority "
            f"{row['majority_accuracy']:.3f})  {row['updates']} updates  {row['wall_time_s']:.1f}s")


# ---- command line --------------------------------------------------------------------------------------------


def _verdict_lines(v: Verdict) -> list[str]:
    lines = [f"## Verdict {v.question}: {v.verdict}", "", f"Claim: {v.claim}", "", f"Rule: {v.rule}", "",
             f"Evidence: {v.evidence}", "", "| cell | estimate and interval | SESOI |", "|---|---|---|"]
    for name, cell in v.cells.items():
        lines.append(f"| {cell.description} | {cell.fmt(3)} | {'' if cell.margin is None else cell.margin} |")
    return lines + [""] + v.details + [""]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gvt ablate transfer",
        description="C4: ULMFiT (pretrain a language model on COCO + Multi30k English, adapt it on MR, fine-tune a "
                    "sentiment classifier) against the same classifier from scratch, at labelled-set sizes 50 to all; "
                    "writes OUT/results.jsonl, OUT/report/report.md and OUT/report/verdicts.json.")
    parser.add_argument("--preset", default="lecture", choices=list(PRESETS),
                        help="lecture (2 CPU cores), gpu (larger bodies and pretraining, one GPU), smoke (tests)")
    parser.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/transfer/PRESET); rerun to resume")
    parser.add_argument("--seeds", nargs="+", metavar="S", help="seeds (default: the preset's)")
    parser.add_argument("--bodies", nargs="+", metavar="BODY", help=f"bodies among {', '.join(BODIES)} (default: "
                                                                    "the preset's)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="runs at once (default 2)")
    parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"])
    args = parser.parse_args(argv)
    words = lambda values: [x for v in values for x in str(v).replace(",", " ").split()]  # noqa: E731
    try:
        settings = PRESETS[args.preset]()
        if args.seeds:
            settings = replace(settings, seeds=[int(s) for s in words(args.seeds)])
        if args.bodies:
            bodies = words(args.bodies)
            settings = replace(settings, bodies=bodies,
                               primary_body=settings.primary_body if settings.primary_body in bodies else bodies[0])
        out = Path(args.out or f"runs/transfer/{args.preset}")
        start = time.perf_counter()
        rows = run(settings, out, workers=args.workers, wandb_mode=args.wandb_mode,
                   echo=lambda m: print(m, file=sys.stderr))
        report = out / "report"
        lines, _ = report_section(rows, report)
        v = verdict(rows)
        atomic_write_text(report / "report.md", "\n".join(["# C4: transfer learning", ""] + lines + _verdict_lines(v)))
        atomic_write_text(report / "verdicts.json", json.dumps({QUESTION: v.to_json()}, indent=2, default=str) + "\n")
        print(f"C4: {v.verdict}: {v.evidence}")
        print(f"report: {report / 'report.md'} ({time.perf_counter() - start:.0f}s)")
    except GvtError as err:  # bad input: one line (anything else is a bug and keeps its traceback)
        print(f"gvt ablate transfer: error: {err}", file=sys.stderr)
        return 2
    return 0


# The contract experiments/lecture.py reads (PRESETS, corpora, run, verdict, report_section, preregistration): this
# module is C4's entry, so the parts kept in settings.py, verdict.py and report.py are named here too.
__all__ = ["PRESETS", "corpora", "main", "preregistration", "report_section", "run", "run_baselines", "verdict"]
