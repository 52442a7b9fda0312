"""``gvt report RUN_DIR``: plots (PNG) and a Markdown report with the verdict table for Q1-Q4.

Reads the run folder's results table (and each run's ``curves.csv``), never re-trains anything, and can be run
on a partial sweep. The verdicts come from each question's ``rule`` module (``experiments.q1_game.rule`` ...
``experiments.q4_temperature.rule``), decided together by ``all_verdicts``; each question's section and figures
come from its own ``report`` and ``plots`` modules (``SECTIONS``); the figures behind each verdict are in the report.
The report's figures and tables are also logged to W&B (offline by default) in the sweep's group.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from experiments.core import verdicts as V
from experiments.core.baselines import attach_references, references_of
from experiments.core.families import ESTIMATOR, FAMILIES, LOSS, get_arg, merge_args
from experiments.core.presets import DEFAULT_TEMPERATURES
from experiments.core.results import ResultsTable, atomic_write_text, flat_scalars, read_plan
from experiments.core.stats import Interval, finite, t_interval
from experiments.core.tables import nan_to_none
from experiments.q1_game import report as q1_report
from experiments.q1_game.plots import plot_losses
from experiments.q1_game.rule import q1
from experiments.q2_batch_size import report as q2_report
from experiments.q2_batch_size.plots import plot_dose_response, plot_metrics_vs_batch, plot_noise
from experiments.q2_batch_size.rule import noise_table, q2
from experiments.q3_conditioning import report as q3_report
from experiments.q3_conditioning.plots import plot_mi
from experiments.q3_conditioning.rule import q3_condition, q3_latent
from experiments.q4_temperature import report as q4_report
from experiments.q4_temperature.plots import plot_handover_curves, plot_quality_diversity
from experiments.q4_temperature.rule import q4
from experiments.q4_temperature.temperature import costs, dominated_fraction, read_curve
from modules.errors import MissingInputError

@dataclass
class ReportResult:
    folder: Path
    markdown: Path
    figures: list[Path]
    verdicts: list[V.Verdict]
    verdict_table: str


# ---- loading -------------------------------------------------------------------------------------------------


def load_curves(run_dir: Path, rows: list[dict]) -> dict[str, list[dict]]:
    curves = {}
    for r in rows:
        path = run_dir / r.get("paths", {}).get("curves", "")
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                curves[r["key"]] = [{k: float(v) for k, v in p.items() if v not in ("", None)}
                                    for p in csv.DictReader(f)]
    return curves


def temperature_loader(run_dir: Path):
    def load(row: dict) -> list[dict]:
        if row.get("temperature"):
            return row["temperature"]
        path = run_dir / row.get("paths", {}).get("folder", "") / "temperature.csv"
        return read_curve(path) if path.is_file() else []

    return load


# ---- figures -------------------------------------------------------------------------------------------------


MLE_CONTINUED = "mle-continued"  # the arm every adversarial arm from the same checkpoint is compared with
# (label, key in a row's ``final``): lower is better for the NLLs; lower Self-BLEU is more diverse.
PHASE_METRICS = (("NLL_oracle", "nll_oracle_per_token"), ("NLL_test", "nll_test_per_token"),
                 ("Self-BLEU-3", "self_bleu3"))


@dataclass
class PhaseEffect:
    """One GAN arm, batch size and metric; every interval is a 95% t-interval over the seeds in ``per_seed``."""

    family: str
    batch_size: int
    metric: str
    handover: Interval  # Interval: the hand-over model's value (its pretrain run's final)
    gan_start: Interval  # the GAN arm's value before its first update minus the hand-over's (the fresh z input)
    gan_change: Interval  # the GAN arm's final minus the hand-over's
    mle_change: Interval  # mle-continued's final minus the hand-over's
    effect: Interval  # gan_change - mle_change, per seed
    per_seed: dict


def adversarial_phase_effects(rows: list[dict]) -> list[PhaseEffect]:
    """Per seed, (GAN arm's final - hand-over) - (mle-continued's final - hand-over), for each adversarial arm
    started from a pretrain run, paired with the mle-continued run of the same seed, batch size and checkpoint."""
    by_key = {r["key"]: r for r in rows}
    arms = [r for r in rows if r.get("kind") == "pretrained-arm" and r.get("init_from") in by_key]
    mle = {(r["init_from"], r["batch_size"]): r for r in arms if r["family"] == MLE_CONTINUED}
    out = []
    for fam in V.families_of([r for r in arms if r.get("adversarial")]):
        for b in sorted({r["batch_size"] for r in arms if r["family"] == fam}):
            for label, key in PHASE_METRICS:
                cols = {"handover": {}, "gan_start": {}, "gan_change": {}, "mle_change": {}, "effect": {}}
                for g in V._by(arms, family=fam, batch_size=b):
                    h, m = by_key[g["init_from"]], mle.get((g["init_from"], b))
                    hv, gv, g0 = (get_arg(h, f"final.{key}"), get_arg(g, f"final.{key}"), get_arg(g, f"init.{key}"))
                    mv = get_arg(m, f"final.{key}") if m else None
                    if not (finite(hv) and finite(gv)):
                        continue
                    seed = g["seed"]
                    cols["handover"][seed] = hv
                    cols["gan_change"][seed] = gv - hv
                    if finite(g0):
                        cols["gan_start"][seed] = g0 - hv
                    if finite(mv):
                        cols["mle_change"][seed] = mv - hv
                        cols["effect"][seed] = (gv - hv) - (mv - hv)
                if cols["handover"]:
                    out.append(PhaseEffect(fam, b, label, **{k: t_interval(v.values()) for k, v in cols.items()},
                                           per_seed=dict(cols["effect"])))
    return out


def handover_curve_comparison(rows: list[dict], temperature_of) -> list[tuple[str, int, object, object]]:
    """(arm, batch size, share of the arm's temperature points dominated by its hand-over model's curve, share of
    the hand-over's points dominated by the arm's), each a t-interval over seeds (same checkpoint per seed)."""
    by_key = {r["key"]: r for r in rows}
    arms = [r for r in rows if r.get("kind") == "pretrained-arm" and r.get("init_from") in by_key]
    out = []
    for fam in V.families_of(arms):
        for b in sorted({r["batch_size"] for r in arms if r["family"] == fam}):
            beaten, beats = [], []
            for r in V._by(arms, family=fam, batch_size=b):
                arm, handover = temperature_of(r), temperature_of(by_key[r["init_from"]])
                if len(arm) >= 2 and len(handover) >= 2:
                    beaten.append(dominated_fraction(costs(handover), costs(arm)))
                    beats.append(dominated_fraction(costs(arm), costs(handover)))
            if beaten:
                out.append((fam, b, t_interval(beaten), t_interval(beats)))
    return out


def pretrained_section(rows: list[dict], temperature_of, figure: Optional[Path]) -> list[str]:
    """Markdown of "Did the adversarial phase help or hurt?" (empty without pretrained arms)."""
    effects = adversarial_phase_effects(rows)
    curves = handover_curve_comparison(rows, temperature_of)
    if not effects and not curves:
        return []
    pre = [r for r in rows if r.get("kind") == "pretrain"]
    budget = sorted({r.get("budget_value") for r in pre}, key=str)
    L = ["## Pretrained arms: did the adversarial phase help or hurt?", "",
         f"Each seed's MLE Transformer was pretrained once ({', '.join(map(str, budget))} samples at batch size "
         f"{', '.join(str(b) for b in sorted({r['batch_size'] for r in pre}))}); that checkpoint, the hand-over "
         "model, then went on (a) adversarially as each GAN arm (its generator is the same network; the latent z "
         f"input starts fresh) and (b) by MLE as `{MLE_CONTINUED}`, for the same samples and with the MLE family's "
         "optimiser settings. Per seed, the adversarial phase's effect is (GAN final - hand-over) - "
         f"(`{MLE_CONTINUED}` final - hand-over): what the game did beyond what as much further MLE training did. "
         "Negative on an NLL: the GAN ended lower (better) than MLE; negative on Self-BLEU-3: more diverse. "
         "Mean [95% t-interval over seeds] (seeds). 'GAN start' is the GAN arm before its first update minus the "
         "hand-over model (the effect of its fresh z input alone). The pretrained arms stay out of the "
         "verdicts above and of the z and conditioning questions: pretraining without z teaches the generator "
         "to ignore z.", ""]
    if pre:
        hv = {k: t_interval(get_arg(r, f"final.{k}") for r in pre) for _, k in PHASE_METRICS}
        L += ["Hand-over model: " + "; ".join(f"{label} {hv[k].fmt(3)}" for label, k in PHASE_METRICS
                                              if hv[k].n), ""]
    if effects:
        L += ["| GAN arm | batch | metric | hand-over | GAN start | GAN change | "
              f"`{MLE_CONTINUED}` change | adversarial phase effect |", "|---|---:|---|---|---|---|---|---|"]
        L += [f"| {e.family} | {e.batch_size} | {e.metric} | {e.handover.fmt(3)} | {e.gan_start.fmt(3)} | "
              f"{e.gan_change.fmt(3)} | {e.mle_change.fmt(3)} | **{e.effect.fmt(3)}** |" for e in effects]
        L.append("")
    if curves:
        L += ["Temperature curves against the hand-over model's (the pretrain run measured at the same "
              "temperatures; Caccia et al. 2018): share of the arm's points weakly dominated by the hand-over "
              "curve, and share of the hand-over's points dominated by the arm's curve, per seed.", "",
              "| arm | batch | arm's points dominated by hand-over | hand-over's points dominated by arm |",
              "|---|---:|---|---|"]
        L += [f"| {fam} | {b} | {beaten.fmt(2)} | {beats.fmt(2)} |" for fam, b, beaten, beats in curves]
        L.append("")
    if figure:
        L += [f"![pretrained]({figure.name})", ""]
    return L


# ---- Markdown ------------------------------------------------------------------------------------------------


def baselines_summary(rows: list[dict]) -> list[str]:
    lines = []
    for ref in references_of(rows):
        args = ref.get("data", {}).get("init_args", {})
        where = ", ".join(f"{k} {v}" for k, v in args.items()) or ref.get("data", {}).get("class_path", "")
        parts = [f"{b['name']} (add-{b['k']:g}) NLL_test {b['nll_test_per_token']:.3f}, NLL_oracle "
                 f"{b['nll_oracle_per_token']:.3f}, H {b['entropy_per_token']:.3f}, J {b['j']:.3f}"
                 for b in (ref["unigram"], ref["bigram"])]
        lines.append(f"- data {where}: oracle entropy {ref['oracle_entropy_per_token']:.3f} "
                     f"(se {ref['oracle_entropy_se']:.3f}) nats/token, uniform {ref['uniform_nll_per_token']:.3f}; "
                     + "; ".join(parts))
    return lines or ["- none: J and the baselines need oracle data"]


def cells_table(v: V.Verdict) -> list[str]:
    """A question's cells at the level its verdict used."""
    if not v.cells:
        return []
    lines = [f"| cell | estimate [interval at {v.level:.4g}] (seeds) | SESOI | precondition |", "|---|---|---|---|"]
    for name, cell in v.cells.items():
        mark = " **(primary)**" if name == v.primary else ""
        pre = ("met" if cell.precondition_met else "not met" if cell.precondition_met is False else "unknown")
        pre = f"{pre}: {cell.precondition}" if cell.precondition else "-"
        margin = f"{cell.margin:g}" if cell.margin is not None else "-"
        lines.append(f"| {cell.description}{mark} | {cell.fmt()} | {margin} | {pre} |")
    return lines


