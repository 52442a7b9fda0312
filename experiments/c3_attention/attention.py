"""C3: what attention shows. Cross-attention heatmaps and alignment accuracy on tasks with a known alignment.

The lecture's claim: an RNN seq2seq gives no view of which inputs an output depended on (its decoder reads one
context vector); attention weights show the alignment. Measured here:

- ``attention_maps``: the teacher-forced cross-attention of a net, (B, T, S) averaged and, for the Transformer,
  per layer and head (B, L, H, T, S). Row t is what the decoder read to predict target token t + 1 (the word at
  output position t; the last real row predicts the EOS).
- ``alignment_accuracy``: on a ``TaskDataModule`` (copy, reverse, sort with distinct words), the fraction of output
  words whose argmax attention falls on the true source position, per example (so a report can put seed intervals
  on it), beside two baselines: chance, a uniform guess (1 / source length), and the **positional baseline**
  (``positional_baseline``), the best fixed source position per (source length, output position), fitted on the
  training split: the prior a model that never reads the words could follow. On copy and reverse it is the diagonal
  or anti-diagonal and scores 1, so attention there shows nothing a positional rule would not; on sort it is about
  chance, so attention above it has found the words.
- ``masking_test``: is the argmax attention *faithful*, does the output depend on what it points at? Per output
  word (teacher-forced), the attended source token is replaced by ``<unk>`` and, as the control, a random other
  source token is; the share of output words whose prediction changes, for each. Faithful attention changes the
  output far more often when its own token is masked.
- ``write_heatmaps``: PNG heatmaps for given source/target pairs (one per pair for the RNN; the Transformer's
  mean over layers and heads, and a grid of every layer's heads), and ``log_heatmaps`` to W&B through the run's
  loggers when a WandbLogger is among them. ``AttentionHeatmaps`` is the callback that does both at every
  validation epoch end of a ``gvt fit`` (``trainer.callbacks``).

A model without attention (``RNNSeq2Seq`` with ``attention: none``) has no weights to show: these functions
refuse it with a ValueError that says so, which is the lecture's point, not a gap.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from experiments.core.plots import save_figure
from modules.data.batch import Example, collate
from modules.data.vocab import PAD_ID, UNK_ID
from modules.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class AttentionMaps:
    mean: Tensor  # (B, T, S) the RNN's weights, or the Transformer's mean over decoder layers and heads
    heads: Optional[Tensor]  # (B, L, H, T, S) per decoder layer and head (Transformer); None for the RNN


def _net(model):
    return getattr(model, "generator", model)


@torch.no_grad()
def _forward(model, src: Tensor, src_pad_mask: Tensor, tgt_in: Tensor) -> tuple[Optional[Tensor], AttentionMaps]:
    """Teacher-forced logits (B, T, V) and cross-attention maps, in eval mode."""
    net = _net(model)
    if not hasattr(net, "cross_attention"):
        raise ValueError(f"{type(net).__name__} has no cross-attention to show")
    was_training = net.training
    net.eval()
    try:
        logits, weights = net.cross_attention(src, src_pad_mask, tgt_in)
    finally:
        net.train(was_training)
    weights = weights.float()
    if weights.dim() == 3:  # the RNN: one attention per output position
        return logits, AttentionMaps(mean=weights, heads=None)
    if getattr(net, "z_dim", 0) > 0:
        weights = weights[..., 1:]  # the latent z's memory slot is not a source position
    return logits, AttentionMaps(mean=weights.mean(dim=(1, 2)), heads=weights)


def attention_maps(model, src: Tensor, src_pad_mask: Tensor, tgt_in: Tensor) -> AttentionMaps:
    """Teacher-forced cross-attention of ``model`` (a LightningModule with a ``generator`` net, or the net)."""
    return _forward(model, src, src_pad_mask, tgt_in)[1]


# ---- alignment accuracy -------------------------------------------------------------------------------------------

def alignment_hits(weights: Tensor, src_lens: Sequence[int], alignments: Sequence[Sequence[int]]) -> Tensor:
    """Per-example alignment accuracy (N,) from attention weights (N, T, S): the fraction of output words t
    (t < len(alignment)) whose argmax over source positions is the true position ``alignment[t]``.

    Only real source positions (< src_len) compete for the argmax, so padding can never win."""
    accuracy = []
    for w, n_src, alignment in zip(weights, src_lens, alignments, strict=True):
        n_out = len(alignment)
        if n_out == 0:
            raise ValueError("an example with no output words has no alignment to score")
        if n_out > w.size(0) or n_src > w.size(1):
            raise ValueError(f"weights {tuple(w.shape)} are too small for {n_out} output words and {n_src} source "
                             "positions")
        predicted = w[:n_out, :n_src].argmax(dim=-1)  # (n_out,)
        accuracy.append((predicted == torch.as_tensor(alignment)).float().mean())
    return torch.stack(accuracy)


def positional_prior(fit: Sequence[Sequence[int]]) -> dict[tuple[int, int], int]:
    """The best fixed source position per (source length, output position) over the alignments ``fit``: the most
    frequent true position there (the lowest on a tie, so the prior is deterministic)."""
    counts: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for alignment in fit:
        for t, j in enumerate(alignment):
            counts[(len(alignment), t)][j] += 1
    return {key: max(c.items(), key=lambda kv: (kv[1], -kv[0]))[0] for key, c in counts.items()}


def positional_hits(fit: Sequence[Sequence[int]], scored: Sequence[Sequence[int]]) -> Tensor:
    """Per-example accuracy (N,) on the alignments ``scored`` of the positional prior fitted on ``fit``.

    A (length, position) that ``fit`` never holds (a longer test range) takes the prior of ``scored`` itself: the
    best any fixed rule could do there in hindsight, so the baseline errs on the side of being hard to beat."""
    prior = positional_prior(fit)
    hindsight = positional_prior(scored)
    accuracy = []
    for alignment in scored:
        if not alignment:
            raise ValueError("an example with no output words has no alignment to score")
        n = len(alignment)
        hits = [prior.get((n, t), hindsight[(n, t)]) == j for t, j in enumerate(alignment)]
        accuracy.append(sum(hits) / n)
    return torch.tensor(accuracy)


def positional_baseline(dm, split: str = "test", max_examples: Optional[int] = None,
                        fit_split: str = "train") -> Tensor:
    """Per-example accuracy (N,) of the best fixed positional pattern on ``split`` of a ``TaskDataModule``, fitted
    on ``fit_split`` (``positional_hits``): 1 on copy and reverse, about chance on sort with distinct words."""
    fit = [dm.alignment(ex.src) for ex in dm.examples(fit_split)]
    return positional_hits(fit, [dm.alignment(ex.src) for ex in dm.examples(split)[:max_examples]])


@dataclass
class AlignmentResult:
    accuracy: Tensor  # (N,) per example: fraction of output words attended at their true source position
    chance: Tensor  # (N,) the expected accuracy of a uniformly random argmax: 1 / source length
    src_len: Tensor  # (N,)
    positional: Optional[Tensor] = None  # (N,) the positional baseline's accuracy (positional_baseline)

    def summary(self) -> dict:
        out = {"alignment_accuracy": float(self.accuracy.mean()), "alignment_chance": float(self.chance.mean()),
               "num_examples": int(self.accuracy.numel())}
        if self.positional is not None:
            out["alignment_positional"] = float(self.positional.mean())
        return out


def alignment_accuracy(model, dm, split: str = "test", batch_size: int = 128,
                       max_examples: Optional[int] = None, layer: Optional[int] = None) -> AlignmentResult:
    """Alignment accuracy of a trained model on a ``TaskDataModule`` split, per example, with chance and the
    positional baseline beside it.

    The attention is read on the true target (teacher forcing), so it scores where the model looks, not whether
    its output is right (``modules.data.tasks.greedy_task_scores`` does that). Transformer: the mean over every
    decoder layer and head, or over the heads of decoder ``layer`` alone."""
    examples = dm.examples(split)[:max_examples]
    alignments = [dm.alignment(ex.src) for ex in examples]  # first: a task without one is refused before any work
    device = next(_net(model).parameters()).device
    accuracy = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate(chunk).to(device)
        maps = attention_maps(model, batch.src, batch.src_pad_mask, batch.tgt_in)
        weights = maps.mean if layer is None or maps.heads is None else maps.heads[:, layer].mean(dim=1)
        accuracy.append(alignment_hits(weights.cpu(), [len(ex.src) for ex in chunk],
                                       alignments[start:start + batch_size]))
    src_len = torch.tensor([len(ex.src) for ex in examples])
    return AlignmentResult(torch.cat(accuracy), 1.0 / src_len.float(), src_len,
                           positional_baseline(dm, split, max_examples))


# ---- faithfulness: masking the attended source token -------------------------------------------------------------

@dataclass
class MaskingResult:
    attended: Tensor  # (N,) per example: share of output words whose prediction changes, attended token masked
    random: Tensor  # (N,) the same with a random other source token masked (the control)
    skipped: int  # examples left out: a single source word has no other token for the control

    def summary(self) -> dict:
        return {"mask_flip_attended": float(self.attended.mean()) if self.attended.numel() else math.nan,
                "mask_flip_random": float(self.random.mean()) if self.random.numel() else math.nan,
                "mask_examples": int(self.attended.numel()), "mask_skipped": self.skipped}


def _predict(logits: Tensor, banned: Sequence[int]) -> Tensor:
    if banned:
        logits = logits.clone()
        logits[..., list(banned)] = -math.inf
    return logits.argmax(dim=-1)


@torch.no_grad()
def masking_test(model, dm, split: str = "test", batch_size: int = 32, max_examples: Optional[int] = None,
                 seed: int = 0, mask_id: int = UNK_ID) -> MaskingResult:
    """Does masking the attended source token change the output more often than masking a random other one?

    Per example and output word t (teacher forcing on the true target, so every row sees the same prefix): the
    prediction is the argmax of the logits at row t (tokens a generator never emits banned). The source token at
    the argmax of row t's attention (the Transformer's mean over layers and heads) is replaced by ``mask_id``
    (``<unk>``, a token the tasks never train on, so it carries no word) and the prediction at row t is taken
    again; the control replaces a uniformly drawn other source position instead (``seed``). Both rates are shares
    of the example's output words whose prediction changed. Only examples with at least two source words count."""
    examples = dm.examples(split)[:max_examples]
    kept = [ex for ex in examples if len(ex.src) >= 2]
    vocab = getattr(dm, "vocab", None)
    # the prediction greedy decoding would make: the sampler bans what a generator never emits (<unk> among them)
    banned = sorted(set(vocab.non_output_ids if vocab is not None else []) | {mask_id})
    device = next(_net(model).parameters()).device
    gen = torch.Generator().manual_seed(seed)
    attended, control = [], []
    for start in range(0, len(kept), batch_size):
        chunk = kept[start:start + batch_size]
        batch = collate(chunk).to(device)
        logits, maps = _forward(model, batch.src, batch.src_pad_mask, batch.tgt_in)
        if logits is None:
            raise ValueError(f"{type(_net(model)).__name__}.cross_attention gives no logits: nothing to mask against")
        base = _predict(logits, banned).cpu()
        rows, srcs, which = [], [], []  # one masked copy of a source per (example, output word, kind)
        for i, ex in enumerate(chunk):
            n_src, n_out = len(ex.src), len(ex.tgt)
            for t in range(n_out):
                j_att = int(maps.mean[i, t, :n_src].argmax())
                j_rnd = int(torch.randint(n_src - 1, (1,), generator=gen))
                j_rnd += j_rnd >= j_att  # uniform over the other positions
                for kind, j in ((0, j_att), (1, j_rnd)):
                    src = batch.src[i].clone()
                    src[j] = mask_id
                    rows.append((i, t))
                    srcs.append(src)
                    which.append(kind)
        flips = {(i, kind): [] for i in range(len(chunk)) for kind in (0, 1)}
        for s in range(0, len(srcs), 512):  # the masked copies, in batches of their own
            idx = range(s, min(s + 512, len(srcs)))
            ex_of = torch.tensor([rows[k][0] for k in idx], device=device)
            out, _ = _forward(model, torch.stack([srcs[k] for k in idx]), batch.src_pad_mask[ex_of],
                              batch.tgt_in[ex_of])
            pred = _predict(out, banned).cpu()
            for r, k in enumerate(idx):
                i, t = rows[k]
                flips[(i, which[k])].append(float(pred[r, t] != base[i, t]))
        for i in range(len(chunk)):
            attended.append(sum(flips[(i, 0)]) / len(flips[(i, 0)]))
            control.append(sum(flips[(i, 1)]) / len(flips[(i, 1)]))
    return MaskingResult(torch.tensor(attended), torch.tensor(control), len(examples) - len(kept))


