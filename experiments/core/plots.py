"""Every figure of the package: the report's plots (experiments/core/report.py) and the quality-diversity curves of
`gvt temperature`, each a PNG written to the path given (matplotlib's Agg backend, no display needed).

matplotlib is imported inside ``_plt()``, when a figure is drawn: the report's tables, the verdicts and the worker
processes never pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from experiments.core import verdicts as V
from experiments.core.baselines import learning, references_of
from experiments.core.families import get_arg
from experiments.core.stats import finite, t_interval
from experiments.q4_temperature.temperature import quality_diversity_axes

COLORS = {"transformer": "#1f77b4", "gan-gumbel": "#d62728", "gan-reinforce": "#2ca02c",
          "gan-gumbel-lstm": "#ff7f0e", "gan-reinforce-lstm": "#9467bd", "gan-frozen-d": "#7f7f7f",
          "gan-gumbel-pt": "#e377c2", "gan-reinforce-pt": "#bcbd22", "mle-continued": "#17becf", "hand-over": "k"}


def _color(name: str, i: int = 0) -> str:
    base = name.split(" ")[0]
    return COLORS.get(base, f"C{(i + 3) % 10}")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 110})
    return plt


def _band(ax, xs, ivs, color, label):
    means = [iv.mean for iv in ivs]
    ax.plot(xs, means, "o-", color=color, label=label, lw=1.6, ms=4)
    lo = [iv.low if iv.defined else iv.mean for iv in ivs]
    hi = [iv.high if iv.defined else iv.mean for iv in ivs]
    ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)


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
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _mean_curve(curves: list[list[dict]], key: str) -> tuple[list[float], list[float]]:
    by_update: dict[float, list[float]] = {}
    for curve in curves:
        for p in curve:
            if finite(p.get(key)):
                by_update.setdefault(p["update"], []).append(p[key])
    xs = sorted(by_update)
    return xs, [sum(by_update[x]) / len(by_update[x]) for x in xs]


def _smooth(ys: list[float], points: int = 60) -> list[float]:
    """Centred moving average leaving about ``points`` independent values: a batch-size-1 curve is mostly noise
    at full resolution. Display only; the verdicts use the raw curves."""
    w = len(ys) // points
    if w < 2:
        return ys
    out = []
    for i in range(len(ys)):
        window = ys[max(0, i - w // 2): i + w // 2 + 1]
        out.append(sum(window) / len(window))
    return out


def plot_losses(rows: list[dict], curves: dict[str, list[dict]], path: Path, batch_sizes: list[int]) -> Optional[Path]:
    sweep = [r for r in rows if r["kind"] == "sweep" and r["key"] in curves]
    families = V.families_of(sweep)
    batch_sizes = [b for b in batch_sizes if any(r["batch_size"] == b for r in sweep)]
    if not families or not batch_sizes:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(families), len(batch_sizes), figsize=(5.2 * len(batch_sizes), 2.7 * len(families)),
                             squeeze=False)
    for i, fam in enumerate(families):
        for j, b in enumerate(batch_sizes):
            ax = axes[i][j]
            group = [curves[r["key"]] for r in V._by(sweep, family=fam, batch_size=b)]
            if not group:
                ax.axis("off")
                continue
            adversarial = any("train/g_loss" in p for c in group for p in c)
            keys = [("train/g_loss", "G loss", "#d62728"), ("train/d_loss", "D loss", "#1f77b4")] if adversarial \
                else [("train/loss", "MLE loss (the one loss)", "#1f77b4")]
            for key, label, color in keys:
                for c in group:  # each seed, faint
                    xs, ys = _mean_curve([c], key)
                    ax.plot(xs, _smooth(ys), color=color, alpha=0.2, lw=0.8)
                xs, ys = _mean_curve(group, key)
                ax.plot(xs, _smooth(ys), color=color, lw=1.6, label=label)
            if adversarial:
                ax2 = ax.twinx()
                for key, label, color in (("train/d_acc_real", "D acc real", "0.35"), ("train/d_acc_fake", "D acc fake", "0.65")):
                    xs, ys = _mean_curve(group, key)
                    ax2.plot(xs, _smooth(ys), color=color, ls="--", lw=1, label=label)
                ax2.set_ylim(-0.05, 1.05)
                ax2.set_ylabel("D accuracy", fontsize=8)
            ax.set_title(f"{fam}, batch size {b} ({len(group)} seeds)")
            ax.set_xlabel("generator updates")
            ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D  # matplotlib loads with the first figure (see _plt)

    handles = [Line2D([], [], color="#1f77b4", lw=1.6, label="MLE loss (MLE rows) / D loss (GAN rows)"),
               Line2D([], [], color="#d62728", lw=1.6, label="G loss"),
               Line2D([], [], color="0.35", ls="--", label="D accuracy on real (right axis)"),
               Line2D([], [], color="0.65", ls="--", label="D accuracy on fake (right axis)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Q1: two losses in a game (G and D) beside one cooperative loss (MLE)\n"
                 "thick: mean over seeds (moving average on long curves); faint: each seed", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def variant_label(r: dict) -> str:
    return r["family"] + (f" z{r['z_dim']}" if r.get("adversarial") else "")


def plot_mi(rows: list[dict], path: Path) -> Optional[Path]:
    abl = [r for r in rows if r["kind"] == "ablation" and "probes" in r]
    if not abl:
        return None
    plt = _plt()
    variants = []
    for r in abl:
        if variant_label(r) not in variants:
            variants.append(variant_label(r))
    settings = sorted({(r["condition"], r.get("condition_strength")) for r in abl if r["condition"] != "none"}, key=str)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / max(1, len(variants))
    for panel, (key, title) in enumerate((("mi_self", "model's own I(c; y) (nats); black: the data's"),
                                          ("accuracy", "condition accuracy (oracle's argmax = c)"))):
        ax = axes[panel]
        for k, (cond, strength) in enumerate(settings):
            rs = [r for r in abl if (r["condition"], r.get("condition_strength")) == (cond, strength)]
            ref_key = "mi_oracle" if key == "mi_self" else "oracle_accuracy"
            ref = t_interval([r["probes"].get(ref_key) for r in rs]).mean
            ax.hlines(ref, k - 0.42, k + 0.42, color="k", lw=1.5, label="oracle" if k == 0 else None)
            if key == "accuracy":
                chance = t_interval([r["probes"].get("chance_accuracy") for r in rs]).mean
                ax.hlines(chance, k - 0.42, k + 0.42, color="0.5", ls=":", lw=1.2, label="chance" if k == 0 else None)
            for v, name in enumerate(variants):
                iv = t_interval([r["probes"].get(key) for r in rs if variant_label(r) == name])
                if iv.n == 0:
                    continue
                x = k - 0.4 + width * (v + 0.5)
                hatched = " z" in name and not name.endswith(" z0")
                ax.bar(x, iv.mean, width, color=_color(name, v), hatch="//" if hatched else None,
                       label=name if k == 0 else None, edgecolor="k", lw=0.3)
                if iv.defined:
                    ax.errorbar(x, iv.mean, yerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt="none", ecolor="k",
                                capsize=2, lw=0.8)
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels([f"{c}\nstrength {s}" for c, s in settings])
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7, loc="upper left")
    ax = axes[2]
    measures = [("change_noise", "sampling noise only"), ("change_z", "z only"), ("change_condition", "condition only"),
                ("swap_follow", "swap: follows new c")]
    width = 0.8 / len(measures)
    from matplotlib.patches import Patch  # matplotlib loads with the first figure (see _plt)

    for m, (key, label) in enumerate(measures):
        for v, name in enumerate(variants):
            iv = t_interval([r["probes"].get(key) for r in abl if variant_label(r) == name])
            if iv.n == 0:
                continue
            x = v - 0.4 + width * (m + 0.5)
            ax.bar(x, iv.mean, width, color=f"C{m + 4}")
            if iv.defined:  # fractions: the interval is shown within [0, 1]
                lo, hi = max(0.0, iv.low), min(1.0, iv.high)
                ax.errorbar(x, iv.mean, yerr=[[max(0.0, iv.mean - lo)], [max(0.0, hi - iv.mean)]], fmt="none",
                            ecolor="k", capsize=2, lw=0.8)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels([v.replace(" ", "\n") for v in variants], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("output change (Hamming, paired samples) and swap-following rate")
    ax.legend(handles=[Patch(color=f"C{m + 4}", label=label) for m, (_, label) in enumerate(measures)],
              fontsize=7, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Q3: how much the output depends on the condition and on z (conditional oracles; 95% t-intervals)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_quality_diversity(curves: dict[str, list[list[dict]]], path: Path,
                           reference: Optional[dict] = None) -> Optional[Path]:
    """One curve per label (family) across temperatures: each seed faint, the mean over seeds bold; on oracle
    data with ``reference`` (the counted baselines), the tempered unigram's curve and the bigram's point too."""
    curves = {k: [c for c in v if c] for k, v in curves.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    plt = _plt()
    first = next(iter(curves.values()))[0]
    xk, yk, kind = quality_diversity_axes(first)
    fig, ax = plt.subplots(figsize=(6.8, 5))
    for i, (label, group) in enumerate(curves.items()):
        color = _color(label, i)
        for c in group:
            ax.plot([p[xk] for p in c], [p[yk] for p in c], color=color, alpha=0.25, lw=0.8)
        temps = sorted({p["temperature"] for c in group for p in c})
        mx = [sum(p[xk] for c in group for p in c if p["temperature"] == t) /
              sum(1 for c in group for p in c if p["temperature"] == t) for t in temps]
        my = [sum(p[yk] for c in group for p in c if p["temperature"] == t) /
              sum(1 for c in group for p in c if p["temperature"] == t) for t in temps]
        ax.plot(mx, my, "o-", color=color, lw=1.8, ms=4, label=f"{label} ({len(group)} seeds)")
        for t, x, y in zip(temps, mx, my):
            ax.annotate(f"{t:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color=color)
            if t == 1.0:
                ax.plot([x], [y], "s", color=color, ms=8, mfc="none")
    if kind == "oracle" and reference:
        uni = reference.get("unigram_tempered") or []
        if uni:
            ax.plot([p["nll_test_per_token"] for p in uni], [p["nll_oracle_per_token"] for p in uni], "--",
                    color="0.45", lw=1.2, label="counted unigram across T (floor)")
            for p in uni:
                ax.annotate(f"{p['temperature']:g}", (p["nll_test_per_token"], p["nll_oracle_per_token"]),
                            textcoords="offset points", xytext=(4, -8), fontsize=6, color="0.45")
        bi = reference["bigram"]
        ax.plot([bi["nll_test_per_token"]], [bi["nll_oracle_per_token"]], "D", color="0.25", ms=6,
                label="counted bigram (T = 1)")
    if kind == "oracle":
        ax.set_xlabel("NLL_test per token (coverage; lower is better)")
        ax.set_ylabel("NLL_oracle per token (quality; lower is better)")
    else:
        ax.set_xlabel(f"{xk} (lower is more diverse)")
        ax.set_ylabel(f"{yk} (higher is better)")
    ax.set_title("Quality vs diversity across temperatures (labels: T; square: T = 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---- pretrained arms: did the adversarial phase help or hurt? ------------------------------------------------

def plot_handover_curves(rows: list[dict], temperature_of, path: Path) -> Optional[Path]:
    """The pretrained arms' temperature curves beside their hand-over model's (the pretrain runs)."""
    by_key = {r["key"]: r for r in rows}
    arms = [r for r in rows if r.get("kind") == "pretrained-arm" and r.get("init_from") in by_key]
    handovers = [by_key[k] for k in dict.fromkeys(r["init_from"] for r in arms)]
    curves = {"hand-over (pretrain)": [temperature_of(r) for r in handovers]}
    for fam in V.families_of(arms):
        curves[fam] = [temperature_of(r) for r in arms if r["family"] == fam and temperature_of(r)]
    if not any(curves[fam] for fam in curves if fam != "hand-over (pretrain)"):
        return None
    return plot_quality_diversity(curves, path)




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
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
