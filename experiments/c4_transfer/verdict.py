"""C4's verdict: accuracy of the pretrained classifier minus the one trained from scratch at the primary label count,
per body, gated on both beating the counted baselines (experiments.c4_transfer.baselines)."""

from __future__ import annotations

import math
from typing import Optional

from experiments.c4_transfer.settings import ALL, CLAIM, GATED_ARMS, QUESTION, SESOI
from experiments.core.stats import t_interval
from experiments.core.verdicts import Cell, Verdict, VerdictSettings, _not_run, _standard


# ---- verdict -------------------------------------------------------------------------------------------------


def _classifier_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("kind") == "classifier"]


def _sizes(rows: list[dict]) -> list[str]:
    """Size labels in increasing order of labelled examples (``all`` last)."""
    order = {}
    for r in rows:
        order[r["size"]] = max(order.get(r["size"], 0), r["n_labels"])
    return sorted(order, key=lambda s: (s == ALL, order[s]))


def accuracy_by_seed(rows: list[dict], body: str, arm: str, size: str) -> dict[int, float]:
    return {r["seed"]: float(r["accuracy"]) for r in _classifier_rows(rows)
            if r["body"] == body and r["arm"] == arm and r["size"] == size and math.isfinite(r["accuracy"])}


def _difference(rows, body, size, arm: str = "pretrained", other: str = "scratch") -> list[float]:
    """Per seed (paired), accuracy(arm) - accuracy(other)."""
    pre, scr = accuracy_by_seed(rows, body, arm, size), accuracy_by_seed(rows, body, other, size)
    return [pre[s] - scr[s] for s in sorted(pre) if s in scr]


def labels_to_match(rows: list[dict], body: str, primary: str) -> dict[int, Optional[str]]:
    """Per seed: the smallest labelled size at which scratch reaches the pretrained classifier's accuracy at
    ``primary`` (None: not at any size run). Descriptive."""
    target = accuracy_by_seed(rows, body, "pretrained", primary)
    out = {}
    for seed, goal in sorted(target.items()):
        out[seed] = None
        for size in _sizes(_classifier_rows(rows)):
            acc = accuracy_by_seed(rows, body, "scratch", size).get(seed)
            if acc is not None and acc >= goal:
                out[seed] = size
                break
    return out


def baseline_accuracy(rows: list[dict], size: str) -> dict[str, float]:
    """The counted baselines' mean accuracy over seeds at ``size``, per method (``transfer_baselines``)."""
    by_method: dict[str, list[float]] = {}
    for r in rows:
        if r.get("kind") == "baseline" and r["size"] == size:
            by_method.setdefault(r["method"], []).append(float(r["accuracy"]))
    return {m: sum(v) / len(v) for m, v in sorted(by_method.items())}


def baseline_gate(rows: list[dict], body: str, largest: str, alpha: float) -> tuple[list[str], str]:
    """C4's gate: at the largest labelled size both arms of the primary cell (``GATED_ARMS``: pretrained and
    scratch) have t intervals over seeds above the best counted baseline's mean accuracy there. -> (the reasons it fails, empty if it holds; the text saying it holds). Every
    margin (arm mean - baseline, interval low - baseline) is printed either way."""
    baselines = baseline_accuracy(rows, largest)
    if not baselines:
        return [f"no counted baseline rows at {largest} labels (the gate cannot be checked)"], ""
    method, best = max(baselines.items(), key=lambda kv: kv[1])
    reasons, margins = [], []
    for arm in GATED_ARMS:
        iv = t_interval(accuracy_by_seed(rows, body, arm, largest).values(), 1.0 - alpha)
        margin = (f"{arm} {iv.fmt(3)}, margin {iv.mean - best:+.3f} (interval low {iv.low - best:+.3f})"
                  if iv.defined else f"{arm} {iv.fmt(3)}")
        margins.append(margin)
        if not (iv.defined and iv.low > best):
            reasons.append(f"{margin} does not lie above the best counted baseline ({method} {best:.3f}) at "
                           f"{largest} labels")
    said = ", ".join(f"{m} {a:.3f}" for m, a in baselines.items())
    return reasons, f"both arms beat the counted baselines ({said}) at {largest} labels: {'; '.join(margins)}"