def power_table(vs: list[V.Verdict]) -> list[str]:
    """The seeds check: each primary cell's interval half-width against half its SESOI (the size at which an effect
    of the SESOI excludes 0 and a null excludes the SESOI), and the seeds its observed spread would need."""
    checks = [(v, v.power()) for v in vs]
    checks = [(v, p) for v, p in checks if p is not None]
    if not checks:
        return []
    lines = ["Seeds against the target (the primary cell's interval half-width at the verdict's level should be at "
             "most half the SESOI; the seeds needed are computed from this run's spread, so they size the next "
             "run, not this one):", "",
             "| # | seeds | SD | half-width | target (SESOI / 2) | met | seeds needed |", "|---|---:|---:|---:|---:|---|---:|"]
    for v, p in checks:
        needed = str(p["seeds_needed"]) if p["seeds_needed"] is not None else "> 1000"
        lines.append(f"| {v.question} | {p['seeds']} | {p['std']:.3g} | {p['half_width']:.3g} | "
                     f"{p['target_half_width']:.3g} | {'yes' if p['met'] else 'no'} | {needed} |")
    return lines + [""]


def verdict_table_text(vs: list[V.Verdict], prereg_hash: str = "", alpha: float = 0.05) -> str:
    width = max(len(v.verdict) for v in vs)
    lines = [f"Verdicts (each question's primary cell against its SESOI; t-intervals over seeds at Holm-adjusted "
             f"levels, family-wise {1 - alpha:.0%}; rules in the report)"
             + (f"; pre-registration hash {prereg_hash}" if prereg_hash else "") + ":"]
    for v in vs:
        lines.append(f"  {v.question:<4} {v.verdict:<{width}}  {v.evidence}")
    return "\n".join(lines)


