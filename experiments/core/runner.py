"""One training run in-process -> one result row.

A run is described by a plain JSON-able ``spec`` (family, batch size, seed, data, model arguments, budget,
what to measure afterwards), so that its hash identifies it across invocations and it can be shipped to a worker
process. ``run_one`` trains it with Lightning, evaluates it, and returns the row; it never writes the results
table itself (the caller does, atomically).

What a run does, in order:

1. ``seed_everything(seed, workers=True)``; build the data module (its shuffling is seeded by the same seed)
   and the model; same spec + seed -> same numbers on CPU. A spec with ``init_from: {"key": K}`` then loads the
   generator weights of run K (finished in the same run folder; ``load_init_from``).
2. ``trainer.test`` on the untrained (or just loaded) model: the ``init`` metrics (every learning effect is
   measured from here).
3. ``trainer.fit`` until the budget of generator updates is spent (``BudgetCallback``), recording the loss
   curves every few updates and stopping at the first non-finite loss; where the spec's ``measure`` asks, the
   held-out loss curve and the game checkpoints are taken along the way (``experiments.q1_game.game``, fixed batch and
   noise, the training RNG untouched).
4. ``trainer.test`` again: the ``final`` metrics (NLL_oracle, NLL_test, BLEU, Self-BLEU, distinct-n, ...).
   A spec with ``eval_split: "val"`` (the learning-rate pilot's runs, ``experiments.core.pilot``) is evaluated on the
   validation split instead, in steps 2 and 4 (``trainer.validate``, Lightning names ``val/...``); its row says
   ``eval_split``, and its ``init``/``final`` NLL_test is then the NLL of the validation split.
5. Optionally: the gradient noise scale, a temperature curve, the conditioning probes.
6. Flags: ``diverged`` and ``collapsed`` by the documented rules below.

Divergence (``diverged``): a training loss became NaN/inf, a final NLL is not finite, or the final NLL_oracle per
token is more than ``DIVERGENCE_NATS`` above the untrained model's: training made the samples markedly worse
than random initial weights did.

Mode collapse (``collapsed``): fewer than ``COLLAPSE_UNIQUE`` of the evaluation samples are distinct, or their
distinct-2 is below ``COLLAPSE_DISTINCT2_RATIO`` times the distinct-2 of as many test references (the data's
own diversity at the same sample count).

Underpowered (``underpowered``): the run was planned with fewer than ``experiments.core.verdicts.MIN_VERDICT_UPDATES``
generator updates; it is reported but kept out of every verdict.

A row also records ``final_beta`` (the Gumbel beta of the last generator update; None without the Gumbel
estimator), ``optimizer`` (the generator's optimiser: class, lr, betas, weight_decay, gradient_clip; None for
a class that does not say), ``equal_updates_of`` (for an equal-update arm, the batch size whose update count it
matches; else None) and, where measured, ``held_out_curve``, ``roughness``, ``game_checkpoints``,
``oracle_entropy_per_token`` and ``held_out_time_s`` (``experiments.q1_game.game``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from experiments.core.datamodules import build_datamodule
from experiments.core.evaluate import _reference_distinct2, eval_split, evaluate, final_losses, judge
from experiments.core.families import generator_updates, get_arg, get_family, z_dim_path
from experiments.core.results import ResultsTable
from experiments.core.specs import _NOT_HASHED, config_hash, init_from_key, run_key
from experiments.core.verdicts import MIN_VERDICT_UPDATES
from experiments.core.wandb_sweep import log_row
from experiments.q4_temperature.temperature import temperature_curve, write_curve
from modules.errors import ConfigError
from modules.files import atomic_write_text
from modules.known_warnings import known_warnings_filtered

# pytorch_lightning, and the modules that import it (modules.tracking, the data and model code that
# experiments.q2_batch_size.noise_scale and experiments.q3_conditioning.probes use), load inside run_one, in the worker that trains: the sweep's
# parent process imports this module for run keys and stays light.


def _is_latent(name: str, latent_modules: tuple[str, ...]) -> bool:
    return name.split(".", 1)[0] in latent_modules


def load_init_from(model, key: str, run_dir: Path, data: dict) -> None:
    """Start ``model`` from the generator weights of run ``key`` (``runs/<key>/final.ckpt`` in ``run_dir``).

    Strict: every parameter and buffer of ``model.generator`` must be in the checkpoint's generator with the same
    shape, and the checkpoint's generator must hold nothing else, except the latent-z modules (the net's
    ``latent_modules``): a GAN generator started from an MLE checkpoint keeps its freshly initialised z input
    (and a latent input of the checkpoint, if any, is not carried over). Any other mismatch is an error naming
    the keys. Only weights are carried over: optimiser state, schedules and counters start fresh.
    """
    if key not in ResultsTable(run_dir).keys():
        raise ValueError(f"init_from: run {key} has no row in {run_dir / 'results.jsonl'}; it must finish in the "
                         "same run folder before a run that starts from it")
    folder = run_dir / "runs" / key
    path = folder / "final.ckpt"
    if not path.is_file():
        raise ValueError(f"init_from: run {key} left no checkpoint at {path} (it must run with save_checkpoint)")
    if (folder / "run.json").is_file():
        theirs = json.loads((folder / "run.json").read_text()).get("data")
        ours = json.loads(json.dumps(data))  # tuples -> lists, as the producer's spec was stored
        if theirs is not None and theirs != ours:
            raise ValueError(f"init_from: run {key} was trained on other data ({theirs}) than this run ({ours})")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    latent = tuple(getattr(model.generator, "latent_modules", ()))
    source = {k[len("generator."):]: v for k, v in state.items()
              if k.startswith("generator.") and not _is_latent(k[len("generator."):], latent)}
    target = model.generator.state_dict()
    wanted = {k for k in target if not _is_latent(k, latent)}
    missing = sorted(wanted - set(source))
    unexpected = sorted(set(source) - wanted)
    shapes = [f"{k}: {tuple(source[k].shape)} in the checkpoint, {tuple(target[k].shape)} here"
              for k in sorted(wanted & set(source)) if source[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        problems = [f"missing from the checkpoint: {', '.join(missing)}" if missing else "",
                    f"not in this generator: {', '.join(unexpected)}" if unexpected else "",
                    f"other shapes: {'; '.join(shapes)}" if shapes else ""]
        raise ValueError(f"init_from: the generator of run {key} does not match this run's "
                         f"({type(model.generator).__name__}); the architecture settings must be the same. "
                         + "; ".join(p for p in problems if p))
    model.generator.load_state_dict({**{k: v for k, v in target.items() if _is_latent(k, latent)}, **source},
                                    strict=True)


class BudgetCallback:
    """Stops training after ``target`` generator updates; records loss curves; stops at a non-finite loss."""

    def __init__(self, target: int, batch_size: int, every: int):
        self.target, self.batch_size, self.every = target, batch_size, max(1, every)
        self.curve: list[dict] = []
        self.nonfinite: Optional[str] = None
        self._last_recorded = -1

    # Lightning accepts any object with the hook methods only if it is a Callback; build one lazily so this
    # module can be imported without pulling Lightning into the parent of worker processes.
    def as_lightning(self):
        import pytorch_lightning as pl

        outer = self

        class _Callback(pl.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                outer.after_batch(trainer, pl_module)

        return _Callback()

    def after_batch(self, trainer, model) -> None:
        losses = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith("train/") and getattr(v, "numel", lambda: 1)() == 1}
        if self.record(generator_updates(model, trainer), losses):
            trainer.should_stop = True

    def record(self, updates: int, losses: dict[str, float]) -> Optional[dict]:
        """Record the logged ``train/...`` values after generator update ``updates``; -> the curve point when
        one was recorded, and whether training stops here (``stop``: the budget is spent or a loss is not finite)."""
        bad = [k for k, v in losses.items() if "loss" in k and not math.isfinite(v)]
        if bad and self.nonfinite is None:
            self.nonfinite = f"non-finite {bad[0]} at generator update {updates}"
        done = updates >= self.target
        self.point = None
        if losses and updates != self._last_recorded and (updates % self.every == 0 or done or bad):
            self.point = {"update": updates, "samples": updates * self.batch_size, **losses}
            self.curve.append(self.point)
            self._last_recorded = updates
        return done or self.nonfinite is not None


@contextlib.contextmanager
def _quiet_lightning():
    """For the duration of one run (nothing process-wide): Lightning's per-Trainer info lines ("GPU available:
    ...", a few per run, hundreds per sweep) are held back, and the known third-party messages of
    ``modules.known_warnings`` are filtered. One run-specific message is filtered too: a run counts its budget
    across epochs, and Lightning's logging interval does too (``_batches_that_stepped``), so "the number of
    training batches is smaller than the logging interval" does not apply. Every other warning still shows."""
    import lightning_fabric  # noqa: F401  (imported first: their import sets their loggers' level to INFO, which in
    import pytorch_lightning  # noqa: F401  a fresh worker process would undo the level set here)

    names = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")
    levels = {name: logging.getLogger(name).level for name in names}
    with known_warnings_filtered(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging "
                                r"interval", module=r"pytorch_lightning\.loops\.fit_loop")
        for name in names:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def optimizer_steps_per_update(model) -> int:
    """Lightning's ``global_step`` per generator update: a GAN also steps its discriminator ``d_steps`` times."""
    if getattr(model, "family", None) == "gan":
        return 1 + int(model.game.d_steps)
    return 1


