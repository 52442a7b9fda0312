"""
Text discriminators for the GAN family: a CNN with several filter widths and a highway layer (SeqGAN,
RelGAN), a Transformer encoder, and an LSTM with one output per token (dense rewards, ScratchGAN).

Every discriminator reads the same input:

    tokens_or_onehots   (B, L) token ids, or (B, L, V) soft one-hots (the Gumbel-softmax relaxation)
    src, src_pad_mask   (B, S) the condition (a label token, a source sentence, or the single NULL token)
    pad_mask            (B, L) True at padding (positions after the end of a sequence)

Soft one-hots enter through the embedding as a matrix product, `onehots @ emb.weight`, which for a hard
one-hot is exactly the row lookup `emb(ids)`; so real data (ids) and relaxed fake data (soft one-hots) are
embedded by one and the same linear map, and the gradient reaches the generator through it.

The forward pass is split in two, `embed` then `score_embedded`. The WGAN-GP penalty is taken with respect
to interpolated (soft) one-hots, before the embedding, so that it constrains the embedding matrix too.

`forward` returns one logit per sequence, (B,). The LSTM discriminator also has `token_logits`, (B, L):
its output at position t has read only tokens 0..t (the LSTM runs left to right), so it scores every
prefix, which gives REINFORCE a reward at every step.

The condition is always read: the mean of its token embeddings, projected, is added to every position of
the input. For unconditional data the condition is the single NULL token, so this is a learned constant
bias, harmless.

Dropout can be given from outside: ``forward(..., dropout_mask=M)`` applies the mask M (``modules.models.noise``:
Bernoulli(1 - p) / (1 - p)) instead of drawing one, so that a training update can draw all its random numbers
before it runs (vectorised seeds need that). The CNN discriminator, whose one dropout sits on its pooled features,
takes masks (``dropout_mask_shape``); the Transformer and LSTM discriminators draw their own (several dropout sites)
and refuse a mask.

`minibatch_std=True` appends the ProGAN minibatch-standard-deviation feature: the spread of the
discriminator's features across the batch, a scalar shared by every row. It lets D see the batch as a
population (a collapsed generator gives a batch with a small spread) — which is what the batch-size
question of this package is about. Real and fake batches must then be scored in separate calls, and the
feature is computed per device under DDP (over the local batch).

This file must not import Lightning.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from modules.errors import ConfigError


def minibatch_std(features: Tensor, mask: Tensor | None = None) -> Tensor:
    """The mean over features of the across-batch standard deviation. -> a scalar.

    features: (B, F), or (B, L, F) with mask (B, L) True at padding (padded rows do not count).
    With one row the spread is 0: a batch of one carries no population information.
    """
    if features.dim() == 2:
        return features.std(dim=0, unbiased=False).mean()
    valid = (~mask).unsqueeze(-1).to(features.dtype)  # (B, L, 1)
    count = valid.sum(dim=0).clamp(min=1.0)  # (L, 1)
    mean = (features * valid).sum(dim=0) / count  # (L, F)
    var = (((features - mean) ** 2) * valid).sum(dim=0) / count  # (L, F)
    # the epsilon keeps the sqrt differentiable where the spread is 0
    std = torch.sqrt(var + 1e-8)  # (L, F)
    has_rows = (valid.sum(dim=0) > 0).to(features.dtype)  # (L, 1): positions where some row is real
    return (std * has_rows).sum() / (has_rows.sum() * features.size(-1)).clamp(min=1.0)


class Discriminator(nn.Module):
    """The shared input side: token/one-hot embedding, condition, masking. Subclasses score embeddings."""

    per_token = False  # True when token_logits gives a score per position (dense rewards)
    dropout_p = 0.0  # the drop probability of the dropout a given mask replaces (subclasses that take masks)

    def __init__(self, vocab_size: int, emb_dim: int, minibatch_std: bool = False, pad_id: int = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.emb_dim = emb_dim
        self.use_minibatch_std = minibatch_std
        self.pad_id = pad_id
        self.emb = nn.Embedding(vocab_size, emb_dim)
        self.cond_proj = nn.Linear(emb_dim, emb_dim)

    def embed(self, tokens_or_onehots: Tensor) -> Tensor:
        """(B, L) ids or (B, L, V) (soft) one-hots -> (B, L, E)."""
        if tokens_or_onehots.dtype in (torch.long, torch.int, torch.int32, torch.int64):
            return self.emb(tokens_or_onehots)
        if tokens_or_onehots.size(-1) != self.vocab_size:
            raise ValueError(f"one-hots must have {self.vocab_size} entries in the last dim, "
                             f"got {tuple(tokens_or_onehots.shape)}")
        return tokens_or_onehots.to(self.emb.weight.dtype) @ self.emb.weight  # (B, L, V) @ (V, E)

    def condition(self, src: Tensor, src_pad_mask: Tensor) -> Tensor:
        """Mean of the condition's token embeddings, projected. -> (B, E)"""
        real = (~src_pad_mask).unsqueeze(-1).to(self.emb.weight.dtype)  # (B, S, 1)
        mean = (self.emb(src) * real).sum(dim=1) / real.sum(dim=1).clamp(min=1.0)  # (B, E)
        return self.cond_proj(mean)

    def prepare(self, emb: Tensor, src: Tensor, src_pad_mask: Tensor, pad_mask: Tensor) -> Tensor:
        """Add the condition, zero the padding. (B, L, E) -> (B, L, E)"""
        x = emb + self.condition(src, src_pad_mask).unsqueeze(1)
        # zeroing (rather than masking later) makes padded positions identical for real and fake input,
        # so D cannot tell them apart by what a generator happened to put after its end token
        return x * (~pad_mask).unsqueeze(-1).to(x.dtype)

    def score_embedded(self, emb: Tensor, src: Tensor, src_pad_mask: Tensor, pad_mask: Tensor,
                       dropout_mask: Tensor | None = None) -> Tensor:
        """(B, L, E) input embeddings -> (B,) sequence logits."""
        raise NotImplementedError

    def forward(self, tokens_or_onehots: Tensor, src: Tensor, src_pad_mask: Tensor, pad_mask: Tensor,
                dropout_mask: Tensor | None = None) -> Tensor:
        """-> (B,) one logit per sequence (higher = more real). ``dropout_mask`` (``dropout_mask_shape``): the
        dropout to apply in training instead of drawing one."""
        return self.score_embedded(self.embed(tokens_or_onehots), src, src_pad_mask, pad_mask, dropout_mask)

    def dropout_mask_shape(self, batch_size: int) -> tuple[int, ...] | None:
        """The shape of the dropout mask one call on ``batch_size`` rows takes, or None where there is nothing to
        draw (no dropout). A discriminator whose dropout cannot be given from outside raises NotImplementedError."""
        if any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.modules()):
            raise NotImplementedError(f"{type(self).__name__} draws its own dropout (several sites); only the CNN "
                                      "discriminator takes dropout masks from outside")
        return None

    def _refuse_mask(self, dropout_mask: Tensor | None) -> None:
        if dropout_mask is not None:
            raise ValueError(f"{type(self).__name__} draws its own dropout and takes no dropout_mask")

    def token_logits(self, tokens_or_onehots: Tensor, src: Tensor, src_pad_mask: Tensor,
                     pad_mask: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} scores whole sequences only (per_token=False)")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Highway(nn.Module):
    """y = t * relu(W x) + (1 - t) * x with a learned gate t (Srivastava et al. 2015), as in SeqGAN's D."""

    def __init__(self, dim: int):
        super().__init__()
        self.transform = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        t = torch.sigmoid(self.gate(x))
        return t * F.relu(self.transform(x)) + (1.0 - t) * x


