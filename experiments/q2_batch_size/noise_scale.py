"""The gradient noise scale of McCandlish et al. (2018), "An Empirical Model of Large-Batch Training".

The simple noise scale is ``B_simple = tr(Sigma) / |G|^2``: the per-example gradient covariance's trace over the
squared norm of the true gradient. It estimates the critical batch size: below it, doubling the batch nearly
halves the number of steps needed; above it, extra samples per step are mostly wasted.

Estimator (the paper's appendix A.1). The gradient of a batch of size B is an unbiased estimate G_B of G with
``E|G_B|^2 = |G|^2 + tr(Sigma) / B``. Measuring |G_B|^2 at two batch sizes b < B gives unbiased estimates

    |G|^2     ~  (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(Sigma) ~  (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

Here one "round" draws k micro-batches of size b: |G_b|^2 is the mean of their k squared gradient norms, and
G_B (B = k b) is the mean of their gradients. The two estimates are averaged over rounds separately and only
then divided, as the paper recommends (a ratio of averages is far less biased than an average of ratios); the
standard error is a jackknife over rounds. When the |G|^2 estimate is not positive the gradient signal is not
detectable above the noise at this sample size and B_simple is reported as NaN (with the raw estimates kept).

Both of a GAN's losses are measured, each with respect to the parameters it updates: the generator's loss for
the generator, the discriminator's loss for the discriminator. Their gradient noise includes the noise of the
generator's samples (z, Gumbel or sampling noise), which is part of what each optimizer step sees; the MLE
family has one loss and one entry, "generator". Modules stay in training mode (dropout on), as in training.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from modules.data.batch import collate

LossFn = Callable[[object], torch.Tensor]


def loss_terms(model) -> dict[str, tuple[LossFn, list[torch.nn.Parameter]]]:
    """name -> (batch -> scalar loss, parameters that loss trains) for a family's losses.

    A LightningModule may provide ``noise_scale_losses()`` returning exactly this; otherwise the two families
    of this package are recognised by their public parts.
    """
    if hasattr(model, "noise_scale_losses"):
        return model.noise_scale_losses()
    if getattr(model, "family", None) == "transformer":
        def mle(batch):
            return model.training_loss(batch, model.draw_noise(len(batch)))

        return {"generator": (mle, _trainable(model.generator))}
    if getattr(model, "family", None) == "gan":
        return _gan_loss_terms(model)
    raise TypeError(f"cannot measure the noise scale of {type(model).__name__}: give it a noise_scale_losses() method")


def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _gan_loss_terms(model):
    """The GAN's two losses, computed exactly as its training step computes them: each player update's noise drawn
    first (``TextGAN.draw_noise``), then its loss (``discriminator_update_loss``, ``generator_update_loss``); a
    TextGAN that grows a public ``noise_scale_losses()`` takes precedence above. The REINFORCE baseline is a running
    statistic that the generator's loss updates; it is restored after measuring."""

    def d_loss(batch):
        return model.discriminator_update_loss(batch, model.draw_noise(len(batch)))[0]

    def g_loss(batch):
        saved = {n: b.clone() for n, b in model.estimator.named_buffers()}
        try:
            return model.generator_update_loss(batch, model.draw_noise(len(batch)))[0]
        finally:
            for n, b in model.estimator.named_buffers():
                b.copy_(saved[n])

    return {
        "generator": (g_loss, _trainable(model.generator)),
        "discriminator": (d_loss, _trainable(model.discriminator)),
    }


def _flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).float() for p, g in zip(params, grads)])


def estimate_from_norms(small_sq: list[float], big_sq: list[float], b_small: int, b_big: int) -> dict:
    """The paper's unbiased |G|^2 and tr(Sigma) per round, combined into B_simple with a jackknife error.

    small_sq[r]: mean squared norm of the size-b gradients of round r; big_sq[r]: squared norm of their mean.
    """
    if b_big <= b_small:
        raise ValueError(f"the big batch ({b_big}) must be larger than the small one ({b_small})")
    g2 = [(b_big * B - b_small * s) / (b_big - b_small) for s, B in zip(small_sq, big_sq)]
    tr = [(s - B) / (1.0 / b_small - 1.0 / b_big) for s, B in zip(small_sq, big_sq)]

    def ratio(idx):
        g = sum(g2[i] for i in idx) / len(idx)
        t = sum(tr[i] for i in idx) / len(idx)
        return t / g if g > 0 else math.nan

    R = len(g2)
    b_simple = ratio(range(R))
    se = math.nan
    if R >= 2 and math.isfinite(b_simple):
        leave_out = [ratio([j for j in range(R) if j != i]) for i in range(R)]
        if all(math.isfinite(x) for x in leave_out):
            m = sum(leave_out) / R
            se = math.sqrt((R - 1) / R * sum((x - m) ** 2 for x in leave_out))
    return {
        "b_simple": b_simple,
        "b_simple_se": se,
        "grad_norm_sq": sum(g2) / R,
        "trace_sigma": sum(tr) / R,
        "b_small": b_small,
        "b_big": b_big,
        "rounds": R,
    }


def measure_noise_scale(model, datamodule, *, b_small: int = 1, micro_batches: int = 16, rounds: int = 4,
                        seed: int = 0, split: str = "train") -> dict[str, dict]:
    """B_simple of every loss of ``model`` at its current parameters, from ``rounds`` x ``micro_batches``
    micro-batches of ``b_small`` training examples each (drawn without replacement within a round)."""
    if micro_batches < 2:
        raise ValueError("the noise scale needs at least 2 micro-batches per round")
    terms = loss_terms(model)
    examples = datamodule.examples(split)
    per_round = b_small * micro_batches
    if per_round > len(examples):
        raise ValueError(f"{per_round} examples per round, but the {split} split has {len(examples)}")
    gen = torch.Generator().manual_seed(seed)
    device = model.device
    stats = {name: ([], []) for name in terms}
    was_training = model.training
    model.train()
    torch.manual_seed(seed)  # the generator's own sampling noise inside the losses
    try:
        for _ in range(rounds):
            idx = torch.randperm(len(examples), generator=gen)[:per_round].tolist()
            batches = [collate([examples[i] for i in idx[j * b_small:(j + 1) * b_small]]).to(device)
                       for j in range(micro_batches)]
            for name, (loss_fn, params) in terms.items():
                total, sq = None, 0.0
                for batch in batches:
                    g = _flat_grad(loss_fn(batch), params)
                    sq += float(g.dot(g))
                    total = g if total is None else total + g
                mean = total / micro_batches
                stats[name][0].append(sq / micro_batches)
                stats[name][1].append(float(mean.dot(mean)))
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return {name: estimate_from_norms(small, big, b_small, per_round) for name, (small, big) in stats.items()}