def write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or ["update"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _finish_wandb(loggers, row: dict, files=()) -> None:
    """Log the row to the W&B run (summary and a small artifact with ``files``) and close the run, so the next
    run of the sweep is a new one."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        try:
            run = logger.experiment
            log_row(run, row, files)
            run.finish()
        except Exception as err:  # tracking must never take a finished run down
            logging.getLogger(__name__).warning("could not finish the W&B run: %s", err)


@dataclass
class _Run:
    """What ``run_one`` (and each seed of ``run_group``) builds before training: steps 1-2 of the module docstring."""

    spec: dict
    key: str
    folder: Path
    family: Any
    seed: int
    batch_size: int
    split: str
    dm: Any
    model: Any
    source: Optional[str]
    updates: int
    loggers: list
    budget: BudgetCallback
    along: Any
    trainer: Any
    init: dict
    start: float


def _prepare(spec: dict, run_dir: Path, concurrent: bool = False) -> _Run:
    """Seed, data, model (started from ``init_from``), loggers, trainer and the ``init`` evaluation of one run."""
    import pytorch_lightning as pl

    from modules.tracking import Tracking

    start = time.perf_counter()
    family = get_family(spec["family"])
    key = spec.get("key") or run_key(spec)
    folder = run_dir / "runs" / key
    if folder.exists():  # leftovers of a run killed before its row was written: not a result, start clean
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({**spec, "key": key}, indent=2, sort_keys=True))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))

    seed, batch_size = int(spec["seed"]), int(spec["batch_size"])
    split = eval_split(spec)
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = build_datamodule(spec["data"], batch_size, seed)
    dm.prepare()
    model = family.load_class()(vocab_size=dm.vocab_size, **family.init_kwargs(spec["model"]))
    source = init_from_key(spec)
    if source is not None:  # before the `init` evaluation: a run started from a checkpoint starts there
        load_init_from(model, source, run_dir, spec["data"])

    updates = int(spec["budget"]["updates"])
    tracking = spec.get("tracking", {})
    condition = spec["data"].get("init_args", {}).get("condition", "none")
    loggers = Tracking(
        project=tracking.get("project", "gan-vs-transformer"),
        name=key,
        group=tracking.get("group"),
        job_type=family.name,
        tags=[family.name, f"bs{batch_size}", f"seed{seed}", f"cond-{condition}", *tracking.get("tags", [])],
        wandb_mode=tracking.get("wandb_mode", "offline"),
    ).loggers(save_dir=str(run_dir / "runs"), family=family.name, config={**spec, "key": key},
              concurrent=concurrent)
    budget = BudgetCallback(updates, batch_size, every=max(1, updates // int(spec.get("curve_points", 100))))
    extras = spec.get("measure", {})
    callbacks = [budget.as_lightning()]
    along = None  # measurements along the run on the fixed held-out batch (experiments.q1_game.game)
    if extras.get("held_out") or extras.get("checkpoints"):
        from experiments.q1_game.game import RunMeasurements

        along = RunMeasurements(dm, updates, batch_size, held_out=extras.get("held_out"),
                                checkpoints=extras.get("checkpoints"))
        callbacks.append(along.as_lightning())
    trainer_kwargs = {"accelerator": "cpu", "devices": 1, **spec.get("trainer", {})}
    trainer = pl.Trainer(
        logger=loggers,
        callbacks=callbacks,
        max_steps=updates * optimizer_steps_per_update(model),
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=max(1, updates // int(spec.get("curve_points", 100))),
        default_root_dir=str(folder),
        **trainer_kwargs,
    )
    init = evaluate(trainer, model, dm, split)
    return _Run(spec, key, folder, family, seed, batch_size, split, dm, model, source, updates, loggers, budget,
                along, trainer, init, start)


def _finish(run: _Run, run_dir: Path, fit_time: float, done_updates: int,
            vectorised: Optional[dict] = None) -> dict:
    """``vectorised``: the row fields of a vectorised run (``vectorised_with``: the seeds trained together, which
    changes no number; ``group_fit_time_s``: their training time); None for a run through Lightning's loop."""
    """Steps 4-6 of the module docstring for a trained run -> its row."""
    spec, model, dm, trainer, budget, split = run.spec, run.model, run.dm, run.trainer, run.budget, run.split
    family, key, folder, seed, batch_size = run.family, run.key, run.folder, run.seed, run.batch_size
    try:
        final = evaluate(trainer, model, dm, split)
    except Exception:
        if budget.nonfinite is None:
            raise
        final = {"nll_oracle_per_token": math.nan, "nll_test_per_token": math.nan}
    num_eval = int(model.evaluation.num_eval_samples)
    ref_d2 = _reference_distinct2(dm, num_eval, split)
    write_csv(folder / "curves.csv", budget.curve)
    init, extras = run.init, spec.get("measure", {})
    condition = spec["data"].get("init_args", {}).get("condition", "none")

    row: dict[str, Any] = {
        "key": key,
        "kind": spec.get("kind", "sweep"),
        "family": family.name,
        "class_path": family.class_path,
        "adversarial": family.adversarial,
        "batch_size": batch_size,
        "seed": seed,
        "config_hash": config_hash(spec),
        "plan_hash": spec.get("plan_hash"),
        "condition": condition,
        "condition_strength": spec["data"].get("init_args", {}).get("condition_strength"),
        "z_dim": get_arg(spec["model"], z_dim_path(spec["family"]), 0),
        "init_from": run.source,
        "equal_updates_of": spec.get("equal_updates_of"),
        "lr": {k: get_arg(spec["model"], k) for k in family.lr_args if get_arg(spec["model"], k) is not None},
        "lr_factor": spec.get("lr_factor", 1.0),
        "lr_multiplier": spec.get("lr_multiplier"),
        "eval_split": split,
        "budget_kind": spec["budget"]["kind"],
        "budget_value": spec["budget"]["value"],
        "updates": done_updates,
        "samples_seen": done_updates * batch_size,
        "underpowered": run.updates < MIN_VERDICT_UPDATES,
        "final_beta": getattr(model, "final_beta", None),
        "optimizer": model.generator_optimizer_settings()
        if hasattr(model, "generator_optimizer_settings") else None,
        "fit_time_s": fit_time,
        "engine": "lightning" if vectorised is None else "vectorised",
        **(vectorised or {"vectorised_with": None}),
        "init": init,
        "final": {**final, "ref_distinct2": ref_d2},
        "losses": final_losses(budget.curve),
        **judge(init, final, budget.nonfinite, ref_d2),
    }
    healthy = not row["diverged"]
    if run.along is not None:
        row.update(run.along.finish(model))
        for name in ("held_out_curve", "game_checkpoints"):  # the lists also as per-run files, as the curves
            if name in row:
                write_csv(folder / f"{name}.csv", row[name])
    if extras.get("noise") and healthy:
        from experiments.q2_batch_size.noise_scale import measure_noise_scale

        row["noise"] = measure_noise_scale(model, dm, seed=seed, **extras["noise"])
    if extras.get("temperatures") and healthy:
        points = temperature_curve(model, dm, extras["temperatures"])  # NLL_test z draws: the run's own
        write_curve(folder / "temperature.csv", points)
        row["temperature"] = points
    if extras.get("probes") and healthy:
        from experiments.q3_conditioning.probes import condition_probes

        row["probes"] = condition_probes(model, dm, seed=seed, **extras["probes"])
    if spec.get("save_checkpoint", True):
        trainer.save_checkpoint(str(folder / "final.ckpt"), weights_only=False)  # (said: Lightning logs the default)
    row["paths"] = {"folder": str(folder.relative_to(run_dir)), "curves": str((folder / "curves.csv").relative_to(run_dir))}
    row["wall_time_s"] = time.perf_counter() - run.start
    _finish_wandb(run.loggers, row, files=[folder / "curves.csv", folder / "temperature.csv", run_dir / "sweep.json"])
    return row


def _fit_and_finish(run: _Run, run_dir: Path) -> dict:
    """The single run's training (Lightning's fit loop), then steps 4-6."""
    fit_start = time.perf_counter()
    try:
        run.trainer.fit(run.model, datamodule=run.dm)
    except Exception:
        if run.budget.nonfinite is None:
            raise
    fit_time = time.perf_counter() - fit_start
    return _finish(run, run_dir, fit_time, generator_updates(run.model, run.trainer))


ENGINES = ("vectorised", "lightning")


def engine_of(spec: dict) -> str:
    """How a run trains (the spec's ``engine``; part of its identity, since the two round differently):
    ``vectorised`` (default) through ``modules.models.seed_group`` wherever the configuration allows it (alone or
    with the other seeds of its configuration: the numbers are the same, tested), else Lightning's fit loop;
    ``lightning``: always Lightning's fit loop (``training_step``), one seed at a time."""
    engine = spec.get("engine", "vectorised")
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    return engine


def run_one(spec: dict, run_dir: str | Path) -> dict:
    """Train and evaluate one run; return its results row (see the module docstring)."""
    return run_group([spec], run_dir)[0]


def group_key(spec: dict) -> str:
    """What the runs of one vectorised group share: the whole spec but its seed (and what follows from the seed:
    the key, the run it starts from, tracking)."""
    ident = {k: v for k, v in spec.items() if k not in (*_NOT_HASHED, "seed", "init_from")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Batches:
    """One seed's training batches in the order its single run's Lightning loop draws them (epoch after epoch,
    the sampler told each epoch)."""

    def __init__(self, dm):
        dm.setup("fit")
        self.loader, self.epoch = dm.train_dataloader(), 0
        self._set_epoch()
        self.it = iter(self.loader)

    def _set_epoch(self):
        for sampler in (getattr(self.loader, "sampler", None), getattr(self.loader.batch_sampler, "sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(self.epoch)

    def __next__(self):
        try:
            return next(self.it)
        except StopIteration:
            self.epoch += 1
            self._set_epoch()
            self.it = iter(self.loader)
            return next(self.it)


@_quiet_lightning()
def run_group(specs: list[dict], run_dir: str | Path) -> list[dict]:
    """Train the runs ``specs`` (one configuration, several seeds; ``group_key``) as one vectorised model
    (``modules.models.seed_group``) and return their rows, each as ``run_one`` of that spec would give it (to float
    rounding: tested). Each seed is prepared exactly as its single run (seed, data, model, ``init`` evaluation),
    its RNG state then kept in a generator of its own; training draws each seed's noise from it. Rows record
    ``vectorised`` = {seeds, group_fit_time_s}; their ``fit_time_s`` is the group's training time over its seeds.
    A single spec, or a configuration that cannot be vectorised (``vectorisable``), runs seed by seed as
    ``run_one`` runs it (its rows' ``vectorised`` is null)."""
    from modules.models.seed_group import SeedGroup, vectorisable

    run_dir = Path(run_dir)
    if len({group_key(s) for s in specs}) != 1:
        raise ValueError("run_group takes runs of one configuration that differ only in their seed")
    runs, generators = [], []
    for spec in specs:
        run = _prepare(spec, run_dir, concurrent=len(specs) > 1)
        if engine_of(spec) == "lightning" or vectorisable(run.model) is not None:  # (the first seed tells for all)
            rows = [_fit_and_finish(run, run_dir)]
            return rows + [_fit_and_finish(_prepare(s, run_dir), run_dir) for s in specs[1:]]
        generator = torch.Generator(device="cpu")
        generator.set_state(torch.get_rng_state())  # the training RNG of this seed's single run, from here on
        runs.append(run)
        generators.append(generator)
    updates = runs[0].updates
    group = SeedGroup([r.model for r in runs], generators, updates)
    batches = [_Batches(r.dm) for r in runs]
    for r in runs:
        if r.along is not None:
            r.along.measure(r.model, 0)
    fit_start = time.perf_counter()
    for update in range(1, updates + 1):
        logs = group.update([next(b) for b in batches])
        for i, r in enumerate(runs):
            if not group.live[i]:
                continue
            stop = r.budget.record(update, logs[i])
            if r.budget.point is not None:
                for logger in r.loggers:
                    logger.log_metrics({k: v for k, v in r.budget.point.items() if k.startswith("train/")}, update)
            if r.along is not None and r.along.wants(update):
                group.write_back(i)
                r.along.measure(r.model, update)
            if stop and r.budget.nonfinite is not None:
                group.stop(i)
        if not any(group.live):
            break
    group.write_back()
    fit_time = time.perf_counter() - fit_start
    return [_finish(r, run_dir, fit_time / len(runs), group.stopped_at.get(i, group.updates),
                    {"vectorised_with": len(runs), "group_fit_time_s": fit_time}) for i, r in enumerate(runs)]
