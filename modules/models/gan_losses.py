"""GAN losses on discriminator logits: standard (non-saturating), relativistic (RSGAN), hinge, WGAN-GP.

Pure torch, no Lightning. `d_real` and `d_fake` are (B,) logits of the discriminator (higher = more real);
each function returns a scalar to minimise.

    loss        discriminator                                   generator
    standard    -log s(d_r) - log(1 - s(d_f))                   -log s(d_f)            (non-saturating)
    rsgan       -log s(d_r - d_f)                                -log s(d_f - d_r)      (pairs row i with row i)
    hinge       relu(1 - d_r) + relu(1 + d_f)                    -d_f
    wgan-gp     d_f - d_r  (+ gp_weight * penalty: penalised_discriminator_loss)    -d_f

(s = sigmoid; -log s(x) = softplus(-x), computed that way for stability.)
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.errors import ConfigError

LossKind = Literal["standard", "rsgan", "hinge", "wgan-gp"]
LOSS_KINDS = ("standard", "rsgan", "hinge", "wgan-gp")


def _check(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ConfigError(f"loss must be one of {LOSS_KINDS}, got {kind!r}")


def discriminator_loss(kind: str, d_real: Tensor, d_fake: Tensor) -> Tensor:
    """The discriminator's loss (WGAN-GP without its penalty; see `gradient_penalty`)."""
    _check(kind)
    if kind == "standard":
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if kind == "rsgan":
        return F.softplus(-(d_real - d_fake)).mean()
    if kind == "hinge":
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    return d_fake.mean() - d_real.mean()


def generator_loss(kind: str, d_real: Tensor | None, d_fake: Tensor) -> Tensor:
    """The generator's loss. Only RSGAN needs `d_real` (the real logits, with no gradient to D)."""
    _check(kind)
    if kind == "standard":
        return F.softplus(-d_fake).mean()
    if kind == "rsgan":
        if d_real is None:
            raise ValueError("the relativistic loss needs the real logits for the generator too")
        return F.softplus(-(d_fake - d_real)).mean()
    return -d_fake.mean()  # hinge and WGAN share the generator loss


def gradient_penalty(score_fn: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x)||_2 - 1)^2] at x = a * real + (1 - a) * fake.

    real, fake: (B, ...) discriminator inputs in a continuous space; score_fn maps such inputs to (B,) logits.
    For text, tokens cannot be interpolated, but their (soft) one-hots (B, L, V) can (`penalty_onehots`):
    the penalty is then taken with respect to what the discriminator reads, through its embedding, so that
    the whole critic, embedding matrix included, is held to the Lipschitz constraint.
    One a ~ U(0, 1) per row. The graph is kept (create_graph) so the penalty trains D.
    """
    a = torch.rand(real.size(0), *([1] * (real.dim() - 1)), generator=generator, device=real.device,
                   dtype=real.dtype)
    x = (a * real.detach() + (1.0 - a) * fake.detach()).requires_grad_(True)
    scores = score_fn(x)  # (B,)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norms - 1.0) ** 2).mean()


def penalty_onehots(tokens_or_onehots: Tensor, pad_mask: Tensor, vocab_size: int) -> Tensor:
    """The end points WGAN-GP interpolates between: (B, L) ids or (B, L, V) (soft) one-hots -> (B, L, V) float
    one-hots, 0 at padding (as the Gumbel relaxation leaves ended rows), so that an interpolant's padding
    carries no token."""
    if tokens_or_onehots.dim() == 2:
        onehots = F.one_hot(tokens_or_onehots, vocab_size).float()  # (B, L, V)
    else:
        onehots = tokens_or_onehots.float()
    return onehots * (~pad_mask).unsqueeze(-1).to(onehots.dtype)


@torch.no_grad()
def discriminator_accuracy(kind: str, d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """(fraction of real rows judged real, fraction of fake rows judged fake).

    The standard and hinge losses put the decision boundary at logit 0. The relativistic loss and a WGAN
    critic are blind to a constant shift of every logit, so there a row is judged against the other
    population's mean: real if d_r > mean(d_f), fake if d_f < mean(d_r)."""
    _check(kind)
    if kind in ("standard", "hinge"):
        return (d_real > 0).float().mean(), (d_fake < 0).float().mean()
    return (d_real > d_fake.mean()).float().mean(), (d_fake < d_real.mean()).float().mean()


def penalised_discriminator_loss(kind: str, D, src: Tensor, src_pad_mask: Tensor, real: Tensor, real_pad: Tensor,
                                 fake: Tensor, fake_pad: Tensor, gp_weight: float,
                                 dropout: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """D's whole loss on one batch: real (B, L) ids and fakes ((B, L) ids or (B, L, V) one-hots) scored by the
    discriminator net D, plus under wgan-gp gp_weight times the gradient penalty. -> (loss, d_real, d_fake), the
    logits detached. ``dropout``: (2, B, F) D's dropout masks for the real and the fake call (``UpdateNoise``), or
    None (D draws its own)."""
    masks = (None, None) if dropout is None else (dropout[0], dropout[1])
    # real and fake are scored in separate calls so that the minibatch-std feature sees one population
    d_real = D(real, src, src_pad_mask, real_pad, dropout_mask=masks[0])  # (B,)
    d_fake = D(fake, src, src_pad_mask, fake_pad, dropout_mask=masks[1])  # (B,)
    loss = discriminator_loss(kind, d_real, d_fake)
    if kind == "wgan-gp":
        # the penalty is taken with respect to what D reads, the (soft) one-hots (B, L, V), through D's
        # embedding, so the embedding matrix is held to the Lipschitz constraint too
        either = real_pad & fake_pad  # interpolants are real wherever either end is
        penalty = gradient_penalty(lambda x: D(x, src, src_pad_mask, either), penalty_onehots(real, real_pad,
                                   D.vocab_size), penalty_onehots(fake, fake_pad, D.vocab_size))
        loss = loss + gp_weight * penalty
    return loss, d_real.detach(), d_fake.detach()


def update_log(kind: str, g_loss: Tensor, d_loss: Tensor, d_real: Tensor, d_fake: Tensor, g_norm: Tensor,
               d_norm: Tensor, g_updates: int, extras: dict) -> dict:
    """What one GAN update logs (``train/...``): both losses, D's accuracy on real and fake rows, both gradient
    norms before clipping, the generator-update count and the estimator's extras. TextGAN's training step and
    vectorised seeds (``modules.models.seed_group``) log through it, so their curves have the same names."""
    acc_real, acc_fake = discriminator_accuracy(kind, d_real, d_fake)
    return {"train/g_loss": g_loss.detach(), "train/d_loss": d_loss.detach(), "train/d_acc_real": acc_real,
            "train/d_acc_fake": acc_fake, "train/g_grad_norm": g_norm, "train/d_grad_norm": d_norm,
            "train/g_updates": float(g_updates), **extras}
