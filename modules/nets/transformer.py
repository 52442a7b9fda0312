"""
An encoder-decoder Transformer, written to be read: pre-LayerNorm blocks, all attention through
F.scaled_dot_product_attention, and an incremental decoding API with a key/value cache.

The same network serves both families of the package:
- the MLE family trains it with teacher forcing (`forward`, `log_prob`);
- the GAN family reuses it as a generator by setting `z_dim > 0`, which adds a latent input z.

Every generator net in the package decodes through the one shared sampler (modules/sampling.py) with
this step protocol:

    state = net.init_state(src, src_pad_mask, z=None)   # encode the condition once
    logits, state = net.step(prev_tokens, state)        # (B,) -> (B, V) logits for the next token

`step` returns a new state and leaves the old one usable, so a caller may branch several continuations
from one prefix (SeqGAN Monte Carlo rollouts) without copying anything.

This file must not import Lightning.
"""

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.errors import ConfigError


@dataclass
class TransformerConfig:
    vocab_size: int
    d_model: int = 128
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 512
    dropout: float = 0.1
    max_len: int = 256  # longest src or tgt sequence the positional table covers
    positional: str = "sinusoidal"  # "sinusoidal" | "learned"
    tie_embeddings: bool = True  # one matrix for encoder input, decoder input and output projection
    pad_id: int = 0
    z_dim: int = 0  # 0: no latent input at all; > 0: the GAN generator's z ~ N(0, I)

    def __post_init__(self):
        if self.d_model % self.n_heads != 0:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.positional not in ("sinusoidal", "learned"):
            raise ConfigError(f"positional must be 'sinusoidal' or 'learned', got {self.positional!r}")
        if self.z_dim < 0:
            raise ConfigError(f"z_dim must be >= 0, got {self.z_dim}")


# ----------------------------------------------------------------------------------------------------
# helpers shared by every generator net (the LSTM generator imports them too)


def sequence_log_prob(logits: Tensor, tgt: Tensor, tgt_pad_mask: Tensor) -> Tensor:
    """Sum of log p(tgt[:, 1:]) under teacher-forced `logits` (B, T-1, V); padding excluded. -> (B,)

    The full softmax over the vocabulary is used (no banned ids): the net's raw likelihood. The NLLs the
    package reports are taken under the distribution the model samples from instead (banned ids removed and
    renormalised, ``GeneratorModule.score_targets``).
    """
    targets = tgt[:, 1:]  # (B, T-1), the BOS is never predicted
    logp = F.log_softmax(logits.float(), dim=-1)  # float32 so sums over long sequences stay accurate
    token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    token_logp = token_logp.masked_fill(tgt_pad_mask[:, 1:], 0.0)
    return token_logp.sum(dim=1)


def check_latent(z: Tensor | None, z_dim: int, batch_size: int) -> None:
    """A net with z_dim > 0 needs z of shape (B, z_dim); a net with z_dim = 0 takes none."""
    if z_dim == 0:
        if z is not None:
            raise ValueError("this net has z_dim=0 and takes no z")
        return
    # no silent default: a zero z would quietly bias the conditioning ablation (Q3)
    if z is None:
        raise ValueError(f"this net has z_dim={z_dim}: pass z of shape (B, {z_dim})")
    if z.shape != (batch_size, z_dim):
        raise ValueError(f"z must have shape ({batch_size}, {z_dim}), got {tuple(z.shape)}")


def num_target_tokens(tgt_pad_mask: Tensor) -> Tensor:
    """How many tokens `sequence_log_prob` sums over per row (EOS counts, BOS does not). -> (B,)"""
    return (~tgt_pad_mask[:, 1:]).sum(dim=1)


# ----------------------------------------------------------------------------------------------------
# building blocks


