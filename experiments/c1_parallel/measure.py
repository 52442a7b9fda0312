"""C1's measurement: is an RNN's training step sequential in the sequence length where a Transformer's is not?

For each sequence length L both MLE nets take full training steps (forward, the one MLE loss, backward, AdamW
step) on random batches of B sources of L tokens and targets of L tokens (BOS + L + EOS, so L + 1 predicted
tokens per row):

- ``lstm``: the LSTM seq2seq (modules/nets/rnn_seq2seq.py; attention none by default: the pure recurrence, 2L
  sequential LSTM steps per forward);
- ``transformer``: the encoder-decoder Transformer (modules/nets/transformer.py), whose positions are computed
  in parallel.

The LSTM's hidden size is chosen so that its parameter count matches the Transformer's (``matched_hidden_dim``).

**Replicates are processes.** ``measure_replicates`` (what ``gvt lecture`` and ``benchmarks/bench_parallel.py``
run) starts one fresh Python process per replicate and thread count (``python -m experiments.c1_parallel.measure``, one after
the other, never two at once), each building the nets, warming up and timing on its own: a state one process falls
into (an allocator's layout, a oneDNN kernel choice, a burst of load) is one replicate's, not every round's. Inside
a process the timed steps are interleaved, round by round over every length and family (``time_steps``), so a
burst of load spreads over all cells instead of spoiling one. The statistic per replicate
(``slopes_per_replicate``) is the slope of log(step time) on log(L) per family (1 = linear growth, 0 = flat),
fitted to the median over that process's rounds at each length; the verdict's interval is over replicates.
``measure`` is one such process's grid, in-process.

``measure_replicates`` returns a JSON-able record (settings, the device, parameter counts, machine, every timed
step with its replicate and round); ``benchmarks/bench_parallel.py`` prints it as a table and
``experiments.c1_parallel.verdict`` decides verdict C1 from it. ``plot`` draws step time and tokens/s against L.
``device`` may be ``cuda`` (or ``cuda:N``): the steps then run there, timed between ``torch.cuda.synchronize``
calls; asking for it without a GPU is a ``ConfigError``.

Reading CPU figures: with one or two cores there is little parallel hardware for the Transformer to use, and its
attention costs O(L^2); the claim is about parallel hardware, so a GPU's figures say more. What a CPU can show is
how each net's step time scales with threads (``thread_scaling``). With torch 2.13 on CPU, oneDNN's LSTM backward
was seen to jump 7x to 12x between L = 128 and 256 in one process and not in a rerun: the local slopes
(``local_slopes``) show such a jump, and C1's rule (``experiments.c1_parallel.verdict``) refuses a verdict that rests
on the longest length.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from modules.data.batch import Batch
from modules.data.vocab import BOS_ID, EOS_ID, PAD_ID
from modules.errors import ConfigError
from modules.models.base import mle_loss
from modules.nets.rnn_seq2seq import LSTMSeq2Seq, RNNSeq2SeqConfig
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig
from modules.sampling import banned_mask
from experiments.core.plots import save_figure

FAMILIES = ("lstm", "transformer")
STATISTICS = {"min": min, "median": statistics.median}


@dataclass
class ParallelSettings:
    """Every knob of the C1 measurement."""

    lengths: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512])
    batch_size: int = 16
    vocab_size: int = 1000
    d_model: int = 128  # the Transformer's width (d_ff = 4x) and both nets' embedding size
    n_heads: int = 4
    layers: int = 2  # encoder and decoder layers of both nets
    rnn_attention: str = "none"
    warmup: int = 2  # untimed steps per cell before the timed rounds, in every process
    repeats: int = 5  # timed rounds (one step per cell each) per process
    replicates: int = 5  # independent timing processes per thread count (the verdict's n)
    threads: list[int] = field(default_factory=lambda: [1])  # torch CPU threads, measured in turn
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        self.lengths = sorted(int(x) for x in self.lengths)
        if len(self.lengths) < 2 or self.lengths[0] < 1 or len(set(self.lengths)) != len(self.lengths):
            raise ConfigError(f"c1.lengths needs at least two distinct lengths >= 1 to fit a growth rate, got "
                              f"{self.lengths}")
        for name in ("batch_size", "d_model", "n_heads", "layers", "repeats", "replicates"):
            if getattr(self, name) < 1:
                raise ConfigError(f"c1.{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 6:
            raise ConfigError(f"c1.vocab_size must be >= 6 (5 special tokens and a word), got {self.vocab_size}")
        if self.warmup < 0:
            raise ConfigError(f"c1.warmup must be >= 0, got {self.warmup}")
        if not self.threads or min(self.threads) < 1:
            raise ConfigError(f"c1.threads needs torch thread counts >= 1, got {self.threads}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"c1.d_model ({self.d_model}) must be divisible by c1.n_heads ({self.n_heads})")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"c1.device must be cpu, cuda or cuda:N, got {self.device!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---- the two nets at matched parameter counts -------------------------------------------------------------------

def make_transformer(s: ParallelSettings, max_len: int) -> EncoderDecoderTransformer:
    return EncoderDecoderTransformer(TransformerConfig(
        vocab_size=s.vocab_size, d_model=s.d_model, n_heads=s.n_heads, n_encoder_layers=s.layers,
        n_decoder_layers=s.layers, d_ff=4 * s.d_model, dropout=0.1, max_len=max_len))


def make_lstm(s: ParallelSettings, hidden_dim: int) -> LSTMSeq2Seq:
    return LSTMSeq2Seq(RNNSeq2SeqConfig(vocab_size=s.vocab_size, emb_dim=s.d_model, hidden_dim=hidden_dim,
                                        num_layers=s.layers, dropout=0.1, attention=s.rnn_attention))


def matched_hidden_dim(s: ParallelSettings, target: int) -> int:
    """The LSTM hidden size whose parameter count is closest to ``target`` (the count grows with it)."""
    lo, hi = 1, 8192
    while lo < hi:
        mid = (lo + hi) // 2
        if make_lstm(s, mid).num_parameters() < target:
            lo = mid + 1
        else:
            hi = mid
    return min((max(lo - 1, 1), lo), key=lambda h: abs(make_lstm(s, h).num_parameters() - target))


def build_nets(s: ParallelSettings) -> tuple[dict[str, torch.nn.Module], int]:
    """Both nets, seeded alike (family -> net), and the LSTM's hidden size."""
    max_len = s.lengths[-1] + 2
    hidden = matched_hidden_dim(s, make_transformer(s, max_len).num_parameters())
    nets = {}
    for family in FAMILIES:
        torch.manual_seed(s.seed)
        nets[family] = make_lstm(s, hidden) if family == "lstm" else make_transformer(s, max_len)
    return nets, hidden