# ---- heatmaps -----------------------------------------------------------------------------------------------------

def plot_attention(weights: Tensor, src_tokens: Sequence[str], out_tokens: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """One heatmap PNG: rows = output tokens, columns = source tokens, colour = attention weight in [0, 1]."""
    from matplotlib.figure import Figure  # a Figure with its own Agg canvas: no global pyplot/backend state

    T, S = len(out_tokens), len(src_tokens)
    fig = Figure(figsize=(min(2.0 + 0.35 * S, 16), min(1.5 + 0.35 * T, 16)))
    ax = fig.add_subplot()
    _draw(ax, weights[:T, :S], src_tokens, out_tokens, title)
    fig.colorbar(ax.images[0], ax=ax, fraction=0.04)
    return save_figure(fig, path, dpi=100)


def plot_attention_heads(heads: Tensor, src_tokens: Sequence[str], out_tokens: Sequence[str], path: str | Path,
                         title: str = "") -> Path:
    """A grid of heatmaps from (L, H, T, S) weights: one row per decoder layer, one column per head."""
    from matplotlib.figure import Figure

    L, H = heads.shape[:2]
    T, S = len(out_tokens), len(src_tokens)
    cell_w, cell_h = min(1.0 + 0.25 * S, 6), min(0.8 + 0.25 * T, 6)
    fig = Figure(figsize=(cell_w * H, cell_h * L + 0.5))
    axes = fig.subplots(L, H, squeeze=False)
    for layer in range(L):
        for head in range(H):
            _draw(axes[layer][head], heads[layer, head, :T, :S], src_tokens, out_tokens,
                  f"layer {layer} head {head}", labels=layer == L - 1 or head == 0)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=100)


