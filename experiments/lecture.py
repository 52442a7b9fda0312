"""``gvt lecture``: the lecture's road to the Transformer, claims C1-C4 run into one folder and one report.

    gvt lecture [--preset lecture|lecture-gpu|lecture-smoke] [--out DIR] [--seeds ...] [--workers N]
                [--wandb-mode MODE] [--only c1,c2,c3,c4] [--c1-device cpu|cuda|cuda:N]

Parts (each resumable: a rerun does not redo what is finished in DIR):

- **C1** (an RNN is sequential; a Transformer is not): ``experiments.c1_parallel.measure``'s training-step timing of the
  LSTM seq2seq and the Transformer at matched parameter counts against sequence length, for each torch thread
  count of the preset, each replicate an independent process (``measure_replicates``), on ``--c1-device`` (cpu by
  default; cuda is an error where CUDA is not available), alone on the machine (no other part runs meanwhile).
  Written to ``DIR/c1/parallel.json``; rule, verdict and section in ``experiments.c1_parallel.verdict``.
- **C2** (the context vector is the bottleneck; attention removes it): ``experiments.c2_bottleneck.bottleneck`` into ``DIR/c2``.
- **C3** (attention shows alignments; an RNN gives none): ``experiments.c3_attention.claim`` (settings, runs, rule, report
  section). ``rnn-attention`` (additive attention) and ``transformer`` trained on copy, reverse and sort of distinct
  words (``modules.data.TaskDataModule``) for every seed through the experiment runner (run folder ``DIR/c3``);
  each trained model is scored on the test split: greedy token accuracy and exact match, alignment accuracy against
  the true source position beside chance and the positional baseline, and the masking faithfulness test
  (``experiments.c3_attention.attention``), cached beside the run as ``c3_scores.json``. Heatmaps: task examples of seed 0's
  models and, where the preset names translation data (Multi30k de->en), held-out test pairs of a small model of
  each family trained briefly on it.
- **C4** (transfer learning needs far fewer labelled examples): ``experiments.c4_transfer.transfer`` into ``DIR/c4``.

C2 and C4 come from their own modules through one contract (``PRESETS``, ``run``, ``verdict``,
``report_section``, optionally ``corpora``); where a module is not there, its section says so and its verdict is
"inconclusive: not run".

**Missing corpora** (``experiments.core.corpus_check``): a part whose verdict needs an absent corpus (C4: the general
corpus and MR) is not run, its section and verdict saying "not run: corpus X not found at PATH (set
GVT_DATA_DIR)"; a descriptive part that needs one (C2's Multi30k buckets, C3's translation heatmaps) is left out
and named in its section. Every other part runs, the report lists what did not run, and ``gvt lecture`` exits 0.

Then ``DIR/report/report.md`` (the verdict table, one section per claim, wall times, machine, settings),
``DIR/report/verdicts.json`` (the schema of the Q1-Q4 report's, ``experiments.core.report.verdicts_json``) and the PNG
figures; with W&B on, the figures and heatmaps are logged as W&B images.

**Verdicts** use the one rule of ``experiments.core.verdicts`` (primary cell of per-replicate values, SESOI, three
outcomes; C1 a stricter form of it) and Holm's correction across C1-C4:

- **C1** primary ``slope_difference``: per replicate (an independent timing process), the slope of log(step
  time) on log(L) of the LSTM minus the Transformer's, at the primary thread count (fixed in advance: the largest
  the preset measures, the most parallel hardware the machine offers). SESOI ``C1_SESOI``. Supported needs the
  interval's lower bound at or above the SESOI and the estimate without the longest length at or above it too;
  not supported the upper bound below the SESOI and the estimate without the longest length below it too; else
  inconclusive with the reason named (e.g. "rests on the longest length"); ``experiments.c1_parallel.verdict``.
  Gate: parameter counts matched within ``PARAMETER_TOLERANCE``. The reason names the device and threads
  ("CPU with 2 torch thread(s)"); on a CPU the confound is stated beside the verdict (no parallel hardware of the
  kind the claim is about) and the section gives each net's thread scaling, what a CPU can show.
- **C3** primary ``alignment_above_baseline``: per seed, the primary family's (``rnn-attention``) alignment accuracy
  minus max(chance, positional baseline), averaged over the primary tasks (sort: the content task; on copy and
  reverse a fixed diagonal already scores 1, so they are reported, not decided). SESOI ``C3_SESOI``. Gate: the
  family solved each task in every seed (test token accuracy at least ``MIN_TASK_ACCURACY``). The masking test is
  reported beside it. Plain ``rnn`` has no attention weights at all: nothing to score, which is the lecture's point.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from experiments.core import corpus_check
from experiments.core import verdicts as V
from experiments.c3_attention.claim import (C3_CLAIM, C3_PRIMARY, C3_RULE, C3_SESOI, MIN_TASK_ACCURACY,  # noqa: F401
                                    C3Settings, c3_heatmaps, c3_section, c3_specs, c3_verdict, plot_alignment,
                                    run_c3, score_task_run)
from experiments.c1_parallel.measure import ParallelSettings
from experiments.c1_parallel.verdict import CLAIM as C1_CLAIM, PARAMETER_TOLERANCE, RULE_SETTINGS as C1_RULE_SETTINGS
from experiments.c1_parallel.verdict import SESOI as C1_SESOI, c1_section, c1_verdict, load_warning  # noqa: F401
from experiments.core.stats import finite
from modules.errors import ConfigError, GvtError
from modules.files import atomic_write_text

PARTS = ("c1", "c2", "c3", "c4")

C2_MODULE, C4_MODULE = "experiments.c2_bottleneck.bottleneck", "experiments.c4_transfer.transfer"
CLAIMS = {
    "C1": C1_CLAIM,
    "C2": "In seq2seq the context vector is the bottleneck of the whole model; attention over all encoder states "
          "removes it.",
    "C3": C3_CLAIM,
    "C4": "Transfer learning (ULMFiT: pretrain, adapt, fine-tune) needs far fewer labelled examples than training "
          "from scratch.",
}


# ---- settings ---------------------------------------------------------------------------------------------------

@dataclass
class LectureSettings:
    name: str
    c1: ParallelSettings
    c3: C3Settings
    c1_primary_threads: Optional[int] = None  # None: the largest thread count measured (module docstring)
    c2_preset: str = "lecture"  # the name in experiments.c2_bottleneck.bottleneck.PRESETS
    c4_preset: str = "lecture"  # the name in experiments.c4_transfer.transfer.PRESETS
    workers: int = 2
    alpha: float = 0.05
    min_seeds: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def primary_threads(self) -> int:
        return self.c1_primary_threads or max(self.c1.threads)


def _task_models(d_model: int, heads: int, layers: int, hidden: int, eval_samples: int, dropout: float,
                 max_len: int) -> dict[str, dict]:
    """Model arguments per family: a small Transformer and LSTM seq2seq (with and without attention; C3 compares
    each with chance, not the two with each other, so their sizes need not match); few evaluation samples (the
    runner's sample metrics are not what C3 reads)."""
    evaluation = dict(num_eval_samples=eval_samples, num_logged_samples=0)
    return {
        "transformer": dict(d_model=d_model, n_heads=heads, n_encoder_layers=layers, n_decoder_layers=layers,
                            d_ff=2 * d_model, dropout=dropout, max_len=max_len, lr=2e-3, warmup_steps=50,
                            schedule="constant", evaluation=dict(evaluation)),
        "rnn-attention": dict(emb_dim=d_model, hidden_dim=hidden, num_layers=1, dropout=dropout, lr=3e-3,
                              evaluation=dict(evaluation)),
        "rnn": dict(emb_dim=d_model, hidden_dim=hidden, num_layers=1, dropout=dropout, lr=3e-3,
                    evaluation=dict(evaluation)),
    }


MULTI30K = {"class_path": "modules.data.TextDataModule", "init_args": dict(
    format="parallel", root="$GVT_DATA_DIR/multi30k",
    train={"src": "train.de.gz", "tgt": "train.en.gz"}, val={"src": "val.de.gz", "tgt": "val.en.gz"},
    test={"src": "test_2016_flickr.de.gz", "tgt": "test_2016_flickr.en.gz"},
    tokenizer="word", lowercase=True, min_freq=5, max_len=16)}


def _lecture() -> LectureSettings:
    """The whole preset at most 30 min on 2 CPU cores; measured from a clean clone on the project's 2-core machine
    (load average about 1): 1175 s in all, C1 83 s, C2 316 s, C3 303 s, C4 452 s (docs/lecture_report), with C3 on
    copy and reverse only. The sort task adds 6 runs to C3's 12 + 2 (about 1.5x its time, not yet measured on an
    idle machine: sort at 600 updates was solved by both families at seed 0, token accuracy 1.0)."""
    # C1: 5 independent processes per thread count (the verdict's n), each 1 warm-up and 3 timed rounds
    c1 = ParallelSettings(lengths=[16, 32, 64, 128, 256], batch_size=16, vocab_size=1000, d_model=128, n_heads=4,
                          layers=2, warmup=1, repeats=3, replicates=5, threads=[1, 2])
    # the same nets learn the tasks and, briefly, Multi30k (600 and 800 updates: copy and reverse solved in every
    # seed in the runs measured for the README, sort at seed 0; 800 Multi30k updates give a visibly diagonal de->en
    # alignment). Distinct words: sort's alignment is unique only then (modules.data.tasks)
    models = _task_models(d_model=64, heads=4, layers=2, hidden=128, eval_samples=32, dropout=0.0, max_len=40)
    c3 = C3Settings(task_data=dict(num_words=12, min_len=4, max_len=10, num_train=4000, num_val=64, num_test=300,
                                   distinct=True), tasks=["copy", "reverse", "sort"], primary_tasks=["sort"],
                    models=models, seeds=[0, 1, 2], batch_size=64, updates=600,
                    translation_data=copy.deepcopy(MULTI30K), translation_updates=800)
    return LectureSettings("lecture", c1, c3)


def _smoke() -> LectureSettings:
    """Seconds: the whole pipeline on tiny nets (tests)."""
    # three lengths, so the leave-longest-out check has a slope to fit; three processes, the fewest a verdict takes
    c1 = ParallelSettings(lengths=[2, 4, 8], batch_size=2, vocab_size=30, d_model=16, n_heads=2, layers=1, warmup=0,
                          repeats=1, replicates=3, threads=[1])
    models = _task_models(d_model=16, heads=2, layers=1, hidden=16, eval_samples=4, dropout=0.0, max_len=16)
    c3 = C3Settings(task_data=dict(num_words=6, min_len=2, max_len=4, num_train=64, num_val=8, num_test=16,
                                   distinct=True),
                    models=models, seeds=[0], batch_size=16, updates=3, tasks=["copy", "sort"], primary_tasks=["sort"],
                    heatmap_examples=1,
                    translation_data=None, translation_updates=3, translation_pairs=1, curve_points=3)
    return LectureSettings("lecture-smoke", c1, c3, c2_preset="smoke", c4_preset="smoke", workers=1)


def _lecture_gpu() -> LectureSettings:
    """The lecture preset with C4's larger ``gpu`` preset (bigger bodies, pretraining to a lower NLL): for a
    machine with one GPU; not yet measured."""
    return dataclasses.replace(_lecture(), name="lecture-gpu", c4_preset="gpu")


PRESETS: dict[str, Callable[[], LectureSettings]] = {"lecture": _lecture, "lecture-gpu": _lecture_gpu,
                                                     "lecture-smoke": _smoke}


def _settings_for(name: str) -> LectureSettings:
    if name not in PRESETS:
        raise ConfigError(f"unknown lecture preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# ---- C1 ---------------------------------------------------------------------------------------------------------

def run_c1(settings: LectureSettings, folder: Path, echo) -> tuple[dict, bool]:
    """The C1 record (measured now, each replicate in its own process, or read from ``folder`` when an earlier
    invocation finished it) and whether it was resumed."""
    from experiments.c1_parallel.measure import check_device, measure_replicates

    path = folder / "parallel.json"
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("settings") == json.loads(json.dumps(settings.c1.to_dict())):
            echo(f"C1: already measured in {path}; not redone")
            return record, True
        echo(f"C1: {path} holds other settings; measuring again")
    check_device(settings.c1.device)
    folder.mkdir(parents=True, exist_ok=True)
    record = measure_replicates(settings.c1, echo=echo)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return record, False


# ---- C2 and C4: their own modules, through the contract ----------------------------------------------------------

def import_part(module_name: str):
    """The module of C2 or C4, or None where it is not there (only its own absence counts: an import error
    inside it is a bug and propagates)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return None
        raise


def _not_run_verdict(question: str, why: str, alpha: float, min_seeds: int) -> V.Verdict:
    cells = {"primary": V._not_run(f"{question}'s primary cell", why)}
    return V._standard(question, CLAIMS[question], f"decided by {C2_MODULE if question == 'C2' else C4_MODULE}",
                       None, "primary", cells, why, [], V.VerdictSettings(alpha=alpha, min_seeds=min_seeds))


def run_delegated(question: str, module_name: str, preset: str, folder: Path, *, seeds: Optional[list[int]],
                  workers: int, wandb_mode: str, echo) -> dict:
    """Run C2 or C4 through its module's contract; ``{"module", "rows", "why"}`` (module None: not there)."""
    module = import_part(module_name)
    if module is None:
        return {"module": None, "rows": [], "why": f"not run: {module_name} is not there"}
    if preset not in module.PRESETS:
        raise ConfigError(f"{module_name} has no preset {preset!r} (it has {', '.join(module.PRESETS)})")
    part_settings = module.PRESETS[preset]()
    if seeds is not None and dataclasses.is_dataclass(part_settings) and hasattr(part_settings, "seeds"):
        part_settings = dataclasses.replace(part_settings, seeds=list(seeds))
    why, notes = corpus_check.check(module.corpora(part_settings) if hasattr(module, "corpora") else {})
    for line in notes:
        echo(f"{question}: {line}")
    if why:  # the verdict rests on an absent corpus: the part is not run, the lecture goes on
        echo(f"{question}: {why}")
        return {"module": module, "rows": [], "why": why, "notes": notes}
    echo(f"{question}: {module_name} preset {preset!r} into {folder}")
    rows = module.run(part_settings, folder, workers=workers, wandb_mode=wandb_mode, echo=echo)
    return {"module": module, "rows": rows, "why": None, "notes": notes}


def delegated_verdict(question: str, part: Optional[dict], alpha: float, min_seeds: int,
                      why_not_run: str) -> V.Verdict:
    if part is None or part["module"] is None or part.get("why"):
        return _not_run_verdict(question, part["why"] if part else why_not_run, alpha, min_seeds)
    v = part["module"].verdict(part["rows"], alpha=alpha, min_seeds=min_seeds)
    if v.question != question:
        raise ConfigError(f"{part['module'].__name__}.verdict returned question {v.question!r}, expected {question!r}")
    return v


# ---- the whole lecture ------------------------------------------------------------------------------------------

@dataclass
class LectureResult:
    folder: Path
    report: Path
    verdicts_json: Path
    verdicts: list[V.Verdict]
    figures: dict[str, Path]
    wall_s: float
    prereg: dict


def _state(out: Path) -> dict:
    path = out / "lecture.json"
    return json.loads(path.read_text()) if path.is_file() else {"parts": {}}


def _record_part(out: Path, state: dict, part: str, wall_s: float, resumed: bool) -> None:
    entry = state["parts"].setdefault(part, {"wall_s": []})
    entry["wall_s"].append(round(wall_s, 2))
    entry["resumed"] = resumed
    atomic_write_text(out / "lecture.json", json.dumps(state, indent=1) + "\n")


def parse_only(text: Optional[str]) -> list[str]:
    if not text:
        return list(PARTS)
    parts = [p.strip().lower() for p in text.replace(" ", ",").split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ConfigError(f"--only takes parts among {', '.join(PARTS)}, got {text!r}")
    return [p for p in PARTS if p in parts]


def preregistration(settings: LectureSettings, out: Optional[Path] = None) -> dict:
    """The settings that define the lecture's verdicts (preset, SESOIs, gates, alpha) and their hash; C4's own
    (``experiments.c4_transfer.transfer.preregistration``: settings, gates, learning-rate pilot and, with ``out``, the rates its
    pilot chose in ``out/c4``) where that module has one."""
    defined = {"preset": settings.to_dict(), "sesoi": {"C1": C1_SESOI, "C3": C3_SESOI},
               "gates": {"C1_parameter_tolerance": PARAMETER_TOLERANCE, "C3_min_task_accuracy": MIN_TASK_ACCURACY},
               "c1_primary_threads": settings.primary_threads, "c1_device": settings.c1.device,
               "c1_rule": C1_RULE_SETTINGS, "c1_replicates": settings.c1.replicates,
               # C3's primary quantity and the tasks it averages over (the rule text names the baseline)
               "c3": {"primary": C3_PRIMARY, "primary_tasks": list(settings.c3.primary_tasks),
                      "primary_family": settings.c3.primary_family, "rule": C3_RULE}}
    c4 = import_part(C4_MODULE)
    if c4 is not None and hasattr(c4, "preregistration") and settings.c4_preset in c4.PRESETS:
        from experiments.c4_transfer.pilot import read_choices

        choices = read_choices(Path(out) / "c4") if out is not None else None
        defined["c4"] = c4.preregistration(settings.c4_preset, choices)
    # C2's own settings, rule and gates (its pilot's grid among them), from its module
    c2 = import_part(C2_MODULE)
    if c2 is not None and hasattr(c2, "preregistration"):
        defined.setdefault("parts", {})["C2"] = c2.preregistration(settings.c2_preset)
    digest = hashlib.sha256(json.dumps(defined, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"hash": digest, "settings": defined}


def run_lecture(preset: str = "lecture", out: str | Path = "runs/lecture", *, seeds: Optional[list[int]] = None,
                workers: Optional[int] = None, wandb_mode: str = "offline", only: Optional[list[str]] = None,
                settings: Optional[LectureSettings] = None, c1_device: Optional[str] = None,
                echo=print) -> LectureResult:
    """Run the selected parts into ``out`` (resumably) and write the report (module docstring). ``c1_device``
    (cpu, cuda, cuda:N) overrides the preset's C1 device; it is part of the pre-registration."""
    from experiments.c1_parallel.measure import machine

    start = time.perf_counter()
    settings = settings or _settings_for(preset)
    if c1_device is not None:
        settings.c1 = ParallelSettings(**{**settings.c1.to_dict(), "device": c1_device})
    if seeds is not None:
        if not seeds:
            raise ConfigError("--seeds needs at least one seed")
        settings.c3 = dataclasses.replace(settings.c3, seeds=list(seeds))
    workers = settings.workers if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    only = list(PARTS) if only is None else only
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = _state(out)
    state.update({"preset": settings.name, "settings": json.loads(json.dumps(settings.to_dict(), default=str))})
    machine_before = machine()
    left_out = "not run: left out by --only in this invocation"
    results: dict[str, dict] = {}

    # C1 first and alone: its timings must not share the cores with C3's training
    if "c1" in only:
        t0 = time.perf_counter()
        record, resumed = run_c1(settings, out / "c1", echo)
        results["c1"] = {"record": record}
        _record_part(out, state, "c1", time.perf_counter() - t0, resumed)
    if "c2" in only:
        t0 = time.perf_counter()
        results["c2"] = run_delegated("C2", C2_MODULE, settings.c2_preset, out / "c2", seeds=seeds,
                                      workers=workers, wandb_mode=wandb_mode, echo=echo)
        _record_part(out, state, "c2", time.perf_counter() - t0, False)
    if "c3" in only:
        t0 = time.perf_counter()
        echo(f"C3: {len(settings.c3.families)} families x {len(settings.c3.tasks)} tasks x "
             f"{len(settings.c3.seeds)} seeds" + (" + translation heatmap models" if settings.c3.translation_data
                                                  else "") + f", {workers} worker(s)")
        run_settings, notes = settings, []
        if settings.c3.translation_data is not None:
            missing = corpus_check.first_missing(corpus_check.text_data_files(settings.c3.translation_data))
            if missing is not None:  # the heatmaps of held-out pairs are descriptive: C3's verdict runs without them
                notes = [f"Translation heatmaps not run: {corpus_check.not_found('multi30k', missing)}."]
                echo(f"C3: {notes[0]}")
                run_settings = dataclasses.replace(settings, c3=dataclasses.replace(settings.c3, translation_data=None))
        results["c3"] = run_c3(run_settings, out / "c3", workers, wandb_mode, echo)
        results["c3"]["notes"] = notes
        _record_part(out, state, "c3", time.perf_counter() - t0, False)
    if "c4" in only:
        t0 = time.perf_counter()
        results["c4"] = run_delegated("C4", C4_MODULE, settings.c4_preset, out / "c4", seeds=seeds,
                                      workers=workers, wandb_mode=wandb_mode, echo=echo)
        _record_part(out, state, "c4", time.perf_counter() - t0, False)

    echo("report: verdicts, figures, heatmaps")
    figures_dir = out / "report"
    figures_dir.mkdir(parents=True, exist_ok=True)
    alpha, min_seeds = settings.alpha, settings.min_seeds
    vs = [c1_verdict(results["c1"]["record"] if "c1" in results else None, threads=settings.primary_threads,
                     alpha=alpha, min_seeds=min_seeds, why_not_run=left_out),
          delegated_verdict("C2", results.get("c2"), alpha, min_seeds, left_out),
          c3_verdict(results["c3"]["rows"] if "c3" in results else [], primary_family=settings.c3.primary_family,
                     tasks=tuple(settings.c3.tasks), primary_tasks=tuple(settings.c3.primary_tasks), alpha=alpha,
                     min_seeds=min_seeds, why_not_run=left_out),
          delegated_verdict("C4", results.get("c4"), alpha, min_seeds, left_out)]
    V.holm(vs, alpha, min_seeds)
    figures = write_figures(settings, out, results, figures_dir)
    prereg = preregistration(settings, out)
    state["last_invocation"] = {"wall_s": round(time.perf_counter() - start, 2), "only": only,
                                "machine_before": machine_before, "machine_after": machine(),
                                "torch_threads_of_runs": settings.c3.threads, "workers": workers}
    atomic_write_text(out / "lecture.json", json.dumps(state, indent=1) + "\n")
    report = figures_dir / "report.md"
    write_report(report, settings, state, results, vs, figures, prereg, out)
    from experiments.core.report import verdicts_json

    vj = figures_dir / "verdicts.json"
    atomic_write_text(vj, json.dumps(verdicts_json(vs, prereg, V.VerdictSettings(alpha=alpha, min_seeds=min_seeds),
                                                   []), indent=2, default=str) + "\n")
    log_to_wandb(settings, out, figures, vs, wandb_mode, echo)
    wall = time.perf_counter() - start
    echo(f"lecture: report in {report} ({wall:.0f} s)")
    return LectureResult(out, report, vj, vs, figures, wall, prereg)


# ---- figures ----------------------------------------------------------------------------------------------------

def write_figures(settings: LectureSettings, out: Path, results: dict, folder: Path) -> dict[str, Path]:
    from experiments.c1_parallel.measure import plot

    figures: dict[str, Path] = {}
    if "c1" in results:
        figures["c1_step_time"] = plot(results["c1"]["record"], folder / "c1_step_time.png", "median")
    if "c3" in results:
        p = plot_alignment(results["c3"]["rows"], folder / "c3_alignment.png")
        if p:
            figures["c3_alignment"] = p
        heat = c3_heatmaps(out / "c3", results["c3"]["specs"], settings.c3, folder / "heatmaps")
        results["c3"]["heatmaps"] = heat
        figures.update(heat)
    for part in ("c2", "c4"):
        if part in results and results[part]["module"] is not None and not results[part].get("why"):
            lines, part_figures = results[part]["module"].report_section(results[part]["rows"], folder)
            results[part]["section"] = subsection(lines)
            figures.update({f"{part}_{name}": p for name, p in part_figures.items()})
    return figures


# ---- the report -------------------------------------------------------------------------------------------------

def subsection(lines: list[str]) -> list[str]:
    """A module's report section (written to stand alone, under its own "## " title) inside this report's section
    of the claim: every Markdown heading one level deeper, the section's own title as "### Tables and figures"."""
    out, titled = [], False
    for line in lines:
        if line.startswith("#"):
            level, _, title = line.partition(" ")
            if not titled and level == "##":
                titled, title = True, "Tables and figures"
            line = f"#{level} {title}"
        out.append(line)
    return out


def _busy(machine: dict) -> bool:
    load, cores = (machine.get("load_average_1_5_15") or [math.nan])[0], machine.get("cpu_count")
    return bool(cores) and finite(load) and load > cores


def _wall(state: dict, part: str) -> str:
    entry = state["parts"].get(part)
    if not entry:
        return "not run"
    times = entry["wall_s"]
    text = f"{sum(times):.0f} s"
    if len(times) > 1:
        text += f" over {len(times)} invocations ({' + '.join(f'{t:.0f}' for t in times)} s)"
    if entry.get("resumed"):
        text += "; finished in an earlier invocation, read back in the last"
    return text


def write_report(path: Path, settings: LectureSettings, state: dict, results: dict, vs: list[V.Verdict],
                 figures: dict[str, Path], prereg: dict, out: Path) -> None:
    from experiments.core.report import cells_table, verdict_table_text

    folder = path.parent
    last = state.get("last_invocation", {})
    m0, m1 = last.get("machine_before", {}), last.get("machine_after", {})
    L = ["# The lecture's road to the Transformer: claims C1-C4", "",
         f"Preset `{settings.name}`, run folder `{out}`. Each claim is decided by the rule of the Q1-Q4 report "
         f"(`experiments.core.verdicts`): one primary cell of per-seed (C1: per-round) values, a SESOI, three outcomes, "
         f"a gate where a precondition fails, and Holm's correction across C1-C4 at family-wise "
         f"{1 - settings.alpha:.0%}. Pre-registration hash {prereg['hash']} (the preset, SESOIs and gates).", "",
         "```", verdict_table_text(vs, prereg["hash"], settings.alpha), "```", "",
         "| claim | verdict | evidence |", "|---|---|---|"]
    L += [f"| {v.question}: {v.claim} | **{v.verdict}** | {v.evidence} |" for v in vs]
    not_run = [f"- {v.question}: {v.reason}" for v in vs if v.reason.startswith("not run")]
    not_run += [f"- {part.upper()}: {line}" for part in PARTS if part in results
                for line in results[part].get("notes", [])]
    if not_run:
        L += ["", "**What did not run** (every other part ran and is reported below):", "", *not_run]
    L += ["", "## Time and machine", "",
          "| part | wall time |", "|---|---|"]
    L += [f"| {p.upper()} | {_wall(state, p)} |" for p in PARTS]
    total = sum(sum(e["wall_s"]) for e in state["parts"].values())
    L += [f"| all parts | {total:.0f} s (the last invocation, parts {', '.join(last.get('only', []))}: "
          f"{last.get('wall_s', math.nan):.0f} s before the report) |", "",
          f"Machine: {m0.get('cpu_count')} cores ({m0.get('processor')}), torch {m0.get('torch')}, "
          f"{last.get('workers')} worker process(es) with {last.get('torch_threads_of_runs')} torch thread(s) each "
          f"for the training runs (C1 sets its own thread counts: {settings.c1.threads}); load average (1, 5, 15 "
          f"min) {m0.get('load_average_1_5_15')} at the start, {m1.get('load_average_1_5_15')} at the end"
          + (" (above the core count: other work shared the machine, and the wall times are longer than on an idle "
             "one)." if _busy(m0) or _busy(m1) else "."), ""]
    sections = {"C1": ("C1: is an RNN sequential where a Transformer is not?", "c1"),
                "C2": ("C2: the context vector as the bottleneck", "c2"),
                "C3": ("C3: do attention weights show the alignment?", "c3"),
                "C4": ("C4: transfer learning and labelled examples", "c4")}
    for v in vs:
        title, part = sections[v.question]
        L += [f"## {title}", "", f"**Claim.** {v.claim}", "", f"**Verdict: {v.verdict}.** {v.reason}", "",
              f"**Rule.** {v.rule}", ""]
        L += cells_table(v) + [""]
        for d in v.details:  # list items stay one list; every other detail is its own paragraph
            L += [d] if d.startswith("- ") else [d, ""]
        L += [""] if v.details else []
        if part not in results:
            L += ["Not run: left out by `--only` in this invocation.", ""]
        elif part == "c1":
            L += c1_section(results["c1"]["record"], settings.primary_threads, figures.get("c1_step_time"), folder)
        elif part == "c3":
            L += c3_section(settings, results["c3"], figures, folder)
        elif results[part]["module"] is None:
            L += [f"{results[part]['why']} (on this branch); its verdict stays inconclusive.", ""]
        elif results[part].get("why"):
            L += [f"{results[part]['why']}; its verdict stays inconclusive.", ""]
        else:
            L += list(results[part].get("section", [])) + [""]
        if part in results and part != "c1":
            L += [f"{line}" for line in results[part].get("notes", [])] + ([""] if results[part].get("notes") else [])
    L += ["## Settings of the preset", "", "```json", json.dumps(settings.to_dict(), indent=1, default=str), "```",
          "", "## Files", "",
          "- `c1/parallel.json`: every timed step (threads, family, length, round, seconds), parameter counts, "
          "machine.",
          "- `c3/results.jsonl`, `c3/runs/<key>/`: the training runs (curves, checkpoints); "
          "`c3/runs/<key>/c3_scores.json`: their task and alignment scores.",
          "- `c2/`, `c4/`: the runs of experiments.c2_bottleneck.bottleneck and experiments.c4_transfer.transfer.",
          "- `report/verdicts.json`: the verdicts, machine-readable (the Q1-Q4 report's schema); "
          "`lecture.json`: wall times and machine per invocation.", ""]
    atomic_write_text(path, "\n".join(L))


def log_to_wandb(settings: LectureSettings, out: Path, figures: dict[str, Path], vs: list[V.Verdict], mode: str,
                 echo) -> bool:
    """The figures and heatmaps as W&B images, the verdicts as a table (one run, job type lecture-report)."""
    from modules.tracking import resolve_wandb_mode

    mode = resolve_wandb_mode(mode)
    if mode == "disabled" or not figures:
        return False
    try:
        import wandb

        (out / "report").mkdir(parents=True, exist_ok=True)
        run = wandb.init(project="gan-vs-transformer", group=f"lecture-{out.name}", job_type="lecture-report",
                         name=f"lecture-report-{out.name}", dir=str(out / "report"), mode=mode, reinit=True,
                         config={"preset": settings.name},
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        run.log({f"lecture/{name}": wandb.Image(str(p)) for name, p in figures.items()})
        run.log({"lecture/verdicts": wandb.Table(columns=["claim", "verdict", "evidence"],
                                                 data=[[v.question, v.verdict, v.evidence] for v in vs])})
        run.summary.update({f"verdict/{v.question}": v.verdict for v in vs})
        run.finish()
        return True
    except Exception as err:  # the report is on disk; tracking must not take it down
        echo(f"lecture: W&B logging skipped ({type(err).__name__}: {err})")
        return False


# ---- command line -----------------------------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gvt lecture",
        description="The lecture's claims C1-C4 (experiments/lecture.py): C1 timing, C2 bottleneck ablation, C3 "
                    "attention alignments, C4 transfer, into one folder (rerun to resume), then "
                    "DIR/report/report.md, verdicts.json and PNG figures.")
    parser.add_argument("--preset", default="lecture", choices=list(PRESETS))
    parser.add_argument("--out", metavar="DIR", help="the run folder (default runs/lecture/PRESET)")
    parser.add_argument("--seeds", nargs="+", metavar="S", help="seeds of C2, C3 and C4 (default: each preset's)")
    parser.add_argument("--workers", type=int, metavar="N", help="training runs at once (default: the preset's)")
    parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"])
    parser.add_argument("--only", metavar="PARTS", help="comma-separated parts to run: c1,c2,c3,c4 (default all)")
    parser.add_argument("--c1-device", metavar="DEVICE",
                        help="where C1 times the training steps: cpu (the presets' default), cuda or cuda:N "
                             "(an error where CUDA is not available)")
    args = parser.parse_args(argv)
    words = [x for v in (args.seeds or []) for x in str(v).replace(",", " ").split()]
    echo = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        seeds = [int(s) for s in words] if args.seeds else None
    except ValueError:
        parser.error(f"--seeds takes integers, got {' '.join(args.seeds)}")
    try:
        result = run_lecture(args.preset, args.out or f"runs/lecture/{args.preset}", seeds=seeds,
                             workers=args.workers, wandb_mode=args.wandb_mode, only=parse_only(args.only),
                             c1_device=args.c1_device, echo=echo)
    except GvtError as err:  # bad settings are one line; anything else is a bug and keeps its traceback
        print(f"gvt lecture: error: {err}", file=sys.stderr)
        return 2
    from experiments.core.report import verdict_table_text

    print(verdict_table_text(result.verdicts, result.prereg["hash"], result.prereg["settings"]["preset"]["alpha"]))
    print(f"report: {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