def loss_confound_note(models: dict, families: list[str]) -> Optional[str]:
    """The loss each adversarial family of a grid trains with; when the Gumbel and the REINFORCE families train
    with different losses, a line saying that comparing them confounds the estimator with the loss."""
    losses = {}  # family -> (estimator, loss)
    for name in families:
        args = merge_args(FAMILIES[name].defaults if name in FAMILIES else {}, models.get(name, {}))
        if get_arg(args, ESTIMATOR) and get_arg(args, LOSS):
            losses[name] = (get_arg(args, ESTIMATOR), get_arg(args, LOSS))
    gumbel, reinforce = ({loss for e, loss in losses.values() if e == est} for est in ("gumbel", "reinforce"))
    if not gumbel or not reinforce or gumbel == reinforce:
        return None
    listed = ", ".join(f"{name} `{loss}`" for name, (_, loss) in losses.items())
    return (f"- **GAN losses**: {listed}. The estimators train under different losses, so a difference between a "
            "Gumbel and a REINFORCE family is that of the estimator and the loss together (confounded), not of "
            "the estimator alone.")


def _starts_from_pretrain(family: str) -> bool:
    return family in FAMILIES and FAMILIES[family].init_from == "pretrain"


def _plan_summary(plan: Optional[dict]) -> list[str]:
    if not plan:
        return []
    out = []
    for name, exp in plan.get("experiments", {}).items():
        s, g = exp["settings"], exp["grid"]
        note = loss_confound_note(s.get("models", {}), g.get("families", []))
        if name == "batch-size":
            out.append(f"- **batch-size sweep** (preset `{exp['preset']}`): families {', '.join(g['families'])}; "
                       f"batch sizes {', '.join(map(str, g['batch_sizes']))}; seeds {', '.join(map(str, g['seeds']))}; "
                       f"budget {s['budget_value']} {s['budget']} per run; learning rates scaled `{s['lr_scaling']}` "
                       f"from batch size {s['reference_batch_size']}; data `{s['data']['class_path']}` "
                       f"{json.dumps(s['data'].get('init_args', {}))}"
                       + (f"; pretrained arms from one MLE checkpoint per seed ({s['pretrain_budget']} samples)"
                          if s.get("pretrain_budget") and any(map(_starts_from_pretrain, g["families"])) else ""))
        else:
            out.append(f"- **conditioning ablation** (preset `{exp['preset']}`): families {', '.join(g['families'])}; "
                       f"conditions {', '.join(g['conditions'])}; strengths {', '.join(map(str, g['strengths']))}; "
                       f"z_dim {', '.join(map(str, g['z_dims']))} (GANs); seeds {', '.join(map(str, g['seeds']))}; "
                       f"batch size {s['batch_size']}; budget {s['budget_value']} {s['budget']} per run")
        if note and note not in out:
            out.append(note)
    return out