class CNNDiscriminator(Discriminator):
    """SeqGAN/RelGAN CNN: parallel 1-D convolutions of several widths, max-pooled over time, a highway
    layer, dropout, one linear output."""

    def __init__(self, vocab_size: int, emb_dim: int = 64, filter_sizes: Sequence[int] = (2, 3, 4, 5),
                 num_filters: int = 64, dropout: float = 0.25, minibatch_std: bool = False, pad_id: int = 0):
        super().__init__(vocab_size, emb_dim, minibatch_std, pad_id)
        if not filter_sizes or min(filter_sizes) < 1:
            raise ConfigError(f"filter_sizes must be a non-empty list of widths >= 1, got {filter_sizes}")
        self.filter_sizes = tuple(filter_sizes)
        self.convs = nn.ModuleList([nn.Conv1d(emb_dim, num_filters, k) for k in self.filter_sizes])
        feat = num_filters * len(self.filter_sizes)
        self.highway = Highway(feat)
        self.drop = nn.Dropout(dropout)
        self.dropout_p = float(dropout)
        self.features = feat
        self.head = nn.Linear(feat + int(minibatch_std), 1)

    def dropout_mask_shape(self, batch_size: int) -> tuple[int, ...] | None:
        return (batch_size, self.features) if self.dropout_p > 0 else None

    def score_embedded(self, emb, src, src_pad_mask, pad_mask, dropout_mask=None):
        x = self.prepare(emb, src, src_pad_mask, pad_mask).transpose(1, 2)  # (B, E, L)
        width = max(self.filter_sizes)
        if x.size(-1) < width:  # sequences shorter than the widest filter: pad with zeros (= padding)
            x = F.pad(x, (0, width - x.size(-1)))
        pooled = [F.relu(conv(x)).amax(dim=-1) for conv in self.convs]  # each (B, num_filters)
        h = self.highway(torch.cat(pooled, dim=-1))  # (B, F)
        if dropout_mask is not None and self.training:
            h = h * dropout_mask  # the mask of the same distribution self.drop would draw
        else:
            h = self.drop(h)
        if self.use_minibatch_std:
            h = torch.cat([h, minibatch_std(h).expand(h.size(0), 1)], dim=-1)  # (B, F + 1)
        return self.head(h).squeeze(-1)  # (B,)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm self-attention block. Attention is written out (not F.scaled_dot_product_attention)
    because WGAN-GP differentiates D's input gradient once more, and the fused CPU kernels have no
    double backward."""

    def __init__(self, dim: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln_1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, d_ff), nn.GELU(), nn.Linear(d_ff, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_pad: Tensor) -> Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=-1)
        q, k, v = (t.view(B, L, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, L, hd)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, H, L, L)
        att = att.masked_fill(key_pad[:, None, None, :], float("-inf")).softmax(dim=-1)
        y = (self.drop(att) @ v).transpose(1, 2).reshape(B, L, C)  # (B, L, C)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.mlp(self.ln_2(x)))


class TransformerDiscriminator(Discriminator):
    """A small pre-LayerNorm Transformer encoder (bidirectional); the masked mean of its outputs is scored."""

    def __init__(self, vocab_size: int, emb_dim: int = 64, n_heads: int = 4, n_layers: int = 2, d_ff: int = 128,
                 dropout: float = 0.1, max_len: int = 256, minibatch_std: bool = False, pad_id: int = 0):
        super().__init__(vocab_size, emb_dim, minibatch_std, pad_id)
        if emb_dim % n_heads != 0:
            raise ConfigError(f"emb_dim ({emb_dim}) must be divisible by n_heads ({n_heads})")
        self.max_len = max_len
        self.pos_emb = nn.Embedding(max_len, emb_dim)
        self.blocks = nn.ModuleList([EncoderBlock(emb_dim, n_heads, d_ff, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(emb_dim)
        self.head = nn.Linear(emb_dim + int(minibatch_std), 1)

    def score_embedded(self, emb, src, src_pad_mask, pad_mask, dropout_mask=None):
        self._refuse_mask(dropout_mask)
        B, L, _ = emb.shape
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds the discriminator's max_len={self.max_len}")
        x = self.prepare(emb, src, src_pad_mask, pad_mask) + self.pos_emb(torch.arange(L, device=emb.device))
        # a fully padded row would leave attention with no key: let such rows attend to everything
        # (their output is discarded by the masked mean anyway)
        key_pad = pad_mask & ~pad_mask.all(dim=1, keepdim=True)  # (B, L)
        for block in self.blocks:
            x = block(x, key_pad)
        h = self.ln_f(x)  # (B, L, E)
        valid = (~pad_mask).unsqueeze(-1).to(h.dtype)
        pooled = (h * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)  # (B, E)
        if self.use_minibatch_std:
            pooled = torch.cat([pooled, minibatch_std(pooled).expand(B, 1)], dim=-1)
        return self.head(pooled).squeeze(-1)  # (B,)


class LSTMDiscriminator(Discriminator):
    """A left-to-right LSTM with one logit per token (ScratchGAN): position t is judged on tokens 0..t.

    The sequence logit (`forward`) is the mean of the token logits over the real positions."""

    per_token = True

    def __init__(self, vocab_size: int, emb_dim: int = 64, hidden_dim: int = 64, num_layers: int = 1,
                 dropout: float = 0.1, minibatch_std: bool = False, pad_id: int = 0):
        super().__init__(vocab_size, emb_dim, minibatch_std, pad_id)
        self.lstm = nn.LSTM(emb_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim + int(minibatch_std), 1)

    def token_logits_embedded(self, emb, src, src_pad_mask, pad_mask) -> Tensor:
        """(B, L, E) -> (B, L) one logit per position (0 at padding)."""
        h, _ = self.lstm(self.prepare(emb, src, src_pad_mask, pad_mask))  # (B, L, H)
        h = self.drop(h)
        if self.use_minibatch_std:
            s = minibatch_std(h, pad_mask)
            h = torch.cat([h, s.expand(h.size(0), h.size(1), 1)], dim=-1)  # (B, L, H + 1)
        return self.head(h).squeeze(-1).masked_fill(pad_mask, 0.0)  # (B, L)

    def token_logits(self, tokens_or_onehots, src, src_pad_mask, pad_mask) -> Tensor:
        return self.token_logits_embedded(self.embed(tokens_or_onehots), src, src_pad_mask, pad_mask)

    def score_embedded(self, emb, src, src_pad_mask, pad_mask, dropout_mask=None):
        self._refuse_mask(dropout_mask)
        logits = self.token_logits_embedded(emb, src, src_pad_mask, pad_mask)  # (B, L)
        valid = (~pad_mask).to(logits.dtype)
        return (logits * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)  # (B,)


def build_discriminator(kind: str, vocab_size: int, *, emb_dim: int = 64, hidden_dim: int = 64,
                        filter_sizes: Sequence[int] = (2, 3, 4, 5), num_filters: int = 64, n_heads: int = 4,
                        n_layers: int = 2, dropout: float = 0.25, max_len: int = 256,
                        minibatch_std: bool = False) -> Discriminator:
    """One of "cnn", "transformer", "lstm"; arguments a kind does not use are ignored."""
    if kind == "cnn":
        return CNNDiscriminator(vocab_size, emb_dim, filter_sizes, num_filters, dropout, minibatch_std)
    if kind == "transformer":
        return TransformerDiscriminator(vocab_size, emb_dim, n_heads, n_layers, 2 * hidden_dim, dropout, max_len,
                                        minibatch_std)
    if kind == "lstm":
        return LSTMDiscriminator(vocab_size, emb_dim, hidden_dim, n_layers, dropout, minibatch_std)
    raise ConfigError(f"discriminator must be 'cnn', 'transformer' or 'lstm', got {kind!r}")
