"""BLEU and Self-BLEU as the text-GAN literature defines them, computed fast.

The definition (Texygen, used by SeqGAN / LeakGAN / RelGAN / ...): for every hypothesis, NLTK's

    sentence_bleu(references, hypothesis, weights=(1/n,) * n,
                  smoothing_function=SmoothingFunction().method1)

against ALL references, then the plain mean over hypotheses. Self-BLEU scores every generated sample
against the other generated samples. Reproducing the NLTK loop is O(hypotheses x references) Python work
(hours for the standard 10k-sample setting), so this module computes the same numbers differently:

* the clipping count of an n-gram is its maximum count over the references. That maximum is the same for
  every hypothesis, so it is computed once per n-gram, not once per (hypothesis, reference) pair;
* for Self-BLEU's leave-one-out the maximum over "all samples but me" is the top count unless I am the
  only sample holding it, in which case it is the second-highest count, so keeping the top two counts per
  n-gram is enough;
* the closest reference length only depends on the set of reference lengths (and their multiplicities,
  for leave-one-out), so it is a binary search in a sorted array.

N-grams are identified by exact integer ids: order-1 ids are the ranks of the token values, and an n-gram's
key is ``id(its first n-1 tokens) * vocab + id(its last token)``, compacted again with np.unique. No hashing,
so no collisions, for any vocabulary size. Everything then is a handful of sorts and bincounts in numpy.

The result matches NLTK to floating-point rounding (the only difference is the order of a 5-term sum),
including its edge cases: hypotheses shorter than n (zero matches, denominator 1, then smoothed to 0.1),
an empty hypothesis (0.0), no unigram match at all (0.0, before any smoothing), and the brevity penalty's
tie-breaking towards the shorter reference.

Sequences are lists of token ids with BOS/EOS/PAD already removed by the caller.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

# NLTK's SmoothingFunction(epsilon=0.1).method1: a zero count n-gram precision becomes epsilon / denominator.
_METHOD1_EPSILON = 0.1

TokenSequences = Sequence[Sequence[int]]


# -----------------------------------------------------------------------------
# Flat representation shared by the engine and the metric states


def flatten_sequences(sequences: TokenSequences) -> tuple[np.ndarray, np.ndarray]:
    """Return (tokens, lengths): all sequences concatenated into one int64 array, plus each length.

    Accepts lists of ints, tensors or numpy arrays as the individual sequences.
    """
    seqs = [s.tolist() if hasattr(s, "tolist") else s for s in sequences]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    tokens = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    return tokens, lengths


def unflatten_sequences(tokens: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Inverse of `flatten_sequences` (used by tests and by callers that want the samples back)."""
    bounds = np.cumsum(lengths)
    flat = tokens.tolist()
    return [flat[end - length:end] for end, length in zip(bounds.tolist(), lengths.tolist())]