# Each question's section of the report: its title and figure, and what it adds before and after the figure.
SECTIONS = {"Q1": q1_report, "Q2": q2_report, "Q3": q3_report, "Q3z": q3_report, "Q4a": q4_report, "Q4b": q4_report}


def write_markdown(path: Path, run_dir: Path, rows, plan, vs: list[V.Verdict], figures: dict[str, Path],
                   noise, ref_bs: int, n_errors: int, prereg: Optional[dict] = None,
                   settings: Optional[V.VerdictSettings] = None, pretrained: Optional[list[str]] = None) -> None:
    wall = sum(r.get("wall_time_s", 0) for r in rows)
    L = [f"# gan-vs-transformer report: `{run_dir.name}`", "",
         f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `gvt report` from {len(rows)} finished runs "
         f"({sum(r['kind'] == 'sweep' for r in rows)} sweep, {sum(r['kind'] == 'ablation' for r in rows)} ablation"
         + (f", {sum(r['kind'] == 'pretrain' for r in rows)} pretrain, "
            f"{sum(r['kind'] == 'pretrained-arm' for r in rows)} pretrained-arm"
            if any(r['kind'] in ('pretrain', 'pretrained-arm') for r in rows) else "") + "; "
         f"{wall / 60:.1f} min of training and evaluation in total)"
         + (f"; {n_errors} run(s) failed and are missing" if n_errors else "") + ".", ""]
    settings = settings or V.VerdictSettings()
    L += _plan_summary(plan) + [""]
    if prereg:
        L += [f"**Pre-registration hash: `{prereg['hash']}`** (sha256 of the experiments' presets, settings - "
              "budgets, learning rates and their scaling, temperatures, data - and grids - families, batch sizes, "
              "seeds - and of the verdict settings: SESOIs, alpha, primary cells; `verdicts.json` lists them). "
              "A verdict run is judged by the settings this hash was committed with.", ""]
    from experiments.core.pilot import report_section

    L += report_section(plan)
    sesois = ", ".join(f"{q} {m:g} ({V.SESOI_UNITS.get(q, '')})" for q, m in settings.sesoi.items())
    L += ["## Verdicts", "",
          "One rule for every question, on its one primary cell (a statistic per seed, oriented so that the claim "
          "predicts a positive value) and its smallest effect of interest (SESOI): *supported* when the "
          "t-interval over seeds lies above 0 and the estimate is at least the SESOI; *not supported* when the "
          "interval lies below the SESOI; *inconclusive* otherwise, and with fewer than "
          f"{settings.min_seeds} seeds, seeds that all gave the same value (no honest interval), a cell that was "
          "not run, or a failed precondition (a family is not usable unless its J's interval lies below the counted "
          "bigram's J). "
          f"Holm's step-down keeps the family-wise error at {settings.alpha:g} across the questions: the one with "
          "the smallest p-value is decided at level 1 - alpha/m, the next at 1 - alpha/(m - 1), ..., and the "
          f"first undecided one stops the rest. SESOIs: {sesois}. Learning is the drop in "
          "J = KL(p || q) + KL(q || p) per token (NLL_test - H(oracle) + NLL_oracle - H(model)), which sharpening "
          "alone cannot improve.", "",
          "| # | claim | verdict | SESOI | evidence |", "|---|---|---|---|---|"]
    for v in vs:
        margin = f"{v.margin:g}" if v.margin is not None else "-"
        confounds = "".join(f" *Confound:* {c}." for c in v.extra.get("confounds") or [])
        L.append(f"| {v.question} | {v.claim} | **{v.verdict}** | {margin} | {v.evidence}{confounds} |")
    L.append("")
    L += power_table(vs)
    L += ["Counted baselines on the training split, or on as many fresh sentences as the data's baseline_samples (every "
          "table below prints them; a family is usable only where the upper bound of its J's interval lies below the "
          "bigram's):", ""]
    L += baselines_summary(rows) + [""]
    for v in vs:
        part = SECTIONS.get(v.question)
        fig, title = part.SECTIONS[v.question] if part else (None, v.question)
        if title:
            L += [f"## {title}", ""]
        L += [f"**{v.question} - {v.verdict}** ({v.reason}). {v.claim}", "", f"Rule: {v.rule}", ""]
        level = (f"Decided at interval level {v.level:.4g}" + (f" (Holm step {v.holm['rank']} of {v.holm['of']})"
                                                                 if v.holm.get("rank") else "") + ".")
        L += [level, ""] + cells_table(v) + [""]
        L += v.details + [""]
        L += part.before_figure(v) if part else []
        if fig and figures.get(fig):
            L += [f"![{fig}]({figures[fig].name})", ""]
        L += part.after_figure(v, rows, figures) if part else []
    L += pretrained or []
    L += q2_report.noise_section(noise, figures, ref_bs)
    L += ["", "## Files", "", "- `results.jsonl` / `results.csv` in the run folder: one row per run; "
          "`runs/<key>/curves.csv`: loss curves; `runs/<key>/temperature.csv`: temperature curves.",
          "- `verdicts.json`: the verdicts above, machine-readable.", ""]
    atomic_write_text(path, "\n".join(L))


