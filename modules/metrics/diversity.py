"""Distinct-n: lexical diversity of a set of generated samples (Li et al. 2016).

distinct-n = (number of distinct n-grams) / (total number of n-grams), both counted over ALL samples
together. A set can only be judged as a whole (a mode-collapsed generator repeats itself ACROSS samples), so
the metric stores the samples themselves, not per-rank sets of n-grams, and reduces them under DDP by
concatenation: the value after a DDP gather equals the single-process value on the same samples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from modules.metrics.bleu import TokenSequenceMetric, _ngram_keys, _positions, unflatten_sequences


def distinct_ngram_counts(tokens: np.ndarray, lengths: np.ndarray, max_n: int) -> list[tuple[int, int]]:
    """For n = 1..max_n: (distinct n-grams, total n-grams) over the samples given flat (see
    `flatten_sequences`). N-grams never span two samples."""
    _, remaining = _positions(lengths)
    counts = []
    ids = unigram_ids = None
    vocab = 0
    for n in range(1, max_n + 1):
        starts = np.flatnonzero(remaining >= n)
        keys = tokens[starts] if n == 1 else _ngram_keys(ids, unigram_ids, starts, n, vocab)
        table, inverse = np.unique(keys, return_inverse=True)
        ids = np.full(len(tokens), -1, dtype=np.int64)
        ids[starts] = inverse
        if n == 1:
            unigram_ids, vocab = ids, len(table)
        counts.append((len(table), len(starts)))
    return counts


class DistinctN(TokenSequenceMetric):
    """Distinct-n over all accumulated samples, plus two cheap companions.

    `compute()` returns a dict of float64 scalars:
      "distinct{n}" for n in n_values: distinct n-grams / total n-grams (0.0 when no sample has n tokens);
      "avg_length": mean number of tokens per sample;
      "unique_fraction": distinct samples / samples (1.0: no two samples are identical; a direct
                         mode-collapse signal).
    """

    higher_is_better = True

    def __init__(self, n_values: Sequence[int] = (1, 2, 3, 4), **kwargs):
        super().__init__(**kwargs)
        n_values = tuple(int(n) for n in n_values)
        if not n_values or min(n_values) < 1:
            raise ValueError(f"n_values must be a non-empty sequence of integers >= 1, got {n_values!r}")
        self.n_values = n_values

    def compute(self) -> dict[str, Tensor]:
        tokens, lengths = self._gathered()
        counts = distinct_ngram_counts(tokens, lengths, max(self.n_values))
        result = {}
        for n in self.n_values:
            distinct, total = counts[n - 1]
            result[f"distinct{n}"] = distinct / total if total else 0.0
        result["avg_length"] = float(lengths.mean())
        unique_samples = {tuple(s) for s in unflatten_sequences(tokens, lengths)}
        result["unique_fraction"] = len(unique_samples) / len(lengths)
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in result.items()}
