"""Q1's figure: each player's training loss curves (smoothed, mean over seeds) per family and batch size."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from experiments.core import verdicts as V
from experiments.core.plots import _plt, save_figure
from experiments.core.stats import finite


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
    return save_figure(fig, path, rect=(0, 0.04, 1, 1))
