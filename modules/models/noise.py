"""The random numbers of one training update, drawn before the update runs.

A family's training update reads its randomness from an ``UpdateNoise`` drawn first, in one fixed order (the latent
z, then the token noise of every generation step, then the discriminator's dropout masks), instead of drawing
inside its networks as it goes. Given its noise, an update is a deterministic function of the weights and the
batch. That is what lets S seeds of one configuration train as one vectorised model
(``modules.models.seed_group``): each seed's noise is drawn from a generator that holds the RNG state its single run
would have, by the very function its single run calls, so seed s inside a group draws the numbers of the single run
of seed s.

What is drawn here is exactly what the single run draws: a single run passes ``generator=None`` (torch's global
RNG, seeded by ``seed_everything``), a group passes one ``torch.Generator`` per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor


@dataclass
class UpdateNoise:
    """Every random number one player update consumes (a GAN's D update or G update, an MLE update).

    z: (B, z_dim) the latent input, None for a net without one.
    tokens: the noise of each of the L generation steps, (L, B, V) Gumbel noise (Gumbel-softmax) or (L, B, 1)
        uniforms (sampling, REINFORCE); None where the update generates nothing (MLE).
    d_dropout: (2, B, F) the discriminator's dropout masks, scaled by 1 / (1 - p), for its two calls of the
        update (D's update: real, then fake; G's update: fake, then real); None where D has no dropout to draw.
    swap: (B,) bool, D's update with shuffled labels (``discriminator.labels: shuffled``): the rows whose real and
        fake sequence trade places; None otherwise.
    """

    z: Optional[Tensor] = None
    tokens: Optional[Tensor] = None
    d_dropout: Optional[Tensor] = None
    swap: Optional[Tensor] = None

    def as_dict(self) -> dict[str, Tensor]:
        """The tensors that are there, by name (what ``torch.vmap`` maps over)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, tensors: dict[str, Tensor]) -> "UpdateNoise":
        return cls(**tensors)

    def d_mask(self, call: int) -> Optional[Tensor]:
        """The dropout mask of D's ``call``-th call in this update (0 or 1), or None."""
        return None if self.d_dropout is None else self.d_dropout[call]


def dropout_masks(count: int, shape: tuple[int, ...], p: float, generator: Optional[torch.Generator] = None,
                  device=None) -> Optional[Tensor]:
    """(count, *shape) masks of inverted dropout with drop probability p: Bernoulli(1 - p) / (1 - p), as
    ``nn.Dropout`` applies in training; None when p = 0 (nothing is dropped, nothing is drawn)."""
    if p == 0:
        return None
    if not 0 < p < 1:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    keep = 1.0 - p
    masks = torch.empty((count, *shape), device=device).bernoulli_(keep, generator=generator)
    return masks.div_(keep)