def _draw(ax, weights: Tensor, src_tokens, out_tokens, title: str, labels: bool = True) -> None:
    ax.imshow(weights.detach().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src_tokens)), labels=list(src_tokens) if labels else [], rotation=90, fontsize=7)
    ax.set_yticks(range(len(out_tokens)), labels=list(out_tokens) if labels else [], fontsize=7)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=8)


def _tokens(vocab, ids: Sequence[int]) -> list[str]:
    return [vocab.itos[i] for i in ids if i != PAD_ID]


def write_heatmaps(model, pairs: Sequence[Example], out_dir: str | Path, prefix: str = "attention",
                   vocab=None) -> dict[str, Path]:
    """Heatmap PNGs for source/target pairs (``Example``: src ids, target word ids without BOS/EOS).

    Writes ``{prefix}_{i}.png`` per pair: the RNN's attention, or the Transformer's mean over layers and heads;
    and for the Transformer also ``{prefix}_{i}_heads.png`` (every layer's heads). Returns name -> path.
    ``vocab`` defaults to the model's (set by training or by its checkpoint)."""
    vocab = vocab or getattr(model, "vocab", None)
    if vocab is None:
        raise ConfigError("no vocabulary: pass vocab= or a model trained or loaded with one")
    if not pairs:
        raise ConfigError("no source/target pairs to draw")
    batch = collate(list(pairs)).to(next(_net(model).parameters()).device)
    maps = attention_maps(model, batch.src, batch.src_pad_mask, batch.tgt_in)
    written = {}
    for i, example in enumerate(pairs):
        src_tokens = _tokens(vocab, example.src)
        out_tokens = _tokens(vocab, example.tgt) + ["<eos>"]  # row t predicts target token t + 1
        name = f"{prefix}_{i}"
        kind = "mean over layers and heads" if maps.heads is not None else "attention"
        written[name] = plot_attention(maps.mean[i], src_tokens, out_tokens, Path(out_dir) / f"{name}.png",
                                       title=f"{type(_net(model)).__name__}: {kind}")
        if maps.heads is not None:
            written[f"{name}_heads"] = plot_attention_heads(maps.heads[i], src_tokens, out_tokens,
                                                            Path(out_dir) / f"{name}_heads.png")
    return written