# ---- W&B -----------------------------------------------------------------------------------------------------


def log_to_wandb(plan: Optional[dict], folder: Path, figures: dict[str, Path], vs: list[V.Verdict], rows, mode: str):
    # modules.tracking (resolve_wandb_mode) imports pytorch_lightning, and wandb is heavy: both load only when the
    # report is logged, so `gvt report` with W&B disabled and the code that only reads reports stay light
    from modules.tracking import resolve_wandb_mode

    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return
    try:
        import wandb

        run = wandb.init(project=(plan or {}).get("project", "gan-vs-transformer"), group=(plan or {}).get("group"),
                         job_type="report", name=f"report-{(plan or {}).get('group', folder.parent.name)}",
                         dir=str(folder), mode=mode, reinit=True,
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        run.log({f"report/{name}": wandb.Image(str(p)) for name, p in figures.items() if p})
        run.log({"report/verdicts": wandb.Table(columns=["question", "claim", "verdict", "evidence"],
                                                data=[[v.question, v.claim, v.verdict, v.evidence] for v in vs])})
        flat = [flat_scalars(r) for r in rows]
        columns = sorted({k for f in flat for k, v in f.items() if isinstance(v, (int, float, str, bool))})
        run.log({"report/results": wandb.Table(columns=columns, data=[[f.get(c) for c in columns] for f in flat])})
        run.summary.update({f"verdict/{v.question}": v.verdict for v in vs})
        run.finish()
    except Exception as err:  # the report is on disk; tracking must not take it down
        print(f"report: W&B logging skipped ({type(err).__name__}: {err})")


# ---- the verdicts ---------------------------------------------------------------------------------------------


def all_verdicts(rows: list[dict], curves: dict[str, list[dict]], temperature_of: Callable[[dict], list[dict]],
                 ref_bs: int, settings: Optional[V.VerdictSettings] = None) -> list[V.Verdict]:
    """Q1, Q2, Q3, Q3z, Q4a, Q4b decided together (Holm across them)."""
    settings = settings or V.VerdictSettings()
    vs = [q1(rows, curves, ref_bs, settings), q2(rows, ref_bs, settings), q3_condition(rows, settings),
          q3_latent(rows, settings), *q4(rows, temperature_of, ref_bs, settings)]
    return V.holm(vs, settings.alpha, settings.min_seeds)


# ---- entry point -------------------------------------------------------------------------------------------


def make_report(run_dir: str | Path, out: Optional[str | Path] = None, wandb_mode: str = "offline") -> ReportResult:
    run_dir = Path(run_dir)
    rows = ResultsTable(run_dir).rows()
    if not rows:
        raise MissingInputError(f"{run_dir} holds no finished runs (no {run_dir / 'results.jsonl'})")
    plan = read_plan(run_dir)
    folder = Path(out) if out else run_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    sweep_plan = (plan or {}).get("experiments", {}).get("batch-size", {}).get("settings", {})
    sizes = sorted({r["batch_size"] for r in rows if r["kind"] == "sweep"})
    ref_bs = sweep_plan.get("reference_batch_size") or (sizes[len(sizes) // 2] if sizes else 0)
    curves = load_curves(run_dir, rows)
    temps = temperature_loader(run_dir)
    # Each row with the counted baselines of its data (computed once per data config, cached in the run folder).
    rows = attach_references(run_dir, rows, sweep_plan.get("temperatures") or DEFAULT_TEMPERATURES)
    settings = V.VerdictSettings.from_plan(plan)
    prereg = V.preregistration(plan, settings)

    # underpowered runs are reported, never decided on (every question also filters through V.verdict_rows)
    vs = all_verdicts(V.verdict_rows(rows), curves, temps, ref_bs, settings)
    noise = noise_table(rows, ref_bs)

    qd = {}
    for r in rows:
        if r["kind"] in ("sweep", settings.compared_kind) and r["batch_size"] == ref_bs:
            qd.setdefault(r["family"], []).append(temps(r))
    sweep_refs = references_of([r for r in rows if r["kind"] == "sweep"])
    figures = {
        "metrics": plot_metrics_vs_batch(rows, folder / "metrics_vs_batch_size.png"),
        "losses": plot_losses(rows, curves, folder / "loss_curves.png", sorted({min(sizes or [0]), ref_bs})),
        "noise": plot_noise(noise, folder / "noise_scale.png"),
        "mi": plot_mi(rows, folder / "conditioning.png"),
        "qd": plot_quality_diversity(qd, folder / "quality_diversity.png",
                                     sweep_refs[0] if len(sweep_refs) == 1 else None),
        "pretrained": plot_handover_curves(rows, temps, folder / "pretrained_arms.png"),
        "dose_response": plot_dose_response(rows, folder / "dose_response.png"),
    }
    n_errors = 0
    errors = run_dir / "errors.jsonl"
    if errors.exists():
        done = {r["key"] for r in rows}
        n_errors = len({json.loads(l)["key"] for l in errors.read_text().splitlines() if l.strip()} - done)
    markdown = folder / "report.md"
    pretrained = pretrained_section(rows, temps, figures["pretrained"])
    write_markdown(markdown, run_dir, rows, plan, vs, figures, noise, ref_bs, n_errors, prereg, settings, pretrained)
    atomic_write_text(folder / "verdicts.json", json.dumps(verdicts_json(vs, prereg, settings, rows), indent=2,
                                                           default=_json_value) + "\n")
    log_to_wandb(plan, folder, figures, vs, [{k: v for k, v in r.items() if k != "reference"} for r in rows],
                 wandb_mode)
    return ReportResult(folder, markdown, [p for p in figures.values() if p], vs,
                        verdict_table_text(vs, prereg["hash"], settings.alpha))


def _json_value(value):
    raise TypeError(f"cannot write {type(value).__name__} to verdicts.json")


def verdicts_json(vs: list[V.Verdict], prereg: dict, settings: V.VerdictSettings, rows: list[dict]) -> dict:
    """verdicts.json: the pre-registration (hash and settings), the Holm family, one entry per question (verdict,
    rule, margin = the SESOI, cells with estimate / interval / n / precondition_met; Q1 adds null, Q2 budgets and
    controls) and the counted baselines. Non-finite numbers are written as null."""
    return nan_to_none({
        "preregistration": prereg,
        "alpha": settings.alpha,
        "correction": "holm",
        "questions": {v.question: v.to_json() for v in vs},
        "baselines": [{k: ref.get(k) for k in ("data", "oracle_entropy_per_token", "oracle_entropy_se",
                                                "uniform_nll_per_token", "unigram", "bigram", "unigram_tempered")}
                      for ref in references_of(rows)],
    })
