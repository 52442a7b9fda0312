"""Q2's figures: the final metrics against batch size, the gradient noise scale, and the pretrained arms'
dose-response (learning against batch size at equal samples and at equal updates)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from experiments.core import verdicts as V
from experiments.core.baselines import learning, references_of
from experiments.core.families import get_arg
from experiments.core.plots import _band, _color, _plt, save_figure
from experiments.core.stats import finite, t_interval


def plot_metrics_vs_batch(rows: list[dict], path: Path) -> Optional[Path]:
    sweep = [r for r in rows if r["kind"] == "sweep"]
    if not sweep:
        return None
    plt = _plt()
    oracle = any(finite(get_arg(r, "final.nll_oracle_per_token")) for r in sweep)
    n = 3 if any("bleu3" in r.get("final", {}) for r in sweep) else 2
    panels = []
    if oracle:
        panels.append(("final.nll_oracle_per_token", "NLL_oracle / token (quality; lower is better)", "init.nll_oracle_per_token"))
    panels += [("final.nll_test_per_token", "NLL_test / token (coverage; lower is better)", "init.nll_test_per_token"),
               (f"final.bleu{n}", f"BLEU-{n} vs test set (higher is better)", None),
               (f"final.self_bleu{n}", f"Self-BLEU-{n} (lower is more diverse)", None),
               ("final.distinct2", "distinct-2 of samples (higher is more diverse)", None),
               ("failure", "diverged or collapsed (fraction of seeds)", None)]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.2))
    families = V.families_of(sweep)
    sizes = sorted({r["batch_size"] for r in sweep})
    for ax, (key, title, init_key) in zip(axes.flat, panels):
        for i, fam in enumerate(families):
            xs, ivs = [], []
            for b in sizes:
                rs = V._by(sweep, family=fam, batch_size=b)
                if not rs:
                    continue
                if key == "failure":
                    rate = V.failure_rate(rs)
                    ivs.append(t_interval([rate]))
                else:
                    ivs.append(t_interval([get_arg(r, key) for r in rs]))
                xs.append(b)
            if xs:
                _band(ax, xs, ivs, _color(fam, i), fam)
        if init_key:
            init = t_interval([get_arg(r, init_key) for r in sweep])
            if finite(init.mean):
                ax.axhline(init.mean, color="0.5", ls=":", lw=1, label="untrained")
            base = key.split(".", 1)[1]
            for ref in references_of(sweep)[:1]:
                for b, ls in ((ref["unigram"], "--"), (ref["bigram"], "-.")):
                    ax.axhline(b[base], color="0.3", ls=ls, lw=1, label=f"counted {b['name']}")
        if key == "failure":
            ax.set_ylim(-0.05, 1.05)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlabel("batch size")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(loc="best", fontsize=8)
    budget = sweep[0].get("budget_kind"), sweep[0].get("budget_value")
    fig.suptitle(f"Final metrics vs batch size at an equal budget ({budget[1]} {budget[0]}); "
                 "mean and 95% t-interval over seeds", fontsize=11)
    return save_figure(fig, path)


def plot_noise(table, path: Path) -> Optional[Path]:
    if not table:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for i, (fam, loss, iv) in enumerate(table):
        if not (finite(iv.mean) and iv.mean > 0):
            ax.annotate("not measurable", (i, 1), ha="center", fontsize=7)
            continue
        marker = "o" if loss == "generator" else "s"
        yerr = [[iv.mean - iv.low], [iv.high - iv.mean]] if iv.defined else None
        ax.errorbar([i], [iv.mean], yerr=yerr, fmt=marker, color=_color(fam, i), ms=7, capsize=4, lw=1.2)
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels([f"{fam}\n{loss}" for fam, loss, _ in table], fontsize=8)
    ax.set_xlim(-0.6, len(table) - 0.4)
    ax.set_yscale("log")
    ax.set_ylabel("B_simple = tr(Sigma) / |G|^2")
    ax.set_title("Gradient noise scale (critical batch size) per family and loss\n"
                 "geometric mean over seeds, 95% interval (circle: generator loss, square: discriminator loss)")
    ax.grid(alpha=0.3, axis="y", which="both")
    return save_figure(fig, path)


def plot_dose_response(rows: list[dict], path: Path) -> Optional[Path]:
    """Q2's dose-response: each pretrained arm's learning (drop in J from its start, nats/token) against batch size,
    at an equal sample budget (kind ``pretrained-arm``) and at an equal number of updates (kind
    ``equal-updates``, with the reference batch size's own arm, which has those updates by definition)."""
    arms = [r for r in rows if r.get("kind") == "pretrained-arm"]
    equal = [r for r in rows if r.get("kind") == "equal-updates"]
    if len({r["batch_size"] for r in arms}) < 2:
        return None
    refs = {r.get("equal_updates_of") for r in equal}
    panels = [("equal samples", arms, "pretrained-arm runs: the same samples at every batch size")]
    if equal:
        panels.append(("equal updates", equal + [r for r in arms if r["batch_size"] in refs],
                       "equal-update runs: the reference batch size's number of updates"))
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    for ax, (name, group, title) in zip(axes[0], panels):
        sizes = sorted({r["batch_size"] for r in group})
        for i, fam in enumerate(V.families_of(group)):
            xs, ivs = [], []
            for b in sizes:
                iv = t_interval(learning(r) for r in V._by(group, family=fam, batch_size=b))
                if iv.n:
                    xs.append(b)
                    ivs.append(iv)
            if xs:
                _band(ax, xs, ivs, _color(fam, i), fam)
        ax.axhline(0.0, color="0.3", ls=":", lw=1, label="no learning")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(b) for b in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("learning: drop in J from the start (nats/token)")
        ax.set_title(f"{name}: {title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle("Q2 dose-response: learning from the shared MLE checkpoint against batch size "
                 "(mean, 95% t-interval over seeds)", fontsize=10)
    return save_figure(fig, path)