def encode_pairs(model, pairs: Sequence[tuple[str, str]]) -> list[Example]:
    """Text pairs (source, target) -> Examples, with the model's own tokenizer and vocabulary."""
    examples = []
    for src_text, tgt_text in pairs:
        src = model.vocab.encode(model.tokenizer.tokenize(src_text))
        tgt = model.vocab.encode(model.tokenizer.tokenize(tgt_text))
        if not src:
            raise ConfigError(f"source {src_text!r} is empty after tokenization")
        examples.append(Example(src, tgt))
    return examples


def log_heatmaps(loggers, images: dict[str, Path], step: Optional[int] = None, prefix: str = "attention") -> bool:
    """Log PNGs as W&B images through every logger that can (a WandbLogger); True if one did."""
    logged = False
    for logger in loggers:
        if not hasattr(logger, "log_image"):
            continue
        try:
            for name, path in images.items():
                logger.log_image(key=f"{prefix}/{name}", images=[str(path)], step=step)
            logged = True
        except Exception as err:  # tracking must never take the run down
            log.warning("could not log the attention heatmaps to W&B: %s", err)
    return logged


class AttentionHeatmaps(pl.Callback):
    """At every validation epoch end: heatmaps of the first ``num_pairs`` validation pairs, written to
    ``<run>/attention/step<N>/`` and logged to W&B when a WandbLogger runs. Add it to a config's
    ``trainer.callbacks`` (``class_path: experiments.c3_attention.attention.AttentionHeatmaps``)."""

    def __init__(self, num_pairs: int = 2):
        if num_pairs < 1:
            raise ConfigError(f"AttentionHeatmaps.num_pairs must be >= 1, got {num_pairs}")
        self.num_pairs = num_pairs

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.datamodule is None:
            return
        if not getattr(_net(pl_module), "has_attention", True):
            return  # the context-vector seq2seq has nothing to draw
        pairs = trainer.datamodule.examples("val")[: self.num_pairs]
        root = Path(getattr(trainer.loggers[0], "log_dir", None) or trainer.default_root_dir) if trainer.loggers \
            else Path(trainer.default_root_dir)
        images = write_heatmaps(pl_module, pairs, root / "attention" / f"step{trainer.global_step:07d}",
                                vocab=trainer.datamodule.vocab)
        log_heatmaps(trainer.loggers, images, step=trainer.global_step)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m experiments.c3_attention.attention --checkpoint CKPT --src TEXT --tgt TEXT [--src ... --tgt ...] --out DIR``"""
    import argparse

    from modules.checkpoints import load_model

    parser = argparse.ArgumentParser(prog="python -m experiments.c3_attention.attention",
                                     description="cross-attention heatmap PNGs of a checkpoint for source/target pairs")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--src", action="append", required=True, help="a source sentence (repeat for more pairs)")
    parser.add_argument("--tgt", action="append", required=True, help="its target sentence, in the same order")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--prefix", default="attention")
    args = parser.parse_args(argv)
    if len(args.src) != len(args.tgt):
        parser.error(f"--src was given {len(args.src)} times but --tgt {len(args.tgt)} times: give them in pairs")
    model = load_model(args.checkpoint)
    for path in write_heatmaps(model, encode_pairs(model, list(zip(args.src, args.tgt))), args.out,
                               prefix=args.prefix).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
