"""``gvt sweep | ablate | temperature | report``: the experiment commands (dispatched from experiments/gvt.py,
the ``gvt`` command).

    gvt sweep batch-size  [--preset quick|smoke|paper|coco] [--families ...] [--batch-sizes ...] [--seeds ...]
                          [--budget samples|steps] [--budget-value N] [--lr-scaling none|linear|sqrt]
                          [--reference-batch-size B] [--out RUN_DIR] [--workers N] [--workers-per-device K]
                          [--wandb-mode MODE] [--no-report]
                          [--plan-only | --launcher local|wandb | --emit-wandb-sweep FILE] [--group G] [--entity E]
    gvt sweep all         the batch-size sweep and the conditioning ablation into one folder, then the report
    gvt sweep run-one RUN_DIR --key KEY [--plan-hash H] [--make-plan ARGS] [--wandb-mode MODE]
                          exactly one planned run (what a W&B agent runs)
    gvt sweep learning-curve [--preset P] [--budgets N ...] [--families ...] [--out RUN_DIR]
                          validation J against samples per family, with the counted baselines
                          (experiments.q2_batch_size.learning_curve): choose a preset's budgets from it
    gvt sweep pilot       [--preset P] [--seeds ...] [--out RUN_DIR] [--pilot-file PATH]
                          the learning-rate pilot: writes configs/pilot/PRESET.json (experiments.core.pilot)
    gvt ablate conditioning [--preset ...] [--families ...] [--conditions none,label,source] [--strengths ...]
                          [--z-dims ...] [--seeds ...] [--out RUN_DIR] [--workers N] [--wandb-mode MODE] [--no-report]
                          [--plan-only | --launcher local|wandb | --emit-wandb-sweep FILE]
    gvt ablate bottleneck [--preset lecture|smoke] [--datasets reverse,oracle,multi30k] [--seeds ...] [--out RUN_DIR]
                          [--workers N] [--wandb-mode MODE]
                          C2: rnn / rnn-attention / transformer against source length (experiments.c2_bottleneck.bottleneck)
    gvt ablate transfer   [--preset lecture|smoke] [--seeds ...] [--bodies lstm,transformer] [--out RUN_DIR]
                          [--workers N] [--wandb-mode MODE]
                          C4: ULMFiT against training from scratch (experiments.c4_transfer.transfer)
    gvt temperature       --checkpoint PATH [--data-config YAML] | --run-dir RUN_DIR [--families ...]
                          [--batch-sizes ...]   [--temperatures ...] [--num-samples N] [--out DIR]
    gvt report RUN_DIR    [--out DIR] [--wandb-mode MODE]
    gvt report RUN_DIR RUN_DIR ... --out MERGED_DIR      run folders of many machines merged by key
    gvt report --wandb ENTITY/PROJECT --sweep ID [--out DIR]   the rows rebuilt from W&B

Lists take commas or spaces: ``--batch-sizes 1,2,4`` or ``--batch-sizes 1 2 4``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from experiments.core.execute import _summary, execute
from experiments.core.families import get_family
from experiments.core.launch import PLAN, accepted_hashes, read_run_plan, run_planned, write_run_plan
from experiments.core.merge import merge_run_folders, rows_from_wandb
from experiments.core.plan import register
from experiments.core.presets import PRESETS, get_preset
from experiments.core.report import make_report
from experiments.core.results import atomic_write_text, read_plan
from experiments.core.verdicts import VerdictSettings, preregistration
from experiments.core.wandb_sweep import SweepServerError, create_sweep, sweep_config, sweep_yaml
from experiments.q2_batch_size.sweep import sweep_specs
from experiments.q3_conditioning.ablation import ablation_specs
from experiments.q4_temperature.command import run_temperature_command
from modules.errors import ConfigError, GvtError

DEFAULT_ROOT = "runs/experiments"


def _list(kind):
    def parse(values):
        out = []
        for v in values:
            out += [kind(x) for x in str(v).replace(",", " ").split()]
        return out

    return parse


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="quick", choices=list(PRESETS),
                        help="experiment settings (default: quick)")
    parser.add_argument("--families", nargs="+", metavar="NAME", help="model families (default: the preset's)")
    parser.add_argument("--seeds", nargs="+", metavar="S", help="seeds (default: the preset's)")
    parser.add_argument("--out", metavar="RUN_DIR", help=f"run folder (default: {DEFAULT_ROOT}/PRESET); rerun to resume")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="runs trained at once, in separate processes, each on its own GPU when runs use "
                             "one (round robin), else with cores/N threads (default: the preset's)")
    parser.add_argument("--workers-per-device", type=int, default=1, metavar="K",
                        help="workers sharing one GPU (small runs; default 1)")
    parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"],
                        help="W&B for every run (default offline; `wandb sync` uploads later)")
    parser.add_argument("--project", default="gan-vs-transformer", help="W&B project")
    parser.add_argument("--entity", help="W&B entity of the sweep (--launcher wandb; default: your default entity)")
    parser.add_argument("--group", help="W&B group of a new run folder (default: the folder's name + a random suffix)")
    parser.add_argument("--engine", choices=["vectorised", "lightning"],
                        help="vectorised (default): the seeds of one configuration train as one vectorised model "
                             "(the numbers of single runs, to rounding); lightning: each run alone through "
                             "Lightning's fit loop (other keys)")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    parser.add_argument("--prereg-file", metavar="PATH",
                        help="with --plan-only: also write the pre-registration (hash and the settings it covers) "
                             "to PATH, to be committed before the verdict run (configs/preregistration/PRESET.json)")
    launch = parser.add_mutually_exclusive_group()
    launch.add_argument("--plan-only", action="store_true",
                        help="write the plan (RUN_DIR/plan.json: every run's spec and key, the plan hash), print the "
                             "keys and stop; `gvt sweep run-one RUN_DIR --key KEY` runs one")
    launch.add_argument("--launcher", choices=["local", "wandb"], default="local",
                        help="local: train here (default); wandb: write the plan and a W&B sweep config over its "
                             "keys, create the sweep (needs a W&B server) and print the `wandb agent` line")
    launch.add_argument("--emit-wandb-sweep", metavar="FILE",
                        help="only write the W&B sweep config of this plan to FILE (RUN_DIR is left untouched)")


def _sweep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-sizes", nargs="+", metavar="B",
                        help="batch sizes (default: the preset's; e.g. 1,2,4,8,16,32,64,128,256)")
    parser.add_argument("--budget", choices=["samples", "steps"], help="equal training samples or equal generator updates")
    parser.add_argument("--budget-value", type=int, metavar="N", help="samples (or generator updates) per run")
    parser.add_argument("--lr-scaling", choices=["none", "linear", "sqrt"],
                        help="learning rate vs batch size, relative to --reference-batch-size")
    parser.add_argument("--reference-batch-size", type=int, metavar="B",
                        help="batch size at which the preset's rates apply")


def _ablation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conditions", nargs="+", metavar="C", help="none, label, source")
    parser.add_argument("--strengths", nargs="+", metavar="X", help="oracle condition strengths")
    parser.add_argument("--z-dims", nargs="+", metavar="Z", help="latent sizes of the GAN generators (0 = no z)")
    parser.add_argument("--ablation-budget-value", type=int, metavar="N", help="samples (or updates) per ablation run")


def _apply_lists(settings, args, kinds: dict) -> None:
    """Command-line lists override the preset's: ``kinds`` maps an argument name to its element type."""
    for name, kind in kinds.items():
        if getattr(args, name, None):
            setattr(settings, name, _list(kind)(getattr(args, name)))


