"""Claim C1's rule, verdict and report section (the measurement itself is ``experiments.c1_parallel.measure``).

C1: an RNN is sequential (step t needs step t-1), so it is hard to parallelise; a Transformer is not. Tested by
how the training-step time of the LSTM seq2seq and of the Transformer (matched parameter counts) grows with the
sequence length L.

**Primary cell** ``slope_difference``: per replicate (an independent timing process, ``measure_replicates``), the
slope of log(step time) on log(L) of the LSTM minus the Transformer's, at the primary thread count (fixed in
advance: the largest measured), each slope fitted to the median of the process's rounds per length.

**Rule** (stricter than the Q1-Q4 rule, because one process's timings once carried a verdict on a single jump):

- *supported*: the interval's lower bound is at or above the SESOI (not merely above 0), **and** the estimate
  without the longest length (``slope_difference_without_longest``, the same replicates' timings refitted over
  L <= the second longest) is at or above the SESOI too;
- *not supported*: the interval's upper bound is below the SESOI, **and** the estimate without the longest
  length is below the SESOI too;
- otherwise *inconclusive*, the reason named: the interval reaches the SESOI, or the verdict "rests on the
  longest length" (the leave-longest-out estimate is on the other side of the SESOI), or there are fewer than
  ``MIN_LENGTHS`` lengths (no slope is left without the longest), or too few replicates.

The leave-longest-out check asks for the *estimate* on the same side of the SESOI, which is stronger than the
same sign (a difference of 0.6 that falls to 0.05 without the longest length rests on it, although its sign is
kept) but not for the interval: over one length fewer each replicate's slope is noisier, and requiring its bound
too would make the check a second, weaker test of power rather than one of robustness. The decision's p-value
(Holm's ordering) is the t test of the primary cell against the SESOI: both outcomes are decided by a bound
against the SESOI. Gate: parameter counts matched within ``PARAMETER_TOLERANCE``.

The device (``c1.device``, ``gvt lecture --c1-device cuda``) and the torch thread counts are in the record, the
verdict's reason ("measured on CPU with 2 torch thread(s)") and the pre-registration (``RULE_SETTINGS``). On a CPU,
which has no parallel hardware of the kind the claim is about, the section says what the CPU does show: how much
each net gains from more threads (``experiments.c1_parallel.measure.thread_scaling``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from experiments.c1_parallel.measure import (FAMILIES, lengths_of, replicate_seconds, slopes_per_replicate,
                                             target_tokens, thread_counts, thread_scaling)
from experiments.core import verdicts as V
from experiments.core.stats import finite, t_interval, t_p_value

CLAIM = "An RNN is sequential (step t needs step t-1), so it is hard to parallelise; a Transformer is not."

# C1's SESOI, in log-log slope units. Over the 16x range of lengths of the lecture preset (16 to 256), a slope
# difference d changes the LSTM/Transformer step-time ratio by 16^d: d = 0.25 is a factor of 2 between the shortest
# and the longest sequences, the smallest change in relative cost that would change which model one trains on long
# sequences. Smaller differences are within what the choice of lengths and the O(L^2) attention term move anyway.
SESOI = 0.25
# The parameter counts of the two nets must agree within this share, or C1 compares model sizes, not architectures.
PARAMETER_TOLERANCE = 0.05
# Without the longest length a slope needs two lengths left.
MIN_LENGTHS = 3
PRIMARY = "slope_difference"
WITHOUT_LONGEST = "slope_difference_without_longest"

# Hashed into the lecture's pre-registration: the text stays as first registered, though the module is now
# experiments.c1_parallel.measure (the flat layout's experiments.parallel), so that the hash does not change.
RULE_SETTINGS = {
    "sesoi": SESOI,
    "replicate": "one independent timing process per replicate and thread count (python -m experiments.parallel)",
    "statistic_per_replicate": "log-log slope fitted to the median of the process's rounds per length",
    "supported": "interval lower bound >= SESOI and the leave-longest-out estimate >= SESOI",
    "not_supported": "interval upper bound < SESOI and the leave-longest-out estimate < SESOI",
    "leave_longest_out": "the estimate (not its interval) on the same side of the SESOI as the decision",
    "min_lengths": MIN_LENGTHS,
    "p_value": "t test of the primary cell against the SESOI",
    "parameter_tolerance": PARAMETER_TOLERANCE,
    "primary_threads": "the largest thread count measured, unless the preset names one",
}

RULE = (f"Per replicate (an independent timing process) at the primary thread count: the slope of "
        f"log(training-step time) on log(L) of the LSTM seq2seq minus the Transformer's, over all lengths, each fitted "
        f"to the median of the process's rounds (positive: the LSTM's time grows faster with length, as a sequential "
        f"model's should where the Transformer can run positions in parallel). SESOI {SESOI} (a factor "
        f"16^{SESOI} = 2 in the time ratio across a 16x range of lengths). Supported: the interval's lower bound at "
        f"or above the SESOI and the estimate without the longest length at or above it too; not supported: the upper "
        f"bound below the SESOI and the estimate without the longest length below it too; otherwise inconclusive "
        f"(named: the interval reaches the SESOI, or the verdict rests on the longest length). The primary thread "
        f"count is fixed in advance: the largest measured. Gate: parameter counts matched within "
        f"{PARAMETER_TOLERANCE:.0%}. Replicates play the role of seeds.")

CONFOUND_CPU = ("Confound, beside the verdict whatever it says: on a CPU with one or two threads there is no parallel "
                "hardware for the Transformer's positions to run on (its matrix products already keep the cores busy "
                "at the shortest length), and its attention costs O(L^2), so a CPU can only show the Transformer's "
                "time growing at least linearly too. The claim is about parallel hardware: a GPU run (`gvt lecture "
                "--c1-device cuda`, `python benchmarks/bench_parallel.py --device cuda`) is what tests it. The timings "
                "were taken on a machine shared with other work (load averages below).")
CONFOUND_GPU = ("Measured on a GPU, the parallel hardware the claim is about. Its attention still costs O(L^2) "
                "work, so at long enough L the Transformer's time grows too; the lengths measured are the preset's.")


class C1Verdict(V.Verdict):
    """A verdict decided by C1's rule (module docstring): Holm orders it by the t test against the SESOI."""

    @property
    def p_value(self) -> float:
        cell = self.primary_cell
        if cell is None or cell.status == V.NOT_RUN or self.margin is None:
            return math.nan
        return t_p_value(cell.values, self.margin)