# ---- timing -----------------------------------------------------------------------------------------------------

def random_batch(B: int, L: int, vocab_size: int, device, generator: torch.Generator) -> Batch:
    src = torch.randint(5, vocab_size, (B, L), generator=generator)
    words = torch.randint(5, vocab_size, (B, L), generator=generator)
    tgt = torch.cat([torch.full((B, 1), BOS_ID), words, torch.full((B, 1), EOS_ID)], dim=1)  # (B, L + 2)
    return Batch(src=src, tgt=tgt, src_pad_mask=src.eq(PAD_ID), tgt_pad_mask=tgt.eq(PAD_ID)).to(device)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def training_step(net, optimizer, batch: Batch, device) -> float:
    """Seconds of one training step: forward, the MLE loss (padding and BOS never produced, every target word
    and the EOS scored, as a model's own loss does on this data), backward, AdamW step."""
    sync(device)
    start = time.perf_counter()
    logits = net(batch.src, batch.src_pad_mask, batch.tgt_in)  # (B, L + 1, V)
    banned = banned_mask(logits.size(-1), [PAD_ID, BOS_ID], device=logits.device)  # (V,)
    loss = mle_loss(logits, batch.tgt_out, banned=banned, scored=batch.tgt_out.ne(PAD_ID))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sync(device)
    return time.perf_counter() - start


def time_steps(nets: dict, batches: dict, device, warmup: int, repeats: int,
               progress: Optional[Callable[[int, int], None]] = None) -> dict[tuple[str, int], list[float]]:
    """Step seconds per (family, length), one per repeat. After ``warmup`` untimed steps per cell, each repeat
    times one step of every cell, round by round (interleaved: see the module docstring)."""
    optimizers = {f: torch.optim.AdamW(net.parameters(), lr=1e-4) for f, net in nets.items()}
    times = {(f, L): [] for f in nets for L in batches}
    for f, net in nets.items():
        net.train()
        for L, batch in batches.items():
            for _ in range(warmup):
                training_step(net, optimizers[f], batch, device)
    for r in range(repeats):
        for L, batch in batches.items():
            for f, net in nets.items():
                times[(f, L)].append(training_step(net, optimizers[f], batch, device))
        if progress is not None:
            progress(r + 1, repeats)
    return times


