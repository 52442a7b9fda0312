"""C4's report section and its figure (accuracy against labelled examples, per body and arm)."""

from __future__ import annotations

import math
from pathlib import Path

from experiments.c4_transfer.settings import ARMS
from experiments.c4_transfer.verdict import _classifier_rows, _difference, _sizes, accuracy_by_seed, baseline_accuracy
from experiments.core.stats import t_interval
from experiments.core.plots import save_figure


# ---- report --------------------------------------------------------------------------------------------------


def report_section(rows: list[dict], out: Path) -> tuple[list[str], dict[str, Path]]:
    """The C4 section's Markdown lines (accuracy against labelled-set size per body and arm with seed intervals,
    the language models' NLL) and its figure ``transfer_accuracy.png`` in ``out``; never the verdict table."""
    out = Path(out)
    clf = _classifier_rows(rows)
    verdict_seeds = {r["seed"] for r in _classifier_rows(rows)}
    lms = [r for r in rows if r.get("kind") == "lm" and r["seed"] in verdict_seeds]  # the pilot seed's are not
    lines = ["## C4: transfer learning (ULMFiT) against training from scratch", ""]
    if not clf:
        return lines + ["not run: no classifier rows in this run folder", ""], {}
    seeds = sorted({r["seed"] for r in clf})
    arms = [a for a in ARMS if any(r["arm"] == a for r in clf)]
    lines += [f"Accuracy on the fixed MR test split ({clf[0]['num_test']} sentences; majority-class baseline "
              f"{clf[0]['majority_accuracy']:.3f}) against the number of labelled training sentences (balanced "
              f"subsets, seeded, nested), mean and 95% t interval over {len(seeds)} seeds ({', '.join(map(str, seeds))}). "
              "pretrained: body from the language model pretrained on COCO captions + Multi30k English and adapted "
              "on the MR training sentences, new head; adapt_only: body from a language model trained on the MR "
              "training sentences alone; both fine-tuned by ULMFiT's recipe (discriminative rates, slanted "
              "triangular schedule, gradual unfreezing). scratch: the same classifier from its random "
              "initialisation, every layer at one rate. Same subset, budget and early stopping for every arm, each "
              "at the peak rate its pilot chose. Each seed trains its own language models, so the intervals cover "
              "pretraining, adaptation and fine-tuning.", ""]
    figures = {}
    for body in sorted({r["body"] for r in clf}):
        body_rows = [r for r in clf if r["body"] == body]
        rates = ", ".join(f"{a} {next(r['lr'] for r in body_rows if r['arm'] == a):g}" for a in arms
                          if any("lr" in r and r["arm"] == a for r in body_rows))
        lines += [f"### {body}", "", f"Peak learning rates (the pilot's choices): {rates or 'not recorded'}.", "",
                  "| labelled | updates (most) | " + " | ".join(arms) + " | pretrained - scratch | Naive Bayes | "
                  "logistic regression |", "|---|---|" + "---|" * (len(arms) + 3)]
        for size in _sizes(body_rows):
            n = max(r["n_labels"] for r in body_rows if r["size"] == size)
            upd = max(r["updates"] for r in body_rows if r["size"] == size)
            accs = " | ".join(t_interval(accuracy_by_seed(rows, body, a, size).values()).fmt(3) for a in arms)
            diff = t_interval(_difference(rows, body, size))
            base = baseline_accuracy(rows, size)
            counted = " | ".join(f"{base[m]:.3f}" if m in base else "-" for m in ("naive_bayes", "logistic"))
            lines.append(f"| {n} | {upd} | {accs} | {diff.fmt(3)} | {counted} |")
        lines.append("")
    if lms:
        lines += ["Language models: NLL per token (nats, EOS counted, UNK not scored) of the MR test sentences, "
                  "mean and interval over the verdict seeds: untrained -> after pretraining -> after adaptation to "
                  "MR; uniform is the NLL of a model that knows nothing (log of the tokens it can produce). "
                  "Pretraining runs to its target "
                  "NLL on held-out general sentences or to its cap; adaptation stops early on MR's validation "
                  "sentences.", ""]
        for body in sorted({r["body"] for r in lms}):
            for init in ("general", "none"):
                b = [r for r in lms if r["body"] == body and r.get("init", "general") == init]
                if not b:
                    continue
                keys = ("init", "pretrained", "adapted") if init == "general" else ("init", "adapted")
                parts = [t_interval(r["nll_mr_test"].get(k) for r in b).fmt(3) for k in keys]
                upd = b[0]["updates"]
                what = "pretrained + adapted" if init == "general" else "adapt_only"
                said = f"{upd.get('adapt', 0)} adaptation updates"
                if init == "general" and b[0].get("stages", {}).get("pretrain"):
                    stops = [r["stages"]["pretrain"] for r in b]
                    reached = [s["val_nll"] for s in stops if s["val_nll"] is not None]
                    said = (f"pretraining to general validation NLL {stops[0]['target_nll']:g}: reached "
                            f"{', '.join(f'{v:.2f}' for v in reached)} after "
                            f"{', '.join(str(r['updates']['pretrain']) for r in b)} updates (stopped by "
                            f"{', '.join(s['stop'] for s in stops)}); " + said)
                lines.append(f"- {body}, {what} ({b[0]['num_parameters']:,} body parameters; {said}; uniform "
                             f"{b[0].get('uniform_nll', math.nan):.2f}): {' -> '.join(parts)}")
        lines += ["", "The NLL after pretraining measures how far the general corpus (image captions) is from movie "
                  "reviews; adaptation is the recipe's step for closing that gap.", ""]
    cpu = sum(float(r.get("cpu_time_s", math.nan)) for r in rows)
    if math.isfinite(cpu):
        lines += [f"Compute: {cpu / 60:.1f} CPU-minutes over all runs (one torch thread each).", ""]
    path = plot_accuracy(rows, out / "transfer_accuracy.png")
    figures["transfer_accuracy"] = path
    lines += [f"![accuracy against labelled-set size]({path.name})", ""]
    return lines, figures


def plot_accuracy(rows: list[dict], path: Path) -> Path:
    """Accuracy against labelled examples (log axis), one panel per body, both arms with seed intervals."""
    from matplotlib.figure import Figure

    clf = _classifier_rows(rows)
    bodies = sorted({r["body"] for r in clf})
    fig = Figure(figsize=(5 * len(bodies), 3.8))
    axes = fig.subplots(1, len(bodies), squeeze=False)[0]
    for ax, body in zip(axes, bodies):
        body_rows = [r for r in clf if r["body"] == body]
        for arm, colour in zip(ARMS, ("tab:blue", "tab:green", "tab:orange")):
            xs, means, lows, highs = [], [], [], []
            for size in _sizes(body_rows):
                iv = t_interval(accuracy_by_seed(rows, body, arm, size).values())
                if iv.n == 0:
                    continue
                xs.append(max(r["n_labels"] for r in body_rows if r["size"] == size))
                means.append(iv.mean)
                lows.append(iv.low if iv.defined else iv.mean)
                highs.append(iv.high if iv.defined else iv.mean)
            ax.plot(xs, means, "o-", color=colour, label=arm)
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.2)
        ax.axhline(body_rows[0]["majority_accuracy"], color="grey", ls="--", lw=1, label="majority class")
        ax.set_xscale("log")
        ax.set_xlabel("labelled training sentences")
        ax.set_ylabel("MR test accuracy")
        ax.set_title(body)
        ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=100)
