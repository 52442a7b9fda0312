"""
An LSTM encoder-decoder (seq2seq), the architecture the Transformer replaced, written to be read.

- `attention="none"`: the classic context-vector seq2seq (Sutskever et al. 2014): the encoder's final (h, c)
  of every layer becomes the decoder's initial state, and that is all the decoder ever sees of the source.
- `attention="additive"` or `"dot"`: global attention over every encoder state (Luong et al. 2015, without
  input feeding), scored additively (Bahdanau et al. 2015: v^T tanh(W_q h_t + W_k e_s)) or by a dot product
  (Luong's "dot": h_t . e_s). The decoder state h_t after reading y_{t-1} attends over the encoder outputs
  e_1..e_S, and the output is read from tanh(W_c [context_t; h_t]). The decoder still starts from the encoder's
  final state, so the two variants differ only in the attention.

It speaks the step protocol of the shared sampler (modules/sampling.py) like every generator net:

    state = net.init_state(src, src_pad_mask, z=None)   # encode the source once
    logits, state = net.step(prev_tokens, state)        # (B,) -> (B, V) logits for the next token

and `cross_attention(src, src_pad_mask, tgt_in)` returns the teacher-forced logits with the attention weights
(B, T, S), the alignment a heatmap shows.

Sources must be right-padded (every data module's collate does that); the encoder packs them, so padding never
enters the recurrence and the final state is the one at each row's last real token.

This file must not import Lightning.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modules.nets.transformer import check_latent, sequence_log_prob

ATTENTION_KINDS = ("none", "additive", "dot")


@dataclass
class RNNSeq2SeqConfig:
    vocab_size: int
    emb_dim: int = 64
    hidden_dim: int = 128
    num_layers: int = 1  # encoder and decoder alike, so the encoder's final state fits the decoder
    dropout: float = 0.1  # on embeddings, between LSTM layers, and before the output layer
    attention: str = "none"  # "none" | "additive" | "dot"
    pad_id: int = 0

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, got {self.attention!r}")
        for name in ("vocab_size", "emb_dim", "hidden_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


@dataclass
class RNNState:
    """Decoding state for `LSTMSeq2Seq.step`. Tensors are never modified in place."""
    h: Tensor  # (L, B, H) decoder hidden state of every layer
    c: Tensor  # (L, B, H) decoder cell state
    memory: Tensor | None  # (B, S, H) encoder outputs; None without attention
    keys: Tensor | None  # (B, S, H) W_k memory for additive attention; None otherwise
    src_pad_mask: Tensor  # (B, S) True at padding


class LSTMSeq2Seq(nn.Module):

    def __init__(self, config: RNNSeq2SeqConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.z_dim = 0  # no latent input: this net is trained by maximum likelihood only
        E, H, L = config.emb_dim, config.hidden_dim, config.num_layers
        between_layers = config.dropout if L > 1 else 0.0  # nn.LSTM warns about dropout with one layer

        # one vocabulary serves source and target, so one embedding table reads both
        self.emb = nn.Embedding(config.vocab_size, E)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.LSTM(E, H, num_layers=L, batch_first=True, dropout=between_layers)
        self.decoder = nn.LSTM(E, H, num_layers=L, batch_first=True, dropout=between_layers)
        if config.attention == "additive":
            self.attn_query = nn.Linear(H, H, bias=False)
            self.attn_key = nn.Linear(H, H)
            self.attn_score = nn.Linear(H, 1, bias=False)
        if config.attention != "none":
            self.attn_combine = nn.Linear(2 * H, H)
        self.head = nn.Linear(H, config.vocab_size)
        # PyTorch's default initialisation is kept, as in the LSTM generator

    @property
    def has_attention(self) -> bool:
        return self.config.attention != "none"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- encoder

    def encode(self, src: Tensor, src_pad_mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """-> encoder outputs (B, S, H), zero at padding, and the final (h, c), each (L, B, H), taken at every
        row's last real token."""
        lengths = (~src_pad_mask).sum(dim=1)  # (B,)
        if bool((lengths == 0).any()):
            raise ValueError("every src row needs at least one real token")
        if src_pad_mask.size(1) > 1 and bool((src_pad_mask[:, :-1] & ~src_pad_mask[:, 1:]).any()):
            raise ValueError("src must be right-padded (padding only after the last real token)")
        x = self.drop(self.emb(src))  # (B, S, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder(packed)  # h, c come back in the batch's own row order
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, H)
        return memory, (h, c)

    # ---- attention

    def _attend(self, query: Tensor, memory: Tensor, keys: Tensor | None,
                src_pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, H) decoder states -> attentional states (B, T, H) and the weights (B, T, S)."""
        if self.config.attention == "dot":
            scores = query @ memory.transpose(1, 2)  # (B, T, S)
        else:  # additive: v^T tanh(W_q h_t + W_k e_s)
            mixed = torch.tanh(self.attn_query(query).unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, H)
            scores = self.attn_score(mixed).squeeze(-1)  # (B, T, S)
        # every row has a real source token (checked in encode), so no row is fully masked
        scores = scores.masked_fill(src_pad_mask.unsqueeze(1), float("-inf"))
        weights = F.softmax(scores.float(), dim=-1).to(memory.dtype)  # (B, T, S)
        context = weights @ memory  # (B, T, H)
        attended = torch.tanh(self.attn_combine(torch.cat([context, query], dim=-1)))  # (B, T, H)
        return attended, weights

    # ---- teacher forcing

    def _teacher_forced(self, src: Tensor, src_pad_mask: Tensor, tgt_in: Tensor,
                        z: Tensor | None) -> tuple[Tensor, Tensor | None]:
        check_latent(z, self.z_dim, src.size(0))
        memory, state = self.encode(src, src_pad_mask)
        out, _ = self.decoder(self.drop(self.emb(tgt_in)), state)  # (B, T, H)
        weights = None
        if self.has_attention:
            keys = self.attn_key(memory) if self.config.attention == "additive" else None
            out, weights = self._attend(out, memory, keys, src_pad_mask)
        return self.head(self.drop(out)), weights  # (B, T, V), (B, T, S) or None

    def forward(self, src: Tensor, src_pad_mask: Tensor, tgt_in: Tensor, z: Tensor | None = None) -> Tensor:
        """tgt_in = tgt[:, :-1] (BOS ...). -> logits (B, T, V) for tgt[:, 1:]."""
        return self._teacher_forced(src, src_pad_mask, tgt_in, z)[0]

    def cross_attention(self, src: Tensor, src_pad_mask: Tensor, tgt_in: Tensor,
                        z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) and attention weights (B, T, S): row t is what the decoder read to
        predict tgt[:, t + 1]; each row sums to 1 and is 0 at padding."""
        if not self.has_attention:
            raise ValueError("this net has attention='none': its decoder reads only the encoder's final state, "
                             "so there are no attention weights to show")
        logits, weights = self._teacher_forced(src, src_pad_mask, tgt_in, z)
        return logits, weights

    def log_prob(self, src: Tensor, src_pad_mask: Tensor, tgt: Tensor, tgt_pad_mask: Tensor,
                 z: Tensor | None = None) -> Tensor:
        """Sum of log p of tgt[:, 1:] (EOS included, padding excluded). -> (B,)"""
        logits = self(src, src_pad_mask, tgt[:, :-1], z)
        return sequence_log_prob(logits, tgt, tgt_pad_mask)

    # ---- incremental decoding

    def init_state(self, src: Tensor, src_pad_mask: Tensor, z: Tensor | None = None) -> RNNState:
        check_latent(z, self.z_dim, src.size(0))
        memory, (h, c) = self.encode(src, src_pad_mask)
        keys = self.attn_key(memory) if self.config.attention == "additive" else None
        return RNNState(h=h, c=c, memory=memory if self.has_attention else None, keys=keys,
                        src_pad_mask=src_pad_mask)

    def step(self, prev_tokens: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        """prev_tokens (B,) -> logits (B, V) for the next token, and the new state."""
        x = self.drop(self.emb(prev_tokens)).unsqueeze(1)  # (B, 1, E)
        out, (h, c) = self.decoder(x, (state.h, state.c))  # (B, 1, H)
        if self.has_attention:
            out, _ = self._attend(out, state.memory, state.keys, state.src_pad_mask)
        logits = self.head(self.drop(out[:, -1, :]))  # (B, V)
        return logits, replace(state, h=h, c=c)
