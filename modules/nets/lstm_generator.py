"""
The classic text-GAN generator (SeqGAN, RelGAN): an embedding, an LSTM, a linear readout.

It speaks the same API as the encoder-decoder Transformer (`forward`, `log_prob`, `init_state`, `step`),
so the GAN module, the metrics and the shared sampler treat both generators alike. The condition
(`src`: a source sentence, one label token, or one NULL token) and the latent z are read only once, into
the LSTM's initial (h, c); after that the generator sees nothing but its own previous tokens.

This file must not import Lightning.
"""

import torch
from torch import Tensor, nn

from modules.errors import ConfigError
from modules.nets.transformer import check_latent, sequence_log_prob


class LSTMGenerator(nn.Module):
    # The submodules that exist only with z_dim > 0: a run started from another run's weights keeps them fresh.
    latent_modules = ("z_proj",)

    def __init__(self, vocab_size: int, emb_dim: int = 32, hidden_dim: int = 32, num_layers: int = 1,
                 pad_id: int = 0, z_dim: int = 0):
        super().__init__()
        if z_dim < 0:
            raise ConfigError(f"z_dim must be >= 0, got {z_dim}")
        self.vocab_size = vocab_size
        self.emb_dim = emb_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.pad_id = pad_id
        self.z_dim = z_dim

        # one vocabulary serves the condition and the output, so one embedding table reads both
        self.emb = nn.Embedding(vocab_size, emb_dim)
        self.lstm = nn.LSTM(emb_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_dim, vocab_size)
        # condition -> initial (h, c) of every layer
        self.cond_proj = nn.Linear(emb_dim, 2 * num_layers * hidden_dim)
        if z_dim > 0:
            self.z_proj = nn.Linear(z_dim, 2 * num_layers * hidden_dim)
        # PyTorch's default initialisation is kept: it is what the text-GAN reference code uses

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_z(self, z: Tensor | None, batch_size: int):
        check_latent(z, self.z_dim, batch_size)

    def init_state(self, src: Tensor, src_pad_mask: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """-> (h, c), each (num_layers, B, hidden_dim)."""
        B = src.size(0)
        self._check_z(z, B)
        real = (~src_pad_mask).unsqueeze(-1).to(self.emb.weight.dtype)  # (B, S, 1)
        # mean over the real tokens only; src always has at least one, the clamp only guards misuse
        cond = (self.emb(src) * real).sum(dim=1) / real.sum(dim=1).clamp(min=1.0)  # (B, E)
        init = self.cond_proj(cond)  # (B, 2 * L * H)
        if z is not None:
            init = init + self.z_proj(z.to(init.dtype))
        init = init.view(B, 2, self.num_layers, self.hidden_dim).permute(1, 2, 0, 3)  # (2, L, B, H)
        h = torch.tanh(init[0]).contiguous()  # an LSTM's h always lies in (-1, 1); c is unbounded
        c = init[1].contiguous()
        return h, c

    def forward(self, src: Tensor, src_pad_mask: Tensor, tgt_in: Tensor, z: Tensor | None = None) -> Tensor:
        """tgt_in = tgt[:, :-1] (BOS ...). -> logits (B, T, V) for tgt[:, 1:]."""
        state = self.init_state(src, src_pad_mask, z)
        out, _ = self.lstm(self.emb(tgt_in), state)  # (B, T, H)
        return self.head(out)  # (B, T, V)

    def log_prob(self, src: Tensor, src_pad_mask: Tensor, tgt: Tensor, tgt_pad_mask: Tensor,
                 z: Tensor | None = None) -> Tensor:
        """Sum of log p of tgt[:, 1:] (EOS included, padding excluded). -> (B,)"""
        logits = self(src, src_pad_mask, tgt[:, :-1], z)
        return sequence_log_prob(logits, tgt, tgt_pad_mask)

    def step(self, prev_tokens: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """prev_tokens (B,) -> logits (B, V) for the next token, and the new (h, c)."""
        x = self.emb(prev_tokens).unsqueeze(1)  # (B, 1, E)
        out, state = self.lstm(x, state)  # (B, 1, H)
        return self.head(out[:, -1, :]), state  # (B, V)