def _apply_sweep(settings, args) -> None:
    _apply_lists(settings, args, {"families": str, "seeds": int, "batch_sizes": int})
    for name in ("budget", "budget_value", "lr_scaling", "reference_batch_size", "engine"):
        if getattr(args, name, None) is not None:
            setattr(settings, name, getattr(args, name))
    if settings.reference_batch_size not in settings.batch_sizes:
        raise ConfigError(f"the reference batch size {settings.reference_batch_size} is not among the batch sizes "
                         f"{settings.batch_sizes}: temperature curves and noise scales are measured there")


def _apply_ablation(settings, args) -> None:
    _apply_lists(settings, args, {"families": str, "seeds": int, "conditions": str, "strengths": float,
                                  "z_dims": int})
    if getattr(args, "ablation_budget_value", None):
        settings.budget_value = args.ablation_budget_value
    if getattr(args, "engine", None):
        settings.engine = args.engine


def _check_families(names) -> None:

    for name in names:
        family = get_family(name)
        family.load_class()  # a clear error now rather than a failed row per run


# Options that shape the plan: what an agent's `run-one --make-plan` replays to plan the same runs.
PLAN_OPTIONS = ("preset", "families", "seeds", "batch_sizes", "budget", "budget_value", "lr_scaling",
                "reference_batch_size", "conditions", "strengths", "z_dims", "ablation_budget_value", "engine",
                "project")


