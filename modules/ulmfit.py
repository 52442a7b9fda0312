"""ULMFiT's fine-tuning recipe (Howard & Ruder 2018, section 3.2-3.3), as plain functions of a classifier net.

- **Layer groups** (``layer_groups``): the embedding first, then each recurrent layer or Transformer block in
  order, then the classification head last (the Transformer's final LayerNorm goes with the head: it is what the
  head reads). ULMFiT's AWD-LSTM groups are the same: embedding, the three LSTM layers, the head.
- **Discriminative learning rates** (``discriminative_lrs``): group l of G (0-based, the head is G-1) gets
  ``lr / factor ** (G - 1 - l)``; ULMFiT's factor is 2.6. Lower layers hold the general features the language
  model learnt, so they move least.
- **Slanted triangular learning rates** (``stlr``): a short linear rise over the first ``cut_frac`` of the
  ``total`` updates from lr/ratio to lr, then a long linear fall back to lr/ratio (ULMFiT's equation 3; cut_frac
  0.1, ratio 32). Returned as a multiplier of each group's own rate.
- **Gradual unfreezing** (``trainable_groups``, ``freeze_to``): at first only the last group (the head) trains;
  every ``every`` updates one more group below it is unfrozen, until all train. ULMFiT unfreezes one group per
  epoch; the ablation's budgets are counted in updates (100-600), so its stage length is a number of updates.

This file must not import Lightning.
"""

from __future__ import annotations

import math

from torch import nn

ULMFIT_LR_FACTOR = 2.6
ULMFIT_CUT_FRAC = 0.1
ULMFIT_RATIO = 32.0


def layer_groups(net: nn.Module) -> list[list[tuple[str, nn.Parameter]]]:
    """A ``ClassifierNet``'s (or any net with ``.body`` and ``.head``) parameters in ULMFiT's layer groups, bottom
    (embedding) to top (head): [(name, parameter)] per group. Every parameter is in exactly one group."""
    from modules.nets.classifier import LSTMBody, TransformerEncoderBody

    body = net.body
    named = dict(net.named_parameters())
    if isinstance(body, LSTMBody):
        layers = body.lstm.num_layers
        groups = [[n for n in named if n.startswith("body.emb.")]]
        # nn.LSTM names its layer k's weights weight_ih_lk, weight_hh_lk, bias_ih_lk, bias_hh_lk
        groups += [[n for n in named if n.startswith("body.lstm.") and n.endswith(f"_l{k}")] for k in range(layers)]
        groups.append([n for n in named if not n.startswith("body.")])
    elif isinstance(body, TransformerEncoderBody):
        groups = [[n for n in named if n.startswith(("body.tok_emb.", "body.pos_emb."))]]
        groups += [[n for n in named if n.startswith(f"body.blocks.{k}.")] for k in range(len(body.blocks))]
        groups.append([n for n in named if n.startswith("body.ln_f.") or not n.startswith("body.")])
    else:
        raise TypeError(f"layer_groups: no ULMFiT layer groups for a body of type {type(body).__name__}")
    placed = [n for g in groups for n in g]
    if sorted(placed) != sorted(named) or len(placed) != len(set(placed)):  # a new parameter must not go untrained
        missing = sorted(set(named) - set(placed))
        raise ValueError(f"layer_groups: parameters not in exactly one group: {missing or 'duplicates'}")
    return [[(n, named[n]) for n in g] for g in groups if g]


def discriminative_lrs(lr: float, n_groups: int, factor: float = ULMFIT_LR_FACTOR) -> list[float]:
    """Per group, bottom to top: ``lr / factor ** (n_groups - 1 - l)``; the head gets ``lr``. factor 1: one rate."""
    if factor < 1.0:
        raise ValueError(f"the discriminative learning-rate factor must be >= 1, got {factor}")
    return [lr / factor ** (n_groups - 1 - g) for g in range(n_groups)]


def stlr(step: int, total: int, cut_frac: float = ULMFIT_CUT_FRAC, ratio: float = ULMFIT_RATIO) -> float:
    """ULMFiT's slanted triangular multiplier at update ``step`` (0-based) of ``total``: 1/ratio at step 0, 1 at
    ``cut = floor(total * cut_frac)``, falling linearly to 1/ratio at ``total``; 1/ratio after it."""
    if total < 1 or not 0.0 < cut_frac < 1.0 or ratio < 1.0:
        raise ValueError(f"stlr needs total >= 1, 0 < cut_frac < 1 and ratio >= 1; got {total}, {cut_frac}, {ratio}")
    cut = max(1, math.floor(total * cut_frac))
    t = min(step, total)
    p = t / cut if t < cut else 1.0 - (t - cut) / max(1, total - cut)  # ULMFiT: (t - cut) / (cut (1/cut_frac - 1))
    return (1.0 + p * (ratio - 1.0)) / ratio


def trainable_groups(step: int, n_groups: int, every: int) -> int:
    """How many groups, counted from the top, train at update ``step`` under gradual unfreezing one group per
    ``every`` updates (``every`` 0: all of them from the start)."""
    if every <= 0:
        return n_groups
    return min(n_groups, 1 + step // every)


def freeze_to(groups: list[list[tuple[str, nn.Parameter]]], n_trainable: int) -> None:
    """Let only the top ``n_trainable`` groups train (``requires_grad``); the ones below are frozen."""
    first = len(groups) - n_trainable
    for g, group in enumerate(groups):
        for _, p in group:
            p.requires_grad_(g >= first)


def fully_unfrozen_at(n_groups: int, every: int) -> int:
    """The update from which every group trains."""
    return 0 if every <= 0 else (n_groups - 1) * every


__all__ = ["ULMFIT_CUT_FRAC", "ULMFIT_LR_FACTOR", "ULMFIT_RATIO", "discriminative_lrs", "freeze_to",
           "fully_unfrozen_at", "layer_groups", "stlr", "trainable_groups"]
