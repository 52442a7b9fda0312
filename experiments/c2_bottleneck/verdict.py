"""C2's verdict: the per-length summaries of the rows and the rule (the drop in token accuracy from short to long
sources, rnn minus rnn-attention, gated on both having learned the task and on the controls)."""

from __future__ import annotations

import math
from typing import Callable, Optional

from experiments.c2_bottleneck import pilot as P
from experiments.c2_bottleneck.settings import C2_SESOI, CONTROL_FAMILIES, CONTROL_MAX_DROP, FAMILIES, LEARNED_ACCURACY
from experiments.core.stats import finite, t_interval
from experiments.core.verdicts import (Cell, Verdict, VerdictSettings, _not_run, _standard, paired, per_seed,
                                       verdict_rows)


# ---- summaries -----------------------------------------------------------------------------------------------


def _rows(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def lengths_of(rows: list[dict], dataset: str) -> list[int]:
    """The source lengths measured: the length buckets of mixed-length runs (``by_length``) and the lengths of
    one-length runs (``src_len``)."""
    found = set()
    for r in _rows(rows, dataset=dataset):
        if r.get("by_length"):
            found |= {int(n) for n in r["by_length"]}
        elif r.get("src_len") is not None:
            found.add(r["src_len"])
    return sorted(found)


def at_length(rows: list[dict], dataset: str, family: str, length: int, name: str) -> dict[int, float]:
    """Per seed: metric ``name`` at source ``length``, from a mixed-length run's bucket or a one-length run."""
    def value(r: dict) -> Optional[float]:
        if r.get("by_length"):
            return (r["by_length"].get(str(length)) or {}).get(name)
        return r.get(name) if r.get("src_len") == length else None

    return per_seed(_rows(rows, dataset=dataset, family=family), value)


def families_in(rows: list[dict]) -> list[str]:
    present = {r["family"] for r in rows}
    return [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES))


def bucket_metric(bucket: str, name: str) -> Callable[[dict], Optional[float]]:
    return lambda r: ((r.get("buckets") or {}).get(bucket) or {}).get(name)


def drop(rows: list[dict], family: str, dataset: str, name: str, short: int, long: int) -> dict[int, float]:
    """Per seed: metric ``name`` at the shortest length minus at the longest (positive: worse at the longer one,
    for a higher-is-better metric)."""
    a, b = (at_length(rows, dataset, family, n, name) for n in (short, long))
    return {s: a[s] - b[s] for s in sorted(a) if s in b}


# ---- the verdict ---------------------------------------------------------------------------------------------


RULE_TEXT = (f"Reverse task, one model per family and seed trained on mixed lengths at its piloted learning rate to "
             f"convergence on validation (under the cap), tested per length bucket. Per seed: token accuracy of "
             f"greedy decoding at the shortest source length minus at the longest (the drop), rnn's drop minus "
             f"rnn-attention's, paired by seed (positive: the model without attention loses more with length). "
             f"SESOI {C2_SESOI} token accuracy (one output word in ten). Gates: (1) rnn and rnn-attention learned "
             f"the task at the shortest length (mean token accuracy >= {LEARNED_ACCURACY}; chance is about 1 / "
             f"number of words); (2) every control without a bottleneck ({', '.join(CONTROL_FAMILIES)}, those run) "
             f"holds its accuracy: it learned the shortest length and its mean drop to the longest is at most "
             f"{CONTROL_MAX_DROP} (else the drop mixes the bottleneck with budget and optimisation difficulty). "
             f"Other families, exact match, the oracle and Multi30k are reported beside it.")


def _mean(values: dict[int, float]) -> float:
    return t_interval(list(values.values())).mean if values else math.nan


def _learned_gate(rows: list[dict], family: str, short: int) -> Optional[str]:
    mean = _mean(at_length(rows, "reverse", family, short, "token_accuracy"))
    if mean >= LEARNED_ACCURACY:
        return None
    chance = next((r.get("chance_token_accuracy") for r in _rows(rows, dataset="reverse", family=family)), math.nan)
    return (f"{family} did not learn the reverse task at the shortest length {short}: mean token accuracy "
            f"{mean:.3g} < {LEARNED_ACCURACY} (chance {chance if chance is not None else math.nan:.3g}); a drop "
            f"from there measures an unfinished training, not a bottleneck")


def control_gate(rows: list[dict], short: int, long: int) -> tuple[Optional[str], list[str]]:
    """Gate (2) of the module docstring: (the failure, or None; one line per control with its drop and margin)."""
    lines, failure = [], None
    for family in [f for f in CONTROL_FAMILIES if _rows(rows, dataset="reverse", family=f)]:
        at_short = _mean(at_length(rows, "reverse", family, short, "token_accuracy"))
        mean_drop = _mean(drop(rows, family, "reverse", "token_accuracy", short, long))
        margin = CONTROL_MAX_DROP - mean_drop
        lines.append(f"- control gate, {family}: token accuracy L={short} {at_short:.3g}, mean drop to L={long} "
                     f"{mean_drop:.3g} (allowed {CONTROL_MAX_DROP}; margin {margin:+.3g})")
        if failure is not None:
            continue
        learned = _learned_gate(rows, family, short)
        if learned is not None:
            failure = f"control {learned}"
        elif not (mean_drop <= CONTROL_MAX_DROP):
            failure = (f"the control without a bottleneck {family} does not hold its accuracy at the longest length: "
                       f"mean token accuracy drop L={short}->{long} {mean_drop:.3g} > {CONTROL_MAX_DROP} (gate "
                       f"margin {margin:+.3g}); the drop mixes the bottleneck with budget and optimisation difficulty")
    return failure, lines


