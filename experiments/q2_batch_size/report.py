"""Q2's part of the report: the final metrics per family and batch size, the training settings and horizons, and
the gradient noise scale."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.core import verdicts as V
from experiments.core.baselines import j_score, learning
from experiments.core.evaluate import COLLAPSE_DISTINCT2_RATIO, COLLAPSE_UNIQUE, DIVERGENCE_NATS
from experiments.core.families import get_arg
from experiments.core.stats import finite, t_interval
from experiments.core.tables import baseline_rows, nan_to_none
from experiments.core.verdicts import Verdict

SECTIONS = {"Q2": ("metrics", "Q2: batch size, down to one sample")}  # question -> (figure, title)


def before_figure(v: Verdict) -> list[str]:
    return ["Budgets per batch size (samples seen / generator updates): " + ", ".join(
        f"bs {b}: {v.extra['budgets']['samples'][b]} / {v.extra['budgets']['steps'][b]}"
        for b in v.extra["budgets"]["samples"]), "",
            "Controls: " + "; ".join(f"{k}: {c if isinstance(c, str) else json.dumps(nan_to_none(c))}"
                                     for k, c in v.extra["controls"].items()), ""]


def after_figure(v: Verdict, rows: list[dict], figures: dict[str, Path]) -> list[str]:
    L = []
    if figures.get("dose_response"):
        L += ["Dose-response: each arm's learning against batch size, at equal samples and at equal updates.",
              "", f"![dose_response]({figures['dose_response'].name})", ""]
    L += ["Final metrics per family and batch size (mean [95% t-interval] (seeds)), and the counted "
          "baselines:", ""]
    L += metrics_table(rows) + [""]
    L += [f"Divergence: a non-finite training loss or final NLL, or a final NLL_oracle per token more than "
          f"{DIVERGENCE_NATS} nat above the untrained model's. Mode collapse: fewer than "
          f"{COLLAPSE_UNIQUE:.0%} distinct samples, or distinct-2 below {COLLAPSE_DISTINCT2_RATIO} x the "
          "distinct-2 of as many test sentences.", ""]
    L += ["Training settings per family and batch size (the generator's optimiser; the final Gumbel beta):",
          ""] + optimizer_table(rows) + ["", HORIZONS.format(n=V.MIN_VERDICT_UPDATES), ""]
    return L


def noise_section(noise, figures: dict[str, Path], ref_bs: int) -> list[str]:
    """The gradient noise scale per family and loss (``experiments.q2_batch_size.rule.noise_table``)."""
    L = []
    L += ["## Gradient noise scale", "",
          "Simple noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018) at the end of training, "
          f"for each loss with respect to the parameters it trains, at batch size {ref_bs}; the unbiased two-batch-"
          "size estimators of the paper's appendix A.1, averaged over rounds before the ratio. It estimates the "
          "critical batch size: above it, larger batches stop paying for themselves.", ""]
    if noise:
        L += ["| family | loss | B_simple: geometric mean over seeds [95% interval] |", "|---|---|---|"]
        L += [f"| {fam} | {loss} | {iv.fmt(3)} |" for fam, loss, iv in noise]
        mle = [iv for fam, loss, iv in noise if not fam.startswith("gan")]
        if mle and finite(mle[0].mean) and mle[0].mean > 0:
            L += [""] + [f"- {fam} {loss}: {iv.mean / mle[0].mean:.3g} x the MLE family's critical batch size"
                         for fam, loss, iv in noise if fam.startswith("gan") and finite(iv.mean)]
        if figures.get("noise"):
            L += ["", f"![noise]({figures['noise'].name})"]
    else:
        L += ["(not measured in this run folder)"]
    return L


def metrics_table(rows: list[dict]) -> list[str]:
    """Final metrics per family and batch size, and the counted baselines on the same data (J: lower is better;
    learning: the drop in J from the untrained model)."""
    sweep = [r for r in rows if r["kind"] == "sweep"]
    if not sweep:
        return []
    oracle = any(finite(get_arg(r, "final.nll_oracle_per_token")) for r in sweep)
    cols = ([("NLL_oracle", "final.nll_oracle_per_token", "nll_oracle_per_token")] if oracle else []) + [
        ("NLL_test", "final.nll_test_per_token", "nll_test_per_token"),
        ("H(model)", "final.model_entropy_per_token", "entropy_per_token")]
    cols += [("J", j_score, "j"), ("learning (drop in J)", learning, None)] if oracle else []
    cols += [("BLEU-3", "final.bleu3", None), ("Self-BLEU-3", "final.self_bleu3", None),
             ("distinct-2", "final.distinct2", None)]
    lines = ["| family | batch | updates | " + " | ".join(c for c, _, _ in cols) + " | failed | time (s) |",
             "|---|---:|---:|" + "---|" * len(cols) + "---:|---:|"]
    for fam in V.families_of(sweep):
        for b in sorted({r["batch_size"] for r in V._by(sweep, family=fam)}):
            rs = V._by(sweep, family=fam, batch_size=b)
            cells = [t_interval([k(r) if callable(k) else get_arg(r, k) for r in rs]).fmt(3) for _, k, _ in cols]
            fails = sum(bool(r.get("diverged") or r.get("collapsed")) for r in rs)
            wall = sum(r.get("wall_time_s", 0) for r in rs) / len(rs)
            updates = f"{rs[0].get('updates')}" + (" (underpowered)" if any(V.is_underpowered(r) for r in rs) else "")
            lines.append(f"| {fam} | {b} | {updates} | " + " | ".join(cells) +
                         f" | {fails}/{len(rs)} | {wall:.1f} |")
    lines += baseline_rows(sweep, [b or "" for _, _, b in cols], width=3 + len(cols) + 2, lead=3)
    return lines


# Which training horizons count generator updates and which count samples (quoted in every report).
HORIZONS = ("Horizons: Adam's moment averages (beta1, beta2) and their bias correction, the learning-rate warmup "
            "(`warmup_steps`) and D's schedule count optimizer updates, so at an equal sample budget a large batch "
            "size gets fewer of them. The Gumbel beta anneal and the cosine learning-rate schedule run over each "
            "run's own planned updates, so every batch size ends at the same beta and learning-rate factor. "
            "Runs planned with fewer than {n} generator updates are marked *underpowered*: reported, but kept out "
            "of every verdict.")


def optimizer_table(rows: list[dict]) -> list[str]:
    """The generator's optimiser per family and batch size (the ``optimizer`` row field) and the final Gumbel
    beta (mean over seeds; '-' without the Gumbel estimator)."""
    runs = [r for r in rows if r["kind"] == "sweep" and r.get("optimizer")]
    if not runs:
        return []
    lines = ["| family | batch | generator optimiser | lr | betas | weight decay | gradient clip | final beta | "
             "in verdicts |", "|---|---:|---|---:|---|---:|---:|---:|---|"]
    for fam in V.families_of(runs):
        for b in sorted({r["batch_size"] for r in V._by(runs, family=fam)}):
            rs = V._by(runs, family=fam, batch_size=b)
            o = rs[0]["optimizer"]
            betas = [r["final_beta"] for r in rs if finite(r.get("final_beta"))]
            beta = f"{sum(betas) / len(betas):.3g}" if betas else "-"
            used = "no (underpowered)" if any(V.is_underpowered(r) for r in rs) else "yes"
            lines.append(f"| {fam} | {b} | {o.get('class')} | {o.get('lr', float('nan')):.3g} | "
                         f"{tuple(o.get('betas', ()))} | {o.get('weight_decay')} | {o.get('gradient_clip')} | "
                         f"{beta} | {used} |")
    return lines