class SinusoidalPositions(nn.Module):
    """The fixed sin/cos table of Vaswani et al. (2017)."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)  # (max_len, 1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
        # not persistent: it is a function of the config, so checkpoints need not carry it
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        return self.pe[positions]  # (T, C)


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None,
                       is_causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(hd)) v without dropout, as F.scaled_dot_product_attention computes it (causal: the
    mask aligned to the top-left corner, as there). (B, H, T, hd) x (B, H, S, hd) -> (B, H, T, hd)"""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
    if is_causal:
        causal = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class Attention(nn.Module):
    """Multi-head attention. Keys/values are projected separately from queries so that the same
    module serves self-attention, cross-attention, and cached decoding (where K/V come from a cache)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.d_model = config.d_model
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.kv_proj = nn.Linear(config.d_model, 2 * config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        # True: attention written out instead of the fused kernel, which torch.vmap cannot batch (vectorised
        # seeds, modules.models.seed_group, set it on their template; they run without dropout)
        self.explicit = False

    def split_heads(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, hd)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv_proj(x).split(self.d_model, dim=2)  # (B, T, C) each
        return self.split_heads(k), self.split_heads(v)  # (B, H, T, hd) each

    def forward(self, x: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        B, T, C = x.shape
        q = self.split_heads(self.q_proj(x))  # (B, H, T, hd)
        # attn_mask is boolean, True = may attend. Every query row keeps at least one key (src has a
        # real token; causal rows see themselves), so no row is fully masked and no NaN appears.
        if self.explicit:
            y = explicit_attention(q, k, v, attn_mask, is_causal)  # (B, H, T, hd)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                dropout_p=self.dropout if self.training else 0.0,
            )  # (B, H, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.out_proj(y))

    def weights(self, x: Tensor, k: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """The attention probabilities softmax(q k^T / sqrt(hd)) that `forward` applies (before attention
        dropout), computed explicitly for inspection; `forward` itself keeps the fused SDPA kernel. -> (B, H, T, S)"""
        q = self.split_heads(self.q_proj(x))  # (B, H, T, hd)
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.size(-1))  # (B, H, T, S)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        return torch.softmax(scores, dim=-1)


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff)
        self.proj = nn.Linear(config.d_ff, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class EncoderBlock(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        h = self.ln_1(x)
        k, v = self.attn.project_kv(h)
        x = x + self.attn(h, k, v, attn_mask=attn_mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class DecoderBlock(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.self_attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.cross_attn = Attention(config)
        self.ln_3 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, mem_k: Tensor, mem_v: Tensor, mem_mask: Tensor,
                cache: tuple[Tensor, Tensor] | None = None,
                cross_weights: list[Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Full sequence when `cache` is None (causal self-attention); otherwise x is one new position
        (B, 1, C) that attends to the cached keys/values plus itself. Returns the new self-attention K/V.
        A `cross_weights` list gets this block's cross-attention weights (B, H, T, S') appended."""
        h = self.ln_1(x)
        k, v = self.self_attn.project_kv(h)  # (B, H, T, hd)
        if cache is None:
            x = x + self.self_attn(h, k, v, is_causal=True)
        else:
            k = torch.cat([cache[0], k], dim=2)  # (B, H, t+1, hd)
            v = torch.cat([cache[1], v], dim=2)
            # one query at the newest position may see every cached key: no mask. (is_causal would be
            # wrong here: SDPA aligns its causal mask to the top-left corner.)
            x = x + self.self_attn(h, k, v)
        h = self.ln_2(x)
        if cross_weights is not None:
            cross_weights.append(self.cross_attn.weights(h, mem_k, mem_mask))
        x = x + self.cross_attn(h, mem_k, mem_v, attn_mask=mem_mask)
        x = x + self.mlp(self.ln_3(x))
        return x, (k, v)


@dataclass
class TransformerState:
    """Decoding state for `EncoderDecoderTransformer.step`. Tensors are never modified in place."""
    mem_kv: list[tuple[Tensor, Tensor]]  # per decoder layer, cross-attention K/V of the memory, (B, H, S', hd)
    mem_mask: Tensor  # (B, 1, 1, S') bool, True = real memory slot
    self_kv: list[tuple[Tensor, Tensor]]  # per decoder layer, K/V of the positions decoded so far, (B, H, t, hd)
    pos: int  # position of the next input token (0 = the BOS)