def machine() -> dict:
    """What the timings ran on: cores, the CPU, torch's version and default thread count, the load."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "torch_default_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1_5_15": [round(x, 2) for x in load]}


def check_device(device: str) -> None:
    """A clear error where ``device`` asks for a GPU this machine does not have."""
    d = torch.device(device)
    if d.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"C1's device is {device}, but CUDA is not available here (torch {torch.__version__}, "
                          f"built for CUDA {torch.version.cuda or 'none'}); measure on cpu or on a machine with a GPU")
    if d.index is not None and d.index >= torch.cuda.device_count():
        raise ConfigError(f"C1's device is {device}, but only {torch.cuda.device_count()} GPU(s) are visible")


def device_info(device: str) -> dict:
    """What C1 measured on: the device type and its name (the GPU's, or the CPU's with its core count)."""
    d = torch.device(device)
    if d.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(d), "spec": str(device)}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "spec": str(device)}


def measure(s: ParallelSettings, echo: Callable[[str], None] = print, replicate: int = 0) -> dict:
    """The whole grid in this process, once per thread count of ``s.threads``; the torch thread count is restored
    afterwards. One replicate (``replicate`` labels its timings); ``measure_replicates`` runs each in a process.

    Returns ``{"settings", "device", "hidden_dim", "parameters": {family: count}, "machine", "wall_s", "timings":
    [{replicate, threads, family, length, repeat, seconds}, ...]}`` (JSON-able)."""
    check_device(s.device)
    device = torch.device(s.device)
    start = time.perf_counter()
    before = torch.get_num_threads()
    record = {"settings": s.to_dict(), "device": device_info(s.device), "machine": machine(), "pid": os.getpid(),
              "timings": []}
    try:
        for threads in s.threads:
            torch.set_num_threads(threads)
            nets, hidden = build_nets(s)
            nets = {f: net.to(device) for f, net in nets.items()}
            record["hidden_dim"] = hidden
            record["parameters"] = {f: net.num_parameters() for f, net in nets.items()}
            gen = torch.Generator().manual_seed(s.seed)
            batches = {L: random_batch(s.batch_size, L, s.vocab_size, device, gen) for L in s.lengths}
            echo(f"C1: timing training steps at lengths {s.lengths}, {threads} torch thread(s), "
                 f"{s.warmup} warm-up + {s.repeats} timed rounds")
            times = time_steps(nets, batches, device, s.warmup, s.repeats,
                               lambda r, n: echo(f"C1:   {threads} thread(s): round {r}/{n} done"))
            for (family, L), seconds in times.items():
                for repeat, sec in enumerate(seconds):
                    record["timings"].append({"replicate": replicate, "threads": threads, "family": family,
                                              "length": L, "repeat": repeat, "seconds": sec})
    finally:
        torch.set_num_threads(before)
    record["machine_after"] = machine()
    record["wall_s"] = time.perf_counter() - start
    return record


def _child_env() -> dict:
    """The environment of a replicate process: this one's, with the folder holding this ``experiments`` package
    first on PYTHONPATH, so the child times the same code as the parent whatever is installed."""
    root = str(Path(__file__).resolve().parents[2])  # experiments/c1_parallel/ -> the project root
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_replicate(s: ParallelSettings, replicate: int, threads: int, folder: Path, timeout_s: float = 3600) -> dict:
    """One replicate at one thread count in a fresh process (``python -m experiments.c1_parallel.measure``); its record."""
    one = ParallelSettings(**{**s.to_dict(), "threads": [threads], "replicates": 1})
    settings_path = folder / f"settings_{replicate}_{threads}.json"
    out_path = folder / f"record_{replicate}_{threads}.json"
    settings_path.write_text(json.dumps(one.to_dict()))
    cmd = [sys.executable, "-m", "experiments.c1_parallel.measure", "--settings", str(settings_path), "--replicate",
           str(replicate), "--out", str(out_path)]
    done = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not out_path.is_file():
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-15:]
        raise ConfigError(f"C1 replicate {replicate} ({threads} thread(s)) failed with exit code {done.returncode}: "
                          + "\n".join(tail))
    return json.loads(out_path.read_text())


def measure_replicates(s: ParallelSettings, echo: Callable[[str], None] = print) -> dict:
    """``s.replicates`` independent timing processes per thread count (module docstring), one at a time, the thread
    counts alternating inside each replicate so slow drift of the machine reaches all of them alike.

    Returns ``measure``'s record over every process, plus ``"replicates": [{replicate, threads, pid,
    wall_s, machine}]``; ``machine`` is this process's view before, ``machine_after`` after."""
    check_device(s.device)
    start = time.perf_counter()
    record = {"settings": s.to_dict(), "device": device_info(s.device), "machine": machine(), "timings": [],
              "replicates": []}
    echo(f"C1: timing training steps at lengths {s.lengths} on {s.device}, {s.replicates} replicate process(es) "
         f"per thread count {s.threads}, each {s.warmup} warm-up + {s.repeats} timed rounds")
    with tempfile.TemporaryDirectory(prefix="gvt-c1-") as tmp:
        for r in range(s.replicates):
            for threads in s.threads:
                child = run_replicate(s, r, threads, Path(tmp))
                record["timings"] += child["timings"]
                record.setdefault("hidden_dim", child["hidden_dim"])
                record.setdefault("parameters", child["parameters"])
                record["replicates"].append({"replicate": r, "threads": threads, "pid": child["pid"],
                                             "wall_s": child["wall_s"], "machine": child["machine"]})
                echo(f"C1:   replicate {r + 1}/{s.replicates}, {threads} thread(s): {child['wall_s']:.1f} s")
    record["machine_after"] = machine()
    record["wall_s"] = time.perf_counter() - start
    return record