def measured_on(record: dict, threads: int) -> str:
    """"CPU with 2 torch thread(s)" or the GPU's name: what the verdict's reason names."""
    device = record.get("device") or {"type": str((record.get("settings") or {}).get("device", "cpu")).split(":")[0]}
    if device.get("type") == "cuda":
        return f"GPU {device.get('name') or device.get('spec', 'cuda')}"
    cores = device.get("cores") or (record.get("machine") or {}).get("cpu_count")
    return f"CPU{f' ({cores} cores)' if cores else ''} with {threads} torch thread(s)"


def decide(v: V.Verdict, level: float, min_seeds: int) -> tuple[str, str]:
    """C1's rule (module docstring) at interval level ``level``: (verdict, reason)."""
    margin, on = v.margin, v.extra["c1"]["measured_on"]
    iv = t_interval(v.primary_cell.values, level)
    if iv.n < min_seeds:
        return V.INCONCLUSIVE, f"too few replicates ({iv.n} < {min_seeds}), {on}"
    if iv.zero_spread:
        return V.INCONCLUSIVE, f"all {iv.n} replicates gave {iv.mean:.3g}: no spread, so no honest interval ({on})"
    where = f"{iv.fmt(3)} at {level:.4g}, SESOI {margin:g}"
    if iv.low >= margin:
        outcome, side = V.SUPPORTED, "at or above"
    elif iv.high < margin:
        outcome, side = V.NOT_SUPPORTED, "below"
    else:
        return V.INCONCLUSIVE, f"{where}: the interval reaches the SESOI ({on})"
    loo = v.cells.get(WITHOUT_LONGEST)
    lengths = v.extra["c1"]["lengths"]
    if loo is None or loo.status == V.NOT_RUN or not finite(t_interval(loo.values).mean):
        return V.INCONCLUSIVE, (f"{where} would be {outcome}, but no slope is left without the longest length (the "
                                f"check needs {MIN_LENGTHS} lengths, measured {len(lengths)}) ({on})")
    loo_mean = t_interval(loo.values).mean
    kept = loo_mean >= margin if outcome == V.SUPPORTED else loo_mean < margin
    if not kept:
        return V.INCONCLUSIVE, (f"{where} would be {outcome}, but it rests on the longest length: without "
                                f"L = {lengths[-1]} the estimate is {loo_mean:.3f}, not {side} the SESOI ({on})")
    bound = "lower bound at or above" if outcome == V.SUPPORTED else "upper bound below"
    return outcome, (f"{where}: {bound} the SESOI, and without L = {lengths[-1]} still {side} it ({loo_mean:.3f}) "
                     f"({on})")


