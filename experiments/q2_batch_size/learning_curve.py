"""The learning curve: validation J against the samples trained on, per family, before any budget is chosen.

    gvt sweep learning-curve [--preset P] [--budgets N ...] [--families ...] [--seeds ...] [--out DIR]

A verdict compares models only once they have learned more than a counted bigram; the budget at which they have is
measured here, not guessed. For each budget (samples; default ``default_budgets``: powers of 4 up to 4x the
preset's largest budget) every family of the preset's sweep is trained from its start at the reference batch size
on the pilot seeds (``experiments.core.pilot_file.DEFAULT_SEEDS``, apart from the verdict seeds), each budget a run of
its own (so a GAN's temperature annealing and a schedule end where a run of that budget ends them), evaluated on
the validation split, with the rule's learning rates (no pilot multiplier: the curve comes before the pilot):

- the from-scratch families (MLE Transformer, Gumbel and REINFORCE GANs) over ``budget`` samples from their
  initialisation;
- the arms that start from the shared MLE checkpoint (``gan-gumbel-pt``, ``mle-continued``, ...) over ``budget``
  samples after it; the checkpoint itself is the preset's (``pretrain_budget`` samples), drawn as a line.

J = (NLL_val - H(oracle)) + (NLL_oracle - H(model)) per token (``experiments.core.baselines``), 0 for the oracle
itself. Written to ``DIR/learning_curve.json`` (per family and budget: mean J, its 95% t-interval, per-seed J) and
``DIR/learning_curve.png`` (J against samples, log scale, with the counted unigram's and bigram's J and the
oracle's 0; the bigram counted on the preset's ``baseline_samples``). Resumable: a rerun skips finished runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from experiments.core.baselines import baselines_for
from experiments.core.execute import execute
from experiments.core.families import get_family
from experiments.core.pilot import pilot_rows, pilot_settings, validation_spec, words
from experiments.core.pilot_file import DEFAULT_SEEDS
from experiments.core.plots import _band, _color, _plt, save_figure
from experiments.core.presets import PRESETS, get_preset
from experiments.core.stats import finite, t_interval
from experiments.q2_batch_size.sweep import sweep_specs
from modules.errors import ConfigError, GvtError
from modules.files import atomic_write_text

CHECKPOINT = "shared MLE checkpoint"  # the curve's name for the pretrain run the arms start from


def default_budgets(preset) -> list[int]:
    """Powers of 4 (times the reference batch size) up to 4x the largest budget the preset trains a run for."""
    s = preset.sweep
    top = 4 * max(s.budget_value, s.pretrain_budget or 0)
    budgets, b = [], s.reference_batch_size * 4
    while b <= top:
        budgets.append(b)
        b *= 4
    return budgets


def curve_specs(preset, budgets: Sequence[int], seeds: Sequence[int], families: Optional[Sequence[str]] = None,
                tracking: Optional[dict] = None) -> list[dict]:
    """The runs of the curve: each family at the reference batch size for each budget (samples), on ``seeds``,
    evaluated on the validation split, without measurements (``experiments.core.pilot.validation_spec``)."""
    if not budgets or any(int(b) < 1 for b in budgets):
        raise ConfigError(f"learning-curve budgets must be sample counts >= 1, got {list(budgets)}")
    families = list(families or preset.sweep.families)
    unknown = [f for f in families if f not in preset.sweep.models]
    if unknown:
        raise ConfigError(f"learning-curve families {unknown} are not in the {preset.name} preset's models "
                          f"({', '.join(sorted(preset.sweep.models))})")
    out, renamed = {}, {}
    for budget in sorted({int(b) for b in budgets}):
        settings = pilot_settings(preset, seeds)
        ref = settings.reference_batch_size
        settings.families, settings.budget, settings.budget_value = families, "samples", budget
        settings.batch_sizes, settings.pretrained_batch_sizes = [ref], [ref]
        settings.pretrained_family_batch_sizes = settings.equal_update_batch_sizes = None
        settings.temperatures, settings.noise, settings.checkpoints, settings.held_out = [], None, None, None
        for spec in sweep_specs(settings, copy.deepcopy(tracking or {})):
            spec = validation_spec(spec, renamed)
            out.setdefault(spec["key"], spec)  # the shared checkpoint is the same run at every budget
    return sorted(out.values(), key=lambda s: (s["kind"] != "pretrain", s["seed"], s["budget"]["updates"], s["family"]))


def summarise(rows: list[dict]) -> dict:
    """{family: [{samples, mean_j, interval, j: {seed: J}, diverged}]} over budgets, and the checkpoint's J."""
    curves: dict[str, dict[int, list[dict]]] = {}
    for r in rows:
        name = CHECKPOINT if r["kind"] == "pretrain" else r["family"]
        curves.setdefault(name, {}).setdefault(int(r["budget_value"]), []).append(r)  # samples (curve_specs)
    out = {}
    for name, by_budget in curves.items():
        points = []
        for samples, rs in sorted(by_budget.items()):
            iv = t_interval(r["j"] for r in rs)
            points.append({"samples": samples, "mean_j": iv.mean if finite(iv.mean) else None,
                           "interval": [iv.low, iv.high] if iv.defined else None,
                           "j": {str(r["seed"]): r["j"] for r in sorted(rs, key=lambda r: r["seed"])},
                           "diverged": sum(1 for r in rs if not finite(r["j"]))})
        out[name] = points
    return out


