"""Drawing from categorical distributions: one place for the oracle's and the models' samplers."""

import torch
from torch import Tensor


def sample_from_probs(probs: Tensor, generator: torch.Generator | None = None,
                      uniforms: Tensor | None = None) -> Tensor:
    """One draw per row of probs (B, V) by inversion of the cumulative distribution. -> (B,)

    Why not torch.multinomial: it spends one random number per vocabulary entry, which at V = 5,005
    makes it ~20x slower than this (one uniform per row); sampling would dominate decoding time.
    Same generator seed, same draws. Ids of probability 0 (banned or truncated) are never drawn.
    ``uniforms`` (B, 1): U(0, 1) numbers drawn beforehand (``draw_uniforms``) instead of from ``generator``."""
    cdf = probs.cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]  # (B, 1), 1 up to rounding
    if uniforms is None:
        uniforms = draw_uniforms(probs.size(0), generator, probs.device, probs.dtype)
    u = uniforms.to(probs.dtype) * total
    # keep u strictly below the total so that some id always has cdf > u
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    # the first id whose cdf exceeds u; a zero-probability id never does (its cdf equals its predecessor's)
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


def draw_uniforms(rows: int, generator: torch.Generator | None = None, device=None,
                  dtype: torch.dtype = torch.float32, steps: int | None = None) -> Tensor:
    """The uniforms ``sample_from_probs`` consumes: (rows, 1), or (steps, rows, 1) for that many draws ahead."""
    shape = (rows, 1) if steps is None else (steps, rows, 1)
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)
