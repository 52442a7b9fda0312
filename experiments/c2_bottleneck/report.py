"""C2's report section and its figures (each metric against source length, per family and data set)."""

from __future__ import annotations

from pathlib import Path

from experiments.c2_bottleneck import pilot as P
from experiments.c2_bottleneck.settings import DATASETS
from experiments.c2_bottleneck.verdict import (_bucket_order, _rows, _stopping_lines, at_length, bucket_metric,
                                               families_in, lengths_of)
from experiments.core.stats import t_interval
from experiments.core.verdicts import per_seed
from experiments.core.plots import save_figure


# ---- the report section --------------------------------------------------------------------------------------


METRICS = {  # data set -> (row field, label, higher is better)
    "reverse": [("token_accuracy", "token accuracy", True), ("exact_match", "exact match", True)],
    "oracle": [("excess_nll_per_token", "NLL_test - H (nats/token)", False),
               ("nll_oracle_per_token", "NLL_oracle (nats/token)", False)],
    "multi30k": [("bleu4", "BLEU-4", True), ("nll_test_per_token", "NLL_test (nats/token)", False)],
}


def _points(rows: list[dict], dataset: str, family: str, name: str) -> list[tuple[str, object]]:
    """(x label, interval over seeds) along source length (or bucket for Multi30k)."""
    frows = _rows(rows, dataset=dataset, family=family)
    if dataset == "multi30k":
        return [(b, t_interval(per_seed(frows, bucket_metric(b, name)).values())) for b in _bucket_order(frows)]
    return [(str(n), t_interval(list(at_length(frows, dataset, family, n, name).values())))
            for n in lengths_of(frows, dataset)]


def plot_dataset(rows: list[dict], dataset: str, path: Path) -> Path:
    """Quality against source length per family (mean over seeds, bars: the 95% t-interval)."""
    from matplotlib.figure import Figure

    metrics = METRICS[dataset]
    fig = Figure(figsize=(5.0 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (name, label, _) in zip(axes, metrics):
        for family in families_in(_rows(rows, dataset=dataset)):
            points = _points(rows, dataset, family, name)
            xs = list(range(len(points)))
            means = [iv.mean for _, iv in points]
            err = [[iv.mean - iv.low if iv.defined else 0.0 for _, iv in points],
                   [iv.high - iv.mean if iv.defined else 0.0 for _, iv in points]]
            ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, label=family)
            ax.set_xticks(xs, [x for x, _ in points])
        ax.set_xlabel("source bucket (tokens)" if dataset == "multi30k" else "source length")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"C2, {dataset}: quality against source length (mean over seeds, 95% interval)", fontsize=9)
    return save_figure(fig, path, dpi=100)


def _table(rows: list[dict], dataset: str, name: str, label: str) -> list[str]:
    families = families_in(_rows(rows, dataset=dataset))
    columns = [x for x, _ in _points(rows, dataset, families[0], name)] if families else []
    head = "source bucket (tokens)" if dataset == "multi30k" else "source length"
    lines = [f"{label} by {head}:", "", "| family | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for family in families:
        lines.append(f"| {family} | " + " | ".join(iv.fmt(3) for _, iv in _points(rows, dataset, family, name))
                     + " |")
    return lines + [""]


def report_section(rows: list[dict], out: Path) -> tuple[list[str], dict[str, Path]]:
    """The C2 section (tables with seed intervals, what the numbers mean) and its figures, written into ``out``;
    never the verdict table itself."""
    out = Path(out)
    pilot = P.pilot_rows(rows)
    rows = [r for r in rows if r.get("kind") == "bottleneck"]
    lines = ["## C2: the context vector is the bottleneck; attention removes it", ""]
    if not rows:
        return lines + ["not run: no bottleneck runs (`gvt ablate bottleneck`)", ""], {}
    lines += ["Each family at its own learning rate (the pilot's choice, below) and otherwise the same optimiser "
              "settings, batch size and seeds. On reverse one model per family and seed is trained on every "
              "length of the range (uniform) to convergence on validation (greedy token accuracy of the mixed-"
              "length validation split; early stopping with patience, under a cap in updates; the best check's "
              "weights are tested) and tested on one test set per length; the oracle and Multi30k keep fixed "
              "budgets. Every cell is the mean over seeds with its 95% t-interval over seeds (n = seeds).", ""]
    lines += P.pilot_lines(pilot, families_in(rows))
    stopping = _stopping_lines(rows)
    if stopping:
        lines += ["Early stopping on reverse (updates at which each seed's run stopped, and its best check):", "",
                  *stopping, ""]
    params = {f: sorted({r["num_parameters"] for r in _rows(rows, family=f, dataset="reverse")
                         if "num_parameters" in r})
              for f in families_in(rows)}
    if any(params.values()):
        lines += ["Parameters on the reverse task: " + ", ".join(f"{f} {'/'.join(str(p) for p in v)}"
                                                              for f, v in params.items() if v) + ".", ""]
    figures = {}
    notes = {
        "reverse": "Reverse task, one model per family and seed trained on mixed lengths, tested per length "
                   "bucket (sources of exactly that length, none seen in training), greedy decoding: token "
                   "accuracy = share of the target's words and end token right at their position; exact match = "
                   "whole output right. Chance token accuracy is about 1 / number of words.",
        "oracle": "Source-conditioned oracle: NLL_test - H = the model's NLL of held-out targets minus the "
                  "oracle's own entropy per token (its KL to the oracle per token; the entropy changes with the "
                  "source length, the excess is comparable); NLL_oracle = the oracle's NLL of the model's samples.",
        "multi30k": "Multi30k de->en, test split bucketed by source length in BPE tokens: corpus BLEU-4 of greedy "
                    "translations (whitespace words of the detokenized text, not sacreBLEU's tokenization) and "
                    "NLL_test per token.",
    }
    for dataset in DATASETS:
        drows = _rows(rows, dataset=dataset)
        if not drows:
            lines += [f"### {dataset}", "", "not run in this folder", ""]
            continue
        lines += [f"### {dataset}", "", notes[dataset], ""]
        if dataset == "multi30k":
            counts = {b: drows[0]["buckets"][b].get("num_test") for b in _bucket_order(drows)}
            lines += ["Test pairs per bucket: " + ", ".join(f"{b}: {n}" for b, n in counts.items()) + ".", ""]
        for name, label, _ in METRICS[dataset]:
            lines += _table(rows, dataset, name, label)
        figures[f"bottleneck_{dataset}"] = plot_dataset(rows, dataset, out / f"bottleneck_{dataset}.png")
        lines += [f"![{dataset}](bottleneck_{dataset}.png)", ""]
    wall = sum(r.get("wall_time_s", 0.0) for r in rows + pilot)
    cpu = sum(r.get("cpu_time_s", 0.0) for r in rows + pilot)
    lines += [f"{len(rows)} runs and {len(pilot)} pilot runs, {wall / 60:.1f} min of run time in all (summed over "
              "workers)" + (f", {cpu / 60:.1f} min of CPU time." if cpu else "."), ""]
    return lines, figures
