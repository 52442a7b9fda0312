"""BLEU / Self-BLEU: the fast engine must reproduce the NLTK (Texygen) loop to 1e-9."""

import random

import numpy as np
import pytest
import torch
from ddp_sim import simulate_ddp_sync, values

from modules.metrics import (
    BLEU,
    ReferenceIndex,
    SelfBLEU,
    corpus_avg_bleu,
    self_bleu,
    self_bleu_scores,
)

bleu_score = pytest.importorskip("nltk.translate.bleu_score")

ORDERS = range(1, 6)
TOL = 1e-9


def nltk_bleu(references, hypothesis, n):
    """Texygen's call, verbatim."""
    weights = tuple(1.0 / n for _ in range(n))
    return bleu_score.sentence_bleu(references, hypothesis, weights,
                                    smoothing_function=bleu_score.SmoothingFunction().method1)


def random_corpus(rng, count, vocab, min_len, max_len):
    return [[rng.randrange(vocab) for _ in range(rng.randint(min_len, max_len))] for _ in range(count)]


def random_case(seed):
    """References and hypotheses with short sentences (0..3 tokens), tiny vocabularies (many repeated
    n-grams) and duplicated sentences mixed in."""
    rng = random.Random(seed)
    vocab = rng.choice([2, 4, 10, 60])
    refs = random_corpus(rng, rng.randint(1, 25), vocab, 0, 12)
    hyps = random_corpus(rng, 12, vocab, 0, 10) + random_corpus(rng, 4, vocab, 1, 3)
    hyps += [list(refs[0]), hyps[0], [vocab + 7] * 3]  # exact reference copy, duplicate, out-of-vocabulary
    return refs, hyps




# ----------------------------------------------------------------------------- vs NLTK


@pytest.mark.parametrize("seed", range(8))
def test_sentence_bleu_matches_nltk(seed):
    refs, hyps = random_case(seed)
    scores = ReferenceIndex(refs, max_n=5).sentence_bleu(hyps)
    expected = np.array([[nltk_bleu(refs, h, n) for n in ORDERS] for h in hyps])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOL)

    averages = corpus_avg_bleu(hyps, refs, max_n=5, min_n=1)
    for n in ORDERS:
        assert averages[n] == pytest.approx(expected[:, n - 1].mean(), abs=TOL)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("include_self", [False, True])
def test_self_bleu_matches_nltk(seed, include_self):
    rng = random.Random(100 + seed)
    vocab = rng.choice([2, 5, 30])
    samples = random_corpus(rng, rng.randint(2, 20), vocab, 0, 9)
    samples += [list(samples[0]), list(samples[-1]), list(samples[-1])]  # duplicates: top count shared
    scores = self_bleu_scores(samples, max_n=5, include_self=include_self)
    for i, sample in enumerate(samples):
        others = samples if include_self else samples[:i] + samples[i + 1:]
        for n in ORDERS:
            assert scores[i, n - 1] == pytest.approx(nltk_bleu(others, sample, n), abs=TOL), (i, n)


def test_edge_cases_match_nltk():
    refs = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 4], [], [5]]
    hyps = [
        [],                          # empty hypothesis: 0
        [1],                         # shorter than every n > 1
        [1, 2],
        [4, 5, 6],
        [99, 98, 97],                # no unigram match: NLTK returns 0 before smoothing
        [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3],  # length 12: references 11 and 13 tie, shorter one wins
        [1, 1, 1, 1, 1, 1, 1],       # clipping by the max count in one reference
        [5] * 30,                    # longer than every reference
    ]
    scores = ReferenceIndex(refs, max_n=5).sentence_bleu(hyps)
    for i, h in enumerate(hyps):
        for n in ORDERS:
            assert scores[i, n - 1] == pytest.approx(nltk_bleu(refs, h, n), abs=TOL), (h, n)
    assert (scores[0] == 0).all() and (scores[4] == 0).all()


def test_large_and_negative_token_ids():
    # Token ids are only compared, never used as array indices: any int64 works.
    rng = random.Random(7)
    alphabet = [-(10 ** 15), -3, 0, 2 ** 40, 10 ** 17 + 1]
    refs = [[rng.choice(alphabet) for _ in range(rng.randint(1, 8))] for _ in range(15)]
    hyps = [[rng.choice(alphabet) for _ in range(rng.randint(1, 8))] for _ in range(10)]
    scores = ReferenceIndex(refs, 5).sentence_bleu(hyps)
    for i, h in enumerate(hyps):
        for n in ORDERS:
            assert scores[i, n - 1] == pytest.approx(nltk_bleu(refs, h, n), abs=TOL)


def test_references_shorter_than_n():
    refs, hyps = [[1], [2, 1]], [[1, 2, 1], [1], [2, 1, 2, 1, 2]]
    scores = ReferenceIndex(refs, 5).sentence_bleu(hyps)
    for i, h in enumerate(hyps):
        for n in ORDERS:
            assert scores[i, n - 1] == pytest.approx(nltk_bleu(refs, h, n), abs=TOL)


def test_identical_copy_scores_one():
    ref = list(range(10))
    assert corpus_avg_bleu([ref], [ref, [3, 3]], max_n=5, min_n=1) == {n: 1.0 for n in ORDERS}