def load_warning(record: dict) -> Optional[str]:
    """A warning (descriptive: it changes no verdict) where other processes kept the cores busy during the timing:
    a 1-minute load average above the core count before or after it. Steps on more than one thread suffer most
    (each waits for its slowest thread), so such timings say more about the machine's load than about the nets."""
    cores = (record.get("machine") or {}).get("cpu_count")
    loads = [((record.get(k) or {}).get("load_average_1_5_15") or [math.nan])[0] for k in ("machine", "machine_after")]
    if not cores or not any(finite(x) and x > cores for x in loads):
        return None
    return (f"**Warning: the machine was busy** (1-minute load average {loads[0]:.1f} before and {loads[1]:.1f} after, "
            f"on {cores} cores): other processes shared the cores during the timing, which inflates every step and "
            "most of all the multi-threaded ones; these timings measure the load as much as the nets. Rerun C1 "
            "(`gvt lecture --only c1` into a fresh folder) on an idle machine before reading the verdict.")


def thread_scaling_line(record: dict) -> Optional[str]:
    """What a CPU shows: each net's speed-up from the fewest to the most threads (None with one thread count)."""
    counts = thread_counts(record)
    speed = thread_scaling(record)
    if len(counts) < 2 or not speed["lstm"]:
        return None
    ratio = [a / b for a, b in zip(speed["lstm"], speed["transformer"])]
    return (f"What this CPU shows: from {counts[0]} to {counts[-1]} torch threads the LSTM's step gets "
            f"x{t_interval(speed['lstm']).fmt(2)} faster and the Transformer's "
            f"x{t_interval(speed['transformer']).fmt(2)} "
            f"(geometric mean over lengths; mean [95% t-interval] over replicates); LSTM gain / Transformer gain "
            f"{t_interval(ratio).fmt(2)}. A net that used parallel hardware better would gain more from threads; "
            f"a ratio near 1 means this CPU shows no parallelism advantage either way.")


