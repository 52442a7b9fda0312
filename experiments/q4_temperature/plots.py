"""Q4's figures: quality-diversity curves across temperatures (the report's and `gvt temperature`'s), and the
pretrained arms' curves beside their hand-over model's."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from experiments.core import verdicts as V
from experiments.core.plots import _color, _plt, save_figure
from experiments.q4_temperature.temperature import quality_diversity_axes


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
    return save_figure(fig, path)


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
