"""Synthetic oracles: randomly initialised LSTMs that generate data and score any sequence exactly.

The unconditional oracle is the SeqGAN / Texygen benchmark: an LSTM whose weights are all drawn from N(0, 1)
with a fixed seed. Sequences have a fixed length L and no end token; the first input is the oracle's own start
token. ``log_prob`` is exact, so the quality of generated text is measured as NLL_oracle.

The conditional oracle adds ``strength * c`` to every input embedding, where ``c`` is a condition vector: the
embedding of a class (label -> sequence) or the mean embedding of a source sequence (source -> sequence). At
``strength = 0`` the output does not depend on the condition at all, so the true mutual information is 0.

Token ids here are the oracle's own (0 .. vocab_size-1); the data module maps them to the shared vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.errors import ConfigError
from modules.nets.categorical import sample_from_probs


@dataclass(frozen=True)
class OracleConfig:
    vocab_size: int = 5000
    seq_len: int = 20
    emb_dim: int = 32
    hidden_dim: int = 32
    seed: int = 0
    num_classes: int = 0  # > 0: label-conditional oracle
    source_conditional: bool = False  # True: source-sequence-conditional oracle
    condition_strength: float = 1.0
    # the oracle's output logits are multiplied by this (> 1: a sharper, lower-entropy oracle with the same
    # weights; 1: the SeqGAN / Texygen oracle)
    sharpness: float = 1.0

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "emb_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"oracle {name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 0:
            raise ConfigError(f"oracle num_classes must be >= 0, got {self.num_classes}")
        if self.num_classes and self.source_conditional:
            raise ConfigError("an oracle is conditioned on a label or on a source sequence, not both")
        if self.condition_strength < 0:
            raise ConfigError(f"condition_strength must be >= 0, got {self.condition_strength}")
        if not self.sharpness > 0:
            raise ConfigError(f"oracle sharpness must be > 0, got {self.sharpness}")


class LSTMOracle(nn.Module):
    def __init__(self, config: OracleConfig):
        super().__init__()
        self.config = config
        V, E, H = config.vocab_size, config.emb_dim, config.hidden_dim
        gen = torch.Generator().manual_seed(config.seed)
        normal = lambda *shape: nn.Parameter(torch.randn(*shape, generator=gen), requires_grad=False)  # noqa: E731
        self.start_embedding = normal(E)
        self.embedding = normal(V, E)
        self.lstm = nn.LSTM(E, H, batch_first=True)
        for p in self.lstm.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen))
            p.requires_grad_(False)
        self.out_weight = normal(V, H)
        self.out_bias = normal(V)
        # Condition embeddings are drawn after the base weights, so conditional and unconditional oracles with
        # the same seed share their language model and differ only by the condition path.
        self.class_embedding = normal(config.num_classes, E) if config.num_classes else None
        self.source_embedding = normal(V, E) if config.source_conditional else None

    @property
    def is_conditional(self) -> bool:
        return self.class_embedding is not None or self.source_embedding is not None

    def condition_vector(self, condition: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """(B,) class ids or (B, S) source ids -> (B, E) input offset, or None when unconditional."""
        if not self.is_conditional:
            if condition is not None:
                raise ValueError("this oracle is unconditional but a condition was given")
            return None
        if condition is None:
            raise ValueError("this oracle is conditional: pass the condition (class ids or source ids)")
        if self.class_embedding is not None:
            vec = self.class_embedding[condition]  # (B, E)
        else:
            # Scaled so the source vector has unit variance per component like a class embedding.
            vec = self.source_embedding[condition].mean(dim=1) * math.sqrt(condition.size(1))  # (B, E)
        return self.config.condition_strength * vec

    def _inputs(self, prev_tokens: torch.Tensor, cond_vec: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.embedding[prev_tokens]  # (B, T, E)
        if cond_vec is not None:
            x = x + cond_vec[:, None, :]
        return x

    def logits(self, tokens: torch.Tensor, condition: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, L) tokens -> (B, L, V) next-token logits, teacher-forced from the start token."""
        B = tokens.size(0)
        cond_vec = self.condition_vector(condition)
        x = self._inputs(tokens[:, :-1], cond_vec)  # (B, L-1, E)
        start = self.start_embedding.expand(B, 1, -1)
        if cond_vec is not None:
            start = start + cond_vec[:, None, :]
        h, _ = self.lstm(torch.cat([start, x], dim=1))  # (B, L, H)
        return self.config.sharpness * F.linear(h, self.out_weight, self.out_bias)  # (B, L, V)

    @torch.no_grad()
    def log_prob(self, tokens: torch.Tensor, condition: Optional[torch.Tensor] = None, batch_size: int = 2048) -> torch.Tensor:
        """Exact log p(tokens | condition), summed over the L tokens: (N, L) -> (N,)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (N, L), got shape {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.config.vocab_size):
            raise ValueError(f"oracle token ids must lie in [0, {self.config.vocab_size})")
        out = []
        for i in range(0, tokens.size(0), batch_size):
            chunk = tokens[i : i + batch_size]
            cond = None if condition is None else condition[i : i + batch_size]
            logp = F.log_softmax(self.logits(chunk, cond), dim=-1)
            out.append(logp.gather(-1, chunk.unsqueeze(-1)).squeeze(-1).sum(dim=1))
        return torch.cat(out) if out else tokens.new_zeros(0, dtype=torch.float)

    @torch.no_grad()
    def sample(
        self,
        num: int,
        generator: torch.Generator,
        condition: Optional[torch.Tensor] = None,
        batch_size: int = 2048,
    ) -> torch.Tensor:
        """Draw ``num`` sequences of length L: (num, L). ``condition`` has one row per sample."""
        chunks = []
        for i in range(0, num, batch_size):
            B = min(batch_size, num - i)
            cond = None if condition is None else condition[i : i + B]
            cond_vec = self.condition_vector(cond)
            x = self.start_embedding.expand(B, 1, -1)
            if cond_vec is not None:
                x = x + cond_vec[:, None, :]
            state, tokens = None, []
            for _ in range(self.config.seq_len):
                h, state = self.lstm(x, state)  # (B, 1, H)
                logits = self.config.sharpness * F.linear(h[:, -1], self.out_weight, self.out_bias)  # (B, V)
                probs = F.softmax(logits, dim=-1)
                nxt = sample_from_probs(probs, generator).unsqueeze(1)  # (B, 1)
                tokens.append(nxt)
                x = self._inputs(nxt, cond_vec)
            chunks.append(torch.cat(tokens, dim=1))
        return torch.cat(chunks) if chunks else torch.zeros(0, self.config.seq_len, dtype=torch.long)

    @torch.no_grad()
    def mutual_information(
        self,
        num_samples: int,
        generator: torch.Generator,
        sample_conditions,
        num_contrast: int = 64,
    ) -> tuple[float, float]:
        """Monte Carlo estimate of I(c; y) in nats under this oracle, with its standard error.

        ``sample_conditions(n)`` draws n conditions from the data's condition distribution.
        Label oracles: exact inner marginal p(y) = mean_k p(y | k) over the K (uniformly drawn) classes, so the
        estimate is unbiased. Source oracles: p(y) is estimated from the true source plus ``num_contrast - 1``
        other sources (an InfoNCE-style lower bound, at most log(num_contrast)); the docs say so.
        """
        cond = sample_conditions(num_samples)
        y = self.sample(num_samples, generator, cond)
        logp_true = self.log_prob(y, cond)  # (N,)
        if self.class_embedding is not None:
            K = self.config.num_classes
            per_class = torch.stack(
                [self.log_prob(y, torch.full((num_samples,), k, dtype=torch.long)) for k in range(K)], dim=1
            )  # (N, K)
            log_marginal = torch.logsumexp(per_class, dim=1) - math.log(K)
        elif self.source_embedding is not None:
            others = [logp_true]
            for _ in range(num_contrast - 1):
                others.append(self.log_prob(y, sample_conditions(num_samples)))
            log_marginal = torch.logsumexp(torch.stack(others, dim=1), dim=1) - math.log(num_contrast)
        else:
            return 0.0, 0.0
        pointwise = logp_true - log_marginal  # (N,)
        return pointwise.mean().item(), (pointwise.std() / math.sqrt(num_samples)).item()
