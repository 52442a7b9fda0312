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
import dataclasses
import hashlib
import importlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from experiments.c1_parallel.measure import ParallelSettings
from experiments.c1_parallel.verdict import PARAMETER_TOLERANCE, RULE_SETTINGS as C1_RULE_SETTINGS
from experiments.c1_parallel.verdict import SESOI as C1_SESOI, c1_verdict
from experiments.c3_attention.claim import C3_PRIMARY, C3_RULE, C3_SESOI, MIN_TASK_ACCURACY, c3_verdict, run_c3
from experiments.core import corpus_check
from experiments.core import verdicts as V
from experiments.lecture_report import log_to_wandb, write_figures, write_report
from experiments.lecture_settings import C2_MODULE, C4_MODULE, CLAIMS, LectureSettings, PARTS, PRESETS, _settings_for
from modules.errors import ConfigError, GvtError
from modules.files import atomic_write_text

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
    (``experiments.c4_transfer.settings.preregistration``: settings, gates, learning-rate pilot and, with ``out``, the rates its
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
