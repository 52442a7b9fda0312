"""``gvt sample``: detokenized text from a checkpoint of either family, with the vocabulary stored in it."""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path
from typing import Optional

import torch

from modules.files import atomic_write_text
from modules.models.base import CHECKPOINT_KEY


class CheckpointError(ValueError):
    """A checkpoint file cannot be used as given."""


def family_classes() -> dict:
    from modules.models import RNNSeq2Seq, TransformerSeq2Seq

    classes = {"transformer": TransformerSeq2Seq, "rnn": RNNSeq2Seq}
    try:
        from modules.models import TextGAN

        classes["gan"] = TextGAN
    except ImportError:
        pass
    return classes


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint dict as safely as torch allows: ``weights_only=True`` (no arbitrary pickled code)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not p.exists() else f"checkpoint {path} is not a file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a torch checkpoint): {err}") from None
    except Exception as err:  # weights_only refused a pickled object: not one of ours
        raise CheckpointError(f"checkpoint {path} holds objects that cannot be loaded safely: {err}") from None


def load_model(path: str, map_location: str = "cpu"):
    """Any checkpoint of either family, with its vocabulary and tokenizer restored."""
    ckpt = read_checkpoint(path)
    info = ckpt.get(CHECKPOINT_KEY)
    if info is None or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} was not written by gan-vs-transformer (no vocabulary in it)")
    classes = family_classes()
    family = info.get("family")
    if family not in classes:
        raise CheckpointError(f"checkpoint {path} is of unknown family {family!r}; known: {sorted(classes)}")
    model = classes[family].load_from_checkpoint(path, map_location=map_location, weights_only=True)
    model.eval()
    return model


def load_weights(model, path: str) -> None:
    """Weights, vocabulary and tokenizer of a checkpoint into a built ``model`` of the same family and shape (the
    checkpoint's family and vocabulary are checked by the model's ``on_load_checkpoint``)."""
    ckpt = read_checkpoint(path)
    if "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} holds no model weights (no state_dict)")
    model.on_load_checkpoint(ckpt)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit this model's settings: {err}") from None


def condition_tensor(model, condition: Optional[str], num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``src`` rows for ``num`` samples: <null>, a label token, or a tokenized source sentence."""
    from modules.data.vocab import NULL_ID

    kind = model._data_info.get("condition", "none")
    vocab = model.vocab
    if kind == "none":
        if condition is not None:
            raise ValueError("--condition was given, but this model is unconditional (trained with condition 'none')")
        ids = [[NULL_ID]] * num
    elif kind == "label":
        if condition is None:  # cycle through the classes so every label is represented
            ids = [[vocab.label_ids[i % len(vocab.label_ids)]] for i in range(num)]
        else:
            if condition not in vocab.labels:
                raise ValueError(f"--condition {condition!r} is not a label of this model; labels: {vocab.labels}")
            ids = [[vocab.label_id(condition)]] * num
    else:
        if not condition:
            raise ValueError("this model is conditioned on a source sentence: pass --condition 'SOURCE TEXT'")
        tokens = vocab.encode(model.tokenizer.tokenize(condition))
        if not tokens:
            raise ValueError("--condition is empty after tokenization")
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
    try:
        from modules.sampling import check_sampling_args

        if args.num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
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
    except (ValueError, KeyError) as err:
        print(f"gvt sample: error: {err}", file=sys.stderr)
        return 2
    text = "\n".join(lines) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        atomic_write_text(out, text)  # never a half-written output under the final name
        print(f"wrote {len(lines)} samples to {out}", file=sys.stderr)
    return 0
