"""``gvt sample``: detokenized text from a checkpoint of either family, with the vocabulary stored in it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

# CheckpointError, load_weights and read_checkpoint are importable from here as before (they live in the library)
from modules.checkpoints import CheckpointError, load_model, load_weights, read_checkpoint  # noqa: F401
from modules.data.vocab import NULL_ID
from modules.errors import ConfigError
from modules.files import atomic_write_text
from modules.sampling import check_sampling_args


def condition_tensor(model, condition: Optional[str], num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``src`` rows for ``num`` samples: <null>, a label token, or a tokenized source sentence."""
    kind = model._data_info.get("condition", "none")
    vocab = model.vocab
    if kind == "none":
        if condition is not None:
            raise ConfigError("--condition was given, but this model is unconditional (trained with condition 'none')")
        ids = [[NULL_ID]] * num
    elif kind == "label":
        if condition is None:  # cycle through the classes so every label is represented
            ids = [[vocab.label_ids[i % len(vocab.label_ids)]] for i in range(num)]
        else:
            if condition not in vocab.labels:
                raise ConfigError(f"--condition {condition!r} is not a label of this model; labels: {vocab.labels}")
            ids = [[vocab.label_id(condition)]] * num
    else:
        if not condition:
            raise ConfigError("this model is conditioned on a source sentence: pass --condition 'SOURCE TEXT'")
        tokens = vocab.encode(model.tokenizer.tokenize(condition))
        if not tokens:
            raise ConfigError("--condition is empty after tokenization")
        ids = [tokens] * num
    src = torch.tensor(ids, dtype=torch.long)
    return src, torch.zeros_like(src, dtype=torch.bool)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gvt sample", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="a .ckpt of either family")
    p.add_argument("--num-samples", type=int, default=10)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--condition", default=None, help="a label name or a source sentence, for conditional models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default=None, help="write the samples here (one per line) instead of stdout")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_sampling_args(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    model = load_model(args.checkpoint)
    src, mask = condition_tensor(model, args.condition, args.num_samples)
    gen = torch.Generator().manual_seed(args.seed)
    lines = []
    for i in range(0, args.num_samples, args.batch_size):
        out = model.sample(src[i : i + args.batch_size], mask[i : i + args.batch_size],
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           greedy=args.greedy, generator=gen)
        lines += [model.to_text(ids) for ids in model.decode_samples(out.tokens, out.lengths)]
    text = "\n".join(lines) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        atomic_write_text(out, text)  # never a half-written output under the final name
        print(f"wrote {len(lines)} samples to {out}", file=sys.stderr)
    return 0
