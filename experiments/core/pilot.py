"""The learning-rate pilot: one multiplier per (family, batch size), chosen once on validation J, then committed.

The sweep's learning rates are the preset's rates at the reference batch size, scaled by ``lr_scaling`` (the sqrt
rule). The rule is a guess; a family whose rate is off by 2x at some batch size would lose a comparison for a
reason that has nothing to do with its objective. So, once per preset and before any verdict run:

1. ``gvt sweep pilot --preset P [--seeds ...] [--out DIR]`` runs every (family, batch size) of P's sweep - the
   from-scratch runs and the pretrained arms, whose seed's pretrain run is run at the pilot seeds too - at each
   multiplier of ``MULTIPLIERS`` (0.5, 1, 2) times the rule's rates (every learning-rate argument the family names
   in ``lr_args``: a GAN's generator and discriminator rates move together). The pretrain run itself keeps the
   preset's rate (it is the arms' shared start, not an arm). Equal-update runs are not piloted: they use the
   multiplier of their batch size's arm. No measurements are taken beyond the evaluation.
2. The pilot seeds (default ``DEFAULT_SEEDS``) must be apart from every seed of the preset (sweep and ablation):
   a rate chosen on the seeds it is then judged on would leak the verdict run's noise into its settings.
3. Every pilot run is evaluated on the validation split (its spec's ``eval_split: "val"``; Lightning names
   ``val/...``), never on the test split the verdicts read.
4. Per (family, batch size) the multiplier with the lowest mean validation J over the pilot seeds is chosen
   (J = (NLL_val - H(oracle)) + (NLL_oracle - H(model)) per token, ``experiments.core.baselines``; a diverged run
   counts as J = inf; ties go to the multiplier nearest 1). **The grid finds interior optima**: a cell whose best
   multiplier is the smallest or largest it tried is run again at half the smallest or twice the largest
   (x0.25, x0.125, ...; x4, x8, ...), until its best is interior or ``EXTENSION_CAP`` (x1/16 .. x16) is reached;
   the file lists the cells still at an end (``extension.still_at_an_end``) and so does the report. The choices and their evidence (mean J per
   multiplier, per-seed J, the seeds, the pilot's run folder) are written to ``configs/pilot/<preset>.json``.

Commit that file with the preset. From then on ``experiments.core.presets.get_preset`` reads it (``apply_pilot``) into
``SweepSettings.lr_pilot``: each chosen multiplier enters its runs' specs (``lr_multiplier``; so their keys change
with the choice), the report prints the choices, and the file's sha256 is part of the pre-registration hash.
(family, batch size) cells the file does not name keep the rule's rates and their old keys; the conditioning
ablation is not piloted.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from experiments.core.baselines import ENTROPY_SAMPLES, j_score
from experiments.core.datamodules import build_datamodule
from experiments.core.execute import execute
from experiments.core.families import get_family
from experiments.core.pilot_file import (  # noqa: F401  (the committed file's half, importable from here too)
    DEFAULT_SEEDS,
    FORMAT_VERSION,
    PILOT_DIR,
    apply_pilot,
    check_seeds,
    file_sha256,
    pilot_path,
    read_pilot,
    verdict_seeds,
)
from experiments.core.presets import PRESETS, get_preset
from experiments.core.results import ResultsTable
from experiments.core.specs import run_key
from experiments.q2_batch_size.sweep import pretrained_batch_sizes, sweep_specs
from modules.errors import ConfigError, GvtError
from modules.files import atomic_write_text

MULTIPLIERS = (0.5, 1.0, 2.0)
# A cell whose best multiplier is an end of the grid is extended that way by this factor, up to the cap
EXTENSION_FACTOR = 2.0
EXTENSION_CAP = (1 / 16, 16.0)


# ---- the pilot's runs ------------------------------------------------------------------------------------------


def validation_spec(spec: dict, renamed: dict[str, str]) -> dict:
    """A sweep spec turned into a pilot run: validation split, no measurements, checkpoint only for a producer,
    re-keyed (its ``init_from`` follows its producer's new key)."""

    spec = copy.deepcopy(spec)
    old = spec.pop("key")
    spec["measure"] = {}
    spec["eval_split"] = "val"
    spec["save_checkpoint"] = spec["kind"] == "pretrain"
    spec["tracking"] = {**spec.get("tracking", {}), "tags": [*spec.get("tracking", {}).get("tags", []), "pilot"]}
    if spec.get("init_from"):
        spec["init_from"] = {"key": renamed[spec["init_from"]["key"]]}
    spec["key"] = run_key(spec)
    renamed[old] = spec["key"]
    return spec


def pilot_settings(preset, seeds: Sequence[int]):
    """The preset's sweep settings at the pilot seeds, without any committed pilot."""
    settings = copy.deepcopy(preset.sweep)
    settings.seeds = list(seeds)
    settings.lr_pilot = None
    return settings


def pilot_specs(preset, seeds: Sequence[int], multipliers: Sequence[float] = MULTIPLIERS,
                tracking: Optional[dict] = None) -> list[dict]:
    """Every pilot run: each sweep run of the preset (no equal-update runs) at each multiplier, on ``seeds``,
    evaluated on the validation split. The multiplier enters through the sweep's own hook (``lr_pilot``), so
    it scales exactly the arguments a verdict run's multiplier would."""

    check_seeds(seeds, preset)
    settings = pilot_settings(preset, seeds)
    cells = {}
    for family in settings.families:
        sizes = (pretrained_batch_sizes(settings, family) if get_family(family).init_from == "pretrain"
                 else settings.batch_sizes)
        cells[family] = sorted(sizes)
    out, renamed = {}, {}
    for m in multipliers:
        if not m > 0:
            raise ConfigError(f"pilot multipliers must be > 0, got {m}")
        settings.lr_pilot = {"multipliers": {f: {str(b): float(m) for b in sizes} for f, sizes in cells.items()}}
        for spec in sweep_specs(settings, dict(tracking or {})):
            if spec["kind"] == "equal-updates":
                continue
            spec = validation_spec(spec, renamed)
            out.setdefault(spec["key"], spec)  # the pretrain run is the same at every multiplier
    # cell by cell (all multipliers of a cell together), seed by seed, the cheap large batches first: a pilot
    # stopped midway leaves whole cells, which a rerun of the same command completes
    order = {f: i for i, f in enumerate(settings.families)}
    return sorted(out.values(), key=lambda s: (s["kind"] != "pretrain", s["seed"], -s["batch_size"],
                                               order[s["family"]], s.get("lr_multiplier", 0.0)))


# ---- the choice ------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values and all(math.isfinite(v) for v in values) else math.inf


def choose(rows: Sequence[dict]) -> list[dict]:
    """Per (family, batch size), the multiplier with the lowest mean validation J over seeds.

    ``rows`` are pilot rows with ``lr_multiplier`` and ``j`` (None or not finite: a diverged run, counted as
    inf, so a multiplier with any diverged seed loses to one without). Ties go to the multiplier nearest 1 (the
    rule's own rate). Returns one choice per cell with the evidence: mean J and per-seed J per multiplier."""
    cells: dict[tuple[str, int], dict[float, dict[int, float]]] = {}
    for r in rows:
        if r.get("kind") == "pretrain" or r.get("lr_multiplier") is None:
            continue
        j = r.get("j")
        j = float(j) if j is not None and math.isfinite(j) else math.inf
        cells.setdefault((r["family"], int(r["batch_size"])), {}).setdefault(float(r["lr_multiplier"]), {})[
            int(r["seed"])] = j
    choices = []
    for (family, batch_size), by_m in sorted(cells.items()):
        seeds = sorted({s for per_seed in by_m.values() for s in per_seed})
        incomplete = {m: sorted(set(seeds) - set(v)) for m, v in by_m.items() if set(v) != set(seeds)}
        if incomplete:
            raise ConfigError(f"pilot cell {family} at batch size {batch_size} lacks seeds {incomplete} (multiplier: "
                             "missing seeds); rerun the pilot to finish it")
        means = {m: _mean([v[s] for s in seeds]) for m, v in by_m.items()}
        best = min(means, key=lambda m: (means[m], abs(math.log(m))))
        choices.append({"family": family, "batch_size": batch_size, "multiplier": best,
                        "mean_j": {f"{m:g}": (means[m] if math.isfinite(means[m]) else None) for m in sorted(means)},
                        "j": {f"{m:g}": {str(s): (by_m[m][s] if math.isfinite(by_m[m][s]) else None) for s in seeds}
                              for m in sorted(by_m)},
                        "seeds": seeds})
    return choices


def _oracle_entropy(data: dict) -> Optional[float]:

    dm = build_datamodule(data, batch_size=64, seed=0)
    if not hasattr(dm, "entropy_per_token"):
        return None
    dm.prepare()
    return float(dm.entropy_per_token(ENTROPY_SAMPLES)[0])  # the very H(p) the report's J uses


def pilot_rows(run_dir: str | Path, specs: list[dict]) -> list[dict]:
    """The finished rows of ``specs`` in ``run_dir``, each with its validation ``j``."""

    keys = {s["key"] for s in specs}
    rows = [r for r in ResultsTable(run_dir).rows() if r["key"] in keys]
    entropies: dict[str, Optional[float]] = {}
    out = []
    for r in rows:
        if r.get("eval_split") != "val":
            raise ConfigError(f"pilot run {r['key']} was evaluated on the {r.get('eval_split')!r} split, not 'val'")
        spec = next(s for s in specs if s["key"] == r["key"])
        data_id = json.dumps(spec["data"], sort_keys=True, default=str)
        if data_id not in entropies:
            entropies[data_id] = _oracle_entropy(spec["data"])
        h = entropies[data_id]
        scored = {**r, "reference": {"oracle_entropy_per_token": h}} if h is not None else r
        out.append({**r, "j": j_score(scored)})
    return out


def write_pilot(path: str | Path, preset_name: str, seeds: Sequence[int], multipliers: Sequence[float],
                choices: list[dict], run_dir: str | Path, wall_s: float, run_s: float = 0.0,
                cap: tuple[float, float] = EXTENSION_CAP, max_rounds: Optional[int] = None) -> Path:
    """The pilot file: the choices with their evidence, the seeds, the run folder; ``wall_s`` is the last
    invocation's wall time (a resumed pilot's is only its own part), ``run_s`` the runs' summed wall times."""

    data = {"format": FORMAT_VERSION, "preset": preset_name, "seeds": list(seeds),
            "multipliers": [float(m) for m in multipliers],
            "extension": {"factor": EXTENSION_FACTOR, "cap": [float(c) for c in cap], "max_rounds": max_rounds,
                          "still_at_an_end": edge_choices(choices)},
            "rule": "per (family, batch size): the multiplier of the sqrt-scaled learning rates with the lowest mean "
                    "validation J = (NLL_val - H(oracle)) + (NLL_oracle - H(model)) per token over the pilot seeds",
            "run_dir": str(run_dir), "wall_s": round(wall_s, 1), "run_s": round(run_s, 1),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "choices": choices}
    path = Path(path)
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def extension_specs(preset, seeds: Sequence[int], cells: dict[tuple[str, int], float],
                    tracking: Optional[dict] = None) -> list[dict]:
    """The pilot runs of ``cells`` ((family, batch size) -> one more multiplier), on ``seeds`` (with the pretrain
    runs they start from: the same keys as the first pass's, so not run again)."""
    settings = pilot_settings(preset, seeds)
    multipliers: dict[str, dict[str, float]] = {}
    for (family, batch_size), m in cells.items():
        multipliers.setdefault(family, {})[str(batch_size)] = float(m)
    settings.lr_pilot = {"multipliers": multipliers}
    out, renamed = [], {}
    for spec in sweep_specs(settings, dict(tracking or {})):
        if spec["kind"] == "equal-updates":
            continue
        wanted = spec["kind"] == "pretrain" or (spec["family"], spec["batch_size"]) in cells
        spec = validation_spec(spec, renamed)
        if wanted:
            out.append(spec)
    return out


def extensions(choices: list[dict], cap: tuple[float, float] = EXTENSION_CAP) -> dict[tuple[str, int], float]:
    """The next multiplier of every cell whose best lies at an end of the multipliers it tried: half the smallest
    or twice the largest, within ``cap``; cells already interior, or at the cap, get none."""
    out = {}
    for c in choices:
        tried = sorted(float(m) for m in c["mean_j"])
        best = float(c["multiplier"])
        if len(tried) < 2 or best not in (tried[0], tried[-1]) or c["mean_j"][f"{best:g}"] is None:
            continue
        nxt = best / EXTENSION_FACTOR if best == tried[0] else best * EXTENSION_FACTOR
        if cap[0] - 1e-12 <= nxt <= cap[1] + 1e-12:
            out[(c["family"], int(c["batch_size"]))] = nxt
    return out


def run_pilot(preset_name: str, seeds: Optional[Sequence[int]] = None, out: Optional[str | Path] = None,
              target: Optional[str | Path] = None, multipliers: Sequence[float] = MULTIPLIERS,
              families: Optional[list[str]] = None, workers: Optional[int] = None,
              wandb_mode: str = "offline", cap: tuple[float, float] = EXTENSION_CAP, max_rounds: Optional[int] = None,
              echo=print) -> dict:
    """Run the pilot of ``preset_name`` into ``out`` (resumable) and write its choices to ``target``
    (default configs/pilot/<preset>.json). A cell whose best multiplier lies at an end of its grid gets the next
    one that way (x0.25, then x0.125 ...; x4, x8 ...) until its best is interior or ``cap`` is reached
    (``extensions``), for at most ``max_rounds`` extension rounds (None: no limit; the file and the report list
    the cells still at an end). Returns the written file's content."""
    if max_rounds is not None and max_rounds < 0:
        raise ConfigError(f"pilot: --max-rounds must be >= 0, got {max_rounds}")

    preset = get_preset(preset_name, pilot=False)  # the pilot starts from the rule's rates, never from a choice
    if families:
        preset.sweep.families = list(families)
    seeds = list(seeds if seeds is not None else DEFAULT_SEEDS)
    out = Path(out or f"runs/pilot/{preset.name}")
    tracking = {"project": "gan-vs-transformer", "group": f"pilot-{preset.name}", "wandb_mode": wandb_mode,
                "tags": [preset.name, "pilot"]}
    specs = pilot_specs(preset, seeds, multipliers, tracking)
    echo(f"pilot: {len(specs)} runs ({preset.name} preset, seeds {seeds}, multipliers "
         f"{', '.join(f'{m:g}' for m in multipliers)}; an end extended up to x{cap[0]:g} / x{cap[1]:g}) -> {out}")
    start = time.perf_counter()
    pending, rounds = specs, 0
    while True:
        outcome = execute(pending, out, workers=workers if workers is not None else preset.workers, desc="pilot",
                          echo=echo)
        if outcome.failed:
            raise RuntimeError(f"pilot: {len(outcome.failed)} run(s) failed (see {out / 'errors.jsonl'}); rerun the "
                               "same command to retry them; no choice was written")
        rows = pilot_rows(out, specs)
        choices = choose(rows)
        more = extensions(choices, cap)
        if not more:
            break
        if max_rounds is not None and rounds >= max_rounds:
            echo(f"pilot: {len(more)} cell(s) still at an end after {rounds} extension round(s) (--max-rounds "
                 f"{max_rounds}): " + ", ".join(f"{f} at {b}" for (f, b) in sorted(more)))
            break
        rounds += 1
        echo("pilot: best at an end of the grid, extending: " + ", ".join(
            f"{f} at {b} -> x{m:g}" for (f, b), m in sorted(more.items())))
        pending = [s for s in extension_specs(preset, seeds, more, tracking) if s["key"] not in {x["key"] for x in specs}]
        specs = specs + pending
    wall = time.perf_counter() - start
    path = write_pilot(target or pilot_path(preset.name), preset.name, seeds, multipliers, choices, out, wall,
                       run_s=sum(r.get("wall_time_s", 0.0) for r in rows), cap=cap, max_rounds=max_rounds)
    echo(f"pilot: {wall:.0f} s; choices written to {path}")
    for line in choice_table(choices):
        echo(line)
    return json.loads(path.read_text(encoding="utf-8"))


# ---- the report's table ----------------------------------------------------------------------------------------


def choice_table(choices: list[dict]) -> list[str]:
    """Markdown: family, batch size, chosen multiplier, mean validation J at each multiplier."""
    ms = sorted({m for c in choices for m in c.get("mean_j", {})}, key=float)
    lines = ["| family | batch | multiplier | " + " | ".join(f"val J at x{m}" for m in ms) + " |",
             "|---|---:|---:|" + "---:|" * len(ms)]
    for c in choices:
        tried = c.get("mean_j", {})
        cells = [("" if m not in tried else "diverged" if tried[m] is None else f"{tried[m]:.3f}") for m in ms]
        lines.append(f"| {c['family']} | {c['batch_size']} | **{c['multiplier']:g}** | " + " | ".join(cells) + " |")
    return lines


def report_section(plan: Optional[dict]) -> list[str]:
    """The report's section on the learning-rate pilot of the folder's batch-size sweep (empty without one)."""
    sweep = ((plan or {}).get("experiments") or {}).get("batch-size") or {}
    pilot = (sweep.get("settings") or {}).get("lr_pilot")
    if not pilot:
        return []
    seeds = ", ".join(map(str, pilot.get("seeds") or []))
    choices = pilot.get("choices") or []
    edge = edge_choices(choices)
    cap = (pilot.get("extension") or {}).get("cap")
    reach = f" (the grid extended that way up to x{cap[0]:g} / x{cap[1]:g})" if cap else ""
    note = ([f"{len(edge)} of {len(choices)} cells are still at an end of the multipliers they tried{reach}: "
             f"{', '.join(edge)}. Their best rate may lie beyond it, so a comparison involving them may still be one "
             "of learning rates.", ""] if edge else
            [f"Every cell's best multiplier is interior to the multipliers it tried{reach}.", ""])
    return ["## Learning rates: the pilot's multipliers", "",
            f"Each (family, batch size) below runs at its multiplier times the sqrt-scaled rate, chosen once by the "
            f"lowest mean validation J on pilot seeds {seeds} (apart from the verdict seeds) from 0.5, 1, 2, a cell "
            f"whose best was an end extended that way by factors of 2, and committed as the pilot file "
            f"`{pilot.get('file')}` (sha256 `{str(pilot.get('sha256'))[:16]}`, part of the pre-registration hash). "
            "Cells not listed keep the sqrt rule's rate.", "",
            *choice_table(choices), "", *note]


def edge_choices(choices: list[dict]) -> list[str]:
    """The cells whose chosen multiplier is the smallest or largest one tried ("family at B")."""
    out = []
    for c in choices:
        tried = [float(m) for m in c.get("mean_j", {})]
        if len(tried) > 1 and float(c["multiplier"]) in (min(tried), max(tried)):
            out.append(f"{c['family']} at {c['batch_size']}")
    return out


# ---- gvt sweep pilot -------------------------------------------------------------------------------------------


def words(values) -> list[str]:
    """Command-line list values, space- or comma-separated (``--seeds 1000,1001`` or ``--seeds 1000 1001``)."""
    return [x for v in values for x in str(v).replace(",", " ").split()]


def main(argv: list[str]) -> int:

    parser = argparse.ArgumentParser(
        prog="gvt sweep pilot",
        description="The learning-rate pilot: every (family, batch size) of the preset's sweep at 0.5, 1 and 2 times "
                    "its sqrt-scaled learning rates, on pilot seeds apart from the verdict seeds, evaluated on the "
                    "validation split; writes the multiplier with the lowest mean validation J per cell to "
                    "configs/pilot/PRESET.json (commit it with the preset).")
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--seeds", nargs="+", metavar="S",
                        help=f"pilot seeds, apart from the preset's (default {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--out", metavar="RUN_DIR", help="the pilot's run folder (default runs/pilot/PRESET); "
                                                         "rerun to resume")
    parser.add_argument("--families", nargs="+", metavar="NAME", help="only these families (default: the preset's)")
    parser.add_argument("--pilot-file", metavar="PATH", help="where to write the choices "
                                                             "(default configs/pilot/PRESET.json)")
    parser.add_argument("--workers", type=int, metavar="N", help="runs at once (default: the preset's)")
    parser.add_argument("--max-rounds", type=int, metavar="N",
                        help="at most N rounds of extending a grid's end (default: until interior or the cap "
                             f"x{EXTENSION_CAP[0]:g} / x{EXTENSION_CAP[1]:g}); cells still at an end are listed")
    parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"])
    args = parser.parse_args(argv)
    try:
        run_pilot(args.preset, seeds=[int(s) for s in words(args.seeds)] if args.seeds else None, out=args.out,
                  target=args.pilot_file, families=words(args.families) if args.families else None,
                  workers=args.workers, wandb_mode=args.wandb_mode, max_rounds=args.max_rounds,
                  echo=lambda m: print(m, file=sys.stderr))
    except GvtError as err:  # bad settings are one line; anything else is a bug and keeps its traceback
        print(f"gvt sweep pilot: error: {err}", file=sys.stderr)
        return 2
    return 0