def test_include_self_is_degenerate():
    # Texygen's plain SelfBleu: every sample of length >= n finds itself among its references.
    samples = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [1, 1, 2, 2, 3]]
    assert self_bleu(samples, max_n=5, include_self=True)[5] == pytest.approx(1.0)
    assert self_bleu(samples, max_n=5, include_self=False)[5] < 0.5


def test_max_hypotheses_scores_a_seeded_subset_against_all_samples():
    rng = random.Random(3)
    samples = random_corpus(rng, 40, 8, 3, 9)
    full = self_bleu_scores(samples, max_n=4)
    chosen = np.sort(np.random.default_rng(5).choice(len(samples), size=10, replace=False))
    subset = self_bleu(samples, max_n=4, max_hypotheses=10, seed=5)
    for n in range(2, 5):
        assert subset[n] == pytest.approx(full[chosen, n - 1].mean(), abs=TOL)
    assert subset == self_bleu(samples, max_n=4, max_hypotheses=10, seed=5)


# ----------------------------------------------------------------------------- metrics


def test_bleu_metric_chunked_updates_and_inputs():
    refs, hyps = random_case(11)
    expected = corpus_avg_bleu(hyps, refs, max_n=5, min_n=2)

    at_once = BLEU(refs, max_n=5)
    at_once.update(hyps)
    chunked = BLEU(refs, max_n=5)
    for start in range(0, len(hyps), 3):
        chunked.update([torch.tensor(h, dtype=torch.long) for h in hyps[start:start + 3]])  # tensors work too
    for metric in (at_once, chunked):
        result = values(metric.compute())
        assert set(result) == {"bleu2", "bleu3", "bleu4", "bleu5"}
        for n in range(2, 6):
            assert result[f"bleu{n}"] == pytest.approx(expected[n], abs=TOL)


@pytest.mark.parametrize("include_self", [False, True])
def test_self_bleu_metric_chunked(include_self):
    rng = random.Random(5)
    samples = random_corpus(rng, 30, 6, 0, 10)
    expected = self_bleu(samples, max_n=4, min_n=2, include_self=include_self)
    metric = SelfBLEU(max_n=4, include_self=include_self)
    for start in range(0, len(samples), 7):
        metric.update(samples[start:start + 7])
    result = values(metric.compute())
    assert result == pytest.approx({f"self_bleu{n}": expected[n] for n in range(2, 5)}, abs=TOL)


def make_metric(kind, refs):
    return BLEU(refs, max_n=5) if kind == "bleu" else SelfBLEU(max_n=5)


@pytest.mark.parametrize("kind", ["bleu", "self_bleu"])
def test_split_over_two_ranks_equals_one_process(kind):
    refs, hyps = random_case(21)
    samples = hyps + random_corpus(random.Random(1), 25, 5, 0, 10)
    single = make_metric(kind, refs)
    single.update(samples)
    expected = values(single.compute())

    # DistributedSampler-like split: interleaved, so the order of samples changes too.
    halves = [samples[0::2], samples[1::2]]

    merged = make_metric(kind, refs)
    other = make_metric(kind, refs)
    merged.update(halves[0][:5])
    merged.update(halves[0][5:])
    other.update(halves[1])
    merged.merge_state(other)
    assert values(merged.compute()) == pytest.approx(expected, abs=TOL)

    ranks = [make_metric(kind, refs) for _ in range(2)]
    for rank, half in zip(ranks, halves):
        rank.update(half[:4])
        rank.update(half[4:])
    simulate_ddp_sync(ranks)
    for rank in ranks:
        assert values(rank.compute()) == pytest.approx(expected, abs=TOL)


@pytest.mark.filterwarnings("ignore:.*compute.*before.*update.*")
def test_rank_without_samples_does_not_change_the_result():
    refs, hyps = random_case(2)
    single = BLEU(refs)
    single.update(hyps)
    ranks = [BLEU(refs), BLEU(refs)]
    ranks[0].update(hyps)  # rank 1 saw nothing: torchmetrics sends an empty float tensor for it
    simulate_ddp_sync(ranks)
    assert values(ranks[1].compute()) == pytest.approx(values(single.compute()), abs=TOL)


# ----------------------------------------------------------------------------- errors


def test_invalid_arguments_raise_value_error():
    with pytest.raises(ValueError, match="reference"):
        BLEU([], max_n=4)
    with pytest.raises(ValueError, match="reference"):
        corpus_avg_bleu([[1, 2]], [], max_n=4)
    with pytest.raises(ValueError, match="hypothesis"):
        corpus_avg_bleu([], [[1, 2]], max_n=4)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_n"):
            BLEU([[1, 2]], max_n=bad)
        with pytest.raises(ValueError, match="max_n"):
            SelfBLEU(max_n=bad)
    with pytest.raises(ValueError, match="min_n"):
        SelfBLEU(max_n=3, min_n=4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        self_bleu([[1, 2, 3]], max_n=2)


@pytest.mark.filterwarnings("ignore:.*compute.*before.*update.*")
@pytest.mark.parametrize("kind", ["bleu", "self_bleu"])
def test_compute_without_samples_raises(kind):
    metric = make_metric(kind, [[1, 2, 3]])
    with pytest.raises(ValueError, match="update"):
        metric.compute()
    metric = make_metric(kind, [[1, 2, 3]])
    metric.update([])
    with pytest.raises(ValueError, match="update"):
        metric.compute()
