"""
Benchmark (claim C1): is an RNN's training step sequential in the sequence length where a Transformer's is not?

For each sequence length L (16 to 512 by default) both MLE nets take full training steps (forward, the one MLE
loss, backward, AdamW step) on random batches of B sources of L tokens and targets of L tokens (BOS + L + EOS,
so L + 1 predicted tokens per row):
- the LSTM seq2seq (modules/nets/rnn_seq2seq.py; attention none by default: the pure recurrence, 2L sequential
  LSTM steps per forward);
- the encoder-decoder Transformer (modules/nets/transformer.py), whose positions are computed in parallel.
The LSTM's hidden size is chosen so that its parameter count matches the Transformer's (both counts are printed).

Printed per family and length: the step time, the minimum (`--statistic min`, the default: the least disturbed by
other processes on a shared machine) or median of `--repeats` timed steps after `--warmup` untimed ones, the
timed steps of all cells interleaved round by round; and tokens/s = B * (L + 1) predicted target tokens per
second. The figure the claim is about is the growth rate of step time with length: the slope of log(step time)
against log(L), fitted per family over all lengths (1 = linear growth, 0 = flat), and the ratio of the two
slopes; the table also gives each step's local slope from the previous length, so a jump is seen where it is.
All numbers come from the same process, on CPU and, when one is there, on a GPU. A PNG plot (step time and
tokens/s against L, log-log) is written to `--out`.

Reading CPU figures: with one or two cores there is little parallel hardware for the Transformer to use, and its
attention costs O(L^2); the claim is about parallel hardware, so a GPU's figures say more. With torch 2.13 on CPU,
oneDNN's LSTM backward was seen to jump about 7x between L = 128 and 256 whenever the gradient reaches the
encoder through its final state (as in every seq2seq); the local slopes show such a jump where it happens.

    python benchmarks/bench_parallel.py [--lengths 16,32,64,128,256,512] [--batch-size 16] [--d-model 128]
        [--devices cpu,cuda] [--threads 2] [--out runs/bench_parallel.png]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from modules.data.batch import Batch
from modules.data.vocab import BOS_ID, EOS_ID, PAD_ID
from modules.models.base import mle_loss
from modules.nets.rnn_seq2seq import LSTMSeq2Seq, RNNSeq2SeqConfig
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig

FAMILIES = ("lstm", "transformer")
STATISTICS = {"min": min, "median": statistics.median}


def make_transformer(args, max_len: int) -> EncoderDecoderTransformer:
    return EncoderDecoderTransformer(TransformerConfig(
        vocab_size=args.vocab_size, d_model=args.d_model, n_heads=args.n_heads, n_encoder_layers=args.layers,
        n_decoder_layers=args.layers, d_ff=4 * args.d_model, dropout=0.1, max_len=max_len))


def make_lstm(args, hidden_dim: int) -> LSTMSeq2Seq:
    return LSTMSeq2Seq(RNNSeq2SeqConfig(vocab_size=args.vocab_size, emb_dim=args.d_model, hidden_dim=hidden_dim,
                                        num_layers=args.layers, dropout=0.1, attention=args.rnn_attention))


def matched_hidden_dim(args, target: int) -> int:
    """The LSTM hidden size whose parameter count is closest to ``target`` (the count grows with it)."""
    lo, hi = 1, 8192
    while lo < hi:
        mid = (lo + hi) // 2
        if make_lstm(args, mid).num_parameters() < target:
            lo = mid + 1
        else:
            hi = mid
    return min((lo - 1, lo), key=lambda h: abs(make_lstm(args, max(h, 1)).num_parameters() - target))


def random_batch(B: int, L: int, vocab_size: int, device, generator: torch.Generator) -> Batch:
    src = torch.randint(5, vocab_size, (B, L), generator=generator)
    words = torch.randint(5, vocab_size, (B, L), generator=generator)
    tgt = torch.cat([torch.full((B, 1), BOS_ID), words, torch.full((B, 1), EOS_ID)], dim=1)  # (B, L + 2)
    return Batch(src=src, tgt=tgt, src_pad_mask=src.eq(PAD_ID), tgt_pad_mask=tgt.eq(PAD_ID)).to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(net, optimizer, batch: Batch, device) -> float:
    """Seconds of one training step: forward, the MLE loss, backward, AdamW step."""
    sync(device)
    start = time.perf_counter()
    logits = net(batch.src, batch.src_pad_mask, batch.tgt_in)  # (B, L + 1, V)
    loss = mle_loss(logits, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sync(device)
    return time.perf_counter() - start


def time_families(nets: dict, batches: dict, device, warmup: int, repeats: int, statistic) -> dict:
    """Step seconds per (family, length). The timed steps are interleaved, round by round over every length and
    family, so a burst of load from other processes spreads over all cells instead of spoiling one."""
    optimizers = {f: torch.optim.AdamW(net.parameters(), lr=1e-4) for f, net in nets.items()}
    times = {(f, L): [] for f in nets for L in batches}
    for f, net in nets.items():
        net.train()
        for L, batch in batches.items():
            for _ in range(warmup):
                training_step(net, optimizers[f], batch, device)
    for _ in range(repeats):
        for L, batch in batches.items():
            for f, net in nets.items():
                times[(f, L)].append(training_step(net, optimizers[f], batch, device))
    return {cell: statistic(values) for cell, values in times.items()}


def loglog_slope(lengths, seconds) -> float:
    """Least-squares slope of log(seconds) on log(length)."""
    xs, ys = [math.log(x) for x in lengths], [math.log(y) for y in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def target_tokens(batch_size: int, L: int) -> int:
    """Predicted target tokens per step: L words and the EOS per row."""
    return batch_size * (L + 1)


def plot(results: dict, lengths, batch_size: int, path: str, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_time, ax_tok = fig.subplots(1, 2)
    for (device, family), seconds in results.items():
        style = "-o" if family == "lstm" else "-s"
        label = f"{family} ({device})"
        ax_time.plot(lengths, [s * 1000 for s in seconds], style, label=label)
        ax_tok.plot(lengths, [target_tokens(batch_size, L) / s for L, s in zip(lengths, seconds)], style, label=label)
    for ax, ylabel in ((ax_time, "training step time (ms)"), (ax_tok, "target tokens / s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="16,32,64,128,256,512", help="comma-separated sequence lengths")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--d-model", type=int, default=128, help="Transformer width (d_ff = 4x) and embedding size")
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers of both nets")
    parser.add_argument("--rnn-attention", default="none", choices=("none", "additive", "dot"))
    parser.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--statistic", default="min", choices=sorted(STATISTICS),
                        help="of the timed steps per cell: min (default; the least disturbed by other load) or median")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_parallel.png", help="the PNG plot (runs/ is not tracked)")
    args = parser.parse_args()

    lengths = sorted(int(x) for x in args.lengths.split(","))
    if len(lengths) < 2 or lengths[0] < 1:
        parser.error("--lengths needs at least two lengths >= 1 to fit a growth rate")
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices asks for cuda, but no GPU is available")
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    transformer_params = make_transformer(args, max_len=lengths[-1] + 2).num_parameters()
    hidden = matched_hidden_dim(args, transformer_params)
    lstm_params = make_lstm(args, hidden).num_parameters()
    print(f"Transformer: d_model {args.d_model}, {args.n_heads} heads, {args.layers}+{args.layers} layers, "
          f"d_ff {4 * args.d_model}: {transformer_params:,} parameters")
    print(f"LSTM seq2seq: emb {args.d_model}, hidden {hidden}, {args.layers}+{args.layers} layers, "
          f"attention {args.rnn_attention}: {lstm_params:,} parameters "
          f"({100 * (lstm_params / transformer_params - 1):+.1f}%)")
    print(f"batch {args.batch_size}, vocabulary {args.vocab_size}, torch threads {torch.get_num_threads()}, "
          f"{args.statistic} of {args.repeats} interleaved steps after {args.warmup} warm-up steps; "
          "tokens/s counts B x (L + 1) predicted target tokens")

    results = {}
    for device_name in devices:
        device = torch.device(device_name)
        gen = torch.Generator().manual_seed(args.seed)
        batches = {L: random_batch(args.batch_size, L, args.vocab_size, device, gen) for L in lengths}
        nets = {}
        for family in FAMILIES:
            torch.manual_seed(args.seed)
            nets[family] = (make_lstm(args, hidden) if family == "lstm"
                            else make_transformer(args, max_len=lengths[-1] + 2)).to(device)
        seconds = time_families(nets, batches, device, args.warmup, args.repeats, STATISTICS[args.statistic])
        for family in FAMILIES:
            results[(device_name, family)] = [seconds[(family, L)] for L in lengths]

        # "slope": the local growth exponent from the previous length, log(t_i / t_(i-1)) / log(L_i / L_(i-1))
        header = "".join(f"{f + ' ms':>16}{f + ' tok/s':>18}{'slope':>7}" for f in FAMILIES)
        print(f"\n[{device_name}]  {'L':>5} {header}{'lstm/transformer':>18}")
        for i, L in enumerate(lengths):
            row = ""
            for f in FAMILIES:
                seconds = results[(device_name, f)]
                local = loglog_slope(lengths[i - 1:i + 1], seconds[i - 1:i + 1]) if i else float("nan")
                tokens_per_s = target_tokens(args.batch_size, L) / seconds[i]
                row += f"{seconds[i] * 1000:>16.1f}{tokens_per_s:>18,.0f}{local:>7.2f}"
            ratio = results[(device_name, "lstm")][i] / results[(device_name, "transformer")][i]
            print(f"{'':>{len(device_name) + 4}}{L:>5} {row}{ratio:>18.2f}")
        slopes = {f: loglog_slope(lengths, results[(device_name, f)]) for f in FAMILIES}
        print(f"  growth of step time with length, slope of log(time) on log(L) over L = {lengths[0]}..{lengths[-1]}: "
              f"lstm {slopes['lstm']:.2f}, transformer {slopes['transformer']:.2f}, "
              f"ratio lstm/transformer {slopes['lstm'] / slopes['transformer']:.2f}")

    title = (f"training step vs length: LSTM seq2seq ({lstm_params:,} params) vs Transformer "
             f"({transformer_params:,} params), batch {args.batch_size}")
    plot(results, lengths, args.batch_size, args.out, title)
    print(f"\nplot written to {args.out}")


if __name__ == "__main__":
    main()
