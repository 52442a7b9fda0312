"""
A language-model body with two heads, for transfer learning the ULMFiT way (Howard & Ruder 2018): train the body
as a language model, then put a new classification head on the very same body.

Two bodies, each built from the package's own pieces so that "the same body" means the architecture the lecture
compares elsewhere:

- `LSTMBody`: the RNN family's LSTM (an embedding, dropout, `nn.LSTM` with the sizes of `RNNSeq2SeqConfig`),
  reading left to right as ULMFiT's AWD-LSTM does.
- `TransformerEncoderBody`: the Transformer's encoder blocks (`EncoderBlock`, token embedding scaled by
  sqrt(d_model), sinusoidal or learned positions, final LayerNorm; the sizes of `TransformerConfig`, its
  encoder layers), run with a causal mask so that it can be trained as a language model: position t sees
  positions <= t only. The classifier keeps the mask, so the body computes the same function it was pretrained
  to compute.

Both map token ids (B, T) with a padding mask (B, T) to hidden states (B, T, H), and never read past padding.

Heads:

- `LanguageModelNet`: body + a linear layer to the vocabulary (tied to the embedding where the sizes allow it:
  always for the Transformer, for the LSTM when emb_dim == hidden_dim). Next-token logits (B, T, V).
- `ClassifierNet`: body + concat pooling (the last real position's state, the max and the mean over real
  positions, as ULMFiT) -> dropout -> linear to the classes. Logits (B, num_classes).

Transfer is `classifier.body.load_state_dict(lm.body.state_dict())`: the head is new, the body is the LM's.

This file must not import Lightning.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modules.nets.rnn_seq2seq import RNNSeq2SeqConfig
from modules.nets.transformer import EncoderBlock, TransformerConfig, init_weights, position_embedding

BODY_KINDS = ("lstm", "transformer")


def _check_right_padded(pad_mask: Tensor) -> Tensor:
    """-> lengths (B,); refuses empty rows and padding before a real token."""
    lengths = (~pad_mask).sum(dim=1)  # (B,)
    if bool((lengths == 0).any()):
        raise ValueError("every row needs at least one real token")
    if pad_mask.size(1) > 1 and bool((pad_mask[:, :-1] & ~pad_mask[:, 1:]).any()):
        raise ValueError("token ids must be right-padded (padding only after the last real token)")
    return lengths


class LSTMBody(nn.Module):
    """The RNN family's LSTM as a left-to-right body: (B, T) ids -> (B, T, hidden_dim) states, zero at padding."""

    def __init__(self, config: RNNSeq2SeqConfig):
        super().__init__()
        self.config = config
        self.out_dim = config.hidden_dim
        between_layers = config.dropout if config.num_layers > 1 else 0.0  # nn.LSTM warns about it with one layer
        self.emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.emb_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True,
                            dropout=between_layers)

    @property
    def embedding(self) -> nn.Embedding:
        return self.emb

    def forward(self, ids: Tensor, pad_mask: Tensor) -> Tensor:
        lengths = _check_right_padded(pad_mask)
        x = self.drop(self.emb(ids))  # (B, T, E)
        # packed, so padding never enters the recurrence
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.size(1))  # (B, T, H)
        return self.drop(out)


class TransformerEncoderBody(nn.Module):
    """The Transformer's encoder stack, causal: (B, T) ids -> (B, T, d_model) states. Uses ``n_encoder_layers``
    of the config; the decoder settings are ignored."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.out_dim = config.d_model
        C = config.d_model
        self.tok_emb = nn.Embedding(config.vocab_size, C)
        self.pos_emb = position_embedding(config)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([EncoderBlock(config) for _ in range(config.n_encoder_layers)])
        self.ln_f = nn.LayerNorm(C)
        self.apply(init_weights)  # the package Transformer's initialisation

    @property
    def embedding(self) -> nn.Embedding:
        return self.tok_emb

    def forward(self, ids: Tensor, pad_mask: Tensor) -> Tensor:
        _check_right_padded(pad_mask)
        B, T = ids.shape
        if T > self.config.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.config.max_len}")
        positions = torch.arange(T, device=ids.device)
        # sqrt(d_model) as in the package's Transformer: token identity is not drowned by the positions
        x = self.drop(self.tok_emb(ids) * math.sqrt(self.config.d_model) + self.pos_emb(positions))  # (B, T, C)
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()  # (T, T), True = may attend
        # (B, 1, T, T): causal and never a padded key; every query keeps position 0 (a real token)
        attn_mask = causal[None, None] & ~pad_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.ln_f(x)  # (B, T, C)


def make_body(kind: str, vocab_size: int, **args) -> nn.Module:
    """A body of ``kind`` (``lstm``: ``RNNSeq2SeqConfig`` arguments; ``transformer``: ``TransformerConfig``
    arguments, its ``n_encoder_layers`` the body's depth)."""
    if kind == "lstm":
        return LSTMBody(RNNSeq2SeqConfig(vocab_size=vocab_size, **args))
    if kind == "transformer":
        return TransformerEncoderBody(TransformerConfig(vocab_size=vocab_size, **args))
    raise ValueError(f"body must be one of {', '.join(BODY_KINDS)}, got {kind!r}")


class LanguageModelNet(nn.Module):
    """Body + next-token head: (B, T) ids -> (B, T, V) logits for the token after each position."""

    def __init__(self, body: nn.Module, vocab_size: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.out_dim, vocab_size, bias=False)
        if body.embedding.embedding_dim == body.out_dim:
            self.head.weight = body.embedding.weight  # tied: one matrix reads and writes the vocabulary
        else:
            nn.init.normal_(self.head.weight, mean=0.0, std=0.02)

    def forward(self, ids: Tensor, pad_mask: Tensor) -> Tensor:
        return self.head(self.body(ids, pad_mask))  # (B, T, V)


def concat_pool(states: Tensor, pad_mask: Tensor) -> Tensor:
    """ULMFiT's concat pooling: (B, T, H) states -> (B, 3H) = [state at the last real position; max over real
    positions; mean over real positions]."""
    real = (~pad_mask).unsqueeze(-1)  # (B, T, 1)
    lengths = real.sum(dim=1)  # (B, 1)
    last = states.gather(1, (lengths - 1).unsqueeze(-1).expand(-1, 1, states.size(-1))).squeeze(1)  # (B, H)
    maxed = states.masked_fill(~real, float("-inf")).amax(dim=1)  # (B, H)
    mean = (states * real).sum(dim=1) / lengths  # (B, H)
    return torch.cat([last, maxed, mean], dim=-1)


class ClassifierNet(nn.Module):
    """Body + a new classification head: (B, T) ids -> (B, num_classes) logits."""

    def __init__(self, body: nn.Module, num_classes: int, dropout: float = 0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.body = body
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(3 * body.out_dim, num_classes)

    def forward(self, ids: Tensor, pad_mask: Tensor) -> Tensor:
        pooled = concat_pool(self.body(ids, pad_mask), pad_mask)  # (B, 3H)
        return self.head(self.drop(pooled))  # (B, num_classes)