def c1_verdict(record: Optional[dict], *, threads: Optional[int] = None, margin: float = SESOI,
               alpha: float = 0.05, min_seeds: int = 3, why_not_run: str = "not run") -> V.Verdict:
    """Verdict C1 from ``experiments.c1_parallel.measure.measure_replicates``'s record (None: not run, ``why_not_run``)."""
    settings = V.VerdictSettings(alpha=alpha, min_seeds=min_seeds)
    description = "LSTM - Transformer log-log slope"
    if record is None or not record.get("timings"):
        cells = {PRIMARY: V._not_run(description, why_not_run, margin)}
        return V._standard("C1", CLAIM, RULE, margin, PRIMARY, cells, why_not_run, [CONFOUND_CPU], settings)
    measured = thread_counts(record)
    threads = max(measured) if threads is None else threads
    on_gpu = (record.get("device") or {}).get("type") == "cuda"
    confound = CONFOUND_GPU if on_gpu else CONFOUND_CPU
    if threads not in measured:
        gate = f"not run: no timings at the primary thread count {threads} (measured: {measured})"
        cells = {PRIMARY: V._not_run(description, gate, margin)}
        return V._standard("C1", CLAIM, RULE, margin, PRIMARY, cells, gate, [confound], settings)
    params = record.get("parameters", {})
    gate, met = None, True
    if not params.get("lstm") or not params.get("transformer"):
        gate, met = "the parameter counts of the two nets are not in the record", None
    elif abs(params["lstm"] / params["transformer"] - 1) > PARAMETER_TOLERANCE:
        gate, met = (f"parameter counts not matched: LSTM {params['lstm']:,} vs Transformer {params['transformer']:,} "
                     f"(more than {PARAMETER_TOLERANCE:.0%} apart)"), False
    bad = [t for t in record["timings"] if not (finite(t["seconds"]) and t["seconds"] > 0)]
    if bad:
        gate, met = f"{len(bad)} timed step(s) are not positive finite seconds", False
    lengths = lengths_of(record)
    cells: dict[str, V.Cell] = {}
    for t in [] if bad else measured:
        slopes = slopes_per_replicate(record, t)
        name = PRIMARY if t == threads else f"slope_difference_threads{t}"
        diff = [a - b for a, b in zip(slopes["lstm"], slopes["transformer"])]
        cells[name] = V.Cell(f"{description}, {t} thread(s)", diff, margin if t == threads else None,
                             met if t == threads else True,
                             (gate or "parameter counts matched") if t == threads else "secondary thread count")
        if t == threads:
            if len(lengths) >= MIN_LENGTHS:
                short = slopes_per_replicate(record, t, max_length=lengths[-2])
                cells[WITHOUT_LONGEST] = V.Cell(f"{description}, {t} thread(s), L <= {lengths[-2]} (leave longest "
                                                f"out)", [a - b for a, b in zip(short["lstm"], short["transformer"])],
                                                margin, precondition="the estimate must be on the primary's side "
                                                                     "of the SESOI")
            else:
                cells[WITHOUT_LONGEST] = V._not_run(f"{description} without the longest length",
                                                    f"needs {MIN_LENGTHS} lengths, measured {len(lengths)}")
        for f in FAMILIES:
            cells[f"slope_{f}_threads{t}"] = V.Cell(f"{f} log-log slope, {t} thread(s)", slopes[f], None)
    if PRIMARY not in cells:
        cells[PRIMARY] = V._not_run(description, gate or "no timings", margin)
    details = [confound]
    if not bad and not on_gpu:
        speed = thread_scaling(record)
        if speed["lstm"]:
            counts = thread_counts(record)
            for f in FAMILIES:
                cells[f"thread_speedup_{f}"] = V.Cell(f"{f} speed-up from {counts[0]} to {counts[-1]} threads",
                                                      speed[f], None)
            cells["thread_speedup_ratio"] = V.Cell("LSTM speed-up / Transformer speed-up",
                                                   [a / b for a, b in zip(speed["lstm"], speed["transformer"])])
        line = thread_scaling_line(record)
        details.append(line or f"What this CPU shows: one thread count measured ({measured}), so no thread scaling.")
    busy = load_warning(record)
    if busy:
        details.append(busy)
    for t in [] if bad else measured:
        per = replicate_seconds(record, t)
        med = {f: [sorted(c[(f, L)] for c in per.values())[len(per) // 2] for L in lengths] for f in FAMILIES}
        lstm, tr = med["lstm"], med["transformer"]
        details.append(f"- {t} thread(s){' (primary)' if t == threads else ''}: median step time at L = {lengths[0]} "
                       f"LSTM {lstm[0] * 1000:.1f} ms vs Transformer {tr[0] * 1000:.1f} ms; at L = {lengths[-1]} "
                       f"LSTM {lstm[-1] * 1000:.1f} ms vs Transformer {tr[-1] * 1000:.1f} ms "
                       f"(LSTM/Transformer {lstm[-1] / tr[-1]:.2f})")
    v = C1Verdict("C1", CLAIM, V.INCONCLUSIVE, "", RULE, details, margin=margin, primary=PRIMARY, cells=cells,
                  gate=gate, decide=decide,
                  extra={"c1": {"measured_on": measured_on(record, threads), "device": record.get("device"),
                                "threads": threads, "lengths": lengths, "rule": RULE_SETTINGS}})
    return v.at_level(1.0 - alpha, min_seeds)


def c1_section(record: dict, primary_threads: int, figure: Optional[Path], folder: Path) -> list[str]:
    """C1's part of the lecture report: what was timed, per thread count the slopes and a table per length."""
    s = record["settings"]
    p = record["parameters"]
    lengths = lengths_of(record)
    device = record.get("device") or {}
    where = (f"GPU {device.get('name')}" if device.get("type") == "cuda"
             else f"CPU ({device.get('name') or s['device']}, {device.get('cores') or '?'} cores)")
    replicates = s.get("replicates", 1)
    L = [f"Both nets take full training steps (forward, the one MLE loss, backward, AdamW) on random batches of "
         f"{s['batch_size']} sources and targets of L tokens, vocabulary {s['vocab_size']}, on {where}: the "
         f"Transformer (d_model {s['d_model']}, {s['n_heads']} heads, {s['layers']}+{s['layers']} layers, "
         f"{p['transformer']:,} parameters) and the LSTM seq2seq without attention (hidden {record['hidden_dim']}, "
         f"{s['layers']}+{s['layers']} layers, {p['lstm']:,} parameters, "
         f"{100 * (p['lstm'] / p['transformer'] - 1):+.1f}%). {replicates} replicates per thread count, each an "
         f"independent process: {s['warmup']} warm-up steps per cell, then {s['repeats']} timed rounds, each one step "
         f"of every length and family (interleaved). Tokens/s counts B x (L + 1) predicted target tokens. Per "
         f"length: the median over replicates of each process's median [min, max over replicates]; the slopes are "
         f"per replicate, mean [95% t-interval over replicates]. The primary thread count ({primary_threads}) was "
         f"fixed before the measurement: the largest measured.", ""]
    for t in thread_counts(record):
        slopes = slopes_per_replicate(record, t)
        L += [f"**{t} torch thread(s)**{' (primary)' if t == primary_threads else ''}: log-log slope LSTM "
              f"{t_interval(slopes['lstm']).fmt(2)}, Transformer {t_interval(slopes['transformer']).fmt(2)}", "",
              "| L | LSTM ms | Transformer ms | LSTM tok/s | Transformer tok/s | LSTM / Transformer |",
              "|---:|---|---|---:|---:|---:|"]
        per = replicate_seconds(record, t)
        for L_ in lengths:
            values = {f: sorted(c[(f, L_)] for c in per.values() if (f, L_) in c) for f in FAMILIES}
            med = {f: v[len(v) // 2] for f, v in values.items()}
            rng = {f: f"{med[f] * 1000:.1f} [{values[f][0] * 1000:.1f}, {values[f][-1] * 1000:.1f}]" for f in FAMILIES}
            tok = {f: target_tokens(s["batch_size"], L_) / med[f] for f in FAMILIES}
            L.append(f"| {L_} | {rng['lstm']} | {rng['transformer']} | {tok['lstm']:,.0f} | {tok['transformer']:,.0f} "
                     f"| {med['lstm'] / med['transformer']:.2f} |")
        L.append("")
    m0, m1 = record.get("machine", {}), record.get("machine_after", {})
    L += [f"Measured in {record.get('wall_s', math.nan):.0f} s on {m0.get('cpu_count')} cores "
          f"({m0.get('processor')}), torch {m0.get('torch')}; load average (1, 5, 15 min) "
          f"{m0.get('load_average_1_5_15')} before, {m1.get('load_average_1_5_15')} after.", ""]
    if figure:
        L += [f"![C1: step time and tokens/s against length]({os.path.relpath(figure, folder)})", ""]
    return L