def _positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every token position: the index of its sentence and how many tokens remain in that sentence
    from there on (itself included). An n-gram starts at a position iff remaining >= n."""
    sentence = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    ends = np.cumsum(lengths)
    remaining = ends[sentence] - np.arange(int(lengths.sum()), dtype=np.int64)
    return sentence, remaining


def _ngram_keys(prev_ids: np.ndarray, unigram_ids: np.ndarray, starts: np.ndarray, n: int,
                vocab: int) -> np.ndarray:
    """Exact integer key of the n-grams starting at `starts`, from the ids of their (n-1)-gram prefix
    and of their last token. A key never exceeds (#(n-1)-grams) * vocab, far below the int64 range."""
    return prev_ids[starts] * vocab + unigram_ids[starts + n - 1]


def _count_per_sentence(sentence: np.ndarray, ids: np.ndarray, num_ids: int):
    """Occurrence counts of every (sentence, n-gram id) pair present: returns (sentence, id, count)."""
    pairs, counts = np.unique(sentence * num_ids + ids, return_counts=True)
    return pairs // num_ids, pairs % num_ids, counts


def _top_two_counts(sentence: np.ndarray, ids: np.ndarray, num_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """Per n-gram id in [0, num_ids) (each present at least once): its highest count in any one sentence,
    and the second highest count over the other sentences (0 if only one sentence holds it). Two sentences
    tying for the top give top2 == top1, which is what leave-one-out needs."""
    if num_ids == 0:  # no sentence is long enough for this order
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, gram, count = _count_per_sentence(sentence, ids, num_ids)
    order = np.lexsort((-count, gram))  # by n-gram, then by count descending
    gram, count = gram[order], count[order]
    first = np.flatnonzero(np.r_[True, gram[1:] != gram[:-1]])
    group_end = np.r_[first[1:], len(gram)]
    second = first + 1
    has_second = second < group_end
    top1 = count[first]
    top2 = np.where(has_second, count[np.minimum(second, len(count) - 1)], 0)
    return top1, top2


def _lookup(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Rank of each key in the sorted array `table`, or -1 where the key is absent."""
    if len(table) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    slot = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    return np.where(table[slot] == keys, slot, -1)


def _check_orders(max_n: int, min_n: int = 1) -> None:
    if not isinstance(max_n, (int, np.integer)) or max_n < 1:
        raise ValueError(f"max_n must be an integer >= 1, got {max_n!r}")
    if not isinstance(min_n, (int, np.integer)) or not 1 <= min_n <= max_n:
        raise ValueError(f"min_n must be an integer in [1, max_n={max_n}], got {min_n!r}")


# -----------------------------------------------------------------------------
# The engine


class ReferenceIndex:
    """Everything BLEU needs to know about a fixed set of references, for orders 1..max_n.

    Build it once (e.g. on the test set) and score any number of hypothesis sets against it:
    `sentence_bleu(hypotheses)` returns one NLTK-identical BLEU-n per hypothesis and order.
    Memory is a few int64 arrays per order, about the size of the references' n-grams.
    """

    def __init__(self, references: TokenSequences, max_n: int = 5):
        _check_orders(max_n)
        tokens, lengths = flatten_sequences(references)
        if len(lengths) == 0:
            raise ValueError("BLEU needs at least one reference sentence, got none")
        self.max_n = int(max_n)
        self.num_references = len(lengths)
        # Closest-length search: sorted distinct lengths, and how many references have each.
        self._lengths, self._length_counts = np.unique(lengths, return_counts=True)

        sentence, remaining = _positions(lengths)
        self._tables: list[np.ndarray] = []  # per order: sorted distinct n-gram keys; a key's rank is its id
        self._top1: list[np.ndarray] = []  # per order and id: max count in one reference
        self._top2: list[np.ndarray] = []  # per order and id: runner-up count (for leave-one-out)
        ids = unigram_ids = None
        for n in range(1, self.max_n + 1):
            starts = np.flatnonzero(remaining >= n)
            if n == 1:
                keys = tokens[starts]
            else:
                keys = _ngram_keys(ids, unigram_ids, starts, n, self._vocab)
            table, inverse = np.unique(keys, return_inverse=True)
            ids = np.full(len(tokens), -1, dtype=np.int64)
            ids[starts] = inverse
            if n == 1:
                unigram_ids, self._vocab = ids, len(table)
            top1, top2 = _top_two_counts(sentence[starts], inverse, len(table))
            self._tables.append(table)
            self._top1.append(top1)
            self._top2.append(top2)

    def sentence_bleu(self, hypotheses: TokenSequences, exclude_self: bool = False) -> np.ndarray:
        """BLEU-n of each hypothesis against all references: array (num_hypotheses, max_n), column n-1 holds
        NLTK's sentence_bleu with weights (1/n,)*n and method1 smoothing.

        exclude_self=True is Self-BLEU's leave-one-out: every hypothesis must itself be one of the
        references (same token list) and is scored against all references except one copy of itself.
        """
        tokens, lengths = flatten_sequences(hypotheses)
        numerators = self._clipped_matches(tokens, lengths, exclude_self)
        ref_lengths = self._closest_ref_lengths(lengths, exclude_self)
        return _bleu_from_counts(numerators, lengths, ref_lengths)

    def _clipped_matches(self, tokens: np.ndarray, lengths: np.ndarray, exclude_self: bool) -> np.ndarray:
        """Per hypothesis and order: sum over its n-grams of min(count in hypothesis, max count in refs)."""
        num_hyps = len(lengths)
        sentence, remaining = _positions(lengths)
        numerators = np.zeros((num_hyps, self.max_n), dtype=np.int64)
        ids = unigram_ids = None
        for n in range(1, self.max_n + 1):
            table = self._tables[n - 1]
            starts = np.flatnonzero(remaining >= n)
            if n == 1:
                keys, known = tokens[starts], np.ones(len(starts), dtype=bool)
            else:
                # An n-gram can only be in the table if its prefix and last token are; otherwise the
                # arithmetic key of a -1 id could alias a real one, so mask it out.
                known = (ids[starts] >= 0) & (unigram_ids[starts + n - 1] >= 0)
                keys = np.where(known, _ngram_keys(ids, unigram_ids, starts, n, self._vocab), -1)
            slot = _lookup(table, keys)
            found = known & (slot >= 0)
            ids = np.full(len(tokens), -1, dtype=np.int64)
            ids[starts[found]] = slot[found]
            if n == 1:
                unigram_ids = ids
            if not found.any():
                continue  # no n-gram of this order matches: numerators stay 0

            hyp, gram, count = _count_per_sentence(sentence[starts[found]], slot[found], len(table))
            allowed = self._top1[n - 1][gram]
            if exclude_self:
                # The hypothesis' own count is its count as a reference; if it holds the top count, the
                # best of the others is the runner-up (equal to the top on ties).
                allowed = np.where(count == allowed, self._top2[n - 1][gram], allowed)
            numerators[:, n - 1] = np.bincount(hyp, weights=np.minimum(count, allowed), minlength=num_hyps)
        return numerators

    def _closest_ref_lengths(self, hyp_lengths: np.ndarray, exclude_self: bool) -> np.ndarray:
        """NLTK's closest_ref_length: the reference length nearest to each hypothesis length, the shorter
        one on ties. With exclude_self, one reference of the hypothesis' own length is removed."""
        lengths, counts = self._lengths, self._length_counts
        at = np.searchsorted(lengths, hyp_lengths, side="left")
        at_clipped = np.minimum(at, len(lengths) - 1)
        exact = np.where(lengths[at_clipped] == hyp_lengths, counts[at_clipped], 0) - int(exclude_self)
        after = np.searchsorted(lengths, hyp_lengths, side="right")
        shorter = np.where(at > 0, lengths[np.maximum(at - 1, 0)], -np.inf)
        longer = np.where(after < len(lengths), lengths[np.minimum(after, len(lengths) - 1)], np.inf)
        if exclude_self and np.any((exact <= 0) & np.isinf(shorter) & np.isinf(longer)):
            raise ValueError("Self-BLEU without self needs at least 2 samples")
        nearest = np.where(hyp_lengths - shorter <= longer - hyp_lengths, shorter, longer)
        return np.where(exact > 0, hyp_lengths, nearest).astype(np.float64)


def _bleu_from_counts(numerators: np.ndarray, hyp_lengths: np.ndarray, ref_lengths: np.ndarray) -> np.ndarray:
    """NLTK's sentence_bleu from the clipped match counts, for each hypothesis and n = 1..max_n."""
    num_hyps, max_n = numerators.shape
    hyp_len = hyp_lengths.astype(np.float64)
    # Denominator: number of n-grams in the hypothesis, at least 1 (NLTK's guard for short hypotheses).
    denominators = np.maximum(1, hyp_lengths[:, None] - np.arange(max_n)[None, :]).astype(np.float64)
    precisions = np.where(numerators > 0, numerators / denominators, _METHOD1_EPSILON / denominators)
    log_p = np.log(precisions)
    with np.errstate(divide="ignore", invalid="ignore"):
        brevity = np.where(hyp_len > ref_lengths, 1.0,
                           np.where(hyp_len == 0, 0.0, np.exp(1.0 - ref_lengths / np.maximum(hyp_len, 1))))
    scores = np.empty((num_hyps, max_n), dtype=np.float64)
    for n in range(1, max_n + 1):
        scores[:, n - 1] = brevity * np.exp((1.0 / n * log_p[:, :n]).sum(axis=1))
    # NLTK returns 0 as soon as no unigram matches, before smoothing gets a say.
    scores[numerators[:, 0] == 0] = 0.0
    return scores


# -----------------------------------------------------------------------------
# Functional API


def corpus_avg_bleu(hypotheses: TokenSequences, references: TokenSequences, max_n: int = 5,
                    min_n: int = 2) -> dict[int, float]:
    """Texygen BLEU-n for n = min_n..max_n: mean over hypotheses of NLTK sentence_bleu against all
    references (uniform weights, method1 smoothing). Returns {n: value}."""
    _check_orders(max_n, min_n)
    if len(hypotheses) == 0:
        raise ValueError("BLEU needs at least one hypothesis, got none")
    scores = ReferenceIndex(references, max_n).sentence_bleu(hypotheses)
    return {n: float(scores[:, n - 1].mean()) for n in range(min_n, max_n + 1)}


def self_bleu_scores(samples: TokenSequences, max_n: int = 5, include_self: bool = False,
                     max_hypotheses: Optional[int] = None, seed: int = 0) -> np.ndarray:
    """Per-sample Self-BLEU-n: array (num_hypotheses, max_n), each sample scored against the others.

    include_self=False (default) leaves each sample out of its own references, as Texygen's fast
    (parallel) Self-BLEU does. include_self=True keeps it in, as Texygen's plain `SelfBleu.get_bleu` does;
    then every n-gram of the sample matches itself, so the score is 1 for any sample of length >= n and
    only reflects lengths: use it only to reproduce numbers published with that variant.

    max_hypotheses: if set and smaller than the number of samples, score only that many samples, drawn
    without replacement with `seed`, each still against ALL other samples. That is an unbiased estimate of
    the full Self-BLEU at a cost proportional to max_hypotheses. (Texygen's `is_fast` instead truncates the
    whole set to its first 500 samples, which changes the reference set as well.)
    """
    _check_orders(max_n)
    if len(samples) < (1 if include_self else 2):
        raise ValueError(f"Self-BLEU needs at least {1 if include_self else 2} samples, got {len(samples)}")
    index = ReferenceIndex(samples, max_n)
    hypotheses = samples
    if max_hypotheses is not None and max_hypotheses < len(samples):
        if max_hypotheses < 1:
            raise ValueError(f"max_hypotheses must be >= 1, got {max_hypotheses}")
        chosen = np.random.default_rng(seed).choice(len(samples), size=max_hypotheses, replace=False)
        hypotheses = [samples[i] for i in np.sort(chosen)]
    return index.sentence_bleu(hypotheses, exclude_self=not include_self)


def self_bleu(samples: TokenSequences, max_n: int = 5, min_n: int = 2, include_self: bool = False,
              max_hypotheses: Optional[int] = None, seed: int = 0) -> dict[int, float]:
    """Texygen Self-BLEU-n for n = min_n..max_n (mean of `self_bleu_scores`). Returns {n: value}."""
    _check_orders(max_n, min_n)
    scores = self_bleu_scores(samples, max_n, include_self, max_hypotheses, seed)
    return {n: float(scores[:, n - 1].mean()) for n in range(min_n, max_n + 1)}


# -----------------------------------------------------------------------------
# torchmetrics


class TokenSequenceMetric(Metric):
    """Base for metrics over whole generated samples: accumulates token sequences in DDP-safe states.

    Sequences are stored flat (one 1-D LongTensor of all tokens) plus their lengths, both as "cat" list
    states, so that a DDP gather simply concatenates every rank's samples. Metrics computed from the
    full set of samples (Self-BLEU, distinct-n) are therefore exactly the single-process values.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("tokens", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")

    def update(self, sequences: TokenSequences) -> None:
        """Add a batch of samples, each a list (or 1-D tensor) of token ids without BOS/EOS/PAD."""
        tokens, lengths = flatten_sequences(sequences)
        if len(lengths) == 0:
            # A typed empty entry: a DDP rank that drew no samples must still gather int64, not float, tensors.
            self.tokens.append(torch.zeros(0, dtype=torch.long, device=self.device))
            self.lengths.append(torch.zeros(0, dtype=torch.long, device=self.device))
            return
        self.tokens.append(torch.from_numpy(tokens).to(self.device))
        self.lengths.append(torch.from_numpy(lengths).to(self.device))

    def _gathered(self) -> tuple[np.ndarray, np.ndarray]:
        """All accumulated samples as numpy (tokens, lengths); raises if there are none."""
        if isinstance(self.lengths, list) and len(self.lengths) == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any sample was added by update()")
        # .long(): after a DDP sync where some rank was empty, torchmetrics pads with a float tensor.
        lengths = dim_zero_cat(self.lengths).long().cpu().numpy()
        if lengths.size == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any sample was added by update()")
        tokens = dim_zero_cat(self.tokens).long().cpu().numpy() if lengths.sum() else np.zeros(0, np.int64)
        return tokens, lengths

    def samples(self) -> list[list[int]]:
        """The accumulated samples as lists of token ids (in rank order after a DDP sync)."""
        return unflatten_sequences(*self._gathered())


class BLEU(TokenSequenceMetric):
    """Texygen BLEU-n (n = min_n..max_n) of generated hypotheses against fixed references.

    The references (e.g. the test set) are indexed once at construction and are not metric state: every
    DDP rank builds the same index. `update(hypotheses)` accumulates generated samples; `compute()`
    returns a dict {"bleu2": tensor, ..., "bleu5": tensor} (float64 scalars), each the mean over all
    accumulated hypotheses of NLTK's sentence_bleu against all references (uniform weights, method1).
    Log it with `self.log_dict(metric.compute())`; prefer update()/compute() over forward(), which would
    score one batch only.
    """

    higher_is_better = True

    def __init__(self, references: TokenSequences, max_n: int = 5, min_n: int = 2, prefix: str = "bleu",
                 **kwargs):
        super().__init__(**kwargs)
        _check_orders(max_n, min_n)
        self.min_n, self.max_n, self.prefix = int(min_n), int(max_n), prefix
        self.index = ReferenceIndex(references, max_n)

    def compute(self) -> dict[str, Tensor]:
        tokens, lengths = self._gathered()
        scores = self.index.sentence_bleu(unflatten_sequences(tokens, lengths))
        return {f"{self.prefix}{n}": torch.tensor(scores[:, n - 1].mean(), dtype=torch.float64)
                for n in range(self.min_n, self.max_n + 1)}


class SelfBLEU(TokenSequenceMetric):
    """Texygen Self-BLEU-n (n = min_n..max_n): diversity of the accumulated samples, lower is more diverse.

    `compute()` returns {"self_bleu2": tensor, ..., "self_bleu5": tensor} over ALL samples accumulated on
    all ranks. include_self / max_hypotheses / seed: see `self_bleu_scores`. Note that with
    max_hypotheses the drawn subset depends on the order of samples, which differs between one process and
    a DDP gather (rank after rank); the full computation (default) does not depend on order.
    """

    higher_is_better = False

    def __init__(self, max_n: int = 5, min_n: int = 2, include_self: bool = False,
                 max_hypotheses: Optional[int] = None, seed: int = 0, prefix: str = "self_bleu", **kwargs):
        super().__init__(**kwargs)
        _check_orders(max_n, min_n)
        self.min_n, self.max_n, self.prefix = int(min_n), int(max_n), prefix
        self.include_self, self.max_hypotheses, self.seed = include_self, max_hypotheses, seed

    def compute(self) -> dict[str, Tensor]:
        samples = unflatten_sequences(*self._gathered())
        scores = self_bleu_scores(samples, self.max_n, self.include_self, self.max_hypotheses, self.seed)
        return {f"{self.prefix}{n}": torch.tensor(scores[:, n - 1].mean(), dtype=torch.float64)
                for n in range(self.min_n, self.max_n + 1)}


# -----------------------------------------------------------------------------
# Translation BLEU: each hypothesis against its own reference


def corpus_bleu(hypotheses: Sequence[Sequence], references: Sequence[Sequence], max_n: int = 4) -> float:
    """Corpus-level BLEU-max_n of Papineni et al. (2002), as machine translation reports it (in [0, 1]).

    Hypothesis i is scored against reference i only (unlike the Texygen BLEU above, which scores every sample
    against all references): the clipped n-gram matches and the hypothesis n-grams are summed over the corpus
    before the precisions are taken, uniform weights over n = 1..max_n, and the brevity penalty compares the
    corpus's total hypothesis length with its total reference length. No smoothing: a corpus without a single
    matching n-gram of some order scores 0, as NLTK's ``corpus_bleu`` does. Tokens are any hashable items
    (words or ids)."""
    from collections import Counter

    _check_orders(max_n)
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus BLEU pairs hypotheses with references: got {len(hypotheses)} hypotheses and "
                         f"{len(references)} references")
    if not hypotheses:
        raise ValueError("BLEU needs at least one hypothesis, got none")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        hyp, ref = list(hyp), list(ref)
        hyp_len, ref_len = hyp_len + len(hyp), ref_len + len(ref)
        for n in range(1, max_n + 1):
            hyp_grams = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
            ref_grams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
            matches[n - 1] += sum(min(count, ref_grams[gram]) for gram, count in hyp_grams.items())
            totals[n - 1] += max(0, len(hyp) - n + 1)
    if min(matches) == 0:
        return 0.0
    log_precision = sum(np.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else float(np.exp(1.0 - ref_len / hyp_len))
    return float(brevity * np.exp(log_precision))