def _stopping_lines(rows: list[dict]) -> list[str]:
    lines = []
    for family in families_in(_rows(rows, dataset="reverse")):
        frows = [r for r in _rows(rows, dataset="reverse", family=family) if "stopped_at" in r]
        if frows:
            cap = frows[0].get("max_updates")
            lines.append(f"- {family}: lr {frows[0].get('lr', math.nan):g}; stopped at "
                         + ", ".join(f"{r['stopped_at']} (best {r['best_step']})" for r in frows)
                         + f" updates; {sum(bool(r.get('hit_cap')) for r in frows)} of {len(frows)} at the cap {cap}")
    return lines


def verdict(rows: list[dict], *, alpha: float = 0.05, min_seeds: int = 3) -> Verdict:
    """Verdict C2 (module docstring): the primary cell ``drop_difference`` (rnn's token-accuracy drop from the
    shortest to the longest reverse length minus rnn-attention's, per seed), SESOI ``C2_SESOI``, gated on both
    RNNs having learned the task at the shortest length and on the controls without a bottleneck holding their
    accuracy at the longest. ``rows`` may hold the pilot's rows: its choice is stated, never judged."""
    settings = VerdictSettings(alpha=alpha, min_seeds=min_seeds)
    pilot = P.pilot_rows(rows)
    rows = verdict_rows([r for r in rows if r.get("kind", "bottleneck") == "bottleneck"])  # underpowered: reported
    claim = ("In seq2seq the encoder's final hidden state (the context vector) is the bottleneck; attention over "
             "all encoder states removes it.")
    lengths = lengths_of(rows, "reverse")
    primary = "drop_difference"
    if len(lengths) < 2 or not all(_rows(rows, dataset="reverse", family=f) for f in ("rnn", "rnn-attention")):
        why = ("not run: needs rnn and rnn-attention on the reverse task at two source lengths or more "
               "(`gvt ablate bottleneck`)")
        return _standard("C2", claim, RULE_TEXT, C2_SESOI, primary,
                         {primary: _not_run("rnn drop - rnn-attention drop (token accuracy)", why, C2_SESOI)},
                         why, [], settings)
    short, long = lengths[0], lengths[-1]
    gate = _learned_gate(rows, "rnn-attention", short) or _learned_gate(rows, "rnn", short)
    control_failure, control_lines = control_gate(rows, short, long)
    gate = gate or control_failure
    drops = {f: drop(rows, f, "reverse", "token_accuracy", short, long)
             for f in families_in(_rows(rows, dataset="reverse"))}
    cells = {primary: Cell(f"token accuracy drop L={short}->{long}: rnn - rnn-attention",
                           paired(drops["rnn"], drops["rnn-attention"]), C2_SESOI, gate is None,
                           gate or f"both RNNs learned the task at L={short}; the controls hold at L={long}")}
    for family, values in drops.items():
        cells[f"drop {family}"] = Cell(f"token accuracy drop L={short}->{long}, {family}", list(values.values()))
    if "transformer" in drops:
        cells["drop_difference_transformer"] = Cell(f"token accuracy drop L={short}->{long}: rnn - transformer",
                                                    paired(drops["rnn"], drops["transformer"]))
    exact = {f: drop(rows, f, "reverse", "exact_match", short, long) for f in ("rnn", "rnn-attention")}
    cells["exact_match_drop_difference"] = Cell(f"exact match drop L={short}->{long}: rnn - rnn-attention",
                                                paired(exact["rnn"], exact["rnn-attention"]))
    oracle_lengths = lengths_of(rows, "oracle")
    if len(oracle_lengths) >= 2:
        o_short, o_long = oracle_lengths[0], oracle_lengths[-1]
        # excess NLL grows when quality falls: the rise, long minus short, is minus the "drop"
        rise = {f: {s: -v for s, v in drop(rows, f, "oracle", "excess_nll_per_token", o_short, o_long).items()}
                for f in ("rnn", "rnn-attention")}
        cells["oracle_excess_nll_rise_difference"] = Cell(
            f"oracle: rise of NLL_test - H per token from source length {o_short} to {o_long}, rnn - rnn-attention",
            paired(rise["rnn"], rise["rnn-attention"]))
    m30k = _rows(rows, dataset="multi30k")
    if m30k:
        names = [b for b in _bucket_order(m30k) if any(finite(bucket_metric(b, "bleu4")(r)) for r in m30k)]
        if len(names) >= 2:
            fn_short, fn_long = bucket_metric(names[0], "bleu4"), bucket_metric(names[-1], "bleu4")
            loss = {}
            for f in ("rnn", "rnn-attention"):
                frows = _rows(m30k, family=f)
                a, b = per_seed(frows, fn_short), per_seed(frows, fn_long)
                loss[f] = {s: a[s] - b[s] for s in a if s in b}
            cells["multi30k_bleu_drop_difference"] = Cell(
                f"Multi30k: BLEU-4 drop from source bucket {names[0]} to {names[-1]}, rnn - rnn-attention",
                paired(loss["rnn"], loss["rnn-attention"]))
    families = families_in(_rows(rows, dataset="reverse"))
    details = [f"- {P.choice_text(pilot, families)}"]
    details += [f"- reverse, {f}: token accuracy " + "; ".join(
        f"L={n} {t_interval(list(at_length(rows, 'reverse', f, n, 'token_accuracy').values())).fmt()}"
        for n in lengths) for f in families]
    details += control_lines + _stopping_lines(rows)
    return _standard("C2", claim, RULE_TEXT, C2_SESOI, primary, cells, gate, details, settings)


def _bucket_order(rows: list[dict]) -> list[str]:
    for r in rows:
        if r.get("buckets"):
            return list(r.get("bucket_names") or r["buckets"])
    return []
