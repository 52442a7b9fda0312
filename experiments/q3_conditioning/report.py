"""Q3's part of the report: the conditioning ablation's probes per model, condition and strength."""

from __future__ import annotations

from pathlib import Path

from experiments.core.baselines import j_score, references_of
from experiments.core.stats import t_interval
from experiments.core.verdicts import Verdict
from experiments.q3_conditioning.plots import variant_label

SECTIONS = {"Q3": ("mi", "Q3: does the output depend on the condition?"),  # question -> (figure, title)
            "Q3z": (None, "Q3 (z): does a GAN's output depend on z?")}


def before_figure(v: Verdict) -> list[str]:
    return []


def after_figure(v: Verdict, rows: list[dict], figures: dict[str, Path]) -> list[str]:
    if v.question != "Q3":
        return []
    return ablation_table(rows) + [""] + [
        "Own I(c; y): H(c) + E[log q(c | y)] with the model's own likelihood over model samples (exact "
        "marginal over the K classes for labels; InfoNCE over the true and contrast sources for sources; "
        "for a GAN with z, at the z each sample was drawn with). The data's I(c; y) is the oracle's, "
        "`true_mutual_information()`, with the same estimator. The oracle's bound on samples, "
        "H(c) + E[log p_oracle(c | y)], lower-bounds the model's MI and is high only when the samples carry "
        "the condition the way the data do (very negative when the oracle confidently attributes them to "
        "other conditions). Changes are token Hamming distances between paired samples drawn with common "
        "random numbers.", ""]


def ablation_table(rows: list[dict]) -> list[str]:
    abl = [r for r in rows if r["kind"] == "ablation" and "probes" in r]
    if not abl:
        return []
    lines = ["| model | condition | strength | J | own I(c; y) (nats) | data's I(c; y) | dependence (own / data's) | "
             "oracle's bound on samples (a bound, not the model's MI) | accuracy (chance, oracle) | "
             "change: noise / z / condition | swap follow / stick |",
             "|---|---|---:|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in abl:
        k = (variant_label(r), r["condition"], r.get("condition_strength"))
        if k not in keys:
            keys.append(k)
    for variant, cond, strength in keys:
        rs = [r for r in abl if (variant_label(r), r["condition"], r.get("condition_strength")) == (variant, cond, strength)]
        p = lambda k: t_interval([r["probes"].get(k) for r in rs])  # noqa: E731
        chance, oracle_acc = p("chance_accuracy").mean, p("oracle_accuracy").mean
        lines.append(
            f"| {variant} | {cond} | {strength if strength is not None else '-'} | "
            f"{t_interval(j_score(r) for r in rs).fmt(3)} | {p('mi_self').fmt(3)} | "
            f"{p('mi_oracle').fmt(3)} | {p('mi_self_fraction').fmt(3)} | {p('mi_model').fmt(3)} | "
            f"{p('accuracy').fmt(3)} ({chance:.2f}, {oracle_acc:.2f}) | "
            f"{p('change_noise').mean:.2f} / {p('change_z').mean:.2f} / {p('change_condition').mean:.2f} | "
            f"{p('swap_follow').mean:.2f} / {p('swap_stick').mean:.2f} |")
    for ref in references_of(abl):
        args = ref.get("data", {}).get("init_args", {})
        where = f"{args.get('condition', 'none')}, strength {args.get('condition_strength', '-')}"
        for b in (ref["unigram"], ref["bigram"]):
            lines.append(f"| *{b['name']} (counted, ignores the condition)* | {where} | | {b['j']:.3f} | 0 | | 0 | | "
                         "| | |")
    return lines
