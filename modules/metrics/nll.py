"""Sequence negative log-likelihood, the literature's quality and coverage numbers.

One class serves both uses; only the caller's choice of scorer and text differs:
  NLL_oracle: the oracle scores GENERATED samples (quality; SeqGAN's synthetic benchmark, reported per token);
  NLL_test:   the trained model scores HELD-OUT data (coverage; a collapsed model assigns it low likelihood).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor
from torchmetrics import Metric


class SequenceNLL(Metric):
    """Accumulates -log p(sentence) over sentences; reports it per token and per sentence.

    update(log_probs, num_tokens):
        log_probs:  (B,) log-likelihood of each sentence, i.e. the SUM over its tokens of log p(token | prefix)
                    (natural log, <= 0);
        num_tokens: (B,) number of scored tokens of each sentence (an int broadcasts: fixed length).
    compute() returns float64 scalars:
        "per_token":    total NLL / total tokens  (SeqGAN/Texygen's oracle NLL; exp of it is perplexity);
        "per_sentence": total NLL / sentences, i.e. the NLL summed over the tokens of a sentence, averaged over
                        sentences (what most text-GAN papers call NLL_oracle / NLL_test).
    States are sums, reduced with "sum" under DDP, so the result is exactly the single-process one.
    Counting EOS or not is the caller's choice; it must be the same for every model being compared.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # float64: sums over ~10^4 sentences of ~10^2 nats would lose digits in float32.
        self.add_state("total_nll", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_sentences", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, log_probs: Tensor, num_tokens: Union[Tensor, int]) -> None:
        log_probs = torch.as_tensor(log_probs).detach()
        if log_probs.dim() != 1:
            raise ValueError(f"log_probs must have shape (B,) (one summed log-likelihood per sentence), "
                             f"got {tuple(log_probs.shape)}")
        num_tokens = torch.as_tensor(num_tokens, device=log_probs.device).detach()
        if num_tokens.dim() == 0:
            num_tokens = num_tokens.expand(log_probs.shape[0])
        if num_tokens.shape != log_probs.shape:
            raise ValueError(f"num_tokens must be an int or have shape {tuple(log_probs.shape)}, "
                             f"got {tuple(num_tokens.shape)}")
        if torch.is_floating_point(num_tokens):
            if not torch.equal(num_tokens, num_tokens.round()):
                raise ValueError("num_tokens must hold whole numbers of tokens")
        self.total_nll += -log_probs.to(self.total_nll.device, torch.float64).sum()
        self.num_tokens += num_tokens.to(self.num_tokens.device).long().sum()
        self.num_sentences += log_probs.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if self.num_sentences == 0:
            raise ValueError("SequenceNLL.compute() called before any sentence was added by update()")
        if self.num_tokens == 0:
            raise ValueError("SequenceNLL: the accumulated sentences have no tokens, per-token NLL is undefined")
        return {"per_token": self.total_nll / self.num_tokens, "per_sentence": self.total_nll / self.num_sentences}
