"""``gvt sweep | ablate | temperature | report``: the experiment commands (dispatched from modules/cli.py).

    gvt sweep batch-size  [--preset quick|smoke|paper|coco] [--families ...] [--batch-sizes ...] [--seeds ...]
                          [--budget samples|steps] [--budget-value N] [--lr-scaling none|linear|sqrt]
                          [--reference-batch-size B] [--out RUN_DIR] [--workers N] [--wandb-mode MODE] [--no-report]
    gvt sweep all         the batch-size sweep and the conditioning ablation into one folder, then the report
    gvt ablate conditioning [--preset ...] [--families ...] [--conditions none,label,source] [--strengths ...]
                          [--z-dims ...] [--seeds ...] [--out RUN_DIR] [--workers N] [--wandb-mode MODE] [--no-report]
    gvt temperature       --checkpoint PATH [--data-config YAML] | --run-dir RUN_DIR [--families ...]
                          [--batch-sizes ...]   [--temperatures ...] [--num-samples N] [--out DIR]
    gvt report RUN_DIR    [--out DIR] [--wandb-mode MODE]

Lists take commas or spaces: ``--batch-sizes 1,2,4`` or ``--batch-sizes 1 2 4``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from experiments.presets import PRESETS, get_preset

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
                        help="runs trained at once, in separate processes (default: the preset's)")
    parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"],
                        help="W&B for every run (default offline; `wandb sync` uploads later)")
    parser.add_argument("--project", default="gan-vs-transformer", help="W&B project")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")


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
    for name in ("budget", "budget_value", "lr_scaling", "reference_batch_size"):
        if getattr(args, name, None) is not None:
            setattr(settings, name, getattr(args, name))
    if settings.reference_batch_size not in settings.batch_sizes:
        raise ValueError(f"the reference batch size {settings.reference_batch_size} is not among the batch sizes "
                         f"{settings.batch_sizes}: temperature curves and noise scales are measured there")


def _apply_ablation(settings, args) -> None:
    _apply_lists(settings, args, {"families": str, "seeds": int, "conditions": str, "strengths": float,
                                  "z_dims": int})
    if getattr(args, "ablation_budget_value", None):
        settings.budget_value = args.ablation_budget_value


def _check_families(names) -> None:
    from experiments.families import get_family

    for name in names:
        family = get_family(name)
        family.load_class()  # a clear error now rather than a failed row per run


def _run_experiments(args, which: list[str]) -> int:
    from experiments.batch_size_sweep import sweep_specs
    from experiments.conditioning import ablation_specs
    from experiments.execute import execute
    from experiments.plan import register

    preset = get_preset(args.preset)
    out = Path(args.out or f"{DEFAULT_ROOT}/{preset.name}")
    workers = args.workers if args.workers is not None else preset.workers
    start = time.perf_counter()
    failed = 0
    for experiment in which:
        if experiment == "batch-size":
            settings = preset.sweep
            _apply_sweep(settings, args)
        else:
            if preset.ablation is None:
                raise ValueError(f"preset {preset.name!r} has no conditioning ablation (its data are unconditional)")
            settings = preset.ablation
            _apply_ablation(settings, args)
        _check_families(settings.families)
        make_specs = sweep_specs if experiment == "batch-size" else ablation_specs
        make_specs(settings, {})  # validates every setting before the folder's plan is written
        plan = register(out, experiment, preset.name, settings, args.project)
        tracking = {"project": args.project, "group": plan["group"], "wandb_mode": args.wandb_mode,
                    "tags": [preset.name, experiment]}
        specs = make_specs(settings, tracking)
        print(f"{experiment}: {len(specs)} runs ({preset.name} preset) -> {out}", file=sys.stderr)
        outcome = execute(specs, out, workers=workers, desc=experiment,
                          echo=lambda m: print(m, file=sys.stderr))
        failed += len(outcome.failed)
        if outcome.failed:
            print(f"{experiment}: {len(outcome.failed)} run(s) failed (see {out / 'errors.jsonl'}); "
                  "rerun the same command to retry them", file=sys.stderr)
    print(f"experiments finished in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if not args.no_report:
        from experiments.report import make_report

        result = make_report(out, wandb_mode=args.wandb_mode)
        print(result.verdict_table)
        print(f"\nreport: {result.markdown}  (total {time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


def _temperature(args) -> int:
    from experiments.temperature import run_temperature_command

    return run_temperature_command(
        checkpoint=args.checkpoint, run_dir=args.run_dir, data_config=args.data_config,
        temperatures=_list(float)(args.temperatures) if args.temperatures else None,
        num_samples=args.num_samples, out=args.out,
        families=_list(str)(args.families) if args.families else None,
        batch_sizes=_list(int)(args.batch_sizes) if args.batch_sizes else None,
    )


def main(command: str, argv: list[str]) -> int:
    prog = f"gvt {command}"
    if command == "sweep":
        parser = argparse.ArgumentParser(prog=prog, description="Batch-size sweep: families x batch sizes x seeds at "
                                         "an equal budget (`all`: also the conditioning ablation), then the report.")
        parser.add_argument("experiment", choices=["batch-size", "all"])
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
                                         "table for Q1-Q4 from a run folder.")
        parser.add_argument("run_dir")
        parser.add_argument("--out", help="report folder (default: RUN_DIR/report)")
        parser.add_argument("--wandb-mode", default="offline", choices=["auto", "online", "offline", "disabled"])
    else:
        print(f"gvt: unknown experiment command {command!r}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        if command == "sweep":
            return _run_experiments(args, ["batch-size"] if args.experiment == "batch-size" else
                                    ["batch-size", "conditioning"])
        if command == "ablate":
            return _run_experiments(args, ["conditioning"])
        if command == "temperature":
            return _temperature(args)
        from experiments.report import make_report

        result = make_report(args.run_dir, out=args.out, wandb_mode=args.wandb_mode)
        print(result.verdict_table)
        print(f"\nreport: {result.markdown}")
        return 0
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