# ----------------------------------------------------------------------------------------------------
# the model


def position_embedding(config: TransformerConfig) -> nn.Module:
    """Positions 0 .. max_len - 1 -> (T, d_model): fixed sinusoids or a learned table (``config.positional``)."""
    if config.positional == "sinusoidal":
        return SinusoidalPositions(config.max_len, config.d_model)
    return nn.Embedding(config.max_len, config.d_model)


def init_weights(module: nn.Module) -> None:
    """The package Transformer's initialisation (``module.apply(init_weights)``): N(0, 0.02) weights of linear
    and embedding layers, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


class EncoderDecoderTransformer(nn.Module):
    # The submodules that exist only with z_dim > 0: a run started from another run's weights keeps them fresh.
    latent_modules = ("z_proj", "ln_z")

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.z_dim = config.z_dim
        C = config.d_model

        self.tgt_emb = nn.Embedding(config.vocab_size, C)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # one vocabulary serves source and target, so one matrix can embed both and score the output
            self.src_emb = self.tgt_emb
        else:
            self.src_emb = nn.Embedding(config.vocab_size, C)
        self.pos_emb = position_embedding(config)
        self.drop = nn.Dropout(config.dropout)

        self.encoder = nn.ModuleList([EncoderBlock(config) for _ in range(config.n_encoder_layers)])
        self.ln_enc = nn.LayerNorm(C)
        self.decoder = nn.ModuleList([DecoderBlock(config) for _ in range(config.n_decoder_layers)])
        self.ln_f = nn.LayerNorm(C)

        if config.z_dim > 0:
            # z enters as one extra memory slot, prepended to the encoder output and never masked.
            # Why a memory slot rather than adding z to the decoder inputs: every decoder layer reads it
            # through cross-attention at every position, with its own learned weight, in the same way
            # it reads the condition; it cannot be washed out by the token embeddings, and the KV
            # cache needs nothing new (the slot's K/V are computed once with the rest of the memory).
            self.z_proj = nn.Linear(config.z_dim, C)
            self.ln_z = nn.LayerNorm(C)  # puts the slot on the same scale as the normalised memory

        self.apply(init_weights)
        if config.tie_embeddings:
            self.lm_head.weight = self.tgt_emb.weight  # tie after init so both point at one tensor

    def num_parameters(self) -> int:
        # parameters() yields a tied tensor once, so shared embeddings are not double counted
        return sum(p.numel() for p in self.parameters())

    # ---- embeddings

    def _embed(self, emb: nn.Embedding, ids: Tensor, start: int = 0) -> Tensor:
        T = ids.size(1)
        if start + T > self.config.max_len:
            raise ValueError(f"sequence position {start + T - 1} exceeds max_len={self.config.max_len}")
        positions = torch.arange(start, start + T, device=ids.device)
        # scale tokens by sqrt(d_model) (Vaswani et al.) so that, with the 0.02 init, token identity is
        # not drowned by the unit-scale sinusoidal positions
        x = emb(ids) * math.sqrt(self.config.d_model) + self.pos_emb(positions)  # (B, T, C)
        return self.drop(x)

    def _check_z(self, z: Tensor | None, batch_size: int):
        check_latent(z, self.z_dim, batch_size)

    # ---- encoder

    def encode(self, src: Tensor, src_pad_mask: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """-> memory (B, S', C) and memory_pad_mask (B, S') bool True at padding;
        S' = S, or S + 1 with the z slot first."""
        B, _S = src.shape
        self._check_z(z, B)
        attn_mask = ~src_pad_mask[:, None, None, :]  # (B, 1, 1, S), True = real key
        x = self._embed(self.src_emb, src)  # (B, S, C)
        for block in self.encoder:
            x = block(x, attn_mask)
        memory = self.ln_enc(x)  # (B, S, C)
        memory_pad_mask = src_pad_mask
        if z is not None:
            z_slot = self.ln_z(self.z_proj(z.to(memory.dtype))).unsqueeze(1)  # (B, 1, C)
            memory = torch.cat([z_slot, memory], dim=1)  # (B, 1+S, C)
            memory_pad_mask = torch.cat([src_pad_mask.new_zeros(B, 1), src_pad_mask], dim=1)
        return memory, memory_pad_mask

    # ---- teacher forcing

    def forward(self, src: Tensor, src_pad_mask: Tensor, tgt_in: Tensor, z: Tensor | None = None,
                cross_weights: list[Tensor] | None = None) -> Tensor:
        """tgt_in = tgt[:, :-1] (BOS ...). -> logits (B, T, V) for tgt[:, 1:].

        Padding in tgt_in needs no mask: under the causal mask a real position never sees a later pad,
        and the logits at pad positions are ignored by the loss. A `cross_weights` list gets each decoder
        layer's cross-attention weights appended (see `cross_attention`)."""
        memory, memory_pad_mask = self.encode(src, src_pad_mask, z)
        mem_mask = ~memory_pad_mask[:, None, None, :]  # (B, 1, 1, S')
        x = self._embed(self.tgt_emb, tgt_in)  # (B, T, C)
        for block in self.decoder:
            mem_k, mem_v = block.cross_attn.project_kv(memory)
            x, _ = block(x, mem_k, mem_v, mem_mask, cross_weights=cross_weights)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def cross_attention(self, src: Tensor, src_pad_mask: Tensor, tgt_in: Tensor,
                        z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) and every decoder layer's cross-attention weights per head,
        (B, n_decoder_layers, H, T, S'): row t is what position t read to predict tgt[:, t + 1]. With z the
        memory's first slot (index 0) is the latent, so S' = S + 1."""
        weights: list[Tensor] = []
        logits = self(src, src_pad_mask, tgt_in, z, cross_weights=weights)
        return logits, torch.stack(weights, dim=1)

    def log_prob(self, src: Tensor, src_pad_mask: Tensor, tgt: Tensor, tgt_pad_mask: Tensor,
                 z: Tensor | None = None) -> Tensor:
        """Sum of log p of tgt[:, 1:] (EOS included, padding excluded). -> (B,)"""
        logits = self(src, src_pad_mask, tgt[:, :-1], z)
        return sequence_log_prob(logits, tgt, tgt_pad_mask)

    # ---- incremental decoding

    def init_state(self, src: Tensor, src_pad_mask: Tensor, z: Tensor | None = None) -> TransformerState:
        memory, memory_pad_mask = self.encode(src, src_pad_mask, z)
        mem_kv = [block.cross_attn.project_kv(memory) for block in self.decoder]
        B, H, hd = src.size(0), self.config.n_heads, self.config.d_model // self.config.n_heads
        empty = memory.new_zeros(B, H, 0, hd)
        return TransformerState(
            mem_kv=mem_kv,
            mem_mask=~memory_pad_mask[:, None, None, :],
            self_kv=[(empty, empty) for _ in self.decoder],
            pos=0,
        )

    def step(self, prev_tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """prev_tokens (B,) -> logits (B, V) for the next token, and the new state."""
        x = self._embed(self.tgt_emb, prev_tokens.unsqueeze(1), start=state.pos)  # (B, 1, C)
        new_self_kv = []
        for block, (mem_k, mem_v), cache in zip(self.decoder, state.mem_kv, state.self_kv):
            x, kv = block(x, mem_k, mem_v, state.mem_mask, cache=cache)
            new_self_kv.append(kv)
        logits = self.lm_head(self.ln_f(x[:, -1, :]))  # (B, V)
        return logits, replace(state, self_kv=new_self_kv, pos=state.pos + 1)
