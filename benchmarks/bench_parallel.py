"""
Benchmark (claim C1): is an RNN's training step sequential in the sequence length where a Transformer's is not?

A thin script over ``experiments/c1_parallel/measure.py`` (the measurement: both nets at matched parameter counts, full
training steps on random batches, interleaved rounds, each of ``--replicates`` replicates an independent process;
read its docstring for what is timed). Printed per device, thread count, family and length: the step time, the
minimum (``--statistic min``, the default: the least disturbed by other processes on a shared machine) or median
of every timed round (``--repeats`` per process after ``--warmup`` untimed steps); tokens/s = B * (L + 1)
predicted target tokens per second; the local slope from the previous length (so a jump is seen where it is); and
the growth rate the claim is about: the slope of log(step time) on log(L) per family, fitted over all lengths
(1 = linear growth, 0 = flat), on the summary times and as a mean over replicates; on CPU with two thread counts
or more, each net's speed-up from the fewest to the most threads. ``--device cuda`` times on the GPU
(``torch.cuda.synchronize`` around every step; an error where CUDA is not available). A PNG plot (step time and
tokens/s against L, log-log) is written per device to ``--out``.

``gvt lecture`` runs the same measurement for verdict C1 (experiments/lecture.py).

    python benchmarks/bench_parallel.py [--lengths 16,32,64,128,256,512] [--batch-size 16] [--d-model 128]
        [--device cpu|cuda | --devices cpu,cuda] [--threads 1,2] [--replicates 3] [--out runs/bench_parallel.png]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from experiments.c1_parallel.measure import (FAMILIES, STATISTICS, ParallelSettings, loglog_slope, lengths_of,
                                             measure_replicates, plot, slopes_per_replicate, summary_seconds,
                                             table_lines, thread_counts, thread_scaling)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="16,32,64,128,256,512", help="comma-separated sequence lengths")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--d-model", type=int, default=128, help="Transformer width (d_ff = 4x) and embedding size")
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers of both nets")
    parser.add_argument("--rnn-attention", default="none", choices=("none", "additive", "dot"))
    parser.add_argument("--devices", "--device", dest="devices", default=None,
                        help="cpu, cuda, cuda:N or a comma-separated list (default: cpu, plus cuda when available)")
    parser.add_argument("--threads", default=None,
                        help="comma-separated torch CPU thread counts, measured in turn (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per replicate process")
    parser.add_argument("--replicates", type=int, default=1, help="independent timing processes per thread count")
    parser.add_argument("--statistic", default="min", choices=sorted(STATISTICS),
                        help="of the timed steps per cell: min (default; the least disturbed by other load) or median")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_parallel.png", help="the PNG plot (runs/ is not tracked)")
    args = parser.parse_args()

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        parser.error(f"--device asks for {','.join(devices)}, but CUDA is not available here (torch "
                     f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'})")
    threads = [int(x) for x in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    for device in devices:
        settings = ParallelSettings(
            lengths=[int(x) for x in args.lengths.split(",")], batch_size=args.batch_size,
            vocab_size=args.vocab_size, d_model=args.d_model, n_heads=args.n_heads, layers=args.layers,
            rnn_attention=args.rnn_attention, warmup=args.warmup, repeats=args.repeats, replicates=args.replicates,
            threads=threads, device=device, seed=args.seed)
        record = measure_replicates(settings, echo=lambda line: None)
        p, hidden = record["parameters"], record["hidden_dim"]
        print(f"[{device}] Transformer: d_model {args.d_model}, {args.n_heads} heads, {args.layers}+{args.layers} "
              f"layers, d_ff {4 * args.d_model}: {p['transformer']:,} parameters")
        print(f"[{device}] LSTM seq2seq: emb {args.d_model}, hidden {hidden}, {args.layers}+{args.layers} layers, "
              f"attention {args.rnn_attention}: {p['lstm']:,} parameters "
              f"({100 * (p['lstm'] / p['transformer'] - 1):+.1f}%)")
        print(f"batch {args.batch_size}, vocabulary {args.vocab_size}, {args.statistic} of {args.replicates} "
              f"process(es) x {args.repeats} interleaved rounds after {args.warmup} warm-up steps; tokens/s counts "
              "B x (L + 1) predicted target tokens")
        lengths = lengths_of(record)
        for t in thread_counts(record):
            print(f"\n[{device}, {t} torch thread(s)]")
            print("\n".join(table_lines(record, t, args.statistic)))
            fitted = {f: loglog_slope(lengths, summary_seconds(record, t, f, args.statistic)) for f in FAMILIES}
            per_replicate = {f: statistics.mean(v) for f, v in slopes_per_replicate(record, t).items()}
            print(f"  growth of step time with length, slope of log(time) on log(L) over L = {lengths[0]}.."
                  f"{lengths[-1]}: lstm {fitted['lstm']:.2f}, transformer {fitted['transformer']:.2f} "
                  f"(mean over replicates: lstm {per_replicate['lstm']:.2f}, transformer "
                  f"{per_replicate['transformer']:.2f}); "
                  f"ratio lstm/transformer {fitted['lstm'] / fitted['transformer']:.2f}")
        speed = thread_scaling(record)
        if device == "cpu" and speed["lstm"]:
            counts = thread_counts(record)
            print(f"  speed-up from {counts[0]} to {counts[-1]} threads (geometric mean over lengths, mean over "
                  f"replicates): lstm x{statistics.mean(speed['lstm']):.2f}, transformer "
                  f"x{statistics.mean(speed['transformer']):.2f}")
        out = Path(args.out)
        path = out if len(devices) == 1 else out.with_name(f"{out.stem}_{device}{out.suffix}")
        plot(record, path, args.statistic)
        print(f"\nplot written to {path}")


if __name__ == "__main__":
    main()