def _planning_command(args, command: str, group: str) -> str:
    parts = [command, args.experiment]
    for dest in PLAN_OPTIONS:
        value = getattr(args, dest, None)
        if value is None or value == []:
            continue
        parts += [f"--{dest.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
    return shlex.join([*parts, "--group", group])


def _plan_experiments(args, command: str, which: list[str], preset, folder: Path, group):
    """Register each experiment's settings and add its runs to the folder's plan.

    Returns ([(experiment, specs)], this invocation's plan hash, its planning command, the W&B group)."""

    planned = []
    for experiment in which:
        if experiment == "batch-size":
            settings = preset.sweep
            _apply_sweep(settings, args)
        else:
            if preset.ablation is None:
                raise ConfigError(f"preset {preset.name!r} has no conditioning ablation (its data are unconditional)")
            settings = preset.ablation
            _apply_ablation(settings, args)
        _check_families(settings.families)
        make_specs = sweep_specs if experiment == "batch-size" else ablation_specs
        make_specs(settings, {})  # validates every setting before the folder's plan is written
        plan = register(folder, experiment, preset.name, settings, args.project, group=group)
        group = plan["group"]
        tracking = {"project": args.project, "group": group, "wandb_mode": args.wandb_mode,
                    "tags": [preset.name, experiment]}
        planned.append((experiment, make_specs(settings, tracking)))
    planning = _planning_command(args, command, group)
    _, part = write_run_plan(folder, [s for _, specs in planned for s in specs], command=planning)
    return planned, part, planning, group


def _emit_wandb_sweep(args, command: str, which: list[str], preset, out: Path) -> int:
    """Plan in a scratch copy of RUN_DIR (left untouched) and write the W&B sweep config of this plan."""

    group = args.group or (read_plan(out) or {}).get("group") or f"{out.resolve().name}-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name in ("sweep.json", PLAN):
            if (out / name).is_file():
                shutil.copyfile(out / name, scratch / name)
        planned, part, planning, group = _plan_experiments(args, command, which, preset, scratch, group)
    keys = [s["key"] for _, specs in planned for s in specs]
    target = Path(args.emit_wandb_sweep)
    atomic_write_text(target, sweep_yaml(sweep_config(keys, str(out), part, planning, args.project, group), planning))
    print(f"W&B sweep config: {target} ({len(keys)} runs into {out}, plan {part})", file=sys.stderr)
    return 0


def _launch_wandb(args, command: str, out: Path, specs: list[dict], part: str, planning: str, group: str) -> int:

    config = sweep_config([s["key"] for s in specs], str(out), part, planning, args.project, group)
    path = out / "wandb_sweep.yaml"
    atomic_write_text(path, sweep_yaml(config, planning))
    print(f"{len(specs)} runs planned (plan {part}): {out / PLAN}; W&B sweep config: {path}", file=sys.stderr)
    try:
        sweep_id, entity = create_sweep(config, args.project, args.entity)
    except SweepServerError as err:
        print(f"gvt {command}: error: {err}\n  The plan and the sweep config are written; once a server is reachable:"
              f"\n    wandb sweep {path}\n    wandb agent ENTITY/{args.project}/SWEEP_ID    # on every machine, "
              "from the repository root", file=sys.stderr)
        return 2
    print(f"wandb agent {entity}/{args.project}/{sweep_id}")
    print(f"  run that on every machine, from the repository root (each writes its rows to its own {out}); "
          f"then: gvt report --wandb {entity}/{args.project} --sweep {sweep_id}  (or copy the folders together and "
          f"`gvt report DIR1 DIR2 ... --out MERGED`)", file=sys.stderr)
    return 0


def _run_experiments(args, command: str, which: list[str]) -> int:

    preset = get_preset(args.preset)
    out = Path(args.out or f"{DEFAULT_ROOT}/{preset.name}")
    if args.emit_wandb_sweep:
        return _emit_wandb_sweep(args, command, which, preset, out)
    planned, part, planning, group = _plan_experiments(args, command, which, preset, out, args.group)
    specs = [s for _, experiment_specs in planned for s in experiment_specs]
    if args.prereg_file and not args.plan_only:
        raise ConfigError("--prereg-file goes with --plan-only (the pre-registration is written before any run)")
    if args.plan_only:
        for spec in specs:
            print(spec["key"])
        print(f"{len(specs)} runs planned (plan {part}) in {out / 'plan.json'}; run one with: "
              f"gvt sweep run-one {out} --key KEY", file=sys.stderr)
        plan = read_plan(out)
        prereg = preregistration(plan, VerdictSettings.from_plan(plan))
        print(f"pre-registration hash: {prereg['hash']}", file=sys.stderr)
        if args.prereg_file:
            atomic_write_text(Path(args.prereg_file), json.dumps(prereg, indent=1, sort_keys=True, default=str) + "\n")
            print(f"pre-registration written to {args.prereg_file} (commit it before the verdict run)",
                  file=sys.stderr)
        return 0
    if args.launcher == "wandb":
        return _launch_wandb(args, command, out, specs, part, planning, group)
    workers = args.workers if args.workers is not None else preset.workers
    start = time.perf_counter()
    failed = 0
    for experiment, experiment_specs in planned:
        print(f"{experiment}: {len(experiment_specs)} runs ({preset.name} preset) -> {out}", file=sys.stderr)
    # One pool for every experiment's runs: the ablation's conditional checkpoints train beside the sweep's shared
    # ones instead of after the whole sweep, with a worker idle meanwhile (each run's numbers are its own: one
    # thread per run, keyed by its spec)
    names = "+".join(experiment for experiment, _ in planned)
    outcome = execute(specs, out, workers=workers, workers_per_device=args.workers_per_device, desc=names,
                      echo=lambda m: print(m, file=sys.stderr))
    failed += len(outcome.failed)
    if outcome.failed:
        print(f"{names}: {len(outcome.failed)} run(s) failed (see {out / 'errors.jsonl'}); "
              "rerun the same command to retry them", file=sys.stderr)
    print(f"experiments finished in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if not args.no_report:

        result = make_report(out, wandb_mode=args.wandb_mode)
        print(result.verdict_table)
        print(f"\nreport: {result.markdown}  (total {time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


def _run_one(argv: list[str]) -> int:
    """``gvt sweep run-one RUN_DIR --key KEY``: exactly one planned run (see experiments.core.launch)."""

    parser = argparse.ArgumentParser(prog="gvt sweep run-one", description="Run exactly one planned run of RUN_DIR's "
                                     "plan.json and add its row to RUN_DIR/results.jsonl (a crash goes to "
                                     "errors.jsonl and the next run-one of the key retries it).")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--key", required=True, help="the planned run's key (`--plan-only` prints them)")
    parser.add_argument("--plan-hash", metavar="H", help="refuse unless RUN_DIR's plan is, or grew from, plan H")
    parser.add_argument("--make-plan", metavar="ARGS",
                        help="when RUN_DIR has no plan.json (or one without plan H), first run `gvt ARGS --plan-only "
                             "--out RUN_DIR` (W&B sweeps pass the command that planned them)")
    parser.add_argument("--wandb-mode", choices=["auto", "online", "offline", "disabled"],
                        help="override the plan's W&B mode (a W&B agent's runs are online)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    plan = read_run_plan(run_dir)
    if args.make_plan and (plan is None or (args.plan_hash and args.plan_hash not in accepted_hashes(plan))):
        command, *rest = shlex.split(args.make_plan)
        if command not in ("sweep", "ablate"):
            raise ConfigError(f"--make-plan must start with sweep or ablate, got {command!r}")
        with contextlib.redirect_stdout(io.StringIO()):  # the planned keys: not this run's output
            code = main(command, [*rest, "--plan-only", "--out", str(run_dir)])
        if code:
            return code
    result = run_planned(run_dir, args.key, expect_hash=args.plan_hash, wandb_mode=args.wandb_mode)
    if not result.ok:
        print(f"gvt sweep run-one: {args.key} FAILED: {result.message} (recorded in {run_dir / 'errors.jsonl'}; the "
              "next run-one of this key retries it)", file=sys.stderr)
        return 1
    print(f"{args.key}: already in {run_dir / 'results.jsonl'}" if result.already_done else _summary(result.row))
    return 0


def _report(args) -> int:

    if args.wandb or args.sweep:
        if not (args.wandb and args.sweep):
            raise ConfigError("--wandb ENTITY/PROJECT and --sweep ID go together")
        if args.run_dirs:
            raise ConfigError("give run folders or --wandb ENTITY/PROJECT --sweep ID, not both")

        run_dir, report_out = Path(args.out or f"{DEFAULT_ROOT}/wandb-{args.sweep}"), None
        merged = rows_from_wandb(args.wandb, args.sweep, run_dir)
        print(f"{len(merged.rows)} runs from {len(merged.sources)} finished W&B runs of sweep {args.sweep} -> "
              f"{run_dir}" + (f" ({len(merged.skipped)} unfinished runs left out)" if merged.skipped else ""),
              file=sys.stderr)
    elif len(args.run_dirs) > 1:
        if not args.out:
            raise ConfigError("merging several run folders needs --out MERGED_DIR (a new run folder; the report goes "
                             "to MERGED_DIR/report)")

        run_dir, report_out = Path(args.out), None
        merged = merge_run_folders(args.run_dirs, run_dir)
        print(f"merged {len(merged.rows)} runs from {len(args.run_dirs)} folders ({merged.duplicates} identical "
              f"duplicates) -> {run_dir}", file=sys.stderr)
    elif args.run_dirs:
        run_dir, report_out = Path(args.run_dirs[0]), args.out
    else:
        raise ConfigError("give a RUN_DIR (several, with --out, to merge them) or --wandb ENTITY/PROJECT --sweep ID")
    result = make_report(run_dir, out=report_out, wandb_mode=args.wandb_mode)
    print(result.verdict_table)
    print(f"\nreport: {result.markdown}")
    return 0


def _temperature(args) -> int:
    return run_temperature_command(
        checkpoint=args.checkpoint, run_dir=args.run_dir, data_config=args.data_config,
        temperatures=_list(float)(args.temperatures) if args.temperatures else None,
        num_samples=args.num_samples, out=args.out,
        families=_list(str)(args.families) if args.families else None,
        batch_sizes=_list(int)(args.batch_sizes) if args.batch_sizes else None,
    )


def main(command: str, argv: list[str]) -> int:
    prog = f"gvt {command}"
    if command == "sweep" and argv[:1] == ["run-one"]:
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            return _run_one(argv[1:])
        except GvtError as err:  # bad input: one line (anything else is a bug and keeps its traceback)
            print(f"gvt sweep run-one: error: {err}", file=sys.stderr)
            return 2
    if command == "sweep" and argv[:1] == ["pilot"]:  # the learning-rate pilot (experiments.core.pilot)
        os.environ.setdefault("WANDB_SILENT", "true")
        from experiments.core.pilot import main as pilot_main

        return pilot_main(argv[1:])
    if command == "sweep" and argv[:1] == ["learning-curve"]:  # J against samples (experiments.q2_batch_size.learning_curve)
        os.environ.setdefault("WANDB_SILENT", "true")
        from experiments.q2_batch_size.learning_curve import main as learning_curve_main

        return learning_curve_main(argv[1:])
    if command == "ablate" and argv[:1] == ["bottleneck"]:  # C2, the context-vector bottleneck (experiments.c2_bottleneck.bottleneck)
        os.environ.setdefault("WANDB_SILENT", "true")
        from experiments.c2_bottleneck.bottleneck import main as bottleneck_main

        return bottleneck_main(argv[1:])
    if command == "ablate" and argv[:1] == ["transfer"]:  # C4, the transfer ablation (experiments.c4_transfer.transfer)
        os.environ.setdefault("WANDB_SILENT", "true")
        from experiments.c4_transfer.transfer import main as transfer_main

        return transfer_main(argv[1:])
    if command == "sweep":
        parser = argparse.ArgumentParser(prog=prog, description="Batch-size sweep: families x batch sizes x seeds at "
                                         "an equal budget (`all`: also the conditioning ablation), then the report.")
        parser.add_argument("experiment", choices=["batch-size", "all"],
                            help="(`gvt sweep run-one RUN_DIR --key KEY` runs one planned run; see its --help)")
        _common(parser)
        _sweep_options(parser)
        _ablation_options(parser)
    elif command == "ablate":
        parser = argparse.ArgumentParser(prog=prog, description="Conditioning ablation on the conditional oracles: "
                                         "families x condition x strength x z_dim x seeds, then the report.")
        parser.add_argument("experiment", choices=["conditioning"])
        _common(parser)
        _ablation_options(parser)
    elif command == "temperature":
        parser = argparse.ArgumentParser(prog=prog, description="Quality vs diversity across sampling temperatures "
                                         "(NLL_oracle vs NLL_test on oracle data, BLEU vs Self-BLEU on text).")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--checkpoint", help="a checkpoint of either family")
        source.add_argument("--run-dir", help="a sweep's run folder: every run with a final.ckpt")
        parser.add_argument("--data-config", help="YAML with the checkpoint's data section (default: found beside it)")
        parser.add_argument("--temperatures", nargs="+", metavar="T",
                            help="default: 0.3 to 2.5, geometric through 1 (presets.DEFAULT_TEMPERATURES)")
        parser.add_argument("--num-samples", type=int, help="samples per temperature (default: the model's)")
        parser.add_argument("--out", help="output folder (default: beside the checkpoint / RUN_DIR/temperature)")
        parser.add_argument("--families", nargs="+", help="with --run-dir: only these families")
        parser.add_argument("--batch-sizes", nargs="+", help="with --run-dir: only these batch sizes")
    elif command == "report":
        parser = argparse.ArgumentParser(prog=prog, description="Plots (PNG) and a Markdown report with the verdict "
                                         "table for Q1-Q4 from a run folder, from several run folders merged by key "
                                         "(one per machine), or from a W&B sweep's runs.")
        parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
        parser.add_argument("--out", help="one RUN_DIR: the report folder (default RUN_DIR/report); several RUN_DIRs "
                                          "or --wandb: the merged run folder, with the report in OUT/report")
        parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="rebuild the rows from this W&B project's ...")
        parser.add_argument("--sweep", metavar="ID", help="... sweep ID (its finished runs' gvt-row artifacts)")
        parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"])
    else:
        print(f"gvt: unknown experiment command {command!r}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        if command == "sweep":
            return _run_experiments(args, command, ["batch-size"] if args.experiment == "batch-size" else
                                    ["batch-size", "conditioning"])
        if command == "ablate":
            return _run_experiments(args, command, ["conditioning"])
        if command == "temperature":
            return _temperature(args)
        return _report(args)
    except GvtError as err:  # bad input: one line (anything else is a bug and keeps its traceback)
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