def verdict(rows: list[dict], *, alpha: float = 0.05, min_seeds: int = 3) -> Verdict:
    """Verdict C4 (module docstring) from the ablation's rows, by ``experiments.core.verdicts``' one rule."""
    settings = VerdictSettings(alpha=alpha, min_seeds=min_seeds)
    clf = _classifier_rows(rows)
    body = clf[0].get("primary_body", "lstm") if clf else "lstm"
    size = str(clf[0].get("primary_size", 100)) if clf else "100"
    margin = SESOI
    rule_text = (f"Per seed, on the {body} body: accuracy on the fixed MR test split of the pretrained-and-adapted "
                 f"classifier minus the same classifier trained from scratch (same seed, labelled subset, budget and "
                 f"optimiser), at {size} labelled examples; paired by seed, SESOI {margin} accuracy. Precondition: at "
                 f"the largest labelled size both arms beat the counted baselines (multinomial Naive Bayes and "
                 f"logistic regression on bags of words: each arm's interval over seeds lies above the better "
                 f"baseline's mean accuracy). Fine-tuning: ULMFiT's recipe for the arms with a language model, each "
                 f"arm's peak learning rate chosen by a pilot on its own seed. Secondary: the same difference at every "
                 f"other size; the adaptation-only arm against scratch and against pretrained at {size}; and "
                 f"(descriptive) the labels scratch needs to reach the pretrained accuracy at {size}.")
    primary = f"difference_n{size}"
    body_rows = [r for r in clf if r["body"] == body]
    sizes = _sizes(body_rows)
    cells: dict[str, Cell] = {}
    gate = None
    if not body_rows or size not in sizes or not _difference(rows, body, size):
        gate = f"not run: no paired {body} classifier rows at {size} labelled examples"
        cells[primary] = _not_run(f"acc(pretrained) - acc(scratch) at {size} labels", gate, margin)
    else:
        cells[primary] = Cell(f"acc(pretrained) - acc(scratch) at {size} labels, {body}", _difference(rows, body, size),
                              margin)
        largest = sizes[-1]
        reasons, met_text = baseline_gate(rows, body, largest, alpha)
        met = not reasons
        cells[primary].precondition_met = met
        cells[primary].precondition = met_text if met else "; ".join(reasons)
        if not met:
            gate = "precondition failed: " + "; ".join(reasons) + " (a classifier that does not beat counting words)"
    if _difference(rows, body, size, "adapt_only", "scratch"):  # what each stage of the recipe adds, descriptive
        cells[f"adapt_only_minus_scratch_n{size}"] = Cell(
            f"acc(adapt_only) - acc(scratch) at {size} labels, {body}", _difference(rows, body, size, "adapt_only"))
        cells[f"pretrained_minus_adapt_only_n{size}"] = Cell(
            f"acc(pretrained) - acc(adapt_only) at {size} labels, {body} (the general corpus's share)",
            _difference(rows, body, size, "pretrained", "adapt_only"))
    for other_body in sorted({r["body"] for r in clf}):
        for s in _sizes([r for r in clf if r["body"] == other_body]):
            name = f"difference_n{s}" + ("" if other_body == body else f"_{other_body}")
            if name != primary:
                cells[name] = Cell(f"acc(pretrained) - acc(scratch) at {s} labels, {other_body}",
                                   _difference(rows, other_body, s))
    details = []
    rates = sorted({(r["body"], r["arm"], r["lr"]) for r in clf if "lr" in r})
    if rates:
        details.append("- peak learning rates (the pilot's choices): "
                       + ", ".join(f"{b} {a} {lr:g}" for b, a, lr in rates))
    match = labels_to_match(rows, body, size)
    if match:
        said = ", ".join(f"seed {s}: {'more than any size run' if v is None else v}" for s, v in match.items())
        details.append(f"- labels scratch needs to reach the pretrained accuracy at {size} ({body}, descriptive): {said}")
    return _standard(QUESTION, CLAIM, rule_text, margin, primary, cells, gate, details, settings,
                     labels_to_match={str(k): v for k, v in match.items()})
