"""Q3's figure: own mutual information against the data's, per family and setting."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from experiments.core.plots import _color, _plt, save_figure
from experiments.core.stats import t_interval


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
    return save_figure(fig, path)
