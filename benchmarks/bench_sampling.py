"""
Benchmark: sampling speed of the shared sampler, with the incremental step cache vs without it.

The standard oracle setting: 10,000 sequences of exactly 20 tokens over a vocabulary of 5,005 ids
(5,000 words + 5 special tokens). Two generators, both untrained (speed does not depend on the weights):
- the LSTM generator, embedding and hidden 32 (the SeqGAN / RelGAN size);
- a small encoder-decoder Transformer, d_model 64, 2 encoder + 2 decoder layers.

"cached" is modules.sampling.generate (KV cache for the Transformer, (h, c) for the LSTM).
"uncached" is the same sampling rule, but every step re-runs the net's forward on the whole prefix,
which is what decoding costs without a cache. It is timed on a subset and scaled linearly to the full
count (the cost is linear in the number of batches); the printout says so.

    python benchmarks/bench_sampling.py [--num-samples 10000] [--uncached-samples 1000] [--threads 2]
"""

import argparse
import time

import torch

from modules.nets.lstm_generator import LSTMGenerator
from modules.nets.transformer import EncoderDecoderTransformer, TransformerConfig
from modules.sampling import (
    BOS_ID,
    DEFAULT_BANNED_IDS,
    EOS_ID,
    NULL_ID,
    banned_mask,
    generate_in_batches,
    process_logits,
    sample_from_probs,
)


@torch.no_grad()
def generate_uncached(net, src, src_pad_mask, length, generator):
    """Baseline: sample `length` tokens by re-running forward on the growing prefix (no cache)."""
    B = src.size(0)
    prefix = torch.full((B, 1), BOS_ID, dtype=torch.long)
    banned = None
    for _ in range(length):
        logits = net(src, src_pad_mask, prefix)[:, -1, :]  # (B, V), all earlier positions recomputed
        if banned is None:
            banned = banned_mask(logits.size(-1), DEFAULT_BANNED_IDS)
            banned[EOS_ID] = True  # as min_new_tokens = length does in the cached run
        # the very same draw as the cached sampler, so only the cache differs between the two timings
        probs = torch.softmax(process_logits(logits, banned=banned), dim=-1)
        next_tok = sample_from_probs(probs, generator)  # (B,)
        prefix = torch.cat([prefix, next_tok.unsqueeze(1)], dim=1)
    return prefix[:, 1:]


def time_cached(net, num_samples, batch_size, length):
    start = time.perf_counter()
    out = generate_in_batches(net, torch.tensor([NULL_ID]), num_samples, batch_size,
                              max_new_tokens=length, min_new_tokens=length,
                              generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    assert out.tokens.shape == (num_samples, length)
    return seconds


def time_uncached(net, num_samples, batch_size, length):
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for first in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - first)
        src = torch.full((n, 1), NULL_ID)
        tokens = generate_uncached(net, src, src == 0, length, generator)
        assert tokens.shape == (n, length)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--uncached-samples", type=int, default=1_000, help="subset timed without cache")
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--vocab-size", type=int, default=5_005)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    nets = {
        "LSTM (emb/hidden 32)": LSTMGenerator(args.vocab_size, emb_dim=32, hidden_dim=32),
        "Transformer (d 64, 2+2 layers)": EncoderDecoderTransformer(TransformerConfig(
            vocab_size=args.vocab_size, d_model=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2,
            d_ff=256, dropout=0.0, max_len=64)),
    }
    scale = args.num_samples / args.uncached_samples
    print(f"{args.num_samples} samples x {args.length} tokens, vocab {args.vocab_size}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"uncached: timed on {args.uncached_samples} samples, scaled x{scale:g} to {args.num_samples}\n")
    print(f"{'generator':32s} {'params':>9s} {'cached s':>9s} {'uncached s':>11s} {'speedup':>8s} {'samples/s':>10s}")
    for name, net in nets.items():
        net.eval()
        time_cached(net, args.batch_size, args.batch_size, args.length)  # warm-up (allocator, kernels)
        cached = time_cached(net, args.num_samples, args.batch_size, args.length)
        uncached = time_uncached(net, args.uncached_samples, args.batch_size, args.length) * scale
        print(f"{name:32s} {net.num_parameters():9,d} {cached:9.2f} {uncached:11.2f} "
              f"{uncached / cached:7.1f}x {args.num_samples / cached:10,.0f}")


if __name__ == "__main__":
    main()