# ---- summaries --------------------------------------------------------------------------------------------------

def loglog_slope(lengths: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(seconds) on log(length)."""
    xs, ys = [math.log(x) for x in lengths], [math.log(y) for y in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def target_tokens(batch_size: int, L: int) -> int:
    """Predicted target tokens per step: L words and the EOS per row."""
    return batch_size * (L + 1)


def thread_counts(record: dict) -> list[int]:
    return sorted({t["threads"] for t in record["timings"]})


def cell_times(record: dict, threads: int) -> dict[tuple[str, int], list[float]]:
    """(family, length) -> step seconds per repeat, in repeat order, at ``threads``."""
    out: dict[tuple[str, int], list[float]] = {}
    for t in sorted(record["timings"], key=lambda t: t["repeat"]):
        if t["threads"] == threads:
            out.setdefault((t["family"], t["length"]), []).append(t["seconds"])
    return out


def lengths_of(record: dict) -> list[int]:
    return sorted({t["length"] for t in record["timings"]})


def summary_seconds(record: dict, threads: int, family: str, statistic: str = "median") -> list[float]:
    """Per length (ascending), the ``statistic`` (min or median) of the repeats' step seconds."""
    cells = cell_times(record, threads)
    return [STATISTICS[statistic](cells[(family, L)]) for L in lengths_of(record)]


def replicates_of(record: dict) -> list[int]:
    """The replicate (process) labels of the record; a record from before replicates were processes has one."""
    return sorted({t.get("replicate", 0) for t in record["timings"]})


def replicate_seconds(record: dict, threads: int, statistic: str = "median") -> dict[int, dict[tuple[str, int], float]]:
    """replicate -> (family, length) -> the ``statistic`` of that process's rounds at ``threads``."""
    cells: dict[int, dict[tuple[str, int], list[float]]] = {}
    for t in record["timings"]:
        if t["threads"] == threads:
            cells.setdefault(t.get("replicate", 0), {}).setdefault((t["family"], t["length"]), []).append(t["seconds"])
    return {r: {k: STATISTICS[statistic](v) for k, v in c.items()} for r, c in sorted(cells.items())}


def slopes_per_replicate(record: dict, threads: int, max_length: Optional[int] = None,
                         statistic: str = "median") -> dict[str, list[float]]:
    """family -> the log-log slope of step time on length, one per replicate (fitted to the ``statistic`` of the
    process's rounds per length); with ``max_length``, over the lengths up to it only. A replicate lacking a
    length is left out for every family (the lists stay paired)."""
    per = replicate_seconds(record, threads, statistic)
    lengths = [L for L in lengths_of(record) if max_length is None or L <= max_length]
    full = [r for r, c in per.items() if all((f, L) in c for f in FAMILIES for L in lengths)]
    if len(lengths) < 2:
        return {f: [] for f in FAMILIES}
    return {f: [loglog_slope(lengths, [per[r][(f, L)] for L in lengths]) for r in full] for f in FAMILIES}


def thread_scaling(record: dict, statistic: str = "median") -> dict[str, list[float]]:
    """family -> per replicate, the speed-up from the fewest to the most threads measured: the geometric mean
    over lengths of step time at the fewest over step time at the most (1 = no gain; empty with one count)."""
    counts = thread_counts(record)
    if len(counts) < 2:
        return {f: [] for f in FAMILIES}
    lo, hi = replicate_seconds(record, counts[0], statistic), replicate_seconds(record, counts[-1], statistic)
    lengths = lengths_of(record)
    both = [r for r in lo if r in hi and all((f, L) in lo[r] and (f, L) in hi[r] for f in FAMILIES for L in lengths)]
    return {f: [math.exp(statistics.mean(math.log(lo[r][(f, L)] / hi[r][(f, L)]) for L in lengths)) for r in both]
            for f in FAMILIES}


def local_slopes(lengths: Sequence[int], seconds: Sequence[float]) -> list[float]:
    """The local growth exponent from the previous length, log(t_i / t_(i-1)) / log(L_i / L_(i-1)); NaN first."""
    return [math.nan] + [loglog_slope(lengths[i - 1:i + 1], seconds[i - 1:i + 1]) for i in range(1, len(lengths))]


def table_lines(record: dict, threads: int, statistic: str = "min") -> list[str]:
    """A plain-text table: per length, each family's step ms, tokens/s and local slope, and the time ratio."""
    lengths = lengths_of(record)
    B = record["settings"]["batch_size"]
    secs = {f: summary_seconds(record, threads, f, statistic) for f in FAMILIES}
    local = {f: local_slopes(lengths, secs[f]) for f in FAMILIES}
    header = "".join(f"{f + ' ms':>16}{f + ' tok/s':>18}{'slope':>7}" for f in FAMILIES)
    lines = [f"{'L':>5} {header}{'lstm/transformer':>18}"]
    for i, L in enumerate(lengths):
        row = "".join(f"{secs[f][i] * 1000:>16.1f}{target_tokens(B, L) / secs[f][i]:>18,.0f}{local[f][i]:>7.2f}"
                      for f in FAMILIES)
        lines.append(f"{L:>5} {row}{secs['lstm'][i] / secs['transformer'][i]:>18.2f}")
    return lines


def plot(record: dict, path: str | Path, statistic: str = "median", title: str = "") -> Path:
    """Step time and tokens/s against L (log-log), both families, one line per thread count."""
    from matplotlib.figure import Figure

    lengths = lengths_of(record)
    B = record["settings"]["batch_size"]
    fig = Figure(figsize=(10, 4))
    ax_time, ax_tok = fig.subplots(1, 2)
    for threads in thread_counts(record):
        for family in FAMILIES:
            seconds = summary_seconds(record, threads, family, statistic)
            style = ("-o" if family == "lstm" else "-s") if threads == max(thread_counts(record)) else \
                ("--o" if family == "lstm" else "--s")
            label = f"{family}, {threads} thread(s)"
            ax_time.plot(lengths, [s * 1000 for s in seconds], style, label=label)
            ax_tok.plot(lengths, [target_tokens(B, L) / s for L, s in zip(lengths, seconds)], style, label=label)
    for ax, ylabel in ((ax_time, f"training step time (ms, {statistic} of repeats)"),
                       (ax_tok, "target tokens / s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    p = record.get("parameters", {})
    where = (record.get("device") or {}).get("name") or record["settings"]["device"]
    fig.suptitle(title or (f"training step vs length on {where}: LSTM seq2seq "
                           f"({p.get('lstm', 0):,} params) vs Transformer ({p.get('transformer', 0):,} params), "
                           f"batch {B}"), fontsize=9)
    return save_figure(fig, path, dpi=110)


def main(argv: Optional[list[str]] = None) -> int:
    """One replicate process: ``--settings FILE`` (ParallelSettings as JSON), ``--replicate R``, ``--out FILE``."""
    parser = argparse.ArgumentParser(prog="python -m experiments.c1_parallel.measure",
                                     description="One C1 timing replicate (measure_replicates starts these).")
    parser.add_argument("--settings", required=True)
    parser.add_argument("--replicate", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    settings = ParallelSettings(**json.loads(Path(args.settings).read_text()))
    record = measure(settings, echo=lambda line: None, replicate=args.replicate)
    Path(args.out).write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