def plot_learning_curve(curves: dict, reference: Optional[dict], path: Path, title: str) -> Path:
    plt = _plt()
    trained = {f: p for f, p in curves.items() if f != CHECKPOINT}
    arms = {f: p for f, p in trained.items() if get_family(f).init_from == "pretrain"}
    scratch = {f: p for f, p in trained.items() if f not in arms}
    panels = [(scratch, "from initialisation", "samples trained on")]
    if arms:
        panels.append((arms, "from the shared MLE checkpoint", "samples trained on after the checkpoint"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    checkpoint = next((p for p in curves.get(CHECKPOINT, []) if p["mean_j"] is not None), None)
    for ax, (group, where, xlabel) in zip(axes[0], panels):
        for i, (family, points) in enumerate(sorted(group.items())):
            shown = [p for p in points if p["mean_j"] is not None]
            if not shown:
                continue
            color = _color(family, i)
            ivs = [t_interval(v for v in p["j"].values() if finite(v)) for p in shown]
            if all(iv.n >= 3 for iv in ivs):  # a t-interval of 2 seeds (t = 12.7) would hide the curve
                _band(ax, [p["samples"] for p in shown], ivs, color, family)
            else:
                ax.plot([p["samples"] for p in shown], [p["mean_j"] for p in shown], "o-", color=color, lw=1.6,
                        ms=4, label=f"{family} (mean; dots: seeds)")
            for p in shown:
                seeds = [v for v in p["j"].values() if finite(v)]
                ax.scatter([p["samples"]] * len(seeds), seeds, color=color, s=9, alpha=0.5, lw=0)
        if group is scratch and checkpoint:
            ax.scatter([checkpoint["samples"]], [checkpoint["mean_j"]], marker="*", s=90,
                       color=_color("transformer"), zorder=5, label="transformer: the shared checkpoint")
        if reference:
            for base, ls in (("unigram", "--"), ("bigram", "-.")):
                ax.axhline(reference[base]["j"], color="0.3", ls=ls, lw=1, label=f"counted {base}")
        ax.axhline(0.0, color="0.3", ls=":", lw=1, label="oracle (J = 0)")
        if group is arms and checkpoint:
            ax.axhline(checkpoint["mean_j"], color=_color("transformer"), ls=(0, (1, 3)), lw=1.5,
                       label=f"the checkpoint ({checkpoint['samples']} samples)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation J (nats/token; lower is better)")
        ax.set_title(where)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def run_learning_curve(preset_name: str, budgets: Optional[Sequence[int]] = None,
                       seeds: Optional[Sequence[int]] = None, families: Optional[Sequence[str]] = None,
                       out: Optional[str | Path] = None, workers: Optional[int] = None, wandb_mode: str = "disabled",
                       echo=print) -> dict:
    """Run the curve of ``preset_name`` into ``out`` (resumable); write and return its summary."""
    preset = get_preset(preset_name, pilot=False)
    budgets = list(budgets or default_budgets(preset))
    seeds = list(seeds if seeds is not None else DEFAULT_SEEDS)
    out = Path(out or f"runs/learning-curve/{preset.name}")
    tracking = {"project": "gan-vs-transformer", "group": f"learning-curve-{preset.name}", "wandb_mode": wandb_mode,
                "tags": [preset.name, "learning-curve"]}
    specs = curve_specs(preset, budgets, seeds, families, tracking)
    echo(f"learning curve: {len(specs)} runs ({preset.name} preset, budgets {budgets} samples at batch size "
         f"{preset.sweep.reference_batch_size}, seeds {seeds}) -> {out}")
    start = time.perf_counter()
    outcome = execute(specs, out, workers=workers if workers is not None else preset.workers,
                      desc="learning curve", echo=echo)
    if outcome.failed:
        raise RuntimeError(f"learning curve: {len(outcome.failed)} run(s) failed (see {out / 'errors.jsonl'}); rerun "
                           "the same command to retry them")
    rows = pilot_rows(out, specs)
    reference = baselines_for(out, preset.sweep.data)
    curves = summarise(rows)
    summary = {"preset": preset.name, "batch_size": preset.sweep.reference_batch_size, "seeds": seeds,
               "budgets": budgets, "split": "val", "j": "(NLL_val - H(oracle)) + (NLL_oracle - H(model)) per token",
               "pretrain_budget": preset.sweep.pretrain_budget, "wall_s": round(time.perf_counter() - start, 1),
               "reference": ({k: reference[k]["j"] for k in ("unigram", "bigram")} if reference else None),
               "curves": curves}
    atomic_write_text(out / "learning_curve.json", json.dumps(summary, indent=1, sort_keys=True) + "\n")
    title = (f"{preset.name} preset: validation J vs samples at batch size {summary['batch_size']}, seeds "
             f"{', '.join(map(str, seeds))} (mean, 95% t-interval)")
    plot_learning_curve(curves, reference, out / "learning_curve.png", title)
    for line in curve_table(summary):
        echo(line)
    echo(f"learning curve: {summary['wall_s']:.0f} s; {out / 'learning_curve.json'}, {out / 'learning_curve.png'}")
    return summary


def curve_table(summary: dict) -> list[str]:
    """Markdown: mean validation J per family (rows) and budget (columns), with the counted baselines."""
    budgets = sorted({p["samples"] for points in summary["curves"].values() for p in points})
    lines = ["| family | " + " | ".join(f"{b} samples" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for family, points in sorted(summary["curves"].items()):
        by = {p["samples"]: p for p in points}
        cells = [("diverged" if by[b]["mean_j"] is None else f"{by[b]['mean_j']:.3f}") if b in by else ""
                 for b in budgets]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    ref = summary.get("reference")
    if ref:
        lines.append(f"Counted unigram J {ref['unigram']:.3f}, bigram J {ref['bigram']:.3f} (oracle 0).")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gvt sweep learning-curve",
        description="Validation J against samples trained on, per family of the preset's sweep, at its reference "
                    "batch size on pilot seeds, with the counted unigram / bigram lines: choose budgets from it.")
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--budgets", nargs="+", metavar="N", help="sample budgets (default: powers of 4 up to 4x the "
                                                                  "preset's largest)")
    parser.add_argument("--families", nargs="+", metavar="NAME", help="only these families (default: the preset's)")
    parser.add_argument("--seeds", nargs="+", metavar="S", help="seeds (default: the pilot's, apart from the "
                                                                "verdict seeds)")
    parser.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/learning-curve/PRESET); rerun to "
                                                         "resume")
    parser.add_argument("--workers", type=int, metavar="N", help="runs at once (default: the preset's)")
    parser.add_argument("--wandb-mode", default="disabled", choices=["auto", "online", "offline", "disabled"])
    args = parser.parse_args(argv)
    try:
        budgets = [int(b) for b in words(args.budgets)] if args.budgets else None
        seeds = [int(s) for s in words(args.seeds)] if args.seeds else None
    except ValueError as err:
        print(f"gvt sweep learning-curve: error: --budgets and --seeds take integers ({err})", file=sys.stderr)
        return 2
    try:
        run_learning_curve(args.preset, budgets=budgets, seeds=seeds,
                           families=words(args.families) if args.families else None, out=args.out,
                           workers=args.workers, wandb_mode=args.wandb_mode,
                           echo=lambda m: print(m, file=sys.stderr))
    except GvtError as err:
        print(f"gvt sweep learning-curve: error: {err}", file=sys.stderr)
        return 2
    return 0
